//! The README's main job (`cargo run --release --example lifecycle`) runs to the end: a whole
//! zone lifecycle on the embedded store, with the Remint CA, the stranded laptop recovered by
//! the bundle (O6), baseline and an intact audit log (S6). Run here in a temporary directory.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

#[test]
fn the_readme_main_job_runs_to_the_end() {
    let bin = common::example_bin("lifecycle");
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let out = Command::new(bin).arg(&work).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lifecycle failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "every server certificate now chains to the new CA",
        "state baselined",
        "1 recovered",
        "hash chain intact",
        "Done.",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // Real files: the store and every member's directory, under the directory it was given.
    assert!(work.join("zone.db").is_file());
    assert!(work.join("fleet").join("ps1.acme.example").is_dir());
}
