//! The web console (issue 13; W1-W3): served by zoned under `/console`.
//!
//! - W3 over plain HTTPS requests (the in-process server, so the store can be compared):
//!   an unauthenticated request, a forged cross-site POST (foreign or no `Origin`, no or a
//!   wrong CSRF token) are refused and change nothing; the cookie and security headers; the
//!   sign-in limit; a refusal appears in the library's words.
//! - The whole page in headless Chromium (tests/console/e2e.mjs, playwright-core) against the
//!   zoned binary: sign in, Remint CA by clicks, replication status, Assign Now, Cancel
//!   disabled inside the cut-off, a second operation refused; screenshots of each pane under
//!   target/console-screenshots/; any browser console error fails it. Without chromium, node
//!   and playwright-core the test is ignored with the reason (build.rs `zonepki_has_chromium`).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/sim.rs"]
mod sim;
#[path = "common/tls.rs"]
mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use sim::{Sim, Spec};
use zonepki::cert::CertificateDer;
use zonepki::clock::Timestamp;
use zonepki::net::console::ConsolePassword;
use zonepki::net::server::{ServerHandle, ZoneServer};
use zonepki::net::tls::{provider, to_rustls};
use zonepki::ops::ActivationRequest;
use zonepki::service::{RemintCaRequest, dump};
use zonepki::store::MemoryStore;
use zonepki::transport::LoopbackTransport;

type Store = Arc<MemoryStore>;

const SERVER: &str = "localhost";
const PASSWORD: &str = "a console password for tests";

struct Zone {
    dir: tempfile::TempDir,
    store: Store,
    ca: CertificateDer,
}

fn zone(devices: usize) -> Zone {
    let dir = tempfile::tempdir().unwrap();
    let store: Store = Arc::new(MemoryStore::new());
    let sim = Sim::build(
        store.clone(),
        LoopbackTransport::with_root(dir.path().join("fleet")),
        Spec {
            ca_server: SERVER.into(),
            devices,
            start: Timestamp::now_utc(),
            bridges: true,
        },
    );
    let ca = sim.svc.zone().unwrap().ca_certificate;
    Zone { dir, store, ca }
}

/// A server on its own runtime; stopped on drop.
struct Running {
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<()>>,
    addr: SocketAddr,
    handle: ServerHandle<Store>,
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

fn start(z: &Zone, console: bool) -> Running {
    let mut b = ZoneServer::builder(
        z.store.clone(),
        SERVER,
        z.dir.path().join("fleet").join(SERVER),
    );
    if console {
        b = b.console(ConsolePassword::new(PASSWORD).unwrap());
    }
    let server = b.build().unwrap();
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

/// An HTTP answer: status, head (lower-cased header lines), body.
struct Answer {
    status: u16,
    head: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request over TLS (trusting the zone CA) on a new connection.
fn request(
    addr: SocketAddr,
    ca: &CertificateDer,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut roots = RootCertStore::empty();
    roots.add(to_rustls(ca)).unwrap();
    let config = Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let conn =
        rustls::ClientConnection::new(config, ServerName::try_from(SERVER).unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {SERVER}:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
        addr.port(),
        body.len()
    );
    if method == "POST" {
        head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    match s.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => panic!("{method} {target}: {e}"),
    }
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let text = String::from_utf8_lossy(&raw[..end]).to_string();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let head = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        head,
        body: String::from_utf8_lossy(&raw[end + 4..]).to_string(),
    }
}

/// The store without the audit log: what a refused request must leave unchanged.
fn state(store: &Store) -> serde_json::Value {
    let mut d = dump(store.as_ref()).unwrap();
    d.as_object_mut()
        .unwrap()
        .retain(|k, _| !k.starts_with("audit/"));
    d
}

fn form_value<'a>(page: &'a str, name: &str) -> &'a str {
    let at = page
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} field in the page"));
    let rest = &page[at + name.len() + 15..];
    &rest[..rest.find('"').unwrap()]
}

fn activation_in(minutes: u64) -> String {
    // datetime-local as the dialog sends it: UTC, to the minute.
    let t = Timestamp::now_utc().plus(Duration::from_secs(minutes * 60));
    t.to_rfc3339()[..16].to_string()
}

#[test]
fn unauthenticated_and_forged_requests_are_refused_and_change_nothing_w3() {
    let z = zone(3);
    let r = start(&z, true);
    let origin = format!("https://{SERVER}:{}", r.addr.port());
    let ca = &z.ca;

    // Unauthenticated: the page sends to the sign-in, an action and a download are refused.
    let a = request(r.addr, ca, "GET", "/console", &[], "");
    assert_eq!(a.status, 303);
    assert_eq!(a.header("location"), Some("/console/signin"));
    let a = request(r.addr, ca, "GET", "/console/ca.pem", &[], "");
    assert_eq!(a.status, 401, "{}", a.body);
    let before = state(&z.store);
    let remint = format!(
        "confirm=yes&common_name=x&key=p256&validity=5&activation={}",
        activation_in(60)
    );
    let a = request(
        r.addr,
        ca,
        "POST",
        "/console/remint-ca",
        &[("Origin", &origin)],
        &remint,
    );
    assert_eq!(a.status, 401, "{}", a.body);
    assert!(
        a.body.contains("sign in to the console first"),
        "{}",
        a.body
    );

    // Security headers on every answer (W3).
    let a = request(r.addr, ca, "GET", "/console/signin", &[], "");
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("content-security-policy"),
        Some("default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
    );
    assert_eq!(a.header("x-frame-options"), Some("DENY"));
    assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(a.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(a.header("cache-control"), Some("no-store"));
    assert!(!a.body.contains("<script>"), "no inline script");

    // Sign-in: a cross-site sign-in and a wrong password are refused; the right one gives a
    // Secure, HttpOnly, SameSite=Strict session cookie.
    let a = request(
        r.addr,
        ca,
        "POST",
        "/console/signin",
        &[("Origin", "https://evil.example")],
        &format!("password={}", PASSWORD.replace(' ', "+")),
    );
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.header("set-cookie").is_none());
    let a = request(
        r.addr,
        ca,
        "POST",
        "/console/signin",
        &[("Origin", &origin)],
        "password=wrong",
    );
    assert_eq!(a.status, 401);
    assert!(a.header("set-cookie").is_none());
    let a = request(
        r.addr,
        ca,
        "POST",
        "/console/signin",
        &[("Origin", &origin)],
        &format!("password={}", PASSWORD.replace(' ', "+")),
    );
    assert_eq!(a.status, 303, "{}", a.body);
    let cookie = a.header("set-cookie").unwrap().to_string();
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    let page = request(r.addr, ca, "GET", "/console", &[("Cookie", &session)], "");
    assert_eq!(page.status, 200);
    for pane in [
        "Zone Certificate Authority",
        "Server SSL Certificates",
        "Devices: system update status",
        "Audit log",
    ] {
        assert!(page.body.contains(pane), "the page lacks {pane}");
    }
    let csrf = form_value(&page.body, "csrf").to_string();

    // Forged: a foreign Origin, no Origin, no token, a wrong token: refused, nothing changes.
    let with_token = format!("csrf={csrf}&{remint}");
    for (headers, body, why) in [
        (
            vec![
                ("Cookie", session.as_str()),
                ("Origin", "https://evil.example"),
            ],
            with_token.as_str(),
            "another site",
        ),
        (
            vec![("Cookie", session.as_str())],
            with_token.as_str(),
            "without an Origin",
        ),
        (
            vec![("Cookie", session.as_str()), ("Origin", origin.as_str())],
            remint.as_str(),
            "form token",
        ),
        (
            vec![("Cookie", session.as_str()), ("Origin", origin.as_str())],
            &*format!("csrf=AAAA{}&{remint}", &csrf[4..]),
            "form token",
        ),
    ] {
        let a = request(r.addr, ca, "POST", "/console/remint-ca", &headers, body);
        assert_eq!(a.status, 403, "{why}: {}", a.body);
        assert!(a.body.contains(why), "{why}: {}", a.body);
    }
    assert_eq!(
        state(&z.store),
        before,
        "a refused request changed the store"
    );

    // The real thing: the Remint CA starts, through the library's start_remint_ca.
    let headers = [("Cookie", session.as_str()), ("Origin", origin.as_str())];
    let a = request(
        r.addr,
        ca,
        "POST",
        "/console/remint-ca",
        &headers,
        &with_token,
    );
    assert_eq!(a.status, 303, "{}", a.body);
    let page = request(r.addr, ca, "GET", "/console", &[("Cookie", &session)], "");
    assert!(
        page.body
            .contains("The Remint CA operation has been initiated"),
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"op-banner\""));
    let view = r.handle.service().op_show().unwrap();
    assert_eq!(view.kind, "remint_ca");
    // The banner's op_summary is op show's header, without the per-member lists.
    let summary = r.handle.service().op_summary().unwrap();
    assert_eq!(
        (summary.id, summary.kind, summary.state, summary.activation),
        (view.id, view.kind, view.state, view.activation)
    );
    assert_eq!(
        (
            summary.cancellable,
            summary.cancel_deadline,
            &summary.replication
        ),
        (view.cancellable, view.cancel_deadline, &view.replication)
    );
    assert!(summary.devices.is_empty() && !view.devices.is_empty());

    // A second operation: refused in the library's words, shown once, store unchanged.
    let before = state(&z.store);
    let expected = r
        .handle
        .service()
        .start_remint_ca(RemintCaRequest::new(ActivationRequest::At(
            Timestamp::now_utc().plus(Duration::from_secs(3600)),
        )))
        .unwrap_err()
        .to_string();
    let a = request(
        r.addr,
        ca,
        "POST",
        "/console/remint-ca",
        &headers,
        &with_token,
    );
    assert_eq!(a.status, 303);
    let page = request(r.addr, ca, "GET", "/console", &[("Cookie", &session)], "");
    let shown = expected.replace('"', "&quot;");
    assert!(
        page.body.contains(&format!("role=\"alert\">{shown}</p>")),
        "the refusal {expected:?} is not on the page"
    );
    assert_eq!(state(&z.store), before);

    // Signed out: the session no longer works.
    let a = request(
        r.addr,
        ca,
        "POST",
        "/console/signout",
        &headers,
        &format!("csrf={csrf}"),
    );
    assert_eq!(a.status, 303);
    let a = request(r.addr, ca, "GET", "/console", &[("Cookie", &session)], "");
    assert_eq!(a.status, 303, "a closed session still shows the page");
}

#[test]
fn sign_in_is_rate_limited_per_peer_w3() {
    let z = zone(1);
    let r = start(&z, true);
    let origin = format!("https://{SERVER}:{}", r.addr.port());
    for _ in 0..5 {
        let a = request(
            r.addr,
            &z.ca,
            "POST",
            "/console/signin",
            &[("Origin", &origin)],
            "password=guess",
        );
        assert_eq!(a.status, 401);
    }
    // Even the right password is refused once the limit is reached.
    let a = request(
        r.addr,
        &z.ca,
        "POST",
        "/console/signin",
        &[("Origin", &origin)],
        &format!("password={}", PASSWORD.replace(' ', "+")),
    );
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.header("set-cookie").is_none());
    assert!(a.body.contains("Too many failed sign-ins"));
}

#[test]
fn without_a_console_password_there_is_no_console() {
    let z = zone(1);
    let r = start(&z, false);
    let a = request(r.addr, &z.ca, "GET", "/console", &[], "");
    assert_eq!(a.status, 404, "{}", a.body);
    assert!(a.body.contains("console password"), "{}", a.body);
}

/// Where `.ci/run` installs playwright-core.
fn node_modules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-node/node_modules")
}

#[test]
#[cfg_attr(
    not(zonepki_has_chromium),
    ignore = "needs /usr/bin/chromium, node and playwright-core in target/console-node (.ci/run installs them)"
)]
fn the_console_in_chromium_remint_ca_by_clicks() {
    common::require("node");
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: apt-get install chromium (.ci/run does)"
    );
    assert!(
        node_modules().join("playwright-core").is_dir(),
        "playwright-core is missing: npm install --prefix target/console-node playwright-core"
    );
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("zone.redb");
    let fleet = dir.path().join("fleet");
    {
        Sim::build(
            zonepki::store::RedbStore::create(&store_path).unwrap(),
            LoopbackTransport::with_root(&fleet),
            Spec {
                ca_server: SERVER.into(),
                devices: 120,
                start: Timestamp::now_utc(),
                bridges: true,
            },
        );
    }
    let password_file = dir.path().join("console-password");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    let mut child = tls::Running(
        std::process::Command::new(common::example_bin("zoned"))
            .args(["--fqdn", SERVER, "--listen", "127.0.0.1:0"])
            .arg("--store")
            .arg(&store_path)
            .arg("--state")
            .arg(fleet.join(SERVER))
            .arg("--console-password-file")
            .arg(&password_file)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on https://")
        .unwrap_or_else(|| panic!("zoned's first line: {line}"))
        .parse()
        .unwrap();
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = std::process::Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/e2e.mjs"))
        .env("NODE_MODULES", node_modules())
        .env(
            "CONSOLE_URL",
            format!("https://{SERVER}:{}/console", addr.port()),
        )
        .env("CONSOLE_PASSWORD", PASSWORD)
        .env("SCREENSHOTS", &shots)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the browser test failed:\n{text}");
    assert!(text.contains("e2e: all steps passed"), "{text}");
    for pane in [
        "signin",
        "ca-pane",
        "ca-pane-operation",
        "server-pane",
        "device-pane",
        "audit-pane",
    ] {
        assert!(
            shots.join(format!("{pane}.png")).is_file(),
            "no screenshot of {pane}"
        );
    }
}
