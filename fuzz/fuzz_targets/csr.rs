//! Fuzz target `csr`: see `harness/csr.rs` (also replayed by `tests/fuzz_corpus.rs`).
#![no_main]

#[path = "harness/csr.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
