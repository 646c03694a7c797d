//! zoned's HTTPS server (N1-N7): a Primary Server's zone service as a library type, so
//! `examples/zoned.rs` only parses flags and logs.
//!
//! [`ZoneServer`] serves, over rustls ([`super::tls`]) and HTTP/1.1 (hyper):
//!
//! - the agent API (N1, N3): [`api::path::POLL`] and [`api::path::RENEW`] with the member's
//!   client certificate, [`api::path::ENROLL`] with a registration token, [`api::path::CA`]
//!   open. Polls are answered by **group commit**: the requests queue, and one task answers
//!   whatever queued (up to [`Limits::max_batch`]) in one transaction
//!   ([`ZoneService::answer_batch`]) on a blocking thread, while the next batch queues.
//! - the admin API ([`api::path`] `ADMIN_*`): `Authorization: Bearer <admin token>`, the token
//!   compared through SHA-256 digests in constant time; the store calls go to the zone's
//!   [`Storage`], `call` to the server's own agent ([`LocalAgentTransport`]).
//! - [`api::path::HEALTHZ`], [`api::path::READYZ`], [`api::path::METRICS`] (N7).
//!
//! Every refusal is an [`ApiError`] with its status, and every refusal of a request (no or a
//! wrong client certificate, another member's name, a malformed, oversized or unsupported
//! message, a bad token) is audited through [`ZoneService::record_refusal`] (N3) and changes
//! nothing else. Refusals go through a bounded queue to one audit task, which writes at most
//! [`Limits::refusals_per_peer`] per peer and minute and counts the rest
//! (`zoned_refusals_suppressed_total`), so a flood cannot grow the audit log without bound.
//!
//! Timeouts: a TLS handshake, or a request's headers or body, that does not finish within
//! [`Limits::handshake_timeout`] / [`Limits::request_timeout`] closes the connection; at most
//! [`Limits::max_connections`] connections are open at once (more are closed at once).
//!
//! Background work: the zone's scheduled work (N6, [`ZoneService::poll_timeout`] /
//! [`ZoneService::handle_timeout`], woken early after an admin commit), and the server's own
//! member agent (zoned is a member too): it polls in process, switches at its activation time
//! by the clock (N5), saves its member directory after every change, and its new chain is
//! served from the next handshake on. The client anchors follow the zone (N4, B7).
//!
//! [`ZoneServer::run`] stops on its shutdown future: it stops accepting, lets in-flight
//! requests finish (bounded), answers the queued polls and flushes the refusal queue.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::Digest as _;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use zeroize::Zeroizing;

use super::api::{self, ApiError, path};
use super::console::{self, Console, ConsolePassword, ConsoleRequest};
use super::metrics::{Metrics, ZoneGauges};
use super::peer::{Identity, Peers};
use super::tls::{self, RefusalSink, ServerTls, TlsError};
use crate::agent::files::MemberDir;
use crate::agent::{Agent, AgentError, AgentRequest, AgentResponse};
use crate::clock::{SystemClock, Timestamp};
use crate::error::Error;
use crate::protocol::{self, AgentMessage, Instruction, ProtocolError, ZoneAnswer};
use crate::service::{InboundError, Refusal, ZoneService};
use crate::store::{Storage, StoreError, Write};
use crate::transport::{Transport, TransportError};

/// CMP over HTTP (E1): the glue of `crate::cmp` at `/.well-known/cmp`.
mod cmp;

/// The zone service inside zoned.
pub type Service<S> = ZoneService<S, Arc<LocalAgentTransport>, SystemClock>;

/// Why zoned could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The state directory is not the server member's directory.
    #[error(
        "the state directory {dir} must be the member directory of {fqdn} (a directory named \
         after the server's FQDN, as in the fleet layout)"
    )]
    StateDir {
        /// The directory.
        dir: PathBuf,
        /// The server.
        fqdn: String,
    },
    /// The server's member files could not be read or written.
    #[error("the server's member directory: {0}")]
    Agent(#[from] AgentError),
    /// The zone refused (no zone in the store, the FQDN not one of its servers...).
    #[error(transparent)]
    Zone(#[from] Error),
    /// The TLS configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listening socket.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// The admin token.
    #[error("admin token: {0}")]
    AdminToken(String),
    /// The async runtime could not start (threads, timers).
    #[error("cannot start the server's runtime: {reason}")]
    Runtime {
        /// Why.
        reason: String,
    },
    /// zoned runs on Primary Servers only.
    #[error(
        "{fqdn} is a {role}: the zone service runs on a Primary Server; other members run \
         their agent"
    )]
    NotPrimary {
        /// The server.
        fqdn: String,
        /// Its role.
        role: String,
    },
}

/// The timeouts and bounds of a [`ZoneServer`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// A connection whose TLS handshake has not finished by then is closed.
    pub handshake_timeout: Duration,
    /// A request whose headers, or whose body, have not arrived by then is refused and its
    /// connection closed (the headers' limit also bounds a kept-alive connection left idle).
    pub request_timeout: Duration,
    /// Connections open at once; more are closed at once.
    pub max_connections: usize,
    /// Agent messages answered in one group commit at most.
    pub max_batch: usize,
    /// Refusals audited per peer (IP address) and minute; more are counted, not audited.
    pub refusals_per_peer: u32,
    /// The longest the scheduled work sleeps between looks at the zone (N6).
    pub schedule_cap: Duration,
    /// The longest the server's own agent waits between polls.
    pub agent_interval: Duration,
    /// How often the server looks for changes other processes committed to the zone's store
    /// (D1: another zoned or a frontend on a shared store), to wake its scheduled work and its
    /// own agent. One read of the audit log's head each time.
    pub watch_interval: Duration,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_connections: 16_384,
            max_batch: 256,
            refusals_per_peer: 30,
            schedule_cap: Duration::from_secs(30),
            agent_interval: Duration::from_secs(30),
            watch_interval: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Limits {
    /// The same with `timeout` for handshakes and requests (tests use short ones).
    pub fn with_timeouts(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self.request_timeout = timeout;
        self
    }

    /// The same with at most `n` connections open at once.
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// The same with at most `n` refusals audited per peer and minute.
    pub fn with_refusals_per_peer(mut self, n: u32) -> Self {
        self.refusals_per_peer = n;
        self
    }
}

/// The administrator's bearer token: a secret (redacted in `Debug`, wiped on drop).
#[derive(Clone)]
pub struct AdminToken(Zeroizing<String>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// The longest admin token read from a file.
const MAX_ADMIN_TOKEN_BYTES: u64 = 4096;

impl AdminToken {
    /// A fresh token: 32 random bytes, hex.
    pub fn generate() -> Result<Self, ServerError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut_slice())
            .map_err(|e| ServerError::AdminToken(format!("no randomness: {e}")))?;
        Ok(AdminToken(Zeroizing::new(base16ct::lower::encode_string(
            bytes.as_slice(),
        ))))
    }

    /// A token from text (a file's contents): surrounding white space is ignored; at least 16
    /// printable ASCII characters.
    pub fn parse(text: &str) -> Result<Self, ServerError> {
        let t = text.trim();
        if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ServerError::AdminToken(
                "a token is at least 16 printable ASCII characters without spaces".into(),
            ));
        }
        Ok(AdminToken(Zeroizing::new(t.to_string())))
    }

    /// Reads a token from `file` (bounded).
    pub fn read(file: &Path) -> Result<Self, ServerError> {
        let bytes = Zeroizing::new(
            crate::fsio::read(file, MAX_ADMIN_TOKEN_BYTES, "admin token")
                .map_err(|e| ServerError::AdminToken(e.to_string()))?,
        );
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            ServerError::AdminToken(format!("{} is not UTF-8 text", file.display()))
        })?;
        Self::parse(text)
    }

    /// `dir/admin-token`: read when it exists, else generated and written (mode 0600, never
    /// through a symbolic link). Returns the token and whether it was created.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), ServerError> {
        let file = dir.join("admin-token");
        match crate::fsio::kind(&file).map_err(|e| ServerError::AdminToken(e.to_string()))? {
            Some(_) => Ok((Self::read(&file)?, false)),
            None => {
                let token = Self::generate()?;
                let mut text = Zeroizing::new(token.0.as_str().to_string());
                text.push('\n');
                crate::fsio::write_atomic(&file, text.as_bytes(), true)
                    .map_err(|e| ServerError::AdminToken(e.to_string()))?;
                Ok((token, true))
            }
        }
    }

    /// The token's text (to hand to an administrator).
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn digest(&self) -> [u8; 32] {
        sha2::Sha256::digest(self.0.as_bytes()).into()
    }
}

/// Equal digests, compared without an early exit.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The zone's [`Transport`] inside zoned: calls for the server's own FQDN go to its agent in
/// this process (saved to its member directory after every change); calls for another Primary
/// Server go to that server's zoned ([`Peers`], D2: the certificate server's signatures when
/// several zoned share a store); any other member is unreachable from here (it polls).
#[derive(Debug)]
pub struct LocalAgentTransport {
    fqdn: String,
    dir: MemberDir,
    agent: Mutex<Agent>,
    /// Woken when the agent's chain or key may have changed.
    changed: Notify,
    /// The other Primary Servers, once the server is built.
    peers: std::sync::OnceLock<Peers>,
}

impl LocalAgentTransport {
    /// The server member `fqdn`, loaded from its member directory under `dir`'s root.
    pub fn load(dir: MemberDir, fqdn: &str) -> Result<Self, AgentError> {
        let agent = dir.load(fqdn)?;
        Ok(LocalAgentTransport {
            fqdn: fqdn.to_string(),
            dir,
            agent: Mutex::new(agent),
            changed: Notify::new(),
            peers: std::sync::OnceLock::new(),
        })
    }

    /// Reaches the other Primary Servers through `peers` from now on (once; later calls are
    /// ignored).
    pub fn connect_peers(&self, peers: Peers) {
        let _ = self.peers.set(peers);
    }

    /// A call for another Primary Server, through its zoned (D2).
    fn call_peer(
        &self,
        member: &str,
        request: AgentRequest,
    ) -> Result<AgentResponse, TransportError> {
        let Some(peers) = self.peers.get() else {
            return Err(TransportError::Unreachable {
                member: member.to_string(),
                reason: format!(
                    "the zone server {} reaches only its own agent; other members poll it",
                    self.fqdn
                ),
            });
        };
        // The identity is lent under the agent's lock; the call itself runs without it.
        let client = self
            .with_agent(false, |a| match a.key() {
                Some(key) => peers.connect(
                    member,
                    &Identity {
                        chain: a.chain(),
                        key,
                        trust: a.trust(),
                    },
                ),
                None => Err(TransportError::Unreachable {
                    member: member.to_string(),
                    reason: format!("{} has no certificate to authenticate with", self.fqdn),
                }),
            })
            .map_err(|e| TransportError::Unreachable {
                member: member.to_string(),
                reason: e.to_string(),
            })??;
        peers.send(member, &client, request)
    }

    /// The server's FQDN.
    pub fn fqdn(&self) -> &str {
        &self.fqdn
    }

    /// Runs `f` on the agent and saves it when `save` (the files follow every change).
    pub fn with_agent<R>(
        &self,
        save: bool,
        f: impl FnOnce(&mut Agent) -> R,
    ) -> Result<R, AgentError> {
        let mut agent = self.agent.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut agent);
        if save {
            self.dir.save(&agent)?;
            self.changed.notify_one();
        }
        Ok(r)
    }

    fn is_me(&self, member: &str) -> bool {
        member.trim().eq_ignore_ascii_case(&self.fqdn)
    }
}

impl Transport for LocalAgentTransport {
    fn call(&self, member: &str, request: AgentRequest) -> Result<AgentResponse, TransportError> {
        if !self.is_me(member) {
            return self.call_peer(member, request);
        }
        let mutating = !matches!(
            request,
            AgentRequest::Ping
                | AgentRequest::SignCertificate { .. }
                | AgentRequest::ExportCa { .. }
                | AgentRequest::TransferCa { .. }
        );
        let refused = |e: AgentError| TransportError::Refused {
            member: member.to_string(),
            source: Box::new(e),
        };
        // One lock for the request and the save: the files follow every change.
        self.with_agent(mutating, |a| a.handle(request))
            .map_err(refused)?
            .map_err(refused)
    }
}

/// A poll waiting for its group commit.
struct PollJob {
    authenticated: String,
    message: AgentMessage,
    reply: oneshot::Sender<Result<Result<ZoneAnswer, InboundError>, Failure>>,
}

/// A failure answered to a client: status and body.
#[derive(Debug, Clone)]
struct Failure {
    status: StatusCode,
    error: ApiError,
}

impl Failure {
    fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> Self {
        Failure {
            status,
            error: ApiError {
                kind: kind.into(),
                message: message.into(),
                retryable: status == StatusCode::SERVICE_UNAVAILABLE,
                store: None,
            },
        }
    }

    /// A zone error: retryable ones 503, refusals of the request 4xx, the rest 500.
    fn of(e: &Error) -> Self {
        if let Error::Store(s) = e {
            return Self::of_store(s);
        }
        if e.is_retryable() {
            return Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            );
        }
        match e {
            Error::Protocol(ProtocolError::WrongMember { .. }) => {
                Failure::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            Error::Protocol(ProtocolError::TooLarge { .. }) => {
                Failure::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string())
            }
            Error::Protocol(_) => Failure::new(StatusCode::BAD_REQUEST, "malformed", e.to_string()),
            Error::Zone(crate::zone::ZoneError::UnknownMember { .. }) => {
                Failure::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            // A bad, used or expired token, a server asking to renew: the request is refused.
            Error::Enrolment(_) => Failure::new(StatusCode::FORBIDDEN, "refused", e.to_string()),
            Error::Csr(_) => Failure::new(StatusCode::BAD_REQUEST, "malformed", e.to_string()),
            // D2: the certificate server (another zoned) is down or cut off: nothing changed,
            // and the same request passes once it is back.
            Error::Transport(TransportError::Unreachable { .. }) => Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            e if signer_unreachable(e) => Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            _ => Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }

    fn of_store(e: &StoreError) -> Self {
        let (status, kind) = match e {
            StoreError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            StoreError::InvalidWrite { .. } => (StatusCode::BAD_REQUEST, "invalid_write"),
            e if e.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "store"),
        };
        Failure {
            status,
            error: ApiError {
                kind: kind.into(),
                message: e.to_string(),
                retryable: e.is_retryable(),
                store: Some(e.into()),
            },
        }
    }

    fn response(&self) -> Response<Full<Bytes>> {
        let mut r = json(self.status, &self.error);
        if self.status == StatusCode::REQUEST_TIMEOUT
            || self.status == StatusCode::PAYLOAD_TOO_LARGE
        {
            // The rest of the body is not read: the connection cannot carry another request.
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    bytes(status, "application/json", protocol::encode(body))
}

fn bytes(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// What the connection's TLS handshake established.
#[derive(Debug)]
struct Conn {
    peer: SocketAddr,
    /// The client's verified leaf certificate, if it sent one.
    cert: Option<Vec<u8>>,
}

/// Everything the tasks of one server share.
struct Shared<S: Storage + 'static> {
    svc: Service<S>,
    own: Arc<LocalAgentTransport>,
    tls: ServerTls,
    metrics: Arc<Metrics>,
    sink: RefusalSink,
    admin: [u8; 32],
    limits: Limits,
    polls: mpsc::Sender<PollJob>,
    /// Wakes the scheduled work (after an admin commit, a batch).
    wake_schedule: Notify,
    /// Wakes the server's own agent (after an admin commit or call).
    wake_agent: Notify,
    /// The zone's gauges of the last scrape, reused for [`GAUGES_MAX_AGE`] (reading them
    /// reads every member's update record).
    gauges: tokio::sync::Mutex<Option<(Instant, ZoneGauges)>>,
    /// The web console (W1-W3), when zoned was given a console password.
    console: Option<Console>,
}

/// How long a scrape reuses the zone's gauges of the previous one.
const GAUGES_MAX_AGE: Duration = Duration::from_secs(5);

/// A handle on a running (or built) server: its metrics, TLS and zone service, for the
/// embedding program and tests.
pub struct ServerHandle<S: Storage + 'static>(Arc<Shared<S>>);

impl<S: Storage + 'static> Clone for ServerHandle<S> {
    fn clone(&self) -> Self {
        ServerHandle(self.0.clone())
    }
}

impl<S: Storage + 'static> ServerHandle<S> {
    /// The process's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The TLS configuration (the chain served, how often each chain was served).
    pub fn tls(&self) -> &ServerTls {
        &self.0.tls
    }

    /// The zone service.
    pub fn service(&self) -> &Service<S> {
        &self.0.svc
    }

    /// The server's own agent.
    pub fn own_agent(&self) -> &LocalAgentTransport {
        &self.0.own
    }
}

/// Builds a [`ZoneServer`].
#[derive(Debug)]
pub struct ZoneServerBuilder<S> {
    store: S,
    fqdn: String,
    state_dir: PathBuf,
    listen: SocketAddr,
    admin_token: Option<AdminToken>,
    limits: Limits,
    console: Option<ConsolePassword>,
    advertise: Option<String>,
}

impl<S: Storage + 'static> ZoneServerBuilder<S> {
    /// The host other Primary Servers reach this one at (D2), recorded in the zone's store as
    /// `https://HOST:PORT` with the port listened on. Default: the server's FQDN.
    pub fn advertise(mut self, host: &str) -> Self {
        self.advertise = Some(host.trim().to_string());
        self
    }

    /// Listen on `addr` (port 0: any free port; [`ZoneServer::local_addr`] says which).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The administrator's token (without one, the admin API refuses every request).
    pub fn admin_token(mut self, token: AdminToken) -> Self {
        self.admin_token = Some(token);
        self
    }

    /// Serves the web console under [`console::PATH`], signing in with `password` (W3);
    /// without one there is no console.
    pub fn console(mut self, password: ConsolePassword) -> Self {
        self.console = Some(password);
        self
    }

    /// Timeouts and bounds.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Loads the server's member directory, checks the zone, builds TLS and binds the socket.
    pub fn build(self) -> Result<ZoneServer<S>, ServerError> {
        let state_err = || ServerError::StateDir {
            dir: self.state_dir.clone(),
            fqdn: self.fqdn.clone(),
        };
        let name = self
            .state_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(state_err)?;
        if !name.eq_ignore_ascii_case(&self.fqdn) {
            return Err(state_err());
        }
        let root = match self.state_dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let own = Arc::new(LocalAgentTransport::load(MemberDir::new(root), name)?);
        let svc = ZoneService::new(self.store, own.clone(), SystemClock);
        let fqdn: crate::zone::Fqdn = self.fqdn.parse().map_err(Error::from)?;
        let view = svc.server(&fqdn)?;
        if view.role != crate::zone::ServerRole::Primary {
            return Err(ServerError::NotPrimary {
                fqdn: self.fqdn.clone(),
                role: view.role.to_string(),
            });
        }
        let anchors = svc.accepted_client_anchors()?;
        let (sink, refusals) = RefusalSink::channel(4096);
        let tls = own.with_agent(false, |a| match a.key() {
            Some(key) => ServerTls::new(&self.fqdn, key, a.chain(), &anchors, sink.clone()),
            None => Err(TlsError::NoCertificate {
                member: self.fqdn.clone(),
            }),
        })??;
        let listener = std::net::TcpListener::bind(self.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| ServerError::Listen {
                addr: self.listen,
                reason: e.to_string(),
            })?;
        // D2: where the other Primary Servers sharing the store reach this one.
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(self.listen.port());
        let host = self.advertise.as_deref().unwrap_or(&self.fqdn);
        let host = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
            _ => host.to_string(),
        };
        svc.record_endpoint(&fqdn, &format!("https://{host}:{port}"))?;
        let (polls, poll_rx) = mpsc::channel(self.limits.max_connections.max(1));
        let admin = match &self.admin_token {
            Some(t) => t.digest(),
            // No token: a digest no token has (a random one).
            None => AdminToken::generate()?.digest(),
        };
        let shared = Arc::new(Shared {
            svc,
            own,
            tls,
            metrics: Arc::new(Metrics::default()),
            sink,
            admin,
            limits: self.limits,
            polls,
            wake_schedule: Notify::new(),
            wake_agent: Notify::new(),
            gauges: tokio::sync::Mutex::new(None),
            console: self.console.map(Console::new),
        });
        // The peers' addresses are read from the store when a call needs one (a weak
        // reference: the server's state owns the transport, not the other way round).
        let weak = Arc::downgrade(&shared);
        let lookup: super::peer::Lookup = Box::new(move |member: &str| {
            let Some(s) = weak.upgrade() else {
                return Err("the zone server is shutting down".to_string());
            };
            match s.svc.endpoint(member) {
                Ok(Some(e)) => e
                    .url
                    .parse()
                    .map(Some)
                    .map_err(|e: super::client::ClientError| e.to_string()),
                Ok(None) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        });
        shared
            .own
            .connect_peers(Peers::new(lookup).map_err(|e| ServerError::Runtime {
                reason: e.to_string(),
            })?);
        Ok(ZoneServer {
            shared,
            listener,
            refusals,
            poll_rx,
        })
    }
}

/// A Primary Server's zone service over HTTPS (see the module documentation).
pub struct ZoneServer<S: Storage + 'static> {
    shared: Arc<Shared<S>>,
    listener: std::net::TcpListener,
    refusals: mpsc::Receiver<Refusal>,
    poll_rx: mpsc::Receiver<PollJob>,
}

impl<S: Storage + 'static> std::fmt::Debug for ZoneServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneServer")
            .field("fqdn", &self.shared.own.fqdn)
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl<S: Storage + 'static> ZoneServer<S> {
    /// A server for the zone in `store`, as its server member `fqdn` whose member directory is
    /// `state_dir` (`<fleet root>/<fqdn>`, holding its key and chain; on the certificate
    /// server also the CA key).
    pub fn builder(store: S, fqdn: &str, state_dir: impl Into<PathBuf>) -> ZoneServerBuilder<S> {
        ZoneServerBuilder {
            store,
            fqdn: fqdn.trim().to_ascii_lowercase(),
            state_dir: state_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_token: None,
            limits: Limits::default(),
            console: None,
            advertise: None,
        }
    }

    /// The address it listens on (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// A handle on the server's state.
    pub fn handle(&self) -> ServerHandle<S> {
        ServerHandle(self.shared.clone())
    }

    /// Runs the server on a tokio runtime of its own (one worker per CPU) until SIGTERM or
    /// SIGINT ([`shutdown_signal`]), then stops gracefully: a daemon's `main`.
    pub fn run_until_signal(self) -> Result<(), ServerError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("zoned")
            .build()
            .map_err(|e| ServerError::Runtime {
                reason: e.to_string(),
            })?;
        runtime.block_on(self.run(shutdown_signal()))
    }

    /// Serves until `shutdown` completes, then stops gracefully: no new connections,
    /// in-flight requests finished (within [`Limits::shutdown_grace`]), queued polls
    /// answered, queued refusals audited. Needs a tokio runtime with timers.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let ZoneServer {
            shared,
            listener,
            refusals,
            poll_rx,
        } = self;
        let addr = listener.local_addr().ok();
        let listener =
            tokio::net::TcpListener::from_std(listener).map_err(|e| ServerError::Listen {
                addr: addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                reason: e.to_string(),
            })?;
        let (stop_conns, conns_stopping) = watch::channel(false);
        let (stop_bg, bg_stopping) = watch::channel(false);
        let mut background = JoinSet::new();
        background.spawn(batcher(shared.clone(), poll_rx, bg_stopping.clone()));
        background.spawn(scheduler(shared.clone(), bg_stopping.clone()));
        background.spawn(own_agent(shared.clone(), bg_stopping.clone()));
        background.spawn(watch_store(shared.clone(), bg_stopping.clone()));
        let audit = tokio::spawn(audit_refusals(shared.clone(), refusals, bg_stopping));
        let permits = Arc::new(Semaphore::new(shared.limits.max_connections));
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => match permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            conns.spawn(serve_connection(
                                shared.clone(), tcp, peer, permit, conns_stopping.clone(),
                            ));
                        }
                        Err(_) => {
                            shared.metrics.connections_rejected.fetch_add(1, Ordering::Relaxed);
                            drop(tcp);
                        }
                    },
                    Err(e) => {
                        // EMFILE and the like: wait a little rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        drop(listener);
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = stop_conns.send(true);
        let grace = shared.limits.shutdown_grace;
        if tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the grace period: closing them");
            conns.abort_all();
        }
        // The batcher answers what is queued, then the background stops.
        let _ = stop_bg.send(true);
        while let Ok(Some(_)) = tokio::time::timeout(grace, background.join_next()).await {}
        background.abort_all();
        let _ = tokio::time::timeout(grace, audit).await;
        // The store may close its connection by blocking (the PostgreSQL client does), which
        // a runtime's thread must not do: the last reference goes on a blocking thread.
        let _ = tokio::task::spawn_blocking(move || drop(shared)).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The largest read buffer of one connection (request headers must fit in it).
const MAX_CONNECTION_BUFFER: usize = 32 * 1024;

/// Resolves at the first SIGTERM or SIGINT (Ctrl-C): the shutdown future of a daemon.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("signal received");
}

/// Serves one connection: TLS handshake (bounded), then HTTP/1.1 until the client closes,
/// a timeout, or shutdown.
async fn serve_connection<S: Storage + 'static>(
    shared: Arc<Shared<S>>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
    mut stopping: watch::Receiver<bool>,
) {
    let m = &shared.metrics;
    m.connections.fetch_add(1, Ordering::Relaxed);
    m.connections_open.fetch_add(1, Ordering::Relaxed);
    struct Open(Arc<Metrics>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _open = Open(shared.metrics.clone());
    let _ = tcp.set_nodelay(true);
    let acceptor = tokio_rustls::TlsAcceptor::from(shared.tls.config());
    let handshake = tls::PEER.scope(peer, acceptor.accept(tcp));
    let stream = match tokio::time::timeout(shared.limits.handshake_timeout, handshake).await {
        Err(_) => {
            m.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
        Ok(Err(e)) => {
            m.handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Ok(Ok(s)) => s,
    };
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec());
    let conn = Arc::new(Conn { peer, cert });
    let svc_shared = shared.clone();
    let service = hyper::service::service_fn(move |req| {
        let shared = svc_shared.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(handle(&shared, &conn, req).await) }
    });
    let http = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.request_timeout)
        // A connection's read buffer is 32 KiB (hyper's default ~400 KiB), which bounds the
        // request head: memory per connection stays small with many connections open.
        .max_buf_size(MAX_CONNECTION_BUFFER)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(http);
    tokio::select! {
        r = http.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        }
        () = stopped(&mut stopping) => {
            http.as_mut().graceful_shutdown();
            let _ = http.await;
        }
    }
}

/// Counts and logs a failure of background work (the scheduler, the server's own agent),
/// which is retried.
fn background_failure(metrics: &Metrics, what: &str, error: &dyn std::fmt::Display) {
    metrics.background_errors.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(error = %error, "{what}; retrying");
}

/// Resolves once `stop` says stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The label of a path in metrics: a known path, or `other` (no unbounded label values).
fn path_label(p: &str) -> &'static str {
    if p == console::PATH
        || p.strip_prefix(console::PATH)
            .is_some_and(|r| r.starts_with('/'))
    {
        return console::PATH;
    }
    [
        path::POLL,
        path::ENROLL,
        path::RENEW,
        path::CA,
        path::HEALTHZ,
        path::READYZ,
        path::METRICS,
        path::ADMIN_GET,
        path::ADMIN_SCAN,
        path::ADMIN_LAST,
        path::ADMIN_COMMIT,
        path::ADMIN_CALL,
        path::PEER_CALL,
    ]
    .into_iter()
    .find(|k| *k == p)
    .or_else(|| cmp::is_cmp_path(p).then_some(cmp::PATH))
    .unwrap_or("other")
}

async fn handle<S: Storage + 'static>(
    shared: &Arc<Shared<S>>,
    conn: &Conn,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    struct InFlight<'a>(&'a Metrics);
    impl Drop for InFlight<'_> {
        fn drop(&mut self) {
            self.0.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
    shared
        .metrics
        .requests_in_flight
        .fetch_add(1, Ordering::Relaxed);
    let _in_flight = InFlight(&shared.metrics);
    let label = path_label(req.uri().path());
    let method = req.method().clone();
    let result = match (method.clone(), label) {
        (Method::GET, p) if p == path::HEALTHZ => {
            Ok(bytes(StatusCode::OK, "text/plain", b"ok\n".to_vec()))
        }
        (Method::GET, p) if p == path::READYZ => readyz(shared).await,
        (Method::GET, p) if p == path::METRICS => metrics(shared).await,
        (Method::GET, p) if p == path::CA => ca(shared).await,
        (Method::POST, p) if p == path::POLL => poll(shared, conn, req).await,
        (Method::POST, p) if p == path::ENROLL => enroll(shared, conn, req).await,
        (Method::POST, p) if p == path::RENEW => renew(shared, conn, req).await,
        (Method::POST, p) if p.starts_with("/admin/") => admin(shared, conn, p, req).await,
        (Method::POST, p) if p == path::PEER_CALL => peer_call(shared, conn, req).await,
        (Method::POST, cmp::PATH) => cmp::handle(shared, conn, req).await,
        (_, console::PATH) => serve_console(shared, conn, req).await,
        (_, "other") => Err(Failure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such path: {}", truncate(req.uri().path(), 200)),
        )),
        (m, p) => Err(Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{p} does not take {m}"),
        )),
    };
    let response = match result {
        Ok(r) => r,
        Err(f) => {
            shared.metrics.error(label, &f.error.kind);
            f.response()
        }
    };
    shared.metrics.request(label, response.status().as_u16());
    response
}

/// The web console (W1-W3): reads the bounded body, then answers on a blocking thread
/// (Argon2id, store reads); after a POST the scheduled work and the own agent are woken, as
/// after an admin commit.
async fn serve_console<S: Storage + 'static>(
    shared: &Arc<Shared<S>>,
    conn: &Conn,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Failure> {
    if shared.console.is_none() {
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "this server has no web console: it serves one only when given a console password",
        ));
    }
    let (parts, body) = req.into_parts();
    let body = read_body(
        Request::from_parts(parts.clone(), body),
        console::MAX_BODY,
        shared.limits.request_timeout,
    )
    .await?;
    let post = parts.method == Method::POST;
    let creq = ConsoleRequest {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
        peer: conn.peer.ip(),
    };
    let (response, refusal) = blocking(shared, move |s| match &s.console {
        Some(c) => c.respond_audited(&s.svc, &creq),
        None => unreachable!("checked above"),
    })
    .await?;
    // N3: a refused sign-in or forged request is audited like the agent API's refusals.
    if let Some(r) = refusal {
        shared.sink.report(r);
    }
    if post {
        shared.wake_schedule.notify_one();
        shared.wake_agent.notify_one();
    }
    Ok(response)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl<S: Storage + 'static> Shared<S> {
    /// Audits a refusal (through the rate-limited queue) and returns the failure to answer.
    fn refuse(&self, what: &str, conn: &Conn, claimed: Option<&str>, failure: Failure) -> Failure {
        let mut r = Refusal::new(what, failure.error.message.clone()).peer(conn.peer.to_string());
        if let Some(c) = claimed {
            r = r.claimed(c);
        }
        self.sink.report(r);
        failure
    }

    /// The member named by the connection's certificate (for the audit), if any.
    fn cert_member(conn: &Conn) -> Option<String> {
        conn.cert.as_deref().and_then(tls::peer_member)
    }
}

/// Reads a request body of at most `limit` bytes within the request timeout: a declared
/// length over the limit is refused before anything is read.
async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Failure> {
    let too_large = || {
        Failure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body is larger than the {limit} bytes allowed"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(timeout, Limited::new(req.into_body(), limit).collect()).await {
        Err(_) => Err(Failure::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            ),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(Failure::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("the request body could not be read: {e}"),
        )),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

async fn blocking<S: Storage + 'static, R: Send + 'static>(
    shared: &Arc<Shared<S>>,
    f: impl FnOnce(&Shared<S>) -> R + Send + 'static,
) -> Result<R, Failure> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || f(&shared))
        .await
        .map_err(|e| {
            Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the request's work failed: {e}"),
            )
        })
}

async fn readyz<S: Storage + 'static>(
    shared: &Arc<Shared<S>>,
) -> Result<Response<Full<Bytes>>, Failure> {
    blocking(shared, |s| s.svc.zone()).await?.map_err(|e| {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the zone's store cannot be read: {e}"),
        )
    })?;
    Ok(bytes(StatusCode::OK, "text/plain", b"ready\n".to_vec()))
}

fn zone_gauges<S: Storage + 'static>(svc: &Service<S>) -> Result<ZoneGauges, Error> {
    let mut g = ZoneGauges {
        members: svc.member_count()?,
        ..ZoneGauges::default()
    };
    let label = |v: &dyn erased::Label| v.label();
    match svc.op_show() {
        Ok(view) => {
            for (_, status) in view.members() {
                *g.by_status.entry(label(&status)).or_default() += 1;
            }
            g.running = svc.op()?.is_some_and(|op| op.state.is_running());
            g.operation = Some((view.id, label(&view.kind), label(&view.state)));
            if g.running {
                g.seconds_to_activation = Some(view.activation.unix() - svc.now().unix());
            }
        }
        Err(Error::Op(crate::ops::OpError::NoOperation)) => {}
        Err(e) => return Err(e),
    }
    Ok(g)
}

/// Enum values as the names their JSON uses (`snake_case`).
mod erased {
    pub(super) trait Label {
        fn label(&self) -> String;
    }
    impl<T: serde::Serialize> Label for T {
        fn label(&self) -> String {
            match serde_json::to_value(self) {
                Ok(serde_json::Value::String(s)) => s,
                Ok(other) => other.to_string(),
                Err(_) => "unknown".into(),
            }
        }
    }
}

async fn metrics<S: Storage + 'static>(
    shared: &Arc<Shared<S>>,
) -> Result<Response<Full<Bytes>>, Failure> {
    // One scrape reads the zone at a time; the others wait and reuse what it read.
    let mut cached = shared.gauges.lock().await;
    let gauges = match &*cached {
        Some((at, g)) if at.elapsed() < GAUGES_MAX_AGE => g.clone(),
        _ => {
            let g = blocking(shared, |s| zone_gauges(&s.svc))
                .await?
                .map_err(|e| Failure::of(&e))?;
            *cached = Some((Instant::now(), g.clone()));
            g
        }
    };
    drop(cached);
    let text = shared.metrics.render(
        &gauges,
        shared.tls.resolver().counts(),
        shared.sink.dropped(),
    );
    Ok(bytes(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        text.into_bytes(),
    ))
}

async fn ca<S: Storage + 'static>(
    shared: &Arc<Shared<S>>,
) -> Result<Response<Full<Bytes>>, Failure> {
    let certificates = blocking(shared, |s| s.svc.ca_certificates())
        .await?
        .map_err(|e| Failure::of(&e))?;
    Ok(json(StatusCode::OK, &api::CaResponse { certificates }))
}

async fn poll<S: Storage + 'static>(
    shared: &Arc<Shared<S>>,
    conn: &Conn,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Failure> {
    const WHAT: &str = "poll";
    if conn.cert.is_none() {
        return Err(shared.refuse(
            WHAT,
            conn,
            None,
            Failure::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the agent API needs the member's client certificate (mutual TLS): enrol the \
                 member first",
            ),
        ));
    }
    let cn = Shared::<S>::cert_member(conn);
    let body = read_body(req, api::MAX_AGENT_BODY, shared.limits.request_timeout)
        .await
        .map_err(|f| shared.refuse(WHAT, conn, cn.as_deref(), f))?;
    let message = protocol::decode_agent_message(&body).map_err(|e| {
        let f = Failure::of(&Error::Protocol(e));
        shared.refuse(WHAT, conn, cn.as_deref(), f)
    })?;
    // N3: a member speaks only for itself.
    if cn.as_deref() != Some(crate::zone::member_lookup_name(&message.member).as_str()) {
        let e = ProtocolError::WrongMember {
            authenticated: cn.clone().unwrap_or_default(),
            claimed: message.member.clone(),
        };
        let f = Failure::of(&Error::Protocol(e));
        return Err(shared.refuse(WHAT, conn, Some(&message.member), f));
    }
    let (reply, answer) = oneshot::channel();
    let job = PollJob {
        authenticated: cn.clone().unwrap_or_default(),
        message,
        reply,
    };
    let claimed = job.authenticated.clone();
    let unavailable = || {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the zone server is shutting down: poll again later",
        )
    };
    shared.polls.send(job).await.map_err(|_| unavailable())?;
    match answer.await.map_err(|_| unavailable())? {
        Ok(Ok(answer)) => Ok(json(StatusCode::OK, &answer)),
        Ok(Err(e)) => {
            let e = match e {
                InboundError::Protocol(p) => Error::Protocol(p),
                InboundError::UnknownMember { name } => {
                    crate::zone::ZoneError::UnknownMember { name }.into()
                }
            };
            Err(shared.refuse(WHAT, conn, Some(&claimed), Failure::of(&e)))
        }
        Err(f) => Err(f),
    }
}

/// [`path::PEER_CALL`] (D2): another Primary Server of the zone asks this server's own agent
/// (the certificate server's signatures, its future CA, an archive). The caller authenticates
/// with its server certificate (mutual TLS), and must be a Primary Server in the zone's
/// records; the call must be for this server itself (no relaying). Refusals are audited.
async fn peer_call<S: Storage + 'static>(
    shared: &Arc<Shared<S>>,
    conn: &Conn,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Failure> {
    const WHAT: &str = "peer";
    let Some(caller) = conn.cert.as_deref().and_then(tls::peer_member) else {
        let f = Failure::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a server-to-server call needs the calling Primary Server's certificate (mutual TLS)",
        );
        return Err(shared.refuse(WHAT, conn, None, f));
    };
    let who = caller.clone();
    let role = blocking(shared, move |s| {
        let fqdn: crate::zone::Fqdn = who.parse()?;
        s.svc.server(&fqdn).map(|v| v.role)
    })
    .await?;
    if !matches!(role, Ok(crate::zone::ServerRole::Primary)) {
        let f = Failure::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{caller} is not a Primary Server of this zone: only Primary Servers call each \
                 other"
            ),
        );
        return Err(shared.refuse(WHAT, conn, Some(&caller), f));
    }
    let body = read_body(req, api::MAX_ADMIN_BODY, shared.limits.request_timeout)
        .await
        .map_err(|f| shared.refuse(WHAT, conn, Some(&caller), f))?;
    let r: api::CallRequest = serde_json::from_slice(&body).map_err(|e| {
        let f = Failure::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!("the server-to-server call is malformed: {e}"),
        );
        shared.refuse(WHAT, conn, Some(&caller), f)
    })?;
    if !shared.own.is_me(&r.member) {
        let f = Failure::new(
            StatusCode::BAD_REQUEST,
            "malformed",
            format!(
                "this is the zone service of {}: it answers only for its own agent, not for {}",
                shared.own.fqdn,
                truncate(&r.member, 200)
            ),
        );
        return Err(shared.refuse(WHAT, conn, Some(&caller), f));
    }
    let kind = request_kind(&r.request);
    let answer = blocking(shared, move |s| s.own.call(&r.member, r.request)).await?;
    shared.wake_agent.notify_one();
    tracing::info!(caller = %caller, peer = %conn.peer, request = kind, "server-to-server call");
    Ok(json(StatusCode::OK, &call_response(answer)))
}

/// A transport's answer as the wire gives it: the agent's answer, its refusal in its words
/// (its own agent's, or a peer's relayed, D2), or why the member could not be reached.
fn call_response(answer: Result<AgentResponse, TransportError>) -> api::CallResponse {
    match answer {
        Ok(a) => api::CallResponse::Answer(a),
        Err(TransportError::Refused { source, .. }) => {
            api::CallResponse::Refused(source.to_string())
        }
        Err(TransportError::RefusedRemotely { reason, .. }) => api::CallResponse::Refused(reason),
        Err(e) => api::CallResponse::Unreachable(e.to_string()),
    }
}

/// Whether `e` comes of a certificate server that could not be reached for a signature (D2).
fn signer_unreachable(e: &Error) -> bool {
    use crate::key::KeyError::SignerUnreachable;
    matches!(
        e,
        Error::Key(SignerUnreachable { .. })
            | Error::Ca(crate::ca::CaError::Key(SignerUnreachable { .. }))
    )
}

/// A request's name, for logs (never its content: a passphrase, an archive).
fn request_kind(request: &AgentRequest) -> &'static str {
    match request {
        AgentRequest::Enroll { .. } => "enroll",
        AgentRequest::Install { .. } => "install",
        AgentRequest::CreateCa { .. } => "create_ca",
        AgentRequest::Ping => "ping",
        AgentRequest::DiscardFutureCa { .. } => "discard_future_ca",
        AgentRequest::ExportCa { .. } => "export_ca",
        AgentRequest::ImportCa { .. } => "import_ca",
        AgentRequest::TransferCa { .. } => "transfer_ca",
        AgentRequest::AcceptCa { .. } => "accept_ca",
        AgentRequest::DropCa => "drop_ca",
        AgentRequest::Adopt { .. } => "adopt",
        AgentRequest::SignCertificate { .. } => "sign_certificate",
    }
}

/// How often a command that lost a race with another commit is run again (B6: nothing was
/// committed, so running it again is safe).
const MAX_ATTEMPTS: usize = 8;

/// Runs `f` again while it fails with a retryable error (another commit came first), up to
/// [`MAX_ATTEMPTS`] times: zoned's own agent and scheduled work commit beside requests.
fn retrying<R>(mut f: impl FnMut() -> Result<R, Error>) -> Result<R, Error> {
    let mut attempt = 1;
    loop {
        match f() {
            Err(e) if e.is_retryable() && attempt < MAX_ATTEMPTS => attempt += 1,
            r => return r,
        }
    }
}

async fn enroll<S: Storage + 'static>(
    shared: &Arc<Shared<S>>,
    conn: &Conn,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Failure> {
    const WHAT: &str = "enroll";
    let body = read_body(req, api::MAX_AGENT_BODY, shared.limits.request_timeout)
        .await
        .map_err(|f| shared.refuse(WHAT, conn, None, f))?;
    let request = protocol::decode_enroll_request(&body).map_err(|e| {
        let f = Failure::of(&Error::Protocol(e));
        shared.refuse(WHAT, conn, None, f)
    })?;
    let member = request.member.clone();
    let result = blocking(shared, move |s| retrying(|| s.svc.enroll(&request))).await?;
    credential_answer(shared, conn, WHAT, &member, result)
}

/// The answer to an enrolment or a renewal: the credential, or the refusal (audited when it is
/// the client's fault, naming the member it claimed).
fn credential_answer<S: Storage + 'static>(
    shared: &Arc<Shared<S>>,
    conn: &Conn,
    what: &str,
    claimed: &str,
    result: Result<protocol::Enrolment, Error>,
) -> Result<Response<Full<Bytes>>, Failure> {
    match result {
        Ok(enrolment) => {
            tracing::info!(member = %enrolment.member, peer = %conn.peer, what, "credential issued");
            Ok(json(StatusCode::OK, &enrolment))
        }
        Err(e) => {
            let f = Failure::of(&e);
            if f.status.is_client_error() {
                return Err(shared.refuse(what, conn, Some(claimed), f));
            }
            Err(f)
        }
    }
}

async fn renew<S: Storage + 'static>(
    shared: &Arc<Shared<S>>,
    conn: &Conn,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Failure> {
    const WHAT: &str = "renew";
    let Some(cert) = &conn.cert else {
        return Err(shared.refuse(
            WHAT,
            conn,
            None,
            Failure::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "renewal needs the member's current client certificate (mutual TLS)",
            ),
        ));
    };
    let Some(authenticated) = tls::peer_member(cert) else {
        let f = Failure::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the client certificate names no member",
        );
        return Err(shared.refuse(WHAT, conn, None, f));
    };
    let body = read_body(req, api::MAX_AGENT_BODY, shared.limits.request_timeout)
        .await
        .map_err(|f| shared.refuse(WHAT, conn, Some(&authenticated), f))?;
    let request = protocol::decode_renew_request(&body).map_err(|e| {
        let f = Failure::of(&Error::Protocol(e));
        shared.refuse(WHAT, conn, Some(&authenticated), f)
    })?;
    let claimed = request.member.clone();
    let who = authenticated.clone();
    let result = blocking(shared, move |s| retrying(|| s.svc.renew(&who, &request))).await?;
    credential_answer(shared, conn, WHAT, &claimed, result)
}

/// The group commit: answers whatever polls queued, up to [`Limits::max_batch`], in one
/// transaction on a blocking thread; the polls arriving meanwhile make the next batch.
async fn batcher<S: Storage + 'static>(
    shared: Arc<Shared<S>>,
    mut rx: mpsc::Receiver<PollJob>,
    mut stop: watch::Receiver<bool>,
) {
    let max = shared.limits.max_batch.max(1);
    loop {
        // At shutdown (the connections are done by then) the queue closes; what it holds is
        // still answered.
        let first = tokio::select! {
            job = rx.recv() => job,
            () = stopped(&mut stop) => { rx.close(); rx.recv().await }
        };
        let Some(first) = first else { return };
        let mut jobs = vec![first];
        while jobs.len() < max {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let messages: Vec<_> = jobs
            .iter()
            .map(|j| (j.authenticated.clone(), j.message.clone()))
            .collect();
        shared.metrics.batch(messages.len());
        let svc_shared = shared.clone();
        let result = tokio::task::spawn_blocking(move || svc_shared.svc.answer_batch(messages))
            .await
            .map_err(|e| {
                Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("the batch failed: {e}"),
                )
            })
            .and_then(|r| r.map_err(|e| Failure::of(&e)));
        match result {
            Ok(answers) => {
                for (job, answer) in jobs.into_iter().zip(answers) {
                    let _ = job.reply.send(Ok(answer));
                }
            }
            Err(f) => {
                tracing::warn!(error = %f.error.message, "a poll batch failed");
                for job in jobs {
                    let _ = job.reply.send(Err(f.clone()));
                }
            }
        }
        // Activation may have run inside the batch (N6): the anchors may follow.
        shared.wake_schedule.notify_one();
    }
}

/// N6: sleeps until the zone's next scheduled work (capped), or until woken, and runs it;
/// keeps the accepted client anchors current (N4, B7).
async fn scheduler<S: Storage + 'static>(shared: Arc<Shared<S>>, mut stop: watch::Receiver<bool>) {
    loop {
        let s = shared.clone();
        let next =
            tokio::task::spawn_blocking(move || -> Result<Option<Timestamp>, ServerError> {
                if s.svc.handle_timeout()? {
                    s.metrics.activations.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("scheduled work: the operation activated");
                    s.wake_agent.notify_one();
                }
                let anchors = s.svc.accepted_client_anchors()?;
                if s.tls.set_client_anchors(&anchors)? {
                    tracing::info!(anchors = anchors.len(), "client anchors changed");
                }
                Ok(s.svc.poll_timeout()?)
            })
            .await;
        let cap = shared.limits.schedule_cap;
        let wait = match next {
            Ok(Ok(Some(at))) => {
                let secs = at.unix() - shared.svc.now().unix();
                Duration::from_secs(u64::try_from(secs.max(0)).unwrap_or(0) + 1).min(cap)
            }
            Ok(Ok(None)) => cap,
            Ok(Err(e)) => {
                background_failure(&shared.metrics, "scheduled work failed", &e);
                Duration::from_secs(1).min(cap)
            }
            Err(e) => {
                background_failure(&shared.metrics, "scheduled work panicked", &e);
                Duration::from_secs(1).min(cap)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.wake_schedule.notified() => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// Wakes the scheduled work and the server's own agent when the zone changed under this
/// process (D1: a commit by another zoned or a frontend sharing the store), so that each
/// server follows an operation another one started or moved within
/// [`Limits::watch_interval`], not its longer timers.
async fn watch_store<S: Storage + 'static>(
    shared: Arc<Shared<S>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen: Option<Option<u64>> = None;
    loop {
        let s = shared.clone();
        if let Ok(Ok(mark)) = tokio::task::spawn_blocking(move || s.svc.change_mark()).await {
            if seen.is_some_and(|m| m != mark) {
                shared.wake_schedule.notify_one();
                shared.wake_agent.notify_one();
            }
            seen = Some(mark);
        }
        tokio::select! {
            () = tokio::time::sleep(shared.limits.watch_interval) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// The longest conversation of the server's own agent in one round.
const MAX_CONVERSATION: usize = 16;

/// One round of the server's own agent: its timer (N5), then a conversation with the zone in
/// process, saving after every change. Returns when it wants to run next.
fn own_agent_round<S: Storage + 'static>(s: &Shared<S>) -> Result<Option<Timestamp>, ServerError> {
    let own = &s.own;
    let now = s.svc.now();
    let due = own.with_agent(false, |a| a.poll_timeout().is_some_and(|t| t <= now))?;
    if due {
        own.with_agent(true, |a| a.handle_timeout(now))?;
    }
    let mut message = own.with_agent(false, |a| a.poll(now))?;
    let mut poll_by = None;
    for _ in 0..MAX_CONVERSATION {
        // The agent is not locked here: answering may call it (the CA signs).
        let answer = s.svc.answer(own.fqdn(), message)?;
        poll_by = answer.poll_by;
        if matches!(answer.instruction, Instruction::Nothing) {
            break;
        }
        let now = s.svc.now();
        let next = own.with_agent(true, |a| a.follow(answer.instruction, now))?;
        match next {
            Some(m) => message = m,
            None => break,
        }
    }
    // The chain served follows the agent's (a new certificate at activation, N4).
    let changed = own.with_agent(false, |a| match a.key() {
        Some(key) => s.tls.set_identity(key, a.chain()),
        None => Ok(false),
    })??;
    if changed {
        tracing::info!("serving the server's new certificate chain");
    }
    let timer = own.with_agent(false, |a| a.poll_timeout())?;
    Ok(match (timer, poll_by) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

async fn own_agent<S: Storage + 'static>(shared: Arc<Shared<S>>, mut stop: watch::Receiver<bool>) {
    loop {
        let s = shared.clone();
        let next = tokio::task::spawn_blocking(move || own_agent_round(&s)).await;
        let cap = shared.limits.agent_interval;
        let wait = match next {
            Ok(Ok(Some(at))) => {
                let secs = at.unix() - shared.svc.now().unix();
                Duration::from_secs(u64::try_from(secs.max(0)).unwrap_or(0)).min(cap)
            }
            Ok(Ok(None)) => cap,
            Ok(Err(e)) => {
                background_failure(&shared.metrics, "the server's own agent failed a poll", &e);
                Duration::from_secs(5).min(cap)
            }
            Err(e) => {
                background_failure(&shared.metrics, "the server's own agent panicked", &e);
                Duration::from_secs(5).min(cap)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait.max(Duration::from_millis(100))) => {}
            () = shared.wake_agent.notified() => {}
            () = shared.own.changed.notified() => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// Writes refusals to the audit log, at most [`Limits::refusals_per_peer`] per peer and
/// minute; flushes what is queued at shutdown.
async fn audit_refusals<S: Storage + 'static>(
    shared: Arc<Shared<S>>,
    mut rx: mpsc::Receiver<Refusal>,
    mut stop: watch::Receiver<bool>,
) {
    const WINDOW: Duration = Duration::from_secs(60);
    /// Peers remembered at once; past it the window starts afresh for everyone.
    const MAX_PEERS: usize = 10_000;
    let mut seen: HashMap<Option<IpAddr>, (Instant, u32)> = HashMap::new();
    loop {
        let refusal = tokio::select! {
            r = rx.recv() => r,
            () = stopped(&mut stop) => {
                rx.close();
                rx.recv().await
            }
        };
        let Some(refusal) = refusal else { return };
        let ip = refusal
            .peer
            .as_deref()
            .and_then(|p| p.parse::<SocketAddr>().ok())
            .map(|a| a.ip());
        let now = Instant::now();
        if seen.len() >= MAX_PEERS {
            seen.clear();
        }
        let entry = seen.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        tracing::warn!(
            what = %refusal.what,
            claimed = refusal.claimed.as_deref().unwrap_or(""),
            peer = refusal.peer.as_deref().unwrap_or(""),
            reason = %refusal.reason,
            "refused"
        );
        if entry.1 > shared.limits.refusals_per_peer {
            shared
                .metrics
                .refusals_suppressed
                .fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let s = shared.clone();
        match tokio::task::spawn_blocking(move || s.svc.record_refusal(&refusal)).await {
            Ok(Ok(())) => {
                shared
                    .metrics
                    .refusals_audited
                    .fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => {
                shared
                    .metrics
                    .refusals_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "a refusal could not be audited");
            }
            Err(e) => {
                shared
                    .metrics
                    .refusals_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "auditing a refusal panicked");
            }
        }
    }
}

async fn admin<S: Storage + 'static>(
    shared: &Arc<Shared<S>>,
    conn: &Conn,
    label: &'static str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Failure> {
    const WHAT: &str = "admin";
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| -> [u8; 32] { sha2::Sha256::digest(t.trim().as_bytes()).into() });
    let reason = match given {
        None => Some("the admin API needs the administrator's token (Authorization: Bearer)"),
        Some(d) if !digests_equal(&d, &shared.admin) => Some("the administrator's token is wrong"),
        Some(_) => None,
    };
    if let Some(reason) = reason {
        let f = Failure::new(StatusCode::UNAUTHORIZED, "unauthenticated", reason);
        return Err(shared.refuse(WHAT, conn, None, f));
    }
    let body = read_body(req, api::MAX_ADMIN_BODY, shared.limits.request_timeout)
        .await
        .map_err(|f| shared.refuse(WHAT, conn, None, f))?;
    fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
        serde_json::from_slice(body).map_err(|e| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("the admin request is malformed: {e}"),
            )
        })
    }
    let store_err = |e: StoreError| Failure::of_store(&e);
    match label {
        l if l == path::ADMIN_GET => {
            let r: api::GetRequest =
                parse(&body).map_err(|f| shared.refuse(WHAT, conn, None, f))?;
            let record = blocking(shared, move |s| s.svc.store().get(&r.key))
                .await?
                .map_err(store_err)?;
            Ok(json(
                StatusCode::OK,
                &api::GetResponse {
                    record: record.map(Into::into),
                },
            ))
        }
        l if l == path::ADMIN_SCAN => {
            let r: api::ScanRequest =
                parse(&body).map_err(|f| shared.refuse(WHAT, conn, None, f))?;
            let limit = r.limit.min(api::MAX_SCAN_LIMIT);
            let records = blocking(shared, move |s| {
                s.svc.store().scan(&r.prefix, r.after.as_deref(), limit)
            })
            .await?
            .map_err(store_err)?;
            Ok(json(
                StatusCode::OK,
                &api::ScanResponse {
                    records: records.into_iter().map(|(k, r)| (k, r.into())).collect(),
                },
            ))
        }
        l if l == path::ADMIN_LAST => {
            let r: api::LastRequest =
                parse(&body).map_err(|f| shared.refuse(WHAT, conn, None, f))?;
            let record = blocking(shared, move |s| s.svc.store().last(&r.prefix))
                .await?
                .map_err(store_err)?;
            Ok(json(
                StatusCode::OK,
                &api::LastResponse {
                    record: record.map(|(k, r)| (k, r.into())),
                },
            ))
        }
        l if l == path::ADMIN_COMMIT => {
            let r: api::CommitRequest =
                parse(&body).map_err(|f| shared.refuse(WHAT, conn, None, f))?;
            let writes: Vec<Write> = r.writes.into_iter().map(Into::into).collect();
            let committed = blocking(shared, move |s| s.svc.store().commit(&writes))
                .await?
                .map_err(store_err)?;
            // An operation may have started, moved or been cancelled.
            shared.wake_schedule.notify_one();
            shared.wake_agent.notify_one();
            Ok(json(
                StatusCode::OK,
                &api::CommitResponse {
                    versions: committed.into_versions(),
                },
            ))
        }
        l if l == path::ADMIN_CALL => {
            let r: api::CallRequest =
                parse(&body).map_err(|f| shared.refuse(WHAT, conn, None, f))?;
            let answer = blocking(shared, move |s| {
                s.svc.transport().call(&r.member, r.request)
            })
            .await?;
            shared.wake_agent.notify_one();
            Ok(json(StatusCode::OK, &call_response(answer)))
        }
        _ => Err(Failure::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such admin path",
        )),
    }
}
