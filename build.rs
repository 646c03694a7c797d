//! Finds the external tools that the interoperability tests drive (OpenSSL, GnuTLS `certtool`,
//! pkilint, Python `cryptography` >= 42) and tells the tests which are present, as `cfg`s:
//! `zonepki_has_openssl`, `zonepki_has_certtool`, `zonepki_has_pkilint`,
//! `zonepki_has_pycryptography`; and whether `$ZONEPKI_TEST_POSTGRES` names a PostgreSQL server
//! for the tests of the PostgreSQL store, as `zonepki_has_postgres` (and `$ZONEPKI_TEST_POSTGRES_CTL`
//! its `pg_ctl`, for the restart test, as `zonepki_has_postgres_ctl`).
//!
//! A test that needs a missing tool is then marked *ignored* with the reason (`cargo test`
//! lists it as `ignored, needs ...`), never passed silently. With `CI` set every `cfg` is on,
//! so under CI a missing tool fails its tests (`.ci/run` installs them all). The library
//! itself never looks at these `cfg`s.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TOOLS: [(&str, &str); 3] = [
    ("openssl", "zonepki_has_openssl"),
    ("certtool", "zonepki_has_certtool"),
    ("lint_pkix_cert", "zonepki_has_pkilint"),
];
const PY_CFG: &str = "zonepki_has_pycryptography";
/// A PostgreSQL server for the tests of `PostgresStore`: `$ZONEPKI_TEST_POSTGRES` names it
/// (`postgres://USER@HOST:PORT/DB`, a user that may create databases; `.ci/run` starts one).
const PG_CFG: &str = "zonepki_has_postgres";
const PG_ENV: &str = "ZONEPKI_TEST_POSTGRES";
/// The test server's `pg_ctl` with its options (`$ZONEPKI_TEST_POSTGRES_CTL`, to which a test
/// appends `stop ...` or `start ...`): tests/postgres_restart.rs stops and starts the server.
const PG_CTL_CFG: &str = "zonepki_has_postgres_ctl";
const PG_CTL_ENV: &str = "ZONEPKI_TEST_POSTGRES_CTL";
/// tests/console.rs's browser test: /usr/bin/chromium, node, and playwright-core installed
/// under target/console-node (`.ci/run` installs all three).
const CHROMIUM_CFG: &str = "zonepki_has_chromium";

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=PATH");
    for (_, cfg) in TOOLS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    println!("cargo::rustc-check-cfg=cfg({PY_CFG})");
    println!("cargo::rustc-check-cfg=cfg({PG_CFG})");
    println!("cargo::rerun-if-env-changed={PG_ENV}");
    println!("cargo::rustc-check-cfg=cfg({PG_CTL_CFG})");
    println!("cargo::rerun-if-env-changed={PG_CTL_ENV}");
    println!("cargo::rustc-check-cfg=cfg({CHROMIUM_CFG})");

    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    // An install into a PATH directory (apt-get install gnutls-bin, pip install pkilint)
    // changes that directory, so cargo runs this script again and the tests stop being ignored.
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        println!("cargo::rerun-if-changed={}", dir.display());
    }
    for (tool, cfg) in TOOLS {
        if ci || dirs.iter().any(|d| is_executable(&d.join(tool))) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    for (env, cfg) in [(PG_ENV, PG_CFG), (PG_CTL_ENV, PG_CTL_CFG)] {
        if ci || std::env::var_os(env).is_some_and(|v| !v.is_empty()) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    let playwright = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default())
        .join("target/console-node/node_modules/playwright-core");
    // (A path that does not exist would make cargo run this script on every build: after
    // installing playwright-core by hand, `touch build.rs`.)
    if playwright.is_dir() {
        println!("cargo::rerun-if-changed={}", playwright.display());
    }
    if ci
        || (is_executable(Path::new("/usr/bin/chromium"))
            && dirs.iter().any(|d| is_executable(&d.join("node")))
            && playwright.is_dir())
    {
        println!("cargo::rustc-cfg={CHROMIUM_CFG}");
    }
    match python_cryptography() {
        Some(package) => {
            println!("cargo::rerun-if-changed={}", package.display());
            println!("cargo::rustc-cfg={PY_CFG}");
        }
        None if ci => println!("cargo::rustc-cfg={PY_CFG}"),
        None => {
            // Watch where `pip install cryptography` would put it.
            if let Some(site) = python_out("import site; print(site.getsitepackages()[0])") {
                println!("cargo::rerun-if-changed={site}");
            }
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The directory of an installed `cryptography` that has the RFC 5280 verifier (>= 42).
fn python_cryptography() -> Option<PathBuf> {
    let dir = python_out(
        "import os, cryptography.x509.verification as v, cryptography as c; \
         print(os.path.dirname(c.__file__))",
    )?;
    Some(PathBuf::from(dir))
}

fn python_out(code: &str) -> Option<String> {
    let out = Command::new("python3")
        .args(["-c", code])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}
