//! Fuzz target `zone_record`: the `Slot::Zone` records of a real zone replaced by the input, then
//! every service read path; see `harness/store_record.rs` (also replayed by
//! `tests/fuzz_corpus.rs`).
#![no_main]

#[path = "harness/store_record.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::run(harness::Slot::Zone, data));
