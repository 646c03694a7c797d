//! The agent protocol (issue 10 item 3; N1, N2, N3, N5): the zone's inbound entry point
//! answers members that initiate, refuses what is not theirs to say, changes nothing twice
//! for a repeated message, and lets an agent switch by its own clock.
#![allow(clippy::unwrap_used)]

#[path = "common/sim.rs"]
mod sim;

use sim::{PS1, PS2, Sim, remint_ca, t};
use zonepki::Error;
use zonepki::agent::Agent;
use zonepki::protocol::{
    self, AgentMessage, Instruction, ProtocolError, Report, Standing, ZoneAnswer,
};
use zonepki::service::dump;

const ACT: &str = "2027-01-08T00:00:00Z";

/// One round: `member`'s agent sends `msg`; the zone's answer, through the wire format.
fn send(sim: &Sim, member: &str, msg: &AgentMessage) -> Result<ZoneAnswer, Error> {
    let bytes = protocol::encode(msg);
    let parsed = protocol::decode_agent_message(&bytes).unwrap();
    let answer = sim.svc.answer(member, parsed)?;
    Ok(protocol::decode_zone_answer(&protocol::encode(&answer)).unwrap())
}

/// The member's agent's next message after carrying out `answer`.
fn follow(sim: &Sim, member: &str, answer: ZoneAnswer) -> Option<AgentMessage> {
    let now = sim.svc.now();
    sim.transport
        .agent_mut(member, |a| a.follow(answer.instruction, now))
        .unwrap()
}

fn poll(sim: &Sim, member: &str) -> AgentMessage {
    let now = sim.svc.now();
    sim.transport.agent_mut(member, |a| a.poll(now)).unwrap()
}

fn assigned_remint() -> Sim {
    // Sim::new runs a refresh: every member trusts the zone CA.
    let sim = Sim::new(2);
    sim.svc.start_remint_ca(remint_ca(ACT)).unwrap();
    sim.svc.assign_now().unwrap();
    sim
}

#[test]
fn a_member_speaks_only_for_itself_and_strangers_are_refused_n3() {
    let sim = assigned_remint();
    let before = dump(sim.svc.store()).unwrap();
    // dev-1 sends dev-2's poll.
    let msg = poll(&sim, "dev-2");
    let e = send(&sim, "dev-1", &msg).unwrap_err();
    assert!(
        matches!(e, Error::Protocol(ProtocolError::WrongMember { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("speaks only for itself"), "{e}");
    // A name the zone does not know.
    let stranger = Agent::new("dev-99").poll(sim.svc.now());
    let e = send(&sim, "dev-99", &stranger).unwrap_err();
    assert!(e.to_string().contains("dev-99"), "{e}");
    assert_eq!(dump(sim.svc.store()).unwrap(), before, "nothing changed");
}

#[test]
fn a_repeated_report_changes_nothing_twice_n2() {
    let sim = assigned_remint();
    // ps2 polls: make a key and a CSR.
    let a = send(&sim, PS2, &poll(&sim, PS2)).unwrap();
    assert!(
        matches!(a.instruction, Instruction::MakeKey { op_id: Some(1), .. }),
        "{a:?}"
    );
    let csr = follow(&sim, PS2, a).unwrap();
    assert!(matches!(csr.report, Some(Report::Csr { .. })));
    // The CSR report, twice (the first answer lost on the way back).
    let first = send(&sim, PS2, &csr).unwrap();
    let after_first = dump(sim.svc.store()).unwrap();
    let again = send(&sim, PS2, &csr).unwrap();
    assert_eq!(again, first, "the same stage instruction, the same chain");
    assert_eq!(
        dump(sim.svc.store()).unwrap(),
        after_first,
        "no second certificate, serial number, status change or audit entry"
    );
    let Instruction::Stage { chain, .. } = &first.instruction else {
        panic!("{first:?}")
    };
    assert_eq!(chain.len(), 2);
    // The staged report, twice.
    let staged = follow(&sim, PS2, first).unwrap();
    let a = send(&sim, PS2, &staged).unwrap();
    assert_eq!(a.instruction, Instruction::Nothing);
    assert_eq!(a.standing, Standing::Applied);
    assert_eq!(a.poll_by, Some(t(ACT)), "poll again by the activation time");
    let applied = dump(sim.svc.store()).unwrap();
    let a = send(&sim, PS2, &staged).unwrap();
    assert_eq!(a.instruction, Instruction::Nothing);
    assert_eq!(dump(sim.svc.store()).unwrap(), applied);
    // A plain poll now: nothing to do.
    let a = send(&sim, PS2, &poll(&sim, PS2)).unwrap();
    assert_eq!(a.instruction, Instruction::Nothing);
    assert_eq!(a.standing, Standing::UpToDate);
    assert_eq!(dump(sim.svc.store()).unwrap(), applied);
}

#[test]
fn an_agent_switches_by_its_own_clock_and_reports_later_n5() {
    let sim = assigned_remint();
    // dev-1 stages.
    let a = send(&sim, "dev-1", &poll(&sim, "dev-1")).unwrap();
    let Instruction::Stage { trust_after, .. } = a.instruction.clone() else {
        panic!("{a:?}")
    };
    let staged = follow(&sim, "dev-1", a).unwrap();
    send(&sim, "dev-1", &staged).unwrap();
    let timer = sim
        .transport
        .agent_mut("dev-1", |a: &mut Agent| a.poll_timeout())
        .unwrap();
    assert_eq!(timer, Some(t(ACT)), "its timer is the activation time");
    // No server answers at the activation time: the agent switches anyway.
    let early = sim
        .transport
        .agent_mut("dev-1", |a: &mut Agent| {
            a.handle_timeout(t(ACT).minus(std::time::Duration::from_secs(1)))
        })
        .unwrap();
    assert!(!early, "not before its time");
    let switched = sim
        .transport
        .agent_mut("dev-1", |a: &mut Agent| a.handle_timeout(t(ACT)))
        .unwrap();
    assert!(switched);
    assert_eq!(sim.trust("dev-1"), trust_after);
    // Later the zone is reachable again (and has activated): the report lands.
    sim.clock.set(t("2027-01-09T00:00:00Z"));
    let msg = poll(&sim, "dev-1");
    assert!(
        matches!(msg.report, Some(Report::Activated { op_id: 1, .. })),
        "{msg:?}"
    );
    let a = send(&sim, "dev-1", &msg).unwrap();
    assert_eq!(a.standing, Standing::Activated);
    assert_eq!(sim.svc.op_show().unwrap().state, "activated");
    let v = sim.svc.op_show().unwrap();
    assert_eq!(sim.status(&v, "dev-1"), "activated");
}

#[test]
fn a_lost_activated_report_is_read_from_the_state_b5() {
    let sim = assigned_remint();
    let a = send(&sim, "dev-2", &poll(&sim, "dev-2")).unwrap();
    let staged = follow(&sim, "dev-2", a).unwrap();
    send(&sim, "dev-2", &staged).unwrap();
    sim.transport
        .agent_mut("dev-2", |a: &mut Agent| a.handle_timeout(t(ACT)))
        .unwrap();
    sim.clock.set(t(ACT));
    // The report is lost: the next message carries only the state.
    let _lost = poll(&sim, "dev-2");
    let msg = poll(&sim, "dev-2");
    assert_eq!(msg.report, None);
    let a = send(&sim, "dev-2", &msg).unwrap();
    assert_eq!(a.standing, Standing::Activated, "{a:?}");
}

#[test]
fn an_agent_whose_clock_is_far_off_is_told_so_n5() {
    let sim = assigned_remint();
    let mut msg = poll(&sim, "dev-1");
    msg.now = sim.svc.now().plus(std::time::Duration::from_secs(3_600));
    let a = send(&sim, "dev-1", &msg).unwrap();
    assert_eq!(a.clock_skew_secs, Some(3_600));
    let msg = poll(&sim, "dev-1");
    assert_eq!(send(&sim, "dev-1", &msg).unwrap().clock_skew_secs, None);
}

#[test]
fn the_certificate_server_is_a_member_like_any_other() {
    // ps1 polls for itself too; its own agent signs for it through the Transport.
    let sim = assigned_remint();
    let a = send(&sim, PS1, &poll(&sim, PS1)).unwrap();
    let csr = follow(&sim, PS1, a).unwrap();
    let a = send(&sim, PS1, &csr).unwrap();
    assert!(matches!(a.instruction, Instruction::Stage { .. }), "{a:?}");
}

#[test]
fn malformed_messages_are_refused_with_what_was_wrong() {
    let bytes = protocol::encode(&Agent::new("dev-1").poll(t(ACT)));
    for (input, want) in [
        (Vec::new(), "empty"),
        (bytes[..bytes.len() / 2].to_vec(), "truncated"),
        (b"\x00\x01garbage".to_vec(), "not JSON"),
        (vec![b'{'; protocol::MAX_MESSAGE_BYTES + 1], "larger than"),
        (b"{\"v\": 7}".to_vec(), "version 7 is not supported"),
        (b"[1, 2, 3]".to_vec(), "malformed"),
    ] {
        let e = protocol::decode_agent_message(&input).unwrap_err();
        assert!(e.to_string().contains(want), "{want:?}: {e}");
    }
}

#[test]
fn calls_between_servers_are_serialisable_too() {
    use zonepki::agent::{AgentRequest, AgentResponse};
    use zonepki::backup::{Passphrase, TransferKey};
    let now = t(ACT);
    let calls = vec![
        AgentRequest::SignCertificate {
            tbs: vec![0x30, 0x03, 0x02, 0x01, 0x05],
        },
        AgentRequest::ExportCa {
            passphrase: Passphrase::new("correct horse battery staple").unwrap(),
            now,
        },
        AgentRequest::TransferCa {
            key: TransferKey::generate().unwrap(),
            now,
        },
        AgentRequest::Ping,
        AgentRequest::DropCa,
    ];
    for call in calls {
        let json = serde_json::to_string(&call).unwrap();
        let back: AgentRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json, "{json}");
        // Debug (logs) never shows a secret, whatever the wire carries.
        let debug = format!("{back:?}");
        assert!(!debug.contains("correct horse"), "{debug}");
    }
    let sig = AgentResponse::Signature(vec![1, 2, 3]);
    let json = serde_json::to_string(&sig).unwrap();
    assert_eq!(json, r#"{"answer":"signature","value":"AQID"}"#);
    let back: AgentResponse = serde_json::from_str(&json).unwrap();
    assert!(matches!(back, AgentResponse::Signature(b) if b == [1, 2, 3]));
    // A passphrase that breaks BK1's rules is refused on the way in, as anywhere else.
    let e = serde_json::from_str::<AgentRequest>(
        r#"{"call":"export_ca","passphrase":"short","now":"2027-01-08T00:00:00Z"}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("passphrase"), "{e}");
}
