//! The zone service end to end on the memory store, in-process agents and a manual clock:
//! Z1, Z2, S1, S3, V1-V3, and "a refused command changes nothing".
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use zonepki::agent::{AgentError, AgentRequest};
use zonepki::cert::Certificate;
use zonepki::chain::verify_chain;
use zonepki::clock::{ManualClock, Timestamp};
use zonepki::error::Error;
use zonepki::key::KeySpec;
use zonepki::service::{InitInternal, NewServer, ZoneService};
use zonepki::store::{Committed, MemoryStore, Record, Storage, StoreError, Write};
use zonepki::transport::{LoopbackTransport, Transport, TransportError};
use zonepki::view::WarningSubject;
use zonepki::zone::{Fqdn, ServerRole, ZoneError};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn fq(s: &str) -> Fqdn {
    s.parse().unwrap()
}

type Svc<S> = ZoneService<S, LoopbackTransport, ManualClock>;

fn init_with<S: Storage>(store: S, transport: LoopbackTransport) -> Svc<S> {
    let svc = ZoneService::new(
        store,
        transport,
        ManualClock::new(t("2027-01-01T00:00:00Z")),
    );
    let mut first = NewServer::new(fq("ps1.zone.example"), ServerRole::Primary);
    first.dns_names = vec!["alias.zone.example".into()];
    svc.init_internal(
        InitInternal::new("Test Zone", first)
            .with_ca_key(KeySpec::P256)
            .with_validity(2.try_into().unwrap()),
    )
    .unwrap();
    svc
}

fn zone() -> Svc<MemoryStore> {
    init_with(MemoryStore::new(), LoopbackTransport::in_memory())
}

#[test]
fn init_creates_ca_on_first_server_and_enrols_it() {
    let svc = zone();
    let ca = svc.ca_view().unwrap();
    assert_eq!(ca.kind, "internal");
    assert_eq!(ca.certificate_server.as_deref(), Some("ps1.zone.example"));
    assert_eq!(ca.details.subject, "CN=Test Zone");
    assert_eq!(ca.details.not_after, t("2029-01-01T00:00:00Z"));
    assert_eq!(ca.details.key_algorithm, "ecdsa-p256");
    let ps1 = svc.server(&fq("ps1.zone.example")).unwrap();
    assert_eq!(ps1.status, "active");
    assert!(ps1.certificate_server);
    assert_eq!(ps1.dns_names, ["alias.zone.example"]);
    // The key was made on the agent (S1): the CA key and the server key are there, and the
    // store holds neither.
    let has_keys = svc
        .transport()
        .with_agent("ps1.zone.example", |a| {
            a.ca_key().is_some() && a.key().is_some()
        })
        .unwrap();
    assert!(has_keys);
    let dump = svc.dump().unwrap().to_string();
    assert!(
        !dump.contains("PRIVATE KEY"),
        "no key material in the store"
    );
}

#[test]
fn a_second_init_is_refused() {
    let svc = zone();
    let before = svc.dump().unwrap();
    let e = svc
        .init_internal(
            InitInternal::new(
                "Other",
                NewServer::new(fq("x.example"), ServerRole::Primary),
            )
            .with_ca_key(KeySpec::P256)
            .with_validity(1.try_into().unwrap()),
        )
        .unwrap_err();
    assert!(
        matches!(e, Error::Zone(ZoneError::ZoneExists { .. })),
        "{e}"
    );
    assert_eq!(before, svc.dump().unwrap());
}

#[test]
#[cfg(feature = "rsa")]
fn servers_enrol_with_keys_on_their_agents_and_chain_to_the_ca() {
    let svc = zone();
    let mut ps2 = NewServer::new(fq("ps2.zone.example"), ServerRole::Primary);
    ps2.key = KeySpec::Rsa2048;
    svc.add_server(ps2).unwrap();
    let mut sat = NewServer::new(fq("sat.zone.example"), ServerRole::AuthSatellite);
    sat.parent = Some(fq("ps2.zone.example"));
    sat.dns_names = vec!["sat-alias.zone.example".into()];
    let view = svc.add_server(sat).unwrap();
    assert_eq!(view.status, "active");
    assert_eq!(view.parent.as_deref(), Some("ps2.zone.example"));
    let content = svc
        .add_server(NewServer::new(
            fq("content.zone.example"),
            ServerRole::ContentSatellite,
        ))
        .unwrap();
    assert_eq!(content.status, "none");

    let ca = svc.ca_certificate().unwrap();
    let now = svc.now();
    for name in ["ps1.zone.example", "ps2.zone.example", "sat.zone.example"] {
        let chain = svc.server_chain(&fq(name)).unwrap();
        assert_eq!(chain.len(), 2, "leaf + CA");
        let leaf = Certificate::try_from(&chain[0]).unwrap();
        verify_chain(&leaf, &[], std::slice::from_ref(&ca), now).unwrap();
        // The agent holds the key of exactly this certificate.
        let agent_spki = svc
            .transport()
            .with_agent(name, |a| {
                zonepki::key::Signer::public_key_info(a.key().unwrap())
            })
            .unwrap();
        assert_eq!(&agent_spki, leaf.public_key());
        assert!(leaf.dns_names().unwrap().contains(&name.to_string()));
    }
    let sat_leaf =
        Certificate::try_from(&svc.server_chain(&fq("sat.zone.example")).unwrap()[0]).unwrap();
    assert_eq!(
        sat_leaf.dns_names().unwrap(),
        ["sat.zone.example", "sat-alias.zone.example"]
    );
    let ps2_leaf =
        Certificate::try_from(&svc.server_chain(&fq("ps2.zone.example")).unwrap()[0]).unwrap();
    assert_eq!(ps2_leaf.key_algorithm().unwrap().name(), "rsa");
    assert_eq!(svc.servers().unwrap().len(), 4);
    assert_eq!(svc.verify_audit().unwrap().entries, 4);
}

#[test]
fn membership_rules_refuse_and_change_nothing() {
    let svc = zone();
    svc.add_server(NewServer::new(
        fq("content.zone.example"),
        ServerRole::ContentSatellite,
    ))
    .unwrap();
    svc.add_devices(&["dev-1".to_string()], "1.0").unwrap();
    let before = svc.dump().unwrap();

    let sat = NewServer::new(fq("sat.zone.example"), ServerRole::AuthSatellite);
    let e = svc.add_server(sat.clone()).unwrap_err();
    assert!(
        matches!(e, Error::Zone(ZoneError::MissingParent { .. })),
        "{e}"
    );

    let mut bad_parent = sat.clone();
    bad_parent.parent = Some(fq("content.zone.example"));
    let e = svc.add_server(bad_parent).unwrap_err();
    assert!(matches!(e, Error::Zone(ZoneError::BadParent { .. })), "{e}");

    let mut unknown_parent = sat;
    unknown_parent.parent = Some(fq("nope.zone.example"));
    assert!(svc.add_server(unknown_parent).is_err());

    let dup = NewServer::new(fq("PS1.zone.example"), ServerRole::Primary);
    let e = svc.add_server(dup).unwrap_err();
    assert!(e.to_string().contains("already a member"), "{e}");

    let e = svc
        .add_server(NewServer::new(fq("dev-1"), ServerRole::Primary))
        .unwrap_err();
    assert!(e.to_string().contains("already a member"), "{e}");

    let mut bad_dns = NewServer::new(fq("ps9.zone.example"), ServerRole::Primary);
    bad_dns.dns_names = vec!["*.wild.example".into()];
    assert!(svc.add_server(bad_dns).is_err());

    // Devices: all or none.
    let e = svc
        .add_devices(&["dev-2".into(), "dev-1".into()], "1.0")
        .unwrap_err();
    assert!(e.to_string().contains("dev-1"), "{e}");
    assert!(
        svc.add_devices(&["dev-3".into(), "dev-3".into()], "1.0")
            .is_err()
    );
    assert!(svc.add_devices(&["bad name".into()], "1.0").is_err());
    assert!(svc.add_devices(&["..".into()], "1.0").is_err());

    assert!(svc.server(&fq("nope.zone.example")).is_err());
    assert_eq!(
        before,
        svc.dump().unwrap(),
        "refusals must leave the store as it was"
    );
}

#[test]
fn devices_are_listed() {
    let svc = zone();
    let names: Vec<String> = (1..=50).map(|i| format!("dev-{i}")).collect();
    assert_eq!(svc.add_devices(&names, "2.0").unwrap(), 50);
    let list = svc.devices().unwrap();
    assert_eq!(list.len(), 50);
    assert!(
        list.iter()
            .all(|d| d.update_status == "none" && d.agent_version == "2.0")
    );
}

#[test]
fn warnings_follow_the_window_and_the_manual_wording() {
    let svc = zone();
    let clock = |s| ZoneService::new(svc.store(), svc.transport(), ManualClock::new(t(s)));
    let day = Duration::from_secs(86_400);
    assert!(svc.warnings(90 * day).unwrap().is_empty());
    // 60 days before expiry: inside the default 90-day window, outside a 30-day one.
    let near = clock("2028-11-02T00:00:00Z");
    let w = near.warnings(90 * day).unwrap();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w.iter().any(|x| x.kind == WarningSubject::Ca && !x.expired));
    assert!(w.iter().any(|x| {
        x.message
            .contains("ps1.zone.example server certificate expires")
    }));
    assert!(near.warnings(30 * day).unwrap().is_empty());
    let late = clock("2029-02-01T00:00:00Z");
    let w = late.warnings(90 * day).unwrap();
    assert!(w.iter().all(|x| x.expired));
    assert!(
        w.iter()
            .any(|x| x.message == "ps1.zone.example server certificate has expired")
    );
    let v = late.server(&fq("ps1.zone.example")).unwrap();
    assert_eq!(v.status, "expired");
    assert_eq!(late.ca_view().unwrap().details.status.name(), "expired");
}

#[test]
fn the_ca_agent_signs_only_certificates_of_its_own_ca() {
    let svc = zone();
    let e = svc
        .transport()
        .call(
            "ps1.zone.example",
            AgentRequest::SignCertificate {
                tbs: b"hello".to_vec(),
            },
        )
        .unwrap_err();
    assert!(
        matches!(&e, TransportError::Refused { source, .. }
        if matches!(**source, AgentError::RefusedToSign { .. })),
        "{e}"
    );
    let e = svc
        .transport()
        .call(
            "other.example",
            AgentRequest::SignCertificate { tbs: vec![] },
        )
        .unwrap_err();
    assert!(
        matches!(&e, TransportError::Refused { source, .. }
        if matches!(**source, AgentError::NotCaServer)),
        "{e}"
    );
}

#[test]
fn an_offline_member_cannot_join_and_nothing_changes() {
    let svc = zone();
    let before = svc.dump().unwrap();
    svc.transport().set_offline("ps2.zone.example", true);
    let e = svc
        .add_server(NewServer::new(fq("ps2.zone.example"), ServerRole::Primary))
        .unwrap_err();
    assert!(e.to_string().contains("unreachable"), "{e}");
    assert_eq!(before, svc.dump().unwrap());
    // With the CA server offline, nobody can be issued a certificate.
    svc.transport().set_offline("ps2.zone.example", false);
    svc.transport().set_offline("ps1.zone.example", true);
    let e = svc
        .add_server(NewServer::new(fq("ps2.zone.example"), ServerRole::Primary))
        .unwrap_err();
    assert!(e.to_string().contains("ps1.zone.example"), "{e}");
    assert_eq!(before, svc.dump().unwrap());
}

/// A store that lets another writer in just before the first commit it sees.
struct Interleaved<'a> {
    inner: &'a MemoryStore,
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
fn two_frontends_on_one_store_cannot_both_commit_from_the_same_view() {
    let store = MemoryStore::new();
    let transport = LoopbackTransport::in_memory();
    let _ = init_with(&store, LoopbackTransport::in_memory());
    // Frontend B adds dev-b in the middle of frontend A's command.
    let b = ZoneService::new(
        &store,
        &transport,
        ManualClock::new(t("2027-01-02T00:00:00Z")),
    );
    let a_store = Interleaved {
        inner: &store,
        other: Box::new(move || {
            b.add_devices(&["dev-b".into()], "1").unwrap();
        }),
        fired: AtomicBool::new(false),
    };
    let a = ZoneService::new(
        &a_store,
        &transport,
        ManualClock::new(t("2027-01-02T00:00:00Z")),
    );
    let e = a.add_devices(&["dev-a".into()], "1").unwrap_err();
    assert!(
        matches!(e, Error::ZoneChanged { .. }) && e.is_retryable(),
        "{e}"
    );
    let names: Vec<String> = ZoneService::new(
        &store,
        &transport,
        ManualClock::new(t("2027-01-02T00:00:00Z")),
    )
    .devices()
    .unwrap()
    .into_iter()
    .map(|d| d.name)
    .collect();
    assert_eq!(names, ["dev-b"]);
    // A retry from a fresh view succeeds.
    a.add_devices(&["dev-a".into()], "1").unwrap();
}

#[test]
fn serials_are_recorded_per_issuer_and_a_repeat_is_refused_by_the_store() {
    let svc = zone();
    svc.add_server(NewServer::new(fq("ps2.zone.example"), ServerRole::Primary))
        .unwrap();
    let serials = svc.store().scan_all("serial/").unwrap();
    assert_eq!(serials.len(), 3, "CA + two servers");
    let (key, rec) = &serials[1];
    let e = svc
        .store()
        .commit(&[Write::create(key.clone(), rec.value.clone())])
        .unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }));
    // Each certificate's serial is the one recorded.
    let leaf =
        Certificate::try_from(&svc.server_chain(&fq("ps2.zone.example")).unwrap()[0]).unwrap();
    let hex = base16ct::lower::encode_string(leaf.serial());
    assert!(serials.iter().any(|(k, _)| k.ends_with(&hex)), "{hex}");
    assert_eq!(leaf.serial().len(), 16);
}

#[test]
fn member_files_are_written_with_private_keys_0600() {
    let dir = tempfile::tempdir().unwrap();
    let svc = init_with(MemoryStore::new(), LoopbackTransport::with_root(dir.path()));
    let cur = dir.path().join("ps1.zone.example/current");
    let chain = zonepki::cert::bundle::read_file(&cur.join("cert.pem")).unwrap();
    let trust = zonepki::cert::bundle::read_file(&cur.join("trust.pem")).unwrap();
    assert_eq!(trust[0], svc.ca_certificate().unwrap());
    verify_chain(&chain[0], &[], &trust, svc.now()).unwrap();
    let key =
        zonepki::key::PrivateKey::from_pkcs8(&std::fs::read(cur.join("key.pem")).unwrap()).unwrap();
    assert_eq!(
        &zonepki::key::Signer::public_key_info(&key),
        chain[0].public_key()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for f in [
            cur.join("key.pem"),
            dir.path().join("ps1.zone.example/ca/key.pem"),
        ] {
            let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
    }
    assert!(!dir.path().join("ps1.zone.example/pending/key.pem").exists());
}
