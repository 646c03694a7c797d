//! The simulation harness of tests/ops.rs (memory store, manual clock, loopback agents driven
//! until idle), made generic over the store and the zone's shape so that the rule, crash and
//! interop tests share it. Included with `#[path = "common/sim.rs"] mod sim;`.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use zonepki::cert::{Certificate, CertificateDer};
use zonepki::chain::verify_chain;
use zonepki::clock::{ManualClock, Timestamp};
use zonepki::error::Result;
use zonepki::key::KeySpec;
use zonepki::ops::ActivationRequest;
use zonepki::service::{
    InitInternal, NewServer, OpView, RemintCaRequest, ServerRemintRequest, ZoneService,
};
use zonepki::store::{MemoryStore, Storage};
use zonepki::transport::LoopbackTransport;
use zonepki::transport::{Fleet, RefreshOptions, RefreshOutcome};
use zonepki::zone::{Fqdn, ServerRole};

pub fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub fn fq(s: &str) -> Fqdn {
    s.parse().unwrap()
}

pub const T0: &str = "2027-01-01T00:00:00Z";
pub const PS1: &str = "ps1.zone.example";
pub const PS2: &str = "ps2.zone.example";
pub const SAT1: &str = "sat1.zone.example";
pub const CONTENT1: &str = "content1.zone.example";

pub type Svc<S> = ZoneService<S, Arc<LoopbackTransport>, &'static ManualClock>;

/// The zone's shape: `ca_server` (CA, with the DNS name alias.zone.example), ps2, sat1 under
/// ps2, content1, and `devices` managed devices dev-1..dev-N.
#[derive(Debug, Clone)]
pub struct Spec {
    pub ca_server: String,
    pub devices: usize,
    pub start: Timestamp,
    /// B1's bridges. Off here: these tests exercise the manuals' stranded semantics (O8,
    /// O10); tests/ops.rs and tests/bridge.rs cover the bridge.
    pub bridges: bool,
}

impl Spec {
    pub fn new(devices: usize) -> Self {
        Spec {
            ca_server: PS1.into(),
            devices,
            start: t(T0),
            bridges: false,
        }
    }
}

/// The zone set-up as separate commands (each one commit), so a crash test can run them as
/// steps.
pub fn init<S: Storage>(svc: &Svc<S>, spec: &Spec) -> Result<()> {
    let ps1 = NewServer::new(fq(&spec.ca_server), ServerRole::Primary)
        .with_dns_names(vec!["alias.zone.example".into()]);
    svc.init_internal(
        InitInternal::new("Sim Zone", ps1)
            .with_ca_key(KeySpec::P256)
            .with_validity(5.try_into().unwrap()),
    )?;
    Ok(())
}

pub fn add_ps2<S: Storage>(svc: &Svc<S>) -> Result<()> {
    svc.add_server(NewServer::new(fq(PS2), ServerRole::Primary))?;
    Ok(())
}

pub fn add_sat1<S: Storage>(svc: &Svc<S>) -> Result<()> {
    let mut sat = NewServer::new(fq(SAT1), ServerRole::AuthSatellite);
    sat.parent = Some(fq(PS2));
    svc.add_server(sat)?;
    Ok(())
}

pub fn add_content1<S: Storage>(svc: &Svc<S>) -> Result<()> {
    svc.add_server(NewServer::new(fq(CONTENT1), ServerRole::ContentSatellite))?;
    Ok(())
}

pub fn add_devices<S: Storage>(svc: &Svc<S>, spec: &Spec) -> Result<()> {
    let names: Vec<String> = (1..=spec.devices).map(|i| format!("dev-{i}")).collect();
    if !names.is_empty() {
        svc.add_devices(&names, "24.4")?;
    }
    Ok(())
}

/// Every member learns the zone's trust.
pub fn refresh_all<S: Storage>(svc: &Svc<S>, opts: &RefreshOptions) -> Result<()> {
    svc.refresh(&[], opts, |_, _| {})?;
    Ok(())
}

/// Refreshes everyone until the operation's view stops changing (bounded).
pub fn drive_svc<S: Storage>(svc: &Svc<S>, opts: &RefreshOptions) -> Result<OpView> {
    let mut last = None;
    for _ in 0..5 {
        svc.refresh(&[], opts, |_, _| {})?;
        let v = svc.op_show()?;
        if last.as_ref() == Some(&v) {
            break;
        }
        last = Some(v);
    }
    Ok(last.expect("the loop runs at least once"))
}

pub struct Sim<S: Storage = MemoryStore> {
    pub svc: Svc<S>,
    pub clock: &'static ManualClock,
    pub transport: Arc<LoopbackTransport>,
    pub spec: Spec,
}

impl Sim<MemoryStore> {
    /// The zone of tests/ops.rs with `devices` devices, in memory.
    pub fn new(devices: usize) -> Self {
        Sim::build(
            MemoryStore::new(),
            LoopbackTransport::in_memory(),
            Spec::new(devices),
        )
    }
}

impl<S: Storage> Sim<S> {
    /// A service over `store` and `transport` (no zone yet).
    pub fn empty(store: S, transport: LoopbackTransport, spec: Spec) -> Self {
        let clock: &'static ManualClock = Box::leak(Box::new(ManualClock::new(spec.start)));
        let transport = Arc::new(transport);
        let mut svc = ZoneService::new(store, Arc::clone(&transport), clock);
        if !spec.bridges {
            svc = svc.without_bridges();
        }
        Sim {
            svc,
            clock,
            transport,
            spec,
        }
    }

    /// The whole zone, every member trusting the zone CA.
    pub fn build(store: S, transport: LoopbackTransport, spec: Spec) -> Self {
        let sim = Sim::empty(store, transport, spec);
        init(&sim.svc, &sim.spec).unwrap();
        add_ps2(&sim.svc).unwrap();
        add_sat1(&sim.svc).unwrap();
        add_content1(&sim.svc).unwrap();
        add_devices(&sim.svc, &sim.spec).unwrap();
        sim.refresh(&[], &RefreshOptions::default());
        sim
    }

    pub fn refresh(&self, names: &[&str], opts: &RefreshOptions) -> Vec<RefreshOutcome> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        self.svc.refresh(&names, opts, |_, _| {}).unwrap()
    }

    pub fn drive(&self, opts: &RefreshOptions) -> OpView {
        drive_svc(&self.svc, opts).unwrap()
    }

    /// A member's update status in `op show`: a server's or a device's.
    pub fn status(&self, v: &OpView, name: &str) -> String {
        v.members()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.to_string())
            .unwrap_or_else(|| panic!("{name} is not in the update: {v:?}"))
    }

    pub fn reason(&self, v: &OpView, name: &str) -> Option<String> {
        let server = v.servers.iter().find(|s| s.fqdn == name);
        match server {
            Some(s) => s.reason.clone(),
            None => v
                .devices
                .iter()
                .find(|d| d.name == name)
                .and_then(|d| d.reason.clone()),
        }
    }

    pub fn trust(&self, name: &str) -> Vec<CertificateDer> {
        self.transport
            .with_agent(name, |a| a.trust().to_vec())
            .unwrap()
    }

    pub fn chain(&self, name: &str) -> Vec<CertificateDer> {
        self.transport
            .with_agent(name, |a| a.chain().to_vec())
            .unwrap()
    }

    pub fn staged_op(&self, name: &str) -> Option<u64> {
        self.transport
            .with_agent(name, |a| a.staged().map(|s| s.op_id))
            .unwrap()
    }

    /// Whether `client` accepts `server`'s current chain with the anchors it holds.
    pub fn communicates(&self, client: &str, server: &str) -> bool {
        let anchors: Vec<Certificate> = self
            .trust(client)
            .iter()
            .map(|c| Certificate::try_from(c).unwrap())
            .collect();
        let chain: Vec<Certificate> = self
            .chain(server)
            .iter()
            .map(|c| Certificate::try_from(c).unwrap())
            .collect();
        verify_chain(&chain[0], &chain[1..], &anchors, self.svc.now()).is_ok()
    }

    /// Every member's name: servers, then devices.
    pub fn all_names(&self) -> Vec<String> {
        let mut v = vec![
            self.spec.ca_server.clone(),
            PS2.to_string(),
            SAT1.to_string(),
            CONTENT1.to_string(),
        ];
        v.extend((1..=self.spec.devices).map(|i| format!("dev-{i}")));
        v
    }
}

pub fn offline(names: &[&str]) -> RefreshOptions {
    RefreshOptions::new().offline(names.iter().copied())
}

pub fn failing(names: &[&str]) -> RefreshOptions {
    RefreshOptions::new().failing(names.iter().copied())
}

pub fn remint_ca(at: &str) -> RemintCaRequest {
    RemintCaRequest::new(ActivationRequest::At(t(at)))
        .with_key(KeySpec::P256)
        .with_validity(5.try_into().unwrap())
        .with_include_dns(true)
}

pub fn server_remint(servers: &[&str], at: &str) -> ServerRemintRequest {
    ServerRemintRequest::new(
        servers.iter().map(|s| fq(s)).collect(),
        "server remint",
        ActivationRequest::At(t(at)),
    )
    .with_key(KeySpec::P256)
}
