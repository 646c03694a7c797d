//! Fuzz target `chain`: see `harness/chain.rs` (also replayed by `tests/fuzz_corpus.rs`).
#![no_main]

#[path = "harness/chain.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
