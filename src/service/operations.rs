//! The service side of staged operations (O1-O12): it loads the operation, feeds it events
//! with `now`, talks to agents, and commits every state change as one compare-and-swap
//! transaction with its audit entry. A crash between two commits loses nothing: every step is
//! idempotent and is simply run again (B5).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Result, ZoneService, decode, encode, unexpected};
use crate::agent::{AgentError, AgentRequest, AgentResponse};
use crate::audit::Epoch;
use crate::ca::{CaParams, Serial, ServerProfile, ValidityYears, cross_certify};
use crate::cert::{Certificate, CertificateDer, Fingerprint};
use crate::clock::{Clock, Timestamp};
use crate::key::KeySpec;
use crate::lint::{Finding, Rule};
use crate::ops::update::{self, MemberStatus, MemberUpdate, ServerCertStatus};
use crate::ops::{
    ActivationRequest, Coverage, CsrFields, CsrMode, Gate, GateState, NewCa, Notice, OpError,
    OpKind, OpState, Operation, Replication, TimeoutOutcome, Verdict, check_activation,
};
use crate::store::{Expect, Storage, Write};
use crate::transport::{Transport, TransportError};
use crate::view::{
    CertificateStatus, OperationKind, OperationState, ReplicationStatus, UpdateStatus,
};
use crate::zone::{
    CaKind, Fqdn, RetiredCa, ServerRecord, ServerRole, ZoneError, ZoneRecord, keys,
    member_lookup_name,
};

const CURRENT: &str = "op/current";
const HISTORY: &str = "op/history/";
/// Members per transaction when a refresh reports for many (the batch that keeps 100,000
/// reports within a few transactions without one huge one).
const BATCH: usize = 5_000;

fn history_key(id: u64) -> String {
    format!("{HISTORY}{id:06}")
}

/// Remint CA's inputs (RC1). Made with [`RemintCaRequest::new`] and the `with_*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemintCaRequest {
    /// New CA common name (default: the zone name).
    pub common_name: Option<String>,
    /// New CA key type.
    pub key: KeySpec,
    /// New CA validity, 1 to 10 years.
    pub validity: ValidityYears,
    /// Put servers' additional DNS names into their SANs.
    pub include_dns: bool,
    /// Activation.
    pub activation: ActivationRequest,
    /// The system update's name (default: "Remint CA").
    pub update_name: Option<String>,
    /// B2: activate only once the update has reached enough members.
    pub gate: Option<Gate>,
    /// B4: lint warnings the administrator accepts for this operation's certificates.
    pub acknowledge: Vec<Rule>,
}

impl RemintCaRequest {
    /// A Remint CA activated at `activation`, with defaults: the zone name as CN, a P-256
    /// key, ten years, servers' additional DNS names left out, update name "Remint CA", no
    /// gate, no lint warning accepted.
    pub fn new(activation: ActivationRequest) -> Self {
        RemintCaRequest {
            common_name: None,
            key: KeySpec::default(),
            validity: ValidityYears::default(),
            include_dns: false,
            activation,
            update_name: None,
            gate: None,
            acknowledge: Vec::new(),
        }
    }

    /// The new CA's CN.
    pub fn with_common_name(mut self, common_name: impl Into<String>) -> Self {
        self.common_name = Some(common_name.into());
        self
    }

    /// The new CA's key type.
    pub fn with_key(mut self, key: KeySpec) -> Self {
        self.key = key;
        self
    }

    /// The new CA's validity.
    pub fn with_validity(mut self, validity: ValidityYears) -> Self {
        self.validity = validity;
        self
    }

    /// Puts servers' additional DNS names into their SANs.
    pub fn with_include_dns(mut self, include_dns: bool) -> Self {
        self.include_dns = include_dns;
        self
    }

    /// The system update's name.
    pub fn with_update_name(mut self, name: impl Into<String>) -> Self {
        self.update_name = Some(name.into());
        self
    }

    /// B2: activates only once the update has reached enough members.
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// B4: lint warnings the administrator accepts for this operation's certificates.
    pub fn with_acknowledge(mut self, acknowledge: Vec<Rule>) -> Self {
        self.acknowledge = acknowledge;
        self
    }
}

/// Server Remint's inputs (SR1-SR3). Made with [`ServerRemintRequest::new`] and the `with_*`
/// settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerRemintRequest {
    /// The servers (Primary Servers and Authentication Satellites).
    pub servers: Vec<Fqdn>,
    /// The system update's name (required).
    pub update_name: String,
    /// CN override: only for one server without satellites.
    pub common_name: Option<String>,
    /// Key type of the new keys.
    pub key: KeySpec,
    /// Put the servers' additional DNS names into their SANs.
    pub include_dns: bool,
    /// Activation.
    pub activation: ActivationRequest,
    /// External CA only: how certificates are requested (SR3).
    pub csr: Option<CsrMode>,
    /// B2: activate only once the update has reached enough members.
    pub gate: Option<Gate>,
    /// B4: lint warnings the administrator accepts for this operation's certificates.
    pub acknowledge: Vec<Rule>,
}

impl ServerRemintRequest {
    /// A remint of `servers` as the system update `update_name`, activated at `activation`,
    /// with defaults: each server's CN, P-256 keys, additional DNS names left out, the
    /// internal CA issuing (an external CA needs [`Self::with_csr`]), no gate, no lint warning
    /// accepted.
    pub fn new(
        servers: Vec<Fqdn>,
        update_name: impl Into<String>,
        activation: ActivationRequest,
    ) -> Self {
        ServerRemintRequest {
            servers,
            update_name: update_name.into(),
            common_name: None,
            key: KeySpec::default(),
            include_dns: false,
            activation,
            csr: None,
            gate: None,
            acknowledge: Vec::new(),
        }
    }

    /// The CN, for one server without satellites (SR2).
    pub fn with_common_name(mut self, common_name: impl Into<String>) -> Self {
        self.common_name = Some(common_name.into());
        self
    }

    /// The new keys' type.
    pub fn with_key(mut self, key: KeySpec) -> Self {
        self.key = key;
        self
    }

    /// Puts the servers' additional DNS names into their SANs.
    pub fn with_include_dns(mut self, include_dns: bool) -> Self {
        self.include_dns = include_dns;
        self
    }

    /// External CA: how certificates are requested (SR3).
    pub fn with_csr(mut self, csr: CsrMode) -> Self {
        self.csr = Some(csr);
        self
    }

    /// B2: activates only once the update has reached enough members.
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// B4: lint warnings the administrator accepts for this operation's certificates.
    pub fn with_acknowledge(mut self, acknowledge: Vec<Rule>) -> Self {
        self.acknowledge = acknowledge;
        self
    }
}

/// What `fleet refresh` simulates for some members.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshOptions {
    /// These members report a failure.
    pub fail: BTreeSet<String>,
    /// These members are not reached at all.
    pub offline: BTreeSet<String>,
}

/// What happened to one member in a refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefreshOutcome {
    /// The member.
    pub name: String,
    /// `offline`, `up-to-date`, `replicated`, `applied`, `failed`, `activated`, `recovered`,
    /// `stranded`, `unstaged`, `trust-updated`, `waiting`.
    pub outcome: String,
    /// Details (a failure's reason).
    pub detail: Option<String>,
}

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

/// A member's status as views show it (O5, O8): before assignment `not assigned`; then its
/// update status; after activation `activated`, `stranded` (or `bridged`, B1) or `recovered`.
pub(crate) fn member_status(
    op: &Operation,
    u: Option<&MemberUpdate>,
    now: Timestamp,
) -> UpdateStatus {
    let activated = matches!(op.state, OpState::Activated(_) | OpState::Baselined(_));
    // B1: a member that missed the update but validates servers through the bridge.
    let missed = if op.bridged_at(now) {
        UpdateStatus::Bridged
    } else {
        UpdateStatus::Stranded
    };
    match u {
        _ if !op.is_assigned() && !matches!(op.state, OpState::Baselined(_)) => {
            UpdateStatus::NotAssigned
        }
        Some(u) if activated && u.recovered => UpdateStatus::Recovered,
        Some(u) if activated && u.switched => UpdateStatus::Activated,
        Some(u) if activated && u.status == MemberStatus::Ignored => UpdateStatus::Ignored,
        Some(u) if activated && u.is_stranded() => missed,
        None if activated => missed,
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

/// A member as the operation sees it.
struct Member {
    name: String,
    /// Boxed: 100,000 devices have none, and a `Member` stays small.
    server: Option<Box<ServerRecord>>,
}

/// What a refresh knows for every member of a batch.
#[derive(Clone, Copy)]
struct RefreshCtx<'a> {
    zone: &'a ZoneRecord,
    updates: &'a BTreeMap<String, (u64, MemberUpdate)>,
    cancelled: Option<u64>,
    opts: &'a RefreshOptions,
    now: Timestamp,
}

/// A member's work in a refresh, after the operation's own changes.
#[derive(Clone, Copy)]
struct Work {
    /// The member is a content server that has just pulled the update's content (O3).
    replicated: bool,
}

/// One member's result in a refresh: its outcome, and what to commit for it.
struct MemberDone {
    outcome: RefreshOutcome,
    writes: Vec<Write>,
    /// Its `MemberUpdate`, with the version the commit gives it.
    written: Option<(String, (u64, MemberUpdate))>,
}

impl MemberDone {
    fn outcome(outcome: RefreshOutcome) -> Self {
        MemberDone {
            outcome,
            writes: Vec::new(),
            written: None,
        }
    }
}

impl<S: Storage, T: Transport, C: Clock> ZoneService<S, T, C> {
    /// The running operation and its store version, if one runs.
    fn current_op(&self) -> Result<Option<(u64, Operation)>> {
        match self.store.get(CURRENT)? {
            Some(rec) => Ok(Some((rec.version, decode(CURRENT, &rec.value)?))),
            None => Ok(None),
        }
    }

    fn running_op(&self) -> Result<(u64, Operation)> {
        self.current_op()?
            .ok_or_else(|| OpError::NoOperation.into())
    }

    /// The running operation as it is at `now`, with an activation that is due applied but
    /// not committed. Commands check themselves against it before [`Self::tick`] commits the
    /// activation, so a refused command changes nothing, not even by activating.
    fn preview(&self) -> Result<Operation> {
        let (_, mut op) = self.running_op()?;
        let now = self.clock.now();
        if op.poll_timeout().is_some_and(|at| now >= at) {
            // B2: a gate that is not met postpones rather than activates.
            let verdict = self.gate_verdict(&op, &self.member_updates(&op)?)?;
            op.handle_timeout_gated(now, verdict.as_ref(), 0);
        }
        Ok(op)
    }

    /// B2: how far the update has reached, counted the way the gate counts: ignored members
    /// are out of the update; the others are Primary Servers, Authentication Satellites, or
    /// devices (managed devices and Content Satellites).
    fn coverage(
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
    fn gate_verdict(
        &self,
        op: &Operation,
        updates: &BTreeMap<String, (u64, MemberUpdate)>,
    ) -> Result<Option<Verdict>> {
        match &op.gate {
            Some(g) => Ok(Some(g.gate.verdict(&self.coverage(op, updates)?))),
            None => Ok(None),
        }
    }

    /// The last finished operation, if any.
    fn last_finished_op(&self) -> Result<Option<Operation>> {
        match self.store.scan(HISTORY)?.pop() {
            Some((k, rec)) => Ok(Some(decode(&k, &rec.value)?)),
            None => Ok(None),
        }
    }

    pub(super) fn next_op_id(&self) -> Result<u64> {
        match self.last_finished_op()? {
            None => Ok(1),
            // A damaged history record may hold the last possible id (issue 9 item 8).
            Some(o) => o.id.checked_add(1).ok_or_else(|| {
                ZoneError::BadRecord {
                    key: HISTORY.to_string(),
                    reason: format!("the last operation's id {} leaves no next id", o.id),
                }
                .into()
            }),
        }
    }

    /// O1: refuses when an operation runs.
    pub(super) fn ensure_idle(&self, wanted: &str) -> Result<()> {
        if let Some((_, op)) = self.current_op()? {
            return Err(OpError::Busy {
                running: op.kind.to_string(),
                update: op.update_name,
                wanted: wanted.to_string(),
            }
            .into());
        }
        Ok(())
    }

    fn internal_ca_server(zone: &ZoneRecord, what: &str) -> Result<Fqdn> {
        match &zone.ca {
            CaKind::Internal { certificate_server } => Ok(certificate_server.clone()),
            CaKind::External => Err(OpError::Selection(format!(
                "{what} needs an internal CA; this zone's CA is external (change the CA first)"
            ))
            .into()),
        }
    }

    /// The server an operation is initiated on in a zone without a certificate server: the
    /// first Primary Server (O6: it offers the recovery bundle).
    pub(super) fn initiating_server(&self) -> Result<Fqdn> {
        self.server_records()?
            .into_iter()
            .find(|s| s.role == ServerRole::Primary)
            .map(|s| s.fqdn)
            .ok_or_else(|| OpError::Selection("the zone has no Primary Server".into()).into())
    }

    pub(super) fn content_servers(&self) -> Result<Vec<Fqdn>> {
        Ok(Self::content_servers_of(&self.server_records()?))
    }

    /// The servers that replicate an update's content (O3): Primary Servers and Content
    /// Satellites.
    fn content_servers_of(all: &[ServerRecord]) -> Vec<Fqdn> {
        all.iter()
            .filter(|s| matches!(s.role, ServerRole::Primary | ServerRole::ContentSatellite))
            .map(|s| s.fqdn.clone())
            .collect()
    }

    /// Starts a Remint CA (RC1): the certificate server's agent makes the future CA key and
    /// certificate, and a bridge certificate (the current CA certifying the future CA's key)
    /// authenticates the recovery bundle (O6, B1).
    pub fn start_remint_ca(&self, req: RemintCaRequest) -> Result<OpView> {
        let mut epoch = self.begin()?;
        let zone = self.zone()?;
        let ca_server = Self::internal_ca_server(&zone, "Remint CA")?;
        self.ensure_idle("Remint CA")?;
        let now = self.clock.now();
        let current = Certificate::try_from(&zone.ca_certificate)?;
        let activation = check_activation(req.activation, now, current.not_after(), None)?;
        if let Some(g) = &req.gate {
            // B2: checked before the agent makes anything.
            g.check_for(&activation, current.not_after())?;
        }
        let common_name = req.common_name.unwrap_or_else(|| zone.name.clone());
        crate::zone::check_zone_name(&common_name)?;
        let update_name = req.update_name.unwrap_or_else(|| "Remint CA".into());
        let serial = Serial::random()?;
        let params = CaParams {
            common_name: common_name.clone(),
            validity: req.validity,
        };
        let response = self.transport.call(
            ca_server.as_str(),
            AgentRequest::CreateCa {
                key: req.key,
                params,
                serial: serial.clone(),
                now,
                future: true,
            },
        )?;
        let AgentResponse::CaCertificate(future_der) = response else {
            return Err(unexpected(
                ca_server.as_str(),
                "a CA certificate",
                &response,
            ));
        };
        let future = Certificate::try_from(&future_der)?;
        let mut writes = vec![super::serial_write(
            &future,
            &serial,
            &future.subject(),
            now,
        )?];
        // The bridge, signed with the current CA key while it is still valid. After an
        // expiry ("immediate") the current CA cannot sign any more, and the bundle carries the
        // new CA alone (devices then need it installed by hand, as the manual says).
        let cross_serial = Serial::random()?;
        let cross = if now <= current.not_after() {
            let signer = self.ca_signer(&ca_server, &current)?;
            let c = cross_certify(&current, &signer, &future, &cross_serial, now)?;
            writes.push(super::serial_write(
                &current,
                &cross_serial,
                &c.subject(),
                now,
            )?);
            c.der().clone()
        } else {
            future_der.clone()
        };
        let members = self.members()?.len() as u64;
        let op = Operation::new(
            self.next_op_id()?,
            OpKind::RemintCa {
                common_name,
                key: req.key,
                validity: req.validity,
                include_dns: req.include_dns,
                future_ca: future_der,
                cross_certificate: cross,
            },
            update_name,
            activation,
            now,
            ca_server,
            self.content_servers()?,
            members,
        );
        let op = Self::with_gate(op, req.gate, req.acknowledge, current.not_after())?;
        self.start(&mut epoch, op, writes)
    }

    /// Sets the operation's gate (B2) and acknowledged lint warnings (B4).
    pub(super) fn with_gate(
        mut op: Operation,
        gate: Option<Gate>,
        acknowledge: Vec<Rule>,
        ca_not_after: Timestamp,
    ) -> Result<Operation> {
        if let Some(gate) = gate {
            op.set_gate(gate, ca_not_after)?;
        }
        op.acknowledged = acknowledge;
        Ok(op)
    }

    /// Starts a Server Remint (SR1-SR3): issued by the certificate server with an internal CA,
    /// or through CSRs (`csr`) with an external one.
    pub fn start_server_remint(&self, req: ServerRemintRequest) -> Result<OpView> {
        // B6: who holds the CA and that nothing runs are read here; a Move CA or another
        // operation committed meanwhile makes the start fail instead of both succeeding.
        let mut epoch = self.begin()?;
        let zone = self.zone()?;
        // Internal: the certificate server issues. External (SR3): CSRs, and the operation's
        // recovery bundle lives on the server that initiated it (O6), here the first Primary.
        let ca_server = match (&zone.ca, &req.csr) {
            (CaKind::Internal { certificate_server }, None) => certificate_server.clone(),
            (CaKind::Internal { .. }, Some(_)) => {
                return Err(OpError::CsrModeWithInternalCa.into());
            }
            (CaKind::External, None) => {
                return Err(OpError::CsrModeRequired.into());
            }
            (CaKind::External, Some(_)) => self.initiating_server()?,
        };
        self.ensure_idle("Server Remint")?;
        let now = self.clock.now();
        if req.update_name.trim().is_empty() {
            return Err(OpError::MissingUpdateName.into());
        }
        if req.servers.is_empty() {
            return Err(OpError::Selection("select at least one server to remint".into()).into());
        }
        let all = self.server_records()?;
        let by_name: BTreeMap<&Fqdn, &ServerRecord> = all.iter().map(|s| (&s.fqdn, s)).collect();
        let mut selected = BTreeSet::new();
        for fqdn in &req.servers {
            let rec = by_name.get(fqdn).ok_or_else(|| ZoneError::UnknownServer {
                fqdn: fqdn.to_string(),
            })?;
            if !rec.role.has_certificate() {
                return Err(OpError::Selection(format!(
                    "{fqdn} is a {}: only Primary Servers and Authentication Satellites have \
                     server certificates (SR1)",
                    rec.role
                ))
                .into());
            }
            if let Some(leaf) = rec.certificate.first() {
                let leaf = Certificate::try_from(leaf)?;
                if now > leaf.not_after() {
                    return Err(OpError::Selection(format!(
                        "{fqdn}'s certificate expired at {}: a staged remint cannot replace an \
                         expired certificate; use the emergency replacement (SR6)",
                        leaf.not_after()
                    ))
                    .into());
                }
            }
            selected.insert(fqdn.clone());
        }
        if let Some(cn) = &req.common_name {
            let single = req.servers.len() == 1;
            let has_satellites = all.iter().any(|s| s.parent.as_ref() == req.servers.first());
            if !single || has_satellites {
                return Err(OpError::Selection(format!(
                    "a common name ({cn}) can be given only when exactly one server without \
                     satellites is selected (SR2)"
                ))
                .into());
            }
            crate::zone::check_zone_name(cn)?;
        }
        if req.include_dns && req.servers.len() == 1 {
            let rec = all.iter().find(|s| Some(&s.fqdn) == req.servers.first());
            if rec.is_some_and(|r| r.dns_names.is_empty()) {
                return Err(OpError::Selection(format!(
                    "{} has no additional DNS names, so they cannot be included (SR2)",
                    req.servers[0]
                ))
                .into());
            }
        }
        let current = Certificate::try_from(&zone.ca_certificate)?;
        let deadline = if req.csr.is_some() {
            // SR3, O2: before the earliest expiry among the selected servers.
            let mut earliest: Option<Timestamp> = None;
            for rec in all.iter().filter(|r| selected.contains(&r.fqdn)) {
                if let Some(leaf) = rec.certificate.first() {
                    let t = Certificate::try_from(leaf)?.not_after();
                    earliest = Some(earliest.map_or(t, |e| e.min(t)));
                }
            }
            earliest
        } else {
            None
        };
        let activation = check_activation(req.activation, now, current.not_after(), deadline)?;
        let op = Operation::new(
            self.next_op_id()?,
            OpKind::ServerRemint {
                servers: selected.iter().cloned().collect(),
                common_name: req.common_name,
                key: req.key,
                include_dns: req.include_dns,
                csr: req.csr,
            },
            req.update_name,
            activation,
            now,
            ca_server,
            Self::content_servers_of(&all),
            selected.len() as u64,
        );
        let op = Self::with_gate(op, req.gate, req.acknowledge, current.not_after())?;
        self.start(&mut epoch, op, Vec::new())
    }

    pub(super) fn start(
        &self,
        epoch: &mut Epoch,
        mut op: Operation,
        mut writes: Vec<Write>,
    ) -> Result<OpView> {
        let now = self.clock.now();
        op.serve_bridge = self.bridges && op.kind.bridge().is_some();
        // B4: before the operation exists, and so before it can be assigned (O4).
        self.preflight(&op)?;
        // A zone without content servers has nothing to replicate: assigned at once (O4).
        if op.replication.is_empty() {
            op.state = OpState::Assigned(crate::ops::Assigned {
                at: now,
                manual: false,
            });
        }
        writes.push(Write::create(CURRENT, encode(&op)));
        let detail = serde_json::json!({
            "id": op.id, "kind": op.kind.name(), "update": op.update_name,
            "activation": op.activation.at, "immediate": op.activation.immediate,
        });
        self.commit(epoch, writes, "op.start", detail)?;
        self.tick_with(epoch)?;
        self.op_show()
    }

    /// B4: builds and checks, for the activation time, the chains the fleet will meet that
    /// exist before any new server certificate: the future CA (and its subordinates) as the
    /// new trust, the future CA through the bridge with the trust members hold now, and every
    /// server's current certificate that is still valid then, with the trust members hold
    /// after activation (the old CA stays until its certificates are gone, B7). The new
    /// server certificates are checked the same way as each is issued
    /// ([`Self::check_new_leaf`]). Every failure is an error.
    fn preflight(&self, op: &Operation) -> Result<()> {
        let zone = self.zone()?;
        let at = op.activation.at;
        let now = self.clock.now();
        let current = Certificate::try_from(&zone.ca_certificate)?;
        let mut findings: Vec<Finding> = Vec::new();
        if let Some(future) = op.kind.future_ca() {
            let future = Certificate::try_from(future)?;
            let subs = match &op.kind {
                OpKind::ChangeCa { intermediates, .. } => intermediates
                    .iter()
                    .map(Certificate::try_from)
                    .collect::<Result<Vec<_>, _>>()?,
                _ => Vec::new(),
            };
            let anchors = std::slice::from_ref(&future);
            findings.extend(crate::lint::check_path(
                "the future CA, as the new trust",
                &future,
                &[],
                anchors,
                at,
            ));
            for sub in &subs {
                findings.extend(crate::lint::check_path(
                    "a subordinate CA of the new CA, with the new trust",
                    sub,
                    &subs,
                    anchors,
                    at,
                ));
            }
            if let Some(bridge) = op.kind.bridge() {
                let bridge = Certificate::try_from(bridge)?;
                findings.extend(crate::lint::check_path(
                    "the bridge (the future CA certified by the current CA), with the trust \
                     members hold now",
                    &bridge,
                    &[],
                    std::slice::from_ref(&current),
                    at,
                ));
            }
        }
        let (_, trust_after) = Self::trust_sets(op, &zone, now);
        let anchors = trust_after
            .iter()
            .map(Certificate::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        for s in self.server_records()? {
            let Some((leaf, rest)) = s.certificate.split_first() else {
                continue;
            };
            let leaf = Certificate::try_from(leaf)?;
            // A certificate that has expired by then is the expiry warnings' business (V3),
            // and not what the trust after activation decides.
            if leaf.status_at(at) != crate::cert::CertStatus::Valid {
                continue;
            }
            let mut subs = rest
                .iter()
                .map(Certificate::try_from)
                .collect::<Result<Vec<_>, _>>()?;
            for d in &zone.ca_intermediates {
                subs.push(Certificate::try_from(d)?);
            }
            let what = format!(
                "{}'s current certificate, with the trust members hold after activation",
                s.fqdn
            );
            findings.extend(crate::lint::check_path(&what, &leaf, &subs, &anchors, at));
        }
        Ok(crate::lint::enforce(findings, &op.acknowledged)?)
    }

    /// B4: a new server certificate, before it is staged: it validates at activation with the
    /// new trust, and, when servers present the bridge, through the bridge with the trust
    /// members that miss the update still hold.
    fn check_new_leaf(
        op: &Operation,
        zone: &ZoneRecord,
        leaf: &Certificate,
        issuer: &Certificate,
    ) -> Result<()> {
        let at = op.activation.at;
        let mut findings: Vec<Finding> = Vec::new();
        findings.extend(crate::lint::check_path(
            "the new server certificate, with the new trust",
            leaf,
            &[],
            std::slice::from_ref(issuer),
            at,
        ));
        if let Some(bridge) = op.served_bridge() {
            let bridge = Certificate::try_from(bridge)?;
            let old = Certificate::try_from(&zone.ca_certificate)?;
            findings.extend(crate::lint::check_path(
                "the new server certificate through the bridge, with the old trust",
                leaf,
                std::slice::from_ref(&bridge),
                std::slice::from_ref(&old),
                at,
            ));
        }
        Ok(crate::lint::enforce(findings, &op.acknowledged)?)
    }

    /// Every member of the zone, servers first in the order activation uses (O8): the
    /// certificate server, other Primary Servers, then everything else.
    fn members(&self) -> Result<Vec<Member>> {
        let zone = self.zone()?;
        let ca_server = match &zone.ca {
            CaKind::Internal { certificate_server } => Some(certificate_server.clone()),
            CaKind::External => None,
        };
        let mut servers = self.server_records()?;
        servers.sort_by_key(|s| {
            let rank = if Some(&s.fqdn) == ca_server.as_ref() {
                0
            } else if s.role == ServerRole::Primary {
                1
            } else {
                2
            };
            (rank, s.fqdn.clone())
        });
        let mut out: Vec<Member> = servers
            .into_iter()
            .map(|s| Member {
                name: s.fqdn.to_string(),
                server: Some(Box::new(s)),
            })
            .collect();
        // A device's name is its key's suffix (`device/<name>`): no need to decode 100,000
        // records for it.
        for (key, _) in self.store.scan(keys::DEVICE_PREFIX)? {
            if let Some(name) = key.strip_prefix(keys::DEVICE_PREFIX) {
                out.push(Member {
                    name: name.to_string(),
                    server: None,
                });
            }
        }
        Ok(out)
    }

    /// Whether `member` is in the operation's update.
    fn targeted(op: &Operation, member: &Member) -> bool {
        match &op.kind {
            OpKind::RemintCa { .. } | OpKind::ChangeCa { .. } => true,
            OpKind::ServerRemint { servers, .. } => member
                .server
                .as_ref()
                .is_some_and(|s| servers.contains(&s.fqdn)),
        }
    }

    /// Whether `member` needs a new certificate from this operation.
    fn needs_certificate(op: &Operation, member: &Member) -> bool {
        match &op.kind {
            OpKind::RemintCa { .. } | OpKind::ChangeCa { .. } => member
                .server
                .as_ref()
                .is_some_and(|s| s.role.has_certificate()),
            OpKind::ServerRemint { .. } => Self::targeted(op, member),
        }
    }

    fn member_updates(&self, op: &Operation) -> Result<BTreeMap<String, (u64, MemberUpdate)>> {
        let prefix = update::prefix(op.id);
        self.store
            .scan(&prefix)?
            .into_iter()
            .map(|(k, r)| {
                let u: MemberUpdate = decode(&k, &r.value)?;
                Ok((u.name.clone(), (r.version, u)))
            })
            .collect()
    }

    /// The names of members stranded by activation (O8).
    fn stranded(&self, op: &Operation) -> Result<Vec<String>> {
        self.stranded_with(op, &self.member_updates(op)?)
    }

    /// [`Self::stranded`] with the member records already loaded.
    fn stranded_with(
        &self,
        op: &Operation,
        updates: &BTreeMap<String, (u64, MemberUpdate)>,
    ) -> Result<Vec<String>> {
        // B1: while a served bridge is valid, members that missed the update still validate
        // the servers: none is stranded.
        if op.bridged_at(self.clock.now()) {
            return Ok(Vec::new());
        }
        Ok(self
            .members()?
            .iter()
            .filter(|m| Self::targeted(op, m))
            .filter(|m| updates.get(&m.name).is_none_or(|(_, u)| u.is_stranded()))
            .map(|m| m.name.clone())
            .collect())
    }

    /// Runs scheduled work (quinn-proto's `handle_timeout`): activation once its time has
    /// come (O8). Frontends call it before every command; a spurious call changes nothing.
    pub fn tick(&self) -> Result<bool> {
        self.tick_with(&mut self.begin()?)
    }

    /// [`tick`](Self::tick) as a step of a command that began at `epoch` (B6).
    pub(super) fn tick_with(&self, epoch: &mut Epoch) -> Result<bool> {
        let Some((version, mut op)) = self.current_op()? else {
            return Ok(false);
        };
        let now = self.clock.now();
        if op.poll_timeout().is_none_or(|at| now < at) {
            return Ok(false);
        }
        let updates = self.member_updates(&op)?;
        let stranded = self.stranded_with(&op, &updates)?;
        let verdict = self.gate_verdict(&op, &updates)?;
        let from = op.activation.at;
        match op.handle_timeout_gated(now, verdict.as_ref(), stranded.len() as u64) {
            TimeoutOutcome::Idle => return Ok(false),
            TimeoutOutcome::Activated => {}
            outcome @ (TimeoutOutcome::Postponed(_) | TimeoutOutcome::Held) => {
                // B2: the gate is not met: record the postponement (or the alarm) and its
                // notice; the cancel cut-off moves with the activation time (O7).
                let (action, to) = match outcome {
                    TimeoutOutcome::Postponed(to) => ("op.postpone", Some(to)),
                    _ => ("op.hold", None),
                };
                let detail = serde_json::json!({
                    "id": op.id, "from": from, "to": to,
                    "reason": verdict.map(|v| v.to_string()),
                });
                self.commit(
                    epoch,
                    vec![Write::put(CURRENT, Expect::Version(version), encode(&op))],
                    action,
                    detail,
                )?;
                return Ok(false);
            }
        }
        let mut zone = self.zone()?;
        let zone_version = self.store.get(keys::ZONE)?.map_or(0, |r| r.version);
        let mut writes = Vec::new();
        // The future certificates become current (O8): the zone's records say so at once;
        // each member switches at its next refresh, the certificate server first.
        if let Some(future_ca) = op.kind.future_ca() {
            let old = Certificate::try_from(&zone.ca_certificate)?;
            // B7: the old CA stays trusted until the last certificate it issued expires
            // (a stranded server may still present one).
            let mut keep_until = old.not_after();
            for s in self.server_records()? {
                if let Some(leaf) = s.certificate.first() {
                    let leaf = Certificate::try_from(leaf)?;
                    // RFC 5280 7.1 name matching, as chain validation does.
                    if crate::cert::names_match(leaf.issuer_name(), old.subject_name()) {
                        keep_until = keep_until.max(leaf.not_after());
                    }
                }
            }
            zone.retired_cas.insert(
                0,
                RetiredCa {
                    certificate: zone.ca_certificate.clone(),
                    keep_until,
                },
            );
            zone.ca_certificate = future_ca.clone();
            // Change CA: who holds the CA from now on (CI1, CE1).
            if let OpKind::ChangeCa {
                to, intermediates, ..
            } = &op.kind
            {
                zone.ca_intermediates = intermediates.clone();
                zone.ca = match to {
                    NewCa::Internal { server, .. } => CaKind::Internal {
                        certificate_server: server.clone(),
                    },
                    NewCa::External { .. } => CaKind::External,
                };
            }
            writes.push(Write::put(
                keys::ZONE,
                Expect::Version(zone_version),
                encode(&zone),
            ));
            op.notices.push(Notice::ResignRequired {
                old_ca_sha256: Fingerprint::sha256(old.der().as_bytes()).to_string(),
                new_ca_sha256: Fingerprint::sha256(future_ca.as_bytes()).to_string(),
                at: now,
            });
        }
        for (name, (_, u)) in &updates {
            if u.status == MemberStatus::Applied && !u.future_chain.is_empty() {
                let key = keys::server(name);
                if let Some(rec) = self.store.get(&key)? {
                    let mut s: ServerRecord = decode(&key, &rec.value)?;
                    s.certificate = u.future_chain.clone();
                    writes.push(Write::put(key, Expect::Version(rec.version), encode(&s)));
                }
            }
        }
        writes.push(Write::put(CURRENT, Expect::Version(version), encode(&op)));
        let detail = serde_json::json!({
            "id": op.id, "activated_at": now, "stranded": stranded.len(),
        });
        self.commit(epoch, writes, "op.activate", detail)?;
        Ok(true)
    }

    /// O3: record that the content reached these servers (the stand-in for a replication
    /// schedule); assigns automatically once every content server has it (O4).
    pub fn replicate(&self, servers: &[Fqdn]) -> Result<OpView> {
        let mut preview = self.preview()?;
        for s in servers {
            preview.on_replicated(s, self.clock.now())?;
        }
        let mut epoch = self.begin()?;
        self.tick_with(&mut epoch)?;
        let (version, mut op) = self.running_op()?;
        let now = self.clock.now();
        for s in servers {
            op.on_replicated(s, now)?;
        }
        let detail =
            serde_json::json!({ "id": op.id, "servers": servers, "state": op.state.name() });
        self.commit(
            &mut epoch,
            vec![Write::put(CURRENT, Expect::Version(version), encode(&op))],
            "op.replicate",
            detail,
        )?;
        self.op_show()
    }

    /// O4: assign before replication completes.
    pub fn assign_now(&self) -> Result<OpView> {
        self.preview()?.assign_now(self.clock.now())?;
        let mut epoch = self.begin()?;
        self.tick_with(&mut epoch)?;
        let (version, mut op) = self.running_op()?;
        op.assign_now(self.clock.now())?;
        let detail = serde_json::json!({ "id": op.id });
        self.commit(
            &mut epoch,
            vec![Write::put(CURRENT, Expect::Version(version), encode(&op))],
            "op.assign_now",
            detail,
        )?;
        self.op_show()
    }

    /// O7: cancel until ten minutes before activation. The certificate server must discard
    /// the future CA key; if it cannot be reached the cancel fails and can be retried, and
    /// nothing changes. Members drop what they staged at their next refresh.
    pub fn cancel(&self) -> Result<OpView> {
        self.preview()?.check_cancel(self.clock.now())?;
        let mut epoch = self.begin()?;
        self.tick_with(&mut epoch)?;
        let (version, mut op) = self.running_op()?;
        let now = self.clock.now();
        op.check_cancel(now)?;
        // The future CA key is discarded only after the cancel is committed: discarded first,
        // a commit that then lost a race (B6) would leave a running operation, which may still
        // activate, without its CA key. The certificate server must answer first, so a cancel
        // it cannot take part in fails and changes nothing (O7: it can be retried).
        let discard = match &op.kind {
            OpKind::RemintCa { future_ca, .. } => {
                self.transport
                    .call(op.ca_server.as_str(), AgentRequest::Ping)
                    .map_err(|e| {
                        OpError::Selection(format!("cancel failed, nothing changed; retry: {e}"))
                    })?;
                Some(future_ca.clone())
            }
            _ => None,
        };
        op.cancelled(now);
        let writes = vec![
            Write::delete(CURRENT, Expect::Version(version)),
            Write::create(history_key(op.id), encode(&op)),
        ];
        self.commit(
            &mut epoch,
            writes,
            "op.cancel",
            serde_json::json!({ "id": op.id }),
        )?;
        if let Some(certificate) = discard {
            // Best effort: had the server gone away in the moment since it answered, the key
            // of a cancelled operation, which no member is asked to trust again, stays on it.
            let _ = self.transport.call(
                op.ca_server.as_str(),
                AgentRequest::DiscardFutureCa { certificate },
            );
        }
        self.op_show()
    }

    /// O5: send the update again to failed members (all failed ones when `names` is empty).
    pub fn redeploy(&self, names: &[String]) -> Result<OpView> {
        let names = &fold_names(names);
        self.preview()?.check_redeploy(self.clock.now())?;
        let mut epoch = self.begin()?;
        self.tick_with(&mut epoch)?;
        let (version, op) = self.running_op()?;
        let now = self.clock.now();
        op.check_redeploy(now)?;
        let updates = self.member_updates(&op)?;
        let chosen: Vec<&String> = if names.is_empty() {
            updates
                .iter()
                .filter(|(_, (_, u))| u.status == MemberStatus::Failed)
                .map(|(n, _)| n)
                .collect()
        } else {
            names.iter().collect()
        };
        let mut writes = vec![Write::put(CURRENT, Expect::Version(version), encode(&op))];
        for name in &chosen {
            match updates.get(*name) {
                Some((v, u)) if u.status == MemberStatus::Failed => {
                    let mut u = u.clone();
                    u.status = MemberStatus::Assigned;
                    u.reason = None;
                    u.cert_status = None;
                    u.updated_at = now;
                    writes.push(Write::put(
                        update::key(op.id, name),
                        Expect::Version(*v),
                        encode(&u),
                    ));
                }
                _ => {
                    return Err(OpError::Selection(format!(
                        "{name} has not failed: only failed members can be redeployed"
                    ))
                    .into());
                }
            }
        }
        let detail = serde_json::json!({ "id": op.id, "members": chosen });
        self.commit(&mut epoch, writes, "op.redeploy", detail)?;
        self.op_show()
    }

    /// O5: take members out of the update (allowed even inside the cut-off, O7).
    pub fn ignore(&self, names: &[String]) -> Result<OpView> {
        let names = &fold_names(names);
        let preview = self.preview()?;
        preview.check_ignore()?;
        let members = self.members()?;
        for name in names {
            if !members
                .iter()
                .any(|m| &m.name == name && Self::targeted(&preview, m))
            {
                return Err(OpError::NotInUpdate { name: name.clone() }.into());
            }
        }
        let mut epoch = self.begin()?;
        self.tick_with(&mut epoch)?;
        let (version, op) = self.running_op()?;
        op.check_ignore()?;
        let now = self.clock.now();
        let members = self.members()?;
        let updates = self.member_updates(&op)?;
        let mut writes = vec![Write::put(CURRENT, Expect::Version(version), encode(&op))];
        for name in names {
            let m = members
                .iter()
                .find(|m| &m.name == name)
                .filter(|m| Self::targeted(&op, m))
                .ok_or_else(|| OpError::NotInUpdate { name: name.clone() })?;
            let (expect, mut u) = match updates.get(&m.name) {
                Some((v, u)) => (Expect::Version(*v), u.clone()),
                None => (Expect::Absent, MemberUpdate::assigned(name, now)),
            };
            u.status = MemberStatus::Ignored;
            u.updated_at = now;
            writes.push(Write::put(update::key(op.id, name), expect, encode(&u)));
        }
        self.commit(
            &mut epoch,
            writes,
            "op.ignore",
            serde_json::json!({ "id": op.id, "members": names }),
        )?;
        self.op_show()
    }

    /// O10: finish the update; the recovery bundle goes away, so while members are stranded
    /// this needs `force`.
    pub fn baseline(&self, force: bool) -> Result<OpView> {
        let mut preview = self.preview()?;
        preview.baseline(self.clock.now(), &self.stranded(&preview)?, force)?;
        let mut epoch = self.begin()?;
        self.tick_with(&mut epoch)?;
        let (version, mut op) = self.running_op()?;
        let stranded = self.stranded(&op)?;
        op.baseline(self.clock.now(), &stranded, force)?;
        let mut writes = vec![
            Write::delete(CURRENT, Expect::Version(version)),
            Write::create(history_key(op.id), encode(&op)),
        ];
        // O10: a member that never reported has no record yet; record it as stranded, so that
        // refreshes know its recovery bundle went with this baseline.
        let updates = self.member_updates(&op)?;
        for name in stranded.iter().filter(|n| !updates.contains_key(*n)) {
            let u = MemberUpdate::assigned(name, self.clock.now());
            writes.push(Write::create(update::key(op.id, name), encode(&u)));
        }
        let detail =
            serde_json::json!({ "id": op.id, "forced": force, "stranded": stranded.len() });
        self.commit(&mut epoch, writes, "op.baseline", detail)?;
        self.op_show()
    }

    /// O10: members left stranded by a Remint CA baselined with `force`. They trust only the
    /// old CA, so they can no longer reach the zone, and the recovery bundle is gone.
    fn cut_off_members(&self) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for (k, rec) in self.store.scan(HISTORY)? {
            let op: Operation = decode(&k, &rec.value)?;
            if matches!(op.kind, OpKind::RemintCa { .. })
                && matches!(op.state, OpState::Baselined(ref b) if b.forced)
            {
                let updates = self.member_updates(&op)?;
                out.extend(
                    updates
                        .into_values()
                        .filter(|(_, u)| u.is_stranded())
                        .map(|(_, u)| u.name),
                );
            }
        }
        Ok(out)
    }

    /// O6: the servers that offer the recovery bundle now.
    fn recovery_available_on(&self, op: &Operation) -> Result<Vec<String>> {
        if !op.state.is_running() {
            return Ok(Vec::new());
        }
        // O6: the new CA server (Remint CA, Change CA to internal), the initiating server
        // (Change CA to external, external Server Remint), the CA server (internal Server
        // Remint); other Primary Servers once assigned.
        let first = match &op.kind {
            OpKind::ChangeCa {
                to: NewCa::Internal { server, .. },
                ..
            } => server.clone(),
            _ => op.ca_server.clone(),
        };
        let mut out = vec![first.to_string()];
        if op.is_assigned() {
            for s in self.server_records()? {
                if s.role == ServerRole::Primary && s.fqdn.as_str() != out[0] {
                    out.push(s.fqdn.to_string());
                }
            }
        }
        Ok(out)
    }

    /// The running operation, or else the last one with its final state; `None` in a zone
    /// that never had one.
    pub fn op(&self) -> Result<Option<Operation>> {
        match self.current_op()? {
            Some((_, op)) => Ok(Some(op)),
            None => self.last_finished_op(),
        }
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
            cancellable: !op.activation.immediate && op.check_cancel(now).is_ok(),
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
        let now = self.clock.now();
        for m in self.members()?.iter().filter(|m| Self::targeted(&op, m)) {
            let u = updates.get(&m.name).map(|(_, u)| u);
            let status = member_status(&op, u, now);
            let (communicates, reason) = match u {
                Some(u) if u.recovered => (true, "recovered with the bundle".to_string()),
                Some(u) if u.status == MemberStatus::Applied => {
                    (true, "holds the future trust (and certificate)".into())
                }
                Some(u) if u.status == MemberStatus::Ignored => {
                    (false, "taken out of the update".into())
                }
                _ if op.bridged_at(at) => (
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
                let mut then = op.clone();
                let outcome = then.handle_timeout_gated(at, Some(&verdict), stranded.len() as u64);
                let held_already = op.held();
                activated_by_then = outcome == TimeoutOutcome::Activated
                    || matches!(op.state, OpState::Activated(_));
                let (outcome, postponed_to) = match outcome {
                    TimeoutOutcome::Idle if held_already => (GateOutcome::Held, None),
                    TimeoutOutcome::Idle => (GateOutcome::NotDue, None),
                    TimeoutOutcome::Activated
                        if then.gate.as_ref().is_some_and(|g| g.activated_at_deadline) =>
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

    /// Update status of every device in the running operation (name -> status).
    pub(crate) fn device_update_statuses(&self) -> Result<BTreeMap<String, UpdateStatus>> {
        let Some((_, op)) = self.current_op()? else {
            return Ok(BTreeMap::new());
        };
        if !op.kind.all_members() {
            return Ok(BTreeMap::new());
        }
        let updates = self.member_updates(&op)?;
        Ok(self
            .device_records()?
            .into_iter()
            .map(|d| {
                let s = member_status(&op, updates.get(&d.name).map(|(_, u)| u), self.clock.now());
                (d.name, s)
            })
            .collect())
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

    /// `fleet refresh`: each member (all when `names` is empty) refreshes as its agent would
    /// (A1, A2, O8, O9): content servers pull the update's content (O3), assigned members
    /// fetch and stage it (servers get their future key and certificate, S1), and once
    /// activation has come members switch, in O8's order, or, if they missed it, recover with
    /// the bundle (O6). Progress is committed in batches.
    pub fn refresh(
        &self,
        names: &[String],
        opts: &RefreshOptions,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Vec<RefreshOutcome>> {
        let names = &fold_names(names);
        let opts = &RefreshOptions {
            fail: opts.fail.iter().map(|n| member_lookup_name(n)).collect(),
            offline: opts.offline.iter().map(|n| member_lookup_name(n)).collect(),
        };
        let all = self.members()?;
        for name in opts.fail.iter().chain(&opts.offline) {
            if !all.iter().any(|m| &m.name == name) {
                return Err(ZoneError::UnknownMember { name: name.clone() }.into());
            }
        }
        let members: Vec<&Member> = if names.is_empty() {
            all.iter().collect()
        } else {
            let mut v = Vec::new();
            for n in names {
                v.push(
                    all.iter()
                        .find(|m| &m.name == n)
                        .ok_or_else(|| ZoneError::UnknownMember { name: n.clone() })?,
                );
            }
            // O8's order, whatever order they were named in.
            v.sort_by_key(|m| all.iter().position(|a| a.name == m.name));
            v
        };
        // Every check above runs before anything is committed, activation included.
        let mut epoch = self.begin()?;
        self.tick_with(&mut epoch)?;
        let now = self.clock.now();
        let zone = self.zone()?;
        let mut outcomes = Vec::with_capacity(members.len());
        let total = members.len();
        // Loaded once and kept current as batches commit (a rescan per batch would cost
        // O(members^2 / BATCH) at 100,000 devices).
        let mut updates = match self.current_op()? {
            Some((_, op)) => self.member_updates(&op)?,
            None => BTreeMap::new(),
        };
        let mut updates_of = self.current_op()?.map(|(_, op)| op.id);
        let cancelled = self
            .last_finished_op()?
            .filter(|o| matches!(o.state, OpState::Cancelled(_)))
            .map(|o| o.id);
        let cut_off = self.cut_off_members()?;
        for (i, chunk) in members.chunks(BATCH).enumerate() {
            let current = self.current_op()?;
            if current.as_ref().map(|(_, o)| o.id) != updates_of {
                updates = match &current {
                    Some((_, op)) => self.member_updates(op)?,
                    None => BTreeMap::new(),
                };
                updates_of = current.as_ref().map(|(_, o)| o.id);
            }
            let mut op_state = current.clone();
            let mut writes = Vec::new();
            // The member records this batch writes, with the versions they will have.
            let mut written = Vec::new();
            let mut results: Vec<Option<MemberDone>> = (0..chunk.len()).map(|_| None).collect();
            // Members whose work waits for the operation to stop changing: a run of them is
            // done together (on worker threads), with the operation as it is for all of them.
            let mut pending: Vec<(usize, Work)> = Vec::new();
            let ctx = RefreshCtx {
                zone: &zone,
                updates: &updates,
                cancelled,
                opts,
                now,
            };
            for (j, m) in chunk.iter().enumerate() {
                if cut_off.contains(&m.name) && !opts.offline.contains(&m.name) {
                    results[j] = Some(MemberDone::outcome(RefreshOutcome {
                        name: m.name.clone(),
                        outcome: "stranded".into(),
                        detail: Some(
                            "missed a CA change whose recovery bundle was baselined away: \
                             install the zone CA on it by hand"
                                .into(),
                        ),
                    }));
                    continue;
                }
                // O3: a content server that refreshes pulls the update's content. That
                // changes the operation (the last one assigns it, O4), so the members before
                // it are done first, with the operation as they saw it.
                let replicates = !opts.offline.contains(&m.name)
                    && op_state.as_ref().is_some_and(|(_, op)| {
                        op.state.is_running()
                            && !matches!(op.state, OpState::Activated(_))
                            && m.server.as_ref().is_some_and(|s| {
                                op.replication.get(&s.fqdn) == Some(&Replication::Pending)
                            })
                    });
                if replicates {
                    self.run_pending(
                        chunk,
                        &mut pending,
                        op_state.as_ref().map(|(_, o)| o),
                        &ctx,
                        &mut results,
                    )?;
                    if let (Some((_, op)), Some(s)) = (op_state.as_mut(), &m.server) {
                        op.on_replicated(&s.fqdn, now)?;
                    }
                }
                pending.push((
                    j,
                    Work {
                        replicated: replicates,
                    },
                ));
            }
            self.run_pending(
                chunk,
                &mut pending,
                op_state.as_ref().map(|(_, o)| o),
                &ctx,
                &mut results,
            )?;
            for done in results.into_iter().flatten() {
                outcomes.push(done.outcome);
                writes.extend(done.writes);
                written.extend(done.written);
            }
            if let (Some((version, before)), Some((_, after))) = (&current, &op_state) {
                let mut after = after.clone();
                // O12: every Primary Server's future certificate exists.
                if matches!(after.kind, OpKind::RemintCa { .. }) && after.is_assigned() {
                    let created = |name: &str| {
                        written
                            .iter()
                            .rev()
                            .find(|(n, _)| n == name)
                            .map(|(_, (_, u))| u)
                            .or_else(|| updates.get(name).map(|(_, u)| u))
                            .is_some_and(|u| u.cert_status == Some(ServerCertStatus::Created))
                    };
                    let all_created = all
                        .iter()
                        .filter(|m| {
                            m.server
                                .as_ref()
                                .is_some_and(|s| s.role == ServerRole::Primary)
                        })
                        .all(|p| created(&p.name));
                    if all_created {
                        after.note_legacy_point(now);
                    }
                }
                if &after != before {
                    writes.push(Write::put(
                        CURRENT,
                        Expect::Version(*version),
                        encode(&after),
                    ));
                }
            }
            if !writes.is_empty() {
                let start = i * BATCH;
                let detail = serde_json::json!({
                    "members": chunk.len(), "first": chunk.first().map(|m| &m.name),
                    "batch": format!("{}..{}", start + 1, start + chunk.len()),
                });
                self.commit(&mut epoch, writes, "fleet.refresh", detail)?;
                updates.extend(written);
            }
            progress(outcomes.len(), total);
            // Activation may be due between batches of a long refresh.
            if self.tick_with(&mut epoch)? {
                updates_of = None;
            }
        }
        Ok(outcomes)
    }

    /// Does the work of the members in `pending` (all of them see `op` as it is now) and
    /// puts each result in its slot.
    ///
    /// Servers that get a new certificate (their agents make a key and a CSR, the service
    /// checks the CSR, the CA signs, the agent checks its new chain) are served side by side
    /// by up to [`ZoneService::with_concurrency`] workers, as agents on their own hosts would
    /// be; the light work of everyone else stays on the calling thread, where threads would
    /// cost more than they save. Results and writes stay in member order, so the commit is
    /// the same as a one-by-one run's. Activation is always one by one, in O8's order.
    fn run_pending(
        &self,
        chunk: &[&Member],
        pending: &mut Vec<(usize, Work)>,
        op: Option<&Operation>,
        ctx: &RefreshCtx<'_>,
        results: &mut [Option<MemberDone>],
    ) -> Result<()> {
        let work = std::mem::take(pending);
        let heavy = |j: usize| {
            op.is_some_and(|o| {
                matches!(o.state, OpState::Assigned(_))
                    && Self::targeted(o, chunk[j])
                    && Self::needs_certificate(o, chunk[j])
            })
        };
        let (heavy, light): (Vec<_>, Vec<_>) = work.into_iter().partition(|&(j, _)| heavy(j));
        let workers = self.concurrency.get().min(heavy.len());
        if workers <= 1 {
            let mut all = heavy;
            all.extend(light);
            all.sort_unstable_by_key(|&(j, _)| j);
            for (j, w) in all {
                results[j] = Some(self.member_work(chunk[j], w, op, ctx)?);
            }
            return Ok(());
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let serve_heavy = || {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(j, w)) = heavy.get(i) else { break };
                mine.push((j, self.member_work(chunk[j], w, op, ctx)));
            }
            mine
        };
        let mut all: Vec<(usize, Result<MemberDone>)> = std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..workers).map(|_| scope.spawn(serve_heavy)).collect();
            let mut mine: Vec<_> = light
                .iter()
                .map(|&(j, w)| (j, self.member_work(chunk[j], w, op, ctx)))
                .collect();
            mine.extend(serve_heavy());
            for h in helpers {
                mine.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            mine
        });
        all.sort_unstable_by_key(|(j, _)| *j);
        for (j, r) in all {
            results[j] = Some(r?);
        }
        Ok(())
    }

    /// One member's part of a refresh, once the operation's own changes (O3) are made.
    fn member_work(
        &self,
        m: &Member,
        w: Work,
        op: Option<&Operation>,
        ctx: &RefreshCtx<'_>,
    ) -> Result<MemberDone> {
        let RefreshCtx {
            zone,
            updates,
            cancelled,
            opts,
            now,
        } = *ctx;
        let out = |outcome: &str, detail: Option<String>| RefreshOutcome {
            name: m.name.clone(),
            outcome: outcome.into(),
            detail,
        };
        if opts.offline.contains(&m.name) {
            return Ok(MemberDone::outcome(out("offline", None)));
        }
        let fail = opts.fail.contains(&m.name);
        let Some(op) = op.filter(|o| o.state.is_running()) else {
            return Ok(MemberDone::outcome(
                self.sync_trust(m, zone, cancelled, now)?,
            ));
        };
        if !Self::targeted(op, m) {
            let r = self.sync_trust(m, zone, cancelled, now)?;
            return Ok(MemberDone::outcome(if w.replicated {
                out("replicated", None)
            } else {
                r
            }));
        }
        let (version, mut u) = match updates.get(&m.name) {
            Some((v, u)) => (Expect::Version(*v), u.clone()),
            None => (Expect::Absent, MemberUpdate::assigned(&m.name, now)),
        };
        let before = u.clone();
        // O7: what a member staged for a cancelled operation goes at its next refresh, also
        // when it is a target of the next operation, which is not assigned yet.
        if matches!(op.state, OpState::Replicating(_)) && cancelled.is_some() {
            self.sync_trust(m, zone, cancelled, now)?;
        }
        let mut writes = Vec::new();
        let result = match &op.state {
            OpState::Replicating(_) => out(
                if w.replicated {
                    "replicated"
                } else {
                    "waiting"
                },
                None,
            ),
            OpState::Assigned(_) => self.apply(m, op, zone, &mut u, fail, now, &mut writes)?,
            OpState::Activated(_) => {
                self.activate_member(m, op, zone, &mut u, fail, now, &mut writes)?
            }
            _ => out("up-to-date", None),
        };
        let mut written = None;
        if u != before {
            u.updated_at = now;
            writes.push(Write::put(update::key(op.id, &m.name), version, encode(&u)));
            let next = match version {
                // Saturating: a damaged version is refused by the commit (issue 9 item 8).
                Expect::Version(n) => n.saturating_add(1),
                _ => 1,
            };
            written = Some((m.name.clone(), (next, u)));
        }
        Ok(MemberDone {
            outcome: result,
            writes,
            written,
        })
    }

    /// A member outside any running update: make sure it trusts the zone's anchors (and
    /// drop anything staged for an operation that no longer runs).
    fn sync_trust(
        &self,
        m: &Member,
        zone: &ZoneRecord,
        cancelled: Option<u64>,
        now: Timestamp,
    ) -> Result<RefreshOutcome> {
        let trust = zone.trust_bundle(now);
        let request = match cancelled {
            Some(op_id) => AgentRequest::Unstage { op_id, trust },
            None => AgentRequest::Trust { trust },
        };
        let unstaging = matches!(request, AgentRequest::Unstage { .. });
        match self.transport.call(&m.name, request) {
            Ok(_) => Ok(RefreshOutcome {
                name: m.name.clone(),
                outcome: if unstaging {
                    "unstaged"
                } else {
                    "trust-updated"
                }
                .into(),
                detail: None,
            }),
            Err(e) => Ok(RefreshOutcome {
                name: m.name.clone(),
                outcome: "failed".into(),
                detail: Some(e.to_string()),
            }),
        }
    }

    /// The anchors a member trusts between staging and activation, and after it.
    fn trust_sets(
        op: &Operation,
        zone: &ZoneRecord,
        now: Timestamp,
    ) -> (Vec<CertificateDer>, Vec<CertificateDer>) {
        let current = zone.trust_bundle(now);
        match op.kind.future_ca() {
            Some(future_ca) => {
                let mut during = current.clone();
                if !during.contains(future_ca) {
                    during.push(future_ca.clone());
                }
                let mut after = vec![future_ca.clone()];
                after.extend(current.into_iter().filter(|c| c != future_ca));
                (during, after)
            }
            None => (current.clone(), current),
        }
    }

    /// The CA the operation's new server certificates chain to.
    fn new_issuer(op: &Operation, zone: &ZoneRecord) -> CertificateDer {
        op.kind
            .future_ca()
            .cloned()
            .unwrap_or_else(|| zone.ca_certificate.clone())
    }

    /// The server whose agent signs the operation's certificates; `None` when an external
    /// CA issues them.
    fn issuing_server(op: &Operation) -> Option<Fqdn> {
        match &op.kind {
            OpKind::RemintCa { .. } => Some(op.ca_server.clone()),
            OpKind::ChangeCa {
                to: NewCa::Internal { server, .. },
                ..
            } => Some(server.clone()),
            OpKind::ChangeCa {
                to: NewCa::External { .. },
                ..
            } => None,
            OpKind::ServerRemint { csr: None, .. } => Some(op.ca_server.clone()),
            OpKind::ServerRemint { csr: Some(_), .. } => None,
        }
    }

    fn server_profile(op: &Operation, s: &ServerRecord) -> ServerProfile {
        let (common_name, include_dns) = match &op.kind {
            OpKind::RemintCa { include_dns, .. } | OpKind::ChangeCa { include_dns, .. } => {
                (None, *include_dns)
            }
            OpKind::ServerRemint {
                common_name,
                include_dns,
                ..
            } => (common_name.clone(), *include_dns),
        };
        ServerProfile {
            fqdn: s.fqdn.to_string(),
            common_name,
            dns_names: s.dns_names.clone(),
            include_dns,
            not_after: None,
        }
    }

    /// The key type of a server's new key: the one chosen for a Server Remint (SR2); in a
    /// Remint CA (whose key choice is the CA's, RC1) the type the server has now.
    fn key_spec(op: &Operation, server: &ServerRecord) -> KeySpec {
        match &op.kind {
            OpKind::ServerRemint { key, .. } => *key,
            OpKind::RemintCa { .. } | OpKind::ChangeCa { .. } => server
                .certificate
                .first()
                .and_then(|c| Certificate::try_from(c).ok())
                .and_then(|c| c.key_algorithm().ok())
                .and_then(|alg| KeySpec::ALL.into_iter().find(|k| k.algorithm() == alg))
                .unwrap_or_default(),
        }
    }

    /// Has `member`'s agent make a key and a CSR for an external CA (CE2, SR5): CN is the
    /// FQDN unless overridden, the SAN follows the profile, O/OU/L/ST/C from `fields`.
    pub(super) fn request_csr(
        &self,
        member: &str,
        profile: &ServerProfile,
        fields: &CsrFields,
        key: KeySpec,
    ) -> Result<crate::csr::CsrDer> {
        let subject = crate::csr::CsrSubject {
            common_name: profile.subject_common_name(),
            organization: fields.organization.clone(),
            organizational_unit: fields.organizational_unit.clone(),
            locality: fields.locality.clone(),
            state: fields.state.clone(),
            country: fields.country.clone(),
        };
        // Checked here, before the agent makes a key, so a bad field is a clear refusal.
        subject.to_name()?;
        let request = crate::csr::CsrRequest {
            subject,
            dns_names: profile.san(),
        };
        let response = self
            .transport
            .call(member, AgentRequest::Enroll { key, request })?;
        let AgentResponse::Csr(csr) = response else {
            return Err(unexpected(member, "a CSR", &response));
        };
        crate::csr::VerifiedCsr::from_der(csr.as_bytes())?;
        Ok(csr)
    }

    /// A1: fetch and stage the update.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        m: &Member,
        op: &Operation,
        zone: &ZoneRecord,
        u: &mut MemberUpdate,
        fail: bool,
        now: Timestamp,
        writes: &mut Vec<Write>,
    ) -> Result<RefreshOutcome> {
        let out = |o: &str, d: Option<String>| RefreshOutcome {
            name: m.name.clone(),
            outcome: o.into(),
            detail: d,
        };
        match u.status {
            MemberStatus::Applied | MemberStatus::Ignored => return Ok(out("up-to-date", None)),
            MemberStatus::Failed => {
                return Ok(out("failed", Some("waiting for redeploy".into())));
            }
            MemberStatus::Assigned | MemberStatus::Downloading => {}
        }
        if fail {
            u.status = MemberStatus::Failed;
            u.reason = Some("the agent reported a failure while applying the update".into());
            return Ok(out("failed", u.reason.clone()));
        }
        let (trust_now, trust_after) = Self::trust_sets(op, zone, now);
        let mut chain = Vec::new();
        if let (true, Some(s)) = (Self::needs_certificate(op, m), &m.server) {
            if u.future_chain.is_empty() {
                u.status = MemberStatus::Downloading;
                let issuer_der = Self::new_issuer(op, zone);
                match (Self::issuing_server(op), op.kind.csr_mode()) {
                    (Some(issuing), _) => {
                        let issuer = Certificate::try_from(&issuer_der)?;
                        let profile = Self::server_profile(op, s);
                        let key = Self::key_spec(op, s);
                        let issued = self
                            .issue_for_member(&m.name, &issuer, &issuing, key, &profile, now)
                            .and_then(|(leaf, w)| {
                                Self::check_new_leaf(op, zone, &leaf, &issuer)?;
                                Ok((leaf, w))
                            });
                        match issued {
                            Ok((leaf, w)) => {
                                writes.push(w);
                                u.future_chain = crate::ops::with_bridge(
                                    vec![leaf.der().clone(), issuer_der.clone()],
                                    Some(&issuer_der),
                                    op.served_bridge(),
                                );
                                u.cert_status = Some(ServerCertStatus::Created);
                            }
                            Err(e) => {
                                u.status = MemberStatus::Failed;
                                u.cert_status = Some(ServerCertStatus::Failed);
                                u.reason = Some(format!("creating certificate failed: {e}"));
                                return Ok(out("failed", u.reason.clone()));
                            }
                        }
                    }
                    (None, Some(CsrMode::Auto { fields, key })) => {
                        // CE2 automatic: the agent makes key and CSR; the certificate comes
                        // back through `cert import`.
                        if u.csr.is_none() {
                            let profile = Self::server_profile(op, s);
                            match self.request_csr(&m.name, &profile, fields, *key) {
                                Ok(csr) => {
                                    u.csr = Some(csr);
                                    u.cert_status = Some(ServerCertStatus::CsrGenerated);
                                }
                                Err(e) => {
                                    u.status = MemberStatus::Failed;
                                    u.cert_status = Some(ServerCertStatus::CsrFailed);
                                    u.reason = Some(format!("CSR generation failed: {e}"));
                                    return Ok(out("failed", u.reason.clone()));
                                }
                            }
                        }
                        u.reason = Some(
                            "waiting for the certificate: the CSR is made, and the external CA's \
                             certificate for it has not been imported yet"
                                .into(),
                        );
                        return Ok(out("waiting", u.reason.clone()));
                    }
                    (None, Some(CsrMode::Manual)) => {
                        // CE2 manual: the administrator's chain and key in the remint repository.
                        let request = AgentRequest::StageManual {
                            op_id: op.id,
                            activation: op.activation.at,
                            trust_now,
                            trust_after,
                            now,
                            bridge: op.served_bridge().cloned(),
                            anchor: Self::new_issuer(op, zone),
                            intermediates: match &op.kind {
                                OpKind::ChangeCa { intermediates, .. } => intermediates.clone(),
                                _ => zone.ca_intermediates.clone(),
                            },
                            acknowledged: op.acknowledged.clone(),
                        };
                        return match self.transport.call(&m.name, request) {
                            Ok(AgentResponse::Staged(chain)) => {
                                u.future_chain = chain;
                                u.cert_status = Some(ServerCertStatus::Uploaded);
                                u.status = MemberStatus::Applied;
                                u.reason = None;
                                Ok(out("applied", None))
                            }
                            Ok(other) => Err(unexpected(&m.name, "a staged chain", &other)),
                            Err(e) => {
                                u.reason = Some(e.to_string());
                                Ok(out("waiting", u.reason.clone()))
                            }
                        };
                    }
                    (None, None) => {
                        return Err(OpError::Selection(
                            "an external CA operation without a CSR mode".into(),
                        )
                        .into());
                    }
                }
            }
            chain = u.future_chain.clone();
        }
        let request = AgentRequest::Stage {
            op_id: op.id,
            activation: op.activation.at,
            trust_now,
            trust_after,
            chain,
            now,
        };
        match self.transport.call(&m.name, request) {
            Ok(_) => {
                u.status = MemberStatus::Applied;
                u.reason = None;
                Ok(out("applied", None))
            }
            Err(e) => {
                // A key that no longer matches (a lost pending key) needs a new certificate.
                if matches!(&e, TransportError::Refused { .. }) {
                    u.future_chain.clear();
                    u.cert_status = None;
                }
                u.status = MemberStatus::Failed;
                u.reason = Some(e.to_string());
                Ok(out("failed", u.reason.clone()))
            }
        }
    }

    /// A2, O8, O9: switch at activation; a member that missed it recovers with the bundle
    /// where one is available (O6).
    #[allow(clippy::too_many_arguments)]
    fn activate_member(
        &self,
        m: &Member,
        op: &Operation,
        zone: &ZoneRecord,
        u: &mut MemberUpdate,
        fail: bool,
        now: Timestamp,
        writes: &mut Vec<Write>,
    ) -> Result<RefreshOutcome> {
        let out = |o: &str, d: Option<String>| RefreshOutcome {
            name: m.name.clone(),
            outcome: o.into(),
            detail: d,
        };
        if u.switched || u.recovered || u.status == MemberStatus::Ignored {
            return Ok(out("up-to-date", None));
        }
        if u.status == MemberStatus::Applied {
            if fail {
                u.reason =
                    Some("activation failed on the member; retried at its next refresh".into());
                return Ok(out("failed", u.reason.clone()));
            }
            let mut result = self
                .transport
                .call(&m.name, AgentRequest::Activate { op_id: op.id, now });
            // B5: a member that switched, but whose switch a crash kept out of the store, has
            // nothing staged any more. Re-sending what it switched to is a no-op for it; a
            // server that did not switch refuses it (the certificate is not for its key).
            if let Err(TransportError::Refused { source, .. }) = &result
                && matches!(**source, AgentError::NotStaged { .. })
            {
                let trust = zone.trust_bundle(now);
                let resend = if u.future_chain.is_empty() {
                    AgentRequest::Trust { trust }
                } else {
                    AgentRequest::Install {
                        chain: u.future_chain.clone(),
                        trust,
                        now,
                    }
                };
                result = self.transport.call(&m.name, resend);
            }
            return match result {
                Ok(_) => {
                    u.switched = true;
                    u.reason = None;
                    Ok(out("activated", None))
                }
                Err(e) => {
                    // O9: retried at the next refresh.
                    u.reason = Some(format!(
                        "activation failed, retried at the next refresh: {e}"
                    ));
                    Ok(out("failed", u.reason.clone()))
                }
            };
        }
        // Stranded: the recovery bundle, where one is offered (O6).
        if self.recovery_available_on(op)?.is_empty() || fail {
            return Ok(out("stranded", Some("no recovery bundle available".into())));
        }
        let trust_after = zone.trust_bundle(now);
        if let Some(future_ca) = op.kind.future_ca() {
            match op.kind.cross_certificate() {
                Some(cross) => {
                    let req = AgentRequest::Recover {
                        new_ca: future_ca.clone(),
                        cross_certificate: cross.clone(),
                        trust_after: trust_after.clone(),
                        now,
                    };
                    if let Err(e) = self.transport.call(&m.name, req) {
                        return Ok(out("stranded", Some(e.to_string())));
                    }
                }
                // A server's new chain comes with the administrator's tool below.
                None if m.server.is_some() => {}
                None => {
                    return Ok(out(
                        "stranded",
                        Some(
                            "no bridge vouches for the new CA (the zone did not hold the old \
                             CA's key): install the new CA on this device by hand"
                                .into(),
                        ),
                    ));
                }
            }
        }
        // A stranded server also needs a certificate the members now trust: from the
        // certificate server, or, with an external CA, imported by the administrator.
        if let (true, Some(s)) = (Self::needs_certificate(op, m), &m.server) {
            let CaKind::Internal { certificate_server } = &zone.ca else {
                return Ok(out(
                    "stranded",
                    Some(
                        "the CA is external: a certificate for this server from it, under \
                         the CA the members now trust, has not been imported yet"
                            .into(),
                    ),
                ));
            };
            let issuer = Certificate::try_from(&zone.ca_certificate)?;
            let profile = Self::server_profile(op, s);
            let (leaf, w) = match self.issue_for_member(
                &m.name,
                &issuer,
                certificate_server,
                Self::key_spec(op, s),
                &profile,
                now,
            ) {
                Ok(x) => x,
                Err(e) => return Ok(out("stranded", Some(e.to_string()))),
            };
            let chain = vec![leaf.der().clone(), zone.ca_certificate.clone()];
            if let Err(e) = self.transport.call(
                &m.name,
                AgentRequest::Install {
                    chain: chain.clone(),
                    trust: trust_after,
                    now,
                },
            ) {
                return Ok(out("stranded", Some(e.to_string())));
            }
            writes.push(w);
            let key = keys::server(&m.name);
            if let Some(rec) = self.store.get(&key)? {
                let mut sr: ServerRecord = decode(&key, &rec.value)?;
                sr.certificate = chain;
                writes.push(Write::put(key, Expect::Version(rec.version), encode(&sr)));
            }
        }
        u.recovered = true;
        u.reason = None;
        Ok(out("recovered", None))
    }
}

/// Member names as an administrator typed them, folded the way the zone keys members (server
/// FQDNs and device names are case-insensitive, issue 9 item 6).
fn fold_names(names: &[String]) -> Vec<String> {
    names.iter().map(|n| member_lookup_name(n)).collect()
}
