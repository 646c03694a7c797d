//! The DER of CMP (RFC 4210 as updated by RFC 9480; the CMP module uses EXPLICIT tags) and of
//! CRMF (RFC 4211; IMPLICIT tags), as far as zoned answers it.
//!
//! Written here with `der` rather than taken from RustCrypto's `cmpv2` and `crmf` crates: the
//! only releases of those built on der 0.8 (`0.3.0-pre.0`) pin `x509-cert = "=0.3.0-pre.0"` and
//! `cms = "=0.3.0-pre.0"`, which cannot be resolved beside the x509-cert 0.3.0 and cms
//! 0.3.0-rc.0 this crate uses, and the previous generation (der 0.7) is not to be added.
//!
//! Parts whose exact bytes are signed or MACed (the header and body of a message, a
//! `CertRequest`) are kept as the bytes received ([`Any`]), so a protection is checked over
//! what the client sent, not over a re-encoding.

use der::asn1::{Any, BitString, GeneralizedTime, Null, ObjectIdentifier, OctetString};
use der::{Decode, Encode, Sequence, Tag, TagNumber, Tagged};
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::name::GeneralName;

use super::CmpError;

/// The largest CMP message zoned reads (a request holds a public key, a few names and at
/// most a few certificates).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// id-PasswordBasedMac (RFC 4210 5.1.3.1).
pub const PASSWORD_BASED_MAC: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113533.7.66.13");
/// id-it-implicitConfirm (RFC 4210 5.1.1.1).
pub const IMPLICIT_CONFIRM: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.4.13");
/// id-it-caCerts (RFC 9480 2.14).
pub const CA_CERTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.4.17");
/// id-it-rootCaKeyUpdate (RFC 9480 2.15).
pub const ROOT_CA_KEY_UPDATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.4.18");
/// SHA-256 (a one-way function of PBM).
pub const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
/// SHA-1 (a one-way function of PBM; RFC 4210's default, accepted for the MAC key only).
pub const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
/// hmac-sha1 (RFC 3370; OpenSSL's default PBM MAC).
pub const HMAC_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.8.1.2");
/// hmacWithSHA1 (RFC 8018).
pub const HMAC_WITH_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.2.7");
/// hmacWithSHA256 (RFC 8018).
pub const HMAC_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.2.9");

/// PKIBody's choices (RFC 4210 5.1.2) that zoned reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyType {
    /// Initialization Request.
    Ir,
    /// Initialization Response.
    Ip,
    /// Certification Request.
    Cr,
    /// Certification Response.
    Cp,
    /// PKCS #10 Certification Request.
    P10cr,
    /// Key Update Request.
    Kur,
    /// Key Update Response.
    Kup,
    /// Confirmation.
    PkiConf,
    /// General Message.
    Genm,
    /// General Response.
    Genp,
    /// Error Message.
    Error,
    /// Certificate Confirm.
    CertConf,
    /// Any other choice, by its tag number.
    Other(u32),
}

impl BodyType {
    /// The context-specific tag number of the choice.
    pub fn tag_number(self) -> u32 {
        match self {
            BodyType::Ir => 0,
            BodyType::Ip => 1,
            BodyType::Cr => 2,
            BodyType::Cp => 3,
            BodyType::P10cr => 4,
            BodyType::Kur => 7,
            BodyType::Kup => 8,
            BodyType::PkiConf => 19,
            BodyType::Genm => 21,
            BodyType::Genp => 22,
            BodyType::Error => 23,
            BodyType::CertConf => 24,
            BodyType::Other(n) => n,
        }
    }

    fn from_tag_number(n: u32) -> Self {
        match n {
            0 => BodyType::Ir,
            1 => BodyType::Ip,
            2 => BodyType::Cr,
            3 => BodyType::Cp,
            4 => BodyType::P10cr,
            7 => BodyType::Kur,
            8 => BodyType::Kup,
            19 => BodyType::PkiConf,
            21 => BodyType::Genm,
            22 => BodyType::Genp,
            23 => BodyType::Error,
            24 => BodyType::CertConf,
            n => BodyType::Other(n),
        }
    }
}

/// InfoTypeAndValue (RFC 4210 5.3.19).
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
pub struct InfoTypeAndValue {
    /// infoType.
    pub info_type: ObjectIdentifier,
    /// infoValue.
    pub info_value: Option<Any>,
}

/// PKIHeader (RFC 4210 5.1.1).
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
pub struct PkiHeader {
    /// pvno: 2 (cmp2000) or 3 (cmp2021).
    pub pvno: u8,
    /// sender.
    pub sender: GeneralName,
    /// recipient.
    pub recipient: GeneralName,
    /// messageTime.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub message_time: Option<GeneralizedTime>,
    /// protectionAlg.
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub protection_alg: Option<AlgorithmIdentifierOwned>,
    /// senderKID.
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    pub sender_kid: Option<OctetString>,
    /// recipKID.
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    pub recip_kid: Option<OctetString>,
    /// transactionID.
    #[asn1(context_specific = "4", tag_mode = "EXPLICIT", optional = "true")]
    pub transaction_id: Option<OctetString>,
    /// senderNonce.
    #[asn1(context_specific = "5", tag_mode = "EXPLICIT", optional = "true")]
    pub sender_nonce: Option<OctetString>,
    /// recipNonce.
    #[asn1(context_specific = "6", tag_mode = "EXPLICIT", optional = "true")]
    pub recip_nonce: Option<OctetString>,
    /// freeText (PKIFreeText: SEQUENCE OF UTF8String).
    #[asn1(context_specific = "7", tag_mode = "EXPLICIT", optional = "true")]
    pub free_text: Option<Vec<String>>,
    /// generalInfo.
    #[asn1(context_specific = "8", tag_mode = "EXPLICIT", optional = "true")]
    pub general_info: Option<Vec<InfoTypeAndValue>>,
}

impl PkiHeader {
    /// Whether generalInfo holds implicitConfirm.
    pub fn implicit_confirm(&self) -> bool {
        self.general_info
            .iter()
            .flatten()
            .any(|i| i.info_type == IMPLICIT_CONFIRM)
    }
}

/// PBMParameter (RFC 4210 5.1.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
pub struct PbmParameter {
    /// salt.
    pub salt: OctetString,
    /// owf: the one-way function that derives the key.
    pub owf: AlgorithmIdentifierOwned,
    /// iterationCount.
    pub iteration_count: u32,
    /// mac.
    pub mac: AlgorithmIdentifierOwned,
}

/// The outer PKIMessage, with the parts a protection covers kept as received.
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
struct RawMessage {
    header: Any,
    body: Any,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    protection: Option<BitString>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    extra_certs: Option<Vec<Any>>,
}

/// A PKIMessage as received (RFC 4210 5.1).
#[derive(Debug, Clone)]
pub struct PkiMessage {
    /// The decoded header.
    pub header: PkiHeader,
    header_der: Vec<u8>,
    /// The body's choice.
    pub body_type: BodyType,
    /// The body's content (the DER of the chosen type, inside its explicit tag).
    pub body: Vec<u8>,
    body_der: Vec<u8>,
    /// protection's bits.
    pub protection: Option<Vec<u8>>,
    /// extraCerts (each a certificate's DER).
    pub extra_certs: Vec<Vec<u8>>,
}

impl PkiMessage {
    /// Parses a PKIMessage of at most [`MAX_MESSAGE_BYTES`].
    pub fn from_der(bytes: &[u8]) -> Result<Self, CmpError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(CmpError::TooLarge {
                len: bytes.len(),
                limit: MAX_MESSAGE_BYTES,
            });
        }
        let raw = RawMessage::from_der(bytes).map_err(malformed("PKIMessage"))?;
        let header_der = raw.header.to_der().map_err(malformed("PKIHeader"))?;
        let header = PkiHeader::from_der(&header_der).map_err(malformed("PKIHeader"))?;
        let body_type = match raw.body.tag() {
            Tag::ContextSpecific {
                constructed: true,
                number,
            } => BodyType::from_tag_number(number.value()),
            other => {
                return Err(CmpError::Malformed {
                    what: "PKIBody",
                    reason: format!("{other} is not a body choice"),
                });
            }
        };
        let protection = match raw.protection {
            Some(b) => Some(
                b.as_bytes()
                    .ok_or(CmpError::Malformed {
                        what: "protection",
                        reason: "the BIT STRING has unused bits".into(),
                    })?
                    .to_vec(),
            ),
            None => None,
        };
        let extra_certs = raw
            .extra_certs
            .unwrap_or_default()
            .iter()
            .map(|c| c.to_der())
            .collect::<Result<Vec<_>, _>>()
            .map_err(malformed("extraCerts"))?;
        Ok(PkiMessage {
            header,
            header_der,
            body_type,
            body: raw.body.value().to_vec(),
            body_der: raw.body.to_der().map_err(malformed("PKIBody"))?,
            protection,
            extra_certs,
        })
    }

    /// The DER of ProtectedPart (header and body as received), what a protection covers.
    pub fn protected_part(&self) -> Result<Vec<u8>, CmpError> {
        protected_part(&self.header_der, &self.body_der)
    }

    /// The transactionID, if any.
    pub fn transaction_id(&self) -> Option<&[u8]> {
        self.header.transaction_id.as_ref().map(|t| t.as_bytes())
    }

    /// The senderKID as text, if any and UTF-8.
    pub fn sender_kid(&self) -> Option<String> {
        self.header
            .sender_kid
            .as_ref()
            .and_then(|k| std::str::from_utf8(k.as_bytes()).ok())
            .map(str::to_string)
    }
}

/// ProtectedPart ::= SEQUENCE { header, body } over DER already encoded.
pub fn protected_part(header: &[u8], body: &[u8]) -> Result<Vec<u8>, CmpError> {
    let mut content = Vec::with_capacity(header.len() + body.len());
    content.extend_from_slice(header);
    content.extend_from_slice(body);
    Any::new(Tag::Sequence, content)
        .and_then(|a| a.to_der())
        .map_err(malformed("ProtectedPart"))
}

/// A request's CertReqMsg, the parts zoned uses (RFC 4211 3).
#[derive(Debug, Clone)]
pub struct CertReqMsg {
    /// certReqId.
    pub cert_req_id: i64,
    /// The DER of certReq (CertRequest) as received: what a POPOSigningKey without
    /// poposkInput signs.
    pub cert_req_der: Vec<u8>,
    /// The template's subject (a Name's DER), if given.
    pub subject: Option<Vec<u8>>,
    /// The template's public key (a SubjectPublicKeyInfo's DER), if given.
    pub public_key: Option<Vec<u8>>,
    /// The signature POP: (poposkInput present, algorithm, signature bits).
    pub pop_signature: Option<(bool, AlgorithmIdentifierOwned, Vec<u8>)>,
    /// The serial number (INTEGER content) of the oldCertID control (RFC 4211 6.5), if any.
    pub old_cert_serial: Option<Vec<u8>>,
}

/// id-regCtrl-oldCertID.
pub const OLD_CERT_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.5.1.5");

/// The serial of an oldCertID control among `controls` (a Controls SEQUENCE's DER).
fn old_cert_serial(controls: &[u8]) -> Result<Option<Vec<u8>>, CmpError> {
    for c in elements(controls, "Controls")? {
        let f = elements(&c.to_der().map_err(malformed("control"))?, "control")?;
        let (Some(t), Some(v)) = (f.first(), f.get(1)) else {
            continue;
        };
        let oid: ObjectIdentifier = t.decode_as().map_err(malformed("control type"))?;
        if oid == OLD_CERT_ID {
            let id = elements(&v.to_der().map_err(malformed("oldCertID"))?, "oldCertID")?;
            return Ok(id.get(1).map(|serial| serial.value().to_vec()));
        }
    }
    Ok(None)
}

/// The elements of a SEQUENCE, each as received.
fn elements(der: &[u8], what: &'static str) -> Result<Vec<Any>, CmpError> {
    Vec::<Any>::from_der(der).map_err(malformed(what))
}

fn context_number(a: &Any) -> Option<u32> {
    match a.tag() {
        Tag::ContextSpecific { number, .. } => Some(number.value()),
        _ => None,
    }
}

/// Parses CertReqMessages (the content of ir, cr and kur).
pub fn cert_req_messages(body: &[u8]) -> Result<Vec<CertReqMsg>, CmpError> {
    let mut out = Vec::new();
    for msg in elements(body, "CertReqMessages")? {
        let parts = elements(
            &msg.to_der().map_err(malformed("CertReqMsg"))?,
            "CertReqMsg",
        )?;
        let cert_req = parts.first().ok_or(CmpError::Malformed {
            what: "CertReqMsg",
            reason: "certReq is missing".into(),
        })?;
        let cert_req_der = cert_req.to_der().map_err(malformed("CertRequest"))?;
        let req = elements(&cert_req_der, "CertRequest")?;
        let (Some(id), Some(template)) = (req.first(), req.get(1)) else {
            return Err(CmpError::Malformed {
                what: "CertRequest",
                reason: "certReqId or certTemplate is missing".into(),
            });
        };
        let cert_req_id: i64 = id.decode_as().map_err(malformed("certReqId"))?;
        let old_cert_serial = match req.get(2) {
            Some(c) if c.tag() == Tag::Sequence => {
                old_cert_serial(&c.to_der().map_err(malformed("Controls"))?)?
            }
            _ => None,
        };
        let mut subject = None;
        let mut public_key = None;
        for field in elements(
            &template.to_der().map_err(malformed("CertTemplate"))?,
            "CertTemplate",
        )? {
            match context_number(&field) {
                // subject [5] Name: a CHOICE, so the tag is explicit.
                Some(5) => subject = Some(field.value().to_vec()),
                // publicKey [6] SubjectPublicKeyInfo, IMPLICIT.
                Some(6) => {
                    public_key = Some(
                        Any::new(Tag::Sequence, field.value())
                            .and_then(|a| a.to_der())
                            .map_err(malformed("publicKey"))?,
                    )
                }
                _ => {}
            }
        }
        let mut pop_signature = None;
        if let Some(popo) = parts.get(1)
            && context_number(popo) == Some(1)
        {
            // signature [1] POPOSigningKey, IMPLICIT.
            let inner = Any::new(Tag::Sequence, popo.value())
                .and_then(|a| a.to_der())
                .map_err(malformed("POPOSigningKey"))?;
            let fields = elements(&inner, "POPOSigningKey")?;
            let n = fields.len();
            if !(2..=3).contains(&n) {
                return Err(CmpError::Malformed {
                    what: "POPOSigningKey",
                    reason: format!("{n} fields"),
                });
            }
            let alg: AlgorithmIdentifierOwned = fields[n - 2]
                .to_der()
                .and_then(|d| AlgorithmIdentifierOwned::from_der(&d))
                .map_err(malformed("POPOSigningKey algorithm"))?;
            let sig: BitString = fields[n - 1]
                .decode_as()
                .map_err(malformed("POPOSigningKey signature"))?;
            let sig = sig
                .as_bytes()
                .ok_or(CmpError::Malformed {
                    what: "POPOSigningKey",
                    reason: "the signature has unused bits".into(),
                })?
                .to_vec();
            pop_signature = Some((n == 3, alg, sig));
        }
        out.push(CertReqMsg {
            cert_req_id,
            cert_req_der,
            subject,
            public_key,
            pop_signature,
            old_cert_serial,
        });
    }
    if out.is_empty() {
        return Err(CmpError::Malformed {
            what: "CertReqMessages",
            reason: "no request".into(),
        });
    }
    Ok(out)
}

/// CertStatus of a certConf (RFC 4210 5.3.18), the parts zoned uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertStatus {
    /// certHash.
    pub cert_hash: Vec<u8>,
    /// certReqId.
    pub cert_req_id: i64,
    /// statusInfo's status, if given (0 accepted).
    pub status: Option<i64>,
}

/// Parses CertConfirmContent.
pub fn cert_conf(body: &[u8]) -> Result<Vec<CertStatus>, CmpError> {
    let mut out = Vec::new();
    for st in elements(body, "CertConfirmContent")? {
        let f = elements(&st.to_der().map_err(malformed("CertStatus"))?, "CertStatus")?;
        let (Some(hash), Some(id)) = (f.first(), f.get(1)) else {
            return Err(CmpError::Malformed {
                what: "CertStatus",
                reason: "certHash or certReqId is missing".into(),
            });
        };
        let hash: OctetString = hash.decode_as().map_err(malformed("certHash"))?;
        let status = match f.get(2) {
            Some(info) => {
                let info = elements(
                    &info.to_der().map_err(malformed("statusInfo"))?,
                    "statusInfo",
                )?;
                match info.first() {
                    Some(s) => Some(s.decode_as::<i64>().map_err(malformed("status"))?),
                    None => None,
                }
            }
            None => None,
        };
        out.push(CertStatus {
            cert_hash: hash.as_bytes().to_vec(),
            cert_req_id: id.decode_as().map_err(malformed("certReqId"))?,
            status,
        });
    }
    Ok(out)
}

/// PKIFailureInfo's bits (RFC 4210 5.2.3, RFC 9480 2.4) that zoned sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureInfo {
    /// badAlg.
    BadAlg = 0,
    /// badMessageCheck: the protection failed.
    BadMessageCheck = 1,
    /// badRequest: not permitted or not supported.
    BadRequest = 2,
    /// badDataFormat: could not be parsed.
    BadDataFormat = 5,
    /// badPOP.
    BadPop = 9,
    /// certConfirmed: already confirmed.
    CertConfirmed = 11,
    /// badCertTemplate.
    BadCertTemplate = 19,
    /// signerNotTrusted.
    SignerNotTrusted = 20,
    /// transactionIdInUse.
    TransactionIdInUse = 21,
    /// notAuthorized.
    NotAuthorized = 23,
    /// systemUnavail.
    SystemUnavail = 24,
    /// systemFailure.
    SystemFailure = 25,
}

impl FailureInfo {
    /// The named BIT STRING with only this bit set (DER: no trailing zero bits).
    pub fn bits(self) -> Result<BitString, CmpError> {
        let n = self as usize;
        let mut bytes = vec![0u8; n / 8 + 1];
        bytes[n / 8] = 0x80 >> (n % 8);
        BitString::new((7 - n % 8) as u8, bytes).map_err(malformed("PKIFailureInfo"))
    }
}

/// PKIStatusInfo (RFC 4210 5.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
pub struct PkiStatusInfo {
    /// status: 0 accepted, 2 rejection.
    pub status: u8,
    /// statusString.
    pub status_string: Option<Vec<String>>,
    /// failInfo.
    pub fail_info: Option<BitString>,
}

/// ErrorMsgContent (RFC 4210 5.3.21).
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
pub struct ErrorMsgContent {
    /// pKIStatusInfo.
    pub status: PkiStatusInfo,
    /// errorCode.
    pub error_code: Option<i64>,
    /// errorDetails.
    pub error_details: Option<Vec<String>>,
}

/// CertOrEncCert with its certificate choice: `certificate [0] CMPCertificate` (explicit).
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
pub struct CertifiedKeyPair {
    /// certOrEncCert, as the tagged certificate.
    pub cert: Any,
}

/// CertResponse (RFC 4210 5.3.4).
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
pub struct CertResponse {
    /// certReqId.
    pub cert_req_id: i64,
    /// status.
    pub status: PkiStatusInfo,
    /// certifiedKeyPair.
    pub certified_key_pair: Option<CertifiedKeyPair>,
}

/// CertRepMessage (RFC 4210 5.3.4).
#[derive(Debug, Clone, PartialEq, Eq, Sequence)]
pub struct CertRepMessage {
    /// caPubs.
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub ca_pubs: Option<Vec<Any>>,
    /// response.
    pub response: Vec<CertResponse>,
}

/// A certificate's DER as `certificate [0] CMPCertificate`.
pub fn tagged_certificate(cert: &[u8]) -> Result<Any, CmpError> {
    Any::new(
        Tag::ContextSpecific {
            constructed: true,
            number: TagNumber(0),
        },
        cert.to_vec(),
    )
    .map_err(malformed("certificate"))
}

/// A certificate's DER as an element.
pub fn any_der(der: &[u8]) -> Result<Any, CmpError> {
    Any::from_der(der).map_err(malformed("certificate"))
}

/// A body: the content `inner` (a DER value) under the explicit tag of `body_type`.
pub fn body_der(body_type: BodyType, inner: &[u8]) -> Result<Vec<u8>, CmpError> {
    Any::new(
        Tag::ContextSpecific {
            constructed: true,
            number: TagNumber(body_type.tag_number()),
        },
        inner.to_vec(),
    )
    .and_then(|a| a.to_der())
    .map_err(malformed("PKIBody"))
}

/// NULL's DER (pkiConf's content).
pub fn null_der() -> Vec<u8> {
    Null.to_der().unwrap_or_else(|_| vec![0x05, 0x00])
}

/// A PKIMessage from encoded header and body, with its protection and extraCerts.
pub fn message_der(
    header: &[u8],
    body: &[u8],
    protection: Option<&[u8]>,
    extra_certs: &[Vec<u8>],
) -> Result<Vec<u8>, CmpError> {
    let raw = RawMessage {
        header: Any::from_der(header).map_err(malformed("PKIHeader"))?,
        body: Any::from_der(body).map_err(malformed("PKIBody"))?,
        protection: match protection {
            Some(p) => Some(BitString::from_bytes(p).map_err(malformed("protection"))?),
            None => None,
        },
        extra_certs: if extra_certs.is_empty() {
            None
        } else {
            Some(
                extra_certs
                    .iter()
                    .map(|c| any_der(c))
                    .collect::<Result<_, _>>()?,
            )
        },
    };
    raw.to_der().map_err(malformed("PKIMessage"))
}

/// Maps a DER error to [`CmpError::Malformed`] about `what`.
pub(crate) fn malformed(what: &'static str) -> impl Fn(der::Error) -> CmpError {
    move |e| CmpError::Malformed {
        what,
        reason: e.to_string(),
    }
}

/// The info types a GenMsgContent asks for (RFC 4210 5.3.19), at most 16.
pub fn general_message(body: &[u8]) -> Result<Vec<ObjectIdentifier>, CmpError> {
    let items = Vec::<InfoTypeAndValue>::from_der(body).map_err(malformed("GenMsgContent"))?;
    if items.is_empty() || items.len() > 16 {
        return Err(CmpError::Malformed {
            what: "GenMsgContent",
            reason: format!("{} info types (1 to 16 allowed)", items.len()),
        });
    }
    Ok(items.into_iter().map(|i| i.info_type).collect())
}

/// RootCaKeyUpdateContent (RFC 9480 2.15): newWithNew, and newWithOld `[0]` when given
/// (oldWithNew `[1]` is not made: B1 bridges one way).
pub fn root_ca_key_update(
    new_with_new: &[u8],
    new_with_old: Option<&[u8]>,
) -> Result<Any, CmpError> {
    let mut content = new_with_new.to_vec();
    if let Some(b) = new_with_old {
        content.extend(
            tagged_certificate(b)?
                .to_der()
                .map_err(malformed("newWithOld"))?,
        );
    }
    Any::new(Tag::Sequence, content).map_err(malformed("RootCaKeyUpdateContent"))
}
