//! Change CA in every direction (issue #4: CI1, CI2, CE1-CE4, SR3, SR5, B1): internal to
//! internal on another server, internal to external with automatic CSRs signed by an external
//! root and intermediate, and external back to internal.
#![allow(clippy::unwrap_used)]

use zonepki::ca::self_signed_ca;
use zonepki::ca::{CaParams, Serial, ServerProfile, cross_certify, issue_server_certificate};
use zonepki::cert::{Certificate, CertificateDer, bundle};
use zonepki::chain::verify_chain;
use zonepki::clock::{Clock, ManualClock, Timestamp};
use zonepki::csr::VerifiedCsr;
use zonepki::key::{KeySpec, PrivateKey};
use zonepki::ops::{ActivationRequest, CsrFields, CsrMode};
use zonepki::service::{
    ChangeCaRequest, ChangeCaTarget, InitInternal, NewServer, OpView, ZoneService,
};
use zonepki::store::MemoryStore;
use zonepki::transport::LoopbackTransport;
use zonepki::transport::{Fleet, RefreshOptions};
use zonepki::zone::{Fqdn, ServerRole};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn fq(s: &str) -> Fqdn {
    s.parse().unwrap()
}

type Svc = ZoneService<MemoryStore, LoopbackTransport, &'static ManualClock>;

fn zone() -> (Svc, &'static ManualClock) {
    let clock: &'static ManualClock =
        Box::leak(Box::new(ManualClock::new(t("2027-01-01T00:00:00Z"))));
    let svc = ZoneService::new(MemoryStore::new(), LoopbackTransport::in_memory(), clock);
    svc.init_internal(
        InitInternal::new(
            "Acme",
            NewServer::new(fq("ps1.acme.example"), ServerRole::Primary),
        )
        .with_ca_key(KeySpec::P256)
        .with_validity(5.try_into().unwrap()),
    )
    .unwrap();
    svc.add_server(NewServer::new(fq("ps2.acme.example"), ServerRole::Primary))
        .unwrap();
    let mut sat = NewServer::new(fq("sat.acme.example"), ServerRole::AuthSatellite);
    sat.parent = Some(fq("ps2.acme.example"));
    svc.add_server(sat).unwrap();
    svc.add_devices(&["dev-1".into(), "dev-2".into()], "1")
        .unwrap();
    svc.refresh(&[], &RefreshOptions::default(), |_, _| {})
        .unwrap();
    (svc, clock)
}

fn drive(svc: &Svc) -> OpView {
    for _ in 0..3 {
        svc.refresh(&[], &RefreshOptions::default(), |_, _| {})
            .unwrap();
    }
    svc.op_show().unwrap()
}

/// An external CA: a root and an intermediate under it.
struct External {
    root: Certificate,
    int: Certificate,
    int_key: PrivateKey,
}

impl External {
    fn new(now: Timestamp) -> Self {
        let root_key = PrivateKey::generate(KeySpec::P256).unwrap();
        let p = |cn: &str| CaParams {
            common_name: cn.into(),
            validity: 10.try_into().unwrap(),
        };
        let root = self_signed_ca(
            &root_key,
            &p("External Root"),
            &Serial::random().unwrap(),
            now,
        )
        .unwrap();
        let int_key = PrivateKey::generate(KeySpec::P256).unwrap();
        let int_self = self_signed_ca(
            &int_key,
            &p("External Issuing CA"),
            &Serial::random().unwrap(),
            now,
        )
        .unwrap();
        let int =
            cross_certify(&root, &root_key, &int_self, &Serial::random().unwrap(), now).unwrap();
        External { root, int, int_key }
    }

    fn chain_pem(&self) -> Vec<u8> {
        bundle::to_pem(&[self.int.der().clone(), self.root.der().clone()]).into_bytes()
    }

    fn sign(&self, fqdn: &str, csr: &zonepki::csr::CsrDer, now: Timestamp) -> Vec<u8> {
        let csr = VerifiedCsr::from_der(csr.as_bytes()).unwrap();
        let profile = ServerProfile {
            fqdn: fqdn.into(),
            ..Default::default()
        };
        let leaf = issue_server_certificate(
            &self.int,
            &self.int_key,
            &csr,
            &profile,
            &Serial::random().unwrap(),
            now,
        )
        .unwrap();
        bundle::to_pem(&[leaf.der().clone(), self.int.der().clone()]).into_bytes()
    }
}

fn chain_of(svc: &Svc, name: &str) -> Vec<Certificate> {
    svc.transport()
        .with_agent(name, |a| a.chain().to_vec())
        .unwrap()
        .iter()
        .map(|c| Certificate::try_from(c).unwrap())
        .collect()
}

fn trusts(svc: &Svc, name: &str) -> Vec<CertificateDer> {
    svc.transport()
        .with_agent(name, |a| a.trust().to_vec())
        .unwrap()
}

#[test]
fn change_ca_internal_to_another_primary_server() {
    let (svc, clock) = zone();
    let v = svc
        .start_change_ca(ChangeCaRequest::new(
            ChangeCaTarget::Internal {
                server: fq("ps2.acme.example"),
                common_name: Some("Acme CA 2".into()),
                key: KeySpec::P256,
                validity: 5.try_into().unwrap(),
            },
            ActivationRequest::At(t("2027-01-10T00:00:00Z")),
        ))
        .unwrap();
    assert_eq!(v.kind, "change_ca_internal");
    assert_eq!(
        v.recovery_available_on[0], "ps2.acme.example",
        "O6: the new CA server"
    );
    let v = drive(&svc);
    assert!(
        v.servers
            .iter()
            .all(|s| s.certificate_status == "new certificate created")
    );
    clock.set(t("2027-01-10T00:00:00Z"));
    drive(&svc);
    let ca = svc.ca_view().unwrap();
    assert_eq!(ca.certificate_server.as_deref(), Some("ps2.acme.example"));
    assert_eq!(ca.details.subject, "CN=Acme CA 2");
    let anchor = svc.ca_certificate().unwrap();
    for s in ["ps1.acme.example", "ps2.acme.example", "sat.acme.example"] {
        let chain = chain_of(&svc, s);
        verify_chain(
            &chain[0],
            &chain[1..],
            std::slice::from_ref(&anchor),
            clock.now(),
        )
        .unwrap();
    }
    // The new certificate server issues from now on.
    let v = svc
        .add_server(NewServer::new(fq("ps3.acme.example"), ServerRole::Primary))
        .unwrap();
    assert_eq!(v.issuer.as_deref(), Some("CN=Acme CA 2"));
}

#[test]
fn change_ca_to_external_with_automatic_csrs_and_back() {
    let (svc, clock) = zone();
    let now = clock.now();
    let ext = External::new(now);
    let fields = CsrFields::default()
        .with_organization("Acme")
        .with_country("US");
    let v = svc
        .start_change_ca(
            ChangeCaRequest::new(
                ChangeCaTarget::External {
                    chain: ext.chain_pem(),
                    csr: CsrMode::Auto {
                        fields: fields.clone(),
                        key: KeySpec::P256,
                    },
                },
                ActivationRequest::At(t("2027-01-10T00:00:00Z")),
            )
            .with_update_name("To external"),
        )
        .unwrap();
    assert_eq!(v.kind, "change_ca_external");
    let v = drive(&svc);
    assert!(
        v.servers
            .iter()
            .all(|s| s.certificate_status == "CSR generated"),
        "{v:?}"
    );
    assert!(
        v.devices
            .iter()
            .filter(|d| d.name.starts_with("dev"))
            .all(|d| d.status == "applied")
    );

    // The CSRs, one zip; a certificate from an unrelated CA is refused with the manual's words.
    let zip = svc.csr_zip(&[]).unwrap();
    assert!(zip.starts_with(b"PK"));
    let csrs = svc.csrs(&[]).unwrap();
    assert_eq!(csrs.len(), 3);
    let other = External::new(now);
    let (fqdn, csr) = &csrs[0];
    let e = svc
        .import_certificate(fqdn, &other.sign(fqdn.as_str(), csr, now))
        .unwrap_err();
    assert!(
        e.to_string().contains(
            "CA certificate subject from the CA Certificate chain does not match server \
             certificate issuer."
        ),
        "{e}"
    );
    let v = VerifiedCsr::from_der(csr.as_bytes()).unwrap();
    assert!(
        v.subject().to_string().contains("O=Acme"),
        "{}",
        v.subject()
    );
    for (fqdn, csr) in &csrs {
        svc.import_certificate(fqdn, &ext.sign(fqdn.as_str(), csr, now))
            .unwrap();
    }
    let v = drive(&svc);
    assert!(
        v.servers
            .iter()
            .all(|s| s.certificate_status == "new certificate uploaded")
    );
    assert!(v.devices.iter().all(|d| d.status == "applied"), "{v:?}");

    clock.set(t("2027-01-10T00:00:00Z"));
    let v = drive(&svc);
    assert!(v.stranded.is_empty(), "{:?}", v.stranded);
    let ca = svc.ca_view().unwrap();
    assert_eq!(ca.kind, "external");
    assert_eq!(ca.details.subject, "CN=External Root");
    for s in ["ps1.acme.example", "ps2.acme.example", "sat.acme.example"] {
        let chain = chain_of(&svc, s);
        assert_eq!(chain.len(), 3, "leaf, intermediate, root");
        verify_chain(
            &chain[0],
            &chain[1..],
            std::slice::from_ref(&ext.root),
            clock.now(),
        )
        .unwrap();
    }
    assert!(trusts(&svc, "dev-1").contains(ext.root.der()));
    svc.baseline(false).unwrap();

    // And back to internal: no bridge (the zone never held the external root's key).
    svc.start_change_ca(ChangeCaRequest::new(
        ChangeCaTarget::Internal {
            server: fq("ps1.acme.example"),
            common_name: None,
            key: KeySpec::P256,
            validity: 3.try_into().unwrap(),
        },
        ActivationRequest::At(t("2027-02-01T00:00:00Z")),
    ))
    .unwrap();
    let op = svc.op().unwrap().unwrap();
    assert!(op.kind.cross_certificate().is_none());
    drive(&svc);
    clock.set(t("2027-02-01T00:00:00Z"));
    let v = drive(&svc);
    assert!(v.stranded.is_empty(), "{:?}", v.stranded);
    let ca = svc.ca_view().unwrap();
    assert_eq!(ca.kind, "internal");
    assert_eq!(ca.certificate_server.as_deref(), Some("ps1.acme.example"));
    let anchor = svc.ca_certificate().unwrap();
    let chain = chain_of(&svc, "sat.acme.example");
    verify_chain(
        &chain[0],
        &chain[1..],
        std::slice::from_ref(&anchor),
        clock.now(),
    )
    .unwrap();
}

/// Issue 10 item 5 (O7, B2): a CSR action finds the operation with its due scheduled work
/// applied. At the activation time of an external Change CA whose gate is not met (dev-2
/// never refreshes), and with no tick before it, importing a certificate first commits the
/// gate's postponement, which moves the cancel cut-off, and is then accepted: on 96818ac it
/// was refused as inside the cut-off of an activation time that no longer held.
#[test]
fn csr_actions_see_the_gates_postponement_due_now() {
    use zonepki::ops::{AtDeadline, Gate, ServerQuota};
    let (svc, clock) = zone();
    let now = clock.now();
    let ext = External::new(now);
    let gate = Gate::new(
        100,
        ServerQuota::AtLeast {
            primary: 0,
            auth_satellite: 0,
        },
    )
    .with_step_secs(3600)
    .with_deadline_margin_secs(0)
    .with_at_deadline(AtDeadline::Hold);
    svc.start_change_ca(
        ChangeCaRequest::new(
            ChangeCaTarget::External {
                chain: ext.chain_pem(),
                csr: CsrMode::Auto {
                    fields: CsrFields::default(),
                    key: KeySpec::P256,
                },
            },
            ActivationRequest::At(t("2027-01-10T00:00:00Z")),
        )
        .with_gate(gate),
    )
    .unwrap();
    let offline = RefreshOptions::new().offline(["dev-2"]);
    for _ in 0..3 {
        svc.refresh(&[], &offline, |_, _| {}).unwrap();
    }
    let csrs = svc.csrs(&[]).unwrap();
    assert_eq!(csrs.len(), 3);

    // The activation time comes; nobody ticks.
    clock.set(t("2027-01-10T00:00:00Z"));
    let (fqdn, csr) = &csrs[0];
    svc.import_certificate(fqdn, &ext.sign(fqdn.as_str(), csr, clock.now()))
        .unwrap();
    let v = svc.op_show().unwrap();
    assert_eq!(v.state, "assigned");
    assert_eq!(
        v.activation,
        t("2027-01-10T01:00:00Z"),
        "postponed by one step"
    );
    assert_eq!(v.cancel_deadline, Some(t("2027-01-10T00:50:00Z")));
    let uploaded = v.servers.iter().find(|s| s.fqdn == fqdn.as_str()).unwrap();
    assert_eq!(uploaded.certificate_status, "new certificate uploaded");
    // A CSR made again is accepted the same way, now without anything due.
    svc.generate_csr(
        std::slice::from_ref(&csrs[1].0),
        &CsrFields::default(),
        None,
        KeySpec::P256,
    )
    .unwrap();
}
