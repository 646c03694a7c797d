//! `examples/zonectl.rs` against its contract (../shared/ZONECTL.md): exit codes, refusals that
//! leave the store unchanged (and no store at all after a refused init), JSON fields, member
//! files, and the TLS handshake between an enrolled server's files and a client trusting only
//! the zone CA.
#![allow(clippy::unwrap_used)]

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/tls.rs"]
mod tls;

use cli::Zone;
use tls::{s_client, s_server};

impl Zone {
    /// The zone Acme on ps1.acme.example, with a DNS name, at [`NOW`].
    fn init(&self) {
        self.init_acme(&["--dns", "alias.acme.example"], NOW);
    }
}

const NOW: &str = "2027-01-01T00:00:00Z";

#[test]
fn refused_init_leaves_no_store() {
    let z = Zone::new();
    for args in [
        &[
            "init",
            "--zone",
            "A",
            "--first-server",
            "ps1.a.example",
            "--valid-years",
            "11",
        ][..],
        &[
            "init",
            "--zone",
            "A",
            "--first-server",
            "ps1.a.example",
            "--valid-years",
            "0",
        ],
        &["init", "--zone", "", "--first-server", "ps1.a.example"],
        &["init", "--zone", "A", "--first-server", "not a name"],
        &[
            "init",
            "--zone",
            "A",
            "--first-server",
            "ps1.a.example",
            "--dns",
            "*.a.example",
        ],
    ] {
        let o = z.run(args);
        assert_eq!(o.code, 1, "{args:?}: {}", o.stderr);
        assert!(o.stderr.starts_with("error: "), "{}", o.stderr);
        assert!(!z.path("zone.db").exists(), "{args:?} left a store");
    }
    let o = z.run(&[
        "init",
        "--zone",
        "A",
        "--first-server",
        "ps1.a.example",
        "--key",
        "rsa1024",
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    // The choices this build offers (RSA with the `rsa` feature).
    let choice = if cfg!(feature = "rsa") {
        "rsa2048"
    } else {
        "p256 (default)"
    };
    assert!(o.stderr.contains(choice), "{}", o.stderr);
    assert!(!z.path("zone.db").exists());
    // Without a store, every other command is refused.
    let o = z.run(&["server", "list"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("init"), "{}", o.stderr);
    assert!(!z.path("zone.db").exists(), "only init creates a store");
}

#[test]
fn usage_errors_exit_2() {
    let z = Zone::new();
    z.init();
    for args in [
        &["server", "add", "x.acme.example", "--role", "king"][..],
        &["server", "list", "--bogus"],
        &["ca", "show", "--now", "yesterday"],
        &["frobnicate"],
    ] {
        assert_eq!(z.run(args).code, 2, "{args:?}");
    }
}

#[test]
fn a_zone_through_the_command_line() {
    let z = Zone::new();
    z.init();
    let o = z.run(&["init", "--zone", "B", "--first-server", "ps9.acme.example"]);
    assert_eq!(o.code, 1, "a second init is refused");

    let ca = z.json(&["ca", "show", "--now", NOW]);
    for field in [
        "kind",
        "certificate_server",
        "subject",
        "issuer",
        "not_before",
        "not_after",
        "key_algorithm",
        "key_bits",
        "md5",
        "sha1",
        "sha256",
        "status",
    ] {
        assert!(ca.get(field).is_some(), "ca show lacks {field}: {ca}");
    }
    assert_eq!(ca["kind"], "internal");
    assert_eq!(ca["certificate_server"], "ps1.acme.example");
    assert_eq!(ca["key_algorithm"], "ecdsa-p256");
    assert_eq!(ca["status"], "valid");
    assert_eq!(ca["not_after"], "2037-01-01T00:00:00Z");
    let sha1 = ca["sha1"].as_str().unwrap();
    assert_eq!(sha1.len(), 59);
    assert!(
        sha1.chars()
            .all(|c| c == ':' || c.is_ascii_digit() || c.is_ascii_uppercase())
    );

    // Global options stand before or after the subcommand.
    let later = "2027-01-02T00:00:00Z";
    z.ok(&[
        "--now",
        later,
        "server",
        "add",
        "ps2.acme.example",
        "--role",
        "primary",
        "--agent-version",
        "24.4",
    ]);
    z.ok(&[
        "server",
        "add",
        "sat.acme.example",
        "--role",
        "auth-satellite",
        "--parent",
        "ps2.acme.example",
        "--dns",
        "sat-alias.acme.example",
        "--now",
        later,
    ]);
    z.ok(&[
        "server",
        "add",
        "content.acme.example",
        "--role",
        "content-satellite",
        "--now",
        later,
    ]);
    z.refused(&[
        "server",
        "add",
        "sat2.acme.example",
        "--role",
        "auth-satellite",
        "--now",
        later,
    ]);
    z.refused(&[
        "server",
        "add",
        "sat2.acme.example",
        "--role",
        "auth-satellite",
        "--parent",
        "content.acme.example",
        "--now",
        later,
    ]);
    z.refused(&[
        "server",
        "add",
        "ps2.acme.example",
        "--role",
        "primary",
        "--now",
        later,
    ]);
    z.ok(&[
        "device", "add", "--count", "3", "--prefix", "lap", "--now", later,
    ]);
    z.ok(&["device", "add", "kiosk-1", "kiosk-2", "--now", later]);
    z.refused(&["device", "add", "kiosk-2", "kiosk-3", "--now", later]);
    z.refused(&["device", "add", "bad/name", "--now", later]);

    let list = z.json(&["server", "list", "--now", later]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4);
    for s in list {
        for field in [
            "fqdn",
            "role",
            "subject",
            "issuer",
            "not_before",
            "not_after",
            "md5",
            "sha1",
            "sha256",
            "status",
            "update_status",
            "agent_version",
        ] {
            assert!(s.get(field).is_some(), "server lacks {field}: {s}");
        }
    }
    let sat = z.json(&["server", "show", "sat.acme.example", "--now", later]);
    assert_eq!(sat["status"], "active");
    assert_eq!(sat["role"], "auth-satellite");
    assert_eq!(sat["subject"], "CN=sat.acme.example");
    assert_eq!(sat["issuer"], "CN=Acme");
    let devices = z.json(&["device", "list"]);
    assert_eq!(devices.as_array().unwrap().len(), 5);
    assert!(devices[0].get("name").is_some() && devices[0].get("update_status").is_some());

    // Exports, and chain verify on them.
    z.ok(&["ca", "export", "--out", "ca.pem"]);
    z.ok(&["ca", "export", "--out", "ca.der", "--der"]);
    z.ok(&["server", "cert", "sat.acme.example", "--out", "sat.pem"]);
    let out = z.ok(&[
        "chain", "verify", "--trust", "ca.der", "--leaf", "sat.pem", "--at", later,
    ]);
    assert!(
        out.contains("CN=sat.acme.example") && out.contains("CN=Acme"),
        "{out}"
    );
    // Trusting only the satellite's own certificate does not make the CA valid.
    z.ok(&[
        "server",
        "cert",
        "sat.acme.example",
        "--out",
        "sat.der",
        "--der",
    ]);
    let o = z.run(&[
        "chain", "verify", "--trust", "sat.der", "--leaf", "ca.pem", "--at", later,
    ]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(
        o.stderr.contains(
            "CA certificate subject from the CA Certificate chain does not \
        match server certificate issuer."
        ),
        "{}",
        o.stderr
    );
    let o = z.run(&[
        "chain",
        "verify",
        "--trust",
        "ca.pem",
        "--leaf",
        "sat.pem",
        "--at",
        "2040-01-01T00:00:00Z",
    ]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("expired"), "{}", o.stderr);

    // Warnings with the manual's words.
    let out = z.ok(&["warnings", "--now", "2036-12-01T00:00:00Z"]);
    assert!(out.contains("The following certificates are about to expire or have expired."));
    assert!(
        out.contains("sat.acme.example server certificate expires on"),
        "{out}"
    );
    let w = z.json(&["warnings", "--now", "2037-02-01T00:00:00Z"]);
    assert!(
        w.as_array()
            .unwrap()
            .iter()
            .any(|x| x["message"] == "ps1.acme.example server certificate has expired")
    );
    assert!(
        z.json(&["warnings", "--now", later])
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Member files.
    let cur = z.path("fleet/sat.acme.example/current");
    let chain = std::fs::read_to_string(cur.join("cert.pem")).unwrap();
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2, "leaf and CA");
    assert!(
        std::fs::read_to_string(cur.join("key.pem"))
            .unwrap()
            .contains("BEGIN PRIVATE KEY")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cur.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let dump = z.ok(&["store", "dump"]);
    assert!(!dump.contains("PRIVATE KEY"));
    let out = z.ok(&["audit", "verify"]);
    assert!(out.contains("OK"), "{out}");
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn tls_handshake_with_an_enrolled_servers_files() {
    common::require("openssl");
    let z = Zone::new();
    let now = zonepki::clock::Timestamp::now_utc().to_string();
    z.ok(&[
        "init",
        "--zone",
        "TLS Zone",
        "--first-server",
        "localhost",
        "--now",
        &now,
    ]);
    z.ok(&["ca", "export", "--out", "ca.pem"]);
    let other = Zone::new();
    other.ok(&[
        "init",
        "--zone",
        "Other",
        "--first-server",
        "localhost",
        "--now",
        &now,
    ]);
    other.ok(&["ca", "export", "--out", "ca.pem"]);

    let (server, port) = s_server(&z.path("fleet/localhost/current"), None);
    let (ok, text) = s_client(port, &z.path("ca.pem"));
    // A client trusting another zone's CA must refuse the same server.
    let (other_ok, other_text) = s_client(port, &other.path("ca.pem"));
    drop(server);
    assert!(ok && text.contains("Verification: OK"), "{text}");
    assert!(
        !other_ok,
        "a client trusting another CA accepted: {other_text}"
    );
}
