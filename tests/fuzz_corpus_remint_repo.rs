//! Replays every file of the `remint_repo` fuzz corpus (`fuzz/corpus/remint_repo/`) through
//! the harness the fuzz target runs (`fuzz/fuzz_targets/harness/remint_repo.rs`), so the seeds
//! and every crasher added to the corpus stay regression tests under plain `cargo test`. Seeds
//! named `ok-*` are valid repositories, `err-*` broken ones (CE2 manual mode).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use zonepki::agent::read_manual_material;

#[path = "../fuzz/fuzz_targets/harness/remint_repo.rs"]
mod remint_repo_harness;

use remint_repo_harness::{join, split};

/// Every file in `fuzz/corpus/remint_repo`, sorted by name.
fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/remint_repo");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the remint_repo corpus is empty");
    files
}

fn name(p: &Path) -> &str {
    p.file_name().unwrap().to_str().unwrap()
}

#[test]
fn remint_repo_corpus() {
    for path in corpus() {
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| remint_repo_harness::run(&data)).is_err() {
            panic!(
                "fuzz target remint_repo panics on corpus file {}",
                path.display()
            );
        }
    }
}

#[test]
fn remint_repo_seeds_say_what_their_names_say() {
    let mut ok = 0;
    let mut err = 0;
    for path in corpus() {
        let files = split(&std::fs::read(&path).unwrap());
        let result = read_manual_material(&files);
        let n = name(&path);
        if n.starts_with("ok-") {
            let m = result.unwrap_or_else(|e| panic!("{n}: {e}"));
            assert!(!m.chain.is_empty(), "{n}");
            ok += 1;
        } else if n.starts_with("err-") {
            assert!(result.is_err(), "{n} was accepted");
            err += 1;
        }
    }
    assert!(ok >= 5 && err >= 5, "{ok} valid and {err} broken seeds");
}

#[test]
fn remint_repo_split_format() {
    assert!(split(&[]).is_empty());
    // Names only: no files.
    assert!(split(&[0xff]).is_empty());
    // server.pem (4), key.der (6), and server.der (THIRD 2) as the rest.
    let data = join(&[(4, b"chain"), (6, b"key"), (2, b"rest")]);
    assert_eq!(data[0], 4 | 6 << 3 | 2 << 6);
    let files = split(&data);
    let want = [
        ("server.pem", &b"chain"[..]),
        ("key.der", b"key"),
        ("server.der", b"rest"),
    ];
    assert_eq!(files.len(), 3);
    for ((n, c), (wn, wc)) in files.iter().zip(want) {
        assert_eq!((n.as_str(), c.as_slice()), (wn, wc));
    }
    // An empty file 1 still exists; a length beyond the input takes what is left.
    let files = split(&[7, 0, 0, 0, 9, b'x']);
    assert_eq!(files.len(), 2);
    assert_eq!(files[0], ("other.txt".to_string(), Vec::new()));
    assert_eq!(files[1], ("server.der".to_string(), b"x".to_vec()));
    // One byte after the names: file 1 is that byte.
    assert_eq!(split(&[5, 0x30]), [("server.cert".to_string(), vec![0x30])]);
}
