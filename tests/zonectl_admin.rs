//! zonectl as an administrator expects it (issue 9 item 9): a store held by another process,
//! missing or damaged is named as such; reads work on a read-only store and leave it
//! untouched; exit statuses for monitoring; outputs that never overwrite silently; device
//! series, sorting and paging; JSON errors; completions and help.
#![allow(clippy::unwrap_used)]

#[path = "common/cli.rs"]
mod cli;
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use cli::{PS1, Zone};
use zonepki::store::RedbStore;

const NOW: &str = "2027-01-01T00:00:00Z";

fn zone() -> Zone {
    let z = Zone::new();
    z.init_acme(&[], NOW);
    z
}

/// zonectl with `args`, on the zone's store, standard input closed, stderr piped.
fn spawn(z: &Zone, args: &[&str]) -> std::process::Child {
    Command::new(common::zonectl_bin())
        .args(args)
        .env("ZONECTL_STORE", z.path("zone.db"))
        .env_remove("ZONECTL_WAIT")
        .args(["--root", z.path("fleet").to_str().unwrap()])
        .current_dir(z.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn busy_store_is_named_as_busy_not_missing() {
    let z = zone();
    // This test process holds the store, as a long-running zonectl would.
    let held = RedbStore::open(z.path("zone.db")).unwrap();
    for args in [
        &["ca", "show", "--wait", "0"][..],
        &["device", "add", "d1", "--wait", "0"],
    ] {
        let o = z.run(args);
        assert_eq!(o.code, 1, "{args:?}: {}", o.stderr);
        assert!(o.stderr.starts_with("error: "), "{}", o.stderr);
        assert!(o.stderr.contains("another zonectl"), "{}", o.stderr);
        assert!(o.stderr.contains("--wait"), "{}", o.stderr);
        assert!(!o.stderr.contains("zonectl init"), "{}", o.stderr);
    }
    // A bounded wait is announced, then refused with the same advice.
    let o = z.run(&["ca", "show", "--wait", "1"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.starts_with("waiting for another zonectl holding "),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("(up to 1s)"), "{}", o.stderr);
    assert!(o.stderr.contains("waited 1s"), "{}", o.stderr);
    drop(held);
    z.ok(&["device", "add", "d1"]);
}

#[test]
fn waiting_command_runs_once_the_store_is_free() {
    let z = zone();
    let held = RedbStore::open(z.path("zone.db")).unwrap();
    let mut child = spawn(&z, &["device", "add", "d1", "--wait", "600"]);
    // The announcement comes before the wait: read it, then let the command go on.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("waiting for another zonectl holding "),
        "{line}"
    );
    assert!(line.contains("zone.db (up to 600s)"), "{line}");
    held.close().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert_eq!(z.json(&["device", "list"])[0]["name"], "d1");
}

#[test]
fn missing_and_damaged_stores_get_their_own_advice() {
    let z = Zone::new();
    let o = z.run(&["ca", "show"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("zonectl init"), "{}", o.stderr);
    std::fs::write(z.path("zone.db"), vec![0x5a; 8192]).unwrap();
    for args in [
        &["ca", "show"][..],
        &["device", "add", "x"],
        &["store", "dump"],
    ] {
        let o = z.run(args);
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert!(o.stderr.contains("damaged"), "{}", o.stderr);
        assert!(o.stderr.contains("restore"), "{}", o.stderr);
        assert!(!o.stderr.contains("zonectl init"), "{}", o.stderr);
    }
    assert_eq!(std::fs::read(z.path("zone.db")).unwrap(), vec![0x5a; 8192]);
}

#[test]
fn reads_work_on_a_read_only_store_and_leave_it_untouched() {
    let z = zone();
    z.ok(&["device", "add", "--count", "2"]);
    z.ok(&[
        "ca",
        "remint",
        "--activate-at",
        "2027-03-01T00:00:00Z",
        "--now",
        NOW,
    ]);
    let path = z.path("zone.db");
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    // An old modification time, so any write shows.
    let old = SystemTime::now() - Duration::from_secs(86_400);
    file.set_modified(old).unwrap();
    drop(file);
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&path, perms).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    for args in [
        &["ca", "show"][..],
        &["op", "show"],
        &["audit", "verify"],
        &["store", "dump"],
        &["server", "list"],
        &["server", "show", PS1],
        &["device", "list"],
        &["warnings"],
        &["plan"],
    ] {
        let mut a = args.to_vec();
        a.extend(["--now", NOW]);
        z.ok(&a);
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            old,
            "{args:?} changed the store's modification time"
        );
    }
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    // A change is refused as such where the file really is read-only (not for root).
    if std::fs::File::options().write(true).open(&path).is_err() {
        let o = z.run(&["device", "add", "x", "--now", NOW]);
        assert_eq!(o.code, 1);
        assert!(o.stderr.contains("read-only"), "{}", o.stderr);
    }
}

#[test]
fn fleet_refresh_without_a_terminal_prints_progress_lines() {
    let z = zone();
    z.ok(&["device", "add", "--count", "3", "--now", NOW]);
    // stderr is a pipe here: no bar, but lines a log keeps.
    let o = z.run(&["fleet", "refresh", "--all", "--now", NOW]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines[0], "refreshing 4 member(s)", "{}", o.stderr);
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("refreshed 4/4 member(s) ("),
        "{}",
        o.stderr
    );
    // Named members are not fleet-wide work: no progress lines.
    let o = z.run(&["fleet", "refresh", "dev-1", "--now", NOW]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.is_empty(), "{}", o.stderr);
}

#[test]
fn warnings_fail_on_gives_monitoring_an_exit_status() {
    let z = Zone::new();
    z.init_acme(&["--valid-years", "1"], NOW);
    let soon = "2027-12-01T00:00:00Z";
    let late = "2029-01-01T00:00:00Z";
    let code = |at: &str, extra: &[&str]| {
        let mut a = vec!["warnings", "--now", at];
        a.extend_from_slice(extra);
        let o = z.run(&a);
        (o.code, o.stdout)
    };
    assert_eq!(code(NOW, &["--fail-on", "expiring"]).0, 0);
    assert_eq!(code(soon, &["--fail-on", "expired"]).0, 0);
    let (c, out) = code(soon, &["--fail-on", "expiring"]);
    assert_eq!(c, 3);
    assert!(out.contains("Acme"), "the list is printed as well: {out}");
    // Without the option, 0 even when the CA has expired (ZONECTL.md's exit 0).
    assert_eq!(code(late, &[]).0, 0);
    let (c, out) = code(late, &["--fail-on", "expired", "--json"]);
    assert_eq!(c, 3);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["expired"], true);
    // An unknown value is a usage error.
    assert_eq!(code(late, &["--fail-on", "soon"]).0, 2);
    let help = z.ok(&["warnings", "--help"]);
    assert!(help.contains("Exit status") && help.contains("3"), "{help}");
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn external_zone_guides_the_administrator() {
    common::require("openssl");
    let t = cli::Times::new();
    let now = t.at(0, 1);
    let z = Zone::new();
    let ext = cli::ExternalCa::new(&z, "ext-", "Ext");
    ext.server(&z, PS1, "ps1", 825);
    let chain = ext.file("chain.pem");
    z.ok(&[
        "init",
        "--zone",
        "Acme",
        "--first-server",
        PS1,
        "--external-chain",
        &chain,
        "--server-chain",
        "ps1.pem",
        "--server-key",
        "ps1.key",
        "--dns",
        "alias.acme.example",
        "--now",
        &now,
    ]);
    // server show's table has the DNS names its JSON has.
    let out = z.ok(&["server", "show", PS1, "--now", &now]);
    assert!(out.contains("alias.acme.example"), "{out}");
    // server add names the next steps instead of an empty certificate view.
    let out = z.ok(&[
        "server",
        "add",
        cli::PS2,
        "--role",
        "primary",
        "--now",
        &now,
    ]);
    assert!(
        out.contains("zonectl csr generate ps2.acme.example"),
        "{out}"
    );
    assert!(
        out.contains("zonectl cert import ps2.acme.example"),
        "{out}"
    );
    // ca backup refuses before it asks for a passphrase (none is given here: the refusal is
    // about the CA, not the missing passphrase).
    let e = z.refused(&["ca", "backup", "--out", "kb.zip", "--now", &now]);
    assert!(e.contains("external"), "{e}");
    assert!(!e.contains("passphrase"), "{e}");
    assert!(!z.path("kb.zip").exists());
}

#[test]
fn outputs_never_overwrite_without_force_and_dash_is_stdout() {
    let z = zone();
    std::fs::write(z.path("ca.pem"), "keep").unwrap();
    std::fs::write(z.path("ps1.pem"), "keep").unwrap();
    for args in [
        &["ca", "export", "--out", "ca.pem"][..],
        &["server", "cert", PS1, "--out", "ps1.pem"],
    ] {
        let e = z.refused(args);
        assert!(e.contains("exists") && e.contains("--force"), "{e}");
    }
    assert_eq!(std::fs::read(z.path("ca.pem")).unwrap(), b"keep");
    assert_eq!(std::fs::read(z.path("ps1.pem")).unwrap(), b"keep");
    z.ok(&["ca", "export", "--out", "ca.pem", "--force"]);
    z.ok(&["server", "cert", PS1, "--out", "ps1.pem", "--force"]);
    let ca = std::fs::read_to_string(z.path("ca.pem")).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    // `-` is standard output, holding the data alone; no file named `-`.
    assert_eq!(z.ok(&["ca", "export", "--out", "-"]), ca);
    let chain = z.ok(&["server", "cert", PS1, "--out", "-"]);
    assert_eq!(chain, std::fs::read_to_string(z.path("ps1.pem")).unwrap());
    let der = z.ok(&["ca", "export", "--out", "-", "--der", "--json"]);
    assert!(!der.starts_with('{'), "DER, not a JSON summary");
    assert!(!z.path("-").exists());
}

fn names(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn device_series_natural_order_filter_and_pages() {
    let z = zone();
    // --count 0 adds nothing and says so (usage error), instead of "added 0 device(s)".
    let o = z.run(&["device", "add", "--count", "0"]);
    assert_eq!(o.code, 2, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("at least 1"), "{}", o.stderr);
    z.ok(&["device", "add", "--count", "2", "--prefix", "laptop"]);
    // A series is extended with --start.
    let v = z.json(&[
        "device", "add", "--count", "9", "--prefix", "laptop", "--start", "3",
    ]);
    assert_eq!(v["added"], 9);
    let all = names(&z.json(&["device", "list"]));
    let expected: Vec<String> = (1..=11).map(|i| format!("laptop-{i}")).collect();
    assert_eq!(all, expected, "natural order");
    // Pages: --limit, then --after the last name shown.
    let page = names(&z.json(&["device", "list", "--limit", "4"]));
    assert_eq!(page, expected[..4]);
    let page = names(&z.json(&["device", "list", "--limit", "4", "--after", "laptop-4"]));
    assert_eq!(page, expected[4..8]);
    let out = z.ok(&["device", "list", "--limit", "4", "--after", "laptop-4"]);
    assert!(out.contains("--after laptop-8"), "{out}");
    let out = z.ok(&["device", "list", "--after", "laptop-8"]);
    assert!(!out.contains("--after"), "last page: {out}");
    // A status filter.
    z.ok(&[
        "fleet", "refresh", "laptop-2", "--fail", "laptop-2", "--now", NOW,
    ]);
    z.ok(&[
        "ca",
        "remint",
        "--activate-at",
        "2027-03-01T00:00:00Z",
        "--now",
        NOW,
    ]);
    z.ok(&["op", "assign-now", "--now", NOW]);
    z.ok(&["fleet", "refresh", "laptop-3", "--now", NOW]);
    let applied = names(&z.json(&["device", "list", "--status", "applied", "--now", NOW]));
    assert_eq!(applied, ["laptop-3"]);
    let assigned = z.json(&["device", "list", "--status", "assigned", "--now", NOW]);
    assert_eq!(assigned.as_array().unwrap().len(), 10);
    // The status is one of the library's UpdateStatus names: "not assigned" as the JSON
    // writes it (or not_assigned), and anything else is a usage error, not an empty list.
    let none = z.json(&["device", "list", "--status", "not assigned", "--now", NOW]);
    assert_eq!(none, serde_json::json!([]));
    let none = z.json(&["device", "list", "--status", "not_assigned", "--now", NOW]);
    assert_eq!(none, serde_json::json!([]));
    z.usage(&["device", "list", "--status", "nonsense", "--now", NOW]);
}

#[test]
fn valid_years_names_the_allowed_range() {
    let z = Zone::new();
    let e = z.init_refused(&[
        "init",
        "--zone",
        "A",
        "--first-server",
        "ps1.a.example",
        "--valid-years",
        "99999999999",
    ]);
    assert!(e.contains("99999999999"), "{e}");
    assert!(e.contains("1 to 10"), "{e}");
    assert!(!e.contains("4294967295"), "{e}");
}

#[test]
fn cut_off_refusal_names_the_zonectl_command() {
    let z = zone();
    z.ok(&["device", "add", "d1"]);
    z.ok(&[
        "ca",
        "remint",
        "--activate-at",
        "2027-01-08T00:00:00Z",
        "--now",
        NOW,
    ]);
    z.ok(&["op", "assign-now", "--now", NOW]);
    for args in [&["op", "cancel"][..], &["op", "redeploy"]] {
        let mut a = args.to_vec();
        a.extend(["--now", "2027-01-07T23:55:00Z"]);
        let e = z.refused(&a);
        assert!(e.contains("`zonectl op ignore NAME...`"), "{e}");
    }
}

#[test]
fn json_errors_are_one_json_object_with_the_same_exit_codes() {
    let z = zone();
    // A refusal: exit 1, one JSON object on stderr, nothing on stdout.
    let o = z.run(&["server", "show", "nosuch.acme.example", "--json"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stdout.is_empty(), "{}", o.stdout);
    let e: serde_json::Value = serde_json::from_str(&o.stderr).unwrap();
    assert!(e["error"].as_str().unwrap().contains("nosuch"), "{e}");
    // A usage error (clap's, and one found after parsing): exit 2, JSON too.
    for args in [
        &["warnings", "--json", "--within-days", "x"][..],
        &["--json", "server", "show"],
        &["device", "add", "--count", "0", "--json"],
        &["fleet", "refresh", "--json", "--now", NOW],
    ] {
        let o = z.run(args);
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        let e: serde_json::Value = serde_json::from_str(&o.stderr)
            .unwrap_or_else(|err| panic!("{args:?}: {err}: {}", o.stderr));
        assert!(!e["error"].as_str().unwrap().is_empty(), "{e}");
        assert_eq!(e["usage"], true);
    }
    // Without --json, errors stay text.
    let o = z.run(&["server", "show", "nosuch.acme.example"]);
    assert!(o.stderr.starts_with("error: "), "{}", o.stderr);
}

#[test]
fn completions_for_the_usual_shells() {
    let z = Zone::new();
    for (shell, mark) in [
        ("bash", "complete -F _zonectl"),
        ("zsh", "#compdef zonectl"),
        ("fish", "complete -c zonectl"),
    ] {
        let out = z.ok(&["completions", shell]);
        assert!(out.contains(mark), "{shell}: {out}");
        assert!(out.contains("remint"), "{shell} completes subcommands");
    }
    assert!(!z.path("zone.db").exists(), "completions need no store");
}

/// The subcommands listed under "Commands:" in a help text.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_command_has_an_examples_section() {
    let z = Zone::new();
    let mut todo: Vec<Vec<String>> = subcommands(&z.ok(&["--help"]))
        .into_iter()
        .map(|c| vec![c])
        .collect();
    let mut leaves = 0;
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = z.ok(&args);
        let subs = subcommands(&help);
        if subs.is_empty() {
            leaves += 1;
            let section = help
                .split("Examples:\n")
                .nth(1)
                .unwrap_or_else(|| panic!("{path:?} has no Examples section:\n{help}"));
            assert!(
                section.contains(&format!("zonectl {}", path.join(" "))),
                "{path:?}'s examples do not show it: {section}"
            );
        } else {
            todo.extend(subs.into_iter().map(|s| {
                let mut p = path.clone();
                p.push(s);
                p
            }));
        }
    }
    assert!(leaves >= 35, "{leaves} commands");
}

/// Runs `zonectl ARGS` on a pseudo-terminal (util-linux `script`) with `input` on its
/// standard input.
fn on_terminal(z: &Zone, args: &[&str], input: &str, env: &[(&str, &str)]) -> (i32, String) {
    common::require("script"); // util-linux, essential on Debian
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut line = vec![
        quote(common::zonectl_bin().to_str().unwrap()),
        "--store".into(),
        quote(z.path("zone.db").to_str().unwrap()),
        "--root".into(),
        quote(z.path("fleet").to_str().unwrap()),
    ];
    line.extend(args.iter().map(|a| quote(a)));
    let mut cmd = Command::new("script");
    cmd.args(["-qec", &line.join(" "), "/dev/null"])
        .current_dir(z.dir.path())
        .env_remove(cli::PASS_ENV)
        .env_remove(cli::CONFIRM_ENV)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn irreversible_commands_ask_on_a_terminal_only() {
    let z = zone();
    z.ok(&["device", "add", "d1"]);
    // ca restore asks (after the checks that need no passphrase); "no" changes nothing.
    let pass = [
        (cli::PASS_ENV, "correct horse battery"),
        (cli::CONFIRM_ENV, "correct horse battery"),
    ];
    z.ok_env(&["ca", "backup", "--out", "kb.zip", "--now", NOW], &pass);
    let before = z.ok(&["store", "dump"]);
    let (code, text) = on_terminal(
        &z,
        &[
            "ca", "restore", "--file", "kb.zip", "--to", PS1, "--now", NOW,
        ],
        "no\n",
        &pass[..1],
    );
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("Restore the CA from kb.zip onto"), "{text}");
    assert!(text.contains("not confirmed"), "{text}");
    assert_eq!(z.ok(&["store", "dump"]), before);

    // op baseline --force asks; "n" changes nothing.
    z.ok(&[
        "ca",
        "remint",
        "--activate-at",
        "2027-01-08T00:00:00Z",
        "--now",
        NOW,
    ]);
    let later = "2027-01-09T00:00:00Z";
    let state = || z.json(&["op", "show", "--now", later])["state"].clone();
    let before = z.ok(&["store", "dump"]);
    let (code, text) = on_terminal(
        &z,
        &["op", "baseline", "--force", "--now", later],
        "n\n",
        &[],
    );
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("[y/N]") && text.contains("not confirmed"),
        "{text}"
    );
    assert_eq!(
        z.ok(&["store", "dump"]),
        before,
        "a refusal changed the store"
    );

    // "y" goes on; so does --yes without asking.
    let (code, text) = on_terminal(
        &z,
        &["op", "baseline", "--force", "--now", later],
        "y\n",
        &[],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(state(), "baselined");
    z.ok(&[
        "ca",
        "remint",
        "--activate-at",
        "2027-01-20T00:00:00Z",
        "--now",
        later,
    ]);
    let (code, text) = on_terminal(
        &z,
        &[
            "op",
            "baseline",
            "--force",
            "--yes",
            "--now",
            "2027-01-21T00:00:00Z",
        ],
        "",
        &[],
    );
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("[y/N]"), "{text}");
}
