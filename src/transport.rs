//! How the zone reaches its members' agents: the [`Transport`] trait, and
//! [`loopback::LoopbackTransport`], which runs every agent in this process (optionally backed
//! by member files on disk), so a whole zone can be exercised from one machine.

pub mod loopback;

pub use loopback::{
    Fleet, InProcessFleet, LoopbackTransport, Outcome, RefreshOptions, RefreshOutcome,
};

use crate::agent::{AgentError, AgentRequest, AgentResponse};

/// Why a request did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The member could not be reached (offline, unknown).
    #[error("member {member} is unreachable: {reason}")]
    Unreachable {
        /// The member.
        member: String,
        /// Why.
        reason: String,
    },
    /// The member's agent answered with a refusal.
    #[error("member {member} refused: {source}")]
    Refused {
        /// The member.
        member: String,
        /// The agent's reason (boxed: refusals are rare, and it keeps every `Result` small).
        #[source]
        source: Box<AgentError>,
    },
    /// The member's agent refused, as another process reported it (a remote transport
    /// through a zone server): its reason, as text.
    #[error("member {member} refused: {reason}")]
    RefusedRemotely {
        /// The member.
        member: String,
        /// The agent's reason, in its words.
        reason: String,
    },
}

/// Sends requests to members' agents and returns their answers.
pub trait Transport: Send + Sync {
    /// Delivers `request` to `member`'s agent and waits for the answer.
    fn call(&self, member: &str, request: AgentRequest) -> Result<AgentResponse, TransportError>;
}

impl<T: Transport + ?Sized> Transport for &T {
    fn call(&self, member: &str, request: AgentRequest) -> Result<AgentResponse, TransportError> {
        (**self).call(member, request)
    }
}

impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    fn call(&self, member: &str, request: AgentRequest) -> Result<AgentResponse, TransportError> {
        (**self).call(member, request)
    }
}
