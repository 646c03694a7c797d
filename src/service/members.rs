//! Members as an operation sees them: who is targeted, who needs a certificate, what each
//! trusts before and after activation, and the per-member records, read by key or paged
//! (issue 10 item 2).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use super::operations::HISTORY;
use super::{Result, ZoneService, decode, unexpected};
use crate::agent::{AgentRequest, AgentResponse};
use crate::ca::ServerProfile;
use crate::cert::{Certificate, CertificateDer};
use crate::clock::{Clock, Timestamp};
use crate::key::KeySpec;
use crate::ops::update::{self, MemberUpdate};
use crate::ops::{CsrFields, NewCa, OpKind, OpState, Operation};
use crate::store::Storage;
use crate::transport::Transport;
use crate::zone::{CaKind, Fqdn, ServerRecord, ServerRole, ZoneRecord, keys};

/// A member as the operation sees it.
pub(super) struct Member {
    pub(super) name: String,
    /// Boxed: 100,000 devices have none, and a `Member` stays small.
    pub(super) server: Option<Box<ServerRecord>>,
}

impl<S: Storage, T: Transport, C: Clock> ZoneService<S, T, C> {
    /// Every member of the zone, servers first in the order activation uses (O8): the
    /// certificate server, other Primary Servers, then everything else.
    pub(super) fn members(&self) -> Result<Vec<Member>> {
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
        self.each_device_name(&mut |name| {
            out.push(Member {
                name: name.to_string(),
                server: None,
            });
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// Member `name` (a server's FQDN or a device's name), by point reads of its record.
    pub(super) fn member(&self, name: &str) -> Result<Option<Member>> {
        let key = keys::server(name);
        if let Some(rec) = self.store.get(&key)? {
            let s: ServerRecord = decode(&key, &rec.value)?;
            return Ok(Some(Member {
                name: s.fqdn.to_string(),
                server: Some(Box::new(s)),
            }));
        }
        Ok(self.store.get(&keys::device(name))?.map(|_| Member {
            name: name.to_string(),
            server: None,
        }))
    }

    /// Member `name`'s update record in `op`, with its version: one point read.
    pub(super) fn member_update(
        &self,
        op: &Operation,
        name: &str,
    ) -> Result<Option<(u64, MemberUpdate)>> {
        let key = update::key(op.id, name);
        match self.store.get(&key)? {
            Some(rec) => Ok(Some((rec.version, decode(&key, &rec.value)?))),
            None => Ok(None),
        }
    }

    /// Whether `member` is in the operation's update.
    pub(super) fn targeted(op: &Operation, member: &Member) -> bool {
        match &op.kind {
            OpKind::RemintCa { .. } | OpKind::ChangeCa { .. } => true,
            OpKind::ServerRemint { servers, .. } => member
                .server
                .as_ref()
                .is_some_and(|s| servers.contains(&s.fqdn)),
        }
    }

    /// Whether `member` needs a new certificate from this operation.
    pub(super) fn needs_certificate(op: &Operation, member: &Member) -> bool {
        match &op.kind {
            OpKind::RemintCa { .. } | OpKind::ChangeCa { .. } => member
                .server
                .as_ref()
                .is_some_and(|s| s.role.has_certificate()),
            OpKind::ServerRemint { .. } => Self::targeted(op, member),
        }
    }

    /// Every member's update record of `op`, for the answers that need every member (the
    /// gate's coverage, the stranded members, a refresh of the fleet). Read one record at a
    /// time.
    pub(super) fn member_updates(
        &self,
        op: &Operation,
    ) -> Result<BTreeMap<String, (u64, MemberUpdate)>> {
        let mut out = BTreeMap::new();
        self.each_record(&update::prefix(op.id), |_, version, u: MemberUpdate| {
            out.insert(u.name.clone(), (version, u));
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// The names of members stranded by activation (O8), from their records `updates`.
    pub(super) fn stranded_with(
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

    /// O10: members left stranded by a Remint CA baselined with `force`. They trust only the
    /// old CA, so they can no longer reach the zone, and the recovery bundle is gone.
    pub(super) fn cut_off_members(&self) -> Result<BTreeSet<String>> {
        // Every finished operation is looked at (any forced baseline may have cut members
        // off), one history record at a time; only the forced ones' member records are read.
        let mut forced = Vec::new();
        self.each_record(HISTORY, |_, _, op: Operation| {
            if matches!(op.kind, OpKind::RemintCa { .. })
                && matches!(op.state, OpState::Baselined(ref b) if b.forced)
            {
                forced.push(op);
            }
            ControlFlow::Continue(())
        })?;
        let mut out = BTreeSet::new();
        for op in forced {
            let updates = self.member_updates(&op)?;
            out.extend(
                updates
                    .into_values()
                    .filter(|(_, u)| u.is_stranded())
                    .map(|(_, u)| u.name),
            );
        }
        Ok(out)
    }

    /// O6: the servers that offer the recovery bundle now.
    pub(super) fn recovery_available_on(&self, op: &Operation) -> Result<Vec<String>> {
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

    /// The anchors a member trusts between staging and activation, and after it.
    pub(super) fn trust_sets(
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
    pub(super) fn new_issuer(op: &Operation, zone: &ZoneRecord) -> CertificateDer {
        op.kind
            .future_ca()
            .cloned()
            .unwrap_or_else(|| zone.ca_certificate.clone())
    }

    /// The server whose agent signs the operation's certificates; `None` when an external
    /// CA issues them.
    pub(super) fn issuing_server(op: &Operation) -> Option<Fqdn> {
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

    pub(super) fn server_profile(op: &Operation, s: &ServerRecord) -> ServerProfile {
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
    pub(super) fn key_spec(op: &Operation, server: &ServerRecord) -> KeySpec {
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
}
