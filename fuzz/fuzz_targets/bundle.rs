//! Fuzz target `bundle`: see `harness/bundle.rs` (also replayed by `tests/fuzz_corpus.rs`).
#![no_main]

#[path = "harness/bundle.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
