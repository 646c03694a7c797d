//! Change CA and the external-CA CSR workflow through `examples/zonectl.rs`
//! (../shared/ZONECTL.md, "Staged operations"): `ca change internal` (CI1, CI2) from an
//! internal and from an external CA, `ca change external` with automatic CSRs (CE1-CE3),
//! `csr generate/export/show` and `cert import` (SR5), and an external Server Remint (SR3).
//! The external CA is made with the `openssl` CLI (root and intermediate, EC P-256), which also
//! signs the exported CSRs and checks the members' files after activation.
//!
//! Times go through --now. They are fixed offsets from the next UTC midnight, since the
//! certificates that openssl makes start at the real clock; no sleeps.
#![allow(clippy::unwrap_used)]

#[path = "common/cli.rs"]
mod cli;
mod common;

use cli::{CONTENT, ExternalCa, PS1, PS2, SAT, Times, Zone, entry, strs, unzip};

use serde_json::Value;
use zonepki::chain::NO_ISSUER_MESSAGE;

const SERVERS: [&str; 3] = [PS1, PS2, SAT];

/// The subject options of `--csr auto` and `csr generate`.
const SUBJECT: [&str; 10] = [
    "--org",
    "Acme",
    "--ou",
    "IT",
    "--locality",
    "Springfield",
    "--state",
    "IL",
    "--country",
    "US",
];

/// ps1 (CA, with an extra DNS name), ps2, sat under ps2, content, dev-1 .. dev-3, every agent
/// refreshed once.
fn zone(t: &Times) -> Zone {
    Zone::fleet(&["--dns", "alias.acme.example"], "3", &t.at(0, 0))
}

/// Each server's `certificate_status` in `op show --json`.
fn cert_status(view: &Value) -> Vec<(String, String)> {
    view["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["fqdn"].as_str().unwrap().to_string(),
                s["certificate_status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn all_servers_say(view: &Value, servers: &[&str], status: &str) {
    let got = cert_status(view);
    let mut fqdns: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    fqdns.sort();
    let mut want = servers.to_vec();
    want.sort();
    assert_eq!(fqdns, want, "{view}");
    assert!(got.iter().all(|(_, s)| s == status), "{got:?}");
}

/// `openssl req -verify` exits 0 even when the signature is bad: read what it says.
fn csr_verifies(out: &str) {
    let lower = out.to_lowercase();
    assert!(
        (lower.contains("verify ok") || lower.contains("self-signature ok"))
            && !lower.contains("failure"),
        "{out}"
    );
}

fn refresh_twice(z: &Zone, at: &str) {
    for _ in 0..2 {
        z.ok(&["fleet", "refresh", "--all", "--now", at]);
    }
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn change_ca_to_external_with_automatic_csrs_then_back_to_internal() {
    common::require("openssl");
    let t = Times::new();
    let (h1, h2, act, after) = (t.at(0, 1), t.at(0, 2), t.at(7, 0), t.at(7, 1));
    let z = zone(&t);
    let ext = ExternalCa::new(&z, "ext-", "Ext");
    let other = ExternalCa::new(&z, "other-", "Other");

    // Refusals and usage errors before anything starts.
    let change = |extra: &[&str]| {
        let mut a = vec![
            "ca",
            "change",
            "external",
            "--chain",
            "ext-chain.pem",
            "--activate-at",
            &act,
            "--now",
            &h1,
        ];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let e = z.refused(&strs(&change(&["--csr", "auto", "--country", "USA"])));
    assert!(e.contains("country"), "{e}");
    std::fs::write(z.path("junk.pem"), "not a certificate\n").unwrap();
    z.refused(&[
        "ca",
        "change",
        "external",
        "--chain",
        "junk.pem",
        "--activate-at",
        &act,
        "--csr",
        "manual",
        "--now",
        &h1,
    ]);
    let e = z.refused(&[
        "ca",
        "change",
        "external",
        "--chain",
        "missing.pem",
        "--activate-at",
        &act,
        "--csr",
        "manual",
        "--now",
        &h1,
    ]);
    assert!(e.contains("missing.pem"), "{e}");
    for extra in [
        &[][..],
        &["--csr", "sometimes"],
        &["--csr", "manual", "--org", "Acme"],
        &["--csr", "manual", "--key", "rsa2048"],
        &["--csr", "auto", "--key", "rsa1024"],
    ] {
        z.usage(&strs(&change(extra)));
    }

    // CE1, CE2: the chain as PEM, automatic CSRs.
    let mut start = change(&["--csr", "auto", "--key", "p256"]);
    start.extend(SUBJECT.iter().map(|s| s.to_string()));
    start.push("--json".into());
    let v: Value = serde_json::from_str(&z.ok(&strs(&start))).unwrap();
    assert_eq!(v["kind"], "change_ca_external");
    assert_eq!(v["update_name"], "Change CA");
    let text = z.ok(&["op", "show", "--now", &h1]);
    assert!(text.contains("Change CA (to external)"), "{text}");
    let e = z.refused(&["ca", "remint", "--activate-at", &act, "--now", &h1]);
    assert!(e.contains("Change CA"), "O1: {e}");

    refresh_twice(&z, &h2);
    let v = z.json(&["op", "show", "--now", &h2]);
    all_servers_say(&v, &SERVERS, "CSR generated");

    // SR5: the CSRs as one zip, signed by the external CA.
    let zip = z.json(&["csr", "export", "--zip", "csrs.zip", "--now", &h2]);
    assert_eq!(zip["servers"].as_array().unwrap().len(), 3, "{zip}");
    let names = unzip(&z, "csrs.zip", "csrs");
    let mut want: Vec<String> = SERVERS.iter().map(|s| format!("{s}.csr")).collect();
    want.sort();
    assert_eq!(names, want);
    for s in SERVERS {
        let csr = format!("csrs/{s}.csr");
        let out = z.openssl(&["req", "-in", &csr, "-noout", "-verify", "-subject"]);
        csr_verifies(&out);
        assert!(out.contains(&format!("CN = {s}")), "{out}");
        assert!(out.contains("O = Acme") && out.contains("C = US"), "{out}");
        ext.sign(&z, s, &csr, &format!("{s}.pem"));
    }

    // CE3: a certificate from an unrelated CA is refused with the manual's words.
    other.sign(&z, PS1, &format!("csrs/{PS1}.csr"), "wrong.pem");
    other.pem_chain(&z, "wrong.pem", "wrong-chain.pem");
    let e = z.refused(&[
        "cert",
        "import",
        PS1,
        "--file",
        "wrong-chain.pem",
        "--now",
        &h2,
    ]);
    assert!(e.contains(NO_ISSUER_MESSAGE), "{e}");
    assert!(
        e.contains(
            "CA certificate subject from the CA Certificate chain does not match server \
             certificate issuer."
        ),
        "{e}"
    );
    // A certificate for another server's key is refused too.
    z.refused(&[
        "cert",
        "import",
        PS2,
        "--file",
        &format!("{PS1}.pem"),
        "--now",
        &h2,
    ]);

    // Import as a PEM chain, as PKCS#7 (named .p7b) and as a DER leaf alone named .cer (the
    // intermediate came with the uploaded chain): the content decides.
    ext.pem_chain(&z, &format!("{PS1}.pem"), "ps1-chain.pem");
    z.openssl(&[
        "crl2pkcs7",
        "-nocrl",
        "-certfile",
        &format!("{PS2}.pem"),
        "-certfile",
        "ext-int.pem",
        "-out",
        "ps2.p7b",
    ]);
    z.openssl(&[
        "x509",
        "-in",
        &format!("{SAT}.pem"),
        "-outform",
        "DER",
        "-out",
        "sat.cer",
    ]);
    for (s, file) in [(PS1, "ps1-chain.pem"), (PS2, "ps2.p7b"), (SAT, "sat.cer")] {
        let out = z.json(&["cert", "import", s, "--file", file, "--now", &h2]);
        let path = out["path"].as_array().unwrap();
        assert_eq!(path.len(), 3, "{out}");
        assert!(
            path[0].as_str().unwrap().contains(&format!("CN={s}")),
            "{out}"
        );
        assert_eq!(path[2], "CN=Ext Root", "{out}");
    }
    let v = z.json(&["op", "show", "--now", &h2]);
    all_servers_say(&v, &SERVERS, "new certificate uploaded");

    z.ok(&["fleet", "refresh", "--all", "--now", &h2]);
    let v = z.json(&["op", "show", "--now", &h2]);
    for d in v["devices"].as_array().unwrap() {
        assert_eq!(d["status"], "applied", "{v}");
    }

    // O8: activation.
    z.ok(&["fleet", "refresh", "--all", "--now", &act]);
    let v = z.json(&["op", "show", "--now", &act]);
    assert_eq!(v["state"], "activated", "{v}");
    assert!(v["stranded"].as_array().unwrap().is_empty(), "{v}");
    let ca = z.json(&["ca", "show", "--now", &act]);
    assert_eq!(ca["kind"], "external");
    assert_eq!(ca["subject"], "CN=Ext Root");
    for s in SERVERS {
        z.openssl_verifies(s, "ext-root.pem", &["ext-int.pem"], &after);
        let view = z.json(&["server", "show", s, "--now", &after]);
        assert_eq!(view["issuer"], "CN=Ext Issuing CA", "{view}");
    }
    // Devices trust the external root now.
    let dev_trust = z.member_file("dev-1", "current/trust.pem");
    z.openssl_verifies(PS1, &dev_trust, &["ext-int.pem"], &after);
    z.ok(&["op", "baseline", "--now", &after]);

    // A server joining the external-CA zone: CSR, signed, imported and installed at once.
    let ps3 = "ps3.acme.example";
    z.ok(&["server", "add", ps3, "--role", "primary", "--now", &after]);
    let mut gen3 = vec!["csr", "generate", ps3];
    gen3.extend_from_slice(&SUBJECT);
    gen3.extend_from_slice(&["--now", &after]);
    z.ok(&gen3);
    let out = z.json(&["csr", "export", "--zip", "ps3.zip", "--now", &after]);
    assert_eq!(out["servers"], serde_json::json!([ps3]));
    let names = unzip(&z, "ps3.zip", "ps3");
    assert_eq!(names, vec![format!("{ps3}.csr")]);
    let csr3 = format!("ps3/{ps3}.csr");
    csr_verifies(&z.openssl(&["req", "-in", &csr3, "-noout", "-verify"]));
    ext.sign(&z, ps3, &csr3, "ps3.pem");
    z.ok(&["cert", "import", ps3, "--file", "ps3.pem", "--now", &after]);
    let view = z.json(&["server", "show", ps3, "--now", &after]);
    assert_eq!(view["issuer"], "CN=Ext Issuing CA", "{view}");
    z.openssl_verifies(ps3, "ext-root.pem", &["ext-int.pem"], &after);
    let e = z.refused(&["csr", "show", ps3, "--now", &after]);
    assert!(e.contains("no CSR"), "the CSR is used up: {e}");

    // SR3: an external Server Remint with automatic CSRs; the frontend passes --csr through.
    let (r1, r2, ract) = (t.at(8, 0), t.at(8, 1), t.at(14, 0));
    let e = z.refused(&[
        "server",
        "remint",
        PS2,
        "--update-name",
        "ps2",
        "--activate-at",
        &ract,
        "--now",
        &r1,
    ]);
    assert!(e.contains("--csr"), "{e}");
    let mut remint = vec![
        "server",
        "remint",
        PS2,
        "--update-name",
        "ps2 external",
        "--activate-at",
        &ract,
        "--csr",
        "auto",
        "--now",
        &r1,
    ];
    remint.extend_from_slice(&SUBJECT);
    let v = z.json(&remint);
    assert_eq!(v["kind"], "server_remint");
    refresh_twice(&z, &r2);
    let v = z.json(&["op", "show", "--now", &r2]);
    all_servers_say(&v, &[PS2], "CSR generated");
    let server = z.json(&["server", "show", PS2, "--now", &r2]);
    assert_eq!(server["status"], "CSR generated", "SR4: {server}");
    z.ok(&["csr", "show", PS2, "--out", "ps2-remint.csr", "--now", &r2]);
    ext.sign(&z, PS2, "ps2-remint.csr", "ps2-remint.pem");
    ext.pem_chain(&z, "ps2-remint.pem", "ps2-remint-chain.pem");
    z.ok(&[
        "cert",
        "import",
        PS2,
        "--file",
        "ps2-remint-chain.pem",
        "--now",
        &r2,
    ]);
    refresh_twice(&z, &r2);
    let before = z.json(&["server", "show", PS2, "--now", &r2])["sha256"].clone();
    z.ok(&["fleet", "refresh", "--all", "--now", &ract]);
    let v = z.json(&["op", "show", "--now", &ract]);
    assert_eq!(v["state"], "activated", "{v}");
    let now_fp = z.json(&["server", "show", PS2, "--now", &ract])["sha256"].clone();
    assert_ne!(before, now_fp, "PS2 has its new certificate");
    z.openssl_verifies(PS2, "ext-root.pem", &["ext-int.pem"], &ract);
    z.ok(&["op", "baseline", "--now", &ract]);

    // CI1 from an external CA: a new internal CA on ps2; no bridge is possible.
    let (c1, c2, cact, cafter) = (t.at(15, 0), t.at(15, 1), t.at(21, 0), t.at(21, 1));
    let v = z.json(&[
        "ca",
        "change",
        "internal",
        "--server",
        PS2,
        "--subject",
        "Acme Internal",
        "--activate-at",
        &cact,
        "--update-name",
        "back inside",
        "--now",
        &c1,
    ]);
    assert_eq!(v["kind"], "change_ca_internal");
    assert_eq!(v["update_name"], "back inside");
    refresh_twice(&z, &c2);
    let v = z.json(&["op", "show", "--now", &c2]);
    all_servers_say(&v, &[PS1, PS2, SAT, ps3], "new certificate created");
    z.ok(&["fleet", "refresh", "--all", "--now", &cact]);
    let ca = z.json(&["ca", "show", "--now", &cact]);
    assert_eq!(ca["kind"], "internal");
    assert_eq!(ca["certificate_server"], PS2);
    assert_eq!(ca["subject"], "CN=Acme Internal");
    z.ok(&["ca", "export", "--out", "internal.pem", "--now", &cact]);
    for s in [PS1, PS2, SAT, ps3] {
        z.openssl_verifies(s, "internal.pem", &[], &cafter);
    }
    let v = z.json(&["op", "show", "--now", &cafter]);
    assert!(v["stranded"].as_array().unwrap().is_empty(), "{v}");
}

/// The non-default key type these tests ask for: RSA 2048 with the `rsa` feature (the
/// default), P-256 in a build without it (issue 9 item 7).
const ALT_KEY: &str = if cfg!(feature = "rsa") {
    "rsa2048"
} else {
    "p256"
};
/// [`ALT_KEY`]'s algorithm and size, as `ca show` and openssl print them.
const ALT_ALG: (&str, u32) = if cfg!(feature = "rsa") {
    ("rsa", 2048)
} else {
    ("ecdsa-p256", 256)
};

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn change_ca_internal_to_another_primary_server() {
    common::require("openssl");
    let t = Times::new();
    let (h1, h2, act, after) = (t.at(0, 1), t.at(0, 2), t.at(7, 0), t.at(7, 1));
    let z = zone(&t);
    let change = |extra: &[&str]| {
        let mut a = vec!["ca", "change", "internal", "--now", &h1];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    for server in [SAT, CONTENT, "nosuch.acme.example"] {
        let a = change(&["--server", server, "--activate-at", &act]);
        let e = z.refused(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(e.contains(server), "{e}");
    }
    for extra in [
        &[
            "--server",
            PS2,
            "--activate-at",
            &act,
            "--valid-years",
            "11",
        ][..],
        &["--server", PS2, "--activate-at", &act, "--subject", ""],
        &["--server", PS2, "--activate-at", &t.at(0, 0)],
    ] {
        let a = change(extra);
        z.refused(&a.iter().map(String::as_str).collect::<Vec<_>>());
    }
    for extra in [
        &["--activate-at", &act][..],
        &["--server", PS2],
        &["--server", PS2, "--activate-at", &act, "--key", "rsa1024"],
        &["--server", PS2, "--activate-at", "later"],
        &["--server", PS2, "--activate-at", &act, "--csr", "auto"],
    ] {
        let a = change(extra);
        z.usage(&a.iter().map(String::as_str).collect::<Vec<_>>());
    }

    let v = z.json(&[
        "ca",
        "change",
        "internal",
        "--server",
        PS2,
        "--subject",
        "Acme CA 2",
        "--key",
        ALT_KEY,
        "--valid-years",
        "5",
        "--activate-at",
        &act,
        "--now",
        &h1,
    ]);
    assert_eq!(v["kind"], "change_ca_internal");
    assert_eq!(v["update_name"], "Change CA");
    assert_eq!(v["recovery_available_on"][0], PS2, "O6: the new CA server");
    let e = z.refused(&[
        "server",
        "remint",
        SAT,
        "--update-name",
        "x",
        "--activate-at",
        &act,
        "--now",
        &h1,
    ]);
    assert!(e.contains("Change CA"), "O1: {e}");

    refresh_twice(&z, &h2);
    let v = z.json(&["op", "show", "--now", &h2]);
    all_servers_say(&v, &SERVERS, "new certificate created");
    let ca = z.json(&["ca", "show", "--now", &h2]);
    assert_eq!(ca["certificate_server"], PS1, "not before activation");

    z.ok(&["fleet", "refresh", "--all", "--now", &act]);
    let v = z.json(&["op", "show", "--now", &act]);
    assert_eq!(v["state"], "activated");
    let ca = z.json(&["ca", "show", "--now", &act]);
    assert_eq!(ca["kind"], "internal");
    assert_eq!(ca["certificate_server"], PS2);
    assert_eq!(ca["subject"], "CN=Acme CA 2");
    assert_eq!(ca["key_algorithm"], ALT_ALG.0);
    assert_eq!(ca["key_bits"], ALT_ALG.1);
    z.ok(&["ca", "export", "--out", "ca2.pem", "--now", &act]);
    for s in SERVERS {
        z.openssl_verifies(s, "ca2.pem", &[], &after);
        let view = z.json(&["server", "show", s, "--now", &after]);
        assert_eq!(view["issuer"], "CN=Acme CA 2", "{view}");
    }
    // The new certificate server issues from now on.
    let v = z.json(&[
        "server",
        "add",
        "ps3.acme.example",
        "--role",
        "primary",
        "--now",
        &after,
    ]);
    assert_eq!(v["issuer"], "CN=Acme CA 2");
    let list = z.json(&["server", "list", "--now", &after]);
    assert_eq!(entry(&list, "fqdn", PS2)["status"], "active");
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn csr_generate_show_export_and_their_refusals() {
    common::require("openssl");
    let t = Times::new();
    let (h1, act) = (t.at(0, 1), t.at(7, 0));
    let z = zone(&t);
    let ext = ExternalCa::new(&z, "ext-", "Ext");

    // An internal CA issues itself: nothing to generate, export, show or import.
    let e = z.refused(&["csr", "generate", PS1, "--org", "Acme", "--now", &h1]);
    assert!(e.contains("internal"), "{e}");
    z.refused(&["csr", "export", "--zip", "none.zip", "--now", &h1]);
    assert!(!z.path("none.zip").exists());
    z.refused(&["csr", "show", PS1, "--out", "none.csr", "--now", &h1]);
    assert!(!z.path("none.csr").exists());
    let e = z.refused(&["cert", "import", PS1, "--file", "ext-int.pem", "--now", &h1]);
    assert!(e.contains("internal"), "{e}");
    z.usage(&["csr", "generate", "--org", "Acme"]);
    z.usage(&["csr", "generate", PS1, "--key", "rsa1024"]);
    z.usage(&["csr", "export"]);
    z.usage(&["cert", "import", PS1]);

    // CE1: the root alone, DER, named .cer; manual CSR mode.
    z.openssl(&[
        "x509",
        "-in",
        "ext-root.pem",
        "-outform",
        "DER",
        "-out",
        "root.cer",
    ]);
    let v = z.json(&[
        "ca",
        "change",
        "external",
        "--chain",
        "root.cer",
        "--csr",
        "manual",
        "--activate-at",
        &act,
        "--update-name",
        "to ext",
        "--now",
        &h1,
    ]);
    assert_eq!(v["kind"], "change_ca_external");

    // SR5: a CN only for a single server; the library checks the fields.
    let mut gen2 = vec!["csr", "generate", PS1, PS2, "--cn", "portal.acme.example"];
    gen2.extend_from_slice(&SUBJECT);
    gen2.extend_from_slice(&["--now", &h1]);
    let e = z.refused(&gen2);
    assert!(e.contains("single server"), "{e}");
    let e = z.refused(&["csr", "generate", PS1, "--country", "USA", "--now", &h1]);
    assert!(e.contains("country"), "{e}");
    z.refused(&["csr", "generate", CONTENT, "--org", "Acme", "--now", &h1]);
    z.refused(&["csr", "show", PS1, "--now", &h1]);
    // V2's options column: no CSR yet.
    let v = z.json(&["server", "show", PS1, "--now", &h1]);
    assert_eq!(v["options"], serde_json::json!([]), "{v}");

    let mut gen1 = vec![
        "csr",
        "generate",
        PS1,
        "--cn",
        "portal.acme.example",
        "--key",
        ALT_KEY,
    ];
    gen1.extend_from_slice(&SUBJECT);
    gen1.extend_from_slice(&["--now", &h1]);
    let made = z.json(&gen1);
    assert_eq!(made[0]["fqdn"], PS1);
    // V2: the server list offers the CSR now, and only for that server.
    let v = z.json(&["server", "show", PS1, "--now", &h1]);
    assert_eq!(v["options"], serde_json::json!(["CSR available"]), "{v}");
    let v = z.json(&["server", "show", PS2, "--now", &h1]);
    assert_eq!(v["options"], serde_json::json!([]), "{v}");
    let subject = made[0]["subject"].as_str().unwrap();
    assert!(subject.contains("CN=portal.acme.example"), "{subject}");
    z.ok(&["csr", "show", PS1, "--out", "ps1.csr", "--now", &h1]);
    let out = z.openssl(&[
        "req", "-in", "ps1.csr", "-noout", "-verify", "-subject", "-text",
    ]);
    csr_verifies(&out);
    assert!(out.contains("CN = portal.acme.example"), "{out}");
    assert!(out.contains("O = Acme") && out.contains("C = US"), "{out}");
    assert!(out.contains(&format!("{} bit", ALT_ALG.1)), "{out}");
    assert!(out.contains(&format!("DNS:{PS1}")), "SAN: {out}");
    let printed = z.ok(&["csr", "show", PS1, "--now", &h1]);
    assert_eq!(
        printed,
        std::fs::read_to_string(z.path("ps1.csr")).unwrap(),
        "without --out the PEM goes to stdout"
    );
    assert!(printed.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));

    // A new CSR replaces the earlier one (SR5).
    let mut again = vec!["csr", "generate", PS1];
    again.extend_from_slice(&SUBJECT);
    again.extend_from_slice(&["--now", &h1]);
    z.ok(&again);
    z.ok(&["csr", "show", PS1, "--out", "ps1-again.csr", "--now", &h1]);
    assert_ne!(
        std::fs::read(z.path("ps1.csr")).unwrap(),
        std::fs::read(z.path("ps1-again.csr")).unwrap()
    );
    let out = z.openssl(&[
        "req",
        "-in",
        "ps1-again.csr",
        "-noout",
        "-verify",
        "-subject",
    ]);
    assert!(out.contains(&format!("CN = {PS1}")), "{out}");

    // The zip of the named servers only; a server without a CSR is refused.
    z.refused(&["csr", "export", "--zip", "two.zip", PS1, PS2, "--now", &h1]);
    assert!(!z.path("two.zip").exists());
    let out = z.json(&["csr", "export", "--zip", "one.zip", PS1, "--now", &h1]);
    assert_eq!(out["servers"], serde_json::json!([PS1]));
    let names = unzip(&z, "one.zip", "one");
    assert_eq!(names, vec![format!("{PS1}.csr")]);
    assert_eq!(
        std::fs::read(z.path(&format!("one/{PS1}.csr"))).unwrap(),
        std::fs::read(z.path("ps1-again.csr")).unwrap()
    );

    // The generated CSR's certificate imports in manual mode too; the root came alone, so
    // the intermediate must be in the file.
    ext.sign(&z, PS1, "ps1-again.csr", "ps1.pem");
    let e = z.refused(&["cert", "import", PS1, "--file", "ps1.pem", "--now", &h1]);
    assert!(e.contains(NO_ISSUER_MESSAGE), "{e}");
    ext.pem_chain(&z, "ps1.pem", "ps1-chain.pem");
    z.ok(&[
        "cert",
        "import",
        PS1,
        "--file",
        "ps1-chain.pem",
        "--now",
        &h1,
    ]);
    let v = z.json(&["op", "show", "--now", &h1]);
    assert_eq!(
        entry(&v["servers"], "fqdn", PS1)["certificate_status"],
        "new certificate uploaded"
    );
    z.ok(&["op", "cancel", "--now", &h1]);
    let v = z.json(&["op", "show", "--now", &h1]);
    assert_eq!(v["state"], "cancelled");
}
