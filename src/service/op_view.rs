//! The operation's views (V2, O5, B2, B3): `op show`, `plan`, and the statuses the server and
//! device lists show. Read only: nothing here commits.

use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};

use super::{Result, ZoneService, decode};
use crate::cert::CertificateDer;
use crate::clock::{Clock, Timestamp};
use crate::ops::update::{self, MemberStatus, MemberUpdate};
use crate::ops::{
    AnyOp, Coverage, GateState, NewCa, Notice, OpError, OpKind, OpState, Operation, Replication,
    TimeoutOutcome, Verdict,
};
use crate::store::Storage;
use crate::transport::Transport;
use crate::view::{
    CertificateStatus, OperationKind, OperationState, ReplicationStatus, UpdateStatus,
};
use crate::zone::{Fqdn, ServerRole};

/// One replication row of `op show` (O3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReplicationView {
    /// The content server.
    pub server: String,
    /// `pending` or `replicated`.
    pub status: ReplicationStatus,
}

/// One device row of `op show` (O5): a managed device or a Content Satellite, which get the
/// update's trust but no server certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MemberView {
    /// The member.
    pub name: String,
    /// Its update status.
    pub status: UpdateStatus,
    /// A failure's reason.
    pub reason: Option<String>,
}

/// One server row of `op show` (O5, SR4): a server that gets a new certificate from the
/// operation (Primary Servers and Authentication Satellites in scope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ServerCertView {
    /// The server.
    pub fqdn: String,
    /// Its role.
    pub role: ServerRole,
    /// Its update status.
    pub status: UpdateStatus,
    /// A failure's reason.
    pub reason: Option<String>,
    /// SR4: `pending`, `new certificate created`, `creating certificate failed`, `CSR
    /// generated`, `CSR generation failed`, `new certificate uploaded`.
    pub certificate_status: CertificateStatus,
}

/// The running (or last) operation, as `op show` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct OpView {
    /// Operation number.
    pub id: u64,
    /// Which operation.
    pub kind: OperationKind,
    /// Where it is.
    pub state: OperationState,
    /// Activation time.
    pub activation: Timestamp,
    /// Whether activation was "immediate".
    pub immediate: bool,
    /// Cancel is possible strictly before this (O7); `None` for an "immediate" activation,
    /// which can never be cancelled.
    pub cancel_deadline: Option<Timestamp>,
    /// Whether a cancel would be accepted now (O7: the state allows it and the cut-off has not
    /// passed, or B2's gate holds the operation).
    pub cancellable: bool,
    /// The system update's name.
    pub update_name: String,
    /// When it started.
    pub started_at: Timestamp,
    /// Replication per content server (O3).
    pub replication: Vec<ReplicationView>,
    /// Update status per device: managed devices and Content Satellites (O5).
    pub devices: Vec<MemberView>,
    /// Update and certificate status per server that gets a new certificate (O5, SR4).
    pub servers: Vec<ServerCertView>,
    /// Where the recovery bundle can be had (O6).
    pub recovery_available_on: Vec<String>,
    /// Members (servers and devices) stranded by activation and not yet recovered (O8).
    pub stranded: Vec<String>,
    /// Events for the embedding application (O11, O12, B2).
    pub notices: Vec<Notice>,
    /// B2: the coverage gate, what it has done, and its verdict now.
    pub gate: Option<GateView>,
}

impl OpView {
    /// Every member's name and update status, servers first.
    pub fn members(&self) -> impl Iterator<Item = (&str, UpdateStatus)> {
        self.servers
            .iter()
            .map(|s| (s.fqdn.as_str(), s.status))
            .chain(self.devices.iter().map(|d| (d.name.as_str(), d.status)))
    }
}

/// B2: a gate as `op show` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GateView {
    /// Settings, deadline, postponements, hold.
    #[serde(flatten)]
    pub state: GateState,
    /// The gate's verdict on the coverage now.
    pub verdict_now: Verdict,
}

/// B3 with B2: what the gate does at a plan's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum GateOutcome {
    /// Activation is not due by then.
    #[serde(rename = "not due")]
    NotDue,
    /// The gate is met: activation happens.
    #[serde(rename = "activates")]
    Activates,
    /// The gate is not met: activation is postponed.
    #[serde(rename = "postponed")]
    Postponed,
    /// The deadline is reached and the gate's policy activates anyway.
    #[serde(rename = "activates at the deadline")]
    ActivatesAtDeadline,
    /// The deadline is reached and the gate's policy holds the operation.
    #[serde(rename = "held at the deadline")]
    HeldAtDeadline,
    /// The operation is held already.
    #[serde(rename = "held")]
    Held,
}

impl GateOutcome {
    /// `not due`, `activates`, `postponed`, `activates at the deadline`, `held at the
    /// deadline`, `held`.
    pub fn text(self) -> &'static str {
        match self {
            GateOutcome::NotDue => "not due",
            GateOutcome::Activates => "activates",
            GateOutcome::Postponed => "postponed",
            GateOutcome::ActivatesAtDeadline => "activates at the deadline",
            GateOutcome::HeldAtDeadline => "held at the deadline",
            GateOutcome::Held => "held",
        }
    }
}

crate::view::eq_name!(GateOutcome => text);

impl std::fmt::Display for GateOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

/// B3 with B2: what the gate would do at the plan's time, with the coverage as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PlanGate {
    /// The verdict.
    pub verdict: Verdict,
    /// What the gate does then.
    pub outcome: GateOutcome,
    /// The activation time after a postponement.
    pub postponed_to: Option<Timestamp>,
}

/// B3: what happens to one member if activation happened at a given time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PlanEntry {
    /// The member.
    pub name: String,
    /// Its update status now, as `op show` gives it.
    pub status: UpdateStatus,
    /// Whether it will still communicate after activation.
    pub communicates: bool,
    /// Why.
    pub reason: String,
}

/// B3's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Plan {
    /// The time asked about.
    pub at: Timestamp,
    /// Whether activation will have happened by then.
    pub activated_by_then: bool,
    /// Members that would be stranded, as `op show` lists them once activated.
    pub stranded: Vec<String>,
    /// B2: the gate's verdict for that time, when the operation has a gate.
    pub gate: Option<PlanGate>,
    /// Every member.
    pub members: Vec<PlanEntry>,
}

impl From<&OpKind> for OperationKind {
    fn from(kind: &OpKind) -> Self {
        match kind {
            OpKind::RemintCa { .. } => OperationKind::RemintCa,
            OpKind::ChangeCa {
                to: NewCa::Internal { .. },
                ..
            } => OperationKind::ChangeCaInternal,
            OpKind::ChangeCa {
                to: NewCa::External { .. },
                ..
            } => OperationKind::ChangeCaExternal,
            OpKind::ServerRemint { .. } => OperationKind::ServerRemint,
        }
    }
}

impl From<&OpState> for OperationState {
    fn from(state: &OpState) -> Self {
        match state {
            OpState::Replicating(_) => OperationState::Replicating,
            OpState::Assigned(_) => OperationState::Assigned,
            OpState::Activated(_) => OperationState::Activated,
            OpState::Cancelled(_) => OperationState::Cancelled,
            OpState::Baselined(_) => OperationState::Baselined,
        }
    }
}

/// Every member's update status in one operation, from [`ZoneService::update_statuses`].
#[derive(Debug)]
pub(crate) struct UpdateStatuses {
    /// The status of a member without an update record.
    default: UpdateStatus,
    /// The members whose record gives another status.
    other: HashMap<String, UpdateStatus>,
}

impl UpdateStatuses {
    /// Member `name`'s status.
    pub(crate) fn get(&self, name: &str) -> UpdateStatus {
        self.other.get(name).copied().unwrap_or(self.default)
    }
}

/// A member's status as views show it (O5, O8): before assignment `not assigned`; then its
/// update status; after activation `activated`, `stranded` (or `bridged`, B1) or `recovered`.
pub(crate) fn member_status(
    op: &Operation,
    u: Option<&MemberUpdate>,
    now: Timestamp,
) -> UpdateStatus {
    StatusContext::new(op, now).status(u.map(Progress::of).as_ref())
}

/// The fields of a member's update record that its status depends on: what a status filter
/// decodes of each record (the certificates, CSR and reason are skipped, not decoded).
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct Progress {
    status: MemberStatus,
    switched: bool,
    recovered: bool,
}

impl Progress {
    fn of(u: &MemberUpdate) -> Self {
        Progress {
            status: u.status,
            switched: u.switched,
            recovered: u.recovered,
        }
    }

    /// [`MemberUpdate::is_stranded`].
    fn is_stranded(&self) -> bool {
        !matches!(self.status, MemberStatus::Applied | MemberStatus::Ignored) && !self.recovered
    }
}

/// Whether members' statuses in `op` depend on their records: not before assignment, when
/// every member is `not assigned`.
fn statuses_from_records(op: &Operation) -> bool {
    op.is_assigned() || matches!(op.state, OpState::Baselined(_))
}

/// What a member's status depends on besides its record, worked out once per operation
/// (whether a bridge is served decodes certificates: not once per member of a 100,000-member
/// filter).
#[derive(Debug, Clone, Copy)]
struct StatusContext {
    from_records: bool,
    activated: bool,
    /// The status of a member that missed the update, after activation.
    missed: UpdateStatus,
}

impl StatusContext {
    fn new(op: &Operation, now: Timestamp) -> Self {
        let activated = matches!(op.state, OpState::Activated(_) | OpState::Baselined(_));
        StatusContext {
            from_records: statuses_from_records(op),
            activated,
            // B1: a member that missed the update but validates servers through the bridge.
            missed: match activated && op.bridged_at(now) {
                true => UpdateStatus::Bridged,
                false => UpdateStatus::Stranded,
            },
        }
    }

    /// [`member_status`] from a record's [`Progress`].
    fn status(&self, u: Option<&Progress>) -> UpdateStatus {
        let activated = self.activated;
        match u {
            _ if !self.from_records => UpdateStatus::NotAssigned,
            Some(u) if activated && u.recovered => UpdateStatus::Recovered,
            Some(u) if activated && u.switched => UpdateStatus::Activated,
            Some(u) if activated && u.status == MemberStatus::Ignored => UpdateStatus::Ignored,
            Some(u) if activated && u.is_stranded() => self.missed,
            None if activated => self.missed,
            Some(u) => match u.status {
                MemberStatus::Assigned => UpdateStatus::Assigned,
                MemberStatus::Downloading => UpdateStatus::Downloading,
                MemberStatus::Applied => UpdateStatus::Applied,
                MemberStatus::Failed => UpdateStatus::Failed,
                MemberStatus::Ignored => UpdateStatus::Ignored,
            },
            None => UpdateStatus::Assigned,
        }
    }
}

impl<S: Storage, T: Transport, C: Clock> ZoneService<S, T, C> {
    /// B2: how far the update has reached, counted the way the gate counts: ignored members
    /// are out of the update; the others are Primary Servers, Authentication Satellites, or
    /// devices (managed devices and Content Satellites).
    pub(super) fn coverage(
        &self,
        op: &Operation,
        updates: &BTreeMap<String, (u64, MemberUpdate)>,
    ) -> Result<Coverage> {
        let now = self.clock.now();
        let mut c = Coverage::default();
        for m in self.members()?.iter().filter(|m| Self::targeted(op, m)) {
            let u = updates.get(&m.name).map(|(_, u)| u);
            let status = u.map_or(MemberStatus::Assigned, |u| u.status);
            if status == MemberStatus::Ignored {
                continue;
            }
            let count = match m.server.as_ref().map(|s| s.role) {
                Some(ServerRole::Primary) => &mut c.primary,
                Some(ServerRole::AuthSatellite) => &mut c.auth_satellite,
                _ => &mut c.devices,
            };
            count.total += 1;
            if status == MemberStatus::Applied {
                count.applied += 1;
            } else {
                c.note_missing(member_status(op, u, now).name(), &m.name);
            }
        }
        Ok(c)
    }

    /// B2: the gate's verdict on the coverage now (`None` without a gate).
    pub(super) fn gate_verdict(
        &self,
        op: &Operation,
        updates: &BTreeMap<String, (u64, MemberUpdate)>,
    ) -> Result<Option<Verdict>> {
        match &op.gate {
            Some(g) => Ok(Some(g.gate.verdict(&self.coverage(op, updates)?))),
            None => Ok(None),
        }
    }

    /// The running operation, or else the last one with its final state; `None` in a zone
    /// that never had one.
    pub fn op(&self) -> Result<Option<Operation>> {
        match self.current_op()? {
            Some((_, op)) => Ok(Some(op)),
            None => self.last_finished_op(),
        }
    }

    /// The running (or last) operation's header for a banner: [`Self::op_show`] without the
    /// per-member lists (`devices`, `servers`, `stranded` are empty) and without the gate
    /// (`None`), so it reads the operation record only, not one update record per member:
    /// constant time in the zone's size (the console's Zone CA pane, W1).
    pub fn op_summary(&self) -> Result<OpView> {
        let op = self.op()?.ok_or(OpError::NoOperation)?;
        let now = self.clock.now();
        Ok(OpView {
            id: op.id,
            kind: (&op.kind).into(),
            state: (&op.state).into(),
            activation: op.activation.at,
            immediate: op.activation.immediate,
            cancel_deadline: (!op.activation.immediate).then(|| op.cancel_deadline()),
            cancellable: !op.activation.immediate && AnyOp::from(op.clone()).cancel(now).is_ok(),
            update_name: op.update_name.clone(),
            started_at: op.started_at,
            replication: op
                .replication
                .iter()
                .map(|(s, r)| ReplicationView {
                    server: s.to_string(),
                    status: match r {
                        Replication::Pending => ReplicationStatus::Pending,
                        Replication::Replicated => ReplicationStatus::Replicated,
                    },
                })
                .collect(),
            devices: Vec::new(),
            servers: Vec::new(),
            recovery_available_on: Vec::new(),
            stranded: Vec::new(),
            notices: op.notices.clone(),
            gate: None,
        })
    }

    /// `op show`.
    pub fn op_show(&self) -> Result<OpView> {
        let op = self.op()?.ok_or(OpError::NoOperation)?;
        let updates = self.member_updates(&op)?;
        let now = self.clock.now();
        let mut devices = Vec::new();
        let mut servers = Vec::new();
        let mut stranded = Vec::new();
        for m in self.members()?.iter().filter(|m| Self::targeted(&op, m)) {
            let u = updates.get(&m.name).map(|(_, u)| u);
            let status = member_status(&op, u, now);
            if status == UpdateStatus::Stranded {
                stranded.push(m.name.clone());
            }
            let reason = u.and_then(|u| u.reason.clone());
            match &m.server {
                Some(s) if Self::needs_certificate(&op, m) => servers.push(ServerCertView {
                    fqdn: m.name.clone(),
                    role: s.role,
                    status,
                    reason,
                    certificate_status: u.and_then(|u| u.cert_status).into(),
                }),
                _ => devices.push(MemberView {
                    name: m.name.clone(),
                    status,
                    reason,
                }),
            }
        }
        Ok(OpView {
            id: op.id,
            kind: (&op.kind).into(),
            state: (&op.state).into(),
            activation: op.activation.at,
            immediate: op.activation.immediate,
            cancel_deadline: (!op.activation.immediate).then(|| op.cancel_deadline()),
            cancellable: !op.activation.immediate && AnyOp::from(op.clone()).cancel(now).is_ok(),
            update_name: op.update_name.clone(),
            started_at: op.started_at,
            replication: op
                .replication
                .iter()
                .map(|(s, r)| ReplicationView {
                    server: s.to_string(),
                    status: match r {
                        Replication::Pending => ReplicationStatus::Pending,
                        Replication::Replicated => ReplicationStatus::Replicated,
                    },
                })
                .collect(),
            devices,
            servers,
            recovery_available_on: self.recovery_available_on(&op)?,
            stranded: if matches!(op.state, OpState::Activated(_)) {
                stranded
            } else {
                Vec::new()
            },
            notices: op.notices.clone(),
            gate: match (&op.gate, self.gate_verdict(&op, &updates)?) {
                (Some(state), Some(verdict_now)) => Some(GateView {
                    state: state.clone(),
                    verdict_now,
                }),
                _ => None,
            },
        })
    }

    /// B3: for the running operation, whether each member would still communicate if
    /// activation happened at `at` with what members have applied now.
    pub fn plan(&self, at: Timestamp) -> Result<Plan> {
        let (_, op) = self.running_op()?;
        let updates = self.member_updates(&op)?;
        let mut members = Vec::new();
        let mut stranded = Vec::new();
        // Worked out once: whether a bridge is served decodes certificates.
        let cx = StatusContext::new(&op, self.clock.now());
        let bridged_then = op.bridged_at(at);
        for m in self.members()?.iter().filter(|m| Self::targeted(&op, m)) {
            let u = updates.get(&m.name).map(|(_, u)| u);
            let status = cx.status(u.map(Progress::of).as_ref());
            let (communicates, reason) = match u {
                Some(u) if u.recovered => (true, "recovered with the bundle".to_string()),
                Some(u) if u.status == MemberStatus::Applied => {
                    (true, "holds the future trust (and certificate)".into())
                }
                Some(u) if u.status == MemberStatus::Ignored => {
                    (false, "taken out of the update".into())
                }
                _ if bridged_then => (
                    true,
                    "missed the update, but validates the servers through the bridge (B1) \
                     until the old CA expires"
                        .into(),
                ),
                _ if matches!(op.kind, OpKind::ServerRemint { .. }) => (
                    true,
                    "keeps its current certificate, which the zone CA still vouches for".into(),
                ),
                _ => (
                    false,
                    "has not applied the update: stranded until recovered".into(),
                ),
            };
            if !communicates {
                stranded.push(m.name.clone());
            }
            members.push(PlanEntry {
                name: m.name.clone(),
                status,
                communicates,
                reason,
            });
        }
        // B2: what the gate does at `at`, judged on the coverage now.
        let mut activated_by_then = at >= op.activation.at;
        let gate = match self.gate_verdict(&op, &updates)? {
            Some(verdict) => {
                let (then, outcome) = AnyOp::from(op.clone()).handle_timeout(
                    at,
                    Some(&verdict),
                    stranded.len() as u64,
                );
                let held_already = op.held();
                activated_by_then = outcome == TimeoutOutcome::Activated
                    || matches!(op.state, OpState::Activated(_));
                let (outcome, postponed_to) = match outcome {
                    TimeoutOutcome::Idle if held_already => (GateOutcome::Held, None),
                    TimeoutOutcome::Idle => (GateOutcome::NotDue, None),
                    TimeoutOutcome::Activated
                        if then
                            .core()
                            .gate
                            .as_ref()
                            .is_some_and(|g| g.activated_at_deadline) =>
                    {
                        (GateOutcome::ActivatesAtDeadline, None)
                    }
                    TimeoutOutcome::Activated => (GateOutcome::Activates, None),
                    TimeoutOutcome::Postponed(to) => (GateOutcome::Postponed, Some(to)),
                    TimeoutOutcome::Held => (GateOutcome::HeldAtDeadline, None),
                };
                Some(PlanGate {
                    verdict,
                    outcome,
                    postponed_to,
                })
            }
            None => None,
        };
        Ok(Plan {
            at,
            activated_by_then,
            stranded,
            gate,
            members,
        })
    }

    /// A member's future chain during an operation (V2 "future certificate").
    pub fn future_chain(&self, fqdn: &Fqdn) -> Result<Option<Vec<CertificateDer>>> {
        let Some((_, op)) = self.current_op()? else {
            return Ok(None);
        };
        if !matches!(op.state, OpState::Replicating(_) | OpState::Assigned(_)) {
            return Ok(None); // activated: the future certificate is the current one
        }
        let key = update::key(op.id, fqdn.as_str());
        match self.store.get(&key)? {
            Some(rec) => {
                let u: MemberUpdate = decode(&key, &rec.value)?;
                Ok((!u.future_chain.is_empty()).then_some(u.future_chain))
            }
            None => Ok(None),
        }
    }

    /// The running operation whose member statuses devices show (`device list`), if one runs
    /// and covers devices.
    pub(crate) fn device_status_op(&self) -> Result<Option<Operation>> {
        Ok(self
            .current_op()?
            .map(|(_, op)| op)
            .filter(|op| op.kind.all_members()))
    }

    /// Device `name`'s update status in `op` (from [`Self::device_status_op`]; `none` without
    /// one): one point read of its update record.
    pub(crate) fn device_update_status(
        &self,
        op: Option<&Operation>,
        name: &str,
    ) -> Result<UpdateStatus> {
        let Some(op) = op else {
            return Ok(UpdateStatus::None);
        };
        let key = update::key(op.id, name);
        let u: Option<MemberUpdate> = match self.store.get(&key)? {
            Some(rec) => Some(decode(&key, &rec.value)?),
            None => None,
        };
        Ok(member_status(op, u.as_ref(), self.clock.now()))
    }

    /// Every member's update status in `op` (from [`Self::device_status_op`]), read with one
    /// walk of the operation's per-member records (`op/<id>/m/`, one record decoded at a time)
    /// instead of one point read per member: what a status filter over 100,000 devices needs
    /// (issue 13 item 5). Only the members whose record gives another status than a member
    /// without a record has are kept.
    pub(crate) fn update_statuses(&self, op: Option<&Operation>) -> Result<UpdateStatuses> {
        let Some(op) = op else {
            return Ok(UpdateStatuses {
                default: UpdateStatus::None,
                other: HashMap::new(),
            });
        };
        let cx = StatusContext::new(op, self.clock.now());
        let default = cx.status(None);
        let mut other = HashMap::new();
        if !cx.from_records {
            return Ok(UpdateStatuses { default, other });
        }
        let prefix = update::prefix(op.id);
        self.each_record(&prefix, |key, _, u: Progress| {
            let status = cx.status(Some(&u));
            if status != default
                && let Some(name) = key.strip_prefix(&prefix)
            {
                other.insert(name.to_string(), status);
            }
            ControlFlow::Continue(())
        })?;
        Ok(UpdateStatuses { default, other })
    }

    /// The running operation and its update record for server `fqdn`, for V2's status columns:
    /// `None` when no operation runs or it does not target the server; the update is `None`
    /// while the server has not refreshed since it was assigned (its status is then what
    /// `op show` says for it, through [`member_status`]).
    pub(crate) fn server_update(
        &self,
        fqdn: &Fqdn,
    ) -> Result<Option<(Operation, Option<MemberUpdate>)>> {
        let Some((_, op)) = self.current_op()? else {
            return Ok(None);
        };
        if let OpKind::ServerRemint { servers, .. } = &op.kind
            && !servers.contains(fqdn)
        {
            return Ok(None);
        }
        let key = update::key(op.id, fqdn.as_str());
        let u = match self.store.get(&key)? {
            Some(rec) => Some(decode(&key, &rec.value)?),
            None => None,
        };
        Ok(Some((op, u)))
    }
}
