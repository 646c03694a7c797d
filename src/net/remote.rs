//! A remote frontend's view of a zone (`zonectl --server`, a web console): [`RemoteStore`]
//! is the zone's [`Storage`] and [`RemoteTransport`] its [`Transport`], both through zoned's
//! admin API ([`api`]). A `ZoneService` over them runs every command's rules in the frontend's
//! own process, against the zone's store, each commit conditioned on what it read (B6): the
//! same guarantees as a local store, whichever frontend runs a command.
//!
//! Both are blocking, like the core: they own a small tokio runtime (one worker thread) and
//! wait on it, so they work from any thread that is not itself driving a tokio runtime; from
//! inside one, each call waits on a helper thread instead of blocking the runtime.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::api::{self, WireRecord};
use super::client::{
    BearerToken, CaPin, ClientError, DEFAULT_TIMEOUT, HttpsClient, ServerUrl, agent_tls_config,
    fetch_pinned_ca,
};
use crate::agent::{AgentRequest, AgentResponse};
use crate::clock::Timestamp;
use crate::store::{Committed, Record, Storage, StoreError, Write};
use crate::transport::{Transport, TransportError};

/// The largest answer the admin API gives: a scan page of [`api::MAX_SCAN_LIMIT`] records can
/// be large, and a commit's request is bounded by [`api::MAX_ADMIN_BODY`]; answers share it.
const MAX_ANSWER: usize = api::MAX_ADMIN_BODY;

/// An authenticated connection to one zone server's admin API, shared by a [`RemoteStore`]
/// and a [`RemoteTransport`].
pub struct AdminClient {
    runtime: Option<tokio::runtime::Runtime>,
    http: HttpsClient,
}

impl fmt::Debug for AdminClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminClient")
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

impl Drop for AdminClient {
    fn drop(&mut self) {
        // Dropping a runtime from inside another one panics; letting it go in the background
        // never does.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl AdminClient {
    /// Connects to `url`: fetches the zone CA and trusts it only if its SHA-256 is `pin`
    /// ([`fetch_pinned_ca`]), then talks to the admin API with `token` over TLS validated
    /// against that CA. Each exchange is bounded by `timeout`.
    pub fn connect(
        url: ServerUrl,
        pin: &CaPin,
        token: BearerToken,
        timeout: Duration,
    ) -> Result<Arc<Self>, ClientError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("zonepki-admin")
            .enable_all()
            .build()
            .map_err(|e| ClientError::TlsConfig {
                reason: format!("cannot start the client's runtime: {e}"),
            })?;
        let anchors = block_on_runtime(
            &runtime,
            fetch_pinned_ca(&url, pin, Timestamp::now_utc(), timeout),
        )?;
        let tls = agent_tls_config(&anchors, None)?;
        Ok(Arc::new(AdminClient {
            runtime: Some(runtime),
            http: HttpsClient::new(url, tls)
                .with_bearer(token)
                .with_timeout(timeout),
        }))
    }

    /// [`AdminClient::connect`] with [`DEFAULT_TIMEOUT`].
    pub fn connect_default(
        url: ServerUrl,
        pin: &CaPin,
        token: BearerToken,
    ) -> Result<Arc<Self>, ClientError> {
        Self::connect(url, pin, token, DEFAULT_TIMEOUT)
    }

    /// The server.
    pub fn url(&self) -> &ServerUrl {
        self.http.url()
    }

    /// One admin call: `body` to `path`, its answer.
    pub fn call<Q, R>(&self, path: &str, body: &Q) -> Result<R, ClientError>
    where
        Q: serde::Serialize + Sync,
        R: serde::de::DeserializeOwned + Send,
    {
        let runtime = self
            .runtime
            .as_ref()
            .expect("the runtime is taken only when the client is dropped");
        block_on_runtime(runtime, self.http.post_json(path, body, MAX_ANSWER))
    }
}

/// Runs `f` to completion on `runtime`, from any thread: directly when this thread drives no
/// runtime, else on a scoped helper thread (blocking inside a runtime would panic).
pub(crate) fn block_on_runtime<F>(runtime: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return runtime.block_on(f);
    }
    std::thread::scope(|s| {
        s.spawn(|| runtime.block_on(f))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The zone's [`Storage`] through zoned's admin API.
///
/// Errors come back as the store's own ([`api::WireStoreError`] → [`StoreError`]): a
/// conflict stays a conflict. A network failure is a [`StoreError::Backend`] naming the
/// server, retryable when the request may pass later (unreachable, timeout, busy). A commit
/// whose answer was lost is not sent again by this store: its caller re-reads, as after any
/// conflict (B6).
#[derive(Debug, Clone)]
pub struct RemoteStore {
    client: Arc<AdminClient>,
}

impl RemoteStore {
    /// The store behind `client`.
    pub fn new(client: Arc<AdminClient>) -> Self {
        RemoteStore { client }
    }

    fn call<Q, R>(&self, path: &str, body: &Q) -> Result<R, StoreError>
    where
        Q: serde::Serialize + Sync,
        R: serde::de::DeserializeOwned + Send,
    {
        self.client
            .call(path, body)
            .map_err(|e| self.store_error(e))
    }

    fn store_error(&self, e: ClientError) -> StoreError {
        if let ClientError::Refused { error, .. } = &e
            && let Some(wire) = &error.store
        {
            return StoreError::from(wire.clone());
        }
        let retryable = e.is_retryable();
        StoreError::Backend {
            context: format!("zone server {}", self.client.url()),
            source: Box::new(e),
            retryable,
        }
    }
}

impl Storage for RemoteStore {
    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let r: api::GetResponse = self.call(
            api::path::ADMIN_GET,
            &api::GetRequest {
                key: key.to_string(),
            },
        )?;
        Ok(r.record.map(Record::from))
    }

    /// One page of at most `limit` records. The server answers at most
    /// [`api::MAX_SCAN_LIMIT`] per request; a larger page is read in several requests, each a
    /// consistent snapshot (the page as a whole sees commits made meanwhile, as
    /// [`Storage::scan_each`] does).
    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        let mut out: Vec<(String, Record)> = Vec::new();
        let mut after = after.map(str::to_string);
        while out.len() < limit {
            let want = (limit - out.len()).min(api::MAX_SCAN_LIMIT);
            let r: api::ScanResponse = self.call(
                api::path::ADMIN_SCAN,
                &api::ScanRequest {
                    prefix: prefix.to_string(),
                    after: after.clone(),
                    limit: want,
                },
            )?;
            let got = r.records.len();
            if got > want {
                return Err(StoreError::backend(
                    format!("zone server {}", self.client.url()),
                    ClientError::Malformed {
                        url: self.client.url().to_string(),
                        what: format!("POST {}", api::path::ADMIN_SCAN),
                        reason: format!("{got} records for a page of {want}"),
                    },
                ));
            }
            for (key, rec) in r.records {
                after = Some(key.clone());
                out.push((key, rec.into()));
            }
            // Each request asks at most the server's cap, so a page shorter than asked is the
            // family's last.
            if got < want {
                break;
            }
        }
        Ok(out)
    }

    fn last(&self, prefix: &str) -> Result<Option<(String, Record)>, StoreError> {
        let r: api::LastResponse = self.call(
            api::path::ADMIN_LAST,
            &api::LastRequest {
                prefix: prefix.to_string(),
            },
        )?;
        Ok(r.record
            .map(|(k, rec): (String, WireRecord)| (k, rec.into())))
    }

    fn commit(&self, writes: &[Write]) -> Result<Committed, StoreError> {
        let r: api::CommitResponse = self.call(
            api::path::ADMIN_COMMIT,
            &api::CommitRequest {
                writes: writes.iter().map(api::WireWrite::from).collect(),
            },
        )?;
        if r.versions.len() != writes.len() {
            return Err(StoreError::backend(
                format!("zone server {}", self.client.url()),
                ClientError::Malformed {
                    url: self.client.url().to_string(),
                    what: format!("POST {}", api::path::ADMIN_COMMIT),
                    reason: format!("{} versions for {} writes", r.versions.len(), writes.len()),
                },
            ));
        }
        Ok(Committed::new(r.versions))
    }
}

/// The zone's [`Transport`] through zoned's admin API ([`api::path::ADMIN_CALL`]): the zone
/// server delivers each call to the member's agent (its own, for the certificate server).
#[derive(Debug, Clone)]
pub struct RemoteTransport {
    client: Arc<AdminClient>,
}

impl RemoteTransport {
    /// The transport behind `client`.
    pub fn new(client: Arc<AdminClient>) -> Self {
        RemoteTransport { client }
    }
}

impl Transport for RemoteTransport {
    fn call(&self, member: &str, request: AgentRequest) -> Result<AgentResponse, TransportError> {
        let body = api::CallRequest {
            member: member.to_string(),
            request,
        };
        let unreachable = |reason: String| TransportError::Unreachable {
            member: member.to_string(),
            reason,
        };
        match self.client.call(api::path::ADMIN_CALL, &body) {
            Ok(api::CallResponse::Answer(a)) => Ok(a),
            // The agent's refusal crosses the wire as its message.
            Ok(api::CallResponse::Refused(reason)) => Err(TransportError::RefusedRemotely {
                member: member.to_string(),
                reason,
            }),
            Ok(api::CallResponse::Unreachable(reason)) => Err(unreachable(reason)),
            Err(e) => Err(unreachable(e.to_string())),
        }
    }
}
