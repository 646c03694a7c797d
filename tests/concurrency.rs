//! A refresh serves the servers that get new certificates side by side
//! (`ZoneService::with_concurrency`), and that changes nothing a frontend can see: the same
//! outcomes in the same order, the same records, the same audit, activation one by one in
//! O8's order (CA server, Primary Servers, everything else), and O3/O4's replication and
//! assignment in the middle of a refresh exactly as one-by-one.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use zonepki::agent::{AgentRequest, AgentResponse};
use zonepki::clock::{ManualClock, Timestamp};
use zonepki::key::KeySpec;
use zonepki::ops::ActivationRequest;
use zonepki::service::{InitInternal, NewServer, ServerRemintRequest, ZoneService};
use zonepki::store::MemoryStore;
use zonepki::transport::{Fleet, RefreshOptions};
use zonepki::transport::{LoopbackTransport, Transport, TransportError};
use zonepki::zone::{Fqdn, ServerRole};

const CA: &str = "ps1.zone.example";
const PS2: &str = "ps2.zone.example";
const SATS: usize = 6;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn fq(s: &str) -> Fqdn {
    s.parse().unwrap()
}

fn sat(i: usize) -> String {
    format!("sat{i}.zone.example")
}

/// The loopback, recording every call and how many were in flight at once.
///
/// With `rendezvous` on, the first signature (the certificate server signing a server's new
/// certificate) waits until a second call is in flight: if the service serves servers side by side, one arrives at once;
/// if it does not, none ever will, the wait runs out (a liveness bound, not an assertion on
/// time) and the in-flight count stays 1, which the test asserts. No sleeps.
#[derive(Default)]
struct Recording {
    inner: LoopbackTransport,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    calls: Mutex<Vec<(String, &'static str)>>,
    rendezvous: AtomicBool,
    met: (Mutex<bool>, Condvar),
}

impl Recording {
    fn reset(&self) {
        self.max_in_flight.store(0, Ordering::SeqCst);
        self.calls.lock().unwrap().clear();
    }
    fn max(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
    #[allow(dead_code)]
    fn calls_of(&self, kind: &str) -> Vec<String> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|(_, k)| *k == kind)
            .map(|(m, _)| m.clone())
            .collect()
    }
}

impl Transport for Recording {
    fn call(&self, member: &str, request: AgentRequest) -> Result<AgentResponse, TransportError> {
        let kind = match &request {
            AgentRequest::Enroll { .. } => "enroll",
            AgentRequest::SignCertificate { .. } => "sign",
            _ => "other",
        };
        self.calls.lock().unwrap().push((member.to_string(), kind));
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if self.rendezvous.load(Ordering::SeqCst) {
            let (met, cv) = &self.met;
            let mut met = met.lock().unwrap();
            if now >= 2 {
                *met = true;
                cv.notify_all();
            } else if kind == "sign" && !*met {
                // Bounded: a service that never overlaps makes this wait time out once.
                met = cv
                    .wait_timeout_while(met, Duration::from_secs(20), |m| !*m)
                    .unwrap()
                    .0;
                *met = true; // wait at most once per run
            }
        }
        let r = self.inner.call(member, request);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

impl zonepki::transport::InProcessFleet for Recording {
    fn fleet(&self) -> &LoopbackTransport {
        &self.inner
    }
}

type Svc = ZoneService<MemoryStore, Arc<Recording>, &'static ManualClock>;

/// ps1 (CA server), ps2, six Authentication Satellites under ps2, three devices.
fn zone(workers: usize) -> (Svc, Arc<Recording>, &'static ManualClock) {
    let clock: &'static ManualClock =
        Box::leak(Box::new(ManualClock::new(t("2027-01-01T00:00:00Z"))));
    let transport = Arc::new(Recording::default());
    let svc = ZoneService::new(MemoryStore::new(), transport.clone(), clock)
        .with_concurrency(NonZeroUsize::new(workers).unwrap());
    svc.init_internal(
        InitInternal::new(
            "Concurrency Zone",
            NewServer::new(fq(CA), ServerRole::Primary),
        )
        .with_ca_key(KeySpec::P256)
        .with_validity(5.try_into().unwrap()),
    )
    .unwrap();
    svc.add_server(NewServer::new(fq(PS2), ServerRole::Primary))
        .unwrap();
    for i in 1..=SATS {
        let mut s = NewServer::new(fq(&sat(i)), ServerRole::AuthSatellite);
        s.parent = Some(fq(PS2));
        svc.add_server(s).unwrap();
    }
    svc.add_devices(&["dev-1".into(), "dev-2".into(), "dev-3".into()], "24.4")
        .unwrap();
    svc.refresh(&[], &RefreshOptions::default(), |_, _| {})
        .unwrap();
    (svc, transport, clock)
}

/// What one Server Remint of every server shows, refresh by refresh.
#[derive(Debug, PartialEq)]
struct Seen {
    outcomes: Vec<Vec<(String, String)>>,
    op_show: Vec<serde_json::Value>,
    /// Record keys and versions, serial numbers (random) left out, and how many there are.
    records: BTreeMap<String, u64>,
    serials: usize,
    /// Every audit entry's event and detail, from the operation's start (the set-up's name
    /// fingerprints of random keys).
    audit: Vec<(String, serde_json::Value)>,
}

fn remint_everything(workers: usize) -> (Seen, Arc<Recording>) {
    let (svc, transport, clock) = zone(workers);
    let mut servers = vec![fq(CA), fq(PS2)];
    servers.extend((1..=SATS).map(|i| fq(&sat(i))));
    let activation = t("2027-01-08T00:00:00Z");
    svc.start_server_remint(
        ServerRemintRequest::new(servers, "concurrency", ActivationRequest::At(activation))
            .with_key(KeySpec::P256),
    )
    .unwrap();
    let mut seen = Seen {
        outcomes: Vec::new(),
        op_show: Vec::new(),
        records: BTreeMap::new(),
        serials: 0,
        audit: Vec::new(),
    };
    let refresh = |seen: &mut Seen| {
        let out = svc
            .refresh(&[], &RefreshOptions::default(), |_, _| {})
            .unwrap();
        seen.outcomes.push(
            out.into_iter()
                .map(|o| (o.name, o.outcome.to_string()))
                .collect::<Vec<_>>(),
        );
        seen.op_show
            .push(serde_json::to_value(svc.op_show().unwrap()).unwrap());
    };
    transport.reset();
    // Set-up enrolled one server at a time; the remint's enrolments may meet.
    transport.rendezvous.store(workers > 1, Ordering::SeqCst);
    // The first refresh replicates to ps1 (still replicating: ps2 has not pulled yet), then to
    // ps2 (the last content server: assigned, O4), and everyone after ps2 applies.
    refresh(&mut seen);
    refresh(&mut seen);
    let apply_max = transport.max();
    transport.reset();
    clock.set(activation);
    refresh(&mut seen);
    // Each member switched by its own clock (N5) and reported it, in O8's order.
    let activated: Vec<String> = seen.outcomes[2]
        .iter()
        .filter(|(_, o)| o == "activated")
        .map(|(n, _)| n.clone())
        .collect();
    let mut o8 = vec![CA.to_string(), PS2.to_string()];
    o8.extend((1..=SATS).map(sat));
    assert_eq!(activated, o8, "O8: CA server, Primary Servers, the rest");

    let d = svc.dump().unwrap();
    for (k, v) in d.as_object().unwrap() {
        if k.starts_with("serial/") {
            seen.serials += 1;
        } else if k.starts_with("audit/") {
            let e = &v["value"];
            if k != "audit/head" && (e["event"] == "op.start" || !seen.audit.is_empty()) {
                seen.audit.push((
                    e["event"].as_str().unwrap().to_string(),
                    e["detail"].clone(),
                ));
            }
        } else {
            seen.records
                .insert(k.clone(), v["version"].as_u64().unwrap());
        }
    }
    transport.max_in_flight.store(apply_max, Ordering::SeqCst);
    (seen, transport)
}

#[test]
fn servers_are_served_side_by_side_and_nothing_else_changes() {
    let (one, one_t) = remint_everything(1);
    let (four, four_t) = remint_everything(4);
    assert_eq!(
        one_t.max(),
        1,
        "with_concurrency(1) serves one member at a time"
    );
    assert!(
        four_t.max() >= 2,
        "with_concurrency(4): servers getting certificates overlap (max in flight {})",
        four_t.max()
    );
    assert_eq!(one, four, "the same outcomes, views, records and audit");

    // And what both saw is the rule: ps1 replicated, ps2 assigned the update and applied,
    // the satellites applied, the devices (not in a Server Remint) only refreshed trust.
    let first = &one.outcomes[0];
    let outcome = |name: &str| {
        first
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, o)| o.as_str())
            .unwrap()
    };
    assert_eq!(outcome(CA), "replicated");
    assert_eq!(outcome(PS2), "applied");
    for i in 1..=SATS {
        assert_eq!(outcome(&sat(i)), "applied");
    }
    assert_eq!(outcome("dev-1"), "up-to-date");
    assert_eq!(one.outcomes[1][0], (CA.to_string(), "applied".to_string()));
    let activated: Vec<_> = one.outcomes[2]
        .iter()
        .filter(|(_, o)| o == "activated")
        .collect();
    assert_eq!(activated.len(), 2 + SATS, "{:?}", one.outcomes[2]);
    assert_eq!(
        one.serials,
        1 + 2 * (2 + SATS),
        "the CA, then each server twice"
    );
    // The start, one answered batch per conversation round, the activation.
    let events: Vec<&str> = one.audit.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(events.first(), Some(&"op.start"), "{events:?}");
    assert_eq!(events.iter().filter(|e| **e == "op.activate").count(), 1);
    assert!(
        events
            .iter()
            .all(|e| ["op.start", "op.activate", "agent.report"].contains(e)),
        "{events:?}"
    );
}
