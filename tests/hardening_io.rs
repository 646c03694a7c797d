//! Issue 9 items 1 to 3, through `examples/zonectl.rs`: every input read stops at its limit
//! whatever the file is (/dev/zero, a FIFO fed without end); no member file is written
//! through a symbolic link (the root, `remint-repo/`, `current/`, `ca/`, a temporary name, a
//! final name); and a run killed while writing leaves nothing that the next run does not
//! remove.
//!
//! zonectl runs here under a 1 GiB address-space limit (`ulimit -v`), so a read that does not
//! stop at its limit fails at once (an allocation failure, no `error:` line) instead of
//! exhausting the machine. No sleeps: a killed run is caught by watching for its temporary
//! file.
#![allow(clippy::unwrap_used)]

#[path = "common/cli.rs"]
mod cli;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cli::{CONFIRM_ENV, Out, PASS_ENV, PS1, PS2, Zone, entry};
use serde_json::Value;

const T0: &str = "2027-01-01T00:00:00Z";
const H1: &str = "2027-01-01T01:00:00Z";
const ACT: &str = "2027-01-08T00:00:00Z";
const PASS: &str = "correct horse battery staple";

/// The address-space limit zonectl runs under, in KiB: ample for a certificate file's 16 MiB,
/// far too little to read /dev/zero whole.
const ULIMIT_KIB: &str = "1048576";

/// zonectl with the harness's environment (store `zone.db`, `--root fleet`, no passphrase
/// variables), under [`ULIMIT_KIB`], with `stdin` as standard input.
fn zonectl(z: &Zone, args: &[&str], env: &[(&str, &str)], stdin: Stdio) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -v {ULIMIT_KIB} && exec \"$0\" \"$@\""))
        .arg(common::zonectl_bin())
        .args(args)
        .args(["--root", z.path("fleet").to_str().unwrap()])
        .env("ZONECTL_STORE", z.path("zone.db"))
        .env_remove(PASS_ENV)
        .env_remove(CONFIRM_ENV)
        .current_dir(z.dir.path())
        .stdin(stdin);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

fn run(z: &Zone, args: &[&str], stdin: Stdio) -> Out {
    let out = zonectl(z, args, &[], stdin).output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Refused: exit 1, one `error:` line, the store unchanged (when there is one; no store made
/// when there was none). Returns the error line.
fn refused(z: &Zone, args: &[&str], stdin: Stdio) -> String {
    let had_store = z.path("zone.db").exists();
    let before = had_store.then(|| z.ok(&["store", "dump"]));
    let o = run(z, args, stdin);
    assert_eq!(
        o.code, 1,
        "{args:?} should be refused: {}{}",
        o.stdout, o.stderr
    );
    assert!(o.stderr.starts_with("error: "), "{}", o.stderr);
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    match before {
        Some(before) => assert_eq!(before, z.ok(&["store", "dump"]), "{args:?} changed it"),
        None => assert!(!z.path("zone.db").exists(), "{args:?} left a store"),
    }
    o.stderr
}

/// A child process killed (and reaped) on every path, a panicking test's included.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A FIFO at `path`, made by mkfifo(1), and a writer that feeds it `y` lines without end from
/// the moment a reader opens it until the reader closes it (then `yes` dies of SIGPIPE) or the
/// returned guard kills it.
fn endless_fifo(path: &Path) -> KillOnDrop {
    let made = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
    let writer = Command::new("sh")
        .args(["-c", "exec yes > \"$0\""])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    KillOnDrop(writer)
}

fn internal_zone() -> Zone {
    let z = Zone::new();
    z.init_acme(&[], T0);
    z
}

fn assert_names_limit(e: &str, path: &str, limit: u64) {
    assert!(
        e.contains(path) && e.contains(&format!("more than {limit} bytes")),
        "{e}"
    );
}

const CERT_LIMIT: u64 = 16 * 1024 * 1024;

#[test]
fn ca_change_external_chain_from_dev_zero_is_refused_at_the_limit() {
    let z = internal_zone();
    let e = refused(
        &z,
        &[
            "ca",
            "change",
            "external",
            "--chain",
            "/dev/zero",
            "--activate-at",
            ACT,
            "--csr",
            "auto",
            "--now",
            H1,
        ],
        Stdio::null(),
    );
    assert_names_limit(&e, "/dev/zero", CERT_LIMIT);
}

#[test]
fn cert_import_from_dev_zero_is_refused_at_the_limit() {
    let z = internal_zone();
    let e = refused(
        &z,
        &["cert", "import", PS1, "--file", "/dev/zero", "--now", H1],
        Stdio::null(),
    );
    assert_names_limit(&e, "/dev/zero", CERT_LIMIT);
}

#[test]
fn init_with_an_external_chain_or_key_from_dev_zero_is_refused_and_leaves_no_store() {
    let z = Zone::new();
    let init = |chain: &str, key: &str| {
        vec![
            "init".to_string(),
            "--zone".into(),
            "Acme".into(),
            "--first-server".into(),
            PS1.into(),
            "--external-chain".into(),
            chain.into(),
            "--server-chain".into(),
            "small.pem".into(),
            "--server-key".into(),
            key.into(),
            "--now".into(),
            T0.into(),
        ]
    };
    common::write(z.dir.path(), "small.pem", "not read as certificates yet");
    let e = refused(
        &z,
        &cli::strs(&init("/dev/zero", "small.pem")),
        Stdio::null(),
    );
    assert_names_limit(&e, "/dev/zero", CERT_LIMIT);
    // A key file has its own, smaller limit.
    let e = refused(
        &z,
        &cli::strs(&init("small.pem", "/dev/zero")),
        Stdio::null(),
    );
    assert_names_limit(&e, "/dev/zero", 64 * 1024);
    assert!(e.contains("key file"), "{e}");
}

#[test]
fn an_endless_fifo_or_pipe_is_refused_at_the_limit() {
    let z = internal_zone();
    let fifo = z.path("chain.fifo");
    let _writer = endless_fifo(&fifo);
    let e = refused(
        &z,
        &[
            "ca",
            "change",
            "external",
            "--chain",
            fifo.to_str().unwrap(),
            "--activate-at",
            ACT,
            "--csr",
            "auto",
            "--now",
            H1,
        ],
        Stdio::null(),
    );
    assert_names_limit(&e, "chain.fifo", CERT_LIMIT);

    // `--file <(yes)`: an anonymous pipe, here zonectl's standard input.
    let mut yes = KillOnDrop(
        Command::new("yes")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pipe = Stdio::from(yes.0.stdout.take().unwrap());
    let e = refused(
        &z,
        &["cert", "import", PS1, "--file", "/dev/stdin", "--now", H1],
        pipe,
    );
    assert_names_limit(&e, "/dev/stdin", CERT_LIMIT);

    // A CA backup archive has its own limit.
    let e = refused(
        &z,
        &[
            "ca",
            "restore",
            "--file",
            "/dev/zero",
            "--to",
            PS1,
            "--now",
            H1,
        ],
        Stdio::null(),
    );
    assert_names_limit(&e, "/dev/zero", 1 << 20);
}

/// A zone with ps1 (the CA), ps2 and dev-1, dev-2, every agent refreshed once.
fn small_fleet() -> Zone {
    let z = internal_zone();
    z.ok(&["server", "add", PS2, "--role", "primary", "--now", T0]);
    z.ok(&["device", "add", "--count", "2", "--now", T0]);
    z.ok(&["fleet", "refresh", "--all", "--now", T0]);
    z
}

/// `fleet refresh --all --json` under the memory limit: the outcome for `name`.
fn refresh(z: &Zone, name: &str, now: &str) -> Value {
    let o = run(
        z,
        &["fleet", "refresh", "--all", "--now", now, "--json"],
        Stdio::null(),
    );
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    entry(&v, "name", name).clone()
}

#[test]
fn manual_mode_files_are_read_bounded() {
    // CE2: the agent reads the administrator's server.<ext> and key.der from remint-repo/;
    // one of them endless (here a link to /dev/zero) makes the member fail, not the machine.
    let z = small_fleet();
    let repo = z.path("fleet").join("dev-1/remint-repo");
    std::os::unix::fs::symlink("/dev/zero", repo.join("key.der")).unwrap();
    let out = refresh(&z, "dev-1", H1);
    assert_eq!(out["outcome"], "failed", "{out}");
    let detail = out["detail"].as_str().unwrap();
    assert!(
        detail.contains("key.der") && detail.contains("more than 65536 bytes"),
        "{detail}"
    );
    std::fs::remove_file(repo.join("key.der")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", repo.join("server.cer")).unwrap();
    let out = refresh(&z, "dev-1", H1);
    let detail = out["detail"].as_str().unwrap();
    assert!(
        detail.contains("server.cer") && detail.contains(&format!("more than {CERT_LIMIT}")),
        "{detail}"
    );
}

/// An empty directory outside the fleet, for links to point at.
fn outside(z: &Zone) -> PathBuf {
    let p = z.path("outside");
    std::fs::create_dir(&p).unwrap();
    p
}

fn assert_empty(dir: &Path) {
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.is_empty(), "written outside: {names:?}");
}

/// Starts a Remint CA (which stages on every member at its next refresh) and refreshes
/// the fleet: `member`'s outcome.
fn remint_and_refresh(z: &Zone, member: &str) -> Value {
    z.ok(&[
        "--no-bridge",
        "ca",
        "remint",
        "--activate-at",
        ACT,
        "--now",
        H1,
    ]);
    refresh(z, member, H1)
}

/// The member failed, and its error names `path` (relative to the fleet root) as a link.
fn assert_refused_link(out: &Value, path: &str) {
    assert_eq!(out["outcome"], "failed", "{out}");
    let detail = out["detail"].as_str().unwrap();
    assert!(
        detail.contains(path) && detail.contains("symbolic link"),
        "{path}: {detail}"
    );
}

#[test]
fn a_linked_remint_repo_is_refused_and_nothing_is_staged_outside() {
    // Staging a Remint CA on a server writes its new private key, key.pem, to remint-repo/.
    let z = small_fleet();
    let out_dir = outside(&z);
    let repo = z.path("fleet").join(PS2).join("remint-repo");
    std::fs::remove_dir(&repo).unwrap();
    std::os::unix::fs::symlink(&out_dir, &repo).unwrap();
    let out = remint_and_refresh(&z, PS2);
    assert_refused_link(&out, &format!("{PS2}/remint-repo"));
    assert_empty(&out_dir);
    // A device beside it staged as usual.
    assert!(z.path("fleet").join("dev-2/remint-repo/ca.cert").exists());
}

#[test]
fn a_linked_current_is_refused() {
    let z = small_fleet();
    let out_dir = outside(&z);
    let cur = z.path("fleet").join("dev-1/current");
    std::fs::remove_dir_all(&cur).unwrap();
    std::os::unix::fs::symlink(&out_dir, &cur).unwrap();
    let out = remint_and_refresh(&z, "dev-1");
    assert_refused_link(&out, "dev-1/current");
    assert_empty(&out_dir);
}

#[test]
fn a_linked_ca_directory_is_refused_and_init_leaves_no_store() {
    // The CA key is generated on the first server's agent and written to its ca/ (Z2).
    let z = Zone::new();
    let out_dir = outside(&z);
    let member = z.path("fleet").join(PS1);
    std::fs::create_dir_all(&member).unwrap();
    std::os::unix::fs::symlink(&out_dir, member.join("ca")).unwrap();
    let e = refused(
        &z,
        &["init", "--zone", "Acme", "--first-server", PS1, "--now", T0],
        Stdio::null(),
    );
    assert!(
        e.contains(&format!("{PS1}/ca")) && e.contains("symbolic link"),
        "{e}"
    );
    assert_empty(&out_dir);
}

#[test]
fn a_link_at_a_temporary_name_is_refused() {
    let z = small_fleet();
    let out_dir = outside(&z);
    let repo = z.path("fleet").join(PS2).join("remint-repo");
    // The temporary name of the staged key, and the one b3e91fe used (key.pem -> key.tmp).
    std::os::unix::fs::symlink(out_dir.join("a"), repo.join("key.pem.zonepki-tmp")).unwrap();
    std::os::unix::fs::symlink(out_dir.join("b"), repo.join("key.tmp")).unwrap();
    let out = remint_and_refresh(&z, PS2);
    assert_refused_link(&out, &format!("{PS2}/remint-repo/key.pem.zonepki-tmp"));
    assert_empty(&out_dir);
}

#[test]
fn a_link_at_a_final_name_is_refused() {
    let z = small_fleet();
    let out_dir = outside(&z);
    let repo = z.path("fleet").join(PS2).join("remint-repo");
    std::os::unix::fs::symlink(out_dir.join("key.pem"), repo.join("key.pem")).unwrap();
    let out = remint_and_refresh(&z, PS2);
    assert_refused_link(&out, &format!("{PS2}/remint-repo/key.pem"));
    assert_empty(&out_dir);
    // The link is left as it was: refused, neither followed nor replaced.
    assert!(
        repo.join("key.pem")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn a_linked_root_is_refused() {
    // The root is refused rather than resolved: `--root` names where files go.
    let z = Zone::new();
    let out_dir = outside(&z);
    std::os::unix::fs::symlink(&out_dir, z.path("fleet")).unwrap();
    let e = refused(
        &z,
        &["init", "--zone", "Acme", "--first-server", PS1, "--now", T0],
        Stdio::null(),
    );
    assert!(
        e.contains(z.path("fleet").to_str().unwrap()) && e.contains("symbolic link"),
        "{e}"
    );
    assert_empty(&out_dir);
}

/// The names in the zone's directory that are neither the store, the fleet, nor `keep`.
fn strays(z: &Zone, keep: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(z.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "zone.db" && n != "fleet" && !keep.contains(&n.as_str()))
        .collect();
    names.sort();
    names
}

fn backup_env() -> [(&'static str, &'static str); 2] {
    [(PASS_ENV, PASS), (CONFIRM_ENV, PASS)]
}

#[test]
fn a_backup_killed_while_writing_leaves_nothing_a_rerun_does_not_remove() {
    let z = internal_zone();
    let env = backup_env();
    // SIGKILL a backup once its temporary file exists (it then spends a while in PBKDF2,
    // S5). Should a run finish before it is seen, try again under another name.
    let mut killed = None;
    let mut finished: Vec<String> = Vec::new();
    for attempt in 0..5 {
        let name = format!("kb{attempt}.zip");
        let mut keep: Vec<&str> = finished.iter().map(String::as_str).collect();
        keep.push(&name);
        let mut child = KillOnDrop(
            zonectl(
                &z,
                &["ca", "backup", "--out", &name, "--now", H1],
                &env,
                Stdio::null(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        );
        let seen = loop {
            if !strays(&z, &keep).is_empty() {
                break true;
            }
            if child.0.try_wait().unwrap().is_some() {
                break false;
            }
        };
        if seen {
            child.0.kill().unwrap();
            child.0.wait().unwrap();
            if !z.path(&name).exists() {
                killed = Some(name);
                break;
            }
        }
        finished.push(name);
    }
    let name = killed.expect("a backup was killed while writing its temporary file");
    let mut keep: Vec<&str> = finished.iter().map(String::as_str).collect();
    keep.push(&name);
    assert!(
        !strays(&z, &keep).is_empty(),
        "the killed run left its temporary file"
    );
    // The rerun, with the same output name, writes the archive and removes what the killed
    // run left.
    z.ok_env(&["ca", "backup", "--out", &name, "--now", H1], &env);
    assert_eq!(strays(&z, &keep), Vec::<String>::new());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(z.path(&name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // And still never replaces an archive.
    let again = z.run_env(&["ca", "backup", "--out", &name, "--now", H1], &env);
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert_eq!(strays(&z, &keep), Vec::<String>::new());
}

#[test]
fn stale_temporary_files_are_removed_by_the_next_run() {
    // As a killed run leaves them: empty, mode 0600.
    let z = Zone::new();
    let stale = |name: &str| {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(z.path(name))
            .unwrap();
    };
    stale("zone.db.zonepki-tmp");
    z.init_acme(&[], T0);
    assert_eq!(strays(&z, &[]), Vec::<String>::new());
    stale("kb.zip.zonepki-tmp");
    z.ok_env(
        &["ca", "backup", "--out", "kb.zip", "--now", H1],
        &backup_env(),
    );
    assert_eq!(strays(&z, &["kb.zip"]), Vec::<String>::new());

    // Member files: a temporary file in pending/, ca/ or remint-repo/ goes at the next save.
    z.ok(&["device", "add", "--count", "1", "--now", T0]);
    z.ok(&["fleet", "refresh", "dev-1", "--now", T0]);
    let dev = z.path("fleet").join("dev-1");
    for f in [
        "pending/key.pem.zonepki-tmp",
        "ca/cert.pem.zonepki-tmp",
        "remint-repo/key.pem.zonepki-tmp",
    ] {
        std::fs::write(dev.join(f), "left by a killed run").unwrap();
    }
    // The next save: dev-1 stages a Remint CA (a refresh with nothing to do saves nothing).
    z.ok(&[
        "--no-bridge",
        "ca",
        "remint",
        "--activate-at",
        ACT,
        "--now",
        H1,
    ]);
    z.ok(&["fleet", "refresh", "--all", "--now", H1]);
    assert!(dev.join("remint-repo/ca.cert").exists(), "dev-1 staged");
    for f in ["pending", "ca", "remint-repo"] {
        let names: Vec<_> = std::fs::read_dir(dev.join(f))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".zonepki-tmp"))
            .collect();
        assert!(names.is_empty(), "{f}: {names:?}");
    }
}
