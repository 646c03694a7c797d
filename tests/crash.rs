//! B5: a whole Remint CA (zone set-up, start, replicate, assign, apply by every member,
//! activation, baseline) as a list of idempotent steps, crashed at every commit: the store
//! fails commit N+1 and every later one; the "process" restarts (a new service over the same
//! store, the agents keep their state), re-runs the step that failed and the rest, and must end
//! where an uninterrupted run ends, with no serial number used twice (S3).
#![allow(clippy::unwrap_used)]

#[path = "common/sim.rs"]
mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use sim::{PS1, Sim, Spec, Svc, drive_svc, fq, remint_ca, t};
use zonepki::cert::{Certificate, CertificateDer};
use zonepki::chain::verify_chain;
use zonepki::error::Result;
use zonepki::ops::OpKind;
use zonepki::service::{OpView, RefreshOptions, ZoneService};
use zonepki::store::{FaultyStore, MemoryStore, Storage};
use zonepki::transport::LoopbackTransport;

type Store = Arc<FaultyStore<MemoryStore>>;
type Step = fn(&Svc<Store>, &Sim<Store>) -> Result<()>;

const ACT: &str = "2027-01-08T00:00:00Z";

fn none() -> RefreshOptions {
    RefreshOptions::default()
}

/// Each step is safe to run again after a crash anywhere inside it.
fn steps() -> Vec<(&'static str, Step)> {
    vec![
        ("init", |svc, sim| sim::init(svc, &sim.spec)),
        ("add ps2", |svc, _| sim::add_ps2(svc)),
        ("add sat1", |svc, _| sim::add_sat1(svc)),
        ("add content1", |svc, _| sim::add_content1(svc)),
        ("add devices", |svc, sim| sim::add_devices(svc, &sim.spec)),
        ("trust", |svc, _| sim::refresh_all(svc, &none())),
        ("start", |svc, _| {
            svc.start_remint_ca(remint_ca(ACT))?;
            Ok(())
        }),
        ("replicate", |svc, _| {
            svc.replicate(&[fq(PS1)])?;
            Ok(())
        }),
        ("assign", |svc, _| {
            svc.assign_now()?;
            Ok(())
        }),
        ("apply", |svc, _| {
            drive_svc(svc, &none())?;
            Ok(())
        }),
        ("activate", |svc, sim| {
            sim.clock.set(t(ACT));
            drive_svc(svc, &none())?;
            Ok(())
        }),
        ("baseline", |svc, _| {
            svc.baseline(false)?;
            Ok(())
        }),
    ]
}

/// What must not depend on where the crash was.
#[derive(Debug, PartialEq, Eq)]
struct End {
    op: (String, String, String, bool),
    devices: Vec<(String, String, Option<String>)>,
    servers: Vec<(String, String)>,
    replication: Vec<(String, String)>,
    stranded: Vec<String>,
    recovery: Vec<String>,
    notices: Vec<String>,
    ca_subject: String,
    retired: usize,
    /// Per server: the current leaf's subject and issuer.
    leaves: Vec<(String, String, String)>,
}

struct Outcome {
    end: End,
    commits: u64,
    restarts: usize,
}

fn run(fail_after: Option<u64>) -> Outcome {
    let store: Store = Arc::new(FaultyStore::new(MemoryStore::new(), fail_after));
    let mut sim = Sim::empty(
        Arc::clone(&store),
        LoopbackTransport::in_memory(),
        Spec::new(2),
    );
    let mut restarts = 0;
    for (name, step) in steps() {
        if let Err(e) = step(&sim.svc, &sim) {
            assert!(
                fail_after.is_some() && restarts == 0,
                "step {name} failed without an injected crash: {e}"
            );
            // The crash is over; the process restarts with a new service over the same store
            // and the same agents, and runs the step again.
            store.set_fail_after(None);
            restarts += 1;
            sim.svc = ZoneService::new(Arc::clone(&store), Arc::clone(&sim.transport), sim.clock);
            step(&sim.svc, &sim)
                .unwrap_or_else(|e| panic!("step {name} failed again after a restart: {e}"));
        }
    }
    let end = check_end(&sim, &store);
    Outcome {
        end,
        commits: store.commits(),
        restarts,
    }
}

fn view_end(v: &OpView) -> End {
    End {
        op: (
            v.kind.to_string(),
            v.state.to_string(),
            v.update_name.clone(),
            v.immediate,
        ),
        // Every member's update status, servers' and devices' (op show lists them apart).
        devices: v
            .servers
            .iter()
            .map(|s| (s.fqdn.clone(), s.status.to_string(), s.reason.clone()))
            .chain(
                v.devices
                    .iter()
                    .map(|d| (d.name.clone(), d.status.to_string(), d.reason.clone())),
            )
            .collect(),
        servers: v
            .servers
            .iter()
            .map(|s| (s.fqdn.clone(), s.certificate_status.to_string()))
            .collect(),
        replication: v
            .replication
            .iter()
            .map(|r| (r.server.clone(), r.status.to_string()))
            .collect(),
        stranded: v.stranded.clone(),
        recovery: v.recovery_available_on.clone(),
        notices: v
            .notices
            .iter()
            .map(|n| serde_json::to_value(n).unwrap()["event"].to_string())
            .collect(),
        ca_subject: String::new(),
        retired: 0,
        leaves: Vec::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    base16ct::lower::encode_string(bytes)
}

/// The end state, after checking what holds in every run: agents agree with the store, every
/// certificate chains to the final zone CA, the audit log verifies, serials are unique and
/// recorded.
fn check_end(sim: &Sim<Store>, store: &Store) -> End {
    let svc = &sim.svc;
    let v = svc.op_show().unwrap();
    let mut end = view_end(&v);
    assert!(v.stranded.is_empty(), "{:?}", v.stranded);
    let zone = svc.zone().unwrap();
    let ca = svc.ca_certificate().unwrap();
    end.ca_subject = ca.subject();
    end.retired = zone.retired_cas.len();
    let now = svc.now();
    let mut certs: BTreeSet<CertificateDer> = BTreeSet::new();
    certs.insert(ca.der().clone());
    certs.extend(zone.retired_cas.iter().map(|r| r.certificate.clone()));
    if let OpKind::RemintCa {
        future_ca,
        cross_certificate,
        ..
    } = svc.op().unwrap().unwrap().kind
    {
        assert_eq!(future_ca, *ca.der(), "the op's future CA is the zone CA");
        certs.insert(cross_certificate);
    }
    for rec in svc.server_records().unwrap() {
        let name = rec.fqdn.to_string();
        let held = sim.chain(&name);
        assert_eq!(
            held, rec.certificate,
            "{name}: the agent holds what the store says"
        );
        if let Some(leaf) = rec.certificate.first() {
            let leaf = Certificate::try_from(leaf).unwrap();
            verify_chain(&leaf, &[], std::slice::from_ref(&ca), now)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            end.leaves.push((name, leaf.subject(), leaf.issuer()));
        }
        certs.extend(rec.certificate);
    }
    for name in sim.all_names() {
        let (trust, staged, chain) = sim
            .transport
            .with_agent(&name, |a| {
                (a.trust().to_vec(), a.staged().is_some(), a.chain().to_vec())
            })
            .unwrap();
        assert_eq!(
            trust.first(),
            Some(ca.der()),
            "{name} trusts the zone CA first"
        );
        assert!(!staged, "{name} still has something staged");
        certs.extend(trust);
        certs.extend(chain);
    }
    let (held_ca, future) = sim
        .transport
        .with_agent(PS1, |a| {
            (a.ca_certificate().cloned(), a.future_ca_key().is_some())
        })
        .unwrap();
    assert_eq!(
        held_ca.as_ref(),
        Some(ca.der()),
        "the CA server holds the zone CA"
    );
    assert!(!future, "no future CA key left on the CA server");
    svc.verify_audit().unwrap();

    // S3: no serial twice, and every certificate in use has its serial recorded.
    let keys: Vec<String> = store
        .scan("serial/")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k.rsplit('/').next().unwrap().to_string())
        .collect();
    let recorded: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(
        recorded.len(),
        keys.len(),
        "a serial is recorded twice: {keys:?}"
    );
    let mut by_serial: BTreeMap<String, CertificateDer> = BTreeMap::new();
    for der in certs {
        let c = Certificate::try_from(&der).unwrap();
        let s = hex(c.serial());
        assert!(
            recorded.contains(&s),
            "{} (serial {s}) is in use but its serial is not recorded",
            c.subject()
        );
        if let Some(other) = by_serial.insert(s.clone(), der.clone()) {
            panic!("serial {s} is used by two certificates: {other:?} and {der:?}");
        }
    }
    end
}

#[test]
fn b5_a_remint_ca_survives_a_crash_at_every_commit() {
    let clean = run(None);
    assert_eq!(clean.restarts, 0);
    assert_eq!(clean.end.op.1, "baselined");
    assert!(
        clean.end.devices.iter().all(|d| d.1 == "activated"),
        "{:?}",
        clean.end.devices
    );
    assert!(clean.commits >= 10, "{} commits", clean.commits);
    for n in 0..=clean.commits {
        let crashed = run(Some(n));
        assert_eq!(
            crashed.restarts,
            usize::from(n < clean.commits),
            "crash after {n} commits"
        );
        assert_eq!(crashed.end, clean.end, "crash after {n} commits");
    }
}
