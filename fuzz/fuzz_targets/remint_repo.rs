//! Fuzz target `remint_repo`: see `harness/remint_repo.rs` (also replayed by
//! `tests/fuzz_corpus_remint_repo.rs`).
#![no_main]

#[path = "harness/remint_repo.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(data));
