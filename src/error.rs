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
}

/// `Result` with the umbrella error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
