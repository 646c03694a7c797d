//! B1 with real tools: after a Remint CA, a device that was offline through activation, and
//! so still trusts only the old CA, validates every server's new chain because the servers
//! present the bridge. Checked with `openssl verify` and a TLS handshake on 127.0.0.1 whose
//! client trusts only the device's `trust.pem`. Without bridges the same device is stranded
//! and the handshake fails.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/sim.rs"]
mod sim;
#[path = "common/tls.rs"]
mod tls;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sim::{Sim, Spec, offline};
use tls::{s_client, s_server};
use zonepki::cert::bundle;
use zonepki::clock::Timestamp;
use zonepki::ops::ActivationRequest;
use zonepki::store::MemoryStore;
use zonepki::transport::LoopbackTransport;

/// Runs a Remint CA with `dev-2` offline through activation; returns the fleet directory.
fn remint_with_dev2_offline(bridges: bool, dir: &Path) -> (Sim, Vec<String>) {
    let now = Timestamp::now_utc();
    let spec = Spec {
        ca_server: "localhost".into(),
        devices: 2,
        start: now,
        bridges,
    };
    let sim = Sim::build(MemoryStore::new(), LoopbackTransport::with_root(dir), spec);
    let activation = now.plus(Duration::from_secs(3600));
    let mut req = sim::remint_ca("2027-01-08T00:00:00Z");
    req.activation = ActivationRequest::At(activation);
    sim.svc.start_remint_ca(req).unwrap();
    let away = offline(&["dev-2"]);
    sim.drive(&away);
    sim.clock.set(activation);
    let v = sim.drive(&away);
    assert_eq!(v.state, "activated");
    (sim, v.stranded)
}

fn openssl_verify(trust: &Path, chain: &Path, dir: &Path) -> (bool, String) {
    let certs = bundle::read_file(chain).unwrap();
    let tail = dir.join("tail.pem");
    let ders: Vec<_> = certs[1..].iter().map(|c| c.der().clone()).collect();
    std::fs::write(&tail, bundle::to_pem(&ders)).unwrap();
    let leaf = dir.join("leaf.pem");
    std::fs::write(&leaf, certs[0].der().to_pem()).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-x509_strict", "-purpose", "sslserver", "-CAfile"])
        .arg(trust)
        .arg("-untrusted")
        .arg(&tail)
        .arg(&leaf)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.contains(": OK"), text)
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn a_device_offline_through_activation_validates_through_the_bridge() {
    common::require("openssl");
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet");
    let (_sim, stranded) = remint_with_dev2_offline(true, &fleet);
    assert!(
        stranded.is_empty(),
        "with the bridge nobody is stranded: {stranded:?}"
    );
    let dev2_trust = fleet.join("dev-2/current/trust.pem");
    let dev1_trust = fleet.join("dev-1/current/trust.pem");
    assert_eq!(
        bundle::read_file(&dev2_trust).unwrap().len(),
        1,
        "old CA only"
    );
    for server in ["localhost", sim::PS2, sim::SAT1] {
        let chain = fleet.join(server).join("current/cert.pem");
        for trust in [&dev2_trust, &dev1_trust] {
            let (ok, text) = openssl_verify(trust, &chain, dir.path());
            assert!(ok, "{server} with {}: {text}", trust.display());
        }
    }
    // A TLS handshake: the server sends the bridge; the device that missed the update accepts.
    let cur = fleet.join("localhost/current");
    let certs = bundle::read_file(&cur.join("cert.pem")).unwrap();
    let tail = dir.path().join("served-tail.pem");
    let ders: Vec<_> = certs[1..].iter().map(|c| c.der().clone()).collect();
    std::fs::write(&tail, bundle::to_pem(&ders)).unwrap();
    let (_server, port) = s_server(&cur, Some(&tail));
    let (ok, text) = s_client(port, &dev2_trust);
    assert!(ok && text.contains("Verification: OK"), "{text}");
    let (ok, text) = s_client(port, &dev1_trust);
    assert!(ok && text.contains("Verification: OK"), "{text}");
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn without_the_bridge_the_same_device_is_stranded() {
    common::require("openssl");
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet");
    let (_sim, stranded) = remint_with_dev2_offline(false, &fleet);
    assert_eq!(stranded, ["dev-2"]);
    let chain = fleet.join("localhost/current/cert.pem");
    let (ok, text) = openssl_verify(&fleet.join("dev-2/current/trust.pem"), &chain, dir.path());
    assert!(!ok, "{text}");
}
