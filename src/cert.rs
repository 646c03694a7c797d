//! A parsed, read-only view of one X.509 certificate: names, SANs, validity, key, extensions
//! and fingerprints (V1). Reading and writing whole files of certificates is [`bundle`].

pub mod bundle;
pub mod name;

pub use name::names_match;

use std::fmt;

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode, Reader};
use md5::Md5;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectAltName,
    SubjectKeyIdentifier,
};
use x509_cert::name::Name;

use crate::clock::Timestamp;
use crate::key::{KeyAlgorithm, KeyError};

/// The DER encoding of one certificate (rustls-pki-types style newtype).
///
/// Serialised as PEM text (views, and most records); the certificate chains of server and
/// member records are one line of base64 DER each (`record_chain`). Either form reads back.
/// Clones share the bytes (`Arc`): a zone of 100,000 members that trust the same two CAs
/// holds each CA once.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertificateDer(std::sync::Arc<[u8]>);

impl CertificateDer {
    /// Wraps DER bytes without checking them (use [`Certificate::from_der`] to check).
    pub fn from_vec(der: Vec<u8>) -> Self {
        CertificateDer(der.into())
    }
    /// The DER bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// The DER bytes, owned.
    pub fn into_vec(self) -> Vec<u8> {
        self.0.to_vec()
    }
    /// `-----BEGIN CERTIFICATE-----` PEM, LF line endings.
    ///
    /// The same text as `pem_rfc7468`'s encoder (64 characters a line), with the `base64`
    /// crate's variable-time encoder: a certificate is public, and every agent message that
    /// carries anchors or a chain is encoded so (`decode_record_pem` is the reading
    /// side).
    pub fn to_pem(&self) -> String {
        use base64::Engine as _;
        const BEGIN: &str = "-----BEGIN CERTIFICATE-----\n";
        const END: &str = "-----END CERTIFICATE-----\n";
        let body = base64::engine::general_purpose::STANDARD.encode(&self.0);
        let mut pem =
            String::with_capacity(BEGIN.len() + body.len() + body.len() / 64 + 1 + END.len());
        pem.push_str(BEGIN);
        for line in body.as_bytes().chunks(64) {
            // base64 output is ASCII: every chunk is a valid string.
            pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str(END);
        pem
    }
}

impl AsRef<[u8]> for CertificateDer {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for CertificateDer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CertificateDer({} bytes, sha256 {})",
            self.0.len(),
            Fingerprint::sha256(&self.0)
        )
    }
}

impl Serialize for CertificateDer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_pem())
    }
}

impl<'de> Deserialize<'de> for CertificateDer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = CertificateDer;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a certificate as PEM or as base64 DER")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<CertificateDer, E> {
                decode_record_text(s)
                    .map(|der| CertificateDer(der.into()))
                    .map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

/// Serde for record fields that hold certificate chains (a server's chain, a member's
/// future chain), which every refresh reads: each certificate is one line of base64 DER,
/// with no PEM armour and no line breaks, so JSON keeps it without escapes and reads it
/// without a copy. Reading takes PEM as well (the form such records had before, and the one
/// every other certificate in a record has).
pub(crate) mod record_chain {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::CertificateDer;

    pub(crate) fn serialize<S: Serializer>(
        chain: &[CertificateDer],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            chain
                .iter()
                .map(|c| base64::engine::general_purpose::STANDARD.encode(c.as_bytes())),
        )
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<CertificateDer>, D::Error> {
        Vec::<CertificateDer>::deserialize(d)
    }
}

/// A certificate as records hold it: PEM, or one line of base64 DER.
fn decode_record_text(s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    if s.trim_start().starts_with("-----") {
        return decode_record_pem(s);
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("certificate is neither PEM nor base64 DER: {e}"))?;
    if der.is_empty() {
        return Err("certificate is empty".into());
    }
    Ok(der)
}

/// The DER inside a record's PEM `CERTIFICATE` block.
///
/// Records are read far more often than written (a refresh of 1,000 servers decodes each
/// server's chain several times), and a certificate is public: its base64 is decoded with the
/// `base64` crate's variable-time decoder, about three times faster than the constant-time one
/// `pem_rfc7468` uses (right for keys, needless here). Line breaks are not checked; the label,
/// the alphabet, the padding and a non-empty body are.
fn decode_record_pem(s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    const BEGIN: &str = "-----BEGIN ";
    const DASHES: &str = "-----";
    let s = s.trim();
    let rest = s
        .strip_prefix(BEGIN)
        .ok_or("not PEM: expected -----BEGIN CERTIFICATE-----")?;
    let (label, rest) = rest
        .split_once(DASHES)
        .ok_or("not PEM: the BEGIN line does not end")?;
    if label != "CERTIFICATE" {
        return Err(format!("PEM label {label:?}, expected CERTIFICATE"));
    }
    let body = rest
        .strip_suffix("-----END CERTIFICATE-----")
        .ok_or("PEM CERTIFICATE block without its END line")?;
    // Line by line, not byte by byte: a byte filter grows its vector a byte at a time.
    let mut b64 = Vec::with_capacity(body.len());
    for line in body.split(['\n', '\r']) {
        b64.extend_from_slice(line.as_bytes());
    }
    let der = base64::engine::general_purpose::STANDARD
        .decode(&b64)
        .map_err(|e| format!("PEM CERTIFICATE body is not base64: {e}"))?;
    if der.is_empty() {
        return Err("PEM CERTIFICATE block is empty".into());
    }
    Ok(der)
}

/// Why bytes are not a certificate the crate can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// No bytes at all.
    #[error("empty input: expected a DER certificate")]
    Empty,
    /// Not a DER X.509 certificate (truncated, garbage, wrong ASN.1 structure).
    #[error("not a valid DER X.509 certificate: {reason}")]
    Malformed {
        /// The decoder's explanation.
        reason: String,
    },
    /// Bytes after the certificate's end.
    #[error("{extra} unexpected bytes after the end of the certificate")]
    TrailingData {
        /// How many.
        extra: usize,
    },
    /// An extension the view reads (SAN, basic constraints, key usage, key identifiers) is
    /// malformed or repeated.
    #[error("malformed {extension} extension: {reason}")]
    BadExtension {
        /// Which extension.
        extension: &'static str,
        /// Why.
        reason: String,
    },
    /// The certificate's key is not one the crate understands.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A hash of a certificate's DER encoding, shown as colon-separated upper-case hex, the way
/// `openssl x509 -fingerprint` prints it (V1).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(Vec<u8>);

impl Fingerprint {
    /// MD5 of `der`.
    pub fn md5(der: &[u8]) -> Self {
        Fingerprint(Md5::digest(der).to_vec())
    }
    /// SHA-1 of `der`.
    pub fn sha1(der: &[u8]) -> Self {
        Fingerprint(Sha1::digest(der).to_vec())
    }
    /// SHA-256 of `der`.
    pub fn sha256(der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(der).to_vec())
    }
    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Colon-separated upper-case hex: `AB:CD:...`.
pub(crate) fn colon_hex(bytes: &[u8]) -> String {
    let hex = base16ct::upper::encode_string(bytes);
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.extend(pair.iter().map(|&c| char::from(c)));
    }
    s
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&colon_hex(&self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// The three fingerprints V1 shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fingerprints {
    /// MD5 (the manuals show it; not a security property).
    pub md5: Fingerprint,
    /// SHA-1 (the manuals show it; not a security property).
    pub sha1: Fingerprint,
    /// SHA-256 (beyond the manuals).
    pub sha256: Fingerprint,
}

/// Where a time falls relative to a certificate's validity (V1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertStatus {
    /// notBefore <= t <= notAfter.
    Valid,
    /// t > notAfter.
    Expired,
    /// t < notBefore.
    NotYetValid,
}

impl CertStatus {
    /// `valid`, `expired`, `not_yet_valid`.
    pub fn name(self) -> &'static str {
        match self {
            CertStatus::Valid => "valid",
            CertStatus::Expired => "expired",
            CertStatus::NotYetValid => "not_yet_valid",
        }
    }
}

impl fmt::Display for CertStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed certificate: the DER it came from and its decoded structure.
#[derive(Clone)]
pub struct Certificate {
    der: CertificateDer,
    inner: x509_cert::Certificate,
    /// Byte range of the signed `tbsCertificate` inside `der` (what the signature covers).
    tbs: std::ops::Range<usize>,
    /// notBefore and notAfter, decoded from `der` (see [`Certificate::from_der`] for why they
    /// are not read from `inner`).
    validity: [Timestamp; 2],
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("subject", &self.subject())
            .field("issuer", &self.issuer())
            .field("serial", &self.serial_hex())
            .finish()
    }
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}
impl Eq for Certificate {}

/// OID of the extensions the view reads.
pub(crate) mod ext_oid {
    use der::asn1::ObjectIdentifier as Oid;
    pub(crate) const SUBJECT_KEY_ID: Oid = Oid::new_unwrap("2.5.29.14");
    pub(crate) const KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.15");
    pub(crate) const SUBJECT_ALT_NAME: Oid = Oid::new_unwrap("2.5.29.17");
    pub(crate) const BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
    pub(crate) const AUTHORITY_KEY_ID: Oid = Oid::new_unwrap("2.5.29.35");
    pub(crate) const EXT_KEY_USAGE: Oid = Oid::new_unwrap("2.5.29.37");
}

impl Certificate {
    /// Parses one DER certificate; the whole input must be that certificate.
    ///
    /// Validity dates before 1970 are accepted (RFC 5280 4.1.2.5.1: a UTCTime `YY` of 50 or
    /// more is 19YY, and GeneralizedTime carries earlier years), although the `der` crate's
    /// time types start at 1970. Such a date is decoded here, from the certificate's own bytes,
    /// and x509-cert is given a copy of the DER in which that one `Time` value reads
    /// 1970-01-01T00:00:00Z in the same encoding and length. Everything else is x509-cert's
    /// decoding of the same bytes; [`Certificate::der`], [`Certificate::tbs_der`] (what
    /// signatures cover) and the fingerprints are always the original bytes, and
    /// [`Certificate::not_before`] / [`Certificate::not_after`] the real dates.
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        if der.is_empty() {
            return Err(CertError::Empty);
        }
        // Pre-1970 validity dates (see above); `None` when there are none (the usual case) or
        // when the structure is too broken to find them (x509-cert then says what is wrong).
        let mut early: [Option<Timestamp>; 2] = [None, None];
        let mut patched: Option<Vec<u8>> = None;
        if let Ok(fields) = validity_fields(der) {
            for (slot, (tag, range)) in early.iter_mut().zip(fields) {
                let Some(t) = decode_time(tag, &der[range.clone()]) else {
                    continue;
                };
                if t >= Timestamp::UNIX_EPOCH {
                    continue;
                }
                let stand_in: &[u8] = if tag == der::Tag::UtcTime {
                    b"700101000000Z"
                } else {
                    b"19700101000000Z"
                };
                patched.get_or_insert_with(|| der.to_vec())[range].copy_from_slice(stand_in);
                *slot = Some(t);
            }
        }
        let parse_from = patched.as_deref().unwrap_or(der);
        let inner = x509_cert::Certificate::from_der(parse_from).map_err(|e| match e.kind() {
            der::ErrorKind::TrailingData { decoded, remaining } => CertError::TrailingData {
                extra: usize::try_from(remaining).unwrap_or(0).max(
                    der.len()
                        .saturating_sub(usize::try_from(decoded).unwrap_or(0)),
                ),
            },
            _ => CertError::Malformed {
                reason: e.to_string(),
            },
        })?;
        let tbs = tbs_range(der).map_err(|e| CertError::Malformed {
            reason: e.to_string(),
        })?;
        let validity = inner.tbs_certificate().validity();
        let validity = [
            early[0].unwrap_or_else(|| Timestamp::from_x509(&validity.not_before)),
            early[1].unwrap_or_else(|| Timestamp::from_x509(&validity.not_after)),
        ];
        Ok(Certificate {
            der: CertificateDer(der.into()),
            inner,
            tbs,
            validity,
        })
    }

    /// The DER this view was parsed from.
    pub fn der(&self) -> &CertificateDer {
        &self.der
    }

    /// The decoded x509-cert structure, for anything the view does not expose.
    ///
    /// Its validity reads 1970-01-01T00:00:00Z where the certificate says an earlier date,
    /// which x509-cert cannot hold (see [`Certificate::from_der`]): read the validity with
    /// [`Certificate::not_before`] and [`Certificate::not_after`].
    pub fn x509(&self) -> &x509_cert::Certificate {
        &self.inner
    }

    /// The signed part's exact bytes (what the issuer's signature covers).
    pub fn tbs_der(&self) -> &[u8] {
        &self.der.0[self.tbs.clone()]
    }

    /// The signature algorithm from the outer `signatureAlgorithm` field.
    pub fn signature_algorithm(&self) -> &spki::AlgorithmIdentifierOwned {
        self.inner.signature_algorithm()
    }

    /// The signature bytes (`None` when the BIT STRING has unused bits, which no valid
    /// signature has).
    pub fn signature(&self) -> Option<&[u8]> {
        self.inner.signature().as_bytes()
    }

    /// Subject as an RFC 4514 string, e.g. `CN=zone.example,O=Example`.
    pub fn subject(&self) -> String {
        self.inner.tbs_certificate().subject().to_string()
    }

    /// Issuer as an RFC 4514 string.
    pub fn issuer(&self) -> String {
        self.inner.tbs_certificate().issuer().to_string()
    }

    /// The subject name (compare names for chaining with [`names_match`]).
    pub fn subject_name(&self) -> &Name {
        self.inner.tbs_certificate().subject()
    }

    /// The issuer name (compare names for chaining with [`names_match`]).
    pub fn issuer_name(&self) -> &Name {
        self.inner.tbs_certificate().issuer()
    }

    /// The subject's first common name, if any.
    pub fn common_name(&self) -> Option<String> {
        common_name(self.subject_name())
    }

    /// notBefore (any date X.509 can say, 1950 UTCTimes included).
    pub fn not_before(&self) -> Timestamp {
        self.validity[0]
    }

    /// notAfter (any date X.509 can say, 1950 UTCTimes included).
    pub fn not_after(&self) -> Timestamp {
        self.validity[1]
    }

    /// Valid, expired or not yet valid at `now` (both bounds inclusive, RFC 5280 4.1.2.5).
    pub fn status_at(&self, now: Timestamp) -> CertStatus {
        if now < self.not_before() {
            CertStatus::NotYetValid
        } else if now > self.not_after() {
            CertStatus::Expired
        } else {
            CertStatus::Valid
        }
    }

    /// The serial number's bytes, as encoded (big-endian, two's complement).
    pub fn serial(&self) -> &[u8] {
        self.inner.tbs_certificate().serial_number().as_bytes()
    }

    /// The serial number as colon-separated upper-case hex.
    pub fn serial_hex(&self) -> String {
        colon_hex(self.serial())
    }

    /// The subject public key.
    pub fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        self.inner.tbs_certificate().subject_public_key_info()
    }

    /// Key algorithm and length (V1).
    pub fn key_algorithm(&self) -> Result<KeyAlgorithm, CertError> {
        Ok(KeyAlgorithm::of_spki(self.public_key())?)
    }

    /// MD5, SHA-1 and SHA-256 of the DER (V1).
    pub fn fingerprints(&self) -> Fingerprints {
        Fingerprints {
            md5: Fingerprint::md5(&self.der.0),
            sha1: Fingerprint::sha1(&self.der.0),
            sha256: Fingerprint::sha256(&self.der.0),
        }
    }

    /// The X.509 version (0 = v1, 2 = v3).
    pub fn version(&self) -> u8 {
        self.inner.tbs_certificate().version() as u8
    }

    /// Every extension as (OID, critical, DER value).
    pub fn extensions(&self) -> impl Iterator<Item = (ObjectIdentifier, bool, &[u8])> {
        self.inner
            .tbs_certificate()
            .extensions()
            .into_iter()
            .flatten()
            .map(|e| (e.extn_id, e.critical, e.extn_value.as_bytes()))
    }

    fn ext<'a, T>(&'a self, name: &'static str) -> Result<Option<(bool, T)>, CertError>
    where
        T: Decode<'a, Error = der::Error> + der::oid::AssociatedOid,
    {
        self.inner
            .tbs_certificate()
            .get_extension::<T>()
            .map_err(|e| CertError::BadExtension {
                extension: name,
                reason: e.to_string(),
            })
    }

    /// basicConstraints, if present: `(is_ca, path_len)`.
    pub fn basic_constraints(&self) -> Result<Option<(bool, Option<u8>)>, CertError> {
        Ok(self
            .ext::<BasicConstraints>("basicConstraints")?
            .map(|(_, bc)| (bc.ca, bc.path_len_constraint)))
    }

    /// True when basicConstraints says CA:TRUE.
    pub fn is_ca(&self) -> bool {
        matches!(self.basic_constraints(), Ok(Some((true, _))))
    }

    /// keyUsage, if present.
    pub fn key_usage(&self) -> Result<Option<KeyUsage>, CertError> {
        Ok(self.ext::<KeyUsage>("keyUsage")?.map(|(_, ku)| ku))
    }

    /// Whether keyUsage allows `usage` (true when the extension is absent, RFC 5280 4.2.1.3).
    pub fn key_usage_allows(&self, usage: KeyUsages) -> Result<bool, CertError> {
        Ok(self.key_usage()?.is_none_or(|ku| ku.0.contains(usage)))
    }

    /// subjectKeyIdentifier, if present.
    pub fn subject_key_id(&self) -> Result<Option<Vec<u8>>, CertError> {
        Ok(self
            .ext::<SubjectKeyIdentifier>("subjectKeyIdentifier")?
            .map(|(_, s)| s.0.as_bytes().to_vec()))
    }

    /// authorityKeyIdentifier's keyIdentifier, if present.
    pub fn authority_key_id(&self) -> Result<Option<Vec<u8>>, CertError> {
        Ok(self
            .ext::<AuthorityKeyIdentifier>("authorityKeyIdentifier")?
            .and_then(|(_, a)| a.key_identifier.map(|k| k.as_bytes().to_vec())))
    }

    /// DNS names from subjectAltName (empty when there is no SAN).
    pub fn dns_names(&self) -> Result<Vec<String>, CertError> {
        Ok(self
            .ext::<SubjectAltName>("subjectAltName")?
            .map(|(_, san)| {
                san.0
                    .into_iter()
                    .filter_map(|g| match g {
                        GeneralName::DnsName(n) => Some(n.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// True when subject and issuer match (RFC 5280 7.1, [`names_match`]) and the key
    /// verifies its own signature.
    pub fn is_self_signed(&self) -> bool {
        names_match(self.subject_name(), self.issuer_name())
            && self.signature().is_some_and(|sig| {
                crate::key::verify_signature(
                    self.public_key(),
                    self.signature_algorithm(),
                    self.tbs_der(),
                    sig,
                )
                .is_ok()
            })
    }

    /// Everything V1 shows, at `now`.
    pub fn details(&self, now: Timestamp) -> CertDetails {
        let fp = self.fingerprints();
        let key = self.key_algorithm().ok();
        CertDetails {
            subject: self.subject(),
            issuer: self.issuer(),
            serial: self.serial_hex(),
            not_before: self.not_before(),
            not_after: self.not_after(),
            key_algorithm: key.map_or_else(|| "unknown".to_string(), |k| k.name().to_string()),
            key_bits: key.map_or(0, |k| k.bits()),
            md5: fp.md5.to_string(),
            sha1: fp.sha1.to_string(),
            sha256: fp.sha256.to_string(),
            status: self.status_at(now),
            dns_names: self.dns_names().unwrap_or_default(),
        }
    }
}

/// V1's certificate details, ready to print or serialise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CertDetails {
    /// Subject (RFC 4514).
    pub subject: String,
    /// Issuer (RFC 4514).
    pub issuer: String,
    /// Serial number, colon-separated hex.
    pub serial: String,
    /// Valid from.
    pub not_before: Timestamp,
    /// Expires.
    pub not_after: Timestamp,
    /// `ecdsa-p256`, `ecdsa-p384`, `rsa` (or `unknown`).
    pub key_algorithm: String,
    /// Key length in bits.
    pub key_bits: u32,
    /// MD5 fingerprint.
    pub md5: String,
    /// SHA-1 fingerprint.
    pub sha1: String,
    /// SHA-256 fingerprint.
    pub sha256: String,
    /// valid / expired / not_yet_valid.
    pub status: CertStatus,
    /// SAN DNS names.
    pub dns_names: Vec<String>,
}

/// The first CN of a name.
pub(crate) fn common_name(name: &Name) -> Option<String> {
    const CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
    let atv = name
        .iter_rdn()
        .flat_map(|rdn| rdn.iter())
        .find(|atv| atv.oid == CN)?;
    // The value itself, not its RFC 4514 display form (which escapes `,;+"\\<>=#`).
    match x509_cert::ext::pkix::name::DirectoryString::try_from(&atv.value) {
        Ok(ds) => Some(ds.value().into_owned()),
        Err(_) => {
            let s = atv.to_string();
            Some(s.split_once('=').map_or(s.clone(), |(_, v)| v.to_string()))
        }
    }
}

/// Finds the byte range of the first element inside an outer SEQUENCE: the signed part
/// (`tbsCertificate`, `certificationRequestInfo`) of a signed structure.
pub(crate) fn tbs_range(der: &[u8]) -> der::Result<std::ops::Range<usize>> {
    let mut reader = der::SliceReader::new(der)?;
    let outer = der::Header::decode(&mut reader)?;
    outer.tag().assert_eq(der::Tag::Sequence)?;
    let start = usize::try_from(reader.position())?;
    let tbs_header = der::Header::decode(&mut reader)?;
    let header_len = usize::try_from(reader.position())? - start;
    let body_len = usize::try_from(tbs_header.length())?;
    Ok(start..start + header_len + body_len)
}

/// The tag and content byte range, inside `der`, of a certificate's notBefore and notAfter
/// (RFC 5280 4.1: `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
/// serialNumber, signature, issuer, validity SEQUENCE { notBefore Time, notAfter Time }, ...`).
fn validity_fields(der: &[u8]) -> der::Result<[(der::Tag, std::ops::Range<usize>); 2]> {
    let mut reader = der::SliceReader::new(der)?;
    let enter = |reader: &mut der::SliceReader<'_>| -> der::Result<()> {
        der::Header::decode(reader)?
            .tag()
            .assert_eq(der::Tag::Sequence)
            .map(|_| ())
    };
    enter(&mut reader)?; // Certificate
    enter(&mut reader)?; // tbsCertificate
    let skip = |reader: &mut der::SliceReader<'_>| -> der::Result<()> {
        let header = der::Header::decode(reader)?;
        reader.read_slice(header.length())?;
        Ok(())
    };
    if der::Tag::peek(&reader)?.is_context_specific() {
        skip(&mut reader)?; // [0] version
    }
    skip(&mut reader)?; // serialNumber
    skip(&mut reader)?; // signature
    skip(&mut reader)?; // issuer
    enter(&mut reader)?; // validity
    let time = |reader: &mut der::SliceReader<'_>| {
        let header = der::Header::decode(reader)?;
        let start = usize::try_from(reader.position())?;
        let len = usize::try_from(header.length())?;
        reader.read_slice(header.length())?;
        Ok::<_, der::Error>((header.tag(), start..start + len))
    };
    Ok([time(&mut reader)?, time(&mut reader)?])
}

/// An X.509 `Time` value's content, decoded as RFC 5280 4.1.2.5 says: UTCTime `YYMMDDHHMMSSZ`
/// with `YY` >= 50 meaning 19YY and `YY` < 50 meaning 20YY (4.1.2.5.1), GeneralizedTime
/// `YYYYMMDDHHMMSSZ` (4.1.2.5.2; no fractional seconds). `None` for anything else, including an
/// impossible date or time (the seconds stop at 59, as in the `der` crate).
fn decode_time(tag: der::Tag, value: &[u8]) -> Option<Timestamp> {
    fn number(digits: &[u8]) -> Option<u16> {
        digits.iter().try_fold(0u16, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u16::from(d - b'0'))
        })
    }
    let (year, rest) = match (tag, value) {
        (der::Tag::UtcTime, _) if value.len() == 13 => {
            let yy = number(&value[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &value[2..])
        }
        (der::Tag::GeneralizedTime, _) if value.len() == 15 => (number(&value[..4])?, &value[4..]),
        _ => return None,
    };
    let [m @ .., b'Z'] = rest else {
        return None;
    };
    let [mo, d, h, mi, s] = [0, 2, 4, 6, 8].map(|i| number(&m[i..i + 2]));
    let month = time::Month::try_from(u8::try_from(mo?).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::from(year), month, u8::try_from(d?).ok()?).ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(h?).ok()?,
        u8::try_from(mi?).ok()?,
        u8::try_from(s?).ok()?,
    )
    .ok()?;
    Some(Timestamp::from_offset(date.with_time(clock).assume_utc()))
}

impl TryFrom<&[u8]> for Certificate {
    type Error = CertError;
    fn try_from(der: &[u8]) -> Result<Self, CertError> {
        Certificate::from_der(der)
    }
}

impl TryFrom<&CertificateDer> for Certificate {
    type Error = CertError;
    fn try_from(der: &CertificateDer) -> Result<Self, CertError> {
        Certificate::from_der(der.as_bytes())
    }
}

#[allow(dead_code)]
pub(crate) fn encode_name(name: &Name) -> Vec<u8> {
    name.to_der().expect("a decoded name re-encodes")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `to_pem` writes exactly what `pem_rfc7468` writes, at every length around a line's end.
    #[test]
    fn to_pem_matches_pem_rfc7468() {
        for n in [1usize, 2, 3, 47, 48, 49, 95, 96, 97, 500, 1000] {
            let der: Vec<u8> = (0..n).map(|i| (i * 31 % 251) as u8).collect();
            let expected =
                pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, &der)
                    .unwrap();
            assert_eq!(
                CertificateDer::from_vec(der).to_pem(),
                expected,
                "{n} bytes"
            );
        }
    }

    #[test]
    fn colon_hex_matches_openssl_style() {
        assert_eq!(colon_hex(&[0x0a, 0xff, 0x10]), "0A:FF:10");
        assert_eq!(colon_hex(&[]), "");
    }

    #[test]
    fn x509_times_decode_as_rfc_5280_says() {
        let utc = |s: &str| decode_time(der::Tag::UtcTime, s.as_bytes()).map(Timestamp::unix);
        let gen_ =
            |s: &str| decode_time(der::Tag::GeneralizedTime, s.as_bytes()).map(Timestamp::unix);
        // RFC 5280 4.1.2.5.1: YY >= 50 is 19YY, YY < 50 is 20YY.
        assert_eq!(utc("500101000000Z"), Some(-631_152_000)); // 1950-01-01
        assert_eq!(utc("600101000000Z"), Some(-315_619_200)); // 1960-01-01
        assert_eq!(utc("691231235959Z"), Some(-1));
        assert_eq!(utc("700101000000Z"), Some(0));
        assert_eq!(utc("491231235959Z"), Some(2_524_607_999)); // 2049-12-31T23:59:59
        assert_eq!(gen_("19400229120000Z"), Some(-941_630_400)); // a leap day, 1940
        assert_eq!(gen_("20500101000000Z"), Some(2_524_608_000));
        for bad in [
            "600101000000",   // no Z
            "6001010000Z",    // no seconds
            "601301000000Z",  // month 13
            "600230000000Z",  // 30 February
            "600101240000Z",  // hour 24
            "600101000060Z",  // second 60
            "6001010000-0Z",  // not digits
            "600101000000+0", // offset
        ] {
            assert_eq!(utc(bad), None, "{bad}");
        }
        assert_eq!(gen_("19400101000000.5Z"), None, "no fractional seconds");
        assert_eq!(
            gen_("600101000000Z"),
            None,
            "GeneralizedTime has four year digits"
        );
        assert_eq!(decode_time(der::Tag::OctetString, b"600101000000Z"), None);
    }

    #[test]
    fn garbage_is_typed_error() {
        assert_eq!(Certificate::from_der(&[]), Err(CertError::Empty));
        assert!(matches!(
            Certificate::from_der(b"hello"),
            Err(CertError::Malformed { .. })
        ));
        assert!(matches!(
            Certificate::from_der(&[0x30, 0x03, 0x02, 0x01]),
            Err(CertError::Malformed { .. })
        ));
    }

    #[test]
    fn record_pem_round_trips_and_refuses_bad_blocks() {
        // Bytes of any length (0..=3 padding cases), through the public PEM writer.
        for len in [1usize, 2, 3, 47, 48, 49, 700] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let pem = CertificateDer::from_vec(der.clone()).to_pem();
            assert_eq!(decode_record_pem(&pem).unwrap(), der, "len {len}");
            let (_, strict) = pem_rfc7468::decode_vec(pem.as_bytes()).unwrap();
            assert_eq!(strict, der);
            let json = serde_json::to_string(&CertificateDer::from_vec(der.clone())).unwrap();
            let back: CertificateDer = serde_json::from_str(&json).unwrap();
            assert_eq!(back.as_bytes(), &der[..]);
        }
        let pem = CertificateDer::from_vec(vec![1, 2, 3, 4, 5]).to_pem();
        let err = |s: &str| decode_record_pem(s).unwrap_err();
        assert!(err("").contains("not PEM"));
        assert!(err("garbage").contains("not PEM"));
        assert!(err("-----BEGIN CERTIFICATE").contains("does not end"));
        assert!(err(&pem.replace("CERTIFICATE", "PRIVATE KEY")).contains("expected CERTIFICATE"));
        assert!(err(&pem[..pem.len() - 10]).contains("END line"));
        assert!(err(&pem.replace("AQIDBAU", "AQ!DBAU")).contains("not base64"));
        assert!(err(&pem.replace("AQIDBAU=", "AQIDBAU")).contains("not base64"));
        assert!(err("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----").contains("empty"));
        // A record with a bad certificate is an error naming what was wrong, not a panic.
        let e =
            serde_json::from_str::<CertificateDer>("\"-----BEGIN CERTIFICATE-----\"").unwrap_err();
        assert!(e.to_string().contains("END line"), "{e}");
    }

    #[test]
    fn record_chains_are_base64_lines_and_pem_still_reads() {
        #[derive(Serialize, Deserialize)]
        struct R {
            #[serde(with = "record_chain")]
            c: Vec<CertificateDer>,
        }
        let chain = vec![
            CertificateDer::from_vec(vec![0x30, 1, 2, 3]),
            CertificateDer::from_vec((0..700).map(|i| i as u8).collect()),
        ];
        let json = serde_json::to_string(&R { c: chain.clone() }).unwrap();
        assert!(!json.contains("BEGIN") && !json.contains("\\n"), "{json}");
        let back: R = serde_json::from_str(&json).unwrap();
        assert_eq!(back.c, chain);
        // Records written before held PEM: they still read.
        let pem: Vec<String> = chain.iter().map(CertificateDer::to_pem).collect();
        let old = serde_json::json!({ "c": pem }).to_string();
        let back: R = serde_json::from_str(&old).unwrap();
        assert_eq!(back.c, chain);
        let err = |j: &str| serde_json::from_str::<R>(j).err().unwrap().to_string();
        assert!(err(r#"{"c":["@@@"]}"#).contains("neither PEM nor base64"));
        assert!(err(r#"{"c":[""]}"#).contains("empty"));
        assert!(err(r#"{"c":[7]}"#).contains("PEM or as base64"));
    }
}
