//! Members on their own hosts, the core's part (issue 11 item 3; N3, N4, S1, B7): one-time
//! registration tokens, enrolment from a CSR the member made, renewal, refusals audited, and
//! the anchors a zone server accepts credentials from.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/sim.rs"]
mod sim;

use std::time::Duration;

use sim::{PS1, SAT1, Sim, fq, remint_ca};
use zonepki::Error;
use zonepki::agent::{Agent, AgentRequest, AgentResponse};
use zonepki::cert::{Certificate, CertificateDer};
use zonepki::chain::verify_chain;
use zonepki::csr::{CsrRequest, CsrSubject};
use zonepki::key::KeySpec;
use zonepki::protocol::{
    self, EnrollRequest, Enrolment, ProtocolError, RegistrationToken, RenewRequest,
};
use zonepki::service::{EnrolmentError, NewServer, Refusal, credential_member, dump};
use zonepki::zone::ServerRole;

const NEW_SAT: &str = "sat9.zone.example";

/// A member's agent makes its own key and a CSR (S1).
fn csr_of(agent: &mut Agent, dns: Vec<String>) -> Vec<u8> {
    let request = CsrRequest {
        subject: CsrSubject::cn(agent.name()),
        dns_names: dns,
    };
    match agent
        .handle(AgentRequest::Enroll {
            key: KeySpec::P256,
            request,
        })
        .unwrap()
    {
        AgentResponse::Csr(csr) => csr.as_bytes().to_vec(),
        other => panic!("{other:?}"),
    }
}

fn token_for(sim: &Sim, name: &str) -> RegistrationToken {
    let mut tokens = sim
        .svc
        .issue_tokens(&[name.to_string()], Duration::from_secs(7 * 86400))
        .unwrap();
    assert_eq!(tokens.len(), 1);
    tokens.pop().unwrap().1
}

/// The dump without the audit log: what a refusal must leave unchanged.
fn state(sim: &Sim) -> serde_json::Value {
    let mut d = dump(sim.svc.store()).unwrap();
    d.as_object_mut()
        .unwrap()
        .retain(|k, _| !k.starts_with("audit/"));
    d
}

fn audit_events(sim: &Sim) -> Vec<String> {
    let d = dump(sim.svc.store()).unwrap();
    d.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("audit/") && *k != "audit/head")
        .map(|(_, v)| v["value"]["event"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn leaf(chain: &[CertificateDer]) -> Certificate {
    Certificate::try_from(&chain[0]).unwrap()
}

#[test]
fn a_device_enrols_once_with_its_token_and_a_key_it_made_n3_s1() {
    let sim = Sim::new(2);
    let token = token_for(&sim, "dev-1");
    let mut agent = Agent::new("dev-1");
    let csr = csr_of(&mut agent, vec![]);
    let req = EnrollRequest::new("dev-1", token.clone(), csr.clone());
    // Through the wire format.
    let req = protocol::decode_enroll_request(&protocol::encode(&req)).unwrap();
    let got: Enrolment = sim.svc.enroll(&req).unwrap();
    let got = protocol::decode_enrolment(&protocol::encode(&got)).unwrap();
    assert_eq!(got.member, "dev-1");
    let cert = leaf(&got.chain);
    assert_eq!(cert.common_name().as_deref(), Some("dev-1"));
    assert_eq!(credential_member(&cert).as_deref(), Some("dev-1"));
    let ca = sim.svc.ca_certificate().unwrap();
    verify_chain(&cert, &[], &[ca], sim.svc.now()).unwrap();
    // The agent installs it: the credential is for the key it made (S1).
    agent
        .handle(AgentRequest::Install {
            chain: got.chain.clone(),
            trust: got.trust.clone(),
            now: sim.svc.now(),
        })
        .unwrap();
    assert_eq!(agent.chain()[0], got.chain[0]);

    // The token is used up: a second enrolment with it is refused and changes nothing.
    let before = dump(sim.svc.store()).unwrap();
    let e = sim.svc.enroll(&req).unwrap_err();
    assert!(
        matches!(e, Error::Enrolment(EnrolmentError::Used { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("already used"), "{e}");
    assert!(!e.to_string().contains(token.as_str()), "{e}");
    assert_eq!(dump(sim.svc.store()).unwrap(), before);
    assert_eq!(
        audit_events(&sim)
            .iter()
            .filter(|e| *e == "member.enroll")
            .count(),
        1
    );
}

#[test]
fn wrong_unknown_and_expired_tokens_are_refused_and_change_nothing_n3() {
    let sim = Sim::new(2);
    let token = token_for(&sim, "dev-1");
    let other = token_for(&sim, "dev-2");
    let mut agent = Agent::new("dev-1");
    let csr = csr_of(&mut agent, vec![]);
    let before = dump(sim.svc.store()).unwrap();
    // dev-2's token for dev-1; a member with no token; a member that does not exist.
    for (member, t) in [
        ("dev-1", other.clone()),
        ("ps2.zone.example", token.clone()),
        ("nobody", token.clone()),
    ] {
        let e = sim
            .svc
            .enroll(&EnrollRequest::new(member, t, csr.clone()))
            .unwrap_err();
        assert!(
            matches!(e, Error::Enrolment(EnrolmentError::BadToken { .. })),
            "{member}: {e}"
        );
        assert_eq!(dump(sim.svc.store()).unwrap(), before, "{member}");
    }
    // A garbage CSR with the right token: refused, and the token stays unused.
    let e = sim
        .svc
        .enroll(&EnrollRequest::new(
            "dev-1",
            token.clone(),
            b"garbage".to_vec(),
        ))
        .unwrap_err();
    assert!(matches!(e, Error::Csr(_)), "{e}");
    assert_eq!(dump(sim.svc.store()).unwrap(), before);
    // Expired: the clock passes the token's 7 days.
    sim.clock.advance(Duration::from_secs(7 * 86400));
    let e = sim
        .svc
        .enroll(&EnrollRequest::new("dev-1", token, csr))
        .unwrap_err();
    assert!(
        matches!(e, Error::Enrolment(EnrolmentError::Expired { .. })),
        "{e}"
    );
    assert_eq!(dump(sim.svc.store()).unwrap(), before);
}

#[test]
fn tokens_only_for_members_and_within_bounds_and_never_shown() {
    let sim = Sim::new(1);
    let before = dump(sim.svc.store()).unwrap();
    let e = sim
        .svc
        .issue_tokens(
            &["dev-1".into(), "stranger".into()],
            Duration::from_secs(86400),
        )
        .unwrap_err();
    assert!(e.to_string().contains("stranger"), "{e}");
    for d in [Duration::from_secs(60), Duration::from_secs(91 * 86400)] {
        let e = sim.svc.issue_tokens(&["dev-1".into()], d).unwrap_err();
        assert!(
            matches!(e, Error::Enrolment(EnrolmentError::Validity { .. })),
            "{e}"
        );
    }
    assert_eq!(dump(sim.svc.store()).unwrap(), before);
    // Names fold as the zone keys members; each token is different; neither a dump nor a
    // Debug shows one.
    let tokens = sim
        .svc
        .issue_tokens(
            &["DEV-1".into(), "ps1.zone.example".into()],
            Duration::from_secs(86400),
        )
        .unwrap();
    assert_eq!(tokens[0].0, "dev-1");
    assert_ne!(tokens[0].1, tokens[1].1);
    let text = serde_json::to_string(&dump(sim.svc.store()).unwrap()).unwrap();
    let debug = format!("{tokens:?}");
    for (_, t) in &tokens {
        assert_eq!(t.as_str().len(), 32);
        assert!(!text.contains(t.as_str()));
        assert!(!debug.contains(t.as_str()));
        assert_eq!(
            RegistrationToken::parse(&format!("{}\n", t.as_str())).unwrap(),
            *t
        );
    }
    assert!(text.contains("(secret)"));
    assert!(RegistrationToken::parse("short").is_err());
    assert!(RegistrationToken::parse(&"!".repeat(32)).is_err());
}

#[test]
fn a_server_recorded_without_enrolment_enrols_with_its_token_n3() {
    let sim = Sim::new(1);
    let sat = NewServer::new(fq(NEW_SAT), ServerRole::AuthSatellite)
        .with_parent(fq(PS1))
        .with_dns_names(vec!["auth.zone.example".into()])
        .without_enrolment();
    let view = sim.svc.add_server(sat).unwrap();
    assert!(
        sim.svc.server_chain(&fq(NEW_SAT)).unwrap().is_empty(),
        "{view:?}"
    );
    let token = token_for(&sim, NEW_SAT);
    let mut agent = Agent::new(NEW_SAT);
    let csr = csr_of(&mut agent, vec![NEW_SAT.into()]);
    let got = sim
        .svc
        .enroll(&EnrollRequest::new(NEW_SAT, token, csr))
        .unwrap();
    let cert = leaf(&got.chain);
    // S4: the server profile, the FQDN first in the SAN, the record's DNS names too.
    assert_eq!(
        cert.dns_names().unwrap(),
        [NEW_SAT.to_string(), "auth.zone.example".to_string()]
    );
    assert_eq!(credential_member(&cert).as_deref(), Some(NEW_SAT));
    assert_eq!(sim.svc.server_chain(&fq(NEW_SAT)).unwrap(), got.chain);
    // A server's certificate is not renewed on request.
    let csr2 = csr_of(&mut agent, vec![]);
    let e = sim
        .svc
        .renew(NEW_SAT, &RenewRequest::new(NEW_SAT, csr2))
        .unwrap_err();
    assert!(
        matches!(e, Error::Enrolment(EnrolmentError::ServerRenewal { .. })),
        "{e}"
    );
    let _ = SAT1;
}

#[test]
fn a_device_renews_only_its_own_credential_n3() {
    let sim = Sim::new(2);
    let mut agent = Agent::new("dev-1");
    let csr = csr_of(&mut agent, vec![]);
    let first = sim
        .svc
        .enroll(&EnrollRequest::new("dev-1", token_for(&sim, "dev-1"), csr))
        .unwrap();
    let csr = csr_of(&mut agent, vec![]);
    let before = dump(sim.svc.store()).unwrap();
    let e = sim
        .svc
        .renew("dev-2", &RenewRequest::new("dev-1", csr.clone()))
        .unwrap_err();
    assert!(
        matches!(e, Error::Protocol(ProtocolError::WrongMember { .. })),
        "{e}"
    );
    assert_eq!(dump(sim.svc.store()).unwrap(), before);
    let renewed = sim
        .svc
        .renew("dev-1", &RenewRequest::new("dev-1", csr))
        .unwrap();
    assert_ne!(renewed.chain[0], first.chain[0]);
    assert_eq!(leaf(&renewed.chain).common_name().as_deref(), Some("dev-1"));
}

#[test]
fn a_refusal_is_one_audit_entry_and_nothing_else_n3() {
    let sim = Sim::new(1);
    let before = state(&sim);
    let events = audit_events(&sim).len();
    let refusal = Refusal::new("poll", "member dev-1 sent a message for dev-2")
        .claimed("dev-2")
        .peer("127.0.0.1:5000");
    sim.svc.record_refusal(&refusal).unwrap();
    assert_eq!(state(&sim), before);
    let after = audit_events(&sim);
    assert_eq!(after.len(), events + 1);
    assert_eq!(after.last().unwrap(), "refused");
    assert!(sim.svc.verify_audit().is_ok());
}

#[test]
fn a_zone_server_accepts_the_future_ca_during_a_remint_and_the_old_after_it_n4_b7() {
    let sim = Sim::new(1);
    let ca = sim.svc.ca_certificate().unwrap().der().clone();
    assert_eq!(
        sim.svc.accepted_client_anchors().unwrap(),
        std::slice::from_ref(&ca)
    );
    sim.svc
        .start_remint_ca(remint_ca("2027-01-08T00:00:00Z"))
        .unwrap();
    let during = sim.svc.accepted_client_anchors().unwrap();
    assert_eq!(during.len(), 2);
    assert_eq!(during[0], ca);
    assert_eq!(sim.svc.ca_certificates().unwrap(), during);
    let future = during[1].clone();
    sim.svc.assign_now().unwrap();
    sim.drive(&Default::default());
    sim.clock.advance(Duration::from_secs(8 * 86400));
    sim.drive(&Default::default());
    // After activation: the new CA first, the old one still accepted (B7).
    let after = sim.svc.accepted_client_anchors().unwrap();
    assert_eq!(after[0], future);
    assert!(
        after.contains(&ca),
        "the old CA stays accepted while its certificates may be in use"
    );
}

fn pem(der: &CertificateDer) -> String {
    zonepki::cert::bundle::to_pem(std::slice::from_ref(der))
}

/// OpenSSL and GnuTLS accept a device's credential as a TLS client certificate of the zone
/// (issue 11 item 3: interop is the proof).
#[cfg_attr(
    not(all(zonepki_has_certtool, zonepki_has_openssl)),
    ignore = "needs certtool and openssl on PATH; .ci/run installs them"
)]
#[test]
fn openssl_and_certtool_accept_a_device_credential_for_tls_clients() {
    // Issued now (the tools check validity at their own clock; certtool has no --attime).
    let mut spec = sim::Spec::new(1);
    spec.start = zonepki::clock::Timestamp::now_utc();
    let sim = Sim::build(
        zonepki::store::MemoryStore::new(),
        zonepki::transport::LoopbackTransport::in_memory(),
        spec,
    );
    let mut agent = Agent::new("dev-1");
    let csr = csr_of(&mut agent, vec![]);
    let got = sim
        .svc
        .enroll(&EnrollRequest::new("dev-1", token_for(&sim, "dev-1"), csr))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = common::write(dir.path(), "ca.pem", pem(&got.chain[1]));
    let leaf = common::write(dir.path(), "leaf.pem", pem(&got.chain[0]));
    let at = sim.svc.now().unix().to_string();
    let (ok, out) = common::run(common::tool("openssl").args([
        "verify",
        "-x509_strict",
        "-purpose",
        "sslclient",
        "-attime",
        &at,
        "-CAfile",
        &ca,
        &leaf,
    ]));
    assert!(ok && out.contains(": OK"), "{out}");
    // Not a server certificate.
    let (ok, out) = common::run(common::tool("openssl").args([
        "verify",
        "-purpose",
        "sslserver",
        "-attime",
        &at,
        "-CAfile",
        &ca,
        &leaf,
    ]));
    assert!(!ok, "{out}");
    let (ok, out) = common::run(common::tool("certtool").args([
        "--verify",
        "--load-ca-certificate",
        &ca,
        "--infile",
        &leaf,
        "--verify-purpose",
        "1.3.6.1.5.5.7.3.2",
    ]));
    assert!(
        ok && out.contains("Chain verification output: Verified"),
        "{out}"
    );
}
