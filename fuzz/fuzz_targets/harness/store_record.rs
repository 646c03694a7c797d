//! The store-record fuzz targets (issue 9 item 8): a damaged store is an error, never a panic.
//!
//! Every record the service reads back is JSON in a [`Storage`]. Each target replaces one
//! record of a real zone with the fuzz input and runs the service's read paths over it, the
//! way `zonectl` would after the store file was damaged: decoding through the public
//! `Storage` + `ZoneService` API tests the real path without widening the API.
//!
//! The zone ([`fixture`], built once per process with in-memory loopback agents): an internal
//! P-256 CA on ps1, ps2, sat1 under ps2, content1, devices dev-1..dev-3, and a Remint CA
//! operation that is assigned, applied by every member but dev-2 (offline throughout), and
//! activates at [`ACTIVATION`]. Its records: `zone`, `server/*`, `device/*`, `op/current`,
//! `op/<id>/m/*` (member updates), `audit/*`.
//!
//! Input format: byte 0's low 7 bits pick the record among the target's keys (modulo their
//! number, in key order) and its top bit reads the store after activation rather than at the
//! fixture's time; the rest is the record's new value. [`seed`] makes an input; [`original`]
//! gives a key's value in the fixture.
//!
//! Per input, on a fresh `MemoryStore` holding the fixture with that record replaced, at the
//! time byte 0 picks: `tick` (which activates, after activation), `zone`, `ca_certificate`, `ca_view`, `servers`,
//! `server`, `server_chain` and `future_chain` of every server, `server_records`, `devices`,
//! `device_records`, `warnings`, `verify_audit`, `dump`, `op`, `op_show`, `plan`, and
//! `refresh` with every member offline (no agent is reached). Each must return, `Ok` or
//! `Err`, and render its error; with the record unchanged every one of them is `Ok`.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use zonepki::clock::{ManualClock, Timestamp};
use zonepki::key::KeySpec;
use zonepki::ops::ActivationRequest;
use zonepki::service::{InitInternal, NewServer, RemintCaRequest, ZoneService};
use zonepki::store::{MemoryStore, Storage, Write};
use zonepki::transport::LoopbackTransport;
use zonepki::transport::{Fleet, RefreshOptions};
use zonepki::zone::{Fqdn, ServerRole};

/// The fixture's time.
pub const NOW: &str = "2027-01-01T00:00:00Z";
/// When the fixture's Remint CA operation activates.
pub const ACTIVATION: &str = "2027-01-08T00:00:00Z";
/// The fixture's servers.
pub const SERVERS: [&str; 4] = [
    "ps1.zone.example",
    "ps2.zone.example",
    "sat1.zone.example",
    "content1.zone.example",
];

/// Which records a target damages: the keys under a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// `zone`: the zone record.
    Zone,
    /// `server/<fqdn>`: server records.
    Server,
    /// `device/<name>`: device records.
    Device,
    /// `op/current`: the operation record.
    Operation,
    /// `op/<id>/m/<member>`: member update records.
    MemberUpdate,
    /// `audit/head` and `audit/entry/<seq>`: the audit log.
    Audit,
}

impl Slot {
    /// Whether `key` belongs to this slot.
    pub fn holds(self, key: &str) -> bool {
        match self {
            Slot::Zone => key == "zone",
            Slot::Server => key.starts_with("server/"),
            Slot::Device => key.starts_with("device/"),
            Slot::Operation => key == "op/current" || key.starts_with("op/history/"),
            Slot::MemberUpdate => key.starts_with("op/") && key.contains("/m/"),
            Slot::Audit => key.starts_with("audit/"),
        }
    }

    /// The fixture's keys of this slot, in key order.
    pub fn keys(self) -> Vec<&'static str> {
        fixture()
            .iter()
            .filter(|(k, _)| self.holds(k))
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

fn t(s: &str) -> Timestamp {
    s.parse().expect("a valid timestamp")
}

fn fq(s: &str) -> Fqdn {
    s.parse().expect("a valid FQDN")
}

/// Every record of the fixture zone, in key order (built on first use).
pub fn fixture() -> &'static [(String, Vec<u8>)] {
    static FIXTURE: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    FIXTURE.get_or_init(build)
}

fn build() -> Vec<(String, Vec<u8>)> {
    let clock = ManualClock::new(t(NOW));
    let svc = ZoneService::new(MemoryStore::new(), LoopbackTransport::in_memory(), &clock);
    let ps1 = NewServer::new(fq(SERVERS[0]), ServerRole::Primary)
        .with_dns_names(vec!["alias.zone.example".into()]);
    svc.init_internal(
        InitInternal::new("Fuzz Zone", ps1)
            .with_ca_key(KeySpec::P256)
            .with_validity(5.try_into().expect("5 years")),
    )
    .expect("init");
    svc.add_server(NewServer::new(fq(SERVERS[1]), ServerRole::Primary))
        .expect("ps2");
    let sat = NewServer::new(fq(SERVERS[2]), ServerRole::AuthSatellite).with_parent(fq(SERVERS[1]));
    svc.add_server(sat).expect("sat1");
    svc.add_server(NewServer::new(fq(SERVERS[3]), ServerRole::ContentSatellite))
        .expect("content1");
    let devices: Vec<String> = (1..=3).map(|i| format!("dev-{i}")).collect();
    svc.add_devices(&devices, "24.4").expect("devices");
    let offline = RefreshOptions::new().offline(["dev-2"]);
    svc.refresh(&[], &offline, |_, _| {}).expect("refresh");
    svc.start_remint_ca(
        RemintCaRequest::new(ActivationRequest::At(t(ACTIVATION)))
            .with_key(KeySpec::P256)
            .with_validity(5.try_into().expect("5 years"))
            .with_include_dns(true),
    )
    .expect("remint");
    for _ in 0..3 {
        svc.refresh(&[], &offline, |_, _| {}).expect("refresh");
    }
    svc.store()
        .scan_all("")
        .expect("scan")
        .into_iter()
        .map(|(k, r)| (k, r.value))
        .collect()
}

/// The input that puts `value` into the slot's key number `index` (below 128), read at the
/// fixture's time or, if `activated`, after activation.
pub fn seed(index: u8, activated: bool, value: &[u8]) -> Vec<u8> {
    assert!(index < 0x80, "key index {index} is above 127");
    let mut input = vec![if activated { index | 0x80 } else { index }];
    input.extend_from_slice(value);
    input
}

/// The fixture's value of `key`.
pub fn original(key: &str) -> &'static [u8] {
    fixture()
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
        .expect("a fixture key")
}

/// Runs one input of the target that damages `slot`.
pub fn run(slot: Slot, data: &[u8]) {
    let Some((&pick, value)) = data.split_first() else {
        return;
    };
    let keys = slot.keys();
    assert!(!keys.is_empty(), "the fixture has no {slot:?} record");
    let key = keys[usize::from(pick & 0x7f) % keys.len()];
    let unchanged = value == original(key);
    let store = MemoryStore::new();
    let writes: Vec<Write> = fixture()
        .iter()
        .map(|(k, v)| {
            let v = if k == key { value } else { v.as_slice() };
            Write::create(k.as_str(), v)
        })
        .collect();
    store
        .commit(&writes)
        .expect("a fresh store takes the fixture");
    // After activation, `tick` activates (writing the zone, servers and op) and everything
    // is read from what it wrote.
    let now = if pick & 0x80 == 0 {
        t(NOW)
    } else {
        t(ACTIVATION).plus(Duration::from_secs(3600))
    };
    let clock = ManualClock::new(now);
    let svc = ZoneService::new(store, LoopbackTransport::in_memory(), &clock);
    read_everything(&svc, unchanged);
}

/// Checks one call: returns, and with the fixture unchanged returns `Ok`.
fn check<V>(what: &str, unchanged: bool, r: zonepki::error::Result<V>) {
    if let Err(e) = r {
        let message = e.to_string();
        assert!(
            !unchanged,
            "{what} fails on the unchanged fixture: {message}"
        );
    }
}

fn read_everything(
    svc: &ZoneService<MemoryStore, LoopbackTransport, &ManualClock>,
    unchanged: bool,
) {
    check("tick", unchanged, svc.tick());
    check("zone", unchanged, svc.zone());
    check("ca_certificate", unchanged, svc.ca_certificate());
    check("ca_view", unchanged, svc.ca_view());
    check("server_records", unchanged, svc.server_records());
    check("servers", unchanged, svc.servers());
    for s in SERVERS {
        let fqdn = fq(s);
        check("server", unchanged, svc.server(&fqdn));
        check("server_chain", unchanged, svc.server_chain(&fqdn));
        check("future_chain", unchanged, svc.future_chain(&fqdn));
    }
    check("device_records", unchanged, svc.device_records());
    check("devices", unchanged, svc.devices());
    check(
        "warnings",
        unchanged,
        svc.warnings(Duration::from_secs(90 * 86_400)),
    );
    check("verify_audit", unchanged, svc.verify_audit());
    check("dump", unchanged, svc.dump());
    check("op", unchanged, svc.op());
    check("op_show", unchanged, svc.op_show());
    check(
        "plan",
        unchanged,
        svc.plan(svc.now().plus(Duration::from_secs(86_400))),
    );
    // Every member offline: refresh reads every record and reaches no agent.
    let mut offline = RefreshOptions::default();
    if let Ok(servers) = svc.server_records() {
        offline
            .offline
            .extend(servers.into_iter().map(|s| s.fqdn.to_string()));
    }
    if let Ok(devices) = svc.device_records() {
        offline
            .offline
            .extend(devices.into_iter().map(|d| d.name.clone()));
    }
    // A member whose damaged record gives it another name is not in the offline list:
    // refresh then tries its agent, which the in-memory transport lacks (an error).
    check("refresh", unchanged, svc.refresh(&[], &offline, |_, _| {}));
}
