//! CMP over HTTP (E1; RFC 6712, RFC 9483 3.3 for the paths): a POST of an
//! `application/pkixcmp` body to `/.well-known/cmp` or `/.well-known/cmp/p/<profile>/<operation>`
//! is answered by [`crate::cmp::respond`] with HTTP 200 and a PKIMessage, an `error` message
//! included (RFC 6712 3.3): the HTTP status says the transfer worked, the PKIMessage what
//! became of the request. TLS authenticates the server only; CMP's own protection the client.

use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use super::{Conn, Failure, LocalAgentTransport, Shared, blocking, bytes, read_body};
use crate::cert::CertificateDer;
use crate::cmp::{
    self as message, CmpAnswer, CmpError, SigningCredential, asn1::MAX_MESSAGE_BYTES,
};
use crate::key::{KeyError, Signer};
use crate::store::Storage;

/// zoned's own key as a [`Signer`] for CMP answers: the agent is locked only while signing
/// (issuing a certificate goes through the same agent, which holds the CA key).
struct OwnSigner<'a> {
    own: &'a LocalAgentTransport,
    algorithm: AlgorithmIdentifierOwned,
    public_key: SubjectPublicKeyInfoOwned,
}

impl Signer for OwnSigner<'_> {
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        self.algorithm.clone()
    }

    fn public_key_info(&self) -> SubjectPublicKeyInfoOwned {
        self.public_key.clone()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let signed = self
            .own
            .with_agent(false, |a| a.key().map(|k| k.sign(message)))
            .map_err(|e| KeyError::Signing {
                reason: e.to_string(),
            })?;
        signed.unwrap_or_else(|| {
            Err(KeyError::Signing {
                reason: "zoned's own member holds no key".into(),
            })
        })
    }
}

/// Runs `f` with zoned's credential (its key and chain), or none when it has no key.
fn with_credential<R>(
    own: &LocalAgentTransport,
    f: impl FnOnce(Option<SigningCredential<'_>>) -> R,
) -> R {
    let found: Option<(
        AlgorithmIdentifierOwned,
        SubjectPublicKeyInfoOwned,
        Vec<CertificateDer>,
    )> = own
        .with_agent(false, |a| {
            a.key().map(|k| {
                (
                    k.signature_algorithm(),
                    k.public_key_info(),
                    a.chain().to_vec(),
                )
            })
        })
        .ok()
        .flatten();
    match found {
        Some((algorithm, public_key, chain)) => {
            let signer = OwnSigner {
                own,
                algorithm,
                public_key,
            };
            f(Some(SigningCredential {
                signer: &signer,
                chain: &chain,
            }))
        }
        None => f(None),
    }
}

fn respond<S: Storage + 'static>(s: &Shared<S>, body: &[u8]) -> CmpAnswer {
    with_credential(&s.own, |c| message::respond(&s.svc, body, c))
}

/// The metrics label of every CMP path.
pub(super) const PATH: &str = "/.well-known/cmp";

/// The media type of a PKIMessage over HTTP (RFC 6712 3.4).
const CONTENT_TYPE: &str = "application/pkixcmp";

/// Whether `p` is a CMP path: `/.well-known/cmp`, or below it (RFC 9483 3.3's
/// `/.well-known/cmp/p/<profile>/<operation>`), at most 200 bytes.
pub(super) fn is_cmp_path(p: &str) -> bool {
    p.len() <= 200 && (p == PATH || p.starts_with("/.well-known/cmp/"))
}

/// Reads the PKIMessage (bounded), answers it off the runtime's threads, and audits a
/// refusal (N3).
pub(super) async fn handle<S: Storage + 'static>(
    shared: &Arc<Shared<S>>,
    conn: &Conn,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Failure> {
    let answer = match read_body(req, MAX_MESSAGE_BYTES, shared.limits.request_timeout).await {
        Ok(body) => blocking(shared, move |s| respond(s, &body)).await?,
        Err(f) if f.status == StatusCode::PAYLOAD_TOO_LARGE => {
            let e = CmpError::TooLarge {
                len: MAX_MESSAGE_BYTES + 1,
                limit: MAX_MESSAGE_BYTES,
            };
            let mut a = blocking(shared, move |s| {
                with_credential(&s.own, |c| message::refuse(&s.svc, &e, c))
            })
            .await?;
            if let Some(r) = a.refusal.take() {
                shared.sink.report(r.peer(conn.peer.to_string()));
            }
            let mut r = bytes(StatusCode::OK, CONTENT_TYPE, a.message);
            // The rest of the body was not read: the connection cannot carry another request.
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return Ok(r);
        }
        Err(f) => return Err(shared.refuse("cmp", conn, None, f)),
    };
    if let Some(r) = answer.refusal {
        tracing::info!(peer = %conn.peer, reason = %r.reason, "cmp refused");
        shared.sink.report(r.peer(conn.peer.to_string()));
    } else if let Some(member) = &answer.issued_to {
        tracing::info!(member = %member, peer = %conn.peer, "cmp certificate issued");
    }
    Ok(bytes(StatusCode::OK, CONTENT_TYPE, answer.message))
}
