//! Targeted tests of the chain validator (REQUIREMENTS.md S7, CE3): every certificate is built
//! here with x509-cert's builder and fresh P-256 keys, at fixed epochs; the same chains go
//! through `openssl verify -x509_strict` to check that both agree.

use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use der::asn1::{Any, Ia5String, ObjectIdentifier, OctetString, UtcTime};
use der::{Decode, Encode, Reader, Tag};
use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
use sha1::Digest;
use signature::Keypair;
use signature::hazmat::PrehashSigner;
use spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey,
    SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef,
};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::builder::profile::BuilderProfile;
use x509_cert::builder::{Builder, CertificateBuilder};
use x509_cert::certificate::TbsCertificate;
use x509_cert::ext::pkix::constraints::name::GeneralSubtree;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, NameConstraints,
    PolicyConstraints, PolicyMapping, PolicyMappings, SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, ToExtension};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use zonepki::cert::{CertError, Certificate};
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
    /// The subject as a ready [`Name`] (for string types and spacing that RFC 4514 text cannot
    /// choose); `subject` when `None`.
    name: Option<Name>,
    /// basicConstraints: `(cA, pathLenConstraint)`.
    basic_constraints: Option<(bool, Option<u8>)>,
    /// Whether basicConstraints is marked critical.
    bc_critical: bool,
    key_usage: Option<KeyUsage>,
    /// An unknown critical extension.
    unknown_critical: bool,
    /// Sign with ECDSA-SHA1 instead of ECDSA-SHA256.
    sha1: bool,
    /// More extensions, appended as they are.
    extra: Vec<Extension>,
}

impl Spec {
    fn ca(subject: &str) -> Self {
        Spec {
            subject: subject.to_string(),
            not_before: -365 * DAY,
            not_after: 3650 * DAY,
            name: None,
            basic_constraints: Some((true, None)),
            bc_critical: true,
            key_usage: Some(KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)),
            unknown_critical: false,
            sha1: false,
            extra: Vec::new(),
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
            ext.critical = self.spec.bc_critical;
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
        exts.extend(self.spec.extra.iter().cloned());
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
    let subject = spec
        .name
        .clone()
        .unwrap_or_else(|| Name::from_str(&spec.subject).expect("a valid RFC 4514 name"));
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

/// Whether the openssl cross-checks inside library tests run: when build.rs found openssl
/// (always under CI, where a missing openssl then fails the test through
/// [`require_openssl`]). Without it the library assertions still run, and the test says on
/// stderr that the openssl half was not run.
fn openssl_available() -> bool {
    if cfg!(zonepki_has_openssl) {
        require_openssl();
        return true;
    }
    eprintln!("notice: openssl was not found at build time: the openssl cross-check is not run");
    false
}

/// `openssl verify -x509_strict -attime AT -CAfile root.pem -untrusted int.pem leaf.pem`.
fn openssl_accepts(root: &Certificate, ints: &[Certificate], leaf: &Certificate) -> bool {
    openssl_verify(root, ints, leaf, true)
}

/// `openssl verify [-x509_strict] -attime AT -CAfile root.pem -untrusted int.pem leaf.pem`.
fn openssl_verify(
    root: &Certificate,
    ints: &[Certificate],
    leaf: &Certificate,
    strict: bool,
) -> bool {
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
    cmd.arg("verify");
    if strict {
        cmd.arg("-x509_strict");
    }
    cmd.args(["-attime", &AT.to_string(), "-CAfile"]);
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
    // nameConstraints (critical, as RFC 5280 4.2.1.10 asks): OpenSSL processes them too.
    let mut constrained = Spec::ca("CN=Int");
    constrained.extra = vec![name_constraints(
        true,
        vec![dns("zone.example")],
        vec![dns("secret.zone.example")],
    )];
    for (name, host) in [
        ("valid under nameConstraints", "server.zone.example"),
        ("nameConstraints: not permitted", "evil.example"),
        ("nameConstraints: excluded", "secret.zone.example"),
    ] {
        let c = chain_with(
            &Spec::ca("CN=Root"),
            &constrained,
            &leaf_with_san("CN=server", vec![dns(host)]),
        );
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
        assert_eq!(ours.is_ok(), name.starts_with("valid"), "{name}: {ours:?}");
    }
}

// ----- RFC 5280 7.1 name matching (issue 9 item 4) -----

const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const O: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
const OU: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");

/// A name from RDNs of (attribute type, string type, value), in order.
fn name_of(rdns: &[&[(ObjectIdentifier, Tag, &str)]]) -> Name {
    let mut seq = RdnSequence::default();
    for rdn in rdns {
        let atvs = rdn
            .iter()
            .map(|(oid, tag, value)| {
                let bytes = if *tag == Tag::BmpString {
                    value.encode_utf16().flat_map(u16::to_be_bytes).collect()
                } else {
                    value.as_bytes().to_vec()
                };
                AttributeTypeAndValue {
                    oid: *oid,
                    value: Any::new(*tag, bytes).expect("a string value"),
                }
            })
            .collect::<Vec<_>>();
        seq.push(RelativeDistinguishedName::try_from(atvs).expect("an RDN"));
    }
    Name::from_der(&seq.to_der().expect("names encode")).expect("names decode")
}

fn ca_named(name: Name) -> Spec {
    Spec {
        name: Some(name),
        ..Spec::ca("CN=unused")
    }
}

#[test]
fn ca_renewed_with_a_reencoded_subject_still_chains_and_other_names_do_not() {
    // The zone CA first had a PrintableString CN; its renewal (same key) has the subject
    // re-encoded in each way RFC 5280 7.1 / RFC 4518 fold. Certificates issued before the
    // renewal carry the old issuer encoding and must still chain to the renewed anchor.
    let original = name_of(&[
        &[(CN, Tag::PrintableString, "Zone Root CA")],
        &[(O, Tag::PrintableString, "Example")],
    ]);
    let old_root = issue(&ca_named(original.clone()), None);
    let old_int = issue(
        &ca_named(name_of(&[
            &[
                (CN, Tag::PrintableString, "Zone Intermediate"),
                (OU, Tag::PrintableString, "PKI"),
            ],
            &[(O, Tag::PrintableString, "Example")],
        ])),
        Some(&old_root),
    );
    let leaf = issue(&Spec::leaf("CN=server.zone.example"), Some(&old_int));
    assert_eq!(leaf.cert.issuer_name(), old_int.cert.subject_name());

    let renewals = [
        // UTF8String instead of PrintableString.
        name_of(&[
            &[(CN, Tag::Utf8String, "Zone Root CA")],
            &[(O, Tag::Utf8String, "Example")],
        ]),
        // Other case.
        name_of(&[
            &[(CN, Tag::PrintableString, "ZONE ROOT CA")],
            &[(O, Tag::Utf8String, "example")],
        ]),
        // Extra leading, trailing and inner spaces.
        name_of(&[
            &[(CN, Tag::Utf8String, "  Zone   Root CA ")],
            &[(O, Tag::PrintableString, "Example ")],
        ]),
        // BMPString, lower case.
        name_of(&[
            &[(CN, Tag::BmpString, "zone root ca")],
            &[(O, Tag::BmpString, "EXAMPLE")],
        ]),
    ];
    for renewed_name in renewals {
        assert_ne!(renewed_name, original);
        let renewed_root =
            issue_with_key(&ca_named(renewed_name.clone()), old_root.key.clone(), None);
        // Directly: the old intermediate under the renewed root.
        let verified = verify_chain(
            &old_int.cert,
            &[],
            std::slice::from_ref(&renewed_root.cert),
            at(),
        )
        .unwrap_or_else(|e| panic!("{renewed_name}: {e}"));
        assert_eq!(verified.anchor(), &renewed_root.cert);
        // The whole chain, and the renewed root is self-signed (subject matches issuer).
        verify_chain(
            &leaf.cert,
            std::slice::from_ref(&old_int.cert),
            std::slice::from_ref(&renewed_root.cert),
            at(),
        )
        .unwrap_or_else(|e| panic!("{renewed_name}: {e}"));
        assert!(renewed_root.cert.is_self_signed());
    }

    // The intermediate renewed too, its multi-valued RDN in another order, case and type.
    let renewed_int = issue_with_key(
        &ca_named(name_of(&[
            &[
                (OU, Tag::Utf8String, "pki"),
                (CN, Tag::Utf8String, "zone intermediate"),
            ],
            &[(O, Tag::Utf8String, "EXAMPLE")],
        ])),
        old_int.key.clone(),
        Some(&old_root),
    );
    let verified = verify_chain(
        &leaf.cert,
        std::slice::from_ref(&renewed_int.cert),
        std::slice::from_ref(&old_root.cert),
        at(),
    )
    .expect("the renewed intermediate chains the old leaf");
    assert_eq!(verified.path()[1], renewed_int.cert);

    // Names that differ in more than what RFC 4518 folds are still refused.
    different_names_are_still_refused();
}

fn different_names_are_still_refused() {
    let original = name_of(&[&[(CN, Tag::PrintableString, "Zone Root CA")]]);
    let old_root = issue(&ca_named(original), None);
    let leaf = issue(&Spec::leaf("CN=server"), Some(&old_root));
    for other in [
        name_of(&[&[(CN, Tag::Utf8String, "Zone Root CA 2")]]),
        name_of(&[&[(CN, Tag::Utf8String, "ZoneRoot CA")]]),
        name_of(&[&[(CN, Tag::Utf8String, "Zone-Root-CA")]]),
        // Same value under another attribute type.
        name_of(&[&[(OU, Tag::Utf8String, "Zone Root CA")]]),
        // An extra RDN, or the same attributes in one multi-valued RDN.
        name_of(&[
            &[(CN, Tag::Utf8String, "Zone Root CA")],
            &[(O, Tag::Utf8String, "Example")],
        ]),
        name_of(&[&[
            (CN, Tag::Utf8String, "Zone Root CA"),
            (O, Tag::Utf8String, "Example"),
        ]]),
    ] {
        // Same key: only the name decides.
        let other_root = issue_with_key(&ca_named(other.clone()), old_root.key.clone(), None);
        let err = verify_chain(
            &leaf.cert,
            &[],
            std::slice::from_ref(&other_root.cert),
            at(),
        )
        .expect_err("a different name does not chain");
        assert!(
            matches!(&err, ChainError::NoIssuer { .. }),
            "{other}: {err:?}"
        );
        assert!(err.to_string().starts_with(NO_ISSUER_MESSAGE), "{err}");
    }
}

// ----- basicConstraints criticality (RFC 5280 6.1.4 (k)) -----

#[test]
fn intermediate_with_non_critical_basic_constraints_is_valid() {
    let mut int = Spec::ca("CN=Int");
    int.bc_critical = false;
    let c = chain_with(&Spec::ca("CN=Root"), &int, &Spec::leaf("CN=l"));
    let verified = c
        .verify()
        .expect("6.1.4 (k) needs presence, not criticality");
    assert_eq!(verified.path().len(), 3);
    if openssl_available() {
        // OpenSSL agrees in its default mode; only -x509_strict applies the CA profile here.
        let ints = std::slice::from_ref(&c.int.cert);
        assert!(openssl_verify(&c.root.cert, ints, &c.leaf.cert, false));
        assert!(!openssl_verify(&c.root.cert, ints, &c.leaf.cert, true));
    }
    // Presence and cA TRUE are still required.
    int.basic_constraints = Some((false, None));
    let c = chain_with(&Spec::ca("CN=Root"), &int, &Spec::leaf("CN=l"));
    assert!(matches!(
        c.verify(),
        Err(ChainError::NotCa {
            role: Role::Intermediate,
            ..
        })
    ));
    // The trust anchor is held to the CA profile (x509-limbo
    // rfc5280::root-non-critical-basic-constraints).
    let mut root = Spec::ca("CN=Root");
    root.bc_critical = false;
    let c = chain_with(&root, &Spec::ca("CN=Int"), &Spec::leaf("CN=l"));
    assert!(
        matches!(
            c.verify(),
            Err(ChainError::BasicConstraintsNotCritical {
                role: Role::Anchor,
                ..
            })
        ),
        "{:?}",
        c.verify()
    );
}

// ----- validity dates before 1970 (RFC 5280 4.1.2.5.1) -----

/// `cert` with each `(from, to)` replacement made inside its signed part, re-signed by
/// `signer`. The lengths may differ: the tbsCertificate's header is re-encoded.
fn patch_and_resign(cert: &Certificate, edits: &[(&[u8], &[u8])], signer: &SigningKey) -> Vec<u8> {
    let tbs = cert.tbs_der();
    let mut reader = der::SliceReader::new(tbs).expect("a reader");
    let header = der::Header::decode(&mut reader).expect("a header");
    let start = usize::try_from(reader.position()).expect("small");
    let mut body = tbs[start..].to_vec();
    for (from, to) in edits {
        let at = body
            .windows(from.len())
            .position(|w| w == *from)
            .unwrap_or_else(|| panic!("{} is in the TBS", String::from_utf8_lossy(from)));
        body.splice(at..at + from.len(), to.iter().copied());
        assert!(
            !body[at + to.len()..]
                .windows(from.len())
                .any(|w| w == *from),
            "one occurrence"
        );
    }
    let mut new_tbs = der::Header::new(header.tag(), der::Length::try_from(body.len()).unwrap())
        .to_der()
        .expect("a header encodes");
    new_tbs.extend_from_slice(&body);
    let signature: DerSignature = signature::Signer::sign(signer, &new_tbs);
    let mut content = new_tbs;
    content.extend(
        cert.signature_algorithm()
            .to_der()
            .expect("an algorithm encodes"),
    );
    content.extend(
        der::asn1::BitString::from_bytes(signature.as_bytes())
            .expect("a bit string")
            .to_der()
            .expect("a bit string encodes"),
    );
    let mut out = der::Header::new(
        der::Tag::Sequence,
        der::Length::try_from(content.len()).unwrap(),
    )
    .to_der()
    .expect("a header encodes");
    out.extend(content);
    out
}

/// Seconds from [`AT`] to 1970-01-01T00:00:00Z and to 1970-01-02T00:00:00Z: a validity that
/// the builder writes as `700101000000Z` / `700102000000Z`, ready to be patched.
const EPOCH: i64 = -AT;

#[test]
fn utc_time_in_the_1950s_and_1960s_parses_and_validates() {
    let root = issue(&Spec::ca("CN=Root"), None);
    let leaf = issue(&Spec::leaf("CN=old").valid(EPOCH, 365 * DAY), Some(&root));
    // notBefore 1960-01-01T00:00:00Z, as UTCTime "600101000000Z" (YY >= 50 is 19YY).
    let der = patch_and_resign(
        &leaf.cert,
        &[(b"700101000000Z", b"600101000000Z")],
        &root.key,
    );
    let old = Certificate::from_der(&der).expect("a 1960 UTCTime is valid (RFC 5280 4.1.2.5.1)");
    assert_eq!(
        old.der().as_bytes(),
        &der[..],
        "the original bytes are kept"
    );
    assert_eq!(old.not_before().to_string(), "1960-01-01T00:00:00Z");
    assert_eq!(old.not_after(), leaf.cert.not_after());
    assert_eq!(old.details(at()).not_before.unix(), -315_619_200);
    let verified =
        verify_chain(&old, &[], std::slice::from_ref(&root.cert), at()).expect("valid now");
    assert_eq!(verified.leaf(), &old);
    if openssl_available() {
        assert!(
            openssl_accepts(&root.cert, &[], &old),
            "OpenSSL reads 1960 too"
        );
    }
    // The date is honoured: in 1959 the certificate is not yet valid.
    let in_1959 = Timestamp::from_unix(-315_619_201).expect("a time");
    let err = verify_chain(&old, &[], std::slice::from_ref(&root.cert), in_1959)
        .expect_err("not yet valid in 1959");
    assert!(
        matches!(&err, ChainError::NotYetValid { role: Role::Leaf, not_before, .. }
            if not_before.unix() == -315_619_200),
        "{err:?}"
    );

    // A root valid from 1950-01-01 (UTCTime "500101000000Z", the earliest UTCTime) as anchor.
    let early = issue_with_key(
        &Spec::ca("CN=Root").valid(EPOCH, 3650 * DAY),
        root.key.clone(),
        None,
    );
    let der = patch_and_resign(
        &early.cert,
        &[(b"700101000000Z", b"500101000000Z")],
        &root.key,
    );
    let early = Certificate::from_der(&der).expect("1950 parses");
    assert_eq!(early.not_before().to_string(), "1950-01-01T00:00:00Z");
    assert!(early.is_self_signed());
    verify_chain(&leaf.cert, &[], std::slice::from_ref(&early), at())
        .expect("an anchor valid since 1950");
}

#[test]
fn expired_in_the_1960s_and_generalized_time_before_1950() {
    let root = issue(&Spec::ca("CN=Root"), None);
    let leaf = issue(&Spec::leaf("CN=old").valid(EPOCH, EPOCH + DAY), Some(&root));
    // 1955-01-01 to 1965-06-30T12:00:00Z, both UTCTime.
    let der = patch_and_resign(
        &leaf.cert,
        &[
            (b"700101000000Z", b"550101000000Z"),
            (b"700102000000Z", b"650630120000Z"),
        ],
        &root.key,
    );
    let old = Certificate::from_der(&der).expect("parses");
    assert_eq!(old.not_after().to_string(), "1965-06-30T12:00:00Z");
    let err = verify_chain(&old, &[], std::slice::from_ref(&root.cert), at())
        .expect_err("expired in 1965");
    assert!(
        matches!(&err, ChainError::Expired { role: Role::Leaf, not_after, .. }
            if not_after.to_string() == "1965-06-30T12:00:00Z"),
        "{err:?}"
    );
    let in_1960 = "1960-01-01T00:00:00Z".parse().expect("a time");
    verify_chain(&old, &[], std::slice::from_ref(&root.cert), in_1960)
        .expect_err("the root is not valid in 1960");

    // RFC 5280 4.1.2.5.2: before 1950 the date is a GeneralizedTime (tag 0x18, 15 octets).
    let der = patch_and_resign(
        &leaf.cert,
        // The validity SEQUENCE grows from 30 to 32 octets.
        &[(
            b"\x30\x1e\x17\x0d700101000000Z",
            b"\x30\x20\x18\x0f19400101000000Z",
        )],
        &root.key,
    );
    let older = Certificate::from_der(&der).expect("a 1940 GeneralizedTime parses");
    assert_eq!(older.not_before().to_string(), "1940-01-01T00:00:00Z");
    assert_eq!(older.not_after(), leaf.cert.not_after());

    // A malformed time is still refused.
    let der = patch_and_resign(
        &leaf.cert,
        &[(b"700101000000Z", b"601301000000Z")],
        &root.key,
    );
    assert!(
        matches!(
            Certificate::from_der(&der),
            Err(CertError::Malformed { .. })
        ),
        "month 13"
    );
}

// ----- nameConstraints and policy constraints (RFC 5280 4.2.1.10, 4.2.1.11) -----

fn extension(oid: &str, critical: bool, value: &impl Encode) -> Extension {
    Extension {
        extn_id: ObjectIdentifier::new_unwrap(oid),
        critical,
        extn_value: OctetString::new(value.to_der().expect("an extension value encodes"))
            .expect("an octet string"),
    }
}

fn subtrees(bases: Vec<GeneralName>) -> Option<Vec<GeneralSubtree>> {
    Some(
        bases
            .into_iter()
            .map(|base| GeneralSubtree {
                base,
                minimum: 0,
                maximum: None,
            })
            .collect(),
    )
}

fn dns(name: &str) -> GeneralName {
    GeneralName::DnsName(Ia5String::new(name).expect("an IA5 string"))
}

fn ip(octets: &[u8]) -> GeneralName {
    GeneralName::IpAddress(OctetString::new(octets).expect("an octet string"))
}

fn name_constraints(
    critical: bool,
    permitted: Vec<GeneralName>,
    excluded: Vec<GeneralName>,
) -> Extension {
    let nc = NameConstraints {
        permitted_subtrees: if permitted.is_empty() {
            None
        } else {
            subtrees(permitted)
        },
        excluded_subtrees: if excluded.is_empty() {
            None
        } else {
            subtrees(excluded)
        },
    };
    extension("2.5.29.30", critical, &nc)
}

fn leaf_with_san(subject: &str, san: Vec<GeneralName>) -> Spec {
    let mut leaf = Spec::leaf(subject);
    if !san.is_empty() {
        leaf.extra
            .push(extension("2.5.29.17", false, &SubjectAltName(san)));
    }
    leaf
}

/// Validates `leaf` under "CN=Int" carrying `int_extra`, under "CN=Root".
fn under_constrained_int(int_extra: Vec<Extension>, leaf: Spec) -> Result<(), ChainError> {
    let mut int = Spec::ca("CN=Int");
    int.extra = int_extra;
    chain_with(&Spec::ca("CN=Root"), &int, &leaf)
        .verify()
        .map(|_| ())
}

fn assert_name_refused(result: Result<(), ChainError>, role: Role, needle: &str) {
    match &result {
        Err(
            e @ ChainError::NameConstraint {
                role: r,
                ca,
                reason,
                ..
            },
        ) => {
            assert_eq!(*r, role, "{e}");
            assert_eq!(ca, "CN=Int", "{e}");
            assert!(
                e.to_string()
                    .contains("nameConstraints of the intermediate CA certificate \"CN=Int\""),
                "{e}"
            );
            assert!(reason.contains(needle), "{e}");
            assert!(e.to_string().contains("nameConstraints"), "{e}");
        }
        other => panic!("expected a nameConstraints refusal ({needle}), got {other:?}"),
    }
}

#[test]
fn dns_name_constraints_are_processed_critical_or_not() {
    for critical in [true, false] {
        let nc = || {
            vec![name_constraints(
                critical,
                vec![dns("zone.example")],
                vec![dns("secret.zone.example")],
            )]
        };
        for ok in [
            vec![dns("server.zone.example")],
            vec![dns("zone.example"), dns("a.b.zone.example")],
        ] {
            under_constrained_int(nc(), leaf_with_san("CN=server.zone.example", ok))
                .unwrap_or_else(|e| panic!("critical {critical}: {e}"));
        }
        for (san, needle) in [
            (
                vec![dns("evil.example")],
                "dNSName evil.example is outside the permitted",
            ),
            (
                vec![dns("server.zone.example"), dns("badzone.example")],
                "badzone.example is outside",
            ),
            (vec![dns("secret.zone.example")], "in an excluded subtree"),
            (vec![dns("x.secret.zone.example")], "in an excluded subtree"),
            // A wildcard that would cover an excluded host.
            (
                vec![dns("*.zone.example")],
                "*.zone.example is in an excluded",
            ),
        ] {
            let leaf = leaf_with_san("CN=server.zone.example", san);
            assert_name_refused(under_constrained_int(nc(), leaf), Role::Leaf, needle);
        }
        // Without a dNSName, a host-like common name is checked (as OpenSSL does).
        let leaf = leaf_with_san("CN=evil.example", vec![]);
        assert_name_refused(
            under_constrained_int(nc(), leaf),
            Role::Leaf,
            "evil.example",
        );
        let leaf = leaf_with_san("CN=Some Device", vec![]);
        under_constrained_int(nc(), leaf).expect("a CN that is no host name");
    }
}

#[test]
fn directory_name_and_ip_constraints() {
    // directoryName: the subject must lie under O=Example (matched as RFC 5280 7.1 says), at
    // every level below the constraining CA.
    let base = name_of(&[&[(O, Tag::Utf8String, "EXAMPLE")]]);
    let mut root = Spec::ca("CN=Root");
    root.extra = vec![name_constraints(
        true,
        vec![GeneralName::DirectoryName(base)],
        vec![],
    )];
    let good = chain_with(
        &root,
        &Spec::ca("CN=Int,O=Example"),
        &Spec::leaf("CN=server,OU=Servers,O=Example"),
    );
    good.verify().expect("inside O=Example");
    let err = chain_with(
        &root,
        &Spec::ca("CN=Int,O=Example"),
        &Spec::leaf("CN=server,O=Other"),
    )
    .verify()
    .expect_err("outside O=Example");
    assert!(
        matches!(&err, ChainError::NameConstraint { role: Role::Leaf, reason, .. }
            if reason.contains("directoryName \"CN=server,O=Other\" is outside")),
        "{err:?}"
    );
    let err = chain_with(
        &root,
        &Spec::ca("CN=Int,O=Other"),
        &Spec::leaf("CN=server,O=Example"),
    )
    .verify()
    .expect_err("the intermediate is outside O=Example");
    assert!(
        matches!(
            &err,
            ChainError::NameConstraint {
                role: Role::Intermediate,
                ..
            }
        ),
        "{err:?}"
    );

    // iPAddress: the technically constrained CA of CABF BR 7.1.2.5.2 excludes every address.
    let nc = || {
        vec![name_constraints(
            true,
            vec![dns("zone.example")],
            vec![ip(&[0; 8]), ip(&[0; 32])],
        )]
    };
    under_constrained_int(nc(), leaf_with_san("CN=s", vec![dns("s.zone.example")]))
        .expect("no address");
    let leaf = leaf_with_san("CN=s", vec![dns("s.zone.example"), ip(&[10, 0, 0, 1])]);
    assert_name_refused(
        under_constrained_int(nc(), leaf),
        Role::Leaf,
        "iPAddress 10.0.0.1 is in an excluded subtree",
    );
    let permitted = || {
        vec![name_constraints(
            false,
            vec![ip(&[10, 1, 0, 0, 255, 255, 0, 0])],
            vec![],
        )]
    };
    under_constrained_int(permitted(), leaf_with_san("CN=s", vec![ip(&[10, 1, 2, 3])]))
        .expect("inside 10.1.0.0/16");
    let leaf = leaf_with_san("CN=s", vec![ip(&[10, 2, 0, 1])]);
    assert_name_refused(
        under_constrained_int(permitted(), leaf),
        Role::Leaf,
        "10.2.0.1",
    );
}

#[test]
fn unprocessed_name_forms_and_malformed_constraints() {
    // An rfc822Name constraint: certificates without an email address are unaffected, one with
    // an email address is refused (RFC 5280 4.2.1.10: process it or reject).
    let email = || GeneralName::Rfc822Name(Ia5String::new("example.com").expect("an IA5 string"));
    let nc = || vec![name_constraints(false, vec![email()], vec![])];
    under_constrained_int(nc(), leaf_with_san("CN=s", vec![dns("s.zone.example")]))
        .expect("no email address below");
    let leaf = leaf_with_san(
        "CN=s",
        vec![GeneralName::Rfc822Name(
            Ia5String::new("a@example.com").expect("an IA5 string"),
        )],
    );
    assert_name_refused(
        under_constrained_int(nc(), leaf),
        Role::Leaf,
        "does not process rfc822Name constraints",
    );

    // Empty, and with a maximum: malformed (RFC 5280 4.2.1.10).
    let empty = name_constraints(true, vec![], vec![]);
    let mut bounded = NameConstraints {
        permitted_subtrees: subtrees(vec![dns("zone.example")]),
        excluded_subtrees: None,
    };
    bounded.permitted_subtrees.as_mut().expect("one subtree")[0].maximum = Some(2);
    let bounded = extension("2.5.29.30", true, &bounded);
    for bad in [empty, bounded] {
        let err = under_constrained_int(vec![bad], Spec::leaf("CN=l")).expect_err("malformed");
        assert!(
            matches!(&err, ChainError::MalformedExtension { role: Role::Intermediate, oid, .. }
                if oid.to_string() == "2.5.29.30"),
            "{err:?}"
        );
    }
}

#[test]
fn policy_constraints_refused_only_when_they_require_an_explicit_policy() {
    let constraints = |require: Option<u32>, inhibit: Option<u32>, critical: bool| {
        vec![extension(
            "2.5.29.36",
            critical,
            &PolicyConstraints {
                require_explicit_policy: require,
                inhibit_policy_mapping: inhibit,
            },
        )]
    };
    for critical in [true, false] {
        let err = under_constrained_int(constraints(Some(0), None, critical), Spec::leaf("CN=l"))
            .expect_err("requireExplicitPolicy is not evaluated");
        assert!(
            matches!(
                &err,
                ChainError::ExplicitPolicyRequired {
                    role: Role::Intermediate,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("requireExplicitPolicy"), "{err}");
        // inhibitPolicyMapping alone cannot invalidate a path with the zone's inputs.
        under_constrained_int(constraints(None, Some(0), critical), Spec::leaf("CN=l"))
            .unwrap_or_else(|e| panic!("critical {critical}: {e}"));
    }
    let err = under_constrained_int(constraints(None, None, true), Spec::leaf("CN=l"))
        .expect_err("an empty policyConstraints");
    assert!(
        matches!(&err, ChainError::MalformedExtension { .. }),
        "{err:?}"
    );

    // policyMappings: accepted, critical or not, unless anyPolicy is mapped (6.1.4 (a)).
    let mapping = |from: &str, critical: bool| {
        vec![extension(
            "2.5.29.33",
            critical,
            &PolicyMappings(vec![PolicyMapping {
                issuer_domain_policy: ObjectIdentifier::new_unwrap(from),
                subject_domain_policy: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.55738.1"),
            }]),
        )]
    };
    under_constrained_int(mapping("1.3.6.1.4.1.55738.2", true), Spec::leaf("CN=l"))
        .expect("a policy mapping only shapes the policy tree");
    let err = under_constrained_int(mapping("2.5.29.32.0", false), Spec::leaf("CN=l"))
        .expect_err("anyPolicy mapped");
    assert!(
        matches!(&err, ChainError::MalformedExtension { reason, .. } if reason.contains("anyPolicy")),
        "{err:?}"
    );
}

#[test]
fn name_constraint_work_is_bounded() {
    // 3 subtrees, and a leaf with a subject and 5 dNSNames: 6 names x 3 subtrees = 18
    // comparisons.
    let nc = vec![name_constraints(
        true,
        vec![dns("zone.example"), dns("other.example")],
        vec![dns("secret.zone.example")],
    )];
    let sans = (0..5).map(|i| dns(&format!("s{i}.zone.example"))).collect();
    let mut int = Spec::ca("CN=Int");
    int.extra = nc;
    let c = chain_with(&Spec::ca("CN=Root"), &int, &leaf_with_san("CN=s", sans));
    let limits = |max_name_comparisons| Limits {
        max_name_comparisons,
        ..Limits::default()
    };
    let run = |max| {
        verify_chain_with(
            &c.leaf.cert,
            std::slice::from_ref(&c.int.cert),
            std::slice::from_ref(&c.root.cert),
            at(),
            limits(max),
        )
    };
    run(18).expect("exactly within the budget");
    let err = run(17).expect_err("one comparison short");
    assert!(
        matches!(
            err,
            ChainError::NameConstraintWorkExceeded {
                max_name_comparisons: 17
            }
        ),
        "{err:?}"
    );
    assert_eq!(Limits::default().max_name_comparisons, 250_000);
}
