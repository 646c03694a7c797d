//! What the crate issues must be accepted by OpenSSL: `verify -x509_strict -purpose
//! sslserver`, `x509 -fingerprint`, `req -verify` (which exits 0 even on failure, so its
//! output is read). Issue #2, item 11.
#![allow(clippy::unwrap_used)]

mod common;

use common::{require, run, tool, write};
use zonepki::ca::{CaParams, Serial, ServerProfile, issue_server_certificate, self_signed_ca};
use zonepki::cert::Certificate;
use zonepki::clock::Timestamp;
use zonepki::csr::{CsrRequest, CsrSubject, VerifiedCsr, build_csr};
use zonepki::key::{KeySpec, PrivateKey, Signer};

fn issue(spec: KeySpec) -> (Certificate, Certificate, PrivateKey, Vec<u8>) {
    let now = Timestamp::now_utc();
    let ca_key = PrivateKey::generate(spec).unwrap();
    let params = CaParams {
        common_name: "Zone CA".into(),
        validity: 2.try_into().unwrap(),
    };
    let ca = self_signed_ca(&ca_key, &params, &Serial::random().unwrap(), now).unwrap();
    let key = PrivateKey::generate(spec).unwrap();
    let req = CsrRequest {
        subject: CsrSubject {
            common_name: "ps1.zone.example".into(),
            organization: Some("Example".into()),
            organizational_unit: Some("IT".into()),
            locality: Some("Provo".into()),
            state: Some("UT".into()),
            country: Some("US".into()),
        },
        dns_names: vec!["ps1.zone.example".into()],
    };
    let csr_der = build_csr(&req, &key).unwrap();
    let csr = VerifiedCsr::from_der(csr_der.as_bytes()).unwrap();
    let profile = ServerProfile {
        fqdn: "ps1.zone.example".into(),
        dns_names: vec!["alias.zone.example".into()],
        include_dns: true,
        ..Default::default()
    };
    let leaf = issue_server_certificate(
        &ca,
        &ca_key,
        &csr,
        &profile,
        &Serial::random().unwrap(),
        now,
    )
    .unwrap();
    (ca, leaf, key, csr_der.as_bytes().to_vec())
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn openssl_accepts_issued_chain_p256_and_rsa() {
    // RSA with the `rsa` feature only.
    for spec in [KeySpec::P256, KeySpec::Rsa2048]
        .into_iter()
        .filter(|k| k.is_available())
    {
        let mut verify = tool("openssl");
        let dir = tempfile::tempdir().unwrap();
        let (ca, leaf, _, _) = issue(spec);
        let ca_pem = write(dir.path(), "ca.pem", ca.der().to_pem());
        let leaf_pem = write(dir.path(), "leaf.pem", leaf.der().to_pem());
        let (ok, out) = run(verify.args([
            "verify",
            "-x509_strict",
            "-purpose",
            "sslserver",
            "-CAfile",
            &ca_pem,
            &leaf_pem,
        ]));
        assert!(ok && out.contains(": OK"), "{spec}: {out}");
        // The CA alone, self-verified under the strict profile.
        let (ok, out) =
            run(tool("openssl").args(["verify", "-x509_strict", "-CAfile", &ca_pem, &ca_pem]));
        assert!(ok && out.contains(": OK"), "{spec} CA: {out}");
    }
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn fingerprints_match_openssl() {
    require("openssl");
    let dir = tempfile::tempdir().unwrap();
    let (_, leaf, _, _) = issue(KeySpec::P256);
    let pem = write(dir.path(), "leaf.pem", leaf.der().to_pem());
    let fp = leaf.fingerprints();
    for (alg, ours) in [("-md5", fp.md5), ("-sha1", fp.sha1), ("-sha256", fp.sha256)] {
        let (ok, out) =
            run(tool("openssl").args(["x509", "-noout", "-fingerprint", alg, "-in", &pem]));
        assert!(ok, "{out}");
        let theirs = out.trim().split_once('=').unwrap().1;
        assert_eq!(theirs, ours.to_string(), "{alg}");
    }
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn openssl_req_verify_accepts_our_csrs() {
    // RSA with the `rsa` feature only.
    for spec in [KeySpec::P256, KeySpec::Rsa3072]
        .into_iter()
        .filter(|k| k.is_available())
    {
        let mut req = tool("openssl");
        let dir = tempfile::tempdir().unwrap();
        let (_, _, _, csr) = issue(spec);
        let path = write(dir.path(), "req.der", &csr);
        let (_, out) = run(req.args(["req", "-verify", "-noout", "-inform", "DER", "-in", &path]));
        // `openssl req -verify` exits 0 even when the signature is bad: read what it says.
        assert!(
            out.contains("verify OK")
                || out.contains("Certificate request self-signature verify OK"),
            "{spec}: {out}"
        );
        assert!(!out.contains("fail"), "{out}");
    }
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn openssl_made_csr_is_accepted_and_tampered_one_refused() {
    let mut req = tool("openssl");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let csr = dir.path().join("r.pem");
    let (ok, out) = run(req.args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        csr.to_str().unwrap(),
        "-subj",
        "/C=US/O=Example/CN=ext.zone.example",
        "-addext",
        "subjectAltName=DNS:ext.zone.example",
    ]));
    assert!(ok, "{out}");
    let pem = std::fs::read(&csr).unwrap();
    let v = VerifiedCsr::from_pem_or_der(&pem).unwrap();
    assert_eq!(v.common_name().as_deref(), Some("ext.zone.example"));
    assert_eq!(v.dns_names(), ["ext.zone.example"]);
    let k = PrivateKey::from_pkcs8(&std::fs::read(&key).unwrap()).unwrap();
    assert_eq!(&k.public_key_info(), v.public_key());
}
