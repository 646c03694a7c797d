//! The zone's side of the agent protocol (N1, N2, N5): an agent's message in, the answer
//! out, state committed. The answers follow from the operation, the member's update record
//! and the state the agent reports, never from what the zone believes it said before, so a
//! repeated message is harmless (N2).
//!
//! Messages are answered in batches ([`ZoneService::answer_batch`]): one transaction for the
//! whole batch, conditioned on the zone epoch the batch began at (B6). A conflict with
//! another frontend's commit runs the batch again, so the answers always rest on what was
//! committed.

use std::collections::BTreeMap;

use super::{Result, ZoneService, decode, encode};
use crate::ca::{Serial, issue_server_certificate};
use crate::cert::{Certificate, CertificateDer};
use crate::clock::{Clock, Timestamp};
use crate::csr::{CsrDer, CsrRequest, CsrSubject, VerifiedCsr};
use crate::error::Error;
use crate::ops::update::{self, MemberStatus, MemberUpdate, ServerCertStatus};
use crate::ops::{AnyOp, CsrMode, OpKind, OpState, Operation, Refused, Replication};
use crate::protocol::{
    AgentMessage, Instruction, MAX_CLOCK_SKEW_SECS, ProtocolError, Report, Standing, ZoneAnswer,
    sha256_hex,
};
use crate::store::{Expect, Storage, Write};
use crate::transport::Transport;
use crate::zone::member_lookup_name;
use crate::zone::{CaKind, ServerRecord, ServerRole, ZoneError, ZoneRecord, keys};

use super::members::Member;
use super::operations::CURRENT;

/// How often a batch is run again when another frontend committed in between (B6).
const MAX_ATTEMPTS: usize = 8;

/// Why one message of a batch got no answer. The rest of the batch is answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboundError {
    /// The message itself was refused (wrong member, version, form).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The member is not in this zone.
    #[error("{name} is not a member of this zone")]
    UnknownMember {
        /// The name the message gave.
        name: String,
    },
}

/// What one batch decided: answers, and what to commit.
struct Decided {
    answers: Vec<std::result::Result<ZoneAnswer, InboundError>>,
    writes: Vec<Write>,
}

/// The per-batch working set: records read once and kept current as messages are decided.
struct Batch<'a> {
    zone: &'a ZoneRecord,
    now: Timestamp,
    /// The running operation as the batch changes it, with its version.
    op: Option<(u64, Operation)>,
    /// Member update records read or written by the batch: version read (None: absent).
    updates: BTreeMap<String, (Option<u64>, MemberUpdate, bool)>,
    /// Server records the batch changes, with the version read.
    servers: BTreeMap<String, (u64, ServerRecord)>,
    /// Serial-number records of certificates issued by the batch (S3).
    serials: Vec<Write>,
    cut_off: std::collections::BTreeSet<String>,
    /// Certificates issued ahead for the batch's CSRs, side by side (see
    /// [`ZoneService::with_concurrency`]).
    issued: BTreeMap<String, Result<(Certificate, Write)>>,
}

impl<S: Storage, T: Transport, C: Clock> ZoneService<S, T, C> {
    /// Answers one agent's message (N1). `authenticated` is the member the sender proved to
    /// be (by its TLS client certificate, or, in process, by who it is): a message for
    /// another member is refused (N3). Scheduled work that is due (activation) runs first.
    pub fn answer(&self, authenticated: &str, message: AgentMessage) -> Result<ZoneAnswer> {
        let mut out = self.answer_batch(vec![(authenticated.to_string(), message)])?;
        match out.pop() {
            Some(Ok(a)) => Ok(a),
            Some(Err(InboundError::Protocol(e))) => Err(e.into()),
            Some(Err(InboundError::UnknownMember { name })) => {
                Err(ZoneError::UnknownMember { name }.into())
            }
            None => unreachable!("one message in, one answer out"),
        }
    }

    /// Answers a batch of messages in one transaction (a daemon's group commit; the
    /// in-process fleet's batches). Each message gets its answer or its refusal; an error of
    /// the store fails the whole batch, changing nothing.
    pub fn answer_batch(
        &self,
        messages: Vec<(String, AgentMessage)>,
    ) -> Result<Vec<std::result::Result<ZoneAnswer, InboundError>>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut epoch = self.begin()?;
            // N6: scheduled work that is due runs before the answers rest on it.
            let result = self.tick_with(&mut epoch).and_then(|_| {
                let decided = self.decide_batch(&messages)?;
                if !decided.writes.is_empty() {
                    let detail = serde_json::json!({
                        "messages": messages.len(),
                        "first": messages.first().map(|(n, _)| n),
                    });
                    self.commit(&mut epoch, decided.writes, "agent.report", detail)?;
                }
                Ok(decided.answers)
            });
            match result {
                Err(e) if e.is_retryable() && attempt < MAX_ATTEMPTS => continue,
                r => return r,
            }
        }
    }

    fn decide_batch(&self, messages: &[(String, AgentMessage)]) -> Result<Decided> {
        let zone = self.zone()?;
        let now = self.clock.now();
        let mut b = Batch {
            zone: &zone,
            now,
            op: self.current_op()?,
            updates: BTreeMap::new(),
            servers: BTreeMap::new(),
            serials: Vec::new(),
            cut_off: self.cut_off_members()?,
            issued: BTreeMap::new(),
        };
        b.issued = self.issue_ahead(&b, messages)?;
        let op_before = b.op.clone();
        let mut answers = Vec::with_capacity(messages.len());
        for (authenticated, message) in messages {
            answers.push(self.decide_one(&mut b, authenticated, message)?);
        }
        let mut writes = std::mem::take(&mut b.serials);
        let op_id = b.op.as_ref().map(|(_, o)| o.id);
        for (name, (version, u, changed)) in std::mem::take(&mut b.updates) {
            if !changed {
                continue;
            }
            let Some(id) = op_id else { continue };
            let expect = version.map_or(Expect::Absent, Expect::Version);
            writes.push(Write::put(update::key(id, &name), expect, encode(&u)));
        }
        for (name, (version, s)) in std::mem::take(&mut b.servers) {
            writes.push(Write::put(
                keys::server(&name),
                Expect::Version(version),
                encode(&s),
            ));
        }
        if let (Some((version, before)), Some((_, after))) = (&op_before, &b.op)
            && after != before
        {
            writes.push(Write::put(
                CURRENT,
                Expect::Version(*version),
                encode(after),
            ));
        }
        Ok(Decided { answers, writes })
    }

    fn decide_one(
        &self,
        b: &mut Batch<'_>,
        authenticated: &str,
        message: &AgentMessage,
    ) -> Result<std::result::Result<ZoneAnswer, InboundError>> {
        let name = member_lookup_name(&message.member);
        if name != member_lookup_name(authenticated) {
            return Ok(Err(ProtocolError::WrongMember {
                authenticated: authenticated.to_string(),
                claimed: message.member.clone(),
            }
            .into()));
        }
        let Some(member) = self.member(&name)? else {
            return Ok(Err(InboundError::UnknownMember { name }));
        };
        let (instruction, standing) = self.decide(b, &member, message)?;
        let mut answer = ZoneAnswer::new(instruction, standing);
        // A staged update: poll again by its activation time at the latest (N5).
        if let Some(s) = &message.state.staged {
            answer.poll_by = Some(s.activation);
        }
        let skew = message.now.unix() - b.now.unix();
        if skew.abs() > MAX_CLOCK_SKEW_SECS {
            answer.clock_skew_secs = Some(skew);
        }
        Ok(Ok(answer))
    }

    /// A member's update record in the running operation, read once per batch.
    fn update_of<'b>(
        &self,
        b: &'b mut Batch<'_>,
        op_id: u64,
        name: &str,
    ) -> Result<&'b mut (Option<u64>, MemberUpdate, bool)> {
        if !b.updates.contains_key(name) {
            let key = update::key(op_id, name);
            let entry = match self.store.get(&key)? {
                Some(rec) => (Some(rec.version), decode(&key, &rec.value)?, false),
                None => (None, MemberUpdate::assigned(name, b.now), false),
            };
            b.updates.insert(name.to_string(), entry);
        }
        Ok(b.updates.get_mut(name).expect("inserted above"))
    }

    /// The instruction for `m` and how the zone sees it.
    fn decide(
        &self,
        b: &mut Batch<'_>,
        m: &Member,
        msg: &AgentMessage,
    ) -> Result<(Instruction, Standing)> {
        let now = b.now;
        if b.cut_off.contains(&m.name) {
            return Ok((
                Instruction::Nothing,
                Standing::Stranded {
                    reason: "missed a CA change whose recovery bundle was discarded when the \
                             operation was baselined: the zone CA must be installed on it by hand"
                        .into(),
                },
            ));
        }
        // The running operation is read in place, not cloned: a batch answers thousands of
        // messages against it (issue 10 item 7, the scale bench).
        let running =
            b.op.as_ref()
                .filter(|(_, o)| o.state.is_running())
                .map(|(_, o)| o.id);
        // Something staged for an operation that is not the running one (a cancel, O7) goes
        // first, whatever else the member is due.
        if let Some(staged) = &msg.state.staged
            && running.is_none_or(|id| id != staged.op_id)
        {
            return Ok((
                Instruction::Unstage {
                    op_id: staged.op_id,
                    trust: b.zone.trust_bundle(now),
                },
                Standing::Unstaged,
            ));
        }
        if running.is_none() {
            return Ok(self.sync_trust(b.zone, msg, now));
        }
        // O3: a content server that polls pulls the update's content; the last one assigns
        // the update (O4).
        let mut replicated = false;
        if let Some(s) = &m.server
            && let Some((_, live)) = b.op.as_mut()
            && !matches!(live.state, OpState::Activated(_))
            && live.replication.get(&s.fqdn) == Some(&Replication::Pending)
        {
            *live = AnyOp::from(live.clone())
                .on_replicated(&s.fqdn, now)
                .map_err(Refused::into_error)?
                .into();
            replicated = true;
        }
        if !b.op.as_ref().is_some_and(|(_, o)| Self::targeted(o, m)) {
            let (i, s) = self.sync_trust(b.zone, msg, now);
            return Ok((i, if replicated { Standing::Replicated } else { s }));
        }
        // The member's decision borrows the batch mutably (its update record), so the
        // operation is taken out of it meanwhile and put back after; `apply` and
        // `after_activation` do not read `b.op`.
        let (version, op) = b.op.take().expect("running above");
        let answer = self.decide_targeted(b, &op, m, msg, replicated);
        b.op = Some((version, op));
        let answer = answer?;
        // O12: every Primary Server's future certificate exists.
        let Some((_, op)) = &b.op else {
            return Ok(answer);
        };
        if matches!(op.kind, OpKind::RemintCa { .. })
            && op.is_assigned()
            && m.server
                .as_ref()
                .is_some_and(|s| s.role == ServerRole::Primary)
        {
            self.note_legacy_point(b)?;
        }
        Ok(answer)
    }

    /// The instruction for `m`, which `op` (the running operation, taken out of `b`) targets.
    fn decide_targeted(
        &self,
        b: &mut Batch<'_>,
        op: &Operation,
        m: &Member,
        msg: &AgentMessage,
        replicated: bool,
    ) -> Result<(Instruction, Standing)> {
        Ok(match &op.state {
            OpState::Replicating(_) => (
                Instruction::Nothing,
                if replicated {
                    Standing::Replicated
                } else {
                    Standing::Waiting {
                        reason: Some("the update is not assigned yet (replication)".into()),
                    }
                },
            ),
            OpState::Assigned(_) => self.apply(b, op, m, msg)?,
            OpState::Activated(_) => self.after_activation(b, op, m, msg)?,
            _ => (Instruction::Nothing, Standing::UpToDate),
        })
    }

    /// O12: notes the legacy refresh point once every Primary Server's future certificate
    /// exists.
    fn note_legacy_point(&self, b: &mut Batch<'_>) -> Result<()> {
        let Some((_, op)) = &b.op else { return Ok(()) };
        if op
            .notices
            .iter()
            .any(|n| matches!(n, crate::ops::Notice::LegacyRefreshPoint { .. }))
        {
            return Ok(());
        }
        let op_id = op.id;
        for s in self.server_records()? {
            if s.role != ServerRole::Primary {
                continue;
            }
            let u = self.update_of(b, op_id, s.fqdn.as_str())?;
            if u.1.cert_status != Some(ServerCertStatus::Created) {
                return Ok(());
            }
        }
        if let Some((_, op)) = b.op.as_mut() {
            *op = AnyOp::from(op.clone()).legacy_point_reached(b.now).into();
        }
        Ok(())
    }

    /// A member outside any running update: it trusts the zone's anchors.
    fn sync_trust(
        &self,
        zone: &ZoneRecord,
        msg: &AgentMessage,
        now: Timestamp,
    ) -> (Instruction, Standing) {
        let trust = zone.trust_bundle(now);
        let want: Vec<String> = trust.iter().map(|c| sha256_hex(c.as_bytes())).collect();
        if let Some(Report::Failed { reason, .. }) = &msg.report {
            // Sent again at its next poll.
            return (
                Instruction::Nothing,
                Standing::Failed {
                    reason: reason.clone(),
                },
            );
        }
        if msg.state.trust == want {
            (Instruction::Nothing, Standing::UpToDate)
        } else {
            (Instruction::Trust { trust }, Standing::TrustUpdated)
        }
    }

    /// A1: fetch and stage the update.
    fn apply(
        &self,
        b: &mut Batch<'_>,
        op: &Operation,
        m: &Member,
        msg: &AgentMessage,
    ) -> Result<(Instruction, Standing)> {
        let now = b.now;
        let zone = b.zone;
        let manual = matches!(op.kind.csr_mode(), Some(CsrMode::Manual))
            && Self::issuing_server(op).is_none();
        let needs_cert = Self::needs_certificate(op, m);
        let (trust_now, trust_after) = Self::trust_sets(op, zone, now);
        let entry = self.update_of(b, op.id, &m.name)?;
        let before = entry.1.clone();
        let mut u = entry.1.clone();
        let mut csr_in: Option<CsrDer> = None;
        // The report of the last instruction.
        match &msg.report {
            Some(Report::Failed {
                op_id: Some(id),
                reason,
            }) if *id == op.id => {
                if manual {
                    // CE2 manual mode: the administrator's files are missing or wrong; the
                    // member waits for them.
                    u.waiting(reason.clone());
                } else {
                    // A key that is gone (neither pending nor staged) needs a new certificate.
                    let key_lost = !msg.state.pending_key && msg.state.staged.is_none();
                    u.failed(reason.clone(), None, key_lost);
                }
            }
            Some(Report::Staged { op_id, chain }) if *op_id == op.id => {
                if manual {
                    u.certificate_uploaded(chain.clone());
                }
                u.staged();
            }
            Some(Report::Csr {
                op_id: Some(id),
                csr,
            }) if *id == op.id => csr_in = Some(csr.clone()),
            _ => {}
        }
        let answer = 'answer: {
            match u.status {
                MemberStatus::Ignored => break 'answer (Instruction::Nothing, Standing::UpToDate),
                MemberStatus::Failed => {
                    break 'answer (
                        Instruction::Nothing,
                        Standing::Failed {
                            reason: u
                                .reason
                                .clone()
                                .unwrap_or_else(|| "the member failed to apply the update".into()),
                        },
                    );
                }
                // Staged, for the activation time the operation has now (B2 may move it: then
                // it stages again with the new time, below).
                MemberStatus::Applied
                    if msg
                        .state
                        .staged
                        .as_ref()
                        .is_some_and(|s| s.op_id == op.id && s.activation == op.activation.at) =>
                {
                    // Applied by this message, or long since.
                    let standing = if before.status == MemberStatus::Applied {
                        Standing::UpToDate
                    } else {
                        Standing::Applied
                    };
                    break 'answer (Instruction::Nothing, standing);
                }
                // Applied, but the member lost what it staged (B5): stage again below.
                _ => {}
            }
            if manual && needs_cert && u.future_chain.is_empty() {
                // Fetching: the member reads the administrator's files (SR4 "downloading").
                u.fetching();
                if let Some(reason) = &u.reason
                    && msg.report.is_some()
                {
                    break 'answer (
                        Instruction::Nothing,
                        Standing::Waiting {
                            reason: Some(reason.clone()),
                        },
                    );
                }
                break 'answer (
                    Self::stage_manual(op, zone, trust_now, trust_after),
                    Standing::InProgress,
                );
            }
            if needs_cert
                && u.future_chain.is_empty()
                && let Some(s) = &m.server
            {
                let profile = Self::server_profile(op, s);
                let key = Self::key_spec(op, s);
                match (Self::issuing_server(op), op.kind.csr_mode()) {
                    (Some(issuing), _) => {
                        let Some(csr) = csr_in else {
                            u.fetching();
                            break 'answer (
                                Instruction::MakeKey {
                                    op_id: Some(op.id),
                                    key,
                                    request: CsrRequest {
                                        subject: CsrSubject::cn(profile.subject_common_name()),
                                        dns_names: profile.san(),
                                    },
                                },
                                Standing::InProgress,
                            );
                        };
                        let issuer_der = Self::new_issuer(op, zone);
                        let issued = match b.issued.remove(&m.name) {
                            Some(issued) => issued,
                            None => self.issue_for_op(op, zone, &csr, &issuing, &profile, now),
                        };
                        match issued {
                            Ok((leaf, w)) => {
                                b.serials.push(w);
                                u.certificate_created(crate::ops::with_bridge(
                                    vec![leaf.der().clone(), issuer_der.clone()],
                                    Some(&issuer_der),
                                    op.served_bridge(),
                                ));
                            }
                            Err(e) if e.is_retryable() => return Err(e),
                            Err(e) => {
                                u.failed(
                                    format!("creating certificate failed: {e}"),
                                    Some(ServerCertStatus::Failed),
                                    false,
                                );
                                break 'answer (
                                    Instruction::Nothing,
                                    Standing::Failed {
                                        reason: u.reason.clone().unwrap_or_default(),
                                    },
                                );
                            }
                        }
                    }
                    (None, Some(CsrMode::Auto { fields, key })) => {
                        // CE2 automatic: the agent makes key and CSR; the certificate comes
                        // back when the administrator imports the external CA's answer.
                        if let Some(csr) = csr_in {
                            match VerifiedCsr::from_der(csr.as_bytes()) {
                                Ok(_) => {
                                    u.csr_generated(csr);
                                }
                                Err(e) => {
                                    u.failed(
                                        format!("CSR generation failed: {e}"),
                                        Some(ServerCertStatus::CsrFailed),
                                        false,
                                    );
                                    break 'answer (
                                        Instruction::Nothing,
                                        Standing::Failed {
                                            reason: u.reason.clone().unwrap_or_default(),
                                        },
                                    );
                                }
                            }
                        }
                        if u.csr.is_none() {
                            let subject = CsrSubject {
                                common_name: profile.subject_common_name(),
                                organization: fields.organization.clone(),
                                organizational_unit: fields.organizational_unit.clone(),
                                locality: fields.locality.clone(),
                                state: fields.state.clone(),
                                country: fields.country.clone(),
                            };
                            if let Err(e) = subject.to_name() {
                                u.failed(
                                    format!("CSR generation failed: {e}"),
                                    Some(ServerCertStatus::CsrFailed),
                                    false,
                                );
                                break 'answer (
                                    Instruction::Nothing,
                                    Standing::Failed {
                                        reason: u.reason.clone().unwrap_or_default(),
                                    },
                                );
                            }
                            u.fetching();
                            break 'answer (
                                Instruction::MakeKey {
                                    op_id: Some(op.id),
                                    key: *key,
                                    request: CsrRequest {
                                        subject,
                                        dns_names: profile.san(),
                                    },
                                },
                                Standing::InProgress,
                            );
                        }
                        u.waiting(
                            "waiting for the external CA's certificate for this server's CSR",
                        );
                        break 'answer (
                            Instruction::Nothing,
                            Standing::Waiting {
                                reason: u.reason.clone(),
                            },
                        );
                    }
                    (None, _) => {
                        return Err(crate::ops::OpError::Selection(
                            "an external CA operation without a CSR mode".into(),
                        )
                        .into());
                    }
                }
            }
            if u.status == MemberStatus::Applied && manual {
                // Staged from the administrator's files; they are gone with what the member
                // staged, so it cannot stage them again by itself.
                break 'answer (
                    Self::stage_manual(op, zone, trust_now, trust_after),
                    Standing::InProgress,
                );
            }
            (
                Instruction::Stage {
                    op_id: op.id,
                    activation: op.activation.at,
                    trust_now,
                    trust_after,
                    chain: if needs_cert {
                        u.future_chain.clone()
                    } else {
                        Vec::new()
                    },
                },
                Standing::InProgress,
            )
        };
        self.keep_update(b, op.id, &m.name, &before, u)?;
        Ok(answer)
    }

    /// Keeps `u` as the batch's version of `name`'s update record, to commit, when it differs
    /// from the record as read (`before`).
    fn keep_update(
        &self,
        b: &mut Batch<'_>,
        op_id: u64,
        name: &str,
        before: &MemberUpdate,
        mut u: MemberUpdate,
    ) -> Result<()> {
        if &u != before {
            u.updated_at = b.now;
            let entry = self.update_of(b, op_id, name)?;
            entry.1 = u;
            entry.2 = true;
        }
        Ok(())
    }

    /// CE2 manual mode: stage the administrator's chain and key from the remint repository,
    /// checked against the operation's CA and its subordinates.
    fn stage_manual(
        op: &Operation,
        zone: &ZoneRecord,
        trust_now: Vec<CertificateDer>,
        trust_after: Vec<CertificateDer>,
    ) -> Instruction {
        Instruction::StageManual {
            op_id: op.id,
            activation: op.activation.at,
            trust_now,
            trust_after,
            bridge: op.served_bridge().cloned(),
            anchor: Self::new_issuer(op, zone),
            intermediates: match &op.kind {
                OpKind::ChangeCa { intermediates, .. } => intermediates.clone(),
                _ => zone.ca_intermediates.clone(),
            },
            acknowledged: op.acknowledged.clone(),
        }
    }

    /// A2, O8, O9: after activation. A member switches by its own clock and says so; a
    /// member that missed the update recovers with the bundle where one is offered (O6).
    fn after_activation(
        &self,
        b: &mut Batch<'_>,
        op: &Operation,
        m: &Member,
        msg: &AgentMessage,
    ) -> Result<(Instruction, Standing)> {
        let now = b.now;
        let zone = b.zone;
        let entry = self.update_of(b, op.id, &m.name)?;
        let before = entry.1.clone();
        let mut u = entry.1.clone();
        let trust_after = zone.trust_bundle(now);
        let future_fp = op.kind.future_ca().map(|c| sha256_hex(c.as_bytes()));
        let leaf_fp = u.future_chain.first().map(|c| sha256_hex(c.as_bytes()));
        let needs_cert = Self::needs_certificate(op, m);
        let mut server_chain: Option<Vec<CertificateDer>> = None;
        let answer = 'answer: {
            if u.switched || u.recovered || u.status == MemberStatus::Ignored {
                break 'answer (Instruction::Nothing, Standing::UpToDate);
            }
            if u.status == MemberStatus::Applied {
                let switched_report = matches!(&msg.report,
                    Some(Report::Activated { op_id, .. }) if *op_id == op.id);
                // What the member holds says whether it switched, also when its report was
                // lost (B5): nothing staged for this operation, the future CA trusted, and on
                // a server the future certificate in use.
                let holds_after = msg.state.staged.as_ref().is_none_or(|s| s.op_id != op.id)
                    && future_fp
                        .as_ref()
                        .is_none_or(|f| msg.state.trust.contains(f))
                    && (!needs_cert || msg.state.certificate == leaf_fp);
                if switched_report || holds_after {
                    u.switched();
                    break 'answer (Instruction::Nothing, Standing::Activated);
                }
                if let Some(Report::Failed {
                    op_id: Some(id),
                    reason,
                }) = &msg.report
                    && *id == op.id
                {
                    // O9: retried at the member's next contact.
                    u.switch_failed(format!(
                        "activation failed on the member, retried at its next contact: {reason}"
                    ));
                    break 'answer (
                        Instruction::Nothing,
                        Standing::Failed {
                            reason: u.reason.clone().unwrap_or_default(),
                        },
                    );
                }
                if msg.state.staged.as_ref().is_some_and(|s| s.op_id == op.id) {
                    // It switches at the activation time by its own clock (N5).
                    break 'answer (Instruction::Nothing, Standing::Applied);
                }
                // B5: it lost what it staged: what it would have switched to, at once.
                break 'answer if needs_cert && !u.future_chain.is_empty() {
                    (
                        Instruction::Install {
                            op_id: Some(op.id),
                            chain: u.future_chain.clone(),
                            trust: trust_after,
                        },
                        Standing::InProgress,
                    )
                } else {
                    (
                        Instruction::Trust { trust: trust_after },
                        Standing::InProgress,
                    )
                };
            }
            // Missed the update: the recovery bundle, where one is offered (O6).
            if let Some(Report::Failed { reason, .. }) = &msg.report {
                break 'answer (
                    Instruction::Nothing,
                    Standing::Stranded {
                        reason: reason.clone(),
                    },
                );
            }
            if self.recovery_available_on(op)?.is_empty() {
                break 'answer (
                    Instruction::Nothing,
                    Standing::Stranded {
                        reason: "no recovery bundle available".into(),
                    },
                );
            }
            let trusts_new = future_fp
                .as_ref()
                .is_none_or(|f| msg.state.trust.contains(f));
            if !trusts_new {
                match (op.kind.future_ca(), op.kind.cross_certificate()) {
                    (Some(new_ca), Some(cross)) => {
                        break 'answer (
                            Instruction::Recover {
                                op_id: op.id,
                                new_ca: new_ca.clone(),
                                cross_certificate: cross.clone(),
                                trust_after,
                            },
                            Standing::InProgress,
                        );
                    }
                    // A server's new chain and trust come with its certificate below.
                    _ if m.server.is_some() => {}
                    _ => {
                        break 'answer (
                            Instruction::Nothing,
                            Standing::Stranded {
                                reason: "no bridge vouches for the new CA (the zone did not hold \
                                         the old CA's key): the new CA must be installed on this \
                                         device by hand"
                                    .into(),
                            },
                        );
                    }
                }
            }
            let Some(s) = m.server.as_ref().filter(|_| needs_cert) else {
                u.recovered();
                break 'answer (Instruction::Nothing, Standing::Recovered);
            };
            // A stranded server also needs a certificate the members now trust: from the
            // certificate server, or, with an external CA, imported by the administrator.
            if matches!(msg.report, Some(Report::Done))
                && leaf_fp.is_some()
                && msg.state.certificate == leaf_fp
            {
                server_chain = Some(u.future_chain.clone());
                u.recovered();
                break 'answer (Instruction::Nothing, Standing::Recovered);
            }
            let CaKind::Internal { certificate_server } = &zone.ca else {
                break 'answer (
                    Instruction::Nothing,
                    Standing::Stranded {
                        reason: "the CA is external: this server needs a certificate from it, \
                                 imported by the administrator"
                            .into(),
                    },
                );
            };
            let profile = Self::server_profile(op, s);
            let Some(Report::Csr { op_id: None, csr }) = &msg.report else {
                break 'answer (
                    Instruction::MakeKey {
                        op_id: None,
                        key: Self::key_spec(op, s),
                        request: CsrRequest {
                            subject: CsrSubject::cn(profile.subject_common_name()),
                            dns_names: profile.san(),
                        },
                    },
                    Standing::InProgress,
                );
            };
            let issuer = Certificate::try_from(&zone.ca_certificate)?;
            match self.issue_from_csr(csr, &issuer, certificate_server, &profile, now) {
                Ok((leaf, w)) => {
                    b.serials.push(w);
                    u.recovery_certificate(vec![leaf.der().clone(), zone.ca_certificate.clone()]);
                    (
                        Instruction::Install {
                            op_id: Some(op.id),
                            chain: u.future_chain.clone(),
                            trust: trust_after,
                        },
                        Standing::InProgress,
                    )
                }
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => (
                    Instruction::Nothing,
                    Standing::Stranded {
                        reason: e.to_string(),
                    },
                ),
            }
        };
        if let Some(chain) = server_chain {
            self.set_server_chain(b, &m.name, chain)?;
        }
        self.keep_update(b, op.id, &m.name, &before, u)?;
        Ok(answer)
    }

    /// Issues a server's certificate for `op` from its CSR, and checks it (B4).
    fn issue_for_op(
        &self,
        op: &Operation,
        zone: &ZoneRecord,
        csr: &CsrDer,
        issuing: &crate::zone::Fqdn,
        profile: &crate::ca::ServerProfile,
        now: Timestamp,
    ) -> Result<(Certificate, Write)> {
        let issuer = Certificate::try_from(&Self::new_issuer(op, zone)).map_err(Error::from)?;
        let (leaf, w) = self.issue_from_csr(csr, &issuer, issuing, profile, now)?;
        Self::check_new_leaf(op, zone, &leaf, &issuer)?;
        Ok((leaf, w))
    }

    /// The certificates a batch's CSR reports ask for, issued side by side by up to
    /// [`ZoneService::with_concurrency`] workers (the certificate server signs for servers on
    /// their own hosts at once); everything else in the batch is light and stays in order.
    fn issue_ahead(
        &self,
        b: &Batch<'_>,
        messages: &[(String, AgentMessage)],
    ) -> Result<BTreeMap<String, Result<(Certificate, Write)>>> {
        let Some((_, op)) =
            b.op.as_ref()
                .filter(|(_, o)| matches!(o.state, OpState::Assigned(_)))
        else {
            return Ok(BTreeMap::new());
        };
        let Some(issuing) = Self::issuing_server(op) else {
            return Ok(BTreeMap::new());
        };
        let mut jobs = Vec::new();
        for (authenticated, msg) in messages {
            let Some(Report::Csr {
                op_id: Some(id),
                csr,
            }) = &msg.report
            else {
                continue;
            };
            let name = member_lookup_name(&msg.member);
            if *id != op.id || name != member_lookup_name(authenticated) {
                continue;
            }
            let Some(m) = self.member(&name)? else {
                continue;
            };
            let Some(s) = m
                .server
                .as_ref()
                .filter(|_| Self::needs_certificate(op, &m))
            else {
                continue;
            };
            let key = update::key(op.id, &name);
            if let Some(rec) = self.store.get(&key)? {
                let u: MemberUpdate = decode(&key, &rec.value)?;
                if !u.future_chain.is_empty() {
                    continue;
                }
            }
            jobs.push((name, csr.clone(), Self::server_profile(op, s)));
        }
        let workers = self.concurrency.get().min(jobs.len());
        if workers <= 1 {
            return Ok(BTreeMap::new());
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((name, csr, profile)) = jobs.get(i) else {
                    break;
                };
                let r = self.issue_for_op(op, b.zone, csr, &issuing, profile, b.now);
                mine.push((name.clone(), r));
            }
            mine
        };
        Ok(std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..workers).map(|_| scope.spawn(work)).collect();
            let mut all = work();
            for h in helpers {
                all.extend(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            }
            all.into_iter().collect()
        }))
    }

    /// Records a server's new current chain (a recovered server).
    fn set_server_chain(
        &self,
        b: &mut Batch<'_>,
        name: &str,
        chain: Vec<CertificateDer>,
    ) -> Result<()> {
        if !b.servers.contains_key(name) {
            let key = keys::server(name);
            let Some(rec) = self.store.get(&key)? else {
                return Ok(());
            };
            b.servers
                .insert(name.to_string(), (rec.version, decode(&key, &rec.value)?));
        }
        if let Some((_, s)) = b.servers.get_mut(name) {
            s.certificate = chain;
        }
        Ok(())
    }

    /// Issues a server certificate for a member's CSR under `issuer`, whose key
    /// `ca_server`'s agent holds (S1: the member's key never left it). Returns the
    /// certificate and the serial-number write to commit with it (S3).
    pub(super) fn issue_from_csr(
        &self,
        csr: &CsrDer,
        issuer: &Certificate,
        ca_server: &crate::zone::Fqdn,
        profile: &crate::ca::ServerProfile,
        now: Timestamp,
    ) -> Result<(Certificate, Write)> {
        let csr = VerifiedCsr::from_der(csr.as_bytes())?;
        let serial = Serial::random()?;
        let signer = self.ca_signer(ca_server, issuer)?;
        let leaf = issue_server_certificate(issuer, &signer, &csr, profile, &serial, now)?;
        let write = super::serial_write(issuer, &serial, &leaf.subject(), now)?;
        Ok((leaf, write))
    }
}

impl<S: Storage, T: Transport, C: Clock> ZoneService<S, T, C> {
    /// The members named (all when `names` is empty), folded the way the zone keys them, in
    /// the order activation uses (O8): the certificate server, other Primary Servers, then
    /// everyone else. An unknown name is refused. The in-process fleet refreshes in this
    /// order.
    pub fn member_order(&self, names: &[String]) -> Result<Vec<String>> {
        if names.is_empty() {
            return Ok(self.members()?.into_iter().map(|m| m.name).collect());
        }
        // Named members are read by key, not by reading every member (issue 10 item 2).
        let zone = self.zone()?;
        let ca_server = match &zone.ca {
            CaKind::Internal { certificate_server } => Some(certificate_server.as_str()),
            CaKind::External => None,
        };
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            let n = member_lookup_name(n);
            let Some(m) = self.member(&n)? else {
                return Err(ZoneError::UnknownMember { name: n }.into());
            };
            let rank = match &m.server {
                Some(s) if Some(s.fqdn.as_str()) == ca_server => 0,
                Some(s) if s.role == ServerRole::Primary => 1,
                Some(_) => 2,
                None => 3,
            };
            out.push(((rank, m.name.clone()), m.name));
        }
        out.sort();
        out.dedup();
        Ok(out.into_iter().map(|(_, n)| n).collect())
    }
}

impl<S: Storage, T: Transport, C: Clock> ZoneService<S, T, C> {
    /// When the zone next has scheduled work (N6): the running operation's activation time
    /// (B2 may move it), or `None`. A daemon sleeps until then, or until a message comes.
    pub fn poll_timeout(&self) -> Result<Option<Timestamp>> {
        Ok(self
            .current_op()?
            .and_then(|(_, op)| AnyOp::from(op).poll_timeout()))
    }

    /// Runs the scheduled work that is due at the clock's time (quinn-proto's
    /// `handle_timeout`): activation (O8), or B2's postponement or hold. Returns whether it
    /// activated; a call with nothing due changes nothing. Commands and [`Self::answer`] run
    /// what is due themselves: this is for a daemon's timer.
    pub fn handle_timeout(&self) -> Result<bool> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.tick_with(&mut self.begin()?) {
                Err(e) if e.is_retryable() && attempt < MAX_ATTEMPTS => continue,
                r => return r,
            }
        }
    }
}
