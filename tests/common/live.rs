//! A zone with the real clock behind the test server of tests/common/net.rs. Included with
//! `#[path = "common/live.rs"] mod live;` next to `net` and `sim`.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use crate::net::{Backend, TestServer, ZoneApi};
use crate::sim::{PS1, Sim, Spec};
use zonepki::clock::{SystemClock, Timestamp};
use zonepki::service::ZoneService;
use zonepki::store::MemoryStore;
use zonepki::transport::LoopbackTransport;

/// A zone whose clock is the real one (TLS checks validity by the system clock), served by the
/// test server with its first server's certificate; the server's `ZoneService` shares the
/// zone's store and its agents.
pub struct LiveZone {
    pub sim: Sim<Arc<MemoryStore>>,
    pub server: TestServer,
}

pub fn live_zone(devices: usize) -> LiveZone {
    let spec = Spec {
        start: Timestamp::now_utc().minus(Duration::from_secs(120)),
        ..Spec::new(devices)
    };
    let store = Arc::new(MemoryStore::new());
    let sim = Sim::build(Arc::clone(&store), LoopbackTransport::in_memory(), spec);
    let (chain, key) = sim
        .transport
        .with_agent(PS1, |a| {
            (a.chain().to_vec(), a.key().unwrap().to_pkcs8_der())
        })
        .unwrap();
    let key = zonepki::key::PrivateKey::from_pkcs8(&key).unwrap();
    let ca = sim.svc.ca_certificate().unwrap().der().clone();
    let zone: Arc<dyn ZoneApi> = Arc::new(ZoneService::new(
        Arc::clone(&store),
        Arc::clone(&sim.transport),
        SystemClock,
    ));
    let server = TestServer::start(
        Backend {
            store,
            zone: Some(zone),
            transport: Some(sim.transport.clone()),
            admin_token: "admin-secret-token".into(),
            ca: Vec::new(),
        },
        ca,
        chain,
        &key,
    );
    LiveZone { sim, server }
}
