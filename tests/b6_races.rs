//! B6: every command's commit is conditioned on what the command read (issue 10 item 1).
//!
//! Two frontends on one store, interleaved deterministically: the second frontend's command
//! runs while the first one is talking to an agent, after it read the zone and before it
//! commits. On b3e91fe both commands committed; now the one that read a stale zone is refused
//! with a retryable `ZoneChanged` and changes nothing, and a retry decides on the new zone.
//!
//! Each race runs on the in-memory store (one store shared by the frontends) and on PostgreSQL
//! (issue 12 item 5, D1: each frontend on its own connection to one database, as several zoned
//! and zonectl processes are).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use zonepki::agent::{AgentRequest, AgentResponse};
use zonepki::cert::Certificate;
use zonepki::chain::verify_chain;
use zonepki::clock::{ManualClock, Timestamp};
use zonepki::error::Error;
use zonepki::key::KeySpec;
use zonepki::ops::ActivationRequest;
use zonepki::service::{
    InitInternal, NewServer, RemintCaRequest, ServerRemintRequest, ZoneService,
};
use zonepki::store::{MemoryStore, Storage};
use zonepki::transport::{Fleet, RefreshOptions};
use zonepki::transport::{LoopbackTransport, Transport, TransportError};
use zonepki::zone::{Fqdn, ServerRole};

const PS1: &str = "ps1.zone.example";
const PS2: &str = "ps2.zone.example";
const PS3: &str = "ps3.zone.example";
const ACT: &str = "2027-01-08T00:00:00Z";

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn fq(s: &str) -> Fqdn {
    s.parse().unwrap()
}

type Hook<'a> = Box<dyn FnOnce() + Send + 'a>;

/// The loopback, which runs `hook` (another frontend's command) once, when the first call of
/// kind `on` for `member` arrives: after the caller read the zone, before it commits.
struct Interleave<'a> {
    inner: &'a LoopbackTransport,
    member: &'static str,
    on: fn(&AgentRequest) -> bool,
    hook: Mutex<Option<Hook<'a>>>,
}

impl Transport for Interleave<'_> {
    fn call(&self, member: &str, request: AgentRequest) -> Result<AgentResponse, TransportError> {
        if member == self.member && (self.on)(&request) {
            let hook = self.hook.lock().unwrap().take();
            if let Some(hook) = hook {
                hook();
            }
        }
        self.inner.call(member, request)
    }
}

/// A Remint CA activating at [`ACT`].
fn remint_ca() -> RemintCaRequest {
    RemintCaRequest::new(ActivationRequest::At(t(ACT)))
        .with_key(KeySpec::P256)
        .with_validity(5.try_into().unwrap())
}

/// Opens the zone's store again: a frontend of its own on the same zone.
type Open<'a> = &'a dyn Fn() -> Box<dyn Storage>;

/// One in-memory store, shared.
fn memory() -> impl Fn() -> Box<dyn Storage> {
    let store = Arc::new(MemoryStore::new());
    move || Box::new(Arc::clone(&store)) as Box<dyn Storage>
}

/// A new PostgreSQL database; each open is a connection of its own.
#[cfg(zonepki_has_postgres)]
fn postgres(tag: &str) -> (common::pg::TestDb, impl Fn() -> Box<dyn Storage>) {
    let db = common::pg::TestDb::new(tag);
    let url = db.url.clone();
    let open =
        move || Box::new(zonepki::store::PostgresStore::connect(&url).unwrap()) as Box<dyn Storage>;
    (db, open)
}

/// ps1 (the CA server) and ps2, both enrolled.
fn zone<'a, S: Storage>(
    store: S,
    transport: &'a LoopbackTransport,
    clock: &'a ManualClock,
) -> ZoneService<S, &'a LoopbackTransport, &'a ManualClock> {
    let svc = ZoneService::new(store, transport, clock);
    svc.init_internal(
        InitInternal::new("Races", NewServer::new(fq(PS1), ServerRole::Primary))
            .with_ca_key(KeySpec::P256)
            .with_validity(5.try_into().unwrap()),
    )
    .unwrap();
    svc.add_server(NewServer::new(fq(PS2), ServerRole::Primary))
        .unwrap();
    svc
}

#[test]
fn server_add_racing_activation_never_enrols_under_the_retired_ca() {
    server_add_racing_activation(&memory());
}

#[cfg_attr(
    not(zonepki_has_postgres),
    ignore = "needs PostgreSQL: set ZONEPKI_TEST_POSTGRES (see tests/common/pg.rs); .ci/run starts one"
)]
#[test]
fn server_add_on_one_server_racing_activation_on_another_on_postgres_d1() {
    #[cfg(zonepki_has_postgres)]
    {
        let (_db, open) = postgres("b6_server_add");
        server_add_racing_activation(&open);
    }
}

fn server_add_racing_activation(open: Open<'_>) {
    let transport = LoopbackTransport::in_memory();
    let clock = ManualClock::new(t("2027-01-01T00:00:00Z"));
    let admin = zone(open(), &transport, &clock);
    let store = open();
    admin.start_remint_ca(remint_ca()).unwrap();
    for _ in 0..3 {
        admin
            .refresh(&[], &RefreshOptions::default(), |_, _| {})
            .unwrap();
    }
    let old_ca = admin.ca_certificate().unwrap();
    clock.set(t(ACT));

    // ps3's agent is making its key and CSR for the old CA when the daemon on another
    // Primary Server runs the activation that is due.
    let daemon = ZoneService::new(open(), &transport, &clock);
    let racing = Interleave {
        inner: &transport,
        member: PS3,
        on: |r| matches!(r, AgentRequest::Enroll { .. }),
        hook: Mutex::new(Some(Box::new(|| {
            assert!(daemon.tick().unwrap(), "the activation was due");
        }))),
    };
    let before_records = store_keys(&store);
    let frontend = ZoneService::new(open(), &racing, &clock);
    let err = frontend
        .add_server(NewServer::new(fq(PS3), ServerRole::Primary))
        .unwrap_err();
    assert!(
        matches!(err, Error::ZoneChanged { .. }) && err.is_retryable(),
        "{err}"
    );
    assert!(err.to_string().contains("the zone changed"), "{err}");
    let new_ca = admin.ca_certificate().unwrap();
    assert_ne!(new_ca.der(), old_ca.der(), "the activation committed");
    assert!(
        store_keys(&store)
            .iter()
            .all(|k| before_records.contains(k) || !k.starts_with("server/")),
        "no server record for ps3 after the refusal"
    );
    assert!(admin.server(&fq(PS3)).is_err());

    // The retry reads the new zone and enrols under the new CA.
    frontend
        .add_server(NewServer::new(fq(PS3), ServerRole::Primary))
        .unwrap();
    let chain = admin.server_chain(&fq(PS3)).unwrap();
    let leaf = Certificate::try_from(&chain[0]).unwrap();
    let ints: Vec<Certificate> = chain[1..]
        .iter()
        .map(|c| Certificate::try_from(c).unwrap())
        .collect();
    verify_chain(&leaf, &ints, &[new_ca], t(ACT)).unwrap();
    admin.verify_audit().unwrap();
}

#[test]
fn move_ca_racing_a_server_remint_start_lets_exactly_one_win() {
    move_ca_racing_a_server_remint(&memory());
}

#[cfg_attr(
    not(zonepki_has_postgres),
    ignore = "needs PostgreSQL: set ZONEPKI_TEST_POSTGRES (see tests/common/pg.rs); .ci/run starts one"
)]
#[test]
fn two_administrators_on_two_servers_start_conflicting_operations_on_postgres_d1() {
    #[cfg(zonepki_has_postgres)]
    {
        let (_db, open) = postgres("b6_two_admins");
        move_ca_racing_a_server_remint(&open);
    }
}

fn move_ca_racing_a_server_remint(open: Open<'_>) {
    let transport = LoopbackTransport::in_memory();
    let clock = ManualClock::new(t("2027-01-01T00:00:00Z"));
    let admin = zone(open(), &transport, &clock);

    // Administrator B starts a Server Remint of both servers while administrator A's Move CA
    // is taking the key from ps1 (A read "no operation runs" before).
    let b = ZoneService::new(open(), &transport, &clock);
    let b_result = Mutex::new(None);
    let racing = Interleave {
        inner: &transport,
        member: PS1,
        on: |r| matches!(r, AgentRequest::TransferCa { .. }),
        hook: Mutex::new(Some(Box::new(|| {
            let r = b.start_server_remint(
                ServerRemintRequest::new(
                    vec![fq(PS1), fq(PS2)],
                    "race",
                    ActivationRequest::At(t(ACT)),
                )
                .with_key(KeySpec::P256),
            );
            *b_result.lock().unwrap() = Some(r.map(|_| ()).map_err(|e| e.to_string()));
        }))),
    };
    let a = ZoneService::new(open(), &racing, &clock);
    let err = a.move_ca(&fq(PS2)).unwrap_err();
    assert!(
        matches!(err, Error::ZoneChanged { .. }) && err.is_retryable(),
        "{err}"
    );
    b_result.lock().unwrap().take().unwrap().unwrap();
    assert_eq!(
        admin.ca_view().unwrap().certificate_server.as_deref(),
        Some(PS1),
        "MV1: the role did not move while an operation runs"
    );
    // A, retrying, is refused by MV1 with the operation named.
    let again = a.move_ca(&fq(PS2)).unwrap_err().to_string();
    assert!(again.contains("Server Remint"), "{again}");

    // B's remint goes through: ps1 still holds the key, so both servers get certificates.
    for _ in 0..3 {
        admin
            .refresh(&[], &RefreshOptions::default(), |_, _| {})
            .unwrap();
    }
    let v = admin.op_show().unwrap();
    assert!(
        v.servers
            .iter()
            .all(|s| s.certificate_status == "new certificate created"),
        "{:?}",
        v.servers
    );
    admin.verify_audit().unwrap();
}

fn store_keys(store: &dyn Storage) -> Vec<String> {
    store
        .scan_all("")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

#[test]
fn a_cancel_that_loses_a_race_keeps_the_future_ca_key() {
    // Found by tests/b6_model.rs: the cancel discarded the future CA key before its commit,
    // so a commit that lost the race left a running operation, which may still activate,
    // without its CA key.
    let (store, transport) = (MemoryStore::new(), LoopbackTransport::in_memory());
    let clock = ManualClock::new(t("2027-01-01T00:00:00Z"));
    let admin = zone(&store, &transport, &clock);
    admin.start_remint_ca(remint_ca()).unwrap();
    let future = || {
        transport
            .with_agent(PS1, |a| a.future_ca_certificate().cloned())
            .unwrap()
    };
    assert!(future().is_some());
    let b = ZoneService::new(&store, &transport, &clock);
    let racing = Interleave {
        inner: &transport,
        member: PS1,
        on: |_| true,
        hook: Mutex::new(Some(Box::new(|| {
            b.add_devices(&["dev-1".into()], "24.4").unwrap();
        }))),
    };
    let a = ZoneService::new(&store, &racing, &clock);
    let err = a.cancel().unwrap_err();
    assert!(
        matches!(err, Error::ZoneChanged { .. }) && err.is_retryable(),
        "{err}"
    );
    assert_eq!(admin.op_show().unwrap().state, "replicating");
    assert!(future().is_some(), "the running operation keeps its CA key");
    // The retry cancels, and only then is the key discarded.
    assert_eq!(a.cancel().unwrap().state, "cancelled");
    assert!(future().is_none());
}
