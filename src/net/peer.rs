//! Server-to-server calls between the Primary Servers of one zone (D1, D2).
//!
//! Several zoned processes share one PostgreSQL store; one of them runs on the certificate
//! server, whose agent alone holds the CA key (S1). When another Primary Server's zone service
//! needs something of that agent (a signature for a certificate it issues, a future CA for a
//! Remint CA an administrator started there, a backup archive), its [`Transport`] call goes
//! to the certificate server's zoned over HTTPS with mutual TLS:
//!
//! - the caller authenticates with its own server certificate (a Primary Server of the zone,
//!   checked by the called server against the zone's records), and the called server with
//!   its own, which must carry the FQDN the caller asked for;
//! - the request is [`api::path::PEER_CALL`] with an [`api::CallRequest`] for the called
//!   server's own agent, whose answer comes back as an [`api::CallResponse`]; a server never
//!   relays a call for another member, so calls cannot loop;
//! - the CA key never leaves its holder: what crosses is a to-be-signed certificate and its
//!   signature (or an encrypted archive, BK1, MV1).
//!
//! Where each Primary Server listens is in the store ([`ZoneService::record_endpoint`], written
//! by each zoned when it starts), so no address is configured anywhere else. A certificate
//! server that is down or unreachable makes the call fail with
//! [`TransportError::Unreachable`], which the zone service turns into a refusal that says so
//! and changes nothing; the same request passes once it is back.
//!
//! [`ZoneService::record_endpoint`]: crate::service::ZoneService::record_endpoint

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Digest as _;

use super::api;
use super::client::{ClientError, HttpsClient, ServerUrl, agent_tls_config};
use super::remote::block_on_runtime;
use crate::agent::{AgentRequest, AgentResponse};
use crate::cert::CertificateDer;
use crate::key::PrivateKey;
use crate::transport::TransportError;

/// How long one server-to-server call may take (a signature, a CA key generation).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer of a peer (an encrypted backup archive is the largest).
const MAX_ANSWER: usize = api::MAX_ADMIN_BODY;

/// Finds where a Primary Server's zone service listens (from the zone's store).
pub type Lookup = Box<dyn Fn(&str) -> Result<Option<ServerUrl>, String> + Send + Sync>;

/// This server's TLS identity toward its peers: its chain (leaf first), key and the zone's
/// trust anchors, as its agent holds them now.
pub struct Identity<'a> {
    /// Leaf first.
    pub chain: &'a [CertificateDer],
    /// The leaf's key.
    pub key: &'a PrivateKey,
    /// The anchors the peer's certificate must chain to.
    pub trust: &'a [CertificateDer],
}

/// The client of one peer, with what it was made for.
struct PeerClient {
    /// The peer's address.
    url: ServerUrl,
    /// A digest of the identity (chain and anchors) it authenticates with.
    identity: [u8; 32],
    client: Arc<HttpsClient>,
}

/// The client side of server-to-server calls: one HTTPS client per peer, made again when the
/// peer's address or this server's certificate changes.
pub struct Peers {
    lookup: Lookup,
    runtime: Option<tokio::runtime::Runtime>,
    /// Per peer FQDN: its client.
    clients: Mutex<HashMap<String, PeerClient>>,
    timeout: Duration,
}

impl fmt::Debug for Peers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peers: Vec<String> = self
            .clients
            .lock()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("Peers")
            .field("connected", &peers)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        // Dropping a runtime from inside another one panics; in the background it never does.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Peers {
    /// Peers found through `lookup`, each call bounded by [`PEER_TIMEOUT`].
    pub fn new(lookup: Lookup) -> Result<Self, ClientError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("zoned-peers")
            .enable_all()
            .build()
            .map_err(|e| ClientError::TlsConfig {
                reason: format!("cannot start the peer client's runtime: {e}"),
            })?;
        Ok(Peers {
            lookup,
            runtime: Some(runtime),
            clients: Mutex::new(HashMap::new()),
            timeout: PEER_TIMEOUT,
        })
    }

    /// Bounds each call by `timeout` instead of [`PEER_TIMEOUT`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The client for Primary Server `member`, authenticating as `me` (cheap when nothing
    /// changed since the last call). Call [`Peers::send`] with it, without holding whatever
    /// lends `me`.
    pub fn connect(
        &self,
        member: &str,
        me: &Identity<'_>,
    ) -> Result<Arc<HttpsClient>, TransportError> {
        let unreachable = |reason: String| TransportError::Unreachable {
            member: member.to_string(),
            reason,
        };
        let url = (self.lookup)(member)
            .map_err(|e| unreachable(format!("its address cannot be read from the store: {e}")))?
            .ok_or_else(|| {
                unreachable(
                    "no zone service address is recorded for it in the zone's store (a Primary \
                     Server's zone service records its address when it starts; other members \
                     poll): start that server's zone service"
                        .into(),
                )
            })?;
        self.client(member, url, me)
            .map_err(|e| unreachable(e.to_string()))
    }

    /// Delivers `request` to Primary Server `member`'s own agent through its zoned, over
    /// `client` (from [`Peers::connect`]).
    pub fn send(
        &self,
        member: &str,
        client: &HttpsClient,
        request: AgentRequest,
    ) -> Result<AgentResponse, TransportError> {
        let body = api::CallRequest {
            member: member.to_string(),
            request,
        };
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime is taken only when the peers are dropped");
        let answer = block_on_runtime(
            runtime,
            client.post_json::<_, api::CallResponse>(api::path::PEER_CALL, &body, MAX_ANSWER),
        );
        match answer {
            Ok(api::CallResponse::Answer(a)) => Ok(a),
            Ok(api::CallResponse::Refused(reason)) => Err(TransportError::RefusedRemotely {
                member: member.to_string(),
                reason,
            }),
            Ok(api::CallResponse::Unreachable(reason)) => Err(TransportError::Unreachable {
                member: member.to_string(),
                reason,
            }),
            Err(e) => {
                // A failed connection is not kept: the next call connects again (the peer
                // may have restarted at another address).
                self.forget(member);
                Err(TransportError::Unreachable {
                    member: member.to_string(),
                    reason: format!("its zone service: {e}"),
                })
            }
        }
    }

    fn forget(&self, member: &str) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(member);
    }

    fn client(
        &self,
        member: &str,
        url: ServerUrl,
        me: &Identity<'_>,
    ) -> Result<Arc<HttpsClient>, ClientError> {
        let mut digest = sha2::Sha256::new();
        for c in me.chain.iter().chain(me.trust) {
            digest.update((c.as_bytes().len() as u64).to_be_bytes());
            digest.update(c.as_bytes());
        }
        let digest: [u8; 32] = digest.finalize().into();
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(member)
            && c.url == url
            && c.identity == digest
        {
            return Ok(Arc::clone(&c.client));
        }
        let tls = agent_tls_config(me.trust, Some((me.chain, me.key)))?;
        let client = Arc::new(
            HttpsClient::new(url.clone(), tls)
                .with_timeout(self.timeout)
                .with_server_name(member)?,
        );
        clients.insert(
            member.to_string(),
            PeerClient {
                url,
                identity: digest,
                client: Arc::clone(&client),
            },
        );
        Ok(client)
    }
}
