//! Pre-flight lint (B4): every certificate the crate makes or imports is checked against the
//! zone's profile before it is stored or staged, and the chains the fleet will meet are built
//! for the activation time before an operation can be assigned.
//!
//! A check yields [`Finding`]s, each naming the certificate (subject and SHA-256 fingerprint)
//! and the [`Rule`]. A finding of [`Severity::Error`] always refuses; one of
//! [`Severity::Warning`] is legal but risky, and refuses until the administrator acknowledges
//! its rule ([`enforce`]). The checks do no I/O and never panic on hostile input.

use std::fmt;

use serde::{Deserialize, Serialize};
use x509_cert::ext::pkix::KeyUsages;

use crate::cert::{Certificate, Fingerprint, ext_oid};
use crate::chain::verify_chain;
use crate::clock::Timestamp;
use crate::key::KeyAlgorithm;

/// id-kp-serverAuth and id-kp-clientAuth (RFC 5280 4.2.1.12).
const KP_SERVER_AUTH: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const KP_CLIENT_AUTH: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
/// Signature algorithms that are no longer acceptable (SHA-1, MD5 with RSA or ECDSA).
const WEAK_SIGNATURES: [(&str, &str); 4] = [
    ("1.2.840.113549.1.1.4", "md5WithRSAEncryption"),
    ("1.2.840.113549.1.1.5", "sha1WithRSAEncryption"),
    ("1.2.840.10045.4.1", "ecdsa-with-SHA1"),
    ("1.2.840.10040.4.3", "dsa-with-SHA1"),
];
/// The smallest RSA modulus accepted.
pub const MIN_RSA_BITS: u32 = 2048;

/// A lint rule. Its name (`snake_case`, as serialised) is what an administrator acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Rule {
    /// The certificate is not X.509 version 3 (extensions need v3).
    NotV3,
    /// An extension the profile reads cannot be decoded.
    UnreadableExtension,
    /// A CA certificate without basicConstraints cA TRUE (RFC 5280 4.2.1.9).
    CaBasicConstraints,
    /// A CA certificate whose basicConstraints is not marked critical (RFC 5280 4.2.1.9 MUST;
    /// legal for some deployed roots, so a warning).
    CaBasicConstraintsNotCritical,
    /// A CA certificate whose keyUsage is absent or lacks keyCertSign (RFC 5280 4.2.1.3).
    CaKeyUsage,
    /// A server certificate that is a CA, or whose basicConstraints is missing (S4).
    LeafBasicConstraints,
    /// A server certificate whose keyUsage lacks digitalSignature or allows certificate or CRL
    /// signing.
    LeafKeyUsage,
    /// A server certificate without keyUsage (legal, RFC 5280 4.2.1.3, and common from
    /// external CAs: a notice).
    LeafKeyUsageAbsent,
    /// A server certificate whose extendedKeyUsage lacks serverAuth or clientAuth (the zone's
    /// servers are TLS servers and clients, S4).
    LeafExtKeyUsage,
    /// A server certificate without extendedKeyUsage (legal: any purpose; a warning).
    LeafExtKeyUsageAbsent,
    /// No subjectKeyIdentifier: required on CAs (RFC 5280 4.2.1.2), expected on leaves.
    SubjectKeyIdMissing,
    /// No authorityKeyIdentifier on a certificate that is not self-signed (RFC 5280 4.2.1.1).
    AuthorityKeyIdMissing,
    /// The authorityKeyIdentifier is not the issuer's subjectKeyIdentifier: the chain is not
    /// continuous.
    AuthorityKeyIdMismatch,
    /// The certificate is valid after its issuer expires.
    OutlivesIssuer,
    /// The subjectAltName does not hold the server's FQDN (RFC 6125: clients match SANs).
    SanMissingFqdn,
    /// The FQDN is covered only by a wildcard SAN: accepted from an external CA (CE4), but
    /// it vouches for every name of the domain.
    SanWildcard,
    /// The serial number is zero or negative (RFC 5280 4.1.2.2).
    SerialNotPositive,
    /// The serial number is longer than 20 octets (RFC 5280 4.1.2.2).
    SerialTooLong,
    /// Signed with SHA-1 or MD5.
    WeakSignatureAlgorithm,
    /// An RSA key shorter than 2048 bits.
    RsaKeyTooSmall,
    /// A public key of a type the zone cannot use.
    UnsupportedKey,
    /// A validity time in the wrong encoding: UTCTime through 2049, GeneralizedTime from 2050
    /// (RFC 5280 4.1.2.5).
    ValidityEncoding,
    /// notAfter before notBefore.
    ValidityInverted,
    /// A chain the fleet will meet at activation does not validate (B4).
    ChainAtActivation,
}

impl Rule {
    /// Every rule, in declaration order.
    pub const ALL: [Rule; 24] = [
        Rule::NotV3,
        Rule::UnreadableExtension,
        Rule::CaBasicConstraints,
        Rule::CaBasicConstraintsNotCritical,
        Rule::CaKeyUsage,
        Rule::LeafBasicConstraints,
        Rule::LeafKeyUsage,
        Rule::LeafKeyUsageAbsent,
        Rule::LeafExtKeyUsage,
        Rule::LeafExtKeyUsageAbsent,
        Rule::SubjectKeyIdMissing,
        Rule::AuthorityKeyIdMissing,
        Rule::AuthorityKeyIdMismatch,
        Rule::OutlivesIssuer,
        Rule::SanMissingFqdn,
        Rule::SanWildcard,
        Rule::SerialNotPositive,
        Rule::SerialTooLong,
        Rule::WeakSignatureAlgorithm,
        Rule::RsaKeyTooSmall,
        Rule::UnsupportedKey,
        Rule::ValidityEncoding,
        Rule::ValidityInverted,
        Rule::ChainAtActivation,
    ];

    /// The rule's name, e.g. `san_wildcard`.
    pub fn name(self) -> &'static str {
        match self {
            Rule::NotV3 => "not_v3",
            Rule::UnreadableExtension => "unreadable_extension",
            Rule::CaBasicConstraints => "ca_basic_constraints",
            Rule::CaBasicConstraintsNotCritical => "ca_basic_constraints_not_critical",
            Rule::CaKeyUsage => "ca_key_usage",
            Rule::LeafBasicConstraints => "leaf_basic_constraints",
            Rule::LeafKeyUsage => "leaf_key_usage",
            Rule::LeafKeyUsageAbsent => "leaf_key_usage_absent",
            Rule::LeafExtKeyUsage => "leaf_ext_key_usage",
            Rule::LeafExtKeyUsageAbsent => "leaf_ext_key_usage_absent",
            Rule::SubjectKeyIdMissing => "subject_key_id_missing",
            Rule::AuthorityKeyIdMissing => "authority_key_id_missing",
            Rule::AuthorityKeyIdMismatch => "authority_key_id_mismatch",
            Rule::OutlivesIssuer => "outlives_issuer",
            Rule::SanMissingFqdn => "san_missing_fqdn",
            Rule::SanWildcard => "san_wildcard",
            Rule::SerialNotPositive => "serial_not_positive",
            Rule::SerialTooLong => "serial_too_long",
            Rule::WeakSignatureAlgorithm => "weak_signature_algorithm",
            Rule::RsaKeyTooSmall => "rsa_key_too_small",
            Rule::UnsupportedKey => "unsupported_key",
            Rule::ValidityEncoding => "validity_encoding",
            Rule::ValidityInverted => "validity_inverted",
            Rule::ChainAtActivation => "chain_at_activation",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a lint rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a lint rule; the rules are: {}", Rule::ALL.map(Rule::name).join(", "))]
pub struct UnknownRule {
    /// What was given.
    pub name: String,
}

impl std::str::FromStr for Rule {
    type Err = UnknownRule;
    fn from_str(s: &str) -> Result<Self, UnknownRule> {
        let want = s.trim().replace('-', "_").to_ascii_lowercase();
        Rule::ALL
            .into_iter()
            .find(|r| r.name() == want)
            .ok_or_else(|| UnknownRule {
                name: s.to_string(),
            })
    }
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing, never refuses (reported by [`lint_certificate`] and `zonectl lint`).
    Notice,
    /// Legal but risky: refuses until the administrator acknowledges the rule.
    Warning,
    /// Refuses.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One finding: the rule, how serious, which certificate, and what exactly is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Finding {
    /// The rule.
    pub rule: Rule,
    /// Error or warning.
    pub severity: Severity,
    /// The certificate's subject (RFC 4514).
    pub subject: String,
    /// The certificate's SHA-256 fingerprint (colon hex).
    pub sha256: String,
    /// What is wrong, and what would be right.
    pub detail: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: \"{}\" (SHA-256 {}): {}",
            self.severity, self.rule, self.subject, self.sha256, self.detail
        )
    }
}

/// What a certificate is for in the zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertRole {
    /// A CA: the zone CA, a bridge, or a subordinate CA of an external chain.
    Ca,
    /// A server's TLS certificate (S4).
    ServerLeaf,
}

/// What a certificate is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Its role.
    pub role: CertRole,
    /// The certificate that issued it (itself when self-signed; `None` when unknown, which
    /// skips the continuity and lifetime checks).
    pub issuer: Option<&'a Certificate>,
    /// A server certificate's FQDN, which its SAN must hold.
    pub fqdn: Option<&'a str>,
    /// Issued by an external CA: a wildcard SAN is a warning rather than an error (CE4).
    pub external: bool,
}

/// Findings that refuse: the errors, and the warnings nobody acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} refused by the pre-flight lint (B4): {}{}",
    refused_what(.findings),
    .findings.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
    advice(.findings)
)]
pub struct LintError {
    /// What refused, errors first.
    pub findings: Vec<Finding>,
}

fn refused_what(findings: &[Finding]) -> String {
    match findings.len() {
        1 => "a certificate was".into(),
        n => format!("certificates were ({n} findings)"),
    }
}

fn advice(findings: &[Finding]) -> String {
    let warnings: Vec<&str> = findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .map(|f| f.rule.name())
        .collect();
    let mut out = String::new();
    if findings.iter().any(|f| f.severity == Severity::Error) {
        out.push_str(". Correct the certificate (or have its CA issue a correct one)");
    }
    if !warnings.is_empty() {
        out.push_str(&format!(
            ". Warnings are legal but risky: acknowledge rule(s) {} to go ahead",
            warnings.join(", ")
        ));
    }
    out
}

/// Refuses when `findings` hold an error, or a warning whose rule is not in `acknowledged`;
/// notices never refuse.
pub fn enforce(findings: Vec<Finding>, acknowledged: &[Rule]) -> Result<(), LintError> {
    let mut refused: Vec<Finding> = findings
        .into_iter()
        .filter(|f| match f.severity {
            Severity::Error => true,
            Severity::Warning => !acknowledged.contains(&f.rule),
            Severity::Notice => false,
        })
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    refused.sort_by_key(|f| std::cmp::Reverse(f.severity));
    Err(LintError { findings: refused })
}

struct Out<'c> {
    cert: &'c Certificate,
    sha256: String,
    findings: Vec<Finding>,
}

impl Out<'_> {
    fn push(&mut self, rule: Rule, severity: Severity, detail: impl Into<String>) {
        self.findings.push(Finding {
            rule,
            severity,
            subject: self.cert.subject(),
            sha256: self.sha256.clone(),
            detail: detail.into(),
        });
    }
}

/// Checks one certificate for its role (B4).
pub fn lint_certificate(cert: &Certificate, ctx: Context<'_>) -> Vec<Finding> {
    let mut out = Out {
        cert,
        sha256: Fingerprint::sha256(cert.der().as_bytes()).to_string(),
        findings: Vec::new(),
    };
    use Severity::{Error, Warning};
    if cert.version() != 2 {
        out.push(
            Rule::NotV3,
            Error,
            format!(
                "version {} certificate; the zone needs v3",
                cert.version() + 1
            ),
        );
    }
    serial(&mut out);
    signature_and_key(&mut out);
    validity(&mut out);
    let critical = |oid| {
        cert.extensions()
            .find(|(o, _, _)| *o == oid)
            .map(|(_, c, _)| c)
    };
    match cert.basic_constraints() {
        Err(e) => out.push(Rule::UnreadableExtension, Error, e.to_string()),
        Ok(bc) => match (ctx.role, bc) {
            (CertRole::Ca, Some((true, _))) => {
                if critical(ext_oid::BASIC_CONSTRAINTS) == Some(false) {
                    out.push(
                        Rule::CaBasicConstraintsNotCritical,
                        Warning,
                        "basicConstraints is not marked critical (RFC 5280 4.2.1.9)",
                    );
                }
            }
            (CertRole::Ca, _) => out.push(
                Rule::CaBasicConstraints,
                Error,
                "a CA certificate needs basicConstraints cA TRUE, marked critical",
            ),
            (CertRole::ServerLeaf, Some((false, _))) => {}
            (CertRole::ServerLeaf, Some((true, _))) => out.push(
                Rule::LeafBasicConstraints,
                Error,
                "a server certificate must not be a CA (basicConstraints cA TRUE)",
            ),
            (CertRole::ServerLeaf, None) => out.push(
                Rule::LeafBasicConstraints,
                Error,
                "a server certificate needs basicConstraints cA FALSE",
            ),
        },
    }
    key_usage(&mut out, ctx.role);
    if ctx.role == CertRole::ServerLeaf {
        ext_key_usage(&mut out);
        if let Some(fqdn) = ctx.fqdn {
            san(&mut out, fqdn, ctx.external);
        }
    }
    key_ids(&mut out, ctx);
    if let Some(issuer) = ctx.issuer.filter(|i| *i != cert)
        && cert.not_after() > issuer.not_after()
    {
        out.push(
            Rule::OutlivesIssuer,
            Error,
            format!(
                "valid until {}, after its issuer \"{}\" expires at {}",
                cert.not_after(),
                issuer.subject(),
                issuer.not_after()
            ),
        );
    }
    out.findings
}

fn serial(out: &mut Out<'_>) {
    let bytes = out.cert.serial();
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let zero = bytes.iter().all(|b| *b == 0);
    if negative || zero {
        out.push(
            Rule::SerialNotPositive,
            Severity::Error,
            format!(
                "serial number {} is {}; it must be a positive integer (RFC 5280 4.1.2.2)",
                out.cert.serial_hex(),
                if zero { "zero" } else { "negative" }
            ),
        );
    }
    if bytes.len() > 20 {
        out.push(
            Rule::SerialTooLong,
            Severity::Error,
            format!(
                "serial number is {} octets; at most 20 are allowed (RFC 5280 4.1.2.2)",
                bytes.len()
            ),
        );
    }
}

fn signature_and_key(out: &mut Out<'_>) {
    let alg = out.cert.signature_algorithm().oid.to_string();
    if let Some((_, name)) = WEAK_SIGNATURES.iter().find(|(o, _)| *o == alg) {
        out.push(
            Rule::WeakSignatureAlgorithm,
            Severity::Error,
            format!("signed with {name}; SHA-1 and MD5 signatures are refused, use SHA-256"),
        );
    }
    match out.cert.key_algorithm() {
        Ok(KeyAlgorithm::Rsa { bits }) if bits < MIN_RSA_BITS => out.push(
            Rule::RsaKeyTooSmall,
            Severity::Error,
            format!("RSA key of {bits} bits; at least {MIN_RSA_BITS} are needed"),
        ),
        Ok(_) => {}
        Err(e) => out.push(Rule::UnsupportedKey, Severity::Error, e.to_string()),
    }
}

fn validity(out: &mut Out<'_>) {
    use x509_cert::time::Time;
    let v = out.cert.x509().tbs_certificate().validity();
    for (what, t) in [("notBefore", &v.not_before), ("notAfter", &v.not_after)] {
        let year = crate::clock::Timestamp::from_x509(t).to_offset().year();
        let wrong = match t {
            Time::UtcTime(_) => year >= 2050,
            Time::GeneralTime(_) => year < 2050,
        };
        if wrong {
            let (used, right) = match t {
                Time::UtcTime(_) => ("UTCTime", "GeneralizedTime"),
                Time::GeneralTime(_) => ("GeneralizedTime", "UTCTime"),
            };
            out.push(
                Rule::ValidityEncoding,
                Severity::Error,
                format!(
                    "{what} ({year}) is encoded as {used}; RFC 5280 4.1.2.5 requires {right} \
                     for that year"
                ),
            );
        }
    }
    if out.cert.not_after() < out.cert.not_before() {
        out.push(
            Rule::ValidityInverted,
            Severity::Error,
            format!(
                "notAfter {} is before notBefore {}",
                out.cert.not_after(),
                out.cert.not_before()
            ),
        );
    }
}

fn key_usage(out: &mut Out<'_>, role: CertRole) {
    let ku = match out.cert.key_usage() {
        Ok(ku) => ku,
        Err(e) => {
            out.push(Rule::UnreadableExtension, Severity::Error, e.to_string());
            return;
        }
    };
    match (role, ku) {
        (CertRole::Ca, Some(ku)) if ku.0.contains(KeyUsages::KeyCertSign) => {}
        (CertRole::Ca, Some(_)) => out.push(
            Rule::CaKeyUsage,
            Severity::Error,
            "keyUsage lacks keyCertSign, so the CA cannot certify",
        ),
        (CertRole::Ca, None) => out.push(
            Rule::CaKeyUsage,
            Severity::Error,
            "a CA certificate needs keyUsage with keyCertSign (RFC 5280 4.2.1.3)",
        ),
        (CertRole::ServerLeaf, None) => out.push(
            Rule::LeafKeyUsageAbsent,
            Severity::Notice,
            "no keyUsage: the key may be used for anything",
        ),
        (CertRole::ServerLeaf, Some(ku)) => {
            if !ku.0.contains(KeyUsages::DigitalSignature) {
                out.push(
                    Rule::LeafKeyUsage,
                    Severity::Error,
                    "keyUsage lacks digitalSignature, which TLS needs",
                );
            }
            if ku.0.contains(KeyUsages::KeyCertSign) || ku.0.contains(KeyUsages::CRLSign) {
                out.push(
                    Rule::LeafKeyUsage,
                    Severity::Error,
                    "keyUsage of a server certificate allows certificate or CRL signing",
                );
            }
        }
    }
}

fn ext_key_usage(out: &mut Out<'_>) {
    let eku = out
        .cert
        .x509()
        .tbs_certificate()
        .get_extension::<x509_cert::ext::pkix::ExtendedKeyUsage>();
    match eku {
        Err(e) => out.push(Rule::UnreadableExtension, Severity::Error, e.to_string()),
        Ok(None) => out.push(
            Rule::LeafExtKeyUsageAbsent,
            Severity::Warning,
            "no extendedKeyUsage: the certificate is good for any purpose; expected \
             serverAuth and clientAuth",
        ),
        Ok(Some((_, eku))) => {
            let missing: Vec<&str> = [
                (KP_SERVER_AUTH, "serverAuth"),
                (KP_CLIENT_AUTH, "clientAuth"),
            ]
            .into_iter()
            .filter(|(oid, _)| !eku.0.contains(oid))
            .map(|(_, n)| n)
            .collect();
            if !missing.is_empty() {
                out.push(
                    Rule::LeafExtKeyUsage,
                    Severity::Error,
                    format!(
                        "extendedKeyUsage lacks {}: zone servers are TLS servers and clients (S4)",
                        missing.join(" and ")
                    ),
                );
            }
        }
    }
}

fn san(out: &mut Out<'_>, fqdn: &str, external: bool) {
    let names = match out.cert.dns_names() {
        Ok(n) => n,
        Err(e) => {
            out.push(Rule::UnreadableExtension, Severity::Error, e.to_string());
            return;
        }
    };
    if names.iter().any(|n| n.eq_ignore_ascii_case(fqdn)) {
        return;
    }
    let wildcard = names.iter().find(|n| wildcard_covers(n, fqdn));
    match wildcard {
        Some(w) if external => out.push(
            Rule::SanWildcard,
            Severity::Warning,
            format!(
                "{fqdn} is covered only by the wildcard {w} (accepted from an external CA, CE4)"
            ),
        ),
        Some(w) => out.push(
            Rule::SanMissingFqdn,
            Severity::Error,
            format!("{fqdn} is covered only by the wildcard {w}; the zone CA issues exact names"),
        ),
        None => out.push(
            Rule::SanMissingFqdn,
            Severity::Error,
            format!("subjectAltName [{}] does not hold {fqdn}", names.join(", ")),
        ),
    }
}

/// `*.example.com` covers exactly one more label: `a.example.com`, not `example.com` nor
/// `a.b.example.com` (RFC 6125 6.4.3).
fn wildcard_covers(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    match name.split_once('.') {
        Some((first, rest)) => !first.is_empty() && rest.eq_ignore_ascii_case(suffix),
        None => false,
    }
}

fn key_ids(out: &mut Out<'_>, ctx: Context<'_>) {
    let ski = match out.cert.subject_key_id() {
        Ok(s) => s,
        Err(e) => {
            out.push(Rule::UnreadableExtension, Severity::Error, e.to_string());
            None
        }
    };
    let aki = match out.cert.authority_key_id() {
        Ok(a) => a,
        Err(e) => {
            out.push(Rule::UnreadableExtension, Severity::Error, e.to_string());
            None
        }
    };
    if ski.is_none() {
        let (severity, why) = match ctx.role {
            CertRole::Ca => (
                Severity::Error,
                "a CA certificate must carry one (RFC 5280 4.2.1.2)",
            ),
            CertRole::ServerLeaf => (Severity::Warning, "expected on every certificate"),
        };
        out.push(
            Rule::SubjectKeyIdMissing,
            severity,
            format!("no subjectKeyIdentifier: {why}"),
        );
    }
    let self_issued = out.cert.subject_name() == out.cert.issuer_name();
    if aki.is_none() && !self_issued {
        out.push(
            Rule::AuthorityKeyIdMissing,
            Severity::Error,
            "no authorityKeyIdentifier keyIdentifier (RFC 5280 4.2.1.1: required on every \
             certificate that is not self-signed)",
        );
    }
    if let (Some(aki), Some(issuer)) = (&aki, ctx.issuer)
        && let Ok(Some(issuer_ski)) = issuer.subject_key_id()
        && *aki != issuer_ski
    {
        out.push(
            Rule::AuthorityKeyIdMismatch,
            Severity::Error,
            format!(
                "authorityKeyIdentifier {} is not the issuer \"{}\"'s subjectKeyIdentifier {}",
                crate::cert::colon_hex(aki),
                issuer.subject(),
                crate::cert::colon_hex(&issuer_ski)
            ),
        );
    }
}

/// Checks a chain as given (leaf first, each certificate followed by its issuer, a
/// self-signed root last or absent): CA certificates as CAs, the rest as server
/// certificates (with `fqdn` when known), each against the next certificate whose subject is
/// its issuer. `external`: issued by an external CA (CE4).
pub fn lint_chain(chain: &[Certificate], fqdn: Option<&str>, external: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, cert) in chain.iter().enumerate() {
        let issuer = if cert.is_self_signed() {
            Some(cert)
        } else {
            chain[i + 1..]
                .iter()
                .find(|c| c.subject_name() == cert.issuer_name())
        };
        let role = if cert.is_ca() || (i > 0 && chain.len() > 1) {
            CertRole::Ca
        } else {
            CertRole::ServerLeaf
        };
        out.extend(lint_certificate(
            cert,
            Context {
                role,
                issuer,
                fqdn: fqdn.filter(|_| role == CertRole::ServerLeaf),
                external,
            },
        ));
    }
    out
}

/// B4: one chain the fleet will meet at activation. `None` when it validates at `at`,
/// else a [`Rule::ChainAtActivation`] error naming the leaf and what the chain is for.
pub fn check_path(
    what: &str,
    leaf: &Certificate,
    intermediates: &[Certificate],
    anchors: &[Certificate],
    at: Timestamp,
) -> Option<Finding> {
    verify_chain(leaf, intermediates, anchors, at)
        .err()
        .map(|e| Finding {
            rule: Rule::ChainAtActivation,
            severity: Severity::Error,
            subject: leaf.subject(),
            sha256: Fingerprint::sha256(leaf.der().as_bytes()).to_string(),
            detail: format!("{what} does not validate at activation ({at}): {e}"),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_round_trip() {
        for r in Rule::ALL {
            assert_eq!(r.name().parse::<Rule>().unwrap(), r);
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.name())
            );
        }
        assert_eq!("san-wildcard".parse::<Rule>().unwrap(), Rule::SanWildcard);
        let e = "nope".parse::<Rule>().unwrap_err().to_string();
        assert!(e.contains("san_wildcard"), "{e}");
    }

    #[test]
    fn wildcards_cover_one_label() {
        assert!(wildcard_covers("*.example.com", "a.example.com"));
        assert!(!wildcard_covers("*.example.com", "example.com"));
        assert!(!wildcard_covers("*.example.com", "a.b.example.com"));
        assert!(!wildcard_covers("a.example.com", "a.example.com"));
    }

    #[test]
    fn enforce_refuses_errors_and_unacknowledged_warnings() {
        let f = |rule, severity| Finding {
            rule,
            severity,
            subject: "CN=x".into(),
            sha256: "AA".into(),
            detail: "d".into(),
        };
        let n = f(Rule::LeafKeyUsageAbsent, Severity::Notice);
        assert!(enforce(vec![n], &[]).is_ok(), "notices never refuse");
        let w = f(Rule::SanWildcard, Severity::Warning);
        let e = f(Rule::OutlivesIssuer, Severity::Error);
        assert!(enforce(vec![], &[]).is_ok());
        let err = enforce(vec![w.clone()], &[]).unwrap_err();
        assert!(
            err.to_string().contains("acknowledge rule(s) san_wildcard"),
            "{err}"
        );
        assert!(enforce(vec![w.clone()], &[Rule::SanWildcard]).is_ok());
        let err = enforce(vec![w, e], &[Rule::SanWildcard, Rule::OutlivesIssuer]).unwrap_err();
        assert_eq!(err.findings.len(), 1, "errors cannot be acknowledged away");
        assert_eq!(err.findings[0].rule, Rule::OutlivesIssuer);
    }
}
