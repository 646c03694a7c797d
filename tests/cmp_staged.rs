//! E2 at the library level: CMP clients in a staged Remint CA, counted in the per-member
//! status like agents. A kur (built here from the crate's own ASN.1 pieces and signed with the
//! device's real credential and keys) is answered by `zonepki::cmp::respond` against the
//! in-process simulation (memory store, manual clock, loopback agents holding the CA keys):
//! before activation it gets the device's future certificate from the future CA and the device
//! counts as `applied` (staged) in `op show`, `device list` and the gate's coverage (B2), in the
//! commit that issues; after activation a request signed with that future certificate makes it
//! `activated`; a repeated transactionID changes nothing.
#![allow(clippy::unwrap_used)]

#[path = "common/sim.rs"]
mod sim;

use std::sync::Arc;
use std::time::Duration;

use der::asn1::{Any, BitString, OctetString};
use der::{Decode, Encode, Tag, TagNumber};
use sim::{PS1, Sim, Spec, T0, t};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::Name;
use zonepki::cert::{Certificate, CertificateDer};
use zonepki::chain::verify_chain;
use zonepki::clock::Timestamp;
use zonepki::cmp::asn1::{self, BodyType, CertRepMessage, InfoTypeAndValue, PkiHeader, PkiMessage};
use zonepki::cmp::{CmpAnswer, SigningCredential};
use zonepki::csr::{CsrRequest, CsrSubject, build_csr};
use zonepki::key::{KeyError, KeySpec, PrivateKey, Signer};
use zonepki::ops::ActivationRequest;
use zonepki::ops::gate::{Gate, ServerQuota};
use zonepki::protocol::EnrollRequest;
use zonepki::service::{ChangeCaRequest, ChangeCaTarget};
use zonepki::store::MemoryStore;
use zonepki::transport::LoopbackTransport;
use zonepki::view::{DeviceQuery, UpdateStatus};

type Store = Arc<MemoryStore>;

const DEVICE: &str = "dev-1";

/// The key of `member`'s loopback agent, as a [`Signer`]: the certificate server's own
/// credential signs the answers to signed requests, as zoned's does.
struct AgentKey<'a> {
    sim: &'a Sim<Store>,
    member: &'static str,
}

impl AgentKey<'_> {
    fn with_key<R>(&self, f: impl FnOnce(&PrivateKey) -> R) -> R {
        self.sim
            .transport
            .with_agent(self.member, |a| f(a.key().unwrap()))
            .unwrap()
    }
}

impl Signer for AgentKey<'_> {
    fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        self.with_key(|k| k.signature_algorithm())
    }
    fn public_key_info(&self) -> SubjectPublicKeyInfoOwned {
        self.with_key(|k| k.public_key_info())
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.with_key(|k| k.sign(message))
    }
}

struct Zone {
    sim: Sim<Store>,
    /// The activation time of the Remint CA.
    activation: Timestamp,
    old_ca: CertificateDer,
    /// dev-1's credential from its enrolment: key and chain.
    key: PrivateKey,
    chain: Vec<CertificateDer>,
}

/// The CA operation a test runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    RemintCa,
    /// A Remint CA with a coverage gate (B2): 100% of the devices.
    GatedRemintCa,
    /// A Change CA to a new internal CA on ps2 (CI1): ps2's agent holds the future CA key.
    ChangeCaToPs2,
}

/// The zone of tests/ops.rs (with bridges), dev-1 enrolled with a token, and a CA operation
/// (activation 30 days on) assigned to every member.
fn zone(op: Op) -> Zone {
    let store: Store = Arc::new(MemoryStore::new());
    let spec = Spec {
        bridges: true,
        ..Spec::new(2)
    };
    let sim = Sim::build(store, LoopbackTransport::in_memory(), spec);
    let old_ca = sim.svc.zone().unwrap().ca_certificate;
    let (_, token) = sim
        .svc
        .issue_tokens(&[DEVICE.to_string()], Duration::from_secs(3600))
        .unwrap()
        .pop()
        .unwrap();
    let key = PrivateKey::generate(KeySpec::P256).unwrap();
    let csr = build_csr(
        &CsrRequest {
            subject: CsrSubject::cn(DEVICE),
            dns_names: Vec::new(),
        },
        &key,
    )
    .unwrap();
    let chain = sim
        .svc
        .enroll(&EnrollRequest::new(DEVICE, token, csr.as_bytes().to_vec()))
        .unwrap()
        .chain;
    let activation = t(T0).plus(Duration::from_secs(30 * 86400));
    if op == Op::ChangeCaToPs2 {
        sim.svc
            .start_change_ca(ChangeCaRequest::new(
                ChangeCaTarget::Internal {
                    server: sim::fq(sim::PS2),
                    common_name: Some("Sim Zone 2".into()),
                    key: KeySpec::P256,
                    validity: 5.try_into().unwrap(),
                },
                ActivationRequest::At(activation),
            ))
            .unwrap();
    } else {
        let mut req = sim::remint_ca("2030-01-01T00:00:00Z");
        req.activation = ActivationRequest::At(activation);
        if op == Op::GatedRemintCa {
            req = req.with_gate(Gate::new(
                100,
                ServerQuota::AtLeast {
                    primary: 0,
                    auth_satellite: 0,
                },
            ));
        }
        sim.svc.start_remint_ca(req).unwrap();
    }
    sim.svc.assign_now().unwrap();
    Zone {
        sim,
        activation,
        old_ca,
        key,
        chain,
    }
}

impl Zone {
    /// Answers `request` as zoned does, signing with the certificate server's credential.
    fn respond(&self, request: &[u8]) -> CmpAnswer {
        let signer = AgentKey {
            sim: &self.sim,
            member: PS1,
        };
        let chain = self.sim.chain(PS1);
        zonepki::cmp::respond(
            &self.sim.svc,
            request,
            Some(SigningCredential {
                signer: &signer,
                chain: &chain,
            }),
        )
    }

    fn status(&self) -> String {
        let v = self.sim.svc.op_show().unwrap();
        self.sim.status(&v, DEVICE)
    }

    fn future_and_bridge(&self) -> (CertificateDer, CertificateDer) {
        let op = self.sim.svc.op().unwrap().unwrap();
        (
            op.kind.future_ca().unwrap().clone(),
            op.kind.bridge().unwrap().clone(),
        )
    }

    /// The audit entries' details, in order, with their events.
    fn audit(&self) -> Vec<(String, serde_json::Value)> {
        let d = self.sim.svc.dump().unwrap();
        let mut entries: Vec<(String, serde_json::Value)> = d
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("audit/") && *k != "audit/head")
            .map(|(k, v)| (k.clone(), v["value"].clone()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
            .into_iter()
            .map(|(_, v)| {
                (
                    v["event"].as_str().unwrap().to_string(),
                    v["detail"].clone(),
                )
            })
            .collect()
    }

    /// The serial-number records: one per certificate issued (S3).
    fn serials(&self) -> usize {
        let d = self.sim.svc.dump().unwrap();
        d.as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("serial/"))
            .count()
    }
}

fn tagged(number: u32, constructed: bool, content: &[u8]) -> Vec<u8> {
    Any::new(
        Tag::ContextSpecific {
            constructed,
            number: TagNumber(number),
        },
        content.to_vec(),
    )
    .unwrap()
    .to_der()
    .unwrap()
}

fn sequence(content: &[u8]) -> Vec<u8> {
    Any::new(Tag::Sequence, content.to_vec())
        .unwrap()
        .to_der()
        .unwrap()
}

/// A request signed by `key` with its certificate `chain` (RFC 9483 3.2: the protecting
/// certificate first in extraCerts), for transaction `tid`.
fn signed_message(
    body_type: BodyType,
    content: &[u8],
    tid: [u8; 16],
    key: &PrivateKey,
    chain: &[CertificateDer],
) -> Vec<u8> {
    let leaf = Certificate::try_from(&chain[0]).unwrap();
    let header = PkiHeader {
        pvno: 2,
        sender: GeneralName::DirectoryName(leaf.subject_name().clone()),
        recipient: GeneralName::DirectoryName(Name::default()),
        message_time: None,
        protection_alg: Some(key.signature_algorithm()),
        sender_kid: None,
        recip_kid: None,
        transaction_id: Some(OctetString::new(tid.to_vec()).unwrap()),
        sender_nonce: Some(OctetString::new(vec![7; 16]).unwrap()),
        recip_nonce: None,
        free_text: None,
        general_info: Some(vec![InfoTypeAndValue {
            info_type: asn1::IMPLICIT_CONFIRM,
            info_value: Some(Any::from(der::asn1::Null)),
        }]),
    };
    let header = header.to_der().unwrap();
    let body = asn1::body_der(body_type, content).unwrap();
    let protection = key
        .sign(&asn1::protected_part(&header, &body).unwrap())
        .unwrap();
    let extra: Vec<Vec<u8>> = chain.iter().map(|c| c.as_bytes().to_vec()).collect();
    asn1::message_der(&header, &body, Some(&protection), &extra).unwrap()
}

/// A kur for `new_key` (RFC 4211: template with the public key, signature POP over certReq)
/// signed by `key` and its certificate.
fn kur(tid: [u8; 16], key: &PrivateKey, chain: &[CertificateDer], new_key: &PrivateKey) -> Vec<u8> {
    let spki = new_key.public_key_info().to_der().unwrap();
    let spki_content = Any::from_der(&spki).unwrap().value().to_vec();
    let template = sequence(&tagged(6, true, &spki_content));
    let cert_req = sequence(&[0u8.to_der().unwrap(), template].concat());
    let pop_sig = new_key.sign(&cert_req).unwrap();
    let popo = tagged(
        1,
        true,
        &[
            new_key.signature_algorithm().to_der().unwrap(),
            BitString::from_bytes(&pop_sig).unwrap().to_der().unwrap(),
        ]
        .concat(),
    );
    let msg = sequence(&[cert_req, popo].concat());
    signed_message(BodyType::Kur, &sequence(&msg), tid, key, chain)
}

/// A genm for caCerts signed by `key` and its certificate.
fn genm(tid: [u8; 16], key: &PrivateKey, chain: &[CertificateDer]) -> Vec<u8> {
    let items = vec![InfoTypeAndValue {
        info_type: asn1::CA_CERTS,
        info_value: None,
    }];
    signed_message(BodyType::Genm, &items.to_der().unwrap(), tid, key, chain)
}

/// The certificate of a kup, and the answer's freeText.
fn kup(answer: &CmpAnswer) -> (Certificate, Option<String>) {
    assert!(answer.refusal.is_none(), "{:?}", answer.refusal);
    let msg = PkiMessage::from_der(&answer.message).unwrap();
    assert_eq!(msg.body_type, BodyType::Kup);
    let rep = CertRepMessage::from_der(&msg.body).unwrap();
    let cert = rep.response[0].certified_key_pair.as_ref().unwrap();
    let cert = Certificate::from_der(cert.cert.value()).unwrap();
    (cert, msg.header.free_text.map(|t| t.join(" ")))
}

#[test]
fn a_kur_during_a_remint_ca_gets_the_future_certificate_and_counts_as_staged_e2() {
    let z = zone(Op::GatedRemintCa);
    let now = z.sim.svc.now();
    assert_eq!(z.status(), "assigned");
    let gate = |z: &Zone| {
        z.sim
            .svc
            .op_show()
            .unwrap()
            .gate
            .unwrap()
            .verdict_now
            .coverage
            .devices
            .applied
    };
    let applied_before = gate(&z);
    let serials = z.serials();
    let audited = z.audit().len();

    let new_key = PrivateKey::generate(KeySpec::P256).unwrap();
    let tid = [1u8; 16];
    let request = kur(tid, &z.key, &z.chain, &new_key);
    let answer = z.respond(&request);
    let (cert, text) = kup(&answer);

    // The future certificate: the device's new key, issued by the future CA, and through the
    // bridge (B1) to the CA the device trusts now; not by the current CA.
    let (future, bridge) = z.future_and_bridge();
    let future = Certificate::try_from(&future).unwrap();
    let bridge = Certificate::try_from(&bridge).unwrap();
    let old = Certificate::try_from(&z.old_ca).unwrap();
    assert_eq!(cert.public_key(), &new_key.public_key_info());
    assert_eq!(cert.common_name().as_deref(), Some(DEVICE));
    verify_chain(&cert, &[], std::slice::from_ref(&future), now).unwrap();
    verify_chain(
        &cert,
        std::slice::from_ref(&bridge),
        std::slice::from_ref(&old),
        now,
    )
    .unwrap();
    assert!(verify_chain(&cert, &[], std::slice::from_ref(&old), now).is_err());
    // The activation time reaches the client with it (E2).
    assert_eq!(text, Some(format!("activation: {}", z.activation)));

    // Counted as staged in op show, device list and the gate's coverage (B2), by the commit
    // that issued: one certificate, one audit entry.
    assert_eq!(z.status(), "applied");
    let page = z
        .sim
        .svc
        .device_list(&DeviceQuery::all().with_status(UpdateStatus::Applied))
        .unwrap();
    assert_eq!(
        page.devices
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        vec![DEVICE]
    );
    assert_eq!(gate(&z), applied_before + 1);
    assert_eq!(z.serials(), serials + 1);
    let audit = z.audit();
    assert_eq!(audit.len(), audited + 1, "one commit: {audit:?}");
    let (event, detail) = audit.last().unwrap();
    assert_eq!(event, "member.renew");
    assert_eq!(detail["status"], "applied");
    assert_eq!(detail["activation"], z.activation.to_string());

    // The same transactionID again: the same certificate, nothing committed (no second
    // serial, no second status change, no audit entry).
    let before = z.sim.svc.dump().unwrap();
    let (again, _) = kup(&z.respond(&request));
    assert_eq!(again.der(), cert.der());
    assert_eq!(z.sim.svc.dump().unwrap(), before);
}

#[test]
fn after_activation_a_request_signed_with_the_future_certificate_counts_as_activated_e2() {
    let z = zone(Op::RemintCa);
    let staged_key = PrivateKey::generate(KeySpec::P256).unwrap();
    let (future_cert, _) = kup(&z.respond(&kur([2; 16], &z.key, &z.chain, &staged_key)));
    let future_chain = vec![future_cert.der().clone()];
    assert_eq!(z.status(), "applied");

    // Activation (O8): the zone activates at its next step (here the kur's own commit, N6).
    z.sim.clock.set(z.activation);
    // A kur still signed with the old credential issues (B7 keeps the old CA) but the device
    // has not switched: it stays applied.
    let other_key = PrivateKey::generate(KeySpec::P256).unwrap();
    let (_, text) = kup(&z.respond(&kur([3; 16], &z.key, &z.chain, &other_key)));
    assert_eq!(
        text, None,
        "after activation a certificate is not a future one"
    );
    let v = z.sim.svc.op_show().unwrap();
    assert_eq!(v.state.to_string(), "activated");
    assert_eq!(z.sim.status(&v, DEVICE), "applied");

    // A kur signed with the future certificate: a certificate of the new current CA, and the
    // device counts as activated.
    let next_key = PrivateKey::generate(KeySpec::P256).unwrap();
    let request = kur([4; 16], &staged_key, &future_chain, &next_key);
    let (cert, _) = kup(&z.respond(&request));
    let new_ca = Certificate::try_from(&z.sim.svc.zone().unwrap().ca_certificate).unwrap();
    assert_ne!(new_ca.der(), &z.old_ca);
    verify_chain(&cert, &[], std::slice::from_ref(&new_ca), z.sim.svc.now()).unwrap();
    assert_eq!(z.status(), "activated");
    let page = z
        .sim
        .svc
        .device_list(&DeviceQuery::all().with_status(UpdateStatus::Activated))
        .unwrap();
    assert_eq!(page.devices.len(), 1);

    // Its replay changes nothing.
    let before = z.sim.svc.dump().unwrap();
    let (again, _) = kup(&z.respond(&request));
    assert_eq!(again.der(), cert.der());
    assert_eq!(z.sim.svc.dump().unwrap(), before);
}

#[test]
fn after_activation_a_signed_genm_with_the_future_certificate_counts_as_activated_e2() {
    let z = zone(Op::RemintCa);
    let staged_key = PrivateKey::generate(KeySpec::P256).unwrap();
    let (future_cert, _) = kup(&z.respond(&kur([5; 16], &z.key, &z.chain, &staged_key)));
    let future_chain = vec![future_cert.der().clone()];
    z.sim.clock.set(z.activation);
    // Signed with the old credential: not switched.
    let answer = z.respond(&genm([6; 16], &z.key, &z.chain));
    assert!(answer.refusal.is_none(), "{:?}", answer.refusal);
    assert_eq!(z.status(), "applied");
    // Signed with the future certificate: activated, once.
    let request = genm([7; 16], &staged_key, &future_chain);
    let answer = z.respond(&request);
    assert!(answer.refusal.is_none(), "{:?}", answer.refusal);
    assert_eq!(
        PkiMessage::from_der(&answer.message).unwrap().body_type,
        BodyType::Genp
    );
    assert_eq!(z.status(), "activated");
    let before = z.sim.svc.dump().unwrap();
    z.respond(&request);
    assert_eq!(z.sim.svc.dump().unwrap(), before, "no second status change");
}

#[test]
fn a_device_that_missed_the_update_and_rekeys_after_activation_is_recovered_e2() {
    let z = zone(Op::RemintCa);
    z.sim.clock.set(z.activation);
    let new_key = PrivateKey::generate(KeySpec::P256).unwrap();
    let (cert, _) = kup(&z.respond(&kur([8; 16], &z.key, &z.chain, &new_key)));
    let new_ca = Certificate::try_from(&z.sim.svc.zone().unwrap().ca_certificate).unwrap();
    verify_chain(&cert, &[], std::slice::from_ref(&new_ca), z.sim.svc.now()).unwrap();
    assert_eq!(z.status(), "recovered");
}

#[test]
fn a_kur_while_the_update_replicates_gets_a_current_certificate_and_no_status_e2() {
    // O4: the update reaches CMP clients when it is assigned, as it reaches agents.
    let store: Store = Arc::new(MemoryStore::new());
    let sim = Sim::build(
        store,
        LoopbackTransport::in_memory(),
        Spec {
            bridges: true,
            ..Spec::new(1)
        },
    );
    let (_, token) = sim
        .svc
        .issue_tokens(&[DEVICE.to_string()], Duration::from_secs(3600))
        .unwrap()
        .pop()
        .unwrap();
    let key = PrivateKey::generate(KeySpec::P256).unwrap();
    let csr = build_csr(
        &CsrRequest {
            subject: CsrSubject::cn(DEVICE),
            dns_names: Vec::new(),
        },
        &key,
    )
    .unwrap();
    let chain = sim
        .svc
        .enroll(&EnrollRequest::new(DEVICE, token, csr.as_bytes().to_vec()))
        .unwrap()
        .chain;
    let mut req = sim::remint_ca("2030-01-01T00:00:00Z");
    req.activation = ActivationRequest::At(t(T0).plus(Duration::from_secs(30 * 86400)));
    sim.svc.start_remint_ca(req).unwrap();
    let z = Zone {
        activation: t(T0),
        old_ca: sim.svc.zone().unwrap().ca_certificate,
        sim,
        key,
        chain,
    };
    let new_key = PrivateKey::generate(KeySpec::P256).unwrap();
    let (cert, text) = kup(&z.respond(&kur([9; 16], &z.key, &z.chain, &new_key)));
    assert_eq!(text, None);
    let old = Certificate::try_from(&z.old_ca).unwrap();
    verify_chain(&cert, &[], std::slice::from_ref(&old), z.sim.svc.now()).unwrap();
    assert_eq!(z.status(), "not assigned");
}

#[test]
fn a_kur_during_a_change_ca_to_internal_gets_the_new_ca_servers_certificate_e2() {
    // CI1: the future CA's key is on ps2's agent, which signs the future certificate.
    let z = zone(Op::ChangeCaToPs2);
    let now = z.sim.svc.now();
    let new_key = PrivateKey::generate(KeySpec::P256).unwrap();
    let (cert, text) = kup(&z.respond(&kur([10; 16], &z.key, &z.chain, &new_key)));
    let (future, bridge) = z.future_and_bridge();
    let future = Certificate::try_from(&future).unwrap();
    assert_eq!(future.common_name().as_deref(), Some("Sim Zone 2"));
    verify_chain(&cert, &[], std::slice::from_ref(&future), now).unwrap();
    let old = Certificate::try_from(&z.old_ca).unwrap();
    let bridge = Certificate::try_from(&bridge).unwrap();
    verify_chain(
        &cert,
        std::slice::from_ref(&bridge),
        std::slice::from_ref(&old),
        now,
    )
    .unwrap();
    assert_eq!(text, Some(format!("activation: {}", z.activation)));
    assert_eq!(z.status(), "applied");
}

#[test]
fn an_ignored_device_gets_a_current_certificate_and_stays_ignored_e2() {
    // O5: "ignore device" takes it out of the update; a kur does not bring it back.
    let z = zone(Op::RemintCa);
    z.sim.svc.ignore(&[DEVICE.to_string()]).unwrap();
    let new_key = PrivateKey::generate(KeySpec::P256).unwrap();
    let (cert, text) = kup(&z.respond(&kur([11; 16], &z.key, &z.chain, &new_key)));
    assert_eq!(text, None);
    let old = Certificate::try_from(&z.old_ca).unwrap();
    verify_chain(&cert, &[], std::slice::from_ref(&old), z.sim.svc.now()).unwrap();
    assert_eq!(z.status(), "ignored");
}
