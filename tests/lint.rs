//! B4 pre-flight lint against an independent oracle (issue 14 part 3): pkilint's RFC 5280
//! linter (`lint_pkix_cert`, and `lint_pkix_signer_signee_cert_chain` for issuer/subject
//! pairs) finds nothing at WARNING or above in any certificate of a whole Remint CA (CA,
//! bridge, server certificates) or of a Change CA to an external CA; and on a set of
//! deliberately bad certificates built with openssl, the crate's lint and pkilint agree, each
//! difference explained in [`BAD_SET`]. Plus the refusals: an external chain or an imported
//! certificate that fails the lint is refused with a typed error, and nothing changes.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/sim.rs"]
mod sim;

use std::path::Path;
use std::process::Command;

use common::{run, tool, write};
use der::Encode;
use sim::{PS1, PS2, SAT1, Sim, Spec, remint_ca};
use zonepki::ca::{
    CaParams, Serial, ServerProfile, cross_certify, issue_server_certificate, self_signed_ca,
};
use zonepki::cert::{Certificate, CertificateDer, bundle};
use zonepki::clock::{Clock, Timestamp};
use zonepki::csr::VerifiedCsr;
use zonepki::key::{KeySpec, PrivateKey, Signer};
use zonepki::lint::{CertRole, Context, Finding, Rule, Severity, lint_certificate, lint_chain};
use zonepki::ops::{ActivationRequest, CsrFields, CsrMode};
use zonepki::service::{ChangeCaRequest, ChangeCaTarget};
use zonepki::store::MemoryStore;
use zonepki::transport::LoopbackTransport;
use zonepki::transport::RefreshOptions;

/// pkilint's findings of level WARNING or above for one certificate (or an issuer/subject
/// pair), as `code (LEVEL)` strings; `None` when pkilint is not installed outside CI.
fn pkilint(dir: &Path, name: &str, certs: &[&CertificateDer]) -> Option<Vec<String>> {
    let (tool_name, files): (&str, Vec<String>) = match certs {
        [one] => (
            "lint_pkix_cert",
            vec![write(dir, &format!("{name}.pem"), one.to_pem())],
        ),
        [issuer, subject] => (
            "lint_pkix_signer_signee_cert_chain",
            vec![
                write(dir, &format!("{name}.issuer.pem"), issuer.to_pem()),
                write(dir, &format!("{name}.pem"), subject.to_pem()),
            ],
        ),
        _ => unreachable!("one certificate or an issuer/subject pair"),
    };
    if !pkilint_available() {
        return None;
    }
    let mut cmd = tool(tool_name);
    cmd.args(["lint", "-s", "WARNING", "-f", "JSON"])
        .args(&files);
    let (_, out) = run(&mut cmd);
    let json: serde_json::Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("{tool_name} on {name}: not JSON ({e}): {out}"));
    let mut codes = Vec::new();
    for result in json["results"].as_array().unwrap() {
        for f in result["finding_descriptions"].as_array().unwrap() {
            codes.push(format!(
                "{} ({})",
                f["code"].as_str().unwrap(),
                f["severity"].as_str().unwrap()
            ));
        }
    }
    Some(codes)
}

/// Whether the pkilint half of a test runs: when build.rs found pkilint (always under CI,
/// where `.ci/run` installs it and a missing one then fails the test). Tests that are only
/// about pkilint are marked ignored without it; tests that also check the crate's own lint
/// run that half anyway and say on stderr that pkilint was not run.
fn pkilint_available() -> bool {
    if cfg!(zonepki_has_pkilint) {
        common::require("lint_pkix_cert");
        return true;
    }
    eprintln!("notice: pkilint was not found at build time (pip install pkilint): not run");
    false
}

fn der(c: &Certificate) -> CertificateDer {
    c.der().clone()
}

// ---------------------------------------------------------------------------------------------
// The crate's own certificates: zero findings from both linters.

/// Every certificate a Remint CA makes (with B1's bridge) and every current one before it.
fn remint_ca_certificates() -> Vec<(String, Vec<Certificate>)> {
    let sim = Sim::build(
        MemoryStore::new(),
        LoopbackTransport::in_memory(),
        Spec {
            bridges: true,
            ..Spec::new(2)
        },
    );
    let mut out = Vec::new();
    let current = sim.svc.ca_certificate().unwrap();
    out.push(("current CA".to_string(), vec![current.clone()]));
    for s in [PS1, PS2, SAT1] {
        let chain = sim.chain(s);
        out.push((
            format!("{s} current"),
            vec![Certificate::try_from(&chain[0]).unwrap(), current.clone()],
        ));
    }
    sim.svc
        .start_remint_ca(remint_ca("2027-02-01T00:00:00Z"))
        .unwrap();
    sim.drive(&RefreshOptions::default());
    let op = sim.svc.op().unwrap().unwrap();
    let future = Certificate::try_from(op.kind.future_ca().unwrap()).unwrap();
    let bridge = Certificate::try_from(op.kind.bridge().unwrap()).unwrap();
    out.push(("future CA".into(), vec![future.clone()]));
    out.push(("bridge".into(), vec![bridge.clone(), current.clone()]));
    for s in [PS1, PS2, SAT1] {
        let chain = sim.svc.future_chain(&sim::fq(s)).unwrap().unwrap();
        // Served with the bridge (B1): leaf, bridge.
        assert_eq!(chain[1], der(&bridge), "{s}");
        out.push((
            format!("{s} future"),
            vec![Certificate::try_from(&chain[0]).unwrap(), future.clone()],
        ));
    }
    out
}

/// An external CA (root and issuing CA) made with the crate's own profiles.
struct External {
    root: Certificate,
    int: Certificate,
    int_key: PrivateKey,
}

impl External {
    fn new(now: Timestamp) -> Self {
        let p = |cn: &str| CaParams {
            common_name: cn.into(),
            validity: 10.try_into().unwrap(),
        };
        let root_key = PrivateKey::generate(KeySpec::P256).unwrap();
        let root = self_signed_ca(
            &root_key,
            &p("External Root"),
            &Serial::random().unwrap(),
            now,
        )
        .unwrap();
        let int_key = PrivateKey::generate(KeySpec::P256).unwrap();
        let int_self = self_signed_ca(
            &int_key,
            &p("External Issuing CA"),
            &Serial::random().unwrap(),
            now,
        )
        .unwrap();
        let int =
            cross_certify(&root, &root_key, &int_self, &Serial::random().unwrap(), now).unwrap();
        External { root, int, int_key }
    }

    fn sign(&self, fqdn: &str, csr: &zonepki::csr::CsrDer, now: Timestamp) -> Vec<u8> {
        let csr = VerifiedCsr::from_der(csr.as_bytes()).unwrap();
        let profile = ServerProfile {
            fqdn: fqdn.into(),
            ..Default::default()
        };
        let leaf = issue_server_certificate(
            &self.int,
            &self.int_key,
            &csr,
            &profile,
            &Serial::random().unwrap(),
            now,
        )
        .unwrap();
        bundle::to_pem(&[der(&leaf), der(&self.int)]).into_bytes()
    }
}

/// Every certificate of a Change CA from the internal CA to an external one (automatic CSRs):
/// the external root and issuing CA, the bridge, and the imported server certificates.
fn change_ca_external_certificates() -> Vec<(String, Vec<Certificate>)> {
    let sim = Sim::new(2);
    let now = sim.clock.now();
    let ext = External::new(now);
    let current = sim.svc.ca_certificate().unwrap();
    sim.svc
        .start_change_ca(ChangeCaRequest::new(
            ChangeCaTarget::External {
                chain: bundle::to_pem(&[der(&ext.int), der(&ext.root)]).into_bytes(),
                csr: CsrMode::Auto {
                    fields: CsrFields::default()
                        .with_organization("Acme")
                        .with_country("US"),
                    key: KeySpec::P256,
                },
            },
            ActivationRequest::At(sim::t("2027-01-10T00:00:00Z")),
        ))
        .unwrap();
    sim.drive(&RefreshOptions::default());
    for (fqdn, csr) in sim.svc.csrs(&[]).unwrap() {
        sim.svc
            .import_certificate(&fqdn, &ext.sign(fqdn.as_str(), &csr, now))
            .unwrap();
    }
    sim.drive(&RefreshOptions::default());
    let op = sim.svc.op().unwrap().unwrap();
    let bridge = Certificate::try_from(op.kind.bridge().unwrap()).unwrap();
    let mut out = vec![
        ("external root".to_string(), vec![ext.root.clone()]),
        (
            "external issuing CA".into(),
            vec![ext.int.clone(), ext.root.clone()],
        ),
        ("bridge to the external root".into(), vec![bridge, current]),
    ];
    for s in [PS1, PS2, SAT1] {
        let chain = sim.svc.future_chain(&sim::fq(s)).unwrap().unwrap();
        out.push((
            format!("{s} from the external CA"),
            vec![Certificate::try_from(&chain[0]).unwrap(), ext.int.clone()],
        ));
    }
    out
}

/// Lints `(name, [cert, issuer?])` with both linters: nothing from either.
fn assert_clean(set: &[(String, Vec<Certificate>)]) {
    let dir = tempfile::tempdir().unwrap();
    for (i, (name, certs)) in set.iter().enumerate() {
        let cert = &certs[0];
        let role = if cert.is_ca() {
            CertRole::Ca
        } else {
            CertRole::ServerLeaf
        };
        let fqdn = cert.common_name();
        let issuer = certs.get(1).or(Some(cert));
        let ours = lint_certificate(
            cert,
            Context {
                role,
                issuer,
                fqdn: fqdn.as_deref().filter(|_| role == CertRole::ServerLeaf),
                external: false,
            },
        );
        assert!(ours.is_empty(), "{name}: the crate's lint found {ours:?}");
        let file = format!("c{i}");
        if let Some(found) = pkilint(dir.path(), &file, &[cert.der()]) {
            assert!(found.is_empty(), "{name}: pkilint found {found:?}");
        }
        if let (Some(issuer), false) = (certs.get(1), cert.is_self_signed()) {
            let pair = format!("p{i}");
            if let Some(found) = pkilint(dir.path(), &pair, &[issuer.der(), cert.der()]) {
                assert!(
                    found.is_empty(),
                    "{name} under its issuer: pkilint found {found:?}"
                );
            }
        }
    }
}

#[cfg_attr(
    not(zonepki_has_pkilint),
    ignore = "needs pkilint on PATH (pip install pkilint); .ci/run installs it"
)]
#[test]
fn pkilint_finds_nothing_in_a_whole_remint_ca_b4() {
    let set = remint_ca_certificates();
    assert_eq!(
        set.len(),
        9,
        "CA, 3 leaves, future CA, bridge, 3 future leaves"
    );
    assert_clean(&set);
}

#[cfg_attr(
    not(zonepki_has_pkilint),
    ignore = "needs pkilint on PATH (pip install pkilint); .ci/run installs it"
)]
#[test]
fn pkilint_finds_nothing_in_a_change_ca_to_an_external_ca_b4() {
    let set = change_ca_external_certificates();
    assert_eq!(set.len(), 6);
    assert_clean(&set);
}

// ---------------------------------------------------------------------------------------------
// The bad set: both linters on deliberately bad certificates.

/// One deliberately bad certificate: how it is made, and what each linter must say.
struct Bad {
    /// The file (and the openssl extension section that makes it).
    name: &'static str,
    /// openssl extension section in [`EXTENSIONS`].
    section: &'static str,
    /// Self-signed (a CA), or issued by the bad set's CA.
    self_signed: bool,
    /// Key file: `ca.key`, `leaf.key` or `rsa1024.key`.
    key: &'static str,
    /// Digest.
    digest: &'static str,
    /// Serial as openssl's `-set_serial` takes it.
    serial: &'static str,
    /// Validity in days (the bad set's CA has 3650).
    days: u32,
    /// Issuer for the crate's lint and pkilint's pair linter: `ca` or `ca_other_ski`.
    issuer: &'static str,
    /// What the crate's lint must report: the rule and its severity.
    ours: Option<(Rule, Severity)>,
    /// What pkilint must report (a finding code at WARNING or above).
    pkilint: Option<&'static str>,
    /// Why the two differ, when they do.
    why: &'static str,
}

const fn bad(name: &'static str, section: &'static str) -> Bad {
    Bad {
        name,
        section,
        self_signed: false,
        key: "leaf.key",
        digest: "sha256",
        serial: "0x5b01",
        days: 365,
        issuer: "ca",
        ours: None,
        pkilint: None,
        why: "",
    }
}

/// The bad set. Where only one linter catches a certificate, `why` says why: pkilint's
/// `lint_pkix_cert` checks RFC 5280 structure one certificate at a time; the crate's lint
/// also knows the zone's profile (S4: TLS server and client), the server's FQDN, the issuer,
/// and the zone's algorithm policy.
const BAD_SET: &[Bad] = &[
    Bad {
        self_signed: true,
        key: "ca.key",
        ours: Some((Rule::CaKeyUsage, Severity::Error)),
        pkilint: Some("pkix.ca_certificate_keycertsign_keyusage_not_set"),
        ..bad("ca_no_keycertsign", "ca_no_keycertsign")
    },
    Bad {
        self_signed: true,
        key: "ca.key",
        ours: Some((Rule::CaBasicConstraintsNotCritical, Severity::Warning)),
        pkilint: Some("pkix.basic_constraints_extension_not_critical"),
        why: "both catch it; the crate calls it a warning to acknowledge, since deployed \
              external roots carry it and chain validation accepts it",
        ..bad("ca_bc_not_critical", "ca_bc_not_critical")
    },
    Bad {
        self_signed: true,
        key: "ca.key",
        ours: Some((Rule::SubjectKeyIdMissing, Severity::Error)),
        pkilint: Some("pkix.certificate_skid_ca_missing"),
        ..bad("ca_no_ski", "ca_no_ski")
    },
    Bad {
        ours: Some((Rule::AuthorityKeyIdMissing, Severity::Error)),
        pkilint: Some("pkix.authority_key_identifier_extension_absent"),
        ..bad("leaf_no_aki", "leaf_no_aki")
    },
    Bad {
        ours: Some((Rule::LeafKeyUsage, Severity::Error)),
        pkilint: Some("pkix.ee_certificate_keycertsign_keyusage_set"),
        ..bad("leaf_keycertsign", "leaf_keycertsign")
    },
    Bad {
        serial: "-5",
        ours: Some((Rule::SerialNotPositive, Severity::Error)),
        pkilint: Some("pkix.certificate_serial_number_out_of_range"),
        ..bad("leaf_serial_negative", "leaf")
    },
    Bad {
        serial: "0",
        ours: Some((Rule::SerialNotPositive, Severity::Error)),
        pkilint: Some("pkix.certificate_serial_number_out_of_range"),
        ..bad("leaf_serial_zero", "leaf")
    },
    Bad {
        serial: "0x7f0102030405060708090a0b0c0d0e0f1011121314",
        ours: Some((Rule::SerialTooLong, Severity::Error)),
        pkilint: Some("pkix.certificate_serial_number_out_of_range"),
        ..bad("leaf_serial_21_octets", "leaf")
    },
    Bad {
        issuer: "ca_other_ski",
        ours: Some((Rule::AuthorityKeyIdMismatch, Severity::Error)),
        pkilint: Some("pkix.issuer_and_subject_key_identifier_not_equal"),
        why: "pkilint sees it only with the issuer: its pair linter \
              (lint_pkix_signer_signee_cert_chain) catches it",
        ..bad("leaf_aki_mismatch", "leaf")
    },
    Bad {
        digest: "sha1",
        ours: Some((Rule::WeakSignatureAlgorithm, Severity::Error)),
        why: "RFC 5280 sets no algorithm policy; pkilint's PKIX linter has none (its CA/B \
              Forum linter does)",
        ..bad("leaf_sha1", "leaf")
    },
    Bad {
        key: "rsa1024.key",
        ours: Some((Rule::RsaKeyTooSmall, Severity::Error)),
        why: "key size is policy, not RFC 5280 structure",
        ..bad("leaf_rsa1024", "leaf")
    },
    Bad {
        days: 7300,
        ours: Some((Rule::OutlivesIssuer, Severity::Error)),
        why: "RFC 5280 does not forbid a certificate outliving its issuer (validation just \
              fails later); pkilint's pair linter does not compare validity",
        ..bad("leaf_outlives_issuer", "leaf")
    },
    Bad {
        ours: Some((Rule::SanMissingFqdn, Severity::Error)),
        why: "pkilint cannot know which server the certificate is for",
        ..bad("leaf_wrong_san", "leaf_wrong_san")
    },
    Bad {
        ours: Some((Rule::LeafExtKeyUsage, Severity::Error)),
        why: "the zone's profile needs clientAuth too (servers are TLS clients of each \
              other, S4); RFC 5280 has no such rule",
        ..bad("leaf_server_auth_only", "leaf_server_only")
    },
    Bad {
        ours: Some((Rule::LeafExtKeyUsageAbsent, Severity::Warning)),
        why: "extendedKeyUsage is optional in RFC 5280; the crate warns (any purpose)",
        ..bad("leaf_no_eku", "leaf_no_eku")
    },
    Bad {
        ours: Some((Rule::LeafBasicConstraints, Severity::Error)),
        why: "RFC 5280 lets an end-entity certificate omit basicConstraints; the zone's \
              profile (S4) requires CA:FALSE",
        ..bad("leaf_no_basic_constraints", "leaf_no_bc")
    },
];

const EXTENSIONS: &str = "\
[ca]
basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
[ca_other_ski]
basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=0102030405060708090A0B0C0D0E0F1011121314
authorityKeyIdentifier=none
[leaf]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=DNS:ps1.zone.example
[ca_no_keycertsign]
basicConstraints=critical,CA:TRUE
keyUsage=critical,cRLSign
subjectKeyIdentifier=hash
[ca_bc_not_critical]
basicConstraints=CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
[ca_no_ski]
basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=none
authorityKeyIdentifier=none
[leaf_no_aki]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=none
subjectAltName=DNS:ps1.zone.example
[leaf_keycertsign]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyCertSign
extendedKeyUsage=serverAuth,clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=DNS:ps1.zone.example
[leaf_no_eku]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=DNS:ps1.zone.example
[leaf_server_only]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=DNS:ps1.zone.example
[leaf_wrong_san]
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=DNS:other.zone.example
[leaf_no_bc]
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=DNS:ps1.zone.example
";

fn openssl(dir: &Path, args: &[&str]) {
    let mut cmd = Command::new("openssl");
    cmd.current_dir(dir).args(args);
    let (ok, out) = run(&mut cmd);
    assert!(ok, "openssl {args:?}: {out}");
}

/// Makes a certificate with openssl: a CSR for `key` and `subject`, then signed by itself or
/// by `ca.pem`/`ca.key` with the extensions of `section`.
#[allow(clippy::too_many_arguments)]
fn make(
    dir: &Path,
    name: &str,
    subject: &str,
    key: &str,
    section: &str,
    self_signed: bool,
    digest: &str,
    serial: &str,
    days: u32,
) -> CertificateDer {
    let csr = format!("{name}.csr");
    let pem = format!("{name}.pem");
    openssl(
        dir,
        &["req", "-new", "-key", key, "-subj", subject, "-out", &csr],
    );
    let days = days.to_string();
    let digest = format!("-{digest}");
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        &csr,
        "-extfile",
        "ext.cnf",
        "-extensions",
        section,
        "-days",
        &days,
        &digest,
        "-set_serial",
        serial,
        "-out",
        &pem,
    ];
    if self_signed {
        args.extend(["-signkey", key]);
    } else {
        args.extend(["-CA", "ca.pem", "-CAkey", "ca.key"]);
    }
    openssl(dir, &args);
    let text = std::fs::read_to_string(dir.join(&pem)).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    CertificateDer::from_vec(base64_decode(&body))
}

/// Standard base64 (the PEM body), without a dependency the crate's tests do not have.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..chunk.len()]);
    }
    out
}

/// The crate's lint of `cert` (DER) under `issuer`, as a server certificate for
/// ps1.zone.example unless it is a CA. A certificate the crate cannot even parse is refused
/// before any lint: that shows as `Err`.
fn ours(cert: &CertificateDer, issuer: &Certificate) -> Result<Vec<Finding>, String> {
    let cert = Certificate::try_from(cert).map_err(|e| e.to_string())?;
    let ca = cert.is_ca() || cert.is_self_signed();
    let chain = if cert.is_self_signed() {
        vec![cert]
    } else {
        vec![cert, issuer.clone()]
    };
    let mut findings = lint_chain(&chain, (!ca).then_some("ps1.zone.example"), false);
    // Only the certificate under test (not its issuer, which has its own row).
    let sha = zonepki::cert::Fingerprint::sha256(chain[0].der().as_bytes()).to_string();
    findings.retain(|f| f.sha256 == sha);
    Ok(findings)
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn the_crates_lint_and_pkilint_agree_on_a_bad_set_b4() {
    common::require("openssl");
    let with_pkilint = pkilint_available();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("ext.cnf"), EXTENSIONS).unwrap();
    for (k, spec) in [
        ("ca.key", "ec_paramgen_curve:P-256"),
        ("leaf.key", "ec_paramgen_curve:P-256"),
    ] {
        openssl(
            dir,
            &["genpkey", "-algorithm", "EC", "-pkeyopt", spec, "-out", k],
        );
    }
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
            "-out",
            "rsa1024.key",
        ],
    );
    let ca = make(
        dir,
        "ca",
        "/CN=Bad Set CA",
        "ca.key",
        "ca",
        true,
        "sha256",
        "0x4a1b",
        3650,
    );
    let other = make(
        dir,
        "ca_other_ski",
        "/CN=Bad Set CA",
        "ca.key",
        "ca_other_ski",
        true,
        "sha256",
        "0x4a1c",
        3650,
    );
    let ca_cert = Certificate::try_from(&ca).unwrap();
    let other_cert = Certificate::try_from(&other).unwrap();
    // The good ones: nothing from either linter.
    let good = make(
        dir,
        "good",
        "/CN=ps1.zone.example",
        "leaf.key",
        "leaf",
        false,
        "sha256",
        "0x5b00",
        365,
    );
    assert_eq!(ours(&ca, &ca_cert).unwrap(), []);
    assert_eq!(ours(&good, &ca_cert).unwrap(), []);
    if with_pkilint {
        assert_eq!(pkilint(dir, "l-ca", &[&ca]).unwrap(), Vec::<String>::new());
        assert_eq!(
            pkilint(dir, "l-good", &[&ca, &good]).unwrap(),
            Vec::<String>::new()
        );
    }
    let mut table = vec![format!(
        "| {:<26} | {:<55} | {:<62} |",
        "certificate", "crate lint", "pkilint (WARNING and above)"
    )];
    for b in BAD_SET {
        let subject = if b.self_signed {
            format!("/CN={}", b.name)
        } else {
            "/CN=ps1.zone.example".to_string()
        };
        let cert = make(
            dir,
            b.name,
            &subject,
            b.key,
            b.section,
            b.self_signed,
            b.digest,
            b.serial,
            b.days,
        );
        let issuer = if b.issuer == "ca" {
            &ca_cert
        } else {
            &other_cert
        };
        let found = ours(&cert, issuer);
        let ours_text = match &found {
            Ok(f) => f
                .iter()
                .map(|f| format!("{} ({})", f.rule, f.severity))
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => format!("refused when parsed: {e}"),
        };
        match (b.ours, &found) {
            (Some((rule, severity)), Ok(f)) => assert!(
                f.iter().any(|f| f.rule == rule && f.severity == severity),
                "{}: the crate's lint must report {rule} ({severity}): {f:?}",
                b.name
            ),
            (Some(_), Err(e)) => panic!("{}: the crate cannot parse it: {e}", b.name),
            (None, _) => unreachable!("every bad certificate is caught by the crate"),
        }
        let theirs = if with_pkilint {
            let pair = b.issuer != "ca";
            let issuer_der = issuer.der().clone();
            let certs: Vec<&CertificateDer> = if pair {
                vec![&issuer_der, &cert]
            } else {
                vec![&cert]
            };
            let found = pkilint(dir, &format!("l-{}", b.name), &certs).unwrap();
            match b.pkilint {
                Some(code) => assert!(
                    found.iter().any(|f| f.starts_with(code)),
                    "{}: pkilint must report {code}: {found:?}",
                    b.name
                ),
                None => assert!(
                    found.is_empty(),
                    "{}: pkilint now reports {found:?}; the explanation ({}) is out of date",
                    b.name,
                    b.why
                ),
            }
            if found.is_empty() {
                "-".to_string()
            } else {
                found.join(", ")
            }
        } else {
            "(not installed)".to_string()
        };
        table.push(format!(
            "| {:<26} | {:<55} | {:<62} |",
            b.name, ours_text, theirs
        ));
    }
    // The table the report shows (`cargo test --test lint -- --nocapture`).
    println!("{}", table.join("\n"));
}

/// DER length octets (short form, or long form with two octets).
fn der_len(n: usize) -> Vec<u8> {
    match n {
        0..=0x7f => vec![n as u8],
        0x80..=0xff => vec![0x81, n as u8],
        _ => vec![0x82, (n >> 8) as u8, n as u8],
    }
}

/// A crate-made CA certificate re-encoded with its notAfter (2032, a UTCTime) as a
/// GeneralizedTime, and signed again with its key: what x509-cert's RFC 5280 profile
/// never encodes, so it is built by hand.
fn generalized_time_before_2050() -> Certificate {
    let key = PrivateKey::generate(KeySpec::P256).unwrap();
    let params = CaParams {
        common_name: "Wrong Time".into(),
        validity: 5.try_into().unwrap(),
    };
    let now: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
    let good = self_signed_ca(&key, &params, &Serial::random().unwrap(), now).unwrap();
    let tbs = good.tbs_der();
    let utc = [&[0x17u8, 0x0d][..], b"320101000000Z"].concat();
    let generalized = [&[0x18u8, 0x0f][..], b"20320101000000Z"].concat();
    let at = tbs.windows(utc.len()).position(|w| w == utc).unwrap();
    // Validity is SEQUENCE { notBefore (15 octets), notAfter }: its header is just before.
    let validity_at = at - 15 - 2;
    assert_eq!(tbs[validity_at..validity_at + 2], [0x30, 30]);
    let mut body = tbs[tbs.len() - tbs_body_len(tbs)..].to_vec();
    let offset = tbs.len() - body.len();
    let (v, a) = (validity_at - offset, at - offset);
    body.splice(a..a + utc.len(), generalized);
    body[v + 1] = 32;
    let mut new_tbs = vec![0x30];
    new_tbs.extend(der_len(body.len()));
    new_tbs.extend(body);
    let sig = key.sign(&new_tbs).unwrap();
    let mut cert_body = new_tbs;
    cert_body.extend(good.signature_algorithm().to_der().unwrap());
    cert_body.extend(
        der::asn1::BitString::from_bytes(&sig)
            .unwrap()
            .to_der()
            .unwrap(),
    );
    let mut der = vec![0x30];
    der.extend(der_len(cert_body.len()));
    der.extend(cert_body);
    Certificate::from_der(&der).unwrap()
}

/// The length of a DER SEQUENCE's contents.
fn tbs_body_len(seq: &[u8]) -> usize {
    match seq[1] {
        n if n < 0x80 => n as usize,
        0x81 => seq[2] as usize,
        _ => (usize::from(seq[2]) << 8) | usize::from(seq[3]),
    }
}

/// RFC 5280 4.1.2.5: a notAfter before 2050 encoded as GeneralizedTime (x509-cert's RFC 5280
/// profile never encodes one, so it is built by hand and signed again). Both linters catch it.
#[test]
fn a_generalized_time_before_2050_is_caught_by_both_linters_b4() {
    let cert = generalized_time_before_2050();
    let found = lint_certificate(
        &cert,
        Context {
            role: CertRole::Ca,
            issuer: Some(&cert),
            fqdn: None,
            external: true,
        },
    );
    assert!(matches!(
        cert.x509().tbs_certificate().validity().not_after,
        x509_cert::time::Time::GeneralTime(_)
    ));
    assert!(cert.is_self_signed(), "signed again with its key");
    assert_eq!(
        found.iter().map(|f| f.rule).collect::<Vec<_>>(),
        [Rule::ValidityEncoding]
    );
    assert!(
        found[0]
            .detail
            .contains("notAfter (2032) is encoded as GeneralizedTime"),
        "{}",
        found[0]
    );
    let dir = tempfile::tempdir().unwrap();
    if let Some(theirs) = pkilint(dir.path(), "gt", &[cert.der()]) {
        assert!(
            theirs
                .iter()
                .any(|f| f.starts_with("pkix.wrong_time_useful_type")),
            "pkilint must catch it too: {theirs:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Refusals: typed, and nothing changes.

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn an_external_root_that_fails_the_lint_is_refused_and_the_store_is_unchanged_b4() {
    common::require("openssl");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("ext.cnf"), EXTENSIONS).unwrap();
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ca.key",
        ],
    );
    // A root without a subjectKeyIdentifier (RFC 5280 4.2.1.2: a CA must carry one).
    let root = make(
        dir,
        "root",
        "/CN=Root Without SKI",
        "ca.key",
        "ca_no_ski",
        true,
        "sha256",
        "0x77",
        3650,
    );
    let sim = Sim::new(1);
    let before = sim.svc.dump().unwrap();
    let e = sim
        .svc
        .start_change_ca(
            ChangeCaRequest::new(
                ChangeCaTarget::External {
                    chain: root.to_pem().into_bytes(),
                    csr: CsrMode::Manual,
                },
                ActivationRequest::At(sim::t("2027-01-10T00:00:00Z")),
            )
            // An error cannot be acknowledged away.
            .with_acknowledge(vec![Rule::SubjectKeyIdMissing]),
        )
        .unwrap_err();
    let zonepki::Error::Lint(lint) = &e else {
        panic!("a lint error: {e}")
    };
    assert_eq!(lint.findings[0].rule, Rule::SubjectKeyIdMissing);
    assert_eq!(lint.findings[0].subject, "CN=Root Without SKI");
    let text = e.to_string();
    assert!(text.contains("subject_key_id_missing"), "{text}");
    assert!(text.contains("pre-flight lint"), "{text}");
    assert_eq!(
        sim.svc.dump().unwrap(),
        before,
        "a refused command changes nothing"
    );
}
