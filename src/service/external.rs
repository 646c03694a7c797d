//! Change CA (CI1, CI2, CE1-CE4) and the CSR workflow of an external CA (SR3, SR5): Generate
//! CSR, Download CSRs as one zip, Import Certificate.

use std::collections::BTreeMap;
use std::io::Write as _;

use super::{Result, ZoneService, decode, encode, unexpected};
use crate::agent::{AgentRequest, AgentResponse, certificate_names};
use crate::ca::{CaParams, Serial, ServerProfile, ValidityYears, cross_certify};
use crate::cert::{Certificate, CertificateDer, bundle};
use crate::chain::{ChainError, NO_ISSUER_MESSAGE, verify_chain};
use crate::clock::{Clock, Timestamp};
use crate::csr::{CsrDer, VerifiedCsr};
use crate::key::KeySpec;
use crate::ops::update::{self, MemberUpdate};
use crate::ops::{ActivationRequest, CsrFields, CsrMode, NewCa, OpError, OpKind, Operation};
use crate::store::{Expect, Storage, Write};
use crate::transport::Transport;
use crate::zone::{CaKind, Fqdn, ServerRecord, ServerRole, ZoneError, keys};

/// Where Change CA puts the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeCaTarget {
    /// A new internal CA on a Primary Server (CI1).
    Internal {
        /// The new certificate server.
        server: Fqdn,
        /// Subject CN (default: the zone name).
        common_name: Option<String>,
        /// Key type.
        key: KeySpec,
        /// Validity, 1 to 10 years.
        validity: ValidityYears,
    },
    /// An external CA (CE1): a trusted root, or the complete chain server -> intermediate(s)
    /// -> root, in any of the six formats (the content decides).
    External {
        /// The uploaded file's bytes.
        chain: Vec<u8>,
        /// CSR mode (CE2).
        csr: CsrMode,
    },
}

/// Change CA's inputs. Made with [`ChangeCaRequest::new`] and the `with_*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChangeCaRequest {
    /// The new CA.
    pub to: ChangeCaTarget,
    /// Put servers' additional DNS names into their SANs.
    pub include_dns: bool,
    /// Activation.
    pub activation: ActivationRequest,
    /// The system update's name (default "Change CA").
    pub update_name: Option<String>,
    /// B2: activate only once the update has reached enough members.
    pub gate: Option<crate::ops::Gate>,
    /// B4: lint warnings the administrator accepts for this operation's certificates (an
    /// external chain's, and the server certificates imported for it).
    pub acknowledge: Vec<crate::lint::Rule>,
}

impl ChangeCaRequest {
    /// A Change CA to `to`, activated at `activation`, with defaults: servers' additional DNS
    /// names left out, update name "Change CA", no gate, no lint warning accepted.
    pub fn new(to: ChangeCaTarget, activation: ActivationRequest) -> Self {
        ChangeCaRequest {
            to,
            include_dns: false,
            activation,
            update_name: None,
            gate: None,
            acknowledge: Vec::new(),
        }
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
    pub fn with_gate(mut self, gate: crate::ops::Gate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// B4: lint warnings the administrator accepts for this operation's certificates.
    pub fn with_acknowledge(mut self, acknowledge: Vec<crate::lint::Rule>) -> Self {
        self.acknowledge = acknowledge;
        self
    }
}

/// CE1: the root of an uploaded chain, and the subordinate CAs that lead to it. Server
/// certificates in the upload are ignored; every subordinate must chain to the root.
pub(super) fn split_external_chain(
    bytes: &[u8],
    now: Timestamp,
    acknowledged: &[crate::lint::Rule],
) -> Result<(Certificate, Vec<Certificate>)> {
    let certs = bundle::read_certificates(bytes)?;
    let (roots, rest): (Vec<Certificate>, Vec<Certificate>) =
        certs.into_iter().partition(|c| c.is_self_signed());
    let root = match roots.as_slice() {
        [one] => one.clone(),
        [] => {
            return Err(OpError::Selection(
                "the uploaded chain has no root (self-signed) CA certificate: upload the \
                 trusted root, or the complete chain ending at it (CE1)"
                    .into(),
            )
            .into());
        }
        _ => {
            return Err(OpError::Selection(format!(
                "the uploaded chain has {} root certificates: upload one chain",
                roots.len()
            ))
            .into());
        }
    };
    if !root.is_ca() {
        return Err(OpError::Selection(format!(
            "{} is not a CA certificate (basicConstraints CA:TRUE missing)",
            root.subject()
        ))
        .into());
    }
    let intermediates: Vec<Certificate> = rest.into_iter().filter(Certificate::is_ca).collect();
    for i in &intermediates {
        verify_chain(i, &intermediates, std::slice::from_ref(&root), now)?;
    }
    verify_chain(&root, &[], std::slice::from_ref(&root), now)?;
    // B4: every CA certificate of the upload passes the pre-flight lint before it is stored.
    let mut findings = Vec::new();
    for c in intermediates.iter().chain(std::iter::once(&root)) {
        let issuer = if c == &root {
            Some(&root)
        } else {
            intermediates
                .iter()
                .chain(std::iter::once(&root))
                .find(|i| i.subject_name() == c.issuer_name() && *i != c)
        };
        findings.extend(crate::lint::lint_certificate(
            c,
            crate::lint::Context {
                role: crate::lint::CertRole::Ca,
                issuer,
                fqdn: None,
                external: true,
            },
        ));
    }
    crate::lint::enforce(findings, acknowledged)?;
    Ok((root, intermediates))
}

impl<S: Storage, T: Transport, C: Clock> ZoneService<S, T, C> {
    /// Starts a Change CA (CI1, CE1), from an internal or an external CA. With an internal
    /// current CA the zone holds its key, so the update carries a bridge: the new CA certified
    /// by the current one (B1), which also authenticates the recovery bundle (O6).
    pub fn start_change_ca(&self, req: ChangeCaRequest) -> Result<super::OpView> {
        let mut epoch = self.begin()?;
        let zone = self.zone()?;
        self.ensure_idle("Change CA")?;
        let now = self.clock.now();
        let current = Certificate::try_from(&zone.ca_certificate)?;
        let activation =
            crate::ops::check_activation(req.activation, now, current.not_after(), None)?;
        if let Some(g) = &req.gate {
            // B2: checked before the agent makes anything.
            g.check_for(&activation, current.not_after())?;
        }
        let initiating = match &zone.ca {
            CaKind::Internal { certificate_server } => certificate_server.clone(),
            CaKind::External => self.initiating_server()?,
        };
        let mut writes = Vec::new();
        let (to, future, intermediates) = match req.to {
            ChangeCaTarget::Internal {
                server,
                common_name,
                key,
                validity,
            } => {
                let primary = self
                    .server_record(&server)?
                    .is_some_and(|s| s.role == ServerRole::Primary);
                if !primary {
                    return Err(OpError::Selection(format!(
                        "{server} is not a Primary Server of the zone: only a Primary Server \
                         can hold the CA role (CI1)"
                    ))
                    .into());
                }
                let common_name = common_name.unwrap_or_else(|| zone.name.clone());
                crate::zone::check_zone_name(&common_name)?;
                let serial = Serial::random()?;
                let params = CaParams {
                    common_name: common_name.clone(),
                    validity,
                };
                let response = self.transport.call(
                    server.as_str(),
                    AgentRequest::CreateCa {
                        key,
                        params,
                        serial: serial.clone(),
                        now,
                        future: true,
                    },
                )?;
                let AgentResponse::CaCertificate(der) = response else {
                    return Err(unexpected(server.as_str(), "a CA certificate", &response));
                };
                let future = Certificate::try_from(&der)?;
                writes.push(super::serial_write(
                    &future,
                    &serial,
                    &future.subject(),
                    now,
                )?);
                (
                    NewCa::Internal {
                        server,
                        common_name,
                        key,
                        validity,
                    },
                    future,
                    Vec::new(),
                )
            }
            ChangeCaTarget::External { chain, csr } => {
                if let CsrMode::Auto { fields, .. } = &csr {
                    // Checked now so a bad field is refused before anything starts.
                    crate::csr::CsrSubject {
                        common_name: "check.example".into(),
                        organization: fields.organization.clone(),
                        organizational_unit: fields.organizational_unit.clone(),
                        locality: fields.locality.clone(),
                        state: fields.state.clone(),
                        country: fields.country.clone(),
                    }
                    .to_name()?;
                }
                let (root, intermediates) = split_external_chain(&chain, now, &req.acknowledge)?;
                if root.not_after() <= activation.at {
                    return Err(OpError::Selection(format!(
                        "the external root expires at {}, before activation",
                        root.not_after()
                    ))
                    .into());
                }
                if root.der() == &zone.ca_certificate {
                    return Err(OpError::Selection(
                        "the uploaded root is already the zone CA".into(),
                    )
                    .into());
                }
                (NewCa::External { csr }, root, intermediates)
            }
        };
        // B1: a bridge when the zone holds the current CA's key and the CA still signs.
        let cross = match &zone.ca {
            CaKind::Internal { certificate_server } if now <= current.not_after() => {
                let serial = Serial::random()?;
                let signer = self.ca_signer(certificate_server, &current)?;
                let c = cross_certify(&current, &signer, &future, &serial, now)?;
                writes.push(super::serial_write(&current, &serial, &c.subject(), now)?);
                Some(c.der().clone())
            }
            _ => None,
        };
        let members = self.member_count()?;
        let op = crate::ops::Op::new(
            self.next_op_id()?,
            OpKind::ChangeCa {
                to,
                include_dns: req.include_dns,
                future_ca: future.der().clone(),
                intermediates: intermediates.iter().map(|c| c.der().clone()).collect(),
                cross_certificate: cross,
            },
            req.update_name.unwrap_or_else(|| "Change CA".into()),
            activation,
            now,
            initiating,
            self.content_servers()?,
            members,
        );
        let op = Self::with_gate(op, req.gate, req.acknowledge, current.not_after())?;
        self.start(&mut epoch, op, writes)
    }

    /// The running operation's record of a server that needs a certificate from an external
    /// CA, with its store version.
    fn external_target(&self, op: &Operation, fqdn: &Fqdn) -> Result<(Expect, MemberUpdate)> {
        if op.kind.csr_mode().is_none() {
            return Err(OpError::Selection(format!(
                "the running {} issues its own certificates: CSRs belong to an external CA",
                op.kind
            ))
            .into());
        }
        let rec = self
            .server_record(fqdn)?
            .ok_or_else(|| ZoneError::UnknownServer {
                fqdn: fqdn.to_string(),
            })?;
        let targeted = match &op.kind {
            OpKind::ServerRemint { servers, .. } => servers.contains(fqdn),
            _ => rec.role.has_certificate(),
        };
        if !targeted {
            return Err(OpError::NotInUpdate {
                name: fqdn.to_string(),
            }
            .into());
        }
        let key = update::key(op.id, fqdn.as_str());
        Ok(match self.store.get(&key)? {
            Some(r) => (Expect::Version(r.version), decode(&key, &r.value)?),
            None => (
                Expect::Absent,
                MemberUpdate::assigned(fqdn.as_str(), self.clock.now()),
            ),
        })
    }

    /// The running operation for a CSR action, as [`ZoneService::load`] finds it (due
    /// scheduled work applied: a gate's postponement moves the cut-off, O7, B2): CSR actions
    /// are allowed before activation, outside the cut-off
    /// ([`crate::ops::Op::until_cutoff`]).
    fn csr_action(
        &self,
        now: Timestamp,
        event: &'static str,
    ) -> Result<Option<(Operation, super::operations::Due)>> {
        let Some(super::operations::Loaded { op, due }) = self.load(now)? else {
            return Ok(None);
        };
        let op = op
            .until_cutoff(now, event)
            .map_err(crate::ops::Refused::into_error)?;
        Ok(Some((op.into(), due)))
    }

    /// SR5 Generate CSR: each server's agent makes a new key and CSR (replacing an earlier
    /// one); CN only for a single server. Outside an operation, for servers of an external-CA
    /// zone that have no certificate yet.
    pub fn generate_csr(
        &self,
        fqdns: &[Fqdn],
        fields: &CsrFields,
        common_name: Option<String>,
        key: KeySpec,
    ) -> Result<Vec<(Fqdn, CsrDer)>> {
        let mut epoch = self.begin()?;
        if fqdns.is_empty() {
            return Err(OpError::Selection("name at least one server".into()).into());
        }
        if common_name.is_some() && fqdns.len() != 1 {
            return Err(OpError::Selection(
                "a common name can be given only for a single server (SR5)".into(),
            )
            .into());
        }
        let now = self.clock.now();
        let mut writes = Vec::new();
        let mut out = Vec::new();
        // The operation's record and its scheduled work, committed first.
        let mut current = None;
        match self.csr_action(now, "generate a CSR")? {
            Some((op, due)) => {
                let mut planned = Vec::new();
                for fqdn in fqdns {
                    planned.push((fqdn, self.external_target(&op, fqdn)?));
                }
                for (fqdn, (expect, mut u)) in planned {
                    let rec = self.server_record_of(fqdn)?;
                    let mut profile = self.csr_profile(&op, &rec);
                    profile.common_name = common_name.clone();
                    let csr = self.request_csr(fqdn.as_str(), &profile, fields, key)?;
                    u.csr_regenerated(csr.clone());
                    u.updated_at = now;
                    writes.push(Write::put(
                        update::key(op.id, fqdn.as_str()),
                        expect,
                        encode(&u),
                    ));
                    out.push((fqdn.clone(), csr));
                }
                current = Some((due, encode(&op)));
            }
            None => {
                let zone = self.zone()?;
                if !matches!(zone.ca, CaKind::External) {
                    return Err(OpError::Selection(
                        "no operation needs CSRs, and this zone's internal CA issues server \
                         certificates itself"
                            .into(),
                    )
                    .into());
                }
                for fqdn in fqdns {
                    let (version, mut rec) = self.server_record_versioned(fqdn)?;
                    let profile = ServerProfile {
                        fqdn: fqdn.to_string(),
                        common_name: common_name.clone(),
                        dns_names: rec.dns_names.clone(),
                        include_dns: true,
                        not_after: None,
                    };
                    let csr = self.request_csr(fqdn.as_str(), &profile, fields, key)?;
                    rec.csr = Some(csr.clone());
                    writes.push(Write::put(
                        keys::server(fqdn.as_str()),
                        Expect::Version(version),
                        encode(&rec),
                    ));
                    out.push((fqdn.clone(), csr));
                }
            }
        }
        let names: Vec<&str> = fqdns.iter().map(Fqdn::as_str).collect();
        let detail = serde_json::json!({ "servers": names });
        match current {
            Some((due, op)) => self.commit_after(
                &mut epoch,
                due,
                |v| {
                    writes.push(Write::put("op/current", v, op));
                    writes
                },
                "csr.generate",
                detail,
            )?,
            None => self.commit(&mut epoch, writes, "csr.generate", detail)?,
        }
        Ok(out)
    }

    fn op_for_csr(&self) -> Result<Option<(u64, Operation)>> {
        match self.store.get("op/current")? {
            Some(rec) => {
                let op: Operation = decode("op/current", &rec.value)?;
                Ok(Some((rec.version, op)))
            }
            None => Ok(None),
        }
    }

    fn server_record_versioned(&self, fqdn: &Fqdn) -> Result<(u64, ServerRecord)> {
        let key = keys::server(fqdn.as_str());
        let rec = self
            .store
            .get(&key)?
            .ok_or_else(|| ZoneError::UnknownServer {
                fqdn: fqdn.to_string(),
            })?;
        Ok((rec.version, decode(&key, &rec.value)?))
    }

    fn server_record_of(&self, fqdn: &Fqdn) -> Result<ServerRecord> {
        Ok(self.server_record_versioned(fqdn)?.1)
    }

    fn csr_profile(&self, op: &Operation, rec: &ServerRecord) -> ServerProfile {
        let include_dns = match &op.kind {
            OpKind::ServerRemint { include_dns, .. }
            | OpKind::ChangeCa { include_dns, .. }
            | OpKind::RemintCa { include_dns, .. } => *include_dns,
        };
        ServerProfile {
            fqdn: rec.fqdn.to_string(),
            common_name: None,
            dns_names: rec.dns_names.clone(),
            include_dns,
            not_after: None,
        }
    }

    /// The CSRs waiting for an external CA, for `fqdns` (all when empty).
    pub fn csrs(&self, fqdns: &[Fqdn]) -> Result<Vec<(Fqdn, CsrDer)>> {
        let mut found: BTreeMap<Fqdn, CsrDer> = BTreeMap::new();
        if let Some((_, op)) = self.op_for_csr()? {
            self.each_record(&update::prefix(op.id), |_, _, u: MemberUpdate| {
                if let (Some(csr), Ok(f)) = (u.csr, u.name.parse::<Fqdn>()) {
                    found.insert(f, csr);
                }
                std::ops::ControlFlow::Continue(())
            })?;
        }
        for s in self.server_records()? {
            if let Some(csr) = s.csr {
                found.entry(s.fqdn).or_insert(csr);
            }
        }
        if fqdns.is_empty() {
            if found.is_empty() {
                return Err(OpError::NoCsrs.into());
            }
            return Ok(found.into_iter().collect());
        }
        fqdns
            .iter()
            .map(|f| {
                found.get(f).map(|c| (f.clone(), c.clone())).ok_or_else(|| {
                    OpError::NoCsr {
                        fqdn: f.to_string(),
                        manual: false,
                    }
                    .into()
                })
            })
            .collect()
    }

    /// SR5 "Download CSRs as one zip": `<fqdn>.csr` (PEM) per server.
    pub fn csr_zip(&self, fqdns: &[Fqdn]) -> Result<Vec<u8>> {
        let csrs = self.csrs(fqdns)?;
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let mut zip = zip::ZipWriter::new(&mut buf);
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(0o644);
            for (fqdn, csr) in &csrs {
                zip.start_file(format!("{fqdn}.csr"), options)
                    .map_err(zip_err)?;
                zip.write_all(csr.to_pem().as_bytes()).map_err(zip_err)?;
            }
            zip.finish().map_err(zip_err)?;
        }
        Ok(buf.into_inner())
    }

    /// SR5 Import Certificate (CE3, CE4): the certificate for a server's CSR, from the
    /// external CA, as PEM, DER or PKCS#7 with any subordinate CAs. It must be for the CSR's
    /// key, name the server (a wildcard is accepted), and chain to the (future) zone CA,
    /// directly or through subordinates given in full; otherwise it is refused with the
    /// manual's message. Outside an operation it installs at once on a server of an
    /// external-CA zone that has a CSR.
    pub fn import_certificate(&self, fqdn: &Fqdn, bytes: &[u8]) -> Result<Vec<CertificateDer>> {
        self.import_certificate_acknowledging(fqdn, bytes, &[])
    }

    /// [`Self::import_certificate`], accepting the lint warnings of `acknowledge` (B4) on top
    /// of those acknowledged for the running operation (a wildcard certificate, CE4, is one).
    pub fn import_certificate_acknowledging(
        &self,
        fqdn: &Fqdn,
        bytes: &[u8],
        acknowledge: &[crate::lint::Rule],
    ) -> Result<Vec<CertificateDer>> {
        let mut epoch = self.begin()?;
        let now = self.clock.now();
        let certs = bundle::read_certificates(bytes)?;
        let zone = self.zone()?;
        match self.csr_action(now, "import a certificate")? {
            Some((op, due)) => {
                let (expect, mut u) = self.external_target(&op, fqdn)?;
                let csr = u.csr.clone().ok_or_else(|| OpError::NoCsr {
                    fqdn: fqdn.to_string(),
                    manual: true,
                })?;
                let anchor = op
                    .kind
                    .future_ca()
                    .cloned()
                    .unwrap_or(zone.ca_certificate.clone());
                let mut extra: Vec<CertificateDer> = match &op.kind {
                    OpKind::ChangeCa { intermediates, .. } => intermediates.clone(),
                    _ => zone.ca_intermediates.clone(),
                };
                extra.retain(|c| c != &anchor);
                let mut acknowledged = op.acknowledged.clone();
                acknowledged.extend_from_slice(acknowledge);
                let chain = check_import(
                    fqdn,
                    &csr,
                    certs,
                    &anchor,
                    &extra,
                    (now, op.activation.at),
                    &acknowledged,
                )?;
                // B1: served with the bridge in place of the future root.
                let chain = crate::ops::with_bridge(chain, Some(&anchor), op.served_bridge());
                u.certificate_uploaded(chain.clone());
                u.updated_at = now;
                let detail = serde_json::json!({ "server": fqdn, "operation": op.id });
                self.commit_after(
                    &mut epoch,
                    due,
                    |v| {
                        vec![
                            Write::put(update::key(op.id, fqdn.as_str()), expect, encode(&u)),
                            Write::put("op/current", v, encode(&op)),
                        ]
                    },
                    "cert.import",
                    detail,
                )?;
                Ok(chain)
            }
            None => {
                if !matches!(zone.ca, CaKind::External) {
                    return Err(OpError::Selection(
                        "this zone's CA is internal: its certificate server issues server \
                         certificates; there is nothing to import"
                            .into(),
                    )
                    .into());
                }
                let (version, mut rec) = self.server_record_versioned(fqdn)?;
                let csr = rec.csr.clone().ok_or_else(|| OpError::NoCsr {
                    fqdn: fqdn.to_string(),
                    manual: false,
                })?;
                let chain = check_import(
                    fqdn,
                    &csr,
                    certs,
                    &zone.ca_certificate,
                    &zone.ca_intermediates,
                    (now, now),
                    acknowledge,
                )?;
                let trust = zone.trust_bundle(now);
                self.transport.call(
                    fqdn.as_str(),
                    AgentRequest::Install {
                        chain: chain.clone(),
                        trust,
                        now,
                    },
                )?;
                rec.certificate = chain.clone();
                rec.csr = None;
                let writes = vec![Write::put(
                    keys::server(fqdn.as_str()),
                    Expect::Version(version),
                    encode(&rec),
                )];
                self.commit(
                    &mut epoch,
                    writes,
                    "cert.import",
                    serde_json::json!({ "server": fqdn }),
                )?;
                Ok(chain)
            }
        }
    }
}

fn zip_err(e: impl std::fmt::Display) -> crate::Error {
    OpError::Selection(format!("cannot write the CSR zip: {e}")).into()
}

/// CE3/CE4 checks of an imported certificate; returns the validated path, leaf first.
pub(super) fn check_import(
    fqdn: &Fqdn,
    csr: &CsrDer,
    certs: Vec<Certificate>,
    anchor: &CertificateDer,
    extra_intermediates: &[CertificateDer],
    (now, activation): (Timestamp, Timestamp),
    acknowledged: &[crate::lint::Rule],
) -> Result<Vec<CertificateDer>> {
    let csr = VerifiedCsr::from_der(csr.as_bytes())?;
    let Some(pos) = certs
        .iter()
        .position(|c| c.public_key() == csr.public_key())
    else {
        return Err(OpError::Selection(format!(
            "no certificate in the file is for {fqdn}'s CSR key: import the certificate the \
             external CA issued for this server's current CSR"
        ))
        .into());
    };
    let mut certs = certs;
    let leaf = certs.remove(pos);
    if !certificate_names(&leaf, fqdn.as_str()) {
        return Err(OpError::Selection(format!(
            "the certificate ({}) does not name {fqdn} in its subject alternative names",
            leaf.subject()
        ))
        .into());
    }
    if leaf.is_ca() {
        return Err(OpError::Selection(format!(
            "{} is a CA certificate, not a server certificate (S4)",
            leaf.subject()
        ))
        .into());
    }
    let mut intermediates: Vec<Certificate> =
        certs.into_iter().filter(|c| c.der() != anchor).collect();
    for d in extra_intermediates {
        intermediates.push(Certificate::try_from(d)?);
    }
    let anchor = Certificate::try_from(anchor)?;
    let path = verify_chain(&leaf, &intermediates, std::slice::from_ref(&anchor), now).map_err(
        |e| -> crate::Error {
            match e {
                // CE3: whatever breaks the link to the zone CA is refused in the manual's words.
                ChainError::NoIssuer { .. } => e.into(),
                ChainError::BadSignature { .. } => {
                    OpError::Selection(format!("{NO_ISSUER_MESSAGE} ({e})")).into()
                }
                other => other.into(),
            }
        },
    )?;
    if leaf.not_after() <= activation {
        return Err(OpError::Selection(format!(
            "the certificate expires at {}, before activation at {activation}",
            leaf.not_after()
        ))
        .into());
    }
    // B4: the imported chain passes the pre-flight lint before it is stored or staged.
    crate::lint::enforce(
        crate::lint::lint_chain(path.path(), Some(fqdn.as_str()), true),
        acknowledged,
    )?;
    Ok(path.path().iter().map(|c| c.der().clone()).collect())
}
