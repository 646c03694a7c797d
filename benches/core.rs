//! Core benchmarks: each zonepki operation beside the raw primitive it wraps, measured in the
//! same run on the same inputs (issue: "overhead is a ratio from one run").
//!
//! | group        | `zonepki`                                  | `raw`                   | target |
//! |--------------|--------------------------------------------|-------------------------|--------|
//! | `cert_view`  | `Certificate::from_der` + `fingerprints()` | x509-cert decode + hash | 1.3    |
//! | `issue_p256` | `issue_server_certificate`                 | x509-cert build + sign  | 1.15   |
//! | `chain_p256` | `verify_chain` (CA -> leaf)                | 2 ECDSA P-256 verifies  | 1.1    |
//!
//! Run: `cargo bench --bench core`, then `python3 benches/ratios.py` for the table.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::str::FromStr;
use std::time::Duration;

use criterion::{
    BenchmarkGroup, Criterion, criterion_group, criterion_main, measurement::WallTime,
};
use der::asn1::{Ia5String, ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use md5::Md5;
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::DecodePrivateKey;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use spki::SubjectPublicKeyInfoRef;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use zonepki::ca::{CaParams, Serial, ServerProfile, issue_server_certificate, self_signed_ca};
use zonepki::cert::Certificate;
use zonepki::chain::verify_chain;
use zonepki::clock::Timestamp;
use zonepki::csr::{CsrRequest, VerifiedCsr, build_csr};
use zonepki::key::{KeySpec, PrivateKey};

const FQDN: &str = "ps1.zone.example";
const ALIAS: &str = "alias.zone.example";

/// One zone: a P-256 CA, a verified P-256 CSR and a server certificate issued from it.
struct Fixture {
    now: Timestamp,
    ca_key: PrivateKey,
    ca: Certificate,
    csr: VerifiedCsr,
    profile: ServerProfile,
    serial: Serial,
    leaf: Certificate,
}

fn fixture() -> Fixture {
    let ca_key = PrivateKey::generate(KeySpec::P256).unwrap();
    let ca_from: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
    let params = CaParams {
        common_name: "zone.example".into(),
        validity: 5.try_into().unwrap(),
    };
    let ca = self_signed_ca(&ca_key, &params, &Serial::random().unwrap(), ca_from).unwrap();
    let server_key = PrivateKey::generate(KeySpec::P256).unwrap();
    let csr_der = build_csr(&CsrRequest::default_for(FQDN), &server_key).unwrap();
    let csr = VerifiedCsr::from_der(csr_der.as_bytes()).unwrap();
    let profile = ServerProfile {
        fqdn: FQDN.into(),
        dns_names: vec![ALIAS.into()],
        include_dns: true,
        ..Default::default()
    };
    let now: Timestamp = "2027-06-01T00:00:00Z".parse().unwrap();
    let serial = Serial::random().unwrap();
    let leaf = issue_server_certificate(&ca, &ca_key, &csr, &profile, &serial, now).unwrap();
    Fixture {
        now,
        ca_key,
        ca,
        csr,
        profile,
        serial,
        leaf,
    }
}

/// Criterion defaults, shortened for a 2-core CI machine.
fn configure(g: &mut BenchmarkGroup<'_, WallTime>) {
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(50);
}

// ---------------------------------------------------------------------------------------------
// 1. cert_view: parse + three fingerprints.

fn cert_view(c: &mut Criterion, fx: &Fixture) {
    let der = fx.leaf.der().as_bytes().to_vec();
    let mut g = c.benchmark_group("cert_view");
    configure(&mut g);
    g.bench_function("zonepki", |b| {
        b.iter(|| {
            let cert = Certificate::from_der(black_box(&der)).unwrap();
            let fp = cert.fingerprints();
            black_box((cert, fp))
        })
    });
    g.bench_function("raw", |b| {
        b.iter(|| {
            let der = black_box(&der[..]);
            let cert = x509_cert::Certificate::from_der(der).unwrap();
            let fp = (Md5::digest(der), Sha1::digest(der), Sha256::digest(der));
            black_box((cert, fp))
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// 2. issue_p256: a P-256 server certificate, build + sign + encode.

const KP_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const KP_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");

fn raw_ext<T: Encode>(oid: ObjectIdentifier, critical: bool, v: &T) -> Extension {
    Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(v.to_der().unwrap()).unwrap(),
    }
}

/// The server profile zonepki issues (S4), written directly against x509-cert: SKI, AKI,
/// basicConstraints CA:FALSE (critical), keyUsage digitalSignature (critical), EKU serverAuth +
/// clientAuth, SAN. Key identifiers are computed from the keys the builder hands over.
struct RawServerProfile {
    subject: Name,
    issuer: Name,
    san: Vec<GeneralName>,
}

impl BuilderProfile for RawServerProfile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        issuer_spk: SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        let aki = AuthorityKeyIdentifier::try_from(issuer_spk)?;
        let bc = BasicConstraints {
            ca: false,
            path_len_constraint: None,
        };
        let ku = KeyUsage(KeyUsages::DigitalSignature.into());
        let eku = ExtendedKeyUsage(vec![KP_SERVER_AUTH, KP_CLIENT_AUTH]);
        let san = SubjectAltName(self.san.clone());
        Ok(vec![
            raw_ext(ObjectIdentifier::new_unwrap("2.5.29.14"), false, &ski),
            raw_ext(ObjectIdentifier::new_unwrap("2.5.29.35"), false, &aki),
            raw_ext(ObjectIdentifier::new_unwrap("2.5.29.19"), true, &bc),
            raw_ext(ObjectIdentifier::new_unwrap("2.5.29.15"), true, &ku),
            raw_ext(ObjectIdentifier::new_unwrap("2.5.29.37"), false, &eku),
            raw_ext(ObjectIdentifier::new_unwrap("2.5.29.17"), false, &san),
        ])
    }
}

/// Inputs the raw issuer starts from, prepared once (as zonepki's are: parsed CA certificate,
/// loaded key, verified CSR, serial).
struct RawIssuer {
    signing_key: p256::ecdsa::SigningKey,
    issuer: Name,
    subject_key: spki::SubjectPublicKeyInfoOwned,
    serial: [u8; 16],
    not_before: Time,
    not_after: Time,
}

fn raw_issue(r: &RawIssuer) -> Vec<u8> {
    // Same work as an issuer: names and SANs from the profile's strings, validity, extensions,
    // TBS encoding, ECDSA signature, certificate encoding.
    let subject = Name::from_str(&format!("CN={FQDN}")).unwrap();
    let san = [FQDN, ALIAS]
        .iter()
        .map(|n| GeneralName::DnsName(Ia5String::new(n).unwrap()))
        .collect();
    let profile = RawServerProfile {
        subject,
        issuer: r.issuer.clone(),
        san,
    };
    let serial = SerialNumber::new(&r.serial).unwrap();
    let validity = Validity::new(r.not_before, r.not_after);
    let builder =
        CertificateBuilder::new(profile, serial, validity, r.subject_key.clone()).unwrap();
    let cert = builder
        .build::<_, p256::ecdsa::DerSignature>(&r.signing_key)
        .unwrap();
    cert.to_der().unwrap()
}

fn issue_p256(c: &mut Criterion, fx: &Fixture) {
    let ca_x509 = fx.ca.x509().tbs_certificate();
    let raw = RawIssuer {
        signing_key: p256::ecdsa::SigningKey::from_pkcs8_der(&fx.ca_key.to_pkcs8_der()).unwrap(),
        issuer: ca_x509.subject().clone(),
        subject_key: fx.csr.public_key().clone(),
        serial: *fx.serial.as_bytes(),
        not_before: fx.leaf.x509().tbs_certificate().validity().not_before,
        not_after: ca_x509.validity().not_after,
    };
    // Equivalence: ECDSA here is deterministic (RFC 6979), so with the same serial and times the
    // raw path must produce the very certificate zonepki issues, byte for byte.
    let zonepki =
        issue_server_certificate(&fx.ca, &fx.ca_key, &fx.csr, &fx.profile, &fx.serial, fx.now)
            .unwrap();
    assert_eq!(
        raw_issue(&raw),
        zonepki.der().as_bytes(),
        "raw and zonepki profiles differ"
    );

    let mut g = c.benchmark_group("issue_p256");
    configure(&mut g);
    // The serial is generated once, outside the timed loop, on both sides.
    g.bench_function("zonepki", |b| {
        b.iter(|| {
            issue_server_certificate(
                black_box(&fx.ca),
                &fx.ca_key,
                black_box(&fx.csr),
                black_box(&fx.profile),
                black_box(&fx.serial),
                fx.now,
            )
            .unwrap()
        })
    });
    g.bench_function("raw", |b| b.iter(|| raw_issue(black_box(&raw))));
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. chain_p256: CA -> leaf validation.

/// One signature as a raw verifier sees it: the signer's key, the signed bytes, the DER
/// `Ecdsa-Sig-Value`. The key is decoded once, outside the timed loop (the cheapest baseline);
/// zonepki decodes it from the SPKI on every call.
struct RawSig<'a> {
    key: p256::ecdsa::VerifyingKey,
    tbs: &'a [u8],
    sig: &'a [u8],
}

fn raw_sig<'a>(signer: &Certificate, signed: &'a Certificate) -> RawSig<'a> {
    let point = signer.public_key().subject_public_key.as_bytes().unwrap();
    RawSig {
        key: p256::ecdsa::VerifyingKey::from_sec1_bytes(point).unwrap(),
        tbs: signed.tbs_der(),
        sig: signed.signature().unwrap(),
    }
}

fn raw_verify(s: &RawSig<'_>) {
    // DER signature parsing, SHA-256 of the TBS bytes (inside `verify`), ECDSA verification.
    let sig = p256::ecdsa::Signature::from_der(s.sig).unwrap();
    s.key.verify(s.tbs, &sig).unwrap();
}

fn chain_p256(c: &mut Criterion, fx: &Fixture) {
    let anchors = [fx.ca.clone()];
    // The baseline the issue defines: two raw verifications, the leaf's signature under the CA
    // key and the CA's self-signature under its own key. NOTE: `verify_chain` verifies only the
    // leaf's signature; a trust anchor's self-signature is never checked (src/chain.rs, "Trust
    // anchors"). So zonepki does ONE ECDSA verification where the baseline does two, plus the
    // RFC 5280 structure checks on both certificates. `raw_leaf_only` (one verification) is
    // measured as well, to show verify_chain's overhead over the crypto it actually does.
    let leaf_sig = raw_sig(&fx.ca, &fx.leaf);
    let ca_sig = raw_sig(&fx.ca, &fx.ca);
    raw_verify(&leaf_sig);
    raw_verify(&ca_sig);
    verify_chain(&fx.leaf, &[], &anchors, fx.now).unwrap();

    let mut g = c.benchmark_group("chain_p256");
    configure(&mut g);
    g.bench_function("zonepki", |b| {
        b.iter(|| verify_chain(black_box(&fx.leaf), &[], black_box(&anchors), fx.now).unwrap())
    });
    g.bench_function("raw", |b| {
        b.iter(|| {
            raw_verify(black_box(&leaf_sig));
            raw_verify(black_box(&ca_sig));
        })
    });
    g.bench_function("raw_leaf_only", |b| {
        b.iter(|| raw_verify(black_box(&leaf_sig)))
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let fx = fixture();
    cert_view(c, &fx);
    issue_p256(c, &fx);
    chain_p256(c, &fx);
}

criterion_group!(core, benches);
criterion_main!(core);
