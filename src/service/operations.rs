//! The service side of staged operations (O1-O12): it loads the operation, feeds it events
//! with `now`, talks to agents, and commits every state change as one compare-and-swap
//! transaction with its audit entry. A crash between two commits loses nothing: every step is
//! idempotent and is simply run again (B5).
//!
//! The rules are the typed machine's ([`crate::ops::machine`]). An operation command loads
//! `op/current` once ([`ZoneService::load`]: the record becomes an [`AnyOp`] and any due
//! scheduled work, activation or the gate's postponement or hold, is applied in memory),
//! feeds its event once, and commits under the zone epoch it began at (B6): first the
//! scheduled work, as [`ZoneService::tick`] would have, then its own change. A refused
//! command commits nothing, not even an activation that was due.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use super::op_view::OpView;
use super::{Result, ZoneService, decode, encode, unexpected};
use crate::agent::{AgentRequest, AgentResponse};
use crate::audit::Epoch;
use crate::ca::{CaParams, Serial, ValidityYears, cross_certify};
use crate::cert::{Certificate, Fingerprint};
use crate::clock::{Clock, Timestamp};
use crate::key::KeySpec;
use crate::lint::{Finding, Rule};
use crate::ops::update::{self, MemberStatus, MemberUpdate};
use crate::ops::{
    ActivationRequest, AnyOp, CsrMode, Gate, NewCa, Op, OpError, OpKind, Operation, Refused,
    Replicating, TimeoutOutcome, check_activation,
};
use crate::store::{Expect, Storage, Write};
use crate::transport::Transport;
use crate::zone::{
    CaKind, Fqdn, RetiredCa, ServerRecord, ServerRole, ZoneError, ZoneRecord, keys,
    member_lookup_name,
};

pub(super) const CURRENT: &str = "op/current";
pub(super) const HISTORY: &str = "op/history/";

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

/// The operation as a command found it, after its due scheduled work
/// ([`ZoneService::load`]).
pub(super) struct Loaded {
    /// The operation, scheduled work applied.
    pub(super) op: AnyOp,
    /// What committing the scheduled work takes.
    pub(super) due: Due,
}

/// Scheduled work applied to a loaded operation and not yet committed.
pub(super) struct Due {
    /// The version of `op/current` as loaded.
    version: u64,
    /// The commit the scheduled work needs, if any was due.
    scheduled: Option<Scheduled>,
}

/// The commit of scheduled work: activation (O8), a postponement or a hold (B2).
pub(super) struct Scheduled {
    writes: Vec<Write>,
    event: &'static str,
    detail: serde_json::Value,
    /// Whether it activates the operation.
    activated: bool,
}

impl<S: Storage, T: Transport, C: Clock> ZoneService<S, T, C> {
    /// The running operation and its store version, if one runs.
    pub(super) fn current_op(&self) -> Result<Option<(u64, Operation)>> {
        match self.store.get(CURRENT)? {
            Some(rec) => Ok(Some((rec.version, decode(CURRENT, &rec.value)?))),
            None => Ok(None),
        }
    }

    pub(super) fn running_op(&self) -> Result<(u64, Operation)> {
        self.current_op()?
            .ok_or_else(|| OpError::NoOperation.into())
    }

    /// The operation in `op/current` as a command finds it at `now`: loaded once, with its due
    /// scheduled work (activation, or the gate's postponement or hold, O8, B2) applied but not
    /// committed. The command feeds its own event to [`Loaded::op`] and commits through
    /// [`Self::commit_after`], which commits the scheduled work first: a refused command
    /// commits nothing, not even an activation that was due.
    pub(super) fn load(&self, now: Timestamp) -> Result<Option<Loaded>> {
        let Some((version, rec)) = self.current_op()? else {
            return Ok(None);
        };
        let unscheduled = |op: AnyOp| Loaded {
            op,
            due: Due {
                version,
                scheduled: None,
            },
        };
        let op = AnyOp::from(rec);
        if op.poll_timeout().is_none_or(|at| now < at) {
            return Ok(Some(unscheduled(op)));
        }
        // Due: the gate's verdict and the stranded count are read from the record as loaded.
        let rec = Operation::from(op.clone());
        let updates = self.member_updates(&rec)?;
        let stranded = self.stranded_with(&rec, &updates)?;
        let verdict = self.gate_verdict(&rec, &updates)?;
        let (id, from) = (rec.id, rec.activation.at);
        let (op, outcome) = op.handle_timeout(now, verdict.as_ref(), stranded.len() as u64);
        let (op, scheduled) = match (op, outcome) {
            (op, TimeoutOutcome::Idle) => return Ok(Some(unscheduled(op))),
            (AnyOp::Activated(op), TimeoutOutcome::Activated) => {
                let (op, writes) = self.activation_writes(op, &updates, version)?;
                let detail = serde_json::json!({
                    "id": id, "activated_at": now, "stranded": stranded.len(),
                });
                let scheduled = Scheduled {
                    writes,
                    event: "op.activate",
                    detail,
                    activated: true,
                };
                (AnyOp::from(op), scheduled)
            }
            (op, outcome) => {
                // B2: the gate is not met: record the postponement (or the alarm) and its
                // notice; the cancel cut-off (O7) moves with the activation time.
                let (event, to) = match outcome {
                    TimeoutOutcome::Postponed(to) => ("op.postpone", Some(to)),
                    _ => ("op.hold", None),
                };
                let detail = serde_json::json!({
                    "id": id, "from": from, "to": to,
                    "reason": verdict.map(|v| v.to_string()),
                });
                let writes = vec![Write::put(
                    CURRENT,
                    Expect::Version(version),
                    encode(&Operation::from(op.clone())),
                )];
                let scheduled = Scheduled {
                    writes,
                    event,
                    detail,
                    activated: false,
                };
                (op, scheduled)
            }
        };
        Ok(Some(Loaded {
            op,
            due: Due {
                version,
                scheduled: Some(scheduled),
            },
        }))
    }

    /// [`Self::load`] for a command that needs an operation.
    pub(super) fn load_current(&self, now: Timestamp) -> Result<Loaded> {
        self.load(now)?.ok_or_else(|| OpError::NoOperation.into())
    }

    /// Commits the scheduled work `due` holds, if any, and returns the version `op/current`
    /// has then.
    pub(super) fn commit_due(&self, epoch: &mut Epoch, due: Due) -> Result<u64> {
        match due.scheduled {
            None => Ok(due.version),
            Some(s) => {
                self.commit(epoch, s.writes, s.event, s.detail)?;
                // The scheduled work's commit wrote `op/current` once.
                Ok(due.version.saturating_add(1))
            }
        }
    }

    /// Commits what a command decided on a [`Loaded`] operation: the scheduled work first (as
    /// [`Self::tick`] would have), then the command's `writes`, given what `op/current`'s
    /// write must expect, with the command's audit entry.
    pub(super) fn commit_after(
        &self,
        epoch: &mut Epoch,
        due: Due,
        writes: impl FnOnce(Expect) -> Vec<Write>,
        event: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        let version = self.commit_due(epoch, due)?;
        self.commit(epoch, writes(Expect::Version(version)), event, detail)
    }

    /// The last finished operation, if any.
    pub(super) fn last_finished_op(&self) -> Result<Option<Operation>> {
        // History keys carry the id zero-padded, so the greatest key is the newest: one read
        // whatever the length of the history.
        match self.store.last(HISTORY)? {
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

    pub(super) fn internal_ca_server(zone: &ZoneRecord, what: &str) -> Result<Fqdn> {
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
        // Servers are read in FQDN order until the first Primary Server.
        let mut found = None;
        self.each_record(keys::SERVER_PREFIX, |_, _, s: ServerRecord| {
            if s.role == ServerRole::Primary {
                found = Some(s.fqdn);
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
        found.ok_or_else(|| OpError::Selection("the zone has no Primary Server".into()).into())
    }

    pub(super) fn content_servers(&self) -> Result<Vec<Fqdn>> {
        Ok(Self::content_servers_of(&self.server_records()?))
    }

    /// The servers that replicate an update's content (O3): Primary Servers and Content
    /// Satellites.
    pub(super) fn content_servers_of(all: &[ServerRecord]) -> Vec<Fqdn> {
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
        let members = self.member_count()?;
        let op = Op::new(
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
        op: Op<Replicating>,
        gate: Option<Gate>,
        acknowledge: Vec<Rule>,
        ca_not_after: Timestamp,
    ) -> Result<Op<Replicating>> {
        let op = match gate {
            Some(gate) => op
                .with_gate(gate, ca_not_after)
                .map_err(Refused::into_error)?,
            None => op,
        };
        Ok(op.acknowledging(acknowledge))
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
        let op = Op::new(
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
        op: Op<Replicating>,
        mut writes: Vec<Write>,
    ) -> Result<OpView> {
        let now = self.clock.now();
        // A zone without content servers has nothing to replicate: assigned at once (O4).
        let op = Operation::from(op.serving_bridge(self.bridges).started(now));
        // B4: before the operation exists, and so before it can be assigned (O4): the checks
        // do not depend on the state.
        self.preflight(&op)?;
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
    pub(super) fn preflight(&self, op: &Operation) -> Result<()> {
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
    pub(super) fn check_new_leaf(
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

    /// Runs scheduled work (quinn-proto's `handle_timeout`): activation once its time has
    /// come (O8), or the gate's postponement or hold (B2). A spurious call changes nothing.
    /// Returns whether it activated. The operation commands (replicate, assign now, cancel,
    /// redeploy, ignore, baseline, the external CA's CSR actions) and a refresh run due
    /// scheduled work themselves, so they need no tick first.
    pub fn tick(&self) -> Result<bool> {
        self.tick_with(&mut self.begin()?)
    }

    /// [`tick`](Self::tick) as a step of a command that began at `epoch` (B6).
    pub(super) fn tick_with(&self, epoch: &mut Epoch) -> Result<bool> {
        let Some(loaded) = self.load(self.clock.now())? else {
            return Ok(false);
        };
        let activated = loaded.due.scheduled.as_ref().is_some_and(|s| s.activated);
        self.commit_due(epoch, loaded.due)?;
        Ok(activated)
    }

    /// Activation's writes (O8): the future certificates become current. The zone's records
    /// say so at once (the zone CA, the old CA kept as retired, B7, who holds the CA after a
    /// Change CA, and each server's staged chain); each member switches at its next refresh,
    /// the certificate server first. `version` is `op/current`'s as loaded.
    pub(super) fn activation_writes(
        &self,
        mut op: Op<crate::ops::Activated>,
        updates: &BTreeMap<String, (u64, MemberUpdate)>,
        version: u64,
    ) -> Result<(Op<crate::ops::Activated>, Vec<Write>)> {
        let mut zone = self.zone()?;
        let zone_version = self.store.get(keys::ZONE)?.map_or(0, |r| r.version);
        let mut writes = Vec::new();
        if let Some(future_ca) = op.kind.future_ca().cloned() {
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
            op = op.resign_required(
                Fingerprint::sha256(old.der().as_bytes()).to_string(),
                Fingerprint::sha256(future_ca.as_bytes()).to_string(),
            );
        }
        for (name, (_, u)) in updates {
            if u.status == MemberStatus::Applied && !u.future_chain.is_empty() {
                let key = keys::server(name);
                if let Some(rec) = self.store.get(&key)? {
                    let mut s: ServerRecord = decode(&key, &rec.value)?;
                    s.certificate = u.future_chain.clone();
                    writes.push(Write::put(key, Expect::Version(rec.version), encode(&s)));
                }
            }
        }
        writes.push(Write::put(
            CURRENT,
            Expect::Version(version),
            encode(&Operation::from(op.clone())),
        ));
        Ok((op, writes))
    }

    /// O3: record that the content reached these servers (the stand-in for a replication
    /// schedule); assigns automatically once every content server has it (O4).
    pub fn replicate(&self, servers: &[Fqdn]) -> Result<OpView> {
        let mut epoch = self.begin()?;
        let now = self.clock.now();
        let Loaded { mut op, due } = self.load_current(now)?;
        for s in servers {
            op = op.on_replicated(s, now).map_err(Refused::into_error)?;
        }
        let detail =
            serde_json::json!({ "id": op.core().id, "servers": servers, "state": op.name() });
        let rec = Operation::from(op);
        self.commit_after(
            &mut epoch,
            due,
            |v| vec![Write::put(CURRENT, v, encode(&rec))],
            "op.replicate",
            detail,
        )?;
        self.op_show()
    }

    /// O4: assign before replication completes.
    pub fn assign_now(&self) -> Result<OpView> {
        let mut epoch = self.begin()?;
        let now = self.clock.now();
        let Loaded { op, due } = self.load_current(now)?;
        let op = op.assign_now(now).map_err(Refused::into_error)?;
        let detail = serde_json::json!({ "id": op.id });
        let rec = Operation::from(op);
        self.commit_after(
            &mut epoch,
            due,
            |v| vec![Write::put(CURRENT, v, encode(&rec))],
            "op.assign_now",
            detail,
        )?;
        self.op_show()
    }

    /// O7: cancel until ten minutes before activation. The certificate server must discard
    /// the future CA key; if it cannot be reached the cancel fails and can be retried, and
    /// nothing changes. Members drop what they staged at their next refresh.
    pub fn cancel(&self) -> Result<OpView> {
        let mut epoch = self.begin()?;
        let now = self.clock.now();
        let Loaded { op, due } = self.load_current(now)?;
        let op = op.cancel(now).map_err(Refused::into_error)?;
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
        let (id, ca_server) = (op.id, op.ca_server.clone());
        let rec = Operation::from(op);
        self.commit_after(
            &mut epoch,
            due,
            |v| {
                vec![
                    Write::delete(CURRENT, v),
                    Write::create(history_key(id), encode(&rec)),
                ]
            },
            "op.cancel",
            serde_json::json!({ "id": id }),
        )?;
        if let Some(certificate) = discard {
            // Best effort: had the server gone away in the moment since it answered, the key
            // of a cancelled operation, which no member is asked to trust again, stays on it.
            let _ = self.transport.call(
                ca_server.as_str(),
                AgentRequest::DiscardFutureCa { certificate },
            );
        }
        self.op_show()
    }

    /// O5: send the update again to failed members (all failed ones when `names` is empty).
    pub fn redeploy(&self, names: &[String]) -> Result<OpView> {
        let names = &fold_names(names);
        let mut epoch = self.begin()?;
        let now = self.clock.now();
        let Loaded { op, due } = self.load_current(now)?;
        let op = Operation::from(op.redeploy(now).map_err(Refused::into_error)?);
        // Every failed member when none is named (the answer needs every member's status),
        // else point reads of the named ones.
        let updates = if names.is_empty() {
            self.member_updates(&op)?
                .into_iter()
                .filter(|(_, (_, u))| u.status == MemberStatus::Failed)
                .collect()
        } else {
            let mut named = BTreeMap::new();
            for name in names {
                if let Some(found) = self.member_update(&op, name)? {
                    named.insert(name.clone(), found);
                }
            }
            named
        };
        let chosen: Vec<&String> = if names.is_empty() {
            updates.keys().collect()
        } else {
            names.iter().collect()
        };
        let mut writes = Vec::new();
        for name in &chosen {
            match updates.get(*name) {
                Some((v, u)) if u.status == MemberStatus::Failed => {
                    let mut u = u.clone();
                    u.redeploy();
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
        self.commit_after(
            &mut epoch,
            due,
            |v| {
                writes.insert(0, Write::put(CURRENT, v, encode(&op)));
                writes
            },
            "op.redeploy",
            detail,
        )?;
        self.op_show()
    }

    /// O5: take members out of the update (allowed even inside the cut-off, O7).
    pub fn ignore(&self, names: &[String]) -> Result<OpView> {
        let names = &fold_names(names);
        let mut epoch = self.begin()?;
        let now = self.clock.now();
        let Loaded { op, due } = self.load_current(now)?;
        let op = Operation::from(op.live("ignore a device").map_err(Refused::into_error)?);
        let mut writes = Vec::new();
        // Point reads of the named members: the zone's other members are not the answer.
        for name in names {
            let m = self
                .member(name)?
                .filter(|m| Self::targeted(&op, m))
                .ok_or_else(|| OpError::NotInUpdate { name: name.clone() })?;
            let (expect, mut u) = match self.member_update(&op, &m.name)? {
                Some((v, u)) => (Expect::Version(v), u),
                None => (Expect::Absent, MemberUpdate::assigned(name, now)),
            };
            u.ignore();
            u.updated_at = now;
            writes.push(Write::put(update::key(op.id, name), expect, encode(&u)));
        }
        let detail = serde_json::json!({ "id": op.id, "members": names });
        self.commit_after(
            &mut epoch,
            due,
            |v| {
                writes.insert(0, Write::put(CURRENT, v, encode(&op)));
                writes
            },
            "op.ignore",
            detail,
        )?;
        self.op_show()
    }

    /// O10: finish the update; the recovery bundle goes away, so while members are stranded
    /// this needs `force`.
    pub fn baseline(&self, force: bool) -> Result<OpView> {
        let mut epoch = self.begin()?;
        let now = self.clock.now();
        let Loaded { op, due } = self.load_current(now)?;
        // Who is stranded does not depend on the state, only on the members' records and the
        // bridge (O8, B1).
        let rec = Operation::from(op.clone());
        let updates = self.member_updates(&rec)?;
        let stranded = self.stranded_with(&rec, &updates)?;
        let op = Operation::from(
            op.baseline(now, &stranded, force)
                .map_err(Refused::into_error)?,
        );
        // O10: a member that never reported has no record yet; record it as stranded, so that
        // refreshes know its recovery bundle went with this baseline.
        let mut writes = vec![Write::create(history_key(op.id), encode(&op))];
        for name in stranded.iter().filter(|n| !updates.contains_key(*n)) {
            let u = MemberUpdate::assigned(name, now);
            writes.push(Write::create(update::key(op.id, name), encode(&u)));
        }
        let detail =
            serde_json::json!({ "id": op.id, "forced": force, "stranded": stranded.len() });
        self.commit_after(
            &mut epoch,
            due,
            |v| {
                writes.insert(0, Write::delete(CURRENT, v));
                writes
            },
            "op.baseline",
            detail,
        )?;
        self.op_show()
    }
}

/// Member names as an administrator typed them, folded the way the zone keys members (server
/// FQDNs and device names are case-insensitive, issue 9 item 6).
pub(super) fn fold_names(names: &[String]) -> Vec<String> {
    names.iter().map(|n| member_lookup_name(n)).collect()
}
