//! `zonectl member token`, `zonectl --server` and `zone-agent` as processes (issue 11 items 2
//! and 4; N3, S1): tokens in 0600 files and never printed, the commands that refuse
//! `--server`, and a device added, given a token and enrolled through a zone server (the test
//! double of tests/common/net.rs) with the same commands an administrator types.
#![allow(clippy::unwrap_used)]

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/live.rs"]
mod live;
#[path = "common/net.rs"]
mod net;
#[path = "common/sim.rs"]
mod sim;

use std::path::Path;
use std::process::{Command, Stdio};

use cli::{Out, Zone};
use zonepki::protocol::RegistrationToken;

const NOW: &str = "2027-01-01T00:00:00Z";

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn token_in(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'), "{text:?}");
    RegistrationToken::parse(&text).unwrap();
    text.trim().to_string()
}

#[test]
fn member_token_writes_one_0600_file_per_member_and_never_prints_a_token_n3() {
    let z = Zone::fleet(&[], "2", NOW);
    let out = z.json(&[
        "member",
        "token",
        "dev-1",
        "dev-2",
        cli::SAT,
        "--out-dir",
        "tokens",
        "--now",
        NOW,
    ]);
    let list = out.as_array().unwrap();
    assert_eq!(list.len(), 3);
    let mut tokens = Vec::new();
    for (entry, name) in list.iter().zip(["dev-1", "dev-2", cli::SAT]) {
        assert_eq!(entry["name"], name);
        assert_eq!(entry["expires_at"], "2027-01-08T00:00:00Z");
        let file = Path::new(entry["file"].as_str().unwrap());
        assert!(file.ends_with(format!("tokens/{name}.token")), "{file:?}");
        let path = z.dir.path().join(file);
        assert_eq!(mode(&path), 0o600);
        tokens.push(token_in(&path));
    }
    let text = out.to_string();
    for t in &tokens {
        assert!(!text.contains(t.as_str()));
    }
    // The table names the files, not the tokens.
    let table = z.ok(&[
        "member",
        "token",
        "dev-1",
        "--out-dir",
        "t2",
        "--valid-hours",
        "1",
        "--now",
        NOW,
    ]);
    assert!(table.contains("t2/dev-1.token"), "{table}");
    assert!(
        !table.contains(&token_in(&z.path("t2/dev-1.token"))),
        "{table}"
    );

    // An existing file is not replaced without --force; with it, a new token replaces it.
    let e = z.refused(&[
        "member",
        "token",
        "dev-2",
        "--out-dir",
        "tokens",
        "--now",
        NOW,
    ]);
    assert!(e.contains("--force"), "{e}");
    assert_eq!(token_in(&z.path("tokens/dev-2.token")), tokens[1]);
    z.ok(&[
        "member",
        "token",
        "dev-2",
        "--out-dir",
        "tokens",
        "--force",
        "--now",
        NOW,
    ]);
    assert_ne!(token_in(&z.path("tokens/dev-2.token")), tokens[1]);
    assert_eq!(mode(&z.path("tokens/dev-2.token")), 0o600);

    // A symbolic link at a token's name is replaced with --force, never written through.
    let target = z.path("elsewhere");
    std::fs::write(&target, "untouched").unwrap();
    std::fs::remove_file(z.path("tokens/dev-1.token")).unwrap();
    std::os::unix::fs::symlink(&target, z.path("tokens/dev-1.token")).unwrap();
    z.ok(&[
        "member",
        "token",
        "dev-1",
        "--out-dir",
        "tokens",
        "--force",
        "--now",
        NOW,
    ]);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    assert!(
        !z.path("tokens/dev-1.token")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // An unknown member refuses the whole call: no file, the store unchanged.
    let e = z.refused(&[
        "member",
        "token",
        "dev-1",
        "nobody",
        "--out-dir",
        "t3",
        "--now",
        NOW,
    ]);
    assert!(e.contains("nobody"), "{e}");
    assert!(!z.path("t3/dev-1.token").exists());
    // A validity out of range is refused too.
    let e = z.refused(&[
        "member",
        "token",
        "dev-1",
        "--out-dir",
        "t4",
        "--valid-hours",
        "0",
        "--now",
        NOW,
    ]);
    assert!(e.contains("hour"), "{e}");
}

#[test]
fn commands_that_run_where_the_files_are_refuse_server() {
    let z = Zone::new();
    let remote = [
        "--server",
        "https://127.0.0.1:9",
        "--admin-token-file",
        "token",
        "--ca-sha256",
        "00",
    ];
    let mut init = remote.to_vec();
    init.extend(["init", "--zone", "Acme", "--first-server", cli::PS1]);
    let e = z.init_refused(&init);
    assert!(e.contains("--server cannot be used here"), "{e}");
    assert!(e.contains("init"), "{e}");

    let z = Zone::fleet(&[], "1", NOW);
    for cmd in [
        &["fleet", "refresh", "--all"][..],
        &["lint", "x.pem"][..],
        &["completions", "bash"][..],
    ] {
        let mut args = remote.to_vec();
        args.extend_from_slice(cmd);
        let e = z.refused(&args);
        assert!(e.contains("--server cannot be used here"), "{e}");
    }
    // --server without its token file and pin is refused, naming what is missing.
    let e = z.refused(&["--server", "https://127.0.0.1:9", "ca", "show"]);
    assert!(
        e.contains("--admin-token-file") && e.contains("--ca-sha256"),
        "{e}"
    );
}

fn agent_bin() -> &'static Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| common::example_bin("zone_agent"))
}

fn zone_agent(args: &[&str]) -> Out {
    let out = Command::new(agent_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn zone_agent_refresh_without_an_enrolment_fails_with_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let o = zone_agent(&["refresh", "--state", dir.path().to_str().unwrap()]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.starts_with("error: "), "{}", o.stderr);
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    assert!(o.stderr.contains("no enrolled member"), "{}", o.stderr);
    // Nothing was written into the directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_device_is_added_given_a_token_and_enrolled_through_the_zone_server_n3() {
    let lz = live::live_zone(1);
    let z = Zone::new();
    let token_file = z.path("admin-token");
    std::fs::write(&token_file, format!("{}\n", lz.server.admin_token)).unwrap();
    let url = lz.server.url.clone();
    let remote = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--server",
            url.as_str(),
            "--admin-token-file",
            token_file.to_str().unwrap(),
            "--ca-sha256",
            lz.server.pin.as_str(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |extra: &[&str]| {
        let a = remote(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        z.run(&a)
    };
    // Reads: the zone's CA, with the fingerprint pinned.
    let o = run(&["ca", "show", "--json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let ca: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(ca["sha256"], lz.server.pin.as_str());
    // A command: a device recorded in the server's store, and a token for it.
    let o = run(&["device", "add", "laptop-9"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = run(&[
        "member",
        "token",
        "laptop-9",
        "--out-dir",
        "tokens",
        "--json",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        !o.stdout
            .contains(&token_in(&z.path("tokens/laptop-9.token")))
    );
    // A refusal through --server: one error line, nothing changed there.
    let before = zonepki::service::dump(lz.sim.svc.store()).unwrap();
    let o = run(&["member", "token", "nobody", "--out-dir", "tokens"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.starts_with("error: ") && o.stderr.lines().count() == 1,
        "{}",
        o.stderr
    );
    assert_eq!(zonepki::service::dump(lz.sim.svc.store()).unwrap(), before);

    // The device's agent enrols with the token, then polls.
    let state = z.path("laptop-9");
    let o = zone_agent(&[
        "enroll",
        "--server",
        &url,
        "--name",
        "laptop-9",
        "--token-file",
        z.path("tokens/laptop-9.token").to_str().unwrap(),
        "--ca-sha256",
        &lz.server.pin,
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(mode(&state.join("current/key.pem")), 0o600);
    let o = zone_agent(&["refresh", "--state", state.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);

    // A wrong pin: refused before anything is sent, saying what to check.
    let other = zonepki::net::client::CaPin::of(&net::own_ca("x.example").0).to_string();
    let mut a = remote(&["ca", "show"]);
    let i = a.iter().position(|x| x == "--ca-sha256").unwrap();
    a[i + 1] = other;
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = z.run(&a);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("does not hold a CA"), "{}", o.stderr);
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
}
