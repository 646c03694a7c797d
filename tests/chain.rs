//! Targeted tests of the chain validator (REQUIREMENTS.md S7, CE3): every certificate is built
//! here with x509-cert's builder and fresh P-256 keys, at fixed epochs; the same chains go
//! through `openssl verify -x509_strict` to check that both agree.

use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use der::asn1::{ObjectIdentifier, OctetString, UtcTime};
use der::{Decode, Encode};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use sha1::Digest;
use signature::Keypair;
use signature::hazmat::PrehashSigner;
use spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey,
    SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef,
};
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use zonepki::cert::Certificate;
use zonepki::chain::{
    ChainError, Limits, NO_ISSUER_MESSAGE, Role, verify_chain, verify_chain_with,
};
use zonepki::clock::Timestamp;
use zonepki::key::SignatureError;

/// The validation time of every test: 2030-03-17T17:46:40Z.
const AT: i64 = 1_900_000_000;
const DAY: i64 = 86_400;
const ECDSA_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.1");
const UNKNOWN_EXT: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.55738.666.1");

fn at() -> Timestamp {
    Timestamp::from_unix(AT).expect("a valid time")
}

fn new_key() -> SigningKey {
    use p256::elliptic_curve::Generate;
    SigningKey::generate_from_rng(&mut rand_core::UnwrapErr(getrandom::SysRng))
}

fn spki_of(key: &SigningKey) -> SubjectPublicKeyInfoOwned {
    let der = key
        .verifying_key()
        .to_public_key_der()
        .expect("a P-256 key encodes");
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).expect("an SPKI decodes")
}

/// What a test certificate looks like; [`Spec::ca`] and [`Spec::leaf`] give the usual profiles.
#[derive(Clone)]
struct Spec {
    subject: String,
    /// Validity relative to [`AT`], in seconds.
    not_before: i64,
    not_after: i64,
    /// basicConstraints (always critical): `(cA, pathLenConstraint)`.
    basic_constraints: Option<(bool, Option<u8>)>,
    key_usage: Option<KeyUsage>,
    /// An unknown critical extension.
    unknown_critical: bool,
    /// Sign with ECDSA-SHA1 instead of ECDSA-SHA256.
    sha1: bool,
}

impl Spec {
    fn ca(subject: &str) -> Self {
        Spec {
            subject: subject.to_string(),
            not_before: -365 * DAY,
            not_after: 3650 * DAY,
            basic_constraints: Some((true, None)),
            key_usage: Some(KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)),
            unknown_critical: false,
            sha1: false,
        }
    }

    fn leaf(subject: &str) -> Self {
        Spec {
            basic_constraints: Some((false, None)),
            key_usage: Some(KeyUsage(KeyUsages::DigitalSignature.into())),
            not_after: 365 * DAY,
            ..Spec::ca(subject)
        }
    }

    fn path_len(mut self, n: u8) -> Self {
        self.basic_constraints = Some((true, Some(n)));
        self
    }

    fn valid(mut self, not_before: i64, not_after: i64) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }
}

/// x509-cert builder profile that emits exactly the extensions of a [`Spec`], plus SKI and AKI
/// derived from the keys (RFC 5280 4.2.1.1, 4.2.1.2; `openssl verify -x509_strict` wants them).
struct Profile {
    subject: Name,
    issuer: Name,
    spec: Spec,
}

impl BuilderProfile for Profile {
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
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let mut exts = Vec::new();
        let subject = &tbs.subject();
        if let Some((ca, path_len_constraint)) = self.spec.basic_constraints {
            let mut ext = BasicConstraints {
                ca,
                path_len_constraint,
            }
            .to_extension(subject, &exts)?;
            ext.critical = true;
            exts.push(ext);
        }
        if let Some(usages) = self.spec.key_usage {
            exts.push(usages.to_extension(subject, &exts)?);
        }
        exts.push(SubjectKeyIdentifier::try_from(spk)?.to_extension(subject, &exts)?);
        let aki = AuthorityKeyIdentifier {
            key_identifier: Some(SubjectKeyIdentifier::try_from(issuer_spk)?.0),
            ..Default::default()
        };
        exts.push(aki.to_extension(subject, &exts)?);
        if self.spec.unknown_critical {
            exts.push(Extension {
                extn_id: UNKNOWN_EXT,
                critical: true,
                extn_value: OctetString::new(vec![0x05, 0x00])?,
            });
        }
        Ok(exts)
    }
}

/// Signs with ECDSA-SHA1, which the validator must refuse (S7).
struct Sha1Signer<'a>(&'a SigningKey);

impl Keypair for Sha1Signer<'_> {
    type VerifyingKey = VerifyingKey;
    fn verifying_key(&self) -> VerifyingKey {
        *self.0.verifying_key()
    }
}

impl DynSignatureAlgorithmIdentifier for Sha1Signer<'_> {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        Ok(AlgorithmIdentifierOwned {
            oid: ECDSA_SHA1,
            parameters: None,
        })
    }
}

impl signature::Signer<DerSignature> for Sha1Signer<'_> {
    fn try_sign(&self, msg: &[u8]) -> Result<DerSignature, signature::Error> {
        let sig: p256::ecdsa::Signature = self.0.sign_prehash(&sha1::Sha1::digest(msg))?;
        Ok(sig.to_der())
    }
}

/// A test CA or leaf: its certificate and its key.
struct Issued {
    cert: Certificate,
    key: SigningKey,
}

/// Issues a certificate for `spec` with a fresh key, signed by `issuer` (self-signed if `None`).
fn issue(spec: &Spec, issuer: Option<&Issued>) -> Issued {
    issue_with_key(spec, new_key(), issuer)
}

fn issue_with_key(spec: &Spec, key: SigningKey, issuer: Option<&Issued>) -> Issued {
    let subject = Name::from_str(&spec.subject).expect("a valid RFC 4514 name");
    let issuer_name = issuer.map_or(subject.clone(), |i| i.cert.subject_name().clone());
    let signer = issuer.map_or(&key, |i| &i.key);
    let time = |offset: i64| {
        let secs = u64::try_from(AT + offset).expect("after 1970");
        Time::UtcTime(UtcTime::from_unix_duration(Duration::from_secs(secs)).expect("before 2050"))
    };
    let validity = Validity::new(time(spec.not_before), time(spec.not_after));
    let serial = SerialNumber::generate(&mut rand_core::UnwrapErr(getrandom::SysRng));
    let profile = Profile {
        subject,
        issuer: issuer_name,
        spec: spec.clone(),
    };
    let builder =
        CertificateBuilder::new(profile, serial, validity, spki_of(&key)).expect("a builder");
    let cert = if spec.sha1 {
        builder.build::<_, DerSignature>(&Sha1Signer(signer))
    } else {
        builder.build::<_, DerSignature>(signer)
    }
    .expect("signing works");
    let der = cert.to_der().expect("a certificate encodes");
    Issued {
        cert: Certificate::from_der(&der).expect("our certificate parses"),
        key,
    }
}

/// root -> "CN=Zone Intermediate" -> "CN=server.zone.example", the usual shape.
struct Chain {
    root: Issued,
    int: Issued,
    leaf: Issued,
}

fn chain_with(root: &Spec, int: &Spec, leaf: &Spec) -> Chain {
    let root = issue(root, None);
    let int = issue(int, Some(&root));
    let leaf = issue(leaf, Some(&int));
    Chain { root, int, leaf }
}

fn standard_chain() -> Chain {
    chain_with(
        &Spec::ca("CN=Zone Root,O=Example"),
        &Spec::ca("CN=Zone Intermediate,O=Example"),
        &Spec::leaf("CN=server.zone.example"),
    )
}

impl Chain {
    fn verify(&self) -> Result<zonepki::chain::VerifiedChain, ChainError> {
        verify_chain(
            &self.leaf.cert,
            std::slice::from_ref(&self.int.cert),
            std::slice::from_ref(&self.root.cert),
            at(),
        )
    }
}

#[test]
fn root_intermediate_leaf_validates() {
    let c = standard_chain();
    let verified = c.verify().expect("a valid chain");
    assert_eq!(
        verified.subjects(),
        [
            "CN=server.zone.example",
            "CN=Zone Intermediate,O=Example",
            "CN=Zone Root,O=Example"
        ]
    );
    assert_eq!(verified.path().len(), 3);
    assert_eq!(verified.leaf(), &c.leaf.cert);
    assert_eq!(verified.anchor(), &c.root.cert);
}

#[test]
fn leaf_signed_by_anchor_directly_and_extra_intermediates_ignored() {
    let root = issue(&Spec::ca("CN=Zone Root"), None);
    let leaf = issue(&Spec::leaf("CN=server"), Some(&root));
    let unrelated = issue(&Spec::ca("CN=Other CA"), None);
    let verified = verify_chain(&leaf.cert, &[unrelated.cert], &[root.cert], at()).expect("valid");
    assert_eq!(verified.subjects(), ["CN=server", "CN=Zone Root"]);
}

#[test]
fn validity_bounds_are_inclusive() {
    let c = chain_with(
        &Spec::ca("CN=Root"),
        &Spec::ca("CN=Int"),
        &Spec::leaf("CN=leaf").valid(-10, 10),
    );
    for t in [AT - 10, AT + 10] {
        let t = Timestamp::from_unix(t).expect("a time");
        verify_chain(
            &c.leaf.cert,
            std::slice::from_ref(&c.int.cert),
            std::slice::from_ref(&c.root.cert),
            t,
        )
        .expect("notBefore and notAfter are inclusive (RFC 5280 4.1.2.5)");
    }
}

#[test]
fn expired_certificates_are_named() {
    let expired = |spec: Spec| spec.valid(-30 * DAY, -DAY);
    let cases = [
        (
            Role::Leaf,
            "CN=leaf",
            standard_leaf_expired(expired(Spec::leaf("CN=leaf"))),
        ),
        (
            Role::Intermediate,
            "CN=Int",
            chain_with(
                &Spec::ca("CN=Root"),
                &expired(Spec::ca("CN=Int")),
                &Spec::leaf("CN=l"),
            ),
        ),
        (
            Role::Anchor,
            "CN=Root",
            chain_with(
                &expired(Spec::ca("CN=Root")),
                &Spec::ca("CN=Int"),
                &Spec::leaf("CN=l"),
            ),
        ),
    ];
    for (role, subject, chain) in cases {
        let err = chain.verify().expect_err("an expired certificate fails");
        let ChainError::Expired {
            role: r,
            subject: s,
            not_after,
            at: when,
        } = &err
        else {
            panic!("expected Expired for the {role}, got {err:?}");
        };
        assert_eq!((*r, s.as_str()), (role, subject), "{err}");
        assert_eq!(not_after.unix(), AT - DAY);
        assert_eq!(*when, at());
        let shown = err.to_string();
        assert!(
            shown.contains(subject) && shown.contains("expired"),
            "{shown}"
        );
    }
}

fn standard_leaf_expired(leaf: Spec) -> Chain {
    chain_with(&Spec::ca("CN=Root"), &Spec::ca("CN=Int"), &leaf)
}

#[test]
fn not_yet_valid_leaf() {
    let c = standard_leaf_expired(Spec::leaf("CN=early").valid(DAY, 30 * DAY));
    let err = c.verify().expect_err("not yet valid");
    assert!(
        matches!(&err, ChainError::NotYetValid { role: Role::Leaf, not_before, .. }
            if not_before.unix() == AT + DAY),
        "{err:?}"
    );
}

#[test]
fn wrong_issuer_gives_the_manuals_sentence() {
    let c = standard_chain();
    let other_root = issue(&Spec::ca("CN=Another Root"), None);
    let err = verify_chain(
        &c.leaf.cert,
        std::slice::from_ref(&c.int.cert),
        &[other_root.cert],
        at(),
    )
    .expect_err("the chain does not reach the anchor");
    assert!(matches!(&err, ChainError::NoIssuer { .. }), "{err:?}");
    let shown = err.to_string();
    assert_eq!(
        NO_ISSUER_MESSAGE,
        "CA certificate subject from the CA Certificate chain does not match server certificate \
         issuer."
    );
    let details = shown
        .strip_prefix(NO_ISSUER_MESSAGE)
        .expect("starts with the manual's text");
    assert!(
        details.starts_with(" (") && details.ends_with(')'),
        "{shown}"
    );
    assert!(
        details.contains("CN=Zone Root,O=Example"),
        "names the issuer sought: {shown}"
    );

    // Missing intermediate: same sentence, naming the intermediate sought.
    let err = verify_chain(&c.leaf.cert, &[], std::slice::from_ref(&c.root.cert), at())
        .expect_err("missing");
    assert!(err.to_string().starts_with(NO_ISSUER_MESSAGE), "{err}");
    assert!(
        err.to_string().contains("CN=Zone Intermediate,O=Example"),
        "{err}"
    );
}

#[test]
fn bad_signature_is_refused() {
    let c = standard_chain();
    let mut der = c.leaf.cert.der().as_bytes().to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01; // inside the signature's `s`
    let tampered = Certificate::from_der(&der).expect("still parses");
    let err = verify_chain(
        &tampered,
        std::slice::from_ref(&c.int.cert),
        std::slice::from_ref(&c.root.cert),
        at(),
    )
    .expect_err("tampered signature");
    assert!(
        matches!(&err, ChainError::BadSignature { subject, issuer, source: SignatureError::Invalid }
            if subject == "CN=server.zone.example" && issuer == "CN=Zone Intermediate,O=Example"),
        "{err:?}"
    );
}

#[test]
fn intermediate_that_is_not_a_ca_is_refused() {
    let mut not_ca = Spec::ca("CN=Int");
    not_ca.basic_constraints = Some((false, None));
    let c = chain_with(&Spec::ca("CN=Root"), &not_ca, &Spec::leaf("CN=l"));
    let err = c.verify().expect_err("CA:FALSE intermediate");
    assert!(
        matches!(
            &err,
            ChainError::NotCa {
                role: Role::Intermediate,
                ..
            }
        ),
        "{err:?}"
    );

    let mut no_bc = Spec::ca("CN=Int");
    no_bc.basic_constraints = None;
    let c = chain_with(&Spec::ca("CN=Root"), &no_bc, &Spec::leaf("CN=l"));
    let err = c
        .verify()
        .expect_err("intermediate without basicConstraints");
    assert!(
        matches!(
            &err,
            ChainError::NotCa {
                role: Role::Intermediate,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn anchor_that_is_not_a_ca_is_refused() {
    let mut not_ca = Spec::ca("CN=Root");
    not_ca.basic_constraints = None;
    let c = chain_with(&not_ca, &Spec::ca("CN=Int"), &Spec::leaf("CN=l"));
    let err = c.verify().expect_err("anchor without basicConstraints");
    assert!(
        matches!(
            &err,
            ChainError::NotCa {
                role: Role::Anchor,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn path_len_is_enforced_and_leaf_not_counted() {
    let root = issue(&Spec::ca("CN=Root"), None);
    let int1 = issue(&Spec::ca("CN=Int1").path_len(0), Some(&root));
    let int2 = issue(&Spec::ca("CN=Int2"), Some(&int1));
    let leaf = issue(&Spec::leaf("CN=l"), Some(&int2));
    let err = verify_chain(
        &leaf.cert,
        &[int1.cert.clone(), int2.cert],
        std::slice::from_ref(&root.cert),
        at(),
    )
    .expect_err("pathLen 0 followed by another CA");
    assert!(
        matches!(&err, ChainError::PathLenExceeded { subject, path_len: 0, intermediates: 1, .. }
            if subject == "CN=Int1"),
        "{err:?}"
    );
    // RFC 5280 4.2.1.9: the leaf is not counted, so pathLen 0 directly above a leaf is fine.
    let leaf = issue(&Spec::leaf("CN=l"), Some(&int1));
    verify_chain(&leaf.cert, &[int1.cert], &[root.cert], at()).expect("pathLen 0 above a leaf");
}

#[test]
fn issuer_key_usage_without_key_cert_sign_is_refused() {
    let mut int = Spec::ca("CN=Int");
    int.key_usage = Some(KeyUsage(KeyUsages::DigitalSignature | KeyUsages::CRLSign));
    let c = chain_with(&Spec::ca("CN=Root"), &int, &Spec::leaf("CN=l"));
    let err = c.verify().expect_err("no keyCertSign");
    assert!(
        matches!(
            &err,
            ChainError::KeyCertSignMissing {
                role: Role::Intermediate,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn unknown_critical_extension_is_refused() {
    let mut int = Spec::ca("CN=Int");
    int.unknown_critical = true;
    let c = chain_with(&Spec::ca("CN=Root"), &int, &Spec::leaf("CN=l"));
    let err = c
        .verify()
        .expect_err("unknown critical extension on the intermediate");
    assert!(
        matches!(&err, ChainError::UnsupportedCriticalExtension {
            role: Role::Intermediate, oid, ..
        } if *oid == UNKNOWN_EXT),
        "{err:?}"
    );
    let mut leaf = Spec::leaf("CN=l");
    leaf.unknown_critical = true;
    let err = standard_leaf_expired(leaf)
        .verify()
        .expect_err("on the leaf");
    assert!(
        matches!(
            &err,
            ChainError::UnsupportedCriticalExtension {
                role: Role::Leaf,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("1.3.6.1.4.1.55738.666.1"), "{err}");
}

#[test]
fn sha1_signature_is_refused() {
    let mut leaf = Spec::leaf("CN=old");
    leaf.sha1 = true;
    let err = standard_leaf_expired(leaf)
        .verify()
        .expect_err("SHA-1 refused (S7)");
    assert!(
        matches!(&err, ChainError::WeakSignatureAlgorithm { subject, oid }
            if subject == "CN=old" && *oid == ECDSA_SHA1),
        "{err:?}"
    );
}

#[test]
fn leaf_in_the_anchor_set_is_accepted() {
    let pinned = issue(&Spec::leaf("CN=pinned"), None);
    let verified =
        verify_chain(&pinned.cert, &[], std::slice::from_ref(&pinned.cert), at()).expect("pinned");
    assert_eq!(verified.path().len(), 1);
    assert_eq!(verified.leaf(), verified.anchor());
}

#[test]
fn a_ca_may_be_the_leaf() {
    // A subordinate zone CA checked against its root (RFC 5280 makes no rule about the last
    // certificate; x509-limbo rfc5280::ca-as-leaf).
    let c = standard_chain();
    let verified =
        verify_chain(&c.int.cert, &[], std::slice::from_ref(&c.root.cert), at()).expect("CA leaf");
    assert_eq!(
        verified.subjects(),
        ["CN=Zone Intermediate,O=Example", "CN=Zone Root,O=Example"]
    );
}

#[test]
fn backtracks_past_an_expired_intermediate_to_its_renewal() {
    // The same CA (same name, same key) twice: the expired certificate comes first in the
    // input and carries the right AKI/SKI, so it is tried first and must be backtracked over.
    let root = issue(&Spec::ca("CN=Root"), None);
    let old = issue(&Spec::ca("CN=Int").valid(-3650 * DAY, -DAY), Some(&root));
    let renewed = issue_with_key(&Spec::ca("CN=Int"), old.key.clone(), Some(&root));
    let leaf = issue(&Spec::leaf("CN=l"), Some(&old));
    let verified = verify_chain(
        &leaf.cert,
        &[old.cert.clone(), renewed.cert.clone()],
        &[root.cert],
        at(),
    )
    .expect("the renewed intermediate works");
    assert_eq!(verified.path()[1], renewed.cert);
}

#[test]
fn max_depth_is_honoured() {
    let root = issue(&Spec::ca("CN=Root"), None);
    let mut issuer = root;
    let mut ints = Vec::new();
    let root_cert = issuer.cert.clone();
    for i in 0..3 {
        let int = issue(&Spec::ca(&format!("CN=Int{i}")), Some(&issuer));
        ints.push(int.cert.clone());
        issuer = int;
    }
    let leaf = issue(&Spec::leaf("CN=l"), Some(&issuer));
    let anchors = [root_cert];
    let limits = |max_depth| Limits {
        max_depth,
        ..Limits::default()
    };
    verify_chain_with(&leaf.cert, &ints, &anchors, at(), limits(3)).expect("3 intermediates");
    let err = verify_chain_with(&leaf.cert, &ints, &anchors, at(), limits(2))
        .expect_err("3 intermediates, limit 2");
    assert!(
        matches!(err, ChainError::TooDeep { max_depth: 2 }),
        "{err:?}"
    );
}

#[test]
fn cross_signed_cycle_terminates_quickly() {
    // A <-> B sign each other, the leaf is under A, and neither reaches the anchor.
    let a_key = new_key();
    let b_key = new_key();
    let a_self = issue_with_key(&Spec::ca("CN=Cycle A"), a_key.clone(), None);
    let b_self = issue_with_key(&Spec::ca("CN=Cycle B"), b_key.clone(), None);
    let a_by_b = issue_with_key(&Spec::ca("CN=Cycle A"), a_key, Some(&b_self));
    let b_by_a = issue_with_key(&Spec::ca("CN=Cycle B"), b_key, Some(&a_self));
    let leaf = issue(&Spec::leaf("CN=l"), Some(&a_by_b));
    let anchor = issue(&Spec::ca("CN=Unrelated Root"), None);
    let ints = [a_by_b.cert, b_by_a.cert];
    let anchors = [anchor.cert];
    let err = verify_chain(&leaf.cert, &ints, &anchors, at())
        .expect_err("a cycle never reaches the anchor");
    assert!(err.to_string().starts_with(NO_ISSUER_MESSAGE), "{err}");
    // Bounded by count, not by time: the search gives up on the cycle after visiting each
    // certificate once, well inside a budget of four signature checks.
    let tight = Limits {
        max_signature_checks: 4,
        ..Limits::default()
    };
    let err = verify_chain_with(&leaf.cert, &ints, &anchors, at(), tight)
        .expect_err("a cycle never reaches the anchor");
    assert!(err.to_string().starts_with(NO_ISSUER_MESSAGE), "{err}");
}

#[test]
fn fifty_same_name_intermediates_stay_within_budget() {
    // 50 intermediates with one subject and distinct keys, each signing the next; the top one
    // is self-signed and untrusted. Every one is a candidate issuer of every other.
    let mut chain = vec![issue(&Spec::ca("CN=Same"), None)];
    for _ in 1..50 {
        let next = issue(&Spec::ca("CN=Same"), chain.last());
        chain.push(next);
    }
    let leaf = issue(&Spec::leaf("CN=l"), chain.last());
    let mut ints: Vec<Certificate> = chain.iter().map(|i| i.cert.clone()).collect();
    ints.reverse(); // the leaf's own issuer last: the worst order for a naive search
    let anchor = issue(&Spec::ca("CN=Root"), None);
    let anchors = [anchor.cert];
    let err = verify_chain(&leaf.cert, &ints, &anchors, at()).expect_err("no path");
    assert!(
        matches!(
            err,
            ChainError::WorkLimitExceeded {
                max_signature_checks: 64
            }
        ),
        "{err:?}"
    );
    let small = Limits {
        max_signature_checks: 10,
        ..Limits::default()
    };
    let err = verify_chain_with(&leaf.cert, &ints, &anchors, at(), small).expect_err("no path");
    assert!(
        matches!(
            err,
            ChainError::WorkLimitExceeded {
                max_signature_checks: 10
            }
        ),
        "{err:?}"
    );
}

// ----- agreement with `openssl verify -x509_strict` -----

/// Fails the test, saying what to install, when openssl cannot be run. The agreement test is
/// marked ignored when build.rs found no openssl, so this fires only under CI (where
/// `.ci/run` installs it) or when openssl vanished after the build: never a silent pass.
fn require_openssl() {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "openssl is not installed: install it to run the agreement test"
    );
}

/// `openssl verify -x509_strict -attime AT -CAfile root.pem -untrusted int.pem leaf.pem`.
fn openssl_accepts(root: &Certificate, ints: &[Certificate], leaf: &Certificate) -> bool {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let write = |name: &str, certs: &[&Certificate]| {
        let pem: String = certs.iter().map(|c| c.der().to_pem()).collect();
        let path = dir.path().join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    };
    let root_pem = write("root.pem", &[root]);
    let int_pem = write("int.pem", &ints.iter().collect::<Vec<_>>());
    let leaf_pem = write("leaf.pem", &[leaf]);
    let mut cmd = Command::new("openssl");
    cmd.args([
        "verify",
        "-x509_strict",
        "-attime",
        &AT.to_string(),
        "-CAfile",
    ]);
    cmd.arg(&root_pem);
    if !ints.is_empty() {
        cmd.arg("-untrusted").arg(&int_pem);
    }
    let out = cmd.arg(&leaf_pem).output().expect("openssl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // `openssl verify` exits non-zero on failure and prints "<file>: OK" on success.
    out.status.success() && stdout.trim_end().ends_with(": OK")
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn openssl_agrees() {
    require_openssl();
    let expired_leaf = standard_leaf_expired(Spec::leaf("CN=l").valid(-30 * DAY, -DAY));
    let mut not_ca = Spec::ca("CN=Int");
    not_ca.basic_constraints = Some((false, None));
    let mut no_cert_sign = Spec::ca("CN=Int");
    no_cert_sign.key_usage = Some(KeyUsage(KeyUsages::DigitalSignature.into()));
    let mut unknown_critical = Spec::ca("CN=Int");
    unknown_critical.unknown_critical = true;
    let root = issue(&Spec::ca("CN=Root"), None);
    let int1 = issue(&Spec::ca("CN=Int1").path_len(0), Some(&root));
    let int2 = issue(&Spec::ca("CN=Int2"), Some(&int1));
    let deep_leaf = issue(&Spec::leaf("CN=l"), Some(&int2));
    let good = standard_chain();
    let other_root = issue(&Spec::ca("CN=Zone Root,O=Example"), None); // same name, other key

    type Case = (&'static str, Certificate, Vec<Certificate>, Certificate);
    let mut cases: Vec<Case> = vec![
        (
            "valid",
            good.root.cert.clone(),
            vec![good.int.cert.clone()],
            good.leaf.cert.clone(),
        ),
        (
            "wrong anchor",
            other_root.cert,
            vec![good.int.cert.clone()],
            good.leaf.cert.clone(),
        ),
        (
            "missing intermediate",
            good.root.cert.clone(),
            vec![],
            good.leaf.cert.clone(),
        ),
        (
            "pathLen",
            root.cert.clone(),
            vec![int1.cert, int2.cert],
            deep_leaf.cert,
        ),
    ];
    for (name, c) in [
        ("expired leaf", expired_leaf),
        (
            "not a CA",
            chain_with(&Spec::ca("CN=Root"), &not_ca, &Spec::leaf("CN=l")),
        ),
        (
            "no keyCertSign",
            chain_with(&Spec::ca("CN=Root"), &no_cert_sign, &Spec::leaf("CN=l")),
        ),
        (
            "unknown critical",
            chain_with(&Spec::ca("CN=Root"), &unknown_critical, &Spec::leaf("CN=l")),
        ),
    ] {
        cases.push((name, c.root.cert, vec![c.int.cert], c.leaf.cert));
    }
    for (name, root, ints, leaf) in cases {
        let ours = verify_chain(&leaf, &ints, std::slice::from_ref(&root), at());
        let theirs = openssl_accepts(&root, &ints, &leaf);
        assert_eq!(
            ours.is_ok(),
            theirs,
            "{name}: zonepki says {ours:?}, openssl says {theirs}"
        );
        assert_eq!(ours.is_ok(), name == "valid", "{name}: {ours:?}");
    }
}
