//! Staged operations through `examples/zonectl.rs` (../shared/ZONECTL.md, "Staged operations"
//! and "The fleet"): Remint CA and Server Remint from start to baseline, the member files
//! (A1, A2), cancel's cut-off (O7), stranded members and their recovery (O8, O10), failures
//! and redeploy (O5), replication and "assign now" (O3, O4), the dry run (B3), and the option
//! parsing of `fleet refresh`. Fixed epochs via --now; no sleeps.
#![allow(clippy::unwrap_used)]

#[path = "common/cli.rs"]
mod cli;
mod common;

use cli::{CONTENT, PS1, PS2, SAT, Zone, entry};
use common::zonectl_bin;

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

const T0: &str = "2027-01-01T00:00:00Z";
const H1: &str = "2027-01-01T01:00:00Z";
const H2: &str = "2027-01-01T02:00:00Z";
/// Activation: T0 + 7 days.
const ACT: &str = "2027-01-08T00:00:00Z";
/// Ten minutes before activation: the first moment a cancel is refused (O7).
const CUT: &str = "2027-01-07T23:50:00Z";
const CUT_1S: &str = "2027-01-07T23:49:59Z";
const AFTER: &str = "2027-01-08T01:00:00Z";

/// ps1 (CA, with an extra DNS name), ps2, sat under ps2, content, dev-1 .. dev-5, every agent
/// refreshed once so that it holds the zone's trust.
fn zone() -> Zone {
    Zone::fleet(&["--dns", "alias.acme.example"], "5", T0)
}

/// A Remint CA with the manuals' semantics (`--no-bridge`): members that miss activation are
/// stranded. tests/bridge.rs covers the bridge.
fn remint_ca(z: &Zone) -> Value {
    z.json(&[
        "--no-bridge",
        "ca",
        "remint",
        "--activate-at",
        ACT,
        "--cn",
        "Acme CA 2",
        "--now",
        H1,
    ])
}

/// A member's status in `op show --json`: a server's (`servers`, by `fqdn`) or a device's
/// (`devices`, by `name`).
fn status(view: &Value, name: &str) -> String {
    let server = view["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["fqdn"] == name);
    match server {
        Some(s) => &s["status"],
        None => &entry(&view["devices"], "name", name)["status"],
    }
    .as_str()
    .unwrap()
    .to_string()
}

/// A member's outcome in `fleet refresh --json`.
fn outcome(outcomes: &Value, name: &str) -> String {
    entry(outcomes, "name", name)["outcome"]
        .as_str()
        .unwrap()
        .to_string()
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn all_status(view: &Value) -> Vec<String> {
    let servers = view["servers"].as_array().unwrap();
    let devices = view["devices"].as_array().unwrap();
    servers
        .iter()
        .chain(devices)
        .map(|d| d["status"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn remint_ca_through_the_command_line() {
    let z = zone();
    z.ok(&["ca", "export", "--out", "old-ca.pem", "--now", H1]);
    let started = remint_ca(&z);
    assert_eq!(started["kind"], "remint_ca");

    let v = z.json(&["op", "show", "--now", H1]);
    assert_eq!(v["kind"], "remint_ca");
    assert_eq!(v["state"], "replicating");
    assert_eq!(v["activation"], ACT);
    assert_eq!(v["cancel_deadline"], CUT);
    assert_eq!(v["update_name"], "Remint CA");
    let replication = v["replication"].as_array().unwrap();
    assert_eq!(replication.len(), 3, "ps1, ps2 and content (O3): {v}");
    for r in replication {
        assert_eq!(r["status"], "pending", "{r}");
    }
    entry(&v["replication"], "server", CONTENT);
    // Servers and devices apart: the servers that get a certificate, and every other member
    // (the content server and the five devices).
    assert_eq!(v["devices"].as_array().unwrap().len(), 6, "{v}");
    entry(&v["devices"], "name", CONTENT);
    assert_eq!(all_status(&v).len(), 9, "every member: {v}");
    assert!(all_status(&v).iter().all(|s| s == "not assigned"), "{v}");
    let servers = v["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 3, "ps1, ps2, sat: {v}");
    assert!(servers.iter().all(|s| s["certificate_status"] == "pending"));
    assert_eq!(
        names(&v["recovery_available_on"]),
        [PS1],
        "O6: the CA server"
    );
    assert!(names(&v["stranded"]).is_empty());

    // O1: one operation at a time, and refusals name the one in the way.
    let e = z.refused(&["ca", "remint", "--activate-at", ACT, "--now", H1]);
    assert!(e.contains("Remint CA") && e.contains("in progress"), "{e}");
    let e = z.refused(&[
        "server",
        "remint",
        SAT,
        "--update-name",
        "x",
        "--activate-at",
        ACT,
        "--now",
        H1,
    ]);
    assert!(
        e.contains("Remint CA") && e.contains("Server Remint"),
        "{e}"
    );
    let e = z.refused(&[
        "server", "cert", SAT, "--out", "f.pem", "--future", "--now", H1,
    ]);
    assert!(e.contains("no future certificate"), "{e}");

    // First refresh: content servers pull the content (O3); once all have it the update is
    // assigned (O4), and the members after them in the round apply it (A1).
    let o = z.run(&["fleet", "refresh", "--all", "--json", "--now", H2]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    // No bar without a terminal, but progress lines (JSON notices with --json), issue 9
    // item 9: the first names the count, the last says all are done.
    let notices: Vec<Value> = o
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        notices[0]["notice"], "refreshing 9 member(s)",
        "{}",
        o.stderr
    );
    assert!(
        notices.last().unwrap()["notice"]
            .as_str()
            .unwrap()
            .starts_with("refreshed 9/9 member(s)"),
        "{}",
        o.stderr
    );
    let out: Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(out.as_array().unwrap().len(), 9);
    for e in out.as_array().unwrap() {
        assert!(e.get("detail").is_some(), "{e}");
    }
    assert_eq!(outcome(&out, PS1), "replicated");
    assert_eq!(outcome(&out, PS2), "replicated");
    for m in [CONTENT, SAT, "dev-1", "dev-5"] {
        assert_eq!(outcome(&out, m), "applied", "{m}: {out}");
    }
    let v = z.json(&["op", "show", "--now", H2]);
    assert_eq!(v["state"], "assigned");
    assert_eq!(status(&v, PS1), "assigned");
    assert_eq!(status(&v, "dev-3"), "applied");
    assert!(z.exists(SAT, "remint-repo/server.cer") && z.exists(SAT, "remint-repo/ca.cert"));

    // Second refresh: the Primary Servers apply it too.
    let out = z.json(&["fleet", "refresh", "--all", "--now", H2]);
    assert_eq!(outcome(&out, PS1), "applied");
    assert_eq!(outcome(&out, PS2), "applied");
    let v = z.json(&["op", "show", "--now", H2]);
    assert!(all_status(&v).iter().all(|s| s == "applied"), "{v}");
    for s in v["servers"].as_array().unwrap() {
        assert_eq!(s["certificate_status"], "new certificate created", "{s}");
    }
    for r in v["replication"].as_array().unwrap() {
        assert_eq!(r["status"], "replicated", "{r}");
    }
    assert_eq!(
        names(&v["recovery_available_on"]),
        [PS1, PS2],
        "O6 once assigned"
    );
    // A1: the remint repository of every server holds server.cer and ca.cert.
    for s in [PS1, PS2, SAT] {
        assert!(z.exists(s, "remint-repo/server.cer"), "{s}");
        assert!(z.exists(s, "remint-repo/ca.cert"), "{s}");
    }
    let sat = z.json(&["server", "show", SAT, "--now", H2]);
    assert_eq!(sat["status"], "new certificate created", "SR4/V2: {sat}");
    assert_eq!(sat["update_status"], "applied");
    assert_eq!(sat["options"][0], "future certificate");
    // The future chain validates against the staged future CA, not against the current one.
    z.ok(&[
        "server",
        "cert",
        SAT,
        "--out",
        "sat-future.pem",
        "--future",
        "--now",
        H2,
    ]);
    let future_ca = z.path("fleet").join(SAT).join("remint-repo/ca.cert");
    let future_ca = future_ca.to_str().unwrap();
    assert!(z.verifies(future_ca, "sat-future.pem", ACT));
    assert!(!z.verifies("old-ca.pem", "sat-future.pem", ACT));
    let out = z.ok(&[
        "chain",
        "verify",
        "--trust",
        future_ca,
        "--leaf",
        "sat-future.pem",
        "--at",
        ACT,
    ]);
    assert!(out.contains("CN=Acme CA 2"), "{out}");

    // O7: at exactly ten minutes before activation a cancel is refused; assign-now makes no
    // sense once assigned.
    let e = z.refused(&["op", "cancel", "--now", CUT]);
    assert!(e.contains("cut-off"), "{e}");
    z.refused(&["op", "assign-now", "--now", H2]);

    // B3: everyone applied, so nobody would be stranded.
    let plan = z.json(&["plan", "--now", ACT]);
    assert_eq!(plan["at"], ACT);
    assert_eq!(plan["activated_by_then"], true);
    assert_eq!(plan["stranded"], serde_json::json!([]));
    assert_eq!(plan["members"].as_array().unwrap().len(), 9);
    assert!(
        plan["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["communicates"] == true)
    );
    assert_eq!(
        z.json(&["op", "show", "--now", H2])["state"],
        "assigned",
        "plan is dry"
    );

    // Activation at exactly its time (O8, A2).
    let out = z.json(&["fleet", "refresh", "--all", "--now", ACT]);
    for e in out.as_array().unwrap() {
        assert_eq!(e["outcome"], "activated", "{out}");
    }
    let v = z.json(&["op", "show", "--now", ACT]);
    assert_eq!(v["state"], "activated");
    assert!(all_status(&v).iter().all(|s| s == "activated"), "{v}");
    assert!(names(&v["stranded"]).is_empty());
    assert!(
        v["notices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["event"] == "resign_required"),
        "O11: {v}"
    );
    let list = z.json(&["server", "list", "--now", ACT]);
    for s in [PS1, PS2, SAT] {
        assert_eq!(entry(&list, "fqdn", s)["issuer"], "CN=Acme CA 2", "{list}");
    }
    assert_eq!(
        z.json(&["ca", "show", "--now", ACT])["subject"],
        "CN=Acme CA 2"
    );
    z.ok(&["ca", "export", "--out", "new-ca.pem", "--now", ACT]);
    for s in [PS1, PS2, SAT] {
        let cert = z.path("fleet").join(s).join("current/cert.pem");
        let cert = cert.to_str().unwrap();
        assert!(z.verifies("new-ca.pem", cert, ACT), "{s}");
        assert!(!z.verifies("old-ca.pem", cert, ACT), "{s}");
        assert!(
            !z.exists(s, "remint-repo/server.cer"),
            "{s}: staged files remain"
        );
        assert!(
            !z.exists(s, "remint-repo/ca.cert"),
            "{s}: staged files remain"
        );
    }
    // Devices trust the new CA: a device's trust.pem validates a server's chain.
    let trust = z.path("fleet/dev-4/current/trust.pem");
    let cert = z.path("fleet").join(SAT).join("current/cert.pem");
    assert!(z.verifies(trust.to_str().unwrap(), cert.to_str().unwrap(), ACT));

    z.ok(&["op", "baseline", "--now", AFTER]);
    let v = z.json(&["op", "show", "--now", AFTER]);
    assert_eq!(v["state"], "baselined");
    assert!(
        names(&v["recovery_available_on"]).is_empty(),
        "O6: none once baselined"
    );
    z.refused(&["op", "baseline", "--now", AFTER]);
    let out = z.ok(&["audit", "verify"]);
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn cancel_is_allowed_until_ten_minutes_before_activation() {
    let z = zone();
    remint_ca(&z);
    z.ok(&["fleet", "refresh", "--all", "--now", H2]);
    z.ok(&["fleet", "refresh", "--all", "--now", H2]);
    assert!(z.exists("dev-1", "remint-repo/ca.cert"));
    // The view says whether a cancel is possible now, by the library's O7 rule, so a frontend
    // need not re-derive it from the state's name; zonectl shows the deadline only then.
    assert_eq!(
        z.json(&["op", "show", "--now", CUT_1S])["cancellable"],
        true
    );
    assert!(
        z.ok(&["op", "show", "--now", CUT_1S])
            .contains("Cancel before:")
    );
    assert_eq!(z.json(&["op", "show", "--now", CUT])["cancellable"], false);
    assert!(
        !z.ok(&["op", "show", "--now", CUT])
            .contains("Cancel before:")
    );
    let e = z.refused(&["op", "cancel", "--now", CUT]);
    assert!(e.contains("cut-off"), "{e}");
    // Inside the cut-off only "ignore device" is possible (O7).
    z.refused(&["op", "redeploy", "--now", CUT]);
    let v = z.json(&["op", "cancel", "--now", CUT_1S]);
    assert_eq!(v["state"], "cancelled");
    assert_eq!(
        z.json(&["op", "show", "--now", CUT_1S])["state"],
        "cancelled"
    );
    z.refused(&["op", "cancel", "--now", CUT_1S]);
    // Members drop what they staged at their next refresh.
    let out = z.json(&["fleet", "refresh", "--all", "--now", CUT_1S]);
    assert_eq!(outcome(&out, "dev-1"), "unstaged");
    assert!(!z.exists("dev-1", "remint-repo/ca.cert"));
    assert!(!z.exists(SAT, "remint-repo/server.cer"));
    // After a cancel every action is available again.
    let v = z.json(&[
        "ca",
        "remint",
        "--activate-at",
        "2027-02-01T00:00:00Z",
        "--now",
        CUT_1S,
    ]);
    assert_eq!(v["state"], "replicating");
    assert_eq!(v["update_name"], "Remint CA");
}

#[test]
fn an_offline_device_is_stranded_then_recovered() {
    let z = zone();
    remint_ca(&z);
    for _ in 0..2 {
        z.ok(&[
            "fleet",
            "refresh",
            "--all",
            "--offline",
            "dev-2",
            "--now",
            H2,
        ]);
    }
    let v = z.json(&["op", "show", "--now", H2]);
    assert_eq!(status(&v, "dev-2"), "assigned");
    let plan = z.json(&["plan", "--now", H2, "--at", ACT]);
    assert_eq!(plan["at"], ACT);
    // The same list as `op show` will give once activated.
    assert_eq!(names(&plan["stranded"]), ["dev-2"], "{plan}");
    assert_eq!(
        entry(&plan["members"], "name", "dev-2")["communicates"],
        false
    );
    assert_eq!(
        entry(&plan["members"], "name", "dev-1")["communicates"],
        true
    );

    let out = z.json(&[
        "fleet",
        "refresh",
        "--all",
        "--offline",
        "dev-2",
        "--now",
        ACT,
    ]);
    assert_eq!(outcome(&out, "dev-2"), "offline");
    assert_eq!(outcome(&out, "dev-1"), "activated");
    let v = z.json(&["op", "show", "--now", ACT]);
    assert_eq!(v["state"], "activated");
    assert_eq!(names(&v["stranded"]), ["dev-2"]);
    assert_eq!(status(&v, "dev-2"), "stranded");
    let out = z.ok(&["op", "show", "--now", ACT]);
    assert!(out.contains("dev-2"), "{out}");

    // O10: baselining would remove dev-2's recovery bundle.
    let e = z.refused(&["op", "baseline", "--now", ACT]);
    assert!(e.contains("stranded") && e.contains("--force"), "{e}");

    // dev-2 comes back: the bundle recovers it.
    let out = z.json(&["fleet", "refresh", "dev-2", "--now", AFTER]);
    assert_eq!(out.as_array().unwrap().len(), 1);
    assert_eq!(outcome(&out, "dev-2"), "recovered");
    let v = z.json(&["op", "show", "--now", AFTER]);
    assert!(names(&v["stranded"]).is_empty(), "{v}");
    assert_eq!(status(&v, "dev-2"), "recovered");
    let trust = z.path("fleet/dev-2/current/trust.pem");
    let cert = z.path("fleet").join(PS1).join("current/cert.pem");
    assert!(z.verifies(trust.to_str().unwrap(), cert.to_str().unwrap(), AFTER));
    z.ok(&["op", "baseline", "--now", AFTER]);
    assert_eq!(
        z.json(&["op", "show", "--now", AFTER])["state"],
        "baselined"
    );
}

#[test]
fn failed_members_are_redeployed_and_refresh_options_parse() {
    let z = zone();
    remint_ca(&z);
    let v = z.json(&["op", "replicate", PS1, PS2, CONTENT, "--now", H1]);
    assert_eq!(v["state"], "assigned", "replication complete assigns (O4)");

    // Names before the options; each option takes one or more names.
    let out = z.json(&[
        "fleet",
        "refresh",
        "dev-1",
        "dev-3",
        "--fail",
        "dev-1",
        "--offline",
        "dev-3",
        "dev-4",
        "--now",
        H2,
    ]);
    assert_eq!(
        out.as_array().unwrap().len(),
        2,
        "only the named members: {out}"
    );
    assert_eq!(outcome(&out, "dev-1"), "failed");
    assert!(entry(&out, "name", "dev-1")["detail"].is_string());
    assert_eq!(outcome(&out, "dev-3"), "offline");

    // Repeated options, --all after them.
    let out = z.json(&[
        "fleet",
        "refresh",
        "--offline",
        "dev-3",
        "--offline",
        "dev-4",
        "--fail",
        "dev-5",
        "--all",
        "--now",
        H2,
    ]);
    assert_eq!(out.as_array().unwrap().len(), 9);
    assert_eq!(outcome(&out, "dev-3"), "offline");
    assert_eq!(outcome(&out, "dev-4"), "offline");
    assert_eq!(outcome(&out, "dev-5"), "failed");
    assert_eq!(
        outcome(&out, "dev-1"),
        "failed",
        "stays failed until redeployed (O5)"
    );
    assert_eq!(outcome(&out, "dev-2"), "applied");

    let v = z.json(&["op", "show", "--now", H2]);
    assert_eq!(status(&v, "dev-1"), "failed");
    assert!(
        entry(&v["devices"], "name", "dev-1")["reason"].is_string(),
        "{v}"
    );
    let e = z.refused(&["op", "redeploy", "dev-2", "--now", H2]);
    assert!(e.contains("has not failed"), "{e}");
    z.refused(&["op", "redeploy", "dev-1", "dev-2", "--now", H2]);

    let v = z.json(&["op", "redeploy", "dev-1", "--now", H2]);
    assert_eq!(status(&v, "dev-1"), "assigned");
    assert_eq!(status(&v, "dev-5"), "failed", "only the named one");
    let out = z.json(&["fleet", "refresh", "dev-1", "--now", H2]);
    assert_eq!(outcome(&out, "dev-1"), "applied");
    // Without names: every failed member.
    z.ok(&["op", "redeploy", "--now", H2]);
    z.ok(&["fleet", "refresh", "--all", "--now", H2]);
    let v = z.json(&["op", "show", "--now", H2]);
    assert!(all_status(&v).iter().all(|s| s == "applied"), "{v}");

    // Taking a device out of the update, allowed even inside the cut-off (O7).
    let v = z.json(&["op", "ignore", "dev-5", "--now", CUT]);
    assert_eq!(status(&v, "dev-5"), "ignored");
    let e = z.refused(&["op", "ignore", "nosuch", "--now", CUT]);
    assert!(e.contains("nosuch"), "{e}");
}

#[test]
fn replication_recorded_by_hand_then_assign_now() {
    let z = zone();
    remint_ca(&z);
    let v = z.json(&["op", "replicate", CONTENT, "--now", H1]);
    assert_eq!(v["state"], "replicating");
    assert_eq!(
        entry(&v["replication"], "server", CONTENT)["status"],
        "replicated"
    );
    assert_eq!(entry(&v["replication"], "server", PS1)["status"], "pending");
    let e = z.refused(&["op", "replicate", "other.acme.example", "--now", H1]);
    assert!(e.contains("other.acme.example"), "{e}");
    z.refused(&["op", "replicate", SAT, "--now", H1]);

    // Before assignment nothing is staged: everyone would be stranded (B3).
    let plan = z.json(&["plan", "--now", H1]);
    assert_eq!(plan["activated_by_then"], false);
    assert_eq!(plan["stranded"].as_array().unwrap().len(), 9, "{plan}");

    let v = z.json(&["op", "assign-now", "--now", H1]);
    assert_eq!(v["state"], "assigned");
    assert_eq!(entry(&v["replication"], "server", PS1)["status"], "pending");
    assert!(all_status(&v).iter().all(|s| s == "assigned"), "{v}");
    z.refused(&["op", "assign-now", "--now", H1]);
    z.ok(&["fleet", "refresh", "--all", "--now", H2]);
    let plan = z.json(&["plan", "--now", H2, "--at", ACT]);
    assert_eq!(plan["stranded"], serde_json::json!([]), "{plan}");
    let text = z.ok(&["plan", "--now", H2]);
    assert!(text.contains("dev-1"), "{text}");
}

#[test]
#[cfg(feature = "rsa")]
fn server_remint_through_the_command_line() {
    let z = zone();
    let remint = |extra: &[&str]| {
        let mut a = vec!["server", "remint"];
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--now", H1]);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let refused = |extra: &[&str]| {
        let a = remint(extra);
        z.refused(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // SR2: a CN only for one server without satellites.
    let e = refused(&[
        PS2,
        "--update-name",
        "x",
        "--activate-at",
        ACT,
        "--cn",
        "o.example",
    ]);
    assert!(e.contains("satellites"), "{e}");
    let e = refused(&[
        PS1,
        SAT,
        "--update-name",
        "x",
        "--activate-at",
        ACT,
        "--cn",
        "o.example",
    ]);
    assert!(e.contains("exactly one"), "{e}");
    // SR2: --include-dns is not selectable for one server without DNS names.
    let e = refused(&[
        SAT,
        "--update-name",
        "x",
        "--activate-at",
        ACT,
        "--include-dns",
    ]);
    assert!(e.contains("no additional DNS names"), "{e}");
    // SR1: only servers with certificates.
    refused(&[CONTENT, "--update-name", "x", "--activate-at", ACT]);
    refused(&[
        "nosuch.acme.example",
        "--update-name",
        "x",
        "--activate-at",
        ACT,
    ]);
    refused(&[SAT, "--update-name", " ", "--activate-at", ACT]);
    // CSR modes belong to an external CA.
    let e = refused(&[
        SAT,
        "--update-name",
        "x",
        "--activate-at",
        ACT,
        "--csr",
        "manual",
    ]);
    assert!(e.contains("external CA") && e.contains("internal"), "{e}");
    refused(&[
        SAT,
        "--update-name",
        "x",
        "--activate-at",
        ACT,
        "--csr",
        "auto",
        "--org",
        "Acme",
        "--country",
        "DE",
    ]);
    for extra in [
        &[SAT, "--activate-at", ACT][..],
        &[SAT, "--update-name", "x"],
        &["--update-name", "x", "--activate-at", ACT],
        &[
            SAT,
            "--update-name",
            "x",
            "--activate-at",
            ACT,
            "--csr",
            "magic",
        ],
        &[
            SAT,
            "--update-name",
            "x",
            "--activate-at",
            ACT,
            "--org",
            "Acme",
        ],
        &[SAT, "--update-name", "x", "--activate-at", "soon"],
        &[
            SAT,
            "--update-name",
            "x",
            "--activate-at",
            ACT,
            "--key",
            "rsa1024",
        ],
    ] {
        let a = remint(extra);
        z.usage(&a.iter().map(String::as_str).collect::<Vec<_>>());
    }
    // ps1 has a DNS name, so --include-dns is fine for it alone; but one remint at a time.
    let v = z.json(&[
        "server",
        "remint",
        SAT,
        "--update-name",
        "sat remint",
        "--activate-at",
        ACT,
        "--cn",
        "sat-one.acme.example",
        "--key",
        "rsa2048",
        "--now",
        H1,
    ]);
    assert_eq!(v["kind"], "server_remint");
    assert_eq!(v["update_name"], "sat remint");
    assert!(v["devices"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(
        v["servers"].as_array().unwrap().len(),
        1,
        "the selected server (O4)"
    );
    assert_eq!(v["servers"][0]["fqdn"], SAT);
    assert_eq!(v["servers"][0]["role"], "auth-satellite");
    let e = z.refused(&["ca", "remint", "--activate-at", ACT, "--now", H1]);
    assert!(
        e.contains("Server Remint") && e.contains("sat remint"),
        "{e}"
    );
    refused(&[
        PS1,
        "--update-name",
        "y",
        "--activate-at",
        ACT,
        "--include-dns",
    ]);

    for _ in 0..2 {
        z.ok(&["fleet", "refresh", "--all", "--now", H2]);
    }
    let v = z.json(&["op", "show", "--now", H2]);
    assert_eq!(v["state"], "assigned");
    assert_eq!(
        v["servers"][0]["certificate_status"],
        "new certificate created"
    );
    assert_eq!(status(&v, SAT), "applied");
    let sat = z.json(&["server", "show", SAT, "--now", H2]);
    assert_eq!(sat["status"], "new certificate created");
    assert_eq!(
        sat["subject"], "CN=sat.acme.example",
        "still the current certificate"
    );
    z.ok(&["ca", "export", "--out", "ca.pem", "--now", H2]);
    z.ok(&[
        "server",
        "cert",
        SAT,
        "--out",
        "future.pem",
        "--future",
        "--now",
        H2,
    ]);
    let out = z.ok(&[
        "chain",
        "verify",
        "--trust",
        "ca.pem",
        "--leaf",
        "future.pem",
        "--at",
        ACT,
    ]);
    assert!(out.contains("CN=sat-one.acme.example"), "{out}");
    z.ok(&[
        "server",
        "cert",
        SAT,
        "--out",
        "future.der",
        "--future",
        "--der",
        "--now",
        H2,
    ]);
    assert!(z.exists(SAT, "remint-repo/server.cer"));

    z.ok(&["fleet", "refresh", "--all", "--now", ACT]);
    let v = z.json(&["op", "show", "--now", ACT]);
    assert_eq!(v["state"], "activated");
    assert_eq!(status(&v, SAT), "activated");
    let sat = z.json(&["server", "show", SAT, "--now", ACT]);
    assert_eq!(sat["subject"], "CN=sat-one.acme.example");
    assert_eq!(sat["issuer"], "CN=Acme", "the same CA");
    let cert = z.path("fleet").join(SAT).join("current/cert.pem");
    assert!(z.verifies("ca.pem", cert.to_str().unwrap(), ACT));
    assert!(!z.exists(SAT, "remint-repo/server.cer"));
    z.ok(&["op", "baseline", "--now", AFTER]);
    // After baselining a new operation can start.
    z.ok(&[
        "server",
        "remint",
        PS1,
        "--update-name",
        "ps1",
        "--activate-at",
        "2027-02-01T00:00:00Z",
        "--include-dns",
        "--now",
        AFTER,
    ]);
}

#[test]
fn a_zone_without_operations_and_usage_errors() {
    let z = Zone::new();
    z.ok(&["init", "--zone", "Acme", "--first-server", PS1, "--now", T0]);
    z.ok(&["device", "add", "dev-1", "dev-2", "--now", T0]);
    let v = z.json(&["op", "show", "--now", T0]);
    assert_eq!(v, serde_json::json!({ "state": "none" }));
    let text = z.ok(&["op", "show", "--now", T0]);
    assert!(text.contains("No staged operation"), "{text}");
    for cmd in [
        &["plan"][..],
        &["op", "cancel"],
        &["op", "assign-now"],
        &["op", "baseline"],
        &["op", "baseline", "--force"],
        &["op", "redeploy"],
        &["op", "ignore", "dev-1"],
        &["op", "replicate", PS1],
    ] {
        let mut a = cmd.to_vec();
        a.extend_from_slice(&["--now", T0]);
        let e = z.refused(&a);
        assert!(e.contains("no operation is in progress"), "{cmd:?}: {e}");
    }
    let e = z.refused(&[
        "server", "cert", PS1, "--out", "f.pem", "--future", "--now", T0,
    ]);
    assert!(e.contains("no future certificate"), "{e}");
    let e = z.refused(&["server", "cert", "x.acme.example", "--out", "f", "--future"]);
    assert!(e.contains("x.acme.example"), "{e}");
    assert!(!z.path("f.pem").exists());

    // O2 through the command line.
    let e = z.refused(&["ca", "remint", "--activate-at", "immediate", "--now", H1]);
    assert!(e.contains("immediate"), "{e}");
    let e = z.refused(&["ca", "remint", "--activate-at", T0, "--now", H1]);
    assert!(e.contains("in the past"), "{e}");
    let e = z.refused(&[
        "ca",
        "remint",
        "--activate-at",
        "2040-01-01T00:00:00Z",
        "--now",
        H1,
    ]);
    assert!(e.contains("before the current CA expires"), "{e}");
    z.refused(&[
        "ca",
        "remint",
        "--activate-at",
        ACT,
        "--valid-years",
        "11",
        "--now",
        H1,
    ]);
    z.refused(&[
        "ca",
        "remint",
        "--activate-at",
        ACT,
        "--cn",
        "",
        "--now",
        H1,
    ]);

    for args in [
        &["ca", "remint"][..],
        &["ca", "remint", "--activate-at", "yesterday"],
        &["ca", "remint", "--activate-at", "2027-13-01T00:00:00Z"],
        &["ca", "remint", "--activate-at", ACT, "--key", "rsa1024"],
        &["fleet", "refresh"],
        &["fleet", "refresh", "--all", "dev-1"],
        // --fail takes both names, which leaves no member to refresh.
        &["fleet", "refresh", "--fail", "dev-1", "dev-2"],
        &["fleet", "refresh", "--all", "--offline"],
        &["op", "ignore"],
        &["op", "replicate"],
        &["op", "frobnicate"],
        &["plan", "--at", "later"],
    ] {
        z.usage(args);
    }

    // Without an operation a refresh only brings trust up to date: the servers got it when
    // they were enrolled, the devices get it now; a second refresh has nothing to do.
    let out = z.json(&["fleet", "refresh", "--all", "--now", T0]);
    assert_eq!(out.as_array().unwrap().len(), 3);
    for o in out.as_array().unwrap() {
        let want = if o["name"] == "ps1.acme.example" {
            "up-to-date"
        } else {
            "trust-updated"
        };
        assert_eq!(o["outcome"], want, "{out}");
    }
    let out = z.json(&["fleet", "refresh", "--all", "--now", T0]);
    assert!(
        out.as_array()
            .unwrap()
            .iter()
            .all(|o| o["outcome"] == "up-to-date"),
        "{out}"
    );
    let e = z.refused(&["fleet", "refresh", "nosuch", "--now", T0]);
    assert!(e.contains("nosuch"), "{e}");
    let text = z.ok(&["fleet", "refresh", "dev-1", "--now", T0]);
    assert!(
        text.contains("dev-1") && text.contains("up-to-date"),
        "{text}"
    );
}

#[test]
fn immediate_activation_once_the_ca_has_expired() {
    let z = Zone::new();
    z.ok(&[
        "init",
        "--zone",
        "Old",
        "--first-server",
        PS1,
        "--valid-years",
        "1",
        "--now",
        T0,
    ]);
    let late = "2028-02-01T00:00:00Z";
    let e = z.refused(&[
        "ca",
        "remint",
        "--activate-at",
        "2028-03-01T00:00:00Z",
        "--now",
        late,
    ]);
    assert!(e.contains("immediate"), "{e}");
    let v = z.json(&["ca", "remint", "--activate-at", "Immediate", "--now", late]);
    assert_eq!(v["immediate"], true);
    assert_eq!(v["activation"], late);
    assert_eq!(v["state"], "activated");
    assert_eq!(z.json(&["ca", "show", "--now", late])["status"], "valid");
}

/// On a terminal, fleet-wide work draws a progress bar on stderr (under `script`, which gives
/// the command a pseudo-terminal); elsewhere nothing is drawn (checked in the Remint CA test).
#[test]
fn progress_bar_only_on_a_terminal() {
    let has_script = Command::new("sh")
        .args(["-c", "command -v script"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        eprintln!("notice: script (util-linux) not installed; skipping the terminal check");
        return;
    }
    let z = zone();
    let quote = |p: &Path| format!("'{}'", p.display());
    let cmd = format!(
        "{} fleet refresh --all --now {T0} --store {} --root {}",
        quote(zonectl_bin()),
        quote(&z.path("zone.db")),
        quote(&z.path("fleet")),
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("refreshing"),
        "no progress bar on a terminal: {text}"
    );
    assert!(
        !text.contains("refreshed "),
        "lines instead of a bar: {text}"
    );
    assert!(text.contains("up-to-date"), "{text}");
}

/// Issue 10 item 6: the README's Remint CA walk-through, command for command (with `--now`
/// where the README relies on the system clock): after a first refresh gives every member the
/// zone's trust, `fleet refresh --all --offline laptop-7` replicates, assigns and applies in
/// one pass, so laptop-7 alone misses the update; the bridge (B1, on by default) keeps it out
/// of `plan`'s stranded list and makes it `bridged` at activation; back the next day, it
/// recovers with the bundle (O6), and the operation is baselined.
#[test]
fn readme_remint_ca_walk_through_is_true() {
    const NOW: &str = "2027-05-01T00:00:00Z";
    const ACTIVATE: &str = "2027-06-01T02:00:00Z";
    const NEXT_DAY: &str = "2027-06-02T00:00:00Z";
    let z = Zone::new();
    z.ok(&[
        "init",
        "--zone",
        "Acme",
        "--first-server",
        "ps1.acme.example",
        "--dns",
        "zenworks.acme.example",
        "--now",
        NOW,
    ]);
    z.ok(&[
        "server",
        "add",
        "sat1.acme.example",
        "--role",
        "auth-satellite",
        "--parent",
        "ps1.acme.example",
        "--now",
        NOW,
    ]);
    z.ok(&[
        "device", "add", "--count", "100", "--prefix", "laptop", "--now", NOW,
    ]);
    z.ok(&["fleet", "refresh", "--all", "--now", NOW]);

    z.ok(&["ca", "remint", "--activate-at", ACTIVATE, "--now", NOW]);
    z.ok(&[
        "fleet",
        "refresh",
        "--all",
        "--offline",
        "laptop-7",
        "--now",
        NOW,
    ]);
    let v = z.json(&["op", "show", "--now", NOW]);
    assert_eq!(
        v["state"], "assigned",
        "ps1 replicated in that pass (O3, O4)"
    );
    let statuses = all_status(&v);
    assert_eq!(statuses.len(), 102, "{v}");
    assert_eq!(status(&v, "laptop-7"), "assigned", "it was away");
    assert_eq!(
        statuses.iter().filter(|s| *s == "applied").count(),
        101,
        "everyone else applied in the same pass: {v}"
    );

    let plan = z.json(&["plan", "--now", ACTIVATE]);
    assert!(names(&plan["stranded"]).is_empty(), "B1: {plan}");
    let laptop7 = entry(&plan["members"], "name", "laptop-7");
    assert_eq!(laptop7["communicates"], true, "{plan}");
    assert!(
        laptop7["reason"].as_str().unwrap().contains("bridge"),
        "{plan}"
    );
    z.ok(&[
        "fleet",
        "refresh",
        "--all",
        "--offline",
        "laptop-7",
        "--now",
        ACTIVATE,
    ]);
    let v = z.json(&["op", "show", "--now", ACTIVATE]);
    assert_eq!(v["state"], "activated");
    assert_eq!(status(&v, "laptop-7"), "bridged", "{v}");
    assert!(names(&v["stranded"]).is_empty(), "{v}");
    let out = z.json(&["fleet", "refresh", "laptop-7", "--now", NEXT_DAY]);
    assert_eq!(outcome(&out, "laptop-7"), "recovered", "{out}");
    let v = z.json(&["op", "show", "--now", NEXT_DAY]);
    assert_eq!(status(&v, "laptop-7"), "recovered", "{v}");
    z.ok(&["op", "baseline", "--now", NEXT_DAY]);
    assert_eq!(
        z.json(&["op", "show", "--now", NEXT_DAY])["state"],
        "baselined"
    );
}
