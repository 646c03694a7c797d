//! zoned's HTTPS server in process (issue 11 items 1, 3, 4; N1-N4, N7, B1, B7): a zone made
//! by the in-process simulation, served by `net::server::ZoneServer` on 127.0.0.1:0 inside a
//! tokio runtime, and driven by rustls clients built here (and `openssl s_client`). Every
//! refusal is checked to be answered with its status and an `ApiError`, audited, and to leave
//! the store otherwise unchanged. Every wait is bounded.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/sim.rs"]
mod sim;
#[path = "common/tls.rs"]
mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore};
use sim::{Sim, Spec};
use zonepki::cert::{Certificate, CertificateDer};
use zonepki::clock::Timestamp;
use zonepki::csr::{CsrRequest, CsrSubject, build_csr};
use zonepki::key::{KeySpec, PrivateKey};
use zonepki::net::api::{self, ApiError, path};
use zonepki::net::server::{AdminToken, Limits, ServerHandle, ZoneServer};
use zonepki::net::tls::{provider, to_rustls};
use zonepki::ops::ActivationRequest;
use zonepki::protocol::{
    self, AgentMessage, AgentState, EnrollRequest, Enrolment, RegistrationToken, ZoneAnswer,
};
use zonepki::service::dump;
use zonepki::store::{MemoryStore, Storage};
use zonepki::transport::{LoopbackTransport, RefreshOptions};

type Store = Arc<MemoryStore>;

/// The zone server's FQDN: `localhost`, so `openssl s_client -verify_hostname` can check it.
const SERVER: &str = "localhost";
const ADMIN: &str = "an-admin-token-for-tests-0123456789";

/// A zone (CA on `localhost`, dev-1..dev-N) in a shared memory store, with its fleet on disk.
struct Zone {
    dir: tempfile::TempDir,
    store: Store,
    sim: Sim<Store>,
}

fn zone(devices: usize) -> Zone {
    let dir = tempfile::tempdir().unwrap();
    let store: Store = Arc::new(MemoryStore::new());
    let spec = Spec {
        ca_server: SERVER.into(),
        devices,
        start: Timestamp::now_utc(),
        bridges: true,
    };
    let sim = Sim::build(
        store.clone(),
        LoopbackTransport::with_root(dir.path().join("fleet")),
        spec,
    );
    Zone { dir, store, sim }
}

impl Zone {
    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("fleet").join(SERVER)
    }

    fn ca(&self) -> CertificateDer {
        self.sim.svc.zone().unwrap().ca_certificate
    }
}

/// A server running on its own runtime; stopped (gracefully) on drop.
struct Running {
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<()>>,
    addr: SocketAddr,
    handle: ServerHandle<Store>,
}

impl Running {
    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.join.take() {
            self.rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(30), join).await })
                .expect("the server stops within 30 s")
                .unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start(z: &Zone, limits: Limits) -> Running {
    let server = ZoneServer::builder(z.store.clone(), SERVER, z.state_dir())
        .admin_token(AdminToken::parse(ADMIN).unwrap())
        .limits(limits)
        .build()
        .unwrap();
    let addr = server.local_addr();
    let handle = server.handle();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let join = rt.spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Running {
        rt,
        stop: Some(stop),
        join: Some(join),
        addr,
        handle,
    }
}

fn roots(trust: &[CertificateDer]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for c in trust {
        roots.add(to_rustls(c)).unwrap();
    }
    roots
}

/// A client trusting `trust`, with a client credential when given.
fn client(
    trust: &[CertificateDer],
    identity: Option<(&[CertificateDer], &PrivateKey)>,
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(trust));
    Arc::new(match identity {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => builder
            .with_client_auth_cert(
                chain.iter().map(to_rustls).collect(),
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_pkcs8_der().to_vec())),
            )
            .unwrap(),
    })
}

fn connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let conn =
        rustls::ClientConnection::new(config, ServerName::try_from(SERVER).unwrap()).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// One HTTP/1.1 request on a new connection: the status and the body, or the I/O error (a
/// handshake the server refused).
fn request(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = connect(addr, config);
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {SERVER}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => return Err(e),
    }
    Ok(parse_response(&out))
}

fn parse_response(raw: &[u8]) -> (u16, Vec<u8>) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw[end + 4..].to_vec())
}

fn api_error(body: &[u8]) -> ApiError {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not an ApiError ({e}): {}", String::from_utf8_lossy(body)))
}

/// The store without the audit log: what a refusal must leave unchanged.
fn state(store: &Store) -> serde_json::Value {
    let mut d = dump(store.as_ref()).unwrap();
    d.as_object_mut()
        .unwrap()
        .retain(|k, _| !k.starts_with("audit/"));
    d
}

/// [`state`] once it stopped moving: zoned's own agent and scheduled work commit beside the
/// test (its first rounds after a start, a wake after an enrolment), so a reference taken
/// while one of those commits is pending would blame a refusal for it. Two reads 500 ms
/// apart must agree (bounded: 20 s).
fn settled_state(store: &Store) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = state(store);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = state(store);
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "zoned's state kept moving for 20 s"
        );
        last = now;
    }
}

/// The audit entries `refused`, oldest first.
fn refusals(store: &Store) -> Vec<serde_json::Value> {
    let d = dump(store.as_ref()).unwrap();
    d.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("audit/") && *k != "audit/head")
        .filter(|(_, v)| v["value"]["event"] == "refused")
        .map(|(_, v)| v["value"]["detail"].clone())
        .collect()
}

/// Waits (bounded) until the audit log holds `n` refusals; returns them.
fn wait_for_refusals(store: &Store, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = refusals(store);
        if r.len() >= n {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{n} refusals expected within 20 s, got {r:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A device's own key and a CSR for it (S1).
fn key_and_csr(name: &str) -> (PrivateKey, Vec<u8>) {
    let key = PrivateKey::generate(KeySpec::P256).unwrap();
    let csr = build_csr(
        &CsrRequest {
            subject: CsrSubject::cn(name),
            dns_names: Vec::new(),
        },
        &key,
    )
    .unwrap();
    (key, csr.as_bytes().to_vec())
}

/// Runs a command in process beside a running zoned on the same store: zoned's own agent and
/// scheduler commit too, so a command may lose the race (B6, retryable) and is run again, as a
/// frontend would, at most 8 times.
fn retried<T>(mut command: impl FnMut() -> zonepki::Result<T>) -> T {
    for _ in 0..8 {
        match command() {
            Ok(v) => return v,
            Err(e) if e.is_retryable() => continue,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("the command lost the race to zoned 8 times")
}

fn token(sim: &Sim<Store>, name: &str) -> RegistrationToken {
    retried(|| {
        sim.svc
            .issue_tokens(&[name.to_string()], Duration::from_secs(3600))
    })
    .pop()
    .unwrap()
    .1
}

/// Enrols `name` over HTTPS (`/v1/enroll`, no client certificate): its credential and key.
fn enroll(r: &Running, z: &Zone, name: &str) -> (Enrolment, PrivateKey) {
    let (key, csr) = key_and_csr(name);
    let body = protocol::encode(&EnrollRequest::new(name, token(&z.sim, name), csr));
    let (status, body) = request(
        r.addr,
        client(&[z.ca()], None),
        "POST",
        path::ENROLL,
        &[],
        &body,
    )
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    (protocol::decode_enrolment(&body).unwrap(), key)
}

fn poll_body(member: &str) -> Vec<u8> {
    protocol::encode(&AgentMessage::new(
        member,
        Timestamp::now_utc(),
        AgentState::default(),
    ))
}

#[test]
fn a_device_enrols_and_polls_over_mutual_tls_n3() {
    let z = zone(2);
    let r = start(&z, Limits::default());
    let (enrolment, key) = enroll(&r, &z, "dev-1");
    let me = client(&enrolment.trust, Some((&enrolment.chain, &key)));
    let (status, body) = request(r.addr, me, "POST", path::POLL, &[], &poll_body("dev-1")).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let answer: ZoneAnswer = protocol::decode_zone_answer(&body).unwrap();
    assert_eq!(answer.v, protocol::VERSION);
    // The poll went through a group commit.
    assert!(r.handle.metrics().batches().0 >= 1);
    // The CA certificates are open to anyone.
    let (status, body) =
        request(r.addr, client(&[z.ca()], None), "GET", path::CA, &[], b"").unwrap();
    assert_eq!(status, 200);
    let cas: api::CaResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(cas.certificates[0], z.ca());
}

#[test]
fn a_poll_without_a_client_certificate_is_401_and_audited() {
    let z = zone(1);
    let r = start(&z, Limits::default());
    let before = settled_state(&z.store);
    let (status, body) = request(
        r.addr,
        client(&[z.ca()], None),
        "POST",
        path::POLL,
        &[],
        &poll_body("dev-1"),
    )
    .unwrap();
    assert_eq!(status, 401);
    assert_eq!(api_error(&body).kind, "unauthenticated");
    let audited = wait_for_refusals(&z.store, 1);
    assert_eq!(audited[0]["what"], "poll");
    assert!(
        audited[0]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(state(&z.store), before);
}

#[test]
fn a_client_certificate_from_another_zone_is_refused_in_the_handshake_and_audited() {
    let z = zone(1);
    // Another zone, with its own CA, enrols its own dev-1.
    let other = Sim::build(
        Arc::new(MemoryStore::new()),
        LoopbackTransport::in_memory(),
        Spec {
            ca_server: SERVER.into(),
            devices: 1,
            start: Timestamp::now_utc(),
            bridges: true,
        },
    );
    let (key, csr) = key_and_csr("dev-1");
    let foreign = other
        .svc
        .enroll(&EnrollRequest::new("dev-1", token(&other, "dev-1"), csr))
        .unwrap();
    let r = start(&z, Limits::default());
    let before = settled_state(&z.store);
    let result = request(
        r.addr,
        client(&[z.ca()], Some((&foreign.chain, &key))),
        "POST",
        path::POLL,
        &[],
        &poll_body("dev-1"),
    );
    assert!(result.is_err(), "the handshake must fail: {result:?}");
    let audited = wait_for_refusals(&z.store, 1);
    assert_eq!(audited[0]["what"], "tls");
    assert_eq!(audited[0]["claimed"], "dev-1");
    assert!(
        audited[0]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(state(&z.store), before);
    assert!(
        r.handle
            .metrics()
            .handshake_failures
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

#[test]
fn a_member_speaking_for_another_is_403_audited_and_changes_nothing_n3() {
    let z = zone(2);
    let r = start(&z, Limits::default());
    let (enrolment, key) = enroll(&r, &z, "dev-1");
    let before = settled_state(&z.store);
    let me = client(&enrolment.trust, Some((&enrolment.chain, &key)));
    let (status, body) = request(r.addr, me, "POST", path::POLL, &[], &poll_body("dev-2")).unwrap();
    assert_eq!(status, 403);
    let e = api_error(&body);
    assert_eq!(e.kind, "forbidden");
    assert!(e.message.contains("dev-2"), "{}", e.message);
    let audited = wait_for_refusals(&z.store, 1);
    assert_eq!(audited[0]["what"], "poll");
    assert_eq!(audited[0]["claimed"], "dev-2");
    assert_eq!(state(&z.store), before);
}

#[test]
fn garbage_oversized_and_unknown_versions_are_refused_and_audited_n2() {
    let z = zone(1);
    let r = start(&z, Limits::default());
    let (enrolment, key) = enroll(&r, &z, "dev-1");
    let me = client(&enrolment.trust, Some((&enrolment.chain, &key)));
    let before = settled_state(&z.store);
    let (status, body) =
        request(r.addr, me.clone(), "POST", path::POLL, &[], b"\x00garbage{").unwrap();
    assert_eq!(status, 400);
    assert_eq!(api_error(&body).kind, "malformed");
    let mut v: serde_json::Value = serde_json::from_slice(&poll_body("dev-1")).unwrap();
    v["v"] = 2.into();
    let (status, body) = request(
        r.addr,
        me.clone(),
        "POST",
        path::POLL,
        &[],
        &serde_json::to_vec(&v).unwrap(),
    )
    .unwrap();
    assert_eq!(status, 400);
    assert!(api_error(&body).message.contains("version 2"));
    // Oversized: the declared length is refused before the body is sent, let alone read.
    let mut s = connect(r.addr, me);
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {SERVER}\r\nContent-Length: {}\r\n\r\n{{",
        path::POLL,
        api::MAX_AGENT_BODY + 1
    );
    s.write_all(head.as_bytes()).unwrap();
    s.flush().unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let (status, body) = parse_response(&out);
    assert_eq!(status, 413);
    assert_eq!(api_error(&body).kind, "too_large");
    // A head far larger than a connection's buffer (32 KiB; hyper's default is ~400 KiB):
    // 431, the connection closed.
    // The server may answer and close while the client is still writing the head: then the
    // write fails (broken pipe, reset) and the answer may be lost with the connection; either
    // way the head was refused and the connection closed.
    let long = "x".repeat(200 * 1024);
    let mut s = connect(r.addr, client(&[z.ca()], None));
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: {SERVER}\r\nX-Long: {long}\r\n\r\n",
        path::HEALTHZ
    );
    let wrote = s.write_all(head.as_bytes()).and_then(|()| s.flush());
    let mut out = Vec::new();
    let read = s.read_to_end(&mut out);
    if out.is_empty() {
        assert!(
            wrote.is_err() || read.is_err(),
            "the long head was neither answered nor cut off: {wrote:?} {read:?}"
        );
    } else {
        assert_eq!(parse_response(&out).0, 431);
    }
    let audited = wait_for_refusals(&z.store, 3);
    assert!(
        audited
            .iter()
            .all(|a| a["what"] == "poll" && a["claimed"] == "dev-1")
    );
    assert_eq!(state(&z.store), before);
}

#[test]
fn connections_that_never_finish_are_closed_within_the_timeout() {
    let z = zone(1);
    let r = start(
        &z,
        Limits::default().with_timeouts(Duration::from_millis(500)),
    );
    // Half a request's headers after the handshake.
    let mut s = connect(r.addr, client(&[z.ca()], None));
    s.write_all(b"POST /v1/poll HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    s.flush().unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let read = s.read_to_end(&mut out);
    // Closed by the server (EOF, or a 408 then EOF), long before the client's 30 s timeout.
    assert!(
        !matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "{read:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // A TCP connection that never starts its handshake.
    let mut tcp = TcpStream::connect(r.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut buf = [0u8; 16];
    let n = tcp.read(&mut buf);
    assert!(
        matches!(n, Ok(0))
            || matches!(&n, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "{n:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while r
        .handle
        .metrics()
        .handshake_timeouts
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the handshake timeout was not counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn admin(
    r: &Running,
    z: &Zone,
    target: &str,
    token: Option<&str>,
    body: &impl serde::Serialize,
) -> (u16, Vec<u8>) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    request(
        r.addr,
        client(&[z.ca()], None),
        "POST",
        target,
        &headers,
        &serde_json::to_vec(body).unwrap(),
    )
    .unwrap()
}

#[test]
fn the_admin_api_needs_the_token_and_round_trips_store_calls() {
    let z = zone(1);
    let r = start(&z, Limits::default());
    let before = settled_state(&z.store);
    let get = api::GetRequest { key: "zone".into() };
    for token in [None, Some("a-wrong-token-of-some-length")] {
        let (status, body) = admin(&r, &z, path::ADMIN_GET, token, &get);
        assert_eq!(status, 401);
        assert_eq!(api_error(&body).kind, "unauthenticated");
    }
    let audited = wait_for_refusals(&z.store, 2);
    assert!(audited.iter().all(|a| a["what"] == "admin"));
    assert_eq!(state(&z.store), before);

    let (status, body) = admin(&r, &z, path::ADMIN_GET, Some(ADMIN), &get);
    assert_eq!(status, 200);
    let got: api::GetResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        got.record.unwrap().value,
        z.store.get("zone").unwrap().unwrap().value
    );
    let commit = api::CommitRequest {
        writes: vec![api::WireWrite {
            key: "test/a".into(),
            expect: api::WireExpect::Absent,
            value: Some(b"one".to_vec()),
        }],
    };
    let (status, body) = admin(&r, &z, path::ADMIN_COMMIT, Some(ADMIN), &commit);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let committed: api::CommitResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(committed.versions.len(), 1);
    // The same commit again: its precondition fails, as a local store's would (B6).
    let (status, body) = admin(&r, &z, path::ADMIN_COMMIT, Some(ADMIN), &commit);
    assert_eq!(status, 409);
    assert!(matches!(
        api_error(&body).store,
        Some(api::WireStoreError::Conflict { .. })
    ));
    let scan = api::ScanRequest {
        prefix: "test/".into(),
        after: None,
        limit: 10,
    };
    let (status, body) = admin(&r, &z, path::ADMIN_SCAN, Some(ADMIN), &scan);
    assert_eq!(status, 200);
    let page: api::ScanResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].0, "test/a");
    assert_eq!(page.records[0].1.value, b"one");
    let (status, body) = admin(
        &r,
        &z,
        path::ADMIN_LAST,
        Some(ADMIN),
        &api::LastRequest {
            prefix: "test/".into(),
        },
    );
    assert_eq!(status, 200);
    let last: api::LastResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(last.record.unwrap().0, "test/a");
    // A call to the server's own agent, and to a member it cannot reach.
    let call = |member: &str| {
        let body = format!("{{\"member\":\"{member}\",\"request\":{{\"call\":\"ping\"}}}}");
        let (status, body) = request(
            r.addr,
            client(&[z.ca()], None),
            "POST",
            path::ADMIN_CALL,
            &[("Authorization", &format!("Bearer {ADMIN}"))],
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<api::CallResponse>(&body).unwrap()
    };
    assert!(matches!(call(SERVER), api::CallResponse::Answer(_)));
    assert!(matches!(call("dev-1"), api::CallResponse::Unreachable(_)));
}

/// The Prometheus text format: `# HELP`/`# TYPE` lines and `name{labels} value` samples.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "bad comment line: {line}"
            );
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let metric = name.split('{').next().unwrap();
        assert!(
            metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        if let Some(labels) = name.strip_prefix(metric) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
        samples.push((name.to_string(), value));
    }
    samples
}

#[test]
fn metrics_health_and_readiness_n7() {
    let z = zone(3);
    let r = start(&z, Limits::default());
    let open = client(&[z.ca()], None);
    let (status, _) = request(r.addr, open.clone(), "GET", path::HEALTHZ, &[], b"").unwrap();
    assert_eq!(status, 200);
    let (status, _) = request(r.addr, open.clone(), "GET", path::READYZ, &[], b"").unwrap();
    assert_eq!(status, 200);
    let (status, body) = request(r.addr, open.clone(), "GET", path::METRICS, &[], b"").unwrap();
    assert_eq!(status, 200);
    let samples = parse_prometheus(std::str::from_utf8(&body).unwrap());
    let value = |name: &str| {
        samples
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .1
    };
    // localhost, ps2, sat1, content1 and three devices.
    assert_eq!(value("zoned_members"), 7.0);
    assert_eq!(value("zoned_operation_running"), 0.0);
    assert!(value("zoned_requests_total{path=\"/healthz\",status=\"200\"}") >= 1.0);
    for name in [
        "zoned_poll_batch_size_count",
        "zoned_refusals_audited_total",
        "zoned_refusals_suppressed_total",
        "zoned_connections_open",
        "zoned_tls_chains_served_total{chain=\"full\"}",
    ] {
        value(name);
    }
    // An operation shows in the gauges. It is started while zoned is stopped: the simulation's
    // agents and zoned's own agent must not write the same member directory at once.
    drop(r);
    let activation = Timestamp::now_utc().plus(Duration::from_secs(3600));
    let mut req = sim::remint_ca("2030-01-01T00:00:00Z");
    req.activation = ActivationRequest::At(activation);
    retried(|| z.sim.svc.start_remint_ca(req.clone()));
    let r = start(&z, Limits::default());
    let (_, body) = request(r.addr, open, "GET", path::METRICS, &[], b"").unwrap();
    let samples = parse_prometheus(std::str::from_utf8(&body).unwrap());
    let value = |name: &str| samples.iter().find(|(n, _)| n == name).map(|s| s.1);
    assert_eq!(value("zoned_operation_running"), Some(1.0));
    let to_go = value("zoned_seconds_to_activation").unwrap();
    assert!((3000.0..=3600.0).contains(&to_go), "{to_go}");
    assert!(
        samples
            .iter()
            .any(|(n, _)| n.starts_with("zoned_members_by_update_status{")),
        "{samples:?}"
    );
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn openssl_verifies_the_served_chain() {
    common::require("openssl");
    let z = zone(1);
    let r = start(&z, Limits::default());
    let ca = z.dir.path().join("ca.pem");
    std::fs::write(&ca, z.ca().to_pem()).unwrap();
    let (ok, text) = tls::s_client(r.addr.port(), &ca);
    assert!(ok && text.contains("Verification: OK"), "{text}");
}

/// A rustls server verifier that names its anchors in `certificate_authorities` (N4), as an
/// agent's client does.
#[derive(Debug)]
struct Hinting {
    inner: Arc<WebPkiServerVerifier>,
    hints: Vec<DistinguishedName>,
}

impl ServerCertVerifier for Hinting {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        Some(&self.hints)
    }
}

fn hinting_client(trust: &[CertificateDer]) -> Arc<ClientConfig> {
    let roots = Arc::new(roots(trust));
    let hints = roots.subjects();
    let inner = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .unwrap();
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Hinting { inner, hints }))
            .with_no_client_auth(),
    )
}

/// N4, B1 on the wire: after a Remint CA (under a new CA name) the server's chain is
/// `[leaf, bridge]`. A client naming the new CA gets the plain chain; one trusting only the
/// old CA (naming it, or naming nothing) gets the bridge and validates through it.
#[test]
fn after_activation_each_client_gets_a_chain_it_validates_n4_b1() {
    let z = zone(1);
    let old_ca = z.ca();
    let now = z.sim.svc.now();
    let activation = now.plus(Duration::from_secs(3600));
    let mut req = sim::remint_ca("2030-01-01T00:00:00Z");
    req.activation = ActivationRequest::At(activation);
    req.common_name = Some("Sim Zone 2".into());
    retried(|| z.sim.svc.start_remint_ca(req.clone()));
    z.sim.drive(&RefreshOptions::default());
    z.sim.clock.set(activation);
    let v = z.sim.drive(&RefreshOptions::default());
    assert_eq!(v.state.to_string(), "activated");
    let new_ca = z.ca();
    assert_ne!(new_ca, old_ca);
    let served = z.sim.chain(SERVER);
    assert_eq!(served.len(), 2, "leaf and bridge");
    assert_eq!(
        Certificate::try_from(&served[1]).unwrap().issuer(),
        Certificate::try_from(&old_ca).unwrap().subject()
    );
    let r = start(&z, Limits::default());
    let counts = r.handle.tls().resolver().counts();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    // The new CA, named: the plain chain.
    let (status, _) = request(
        r.addr,
        hinting_client(std::slice::from_ref(&new_ca)),
        "GET",
        path::HEALTHZ,
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!((load(&counts.plain), load(&counts.bridged)), (1, 0));
    // Only the old CA, named: the bridge.
    let (status, _) = request(
        r.addr,
        hinting_client(std::slice::from_ref(&old_ca)),
        "GET",
        path::HEALTHZ,
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!((load(&counts.plain), load(&counts.bridged)), (1, 1));
    // Nothing named (a plain webpki client): the bridge, which validates for either CA.
    for trust in [&old_ca, &new_ca] {
        let (status, _) = request(
            r.addr,
            client(std::slice::from_ref(trust), None),
            "GET",
            path::HEALTHZ,
            &[],
            b"",
        )
        .unwrap();
        assert_eq!(status, 200);
    }
    assert_eq!((load(&counts.plain), load(&counts.bridged)), (1, 3));
}

/// A flood of refusals from one peer: the first `refusals_per_peer` are audited, the rest
/// only counted, so the audit log does not grow without bound.
#[test]
fn a_flood_of_refusals_is_audited_up_to_the_rate_and_counted_beyond() {
    let z = zone(1);
    let r = start(&z, Limits::default().with_refusals_per_peer(2));
    let open = client(&[z.ca()], None);
    for _ in 0..6 {
        let (status, _) = request(
            r.addr,
            open.clone(),
            "POST",
            path::POLL,
            &[],
            &poll_body("dev-1"),
        )
        .unwrap();
        assert_eq!(status, 401);
    }
    let suppressed = || {
        r.handle
            .metrics()
            .refusals_suppressed
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while suppressed() < 4 {
        assert!(Instant::now() < deadline, "suppressed: {}", suppressed());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(wait_for_refusals(&z.store, 2).len(), 2);
    assert_eq!(suppressed(), 4);
}

/// Runs one member's agent conversation over HTTPS, as zone-agent does: poll, carry out each
/// instruction, report, until the zone answers nothing. Returns the last answer.
fn converse(addr: SocketAddr, agent: &mut zonepki::agent::Agent) -> ZoneAnswer {
    let key = agent.key().unwrap();
    let config = client(agent.trust(), Some((agent.chain(), key)));
    let now = Timestamp::now_utc();
    let mut message = agent.poll(now);
    for _ in 0..16 {
        let (status, body) = request(
            addr,
            config.clone(),
            "POST",
            path::POLL,
            &[],
            &protocol::encode(&message),
        )
        .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let answer = protocol::decode_zone_answer(&body).unwrap();
        match agent.follow(answer.instruction.clone(), Timestamp::now_utc()) {
            Some(next) => message = next,
            None => return answer,
        }
    }
    panic!("the conversation did not end in 16 messages");
}

/// N5, N6 inside zoned: a Remint CA started while zoned is stopped; the content servers
/// replicate over HTTPS (content1 after enrolling with a token); zoned's own agent (the certificate server) gets
/// its new certificate in process, the scheduled work activates at the activation time, the
/// own agent switches by the clock, and the new chain (with the bridge) is served from then
/// on, without a restart.
#[test]
fn zoned_activates_on_time_and_serves_its_new_chain_n5_n6() {
    let z = zone(0);
    let fleet = zonepki::agent::files::MemberDir::new(z.dir.path().join("fleet"));
    let old_chain = z.sim.chain(SERVER);
    let activation = Timestamp::now_utc().plus(Duration::from_secs(4));
    let mut req = sim::remint_ca("2030-01-01T00:00:00Z");
    req.activation = ActivationRequest::At(activation);
    retried(|| z.sim.svc.start_remint_ca(req.clone()));
    let r = start(&z, Limits::default());
    // Replication (O3): the content server enrols with a token and a key it made (S1), then
    // polls over the wire with its credential.
    let mut content1 = fleet.load(sim::CONTENT1).unwrap();
    let (enrolment, key) = enroll(&r, &z, sim::CONTENT1);
    content1
        .handle(zonepki::agent::AgentRequest::Adopt {
            chain: enrolment.chain,
            key: key.to_pkcs8_der(),
            trust: enrolment.trust,
            now: Timestamp::now_utc(),
        })
        .unwrap();
    let answer = converse(r.addr, &mut content1);
    assert_eq!(answer.standing, zonepki::protocol::Standing::Replicated);
    // ps2, a Primary Server, replicates too (with the server certificate it has).
    let mut ps2 = fleet.load(sim::PS2).unwrap();
    converse(r.addr, &mut ps2);
    fleet.save(&ps2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let served = r.handle.tls().resolver().chain();
        let op = r.handle.service().op().unwrap().unwrap();
        if served != old_chain && op.state.name() == "activated" {
            assert_eq!(served.len(), 2, "leaf and bridge");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "zoned did not activate and switch within 60 s: {} {:?}",
            op.state.name(),
            served.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The member directory on disk holds the new chain too (a restart serves it).
    let on_disk = fleet.load(SERVER).unwrap();
    assert_eq!(
        on_disk.chain(),
        r.handle.tls().resolver().chain().as_slice()
    );
}

/// Reads lines of a child's stdout on a thread, so a test can wait for one with a bound.
fn lines_of(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The zoned example as the contract says: `listening on https://ADDR:PORT` with the real
/// port, `DIR/admin-token` (0600) made on the first start and used by the admin API, a second
/// zoned on the same embedded store refused, `postgres://` refused, SIGTERM → exit 0.
#[test]
fn the_zoned_process_follows_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("zone.redb");
    let fleet = dir.path().join("fleet");
    let ca = {
        let sim = Sim::build(
            zonepki::store::RedbStore::create(&store_path).unwrap(),
            LoopbackTransport::with_root(&fleet),
            Spec {
                ca_server: SERVER.into(),
                devices: 1,
                start: Timestamp::now_utc(),
                bridges: true,
            },
        );
        sim.svc.zone().unwrap().ca_certificate
    };
    let state = fleet.join(SERVER);
    let bin = common::example_bin("zoned");
    let zoned = |store: &str| {
        let mut cmd = std::process::Command::new(&bin);
        cmd.args([
            "--store",
            store,
            "--fqdn",
            SERVER,
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--state")
        .arg(&state)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        cmd
    };
    let refused = zoned("postgres://zone@db/zone").output().unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("error: --store postgres://"));

    let mut child = tls::Running(zoned(store_path.to_str().unwrap()).spawn().unwrap());
    let lines = lines_of(child.0.stdout.take().unwrap());
    let line = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("zoned prints its address within 60 s");
    let addr: SocketAddr = line
        .strip_prefix("listening on https://")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    assert_ne!(addr.port(), 0);
    let token_file = state.join("admin-token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let token = std::fs::read_to_string(&token_file).unwrap();
    let (status, _) = request(
        addr,
        client(std::slice::from_ref(&ca), None),
        "POST",
        path::ADMIN_GET,
        &[("Authorization", &format!("Bearer {}", token.trim()))],
        &serde_json::to_vec(&api::GetRequest { key: "zone".into() }).unwrap(),
    )
    .unwrap();
    assert_eq!(status, 200);

    // One zoned per embedded store.
    let second = zoned(store_path.to_str().unwrap()).output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let text = String::from_utf8_lossy(&second.stderr);
    assert!(
        text.contains("error: --store") && text.contains("already open"),
        "{text}"
    );

    // SIGTERM: a graceful stop, exit 0.
    let pid = i32::try_from(child.0.id()).unwrap();
    assert_eq!(sigterm(pid), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "zoned did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

/// SIGTERM to `pid` through the `kill` command (no unsafe code in the tests).
fn sigterm(pid: i32) -> i32 {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    status.code().unwrap_or(-1)
}

/// zoned serves as a Primary Server of the zone, from that server's own member directory.
#[test]
fn zoned_refuses_a_satellite_and_another_members_directory() {
    let z = zone(0);
    let fleet = z.dir.path().join("fleet");
    let e = ZoneServer::builder(z.store.clone(), sim::SAT1, fleet.join(sim::SAT1))
        .build()
        .unwrap_err();
    assert!(
        matches!(e, zonepki::net::server::ServerError::NotPrimary { .. }),
        "{e}"
    );
    let e = ZoneServer::builder(z.store.clone(), SERVER, fleet.join(sim::PS2))
        .build()
        .unwrap_err();
    assert!(
        matches!(e, zonepki::net::server::ServerError::StateDir { .. }),
        "{e}"
    );
    let e = ZoneServer::builder(
        z.store.clone(),
        "nobody.zone.example",
        fleet.join("nobody.zone.example"),
    )
    .build()
    .unwrap_err();
    assert!(e.to_string().contains("nobody.zone.example"), "{e}");
}

/// N3 over the wire: a token enrols once (its reuse is 403, audited, nothing else changes);
/// a device renews with its credential for a new key it made, and polls with the new one;
/// a renewal without a credential is 401, one for another member 403.
#[test]
fn a_used_token_is_refused_and_a_device_renews_over_mutual_tls() {
    let z = zone(2);
    let r = start(&z, Limits::default());
    let t = token(&z.sim, "dev-1");
    let open = client(&[z.ca()], None);
    let (_, csr) = key_and_csr("dev-1");
    let body = protocol::encode(&EnrollRequest::new("dev-1", t, csr));
    let (status, first) = request(r.addr, open.clone(), "POST", path::ENROLL, &[], &body).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&first));
    let before = settled_state(&z.store);
    let (status, again) = request(r.addr, open.clone(), "POST", path::ENROLL, &[], &body).unwrap();
    assert_eq!(status, 403);
    let e = api_error(&again);
    assert_eq!(e.kind, "refused");
    assert!(e.message.contains("already used"), "{}", e.message);
    let audited = wait_for_refusals(&z.store, 1);
    assert_eq!(audited[0]["what"], "enroll");
    assert_eq!(audited[0]["claimed"], "dev-1");
    assert_eq!(state(&z.store), before);

    let (enrolment, key) = enroll(&r, &z, "dev-2");
    let me = client(&enrolment.trust, Some((&enrolment.chain, &key)));
    let (new_key, csr) = key_and_csr("dev-2");
    let renew = protocol::encode(&protocol::RenewRequest::new("dev-2", csr));
    let (status, _) = request(r.addr, open, "POST", path::RENEW, &[], &renew).unwrap();
    assert_eq!(status, 401);
    let (_, csr1) = key_and_csr("dev-1");
    let (status, _) = request(
        r.addr,
        me.clone(),
        "POST",
        path::RENEW,
        &[],
        &protocol::encode(&protocol::RenewRequest::new("dev-1", csr1)),
    )
    .unwrap();
    assert_eq!(status, 403);
    let (status, body) = request(r.addr, me, "POST", path::RENEW, &[], &renew).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let renewed = protocol::decode_enrolment(&body).unwrap();
    assert_ne!(renewed.chain[0], enrolment.chain[0]);
    let me = client(&renewed.trust, Some((&renewed.chain, &new_key)));
    let (status, _) = request(r.addr, me, "POST", path::POLL, &[], &poll_body("dev-2")).unwrap();
    assert_eq!(status, 200);
    wait_for_refusals(&z.store, 3);
}

/// A graceful stop (N7): once the server stops accepting, a request already under way is
/// still answered, and a refusal still queued is audited before `run` returns.
#[test]
fn a_graceful_stop_finishes_requests_and_flushes_refusals() {
    let z = zone(0);
    let mut r = start(&z, Limits::default());
    // A refusal queued just before the stop.
    let (status, _) = request(
        r.addr,
        client(&[z.ca()], None),
        "POST",
        path::POLL,
        &[],
        &poll_body("dev-1"),
    )
    .unwrap();
    assert_eq!(status, 401);
    // An admin request whose body is only half sent.
    let body = serde_json::to_vec(&api::GetRequest { key: "zone".into() }).unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut s = connect(r.addr, client(&[z.ca()], None));
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {SERVER}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Length: {}\r\n\r\n",
        path::ADMIN_GET,
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(first).unwrap();
    s.flush().unwrap();
    // The server reads the request (its handler waits for the rest of the body)...
    let in_flight = || {
        r.handle
            .metrics()
            .requests_in_flight
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while in_flight() == 0 {
        assert!(Instant::now() < deadline, "the request did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ... then stops, and no longer accepts connections (a bounded wait).
    let _ = r.stop.take().unwrap().send(());
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(r.addr).is_ok() {
        assert!(Instant::now() < deadline, "the server still accepts");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.write_all(rest).unwrap();
    s.flush().unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let (status, _) = parse_response(&out);
    assert_eq!(status, 200);
    r.stop();
    // `run` returned: the queued refusal was written before it did.
    assert_eq!(refusals(&z.store).len(), 1);
}
