//! The operation's typed state machine (O1-O10, B2; issue 10 item 5).
//!
//! An operation in state `S` is an [`Op<S>`]: the data every state shares ([`OpCore`]) and the
//! state's own data (`S`: [`Replicating`], [`Assigned`], [`Activated`], [`Cancelled`],
//! [`Baselined`], each holding only what that state knows). A transition consumes the operation
//! and returns the next state, or, refused, a [`Refused`] that gives the operation back
//! unchanged with the [`OpError`] that names the state and the event. So a method that makes no
//! sense in a state does not exist on it: only a replicating operation can be assigned now
//! ([`Op::assign_now`]), only one before activation can be cancelled ([`Op::cancel`]) or has
//! scheduled work ([`Op::poll_timeout`], [`Op::handle_timeout`]), only an activated one can be
//! baselined ([`Op::baseline`]). A finished one has no transition at all.
//!
//! ```
//! # use zonepki::ops::{Activated, Op, Replicating};
//! # fn f(activated: Op<Activated>, replicating: Op<Replicating>, now: zonepki::clock::Timestamp) {
//! // These exist: an activated operation can be baselined, a replicating one cancelled.
//! let _ = activated.baseline(now, &[], false);
//! let _ = replicating.cancel(now);
//! # }
//! ```
//! ```compile_fail
//! # use zonepki::ops::{Op, Activated};
//! # fn f(op: Op<Activated>, now: zonepki::clock::Timestamp) {
//! // O7: an activated operation cannot be cancelled; there is no such method.
//! let _ = op.cancel(now);
//! # }
//! ```
//! ```compile_fail
//! # use zonepki::ops::{Op, Replicating};
//! # fn f(op: Op<Replicating>, now: zonepki::clock::Timestamp) {
//! // O10: only an activated operation can be baselined.
//! let _ = op.baseline(now, &[], false);
//! # }
//! ```
//!
//! The persisted record stays [`Operation`] (`op/current`, `op/history/<id>`), whose format
//! does not change: [`AnyOp`] is loaded from it and saved back to it, and is also the entry
//! point that feeds an event to whatever state a loaded record is in (a wrong state is a
//! [`OpError::WrongState`] refusal). Everything here is pure: no I/O, no clock (`now` comes
//! in), so the service loads a record once, runs due scheduled work and the command's
//! transition on it, and commits the result.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use super::gate::{self, AtDeadline, Gate, GateState, TimeoutOutcome, Verdict};
use super::{
    Activated, Activation, Assigned, Baselined, Cancelled, Notice, OpError, OpKind, OpState,
    Operation, Replicating, Replication,
};
use crate::cert::CertificateDer;
use crate::clock::Timestamp;
use crate::lint::Rule;
use crate::zone::{Fqdn, RECORD_VERSION};

/// What every state of an operation holds: the persisted record's fields but its state.
///
/// Read it through an [`Op`] (which dereferences to it); only transitions change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpCore {
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
    /// Members the update goes to, for CA operations every member at start.
    pub targets: u64,
    /// Notices for the embedding application (O11, O12, B2).
    pub notices: Vec<Notice>,
    /// B1: whether servers present the bridge after activation (when there is one).
    pub serve_bridge: bool,
    /// B2: the coverage gate, if the operation has one, and what it has done.
    pub gate: Option<GateState>,
    /// Lint warnings the administrator acknowledged for this operation's certificates (B4).
    pub acknowledged: Vec<Rule>,
}

impl OpCore {
    /// The last moment a cancel is allowed is strictly before this (O7).
    pub fn cancel_deadline(&self) -> Timestamp {
        self.activation.cancel_deadline()
    }

    /// Whether `now` is inside the cut-off, where only "ignore device" is allowed (O7).
    pub fn inside_cutoff(&self, now: Timestamp) -> bool {
        self.activation.inside_cutoff(now)
    }

    /// Whether every content server has the content (O3).
    pub fn replication_complete(&self) -> bool {
        super::replication_complete(&self.replication)
    }

    /// Whether the operation is held at its gate's deadline (B2).
    pub fn held(&self) -> bool {
        super::held(self.gate.as_ref())
    }

    /// The bridge servers present after activation, if any (B1).
    pub fn served_bridge(&self) -> Option<&CertificateDer> {
        super::served_bridge(&self.kind, self.serve_bridge)
    }

    /// Whether members that missed the update still validate the servers at `now` (B1).
    pub fn bridged_at(&self, now: Timestamp) -> bool {
        super::bridged_at(self.served_bridge(), now)
    }

    /// Records O12's point once.
    fn note_legacy_point(&mut self, now: Timestamp) {
        if !self
            .notices
            .iter()
            .any(|n| matches!(n, Notice::LegacyRefreshPoint { .. }))
        {
            self.notices.push(Notice::LegacyRefreshPoint { at: now });
        }
    }

    /// O7: an action allowed only before the cut-off (an "immediate" activation has none).
    fn outside_cutoff(&self, now: Timestamp, event: &'static str) -> Result<(), OpError> {
        if self.inside_cutoff(now) && !self.activation.immediate {
            return Err(OpError::InsideCutoff {
                event,
                activation: self.activation.at,
            });
        }
        Ok(())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Replicating {}
    impl Sealed for super::Assigned {}
    impl Sealed for super::Activated {}
    impl Sealed for super::Cancelled {}
    impl Sealed for super::Baselined {}
}

/// A state of an operation: one of [`Replicating`], [`Assigned`], [`Activated`],
/// [`Cancelled`], [`Baselined`] (sealed).
pub trait State: sealed::Sealed + fmt::Debug + Clone {
    /// `replicating`, `assigned`, `activated`, `cancelled` or `baselined`.
    const NAME: &'static str;
    /// The persisted form of the state.
    fn into_record(self) -> OpState;
}

/// The states before activation, [`Replicating`] and [`Assigned`] (sealed): those that can be
/// cancelled (O7) and that have scheduled work, the activation (O8).
pub trait BeforeActivation: State {}

impl State for Replicating {
    const NAME: &'static str = "replicating";
    fn into_record(self) -> OpState {
        OpState::Replicating(self)
    }
}
impl State for Assigned {
    const NAME: &'static str = "assigned";
    fn into_record(self) -> OpState {
        OpState::Assigned(self)
    }
}
impl State for Activated {
    const NAME: &'static str = "activated";
    fn into_record(self) -> OpState {
        OpState::Activated(self)
    }
}
impl State for Cancelled {
    const NAME: &'static str = "cancelled";
    fn into_record(self) -> OpState {
        OpState::Cancelled(self)
    }
}
impl State for Baselined {
    const NAME: &'static str = "baselined";
    fn into_record(self) -> OpState {
        OpState::Baselined(self)
    }
}
impl BeforeActivation for Replicating {}
impl BeforeActivation for Assigned {}

/// An operation in state `S`: the shared data ([`OpCore`], read through `Deref`) and the
/// state's own (`S`). Transitions consume it; see the [module docs](self). The shared data is
/// boxed, so a transition (or a refusal giving the operation back) moves a pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op<S> {
    core: Box<OpCore>,
    state: S,
}

impl<S> Deref for Op<S> {
    type Target = OpCore;
    fn deref(&self) -> &OpCore {
        &self.core
    }
}

impl<S: State> Op<S> {
    /// The data shared by every state.
    pub fn core(&self) -> &OpCore {
        &self.core
    }

    /// The state's own data.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The state's name.
    pub fn name(&self) -> &'static str {
        S::NAME
    }

    fn refuse(self, error: OpError) -> Refused<Self> {
        Refused { op: self, error }
    }

    fn into_state<T>(self, state: T) -> Op<T> {
        Op {
            core: self.core,
            state,
        }
    }
}

/// A refused transition: the operation, unchanged, and why (it names the state and the
/// event, or the rule).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Refused<T> {
    /// The operation as it was.
    pub op: T,
    /// Why.
    pub error: OpError,
}

impl<T> Refused<T> {
    /// The reason, dropping the operation.
    pub fn into_error(self) -> OpError {
        self.error
    }

    /// The same refusal over another form of the operation.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Refused<U> {
        Refused {
            op: f(self.op),
            error: self.error,
        }
    }
}

impl<T> fmt::Display for Refused<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<T: fmt::Debug> std::error::Error for Refused<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl Op<Replicating> {
    /// A new operation, replicating (O3). Set its gate, acknowledged warnings and bridge with
    /// [`Self::with_gate`], [`Self::acknowledging`] and [`Self::serving_bridge`], then
    /// [`Self::started`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: u64,
        kind: OpKind,
        update_name: String,
        activation: Activation,
        now: Timestamp,
        ca_server: Fqdn,
        content_servers: impl IntoIterator<Item = Fqdn>,
        targets: u64,
    ) -> Self {
        Op {
            core: Box::new(OpCore {
                v: RECORD_VERSION,
                id,
                kind,
                update_name,
                activation,
                started_at: now,
                ca_server,
                replication: content_servers
                    .into_iter()
                    .map(|s| (s, Replication::Pending))
                    .collect(),
                targets,
                notices: Vec::new(),
                serve_bridge: false,
                gate: None,
                acknowledged: Vec::new(),
            }),
            state: Replicating {},
        }
    }

    /// Sets a coverage gate (B2) for a current CA expiring at `ca_not_after`: refused when
    /// the settings cannot work or the deadline is not after the activation time.
    pub fn with_gate(mut self, gate: Gate, ca_not_after: Timestamp) -> Result<Self, Refused<Self>> {
        let deadline = match gate.check_for(&self.activation, ca_not_after) {
            Ok(d) => d,
            Err(e) => return Err(self.refuse(e)),
        };
        self.core.gate = Some(GateState {
            gate,
            deadline,
            requested_activation: self.activation.at,
            postponements: Vec::new(),
            held_since: None,
            activated_at_deadline: false,
        });
        Ok(self)
    }

    /// The lint warnings the administrator accepts for this operation's certificates (B4).
    pub fn acknowledging(mut self, rules: Vec<Rule>) -> Self {
        self.core.acknowledged = rules;
        self
    }

    /// B1: whether servers present the bridge after activation; only an operation that has a
    /// bridge can serve one.
    pub fn serving_bridge(mut self, serve: bool) -> Self {
        self.core.serve_bridge = serve && self.core.kind.bridge().is_some();
        self
    }

    /// The operation as it starts: a zone without content servers has nothing to replicate,
    /// so the update is assigned at once (O4).
    pub fn started(self, now: Timestamp) -> AnyOp {
        if self.replication.is_empty() {
            AnyOp::Assigned(self.into_state(Assigned {
                at: now,
                manual: false,
            }))
        } else {
            AnyOp::Replicating(self)
        }
    }

    /// Content reached `server` (O3); the last content server assigns the update (O4).
    pub fn on_replicated(mut self, server: &Fqdn, now: Timestamp) -> Result<AnyOp, Refused<Self>> {
        if let Err(e) = self.core.mark_replicated(server) {
            return Err(self.refuse(e));
        }
        if self.replication_complete() {
            return Ok(AnyOp::Assigned(self.into_state(Assigned {
                at: now,
                manual: false,
            })));
        }
        Ok(AnyOp::Replicating(self))
    }

    /// "Assign now" (O4): before replication completes; refused inside the cut-off (O7).
    pub fn assign_now(self, now: Timestamp) -> Result<Op<Assigned>, Refused<Self>> {
        if let Err(e) = self.core.outside_cutoff(now, "assign now") {
            return Err(self.refuse(e));
        }
        Ok(self.into_state(Assigned {
            at: now,
            manual: true,
        }))
    }
}

impl OpCore {
    fn mark_replicated(&mut self, server: &Fqdn) -> Result<(), OpError> {
        match self.replication.get_mut(server) {
            Some(slot) => {
                *slot = Replication::Replicated;
                Ok(())
            }
            None => Err(OpError::NotInUpdate {
                name: server.to_string(),
            }),
        }
    }
}

impl Op<Assigned> {
    /// Content reached `server` after the update was assigned by hand (O3, O4).
    pub fn on_replicated(mut self, server: &Fqdn) -> Result<Self, Refused<Self>> {
        match self.core.mark_replicated(server) {
            Ok(()) => Ok(self),
            Err(e) => Err(self.refuse(e)),
        }
    }

    /// "Redeploy" (O5): the update goes again to failed members; refused inside the cut-off
    /// (O7) unless the activation is "immediate" or the gate holds the operation (B2: the
    /// administrator decides then). The operation itself does not change.
    pub fn redeploy(self, now: Timestamp) -> Result<Self, Refused<Self>> {
        if self.held() {
            return Ok(self);
        }
        match self.core.outside_cutoff(now, "redeploy") {
            Ok(()) => Ok(self),
            Err(e) => Err(self.refuse(e)),
        }
    }

    /// O12: every Primary Server's future certificate exists (recorded once).
    pub fn legacy_point_reached(mut self, now: Timestamp) -> Self {
        self.core.note_legacy_point(now);
        self
    }
}

/// What [`Op::handle_timeout`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Timeout<S> {
    /// Nothing was due, or the operation was held already: unchanged.
    Idle(Op<S>),
    /// The gate was not met: activation moved (to the operation's new activation time), the
    /// postponement and its notice recorded (B2).
    Postponed(Op<S>),
    /// The deadline came with the gate unmet and the policy is to hold: alarm raised (B2).
    Held(Op<S>),
    /// Activated (O8).
    Activated(Op<Activated>),
}

impl<S: BeforeActivation> Timeout<S>
where
    Op<S>: Into<AnyOp>,
{
    /// What happened, without the operation.
    pub fn outcome(&self) -> TimeoutOutcome {
        match self {
            Timeout::Idle(_) => TimeoutOutcome::Idle,
            Timeout::Postponed(op) => TimeoutOutcome::Postponed(op.activation.at),
            Timeout::Held(_) => TimeoutOutcome::Held,
            Timeout::Activated(_) => TimeoutOutcome::Activated,
        }
    }

    /// The operation, whatever happened.
    pub fn into_any(self) -> AnyOp {
        match self {
            Timeout::Idle(op) | Timeout::Postponed(op) | Timeout::Held(op) => op.into(),
            Timeout::Activated(op) => AnyOp::Activated(op),
        }
    }
}

impl<S: BeforeActivation> Op<S> {
    /// When the machine next wants to run: the activation time (O8).
    pub fn poll_timeout(&self) -> Timestamp {
        self.activation.at
    }

    /// Cancel (O7): allowed strictly before ten minutes ahead of activation, and while the
    /// gate holds the operation at its deadline (B2).
    pub fn cancel(self, now: Timestamp) -> Result<Op<Cancelled>, Refused<Self>> {
        if !self.held() && self.inside_cutoff(now) {
            let error = OpError::CancelCutoff {
                deadline: self.cancel_deadline(),
                activation: self.activation.at,
            };
            return Err(self.refuse(error));
        }
        Ok(self.into_state(Cancelled { at: now }))
    }

    /// An action on the update's certificates (an external CA's CSRs and certificates)
    /// allowed until the cut-off (O7); the operation does not change.
    pub fn until_cutoff(self, now: Timestamp, event: &'static str) -> Result<Self, Refused<Self>> {
        match self.core.outside_cutoff(now, event) {
            Ok(()) => Ok(self),
            Err(e) => Err(self.refuse(e)),
        }
    }

    /// Runs scheduled work at `now` (O8, B2), quinn-proto style: a spurious call (too early)
    /// changes nothing. Once `now >= activation` the operation activates, unless it has a gate
    /// and `verdict`, the gate's judgement of the coverage now, is not met: then activation
    /// moves by the gate's step (whole steps from the current activation time, to the first
    /// one after `now`), never past the deadline, and the cancel cut-off (O7) moves with it.
    /// At the deadline the policy activates (reporting the stranded) or holds and raises an
    /// alarm. Each postponement and the alarm are recorded with a notice. `stranded` counts the
    /// members that would be stranded by activating now.
    pub fn handle_timeout(
        mut self,
        now: Timestamp,
        verdict: Option<&Verdict>,
        stranded: u64,
    ) -> Timeout<S> {
        if now < self.activation.at {
            return Timeout::Idle(self);
        }
        let unmet = match (&self.gate, verdict) {
            (Some(_), Some(v)) if !v.met => Some(v.clone()),
            _ => None,
        };
        let activate = |op: Self| {
            Timeout::Activated(op.into_state(Activated {
                at: now,
                stranded_at_activation: stranded,
            }))
        };
        let Some(verdict) = unmet.filter(|_| self.gate.is_some()) else {
            return activate(self);
        };
        let Some(gate) = self.core.gate.as_mut() else {
            return activate(self);
        };
        let from = self.core.activation.at;
        let reason = verdict.to_string();
        if now >= gate.deadline {
            return match gate.gate.at_deadline {
                AtDeadline::Activate => {
                    gate.activated_at_deadline = true;
                    self.core.notices.push(Notice::ActivatedAtDeadline {
                        at: now,
                        stranded,
                        reason,
                    });
                    activate(self)
                }
                AtDeadline::Hold if gate.held_since.is_some() => Timeout::Idle(self),
                AtDeadline::Hold => {
                    gate.held_since = Some(now);
                    let deadline = gate.deadline;
                    self.core.notices.push(Notice::GateAlarm {
                        at: now,
                        deadline,
                        reason,
                    });
                    Timeout::Held(self)
                }
            };
        }
        let step = gate.gate.step_secs.max(1);
        let late = u64::try_from(now.unix() - from.unix()).unwrap_or(0);
        let steps = late / step + 1;
        let to = from
            .plus(Duration::from_secs(steps.saturating_mul(step)))
            .min(gate.deadline);
        gate.postponements.push(gate::Postponement {
            at: now,
            from,
            to,
            verdict,
        });
        self.core.activation.at = to;
        self.core.notices.push(Notice::ActivationPostponed {
            at: now,
            from,
            to,
            reason,
        });
        Timeout::Postponed(self)
    }
}

impl Op<Activated> {
    /// Baseline (O10): finishes the update and the recovery bundle goes away, so it is
    /// refused while members are `stranded`, unless `force`d.
    pub fn baseline(
        self,
        now: Timestamp,
        stranded: &[String],
        force: bool,
    ) -> Result<Op<Baselined>, Refused<Self>> {
        if let Some(first) = stranded.first().filter(|_| !force) {
            let error = OpError::StrandedBaseline {
                count: stranded.len(),
                first: first.clone(),
            };
            return Err(self.refuse(error));
        }
        Ok(self.into_state(Baselined {
            at: now,
            forced: force && !stranded.is_empty(),
            stranded: stranded.len() as u64,
        }))
    }

    /// O11: the CA changed at activation; what the old CA signed must be signed again.
    pub fn resign_required(mut self, old_ca_sha256: String, new_ca_sha256: String) -> Self {
        let at = self.state.at;
        self.core.notices.push(Notice::ResignRequired {
            old_ca_sha256,
            new_ca_sha256,
            at,
        });
        self
    }

    /// O12: every Primary Server's future certificate exists (recorded once).
    pub fn legacy_point_reached(mut self, now: Timestamp) -> Self {
        self.core.note_legacy_point(now);
        self
    }
}

/// An operation in any state: what a persisted [`Operation`] loads into, and the entry point
/// that feeds an event to whatever state it is in (a wrong state is refused with
/// [`OpError::WrongState`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyOp {
    /// Replicating the update's content (O3).
    Replicating(Op<Replicating>),
    /// Assigned to members, waiting for activation (O4).
    Assigned(Op<Assigned>),
    /// Activated (O8).
    Activated(Op<Activated>),
    /// Cancelled (O7).
    Cancelled(Op<Cancelled>),
    /// Baselined (O10).
    Baselined(Op<Baselined>),
}

/// A running operation (until cancelled or baselined, O1): the states in which members can be
/// taken out of the update ("ignore device", O5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveOp {
    /// Replicating.
    Replicating(Op<Replicating>),
    /// Assigned.
    Assigned(Op<Assigned>),
    /// Activated.
    Activated(Op<Activated>),
}

macro_rules! any_from {
    ($($state:ident),*) => {$(
        impl From<Op<$state>> for AnyOp {
            fn from(op: Op<$state>) -> AnyOp {
                AnyOp::$state(op)
            }
        }
    )*};
}
any_from!(Replicating, Assigned, Activated, Cancelled, Baselined);

impl From<LiveOp> for AnyOp {
    fn from(op: LiveOp) -> AnyOp {
        match op {
            LiveOp::Replicating(o) => AnyOp::Replicating(o),
            LiveOp::Assigned(o) => AnyOp::Assigned(o),
            LiveOp::Activated(o) => AnyOp::Activated(o),
        }
    }
}

impl LiveOp {
    /// The data shared by every state.
    pub fn core(&self) -> &OpCore {
        match self {
            LiveOp::Replicating(o) => o.core(),
            LiveOp::Assigned(o) => o.core(),
            LiveOp::Activated(o) => o.core(),
        }
    }
}

impl AnyOp {
    /// The data shared by every state.
    pub fn core(&self) -> &OpCore {
        match self {
            AnyOp::Replicating(o) => o.core(),
            AnyOp::Assigned(o) => o.core(),
            AnyOp::Activated(o) => o.core(),
            AnyOp::Cancelled(o) => o.core(),
            AnyOp::Baselined(o) => o.core(),
        }
    }

    /// `replicating`, `assigned`, `activated`, `cancelled` or `baselined`.
    pub fn name(&self) -> &'static str {
        match self {
            AnyOp::Replicating(o) => o.name(),
            AnyOp::Assigned(o) => o.name(),
            AnyOp::Activated(o) => o.name(),
            AnyOp::Cancelled(o) => o.name(),
            AnyOp::Baselined(o) => o.name(),
        }
    }

    /// Whether the operation still blocks others (O1): until cancelled or baselined.
    pub fn is_running(&self) -> bool {
        !matches!(self, AnyOp::Cancelled(_) | AnyOp::Baselined(_))
    }

    fn wrong_state(self, event: &'static str) -> Refused<AnyOp> {
        let state = self.name();
        Refused {
            op: self,
            error: OpError::WrongState { state, event },
        }
    }

    /// When the machine next wants to run: the activation time, until activated.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self {
            AnyOp::Replicating(o) => Some(o.poll_timeout()),
            AnyOp::Assigned(o) => Some(o.poll_timeout()),
            _ => None,
        }
    }

    /// [`Op::handle_timeout`] in whatever state the operation is: a no-op after activation.
    pub fn handle_timeout(
        self,
        now: Timestamp,
        verdict: Option<&Verdict>,
        stranded: u64,
    ) -> (AnyOp, TimeoutOutcome) {
        match self {
            AnyOp::Replicating(o) => {
                let t = o.handle_timeout(now, verdict, stranded);
                let outcome = t.outcome();
                (t.into_any(), outcome)
            }
            AnyOp::Assigned(o) => {
                let t = o.handle_timeout(now, verdict, stranded);
                let outcome = t.outcome();
                (t.into_any(), outcome)
            }
            other => (other, TimeoutOutcome::Idle),
        }
    }

    /// [`Op::on_replicated`], before activation.
    pub fn on_replicated(self, server: &Fqdn, now: Timestamp) -> Result<AnyOp, Refused<AnyOp>> {
        match self {
            AnyOp::Replicating(o) => o.on_replicated(server, now).map_err(|r| r.map(AnyOp::from)),
            AnyOp::Assigned(o) => o
                .on_replicated(server)
                .map(AnyOp::from)
                .map_err(|r| r.map(AnyOp::from)),
            other => Err(other.wrong_state("record replication")),
        }
    }

    /// [`Op::assign_now`], while replicating.
    pub fn assign_now(self, now: Timestamp) -> Result<Op<Assigned>, Refused<AnyOp>> {
        match self {
            AnyOp::Replicating(o) => o.assign_now(now).map_err(|r| r.map(AnyOp::from)),
            other => Err(other.wrong_state("assign now")),
        }
    }

    /// [`Op::redeploy`], while assigned.
    pub fn redeploy(self, now: Timestamp) -> Result<Op<Assigned>, Refused<AnyOp>> {
        match self {
            AnyOp::Assigned(o) => o.redeploy(now).map_err(|r| r.map(AnyOp::from)),
            other => Err(other.wrong_state("redeploy")),
        }
    }

    /// [`Op::cancel`], before activation.
    pub fn cancel(self, now: Timestamp) -> Result<Op<Cancelled>, Refused<AnyOp>> {
        match self {
            AnyOp::Replicating(o) => o.cancel(now).map_err(|r| r.map(AnyOp::from)),
            AnyOp::Assigned(o) => o.cancel(now).map_err(|r| r.map(AnyOp::from)),
            other => Err(other.wrong_state("cancel")),
        }
    }

    /// [`Op::until_cutoff`], before activation.
    pub fn until_cutoff(
        self,
        now: Timestamp,
        event: &'static str,
    ) -> Result<AnyOp, Refused<AnyOp>> {
        match self {
            AnyOp::Replicating(o) => o
                .until_cutoff(now, event)
                .map(AnyOp::from)
                .map_err(|r| r.map(AnyOp::from)),
            AnyOp::Assigned(o) => o
                .until_cutoff(now, event)
                .map(AnyOp::from)
                .map_err(|r| r.map(AnyOp::from)),
            other => Err(other.wrong_state(event)),
        }
    }

    /// The running operation, for an `event` allowed any time while it runs ("ignore
    /// device", O5, also inside the cut-off, O7).
    pub fn live(self, event: &'static str) -> Result<LiveOp, Refused<AnyOp>> {
        match self {
            AnyOp::Replicating(o) => Ok(LiveOp::Replicating(o)),
            AnyOp::Assigned(o) => Ok(LiveOp::Assigned(o)),
            AnyOp::Activated(o) => Ok(LiveOp::Activated(o)),
            other => Err(other.wrong_state(event)),
        }
    }

    /// [`Op::baseline`], once activated.
    pub fn baseline(
        self,
        now: Timestamp,
        stranded: &[String],
        force: bool,
    ) -> Result<Op<Baselined>, Refused<AnyOp>> {
        match self {
            AnyOp::Activated(o) => o
                .baseline(now, stranded, force)
                .map_err(|r| r.map(AnyOp::from)),
            other => Err(other.wrong_state("baseline")),
        }
    }

    /// O12's point, once the update is assigned (recorded once); other states are unchanged.
    pub fn legacy_point_reached(self, now: Timestamp) -> AnyOp {
        match self {
            AnyOp::Assigned(o) => o.legacy_point_reached(now).into(),
            AnyOp::Activated(o) => o.legacy_point_reached(now).into(),
            other => other,
        }
    }
}

impl From<Operation> for AnyOp {
    fn from(r: Operation) -> AnyOp {
        let core = Box::new(OpCore {
            v: r.v,
            id: r.id,
            kind: r.kind,
            update_name: r.update_name,
            activation: r.activation,
            started_at: r.started_at,
            ca_server: r.ca_server,
            replication: r.replication,
            targets: r.targets,
            notices: r.notices,
            serve_bridge: r.serve_bridge,
            gate: r.gate,
            acknowledged: r.acknowledged,
        });
        match r.state {
            OpState::Replicating(state) => AnyOp::Replicating(Op { core, state }),
            OpState::Assigned(state) => AnyOp::Assigned(Op { core, state }),
            OpState::Activated(state) => AnyOp::Activated(Op { core, state }),
            OpState::Cancelled(state) => AnyOp::Cancelled(Op { core, state }),
            OpState::Baselined(state) => AnyOp::Baselined(Op { core, state }),
        }
    }
}

impl<S: State> From<Op<S>> for Operation {
    fn from(op: Op<S>) -> Operation {
        let Op { core, state } = op;
        let core = *core;
        Operation {
            v: core.v,
            id: core.id,
            kind: core.kind,
            update_name: core.update_name,
            activation: core.activation,
            started_at: core.started_at,
            ca_server: core.ca_server,
            replication: core.replication,
            targets: core.targets,
            notices: core.notices,
            serve_bridge: core.serve_bridge,
            gate: core.gate,
            acknowledged: core.acknowledged,
            state: state.into_record(),
        }
    }
}

impl From<AnyOp> for Operation {
    fn from(op: AnyOp) -> Operation {
        match op {
            AnyOp::Replicating(o) => o.into(),
            AnyOp::Assigned(o) => o.into(),
            AnyOp::Activated(o) => o.into(),
            AnyOp::Cancelled(o) => o.into(),
            AnyOp::Baselined(o) => o.into(),
        }
    }
}

impl From<LiveOp> for Operation {
    fn from(op: LiveOp) -> Operation {
        AnyOp::from(op).into()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(super) mod tests {
    use super::*;
    use crate::key::KeySpec;
    use crate::ops::gate::{Count, Coverage, ServerQuota};

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn fq(s: &str) -> Fqdn {
        s.parse().unwrap()
    }

    /// A Server Remint of ps1 activating at `activation`, with two content servers.
    pub(in crate::ops) fn op(activation: &str) -> Op<Replicating> {
        let act = Activation {
            at: t(activation),
            immediate: false,
        };
        Op::new(
            1,
            OpKind::ServerRemint {
                servers: vec![fq("ps1.example")],
                common_name: None,
                key: KeySpec::P256,
                include_dns: false,
                csr: None,
            },
            "u".into(),
            act,
            t("2027-01-01T00:00:00Z"),
            fq("ps1.example"),
            [fq("ps1.example"), fq("content.example")],
            1,
        )
    }

    fn assigned(activation: &str) -> Op<Assigned> {
        op(activation)
            .assign_now(t("2027-01-02T00:00:00Z"))
            .unwrap()
    }

    fn activated(activation: &str, at: &str) -> Op<Activated> {
        match op(activation).handle_timeout(t(at), None, 1) {
            Timeout::Activated(a) => a,
            other => panic!("not activated: {other:?}"),
        }
    }

    fn gate(at_deadline: AtDeadline) -> Gate {
        Gate {
            min_devices_percent: 80,
            servers: ServerQuota::All,
            step_secs: 3600,
            deadline_margin_secs: 0,
            at_deadline,
        }
    }

    /// A verdict of `g` on `applied` of 10 devices.
    fn verdict(g: &Gate, applied: u64) -> Verdict {
        g.verdict(&Coverage {
            devices: Count { applied, total: 10 },
            ..Coverage::default()
        })
    }

    #[test]
    fn replication_completes_then_assigns_automatically_o3_o4() {
        let now = t("2027-01-02T00:00:00Z");
        let o = op("2027-02-01T00:00:00Z");
        let AnyOp::Replicating(o) = o.on_replicated(&fq("ps1.example"), now).unwrap() else {
            panic!("one of two content servers does not complete replication");
        };
        let r = o
            .clone()
            .on_replicated(&fq("other.example"), now)
            .unwrap_err();
        assert_eq!(r.op, o, "a refusal gives the operation back unchanged");
        assert!(
            matches!(r.error, OpError::NotInUpdate { .. }),
            "{}",
            r.error
        );
        let AnyOp::Assigned(a) = o.on_replicated(&fq("content.example"), now).unwrap() else {
            panic!("the last content server assigns the update");
        };
        assert_eq!(
            a.state(),
            &Assigned {
                at: now,
                manual: false
            }
        );
        assert!(a.replication_complete());
    }

    #[test]
    fn nothing_to_replicate_is_assigned_at_start_o4() {
        let now = t("2027-01-01T00:00:00Z");
        let mut o = op("2027-02-01T00:00:00Z");
        assert!(matches!(o.clone().started(now), AnyOp::Replicating(_)));
        o.core.replication.clear();
        assert!(matches!(
            o.started(now),
            AnyOp::Assigned(Op {
                state: Assigned { manual: false, .. },
                ..
            })
        ));
    }

    #[test]
    fn assign_now_before_the_cutoff_only_o4_o7() {
        let o = op("2027-02-01T00:00:00Z");
        let r = o.clone().assign_now(t("2027-01-31T23:50:00Z")).unwrap_err();
        assert!(matches!(
            r.error,
            OpError::InsideCutoff {
                event: "assign now",
                ..
            }
        ));
        assert_eq!(r.op, o);
        let a = o.assign_now(t("2027-01-31T23:49:59Z")).unwrap();
        assert!(a.state().manual);
        // Replication after a manual assignment is still recorded (O3).
        let a = a.on_replicated(&fq("content.example")).unwrap();
        assert_eq!(
            a.replication[&fq("content.example")],
            Replication::Replicated
        );
        // Through the loaded form: assigned already is a wrong state.
        let e = AnyOp::from(a)
            .assign_now(t("2027-01-02T00:00:00Z"))
            .unwrap_err();
        assert_eq!(
            e.error.to_string(),
            "cannot assign now while the operation is assigned"
        );
    }

    #[test]
    fn cancel_cutoff_is_exactly_ten_minutes_o7() {
        let o = op("2027-02-01T00:00:00Z");
        let c = o.clone().cancel(t("2027-01-31T23:49:59Z")).unwrap();
        assert_eq!(
            c.state(),
            &Cancelled {
                at: t("2027-01-31T23:49:59Z")
            }
        );
        let r = o.cancel(t("2027-01-31T23:50:00Z")).unwrap_err();
        assert!(
            matches!(r.error, OpError::CancelCutoff { .. }),
            "{}",
            r.error
        );
        let a = assigned("2027-02-01T00:00:00Z");
        assert!(a.clone().cancel(t("2027-01-31T23:49:59Z")).is_ok());
        assert!(a.cancel(t("2027-01-31T23:50:00Z")).is_err());
        // After activation there is no `cancel` on `Op<Activated>`; through the loaded form
        // it is a wrong state.
        let act = activated("2027-02-01T00:00:00Z", "2027-02-01T00:00:00Z");
        let e = AnyOp::from(act)
            .cancel(t("2027-02-02T00:00:00Z"))
            .unwrap_err();
        assert_eq!(
            e.error.to_string(),
            "cannot cancel while the operation is activated"
        );
    }

    #[test]
    fn redeploy_only_while_assigned_and_before_the_cutoff_o5_o7() {
        let a = assigned("2027-02-01T00:00:00Z");
        assert_eq!(a.clone().redeploy(t("2027-01-31T23:49:59Z")).unwrap(), a);
        let r = a.redeploy(t("2027-01-31T23:50:00Z")).unwrap_err();
        assert!(matches!(
            r.error,
            OpError::InsideCutoff {
                event: "redeploy",
                ..
            }
        ));
        let e = AnyOp::from(op("2027-02-01T00:00:00Z"))
            .redeploy(t("2027-01-02T00:00:00Z"))
            .unwrap_err();
        assert_eq!(
            e.error,
            OpError::WrongState {
                state: "replicating",
                event: "redeploy"
            }
        );
    }

    #[test]
    fn csr_actions_until_the_cutoff_and_not_after_activation_o7() {
        let o = AnyOp::from(op("2027-02-01T00:00:00Z"));
        let o = o
            .until_cutoff(t("2027-01-31T23:49:59Z"), "import a certificate")
            .unwrap();
        let r = o.until_cutoff(t("2027-01-31T23:50:00Z"), "import a certificate");
        assert!(matches!(
            r.unwrap_err().error,
            OpError::InsideCutoff {
                event: "import a certificate",
                ..
            }
        ));
        let act = AnyOp::from(activated("2027-02-01T00:00:00Z", "2027-02-01T00:00:00Z"));
        assert!(matches!(
            act.until_cutoff(t("2027-02-02T00:00:00Z"), "generate a CSR")
                .unwrap_err()
                .error,
            OpError::WrongState {
                state: "activated",
                ..
            }
        ));
    }

    #[test]
    fn ignore_while_running_only_o5() {
        let now = t("2027-02-02T00:00:00Z");
        assert!(
            AnyOp::from(op("2027-02-01T00:00:00Z"))
                .live("ignore a device")
                .is_ok()
        );
        let act = activated("2027-02-01T00:00:00Z", "2027-02-01T00:00:00Z");
        assert!(AnyOp::from(act.clone()).live("ignore a device").is_ok());
        let done = AnyOp::from(act.baseline(now, &[], false).unwrap());
        assert!(!done.is_running());
        assert_eq!(
            done.live("ignore a device").unwrap_err().error,
            OpError::WrongState {
                state: "baselined",
                event: "ignore a device"
            }
        );
        let cancelled = AnyOp::from(op("2027-02-01T00:00:00Z").cancel(now).unwrap_err().op);
        assert!(
            cancelled.live("ignore a device").is_ok(),
            "refused cancel: still running"
        );
    }

    #[test]
    fn activation_at_exactly_the_time_and_spurious_timeouts_o8() {
        let o = op("2027-02-01T00:00:00Z");
        assert_eq!(o.poll_timeout(), t("2027-02-01T00:00:00Z"));
        let Timeout::Idle(o) = o.handle_timeout(t("2027-01-31T23:59:59Z"), None, 0) else {
            panic!("too early: a spurious call changes nothing");
        };
        let Timeout::Activated(a) = o.handle_timeout(t("2027-02-01T00:00:00Z"), None, 3) else {
            panic!("activates at exactly the time");
        };
        assert_eq!(
            a.state(),
            &Activated {
                at: t("2027-02-01T00:00:00Z"),
                stranded_at_activation: 3
            }
        );
        let any = AnyOp::from(a);
        assert_eq!(any.poll_timeout(), None);
        let (after, outcome) = any
            .clone()
            .handle_timeout(t("2027-02-02T00:00:00Z"), None, 0);
        assert_eq!((after, outcome), (any, TimeoutOutcome::Idle));
    }

    #[test]
    fn unmet_gate_postpones_by_whole_steps_and_moves_the_cutoff_b2() {
        let g = gate(AtDeadline::Hold);
        let o = op("2027-02-01T00:00:00Z")
            .with_gate(g, t("2027-03-01T00:00:00Z"))
            .unwrap();
        // Late by 90 minutes: two whole steps from the activation time.
        let t1 = t("2027-02-01T01:30:00Z");
        let Timeout::Postponed(o) = o.handle_timeout(t1, Some(&verdict(&g, 5)), 5) else {
            panic!("an unmet gate postpones");
        };
        assert_eq!(o.activation.at, t("2027-02-01T02:00:00Z"));
        let gs = o.gate.as_ref().unwrap();
        assert_eq!(gs.requested_activation, t("2027-02-01T00:00:00Z"));
        assert_eq!(gs.postponements.len(), 1);
        assert!(matches!(
            o.notices.last(),
            Some(Notice::ActivationPostponed { .. })
        ));
        // O7: the cut-off moved with it, so a cancel is allowed again.
        assert!(o.clone().cancel(t("2027-02-01T01:49:59Z")).is_ok());
        // A met gate activates.
        let Timeout::Activated(_) =
            o.handle_timeout(t("2027-02-01T02:00:00Z"), Some(&verdict(&g, 8)), 2)
        else {
            panic!("a met gate activates");
        };
        // Without a gate, a verdict is ignored.
        let o = op("2027-02-01T00:00:00Z");
        assert!(matches!(
            o.handle_timeout(t("2027-02-01T00:00:00Z"), Some(&verdict(&g, 0)), 10),
            Timeout::Activated(_)
        ));
    }

    #[test]
    fn postponement_never_passes_the_deadline_b2() {
        let g = gate(AtDeadline::Hold);
        let o = op("2027-02-01T00:00:00Z")
            .with_gate(g, t("2027-02-01T00:30:00Z"))
            .unwrap();
        let Timeout::Postponed(o) =
            o.handle_timeout(t("2027-02-01T00:00:00Z"), Some(&verdict(&g, 0)), 10)
        else {
            panic!("postponed");
        };
        assert_eq!(
            o.activation.at,
            t("2027-02-01T00:30:00Z"),
            "capped at the deadline"
        );
    }

    #[test]
    fn deadline_holds_with_an_alarm_once_then_cancel_is_allowed_b2() {
        let g = gate(AtDeadline::Hold);
        let o = assigned("2027-02-01T00:00:00Z").op_with_gate(g, t("2027-02-01T00:00:01Z"));
        let at = t("2027-02-01T00:00:01Z");
        let Timeout::Held(o) = o.handle_timeout(at, Some(&verdict(&g, 0)), 10) else {
            panic!("held at the deadline");
        };
        assert!(o.held());
        assert!(matches!(o.notices.last(), Some(Notice::GateAlarm { .. })));
        let notices = o.notices.len();
        let later = t("2027-02-02T00:00:00Z");
        let Timeout::Idle(o) = o.handle_timeout(later, Some(&verdict(&g, 0)), 10) else {
            panic!("held already: nothing more");
        };
        assert_eq!(o.notices.len(), notices, "one alarm");
        // Held: the administrator may cancel or redeploy, past the cut-off.
        assert!(o.clone().redeploy(later).is_ok());
        assert!(o.clone().cancel(later).is_ok());
        // The gate met: activation follows.
        assert!(matches!(
            o.handle_timeout(later, Some(&verdict(&g, 10)), 0),
            Timeout::Activated(_)
        ));
    }

    #[test]
    fn deadline_activates_and_reports_the_stranded_b2() {
        let g = gate(AtDeadline::Activate);
        let o = op("2027-02-01T00:00:00Z")
            .with_gate(g, t("2027-02-01T00:00:01Z"))
            .unwrap();
        let at = t("2027-02-01T00:00:01Z");
        let Timeout::Activated(a) = o.handle_timeout(at, Some(&verdict(&g, 3)), 7) else {
            panic!("activated at the deadline");
        };
        assert!(a.gate.as_ref().unwrap().activated_at_deadline);
        assert!(matches!(
            a.notices.last(),
            Some(Notice::ActivatedAtDeadline { stranded: 7, .. })
        ));
        assert_eq!(a.state().stranded_at_activation, 7);
    }

    #[test]
    fn gate_refusals_give_the_operation_back_b2() {
        let o = op("2027-02-01T00:00:00Z");
        // The deadline (CA expiry minus margin) must come after activation.
        let r = o
            .clone()
            .with_gate(gate(AtDeadline::Hold), t("2027-02-01T00:00:00Z"))
            .unwrap_err();
        assert!(
            matches!(r.error, OpError::GateDeadline { .. }),
            "{}",
            r.error
        );
        assert_eq!(r.op, o);
        let mut bad = gate(AtDeadline::Hold);
        bad.step_secs = 1;
        assert!(matches!(
            o.with_gate(bad, t("2028-01-01T00:00:00Z"))
                .unwrap_err()
                .error,
            OpError::Gate(_)
        ));
    }

    #[test]
    fn baseline_refused_while_stranded_unless_forced_o10() {
        let now = t("2027-02-02T00:00:00Z");
        let e = AnyOp::from(op("2027-02-01T00:00:00Z"))
            .baseline(now, &[], false)
            .unwrap_err();
        assert_eq!(
            e.error.to_string(),
            "cannot baseline while the operation is replicating"
        );
        let a = activated("2027-02-01T00:00:00Z", "2027-02-01T00:00:00Z");
        let stranded = vec!["dev-1".to_string()];
        let r = a.clone().baseline(now, &stranded, false).unwrap_err();
        // Library words, no command-line flag (issue 9 item 9).
        assert!(
            r.error.to_string().contains("force the baseline"),
            "{}",
            r.error
        );
        assert_eq!(r.op, a);
        let b = a.clone().baseline(now, &stranded, true).unwrap();
        assert_eq!(
            b.state(),
            &Baselined {
                at: now,
                forced: true,
                stranded: 1
            }
        );
        let b = a.baseline(now, &[], true).unwrap();
        assert!(!b.state().forced, "nothing stranded: not forced");
    }

    #[test]
    fn notices_of_activation_and_the_legacy_point_o11_o12() {
        let a = activated("2027-02-01T00:00:00Z", "2027-02-01T00:00:05Z")
            .resign_required("old".into(), "new".into());
        assert!(matches!(
            a.notices.last(),
            Some(Notice::ResignRequired { at, .. }) if *at == t("2027-02-01T00:00:05Z")
        ));
        let now = t("2027-01-03T00:00:00Z");
        let o = assigned("2027-02-01T00:00:00Z")
            .legacy_point_reached(now)
            .legacy_point_reached(t("2027-01-04T00:00:00Z"));
        let points: Vec<_> = o
            .notices
            .iter()
            .filter(|n| matches!(n, Notice::LegacyRefreshPoint { .. }))
            .collect();
        assert_eq!(
            points,
            [&Notice::LegacyRefreshPoint { at: now }],
            "recorded once"
        );
        let r = AnyOp::from(op("2027-02-01T00:00:00Z")).legacy_point_reached(now);
        assert!(r.core().notices.is_empty(), "not before assignment");
    }

    #[test]
    fn replication_is_refused_for_unknown_servers_and_after_activation_o3() {
        let now = t("2027-01-02T00:00:00Z");
        let a = assigned("2027-02-01T00:00:00Z");
        let r = a.clone().on_replicated(&fq("other.example")).unwrap_err();
        assert!(
            matches!(r.error, OpError::NotInUpdate { .. }),
            "{}",
            r.error
        );
        assert_eq!(r.op, a);
        let act = AnyOp::from(activated("2027-02-01T00:00:00Z", "2027-02-01T00:00:00Z"));
        let r = act
            .clone()
            .on_replicated(&fq("content.example"), now)
            .unwrap_err();
        assert_eq!(
            r.error,
            OpError::WrongState {
                state: "activated",
                event: "record replication"
            }
        );
        assert_eq!(r.op, act, "given back unchanged");
    }

    #[test]
    fn an_immediate_activation_has_no_cutoff_o2_o7() {
        let mut o = op("2027-02-01T00:00:00Z");
        o.core.activation.immediate = true;
        let late = t("2027-02-01T00:00:00Z");
        let o = o.until_cutoff(late, "generate a CSR").unwrap();
        let a = o.assign_now(late).unwrap();
        assert!(a.clone().redeploy(late).is_ok());
        // Cancel keeps its cut-off: an immediate operation activates at once anyway.
        assert!(a.cancel(late).is_err());
    }

    #[test]
    fn serving_a_bridge_needs_one_b1() {
        let o = op("2027-02-01T00:00:00Z").serving_bridge(true);
        assert!(!o.serve_bridge, "a Server Remint has no bridge");
    }

    impl Op<Assigned> {
        /// Test helper: a gate set on an assigned operation (the service sets it at start).
        fn op_with_gate(self, g: Gate, ca_not_after: Timestamp) -> Self {
            let deadline = g.check_for(&self.activation, ca_not_after).unwrap();
            let mut o = self;
            o.core.gate = Some(GateState {
                gate: g,
                deadline,
                requested_activation: o.activation.at,
                postponements: Vec::new(),
                held_since: None,
                activated_at_deadline: false,
            });
            o
        }
    }
}
