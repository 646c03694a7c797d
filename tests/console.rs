//! The web console (issue 13; W1-W3): served by zoned under `/console`.
//!
//! - W3 over plain HTTPS requests (the in-process server, so the store can be compared):
//!   an unauthenticated request, a forged cross-site POST (foreign or no `Origin`, no or a
//!   wrong CSRF token) are refused and change nothing, and are audited (N3); the cookie and
//!   security headers; the sign-in limit; a refusal appears in the library's words.
//! - W1/W2 over HTTPS: Backup and Restore CA (BK1, BK2; a wrong passphrase and a damaged
//!   archive refused), a Change CA to an external CA (CE1-CE3: the dialog's rules, the CSR
//!   and the CSR zip, a certificate of another CA refused, the import, the future
//!   certificate), the server chains and B3's plan for a chosen time.
//! - The whole page in headless Chromium (tests/console/e2e.mjs, playwright-core) against the
//!   zoned binary: sign in, Remint CA by clicks, replication status, Assign Now, Cancel
//!   disabled inside the cut-off, a second operation refused; on a second zoned a backup
//!   downloaded and restored, an activation after the CA expires refused, a Change CA to an
//!   external CA with the CSR zip downloaded, signed with openssl and imported, the plan;
//!   screenshots of each pane and dialog under target/console-screenshots/; any browser
//!   console error fails it. Without chromium, node and playwright-core the test is ignored
//!   with the reason (build.rs `zonepki_has_chromium`).
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
use zonepki::ops::{ActivationRequest, CsrFields, CsrMode};
use zonepki::service::{ChangeCaRequest, ChangeCaTarget, RemintCaRequest, dump};
use zonepki::store::MemoryStore;
use zonepki::transport::LoopbackTransport;
use zonepki::view::UpdateStatus;

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
    /// The body's bytes (a download).
    raw: Vec<u8>,
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
    request_bytes(addr, ca, method, target, headers, body.as_bytes())
}

/// [`request`] with any body (a multipart upload); a POST without a `Content-Type` among
/// `headers` is sent as a URL-encoded form.
fn request_bytes(
    addr: SocketAddr,
    ca: &CertificateDer,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
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
    if method == "POST"
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
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
        raw: raw[end + 4..].to_vec(),
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

/// zoned on a new zone in `dir` (the simulation's servers and `devices` devices, its CA on
/// `localhost`) with the console; its address.
fn zoned(dir: &Path, devices: usize) -> (tls::Running, SocketAddr) {
    std::fs::create_dir_all(dir).unwrap();
    let store_path = dir.join("zone.redb");
    let fleet = dir.join("fleet");
    {
        Sim::build(
            zonepki::store::RedbStore::create(&store_path).unwrap(),
            LoopbackTransport::with_root(&fleet),
            Spec {
                ca_server: SERVER.into(),
                devices,
                start: Timestamp::now_utc(),
                bridges: true,
            },
        );
    }
    let password_file = dir.join("console-password");
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
    (child, addr)
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
    common::require("openssl");
    let dir = tempfile::tempdir().unwrap();
    // The Remint CA zone, and a second zone for backup, restore and Change CA.
    let (_zoned1, addr) = zoned(&dir.path().join("zone1"), 120);
    let (_zoned2, addr2) = zoned(&dir.path().join("zone2"), 5);
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = std::process::Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/e2e.mjs"))
        .env("NODE_MODULES", node_modules())
        .env(
            "CONSOLE_URL",
            format!("https://{SERVER}:{}/console", addr.port()),
        )
        .env(
            "CONSOLE_URL2",
            format!("https://{SERVER}:{}/console", addr2.port()),
        )
        .env("CONSOLE_PASSWORD", PASSWORD)
        .env("SCREENSHOTS", &shots)
        .env("WORK", &work)
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
        "backup-dialog",
        "restore-dialog",
        "change-ca-dialog",
        "ca-pane-change-ca",
        "server-pane-change-ca",
        "plan",
        "audit-pane-change-ca",
        "generate-csr",
    ] {
        assert!(
            shots.join(format!("{pane}.png")).is_file(),
            "no screenshot of {pane}"
        );
    }
}

/// A signed-in console session over HTTPS.
struct Session<'a> {
    addr: SocketAddr,
    ca: &'a CertificateDer,
    cookie: String,
    csrf: String,
    origin: String,
}

/// One part of a multipart body: a field or a file.
enum Part<'a> {
    Text(&'a str),
    File(&'a [u8]),
}

impl<'a> Session<'a> {
    fn open(addr: SocketAddr, ca: &'a CertificateDer) -> Self {
        let origin = format!("https://{SERVER}:{}", addr.port());
        let a = request(
            addr,
            ca,
            "POST",
            "/console/signin",
            &[("Origin", &origin)],
            &format!("password={}", PASSWORD.replace(' ', "+")),
        );
        assert_eq!(a.status, 303, "{}", a.body);
        let cookie = a
            .header("set-cookie")
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let page = request(addr, ca, "GET", "/console", &[("Cookie", &cookie)], "");
        let csrf = form_value(&page.body, "csrf").to_string();
        Session {
            addr,
            ca,
            cookie,
            csrf,
            origin,
        }
    }

    fn get(&self, target: &str) -> Answer {
        request(
            self.addr,
            self.ca,
            "GET",
            target,
            &[("Cookie", &self.cookie)],
            "",
        )
    }

    /// A URL-encoded POST with the session's token.
    fn post(&self, path: &str, body: &str) -> Answer {
        request(
            self.addr,
            self.ca,
            "POST",
            path,
            &[("Cookie", &self.cookie), ("Origin", &self.origin)],
            &format!("csrf={}&{body}", self.csrf),
        )
    }

    /// A multipart POST (a dialog with a file input), with the session's token.
    fn post_multipart(&self, path: &str, parts: &[(&str, Part<'_>)]) -> Answer {
        let boundary = "----zonepkiTestBoundary7MA4YWxkTrZu0gW";
        let mut body = Vec::new();
        let mut field = |name: &str, file: bool, data: &[u8]| {
            body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            let filename = if file {
                "; filename=\"upload.bin\"\r\nContent-Type: application/octet-stream"
            } else {
                ""
            };
            body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"{filename}\r\n\r\n")
                    .as_bytes(),
            );
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        };
        field("csrf", false, self.csrf.as_bytes());
        for (name, part) in parts {
            match part {
                Part::Text(t) => field(name, false, t.as_bytes()),
                Part::File(f) => field(name, true, f),
            }
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let content_type = format!("multipart/form-data; boundary={boundary}");
        request_bytes(
            self.addr,
            self.ca,
            "POST",
            path,
            &[
                ("Cookie", &self.cookie),
                ("Origin", &self.origin),
                ("Content-Type", &content_type),
            ],
            &body,
        )
    }

    /// The page's message after an action: (is it an alert, its text unescaped).
    fn flash(&self) -> (bool, String) {
        let page = self.get("/console");
        let at = page
            .body
            .find("<p id=\"flash\" class=\"")
            .unwrap_or_else(|| panic!("no message on the page"));
        let rest = &page.body[at..];
        let alert = rest.contains("role=\"alert\"") && rest.find("role=\"alert\"") < rest.find('>');
        let text = &rest[rest.find('>').unwrap() + 1..rest.find("</p>").unwrap()];
        let text = text
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        (alert, text)
    }
}

/// An external CA made with the crate's own functions: root, issuing CA, and a signer of
/// CSRs (the certificates an administrator would bring back from it).
struct External {
    root: zonepki::cert::Certificate,
    int: zonepki::cert::Certificate,
    int_key: zonepki::key::PrivateKey,
}

impl External {
    fn new(name: &str) -> Self {
        use zonepki::ca::{CaParams, Serial, cross_certify, self_signed_ca};
        use zonepki::key::{KeySpec, PrivateKey};
        let now = Timestamp::now_utc();
        let p = |cn: String| CaParams {
            common_name: cn,
            validity: 10.try_into().unwrap(),
        };
        let root_key = PrivateKey::generate(KeySpec::P256).unwrap();
        let root = self_signed_ca(
            &root_key,
            &p(format!("{name} Root")),
            &Serial::random().unwrap(),
            now,
        )
        .unwrap();
        let int_key = PrivateKey::generate(KeySpec::P256).unwrap();
        let int_self = self_signed_ca(
            &int_key,
            &p(format!("{name} Issuing CA")),
            &Serial::random().unwrap(),
            now,
        )
        .unwrap();
        let int =
            cross_certify(&root, &root_key, &int_self, &Serial::random().unwrap(), now).unwrap();
        External { root, int, int_key }
    }

    fn chain_pem(&self) -> Vec<u8> {
        zonepki::cert::bundle::to_pem(&[self.int.der().clone(), self.root.der().clone()])
            .into_bytes()
    }

    /// The leaf for `csr` and the issuing CA, PEM.
    fn sign(&self, fqdn: &str, csr: &zonepki::csr::CsrDer) -> Vec<u8> {
        use zonepki::ca::{Serial, ServerProfile, issue_server_certificate};
        let csr = zonepki::csr::VerifiedCsr::from_der(csr.as_bytes()).unwrap();
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
            Timestamp::now_utc(),
        )
        .unwrap();
        zonepki::cert::bundle::to_pem(&[leaf.der().clone(), self.int.der().clone()]).into_bytes()
    }
}

/// Waits (bounded) until server `name`'s agent has brought it to `status` in the running
/// operation: the agent works in the background, woken by every console POST.
fn settle(svc: &zonepki::net::server::Service<Store>, name: &str, status: UpdateStatus) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = svc
            .op_show()
            .unwrap()
            .servers
            .into_iter()
            .find(|s| s.fqdn == name)
            .map(|s| s.status);
        if now == Some(status) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} is {now:?}, not {status:?}, after 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The entries of a zip archive: name -> contents.
fn unzip(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            (f.name().unwrap().to_string(), data)
        })
        .collect()
}

#[test]
fn backup_and_restore_ca_by_the_console_bk1_bk2() {
    let z = zone(3);
    let r = start(&z, true);
    let s = Session::open(r.addr, &z.ca);
    let svc = r.handle.service();

    // BK1: the dialog's passphrase twice; a zip archive downloads.
    let passphrase = "console backup passphrase";
    let a = s.post(
        "/console/backup-ca",
        &format!(
            "passphrase={0}&passphrase_again={0}",
            passphrase.replace(' ', "+")
        ),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), Some("application/zip"));
    assert!(
        a.header("content-disposition")
            .is_some_and(|d| d.contains("zone-ca-backup.zip"))
    );
    let archive = a.raw;
    assert!(archive.starts_with(b"PK"));
    zonepki::backup::inspect(&archive).unwrap();

    // BK2: a wrong passphrase is refused in the library's words and changes nothing.
    let before = state(&z.store);
    let a = s.post_multipart(
        "/console/restore-ca",
        &[
            ("archive", Part::File(&archive)),
            ("server", Part::Text(SERVER)),
            ("passphrase", Part::Text("not the passphrase")),
        ],
    );
    assert_eq!(a.status, 303, "{}", a.body);
    let expected = svc
        .restore_ca(
            &archive,
            &zonepki::backup::Passphrase::new("not the passphrase").unwrap(),
            &SERVER.parse().unwrap(),
        )
        .unwrap_err()
        .to_string();
    assert_eq!(s.flash(), (true, expected));
    assert_eq!(state(&z.store), before);
    // A damaged archive: refused before the passphrase is used.
    let mut damaged = archive.clone();
    damaged.truncate(archive.len() / 2);
    s.post_multipart(
        "/console/restore-ca",
        &[
            ("archive", Part::File(&damaged)),
            ("server", Part::Text(SERVER)),
            ("passphrase", Part::Text(passphrase)),
        ],
    );
    let (alert, text) = s.flash();
    assert!(alert, "{text}");
    assert_eq!(
        text,
        zonepki::backup::inspect(&damaged).unwrap_err().to_string()
    );
    assert_eq!(state(&z.store), before);

    // The right passphrase: restored onto the certificate server, audited as ca.restore.
    let a = s.post_multipart(
        "/console/restore-ca",
        &[
            ("archive", Part::File(&archive)),
            ("server", Part::Text(SERVER)),
            ("passphrase", Part::Text(passphrase)),
        ],
    );
    assert_eq!(a.status, 303, "{}", a.body);
    assert_eq!(
        s.flash(),
        (
            false,
            format!("CA restored on {SERVER}, which holds the CA role.")
        )
    );
    let last = svc.audit_recent(1).unwrap();
    assert_eq!(last[0].event, "ca.restore");
    assert!(
        !last[0].detail.to_string().contains(passphrase),
        "the passphrase is audited"
    );
    // The passphrase is in no page.
    assert!(!s.get("/console").body.contains(passphrase));
}

#[test]
fn change_ca_to_an_external_ca_by_the_console_csr_zip_and_import_ce1_ce3() {
    let z = zone(3);
    let r = start(&z, true);
    let s = Session::open(r.addr, &z.ca);
    let svc = r.handle.service();
    let ext = External::new("Acme External");
    let activation = activation_in(180);

    // The dialog's rules: confirmation, a CSR mode, a two-letter country (the library's
    // words); each refusal changes nothing.
    let before = state(&z.store);
    let chain = ext.chain_pem();
    let mut fields = vec![
        ("target", Part::Text("external")),
        ("chain", Part::File(&chain)),
        ("csr_mode", Part::Text("auto")),
        ("org", Part::Text("Acme")),
        ("activation", Part::Text(&activation)),
    ];
    s.post_multipart("/console/change-ca", &fields);
    assert_eq!(
        s.flash(),
        (
            true,
            "Confirm that you want to change the certificate authority.".into()
        )
    );
    fields.push(("confirm", Part::Text("yes")));
    fields.push(("country", Part::Text("USA")));
    s.post_multipart("/console/change-ca", &fields);
    let expected = svc
        .start_change_ca(ChangeCaRequest::new(
            ChangeCaTarget::External {
                chain: chain.clone(),
                csr: CsrMode::Auto {
                    fields: CsrFields::default()
                        .with_organization("Acme")
                        .with_country("USA"),
                    key: zonepki::key::KeySpec::default(),
                },
            },
            ActivationRequest::At(Timestamp::now_utc().plus(Duration::from_secs(3 * 3600))),
        ))
        .unwrap_err()
        .to_string();
    assert!(expected.contains("country"), "{expected}");
    assert_eq!(s.flash(), (true, expected));
    assert_eq!(state(&z.store), before);

    // Started, through start_change_ca.
    fields.pop();
    fields.push(("country", Part::Text("US")));
    let a = s.post_multipart("/console/change-ca", &fields);
    assert_eq!(a.status, 303, "{}", a.body);
    let (alert, text) = s.flash();
    assert!(!alert, "{text}");
    assert!(
        text.starts_with("The Change CA operation has been initiated"),
        "{text}"
    );
    let view = svc.op_show().unwrap();
    assert_eq!(view.kind, "change_ca_external");

    // Assigned: the server's own agent makes its key and CSR (CE2 automatic) when zoned
    // wakes it after the console's POST.
    s.post("/console/assign-now", "");
    let fqdn: zonepki::zone::Fqdn = SERVER.parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while svc.csrs(std::slice::from_ref(&fqdn)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no CSR from {SERVER}'s agent within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // W2: the server pane offers the CSR and the zip; both downloads carry the CSR.
    let page = s.get("/console");
    assert!(
        page.body.contains("href=\"/console/csrs.zip\""),
        "no zip link"
    );
    assert!(
        page.body
            .contains("href=\"/console/csr.pem?server=localhost\"")
    );
    let zip = s.get("/console/csrs.zip");
    assert_eq!(zip.status, 200, "{}", zip.body);
    assert_eq!(zip.header("content-type"), Some("application/zip"));
    let entries = unzip(&zip.raw);
    let (_, pem) = entries
        .iter()
        .find(|(n, _)| n == "localhost.csr")
        .unwrap_or_else(|| panic!("no localhost.csr in {:?}", entries.iter().map(|e| &e.0)));
    let csr = &svc.csrs(std::slice::from_ref(&fqdn)).unwrap()[0].1;
    assert_eq!(pem, csr.to_pem().as_bytes());
    assert_eq!(s.get("/console/csr.pem?server=localhost").raw, pem.clone());
    let subject = zonepki::csr::VerifiedCsr::from_der(csr.as_bytes())
        .unwrap()
        .subject()
        .to_string();
    assert!(
        subject.contains("O=Acme") && subject.contains("C=US"),
        "{subject}"
    );

    // CE3: a certificate from another CA is refused in the manual's words, changing nothing
    // (compared once the server's agent, which every console POST wakes, has settled).
    settle(svc, SERVER, UpdateStatus::Downloading);
    let before = state(&z.store);
    let other = External::new("Other").sign(SERVER, csr);
    s.post_multipart(
        "/console/import-certificate",
        &[
            ("server", Part::Text(SERVER)),
            ("certificate", Part::File(&other)),
        ],
    );
    let (alert, text) = s.flash();
    assert!(alert, "{text}");
    assert!(
        text.contains(
            "CA certificate subject from the CA Certificate chain does not match server \
             certificate issuer."
        ),
        "{text}"
    );
    assert_eq!(state(&z.store), before);

    // The external CA's certificate is imported; the future certificate downloads.
    let issued = ext.sign(SERVER, csr);
    s.post_multipart(
        "/console/import-certificate",
        &[
            ("server", Part::Text(SERVER)),
            ("certificate", Part::File(&issued)),
        ],
    );
    assert_eq!(
        s.flash(),
        (
            false,
            format!(
                "Certificate imported for {SERVER} (3 certificates in its path to the zone CA)."
            )
        )
    );
    let future = s.get("/console/future.pem?server=localhost");
    assert_eq!(future.status, 200, "{}", future.body);
    let expected: String = svc
        .future_chain(&fqdn)
        .unwrap()
        .unwrap()
        .iter()
        .map(|c| c.to_pem())
        .collect();
    assert_eq!(future.body, expected);
    assert!(
        future.body.starts_with(
            std::str::from_utf8(&issued)
                .unwrap()
                .split("-----END CERTIFICATE-----")
                .next()
                .unwrap()
        )
    );
    settle(svc, SERVER, UpdateStatus::Applied);
    let page = s.get("/console");
    assert!(page.body.contains("new certificate uploaded"), "SR4 status");
    assert!(
        page.body
            .contains("href=\"/console/future.pem?server=localhost\"")
    );

    // A second operation: refused while the Change CA runs.
    let before = state(&z.store);
    s.post(
        "/console/remint-ca",
        &format!("confirm=yes&activation={activation}"),
    );
    let (alert, text) = s.flash();
    assert!(alert && text.contains("is in progress"), "{text}");
    assert_eq!(state(&z.store), before);

    // W2 Generate CSR (SR5): a common name for two servers is refused in the library's
    // words; for one server a new CSR replaces the earlier one.
    let page = s.get("/console");
    assert!(page.body.contains("action=\"/console/generate-csr\""));
    s.post(
        "/console/generate-csr",
        "servers=localhost&servers=ps2.zone.example&common_name=localhost&org=Acme&country=US",
    );
    let expected = svc
        .generate_csr(
            &[fqdn.clone(), "ps2.zone.example".parse().unwrap()],
            &CsrFields::default(),
            Some("localhost".into()),
            zonepki::key::KeySpec::default(),
        )
        .unwrap_err()
        .to_string();
    assert_eq!(s.flash(), (true, expected));
    assert_eq!(state(&z.store), before);
    s.post(
        "/console/generate-csr",
        "servers=localhost&common_name=localhost&org=Acme+Two&ou=IT&country=DE",
    );
    let (alert, text) = s.flash();
    assert!(!alert, "{text}");
    assert!(
        text.starts_with("CSR generated for localhost: ") && text.contains("O=Acme Two"),
        "{text}"
    );
    let renewed = &svc.csrs(std::slice::from_ref(&fqdn)).unwrap()[0].1;
    assert_ne!(renewed, csr, "the CSR was not replaced");
    assert_eq!(
        s.get("/console/csr.pem?server=localhost").body,
        renewed.to_pem()
    );
}

#[test]
fn server_chains_and_the_plan_for_a_chosen_time_w2_b3() {
    let z = zone(5);
    let r = start(&z, true);
    let s = Session::open(r.addr, &z.ca);
    let svc = r.handle.service();

    // A server's chain: leaf, then the zone CA, as server_chain gives it.
    let a = s.get("/console/chain.pem?server=localhost");
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("content-type"), Some("application/x-pem-file"));
    let expected: String = svc
        .server_chain(&SERVER.parse().unwrap())
        .unwrap()
        .iter()
        .map(|c| c.to_pem())
        .collect();
    assert_eq!(a.body, expected);
    assert!(
        s.get("/console")
            .body
            .contains("href=\"/console/chain.pem?server=localhost\"")
    );
    // An unknown server: the library's words; unauthenticated: refused.
    let a = s.get("/console/chain.pem?server=nowhere.example");
    assert_eq!(a.status, 409);
    let unknown = svc
        .server_chain(&"nowhere.example".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        a.body.contains(&unknown.replace('"', "&quot;")),
        "{}",
        a.body
    );
    let a = request(
        r.addr,
        &z.ca,
        "GET",
        "/console/chain.pem?server=localhost",
        &[],
        "",
    );
    assert_eq!(a.status, 401);

    // B3 without an operation: the library's refusal.
    let at = activation_in(120);
    let a = s.get(&format!("/console/plan?at={at}"));
    assert_eq!(a.status, 200);
    let t: Timestamp = format!("{at}:00Z").parse().unwrap();
    let none = svc.plan(t).unwrap_err().to_string();
    assert!(a.body.contains(&none.replace('"', "&quot;")), "{}", a.body);
    let a = s.get("/console/plan?at=tomorrow");
    assert!(a.body.contains("is not a time"), "{}", a.body);

    // During a Remint CA, before anyone applied it: per member, after activation.
    s.post(
        "/console/remint-ca",
        &format!("confirm=yes&activation={}", activation_in(60)),
    );
    assert!(!s.flash().0);
    let a = s.get(&format!("/console/plan?at={at}"));
    let plan = svc.plan(t).unwrap();
    assert!(plan.activated_by_then);
    assert!(
        a.body.contains(&format!(
            "<dd id=\"plan-stranded\">{}</dd>",
            plan.stranded.len()
        )),
        "{}",
        a.body
    );
    assert!(a.body.contains("<dd id=\"plan-activated\">yes</dd>"));
    for m in &plan.members {
        assert!(
            a.body
                .contains(&format!("<th scope=\"row\">{}</th>", m.name)),
            "{} is not in the plan",
            m.name
        );
    }
}

#[test]
fn refused_console_requests_are_audited_n3() {
    let z = zone(1);
    let r = start(&z, true);
    let origin = format!("https://{SERVER}:{}", r.addr.port());
    let s = Session::open(r.addr, &z.ca);
    let count = |store: &Store| {
        dump(store.as_ref())
            .unwrap()
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("audit/") && *k != "audit/head")
            .filter(|(_, v)| v["value"]["event"] == "refused")
            .map(|(_, v)| v["value"]["detail"].clone())
            .collect::<Vec<_>>()
    };
    assert!(count(&z.store).is_empty());
    let body = format!(
        "csrf={}&confirm=yes&activation={}",
        s.csrf,
        activation_in(60)
    );
    // Unauthenticated, another site, without a token, a wrong password.
    request(
        r.addr,
        &z.ca,
        "POST",
        "/console/remint-ca",
        &[("Origin", &origin)],
        &body,
    );
    request(
        r.addr,
        &z.ca,
        "POST",
        "/console/cancel",
        &[("Cookie", &s.cookie), ("Origin", "https://evil.example")],
        &body,
    );
    request(
        r.addr,
        &z.ca,
        "POST",
        "/console/baseline",
        &[("Cookie", &s.cookie), ("Origin", &origin)],
        "confirm=yes",
    );
    request(
        r.addr,
        &z.ca,
        "POST",
        "/console/signin",
        &[("Origin", &origin)],
        "password=guess",
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let refusals = loop {
        let r = count(&z.store);
        if r.len() >= 4 {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "4 refusals expected in the audit log, got {r:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let whats: Vec<&str> = refusals
        .iter()
        .map(|r| r["what"].as_str().unwrap())
        .collect();
    for what in [
        "console /console/remint-ca",
        "console /console/cancel",
        "console /console/baseline",
        "console /console/signin",
    ] {
        assert!(whats.contains(&what), "{what} is not audited: {refusals:?}");
    }
    for r in &refusals {
        assert!(
            r["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1"))
        );
        assert!(
            !r.to_string().contains("guess"),
            "a password is audited: {r}"
        );
    }
    let reasons: Vec<&str> = refusals
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"sign in to the console first"));
    assert!(reasons.iter().any(|r| r.contains("another site")));
    assert!(reasons.iter().any(|r| r.contains("form token")));
}

#[test]
fn change_ca_to_an_internal_ca_and_move_ca_role_by_the_console_ci1_mv1() {
    let z = zone(3);
    let r = start(&z, true);
    let s = Session::open(r.addr, &z.ca);
    let svc = r.handle.service();

    // MV1: moving the role to the server that holds it is refused in the library's words.
    let before = state(&z.store);
    let expected = svc
        .move_ca(&SERVER.parse().unwrap())
        .unwrap_err()
        .to_string();
    s.post("/console/move-ca", &format!("server={SERVER}"));
    assert_eq!(s.flash(), (true, expected));
    assert_eq!(state(&z.store), before);

    // CI1: validity outside 1 to 10 years is refused; then the new CA on the chosen server.
    let body = |years: u32| {
        format!(
            "confirm=yes&target=internal&server={SERVER}&subject=Console+Internal+CA&key=p256\
             &validity={years}&activation={}",
            activation_in(120)
        )
    };
    s.post("/console/change-ca", &body(11));
    let (alert, text) = s.flash();
    assert!(alert, "{text}");
    assert_eq!(
        text,
        zonepki::ca::ValidityYears::try_from(11u32)
            .unwrap_err()
            .to_string()
    );
    assert_eq!(state(&z.store), before);
    s.post("/console/change-ca", &body(3));
    let (alert, text) = s.flash();
    assert!(!alert, "{text}");
    assert!(
        text.starts_with("The Change CA operation has been initiated"),
        "{text}"
    );
    let view = svc.op_show().unwrap();
    assert_eq!(view.kind, "change_ca_internal");
    let op = svc.op().unwrap().unwrap();
    let future = zonepki::cert::Certificate::try_from(op.kind.future_ca().unwrap()).unwrap();
    assert_eq!(future.common_name().as_deref(), Some("Console Internal CA"));
}

#[test]
fn remint_certificate_by_the_console_sr1_w2() {
    let z = zone(3);
    let r = start(&z, true);
    let s = Session::open(r.addr, &z.ca);
    let svc = r.handle.service();
    let page = s.get("/console");
    assert!(page.body.contains("action=\"/console/remint-certificate\""));
    assert!(page.body.contains("id=\"rcert-cn-row\""));
    // Every id on the page is unique (labels, scripts and the browser test find them by id).
    let mut ids: Vec<&str> = page
        .body
        .split(" id=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    let all = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all, "an id is used twice on the console page");
    let at = activation_in(120);
    let before = state(&z.store);
    // A common name for two servers: refused in the library's words, nothing changes.
    let fqdns = vec![SERVER.parse().unwrap(), "ps2.zone.example".parse().unwrap()];
    s.post(
        "/console/remint-certificate",
        &format!(
            "servers=localhost&servers=ps2.zone.example&update_name=SR&activation={at}&common_name=cn.example"
        ),
    );
    let expected = svc
        .start_server_remint(
            zonepki::service::ServerRemintRequest::new(
                fqdns,
                "SR",
                ActivationRequest::At(Timestamp::now_utc().plus(Duration::from_secs(7200))),
            )
            .with_common_name("cn.example"),
        )
        .unwrap_err()
        .to_string();
    assert_eq!(s.flash(), (true, expected));
    assert_eq!(state(&z.store), before);
    // No update name: the dialog's rule.
    s.post(
        "/console/remint-certificate",
        &format!("servers=localhost&activation={at}"),
    );
    assert_eq!(
        s.flash(),
        (true, "Specify the system update's name.".to_string())
    );
    assert_eq!(state(&z.store), before);
    // One server: the Server Remint starts, as `zonectl server remint` starts it.
    s.post(
        "/console/remint-certificate",
        &format!("servers=localhost&update_name=SR1&activation={at}&common_name=localhost"),
    );
    let (alert, text) = s.flash();
    assert!(!alert, "{text}");
    assert!(
        text.starts_with("The Server Remint \"SR1\" has been initiated"),
        "{text}"
    );
    let v = svc.op_show().unwrap();
    assert_eq!(v.kind, zonepki::view::OperationKind::ServerRemint);
    assert_eq!(v.update_name, "SR1");
    // A second operation: refused while this one runs.
    let once = state(&z.store);
    s.post(
        "/console/remint-certificate",
        &format!("servers=ps2.zone.example&update_name=SR2&activation={at}"),
    );
    let (alert, text) = s.flash();
    assert!(alert && text.contains("in progress"), "{text}");
    assert_eq!(state(&z.store), once);
}
