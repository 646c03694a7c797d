//! A second (and third) implementation accepts what the crate issues: Python `cryptography`
//! (its RFC 5280 path validator, `cryptography.x509.verification`) and GnuTLS `certtool`.
//! Issue #2, item 11.
#![allow(clippy::unwrap_used)]

mod common;

use common::{run, tool, write};
use zonepki::ca::{CaParams, Serial, ServerProfile, issue_server_certificate, self_signed_ca};
use zonepki::cert::bundle;
use zonepki::clock::Timestamp;
use zonepki::csr::{CsrRequest, CsrSubject, VerifiedCsr, build_csr};
use zonepki::key::{KeySpec, PrivateKey};

struct Issued {
    ca_pem: String,
    chain_pem: String,
    csr_pem: String,
}

fn issue(spec: KeySpec) -> Issued {
    let now = Timestamp::now_utc();
    let ca_key = PrivateKey::generate(spec).unwrap();
    let params = CaParams {
        common_name: "Interop Zone".into(),
        validity: 1.try_into().unwrap(),
    };
    let ca = self_signed_ca(&ca_key, &params, &Serial::random().unwrap(), now).unwrap();
    let key = PrivateKey::generate(spec).unwrap();
    let req = CsrRequest {
        subject: CsrSubject {
            common_name: "ps1.zone.example".into(),
            organization: Some("Example".into()),
            country: Some("DE".into()),
            ..Default::default()
        },
        dns_names: vec!["ps1.zone.example".into()],
    };
    let csr = build_csr(&req, &key).unwrap();
    let verified = VerifiedCsr::from_der(csr.as_bytes()).unwrap();
    let profile = ServerProfile {
        fqdn: "ps1.zone.example".into(),
        ..Default::default()
    };
    let leaf = issue_server_certificate(
        &ca,
        &ca_key,
        &verified,
        &profile,
        &Serial::random().unwrap(),
        now,
    )
    .unwrap();
    Issued {
        ca_pem: ca.der().to_pem(),
        chain_pem: bundle::to_pem(&[leaf.der().clone(), ca.der().clone()]),
        csr_pem: csr.to_pem(),
    }
}

const PY_VERIFY: &str = r#"
import sys, datetime
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
ca = x509.load_pem_x509_certificates(open(sys.argv[1], "rb").read())
chain = x509.load_pem_x509_certificates(open(sys.argv[2], "rb").read())
csr = x509.load_pem_x509_csr(open(sys.argv[3], "rb").read())
assert csr.is_signature_valid, "CSR signature invalid"
verifier = (PolicyBuilder().store(Store(ca))
            .time(datetime.datetime.now(datetime.timezone.utc))
            .build_server_verifier(x509.DNSName("ps1.zone.example")))
path = verifier.verify(chain[0], chain[1:])
print("OK", " <- ".join(c.subject.rfc4514_string() for c in path))
"#;

#[cfg_attr(
    not(zonepki_has_pycryptography),
    ignore = "needs Python cryptography >= 42 (pip install cryptography); .ci/run installs it"
)]
#[test]
fn python_cryptography_validates_chain_and_csr() {
    // RSA with the `rsa` feature only.
    for spec in [KeySpec::P256, KeySpec::Rsa2048]
        .into_iter()
        .filter(|k| k.is_available())
    {
        let mut py = tool("python3");
        let dir = tempfile::tempdir().unwrap();
        let i = issue(spec);
        let ca = write(dir.path(), "ca.pem", &i.ca_pem);
        let chain = write(dir.path(), "chain.pem", &i.chain_pem);
        let csr = write(dir.path(), "req.pem", &i.csr_pem);
        let (ok, out) = run(py.args(["-c", PY_VERIFY, &ca, &chain, &csr]));
        if !ok && out.contains("No module named 'cryptography'") {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must install python3-cryptography"
            );
            eprintln!("notice: python cryptography missing; skipping outside CI");
            return;
        }
        assert!(
            ok && out.contains("OK CN=ps1.zone.example <- CN=Interop Zone"),
            "{spec}: {out}"
        );
    }
}

#[cfg_attr(
    not(zonepki_has_certtool),
    ignore = "needs GnuTLS certtool on PATH (apt-get install gnutls-bin); .ci/run installs it"
)]
#[test]
fn gnutls_certtool_validates_chain_and_csr() {
    // RSA with the `rsa` feature only.
    for spec in [KeySpec::P256, KeySpec::Rsa3072]
        .into_iter()
        .filter(|k| k.is_available())
    {
        let mut verify = tool("certtool");
        let dir = tempfile::tempdir().unwrap();
        let i = issue(spec);
        let ca = write(dir.path(), "ca.pem", &i.ca_pem);
        let chain = write(dir.path(), "chain.pem", &i.chain_pem);
        let csr = write(dir.path(), "req.pem", &i.csr_pem);
        let (ok, out) = run(verify.args([
            "--verify",
            "--verify-profile=high",
            "--verify-hostname",
            "ps1.zone.example",
            "--load-ca-certificate",
            &ca,
            "--infile",
            &chain,
        ]));
        assert!(
            ok && out.contains("Chain verification output: Verified."),
            "{spec}: {out}"
        );
        let (ok, out) = run(tool("certtool").args(["--crq-info", "--infile", &csr]));
        assert!(
            ok && out.contains("Self signature: verified"),
            "{spec}: {out}"
        );
    }
}

#[cfg_attr(
    not(zonepki_has_certtool),
    ignore = "needs GnuTLS certtool on PATH (apt-get install gnutls-bin); .ci/run installs it"
)]
#[test]
fn certtool_refuses_a_chain_to_another_ca() {
    let mut verify = tool("certtool");
    let dir = tempfile::tempdir().unwrap();
    let a = issue(KeySpec::P256);
    let b = issue(KeySpec::P256);
    let ca = write(dir.path(), "ca.pem", &a.ca_pem);
    let chain = write(dir.path(), "chain.pem", &b.chain_pem);
    let (_, out) = run(verify.args(["--verify", "--load-ca-certificate", &ca, "--infile", &chain]));
    assert!(out.contains("Not verified"), "{out}");
}
