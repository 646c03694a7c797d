//! CMP (RFC 4210 as updated by RFC 9480, lightweight profile RFC 9483) for clients that do not
//! run a zonepki agent (E1): appliances, printers, `openssl cmp`. Sans-IO: [`respond`] takes
//! the bytes of a PKIMessage and returns the bytes of the answer, with the refusal to audit
//! when it refused; zoned's HTTP glue (feature `net`) only carries them.
//!
//! What is answered:
//! - `ir`, `cr` and `p10cr` protected by a password-based MAC (RFC 4210 5.1.3.1) whose secret is the
//!   member's registration token (N3) and whose senderKID is the member's name; the request's
//!   proof of possession is a signature (the PKCS #10 self-signature of a `p10cr`), checked. The certificate is issued through the core
//!   (the token used up in the same commit, audited as `member.enroll`) and answered in an `ip`
//!   or `cp` protected with the same secret, with the zone's CA certificates in caPubs.
//! - implicitConfirm in generalInfo: granted (the transaction is recorded as confirmed);
//!   otherwise `certConf` answered by `pkiConf`.
//! - A repeated transactionID of the same member gets the same certificate again, never a
//!   second one (the transaction is recorded in the commit that issues it).
//! - E2, staged operations: during a Remint CA or Change CA, `genm` rootCaKeyUpdate gives the
//!   future CA (newWithNew) and the bridge (newWithOld, B1); once the update is assigned and
//!   until activation, a `kur` gets the member's *future* certificate, issued by the future CA
//!   and valid from issuance, with the future CA and the bridge in extraCerts and both CAs in
//!   caPubs. Both answers carry the activation time as `activation: <RFC 3339>` in the header's
//!   freeText (CMP has no field for it). The client keeps its current key and certificate
//!   until then by its own clock (N5), then switches to the new ones and trusts the future CA.
//!   The member counts as `applied` (staged) from the commit that issued the future
//!   certificate, and as `activated` once a request after activation is signed by a
//!   certificate of the new CA (`recovered` when it had missed the update and re-keys after
//!   activation), as an agent does in `op show`, `device list` and the gate's coverage (B2).
//! - Anything refused is answered by an `error` message with a PKIFailureInfo and a text, and
//!   returned as a [`Refusal`] for the audit (N3). An error is MAC-protected when the request's
//!   MAC was verified, unprotected otherwise (the client cannot be answered with a secret it
//!   did not prove).

pub mod asn1;

use der::asn1::{Any, GeneralizedTime, OctetString};
use der::{Decode, Encode};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;

use crate::cert::{Certificate, CertificateDer};
use crate::clock::Clock;
use crate::error::Error;
use crate::key::Signer;
use crate::service::{Refusal, ZoneService};
use crate::store::Storage;
use crate::transport::Transport;
use asn1::{
    BodyType, CertRepMessage, CertResponse, CertifiedKeyPair, ErrorMsgContent, FailureInfo,
    InfoTypeAndValue, PbmParameter, PkiHeader, PkiMessage, PkiStatusInfo,
};

/// The fewest and most PBM iterations accepted (RFC 4210 recommends at least 100; a bound
/// above keeps one request's cost small).
const PBM_ITERATIONS: std::ops::RangeInclusive<u32> = 100..=100_000;
/// The longest PBM salt accepted.
const PBM_MAX_SALT: usize = 128;
/// The shortest transactionID accepted (RFC 9483 3.1: 128 bits).
const MIN_TRANSACTION_ID: usize = 16;
/// How often a request that lost a race with another commit is run again (nothing was
/// committed, B6).
const MAX_ATTEMPTS: usize = 8;

/// Why a CMP message was refused. The messages never hold a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CmpError {
    /// Longer than [`asn1::MAX_MESSAGE_BYTES`].
    #[error("the CMP message is {len} bytes, more than the {limit} allowed")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Not DER of the expected type.
    #[error("the CMP message is malformed: {what}: {reason}")]
    Malformed {
        /// The part that failed.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A message type or option zoned does not answer.
    #[error("{what} is not supported by this zone's CMP server")]
    Unsupported {
        /// What.
        what: String,
    },
    /// An algorithm or parameter zoned does not accept.
    #[error("{what} is not accepted: use PBM with SHA-256 or SHA-1 and HMAC-SHA1 or HMAC-SHA256")]
    BadAlgorithm {
        /// What.
        what: String,
    },
    /// The protection is missing or does not verify.
    #[error("the message's protection does not verify: {reason}")]
    BadProtection {
        /// Why.
        reason: String,
    },
    /// The proof of possession is missing or does not verify.
    #[error("the proof of possession of the requested key does not verify: {reason}")]
    BadPop {
        /// Why.
        reason: String,
    },
    /// The certificate template lacks what is needed.
    #[error("the certificate template is not usable: {reason}")]
    BadTemplate {
        /// Why.
        reason: String,
    },
    /// The protecting certificate is not a member's valid credential.
    #[error(
        "the certificate that signed the message is not a valid credential of this zone: {reason}"
    )]
    SignerNotTrusted {
        /// Why.
        reason: String,
    },
    /// The request asks for what its signer may not have.
    #[error("not authorized: {reason}")]
    NotAuthorized {
        /// Why.
        reason: String,
    },
    /// The transactionID belongs to another member's transaction.
    #[error("the transactionID is in use by another transaction: start a new transaction")]
    TransactionInUse,
    /// certConf for a transaction zoned has no record of.
    #[error("no certificate was issued in this transaction: send certConf only after ip/cp")]
    UnknownTransaction,
    /// The zone refused or failed.
    #[error(transparent)]
    Zone(Box<Error>),
}

impl From<Error> for CmpError {
    fn from(e: Error) -> Self {
        CmpError::Zone(Box::new(e))
    }
}

impl CmpError {
    /// The PKIFailureInfo bit that says what went wrong (RFC 4210 5.2.3).
    pub fn failure_info(&self) -> FailureInfo {
        match self {
            CmpError::TooLarge { .. } | CmpError::Malformed { .. } => FailureInfo::BadDataFormat,
            CmpError::Unsupported { .. } => FailureInfo::BadRequest,
            CmpError::BadAlgorithm { .. } => FailureInfo::BadAlg,
            CmpError::BadProtection { .. } => FailureInfo::BadMessageCheck,
            CmpError::BadPop { .. } => FailureInfo::BadPop,
            CmpError::BadTemplate { .. } => FailureInfo::BadCertTemplate,
            CmpError::TransactionInUse => FailureInfo::TransactionIdInUse,
            CmpError::SignerNotTrusted { .. } => FailureInfo::SignerNotTrusted,
            CmpError::NotAuthorized { .. } => FailureInfo::NotAuthorized,
            CmpError::UnknownTransaction => FailureInfo::BadRequest,
            CmpError::Zone(e) => match e.as_ref() {
                e if e.is_retryable() => FailureInfo::SystemUnavail,
                Error::Enrolment(_) | Error::Zone(crate::zone::ZoneError::UnknownMember { .. }) => {
                    FailureInfo::NotAuthorized
                }
                Error::Csr(_) | Error::Key(_) => FailureInfo::BadCertTemplate,
                _ => FailureInfo::SystemFailure,
            },
        }
    }

    /// Whether this is the client's fault (a refusal to audit), not the zone's.
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self.failure_info(),
            FailureInfo::SystemUnavail | FailureInfo::SystemFailure
        )
    }
}

/// An answer to a CMP request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CmpAnswer {
    /// The DER of the PKIMessage to send back.
    pub message: Vec<u8>,
    /// The refusal to audit (with [`ZoneService::record_refusal`]), when the request was
    /// refused.
    pub refusal: Option<Refusal>,
    /// The member a certificate was issued to (or re-sent to), for the log.
    pub issued_to: Option<String>,
}

/// What the request proved: its member and the MAC parameters to answer with.
struct Verified {
    member: String,
    secret: crate::protocol::RegistrationToken,
    params: PbmParameter,
}

/// zoned's own credential, which signs the answers to requests not protected by a MAC
/// (RFC 9483 3.2: kur, and errors to them): a signer and its chain, leaf first.
#[derive(Clone, Copy)]
pub struct SigningCredential<'a> {
    /// The key.
    pub signer: &'a dyn Signer,
    /// Its certificate chain, leaf first.
    pub chain: &'a [CertificateDer],
}

impl std::fmt::Debug for SigningCredential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningCredential")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// How an answer is protected.
#[derive(Clone, Copy)]
enum Protect<'a> {
    /// With the MAC the request proved.
    Mac(&'a Verified),
    /// Signed by zoned's credential.
    Sign(SigningCredential<'a>),
    /// Not at all (nothing to protect it with).
    None,
}

/// Answers one CMP request (E1). Never fails: a refusal is an `error` message (with
/// [`CmpAnswer::refusal`] set) and a failure of the zone an `error` with systemFailure or
/// systemUnavail.
pub fn respond<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    request: &[u8],
    credential: Option<SigningCredential<'_>>,
) -> CmpAnswer {
    let msg = match PkiMessage::from_der(request) {
        Ok(m) => m,
        Err(e) => return error_answer(svc, None, None, credential, &e),
    };
    let mut verified = None;
    let mut attempt = 1;
    let result = loop {
        let r = answer(svc, &msg, &mut verified, credential);
        match r {
            Err(CmpError::Zone(e)) if e.is_retryable() && attempt < MAX_ATTEMPTS => {
                attempt += 1;
            }
            r => break r,
        }
    };
    match result {
        Ok((message, issued_to)) => CmpAnswer {
            message,
            refusal: None,
            issued_to,
        },
        Err(e) => error_answer(svc, Some(&msg), verified.as_ref(), credential, &e),
    }
}

/// The `error` message (unprotected) for a request refused before it could be read, e.g. a
/// body longer than [`asn1::MAX_MESSAGE_BYTES`], with its refusal to audit.
pub fn refuse<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    error: &CmpError,
    credential: Option<SigningCredential<'_>>,
) -> CmpAnswer {
    error_answer(svc, None, None, credential, error)
}

fn answer<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    msg: &PkiMessage,
    verified: &mut Option<Verified>,
    credential: Option<SigningCredential<'_>>,
) -> Result<(Vec<u8>, Option<String>), CmpError> {
    match msg.body_type {
        BodyType::Ir | BodyType::Cr | BodyType::P10cr => {
            let v = verify_mac(svc, msg)?;
            let member = v.member.clone();
            *verified = Some(v);
            let v = verified.as_ref().ok_or(CmpError::UnknownTransaction)?;
            let out = enrol(svc, msg, v)?;
            Ok((out, Some(member)))
        }
        BodyType::CertConf if is_mac_protected(msg) => {
            let v = verify_mac(svc, msg)?;
            *verified = Some(v);
            let v = verified.as_ref().ok_or(CmpError::UnknownTransaction)?;
            Ok((confirm(svc, msg, &v.member, Protect::Mac(v))?, None))
        }
        BodyType::CertConf => {
            // The certConf of a kur, signed like it.
            let (member, protecting) = verify_signature_protection(svc, msg)?;
            let credential = credential.ok_or(CmpError::Unsupported {
                what: "a signed certConf on a server without its own credential".into(),
            })?;
            let out = confirm(svc, msg, &member, Protect::Sign(credential))?;
            // E2: counted once the request is answered, so a refusal changes nothing.
            svc.cmp_authenticated(&member, &protecting)?;
            Ok((out, None))
        }
        BodyType::Genm if is_mac_protected(msg) => {
            let v = verify_mac(svc, msg)?;
            *verified = Some(v);
            let v = verified.as_ref().ok_or(CmpError::UnknownTransaction)?;
            Ok((general(svc, msg, Protect::Mac(v))?, None))
        }
        BodyType::Genm => {
            let (member, protecting) = verify_signature_protection(svc, msg)?;
            let credential = credential.ok_or(CmpError::Unsupported {
                what: "a signed genm on a server without its own credential".into(),
            })?;
            let out = general(svc, msg, Protect::Sign(credential))?;
            // E2: counted once the request is answered, so a refusal changes nothing.
            svc.cmp_authenticated(&member, &protecting)?;
            Ok((out, None))
        }
        BodyType::Kur => {
            let (member, protecting) = verify_signature_protection(svc, msg)?;
            let credential = credential.ok_or(CmpError::Unsupported {
                what: "kur on a server without its own credential".into(),
            })?;
            Ok((
                rekey(svc, msg, &member, &protecting, credential)?,
                Some(member),
            ))
        }
        other => Err(CmpError::Unsupported {
            what: format!("the body type {other:?}"),
        }),
    }
}

/// Whether the message says it is protected by a password-based MAC.
fn is_mac_protected(msg: &PkiMessage) -> bool {
    msg.header
        .protection_alg
        .as_ref()
        .is_some_and(|a| a.oid == asn1::PASSWORD_BASED_MAC)
}

/// Checks the request's password-based MAC with the registration token of the member its
/// senderKID names.
fn verify_mac<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    msg: &PkiMessage,
) -> Result<Verified, CmpError> {
    let Some(alg) = &msg.header.protection_alg else {
        return Err(CmpError::BadProtection {
            reason: "the message is not protected: protect it with a MAC keyed by the \
                     member's registration token"
                .into(),
        });
    };
    if alg.oid != asn1::PASSWORD_BASED_MAC {
        return Err(CmpError::Unsupported {
            what: format!(
                "protection by {} for this request (an initial request is protected by a \
                 password-based MAC)",
                alg.oid
            ),
        });
    }
    let params: PbmParameter = alg
        .parameters
        .as_ref()
        .ok_or(CmpError::Malformed {
            what: "PBMParameter",
            reason: "absent".into(),
        })?
        .decode_as()
        .map_err(asn1::malformed("PBMParameter"))?;
    let Some(member) = msg.sender_kid() else {
        return Err(CmpError::BadProtection {
            reason: "the senderKID must name the member (its reference)".into(),
        });
    };
    let protection = msg.protection.as_deref().ok_or(CmpError::BadProtection {
        reason: "the protection is absent".into(),
    })?;
    let bad = || CmpError::BadProtection {
        reason: format!("the MAC does not verify with the registration token of {member}"),
    };
    let secret = svc.registration_secret(&member)?.ok_or_else(bad)?;
    let mac = pbm(secret.as_str().as_bytes(), &params, &msg.protected_part()?)?;
    if !equal(&mac, protection) {
        return Err(bad());
    }
    Ok(Verified {
        member,
        secret,
        params,
    })
}

/// The PBM of `data` (RFC 4210 5.1.3.1): the key is `owf` applied `iterationCount` times to
/// secret || salt.
fn pbm(secret: &[u8], params: &PbmParameter, data: &[u8]) -> Result<Vec<u8>, CmpError> {
    if !PBM_ITERATIONS.contains(&params.iteration_count) {
        return Err(CmpError::BadAlgorithm {
            what: format!(
                "a PBM iteration count of {} (allowed: {} to {})",
                params.iteration_count,
                PBM_ITERATIONS.start(),
                PBM_ITERATIONS.end()
            ),
        });
    }
    let salt = params.salt.as_bytes();
    if salt.len() > PBM_MAX_SALT {
        return Err(CmpError::BadAlgorithm {
            what: format!("a PBM salt of {} bytes", salt.len()),
        });
    }
    let mut key = zeroize::Zeroizing::new([secret, salt].concat());
    for _ in 0..params.iteration_count {
        *key = match params.owf.oid {
            o if o == asn1::SHA256 => Sha256::digest(key.as_slice()).to_vec(),
            o if o == asn1::SHA1 => Sha1::digest(key.as_slice()).to_vec(),
            o => {
                return Err(CmpError::BadAlgorithm {
                    what: format!("the PBM one-way function {o}"),
                });
            }
        };
    }
    let bad_key = |_| CmpError::BadAlgorithm {
        what: "the PBM key".into(),
    };
    Ok(match params.mac.oid {
        o if o == asn1::HMAC_SHA1 || o == asn1::HMAC_WITH_SHA1 => {
            let mut m = <Hmac<Sha1> as KeyInit>::new_from_slice(&key).map_err(bad_key)?;
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        o if o == asn1::HMAC_WITH_SHA256 => {
            let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).map_err(bad_key)?;
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        o => {
            return Err(CmpError::BadAlgorithm {
                what: format!("the PBM MAC {o}"),
            });
        }
    })
}

/// Compares in time independent of where they differ.
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn transaction_id(msg: &PkiMessage) -> Result<&[u8], CmpError> {
    match msg.transaction_id() {
        Some(t) if t.len() >= MIN_TRANSACTION_ID && t.len() <= 64 => Ok(t),
        _ => Err(CmpError::Malformed {
            what: "transactionID",
            reason: format!("must be {MIN_TRANSACTION_ID} to 64 bytes (RFC 9483 3.1)"),
        }),
    }
}

/// ir/cr: checks the POP, issues (or finds the transaction's certificate), answers ip/cp.
fn enrol<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    msg: &PkiMessage,
    v: &Verified,
) -> Result<Vec<u8>, CmpError> {
    let tid = transaction_id(msg)?;
    let reply_type = if msg.body_type == BodyType::Ir {
        BodyType::Ip
    } else {
        BodyType::Cp
    };
    let implicit = msg.header.implicit_confirm();
    if let Some(txn) = svc.cmp_transaction(tid)? {
        if txn.member != crate::zone::member_lookup_name(&v.member) {
            return Err(CmpError::TransactionInUse);
        }
        // A retry (E1): the same certificate again, never a second one.
        return certificate_reply(
            svc,
            msg,
            Protect::Mac(v),
            reply_type,
            &txn,
            txn.confirmed && implicit,
        );
    }
    if msg.body_type == BodyType::P10cr {
        // p10cr: the PKCS #10 request's self-signature is the POP; certReqId is -1 (RFC 4210
        // 5.3.4).
        let csr = crate::csr::VerifiedCsr::from_der(&msg.body).map_err(|e| match e {
            crate::csr::CsrError::BadSignature(_) => CmpError::BadPop {
                reason: e.to_string(),
            },
            e => CmpError::from(Error::from(e)),
        })?;
        let txn = svc.cmp_enroll(&v.member, csr.public_key().clone(), tid, -1, implicit)?;
        return certificate_reply(svc, msg, Protect::Mac(v), reply_type, &txn, implicit);
    }
    let reqs = asn1::cert_req_messages(&msg.body)?;
    let [req] = reqs.as_slice() else {
        return Err(CmpError::Unsupported {
            what: format!("{} certificate requests in one message", reqs.len()),
        });
    };
    let spki = pop_checked_key(req)?;
    let txn = svc.cmp_enroll(&v.member, spki, tid, req.cert_req_id, implicit)?;
    certificate_reply(svc, msg, Protect::Mac(v), reply_type, &txn, implicit)
}

/// genm (RFC 9483 4.3): caCerts (the zone's CA certificates, those a member must trust now)
/// and rootCaKeyUpdate (during a Remint CA or Change CA: the future CA as newWithNew and the
/// bridge of B1 as newWithOld; absent when no CA operation runs). The activation time of a
/// running CA operation is in the genp header's freeText as `activation: <RFC 3339>` (E2).
fn general<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    msg: &PkiMessage,
    protect: Protect<'_>,
) -> Result<Vec<u8>, CmpError> {
    let asked = asn1::general_message(&msg.body)?;
    let mut out = Vec::with_capacity(asked.len());
    let mut activation = None;
    for info in asked {
        let value = match info {
            o if o == asn1::CA_CERTS => {
                let certs = svc
                    .ca_certificates()?
                    .iter()
                    .map(|c| asn1::any_der(c.as_bytes()))
                    .collect::<Result<Vec<_>, _>>()?;
                Some(Any::encode_from(&certs).map_err(asn1::malformed("caCerts"))?)
            }
            o if o == asn1::ROOT_CA_KEY_UPDATE => match svc.cmp_root_update()? {
                Some((future, bridge, at)) => {
                    activation = Some(at.at);
                    Some(asn1::root_ca_key_update(
                        future.as_bytes(),
                        bridge.as_ref().map(|b| b.as_bytes()),
                    )?)
                }
                None => None,
            },
            o => {
                return Err(CmpError::Unsupported {
                    what: format!("the general message info type {o}"),
                });
            }
        };
        out.push(InfoTypeAndValue {
            info_type: info,
            info_value: value,
        });
    }
    let body = asn1::body_der(
        BodyType::Genp,
        &out.to_der().map_err(asn1::malformed("GenRepContent"))?,
    )?;
    let text = activation.map(|at| format!("activation: {at}"));
    protected_reply_with_text(svc, msg, protect, &body, &[], false, text)
}

/// certConf: records the confirmation and answers pkiConf.
fn confirm<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    msg: &PkiMessage,
    member: &str,
    protect: Protect<'_>,
) -> Result<Vec<u8>, CmpError> {
    let tid = transaction_id(msg)?;
    let Some(txn) = svc.cmp_transaction(tid)? else {
        return Err(CmpError::UnknownTransaction);
    };
    if txn.member != crate::zone::member_lookup_name(member) {
        return Err(CmpError::TransactionInUse);
    }
    let statuses = asn1::cert_conf(&msg.body)?;
    let leaf = txn
        .chain
        .first()
        .ok_or(CmpError::UnknownTransaction)?
        .as_bytes();
    for s in &statuses {
        let hashes = [Sha256::digest(leaf).to_vec(), Sha384::digest(leaf).to_vec()];
        if s.cert_req_id != txn.cert_req_id || !hashes.iter().any(|h| equal(h, &s.cert_hash)) {
            return Err(CmpError::Malformed {
                what: "certConf",
                reason: "the certHash or certReqId is not that of the certificate issued".into(),
            });
        }
    }
    svc.cmp_confirm(tid)?;
    let body = asn1::body_der(BodyType::PkiConf, &asn1::null_der())?;
    protected_reply(svc, msg, protect, &body, &[], false)
}

/// ip, cp or kup with the transaction's certificate, its chain in extraCerts and the trust
/// in caPubs. For a future certificate (E2) the chain is the certificate, the future CA and
/// the bridge (B1), caPubs the current and the future CA, and the header's freeText
/// `activation: <RFC 3339>`.
fn certificate_reply<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    msg: &PkiMessage,
    protect: Protect<'_>,
    reply_type: BodyType,
    txn: &crate::service::CmpTransaction,
    implicit: bool,
) -> Result<Vec<u8>, CmpError> {
    let leaf = txn.chain.first().ok_or(CmpError::UnknownTransaction)?;
    let rep = CertRepMessage {
        ca_pubs: Some(
            txn.trust
                .iter()
                .map(|c| asn1::any_der(c.as_bytes()))
                .collect::<Result<_, _>>()?,
        ),
        response: vec![CertResponse {
            cert_req_id: txn.cert_req_id,
            status: PkiStatusInfo {
                status: 0,
                status_string: None,
                fail_info: None,
            },
            certified_key_pair: Some(CertifiedKeyPair {
                cert: asn1::tagged_certificate(leaf.as_bytes())?,
            }),
        }],
    };
    let body = asn1::body_der(
        reply_type,
        &rep.to_der().map_err(asn1::malformed("CertRepMessage"))?,
    )?;
    let extra: Vec<Vec<u8>> = txn.chain.iter().map(|c| c.as_bytes().to_vec()).collect();
    // E2: a future certificate says when it becomes the one to use, as the genp of a
    // rootCaKeyUpdate does.
    let text = txn.activation.map(|at| format!("activation: {at}"));
    protected_reply_with_text(svc, msg, protect, &body, &extra, implicit, text)
}

/// A reply to `msg` (header fields echoed as RFC 4210 5.1.1 says), MAC-protected with the
/// verified secret when there is one.
fn protected_reply<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    msg: &PkiMessage,
    protect: Protect<'_>,
    body: &[u8],
    extra_certs: &[Vec<u8>],
    implicit: bool,
) -> Result<Vec<u8>, CmpError> {
    protected_reply_with_text(svc, msg, protect, body, extra_certs, implicit, None)
}

/// [`protected_reply`] with a freeText in the header.
fn protected_reply_with_text<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    msg: &PkiMessage,
    protect: Protect<'_>,
    body: &[u8],
    extra_certs: &[Vec<u8>],
    implicit: bool,
    free_text: Option<String>,
) -> Result<Vec<u8>, CmpError> {
    let mut sender = GeneralName::DirectoryName(ca_name(svc));
    let mut sender_kid = None;
    let mut extra: Vec<Vec<u8>> = Vec::new();
    let mut params = None;
    let protection_alg = match protect {
        Protect::Mac(v) => {
            let mut salt = [0u8; 16];
            getrandom::fill(&mut salt).map_err(|e| CmpError::Zone(Box::new(random_err(e))))?;
            let p = PbmParameter {
                salt: OctetString::new(salt.to_vec()).map_err(asn1::malformed("salt"))?,
                ..v.params.clone()
            };
            let alg = AlgorithmIdentifierOwned {
                oid: asn1::PASSWORD_BASED_MAC,
                parameters: Some(Any::encode_from(&p).map_err(asn1::malformed("PBMParameter"))?),
            };
            params = Some(p);
            Some(alg)
        }
        Protect::Sign(c) => {
            // RFC 9483 3.2: the sender is the protecting certificate's subject, its key id the
            // senderKID, and the certificate the first of extraCerts.
            let leaf = c.chain.first().ok_or(CmpError::Unsupported {
                what: "a signed answer from a server without a certificate".into(),
            })?;
            let leaf = Certificate::try_from(leaf).map_err(|e| CmpError::from(Error::from(e)))?;
            sender = GeneralName::DirectoryName(leaf.subject_name().clone());
            if let Ok(Some(kid)) = leaf.subject_key_id() {
                sender_kid = OctetString::new(kid).ok();
            }
            extra.extend(c.chain.iter().map(|c| c.as_bytes().to_vec()));
            Some(c.signer.signature_algorithm())
        }
        Protect::None => None,
    };
    for c in extra_certs {
        if !extra.contains(c) {
            extra.push(c.clone());
        }
    }
    let header = PkiHeader {
        pvno: 2,
        sender,
        recipient: msg.header.sender.clone(),
        message_time: GeneralizedTime::from_system_time(std::time::SystemTime::now()).ok(),
        protection_alg,
        sender_kid,
        recip_kid: msg.header.sender_kid.clone(),
        transaction_id: msg.header.transaction_id.clone(),
        sender_nonce: Some(nonce()?),
        recip_nonce: msg.header.sender_nonce.clone(),
        free_text: free_text.map(|t| vec![t]),
        general_info: implicit.then(|| {
            vec![InfoTypeAndValue {
                info_type: asn1::IMPLICIT_CONFIRM,
                info_value: Some(Any::from(der::asn1::Null)),
            }]
        }),
    };
    let header_der = header.to_der().map_err(asn1::malformed("PKIHeader"))?;
    let protection = match (protect, &params) {
        (Protect::Mac(v), Some(p)) => Some(pbm(
            v.secret.as_str().as_bytes(),
            p,
            &asn1::protected_part(&header_der, body)?,
        )?),
        (Protect::Sign(c), _) => Some(
            c.signer
                .sign(&asn1::protected_part(&header_der, body)?)
                .map_err(|e| CmpError::from(Error::from(e)))?,
        ),
        _ => None,
    };
    asn1::message_der(&header_der, body, protection.as_deref(), &extra)
}

/// Checks a signature protection (kur, RFC 9483 4.1.3): the first of extraCerts is a member's
/// credential valid now under the zone's accepted anchors (N4, B7), and its key signed the
/// message. Returns the member it names and the certificate.
fn verify_signature_protection<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    msg: &PkiMessage,
) -> Result<(String, Certificate), CmpError> {
    let alg = match &msg.header.protection_alg {
        Some(a) if a.oid != asn1::PASSWORD_BASED_MAC => a,
        _ => {
            return Err(CmpError::BadProtection {
                reason: "a key update request is signed with the member's current credential"
                    .into(),
            });
        }
    };
    let protection = msg.protection.as_deref().ok_or(CmpError::BadProtection {
        reason: "the protection is absent".into(),
    })?;
    let untrusted = |reason: String| CmpError::SignerNotTrusted { reason };
    let leaf = msg
        .extra_certs
        .first()
        .ok_or_else(|| untrusted("extraCerts holds no protecting certificate".into()))?;
    let leaf = Certificate::from_der(leaf).map_err(|e| untrusted(e.to_string()))?;
    let others: Vec<Certificate> = msg.extra_certs[1..]
        .iter()
        .filter_map(|c| Certificate::from_der(c).ok())
        .collect();
    let anchors: Vec<Certificate> = svc
        .accepted_client_anchors()?
        .iter()
        .filter_map(|c| Certificate::try_from(c).ok())
        .collect();
    crate::chain::verify_chain(&leaf, &others, &anchors, svc.now())
        .map_err(|e| untrusted(e.to_string()))?;
    crate::key::verify_signature(leaf.public_key(), alg, &msg.protected_part()?, protection)
        .map_err(|e| CmpError::BadProtection {
            reason: e.to_string(),
        })?;
    let member = crate::service::credential_member(&leaf)
        .ok_or_else(|| untrusted("the protecting certificate names no member".into()))?;
    Ok((member, leaf))
}

/// kur: a new certificate for a new key of the member whose credential (`protecting`) signed
/// the request; during a staged CA operation its future certificate (E2, see
/// [`certificate_reply`]).
fn rekey<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    msg: &PkiMessage,
    member: &str,
    protecting: &Certificate,
    credential: SigningCredential<'_>,
) -> Result<Vec<u8>, CmpError> {
    let tid = transaction_id(msg)?;
    let implicit = msg.header.implicit_confirm();
    let protect = Protect::Sign(credential);
    if let Some(txn) = svc.cmp_transaction(tid)? {
        if txn.member != crate::zone::member_lookup_name(member) {
            return Err(CmpError::TransactionInUse);
        }
        return certificate_reply(
            svc,
            msg,
            protect,
            BodyType::Kup,
            &txn,
            txn.confirmed && implicit,
        );
    }
    let reqs = asn1::cert_req_messages(&msg.body)?;
    let [req] = reqs.as_slice() else {
        return Err(CmpError::Unsupported {
            what: format!("{} certificate requests in one message", reqs.len()),
        });
    };
    // The request may name only the member that signed it: by the certificate to update
    // (oldCertID) and by the subject asked for.
    if let Some(serial) = &req.old_cert_serial
        && serial.as_slice() != protecting.serial()
    {
        return Err(CmpError::NotAuthorized {
            reason: format!(
                "the certificate to update is not the one of {member} that signed the request"
            ),
        });
    }
    if let Some(subject) = &req.subject {
        let name = Name::from_der(subject).map_err(asn1::malformed("subject"))?;
        let named = crate::cert::common_name(&name).map(|n| crate::zone::member_lookup_name(&n));
        if named
            .as_deref()
            .is_some_and(|n| n != crate::zone::member_lookup_name(member))
        {
            return Err(CmpError::NotAuthorized {
                reason: format!("the subject asked for is not {member}, which signed the request"),
            });
        }
    }
    let spki = pop_checked_key(req)?;
    let txn = svc.cmp_rekey(member, spki, tid, req.cert_req_id, implicit, protecting)?;
    certificate_reply(svc, msg, protect, BodyType::Kup, &txn, implicit)
}

/// The template's public key, after its signature POP verified.
fn pop_checked_key(req: &asn1::CertReqMsg) -> Result<SubjectPublicKeyInfoOwned, CmpError> {
    let spki_der = req.public_key.as_deref().ok_or(CmpError::BadTemplate {
        reason: "the template has no public key (zoned never makes a member's key, S1)".into(),
    })?;
    let spki =
        SubjectPublicKeyInfoOwned::from_der(spki_der).map_err(asn1::malformed("publicKey"))?;
    let Some((input, alg, sig)) = &req.pop_signature else {
        return Err(CmpError::BadPop {
            reason: "a signature POP is needed".into(),
        });
    };
    if *input {
        return Err(CmpError::BadPop {
            reason: "poposkInput is not supported: give the subject and the public key in the \
                     template"
                .into(),
        });
    }
    crate::key::verify_signature(&spki, alg, &req.cert_req_der, sig).map_err(|e| {
        CmpError::BadPop {
            reason: e.to_string(),
        }
    })?;
    Ok(spki)
}

fn random_err(e: getrandom::Error) -> Error {
    crate::key::KeyError::Generation {
        reason: e.to_string(),
    }
    .into()
}

fn nonce() -> Result<OctetString, CmpError> {
    let mut n = [0u8; 16];
    getrandom::fill(&mut n).map_err(|e| CmpError::Zone(Box::new(random_err(e))))?;
    OctetString::new(n.to_vec()).map_err(asn1::malformed("senderNonce"))
}

/// The zone CA's subject (the sender of every answer), or an empty name when it cannot be
/// read.
fn ca_name<S: Storage, T: Transport, C: Clock>(svc: &ZoneService<S, T, C>) -> Name {
    svc.zone()
        .ok()
        .and_then(|z| Certificate::try_from(&z.ca_certificate).ok())
        .map(|c| c.subject_name().clone())
        .unwrap_or_default()
}

/// An `error` message for `e`, protected when the request's MAC was verified.
fn error_answer<S: Storage, T: Transport, C: Clock>(
    svc: &ZoneService<S, T, C>,
    msg: Option<&PkiMessage>,
    v: Option<&Verified>,
    credential: Option<SigningCredential<'_>>,
    e: &CmpError,
) -> CmpAnswer {
    // MAC-protected when the request's MAC verified; else signed by zoned when it has a
    // credential; else unprotected.
    let protect = match (v, credential) {
        (Some(v), _) => Protect::Mac(v),
        (None, Some(c)) => Protect::Sign(c),
        (None, None) => Protect::None,
    };
    let text = e.to_string();
    let refusal = e.is_refusal().then(|| {
        let mut r = Refusal::new("cmp", text.clone());
        // A member name is at most 253 bytes (an FQDN); a longer senderKID is not one.
        if let Some(m) = msg
            .and_then(PkiMessage::sender_kid)
            .filter(|m| m.len() <= 253)
        {
            r = r.claimed(m);
        }
        r
    });
    let message = e
        .failure_info()
        .bits()
        .and_then(|bits| {
            ErrorMsgContent {
                status: PkiStatusInfo {
                    status: 2,
                    status_string: Some(vec![text.clone()]),
                    fail_info: Some(bits),
                },
                error_code: None,
                error_details: None,
            }
            .to_der()
            .map_err(asn1::malformed("ErrorMsgContent"))
        })
        .and_then(|c| asn1::body_der(BodyType::Error, &c))
        .and_then(|body| match msg {
            Some(m) => protected_reply(svc, m, protect, &body, &[], false),
            None => {
                let header = PkiHeader {
                    pvno: 2,
                    sender: GeneralName::DirectoryName(ca_name(svc)),
                    recipient: GeneralName::DirectoryName(Name::default()),
                    message_time: GeneralizedTime::from_system_time(std::time::SystemTime::now())
                        .ok(),
                    protection_alg: None,
                    sender_kid: None,
                    recip_kid: None,
                    transaction_id: None,
                    sender_nonce: Some(nonce()?),
                    recip_nonce: None,
                    free_text: None,
                    general_info: None,
                };
                let h = header.to_der().map_err(asn1::malformed("PKIHeader"))?;
                asn1::message_der(&h, &body, None, &[])
            }
        })
        .unwrap_or_default();
    CmpAnswer {
        message,
        refusal,
        issued_to: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn params(
        iterations: u32,
        owf: der::asn1::ObjectIdentifier,
        mac: der::asn1::ObjectIdentifier,
    ) -> PbmParameter {
        PbmParameter {
            salt: OctetString::new(b"0123456789abcdef".to_vec()).unwrap(),
            owf: AlgorithmIdentifierOwned {
                oid: owf,
                parameters: None,
            },
            iteration_count: iterations,
            mac: AlgorithmIdentifierOwned {
                oid: mac,
                parameters: None,
            },
        }
    }

    #[test]
    fn pbm_is_the_rfc_4210_construction() {
        // RFC 4210 5.1.3.1: key = owf^n(secret || salt), MAC = HMAC(key, data).
        let p = params(100, asn1::SHA256, asn1::HMAC_WITH_SHA256);
        let mut key = [b"secret".as_slice(), b"0123456789abcdef"].concat();
        for _ in 0..100 {
            key = Sha256::digest(&key).to_vec();
        }
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        m.update(b"data");
        let expected = m.finalize().into_bytes().to_vec();
        assert_eq!(pbm(b"secret", &p, b"data").unwrap(), expected);
        assert_ne!(pbm(b"secreT", &p, b"data").unwrap(), expected);
        // SHA-1 / hmac-sha1 (OpenSSL's defaults) give a 20-byte MAC.
        let p1 = params(500, asn1::SHA1, asn1::HMAC_SHA1);
        assert_eq!(pbm(b"secret", &p1, b"data").unwrap().len(), 20);
    }

    #[test]
    fn pbm_refuses_unbounded_or_unknown_parameters() {
        for n in [0, 99, 100_001, u32::MAX] {
            let e = pbm(b"s", &params(n, asn1::SHA256, asn1::HMAC_SHA1), b"d").unwrap_err();
            assert!(matches!(e, CmpError::BadAlgorithm { .. }), "{n}: {e}");
            assert_eq!(e.failure_info(), FailureInfo::BadAlg);
        }
        let md5 = der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.2.5");
        assert!(pbm(b"s", &params(100, md5, asn1::HMAC_SHA1), b"d").is_err());
        assert!(pbm(b"s", &params(100, asn1::SHA256, md5), b"d").is_err());
    }

    #[test]
    fn failure_info_is_a_der_named_bit_string() {
        // badMessageCheck is bit 1: one byte 0b0100_0000 with 6 unused bits.
        let b = FailureInfo::BadMessageCheck.bits().unwrap();
        assert_eq!(b.raw_bytes(), &[0x40]);
        assert_eq!(b.unused_bits(), 6);
        // notAuthorized is bit 23: three bytes, the last 0x01, no unused bits.
        let b = FailureInfo::NotAuthorized.bits().unwrap();
        assert_eq!(b.raw_bytes(), &[0, 0, 0x01]);
        assert_eq!(b.unused_bits(), 0);
    }

    #[test]
    fn a_message_over_the_limit_is_refused_before_parsing() {
        let big = vec![0u8; asn1::MAX_MESSAGE_BYTES + 1];
        let e = PkiMessage::from_der(&big).unwrap_err();
        assert!(matches!(e, CmpError::TooLarge { .. }), "{e}");
        assert_eq!(e.failure_info(), FailureInfo::BadDataFormat);
        assert!(PkiMessage::from_der(b"").is_err());
        assert!(PkiMessage::from_der(&[0x30, 0x80]).is_err());
    }
}
