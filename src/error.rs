//! The umbrella [`Error`]: each area keeps its own error enum beside its code, and converts
//! into this one, so a frontend can match broadly or precisely.

use crate::agent::AgentError;
use crate::audit::AuditError;
use crate::ca::CaError;
use crate::cert::CertError;
use crate::cert::bundle::BundleError;
use crate::chain::ChainError;
use crate::clock::TimeError;
use crate::csr::CsrError;
use crate::key::KeyError;
use crate::store::StoreError;
use crate::transport::TransportError;
use crate::zone::ZoneError;

/// Any error of the crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Zone model and membership rules.
    #[error(transparent)]
    Zone(#[from] ZoneError),
    /// Keys and signatures.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Certificates.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// Certificate files and bundles.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// Certificate requests.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// Issuing.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// Chain validation.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// Times.
    #[error(transparent)]
    Time(#[from] TimeError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reaching members.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A Primary Server's recorded address (D2).
    #[error(transparent)]
    Endpoint(#[from] crate::service::EndpointError),
    /// A member's agent.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The audit log.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// Staged operations.
    #[error(transparent)]
    Op(#[from] crate::ops::OpError),
    /// The pre-flight lint (B4).
    #[error(transparent)]
    Lint(#[from] crate::lint::LintError),
    /// CA backup archives.
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    /// An agent protocol message was refused ([`crate::protocol`]).
    #[error(transparent)]
    Protocol(#[from] crate::protocol::ProtocolError),
    /// A registration or a credential renewal was refused (N3).
    #[error(transparent)]
    Enrolment(#[from] crate::service::EnrolmentError),
    /// Reading or writing a file ([`crate::fsio`]).
    #[error(transparent)]
    File(#[from] crate::fsio::FileError),
    /// B6: another frontend committed a change to the zone after this command read it, so this
    /// command's decision may rest on a stale view and nothing of it was committed. Retryable
    /// ([`Error::is_retryable`]): running the command again re-reads the zone.
    #[error(
        "the zone changed while {event} was being decided (another frontend committed first); \
         nothing was changed: run the command again"
    )]
    ZoneChanged {
        /// The audit event of the command that lost (e.g. `server.add`).
        event: String,
    },
}

impl Error {
    /// Whether running the same command again may succeed: the zone changed under it (B6), or
    /// the store says a retry can pass ([`StoreError::is_retryable`]: a conflict, a busy store,
    /// a backend failure such as a serialization failure that its backend marks retryable).
    /// Every other error says something about the command, the zone or the store that a retry
    /// would meet again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::ZoneChanged { .. } => true,
            Error::Store(e) | Error::Audit(AuditError::Store(e)) => e.is_retryable(),
            _ => false,
        }
    }
}

/// `Result` with the umbrella error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
