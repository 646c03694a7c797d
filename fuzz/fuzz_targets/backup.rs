//! Fuzz target `backup` (BK2): `backup::inspect` on arbitrary bytes, and `backup::open`
//! wherever it can be run without a KDF.
//!
//! The per-input logic is [`run`], in this file rather than `harness/` so that the whole
//! target is one file; `tests/fuzz_corpus_backup.rs` includes it with `#[path]` and replays
//! `corpus/backup/` through it. Under cargo-fuzz (`--cfg fuzzing`) this is the libFuzzer
//! entry point; anywhere else the file is a plain module with an empty `main`.
//!
//! `open` costs two PBKDF2 runs of 600,000 iterations (about 0.16 s in release) once an
//! archive passes the structure checks, which would slow fuzzing a thousandfold. So `open`
//! runs only on inputs that `inspect` refuses for a reason found before the KDF, where the
//! property is differential: `open` must refuse them with exactly the same error, and
//! without deriving any key (so fast).
// cargo-fuzz passes `--cfg fuzzing`, which neither crate declares.
#![allow(unexpected_cfgs)]
#![cfg_attr(fuzzing, no_main)]

use zonepki::backup::{self, BackupError, Passphrase};

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

/// Without cargo-fuzz there is no libFuzzer `main`; the file then only provides [`run`].
#[cfg(not(fuzzing))]
#[allow(dead_code)]
fn main() {}

/// The passphrase of the seed archives in `corpus/backup/ok-*`.
pub const SEED_PASSPHRASE: &str = "zonepki fuzz seed passphrase";

/// Runs one input: never panics; what `inspect` accepts is consistent with itself; what it
/// refuses before the KDF stage, `open` refuses identically.
pub fn run(data: &[u8]) {
    match backup::inspect(data) {
        Ok(info) => {
            assert_eq!(
                info.certificate.fingerprints().sha256.to_string(),
                info.ca_sha256
            );
            assert_eq!(info.certificate.subject(), info.ca_subject);
            assert!(
                (backup::PBKDF2_ITERATIONS..=backup::MAX_PBKDF2_ITERATIONS)
                    .contains(&info.kdf_iterations)
            );
            assert_eq!(info.version, backup::FORMAT_VERSION);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.contains(SEED_PASSPHRASE));
            if before_the_kdf(&e) {
                let passphrase =
                    Passphrase::new(SEED_PASSPHRASE).expect("the seed passphrase is long enough");
                let opened = backup::open(data, &passphrase);
                assert_eq!(opened.err(), Some(e));
            }
        }
    }
}

/// Errors that both `inspect` and `open` can only find before any key is derived.
fn before_the_kdf(e: &BackupError) -> bool {
    match e {
        BackupError::NotAZip { .. }
        | BackupError::Truncated { .. }
        | BackupError::DamagedZip { .. }
        | BackupError::MissingEntry { .. }
        | BackupError::UnexpectedEntry { .. }
        | BackupError::UnsafeEntryName { .. }
        | BackupError::DuplicateEntry { .. }
        | BackupError::TooLarge { .. }
        | BackupError::UnsupportedVersion { .. } => true,
        BackupError::Tampered { entry, .. } => entry == backup::MAC_ENTRY,
        _ => false,
    }
}
