//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Fails the test, saying what to install, when the external tool `name` is not on PATH.
///
/// A test that drives a tool is also marked `#[cfg_attr(not(zonepki_has_TOOL), ignore = ...)]`
/// (build.rs looks for openssl, certtool and Python `cryptography`), so on a machine without
/// the tool `cargo test` lists it as ignored with the reason. This check therefore fires only
/// when the tool is expected: under CI (`CI` set, where `.ci/run` installs every tool) or when
/// it disappeared after the build. A missing tool never lets a test pass silently.
pub fn require(name: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not installed: install it to run this test (.ci/run shows how), \
         or rebuild so that the test is marked ignored"
    );
}

/// For a test whose last part needs the tool `name` (its first part checks the crate alone):
/// whether that part runs. `found` is the tool's `cfg!(zonepki_has_...)`, which build.rs sets
/// when it found the tool and always under CI; then the tool must be there ([`require`]).
/// Otherwise the test says on stderr that the part was not run.
pub fn tool_part(name: &str, found: bool) -> bool {
    if found {
        require(name);
    } else {
        eprintln!("notice: {name} was not found at build time: the part that needs it is not run");
    }
    found
}

/// A [`Command`] for the external tool `name`, after [`require`].
pub fn tool(name: &str) -> Command {
    require(name);
    Command::new(name)
}

/// Runs and returns stdout+stderr as text with the exit status.
pub fn run(cmd: &mut Command) -> (bool, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    let mut text = String::from_utf8_lossy(&stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&stderr));
    (status.success(), text)
}

/// Writes a file and returns its path as a string.
pub fn write(dir: &Path, name: &str, data: impl AsRef<[u8]>) -> String {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p.to_str().unwrap().to_string()
}

/// Builds the example once (cargo builds examples for `cargo test`, but not for
/// `cargo test --test zonectl`), and returns its path.
pub fn zonectl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| example_bin("zonectl"))
}

/// Builds the example `name` (a no-op when it is up to date) and returns its path.
pub fn example_bin(name: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "--example",
        name,
        "--message-format",
        "json",
    ]);
    // The example is built with the features these tests run with (`rsa`, issue 9 item 7).
    if !cfg!(feature = "rsa") {
        cmd.arg("--no-default-features");
    }
    let out = cmd
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "building {name} failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == name)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reports the {name} executable"))
}

pub mod pg;
