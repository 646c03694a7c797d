//! Fuzz target `cmp_message`: see `harness/cmp_message.rs` (also replayed by
//! `tests/fuzz_corpus.rs`).
#![no_main]

#[path = "harness/cmp_message.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
