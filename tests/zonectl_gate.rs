//! B2 and B4 through `examples/zonectl.rs` (issue 14): a gated Remint CA (`--gate-*`) is
//! postponed while the update has not reached enough members, `op show` and `plan` say why,
//! and it activates once coverage is met; `zonectl lint` reports findings one line each (exit
//! 1) or none (exit 0). Fixed epochs via --now; no sleeps.
#![allow(clippy::unwrap_used)]

#[path = "common/cli.rs"]
mod cli;
mod common;

use cli::{SAT, Zone};
use serde_json::Value;

const T0: &str = "2027-01-01T00:00:00Z";
const H1: &str = "2027-01-01T01:00:00Z";
const H2: &str = "2027-01-01T02:00:00Z";
const ACT: &str = "2027-01-08T00:00:00Z";
const ACT_30M: &str = "2027-01-08T00:30:00Z";
const ACT_1H: &str = "2027-01-08T01:00:00Z";

fn notices(v: &Value, event: &str) -> Vec<Value> {
    v["notices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["event"] == event)
        .cloned()
        .collect()
}

#[test]
fn a_gated_remint_ca_is_postponed_then_activated_through_the_command_line_b2() {
    let z = Zone::fleet(&[], "5", T0);
    // A bad duration is a usage error; a bad policy is refused; neither changes the store.
    z.usage(&[
        "ca",
        "remint",
        "--activate-at",
        ACT,
        "--gate-devices",
        "80",
        "--gate-step",
        "5x",
        "--now",
        H1,
    ]);
    let e = z.refused(&[
        "ca",
        "remint",
        "--activate-at",
        ACT,
        "--gate-devices",
        "80",
        "--gate-at-deadline",
        "maybe",
        "--now",
        H1,
    ]);
    assert!(e.contains("activate or hold"), "{e}");

    let started = z.json(&[
        "--no-bridge",
        "ca",
        "remint",
        "--activate-at",
        ACT,
        "--gate-devices",
        "80",
        "--gate-servers",
        "all",
        "--gate-step",
        "1h",
        "--gate-deadline-margin",
        "7d",
        "--gate-at-deadline",
        "hold",
        "--now",
        H1,
    ]);
    assert_eq!(started["gate"]["settings"]["min_devices_percent"], 80);
    assert_eq!(started["gate"]["settings"]["step_secs"], 3600);
    assert_eq!(started["gate"]["settings"]["at_deadline"], "hold");
    // Offline: the satellite and two of the six devices (5 managed, 1 Content Satellite).
    for _ in 0..2 {
        z.ok(&[
            "fleet",
            "refresh",
            "--all",
            "--offline",
            SAT,
            "dev-1",
            "dev-2",
            "--now",
            H2,
        ]);
    }
    let plan = z.json(&["plan", "--now", H2, "--at", ACT]);
    assert_eq!(plan["gate"]["outcome"], "postponed", "{plan}");
    assert_eq!(plan["gate"]["postponed_to"], ACT_1H);
    assert_eq!(plan["activated_by_then"], false);
    let text = z.ok(&["plan", "--now", H2, "--at", ACT]);
    assert!(text.contains("Gate: postponed"), "{text}");

    // At the activation time: postponed by an hour, with why; the cut-off moved (O7).
    let v = z.json(&["op", "show", "--now", ACT]);
    assert_eq!(v["state"], "assigned");
    assert_eq!(v["activation"], ACT_1H);
    assert_eq!(v["cancel_deadline"], "2027-01-08T00:50:00Z");
    let postponed = notices(&v, "activation_postponed");
    assert_eq!(postponed.len(), 1, "{v}");
    let reason = postponed[0]["reason"].as_str().unwrap();
    assert!(reason.contains("4 of 6 devices applied (66%)"), "{reason}");
    assert!(reason.contains(SAT), "{reason}");
    assert_eq!(v["gate"]["postponements"].as_array().unwrap().len(), 1);
    assert_eq!(v["gate"]["verdict_now"]["met"], false);
    let text = z.ok(&["op", "show", "--now", ACT]);
    for want in [
        "Gate:",
        "80% of devices",
        "Gate now:",
        "postponed 1 time(s)",
    ] {
        assert!(text.contains(want), "{want:?} missing: {text}");
    }
    assert!(
        text.contains("Cancel before:      2027-01-08T00:50:00Z"),
        "{text}"
    );

    // Everyone applies; at the new activation time it activates.
    z.ok(&["fleet", "refresh", "--all", "--now", ACT_30M]);
    let v = z.json(&["op", "show", "--now", ACT_30M]);
    assert_eq!(v["gate"]["verdict_now"]["met"], true, "{v}");
    let v = z.json(&["op", "show", "--now", ACT_1H]);
    assert_eq!(v["state"], "activated");
    assert_eq!(notices(&v, "resign_required").len(), 1);
}

#[test]
fn zonectl_lint_reports_one_line_per_finding_b4() {
    let z = Zone::fleet(&[], "0", T0);
    z.ok(&["ca", "export", "--out", "ca.pem"]);
    let o = z.run(&["lint", "ca.pem"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert_eq!(o.stdout.trim(), "no findings");
    if !common::tool_part("openssl", cfg!(zonepki_has_openssl)) {
        return;
    }
    z.openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "bad.key",
        "-out",
        "bad.pem",
        "-subj",
        "/CN=Bad Root",
        "-days",
        "30",
        "-sha1",
        "-addext",
        "keyUsage=critical,cRLSign",
    ]);
    let o = z.run(&["lint", "ca.pem", "bad.pem"]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("bad.pem: error weak_signature_algorithm: \"CN=Bad Root\"")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("error ca_key_usage")),
        "{lines:?}"
    );
    assert!(
        lines.iter().all(|l| l.starts_with("bad.pem: ")),
        "{lines:?}"
    );
    let o = z.run(&["lint", "bad.pem", "--json"]);
    assert_eq!(o.code, 1);
    let v: Value = serde_json::from_str(&o.stdout).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|f| f["finding"]["rule"] == "weak_signature_algorithm"
                && f["finding"]["severity"] == "error")
    );
}
