//! PKCS#10 certificate signing requests (RFC 2986): build one for a member's key (CE2, SR5)
//! and parse one back. Parsing checks the self-signature first and only then yields a
//! [`VerifiedCsr`], the proof value the CA issues from.

use std::fmt;

use der::asn1::{Ia5String, ObjectIdentifier, PrintableStringRef, Utf8StringRef};
use der::{Any, Decode, Encode};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::request::{CertReq, RequestBuilder};

use crate::cert::tbs_range;
use crate::key::{KeyAlgorithm, KeyError, SignatureError, Signer, build_signed, verify_signature};

/// Attribute OIDs of X.520 / RFC 4519.
mod attr {
    use der::asn1::ObjectIdentifier as Oid;
    pub(super) const CN: Oid = Oid::new_unwrap("2.5.4.3");
    pub(super) const C: Oid = Oid::new_unwrap("2.5.4.6");
    pub(super) const L: Oid = Oid::new_unwrap("2.5.4.7");
    pub(super) const ST: Oid = Oid::new_unwrap("2.5.4.8");
    pub(super) const O: Oid = Oid::new_unwrap("2.5.4.10");
    pub(super) const OU: Oid = Oid::new_unwrap("2.5.4.11");
    /// PKCS#9 extensionRequest (RFC 2985 5.4.2).
    pub(super) const EXTENSION_REQUEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.14");
}

/// The largest CSR the parser accepts (a 4096-bit RSA CSR with many names is ~2 KiB).
const MAX_CSR_BYTES: usize = 64 * 1024;
/// Upper bound of X.520 ub-common-name and friends (RFC 5280 Appendix A.1).
const MAX_ATTR_LEN: usize = 64;

/// Errors of building or parsing a CSR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// A subject field is not acceptable.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// Which field (`country`, `common name`, ...).
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A DNS name for the SAN is not a valid host name.
    #[error("invalid DNS name {name:?}: {reason}")]
    InvalidDnsName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// No bytes.
    #[error("empty input: expected a PKCS#10 certificate request (PEM or DER)")]
    Empty,
    /// Larger than any real CSR.
    #[error("input of {len} bytes is too large for a certificate request (limit {limit})")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Not PKCS#10.
    #[error("not a PKCS#10 certificate request: {reason}")]
    Malformed {
        /// The decoder's explanation.
        reason: String,
    },
    /// PEM with another label (a certificate, a key, ...).
    #[error("PEM block labelled {label:?} where a CERTIFICATE REQUEST was expected")]
    WrongPemLabel {
        /// The label found.
        label: String,
    },
    /// The self-signature does not verify: the request was altered or the signer does not
    /// hold the key.
    #[error("the certificate request's signature does not verify: {0}")]
    BadSignature(#[source] SignatureError),
    /// The requested key is not allowed (S2).
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Subject fields of a CSR (CE2: CN, O, OU, L, ST, C).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct CsrSubject {
    /// Common name: the server's FQDN unless overridden (SR2, SR5).
    pub common_name: String,
    /// Organisation (O).
    pub organization: Option<String>,
    /// Organisational unit (OU).
    pub organizational_unit: Option<String>,
    /// Locality (L).
    pub locality: Option<String>,
    /// State or province (ST).
    pub state: Option<String>,
    /// Country (C): exactly two letters (ISO 3166 alpha-2).
    pub country: Option<String>,
}

impl CsrSubject {
    /// A subject with only a common name.
    pub fn cn(common_name: impl Into<String>) -> Self {
        CsrSubject {
            common_name: common_name.into(),
            ..Default::default()
        }
    }

    /// Checks every field and builds the X.501 name in the order C, ST, L, O, OU, CN.
    pub fn to_name(&self) -> Result<Name, CsrError> {
        let mut rdns = RdnSequence::default();
        if let Some(c) = &self.country {
            if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(CsrError::InvalidField {
                    field: "country",
                    reason: format!("{c:?} is not exactly two letters (ISO 3166 code, e.g. US)"),
                });
            }
            let upper = c.to_ascii_uppercase();
            let v = PrintableStringRef::new(&upper).map_err(|e| field_err("country", e))?;
            rdns.push(rdn(
                attr::C,
                Any::encode_from(&v).map_err(|e| field_err("country", e))?,
            )?);
        }
        let optional = [
            (attr::ST, "state", &self.state),
            (attr::L, "locality", &self.locality),
            (attr::O, "organization", &self.organization),
            (attr::OU, "organizational unit", &self.organizational_unit),
        ];
        for (oid, field, value) in optional {
            if let Some(v) = value {
                rdns.push(rdn(oid, utf8_value(field, v)?)?);
            }
        }
        rdns.push(rdn(
            attr::CN,
            utf8_value("common name", &self.common_name)?,
        )?);
        // Name has no public constructor from an RdnSequence (short of x509-cert's `hazmat`
        // feature); the two share one DER encoding, so go through it.
        let der = rdns.to_der().map_err(|e| field_err("subject", e))?;
        Name::from_der(&der).map_err(|e| field_err("subject", e))
    }
}

fn field_err(field: &'static str, e: impl fmt::Display) -> CsrError {
    CsrError::InvalidField {
        field,
        reason: e.to_string(),
    }
}

fn utf8_value(field: &'static str, v: &str) -> Result<Any, CsrError> {
    if v.trim().is_empty() {
        return Err(CsrError::InvalidField {
            field,
            reason: "must not be empty".into(),
        });
    }
    if v.chars().count() > MAX_ATTR_LEN {
        return Err(CsrError::InvalidField {
            field,
            reason: format!("longer than {MAX_ATTR_LEN} characters (RFC 5280 upper bound)"),
        });
    }
    if v.chars().any(char::is_control) {
        return Err(CsrError::InvalidField {
            field,
            reason: "contains control characters".into(),
        });
    }
    let s = Utf8StringRef::new(v).map_err(|e| field_err(field, e))?;
    Any::encode_from(&s).map_err(|e| field_err(field, e))
}

fn rdn(oid: ObjectIdentifier, value: Any) -> Result<RelativeDistinguishedName, CsrError> {
    RelativeDistinguishedName::try_from(vec![AttributeTypeAndValue { oid, value }])
        .map_err(|e| field_err("name", e))
}

/// Checks a DNS name for a SAN: LDH labels, at most 253 characters, no wildcard (CE4: the
/// crate never generates wildcard requests).
pub fn check_dns_name(name: &str) -> Result<(), CsrError> {
    let bad = |reason: &str| {
        Err(CsrError::InvalidDnsName {
            name: name.into(),
            reason: reason.into(),
        })
    };
    if name.is_empty() || name.len() > 253 {
        return bad("must be 1 to 253 characters");
    }
    if name.contains('*') {
        return bad("wildcards are never requested by zonepki (CE4)");
    }
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("every label must be 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("only letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label cannot start or end with '-'");
        }
    }
    // RFC 1123 2.1: a host name's top-level label is never all-numeric, which is what tells a
    // name from an IPv4 literal. Servers are named by DNS name and certificates carry it as a
    // dNSName; an address in a dNSName would match nothing (RFC 6125 6.4.4 compares IP
    // addresses only with iPAddress entries), so an address is refused here.
    let top = name
        .trim_end_matches('.')
        .rsplit('.')
        .next()
        .unwrap_or_default();
    if top.bytes().all(|b| b.is_ascii_digit()) {
        return bad(
            "this is an IP address, not a DNS name: name the server by its DNS name \
             (certificates carry it as a dNSName)",
        );
    }
    Ok(())
}

/// What a member asks its CA for.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct CsrRequest {
    /// Subject fields.
    pub subject: CsrSubject,
    /// DNS names for the subjectAltName extension request.
    pub dns_names: Vec<String>,
}

impl CsrRequest {
    /// A request whose only SAN is `fqdn` and whose CN is
    /// [`crate::zone::server_common_name`] of it (what an agent sends for its server).
    pub fn default_for(fqdn: &str) -> Self {
        CsrRequest {
            subject: CsrSubject::cn(crate::zone::server_common_name(fqdn)),
            dns_names: vec![fqdn.to_string()],
        }
    }
}

/// A DER-encoded PKCS#10 request.
#[derive(Clone, PartialEq, Eq)]
pub struct CsrDer(Vec<u8>);

impl CsrDer {
    /// The DER bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// `-----BEGIN CERTIFICATE REQUEST-----` PEM.
    pub fn to_pem(&self) -> String {
        pem_rfc7468::encode_string("CERTIFICATE REQUEST", pem_rfc7468::LineEnding::LF, &self.0)
            .expect("PEM encoding of a CSR-sized blob cannot fail")
    }
}

impl fmt::Debug for CsrDer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CsrDer({} bytes)", self.0.len())
    }
}

impl serde::Serialize for CsrDer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_pem())
    }
}

impl<'de> serde::Deserialize<'de> for CsrDer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let (label, der) =
            pem_rfc7468::decode_vec(s.as_bytes()).map_err(serde::de::Error::custom)?;
        if label != "CERTIFICATE REQUEST" {
            return Err(serde::de::Error::custom(format!("PEM label {label:?}")));
        }
        Ok(CsrDer(der))
    }
}

/// Builds and signs a CSR for `signer`'s key.
pub fn build_csr(request: &CsrRequest, signer: &dyn Signer) -> Result<CsrDer, CsrError> {
    let name = request.subject.to_name()?;
    let mut builder = RequestBuilder::new(name).map_err(|e| field_err("subject", e))?;
    if !request.dns_names.is_empty() {
        let mut names = Vec::with_capacity(request.dns_names.len());
        for n in &request.dns_names {
            check_dns_name(n)?;
            let ia5 = Ia5String::new(n).map_err(|e| CsrError::InvalidDnsName {
                name: n.clone(),
                reason: e.to_string(),
            })?;
            names.push(GeneralName::DnsName(ia5));
        }
        builder
            .add_extension(&SubjectAltName(names))
            .map_err(|e| field_err("subjectAltName", e))?;
    }
    let req = build_signed(builder, signer)?;
    Ok(CsrDer(req.to_der().map_err(|e| field_err("request", e))?))
}

/// A CSR whose self-signature verified: the requester holds the private key of
/// [`VerifiedCsr::public_key`]. Only [`VerifiedCsr::from_der`] and friends make one.
#[derive(Clone)]
pub struct VerifiedCsr {
    der: CsrDer,
    subject: Name,
    public_key: SubjectPublicKeyInfoOwned,
    key_algorithm: KeyAlgorithm,
    dns_names: Vec<String>,
}

impl fmt::Debug for VerifiedCsr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedCsr")
            .field("subject", &self.subject.to_string())
            .field("key", &self.key_algorithm)
            .field("dns_names", &self.dns_names)
            .finish()
    }
}

impl VerifiedCsr {
    /// Parses DER and checks the self-signature.
    pub fn from_der(der: &[u8]) -> Result<Self, CsrError> {
        if der.is_empty() {
            return Err(CsrError::Empty);
        }
        if der.len() > MAX_CSR_BYTES {
            return Err(CsrError::TooLarge {
                len: der.len(),
                limit: MAX_CSR_BYTES,
            });
        }
        let req = CertReq::from_der(der).map_err(|e| CsrError::Malformed {
            reason: e.to_string(),
        })?;
        let range = tbs_range(der).map_err(|e| CsrError::Malformed {
            reason: e.to_string(),
        })?;
        let sig = req.signature.as_bytes().ok_or(CsrError::Malformed {
            reason: "signature BIT STRING has unused bits".into(),
        })?;
        verify_signature(&req.info.public_key, &req.algorithm, &der[range], sig).map_err(|e| {
            match e {
                SignatureError::Key(k) => CsrError::Key(k),
                other => CsrError::BadSignature(other),
            }
        })?;
        let key_algorithm = KeyAlgorithm::of_spki(&req.info.public_key)?;
        let mut dns_names = Vec::new();
        for attribute in req
            .info
            .attributes
            .iter()
            .filter(|a| a.oid == attr::EXTENSION_REQUEST)
        {
            for value in attribute.values.iter() {
                let exts: Vec<x509_cert::ext::Extension> =
                    value.decode_as().map_err(|e| CsrError::Malformed {
                        reason: format!("extensionRequest: {e}"),
                    })?;
                for ext in exts
                    .iter()
                    .filter(|e| e.extn_id == crate::cert::ext_oid::SUBJECT_ALT_NAME)
                {
                    let san = SubjectAltName::from_der(ext.extn_value.as_bytes()).map_err(|e| {
                        CsrError::Malformed {
                            reason: format!("subjectAltName: {e}"),
                        }
                    })?;
                    dns_names.extend(san.0.into_iter().filter_map(|g| match g {
                        GeneralName::DnsName(n) => Some(n.to_string()),
                        _ => None,
                    }));
                }
            }
        }
        Ok(VerifiedCsr {
            der: CsrDer(der.to_vec()),
            subject: req.info.subject,
            public_key: req.info.public_key,
            key_algorithm,
            dns_names,
        })
    }

    /// A request for `public_key` whose possession the caller proved by other means (a CMP
    /// proof of possession, RFC 4211 4), with no PKCS #10 of its own ([`Self::der`] is empty).
    /// The key's algorithm is checked as for a CSR (S7).
    pub(crate) fn for_proven_key(
        public_key: SubjectPublicKeyInfoOwned,
        subject: Name,
    ) -> Result<Self, CsrError> {
        let key_algorithm = KeyAlgorithm::of_spki(&public_key)?;
        Ok(VerifiedCsr {
            der: CsrDer(Vec::new()),
            subject,
            public_key,
            key_algorithm,
            dns_names: Vec::new(),
        })
    }

    /// Parses PEM (`CERTIFICATE REQUEST` or `NEW CERTIFICATE REQUEST`) or DER, by content.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, CsrError> {
        if bytes.trim_ascii().is_empty() {
            return Err(CsrError::Empty);
        }
        if bytes.len() > MAX_CSR_BYTES {
            return Err(CsrError::TooLarge {
                len: bytes.len(),
                limit: MAX_CSR_BYTES,
            });
        }
        let trimmed = bytes.trim_ascii_start();
        if trimmed.starts_with(b"-----BEGIN") {
            let (label, der) = pem_rfc7468::decode_vec(trimmed.trim_ascii_end()).map_err(|e| {
                CsrError::Malformed {
                    reason: format!("bad PEM: {e}"),
                }
            })?;
            if label != "CERTIFICATE REQUEST" && label != "NEW CERTIFICATE REQUEST" {
                return Err(CsrError::WrongPemLabel {
                    label: label.to_string(),
                });
            }
            Self::from_der(&der)
        } else {
            Self::from_der(bytes)
        }
    }

    /// The request as received.
    pub fn der(&self) -> &CsrDer {
        &self.der
    }
    /// Requested subject.
    pub fn subject(&self) -> &Name {
        &self.subject
    }
    /// Requested common name, if any.
    pub fn common_name(&self) -> Option<String> {
        crate::cert::common_name(&self.subject)
    }
    /// The requester's public key (proven by the self-signature).
    pub fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        &self.public_key
    }
    /// Algorithm and size of that key.
    pub fn key_algorithm(&self) -> KeyAlgorithm {
        self.key_algorithm
    }
    /// DNS names of the requested subjectAltName.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::key::{KeySpec, PrivateKey};

    fn full_request() -> CsrRequest {
        CsrRequest {
            subject: CsrSubject {
                common_name: "ps1.zone.example".into(),
                organization: Some("Example, Inc.".into()),
                organizational_unit: Some("IT".into()),
                locality: Some("Provo".into()),
                state: Some("Utah".into()),
                country: Some("us".into()),
            },
            dns_names: vec!["ps1.zone.example".into(), "zone.example".into()],
        }
    }

    #[test]
    fn build_then_parse_round_trip() {
        let key = PrivateKey::generate(KeySpec::P256).unwrap();
        let csr = build_csr(&full_request(), &key).unwrap();
        let v = VerifiedCsr::from_pem_or_der(csr.to_pem().as_bytes()).unwrap();
        assert_eq!(v.common_name().as_deref(), Some("ps1.zone.example"));
        assert_eq!(v.dns_names(), ["ps1.zone.example", "zone.example"]);
        assert_eq!(v.key_algorithm(), KeyAlgorithm::EcdsaP256);
        assert_eq!(v.public_key(), &key.public_key_info());
        let subject = v.subject().to_string();
        assert!(
            subject.contains("C=US") && subject.contains("O=Example\\, Inc."),
            "{subject}"
        );
    }

    #[test]
    fn country_must_be_two_letters() {
        for c in ["USA", "U", "1A", ""] {
            let mut r = full_request();
            r.subject.country = Some(c.into());
            let key = PrivateKey::generate(KeySpec::P256).unwrap();
            let e = build_csr(&r, &key).unwrap_err();
            assert!(
                matches!(
                    e,
                    CsrError::InvalidField {
                        field: "country",
                        ..
                    }
                ),
                "{c}: {e}"
            );
        }
    }

    #[test]
    fn wildcard_and_bad_dns_refused() {
        for n in ["*.zone.example", "bad_name.example", "", "-a.example"] {
            assert!(check_dns_name(n).is_err(), "{n}");
        }
        check_dns_name("a-b.zone.example").unwrap();
    }

    #[test]
    fn tampered_csr_fails_signature() {
        let key = PrivateKey::generate(KeySpec::P256).unwrap();
        let csr = build_csr(&full_request(), &key).unwrap();
        let mut der = csr.as_bytes().to_vec();
        let pos = der.windows(5).position(|w| w == b"Provo").unwrap();
        der[pos] = b'X';
        let e = VerifiedCsr::from_der(&der).unwrap_err();
        assert!(matches!(e, CsrError::BadSignature(_)), "{e}");
    }

    #[test]
    fn garbage_is_typed() {
        assert_eq!(
            VerifiedCsr::from_pem_or_der(b"").unwrap_err(),
            CsrError::Empty
        );
        assert!(matches!(
            VerifiedCsr::from_pem_or_der(b"nonsense"),
            Err(CsrError::Malformed { .. })
        ));
        let key = PrivateKey::generate(KeySpec::P256).unwrap();
        let csr = build_csr(&full_request(), &key).unwrap();
        let der = csr.as_bytes();
        for cut in [1, der.len() / 2, der.len() - 1] {
            assert!(VerifiedCsr::from_der(&der[..cut]).is_err());
        }
        let e = VerifiedCsr::from_pem_or_der(key.to_pkcs8_pem().as_bytes()).unwrap_err();
        assert!(matches!(e, CsrError::WrongPemLabel { .. }), "{e}");
        assert!(!e.to_string().contains("MIG"), "never echo key material");
    }
}
