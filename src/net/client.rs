//! The clients of zoned's HTTPS API: the agent (`zone-agent`) and a remote frontend
//! (`zonectl --server`).
//!
//! - [`CaPin`] and [`fetch_pinned_ca`]: the first contact. The client fetches the zone's CA
//!   certificates ([`api::path::CA`]) over TLS without trusting the server yet, and keeps only
//!   the one whose SHA-256 the administrator gave it (and those that chain to it). Nothing the
//!   server says is believed before that check: the CA certificates are public, the pin is
//!   what makes them trusted (N3).
//! - [`agent_tls_config`]: a rustls client configuration that validates the server's chain
//!   against a member's trust anchors (webpki, serverAuth) and names those anchors in the TLS
//!   1.3 `certificate_authorities` extension, so the server can pick the chain this member can
//!   validate (N4, B1); with a credential, it authenticates as the member (mutual TLS, N3).
//! - [`HttpsClient`]: JSON over HTTP/1.1 on keep-alive connections, every exchange bounded in
//!   time and every answer bounded in size; refusals come back as [`ClientError::Refused`]
//!   carrying the server's [`ApiError`].

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{self, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore};
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use super::api::{self, ApiError};
use crate::cert::{Certificate, CertificateDer, Fingerprint};
use crate::clock::Timestamp;
use crate::key::PrivateKey;

/// How long one exchange (connect, TLS handshake, request and whole answer) may take by
/// default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer of [`api::path::CA`] a client reads (a handful of certificates).
pub const MAX_CA_BODY: usize = 1 << 20;

/// Why a call to the zone server failed. Messages say what was wrong and what to do; none
/// carries a secret (tokens and keys never enter an error).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server's address is not an `https://HOST:PORT` URL.
    #[error(
        "{url:?} is not a zone server address: {reason}; give it as https://HOST:PORT \
         (for example https://zone1.example.com:8443)"
    )]
    InvalidUrl {
        /// What was given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The SHA-256 fingerprint given to pin the zone CA is not one.
    #[error(
        "{given:?} is not a SHA-256 fingerprint: give the 64 hex digits (colons allowed) that \
         `ca show --json` prints as sha256"
    )]
    InvalidPin {
        /// What was given (a fingerprint is public).
        given: String,
    },
    /// No connection could be made, or it broke (network, TLS).
    #[error(
        "the zone server at {url} is unreachable: {reason}; check that it runs and that this \
         host can reach it, then retry"
    )]
    Unreachable {
        /// The server.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The server's certificate did not validate against this client's trust anchors.
    #[error(
        "the zone server at {url} did not prove it belongs to the zone: {reason}; check the \
         address, and that this member's trust anchors are the zone's"
    )]
    Untrusted {
        /// The server.
        url: String,
        /// What the TLS layer said.
        reason: String,
    },
    /// No answer in time.
    #[error("the zone server at {url} did not answer {what} within {secs} s; retry later")]
    Timeout {
        /// The server.
        url: String,
        /// The request.
        what: String,
        /// The time allowed.
        secs: u64,
    },
    /// The server refused the request ([`ApiError`], with its HTTP status).
    #[error("the zone server refused {what} ({status} {}): {}", error.kind, error.message)]
    Refused {
        /// The request.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The server's refusal (boxed: refusals are rare, and it keeps every `Result` small).
        error: Box<ApiError>,
    },
    /// The server's answer is not what the API defines.
    #[error(
        "the zone server at {url} gave a malformed answer to {what}: {reason}; check that \
         the address is a zone server's, of a compatible version"
    )]
    Malformed {
        /// The server.
        url: String,
        /// The request.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// The answer is larger than the API allows.
    #[error("the zone server's answer to {what} exceeds {limit} bytes: it was not read")]
    TooLarge {
        /// The request.
        what: String,
        /// The limit.
        limit: usize,
    },
    /// No CA the server holds has the pinned fingerprint.
    #[error(
        "the zone server at {url} does not hold a CA with SHA-256 {pin}: check the \
         fingerprint `ca show --json` printed, and the server's address"
    )]
    PinMismatch {
        /// The server.
        url: String,
        /// The pinned fingerprint.
        pin: String,
    },
    /// The trust anchors or the credential could not make a TLS configuration.
    #[error("cannot set up TLS: {reason}")]
    TlsConfig {
        /// Why.
        reason: String,
    },
}

impl ClientError {
    /// Whether the same request may succeed later unchanged: the network, a timeout, or a
    /// refusal the server marked retryable (a busy store, 503).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Timeout { .. } => true,
            ClientError::Refused { error, status, .. } => error.retryable || *status == 503,
            _ => false,
        }
    }

    /// The server's refusal, if this is one.
    pub fn api_error(&self) -> Option<&ApiError> {
        match self {
            ClientError::Refused { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A zone server's address: `https://HOST:PORT` (an optional trailing `/`, no path).
#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl {
    host: String,
    port: u16,
}

impl ServerUrl {
    /// The host: a DNS name, or an IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the host is an IP address literal rather than a DNS name.
    pub fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }

    fn server_name(&self) -> Result<ServerName<'static>, ClientError> {
        ServerName::try_from(self.host.clone()).map_err(|e| ClientError::InvalidUrl {
            url: self.to_string(),
            reason: e.to_string(),
        })
    }

    /// The `Host` header.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}", self.authority())
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerUrl({self})")
    }
}

impl FromStr for ServerUrl {
    type Err = ClientError;

    fn from_str(url: &str) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("it does not start with https://"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("it has a path, query or user part"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, tail) = v6
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address lacks its closing ]"))?;
            let port = tail
                .strip_prefix(':')
                .ok_or_else(|| bad("it has no port"))?;
            (host, port)
        } else {
            rest.rsplit_once(':').ok_or_else(|| bad("it has no port"))?
        };
        if host.is_empty() {
            return Err(bad("it has no host"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?;
        let parsed = ServerUrl {
            host: host.to_ascii_lowercase(),
            port,
        };
        parsed.server_name()?;
        Ok(parsed)
    }
}

/// The SHA-256 fingerprint of the zone CA a client trusts on first contact (N3), as
/// `ca show --json` prints it (`sha256`: colon-separated hex; plain hex and any case are
/// accepted too).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CaPin([u8; 32]);

impl CaPin {
    /// The pin of this certificate.
    pub fn of(der: &CertificateDer) -> Self {
        let fp = Fingerprint::sha256(der.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(fp.as_bytes());
        CaPin(out)
    }

    /// Whether `der` is the pinned certificate.
    pub fn matches(&self, der: &CertificateDer) -> bool {
        CaPin::of(der) == *self
    }
}

impl FromStr for CaPin {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, ClientError> {
        let hex: String = s
            .trim()
            .chars()
            .filter(|c| *c != ':' && !c.is_whitespace())
            .collect();
        let mut out = [0u8; 32];
        match base16ct::mixed::decode(hex.as_bytes(), &mut out) {
            Ok(b) if b.len() == 32 => Ok(CaPin(out)),
            _ => Err(ClientError::InvalidPin {
                given: s.chars().take(120).collect(),
            }),
        }
    }
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::cert::colon_hex(&self.0))
    }
}

impl fmt::Debug for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaPin({self})")
    }
}

fn tls_err(e: impl fmt::Display) -> ClientError {
    ClientError::TlsConfig {
        reason: e.to_string(),
    }
}

/// Verifies the zone server's certificate against a member's trust anchors (N3, N4).
///
/// - The chain must reach one of the anchors and the leaf must allow serverAuth (webpki).
/// - When the server was named by a DNS name, the leaf must carry it. When it was named by an
///   IP address (a test on 127.0.0.1, a host without DNS), any server certificate of the zone
///   is accepted: the zone CA issues server certificates only to the zone's own servers
///   (S4: nothing in a CSR makes a server certificate; only `server add` and `init` do), and
///   any of them may answer for the zone, so the chain to the member's anchors is what
///   authenticates the server. Zone certificates carry no IP addresses to check.
/// - The anchors' subjects go out as root hints (the TLS 1.3 `certificate_authorities`
///   extension), so the server serves the chain this member can validate: the new chain once
///   it trusts the new CA, the bridge while it trusts only the old one (N4, B1).
#[derive(Debug)]
struct ZoneServerVerifier {
    roots: Arc<RootCertStore>,
    hints: Vec<DistinguishedName>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ZoneServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &pki_types::CertificateDer<'_>,
        intermediates: &[pki_types::CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if let ServerName::DnsName(_) = server_name {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        Some(&self.hints)
    }
}

/// First contact only ([`fetch_pinned_ca`]): accepts any server certificate, still checking
/// the handshake signatures. What comes over such a connection is believed only after the
/// pin check, so nothing secret is sent on it and nothing it says is trusted unchecked.
#[derive(Debug)]
struct PinBootstrapVerifier {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinBootstrapVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &pki_types::CertificateDer<'_>,
        _intermediates: &[pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &pki_types::CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client configuration for a member (or an administrator's frontend) that trusts
/// `trust` (N3, N4):
///
/// - The server's chain must reach one of the anchors and its leaf must allow serverAuth
///   (webpki).
/// - When the server is named by a DNS name, the leaf must carry it. When it is named by an IP
///   address (a test on 127.0.0.1, a host without DNS), any server certificate of the zone is
///   accepted: the zone CA issues server certificates only to the zone's own servers (S4),
///   any of which may answer for the zone, so the chain to the member's anchors is what
///   authenticates the server. Zone certificates carry no IP addresses to check.
/// - The anchors' subjects go out as root hints (the TLS 1.3 `certificate_authorities`
///   extension), so the server serves the chain this member can validate: the new chain once
///   it trusts the new CA, the bridge while it trusts only the old one (N4, B1).
///
/// With `credential` (chain leaf first, and its key) the client authenticates with it (mutual
/// TLS); without, it does not (enrolment, the admin API).
pub fn agent_tls_config(
    trust: &[CertificateDer],
    credential: Option<(&[CertificateDer], &PrivateKey)>,
) -> Result<Arc<ClientConfig>, ClientError> {
    let mut roots = RootCertStore::empty();
    for anchor in trust {
        roots
            .add(pki_types::CertificateDer::from(anchor.as_bytes().to_vec()))
            .map_err(|e| tls_err(format!("a trust anchor is unusable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(tls_err(
            "no trust anchor: the member must enrol with the zone CA's fingerprint first",
        ));
    }
    let provider = super::tls::provider();
    let verifier = ZoneServerVerifier {
        hints: roots.subjects(),
        roots: Arc::new(roots),
        provider: Arc::clone(&provider),
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let config = match credential {
        Some((chain, key)) => {
            if chain.is_empty() {
                return Err(tls_err("the member's credential has no certificate"));
            }
            let chain = chain
                .iter()
                .map(|c| pki_types::CertificateDer::from(c.as_bytes().to_vec()))
                .collect();
            let key = pki_types::PrivateKeyDer::Pkcs8(pki_types::PrivatePkcs8KeyDer::from(
                key.to_pkcs8_der().to_vec(),
            ));
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_err(format!("the member's credential is unusable: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn bootstrap_tls_config() -> Result<Arc<ClientConfig>, ClientError> {
    let provider = super::tls::provider();
    let verifier = PinBootstrapVerifier {
        provider: Arc::clone(&provider),
    };
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth(),
    ))
}

/// The zone CA certificates the client may trust after the first contact with `url` (N3):
/// the one whose SHA-256 is `pin`, first, then those of the others that chain to it at `now`
/// (through the others, e.g. a bridge). Refuses with [`ClientError::PinMismatch`] when the
/// server holds no CA with that fingerprint.
///
/// The fetch itself trusts nothing: the server is not authenticated yet (its handshake
/// signatures are checked, its certificate is not), nothing secret is sent, and the pin is
/// what makes the answer trusted.
pub async fn fetch_pinned_ca(
    url: &ServerUrl,
    pin: &CaPin,
    now: Timestamp,
    timeout: Duration,
) -> Result<Vec<CertificateDer>, ClientError> {
    let client = HttpsClient::new(url.clone(), bootstrap_tls_config()?).with_timeout(timeout);
    let body = client.get(api::path::CA, MAX_CA_BODY).await?;
    let offered = parse_ca_body(&body).map_err(|reason| ClientError::Malformed {
        url: url.to_string(),
        what: format!("GET {}", api::path::CA),
        reason,
    })?;
    select_pinned(&offered, pin, now).ok_or_else(|| ClientError::PinMismatch {
        url: url.to_string(),
        pin: pin.to_string(),
    })
}

/// [`api::CaResponse`] as JSON, or else a PEM / DER / PKCS#7 bundle (the content decides).
fn parse_ca_body(body: &[u8]) -> Result<Vec<CertificateDer>, String> {
    if body.first() == Some(&b'{') {
        let parsed: api::CaResponse = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        return Ok(parsed.certificates);
    }
    crate::cert::bundle::read_certificates(body)
        .map(|certs| certs.into_iter().map(|c| c.der().clone()).collect())
        .map_err(|e| e.to_string())
}

/// The pinned certificate first, then every other offered one that validates to it (through
/// the rest), in the order offered; `None` when the pin matches none.
pub fn select_pinned(
    offered: &[CertificateDer],
    pin: &CaPin,
    now: Timestamp,
) -> Option<Vec<CertificateDer>> {
    let pinned = offered.iter().find(|c| pin.matches(c))?;
    let pinned_cert = Certificate::try_from(pinned).ok()?;
    if !pinned_cert.is_ca() {
        return None;
    }
    let parsed: Vec<Certificate> = offered
        .iter()
        .filter_map(|c| Certificate::try_from(c).ok())
        .collect();
    let mut out = vec![pinned.clone()];
    for (der, cert) in offered
        .iter()
        .filter_map(|d| Some((d, Certificate::try_from(d).ok()?)))
    {
        if der == pinned || out.contains(der) || !cert.is_ca() {
            continue;
        }
        let others: Vec<Certificate> = parsed.iter().filter(|c| *c != &cert).cloned().collect();
        if crate::chain::verify_chain(&cert, &others, std::slice::from_ref(&pinned_cert), now)
            .is_ok()
        {
            out.push(der.clone());
        }
    }
    Some(out)
}

/// A secret bearer token (the admin API's). Never printed: `Debug` shows only that one is
/// there; zeroized when dropped.
#[derive(Clone)]
pub struct BearerToken(Zeroizing<String>);

impl BearerToken {
    /// Wraps a token (surrounding whitespace, such as a file's final newline, is dropped).
    pub fn new(token: &str) -> Self {
        BearerToken(Zeroizing::new(token.trim().to_string()))
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

type Connection = SendRequest<Full<Bytes>>;

/// JSON over HTTPS to one zone server, on keep-alive HTTP/1.1 connections (one per request
/// in flight, reused afterwards). Every exchange is bounded by the timeout, and every answer
/// by the limit its caller gives (the API's limits).
pub struct HttpsClient {
    url: ServerUrl,
    tls: Arc<ClientConfig>,
    bearer: Option<BearerToken>,
    timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    /// The name the server's certificate must carry, when not the URL's host.
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpsClient")
            .field("url", &self.url)
            .field("bearer", &self.bearer.is_some())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 8;

impl HttpsClient {
    /// A client of `url` with this TLS configuration ([`agent_tls_config`]).
    pub fn new(url: ServerUrl, tls: Arc<ClientConfig>) -> Self {
        HttpsClient {
            url,
            tls,
            bearer: None,
            timeout: DEFAULT_TIMEOUT,
            idle: Mutex::new(Vec::new()),
            server_name: None,
        }
    }

    /// Connects to the URL's address but expects the server's certificate to carry `name`
    /// (and sends it as SNI): a zone server reached at an IP address whose FQDN is known, as
    /// one Primary Server calls another (D2).
    pub fn with_server_name(mut self, name: &str) -> Result<Self, ClientError> {
        let dns = pki_types::DnsName::try_from(name.to_string()).map_err(|e| {
            ClientError::InvalidUrl {
                url: self.url.to_string(),
                reason: format!("{name:?} is not a DNS name to expect: {e}"),
            }
        })?;
        self.server_name = Some(ServerName::DnsName(dns));
        Ok(self)
    }

    /// Sends `Authorization: Bearer` with every request (the admin API).
    pub fn with_bearer(mut self, token: BearerToken) -> Self {
        self.bearer = Some(token);
        self
    }

    /// Bounds every exchange by `timeout` instead of [`DEFAULT_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server.
    pub fn url(&self) -> &ServerUrl {
        &self.url
    }

    /// `GET path`; the answer's body, at most `limit` bytes.
    pub async fn get(&self, path: &str, limit: usize) -> Result<Vec<u8>, ClientError> {
        self.exchange(hyper::Method::GET, path, None, limit).await
    }

    /// `POST path` with `body` as JSON; the answer as `R`, its body at most `limit` bytes.
    pub async fn post_json<Q: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &Q,
        limit: usize,
    ) -> Result<R, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Malformed {
            url: self.url.to_string(),
            what: format!("POST {path}"),
            reason: format!("the request does not serialise: {e}"),
        })?;
        let answer = self
            .exchange(hyper::Method::POST, path, Some(bytes), limit)
            .await?;
        serde_json::from_slice(&answer).map_err(|e| ClientError::Malformed {
            url: self.url.to_string(),
            what: format!("POST {path}"),
            reason: e.to_string(),
        })
    }

    /// `POST path` with raw bytes (a protocol message already encoded); the answer's body.
    pub async fn post_bytes(
        &self,
        path: &str,
        body: Vec<u8>,
        limit: usize,
    ) -> Result<Vec<u8>, ClientError> {
        self.exchange(hyper::Method::POST, path, Some(body), limit)
            .await
    }

    async fn exchange(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<u8>, ClientError> {
        let what = format!("{method} {path}");
        match tokio::time::timeout(self.timeout, self.exchange_inner(method, path, body, limit))
            .await
        {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                url: self.url.to_string(),
                what,
                secs: self.timeout.as_secs().max(1),
            }),
        }
    }

    async fn exchange_inner(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<u8>, ClientError> {
        let what = format!("{method} {path}");
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.url.authority())
            .header(hyper::header::ACCEPT, "application/json");
        if body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = &self.bearer {
            request = request.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", token.0.as_str()),
            );
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Malformed {
                url: self.url.to_string(),
                what: what.clone(),
                reason: format!("the request cannot be built: {e}"),
            })?;
        // A reused connection the server has closed meanwhile (its idle timeout) fails its
        // readiness check before anything is sent: a new one is made. Once a request is sent,
        // it is never sent again (a commit must not be applied twice behind its caller's back).
        let idle = self.take_idle();
        let mut conn = match idle {
            Some(mut conn) => match conn.ready().await {
                Ok(()) => conn,
                Err(_) => self.connect().await?,
            },
            None => self.connect().await?,
        };
        let response = conn
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let body = match Limited::new(response.into_body(), limit).collect().await {
            Ok(b) => b.to_bytes().to_vec(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return Err(ClientError::TooLarge { what, limit });
            }
            Err(e) => {
                return Err(ClientError::Unreachable {
                    url: self.url.to_string(),
                    reason: format!("the answer broke off: {e}"),
                });
            }
        };
        if conn.ready().await.is_ok() {
            self.put_idle(conn);
        }
        if status.is_success() {
            return Ok(body);
        }
        let error = serde_json::from_slice::<ApiError>(&body).unwrap_or_else(|_| ApiError {
            kind: "http".into(),
            message: format!(
                "HTTP {status} without an API error body: is {} a zone server?",
                self.url
            ),
            retryable: status.as_u16() == 503,
            store: None,
        });
        Err(ClientError::Refused {
            what,
            status: status.as_u16(),
            error: Box::new(error),
        })
    }

    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop() {
            if !c.is_closed() {
                return Some(c);
            }
        }
        None
    }

    fn put_idle(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    fn unreachable(&self, e: impl fmt::Display) -> ClientError {
        ClientError::Unreachable {
            url: self.url.to_string(),
            reason: e.to_string(),
        }
    }

    async fn connect(&self) -> Result<Connection, ClientError> {
        let tcp = tokio::net::TcpStream::connect((self.url.host.as_str(), self.url.port))
            .await
            .map_err(|e| self.unreachable(e))?;
        let _ = tcp.set_nodelay(true);
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls));
        let tls = connector
            .connect(
                match &self.server_name {
                    Some(name) => name.clone(),
                    None => self.url.server_name()?,
                },
                tcp,
            )
            .await
            .map_err(|e| {
                // A certificate the verifier refused is not a network failure.
                match e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                {
                    Some(
                        err @ (rustls::Error::InvalidCertificate(_)
                        | rustls::Error::NoCertificatesPresented),
                    ) => ClientError::Untrusted {
                        url: self.url.to_string(),
                        reason: err.to_string(),
                    },
                    _ => self.unreachable(e),
                }
            })?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| self.unreachable(e))?;
        tokio::spawn(async move {
            // Ends when the connection closes; its errors surface on the requests.
            let _ = connection.await;
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_refuse() {
        let u: ServerUrl = "https://zone1.example.com:8443/".parse().unwrap();
        assert_eq!((u.host(), u.port()), ("zone1.example.com", 8443));
        assert!(!u.is_ip());
        let u: ServerUrl = "https://127.0.0.1:9".parse().unwrap();
        assert!(u.is_ip());
        let u: ServerUrl = "https://[::1]:443".parse().unwrap();
        assert_eq!(u.to_string(), "https://[::1]:443");
        for bad in [
            "http://a:1",
            "https://a",
            "https://a:0",
            "https://a:1/x",
            "https://:1",
            "https://u@a:1",
        ] {
            let e = bad.parse::<ServerUrl>().unwrap_err();
            assert!(e.to_string().contains("https://HOST:PORT"), "{e}");
        }
    }

    #[test]
    fn pins_parse_with_or_without_colons() {
        let der = CertificateDer::from_vec(b"not a certificate but bytes".to_vec());
        let pin = CaPin::of(&der);
        let colon = pin.to_string();
        assert_eq!(colon.len(), 32 * 3 - 1);
        assert_eq!(colon.parse::<CaPin>().unwrap(), pin);
        let plain = colon.replace(':', "").to_ascii_lowercase();
        assert_eq!(plain.parse::<CaPin>().unwrap(), pin);
        assert!("AB:CD".parse::<CaPin>().is_err());
        assert!("zz".repeat(32).parse::<CaPin>().is_err());
    }

    #[test]
    fn bearer_tokens_do_not_print() {
        let t = BearerToken::new("s3cret\n");
        assert_eq!(format!("{t:?}"), "BearerToken(..)");
        let c = HttpsClient::new(
            "https://a:1".parse().unwrap(),
            bootstrap_tls_config().unwrap(),
        )
        .with_bearer(t);
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
