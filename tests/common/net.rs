//! A minimal zone server for the client tests (issue 11): the agent API (`/v1/ca`,
//! `/v1/enroll`, `/v1/poll`, `/v1/renew`, mutual TLS optional per request) and the admin store
//! and call paths, over rustls on 127.0.0.1, on its own thread and runtime. It is a test
//! double, kept tiny: zoned's real server (src/net/server.rs) is another slice's; this one
//! serves the same paths and bodies (src/net/api.rs) so the clients can be tested alone.
//! Included with `#[path = "common/net.rs"] mod net;`.
#![allow(dead_code, clippy::unwrap_used)]

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{self, PrivateKeyDer, PrivatePkcs8KeyDer};
use zonepki::ca::{CaParams, Serial, ServerProfile, issue_server_certificate, self_signed_ca};
use zonepki::cert::{Certificate, CertificateDer, Fingerprint};
use zonepki::clock::{Clock, Timestamp};
use zonepki::csr::{CsrRequest, VerifiedCsr, build_csr};
use zonepki::key::{KeySpec, PrivateKey};
use zonepki::net::api::{self, ApiError, WireStoreError};
use zonepki::protocol::{self, AgentMessage, EnrollRequest, Enrolment, RenewRequest, ZoneAnswer};
use zonepki::service::{ZoneService, credential_member};
use zonepki::store::{Storage, Write};
use zonepki::transport::Transport;

/// What the test server asks of a zone (a `ZoneService` of any store, transport and clock).
pub trait ZoneApi: Send + Sync {
    fn ca(&self) -> Vec<CertificateDer>;
    fn client_anchors(&self) -> Vec<CertificateDer>;
    fn enroll(&self, req: &EnrollRequest) -> Result<Enrolment, zonepki::Error>;
    fn renew(&self, who: &str, req: &RenewRequest) -> Result<Enrolment, zonepki::Error>;
    fn answer(&self, who: &str, msg: AgentMessage) -> Result<ZoneAnswer, zonepki::Error>;
}

impl<S: Storage, T: Transport, C: Clock> ZoneApi for ZoneService<S, T, C> {
    fn ca(&self) -> Vec<CertificateDer> {
        self.ca_certificates().unwrap()
    }
    fn client_anchors(&self) -> Vec<CertificateDer> {
        self.accepted_client_anchors().unwrap()
    }
    fn enroll(&self, req: &EnrollRequest) -> Result<Enrolment, zonepki::Error> {
        ZoneService::enroll(self, req)
    }
    fn renew(&self, who: &str, req: &RenewRequest) -> Result<Enrolment, zonepki::Error> {
        ZoneService::renew(self, who, req)
    }
    fn answer(&self, who: &str, msg: AgentMessage) -> Result<ZoneAnswer, zonepki::Error> {
        ZoneService::answer(self, who, msg)
    }
}

/// What the server serves.
pub struct Backend {
    /// The admin store paths.
    pub store: Arc<dyn Storage>,
    /// The agent API and `/v1/ca`; without it, `/v1/ca` serves `ca` alone.
    pub zone: Option<Arc<dyn ZoneApi>>,
    /// `/admin/v1/call`.
    pub transport: Option<Arc<dyn Transport>>,
    /// The admin token.
    pub admin_token: String,
    /// What `/v1/ca` serves without a zone (set by [`TestServer::start`]).
    pub ca: Vec<CertificateDer>,
}

impl Backend {
    /// The admin store paths over `store`, nothing else.
    pub fn store_only(store: Arc<dyn Storage>, admin_token: &str) -> Self {
        Backend {
            store,
            zone: None,
            transport: None,
            admin_token: admin_token.into(),
            ca: Vec::new(),
        }
    }
}

/// A running test server; stops when dropped.
pub struct TestServer {
    pub url: String,
    pub port: u16,
    /// The SHA-256 of the CA that issued the server's certificate, as `ca show` prints it.
    pub pin: String,
    pub admin_token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A CA of its own and a server certificate for `fqdn` under it, valid from now.
pub fn own_ca(fqdn: &str) -> (CertificateDer, Vec<CertificateDer>, PrivateKey) {
    let now = Timestamp::now_utc().minus(std::time::Duration::from_secs(60));
    let ca_key = PrivateKey::generate(KeySpec::P256).unwrap();
    let ca = self_signed_ca(
        &ca_key,
        &CaParams {
            common_name: "Test Server CA".into(),
            validity: 2.try_into().unwrap(),
        },
        &Serial::random().unwrap(),
        now,
    )
    .unwrap();
    let key = PrivateKey::generate(KeySpec::P256).unwrap();
    let csr = build_csr(&CsrRequest::default_for(fqdn), &key).unwrap();
    let csr = VerifiedCsr::from_der(csr.as_bytes()).unwrap();
    let leaf = issue_server_certificate(
        &ca,
        &ca_key,
        &csr,
        &ServerProfile {
            fqdn: fqdn.into(),
            ..Default::default()
        },
        &Serial::random().unwrap(),
        now,
    )
    .unwrap();
    (
        ca.der().clone(),
        vec![leaf.der().clone(), ca.der().clone()],
        key,
    )
}

#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn der(c: &CertificateDer) -> pki_types::CertificateDer<'static> {
    pki_types::CertificateDer::from(c.as_bytes().to_vec())
}

impl TestServer {
    /// Serves `backend` with `chain` and `key`; `ca` is the CA the clients pin.
    pub fn start(
        backend: Backend,
        ca: CertificateDer,
        chain: Vec<CertificateDer>,
        key: &PrivateKey,
    ) -> TestServer {
        let provider = provider();
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match &backend.zone {
            Some(zone) => {
                let mut roots = rustls::RootCertStore::empty();
                for a in zone.client_anchors() {
                    roots.add(der(&a)).unwrap();
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&provider),
                )
                .allow_unauthenticated()
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(
                chain.iter().map(der).collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_pkcs8_der().to_vec())),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let admin_token = backend.admin_token.clone();
        let mut backend = backend;
        backend.ca = vec![ca.clone()];
        let backend = Arc::new(backend);
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (tcp, _) = tokio::select! {
                        _ = &mut stopped => return,
                        r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    };
                    let acceptor = acceptor.clone();
                    let backend = Arc::clone(&backend);
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let peer = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|c| Certificate::from_der(c.as_ref()).ok())
                            .and_then(|c| credential_member(&c));
                        let service = hyper::service::service_fn(move |req| {
                            handle(req, Arc::clone(&backend), peer.clone())
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
        });
        TestServer {
            url: format!("https://127.0.0.1:{port}"),
            port,
            pin: Fingerprint::sha256(ca.as_bytes()).to_string(),
            admin_token,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn refuse(status: StatusCode, kind: &str, message: String) -> Response<Full<Bytes>> {
    let e = ApiError {
        kind: kind.into(),
        message,
        retryable: status == StatusCode::SERVICE_UNAVAILABLE,
        store: None,
    };
    reply(status, serde_json::to_vec(&e).unwrap())
}

fn store_refusal(e: zonepki::store::StoreError) -> Response<Full<Bytes>> {
    let status = if matches!(e, zonepki::store::StoreError::Conflict { .. }) {
        StatusCode::CONFLICT
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let body = ApiError {
        kind: "store".into(),
        message: e.to_string(),
        retryable: e.is_retryable(),
        store: Some(WireStoreError::from(&e)),
    };
    reply(status, serde_json::to_vec(&body).unwrap())
}

fn zone_refusal(e: zonepki::Error) -> Response<Full<Bytes>> {
    let status = match &e {
        zonepki::Error::Protocol(_) => StatusCode::BAD_REQUEST,
        e if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::FORBIDDEN,
    };
    refuse(status, "refused", e.to_string())
}

async fn handle(
    req: Request<Incoming>,
    backend: Arc<Backend>,
    peer: Option<String>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match Limited::new(req.into_body(), api::MAX_ADMIN_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => {
            return Ok(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "too large".into(),
            ));
        }
    };
    let r =
        tokio::task::spawn_blocking(move || serve(&backend, &method, &path, bearer, peer, body))
            .await
            .unwrap();
    Ok(r)
}

fn json<T: serde::Serialize>(v: &T) -> Response<Full<Bytes>> {
    reply(StatusCode::OK, serde_json::to_vec(v).unwrap())
}

fn serve(
    b: &Backend,
    method: &hyper::Method,
    path: &str,
    bearer: Option<String>,
    peer: Option<String>,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let malformed =
        |e: serde_json::Error| refuse(StatusCode::BAD_REQUEST, "malformed", e.to_string());
    if path.starts_with("/admin/")
        && bearer.as_deref() != Some(&format!("Bearer {}", b.admin_token))
    {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "the admin API needs the administrator's token".into(),
        );
    }
    match (method.as_str(), path) {
        ("GET", api::path::CA) => match &b.zone {
            Some(z) => json(&api::CaResponse {
                certificates: z.ca(),
            }),
            None => json(&api::CaResponse {
                certificates: b.ca.clone(),
            }),
        },
        ("POST", api::path::ENROLL) => {
            let Some(z) = &b.zone else {
                return refuse(StatusCode::NOT_FOUND, "not_found", "no zone".into());
            };
            match protocol::decode_enroll_request(&body) {
                Ok(r) => match z.enroll(&r) {
                    Ok(e) => reply(StatusCode::OK, protocol::encode(&e)),
                    Err(e) => zone_refusal(e),
                },
                Err(e) => refuse(StatusCode::BAD_REQUEST, "malformed", e.to_string()),
            }
        }
        ("POST", api::path::POLL) | ("POST", api::path::RENEW) => {
            let Some(z) = &b.zone else {
                return refuse(StatusCode::NOT_FOUND, "not_found", "no zone".into());
            };
            let Some(who) = peer else {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "a client certificate is needed".into(),
                );
            };
            if path == api::path::POLL {
                match protocol::decode_agent_message(&body) {
                    Ok(m) => match z.answer(&who, m) {
                        Ok(a) => reply(StatusCode::OK, protocol::encode(&a)),
                        Err(e) => zone_refusal(e),
                    },
                    Err(e) => refuse(StatusCode::BAD_REQUEST, "malformed", e.to_string()),
                }
            } else {
                match protocol::decode_renew_request(&body) {
                    Ok(r) => match z.renew(&who, &r) {
                        Ok(e) => reply(StatusCode::OK, protocol::encode(&e)),
                        Err(e) => zone_refusal(e),
                    },
                    Err(e) => refuse(StatusCode::BAD_REQUEST, "malformed", e.to_string()),
                }
            }
        }
        ("POST", api::path::ADMIN_GET) => match serde_json::from_slice::<api::GetRequest>(&body) {
            Ok(r) => match b.store.get(&r.key) {
                Ok(rec) => json(&api::GetResponse {
                    record: rec.map(Into::into),
                }),
                Err(e) => store_refusal(e),
            },
            Err(e) => malformed(e),
        },
        ("POST", api::path::ADMIN_SCAN) => {
            match serde_json::from_slice::<api::ScanRequest>(&body) {
                Ok(r) => match b.store.scan(
                    &r.prefix,
                    r.after.as_deref(),
                    r.limit.min(api::MAX_SCAN_LIMIT),
                ) {
                    Ok(page) => json(&api::ScanResponse {
                        records: page.into_iter().map(|(k, v)| (k, v.into())).collect(),
                    }),
                    Err(e) => store_refusal(e),
                },
                Err(e) => malformed(e),
            }
        }
        ("POST", api::path::ADMIN_LAST) => {
            match serde_json::from_slice::<api::LastRequest>(&body) {
                Ok(r) => match b.store.last(&r.prefix) {
                    Ok(rec) => json(&api::LastResponse {
                        record: rec.map(|(k, v)| (k, v.into())),
                    }),
                    Err(e) => store_refusal(e),
                },
                Err(e) => malformed(e),
            }
        }
        ("POST", api::path::ADMIN_COMMIT) => {
            match serde_json::from_slice::<api::CommitRequest>(&body) {
                Ok(r) => {
                    let writes: Vec<Write> = r.writes.into_iter().map(Into::into).collect();
                    match b.store.commit(&writes) {
                        Ok(c) => json(&api::CommitResponse {
                            versions: c.versions().to_vec(),
                        }),
                        Err(e) => store_refusal(e),
                    }
                }
                Err(e) => malformed(e),
            }
        }
        ("POST", api::path::ADMIN_CALL) => {
            match serde_json::from_slice::<api::CallRequest>(&body) {
                Ok(r) => {
                    let answer = match &b.transport {
                        Some(t) => match t.call(&r.member, r.request) {
                            Ok(a) => api::CallResponse::Answer(a),
                            Err(zonepki::transport::TransportError::Unreachable {
                                reason, ..
                            }) => api::CallResponse::Unreachable(reason),
                            Err(e) => api::CallResponse::Refused(e.to_string()),
                        },
                        None => api::CallResponse::Unreachable("no transport".into()),
                    };
                    json(&answer)
                }
                Err(e) => malformed(e),
            }
        }
        _ => refuse(StatusCode::NOT_FOUND, "not_found", format!("no {path}")),
    }
}
