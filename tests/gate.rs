//! B2 coverage-gated activation end to end (issue 14): a gated Remint CA is postponed at its
//! activation time while the update has not reached enough members (why recorded, notice
//! emitted, the O7 cut-off moved, cancel allowed again), then activates once coverage is met;
//! at the deadline it activates and reports the stranded, or holds and raises an alarm;
//! `plan` (B3) shows the gate's verdict. Memory store, manual clock, no sleeps.
#![allow(clippy::unwrap_used)]

#[path = "common/sim.rs"]
mod sim;

use std::time::Duration;

use sim::{SAT1, Sim, offline, remint_ca, t};
use zonepki::ops::{AtDeadline, Gate, Notice, OpError, ServerQuota};
use zonepki::service::OpView;

const HOUR: u64 = 3600;

fn gate(at_deadline: AtDeadline, step_secs: u64) -> Gate {
    Gate::new(80, ServerQuota::All)
        .with_step_secs(step_secs)
        .with_deadline_margin_secs(7 * 24 * HOUR)
        .with_at_deadline(at_deadline)
}

/// Offline through the refreshes before activation: an Authentication Satellite and four of
/// the eleven devices (ten managed devices and a Content Satellite): 7 of 11 is 63%.
const MISSING: [&str; 5] = [SAT1, "dev-1", "dev-2", "dev-3", "dev-4"];

fn postponements(v: &OpView) -> Vec<(String, String)> {
    v.notices
        .iter()
        .filter_map(|n| match n {
            Notice::ActivationPostponed { from, to, .. } => {
                Some((from.to_string(), to.to_string()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn gated_remint_ca_is_postponed_then_activates_once_coverage_is_met_b2() {
    let sim = Sim::new(10);
    let mut req = remint_ca("2027-02-01T00:00:00Z");
    req.gate = Some(gate(AtDeadline::Activate, HOUR));
    let v = sim.svc.start_remint_ca(req).unwrap();
    let g = v.gate.as_ref().expect("op show carries the gate");
    assert_eq!(
        g.state.deadline,
        t("2031-12-25T00:00:00Z"),
        "CA expiry minus 7 days"
    );
    assert_eq!(g.state.requested_activation, t("2027-02-01T00:00:00Z"));
    sim.drive(&offline(&MISSING));
    let v = sim.svc.op_show().unwrap();
    assert_eq!(v.state, "assigned");
    let g = v.gate.as_ref().unwrap();
    assert!(!g.verdict_now.met, "{}", g.verdict_now);
    assert_eq!(g.verdict_now.coverage.devices.applied, 7);
    assert_eq!(g.verdict_now.coverage.devices.total, 11);

    // B3: plan shows the gate's verdict for a chosen time.
    let plan = sim.svc.plan(t("2027-02-01T00:00:00Z")).unwrap();
    let pg = plan.gate.as_ref().unwrap();
    assert_eq!(pg.outcome, "postponed");
    assert_eq!(pg.postponed_to, Some(t("2027-02-01T01:00:00Z")));
    assert!(!plan.activated_by_then);
    assert_eq!(
        sim.svc
            .plan(t("2027-01-15T00:00:00Z"))
            .unwrap()
            .gate
            .unwrap()
            .outcome,
        "not due"
    );

    // Inside the cut-off (O7): cancel refused.
    sim.clock.set(t("2027-01-31T23:55:00Z"));
    let e = sim.svc.cancel().unwrap_err();
    assert!(e.to_string().contains("cancel refused"), "{e}");

    // At the activation time the gate is not met: postponed by the step, with why.
    sim.clock.set(t("2027-02-01T00:00:00Z"));
    assert!(!sim.svc.tick().unwrap(), "an unmet gate does not activate");
    let v = sim.svc.op_show().unwrap();
    assert_eq!(v.state, "assigned");
    assert_eq!(v.activation, t("2027-02-01T01:00:00Z"));
    assert_eq!(
        v.cancel_deadline,
        Some(t("2027-02-01T00:50:00Z")),
        "the cut-off moves with activation"
    );
    assert_eq!(
        postponements(&v),
        [("2027-02-01T00:00:00Z".into(), "2027-02-01T01:00:00Z".into())]
    );
    let reason = v
        .notices
        .iter()
        .find_map(|n| match n {
            Notice::ActivationPostponed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap();
    for want in [
        "7 of 11 devices applied (63%), the gate needs 80%",
        "0 of 1 Authentication Satellites applied, the gate needs 1",
        "assigned 5 (sat1.zone.example, dev-1, dev-2, dev-3, dev-4)",
    ] {
        assert!(reason.contains(want), "{want:?} missing from {reason}");
    }
    let g = v.gate.as_ref().unwrap();
    assert_eq!(g.state.postponements.len(), 1);
    let missing = &g.state.postponements[0].verdict.coverage.missing;
    assert_eq!(missing["assigned"].count, 5);
    // Cancel is allowed again (the new cut-off is 00:50); a second tick changes nothing.
    let op = zonepki::ops::AnyOp::from(sim.svc.op().unwrap().unwrap());
    op.cancel(sim.svc.now()).unwrap();
    assert!(!sim.svc.tick().unwrap());
    assert_eq!(postponements(&sim.svc.op_show().unwrap()).len(), 1);

    // Late: the next due time is judged at 01:30; still unmet: to 02:00 (whole steps).
    sim.clock.set(t("2027-02-01T01:30:00Z"));
    sim.svc.tick().unwrap();
    let v = sim.svc.op_show().unwrap();
    assert_eq!(v.activation, t("2027-02-01T02:00:00Z"));
    assert_eq!(postponements(&v).len(), 2);

    // The missing members apply; the gate is met; plan says it activates.
    sim.drive(&Default::default());
    let v = sim.svc.op_show().unwrap();
    assert!(v.gate.as_ref().unwrap().verdict_now.met);
    let pg = sim
        .svc
        .plan(t("2027-02-01T02:00:00Z"))
        .unwrap()
        .gate
        .unwrap();
    assert_eq!(pg.outcome, "activates");
    sim.clock.set(t("2027-02-01T02:00:00Z"));
    assert!(sim.svc.tick().unwrap(), "activates once coverage is met");
    let v = sim.svc.op_show().unwrap();
    assert_eq!(v.state, "activated");
    assert!(v.stranded.is_empty(), "{:?}", v.stranded);
    assert!(
        v.notices
            .iter()
            .any(|n| matches!(n, Notice::ResignRequired { .. }))
    );
}

/// Starts a gated Remint CA close to the CA's expiry (2032-01-01): activation 2031-12-20,
/// deadline 2031-12-25, step two days; SAT1 never applies.
fn near_deadline(policy: AtDeadline) -> Sim {
    let sim = Sim::new(2);
    let mut req = remint_ca("2031-12-20T00:00:00Z");
    req.gate = Some(gate(policy, 48 * HOUR));
    sim.svc.start_remint_ca(req).unwrap();
    sim.drive(&offline(&[SAT1]));
    for (now, to) in [
        ("2031-12-20T00:00:00Z", "2031-12-22T00:00:00Z"),
        ("2031-12-22T00:00:00Z", "2031-12-24T00:00:00Z"),
        // Never past the deadline.
        ("2031-12-24T00:00:00Z", "2031-12-25T00:00:00Z"),
    ] {
        sim.clock.set(t(now));
        assert!(!sim.svc.tick().unwrap());
        assert_eq!(sim.svc.op_show().unwrap().activation, t(to), "at {now}");
    }
    sim
}

#[test]
fn at_the_deadline_the_gate_activates_and_reports_the_stranded_b2() {
    let sim = near_deadline(AtDeadline::Activate);
    let plan = sim.svc.plan(t("2031-12-25T00:00:00Z")).unwrap();
    assert_eq!(plan.gate.unwrap().outcome, "activates at the deadline");
    assert!(plan.activated_by_then);
    sim.clock.set(t("2031-12-25T00:00:00Z"));
    assert!(sim.svc.tick().unwrap(), "the deadline activates");
    let v = sim.svc.op_show().unwrap();
    assert_eq!(v.state, "activated");
    assert_eq!(v.stranded, [SAT1]);
    let stranded = v.notices.iter().find_map(|n| match n {
        Notice::ActivatedAtDeadline {
            stranded, reason, ..
        } => Some((*stranded, reason.clone())),
        _ => None,
    });
    let (count, reason) = stranded.expect("an activated-at-deadline notice");
    assert_eq!(count, 1);
    assert!(reason.contains(SAT1), "{reason}");
    assert!(v.gate.unwrap().state.activated_at_deadline);
}

#[test]
fn at_the_deadline_the_gate_holds_and_raises_an_alarm_b2() {
    let sim = near_deadline(AtDeadline::Hold);
    let plan = sim.svc.plan(t("2031-12-25T00:00:00Z")).unwrap();
    assert_eq!(plan.gate.unwrap().outcome, "held at the deadline");
    sim.clock.set(t("2031-12-25T00:00:00Z"));
    assert!(!sim.svc.tick().unwrap());
    sim.clock.advance(Duration::from_secs(HOUR));
    assert!(!sim.svc.tick().unwrap(), "still held");
    let v = sim.svc.op_show().unwrap();
    assert_eq!(v.state, "assigned");
    let alarms: Vec<_> = v
        .notices
        .iter()
        .filter(|n| matches!(n, Notice::GateAlarm { .. }))
        .collect();
    assert_eq!(alarms.len(), 1, "one alarm: {:?}", v.notices);
    let g = v.gate.unwrap();
    assert_eq!(g.state.held_since, Some(t("2031-12-25T00:00:00Z")));
    assert_eq!(
        sim.svc.plan(sim.svc.now()).unwrap().gate.unwrap().outcome,
        "held"
    );
    // Held, the operation waits for the administrator: cancel is allowed although the
    // activation time has passed.
    let v = sim.svc.cancel().unwrap();
    assert_eq!(v.state, "cancelled");
}

#[test]
fn a_gate_whose_deadline_is_not_after_activation_is_refused_and_nothing_changes_b2() {
    let sim = Sim::new(1);
    let before = sim.svc.dump().unwrap();
    let mut req = remint_ca("2031-12-28T00:00:00Z");
    req.gate = Some(gate(AtDeadline::Hold, HOUR));
    let e = sim.svc.start_remint_ca(req).unwrap_err();
    assert!(
        matches!(e, zonepki::Error::Op(OpError::GateDeadline { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("choose a smaller margin"), "{e}");
    let mut req = remint_ca("2027-02-01T00:00:00Z");
    let mut too_much = gate(AtDeadline::Hold, HOUR);
    too_much.min_devices_percent = 120;
    req.gate = Some(too_much);
    let e = sim.svc.start_remint_ca(req).unwrap_err();
    assert!(e.to_string().contains("choose 0 to 100"), "{e}");
    // The agent made a future CA key for each attempt; the store is unchanged.
    assert_eq!(sim.svc.dump().unwrap(), before);
}
