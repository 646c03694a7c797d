//! The paths and bodies of zoned's HTTPS API, shared by the server ([`super`]'s server side)
//! and its clients (the agent, `zonectl --server`), so both ends agree by construction.
//! docs/protocol.md ("Over HTTPS") describes the same for people.
//!
//! - Agent API (N1, N3): `POST` [`path::POLL`] ([`AgentMessage`](crate::protocol::AgentMessage)
//!   in, [`ZoneAnswer`](crate::protocol::ZoneAnswer) out) and [`path::RENEW`] need the member's
//!   client certificate (mutual TLS); [`path::ENROLL`] takes a registration token instead;
//!   [`path::CA`] is open to anyone (the CA certificates are public: a client checks them
//!   against the SHA-256 it was given before it trusts them).
//! - Admin API: every path under `/admin/` needs `Authorization: Bearer <admin token>`. It
//!   carries the [`Storage`](crate::store::Storage) calls and the calls to members' agents
//!   ([`Transport`](crate::transport::Transport)), so a remote frontend runs each command's
//!   rules in its own process, against the zone's store, with every commit conditioned on what
//!   it read (B6) exactly as a local one.
//! - Operations: [`path::HEALTHZ`], [`path::READYZ`], [`path::METRICS`] (N7).
//!
//! Every refusal is a JSON [`ApiError`] with an HTTP status.

use serde::{Deserialize, Serialize};

use crate::agent::{AgentRequest, AgentResponse};
use crate::store::{Expect, Record, StoreError, Write};

/// The request paths.
pub mod path {
    /// `POST`, mutual TLS: one poll of a member's agent.
    pub const POLL: &str = "/v1/poll";
    /// `POST`, registration token: first contact, a CSR in, a credential out.
    pub const ENROLL: &str = "/v1/enroll";
    /// `POST`, mutual TLS: a new credential for a new key (before the old one expires, or
    /// after a CA change).
    pub const RENEW: &str = "/v1/renew";
    /// `GET`, open: the zone's CA certificates (current, future, retired ones still trusted).
    pub const CA: &str = "/v1/ca";
    /// `GET`, open: the process is alive.
    pub const HEALTHZ: &str = "/healthz";
    /// `GET`, open: the process can serve (store open, TLS material loaded).
    pub const READYZ: &str = "/readyz";
    /// `GET`, open: Prometheus text format.
    pub const METRICS: &str = "/metrics";
    /// `POST`, admin: [`super::GetRequest`] → [`super::GetResponse`].
    pub const ADMIN_GET: &str = "/admin/v1/store/get";
    /// `POST`, admin: [`super::ScanRequest`] → [`super::ScanResponse`].
    pub const ADMIN_SCAN: &str = "/admin/v1/store/scan";
    /// `POST`, admin: [`super::LastRequest`] → [`super::LastResponse`].
    pub const ADMIN_LAST: &str = "/admin/v1/store/last";
    /// `POST`, admin: [`super::CommitRequest`] → [`super::CommitResponse`].
    pub const ADMIN_COMMIT: &str = "/admin/v1/store/commit";
    /// `POST`, admin: [`super::CallRequest`] → [`super::CallResponse`].
    pub const ADMIN_CALL: &str = "/admin/v1/call";
    /// `POST`: a server-to-server call (D2), mutual TLS with a Primary Server's certificate:
    /// a [`super::CallRequest`] for the called server's own agent (the certificate server's
    /// signatures); the answer is a [`super::CallResponse`].
    pub const PEER_CALL: &str = "/v1/peer/call";
}

/// The largest body of an agent request ([`crate::protocol::MAX_MESSAGE_BYTES`]).
pub const MAX_AGENT_BODY: usize = crate::protocol::MAX_MESSAGE_BYTES;
/// The largest body of an admin request (a commit adding many members at once).
pub const MAX_ADMIN_BODY: usize = 64 * 1024 * 1024;
/// The largest page an admin scan returns, whatever it asks.
pub const MAX_SCAN_LIMIT: usize = 4096;

/// A refusal, with the HTTP status it travels with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    /// A stable, machine-readable kind (`unauthenticated`, `forbidden`, `malformed`,
    /// `too_large`, `conflict`, `not_found`, `refused`, `unavailable`, `internal`, ...).
    pub kind: String,
    /// What was wrong and what to do, in the library's words. Never a secret.
    pub message: String,
    /// Whether the same request may succeed later unchanged.
    #[serde(default)]
    pub retryable: bool,
    /// For a store error: the error, so a remote store gives its caller the same
    /// [`StoreError`] a local one would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<WireStoreError>,
}

/// A [`StoreError`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WireStoreError {
    /// [`StoreError::Conflict`].
    Conflict {
        /// The key.
        key: String,
        /// The precondition.
        expected: WireExpect,
        /// The version found.
        found: Option<u64>,
    },
    /// [`StoreError::InvalidWrite`].
    InvalidWrite {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// [`StoreError::Corrupt`].
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// Any other store error: its message, and whether it is retryable.
    Other {
        /// The message.
        message: String,
        /// Whether a retry may succeed.
        retryable: bool,
    },
}

impl From<&StoreError> for WireStoreError {
    fn from(e: &StoreError) -> Self {
        match e {
            StoreError::Conflict {
                key,
                expected,
                found,
            } => WireStoreError::Conflict {
                key: key.clone(),
                expected: (*expected).into(),
                found: *found,
            },
            StoreError::InvalidWrite { key, reason } => WireStoreError::InvalidWrite {
                key: key.clone(),
                reason: reason.clone(),
            },
            StoreError::Corrupt { key, reason } => WireStoreError::Corrupt {
                key: key.clone(),
                reason: reason.clone(),
            },
            other => WireStoreError::Other {
                message: other.to_string(),
                retryable: other.is_retryable(),
            },
        }
    }
}

/// Why the zone server's store failed a remote call (the server's own message).
#[derive(Debug, thiserror::Error)]
#[error("the zone server's store failed: {0}")]
pub struct RemoteStoreFailure(pub String);

impl From<WireStoreError> for StoreError {
    fn from(e: WireStoreError) -> Self {
        match e {
            WireStoreError::Conflict {
                key,
                expected,
                found,
            } => StoreError::Conflict {
                key,
                expected: expected.into(),
                found,
            },
            WireStoreError::InvalidWrite { key, reason } => {
                StoreError::InvalidWrite { key, reason }
            }
            WireStoreError::Corrupt { key, reason } => StoreError::Corrupt { key, reason },
            WireStoreError::Other { message, retryable } => StoreError::Backend {
                context: "zone server".into(),
                source: Box::new(RemoteStoreFailure(message)),
                retryable,
            },
        }
    }
}

/// [`Expect`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WireExpect {
    /// [`Expect::Absent`].
    Absent,
    /// [`Expect::Version`].
    Version(u64),
    /// [`Expect::Any`].
    Any,
}

impl From<Expect> for WireExpect {
    fn from(e: Expect) -> Self {
        match e {
            Expect::Absent => WireExpect::Absent,
            Expect::Version(v) => WireExpect::Version(v),
            Expect::Any => WireExpect::Any,
        }
    }
}

impl From<WireExpect> for Expect {
    fn from(e: WireExpect) -> Self {
        match e {
            WireExpect::Absent => Expect::Absent,
            WireExpect::Version(v) => Expect::Version(v),
            WireExpect::Any => Expect::Any,
        }
    }
}

/// A [`Record`] on the wire (the value base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRecord {
    /// The record's version.
    pub version: u64,
    /// Its value.
    #[serde(with = "crate::protocol::base64_bytes")]
    pub value: Vec<u8>,
}

impl From<Record> for WireRecord {
    fn from(r: Record) -> Self {
        WireRecord {
            version: r.version,
            value: r.value,
        }
    }
}

impl From<WireRecord> for Record {
    fn from(r: WireRecord) -> Self {
        Record {
            version: r.version,
            value: r.value,
        }
    }
}

/// A [`Write`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireWrite {
    /// The key.
    pub key: String,
    /// The precondition.
    pub expect: WireExpect,
    /// The new value; absent: delete.
    #[serde(default, with = "crate::protocol::base64_bytes_opt")]
    pub value: Option<Vec<u8>>,
}

impl From<&Write> for WireWrite {
    fn from(w: &Write) -> Self {
        WireWrite {
            key: w.key.clone(),
            expect: w.expect.into(),
            value: w.value.clone(),
        }
    }
}

impl From<WireWrite> for Write {
    fn from(w: WireWrite) -> Self {
        Write {
            key: w.key,
            expect: w.expect.into(),
            value: w.value,
        }
    }
}

/// [`path::ADMIN_GET`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    /// The key.
    pub key: String,
}

/// The answer to a [`GetRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetResponse {
    /// The record, if any.
    pub record: Option<WireRecord>,
}

/// [`path::ADMIN_SCAN`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanRequest {
    /// The key family.
    pub prefix: String,
    /// Start strictly after this key.
    #[serde(default)]
    pub after: Option<String>,
    /// At most this many (the server caps it at [`MAX_SCAN_LIMIT`]; a page shorter than asked
    /// is then not the last: the client asks again after its last key).
    pub limit: usize,
}

/// The answer to a [`ScanRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanResponse {
    /// The page, in key order.
    pub records: Vec<(String, WireRecord)>,
}

/// [`path::ADMIN_LAST`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastRequest {
    /// The key family.
    pub prefix: String,
}

/// The answer to a [`LastRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastResponse {
    /// The last record of the family, if any.
    pub record: Option<(String, WireRecord)>,
}

/// [`path::ADMIN_COMMIT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// All or none.
    pub writes: Vec<WireWrite>,
}

/// The answer to a [`CommitRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitResponse {
    /// The version each write gave its key (none for a delete).
    pub versions: Vec<Option<u64>>,
}

/// [`path::ADMIN_CALL`]: a request to a member's agent, which the zone server delivers (to its
/// own agent, or, later, to another server's).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// The member.
    pub member: String,
    /// The request.
    pub request: AgentRequest,
}

/// The answer to a [`CallRequest`]: the agent's answer, or why there was none.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CallResponse {
    /// The agent answered.
    Answer(AgentResponse),
    /// The agent refused (its error's message).
    Refused(String),
    /// The member could not be reached from the zone server.
    Unreachable(String),
}

/// The answer of [`path::CA`]: the zone's CA certificates (the current CA first, then a
/// future CA of a running operation and retired CAs still trusted, B7). A client trusts them
/// only after checking one against the fingerprint it was given ([`super::client::CaPin`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaResponse {
    /// The certificates (PEM text each).
    pub certificates: Vec<crate::cert::CertificateDer>,
}
