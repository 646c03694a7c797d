//! RFC 5280 path building and validation, cut to what a management zone needs (REQUIREMENTS.md
//! S7, CE3).
//!
//! [`verify_chain`] searches for a path from a leaf certificate through untrusted intermediate
//! CA certificates to one of the trust anchors, and validates it at a given time. Success is the
//! proof value [`VerifiedChain`], which only this module can construct.
//!
//! # What is checked
//! On every certificate of the path, the trust anchor included:
//! - X.509 v3 (RFC 5280 4.1.2.1; a zone has no use for v1/v2 certificates, and a v1 CA cannot
//!   say that it is a CA);
//! - `signatureAlgorithm` equal to `tbsCertificate.signature` (4.1.1.2);
//! - a positive serial number of at most 20 octets (4.1.2.2), except on anchors;
//! - a non-empty issuer name (4.1.2.4), and a non-empty subject name on CA certificates (4.1.2.6);
//! - validity dates read as RFC 5280 4.1.2.5 says, 1950-1969 UTCTimes included (see
//!   [`Certificate::from_der`]);
//! - no extension twice (4.2), no critical extension the validator does not process (4.2), no
//!   critical authorityKeyIdentifier, subjectKeyIdentifier or authorityInfoAccess (4.2.1.1,
//!   4.2.1.2, 4.2.2.1: they MUST be non-critical), and the extensions it reads well-formed;
//! - a public key the zone can use: ECDSA P-256/P-384, or RSA of at least 2048 bits and a whole
//!   number of bytes (S2; CABF BR 6.1.5);
//! - validity at the given time, both bounds inclusive (4.1.2.5, 6.1.3 (a)(2)).
//!
//! On every certificate that issues another one (intermediates and the trust anchor):
//! basicConstraints present with `cA` TRUE (6.1.4 (k)), `keyCertSign` when keyUsage is present
//! (4.2.1.3, 6.1.4 (n)), and `pathLenConstraint` (6.1.4 (l), (m)): the number of non-self-issued
//! intermediates below it, the leaf not counted. basicConstraints must be critical on the trust
//! anchor only: 4.2.1.9's "MUST mark the extension as critical" is a duty of the issuing CA that
//! 6.1.4 (k) does not check, so an intermediate with a non-critical basicConstraints is valid,
//! while the anchor the zone chooses is held to the CA profile (x509-limbo
//! `rfc5280::root-non-critical-basic-constraints`).
//!
//! On the leaf: keyUsage and basicConstraints consistent with each other (4.2.1.3, 4.2.1.9). A
//! leaf may itself be a CA certificate (RFC 5280 makes no rule about the last certificate), so a
//! subordinate zone CA can be checked against its root with the same function.
//!
//! Below every CA with nameConstraints (the anchor included), critical or not: every
//! certificate's names within its permitted and outside its excluded subtrees (4.2.1.10,
//! 6.1.3 (b), (c); self-issued intermediates excepted) for dNSName, directoryName and
//! iPAddress, the leaf's host-like common names counting as dNSNames when it has none. A
//! constraint on another name form refuses a certificate below that has a name of that form.
//! See `chain/constraints.rs`.
//!
//! Certificate policies: a policyConstraints with requireExplicitPolicy is refused, critical or
//! not, because it would make the path depend on the policy tree, which the validator does not
//! build; policyMappings must not map anyPolicy (6.1.4 (a)). Everything else about policies
//! (inhibitPolicyMapping, the mappings, inhibitAnyPolicy, certificatePolicies) is only checked to
//! be well-formed: with RFC 5280 6.1.1's inputs as the zone sets them (any policy, nothing
//! explicit, nothing inhibited) it cannot make a path invalid when no requireExplicitPolicy is
//! present, since explicit_policy starts at n + 1 and never reaches 0.
//!
//! On every link: the issuer's subject name matches the child's issuer name as RFC 5280 7.1
//! says ([`names_match`]: the same DER, or the same RDNs after RFC 4518 string preparation:
//! case, insignificant spaces and the string type folded), and the child's signature verifies
//! under the issuer's key through [`key::verify_signature`] (SHA-1 and MD5 refused, S7). A CA
//! that renewed its certificate with a re-encoded subject therefore still chains the
//! certificates it issued before. The same matching decides which certificates are self-issued
//! (6.1: not counted against pathLenConstraint).
//!
//! # Trust anchors
//! Anchors are whole certificates. Their own signature is never checked: trust in an anchor comes
//! from the zone having chosen it, not from the signature on it. Everything else is checked as on
//! an intermediate (validity, CA flags, critical extensions, structure): the x509-limbo cases the
//! zone must pass (`rfc5280::validity::expired-root`, `rfc5280::root-missing-basic-constraints`,
//! `rfc5280::unknown-critical-extension-root`, ...) require it, and a zone CA certificate that is
//! expired or not a CA is a configuration error worth reporting.
//!
//! # What is not done
//! Hostname matching, the policy tree, extended key usage and revocation are outside what a
//! zone validator does (S7), and so are name constraints on forms other than dNSName,
//! directoryName and iPAddress. Whatever would need one of them to be judged is refused rather
//! than accepted without it (above): the validator never silently drops a constraint, critical
//! or not. Critical extendedKeyUsage, subjectAltName and certificatePolicies are accepted, since
//! with the inputs above they cannot make a path invalid. Any other critical extension is
//! refused (4.2).
//!
//! # Bounded work
//! Path building is a depth-first search with backtracking over every candidate issuer, in the
//! style of rustls-webpki's `verify_cert.rs`. Each candidate whose signature is considered costs
//! one unit of [`Limits::max_signature_checks`]; a CA (subject and key) never appears twice in
//! one path (which breaks cycles), and [`Limits::max_depth`] bounds the number of intermediates.
//! Each search step also scans the candidates by name, so the total work is at most
//! `max_signature_checks × number of certificates` name comparisons plus `max_signature_checks`
//! signature verifications, however hostile the input: never exponential. Names are prepared
//! for comparison once per certificate. nameConstraints checks draw on their own budget,
//! [`Limits::max_name_comparisons`].

mod constraints;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use der::Decode;
use der::asn1::ObjectIdentifier;
use x509_cert::ext::pkix::{
    AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints, CertificatePolicies,
    ExtendedKeyUsage, InhibitAnyPolicy, KeyUsage, KeyUsages, NameConstraints, PolicyConstraints,
    PolicyMappings, SubjectAltName, SubjectKeyIdentifier,
};

use self::constraints::{Constraints, Refusal};

use crate::cert::name::NameKey;
use crate::cert::{Certificate, names_match};
use crate::clock::Timestamp;
use crate::key::{self, KeyAlgorithm, SignatureError};

/// The sentence the manuals show when an imported server certificate does not chain to the
/// zone CA (REQUIREMENTS.md CE3). [`ChainError::NoIssuer`] displays it, followed by details in
/// parentheses.
pub const NO_ISSUER_MESSAGE: &str = concat!(
    "CA certificate subject from the CA Certificate chain ",
    "does not match server certificate issuer."
);

/// Extension OIDs the validator recognises (RFC 5280 4.2.1, 4.2.2).
mod oid {
    use der::asn1::ObjectIdentifier as Oid;
    pub(super) const SUBJECT_KEY_ID: Oid = Oid::new_unwrap("2.5.29.14");
    pub(super) const KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
    pub(super) const SUBJECT_ALT_NAME: Oid = Oid::new_unwrap("2.5.29.17");
    pub(super) const BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
    pub(super) const NAME_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.30");
    pub(super) const CRL_DISTRIBUTION_POINTS: Oid = Oid::new_unwrap("2.5.29.31");
    pub(super) const CERTIFICATE_POLICIES: Oid = Oid::new_unwrap("2.5.29.32");
    pub(super) const POLICY_MAPPINGS: Oid = Oid::new_unwrap("2.5.29.33");
    pub(super) const AUTHORITY_KEY_ID: Oid = Oid::new_unwrap("2.5.29.35");
    pub(super) const POLICY_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.36");
    pub(super) const EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");
    pub(super) const FRESHEST_CRL: Oid = Oid::new_unwrap("2.5.29.46");
    pub(super) const INHIBIT_ANY_POLICY: Oid = Oid::new_unwrap("2.5.29.54");
    pub(super) const AUTHORITY_INFO_ACCESS: Oid = Oid::new_unwrap("1.3.6.1.5.5.7.1.1");
    pub(super) const ANY_POLICY: Oid = Oid::new_unwrap("2.5.29.32.0");
}

/// A readable name for the extensions the error messages mention.
fn extension_name(id: ObjectIdentifier) -> Option<&'static str> {
    Some(match id {
        oid::SUBJECT_KEY_ID => "subjectKeyIdentifier",
        oid::KEY_USAGE => "keyUsage",
        oid::SUBJECT_ALT_NAME => "subjectAltName",
        oid::BASIC_CONSTRAINTS => "basicConstraints",
        oid::NAME_CONSTRAINTS => "nameConstraints",
        oid::CRL_DISTRIBUTION_POINTS => "cRLDistributionPoints",
        oid::CERTIFICATE_POLICIES => "certificatePolicies",
        oid::POLICY_MAPPINGS => "policyMappings",
        oid::AUTHORITY_KEY_ID => "authorityKeyIdentifier",
        oid::POLICY_CONSTRAINTS => "policyConstraints",
        oid::EXT_KEY_USAGE => "extKeyUsage",
        oid::FRESHEST_CRL => "freshestCRL",
        oid::INHIBIT_ANY_POLICY => "inhibitAnyPolicy",
        oid::AUTHORITY_INFO_ACCESS => "authorityInfoAccess",
        _ => return None,
    })
}

/// An extension OID with its name when known, for messages: `2.5.29.30 (nameConstraints)`.
struct ExtId(ObjectIdentifier);

impl fmt::Display for ExtId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match extension_name(self.0) {
            Some(name) => write!(f, "{} ({name})", self.0),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Where a certificate sits in a path; errors say which certificate is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The certificate being validated (a server certificate, or a subordinate CA's).
    Leaf,
    /// An untrusted CA certificate between the leaf and the anchor.
    Intermediate,
    /// A trusted certificate that ends the path (the zone CA).
    Anchor,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Leaf => "leaf certificate",
            Role::Intermediate => "intermediate CA certificate",
            Role::Anchor => "trust anchor",
        })
    }
}

/// How much work path building may do (S7: bounded work on hostile chains).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most intermediates a path may hold between the leaf and the anchor. Self-issued
    /// intermediates (key rollover certificates, same subject and issuer) are not counted, as
    /// RFC 5280 6.1.4 (l) does not count them against pathLenConstraint. Default 8.
    pub max_depth: usize,
    /// The most candidate issuers whose signature path building may consider, over the whole
    /// search; when exceeded, validation fails with [`ChainError::WorkLimitExceeded`].
    /// Default 64.
    pub max_signature_checks: usize,
    /// The most name-against-subtree comparisons nameConstraints may cost over the whole
    /// search (each name of a certificate below a constrained CA costs one per subtree); when
    /// exceeded, validation fails with [`ChainError::NameConstraintWorkExceeded`]. Default
    /// 250,000, rustls-webpki's figure.
    pub max_name_comparisons: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 8,
            max_signature_checks: 64,
            max_name_comparisons: 250_000,
        }
    }
}

/// A path that validated: leaf first, trust anchor last. Only [`verify_chain`] makes one, so
/// holding a `VerifiedChain` proves the check was done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    /// Never empty: the leaf, the intermediates used, the anchor (the leaf alone when it is
    /// itself a trust anchor).
    path: Vec<Certificate>,
}

impl VerifiedChain {
    /// The whole path, leaf first, anchor last.
    pub fn path(&self) -> &[Certificate] {
        &self.path
    }

    /// The validated certificate.
    pub fn leaf(&self) -> &Certificate {
        self.path
            .first()
            .expect("a verified path holds at least the leaf")
    }

    /// The trust anchor the path ends at (the leaf itself when the leaf is an anchor).
    pub fn anchor(&self) -> &Certificate {
        self.path
            .last()
            .expect("a verified path holds at least the leaf")
    }

    /// The subjects along the path (RFC 4514 strings), leaf first.
    pub fn subjects(&self) -> Vec<String> {
        self.path.iter().map(Certificate::subject).collect()
    }
}

/// Why a certificate chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// No trust anchor or supplied CA certificate has the subject that issued `subject`: the
    /// chain does not lead to the zone CA (CE3). Displays [`NO_ISSUER_MESSAGE`].
    #[error(
        "{NO_ISSUER_MESSAGE} (no trust anchor or supplied CA certificate is the issuer \
         \"{issuer}\" of \"{subject}\")"
    )]
    NoIssuer {
        /// The certificate whose issuer was not found.
        subject: String,
        /// The issuer name sought.
        issuer: String,
    },
    /// A certificate's validity ended before the validation time.
    #[error("{role} \"{subject}\" expired at {not_after} (checked at {at}): renew it")]
    Expired {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
        /// Its notAfter.
        not_after: Timestamp,
        /// The validation time.
        at: Timestamp,
    },
    /// A certificate's validity starts after the validation time.
    #[error(
        "{role} \"{subject}\" is not valid before {not_before} (checked at {at}): check the \
         clocks, or wait"
    )]
    NotYetValid {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
        /// Its notBefore.
        not_before: Timestamp,
        /// The validation time.
        at: Timestamp,
    },
    /// A signature uses SHA-1 or MD5 (S7).
    #[error(
        "the signature on \"{subject}\" uses {oid}, a broken hash (SHA-1 or MD5), and is \
         refused: reissue the certificate with SHA-256 or better"
    )]
    WeakSignatureAlgorithm {
        /// The signed certificate.
        subject: String,
        /// The signature algorithm.
        oid: ObjectIdentifier,
    },
    /// A certificate's signature does not verify under its presumed issuer's key.
    #[error("the signature on \"{subject}\" by \"{issuer}\" is not accepted: {source}")]
    BadSignature {
        /// The signed certificate.
        subject: String,
        /// The presumed issuer.
        issuer: String,
        /// Why.
        source: SignatureError,
    },
    /// A certificate used to issue another one is not a CA certificate (RFC 5280 4.2.1.9).
    #[error(
        "{role} \"{subject}\" signs other certificates but basicConstraints does not say \
         CA:TRUE (RFC 5280 4.2.1.9)"
    )]
    NotCa {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
    },
    /// The trust anchor's basicConstraints is not marked critical (RFC 5280 4.2.1.9; an
    /// intermediate's may be non-critical, see [`verify_chain`]).
    #[error("{role} \"{subject}\" has a non-critical basicConstraints (RFC 5280 4.2.1.9)")]
    BasicConstraintsNotCritical {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
    },
    /// A CA certificate's keyUsage does not allow signing certificates (RFC 5280 4.2.1.3).
    #[error("{role} \"{subject}\" has a keyUsage without keyCertSign (RFC 5280 4.2.1.3)")]
    KeyCertSignMissing {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
    },
    /// keyUsage and basicConstraints contradict each other (RFC 5280 4.2.1.3, 4.2.1.9).
    #[error("{role} \"{subject}\": {reason}")]
    InconsistentCaExtensions {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
        /// The contradiction.
        reason: &'static str,
    },
    /// More non-self-issued intermediates follow a CA than its pathLenConstraint allows.
    #[error(
        "{role} \"{subject}\" allows {path_len} intermediate CA certificates below it \
         (pathLenConstraint) but the path has {intermediates}"
    )]
    PathLenExceeded {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
        /// Its pathLenConstraint.
        path_len: u8,
        /// Non-self-issued intermediates below it, leaf excluded.
        intermediates: usize,
    },
    /// The path would need more intermediates than [`Limits::max_depth`].
    #[error("the chain would need more than {max_depth} intermediate CA certificates")]
    TooDeep {
        /// The limit.
        max_depth: usize,
    },
    /// Path building gave up: too many candidate issuers (S7: bounded work on hostile input).
    #[error(
        "chain building gave up after {max_signature_checks} signature checks: supply only the \
         intermediate CA certificates of this chain"
    )]
    WorkLimitExceeded {
        /// The limit.
        max_signature_checks: usize,
    },
    /// Checking nameConstraints gave up: the certificates carry too many names or subtrees
    /// (S7: bounded work on hostile input).
    #[error(
        "checking nameConstraints gave up after {max_name_comparisons} name comparisons: the \
         certificates carry too many names or constraints"
    )]
    NameConstraintWorkExceeded {
        /// The limit.
        max_name_comparisons: usize,
    },
    /// A critical extension the validator does not process (RFC 5280 4.2: such a certificate
    /// must be rejected).
    #[error(
        "{role} \"{subject}\" has the critical extension {}, which the zone validator does not \
         process (RFC 5280 4.2)",
        ExtId(*oid)
    )]
    UnsupportedCriticalExtension {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
        /// The extension.
        oid: ObjectIdentifier,
    },
    /// An extension RFC 5280 requires to be non-critical is critical.
    #[error(
        "{role} \"{subject}\" marks {} critical; RFC 5280 requires it non-critical",
        ExtId(*oid)
    )]
    ExtensionMustNotBeCritical {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
        /// The extension.
        oid: ObjectIdentifier,
    },
    /// The same extension appears twice (RFC 5280 4.2).
    #[error("{role} \"{subject}\" has the extension {} more than once (RFC 5280 4.2)", ExtId(*oid))]
    DuplicateExtension {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
        /// The extension.
        oid: ObjectIdentifier,
    },
    /// An extension the validator reads does not decode.
    #[error("{role} \"{subject}\" has a malformed {} extension: {reason}", ExtId(*oid))]
    MalformedExtension {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
        /// The extension.
        oid: ObjectIdentifier,
        /// The decoder's explanation.
        reason: String,
    },
    /// Not an X.509 v3 certificate.
    #[error("{role} \"{subject}\" is X.509 v{version}; only v3 certificates are accepted")]
    UnsupportedVersion {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
        /// 1, 2 or 3.
        version: u8,
    },
    /// The signature algorithm inside the signed part differs from the outer one (RFC 5280
    /// 4.1.1.2).
    #[error(
        "{role} \"{subject}\" names different signature algorithms inside and outside its signed \
         part (RFC 5280 4.1.1.2)"
    )]
    SignatureAlgorithmMismatch {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
    },
    /// A serial number that is zero, negative or longer than 20 octets (RFC 5280 4.1.2.2).
    #[error("{role} \"{subject}\" has an invalid serial number: {reason} (RFC 5280 4.1.2.2)")]
    InvalidSerial {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An empty issuer name, or an empty subject name on a CA (RFC 5280 4.1.2.4, 4.1.2.6).
    #[error("{role} \"{subject}\" has an empty {field} name (RFC 5280 4.1.2.4, 4.1.2.6)")]
    EmptyName {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
        /// `issuer` or `subject`.
        field: &'static str,
    },
    /// A name of a certificate breaks the nameConstraints of a CA above it (RFC 5280
    /// 4.2.1.10, 6.1.3 (b), (c)).
    #[error(
        "{role} \"{subject}\" is refused by the nameConstraints of the {ca_role} \"{ca}\": \
         {reason} (RFC 5280 4.2.1.10)"
    )]
    NameConstraint {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
        /// Where the constraining CA sits in the path.
        ca_role: Role,
        /// The constraining CA's subject.
        ca: String,
        /// Which name, and why.
        reason: String,
    },
    /// A policyConstraints extension requires an explicit certificate policy, which the zone
    /// validator does not evaluate (RFC 5280 4.2.1.11, 6.1.4 (i)).
    #[error(
        "{role} \"{subject}\" has a policyConstraints with requireExplicitPolicy: the path would \
         have to satisfy certificate policies, which the zone validator does not evaluate \
         (RFC 5280 4.2.1.11); use a CA without this constraint"
    )]
    ExplicitPolicyRequired {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
    },
    /// A public key the zone does not accept (S2).
    #[error("{role} \"{subject}\" has an unusable public key: {reason}")]
    UnsupportedKey {
        /// Which certificate.
        role: Role,
        /// Its subject.
        subject: String,
        /// Why.
        reason: String,
    },
}

impl ChainError {
    /// How informative an error is when backtracking produced several: not finding an issuer
    /// at all says least, anything specific about a certificate says more.
    fn rank(&self) -> u8 {
        match self {
            ChainError::NoIssuer { .. } => 0,
            _ => 1,
        }
    }
}

/// Validates `leaf` at `at` through `intermediates` (untrusted, any order, extra ones ignored)
/// to one of `anchors`, with the default [`Limits`].
///
/// A leaf that is itself one of the anchors is accepted after its own checks (validity,
/// structure, extensions). When no path exists, the error is the most informative failure met
/// while backtracking: a specific fault of a certificate (expired, bad signature, not a CA, ...)
/// rather than [`ChainError::NoIssuer`], and the one deepest in the path first.
pub fn verify_chain(
    leaf: &Certificate,
    intermediates: &[Certificate],
    anchors: &[Certificate],
    at: Timestamp,
) -> Result<VerifiedChain, ChainError> {
    verify_chain_with(leaf, intermediates, anchors, at, Limits::default())
}

/// [`verify_chain`] with explicit work limits.
pub fn verify_chain_with(
    leaf: &Certificate,
    intermediates: &[Certificate],
    anchors: &[Certificate],
    at: Timestamp,
    limits: Limits,
) -> Result<VerifiedChain, ChainError> {
    let leaf_facts = check_certificate(leaf, Role::Leaf, at)?;
    if anchors.contains(leaf) {
        // Direct trust: the leaf is pinned, nothing above it to check.
        return Ok(VerifiedChain {
            path: vec![leaf.clone()],
        });
    }
    let mut search = Search::new(leaf, leaf_facts, intermediates, anchors, at, limits);
    let mut path = vec![0];
    if search.extend(&mut path, 0)? {
        let path = path.into_iter().map(|i| search.certs[i].clone()).collect();
        return Ok(VerifiedChain { path });
    }
    Err(search
        .best
        .map(|(_, _, e)| e)
        .unwrap_or_else(|| ChainError::NoIssuer {
            subject: leaf.subject(),
            issuer: leaf.issuer(),
        }))
}

/// What the path builder needs to know about a certificate that passed its own checks.
#[derive(Debug, Clone)]
struct Facts {
    /// pathLenConstraint (only meaningful on CAs, which are the only certificates asked).
    path_len: Option<u8>,
    /// authorityKeyIdentifier's keyIdentifier, to order candidate issuers.
    authority_key_id: Option<Vec<u8>>,
    /// Subject equals issuer (RFC 5280 6.1: "self-issued").
    self_issued: bool,
    /// nameConstraints, checked against every certificate below this one in a path.
    name_constraints: Option<Arc<Constraints>>,
}

/// State of one path search. Certificates are numbered: 0 is the leaf, then the anchors, then
/// the intermediates (duplicates removed), so trust anchors are tried before intermediates.
struct Search<'a> {
    certs: Vec<&'a Certificate>,
    /// Each certificate's subject and issuer in the form RFC 5280 7.1 compares, prepared once.
    subjects: Vec<NameKey>,
    issuers: Vec<NameKey>,
    /// Index of the first intermediate in `certs`.
    first_intermediate: usize,
    /// Each certificate's own checks, computed once (the leaf's are already done).
    facts: Vec<Option<Result<Facts, ChainError>>>,
    /// Signature results by (child, issuer): a branch met again costs budget, not crypto.
    signatures: HashMap<(usize, usize), Result<(), SignatureError>>,
    at: Timestamp,
    limits: Limits,
    /// Signature checks considered so far.
    checks: usize,
    /// nameConstraints comparisons left ([`Limits::max_name_comparisons`]).
    name_budget: usize,
    /// The most informative failure so far: (rank, depth, error).
    best: Option<(u8, usize, ChainError)>,
}

impl<'a> Search<'a> {
    fn new(
        leaf: &'a Certificate,
        leaf_facts: Facts,
        intermediates: &'a [Certificate],
        anchors: &'a [Certificate],
        at: Timestamp,
        limits: Limits,
    ) -> Self {
        let mut seen: HashSet<&[u8]> = HashSet::new();
        seen.insert(leaf.der().as_bytes());
        let mut certs = vec![leaf];
        certs.extend(anchors.iter().filter(|c| seen.insert(c.der().as_bytes())));
        let first_intermediate = certs.len();
        certs.extend(
            intermediates
                .iter()
                .filter(|c| seen.insert(c.der().as_bytes())),
        );
        let mut facts = vec![None; certs.len()];
        facts[0] = Some(Ok(leaf_facts));
        let subjects = certs
            .iter()
            .map(|c| NameKey::of(c.subject_name()))
            .collect();
        let issuers = certs.iter().map(|c| NameKey::of(c.issuer_name())).collect();
        Search {
            certs,
            subjects,
            issuers,
            first_intermediate,
            facts,
            signatures: HashMap::new(),
            at,
            limits,
            checks: 0,
            name_budget: limits.max_name_comparisons,
            best: None,
        }
    }

    fn role(&self, i: usize) -> Role {
        if i == 0 {
            Role::Leaf
        } else if i < self.first_intermediate {
            Role::Anchor
        } else {
            Role::Intermediate
        }
    }

    fn facts(&mut self, i: usize) -> Result<Facts, ChainError> {
        if let Some(done) = &self.facts[i] {
            return done.clone();
        }
        let result = check_certificate(self.certs[i], self.role(i), self.at);
        self.facts[i] = Some(result.clone());
        result
    }

    /// Keeps `error` if it says more than what was recorded so far (see [`verify_chain`]).
    fn record(&mut self, depth: usize, error: ChainError) {
        let rank = error.rank();
        if self
            .best
            .as_ref()
            .is_none_or(|(r, d, _)| (rank, depth) > (*r, *d))
        {
            self.best = Some((rank, depth, error));
        }
    }

    /// Tries to finish `path` (leaf first; its last certificate still needs an issuer) at a
    /// trust anchor. `below` is the number of non-self-issued intermediates in `path`, which is
    /// both what a new issuer's pathLenConstraint is checked against (RFC 5280 6.1.4 (l)) and
    /// the depth [`Limits::max_depth`] bounds. Returns `Ok(true)` with the anchor appended, or
    /// `Ok(false)` with `path` unchanged; `Err` only when the work limit is exceeded.
    fn extend(&mut self, path: &mut Vec<usize>, below: usize) -> Result<bool, ChainError> {
        let child = *path.last().expect("a path always holds the leaf");
        let child_cert = self.certs[child];
        let depth = path.len();
        // RFC 5280 6.1.3 (a)(4): the issuer's subject is the child's issuer name, matched as
        // RFC 5280 7.1 says ([`names_match`]; exact equality first). A CA already on the path
        // (same subject and same key, whatever the certificate) is never used again (RFC 4158
        // 5.2 loop detection, as rustls-webpki does): that ends cycles, and a path never goes
        // round a ring of cross-certificates.
        let mut candidates: Vec<usize> = (1..self.certs.len())
            .filter(|&i| self.name_matches(i, child))
            .filter(|&i| !path.iter().any(|&p| self.same_ca(p, i)))
            .collect();
        if candidates.is_empty() {
            let error = ChainError::NoIssuer {
                subject: child_cert.subject(),
                issuer: child_cert.issuer(),
            };
            self.record(depth, error);
            return Ok(false);
        }
        // RFC 5280 4.2.1.1: the authority key identifier helps choose among same-name issuers.
        // It only orders the candidates (matching first, mismatching last): an absent or wrong
        // identifier is not an error. Anchors come before intermediates at equal rank.
        let child_aki = self.facts(child).ok().and_then(|f| f.authority_key_id);
        candidates.sort_by_cached_key(|&i| {
            let ski = self.certs[i].subject_key_id().ok().flatten();
            let rank = match (&child_aki, ski) {
                (Some(aki), Some(ski)) if *aki == ski => 0,
                (Some(_), Some(_)) => 2,
                _ => 1,
            };
            (rank, i)
        });
        for issuer in candidates {
            let role = self.role(issuer);
            let issuer_cert = self.certs[issuer];
            let facts = match self.facts(issuer) {
                Ok(facts) => facts,
                Err(error) => {
                    self.record(depth, error);
                    continue;
                }
            };
            if let Some(path_len) = facts.path_len
                && below > usize::from(path_len)
            {
                let error = ChainError::PathLenExceeded {
                    role,
                    subject: issuer_cert.subject(),
                    path_len,
                    intermediates: below,
                };
                self.record(depth, error);
                continue;
            }
            // RFC 5280 6.1.3 (b), (c), 6.1.4 (g): the issuer's nameConstraints bind every
            // certificate below it, self-issued intermediates excepted.
            if let Some(nc) = &facts.name_constraints
                && let Err(error) = self.check_name_constraints(path, nc, issuer_cert, role)
            {
                if let ChainError::NameConstraintWorkExceeded { .. } = error {
                    return Err(error);
                }
                self.record(depth, error);
                continue;
            }
            let below_next = below + usize::from(!facts.self_issued);
            if role == Role::Intermediate && below_next > self.limits.max_depth {
                self.record(
                    depth,
                    ChainError::TooDeep {
                        max_depth: self.limits.max_depth,
                    },
                );
                continue;
            }
            // S7: every candidate considered costs budget, remembered result or not, so the
            // number of search steps is bounded too.
            self.checks += 1;
            if self.checks > self.limits.max_signature_checks {
                let max_signature_checks = self.limits.max_signature_checks;
                return Err(ChainError::WorkLimitExceeded {
                    max_signature_checks,
                });
            }
            if let Err(error) = self.signature(child, issuer) {
                let error = match error {
                    SignatureError::WeakHash { oid } => ChainError::WeakSignatureAlgorithm {
                        subject: child_cert.subject(),
                        oid,
                    },
                    source => ChainError::BadSignature {
                        subject: child_cert.subject(),
                        issuer: issuer_cert.subject(),
                        source,
                    },
                };
                self.record(depth, error);
                continue;
            }
            path.push(issuer);
            if role == Role::Anchor || self.extend(path, below_next)? {
                return Ok(true);
            }
            path.pop();
        }
        Ok(false)
    }

    /// `nc`, the nameConstraints of `ca`, against every certificate of `path` (RFC 5280 6.1.3
    /// (b), (c): the leaf always, intermediates unless self-issued).
    fn check_name_constraints(
        &mut self,
        path: &[usize],
        nc: &Constraints,
        ca: &Certificate,
        ca_role: Role,
    ) -> Result<(), ChainError> {
        for (position, &i) in path.iter().enumerate() {
            let leaf = position == 0;
            if !leaf && self.facts(i).is_ok_and(|f| f.self_issued) {
                continue;
            }
            let cert = self.certs[i];
            nc.check(cert, leaf, &mut self.name_budget)
                .map_err(|refusal| match refusal {
                    Refusal::Name(reason) => ChainError::NameConstraint {
                        role: self.role(i),
                        subject: cert.subject(),
                        ca_role,
                        ca: ca.subject(),
                        reason,
                    },
                    Refusal::Budget => ChainError::NameConstraintWorkExceeded {
                        max_name_comparisons: self.limits.max_name_comparisons,
                    },
                })?;
        }
        Ok(())
    }

    /// Whether certificate `issuer`'s subject matches certificate `child`'s issuer name.
    fn name_matches(&self, issuer: usize, child: usize) -> bool {
        self.certs[issuer].subject_name() == self.certs[child].issuer_name()
            || self.subjects[issuer] == self.issuers[child]
    }

    /// Same subject and same public key: the same CA, whichever certificate says so.
    fn same_ca(&self, a: usize, b: usize) -> bool {
        self.subjects[a] == self.subjects[b]
            && self.certs[a].public_key() == self.certs[b].public_key()
    }

    /// RFC 5280 6.1.3 (a)(1): `child`'s signature under `issuer`'s public key.
    fn signature(&mut self, child: usize, issuer: usize) -> Result<(), SignatureError> {
        let certs = &self.certs;
        self.signatures
            .entry((child, issuer))
            .or_insert_with(|| {
                let (c, i) = (certs[child], certs[issuer]);
                let signature = c.signature().ok_or(SignatureError::Invalid)?;
                key::verify_signature(
                    i.public_key(),
                    c.signature_algorithm(),
                    c.tbs_der(),
                    signature,
                )
            })
            .clone()
    }
}

/// Everything about one certificate that does not depend on the rest of the path.
fn check_certificate(cert: &Certificate, role: Role, at: Timestamp) -> Result<Facts, ChainError> {
    let subject = || cert.subject();
    let tbs = cert.x509().tbs_certificate();
    // RFC 5280 4.1.2.1: extensions exist only in v3; without them a CA cannot say it is one and a
    // server certificate cannot carry its DNS names. CABF 7.1.1 likewise requires v3.
    if cert.version() != 2 {
        return Err(ChainError::UnsupportedVersion {
            role,
            subject: subject(),
            version: cert.version().saturating_add(1),
        });
    }
    // RFC 5280 4.1.1.2: the outer signatureAlgorithm MUST equal tbsCertificate.signature, or
    // the signed part does not say how it was signed.
    if tbs.signature() != cert.signature_algorithm() {
        return Err(ChainError::SignatureAlgorithmMismatch {
            role,
            subject: subject(),
        });
    }
    // Not on anchors: trust in them is by choice, and real roots break the rule (Starfield Root
    // Certificate Authority - G2 has serial 0, x509-limbo online::fastly.com).
    if role != Role::Anchor {
        check_serial(cert.serial()).map_err(|reason| ChainError::InvalidSerial {
            role,
            subject: subject(),
            reason,
        })?;
    }
    // RFC 5280 4.1.2.4: "The issuer field MUST contain a non-empty distinguished name".
    if cert.issuer_name().is_empty() {
        return Err(ChainError::EmptyName {
            role,
            subject: subject(),
            field: "issuer",
        });
    }
    let ext = check_extensions(cert, role)?;
    check_key(cert).map_err(|reason| ChainError::UnsupportedKey {
        role,
        subject: subject(),
        reason,
    })?;
    let (bc_critical, is_ca, path_len) = match ext.basic_constraints {
        Some((critical, bc)) => (critical, bc.ca, bc.path_len_constraint),
        None => (false, false, None),
    };
    let key_cert_sign = ext
        .key_usage
        .map(|ku| ku.0.contains(KeyUsages::KeyCertSign));
    match role {
        Role::Intermediate | Role::Anchor => {
            // RFC 5280 4.1.2.6: a CA's subject MUST be non-empty (issuers are found by it).
            if cert.subject_name().is_empty() {
                return Err(ChainError::EmptyName {
                    role,
                    subject: subject(),
                    field: "subject",
                });
            }
            // RFC 5280 6.1.4 (k): only a CA:TRUE key verifies certificates. The extension must
            // be present, but its criticality is a duty of the issuing CA (4.2.1.9: "MUST mark
            // the extension as critical"), not a condition of path validation: an intermediate
            // with a non-critical basicConstraints is valid, as in OpenSSL's default mode,
            // rustls-webpki and Go. The trust anchor is held to the CA profile because the zone
            // chooses it and x509-limbo requires it (rfc5280::root-non-critical-basic-constraints).
            if !is_ca {
                return Err(ChainError::NotCa {
                    role,
                    subject: subject(),
                });
            }
            if !bc_critical && role == Role::Anchor {
                return Err(ChainError::BasicConstraintsNotCritical {
                    role,
                    subject: subject(),
                });
            }
            // RFC 5280 4.2.1.3 and 6.1.4 (n): keyCertSign when keyUsage is present.
            if key_cert_sign == Some(false) {
                return Err(ChainError::KeyCertSignMissing {
                    role,
                    subject: subject(),
                });
            }
        }
        Role::Leaf => {
            let inconsistent = |reason| ChainError::InconsistentCaExtensions {
                role,
                subject: subject(),
                reason,
            };
            // RFC 5280 4.2.1.3: "If the keyCertSign bit is asserted, then the cA bit in the
            // basic constraints extension MUST also be asserted."
            if key_cert_sign == Some(true) && !is_ca {
                return Err(inconsistent(
                    "keyUsage asserts keyCertSign but basicConstraints does not say CA:TRUE \
                     (RFC 5280 4.2.1.3)",
                ));
            }
            // A CA whose key may not sign certificates is a contradiction (x509-limbo
            // rfc5280::root-inconsistent-ca-extensions; CABF 7.1.2.7.8).
            if is_ca && key_cert_sign == Some(false) {
                return Err(inconsistent(
                    "basicConstraints says CA:TRUE but keyUsage lacks keyCertSign \
                     (RFC 5280 4.2.1.3, 4.2.1.9)",
                ));
            }
            // RFC 5280 4.2.1.9: no pathLenConstraint unless cA is asserted.
            if path_len.is_some() && !is_ca {
                return Err(inconsistent(
                    "pathLenConstraint without CA:TRUE in basicConstraints (RFC 5280 4.2.1.9)",
                ));
            }
        }
    }
    // RFC 5280 4.1.2.5 and 6.1.3 (a)(2): notBefore <= at <= notAfter, both inclusive; `at` has
    // whole seconds, so a fractional validation time is floored (x509-limbo
    // rfc5280::validity::*-fractional).
    if at < cert.not_before() {
        return Err(ChainError::NotYetValid {
            role,
            subject: subject(),
            not_before: cert.not_before(),
            at,
        });
    }
    if at > cert.not_after() {
        return Err(ChainError::Expired {
            role,
            subject: subject(),
            not_after: cert.not_after(),
            at,
        });
    }
    Ok(Facts {
        path_len,
        authority_key_id: ext.authority_key_id,
        // RFC 5280 6.1: "the same DN appears in the subject and issuer fields", matched as 7.1
        // says.
        self_issued: names_match(cert.subject_name(), cert.issuer_name()),
        name_constraints: ext.name_constraints.map(Arc::new),
    })
}

/// RFC 5280 4.1.2.2: "The serial number MUST be a positive integer" and "Conforming CAs MUST
/// NOT use serialNumber values longer than 20 octets". `bytes` is the DER INTEGER's content
/// (two's complement, minimal).
fn check_serial(bytes: &[u8]) -> Result<(), &'static str> {
    match bytes {
        [first, ..] if first & 0x80 != 0 => Err("negative"),
        _ if bytes.iter().all(|b| *b == 0) => Err("zero"),
        // A leading 0x00 only keeps the sign positive; it is not part of the value.
        [0, rest @ ..] if rest.len() > 20 => Err("longer than 20 octets"),
        [first, ..] if *first != 0 && bytes.len() > 20 => Err("longer than 20 octets"),
        _ => Ok(()),
    }
}

/// The public key must be one the zone can use (S2: P-256, P-384 seen in external chains, RSA
/// of at least 2048 bits). RSA moduli that are not a whole number of bytes are refused too
/// (CABF BR 6.1.5): no zone or public CA makes them.
fn check_key(cert: &Certificate) -> Result<(), String> {
    match KeyAlgorithm::of_spki(cert.public_key()) {
        Ok(KeyAlgorithm::Rsa { bits }) if bits < 2048 || bits % 8 != 0 => Err(format!(
            "RSA key of {bits} bits (at least 2048 bits, a multiple of 8, are required)"
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// The extensions the checks need, decoded.
struct Extensions {
    basic_constraints: Option<(bool, BasicConstraints)>,
    key_usage: Option<KeyUsage>,
    authority_key_id: Option<Vec<u8>>,
    name_constraints: Option<Constraints>,
}

/// RFC 5280 4.2: no extension twice, every critical extension processed, and the extensions read
/// here well-formed (a malformed one makes the certificate invalid, 4.2).
fn check_extensions(cert: &Certificate, role: Role) -> Result<Extensions, ChainError> {
    let subject = || cert.subject();
    let mut seen: Vec<ObjectIdentifier> = Vec::new();
    let mut out = Extensions {
        basic_constraints: None,
        key_usage: None,
        authority_key_id: None,
        name_constraints: None,
    };
    for (id, critical, value) in cert.extensions() {
        if seen.contains(&id) {
            return Err(ChainError::DuplicateExtension {
                role,
                subject: subject(),
                oid: id,
            });
        }
        seen.push(id);
        let malformed = |e: der::Error| ChainError::MalformedExtension {
            role,
            subject: subject(),
            oid: id,
            reason: e.to_string(),
        };
        let must_not_be_critical = || {
            if critical {
                Err(ChainError::ExtensionMustNotBeCritical {
                    role,
                    subject: subject(),
                    oid: id,
                })
            } else {
                Ok(())
            }
        };
        match id {
            oid::BASIC_CONSTRAINTS => {
                let bc = BasicConstraints::from_der(value).map_err(malformed)?;
                out.basic_constraints = Some((critical, bc));
            }
            oid::KEY_USAGE => out.key_usage = Some(KeyUsage::from_der(value).map_err(malformed)?),
            // Read for well-formedness only: hostname matching, EKU and policies are not the
            // zone validator's job (S7), and with RFC 5280 6.1.1's default inputs (any policy,
            // no explicit policy) a critical certificatePolicies cannot invalidate a path.
            oid::SUBJECT_ALT_NAME => decodes::<SubjectAltName>(value).map_err(malformed)?,
            oid::EXT_KEY_USAGE => decodes::<ExtendedKeyUsage>(value).map_err(malformed)?,
            oid::CERTIFICATE_POLICIES => {
                decodes::<CertificatePolicies>(value).map_err(malformed)?
            }
            // RFC 5280 4.2.1.1, 4.2.1.2, 4.2.2.1: conforming CAs MUST mark these non-critical.
            oid::AUTHORITY_KEY_ID => {
                must_not_be_critical()?;
                let aki = AuthorityKeyIdentifier::from_der(value).map_err(malformed)?;
                // X.509 (10/2019) 9.2.2.1: authorityCertIssuer and authorityCertSerialNumber are
                // both present or both absent.
                if aki.authority_cert_issuer.is_some() != aki.authority_cert_serial_number.is_some()
                {
                    return Err(ChainError::MalformedExtension {
                        role,
                        subject: subject(),
                        oid: id,
                        reason: "authorityCertIssuer without authorityCertSerialNumber, or the \
                                 reverse"
                            .into(),
                    });
                }
                out.authority_key_id = aki.key_identifier.map(|k| k.as_bytes().to_vec());
            }
            oid::SUBJECT_KEY_ID => {
                must_not_be_critical()?;
                decodes::<SubjectKeyIdentifier>(value).map_err(malformed)?;
            }
            oid::AUTHORITY_INFO_ACCESS => {
                must_not_be_critical()?;
                let aia = AuthorityInfoAccessSyntax::from_der(value).map_err(malformed)?;
                // RFC 5280 4.2.2.1: AuthorityInfoAccessSyntax is SEQUENCE SIZE (1..MAX).
                if aia.0.is_empty() {
                    return Err(ChainError::MalformedExtension {
                        role,
                        subject: subject(),
                        oid: id,
                        reason: "no access description".into(),
                    });
                }
            }
            // Processed for dNSName, directoryName and iPAddress, critical or not; a constraint
            // on another form refuses the certificates below that have such a name
            // (constraints.rs). An empty or ill-formed extension is malformed.
            oid::NAME_CONSTRAINTS => {
                let nc = NameConstraints::from_der(value).map_err(malformed)?;
                let nc =
                    Constraints::new(&nc).map_err(|reason| ChainError::MalformedExtension {
                        role,
                        subject: subject(),
                        oid: id,
                        reason,
                    })?;
                out.name_constraints = Some(nc);
            }
            // Certificate policies (RFC 5280 6.1.3 (d)-(f), 6.1.4 (a)-(j)): with the zone's inputs
            // (user-initial-policy-set anyPolicy, initial-explicit-policy,
            // initial-policy-mapping-inhibit and initial-any-policy-inhibit all false), the
            // policy tree can only invalidate a path once explicit_policy reaches 0, and only a
            // requireExplicitPolicy can bring it there (it starts at n + 1 and loses at most one
            // per certificate). So: requireExplicitPolicy is refused, critical or not;
            // inhibitPolicyMapping, policy mappings and inhibitAnyPolicy only shape the tree and
            // are accepted once well-formed, with 6.1.4 (a)'s one direct rule (no anyPolicy in a
            // mapping) enforced.
            oid::POLICY_CONSTRAINTS => {
                let pc = PolicyConstraints::from_der(value).map_err(malformed)?;
                if pc.require_explicit_policy.is_none() && pc.inhibit_policy_mapping.is_none() {
                    return Err(ChainError::MalformedExtension {
                        role,
                        subject: subject(),
                        oid: id,
                        reason: "an empty sequence (RFC 5280 4.2.1.11)".into(),
                    });
                }
                if pc.require_explicit_policy.is_some() {
                    return Err(ChainError::ExplicitPolicyRequired {
                        role,
                        subject: subject(),
                    });
                }
            }
            oid::POLICY_MAPPINGS => {
                let pm = PolicyMappings::from_der(value).map_err(malformed)?;
                if pm.0.iter().any(|m| {
                    m.issuer_domain_policy == oid::ANY_POLICY
                        || m.subject_domain_policy == oid::ANY_POLICY
                }) {
                    return Err(ChainError::MalformedExtension {
                        role,
                        subject: subject(),
                        oid: id,
                        reason: "anyPolicy in a policy mapping (RFC 5280 4.2.1.5, 6.1.4 (a))"
                            .into(),
                    });
                }
            }
            oid::INHIBIT_ANY_POLICY => decodes::<InhibitAnyPolicy>(value).map_err(malformed)?,
            // Every other extension is not processed: fine when non-critical, a refusal when
            // critical (RFC 5280 4.2).
            _ if critical => {
                return Err(ChainError::UnsupportedCriticalExtension {
                    role,
                    subject: subject(),
                    oid: id,
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Whether `value` decodes as a `T` (for extensions read only to refuse malformed ones).
fn decodes<'a, T: Decode<'a, Error = der::Error>>(value: &'a [u8]) -> der::Result<()> {
    T::from_der(value).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_rules() {
        assert_eq!(check_serial(&[0x01]), Ok(()));
        assert_eq!(check_serial(&[0x00]), Err("zero"));
        assert_eq!(check_serial(&[0xff, 0x01]), Err("negative"));
        let mut twenty = vec![0x80; 20];
        twenty.insert(0, 0);
        assert_eq!(
            check_serial(&twenty),
            Ok(()),
            "20 value octets plus a sign octet"
        );
        assert_eq!(check_serial(&[0x7f; 20]), Ok(()));
        assert_eq!(check_serial(&[0x7f; 21]), Err("longer than 20 octets"));
    }

    #[test]
    fn no_issuer_message_is_the_manuals_sentence() {
        let e = ChainError::NoIssuer {
            subject: "CN=leaf".into(),
            issuer: "CN=ca".into(),
        };
        let shown = e.to_string();
        assert!(shown.starts_with(NO_ISSUER_MESSAGE), "{shown}");
        let rest = &shown[NO_ISSUER_MESSAGE.len()..];
        assert!(rest.starts_with(" (") && rest.ends_with(')'), "{rest}");
    }

    #[test]
    fn default_limits() {
        assert_eq!(
            Limits::default(),
            Limits {
                max_depth: 8,
                max_signature_checks: 64,
                max_name_comparisons: 250_000,
            }
        );
    }
}
