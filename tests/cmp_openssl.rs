//! CMP in zoned (issue 15; E1, N3) proven with an implementation nobody here wrote: OpenSSL
//! 3.0's `openssl cmp` against `net::server::ZoneServer` on 127.0.0.1 (a zone made by the
//! in-process simulation). Each certificate obtained must pass `openssl verify -x509_strict`
//! against the zone CA; each refusal must be a CMP error with its PKIFailureInfo, audited, with
//! the store otherwise unchanged. Every wait is bounded (openssl's own `-msg_timeout`).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/sim.rs"]
mod sim;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{run, tool};
use sim::{Sim, Spec};
use zonepki::cert::Certificate;
use zonepki::clock::Timestamp;
use zonepki::cmp::asn1::{BodyType, ErrorMsgContent, PkiMessage};
use zonepki::net::server::ZoneServer;
use zonepki::service::dump;
use zonepki::store::MemoryStore;
use zonepki::transport::LoopbackTransport;

type Store = Arc<MemoryStore>;

/// The zone server's FQDN: `localhost`, which the TLS check of `openssl cmp` is given.
const SERVER: &str = "localhost";
const DEVICE: &str = "dev-1";

struct Zone {
    dir: tempfile::TempDir,
    store: Store,
    sim: Sim<Store>,
}

fn zone() -> Zone {
    let dir = tempfile::tempdir().unwrap();
    let store: Store = Arc::new(MemoryStore::new());
    let spec = Spec {
        ca_server: SERVER.into(),
        devices: 2,
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
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The zone CA certificate as a PEM file.
    fn ca_pem(&self) -> PathBuf {
        let p = self.path("zone-ca.pem");
        let ca = self.sim.svc.zone().unwrap().ca_certificate;
        std::fs::write(&p, ca.to_pem()).unwrap();
        p
    }

    /// A registration token for `member`. zoned's own agent may commit at the same time when
    /// it runs: a command that lost that race (B6, retryable) runs again, as a frontend would.
    fn token(&self, member: &str) -> String {
        for _ in 0..8 {
            match self
                .sim
                .svc
                .issue_tokens(&[member.to_string()], Duration::from_secs(3600))
            {
                Ok(mut t) => return t.pop().unwrap().1.as_str().to_string(),
                Err(e) if e.is_retryable() => continue,
                Err(e) => panic!("{e}"),
            }
        }
        panic!("issue_tokens lost the race to zoned 8 times")
    }
}

/// A server on its own runtime; stopped on drop.
struct Running {
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<()>>,
    addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.join.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(30), join).await });
        }
    }
}

fn start(z: &Zone) -> Running {
    let server = ZoneServer::builder(
        z.store.clone(),
        SERVER,
        z.dir.path().join("fleet").join(SERVER),
    )
    .build()
    .unwrap();
    let addr = server.local_addr();
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
    }
}

/// A P-256 key made by openssl (the key stays with the client, S1).
fn new_key(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let (ok, out) = run(tool("openssl").args([
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        p.to_str().unwrap(),
    ]));
    assert!(ok, "{out}");
    p
}

/// `openssl cmp` against the server over TLS (server authentication only), with `args`.
fn cmp(z: &Zone, server: &Running, path: &str, args: &[&str]) -> (bool, String) {
    cmp_trusting(server, &z.ca_pem(), path, args)
}

/// [`cmp`] with the TLS trust anchors in `ca` (a PEM file).
fn cmp_trusting(server: &Running, ca: &Path, path: &str, args: &[&str]) -> (bool, String) {
    let mut cmd: Command = tool("openssl");
    cmd.args([
        "cmp",
        "-server",
        &format!("127.0.0.1:{}", server.addr.port()),
        "-path",
        path,
        "-tls_used",
        "-tls_trusted",
        ca.to_str().unwrap(),
        "-tls_host",
        SERVER,
        "-msg_timeout",
        "30",
        "-total_timeout",
        "60",
    ]);
    cmd.args(args);
    run(&mut cmd)
}

/// The certificate in the PEM file `pem`.
fn der_of(pem: &Path) -> Certificate {
    let der = pem.with_extension("der");
    let (ok, out) = run(tool("openssl").args([
        "x509",
        "-in",
        pem.to_str().unwrap(),
        "-outform",
        "DER",
        "-out",
        der.to_str().unwrap(),
    ]));
    assert!(ok, "{out}");
    Certificate::from_der(&std::fs::read(&der).unwrap()).unwrap()
}

/// `openssl verify -x509_strict` of `cert` against `ca`.
fn verify(ca: &Path, cert: &Path) {
    let (ok, out) = run(tool("openssl").args([
        "verify",
        "-x509_strict",
        "-CAfile",
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]));
    assert!(ok && out.contains(": OK"), "openssl verify: {out}");
}

/// The store without the audit log: what a refusal must leave unchanged.
fn state(store: &Store) -> serde_json::Value {
    let mut d = dump(store.as_ref()).unwrap();
    d.as_object_mut()
        .unwrap()
        .retain(|k, _| !k.starts_with("audit/"));
    d
}

/// The audit entries `refused` (their details).
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

/// Waits (bounded) until the audit log holds `n` refusals with `what` = cmp.
fn wait_for_cmp_refusals(store: &Store, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r: Vec<_> = refusals(store)
            .into_iter()
            .filter(|r| r["what"] == "cmp")
            .collect();
        if r.len() >= n {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{n} cmp refusals expected within 20 s, got {r:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The certificates `member.enroll` audited, in order.
fn enrolments(store: &Store) -> Vec<serde_json::Value> {
    let d = dump(store.as_ref()).unwrap();
    d.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("audit/") && *k != "audit/head")
        .filter(|(_, v)| v["value"]["event"] == "member.enroll")
        .map(|(_, v)| v["value"]["detail"].clone())
        .collect()
}

const IR_PATH: &str = ".well-known/cmp/p/zone/initialization";

fn ir_args<'a>(token: &'a str, key: &'a str, cert_out: &'a str) -> Vec<String> {
    vec![
        "-cmd".into(),
        "ir".into(),
        "-secret".into(),
        format!("pass:{token}"),
        "-ref".into(),
        DEVICE.into(),
        "-newkey".into(),
        key.into(),
        "-subject".into(),
        format!("/CN={DEVICE}"),
        "-certout".into(),
        cert_out.into(),
    ]
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn openssl_cmp_ir_with_the_registration_token_enrols_once() {
    let z = zone();
    let server = start(&z);
    let token = z.token(DEVICE);
    let key = new_key(z.dir.path(), "dev-key.pem");
    let cert = z.path("dev-cert.pem");
    let cacerts = z.path("cacerts.pem");
    let before = enrolments(&z.store).len();
    let mut args = ir_args(&token, key.to_str().unwrap(), cert.to_str().unwrap());
    args.extend(["-cacertsout".into(), cacerts.to_str().unwrap().into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = cmp(&z, &server, IR_PATH, &args);
    assert!(ok, "openssl cmp -cmd ir: {out}");

    // E1: the certificate chains to the zone CA under -x509_strict, names the member, and
    // certifies the key openssl made (S1: the key never left the client).
    let ca = z.ca_pem();
    verify(&ca, &cert);
    let issued = der_of(&cert);
    assert_eq!(issued.common_name().as_deref(), Some(DEVICE));
    let (ok, pubkey) = run(tool("openssl").args(["pkey", "-pubout", "-in", key.to_str().unwrap()]));
    assert!(ok, "{pubkey}");
    let (ok, certkey) =
        run(tool("openssl").args(["x509", "-noout", "-pubkey", "-in", cert.to_str().unwrap()]));
    assert!(ok, "{certkey}");
    assert_eq!(
        pubkey, certkey,
        "the certificate is for the client's own key"
    );
    // caPubs: the zone's CA certificate.
    let cas = std::fs::read_to_string(&cacerts).unwrap();
    assert!(cas.contains("BEGIN CERTIFICATE"), "{cas}");
    // One enrolment audited, the token used up (N3), the transaction confirmed by certConf.
    let after = enrolments(&z.store);
    assert_eq!(after.len(), before + 1, "{after:?}");
    assert_eq!(after.last().unwrap()["via"], "cmp");
    let dumped = dump(z.store.as_ref()).unwrap();
    let txns: Vec<_> = dumped
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("cmp/"))
        .collect();
    assert_eq!(txns.len(), 1, "{txns:?}");
    assert_eq!(txns[0].1["value"]["confirmed"], true, "{txns:?}");

    // The token enrols once: a second ir with it is refused, audited, and changes nothing.
    let unchanged = state(&z.store);
    let cert2 = z.path("dev-cert2.pem");
    let key2 = new_key(z.dir.path(), "dev-key2.pem");
    let args = ir_args(&token, key2.to_str().unwrap(), cert2.to_str().unwrap());
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push("-unprotected_errors");
    let (ok, out) = cmp(&z, &server, IR_PATH, &args);
    assert!(!ok, "a reused token must be refused: {out}");
    assert!(
        out.contains("notAuthorized") || out.contains("not authorized"),
        "{out}"
    );
    assert!(out.contains("already used"), "{out}");
    assert!(!cert2.exists());
    let r = wait_for_cmp_refusals(&z.store, 1);
    assert_eq!(r[0]["claimed"], DEVICE, "{r:?}");
    assert_eq!(state(&z.store), unchanged);
}

/// The `cmp/<transactionID>` records.
fn transactions(store: &Store) -> Vec<serde_json::Value> {
    let d = dump(store.as_ref()).unwrap();
    d.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("cmp/"))
        .map(|(_, v)| v["value"].clone())
        .collect()
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn implicit_confirmation_and_a_repeated_transaction_get_the_same_certificate() {
    let z = zone();
    let server = start(&z);
    let token = z.token(DEVICE);
    let key = new_key(z.dir.path(), "dev-key.pem");
    let cert = z.path("dev-cert.pem");
    let ir = z.path("ir.der");
    let mut args = ir_args(&token, key.to_str().unwrap(), cert.to_str().unwrap());
    args.extend([
        "-implicit_confirm".into(),
        "-reqout".into(),
        ir.to_str().unwrap().into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = cmp(&z, &server, IR_PATH, &args);
    assert!(ok, "openssl cmp -cmd ir -implicit_confirm: {out}");
    // E1: implicit confirmation granted, so no certConf was sent, and the transaction is
    // recorded as confirmed.
    assert!(!out.contains("CERTCONF"), "{out}");
    let t = transactions(&z.store);
    assert_eq!(t.len(), 1, "{t:?}");
    assert_eq!(t[0]["confirmed"], true);
    verify(&z.ca_pem(), &cert);
    let first = der_of(&cert);
    let enrolled = enrolments(&z.store).len();

    // The same request again (same transactionID; the token is used up by now): the same
    // certificate, not a second one, and nothing new issued or audited as an enrolment.
    let cert2 = z.path("dev-cert-again.pem");
    let mut args = ir_args(&token, key.to_str().unwrap(), cert2.to_str().unwrap());
    args.extend([
        "-implicit_confirm".into(),
        "-reqin".into(),
        ir.to_str().unwrap().into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = cmp(&z, &server, IR_PATH, &args);
    assert!(ok, "the repeated ir: {out}");
    assert_eq!(
        der_of(&cert2).der(),
        first.der(),
        "the same certificate again"
    );
    assert_eq!(enrolments(&z.store).len(), enrolled);
    assert_eq!(transactions(&z.store).len(), 1);
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn openssl_cmp_p10cr_from_an_openssl_csr() {
    let z = zone();
    let server = start(&z);
    let token = z.token(DEVICE);
    let key = new_key(z.dir.path(), "dev-key.pem");
    let csr = z.path("dev.csr");
    let (ok, out) = run(tool("openssl").args([
        "req",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        &format!("/CN={DEVICE}"),
        "-out",
        csr.to_str().unwrap(),
    ]));
    assert!(ok, "{out}");
    let cert = z.path("dev-cert.pem");
    let (ok, out) = cmp(
        &z,
        &server,
        ".well-known/cmp/p/zone/p10",
        &[
            "-cmd",
            "p10cr",
            "-csr",
            csr.to_str().unwrap(),
            "-secret",
            &format!("pass:{token}"),
            "-ref",
            DEVICE,
            "-certout",
            cert.to_str().unwrap(),
        ],
    );
    assert!(ok, "openssl cmp -cmd p10cr: {out}");
    verify(&z.ca_pem(), &cert);
    assert_eq!(der_of(&cert).common_name().as_deref(), Some(DEVICE));
    assert_eq!(enrolments(&z.store).last().unwrap()["via"], "cmp");
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn a_wrong_secret_is_refused_with_bad_message_check_and_audited() {
    let z = zone();
    let server = start(&z);
    let _token = z.token(DEVICE);
    let unchanged = state(&z.store);
    let key = new_key(z.dir.path(), "dev-key.pem");
    let cert = z.path("dev-cert.pem");
    let args = ir_args(
        "not-the-token-of-this-member",
        key.to_str().unwrap(),
        cert.to_str().unwrap(),
    );
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push("-unprotected_errors");
    let (ok, out) = cmp(&z, &server, IR_PATH, &args);
    assert!(!ok, "a wrong secret must be refused: {out}");
    assert!(out.contains("badMessageCheck"), "{out}");
    assert!(out.contains("does not verify"), "{out}");
    assert!(!cert.exists());
    let r = wait_for_cmp_refusals(&z.store, 1);
    assert_eq!(r[0]["claimed"], DEVICE, "{r:?}");
    assert!(
        r[0]["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{r:?}"
    );
    // Nothing but the audit changed: the token is still unused.
    assert_eq!(state(&z.store), unchanged);
}

/// Enrols `member` by `openssl cmp -cmd ir`; its key and certificate files.
fn enrol(z: &Zone, server: &Running, member: &str) -> (PathBuf, PathBuf) {
    let token = z.token(member);
    let key = new_key(z.dir.path(), &format!("{member}-key.pem"));
    let cert = z.path(&format!("{member}-cert.pem"));
    let (ok, out) = cmp(
        z,
        server,
        IR_PATH,
        &[
            "-cmd",
            "ir",
            "-secret",
            &format!("pass:{token}"),
            "-ref",
            member,
            "-newkey",
            key.to_str().unwrap(),
            "-subject",
            &format!("/CN={member}"),
            "-certout",
            cert.to_str().unwrap(),
        ],
    );
    assert!(ok, "ir of {member}: {out}");
    (key, cert)
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn openssl_cmp_kur_signed_by_the_current_credential_and_not_by_another_members() {
    let z = zone();
    let server = start(&z);
    let (key1, cert1) = enrol(&z, &server, "dev-1");
    let (key2, cert2) = enrol(&z, &server, "dev-2");
    let ca = z.ca_pem();
    let kup_path = ".well-known/cmp/p/zone/keyupdate";

    // E1: kur signed with dev-1's current key and certificate, for a new key; zoned's answer
    // is signed by its own credential, which openssl checks against the zone CA.
    let new_key1 = new_key(z.dir.path(), "dev-1-new-key.pem");
    let new_cert1 = z.path("dev-1-new-cert.pem");
    let (ok, out) = cmp(
        &z,
        &server,
        kup_path,
        &[
            "-cmd",
            "kur",
            "-cert",
            cert1.to_str().unwrap(),
            "-key",
            key1.to_str().unwrap(),
            "-trusted",
            ca.to_str().unwrap(),
            "-newkey",
            new_key1.to_str().unwrap(),
            "-certout",
            new_cert1.to_str().unwrap(),
        ],
    );
    assert!(ok, "openssl cmp -cmd kur: {out}");
    verify(&ca, &new_cert1);
    let renewed = der_of(&new_cert1);
    assert_eq!(renewed.common_name().as_deref(), Some("dev-1"));
    assert_ne!(renewed.der(), der_of(&cert1).der());
    let (_, pubkey) =
        run(tool("openssl").args(["pkey", "-pubout", "-in", new_key1.to_str().unwrap()]));
    let (_, certkey) = run(tool("openssl").args([
        "x509",
        "-noout",
        "-pubkey",
        "-in",
        new_cert1.to_str().unwrap(),
    ]));
    assert_eq!(pubkey, certkey, "the new certificate is for the new key");

    // A kur for dev-1's certificate signed by dev-2's credential: refused, audited, nothing
    // issued.
    let unchanged = state(&z.store);
    let stolen = z.path("stolen.pem");
    let (ok, out) = cmp(
        &z,
        &server,
        kup_path,
        &[
            "-cmd",
            "kur",
            "-cert",
            cert2.to_str().unwrap(),
            "-key",
            key2.to_str().unwrap(),
            "-oldcert",
            new_cert1.to_str().unwrap(),
            "-trusted",
            ca.to_str().unwrap(),
            "-newkey",
            new_key(z.dir.path(), "thief-key.pem").to_str().unwrap(),
            "-certout",
            stolen.to_str().unwrap(),
        ],
    );
    assert!(!ok, "a kur by another member's key must be refused: {out}");
    assert!(
        out.contains("notAuthorized") || out.contains("not authorized"),
        "{out}"
    );
    assert!(!stolen.exists());
    let r = wait_for_cmp_refusals(&z.store, 1);
    assert!(r[0]["reason"].as_str().unwrap().contains("dev-2"), "{r:?}");
    assert_eq!(state(&z.store), unchanged);
}

/// One HTTP/1.1 POST to the CMP path over TLS (server authentication only), declaring
/// `declared` bytes and sending `body`: the status and the response body.
fn post(z: &Zone, server: &Running, declared: usize, body: &[u8]) -> (u16, Vec<u8>) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(zonepki::net::tls::to_rustls(
            &z.sim.svc.zone().unwrap().ca_certificate,
        ))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(zonepki::net::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        rustls::pki_types::ServerName::try_from(SERVER).unwrap(),
    )
    .unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let head = format!(
        "POST /.well-known/cmp HTTP/1.1\r\nHost: {SERVER}\r\nConnection: close\r\n\
         Content-Type: application/pkixcmp\r\nContent-Length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s.flush().unwrap();
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Err(e) => panic!("reading the answer: {e}"),
    }
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8_lossy(&out[..end]);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/pkixcmp"),
        "{head}"
    );
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, out[end + 4..].to_vec())
}

/// The PKIStatusInfo of a CMP error message: (failInfo bits, statusString).
fn cmp_error(body: &[u8]) -> (Vec<u8>, String) {
    use der::Decode;
    let msg = PkiMessage::from_der(body).unwrap();
    assert_eq!(msg.body_type, BodyType::Error);
    let content = ErrorMsgContent::from_der(&msg.body).unwrap();
    assert_eq!(content.status.status, 2, "rejection");
    (
        content.status.fail_info.unwrap().raw_bytes().to_vec(),
        content.status.status_string.unwrap().join(" "),
    )
}

#[test]
fn a_malformed_or_oversized_message_is_a_cmp_error_with_bad_data_format_and_audited() {
    let z = zone();
    let server = start(&z);
    let unchanged = state(&z.store);

    // Not a PKIMessage: HTTP 200 (RFC 6712) carrying an error with badDataFormat (bit 5).
    let junk = b"\x30\x03\x02\x01";
    let (status, body) = post(&z, &server, junk.len(), junk);
    assert_eq!(status, 200);
    let (bits, text) = cmp_error(&body);
    assert_eq!(bits, vec![0x04], "badDataFormat");
    assert!(text.contains("malformed"), "{text}");

    // Longer than the limit: refused before it is read, the same way.
    let declared = zonepki::cmp::asn1::MAX_MESSAGE_BYTES + 1;
    let (status, body) = post(&z, &server, declared, b"");
    assert_eq!(status, 200);
    let (bits, text) = cmp_error(&body);
    assert_eq!(bits, vec![0x04], "badDataFormat");
    assert!(text.contains("more than"), "{text}");

    let r = wait_for_cmp_refusals(&z.store, 2);
    assert!(
        r.iter()
            .all(|r| r["peer"].as_str().unwrap().starts_with("127.0.0.1:")),
        "{r:?}"
    );
    assert_eq!(state(&z.store), unchanged);
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn openssl_cmp_genm_ca_certs() {
    use der::Decode;
    let z = zone();
    let server = start(&z);
    let token = z.token(DEVICE);
    let genp = z.path("genp.der");
    let (ok, out) = cmp(
        &z,
        &server,
        ".well-known/cmp/p/zone/getcacerts",
        &[
            "-cmd",
            "genm",
            "-infotype",
            "caCerts",
            "-secret",
            &format!("pass:{token}"),
            "-ref",
            DEVICE,
            "-rspout",
            genp.to_str().unwrap(),
        ],
    );
    assert!(ok, "openssl cmp -cmd genm -infotype caCerts: {out}");
    assert!(out.contains("GENP"), "{out}");
    // The genp openssl accepted (its MAC checked by openssl) carries the zone's CA
    // certificates.
    let msg = PkiMessage::from_der(&std::fs::read(&genp).unwrap()).unwrap();
    assert_eq!(msg.body_type, BodyType::Genp);
    let items = Vec::<zonepki::cmp::asn1::InfoTypeAndValue>::from_der(&msg.body).unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].info_type, zonepki::cmp::asn1::CA_CERTS);
    let certs: Vec<der::asn1::Any> = items[0].info_value.as_ref().unwrap().decode_as().unwrap();
    let expected = z.sim.svc.ca_certificates().unwrap();
    let got: Vec<Vec<u8>> = certs
        .iter()
        .map(|c| der::Encode::to_der(c).unwrap())
        .collect();
    let expected: Vec<Vec<u8>> = expected.iter().map(|c| c.as_bytes().to_vec()).collect();
    assert_eq!(got, expected);
    // No certificate issued, the token still unused.
    assert!(enrolments(&z.store).iter().all(|e| e["via"] != "cmp"));
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn openssl_cmp_genm_root_ca_key_update_during_a_remint_ca() {
    use der::Decode;
    let z = zone();
    let token = z.token(DEVICE);
    let old_ca = z.ca_pem();
    // The operation is started before zoned runs (the simulation's agents and zoned's own
    // agent must not write the same member directory at once).
    let activation = Timestamp::now_utc().plus(Duration::from_secs(3600));
    let mut req = sim::remint_ca("2030-01-01T00:00:00Z");
    req.activation = zonepki::ops::ActivationRequest::At(activation);
    z.sim.svc.start_remint_ca(req).unwrap();
    let server = start(&z);
    let genp = z.path("genp.der");
    let (ok, out) = cmp(
        &z,
        &server,
        ".well-known/cmp/p/zone/getrootupdate",
        &[
            "-cmd",
            "genm",
            "-infotype",
            "rootCaKeyUpdate",
            "-secret",
            &format!("pass:{token}"),
            "-ref",
            DEVICE,
            "-rspout",
            genp.to_str().unwrap(),
        ],
    );
    assert!(ok, "openssl cmp -cmd genm -infotype rootCaKeyUpdate: {out}");
    let msg = PkiMessage::from_der(&std::fs::read(&genp).unwrap()).unwrap();
    assert_eq!(msg.body_type, BodyType::Genp);
    // E2: the activation time reaches the client in the header's freeText.
    let text = msg.header.free_text.clone().unwrap().join(" ");
    assert_eq!(text, format!("activation: {activation}"));
    let items = Vec::<zonepki::cmp::asn1::InfoTypeAndValue>::from_der(&msg.body).unwrap();
    assert_eq!(items[0].info_type, zonepki::cmp::asn1::ROOT_CA_KEY_UPDATE);
    let content: Vec<der::asn1::Any> = items[0].info_value.as_ref().unwrap().decode_as().unwrap();
    assert_eq!(content.len(), 2, "newWithNew and newWithOld");
    let new_with_new = der::Encode::to_der(&content[0]).unwrap();
    let new_with_old = content[1].value().to_vec();
    // newWithNew is the future CA (self-signed, not the current one); newWithOld, B1's bridge,
    // chains to the current CA under -x509_strict and certifies the future CA's key.
    let future = Certificate::from_der(&new_with_new).unwrap();
    assert!(future.is_self_signed());
    assert_ne!(
        future.der().as_bytes(),
        z.sim.svc.zone().unwrap().ca_certificate.as_bytes()
    );
    let bridge = Certificate::from_der(&new_with_old).unwrap();
    assert_eq!(bridge.public_key(), future.public_key());
    let bridge_pem = z.path("bridge.pem");
    std::fs::write(&bridge_pem, bridge.der().to_pem()).unwrap();
    verify(&old_ca, &bridge_pem);
}

#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn openssl_cmp_cr_with_the_registration_token() {
    let z = zone();
    let server = start(&z);
    let token = z.token(DEVICE);
    let key = new_key(z.dir.path(), "dev-key.pem");
    let cert = z.path("dev-cert.pem");
    let mut args = ir_args(&token, key.to_str().unwrap(), cert.to_str().unwrap());
    args[1] = "cr".into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out) = cmp(&z, &server, IR_PATH, &args);
    assert!(ok, "openssl cmp -cmd cr: {out}");
    assert!(out.contains("received CP"), "{out}");
    verify(&z.ca_pem(), &cert);
    assert_eq!(der_of(&cert).common_name().as_deref(), Some(DEVICE));
}

/// `openssl verify -x509_strict` of `cert` against `ca` with `untrusted` intermediates; whether
/// it verified, and openssl's output.
fn verify_through(ca: &Path, untrusted: &Path, cert: &Path) -> (bool, String) {
    let (ok, out) = run(tool("openssl").args([
        "verify",
        "-x509_strict",
        "-CAfile",
        ca.to_str().unwrap(),
        "-untrusted",
        untrusted.to_str().unwrap(),
        cert.to_str().unwrap(),
    ]));
    (ok && out.contains(": OK"), out)
}

/// `member`'s status in `op show` and in `device list`, which must agree.
fn member_status(z: &Zone, member: &str) -> String {
    let v = z.sim.svc.op_show().unwrap();
    let shown = z.sim.status(&v, member);
    let listed = z
        .sim
        .svc
        .device_list(&zonepki::view::DeviceQuery::all())
        .unwrap()
        .devices
        .into_iter()
        .find(|d| d.name == member)
        .unwrap()
        .update_status
        .to_string();
    assert_eq!(shown, listed, "op show and device list");
    shown
}

/// The serial-number records of certificates issued to `member` (S3: one per certificate).
/// zoned's own agent gets its certificates meanwhile: they are not counted.
fn serials(store: &Store, member: &str) -> usize {
    let d = dump(store.as_ref()).unwrap();
    d.as_object()
        .unwrap()
        .iter()
        .filter(|(k, v)| {
            k.starts_with("serial/") && v["value"]["subject"] == format!("CN={member}")
        })
        .count()
}

/// E2 with the independent client: during a Remint CA, `openssl cmp -cmd kur` signed by the
/// device's current credential gets its future certificate, which chains to the future CA and,
/// through the bridge in extraCerts, to the CA the device trusts now (B1), both under
/// `openssl verify -x509_strict`; the kup's freeText carries the activation time; the device
/// counts as staged (`applied`) in `op show` and `device list`; the same request again (the
/// same transactionID) issues nothing. After the activation (zoned's scheduled work, on the
/// wall clock, N6), a kur signed with the future certificate gets a certificate of the new CA
/// and the device counts as `activated`.
#[cfg_attr(
    not(zonepki_has_openssl),
    ignore = "needs openssl on PATH (apt-get install openssl); .ci/run installs it"
)]
#[test]
fn openssl_cmp_kur_during_a_remint_ca_gets_the_future_certificate_and_activates() {
    use der::Decode;
    let z = zone();
    // dev-1 enrols (in process, with a key and CSR openssl made) before zoned runs, and the
    // Remint CA starts then too (the simulation's agents and zoned's own agent must not write
    // the same member directory at once).
    let key = new_key(z.dir.path(), "dev-key.pem");
    let csr = z.path("dev.csr");
    let (ok, out) = run(tool("openssl").args([
        "req",
        "-new",
        "-key",
        key.to_str().unwrap(),
        "-subj",
        &format!("/CN={DEVICE}"),
        "-outform",
        "DER",
        "-out",
        csr.to_str().unwrap(),
    ]));
    assert!(ok, "{out}");
    let token = zonepki::protocol::RegistrationToken::parse(&z.token(DEVICE)).unwrap();
    let enrolment = z
        .sim
        .svc
        .enroll(&zonepki::protocol::EnrollRequest::new(
            DEVICE,
            token,
            std::fs::read(&csr).unwrap(),
        ))
        .unwrap();
    let cert = z.path("dev-cert.pem");
    std::fs::write(&cert, enrolment.chain[0].to_pem()).unwrap();
    let old_ca = z.path("old-ca.pem");
    std::fs::write(&old_ca, z.sim.svc.zone().unwrap().ca_certificate.to_pem()).unwrap();
    // The activation is on the wall clock (zoned's): far enough for the staging half of the
    // test to run before it.
    let activation = Timestamp::now_utc().plus(Duration::from_secs(20));
    let mut req = sim::remint_ca("2030-01-01T00:00:00Z");
    req.activation = zonepki::ops::ActivationRequest::At(activation);
    z.sim.svc.start_remint_ca(req).unwrap();
    // Inside the cut-off "assign now" is refused (O7): the content reaches every content
    // server, which assigns the update (O3, O4).
    let pending: Vec<zonepki::zone::Fqdn> = z
        .sim
        .svc
        .op()
        .unwrap()
        .unwrap()
        .replication
        .into_iter()
        .filter(|(_, r)| *r == zonepki::ops::Replication::Pending)
        .map(|(s, _)| s)
        .collect();
    z.sim.svc.replicate(&pending).unwrap();
    let op = z.sim.svc.op().unwrap().unwrap();
    assert!(op.is_assigned(), "{:?}", op.state);
    let future_ca = z.path("future-ca.pem");
    std::fs::write(&future_ca, op.kind.future_ca().unwrap().to_pem()).unwrap();
    let bridge = op.kind.bridge().unwrap().clone();
    // What the device trusts for zoned's signed answers and TLS across the change: the CA it
    // has and the future CA (rootCaKeyUpdate's newWithNew, tested above).
    let both = z.path("old-and-future-ca.pem");
    std::fs::write(
        &both,
        [
            std::fs::read_to_string(&old_ca).unwrap(),
            std::fs::read_to_string(&future_ca).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let server = start(&z);
    assert_eq!(member_status(&z, DEVICE), "assigned");
    let issued_before = serials(&z.store, DEVICE);

    let kup_path = ".well-known/cmp/p/zone/keyupdate";
    let future_key = new_key(z.dir.path(), "dev-future-key.pem");
    let future_cert = z.path("dev-future-cert.pem");
    let extra = z.path("extracerts.pem");
    let capubs = z.path("capubs.pem");
    let request = z.path("kur.der");
    let response = z.path("kup.der");
    let (ok, out) = cmp_trusting(
        &server,
        &both,
        kup_path,
        &[
            "-cmd",
            "kur",
            "-cert",
            cert.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
            "-trusted",
            old_ca.to_str().unwrap(),
            "-newkey",
            future_key.to_str().unwrap(),
            "-implicit_confirm",
            "-certout",
            future_cert.to_str().unwrap(),
            "-extracertsout",
            extra.to_str().unwrap(),
            "-cacertsout",
            capubs.to_str().unwrap(),
            "-reqout",
            request.to_str().unwrap(),
            "-rspout",
            response.to_str().unwrap(),
        ],
    );
    assert!(ok, "openssl cmp -cmd kur during the Remint CA: {out}");
    // E2: the activation time, in the kup's freeText.
    let kup = PkiMessage::from_der(&std::fs::read(&response).unwrap()).unwrap();
    assert_eq!(kup.body_type, BodyType::Kup);
    assert_eq!(
        kup.header.free_text.clone().map(|t| t.join(" ")),
        Some(format!("activation: {activation}")),
        "a kup before the activation ({activation}) says when it is"
    );
    // The future certificate chains to the future CA, and through the bridge (extraCerts,
    // untrusted) to the CA the device trusts now; not to the current CA alone.
    verify(&future_ca, &future_cert);
    let extra_pem = std::fs::read_to_string(&extra).unwrap();
    assert!(extra_pem.contains(bridge.to_pem().trim()), "{extra_pem}");
    let bridge_pem = z.path("bridge.pem");
    std::fs::write(&bridge_pem, bridge.to_pem()).unwrap();
    let (ok, out) = verify_through(&old_ca, &bridge_pem, &future_cert);
    assert!(ok, "through the bridge: {out}");
    let (ok, _) = verify_through(&old_ca, &old_ca, &future_cert);
    assert!(
        !ok,
        "a future certificate does not chain to the current CA alone"
    );
    assert_eq!(der_of(&future_cert).common_name().as_deref(), Some(DEVICE));
    // caPubs: the current and the future CA.
    assert_eq!(
        std::fs::read_to_string(&capubs)
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        2
    );
    // Counted as staged, in the commit that issued one certificate.
    assert_eq!(member_status(&z, DEVICE), "applied");
    assert_eq!(serials(&z.store, DEVICE), issued_before + 1);

    // The same request again (its transactionID recorded): the same certificate, nothing new.
    let replay = std::fs::read(&request).unwrap();
    let (status, body) = post(&z, &server, replay.len(), &replay);
    assert_eq!(status, 200);
    let again = PkiMessage::from_der(&body).unwrap();
    assert_eq!(again.body_type, BodyType::Kup);
    let rep = zonepki::cmp::asn1::CertRepMessage::from_der(&again.body).unwrap();
    let cert_again = rep.response[0].certified_key_pair.as_ref().unwrap();
    assert_eq!(
        cert_again.cert.value(),
        der_of(&future_cert).der().as_bytes()
    );
    assert_eq!(serials(&z.store, DEVICE), issued_before + 1);
    assert_eq!(member_status(&z, DEVICE), "applied");

    // The activation, by zoned's scheduled work at its time (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(90);
    while z.sim.svc.op().unwrap().unwrap().state.name() != "activated" {
        assert!(
            Instant::now() < deadline,
            "zoned did not activate by {activation}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(member_status(&z, DEVICE), "applied", "not switched yet");

    // A kur signed with the future certificate: a certificate of the new CA; activated.
    let next_key = new_key(z.dir.path(), "dev-next-key.pem");
    let next_cert = z.path("dev-next-cert.pem");
    let (ok, out) = cmp_trusting(
        &server,
        &both,
        kup_path,
        &[
            "-cmd",
            "kur",
            "-cert",
            future_cert.to_str().unwrap(),
            "-key",
            future_key.to_str().unwrap(),
            "-trusted",
            both.to_str().unwrap(),
            "-newkey",
            next_key.to_str().unwrap(),
            "-certout",
            next_cert.to_str().unwrap(),
        ],
    );
    assert!(ok, "openssl cmp -cmd kur after the activation: {out}");
    verify(&future_ca, &next_cert);
    assert_eq!(member_status(&z, DEVICE), "activated");
    assert_eq!(serials(&z.store, DEVICE), issued_before + 2);
}
