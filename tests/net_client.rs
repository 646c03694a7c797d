//! The HTTPS clients (issue 11 items 2 and 4; N1, N3, N4, N5, S1): the CA pin bootstrap, the
//! agent's TLS configuration, the agent's enrolment and refresh as library code, and a
//! `ZoneService` running against a zone server's store through the admin API. The server is
//! the tiny test double of tests/common/net.rs (zoned's real server is another slice's).
#![allow(clippy::unwrap_used)]

#[path = "common/live.rs"]
mod live;
#[path = "common/net.rs"]
mod net;
#[path = "common/sim.rs"]
mod sim;

use std::sync::Arc;
use std::time::Duration;

use live::{LiveZone, live_zone};
use net::{Backend, TestServer, own_ca};
use zonepki::agent::files::MemberDir;
use zonepki::clock::{SystemClock, Timestamp};
use zonepki::key::{KeySpec, Signer as _};
use zonepki::net::agent::{
    self as agent_net, AgentOptions, AgentRunError, CONFIG_FILE, needs_renewal,
};
use zonepki::net::client::{
    BearerToken, CaPin, ClientError, HttpsClient, ServerUrl, agent_tls_config, fetch_pinned_ca,
};
use zonepki::net::remote::{AdminClient, RemoteStore, RemoteTransport};
use zonepki::protocol::RegistrationToken;
use zonepki::service::{ZoneService, dump};
use zonepki::store::{MemoryStore, Storage, StoreError, Write};

const TIMEOUT: Duration = Duration::from_secs(20);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn store_server() -> (TestServer, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let (ca, chain, key) = own_ca("zone1.test.example");
    let server = TestServer::start(
        Backend::store_only(store.clone(), "admin-secret-token"),
        ca,
        chain,
        &key,
    );
    (server, store)
}

fn url(s: &TestServer) -> ServerUrl {
    s.url.parse().unwrap()
}

#[test]
fn the_pin_bootstrap_trusts_the_pinned_ca_and_refuses_another_fingerprint_n3() {
    let (server, _) = store_server();
    let rt = rt();
    let pin: CaPin = server.pin.parse().unwrap();
    let got = rt
        .block_on(fetch_pinned_ca(
            &url(&server),
            &pin,
            Timestamp::now_utc(),
            TIMEOUT,
        ))
        .unwrap();
    assert_eq!(got.len(), 1);
    assert!(pin.matches(&got[0]));

    // Another CA's fingerprint: refused, saying what to check.
    let (other_ca, _, _) = own_ca("elsewhere.example");
    let wrong = CaPin::of(&other_ca);
    let e = rt
        .block_on(fetch_pinned_ca(
            &url(&server),
            &wrong,
            Timestamp::now_utc(),
            TIMEOUT,
        ))
        .unwrap_err();
    assert!(matches!(e, ClientError::PinMismatch { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(&wrong.to_string()), "{text}");
    assert!(text.contains("ca show --json"), "{text}");
    assert!(!e.is_retryable());
}

#[test]
fn a_member_trusting_another_zone_refuses_the_server_n3() {
    let (server, _) = store_server();
    let rt = rt();
    // The right anchors: the server (named by its IP address) is accepted.
    let pin: CaPin = server.pin.parse().unwrap();
    let anchors = rt
        .block_on(fetch_pinned_ca(
            &url(&server),
            &pin,
            Timestamp::now_utc(),
            TIMEOUT,
        ))
        .unwrap();
    let ok = HttpsClient::new(url(&server), agent_tls_config(&anchors, None).unwrap());
    rt.block_on(ok.get(zonepki::net::api::path::CA, 1 << 20))
        .unwrap();
    // Another zone's CA: the handshake fails as untrusted, not as a network failure.
    let (other_ca, _, _) = own_ca("elsewhere.example");
    let bad = HttpsClient::new(url(&server), agent_tls_config(&[other_ca], None).unwrap());
    let e = rt
        .block_on(bad.get(zonepki::net::api::path::CA, 1 << 20))
        .unwrap_err();
    assert!(matches!(e, ClientError::Untrusted { .. }), "{e:?}");
    assert!(!e.is_retryable());
}

#[test]
fn an_answer_over_the_limit_is_not_read() {
    let (server, _) = store_server();
    let rt = rt();
    let pin: CaPin = server.pin.parse().unwrap();
    let anchors = rt
        .block_on(fetch_pinned_ca(
            &url(&server),
            &pin,
            Timestamp::now_utc(),
            TIMEOUT,
        ))
        .unwrap();
    let c = HttpsClient::new(url(&server), agent_tls_config(&anchors, None).unwrap());
    let e = rt
        .block_on(c.get(zonepki::net::api::path::CA, 100))
        .unwrap_err();
    assert!(
        matches!(e, ClientError::TooLarge { limit: 100, .. }),
        "{e:?}"
    );
}

fn admin(server: &TestServer, token: &str) -> Arc<AdminClient> {
    AdminClient::connect(
        url(server),
        &server.pin.parse().unwrap(),
        BearerToken::new(token),
        TIMEOUT,
    )
    .unwrap()
}

#[test]
fn remote_scans_read_past_the_server_page_cap() {
    let (server, local) = store_server();
    let n = zonepki::net::api::MAX_SCAN_LIMIT + 904;
    let writes: Vec<Write> = (0..n)
        .map(|i| Write::create(format!("k/{i:06}"), *b"v"))
        .collect();
    local.commit(&writes).unwrap();
    let remote = RemoteStore::new(admin(&server, "admin-secret-token"));
    let page = remote.scan("k/", None, n + 10).unwrap();
    assert_eq!(page.len(), n);
    assert_eq!(page[n - 1].0, format!("k/{:06}", n - 1));
    let page = remote.scan("k/", Some("k/000009"), 20).unwrap();
    assert_eq!(page.len(), 20);
    assert_eq!(page[0].0, "k/000010");
    assert_eq!(remote.scan_all("k/").unwrap().len(), n);
}

#[test]
fn a_wrong_admin_token_is_a_backend_error_that_names_the_server() {
    let (server, local) = store_server();
    local.commit(&[Write::create("a", *b"1")]).unwrap();
    let remote = RemoteStore::new(admin(&server, "not-the-token"));
    let e = remote.get("a").unwrap_err();
    assert!(matches!(e, StoreError::Backend { .. }), "{e:?}");
    assert!(!e.is_retryable());
    let text = e.to_string();
    assert!(text.contains(&server.url), "{text}");
    assert!(text.contains("401"), "{text}");
    assert!(!text.contains("not-the-token"), "{text}");
}

#[test]
fn a_store_on_a_server_that_is_gone_is_a_retryable_backend_error() {
    let (server, _) = store_server();
    let remote = RemoteStore::new(admin(&server, "admin-secret-token"));
    remote.get("x").unwrap();
    drop(server);
    let e = remote.get("x").unwrap_err();
    assert!(matches!(e, StoreError::Backend { .. }), "{e:?}");
    assert!(e.is_retryable(), "{e}");
}

fn token(z: &LiveZone, name: &str) -> RegistrationToken {
    z.sim
        .svc
        .issue_tokens(&[name.to_string()], Duration::from_secs(3600))
        .unwrap()
        .pop()
        .unwrap()
        .1
}

fn enroll(
    z: &LiveZone,
    name: &str,
    token: RegistrationToken,
    dir: &std::path::Path,
) -> Result<agent_net::Enrolled, AgentRunError> {
    rt().block_on(agent_net::enroll(
        &url(&z.server),
        name,
        token,
        &z.server.pin.parse().unwrap(),
        dir,
        KeySpec::P256,
        AgentOptions::default(),
    ))
}

#[test]
fn a_device_enrols_with_its_own_key_then_polls_over_mutual_tls_n3_s1() {
    let z = live_zone(2);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev-1");
    let t = token(&z, "dev-1");
    let got = enroll(&z, "dev-1", t.clone(), &dir).unwrap();
    assert_eq!(got.name, "dev-1");

    // The fleet layout: the credential, its key (0600) and the trust, and the config.
    for f in [
        "current/cert.pem",
        "current/key.pem",
        "current/trust.pem",
        CONFIG_FILE,
    ] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    assert!(dir.join("remint-repo").is_dir());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("current/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // S1: the key in the directory is the one the credential certifies; the zone never had it.
    let agent = MemberDir::single(&dir).load("dev-1").unwrap();
    let leaf = zonepki::cert::Certificate::try_from(&agent.chain()[0]).unwrap();
    assert_eq!(&agent.key().unwrap().public_key_info(), leaf.public_key());
    assert_eq!(leaf.common_name().as_deref(), Some("dev-1"));
    let dumped = serde_json::to_string(&dump(z.sim.svc.store()).unwrap()).unwrap();
    let key_pem = agent.key().unwrap().to_pkcs8_pem();
    let key_body: String = key_pem.lines().nth(1).unwrap().to_string();
    assert!(!dumped.contains(&key_body));

    // A refresh polls over mutual TLS as dev-1 and is answered.
    let r = rt()
        .block_on(agent_net::refresh(
            &dir,
            Timestamp::now_utc(),
            AgentOptions::default(),
        ))
        .unwrap();
    assert!(r.exchanges >= 1);
    assert!(!r.renewed);
    assert_eq!(r.clock_skew_secs, None);

    // The used token enrols nothing elsewhere: refused by the zone, nothing saved.
    let other = tmp.path().join("again");
    let e = enroll(&z, "dev-1", t.clone(), &other).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(
            &e,
            AgentRunError::Client(ClientError::Refused { status: 403, .. })
        ),
        "{e:?}"
    );
    assert!(text.contains("already used"), "{text}");
    assert!(!text.contains(t.as_str()), "{text}");
    assert!(!other.join(CONFIG_FILE).exists());
    assert!(!other.join("current/key.pem").exists());

    // The directory is not enrolled again (nothing overwritten), even with a fresh token.
    let before = std::fs::read(dir.join("current/key.pem")).unwrap();
    let e = enroll(&z, "dev-1", token(&z, "dev-1"), &dir).unwrap_err();
    assert!(matches!(e, AgentRunError::AlreadyEnrolled { .. }), "{e:?}");
    assert_eq!(std::fs::read(dir.join("current/key.pem")).unwrap(), before);
}

#[test]
fn refresh_of_a_directory_without_an_enrolled_member_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let e = rt()
        .block_on(agent_net::refresh(
            tmp.path(),
            Timestamp::now_utc(),
            AgentOptions::default(),
        ))
        .unwrap_err();
    assert!(matches!(e, AgentRunError::NotEnrolled { .. }), "{e:?}");
    assert!(e.to_string().contains("enrol first"), "{e}");
}

#[test]
fn a_device_renews_its_credential_before_it_expires_s1() {
    let z = live_zone(1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    enroll(&z, "dev-1", token(&z, "dev-1"), &dir).unwrap();
    let agent = MemberDir::single(&dir).load("dev-1").unwrap();
    let now = Timestamp::now_utc();
    assert!(!needs_renewal(&agent, now));
    // Within 30 days of its end, it is due.
    let leaf = zonepki::cert::Certificate::try_from(&agent.chain()[0]).unwrap();
    assert!(needs_renewal(
        &agent,
        leaf.not_after().minus(Duration::from_secs(86400))
    ));
    // A refresh at that time renews it with a new key made here (S1).
    let old_key = agent.key().unwrap().public_key_info();
    let r = rt().block_on(agent_net::refresh(
        &dir,
        leaf.not_after().minus(Duration::from_secs(20 * 86400)),
        AgentOptions::default(),
    ));
    // The zone finds the agent's clock far ahead (N5) but answers; the renewal follows.
    let r = r.unwrap();
    assert!(r.renewed);
    assert!(r.clock_skew_secs.is_some_and(|s| s > 0));
    let agent = MemberDir::single(&dir).load("dev-1").unwrap();
    assert_ne!(agent.key().unwrap().public_key_info(), old_key);
    let leaf = zonepki::cert::Certificate::try_from(&agent.chain()[0]).unwrap();
    assert_eq!(&agent.key().unwrap().public_key_info(), leaf.public_key());
}

#[test]
fn a_zone_service_runs_against_the_servers_store_through_the_admin_api() {
    let z = live_zone(2);
    let client = admin(&z.server, "admin-secret-token");
    let remote = ZoneService::new(
        RemoteStore::new(Arc::clone(&client)),
        RemoteTransport::new(client),
        SystemClock,
    );
    // Reads see the zone; a command commits to the server's store (the token goes there).
    assert_eq!(
        remote.ca_certificate().unwrap(),
        z.sim.svc.ca_certificate().unwrap()
    );
    let before = dump(z.sim.svc.store()).unwrap();
    let tokens = remote
        .issue_tokens(&["dev-2".to_string()], Duration::from_secs(3600))
        .unwrap();
    assert_eq!(tokens.len(), 1);
    assert_ne!(dump(z.sim.svc.store()).unwrap(), before);
    // A refusal through the remote store changes nothing there.
    let before = dump(z.sim.svc.store()).unwrap();
    let e = remote
        .issue_tokens(&["nobody".to_string()], Duration::from_secs(3600))
        .unwrap_err();
    assert!(e.to_string().contains("nobody"), "{e}");
    assert_eq!(dump(z.sim.svc.store()).unwrap(), before);
    // The token issued remotely enrols a device.
    let tmp = tempfile::tempdir().unwrap();
    enroll(&z, "dev-2", tokens[0].1.clone(), tmp.path()).unwrap();
}

#[test]
fn a_device_stages_over_https_and_switches_by_its_own_clock_with_the_server_down_n5() {
    let LiveZone { sim, server } = live_zone(1);
    sim.svc
        .add_devices(&["laptop-1".to_string()], "24.4")
        .unwrap();
    let t = sim
        .svc
        .issue_tokens(&["laptop-1".to_string()], Duration::from_secs(3600))
        .unwrap()
        .pop()
        .unwrap()
        .1;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("laptop-1");
    rt().block_on(agent_net::enroll(
        &url(&server),
        "laptop-1",
        t,
        &server.pin.parse().unwrap(),
        &dir,
        KeySpec::P256,
        AgentOptions::default(),
    ))
    .unwrap();

    // A Remint CA: the in-process members go through it, laptop-1 polls over HTTPS.
    let activation = Timestamp::now_utc().plus(Duration::from_secs(3600));
    let mut req = sim::remint_ca("2027-01-08T00:00:00Z");
    req.activation = zonepki::ops::ActivationRequest::At(activation);
    sim.svc.start_remint_ca(req).unwrap();
    let away = zonepki::transport::RefreshOptions::new().offline(["laptop-1"]);
    sim.drive(&away);
    for _ in 0..4 {
        rt().block_on(agent_net::refresh(
            &dir,
            Timestamp::now_utc(),
            AgentOptions::default(),
        ))
        .unwrap();
        if agent_net::poll_timeout(&dir).unwrap().is_some() {
            break;
        }
    }
    assert_eq!(agent_net::poll_timeout(&dir).unwrap(), Some(activation));
    let staged_trust = MemberDir::single(&dir)
        .load("laptop-1")
        .unwrap()
        .staged()
        .unwrap()
        .trust_after
        .clone();

    // The zone server goes away. Before the activation time, nothing switches.
    drop(server);
    let e = rt()
        .block_on(agent_net::refresh(
            &dir,
            activation.minus(Duration::from_secs(1)),
            AgentOptions::default(),
        ))
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert_eq!(agent_net::poll_timeout(&dir).unwrap(), Some(activation));

    // At the activation time by its own clock, the refresh switches first and keeps the switch,
    // though no server answers (N5, A2).
    let e = rt()
        .block_on(agent_net::refresh(
            &dir,
            activation.plus(Duration::from_secs(1)),
            AgentOptions::default(),
        ))
        .unwrap_err();
    assert!(
        matches!(e, AgentRunError::Client(ClientError::Unreachable { .. })),
        "{e:?}"
    );
    let agent = MemberDir::single(&dir).load("laptop-1").unwrap();
    assert!(agent.staged().is_none());
    assert_eq!(agent.trust(), &staged_trust[..]);
    assert_eq!(agent_net::poll_timeout(&dir).unwrap(), None);
}

#[test]
fn an_enrolment_a_kill_interrupted_before_the_credential_was_saved_enrols_again() {
    let z = live_zone(1);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("dev-1");
    std::fs::create_dir(&dir).unwrap();
    // What a kill between the configuration and the credential leaves.
    std::fs::write(
        dir.join(CONFIG_FILE),
        format!(
            r#"{{"v": 1, "server": "{}", "name": "dev-1"}}"#,
            z.server.url
        ),
    )
    .unwrap();
    let e = rt()
        .block_on(agent_net::refresh(
            &dir,
            Timestamp::now_utc(),
            AgentOptions::default(),
        ))
        .unwrap_err();
    assert!(matches!(e, AgentRunError::NotEnrolled { .. }), "{e:?}");
    enroll(&z, "dev-1", token(&z, "dev-1"), &dir).unwrap();
    rt().block_on(agent_net::refresh(
        &dir,
        Timestamp::now_utc(),
        AgentOptions::default(),
    ))
    .unwrap();
}

#[test]
fn a_remote_store_works_from_inside_another_runtime_and_from_plain_threads() {
    let (server, local) = store_server();
    local.commit(&[Write::create("a", *b"1")]).unwrap();
    let remote = Arc::new(RemoteStore::new(admin(&server, "admin-secret-token")));
    // Called from a task of another runtime (a frontend that is itself async): it must not
    // block that runtime's thread into a panic.
    let r = Arc::clone(&remote);
    let got = rt().block_on(async move { r.get("a").unwrap() });
    assert_eq!(got.unwrap().value, b"1");
    // And from threads that are in no runtime at all.
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let r = Arc::clone(&remote);
            std::thread::spawn(move || {
                r.commit(&[Write::create(format!("t{i}"), *b"x")]).unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(local.scan_all("t").unwrap().len(), 4);
    // Dropping it inside a runtime is fine too.
    rt().block_on(async move { drop(remote) });
}
