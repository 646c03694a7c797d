//! The service: the one place that does I/O. It reads the [`Clock`], loads records from the
//! [`Storage`], talks to members' agents over the [`Transport`], and commits each command's
//! changes as one compare-and-swap transaction together with its audit entry (S6, B6).
//!
//! A refused command changes nothing in the store: every check runs before the single commit.
//! Where a command also changes a member (a new key and certificate on an agent), the member is
//! changed first and the store last, so a failure leaves the store untouched and the member
//! with an unused certificate that the next enrolment replaces.

mod custody;
mod endpoints;
mod enrol;
mod external;
mod inbound;
mod members;
mod op_view;
mod operations;

pub use custody::{InitExternal, Replacement};
pub use endpoints::{Endpoint, EndpointError, MAX_ENDPOINT_URL};
pub(crate) use enrol::CmpTransaction;
pub use enrol::{EnrolmentError, Refusal, TOKEN_MAX_VALIDITY, credential_member};
pub use external::{ChangeCaRequest, ChangeCaTarget};
pub use inbound::InboundError;
pub use op_view::{
    GateOutcome, GateView, MemberView, OpView, Plan, PlanEntry, PlanGate, ReplicationView,
    ServerCertView,
};
pub use operations::{RemintCaRequest, ServerRemintRequest};

use std::collections::{BTreeSet, BinaryHeap};
use std::num::NonZeroUsize;
use std::ops::ControlFlow;
use std::time::Duration;

use serde::de::DeserializeOwned;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

use crate::agent::{AgentRequest, AgentResponse};
use crate::audit::{self, AuditReport, Epoch};
use crate::ca::{CaParams, Serial, ServerProfile, ValidityYears, issue_server_certificate};
use crate::cert::{CertError, Certificate, CertificateDer, colon_hex};
use crate::clock::{Clock, Timestamp};
use crate::csr::{CsrRequest, CsrSubject, VerifiedCsr};
use crate::error::{Error, Result};
use crate::key::{KeyError, KeySpec, Signer, signature_algorithm_for};
use crate::store::{Storage, StoreError, Write};
use crate::transport::{Transport, TransportError};
use crate::view::{
    CaType, CaView, CertificateStatus, DevicePage, DeviceQuery, DeviceView, ServerOption,
    ServerStatus, ServerView, UpdateStatus, Warning, WarningSubject, natural_cmp,
};
use crate::zone::{
    CaKind, DeviceRecord, Fqdn, RECORD_VERSION, SerialRecord, ServerRecord, ServerRole, ZoneError,
    ZoneRecord, check_zone_name, device_name, keys,
};

/// A new server (Z1). Made with [`NewServer::new`] and the `with_*` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NewServer {
    /// FQDN.
    pub fqdn: Fqdn,
    /// Role.
    pub role: ServerRole,
    /// Parent Primary Server (required for Authentication Satellites).
    pub parent: Option<Fqdn>,
    /// Additional DNS names.
    pub dns_names: Vec<String>,
    /// Agent version.
    pub agent_version: String,
    /// Key type its agent generates.
    pub key: KeySpec,
    /// Whether [`ZoneService::add_server`] enrols it at once through its agent (the default),
    /// or only records it, its agent enrolling later with a registration token (N3).
    pub enrol_now: bool,
}

impl NewServer {
    /// A server of `role` with defaults: no parent, no extra names, agent version `unknown`,
    /// a P-256 key.
    pub fn new(fqdn: Fqdn, role: ServerRole) -> Self {
        NewServer {
            fqdn,
            role,
            parent: None,
            dns_names: Vec::new(),
            agent_version: "unknown".into(),
            key: KeySpec::default(),
            enrol_now: true,
        }
    }

    /// Records the server without enrolling it: its agent, on its own host, enrols later with
    /// a registration token ([`ZoneService::issue_tokens`], [`ZoneService::enroll`]; N3).
    pub fn without_enrolment(mut self) -> Self {
        self.enrol_now = false;
        self
    }

    /// The Primary Server an Authentication Satellite attaches to.
    pub fn with_parent(mut self, parent: Fqdn) -> Self {
        self.parent = Some(parent);
        self
    }

    /// Additional DNS names.
    pub fn with_dns_names(mut self, dns_names: Vec<String>) -> Self {
        self.dns_names = dns_names;
        self
    }

    /// The agent's version.
    pub fn with_agent_version(mut self, agent_version: impl Into<String>) -> Self {
        self.agent_version = agent_version.into();
        self
    }

    /// The key type its agent generates.
    pub fn with_key(mut self, key: KeySpec) -> Self {
        self.key = key;
        self
    }
}

/// A new zone with an internal CA (Z2). Made with [`InitInternal::new`] and the `with_*`
/// settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InitInternal {
    /// Zone name; also the CA's CN unless `ca_subject` is given.
    pub zone: String,
    /// CA subject CN (default: the zone name).
    pub ca_subject: Option<String>,
    /// The first Primary Server: it gets the CA role.
    pub first_server: NewServer,
    /// CA key type.
    pub ca_key: KeySpec,
    /// CA validity.
    pub validity: ValidityYears,
}

impl InitInternal {
    /// Zone `zone` whose CA role `first_server` holds, with defaults: the CA's CN is the zone
    /// name, a P-256 key, ten years.
    pub fn new(zone: impl Into<String>, first_server: NewServer) -> Self {
        InitInternal {
            zone: zone.into(),
            ca_subject: None,
            first_server,
            ca_key: KeySpec::default(),
            validity: ValidityYears::default(),
        }
    }

    /// The CA's CN, other than the zone name.
    pub fn with_ca_subject(mut self, common_name: impl Into<String>) -> Self {
        self.ca_subject = Some(common_name.into());
        self
    }

    /// The CA's key type.
    pub fn with_ca_key(mut self, key: KeySpec) -> Self {
        self.ca_key = key;
        self
    }

    /// The CA's validity.
    pub fn with_validity(mut self, validity: ValidityYears) -> Self {
        self.validity = validity;
        self
    }
}

/// Signs through the certificate server's agent: the CA key never leaves it (S1).
struct AgentCaSigner<'a, T: Transport> {
    transport: &'a T,
    member: &'a str,
    public_key: SubjectPublicKeyInfoOwned,
    algorithm: AlgorithmIdentifierOwned,
}

impl<T: Transport> Signer for AgentCaSigner<'_, T> {
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        self.algorithm.clone()
    }
    fn public_key_info(&self) -> SubjectPublicKeyInfoOwned {
        self.public_key.clone()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let request = AgentRequest::SignCertificate {
            tbs: message.to_vec(),
        };
        match self.transport.call(self.member, request) {
            Ok(AgentResponse::Signature(sig)) => Ok(sig),
            Ok(other) => Err(KeyError::Signing {
                reason: format!("certificate server {} answered {other:?}", self.member),
            }),
            // D2: the certificate server is another process, down or cut off for now.
            Err(TransportError::Unreachable { reason, .. }) => Err(KeyError::SignerUnreachable {
                holder: self.member.to_string(),
                reason,
            }),
            Err(e) => Err(KeyError::Signing {
                reason: e.to_string(),
            }),
        }
    }
}

/// A zone, served from a store, reaching its members through a transport.
#[derive(Debug)]
pub struct ZoneService<S, T, C> {
    store: S,
    transport: T,
    clock: C,
    /// B1: servers present the bridge after a CA change or remint (see [`Self::without_bridges`]).
    bridges: bool,
    /// How many members a refresh serves at once (see [`Self::with_concurrency`]).
    concurrency: NonZeroUsize,
}

fn decode<V: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<V> {
    serde_json::from_slice(bytes).map_err(|e| {
        ZoneError::BadRecord {
            key: key.to_string(),
            reason: e.to_string(),
        }
        .into()
    })
}

fn encode<V: serde::Serialize>(v: &V) -> Vec<u8> {
    serde_json::to_vec(v).expect("records are plain data and always serialise")
}

fn unexpected(member: &str, what: &str, got: &AgentResponse) -> Error {
    TransportError::Unreachable {
        member: member.to_string(),
        reason: format!("expected {what}, got {got:?}"),
    }
    .into()
}

impl<S: Storage, T: Transport, C: Clock> ZoneService<S, T, C> {
    /// A service over `store`, reaching members through `transport`, with `clock` for "now".
    pub fn new(store: S, transport: T, clock: C) -> Self {
        ZoneService {
            store,
            transport,
            clock,
            bridges: true,
            concurrency: std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
        }
    }

    /// How many servers a refresh (`fleet refresh`) serves at once while they get their new
    /// certificates: each agent makes its key and CSR, the service checks the CSR, the CA's
    /// agent signs and the agent checks its new chain, and the servers' work runs on worker
    /// threads side by side, as it does on their own hosts. The CA's agent still signs one
    /// certificate at a time. The default is the number of CPUs
    /// ([`std::thread::available_parallelism`]); 1 serves servers one by one.
    ///
    /// Whatever the number, a refresh's outcomes, the records it writes and the audit log are
    /// the same, in member order. The light work of other members (trust updates, devices
    /// staging) stays on the calling thread, and activation is always one by one in O8's
    /// order.
    pub fn with_concurrency(mut self, workers: NonZeroUsize) -> Self {
        self.concurrency = workers;
        self
    }

    /// B1 is on by default: after a CA change or remint, servers present the bridge (the new
    /// CA certified by the old one) in place of the new CA, so members that missed the update
    /// still validate them until the old CA expires, and are "bridged" rather than stranded.
    /// Without bridges, such members are stranded at activation, as the manuals describe, and
    /// need the recovery bundle. Operations started by this service follow this setting.
    pub fn without_bridges(mut self) -> Self {
        self.bridges = false;
        self
    }

    /// Takes the service apart (to close the store, say).
    pub fn into_parts(self) -> (S, T, C) {
        (self.store, self.transport, self.clock)
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The clock's current time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The zone record.
    pub fn zone(&self) -> Result<ZoneRecord> {
        let rec = self.store.get(keys::ZONE)?.ok_or(ZoneError::NoZone)?;
        decode(keys::ZONE, &rec.value)
    }

    /// The zone CA certificate.
    pub fn ca_certificate(&self) -> Result<Certificate> {
        Ok(Certificate::try_from(&self.zone()?.ca_certificate)?)
    }

    fn server_record(&self, fqdn: &Fqdn) -> Result<Option<ServerRecord>> {
        let key = keys::server(fqdn.as_str());
        self.store
            .get(&key)?
            .map(|r| decode(&key, &r.value))
            .transpose()
    }

    /// Every server record, in FQDN order. A zone has tens of servers, not thousands: the
    /// commands whose answer depends on every server (the server list, the expiry warnings,
    /// the trust an activation keeps) read them all; a question about one server reads one.
    pub fn server_records(&self) -> Result<Vec<ServerRecord>> {
        let mut out = Vec::new();
        self.each_record(keys::SERVER_PREFIX, |_, _, s: ServerRecord| {
            out.push(s);
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// Every device record, in name order: memory for every device of the zone, for callers
    /// whose answer needs every device. A page of devices is
    /// [`device_list`](Self::device_list), a count [`member_count`](Self::member_count).
    pub fn device_records(&self) -> Result<Vec<DeviceRecord>> {
        let mut out = Vec::new();
        self.each_record(keys::DEVICE_PREFIX, |_, _, d: DeviceRecord| {
            out.push(d);
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// How many members (servers and devices) the zone has. Counts keys: no record is
    /// decoded or kept.
    pub fn member_count(&self) -> Result<u64> {
        let mut n = 0u64;
        for prefix in [keys::SERVER_PREFIX, keys::DEVICE_PREFIX] {
            self.store.scan_each(prefix, &mut |_, _| {
                n += 1;
                ControlFlow::Continue(())
            })?;
        }
        Ok(n)
    }

    /// Walks the records under `prefix` in key order, decoded, one at a time (the store reads
    /// them page by page), until `f` breaks. `f` gets the key, the version and the record.
    fn each_record<R: DeserializeOwned>(
        &self,
        prefix: &str,
        mut f: impl FnMut(&str, u64, R) -> ControlFlow<()>,
    ) -> Result<()> {
        let mut failed = None;
        self.store.scan_each(
            prefix,
            &mut |key, rec| match decode::<R>(&key, &rec.value) {
                Ok(value) => f(&key, rec.version, value),
                Err(e) => {
                    failed = Some(e);
                    ControlFlow::Break(())
                }
            },
        )?;
        failed.map_or(Ok(()), Err)
    }

    /// Calls `f` with every device's name in key order, until it breaks. A device's name is
    /// its key's suffix (`device/<name>`), so no record is decoded.
    fn each_device_name(&self, f: &mut dyn FnMut(&str) -> ControlFlow<()>) -> Result<()> {
        self.store
            .scan_each(keys::DEVICE_PREFIX, &mut |key, _| match key
                .strip_prefix(keys::DEVICE_PREFIX)
            {
                Some(name) => f(name),
                None => ControlFlow::Continue(()),
            })?;
        Ok(())
    }

    /// Refuses a name that is already a server or a device.
    fn check_new_member(&self, name: &str) -> Result<()> {
        if let Some(rec) = self.store.get(&keys::server(name))? {
            let s: ServerRecord = decode(&keys::server(name), &rec.value)?;
            return Err(ZoneError::DuplicateMember {
                name: name.into(),
                role: s.role.to_string(),
            }
            .into());
        }
        if self.store.get(&keys::device(name))?.is_some() {
            return Err(ZoneError::DuplicateMember {
                name: name.into(),
                role: "device".into(),
            }
            .into());
        }
        Ok(())
    }

    /// Begins a command: the epoch that its commit will be conditioned on (B6). Call it before
    /// reading anything the command decides from.
    fn begin(&self) -> Result<Epoch> {
        Ok(Epoch::read(&self.store)?)
    }

    /// Commits `writes` with an audit entry for `event`, atomically, on condition that nothing
    /// was committed since `epoch` (B6), and moves `epoch` past this commit. When another
    /// commit came first, nothing is written and the error is [`Error::ZoneChanged`].
    fn commit(
        &self,
        epoch: &mut Epoch,
        mut writes: Vec<Write>,
        event: &str,
        detail: serde_json::Value,
    ) -> Result<()> {
        let changed = |e: StoreError| match e {
            StoreError::Conflict { .. } => Error::ZoneChanged {
                event: event.to_string(),
            },
            e => e.into(),
        };
        writes.extend(
            audit::append(&self.store, *epoch, self.clock.now(), event, detail).map_err(changed)?,
        );
        let committed = self.store.commit(&writes).map_err(changed)?;
        // The head's version as the store gave it: the epoch the next step of this command
        // (a command that commits twice) is conditioned on.
        *epoch = Epoch::after(&writes, &committed)?;
        Ok(())
    }

    /// Creates a zone with an internal CA whose key is generated on, and held by, the first
    /// Primary Server's agent (Z2, S1); then enrols that server.
    pub fn init_internal(&self, init: InitInternal) -> Result<ZoneRecord> {
        let mut epoch = self.begin()?;
        if let Some(rec) = self.store.get(keys::ZONE)? {
            let z: ZoneRecord = decode(keys::ZONE, &rec.value)?;
            return Err(ZoneError::ZoneExists { name: z.name }.into());
        }
        check_zone_name(&init.zone)?;
        let server = &init.first_server;
        if server.role != ServerRole::Primary {
            return Err(ZoneError::FirstServerNotPrimary {
                fqdn: server.fqdn.to_string(),
                role: server.role.to_string(),
            }
            .into());
        }
        let common_name = init.ca_subject.clone().unwrap_or_else(|| init.zone.clone());
        check_zone_name(&common_name)?;
        self.check_server_fields(server)?;
        let now = self.clock.now();
        let ca_serial = Serial::random()?;
        let params = CaParams {
            common_name,
            validity: init.validity,
        };
        let member = server.fqdn.as_str();
        let response = self.transport.call(
            member,
            AgentRequest::CreateCa {
                key: init.ca_key,
                params,
                serial: ca_serial.clone(),
                now,
                future: false,
            },
        )?;
        let AgentResponse::CaCertificate(ca_der) = response else {
            return Err(unexpected(member, "a CA certificate", &response));
        };
        let ca = Certificate::try_from(&ca_der)?;
        if !ca.is_self_signed() || !ca.is_ca() {
            return Err(CertError::Malformed {
                reason: format!("{member} returned a CA certificate that is not a self-signed CA"),
            }
            .into());
        }
        let zone = ZoneRecord {
            v: RECORD_VERSION,
            name: init.zone.clone(),
            ca: CaKind::Internal {
                certificate_server: server.fqdn.clone(),
            },
            ca_certificate: ca_der,
            ca_intermediates: Vec::new(),
            created_at: now,
            retired_cas: Vec::new(),
        };
        let mut writes = vec![Write::create(keys::ZONE, encode(&zone))];
        writes.push(serial_write(&ca, &ca_serial, &ca.subject(), now)?);
        let (record, mut enrol_writes) = self.enrol(&zone, server, now)?;
        writes.push(Write::create(keys::server(member), encode(&record)));
        writes.append(&mut enrol_writes);
        let detail = serde_json::json!({
            "zone": zone.name,
            "ca_subject": ca.subject(),
            "ca_sha256": ca.fingerprints().sha256.to_string(),
            "certificate_server": member,
        });
        self.commit(&mut epoch, writes, "zone.init", detail)?;
        Ok(zone)
    }

    fn check_server_fields(&self, server: &NewServer) -> Result<()> {
        for n in &server.dns_names {
            crate::csr::check_dns_name(n)?;
        }
        Ok(())
    }

    /// Enrols a server with an internal CA: its agent makes a key and CSR (S1), the CA issues
    /// through the certificate server's agent, and the agent installs the chain. Returns the
    /// server record and the serial-number write to commit.
    fn enrol(
        &self,
        zone: &ZoneRecord,
        server: &NewServer,
        now: Timestamp,
    ) -> Result<(ServerRecord, Vec<Write>)> {
        let member = server.fqdn.as_str();
        let CaKind::Internal { certificate_server } = &zone.ca else {
            // External CA (Z3): the certificate comes from `cert import` later.
            return Ok((server_record(server, Vec::new(), now), Vec::new()));
        };
        let ca = Certificate::try_from(&zone.ca_certificate)?;
        let profile = ServerProfile {
            fqdn: server.fqdn.to_string(),
            common_name: None,
            dns_names: server.dns_names.clone(),
            include_dns: true,
            not_after: None,
        };
        let (leaf, write) =
            self.issue_for_member(member, &ca, certificate_server, server.key, &profile, now)?;
        // The member's chain: leaf, then the zone CA (what a TLS server sends).
        let chain = vec![leaf.der().clone(), zone.ca_certificate.clone()];
        let trust = zone.trust_bundle(now);
        self.transport.call(
            member,
            AgentRequest::Install {
                chain: chain.clone(),
                trust,
                now,
            },
        )?;
        Ok((server_record(server, chain, now), vec![write]))
    }

    /// A signer for `issuer` whose key is held by `ca_server`'s agent.
    fn ca_signer<'a>(
        &'a self,
        ca_server: &'a Fqdn,
        issuer: &Certificate,
    ) -> Result<AgentCaSigner<'a, T>> {
        Ok(AgentCaSigner {
            transport: &self.transport,
            member: ca_server.as_str(),
            public_key: issuer.public_key().clone(),
            algorithm: signature_algorithm_for(issuer.key_algorithm()?).ok_or_else(|| {
                KeyError::UnsupportedPublicKey {
                    what: "the CA's key cannot sign".into(),
                }
            })?,
        })
    }

    /// Has `member`'s agent make a fresh key and CSR (S1), and issues its certificate under
    /// `issuer` (whose key `ca_server`'s agent holds). Returns the certificate and the
    /// serial-number write to commit with it (S3).
    fn issue_for_member(
        &self,
        member: &str,
        issuer: &Certificate,
        ca_server: &Fqdn,
        key: KeySpec,
        profile: &ServerProfile,
        now: Timestamp,
    ) -> Result<(Certificate, Write)> {
        let request = CsrRequest {
            subject: CsrSubject::cn(profile.subject_common_name()),
            dns_names: profile.san(),
        };
        let response = self
            .transport
            .call(member, AgentRequest::Enroll { key, request })?;
        let AgentResponse::Csr(csr_der) = response else {
            return Err(unexpected(member, "a CSR", &response));
        };
        let csr = VerifiedCsr::from_der(csr_der.as_bytes())?;
        let serial = Serial::random()?;
        let signer = self.ca_signer(ca_server, issuer)?;
        let leaf = issue_server_certificate(issuer, &signer, &csr, profile, &serial, now)?;
        let write = serial_write(issuer, &serial, &leaf.subject(), now)?;
        Ok((leaf, write))
    }

    /// Adds a server (Z1). With an internal CA, Primary Servers and Authentication Satellites
    /// are enrolled at once through their agents.
    pub fn add_server(&self, server: NewServer) -> Result<ServerView> {
        // B6: the certificate is issued by the CA read here; a CA switch committed meanwhile
        // makes the commit below fail rather than enrol a server under a retired CA.
        let mut epoch = self.begin()?;
        let zone = self.zone()?;
        self.check_new_member(server.fqdn.as_str())?;
        self.check_server_fields(&server)?;
        match (server.role, &server.parent) {
            (ServerRole::AuthSatellite, None) => {
                return Err(ZoneError::MissingParent {
                    fqdn: server.fqdn.to_string(),
                }
                .into());
            }
            (ServerRole::Primary, Some(parent)) => {
                // Z1: Primary Servers are the top of the zone; only satellites attach to one.
                return Err(ZoneError::PrimaryTakesNoParent {
                    fqdn: server.fqdn.to_string(),
                    parent: parent.to_string(),
                }
                .into());
            }
            (_, Some(parent)) => {
                let ok = self
                    .server_record(parent)?
                    .is_some_and(|p| p.role == ServerRole::Primary);
                if !ok {
                    return Err(ZoneError::BadParent {
                        fqdn: server.fqdn.to_string(),
                        parent: parent.to_string(),
                    }
                    .into());
                }
            }
            _ => {}
        }
        let now = self.clock.now();
        let (record, mut writes) = if server.role.has_certificate() && server.enrol_now {
            self.enrol(&zone, &server, now)?
        } else {
            (server_record(&server, Vec::new(), now), Vec::new())
        };
        writes.push(Write::create(
            keys::server(server.fqdn.as_str()),
            encode(&record),
        ));
        let detail = serde_json::json!({
            "fqdn": server.fqdn, "role": server.role, "parent": server.parent,
            "certificate_sha256": record.certificate.first()
                .map(|c| crate::cert::Fingerprint::sha256(c.as_bytes()).to_string()),
        });
        self.commit(&mut epoch, writes, "server.add", detail)?;
        self.server_view(&zone, &record, now)
    }

    /// Adds managed devices (Z1): all or none.
    pub fn add_devices(&self, names: &[String], agent_version: &str) -> Result<usize> {
        let mut epoch = self.begin()?;
        self.zone()?;
        let now = self.clock.now();
        let mut seen = BTreeSet::new();
        let mut writes = Vec::with_capacity(names.len());
        for given in names {
            // Folded as server FQDNs are (issue 9 item 6): `D1` beside `d1` is a duplicate.
            let name = device_name(given)?;
            if !seen.insert(name.clone()) {
                return Err(ZoneError::DuplicateMember {
                    name: given.clone(),
                    role: "device".into(),
                }
                .into());
            }
            self.check_new_member(&name)?;
            let rec = DeviceRecord {
                v: RECORD_VERSION,
                name: name.clone(),
                agent_version: agent_version.to_string(),
                joined_at: now,
            };
            writes.push(Write::create(keys::device(&name), encode(&rec)));
        }
        let detail = serde_json::json!({
            "count": names.len(),
            "first": names.first(),
            "last": names.last(),
        });
        self.commit(&mut epoch, writes, "device.add", detail)?;
        Ok(names.len())
    }

    /// The CA's details (V1).
    pub fn ca_view(&self) -> Result<CaView> {
        let zone = self.zone()?;
        let ca = Certificate::try_from(&zone.ca_certificate)?;
        let (kind, certificate_server) = match &zone.ca {
            CaKind::Internal { certificate_server } => {
                (CaType::Internal, Some(certificate_server.to_string()))
            }
            CaKind::External => (CaType::External, None),
        };
        let unerased_copies = match self.store.get(keys::CA_HANDOVER)? {
            Some(r) => {
                custody::handover_erase(&decode::<custody::Handover>(keys::CA_HANDOVER, &r.value)?)
            }
            None => Vec::new(),
        };
        Ok(CaView {
            kind,
            certificate_server,
            unerased_copies,
            details: ca.details(self.clock.now()),
        })
    }

    fn server_view(
        &self,
        zone: &ZoneRecord,
        rec: &ServerRecord,
        now: Timestamp,
    ) -> Result<ServerView> {
        let mut view = ServerView {
            fqdn: rec.fqdn.to_string(),
            role: rec.role,
            parent: rec.parent.as_ref().map(ToString::to_string),
            certificate_server: matches!(&zone.ca, CaKind::Internal { certificate_server } if certificate_server == &rec.fqdn),
            issued_to: None,
            subject: None,
            issuer: None,
            not_before: None,
            not_after: None,
            md5: None,
            sha1: None,
            sha256: None,
            status: ServerStatus::None,
            options: Vec::new(),
            update_status: UpdateStatus::None,
            agent_version: rec.agent_version.clone(),
            dns_names: rec.dns_names.clone(),
        };
        if let Some(leaf) = rec.certificate.first() {
            view.certificate_columns(&Certificate::try_from(leaf)?, now);
        }
        // During an operation: SR4's certificate status, the update status, and the future
        // certificate in the options column (V2).
        let update = self.server_update(&rec.fqdn)?;
        // V2 "CSR available": a CSR that `csrs` hands out for this server, the running
        // operation's (SR5) or one generated outside an operation.
        let op_csr = update
            .as_ref()
            .is_some_and(|(_, u)| u.as_ref().is_some_and(|u| u.csr.is_some()));
        let csr_available = op_csr || rec.csr.is_some();
        if let Some((op, u)) = update
            && op.state.is_running()
        {
            // The same text as `op show` for this member (issue 10 item 6: a server assigned
            // but not yet refreshed said `none` here and `assigned` there).
            view.update_status = op_view::member_status(&op, u.as_ref(), self.clock.now());
            // Until activation: SR4's certificate status and the future certificate.
            if let Some(u) = u
                && !matches!(op.state, crate::ops::OpState::Activated(_))
            {
                if let Some(cs) = u.cert_status {
                    view.status = ServerStatus::Remint(CertificateStatus::from(Some(cs)));
                }
                if !u.future_chain.is_empty() {
                    view.options.push(ServerOption::FutureCertificate);
                }
            }
        }
        if csr_available {
            view.options.push(ServerOption::CsrAvailable);
        }
        Ok(view)
    }

    /// The server list (V2), in FQDN order.
    pub fn servers(&self) -> Result<Vec<ServerView>> {
        let zone = self.zone()?;
        let now = self.clock.now();
        self.server_records()?
            .iter()
            .map(|r| self.server_view(&zone, r, now))
            .collect()
    }

    /// One server (V2).
    pub fn server(&self, fqdn: &Fqdn) -> Result<ServerView> {
        let zone = self.zone()?;
        let rec = self
            .server_record(fqdn)?
            .ok_or_else(|| ZoneError::UnknownServer {
                fqdn: fqdn.to_string(),
            })?;
        self.server_view(&zone, &rec, self.clock.now())
    }

    /// A server's current certificate chain: leaf first, then any subordinate CAs, then the
    /// zone CA.
    pub fn server_chain(&self, fqdn: &Fqdn) -> Result<Vec<CertificateDer>> {
        let zone = self.zone()?;
        let rec = self
            .server_record(fqdn)?
            .ok_or_else(|| ZoneError::UnknownServer {
                fqdn: fqdn.to_string(),
            })?;
        let mut chain = rec.certificate;
        if !chain.is_empty() {
            for c in zone
                .ca_intermediates
                .iter()
                .chain(std::iter::once(&zone.ca_certificate))
            {
                if !chain.contains(c) {
                    chain.push(c.clone());
                }
            }
        }
        Ok(chain)
    }

    /// Managed devices, in natural name order (`laptop-2` before `laptop-10`,
    /// [`natural_cmp`]).
    pub fn devices(&self) -> Result<Vec<DeviceView>> {
        Ok(self.device_list(&DeviceQuery::all())?.devices)
    }

    /// One page of managed devices (`device list`): those with the query's update status, in
    /// natural name order, after its `after` name, at most `limit` of them; `more` says
    /// whether another page follows.
    ///
    /// Natural order is not the store's key order, so the device names are walked (one at a
    /// time, no record decoded) keeping only the `limit + 1` first in natural order; a status
    /// filter first walks the operation's per-member records once (a range read, not a point
    /// read per device: issue 13 item 5). Only the page's device records are read. Without a
    /// limit the answer is every device.
    pub fn device_list(&self, query: &DeviceQuery) -> Result<DevicePage> {
        let op = self.device_status_op()?;
        let statuses = match &query.status {
            Some(_) => Some(self.update_statuses(op.as_ref())?),
            None => None,
        };
        let keep = query.limit.map(|n| n.saturating_add(1));
        // A max-heap in natural order: its top is the name a better one evicts.
        let mut page: BinaryHeap<Natural> = BinaryHeap::new();
        self.each_device_name(&mut |name| {
            if query
                .after
                .as_ref()
                .is_some_and(|a| natural_cmp(name, a) != std::cmp::Ordering::Greater)
            {
                return ControlFlow::Continue(());
            }
            if let Some(k) = keep
                && page.len() >= k
                && page
                    .peek()
                    .is_some_and(|top| natural_cmp(name, &top.0) == std::cmp::Ordering::Greater)
            {
                return ControlFlow::Continue(());
            }
            if let (Some(wanted), Some(statuses)) = (&query.status, &statuses)
                && statuses.get(name) != *wanted
            {
                return ControlFlow::Continue(());
            }
            page.push(Natural(name.to_string()));
            if keep.is_some_and(|k| page.len() > k) {
                page.pop();
            }
            ControlFlow::Continue(())
        })?;
        let mut names: Vec<String> = page.into_sorted_vec().into_iter().map(|n| n.0).collect();
        let more = query.limit.is_some_and(|n| names.len() > n);
        if let Some(n) = query.limit {
            names.truncate(n);
        }
        let mut devices = Vec::with_capacity(names.len());
        for name in names {
            let key = keys::device(&name);
            // Gone since the walk: a concurrent removal; the page shows what is there.
            let Some(rec) = self.store.get(&key)? else {
                continue;
            };
            let d: DeviceRecord = decode(&key, &rec.value)?;
            let update_status = match &statuses {
                Some(s) => s.get(&name),
                None => self.device_update_status(op.as_ref(), &name)?,
            };
            devices.push(DeviceView {
                update_status,
                name: d.name,
                agent_version: d.agent_version,
            });
        }
        Ok(DevicePage { devices, more })
    }

    /// Expiry warnings (V3): the CA and every server certificate that expires within `window`
    /// of now, or has expired. Expired ones first, then by expiry.
    pub fn warnings(&self, window: Duration) -> Result<Vec<Warning>> {
        let zone = self.zone()?;
        let now = self.clock.now();
        let ca = Certificate::try_from(&zone.ca_certificate)?;
        let mut out = Vec::new();
        let ca_name = ca.common_name().unwrap_or_else(|| ca.subject());
        out.extend(Warning::check(
            &ca_name,
            WarningSubject::Ca,
            &ca,
            now,
            window,
        ));
        for rec in self.server_records()? {
            if let Some(leaf) = rec.certificate.first() {
                let cert = Certificate::try_from(leaf)?;
                out.extend(Warning::check(
                    rec.fqdn.as_str(),
                    WarningSubject::Server,
                    &cert,
                    now,
                    window,
                ));
            }
        }
        out.sort_by(|a, b| {
            b.expired
                .cmp(&a.expired)
                .then(a.not_after.cmp(&b.not_after))
        });
        Ok(out)
    }

    /// Checks the audit log's hash chain (S6).
    pub fn verify_audit(&self) -> Result<AuditReport> {
        Ok(audit::verify(&self.store)?)
    }

    /// The last `n` audit entries, newest first (the console's audit pane, W2).
    pub fn audit_recent(&self, n: usize) -> Result<Vec<audit::AuditEntry>> {
        Ok(audit::recent(&self.store, n)?)
    }

    /// Every record of the store as one JSON object, keys in order (`store dump`). Records
    /// hold no secrets: private keys live with their agents.
    pub fn dump(&self) -> Result<serde_json::Value> {
        dump(&self.store)
    }

    /// [`dump`](Self::dump) written to `out` as the store is read (`store dump` of a large
    /// zone), see [`dump_to`].
    pub fn dump_to(&self, out: &mut dyn std::io::Write) -> Result<(), DumpError> {
        dump_to(&self.store, out)
    }
}

/// Every record of `store` as one JSON object `{key: {"version": n, "value": record}}` in key
/// order, so two dumps are equal exactly when the stored state is equal.
pub fn dump(store: &dyn Storage) -> Result<serde_json::Value> {
    let mut map = serde_json::Map::new();
    store.scan_each("", &mut |key, rec| {
        let entry = dump_entry(&key, &rec);
        map.insert(key, entry);
        std::ops::ControlFlow::Continue(())
    })?;
    Ok(serde_json::Value::Object(map))
}

/// One record as the dump shows it: its version, and its value as JSON (a record that is not
/// JSON as colon-separated hex). Secrets are left out: a registration token's value.
fn dump_entry(key: &str, rec: &crate::store::Record) -> serde_json::Value {
    let mut value = serde_json::from_slice(&rec.value)
        .unwrap_or_else(|_| serde_json::Value::String(colon_hex(&rec.value)));
    if key.starts_with(keys::TOKEN_PREFIX)
        && let Some(token) = value.get_mut("token")
    {
        *token = serde_json::Value::String("(secret)".into());
    }
    serde_json::json!({ "version": rec.version, "value": value })
}

/// Why [`dump_to`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DumpError {
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] Error),
    /// Writing the dump failed (the output was closed, the disk is full).
    #[error("cannot write the dump: {0}")]
    Write(#[source] std::io::Error),
}

/// [`dump`] written to `out` as it is read, one record at a time: the same text as
/// `serde_json::to_string_pretty(&dump(store)?)`, without holding the store in memory.
pub fn dump_to(store: &dyn Storage, out: &mut dyn std::io::Write) -> Result<(), DumpError> {
    use std::ops::ControlFlow;
    let mut first = true;
    let mut failed = None;
    let mut entry = Vec::new();
    let mut write = |key: String, rec: crate::store::Record| -> std::io::Result<()> {
        // `{"key": entry}` pretty-printed at the top level is `"key": ` followed by the
        // entry pretty-printed one level deeper: its lines indented by two spaces. JSON
        // strings escape newlines, so every newline in the entry is a line break.
        entry.clear();
        serde_json::to_writer_pretty(&mut entry, &dump_entry(&key, &rec))?;
        out.write_all(if first { b"{\n  " } else { b",\n  " })?;
        first = false;
        serde_json::to_writer(&mut *out, &key)?;
        out.write_all(b": ")?;
        for (i, line) in entry.split(|&b| b == b'\n').enumerate() {
            if i > 0 {
                out.write_all(b"\n  ")?;
            }
            out.write_all(line)?;
        }
        Ok(())
    };
    store
        .scan_each("", &mut |key, rec| match write(key, rec) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        })
        .map_err(|e| DumpError::Store(e.into()))?;
    if let Some(e) = failed {
        return Err(DumpError::Write(e));
    }
    out.write_all(if first { b"{}" } else { b"\n}" })
        .map_err(DumpError::Write)
}

pub(super) fn server_record(
    server: &NewServer,
    certificate: Vec<CertificateDer>,
    now: Timestamp,
) -> ServerRecord {
    ServerRecord {
        v: RECORD_VERSION,
        fqdn: server.fqdn.clone(),
        role: server.role,
        parent: server.parent.clone(),
        dns_names: server.dns_names.clone(),
        agent_version: server.agent_version.clone(),
        certificate,
        joined_at: now,
        csr: None,
    }
}

/// The store write that claims `serial` under `issuer` (S3): created with an "absent"
/// precondition, so a repeated serial makes the whole commit fail.
fn serial_write(
    issuer: &Certificate,
    serial: &Serial,
    subject: &str,
    now: Timestamp,
) -> Result<Write> {
    let issuer_id = issuer
        .subject_key_id()?
        .map(|k| base16ct::lower::encode_string(&k))
        .unwrap_or_else(|| crate::cert::Fingerprint::sha256(issuer.der().as_bytes()).to_string());
    let rec = SerialRecord {
        v: RECORD_VERSION,
        subject: subject.to_string(),
        issued_at: now,
    };
    Ok(Write::create(
        keys::serial(&issuer_id, &serial.hex()),
        encode(&rec),
    ))
}

/// A device name ordered by [`natural_cmp`] (`device list`'s order), for a bounded heap.
#[derive(PartialEq, Eq)]
struct Natural(String);

impl Ord for Natural {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        natural_cmp(&self.0, &other.0)
    }
}

impl PartialOrd for Natural {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The service is shareable between threads (a web console serving several administrators).
const _: () = {
    const fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<
        ZoneService<
            crate::store::MemoryStore,
            crate::transport::LoopbackTransport,
            crate::clock::SystemClock,
        >,
    >();
};
