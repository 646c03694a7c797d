//! Replays every file of the `backup` fuzz corpus (`fuzz/corpus/backup/`) through the function
//! the fuzz target runs (`fuzz/fuzz_targets/backup.rs`), so the seeds and every crasher added
//! to the corpus stay regression tests under plain `cargo test`.
//!
//! Seeds named `ok-*` are real version-1 backups made with the target's `SEED_PASSPHRASE`:
//! opening them here keeps archives made by earlier builds restorable (BK2). Seeds named
//! `err-*` are broken or hostile archives, each refused for the reason its name gives.
#![allow(clippy::unwrap_used)]
// The target tests `cfg(fuzzing)`, which cargo-fuzz sets and this crate does not declare.
#![allow(unexpected_cfgs)]

use std::path::{Path, PathBuf};

use zonepki::backup::{self, BackupError, Passphrase};

#[path = "../fuzz/fuzz_targets/backup.rs"]
mod backup_target;

/// Every file in `fuzz/corpus/backup`, sorted by name.
fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/backup");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the backup corpus is empty");
    files
}

fn name(p: &Path) -> &str {
    p.file_name().unwrap().to_str().unwrap()
}

#[test]
fn backup_corpus() {
    for path in corpus() {
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| backup_target::run(&data)).is_err() {
            panic!(
                "fuzz target backup panics on corpus file {}",
                path.display()
            );
        }
    }
}

/// What each `err-*` seed must be refused as (by `inspect`, which needs no passphrase).
fn expected(seed: &str, e: &BackupError) -> bool {
    use BackupError as E;
    match seed {
        "err-empty" | "err-not-a-zip.txt" => matches!(e, E::NotAZip { .. }),
        "err-truncated.zip" => matches!(e, E::Truncated { .. }),
        "err-prefixed.zip" => matches!(e, E::DamagedZip { .. }),
        "err-extra-entry.zip" => matches!(e, E::UnexpectedEntry { .. }),
        "err-path-traversal.zip" | "err-absolute-path.zip" => {
            matches!(e, E::UnsafeEntryName { .. })
        }
        "err-duplicate.zip" => matches!(e, E::DuplicateEntry { .. }),
        "err-missing-key.zip" => matches!(e, E::MissingEntry { name } if *name == "ca-key.p8.pem"),
        "err-version-2.zip" => matches!(e, E::UnsupportedVersion { found: 2, .. }),
        "err-bad-mac.zip" => matches!(e, E::Tampered { entry, .. } if entry == "manifest.mac"),
        "err-tampered-cert.zip" => matches!(e, E::Tampered { entry, .. } if entry == "ca.pem"),
        "err-deflate-bomb.zip" | "err-too-many-entries.zip" => {
            matches!(e, E::TooLarge { .. })
        }
        // Any refusal will do (crashers added by the fuzzer, a flipped byte).
        _ => true,
    }
}

#[test]
fn backup_seeds_say_what_their_names_say() {
    let passphrase = Passphrase::new(backup_target::SEED_PASSPHRASE).unwrap();
    let (mut ok, mut err) = (0, 0);
    for path in corpus() {
        let data = std::fs::read(&path).unwrap();
        let n = name(&path);
        if n.starts_with("ok-rsa") && !cfg!(feature = "rsa") {
            // A build without the `rsa` feature refuses an RSA CA's backup before any KDF,
            // naming the feature (issue 9 item 7).
            let e = backup::inspect(&data).expect_err(n);
            assert!(matches!(e, BackupError::UnsupportedKey(_)), "{n}: {e:?}");
            ok += 1;
        } else if n.starts_with("ok-") {
            let info = backup::inspect(&data).unwrap_or_else(|e| panic!("{n}: {e}"));
            let restored = backup::open(&data, &passphrase).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(restored.certificate, info.certificate, "{n}");
            assert_eq!(restored.zone_ca_sha256, info.ca_sha256, "{n}");
            ok += 1;
        } else if n.starts_with("err-") {
            let e = backup::inspect(&data).expect_err(n);
            assert!(expected(n, &e), "{n}: {e:?}");
            err += 1;
        }
    }
    assert!(ok >= 2 && err >= 10, "{ok} valid and {err} broken seeds");
}
