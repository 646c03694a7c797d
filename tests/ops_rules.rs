//! One test per staged-operation rule (../shared/REQUIREMENTS.md O1-O12, SR2, SR4, SR6, B3,
//! B6, B7, A1, A2): each fails if its rule breaks. Memory store, manual clock, loopback agents
//! (member files on disk for A1/A2), fixed epochs, no sleeps.
#![allow(clippy::unwrap_used)]

#[path = "common/sim.rs"]
mod sim;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sim::{CONTENT1, PS1, PS2, SAT1, Sim, Spec, failing, fq, offline, remint_ca, server_remint, t};
use zonepki::Error;
use zonepki::cert::bundle::read_file;
use zonepki::cert::{Certificate, Fingerprint};
use zonepki::chain::verify_chain;
use zonepki::clock::ManualClock;
use zonepki::ops::{ActivationRequest, Baselined, Notice, OpError, OpState};
use zonepki::service::{OpView, ZoneService};
use zonepki::store::{Committed, MemoryStore, Record, Storage, StoreError, Write};
use zonepki::transport::LoopbackTransport;
use zonepki::transport::RefreshOptions;
use zonepki::view::ReplicationStatus;
use zonepki::zone::ZoneError;

/// The activation time most tests use: a week after the zone's epoch.
const ACT: &str = "2027-01-08T00:00:00Z";

fn none() -> RefreshOptions {
    RefreshOptions::default()
}

fn dump<S: Storage>(sim: &Sim<S>) -> serde_json::Value {
    sim.svc.dump().unwrap()
}

fn busy(e: &Error) -> (String, String, String) {
    match e {
        Error::Op(OpError::Busy {
            running,
            update,
            wanted,
        }) => (running.clone(), update.clone(), wanted.clone()),
        other => panic!("expected a Busy refusal, got {other}"),
    }
}

/// Starts a Remint CA at ACT and brings every member to "applied".
fn applied_remint(devices: usize) -> Sim {
    let sim = Sim::new(devices);
    sim.svc.start_remint_ca(remint_ca(ACT)).unwrap();
    let v = sim.drive(&none());
    assert_eq!(v.state, "assigned");
    assert!(v.members().all(|(_, s)| s == "applied"), "{v:?}");
    sim
}

#[test]
fn o1_one_operation_at_a_time_and_refusals_name_the_running_one() {
    let sim = Sim::new(1);
    sim.svc.start_remint_ca(remint_ca(ACT)).unwrap();
    let before = dump(&sim);
    let future = sim
        .transport
        .with_agent(PS1, |a| a.future_ca_certificate().cloned())
        .unwrap();

    let e = sim.svc.start_remint_ca(remint_ca(ACT)).unwrap_err();
    assert_eq!(
        busy(&e),
        ("Remint CA".into(), "Remint CA".into(), "Remint CA".into())
    );
    assert!(e.to_string().contains("Remint CA"), "{e}");
    let e = sim
        .svc
        .start_server_remint(server_remint(&[SAT1], ACT))
        .unwrap_err();
    let (running, _, wanted) = busy(&e);
    assert_eq!(
        (running.as_str(), wanted.as_str()),
        ("Remint CA", "Server Remint")
    );
    assert!(e.to_string().contains("Remint CA (update"), "{e}");
    // Refused before anything happened: the store and the CA server's future CA are untouched.
    assert_eq!(dump(&sim), before);
    let after = sim
        .transport
        .with_agent(PS1, |a| a.future_ca_certificate().cloned())
        .unwrap();
    assert_eq!(after, future);

    // Allowed again after a cancel; and the other way round.
    sim.svc.cancel().unwrap();
    let v = sim
        .svc
        .start_server_remint(server_remint(&[SAT1], ACT))
        .unwrap();
    assert_eq!(v.kind, "server_remint");
    let e = sim.svc.start_remint_ca(remint_ca(ACT)).unwrap_err();
    assert_eq!(
        busy(&e),
        (
            "Server Remint".into(),
            "server remint".into(),
            "Remint CA".into()
        )
    );
    assert!(e.to_string().contains("Server Remint"), "{e}");
    let e = sim
        .svc
        .start_server_remint(server_remint(&[PS2], ACT))
        .unwrap_err();
    assert_eq!(busy(&e).0, "Server Remint");

    // Allowed again after a baseline.
    sim.drive(&none());
    sim.clock.set(t(ACT));
    sim.drive(&none());
    let e = sim.svc.start_remint_ca(remint_ca(ACT)).unwrap_err();
    assert_eq!(busy(&e).0, "Server Remint", "activated still blocks");
    sim.svc.baseline(false).unwrap();
    let v = sim
        .svc
        .start_remint_ca(remint_ca("2027-02-01T00:00:00Z"))
        .unwrap();
    assert_eq!((v.id, v.kind.name()), (3, "remint_ca"));
}

#[test]
fn o2_activation_time_must_be_in_the_future_and_before_the_ca_expires() {
    let sim = Sim::new(1);
    let ca_end = sim.svc.ca_certificate().unwrap().not_after();
    let before = dump(&sim);
    let at = |ts| {
        let mut r = remint_ca(ACT);
        r.activation = ActivationRequest::At(ts);
        r
    };
    let refusals = [
        (at(t("2026-12-31T23:59:59Z")), "in the past"),
        (at(ca_end), "before the current CA expires"),
        (
            at(ca_end.plus(Duration::from_secs(86_400))),
            "before the current CA",
        ),
    ];
    for (req, text) in refusals {
        let e = sim.svc.start_remint_ca(req.clone()).unwrap_err();
        assert!(e.to_string().contains(text), "{req:?}: {e}");
    }
    let e = sim
        .svc
        .start_remint_ca(at(t("2026-12-31T23:59:59Z")))
        .unwrap_err();
    assert!(
        matches!(e, Error::Op(OpError::ActivationInPast { .. })),
        "{e}"
    );
    let e = sim.svc.start_remint_ca(at(ca_end)).unwrap_err();
    assert!(
        matches!(e, Error::Op(OpError::ActivationTooLate { ca_not_after, .. })
            if ca_not_after == ca_end),
        "{e}"
    );
    let mut immediate = remint_ca(ACT);
    immediate.activation = ActivationRequest::Immediate;
    let e = sim.svc.start_remint_ca(immediate).unwrap_err();
    assert!(
        matches!(e, Error::Op(OpError::ImmediateNotAllowed { .. })),
        "{e}"
    );
    // The same rules for an internal Server Remint.
    let mut sr = server_remint(&[SAT1], ACT);
    sr.activation = ActivationRequest::At(ca_end);
    let e = sim.svc.start_server_remint(sr.clone()).unwrap_err();
    assert!(
        matches!(e, Error::Op(OpError::ActivationTooLate { .. })),
        "{e}"
    );
    sr.activation = ActivationRequest::Immediate;
    let e = sim.svc.start_server_remint(sr).unwrap_err();
    assert!(
        matches!(e, Error::Op(OpError::ImmediateNotAllowed { .. })),
        "{e}"
    );
    assert_eq!(dump(&sim), before, "refusals change nothing");
    // The last second before the CA's expiry is fine.
    let v = sim
        .svc
        .start_remint_ca(at(ca_end.minus(Duration::from_secs(1))))
        .unwrap();
    assert_eq!(v.state, "replicating");
}

#[test]
fn o2_expired_ca_activates_immediately_and_only_the_ca_server_recovers_by_itself() {
    let sim = Sim::new(2);
    let old = sim.svc.ca_certificate().unwrap();
    let now = old.not_after().plus(Duration::from_secs(86_400));
    sim.clock.set(now);
    let e = sim
        .svc
        .start_remint_ca(remint_ca("2032-03-01T00:00:00Z"))
        .unwrap_err();
    assert!(
        matches!(e, Error::Op(OpError::CaExpiredUseImmediate { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("immediate"), "{e}");
    let mut req = remint_ca(ACT);
    req.activation = ActivationRequest::Immediate;
    let v = sim.svc.start_remint_ca(req).unwrap();
    // Activation happens at start.
    assert_eq!(v.state, "activated");
    assert!(v.immediate);
    assert_eq!(v.activation, now);
    let new_ca = sim.svc.ca_certificate().unwrap();
    assert_ne!(new_ca, old);
    assert!(
        v.notices
            .iter()
            .any(|n| matches!(n, Notice::ResignRequired { .. }))
    );
    let v = sim.drive(&none());
    // The manual (11 SP4, Remint CA step 5): the Certificate Remint Tool must be run on every
    // device apart from the new CA server, where it is launched automatically.
    let mut expected: Vec<String> = sim.all_names();
    expected.retain(|n| n != PS1);
    let mut stranded = v.stranded.clone();
    stranded.sort();
    expected.sort();
    assert_eq!(stranded, expected, "{:?}", v.devices);
    assert_eq!(sim.status(&v, PS1), "recovered", "{:?}", v.devices);
    // The CA server trusts the new CA and presents a certificate from it; the others cannot
    // talk to it until they run the tool.
    assert!(sim.trust(PS1).contains(new_ca.der()));
    let leaf = Certificate::try_from(&sim.chain(PS1)[0]).unwrap();
    verify_chain(&leaf, &[], std::slice::from_ref(&new_ca), sim.svc.now()).unwrap();
    assert!(sim.communicates(PS1, PS1));
    assert!(!sim.communicates("dev-1", PS1));
    assert!(!sim.trust("dev-1").contains(new_ca.der()));
    // The CA server holds the new CA key as its current CA.
    let promoted = sim
        .transport
        .with_agent(PS1, |a| {
            (a.ca_certificate().cloned(), a.future_ca_key().is_some())
        })
        .unwrap();
    assert_eq!(promoted, (Some(new_ca.der().clone()), false));
}

#[test]
fn o3_replication_rows_are_every_primary_and_content_satellite() {
    let sim = Sim::new(1);
    let v = sim.svc.start_remint_ca(remint_ca(ACT)).unwrap();
    let rows = |v: &OpView| -> Vec<(String, String)> {
        v.replication
            .iter()
            .map(|r| (r.server.clone(), r.status.to_string()))
            .collect()
    };
    let row = |s: &str, st: &str| (s.to_string(), st.to_string());
    assert_eq!(
        rows(&v),
        [
            row(CONTENT1, "pending"),
            row(PS1, "pending"),
            row(PS2, "pending")
        ],
        "no row for the Authentication Satellite"
    );
    // A content server pulls the content when it refreshes; others do not count.
    sim.refresh(&[CONTENT1, SAT1, "dev-1"], &none());
    let v = sim.svc.op_show().unwrap();
    assert_eq!(
        rows(&v),
        [
            row(CONTENT1, "replicated"),
            row(PS1, "pending"),
            row(PS2, "pending")
        ]
    );
    let v = sim.svc.replicate(&[fq(PS2)]).unwrap();
    assert_eq!(
        (v.replication[2].server.as_str(), v.replication[2].status),
        (PS2, ReplicationStatus::Replicated)
    );
    assert_eq!(v.state, "replicating");
    let e = sim.svc.replicate(&[fq(SAT1)]).unwrap_err();
    assert!(matches!(e, Error::Op(OpError::NotInUpdate { .. })), "{e}");
    // An offline content server stays pending.
    sim.refresh(&[], &offline(&[PS1]));
    assert_eq!(sim.svc.op_show().unwrap().replication[1].status, "pending");
    sim.refresh(&[PS1], &none());
    let v = sim.svc.op_show().unwrap();
    assert!(v.replication.iter().all(|r| r.status == "replicated"));
}

#[test]
fn o4_assigned_automatically_exactly_when_the_last_content_server_replicates() {
    let sim = Sim::new(2);
    sim.svc.start_remint_ca(remint_ca(ACT)).unwrap();
    let v = sim.svc.replicate(&[fq(PS1), fq(CONTENT1)]).unwrap();
    assert_eq!(v.state, "replicating");
    assert!(v.members().all(|(_, s)| s == "not assigned"));
    let v = sim.svc.replicate(&[fq(PS2)]).unwrap();
    assert_eq!(v.state, "assigned");
    assert!(matches!(
        sim.svc.op().unwrap().unwrap().state,
        OpState::Assigned(zonepki::ops::Assigned { manual: false, .. })
    ));
    // Remint CA: every member of the zone.
    let mut names: Vec<String> = v.members().map(|(n, _)| n.to_string()).collect();
    let mut all = sim.all_names();
    names.sort();
    all.sort();
    assert_eq!(names, all);
    assert!(v.members().all(|(_, s)| s == "assigned"), "{v:?}");
    let e = sim.svc.assign_now().unwrap_err();
    assert!(e.to_string().contains("assign now"), "{e}");
}

#[test]
fn o4_assign_now_before_replication_completes() {
    let sim = Sim::new(1);
    sim.svc.start_remint_ca(remint_ca(ACT)).unwrap();
    let v = sim.svc.assign_now().unwrap();
    assert_eq!(v.state, "assigned");
    assert!(v.replication.iter().all(|r| r.status == "pending"));
    assert!(matches!(
        sim.svc.op().unwrap().unwrap().state,
        OpState::Assigned(zonepki::ops::Assigned { manual: true, .. })
    ));
    // Members apply at once; content servers still replicate as they refresh.
    let v = sim.drive(&none());
    assert!(v.members().all(|(_, s)| s == "applied"), "{v:?}");
    assert!(v.replication.iter().all(|r| r.status == "replicated"));
}

#[test]
fn o4_server_remint_is_assigned_to_the_selected_servers_only() {
    let sim = Sim::new(2);
    let v = sim
        .svc
        .start_server_remint(server_remint(&[SAT1, PS2], ACT))
        .unwrap();
    let names: Vec<&str> = v.members().map(|(n, _)| n).collect();
    assert_eq!(names, [PS2, SAT1]);
    assert!(v.devices.is_empty(), "only servers: {v:?}");
    let v = sim.drive(&none());
    assert_eq!(v.state, "assigned");
    assert!(v.members().all(|(_, s)| s == "applied"), "{v:?}");
    for name in sim.all_names() {
        let staged = sim.staged_op(&name);
        let selected = name == PS2 || name == SAT1;
        assert_eq!(staged.is_some(), selected, "{name}");
    }
}

#[test]
fn o5_member_statuses_redeploy_and_ignore() {
    let sim = Sim::new(3);
    sim.svc.start_remint_ca(remint_ca(ACT)).unwrap();
    let v = sim.svc.assign_now().unwrap();
    assert!(v.members().all(|(_, s)| s == "assigned"));
    let opts = RefreshOptions::new().failing(["dev-1"]).offline(["dev-3"]);
    let v = sim.drive(&opts);
    assert_eq!(sim.status(&v, "dev-1"), "failed");
    assert!(
        sim.reason(&v, "dev-1").unwrap().contains("failure"),
        "{v:?}"
    );
    assert_eq!(sim.status(&v, "dev-2"), "applied");
    assert_eq!(sim.reason(&v, "dev-2"), None);
    assert_eq!(sim.status(&v, "dev-3"), "assigned");
    assert_eq!(sim.svc.devices().unwrap()[0].update_status, "failed");

    let e = sim.svc.redeploy(&["dev-2".into()]).unwrap_err();
    assert!(e.to_string().contains("has not failed"), "{e}");
    let v = sim.svc.redeploy(&["dev-1".into()]).unwrap();
    assert_eq!(sim.status(&v, "dev-1"), "assigned");
    assert_eq!(sim.reason(&v, "dev-1"), None);
    let v = sim.drive(&offline(&["dev-3"]));
    assert_eq!(sim.status(&v, "dev-1"), "applied");

    let e = sim.svc.ignore(&["nobody".into()]).unwrap_err();
    assert!(matches!(e, Error::Op(OpError::NotInUpdate { .. })), "{e}");
    let v = sim.svc.ignore(&["dev-3".into()]).unwrap();
    assert_eq!(sim.status(&v, "dev-3"), "ignored");
    // An ignored member is not stranded by activation, so no force is needed.
    sim.clock.set(t(ACT));
    let v = sim.drive(&offline(&["dev-3"]));
    assert_eq!(v.state, "activated");
    assert!(v.stranded.is_empty(), "{:?}", v.stranded);
    assert_eq!(sim.status(&v, "dev-3"), "ignored");
    assert_eq!(sim.status(&v, "dev-1"), "activated");
    sim.svc.baseline(false).unwrap();
}

#[test]
fn o6_where_the_recovery_bundle_is_offered() {
    let sim = Sim::new(1);
    let v = sim.svc.start_remint_ca(remint_ca(ACT)).unwrap();
    assert_eq!(v.recovery_available_on, [PS1], "the new CA server only");
    let v = sim.svc.replicate(&[fq(PS1), fq(PS2)]).unwrap();
    assert_eq!(v.recovery_available_on, [PS1], "still not assigned");
    let v = sim.svc.assign_now().unwrap();
    assert_eq!(v.recovery_available_on, [PS1, PS2], "other Primary Servers");
    sim.drive(&none());
    sim.clock.set(t(ACT));
    let v = sim.drive(&none());
    assert_eq!(v.state, "activated");
    assert_eq!(v.recovery_available_on, [PS1, PS2]);
    let v = sim.svc.baseline(false).unwrap();
    assert!(v.recovery_available_on.is_empty(), "{v:?}");

    let sim = Sim::new(1);
    sim.svc.start_remint_ca(remint_ca(ACT)).unwrap();
    sim.svc.assign_now().unwrap();
    let v = sim.svc.cancel().unwrap();
    assert_eq!(v.state, "cancelled");
    assert!(v.recovery_available_on.is_empty(), "{v:?}");
}

#[test]
fn o7_cancel_cut_off_is_ten_minutes_and_inside_it_only_ignore_works() {
    let deadline = t(ACT).minus(Duration::from_secs(600));
    let sim = Sim::new(2);
    sim.svc.start_remint_ca(remint_ca(ACT)).unwrap();
    sim.clock.set(deadline);
    let before = dump(&sim);
    let e = sim.svc.cancel().unwrap_err();
    assert!(
        matches!(e, Error::Op(OpError::CancelCutoff { deadline: d, .. }) if d == deadline),
        "{e}"
    );
    assert!(e.to_string().contains("ignore device"), "{e}");
    let e = sim.svc.assign_now().unwrap_err();
    assert!(
        matches!(
            e,
            Error::Op(OpError::InsideCutoff {
                event: "assign now",
                ..
            })
        ),
        "{e}"
    );
    assert_eq!(dump(&sim), before, "refusals change nothing");
    let v = sim.svc.ignore(&["dev-2".into()]).unwrap();
    assert_eq!(sim.status(&v, "dev-2"), "not assigned");
    // Replication still completes (and assigns); redeploy is refused too.
    let v = sim.drive(&failing(&["dev-1"]));
    assert_eq!(v.state, "assigned");
    assert_eq!(sim.status(&v, "dev-1"), "failed");
    assert_eq!(sim.status(&v, "dev-2"), "ignored");
    let e = sim.svc.redeploy(&[]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Op(OpError::InsideCutoff {
                event: "redeploy",
                ..
            })
        ),
        "{e}"
    );
    sim.svc.cancel().unwrap_err();

    // One second earlier, cancel is allowed.
    let sim = Sim::new(1);
    sim.svc.start_remint_ca(remint_ca(ACT)).unwrap();
    sim.drive(&none());
    sim.clock.set(deadline.minus(Duration::from_secs(1)));
    let v = sim.svc.cancel().unwrap();
    assert_eq!(v.state, "cancelled");
}

#[test]
fn o7_a_failed_cancel_changes_nothing_and_can_be_retried() {
    let sim = applied_remint(1);
    let future = || {
        sim.transport
            .with_agent(PS1, |a| a.future_ca_certificate().cloned())
            .unwrap()
    };
    assert!(future().is_some());
    sim.transport.set_offline(PS1, true);
    let before = dump(&sim);
    let e = sim.svc.cancel().unwrap_err();
    assert!(e.to_string().contains("retry"), "{e}");
    assert_eq!(dump(&sim), before, "a failed cancel changes nothing");
    assert_eq!(sim.svc.op_show().unwrap().state, "assigned");
    assert!(future().is_some());
    sim.transport.set_offline(PS1, false);
    let v = sim.svc.cancel().unwrap();
    assert_eq!(v.state, "cancelled");
    assert!(future().is_none(), "the future CA key is discarded");
}

#[test]
fn o7_after_a_cancel_members_drop_what_they_staged_and_a_new_operation_starts() {
    let sim = applied_remint(2);
    let old = sim.svc.ca_certificate().unwrap();
    let cancelled_ca = match sim.svc.op().unwrap().unwrap().kind {
        zonepki::ops::OpKind::RemintCa { future_ca, .. } => future_ca,
        other => panic!("{other:?}"),
    };
    for name in sim.all_names() {
        assert_eq!(sim.staged_op(&name), Some(1), "{name}");
    }
    sim.svc.cancel().unwrap();
    // Every action is available again: a new operation starts at once.
    let v = sim
        .svc
        .start_remint_ca(remint_ca("2027-01-09T00:00:00Z"))
        .unwrap();
    assert_eq!(v.id, 2);
    // At their next refresh every member drops operation 1's material, though it is a target
    // of the new operation (whose update the Primary Servers refresh before it is assigned).
    sim.refresh(&[], &none());
    for name in sim.all_names() {
        assert_ne!(sim.staged_op(&name), Some(1), "{name} still holds op 1");
        let trust = sim.trust(&name);
        assert!(
            !trust.contains(&cancelled_ca),
            "{name} trusts the cancelled CA"
        );
    }
    // The Primary Servers refreshed before the new update was assigned: back to the old CA.
    for name in [PS1, PS2] {
        assert_eq!(sim.trust(name), [old.der().clone()], "{name}");
    }
    let check = |name: &str| {
        sim.svc
            .transport()
            .with_agent(name, |a| a.staged().is_none())
            .unwrap()
    };
    assert!(check(PS1) && check(PS2));
    // The new operation runs to its end.
    let v = sim.drive(&none());
    assert!(v.members().all(|(_, s)| s == "applied"), "{v:?}");
    for name in sim.all_names() {
        assert_eq!(sim.staged_op(&name), Some(2), "{name}");
    }
}

#[test]
fn o8_activation_at_exactly_its_time_in_order_and_offline_members_are_stranded() {
    let sim = Sim::new(3);
    sim.svc.start_remint_ca(remint_ca(ACT)).unwrap();
    let v = sim.drive(&offline(&["dev-2"]));
    assert_eq!(sim.status(&v, "dev-2"), "assigned");
    let chain_before = sim.chain(PS1);
    sim.clock.set(t(ACT).minus(Duration::from_secs(1)));
    let out = sim.refresh(&[], &offline(&["dev-2"]));
    assert!(
        out.iter()
            .all(|o| o.outcome == "up-to-date" || o.name == "dev-2"),
        "{out:?}"
    );
    assert_eq!(sim.svc.op_show().unwrap().state, "assigned");
    assert_eq!(sim.chain(PS1), chain_before);

    sim.clock.set(t(ACT));
    let shuffled = ["dev-2", SAT1, "dev-3", PS2, CONTENT1, "dev-1", PS1];
    let out = sim.refresh(&shuffled, &offline(&["dev-2"]));
    let order: Vec<&str> = out.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        order,
        [PS1, PS2, CONTENT1, SAT1, "dev-1", "dev-2", "dev-3"],
        "the new CA server, then the other Primary Servers, then everything else"
    );
    for o in &out {
        let want = if o.name == "dev-2" {
            "offline"
        } else {
            "activated"
        };
        assert_eq!(o.outcome, want, "{o:?}");
    }
    let v = sim.svc.op_show().unwrap();
    assert_eq!(v.state, "activated");
    assert_eq!(v.stranded, ["dev-2"]);
    assert_eq!(sim.status(&v, "dev-2"), "stranded");
    assert_ne!(sim.chain(PS1), chain_before);
}

#[test]
fn o9_a_failed_activation_is_retried_at_the_next_refresh() {
    let sim = applied_remint(2);
    let sat_before = sim.chain(SAT1);
    sim.clock.set(t(ACT));
    let out = sim.refresh(&[], &failing(&["dev-1", SAT1]));
    for o in &out {
        let want = if o.name == "dev-1" || o.name == SAT1 {
            "failed"
        } else {
            "activated"
        };
        assert_eq!(o.outcome, want, "{o:?}");
    }
    let v = sim.svc.op_show().unwrap();
    assert!(v.stranded.is_empty(), "applied members are not stranded");
    assert!(
        sim.reason(&v, "dev-1").unwrap().contains("retried"),
        "{v:?}"
    );
    assert_eq!(sim.staged_op("dev-1"), Some(1));
    assert_eq!(sim.chain(SAT1), sat_before);
    let out = sim.refresh(&["dev-1", SAT1], &none());
    assert!(out.iter().all(|o| o.outcome == "activated"), "{out:?}");
    let v = sim.svc.op_show().unwrap();
    assert_eq!(sim.status(&v, "dev-1"), "activated");
    assert_eq!(sim.reason(&v, "dev-1"), None);
    let new_ca = sim.svc.ca_certificate().unwrap();
    assert_eq!(sim.trust("dev-1")[0], *new_ca.der());
    assert_ne!(sim.chain(SAT1), sat_before);
    assert!(sim.communicates("dev-1", SAT1));
}

#[test]
fn o10_baseline_needs_force_while_stranded_and_then_the_bundle_is_gone() {
    let sim = Sim::new(2);
    sim.svc.start_remint_ca(remint_ca(ACT)).unwrap();
    sim.drive(&offline(&["dev-2"]));
    let e = sim.svc.baseline(false).unwrap_err();
    assert!(
        e.to_string().contains("cannot baseline"),
        "not activated: {e}"
    );
    sim.clock.set(t(ACT));
    let v = sim.drive(&offline(&["dev-2"]));
    assert_eq!(v.stranded, ["dev-2"]);
    let before = dump(&sim);
    let e = sim.svc.baseline(false).unwrap_err();
    assert!(
        matches!(e, Error::Op(OpError::StrandedBaseline { count: 1, .. })),
        "{e}"
    );
    // Library words: the fact and the way out, no command-line flag (issue 9 item 9).
    assert!(e.to_string().contains("force the baseline"), "{e}");
    assert!(!e.to_string().contains("--"), "{e}");
    assert_eq!(dump(&sim), before);
    let v = sim.svc.baseline(true).unwrap();
    assert_eq!(v.state, "baselined");
    assert!(v.recovery_available_on.is_empty());
    assert!(matches!(
        sim.svc.op().unwrap().unwrap().state,
        OpState::Baselined(Baselined {
            forced: true,
            stranded: 1,
            ..
        })
    ));
    // dev-2 comes back after the bundle is gone: it stays cut off.
    let out = sim.refresh(&["dev-2"], &none());
    assert_eq!(out[0].outcome, "stranded", "{out:?}");
    let new_ca = sim.svc.ca_certificate().unwrap();
    assert!(!sim.trust("dev-2").contains(new_ca.der()));
    assert!(!sim.communicates("dev-2", PS1));
    sim.refresh(&[], &none());
    assert!(!sim.communicates("dev-2", PS2));
    assert!(sim.communicates("dev-1", PS1));
}

#[test]
fn o11_resign_required_after_a_ca_remint_with_both_fingerprints() {
    let sim = applied_remint(1);
    let old = sim.svc.ca_certificate().unwrap();
    let v = sim.svc.op_show().unwrap();
    assert!(
        !v.notices
            .iter()
            .any(|n| matches!(n, Notice::ResignRequired { .. }))
    );
    sim.clock.set(t(ACT));
    let v = sim.drive(&none());
    let new = sim.svc.ca_certificate().unwrap();
    let resign: Vec<&Notice> = v
        .notices
        .iter()
        .filter(|n| matches!(n, Notice::ResignRequired { .. }))
        .collect();
    assert_eq!(
        resign,
        [&Notice::ResignRequired {
            old_ca_sha256: Fingerprint::sha256(old.der().as_bytes()).to_string(),
            new_ca_sha256: Fingerprint::sha256(new.der().as_bytes()).to_string(),
            at: t(ACT),
        }]
    );
    assert_ne!(old, new);
}

#[test]
fn o12_legacy_refresh_point_once_every_primary_has_its_future_certificate() {
    let sim = Sim::new(1);
    sim.svc.start_remint_ca(remint_ca(ACT)).unwrap();
    sim.svc.assign_now().unwrap();
    let legacy = |v: &OpView| {
        v.notices
            .iter()
            .filter_map(|n| match n {
                Notice::LegacyRefreshPoint { at } => Some(*at),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let v = sim.drive(&offline(&[PS2]));
    assert_eq!(sim.status(&v, PS1), "applied");
    assert_eq!(sim.status(&v, SAT1), "applied");
    assert!(legacy(&v).is_empty(), "ps2 has no future certificate yet");
    sim.clock.advance(Duration::from_secs(3600));
    sim.refresh(&[PS2], &none());
    let v = sim.svc.op_show().unwrap();
    assert_eq!(
        legacy(&v),
        [t("2027-01-01T01:00:00Z")],
        "reached when ps2's certificate was made"
    );
    sim.refresh(&[], &none());
    assert_eq!(
        legacy(&sim.svc.op_show().unwrap()).len(),
        1,
        "reported once"
    );
}

#[test]
fn sr2_server_remint_selection_rules() {
    let sim = Sim::new(1);
    let before = dump(&sim);
    let refused = |req, text: &str| {
        let e = sim.svc.start_server_remint(req).unwrap_err();
        assert!(e.to_string().contains(text), "{text}: {e}");
        e
    };
    let mut two = server_remint(&[PS1, SAT1], ACT);
    two.common_name = Some("x.zone.example".into());
    refused(two, "exactly one server without satellites");
    let mut parent = server_remint(&[PS2], ACT);
    parent.common_name = Some("x.zone.example".into());
    refused(parent, "exactly one server without satellites");
    let mut dns = server_remint(&[SAT1], ACT);
    dns.include_dns = true;
    refused(dns, "no additional DNS names");
    let mut unnamed = server_remint(&[SAT1], ACT);
    unnamed.update_name = "  ".into();
    let e = refused(unnamed, "update name");
    assert!(matches!(e, Error::Op(OpError::MissingUpdateName)), "{e}");
    refused(
        server_remint(&[CONTENT1], ACT),
        "only Primary Servers and Authentication Satellites",
    );
    let e = refused(server_remint(&["nowhere.zone.example"], ACT), "nowhere");
    assert!(
        matches!(e, Error::Zone(ZoneError::UnknownServer { .. })),
        "{e}"
    );
    refused(server_remint(&[], ACT), "at least one server");
    assert_eq!(dump(&sim), before, "refusals change nothing");

    // One server without satellites, with DNS names: CN override and DNS names are allowed.
    let mut ok = server_remint(&[PS1], ACT);
    ok.common_name = Some("ca-host.zone.example".into());
    ok.include_dns = true;
    sim.svc.start_server_remint(ok).unwrap();
    sim.drive(&none());
    let future = sim.svc.future_chain(&fq(PS1)).unwrap().unwrap();
    let leaf = Certificate::try_from(&future[0]).unwrap();
    assert_eq!(leaf.subject(), "CN=ca-host.zone.example");
    let names = leaf.dns_names().unwrap();
    assert!(
        names.contains(&"alias.zone.example".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&PS1.to_string()), "{names:?}");
}

#[test]
fn sr4_server_certificate_status_during_a_remint() {
    let sim = Sim::new(1);
    sim.svc
        .start_server_remint(server_remint(&[PS2, SAT1], ACT))
        .unwrap();
    sim.svc.assign_now().unwrap();
    assert_eq!(sim.svc.server(&fq(SAT1)).unwrap().status, "active");
    // The CA server cannot be reached while sat1 applies: its certificate cannot be made.
    sim.transport.set_offline(PS1, true);
    let out = sim.refresh(&[SAT1], &none());
    assert_eq!(out[0].outcome, "failed", "{out:?}");
    let sat = sim.svc.server(&fq(SAT1)).unwrap();
    assert_eq!(sat.status, "creating certificate failed");
    assert_eq!(sat.update_status, "failed");
    assert!(sat.options.is_empty());
    let v = sim.svc.op_show().unwrap();
    let row = v.servers.iter().find(|s| s.fqdn == SAT1).unwrap();
    assert_eq!(row.certificate_status, "creating certificate failed");
    assert!(
        sim.reason(&v, SAT1)
            .unwrap()
            .contains("creating certificate failed")
    );

    sim.transport.set_offline(PS1, false);
    sim.refresh(&[PS2], &none());
    let ps2 = sim.svc.server(&fq(PS2)).unwrap();
    assert_eq!(ps2.status, "new certificate created");
    assert_eq!(ps2.options, ["future certificate"]);
    sim.svc.redeploy(&[]).unwrap();
    sim.refresh(&[SAT1], &none());
    let sat = sim.svc.server(&fq(SAT1)).unwrap();
    assert_eq!(sat.status, "new certificate created");
    assert_eq!(sat.update_status, "applied");
    // After activation the column shows the certificate again.
    sim.clock.set(t(ACT));
    sim.drive(&none());
    sim.svc.baseline(false).unwrap();
    assert_eq!(sim.svc.server(&fq(SAT1)).unwrap().status, "active");
}

#[test]
fn sr6_an_expired_server_certificate_needs_the_emergency_replacement() {
    let sim = Sim::new(1);
    let old = sim.svc.ca_certificate().unwrap();
    // A Remint CA two years in, with sat1 taken out of it: sat1 keeps its old certificate.
    sim.clock.set(t("2029-01-01T00:00:00Z"));
    sim.svc
        .start_remint_ca(remint_ca("2029-01-08T00:00:00Z"))
        .unwrap();
    sim.svc.ignore(&[SAT1.into()]).unwrap();
    sim.drive(&none());
    sim.clock.set(t("2029-01-08T00:00:00Z"));
    sim.drive(&none());
    sim.svc.baseline(false).unwrap();
    let sat_leaf = Certificate::try_from(&sim.chain(SAT1)[0]).unwrap();
    assert_eq!(sat_leaf.not_after(), old.not_after());
    // Past the old certificate's expiry (the new CA is still valid).
    sim.clock.set(old.not_after().plus(Duration::from_secs(1)));
    let before = dump(&sim);
    let e = sim
        .svc
        .start_server_remint(server_remint(&[SAT1], "2032-02-01T00:00:00Z"))
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("expired"), "{text}");
    assert!(text.contains("emergency replacement"), "{text}");
    assert_eq!(dump(&sim), before);
    // A server with a valid certificate can still be reminted.
    sim.svc
        .start_server_remint(server_remint(&[PS2], "2032-02-01T00:00:00Z"))
        .unwrap();
}

#[test]
fn b3_plan_says_who_communicates_after_activation() {
    let sim = Sim::new(2);
    sim.svc.start_remint_ca(remint_ca(ACT)).unwrap();
    sim.drive(&offline(&["dev-2"]));
    let plan = sim.svc.plan(t(ACT)).unwrap();
    assert!(plan.activated_by_then);
    assert!(
        !sim.svc
            .plan(t("2027-01-07T23:59:59Z"))
            .unwrap()
            .activated_by_then
    );
    assert_eq!(plan.stranded, ["dev-2"]);
    assert_eq!(plan.members.len(), sim.all_names().len());
    for m in &plan.members {
        if m.name == "dev-2" {
            assert!(!m.communicates, "{m:?}");
            assert!(m.reason.contains("stranded"), "{m:?}");
            assert_eq!(m.status, "assigned");
        } else {
            assert!(m.communicates, "{m:?}");
            assert_eq!(m.status, "applied");
        }
    }
    // What the plan said is what happens.
    sim.clock.set(t(ACT));
    assert_eq!(sim.drive(&offline(&["dev-2"])).stranded, ["dev-2"]);
}

#[test]
fn b7_the_old_ca_stays_trusted_until_its_last_certificate_expires() {
    let sim = Sim::new(2);
    let old = sim.svc.ca_certificate().unwrap();
    sim.clock.set(t("2029-01-01T00:00:00Z"));
    sim.svc
        .start_remint_ca(remint_ca("2029-01-08T00:00:00Z"))
        .unwrap();
    sim.drive(&offline(&[SAT1]));
    sim.clock.set(t("2029-01-08T00:00:00Z"));
    let v = sim.drive(&offline(&[SAT1]));
    assert_eq!(v.stranded, [SAT1]);
    let new = sim.svc.ca_certificate().unwrap();
    let zone = sim.svc.zone().unwrap();
    assert_eq!(zone.retired_cas[0].certificate, *old.der());
    assert_eq!(zone.retired_cas[0].keep_until, old.not_after());
    // A device that applied trusts both, so it still talks to the stranded sat1 (old-CA
    // certificate) and to ps1 (new-CA certificate).
    let trust = sim.trust("dev-1");
    assert!(trust.contains(old.der()) && trust.contains(new.der()));
    assert_eq!(
        Certificate::try_from(&sim.chain(SAT1)[0]).unwrap().issuer(),
        old.subject()
    );
    assert!(sim.communicates("dev-1", SAT1));
    assert!(sim.communicates("dev-1", PS1));
    sim.svc.baseline(true).unwrap();
    sim.clock.set(old.not_after().minus(Duration::from_secs(1)));
    sim.refresh(&["dev-1"], &none());
    assert!(sim.trust("dev-1").contains(old.der()));
    sim.clock.set(old.not_after().plus(Duration::from_secs(1)));
    sim.refresh(&["dev-1"], &none());
    assert_eq!(sim.trust("dev-1"), [new.der().clone()]);
}

#[test]
fn a1_a2_member_files_stage_in_the_remint_repository_and_switch_at_activation() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::build(
        MemoryStore::new(),
        LoopbackTransport::with_root(dir.path()),
        Spec::new(1),
    );
    let file = |member: &str, f: &str| dir.path().join(member).join(f);
    let servers = [PS1, PS2, SAT1];
    let current: Vec<Vec<u8>> = servers
        .iter()
        .map(|s| std::fs::read(file(s, "current/cert.pem")).unwrap())
        .collect();
    sim.svc.start_remint_ca(remint_ca(ACT)).unwrap();
    let v = sim.drive(&none());
    assert!(v.members().all(|(_, s)| s == "applied"), "{v:?}");
    let future_ca = match sim.svc.op().unwrap().unwrap().kind {
        zonepki::ops::OpKind::RemintCa { future_ca, .. } => future_ca,
        other => panic!("{other:?}"),
    };
    let mut staged = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let server_cer = read_file(&file(s, "remint-repo/server.cer")).unwrap();
        let ca_cert = read_file(&file(s, "remint-repo/ca.cert")).unwrap();
        assert_eq!(ca_cert[0].der(), &future_ca, "{s}");
        assert_eq!(
            server_cer[0].der(),
            &sim.svc.future_chain(&fq(s)).unwrap().unwrap()[0]
        );
        verify_chain(&server_cer[0], &[], &ca_cert, sim.svc.now()).unwrap();
        assert_eq!(
            std::fs::read(file(s, "current/cert.pem")).unwrap(),
            current[i],
            "{s}: nothing switches before activation"
        );
        staged.push(server_cer[0].clone());
    }
    for m in ["dev-1", CONTENT1] {
        assert!(file(m, "remint-repo/ca.cert").exists(), "{m}");
        assert!(!file(m, "remint-repo/server.cer").exists(), "{m}");
    }
    sim.clock.set(t(ACT).minus(Duration::from_secs(1)));
    sim.drive(&none());
    assert_eq!(
        std::fs::read(file(PS1, "current/cert.pem")).unwrap(),
        current[0]
    );

    sim.clock.set(t(ACT));
    let v = sim.drive(&none());
    assert!(v.members().all(|(_, s)| s == "activated"), "{v:?}");
    for (i, s) in servers.iter().enumerate() {
        let now = read_file(&file(s, "current/cert.pem")).unwrap();
        assert_eq!(now[0], staged[i], "{s} switched to the staged certificate");
        let key = std::fs::read_to_string(file(s, "current/key.pem")).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        for f in ["server.cer", "ca.cert", "key.pem", "staged.json"] {
            assert!(!file(s, &format!("remint-repo/{f}")).exists(), "{s}/{f}");
        }
    }
    let trust = read_file(&file("dev-1", "current/trust.pem")).unwrap();
    assert_eq!(trust[0].der(), &future_ca);
    assert!(!file("dev-1", "remint-repo/ca.cert").exists());
}

/// A store that lets another frontend run just before this one's first commit (B6).
struct Interleaved<'a> {
    inner: Arc<MemoryStore>,
    other: Box<dyn Fn() + Send + Sync + 'a>,
    fired: AtomicBool,
}

impl Storage for Interleaved<'_> {
    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.inner.get(key)
    }
    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        self.inner.scan(prefix, after, limit)
    }
    fn last(&self, prefix: &str) -> Result<Option<(String, Record)>, StoreError> {
        self.inner.last(prefix)
    }
    fn commit(&self, writes: &[Write]) -> Result<Committed, StoreError> {
        if !self.fired.swap(true, Ordering::SeqCst) {
            (self.other)();
        }
        self.inner.commit(writes)
    }
}

#[test]
fn b6_two_frontends_cannot_both_start_an_operation() {
    let store = Arc::new(MemoryStore::new());
    let sim = Sim::build(
        Arc::clone(&store),
        LoopbackTransport::in_memory(),
        Spec::new(1),
    );
    let serials_before = store.scan_all("serial/").unwrap().len();
    let b_result: Mutex<Option<Result<OpView, String>>> = Mutex::new(None);
    let a_store = Interleaved {
        inner: Arc::clone(&store),
        other: Box::new(|| {
            let r = sim.svc.start_server_remint(server_remint(&[PS1], ACT));
            *b_result.lock().unwrap() = Some(r.map_err(|e| e.to_string()));
        }),
        fired: AtomicBool::new(false),
    };
    let clock: &'static ManualClock = sim.clock;
    let a = ZoneService::new(a_store, Arc::clone(&sim.transport), clock);
    let e = a.start_remint_ca(remint_ca(ACT)).unwrap_err();
    assert!(
        matches!(e, Error::ZoneChanged { .. }) && e.is_retryable(),
        "{e}"
    );
    let b = b_result.lock().unwrap().take().unwrap().unwrap();
    assert_eq!(b.kind, "server_remint");
    // Nothing of A's start remains: one operation (B's), none of A's serials, an intact log.
    let op = sim.svc.op().unwrap().unwrap();
    assert_eq!((op.id, op.kind.name()), (1, "server_remint"));
    assert_eq!(store.scan_all("op/history/").unwrap().len(), 0);
    assert_eq!(store.scan_all("serial/").unwrap().len(), serials_before);
    sim.svc.verify_audit().unwrap();
    // A, reloading, is refused by O1; B's operation runs to its end.
    let e = a.start_remint_ca(remint_ca(ACT)).unwrap_err();
    assert_eq!(busy(&e).0, "Server Remint");
    sim.drive(&none());
    sim.clock.set(t(ACT));
    let v = sim.drive(&none());
    assert_eq!(sim.status(&v, PS1), "activated");
    sim.svc.baseline(false).unwrap();
    // The CA server still holds the zone CA, and issues under it.
    let zone_ca = sim.svc.ca_certificate().unwrap();
    let held = sim
        .transport
        .with_agent(PS1, |a| a.ca_certificate().cloned())
        .unwrap();
    assert_eq!(held.as_ref(), Some(zone_ca.der()));
    sim.svc
        .add_server(zonepki::service::NewServer::new(
            fq("ps3.zone.example"),
            zonepki::zone::ServerRole::Primary,
        ))
        .unwrap();

    // And the other way round: two CA operations; the loser's future CA is not left behind
    // in place of the winner's.
    let store = Arc::new(MemoryStore::new());
    let sim = Sim::build(
        Arc::clone(&store),
        LoopbackTransport::in_memory(),
        Spec::new(1),
    );
    let b_result: Mutex<Option<Result<OpView, String>>> = Mutex::new(None);
    let a_store = Interleaved {
        inner: Arc::clone(&store),
        other: Box::new(|| {
            let r = sim.svc.start_remint_ca(remint_ca(ACT));
            *b_result.lock().unwrap() = Some(r.map_err(|e| e.to_string()));
        }),
        fired: AtomicBool::new(false),
    };
    let a = ZoneService::new(a_store, Arc::clone(&sim.transport), sim.clock);
    let e = a
        .start_remint_ca(remint_ca("2027-01-09T00:00:00Z"))
        .unwrap_err();
    assert!(
        matches!(e, Error::ZoneChanged { .. }) && e.is_retryable(),
        "{e}"
    );
    b_result.lock().unwrap().take().unwrap().unwrap();
    let op = sim.svc.op().unwrap().unwrap();
    assert_eq!(op.activation.at, t(ACT), "B's operation");
    let zonepki::ops::OpKind::RemintCa { future_ca, .. } = &op.kind else {
        panic!("{op:?}")
    };
    let agent_future = sim
        .transport
        .with_agent(PS1, |a| a.future_ca_certificate().cloned())
        .unwrap();
    assert_eq!(agent_future.as_ref(), Some(future_ca));
    sim.svc.verify_audit().unwrap();
    let v = sim.drive(&none());
    assert!(v.members().all(|(_, s)| s == "applied"), "{v:?}");
}

/// The audit events in `d` (a dump), oldest first.
fn audit_events(d: &serde_json::Value) -> Vec<String> {
    d.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("audit/entry/"))
        .map(|(_, e)| e["value"]["event"].as_str().unwrap().to_string())
        .collect()
}

/// Issue 10 item 5 (O7, O8, O10, B6): a command finds the operation once, with its due
/// scheduled work applied. At the activation time and without a tick, commands that make no
/// sense after activation are refused as such ("... while the operation is activated") and
/// commit nothing, not even the activation; an accepted command commits the activation, then
/// its own change. A regression guard for the typed core (the rules did not change).
#[test]
fn commands_at_a_due_activation_decide_on_the_activated_operation() {
    let sim = applied_remint(1);
    sim.clock.set(t(ACT));
    let before = dump(&sim);
    for (e, event) in [
        (sim.svc.cancel().unwrap_err(), "cancel"),
        (sim.svc.assign_now().unwrap_err(), "assign now"),
        (sim.svc.redeploy(&[]).unwrap_err(), "redeploy"),
        (
            sim.svc.replicate(&[fq(CONTENT1)]).unwrap_err(),
            "record replication",
        ),
    ] {
        assert!(
            matches!(
                e,
                Error::Op(OpError::WrongState {
                    state: "activated",
                    event: ev,
                }) if ev == event
            ),
            "{event}: {e}"
        );
    }
    assert_eq!(dump(&sim), before, "refused commands commit nothing");
    let v = sim.svc.baseline(false).unwrap();
    assert_eq!(v.state, "baselined");
    let events = audit_events(&dump(&sim));
    assert_eq!(
        events[events.len() - 2..],
        ["op.activate".to_string(), "op.baseline".to_string()]
    );
    assert_eq!(
        audit_events(&before).len() + 2,
        events.len(),
        "two commits: the scheduled work's and the command's"
    );
}
