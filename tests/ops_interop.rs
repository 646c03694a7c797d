//! A Remint CA checked by OpenSSL on the members' files: after activation every server's
//! `current/cert.pem` verifies under the new CA (`openssl verify -x509_strict -purpose
//! sslserver`), and a TLS handshake with the Primary Server `localhost` succeeds from a device
//! that applied the update and fails from one that was offline through activation (O8, A2).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/sim.rs"]
mod sim;
#[path = "common/tls.rs"]
mod tls;

use std::process::Command;
use std::time::Duration;

use sim::{PS2, SAT1, Sim, Spec, offline};
use tls::{s_client, s_server};
use zonepki::cert::bundle::read_file;
use zonepki::clock::Timestamp;
use zonepki::ops::ActivationRequest;
use zonepki::store::MemoryStore;
use zonepki::transport::LoopbackTransport;

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn activated_servers_verify_with_openssl_and_serve_tls_to_devices_that_applied() {
    common::require("openssl");
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet");
    // Real time, since OpenSSL checks validity against its own clock.
    let now = Timestamp::now_utc();
    let spec = Spec {
        ca_server: "localhost".into(),
        devices: 2,
        start: now,
        bridges: false,
    };
    let sim = Sim::build(
        MemoryStore::new(),
        LoopbackTransport::with_root(&fleet),
        spec,
    );
    let old_ca = sim.svc.ca_certificate().unwrap();
    let activation = now.plus(Duration::from_secs(3600));
    let mut req = sim::remint_ca("2027-01-08T00:00:00Z");
    req.activation = ActivationRequest::At(activation);
    sim.svc.start_remint_ca(req).unwrap();
    let away = offline(&["dev-2"]);
    sim.drive(&away);
    sim.clock.set(activation);
    let v = sim.drive(&away);
    assert_eq!(v.state, "activated");
    assert_eq!(v.stranded, ["dev-2"]);
    let new_ca = sim.svc.ca_certificate().unwrap();
    assert_ne!(new_ca, old_ca);
    let ca_pem = common::write(dir.path(), "new-ca.pem", new_ca.der().to_pem());

    for server in ["localhost", PS2, SAT1] {
        let chain = read_file(&fleet.join(server).join("current/cert.pem")).unwrap();
        assert_eq!(chain[0].issuer(), new_ca.subject(), "{server}");
        let leaf = common::write(
            dir.path(),
            &format!("{server}.pem"),
            chain[0].der().to_pem(),
        );
        let (_, text) = common::run(
            Command::new("openssl")
                .args(["verify", "-x509_strict", "-purpose", "sslserver", "-CAfile"])
                .arg(&ca_pem)
                .arg(&leaf),
        );
        assert!(text.contains(": OK"), "{server}: {text}");
    }

    let applied = fleet.join("dev-1/current/trust.pem");
    let stranded = fleet.join("dev-2/current/trust.pem");
    assert_eq!(read_file(&stranded).unwrap(), std::slice::from_ref(&old_ca));
    assert_eq!(read_file(&applied).unwrap()[0], new_ca);
    let (server, port) = s_server(&fleet.join("localhost/current"), None);
    let (ok, text) = s_client(port, &applied);
    let (stranded_ok, stranded_text) = s_client(port, &stranded);
    drop(server);
    assert!(ok && text.contains("Verification: OK"), "{text}");
    assert!(
        !stranded_ok && stranded_text.contains("verify error"),
        "a device that missed the update accepted the new certificate: {stranded_text}"
    );
}
