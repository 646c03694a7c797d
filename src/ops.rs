//! Staged operations (O1-O12): Remint CA (RC1), Change CA (CI1, CE1) and Server Remint (SR1-SR4).
//!
//! An operation is a persisted state machine. Its rules live in [`machine`]: typed states
//! ([`Op<S>`](Op), each state holding only its data) with consuming transitions that return
//! the next state or a [`Refused`] naming the state and the event; a method that makes no
//! sense in a state does not exist there. They do no I/O and read no clock. Scheduled work
//! follows quinn-proto: [`Op::poll_timeout`] says when the machine next wants to run and
//! [`Op::handle_timeout`] runs it; a spurious call is a no-op.
//!
//! The persisted record ([`Operation`], `op/current` and `op/history/<id>`) is plain data:
//! the shared fields and the state enum ([`OpState`]), serialised with a format version
//! first. [`AnyOp`] loads from it and saves back to it unchanged.
//!
//! Per-member progress lives beside the operation in [`update::MemberUpdate`] records, one per
//! member, so a zone of 100,000 devices reports in batches without rewriting one huge record.

pub mod gate;
pub mod machine;
pub mod update;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ca::ValidityYears;
use crate::cert::CertificateDer;
use crate::clock::Timestamp;
use crate::key::KeySpec;
use crate::zone::Fqdn;

pub use gate::{AtDeadline, Coverage, Gate, GateState, ServerQuota, TimeoutOutcome, Verdict};
pub use machine::{AnyOp, BeforeActivation, LiveOp, Op, OpCore, Refused, State, Timeout};
pub use update::{MemberStatus, MemberUpdate, ServerCertStatus};

/// How long before activation a cancel is still allowed (O7): the manual's ten minutes.
pub const CANCEL_CUTOFF: Duration = Duration::from_secs(600);

/// Errors of staged operations: refusals name the state and the event, or the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// Another operation runs (O1).
    #[error(
        "{running} (update {update:?}) is in progress: {wanted} cannot start until it is \
             cancelled or baselined"
    )]
    Busy {
        /// The running operation's kind.
        running: String,
        /// Its update name.
        update: String,
        /// What was asked for.
        wanted: String,
    },
    /// No operation runs.
    #[error("no operation is in progress")]
    NoOperation,
    /// The event makes no sense in this state.
    #[error("cannot {event} while the operation is {state}")]
    WrongState {
        /// The state.
        state: &'static str,
        /// The event.
        event: &'static str,
    },
    /// Activation in the past (O2).
    #[error("activation time {activation} is in the past (now {now})")]
    ActivationInPast {
        /// Requested activation.
        activation: Timestamp,
        /// Now.
        now: Timestamp,
    },
    /// Activation at or after the current CA's expiry (O2).
    #[error(
        "activation time {activation} must be before the current CA expires \
             ({ca_not_after}); choose an earlier time"
    )]
    ActivationTooLate {
        /// Requested activation.
        activation: Timestamp,
        /// The current CA's notAfter.
        ca_not_after: Timestamp,
    },
    /// Activation at or after the earliest expiry among the servers of an external Server
    /// Remint (O2, SR3).
    #[error(
        "activation time {activation} must be before the earliest expiry among the \
             selected servers' certificates ({not_after}); choose an earlier time"
    )]
    ActivationAfterServerExpiry {
        /// Requested activation.
        activation: Timestamp,
        /// The earliest server certificate expiry.
        not_after: Timestamp,
    },
    /// "immediate" while the CA is still valid (O2).
    #[error(
        "activation \"immediate\" is only allowed once the current CA has expired \
             (it expires at {ca_not_after}); give an activation time"
    )]
    ImmediateNotAllowed {
        /// The current CA's notAfter.
        ca_not_after: Timestamp,
    },
    /// A time was required but the CA has expired (O2).
    #[error(
        "the current CA expired at {ca_not_after}: the only possible activation is \
             \"immediate\""
    )]
    CaExpiredUseImmediate {
        /// The current CA's notAfter.
        ca_not_after: Timestamp,
    },
    /// Cancel inside the cut-off (O7).
    #[error(
        "cancel refused: the cut-off was {deadline}, ten minutes before activation at \
             {activation}; only \"ignore device\" is possible now"
    )]
    CancelCutoff {
        /// The cancel deadline.
        deadline: Timestamp,
        /// Activation.
        activation: Timestamp,
    },
    /// Another action inside the cut-off (O7).
    #[error(
        "{event} refused: within ten minutes of activation ({activation}) only \"ignore \
             device\" is possible"
    )]
    InsideCutoff {
        /// The refused action.
        event: &'static str,
        /// Activation.
        activation: Timestamp,
    },
    /// Baseline while devices are stranded (O10).
    #[error(
        "{count} member(s) are stranded ({first}, ...): baselining removes their recovery \
             bundle; recover them first, or force the baseline"
    )]
    StrandedBaseline {
        /// How many.
        count: usize,
        /// One of them.
        first: String,
    },
    /// A member the operation does not know.
    #[error("{name} is not part of this operation's update")]
    NotInUpdate {
        /// The member.
        name: String,
    },
    /// A server selection that breaks SR1/SR2.
    #[error("{0}")]
    Selection(String),
    /// A coverage gate that cannot work (B2).
    #[error("{0}")]
    Gate(String),
    /// The gate's deadline is not after the activation time (B2).
    #[error(
        "the gate's deadline {deadline} (the current CA's expiry minus the margin) is not \
         after activation at {activation}: choose a smaller margin or an earlier activation"
    )]
    GateDeadline {
        /// The deadline.
        deadline: Timestamp,
        /// Activation.
        activation: Timestamp,
    },
    /// The update name is missing (SR2).
    #[error("a server remint needs a system update name (SR2)")]
    MissingUpdateName,
    /// A server remint in a zone with an external CA names no CSR mode (SR3).
    #[error(
        "this zone's CA is external: a server remint needs to know how certificates are \
         requested, by CSRs the agents make (automatic) or by the administrator (manual) (SR3)"
    )]
    CsrModeRequired,
    /// A CSR mode for a server remint in a zone whose CA is internal (SR3).
    #[error(
        "CSR modes apply to a zone with an external CA; this zone's CA is internal, and its \
         certificate server issues the new certificates"
    )]
    CsrModeWithInternalCa,
    /// A server has no CSR where one is needed (SR5).
    #[error("{fqdn} has no CSR: none has been generated for it{}", if *.manual { ", and its remint repository holds no certificate chain and key (manual mode)" } else { "" })]
    NoCsr {
        /// The server.
        fqdn: String,
        /// Manual mode would also have accepted a chain and key in the remint repository.
        manual: bool,
    },
    /// No server has a CSR (SR5).
    #[error("no CSR has been generated")]
    NoCsrs,
}

/// What the operation changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum OpKind {
    /// Remint CA (RC1): a new CA key and certificate on the certificate server; every Primary
    /// Server and Authentication Satellite reminted under it.
    RemintCa {
        /// New CA common name.
        common_name: String,
        /// New CA key type.
        key: KeySpec,
        /// New CA validity.
        validity: ValidityYears,
        /// Put servers' additional DNS names into their SANs.
        include_dns: bool,
        /// The future CA certificate (its key stays on the certificate server's agent).
        future_ca: CertificateDer,
        /// The bridge: the future CA's key certified by the current CA (B1). It is the
        /// recovery bundle's proof, checked with the trust a device already has (O6).
        cross_certificate: CertificateDer,
    },
    /// Change CA (CI1, CI2, CE1-CE4): a new CA, internal on a chosen Primary Server or external
    /// (a root, and subordinate CAs given in full); every Primary Server and Authentication
    /// Satellite gets a certificate under it.
    ChangeCa {
        /// Where the new CA lives.
        to: NewCa,
        /// Put servers' additional DNS names into their SANs.
        include_dns: bool,
        /// The future zone CA: a new internal CA, or the external chain's root (CE1).
        future_ca: CertificateDer,
        /// Subordinate CAs between the external root and server certificates (may be empty).
        intermediates: Vec<CertificateDer>,
        /// The bridge (B1): the future CA certified by the current one, when the zone holds the
        /// current CA's key (an internal CA); the recovery bundle's proof (O6).
        cross_certificate: Option<CertificateDer>,
    },
    /// Server Remint (SR1-SR3): new keys and certificates for selected servers, issued by the
    /// internal CA, or by the external CA through CSRs (`csr`).
    ServerRemint {
        /// The selected servers.
        servers: Vec<Fqdn>,
        /// CN override (only for one server without satellites, SR2).
        common_name: Option<String>,
        /// Key type of the new server keys.
        key: KeySpec,
        /// Put the servers' additional DNS names into their SANs.
        include_dns: bool,
        /// External CA: how the new certificates are requested (SR3).
        #[serde(default)]
        csr: Option<CsrMode>,
    },
}

/// B1: the chain a server presents after activation. With a bridge, the future CA at the end
/// of `chain` is replaced by the bridge: a member that trusts the new CA finds its anchor by
/// name and key all the same, and one that still trusts only the old CA validates through the
/// bridge.
pub fn with_bridge(
    mut chain: Vec<CertificateDer>,
    future_ca: Option<&CertificateDer>,
    bridge: Option<&CertificateDer>,
) -> Vec<CertificateDer> {
    if let (Some(future), Some(bridge)) = (future_ca, bridge)
        && chain.last() == Some(future)
        && chain.len() > 1
    {
        chain.pop();
        chain.push(bridge.clone());
    }
    chain
}

/// Where a Change CA puts the zone's CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ca", rename_all = "snake_case")]
pub enum NewCa {
    /// An internal CA created on `server`, which becomes the certificate server (CI1).
    Internal {
        /// The new certificate server (a Primary Server).
        server: Fqdn,
        /// Subject common name (default: the zone name).
        common_name: String,
        /// Key type.
        key: KeySpec,
        /// Validity.
        validity: ValidityYears,
    },
    /// An external CA (CE1); server certificates come through CSRs.
    External {
        /// CSR mode (CE2).
        csr: CsrMode,
    },
}

/// Subject fields of CSRs the crate makes for an external CA (CE2: O, OU, L, ST, C; the CN
/// is the server's FQDN).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CsrFields {
    /// Organisation.
    pub organization: Option<String>,
    /// Organisational unit.
    pub organizational_unit: Option<String>,
    /// Locality.
    pub locality: Option<String>,
    /// State or province.
    pub state: Option<String>,
    /// Country, two letters.
    pub country: Option<String>,
}

impl CsrFields {
    /// Organisation (O).
    pub fn with_organization(mut self, o: impl Into<String>) -> Self {
        self.organization = Some(o.into());
        self
    }

    /// Organisational unit (OU).
    pub fn with_organizational_unit(mut self, ou: impl Into<String>) -> Self {
        self.organizational_unit = Some(ou.into());
        self
    }

    /// Locality (L).
    pub fn with_locality(mut self, l: impl Into<String>) -> Self {
        self.locality = Some(l.into());
        self
    }

    /// State or province (ST).
    pub fn with_state(mut self, st: impl Into<String>) -> Self {
        self.state = Some(st.into());
        self
    }

    /// Country, two letters (C).
    pub fn with_country(mut self, c: impl Into<String>) -> Self {
        self.country = Some(c.into());
        self
    }
}

/// How server certificates are requested from an external CA (CE2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum CsrMode {
    /// The administrator makes keys and CSRs elsewhere and places the complete chain
    /// (`server.<ext>`) and key (`key.der`) in each server's remint repository.
    Manual,
    /// Each server's agent makes its key and CSR; the administrator has them signed and
    /// imports the certificates.
    Auto {
        /// Subject fields.
        fields: CsrFields,
        /// Key type.
        key: KeySpec,
    },
}

impl OpKind {
    /// The future zone CA of a CA operation.
    pub fn future_ca(&self) -> Option<&CertificateDer> {
        match self {
            OpKind::RemintCa { future_ca, .. } | OpKind::ChangeCa { future_ca, .. } => {
                Some(future_ca)
            }
            OpKind::ServerRemint { .. } => None,
        }
    }

    /// The bridge that authenticates the recovery bundle (B1, O6).
    pub fn cross_certificate(&self) -> Option<&CertificateDer> {
        match self {
            OpKind::RemintCa {
                cross_certificate, ..
            } => Some(cross_certificate),
            OpKind::ChangeCa {
                cross_certificate, ..
            } => cross_certificate.as_ref(),
            OpKind::ServerRemint { .. } => None,
        }
    }

    /// The bridge, if this operation has a real one: the future CA certified by the current
    /// CA (B1). An expired CA cannot sign one, so after an "immediate" Remint CA there is none.
    pub fn bridge(&self) -> Option<&CertificateDer> {
        self.cross_certificate()
            .filter(|c| Some(*c) != self.future_ca())
    }

    /// How certificates are requested, when an external CA issues them.
    pub fn csr_mode(&self) -> Option<&CsrMode> {
        match self {
            OpKind::ChangeCa {
                to: NewCa::External { csr },
                ..
            } => Some(csr),
            OpKind::ServerRemint { csr, .. } => csr.as_ref(),
            _ => None,
        }
    }

    /// `remint_ca` or `server_remint`.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::RemintCa { .. } => "remint_ca",
            OpKind::ChangeCa {
                to: NewCa::Internal { .. },
                ..
            } => "change_ca_internal",
            OpKind::ChangeCa {
                to: NewCa::External { .. },
                ..
            } => "change_ca_external",
            OpKind::ServerRemint { .. } => "server_remint",
        }
    }

    /// Whether the update goes to every member (CA operations) or to selected servers (O4).
    pub fn all_members(&self) -> bool {
        matches!(self, OpKind::RemintCa { .. } | OpKind::ChangeCa { .. })
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpKind::RemintCa { .. } => "Remint CA",
            OpKind::ChangeCa { .. } => "Change CA",
            OpKind::ServerRemint { .. } => "Server Remint",
        })
    }
}

/// Requested activation (O2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationRequest {
    /// At a time.
    At(Timestamp),
    /// At once: allowed only when the current CA has expired.
    Immediate,
}

impl std::str::FromStr for ActivationRequest {
    type Err = crate::clock::TimeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("immediate") {
            Ok(ActivationRequest::Immediate)
        } else {
            s.parse().map(ActivationRequest::At)
        }
    }
}

/// A checked activation time: only [`check_activation`] makes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// When the future certificates become current.
    pub at: Timestamp,
    /// Whether it was "immediate" (the CA had expired).
    pub immediate: bool,
}

/// O2: activation before the current CA expires (and, for an external Server Remint, before
/// the earliest expiry among the selected servers: `deadline`), never in the past; "immediate"
/// only, and then necessarily, when the CA has expired.
pub fn check_activation(
    requested: ActivationRequest,
    now: Timestamp,
    ca_not_after: Timestamp,
    deadline: Option<Timestamp>,
) -> Result<Activation, OpError> {
    let ca_expired = now > ca_not_after;
    match requested {
        ActivationRequest::Immediate if ca_expired => Ok(Activation {
            at: now,
            immediate: true,
        }),
        ActivationRequest::Immediate => Err(OpError::ImmediateNotAllowed { ca_not_after }),
        ActivationRequest::At(_) if ca_expired => {
            Err(OpError::CaExpiredUseImmediate { ca_not_after })
        }
        ActivationRequest::At(at) => {
            if at < now {
                return Err(OpError::ActivationInPast {
                    activation: at,
                    now,
                });
            }
            if at >= ca_not_after {
                return Err(OpError::ActivationTooLate {
                    activation: at,
                    ca_not_after,
                });
            }
            if let Some(not_after) = deadline.filter(|d| at >= *d) {
                return Err(OpError::ActivationAfterServerExpiry {
                    activation: at,
                    not_after,
                });
            }
            Ok(Activation {
                at,
                immediate: false,
            })
        }
    }
}

/// Replication of the update's content to one Primary Server or Content Satellite (O3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replication {
    /// Not there yet.
    Pending,
    /// The content is on the server.
    Replicated,
}

/// Waiting for replication; not yet assigned (O3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicating {}

/// Assigned to its members (O4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assigned {
    /// When.
    pub at: Timestamp,
    /// By "assign now" (before replication completed) rather than automatically.
    pub manual: bool,
}

/// Activated (O8): the future certificates are current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activated {
    /// When the service activated it (at or after the activation time).
    pub at: Timestamp,
    /// Members that had not applied the update at activation.
    pub stranded_at_activation: u64,
}

/// Cancelled (O7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancelled {
    /// When.
    pub at: Timestamp,
}

/// Baselined (O10): finished; the recovery bundle is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baselined {
    /// When.
    pub at: Timestamp,
    /// Forced while members were still stranded.
    pub forced: bool,
    /// How many were stranded then.
    pub stranded: u64,
}

/// The operation's state: each variant holds only that state's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OpState {
    /// Replicating the update's content.
    Replicating(Replicating),
    /// Assigned to members, waiting for activation.
    Assigned(Assigned),
    /// Activated; members switch at their next refresh; stranded ones need recovery.
    Activated(Activated),
    /// Cancelled.
    Cancelled(Cancelled),
    /// Baselined.
    Baselined(Baselined),
}

impl OpState {
    /// `replicating`, `assigned`, `activated`, `cancelled`, `baselined`.
    pub fn name(&self) -> &'static str {
        match self {
            OpState::Replicating(_) => "replicating",
            OpState::Assigned(_) => "assigned",
            OpState::Activated(_) => "activated",
            OpState::Cancelled(_) => "cancelled",
            OpState::Baselined(_) => "baselined",
        }
    }

    /// Whether the operation still blocks others (O1): until cancelled or baselined.
    pub fn is_running(&self) -> bool {
        !matches!(self, OpState::Cancelled(_) | OpState::Baselined(_))
    }
}

/// Events reported by the embedding application (O11) and the operator (O12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Notice {
    /// O11: the CA changed; re-sign what was signed with the old CA (the manual's security
    /// policies, whose versions then increase).
    ResignRequired {
        /// The old CA's SHA-256 fingerprint.
        old_ca_sha256: String,
        /// The new CA's SHA-256 fingerprint.
        new_ca_sha256: String,
        /// When.
        at: Timestamp,
    },
    /// O12: every Primary Server's future certificate exists: refresh devices on legacy
    /// agents now.
    LegacyRefreshPoint {
        /// When it was reached.
        at: Timestamp,
    },
    /// B2: the coverage gate was not met at the activation time: activation moved.
    ActivationPostponed {
        /// When the gate was judged.
        at: Timestamp,
        /// The activation time it moved from.
        from: Timestamp,
        /// The new activation time.
        to: Timestamp,
        /// Why (which members are missing, by status).
        reason: String,
    },
    /// B2: the gate's deadline came with the gate unmet and the policy activated anyway.
    ActivatedAtDeadline {
        /// When.
        at: Timestamp,
        /// Members stranded by it.
        stranded: u64,
        /// Why the gate was not met.
        reason: String,
    },
    /// B2: an alarm: the gate's deadline came with the gate unmet and the policy is to hold;
    /// the operation waits for the administrator (or for the gate to be met).
    GateAlarm {
        /// When.
        at: Timestamp,
        /// The deadline.
        deadline: Timestamp,
        /// Why the gate was not met.
        reason: String,
    },
}

/// A staged operation: the persisted record `op/current` (and `op/history/<id>` once
/// finished). Plain data with read-only queries; its transitions are the typed machine's
/// ([`AnyOp::from`] loads it, [`Operation::from`] saves an [`Op`] or an [`AnyOp`] back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Record format version.
    pub v: u32,
    /// Sequence number in this zone.
    pub id: u64,
    /// What it changes.
    pub kind: OpKind,
    /// The system update's name (O3).
    pub update_name: String,
    /// When the future certificates become current.
    pub activation: Activation,
    /// When it started.
    pub started_at: Timestamp,
    /// The certificate server at start: it signs the future certificates.
    pub ca_server: Fqdn,
    /// Primary Servers and Content Satellites, with the replication status of each (O3).
    pub replication: BTreeMap<Fqdn, Replication>,
    /// Members the update goes to (names), for CA operations every member at start.
    pub targets: u64,
    /// Notices for the embedding application (O11, O12).
    pub notices: Vec<Notice>,
    /// B1: whether servers present the bridge after activation (when there is one).
    #[serde(default)]
    pub serve_bridge: bool,
    /// B2: the coverage gate, if the operation has one, and what it has done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateState>,
    /// Lint warnings the administrator acknowledged for this operation's certificates (B4).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acknowledged: Vec<crate::lint::Rule>,
    /// Where the state machine is.
    pub state: OpState,
}

impl Operation {
    /// The last moment a cancel is allowed is strictly before this (O7).
    pub fn cancel_deadline(&self) -> Timestamp {
        self.activation.cancel_deadline()
    }

    /// Whether `now` is inside the cut-off, where only "ignore device" is allowed (O7).
    pub fn inside_cutoff(&self, now: Timestamp) -> bool {
        self.activation.inside_cutoff(now)
    }

    /// Whether the update is assigned (or past that).
    pub fn is_assigned(&self) -> bool {
        matches!(self.state, OpState::Assigned(_) | OpState::Activated(_))
    }

    /// Whether every content server has the content.
    pub fn replication_complete(&self) -> bool {
        replication_complete(&self.replication)
    }

    /// Whether the operation is held at its gate's deadline (B2).
    pub fn held(&self) -> bool {
        held(self.gate.as_ref())
    }

    /// The bridge servers present after activation, if any (B1).
    pub fn served_bridge(&self) -> Option<&CertificateDer> {
        served_bridge(&self.kind, self.serve_bridge)
    }

    /// Whether members that missed the update still validate the servers at `now`: a bridge
    /// is served and still valid (B1).
    pub fn bridged_at(&self, now: Timestamp) -> bool {
        bridged_at(self.served_bridge(), now)
    }
}

impl Activation {
    /// The last moment a cancel is allowed is strictly before this (O7).
    pub fn cancel_deadline(&self) -> Timestamp {
        self.at.minus(CANCEL_CUTOFF)
    }

    /// Whether `now` is inside the cut-off, where only "ignore device" is allowed (O7).
    pub fn inside_cutoff(&self, now: Timestamp) -> bool {
        now >= self.cancel_deadline()
    }
}

fn replication_complete(replication: &BTreeMap<Fqdn, Replication>) -> bool {
    replication.values().all(|r| *r == Replication::Replicated)
}

fn held(gate: Option<&GateState>) -> bool {
    gate.is_some_and(|g| g.held_since.is_some())
}

fn served_bridge(kind: &OpKind, serve: bool) -> Option<&CertificateDer> {
    kind.bridge().filter(|_| serve)
}

fn bridged_at(bridge: Option<&CertificateDer>, now: Timestamp) -> bool {
    bridge
        .and_then(|b| crate::cert::Certificate::try_from(b).ok())
        .is_some_and(|b| now <= b.not_after())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn op(activation: &str) -> Operation {
        machine::tests::op(activation).into()
    }

    #[test]
    fn activation_rules_o2() {
        let now = t("2027-01-01T00:00:00Z");
        let ca_end = t("2030-01-01T00:00:00Z");
        let at = |s| ActivationRequest::At(t(s));
        assert!(check_activation(at("2027-02-01T00:00:00Z"), now, ca_end, None).is_ok());
        assert!(matches!(
            check_activation(at("2026-12-31T23:59:59Z"), now, ca_end, None),
            Err(OpError::ActivationInPast { .. })
        ));
        assert!(check_activation(at("2027-01-01T00:00:00Z"), now, ca_end, None).is_ok());
        assert!(matches!(
            check_activation(at("2030-01-01T00:00:00Z"), now, ca_end, None),
            Err(OpError::ActivationTooLate { .. })
        ));
        assert!(matches!(
            check_activation(ActivationRequest::Immediate, now, ca_end, None),
            Err(OpError::ImmediateNotAllowed { .. })
        ));
        let late = t("2030-01-01T00:00:01Z");
        let a = check_activation(ActivationRequest::Immediate, late, ca_end, None).unwrap();
        assert!(a.immediate && a.at == late);
        assert!(matches!(
            check_activation(at("2030-02-01T00:00:00Z"), late, ca_end, None),
            Err(OpError::CaExpiredUseImmediate { .. })
        ));
        let deadline = Some(t("2028-01-01T00:00:00Z"));
        assert!(check_activation(at("2028-06-01T00:00:00Z"), now, ca_end, deadline).is_err());
    }

    #[test]
    fn records_without_a_gate_read_and_write_as_before_b2() {
        let o = op("2027-02-01T00:00:00Z");
        let json = serde_json::to_string(&o).unwrap();
        assert!(
            !json.contains("gate") && !json.contains("acknowledged"),
            "{json}"
        );
        let read: Operation = serde_json::from_str(&json).unwrap();
        assert_eq!(read.gate, None);
        let gate = Gate {
            min_devices_percent: 50,
            servers: ServerQuota::All,
            step_secs: 3600,
            deadline_margin_secs: 0,
            at_deadline: AtDeadline::Activate,
        };
        let gated: Operation = machine::tests::op("2027-02-01T00:00:00Z")
            .with_gate(gate, t("2030-01-01T00:00:00Z"))
            .unwrap()
            .into();
        let json = serde_json::to_string(&gated).unwrap();
        assert_eq!(serde_json::from_str::<Operation>(&json).unwrap(), gated);
    }

    #[test]
    fn record_round_trips_with_version_first() {
        let o = op("2027-02-01T00:00:00Z");
        let json = serde_json::to_string(&o).unwrap();
        assert!(json.starts_with("{\"v\":1,"), "{json}");
        assert_eq!(serde_json::from_str::<Operation>(&json).unwrap(), o);
    }

    /// The typed machine reads and writes exactly the persisted record: every state of a
    /// record survives `Operation -> AnyOp -> Operation` unchanged.
    #[test]
    fn records_survive_the_typed_machine_unchanged() {
        let at = t("2027-01-02T00:00:00Z");
        let base = op("2027-02-01T00:00:00Z");
        for state in [
            OpState::Replicating(Replicating {}),
            OpState::Assigned(Assigned { at, manual: true }),
            OpState::Activated(Activated {
                at,
                stranded_at_activation: 3,
            }),
            OpState::Cancelled(Cancelled { at }),
            OpState::Baselined(Baselined {
                at,
                forced: true,
                stranded: 2,
            }),
        ] {
            let rec = Operation {
                state,
                ..base.clone()
            };
            let json = serde_json::to_vec(&rec).unwrap();
            let typed = AnyOp::from(serde_json::from_slice::<Operation>(&json).unwrap());
            assert_eq!(typed.name(), rec.state.name());
            let back = Operation::from(typed);
            assert_eq!(back, rec);
            assert_eq!(serde_json::to_vec(&back).unwrap(), json);
        }
    }
}
