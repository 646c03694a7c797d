//! Fuzz target `protocol`: see `harness/protocol.rs` (also replayed by `tests/fuzz_corpus.rs`).
#![no_main]

#[path = "harness/protocol.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
