//! Several Primary Servers on one PostgreSQL store, as real processes (issue 12 items 2 and 5;
//! D1, D2, N6, B6): three zoned (ps1 the certificate server, ps2, ps3) on one database, device
//! agents enrolled and polling through ps2 and ps3 (their credentials signed by ps1 over
//! server-to-server calls), two administrators racing to start an operation on two servers
//! (exactly one wins), a Remint CA started through ps3, the certificate server killed with
//! SIGKILL in the middle of it: what needs it (an enrolment) is refused saying so and changes
//! nothing; ps2 killed too: its devices poll ps3 instead; ps3 carries on, the activation runs
//! exactly once with ps1 and ps2 down, and both resume when restarted. Then OpenSSL checks
//! what ps2 and ps3 serve.
//!
//! Every wait is bounded; every process is killed by PID on every path (`Procs`' drop).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/procs.rs"]
mod procs;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use zonepki::clock::Timestamp;

use common::pg::TestDb;
use procs::{Procs, listening_port};

const ZONE: &str = "Acme";
const DEVICES: usize = 6;
/// A device recorded before the operation, whose agent enrols only after it (with a token
/// made before it): it waits for the certificate server while that one is down.
const LATE: &str = "dev-late";

fn ps(n: usize) -> String {
    format!("ps{n}.acme.example")
}

fn text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s
}

struct Zone {
    dir: tempfile::TempDir,
    db: TestDb,
    zonectl: PathBuf,
    zoned: PathBuf,
    agent: PathBuf,
    /// The port of ps1..ps3 (index 1..=3), 0 while not started yet.
    ports: [u16; 4],
    starts: [u32; 4],
    fp: String,
    procs: Procs,
}

impl Zone {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn url(&self, n: usize) -> String {
        format!("https://127.0.0.1:{}", self.ports[n])
    }

    /// ps1's member directory is in the fleet `zonectl init` made; the others' are where their
    /// agents enrolled, each on "its own host".
    fn state(&self, n: usize) -> PathBuf {
        match n {
            1 => self.path("fleet").join(ps(1)),
            n => self.path(&format!("host{n}")).join(ps(n)),
        }
    }

    fn local(&self, args: &[&str]) -> Output {
        Command::new(&self.zonectl)
            .args(["--store", &self.db.url])
            .arg("--root")
            .arg(self.path("fleet"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// zonectl through ps`n`'s admin API (each zoned wrote its own admin token).
    fn remote(&self, n: usize, args: &[&str]) -> Output {
        Command::new(&self.zonectl)
            .args(["--server", &self.url(n), "--ca-sha256", &self.fp])
            .arg("--admin-token-file")
            .arg(self.state(n).join("admin-token"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn remote_ok(&self, n: usize, args: &[&str]) -> String {
        let out = self.remote(n, args);
        assert!(
            out.status.success(),
            "zonectl via ps{n} {args:?}: {}\n{}",
            text(&out),
            self.logs()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn remote_json(&self, n: usize, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.remote_ok(n, &a)).unwrap()
    }

    fn log_path(&self, n: usize, start: u32) -> PathBuf {
        self.path(&format!("ps{n}-{start}.log"))
    }

    /// The tail of every zoned log so far, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for n in 1..=3 {
            for i in 1..=self.starts[n] {
                let log = std::fs::read_to_string(self.log_path(n, i)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                out.push_str(&format!("--- ps{n} start {i} (last lines) ---\n"));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    fn all_logs(&self, n: usize) -> String {
        (1..=self.starts[n])
            .map(|i| std::fs::read_to_string(self.log_path(n, i)).unwrap_or_default())
            .collect()
    }

    /// Starts ps`n`'s zoned on the shared store (a free port) and waits, bounded, for its
    /// `listening on` line.
    fn start_zoned(&mut self, n: usize) {
        self.starts[n] += 1;
        let log = std::fs::File::create(self.log_path(n, self.starts[n])).unwrap();
        let mut child = Command::new(&self.zoned)
            .args(["--store", &self.db.url, "--fqdn", &ps(n)])
            .arg("--state")
            .arg(self.state(n))
            .args(["--listen", "127.0.0.1:0", "--advertise-host", "127.0.0.1"])
            .args(["--log-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let port = listening_port(&mut child, 60);
        self.procs.add(&ps(n), child);
        self.ports[n] = port.unwrap_or_else(|e| panic!("ps{n}: {e}\n{}", self.logs()));
    }

    /// `zone-agent enroll` at ps`n`, with the other servers of `also` as its fallbacks.
    fn enroll(&self, n: usize, name: &str, state: &Path) -> Output {
        self.enroll_also(n, &[], name, state)
    }

    fn enroll_also(&self, n: usize, also: &[usize], name: &str, state: &Path) -> Output {
        let mut cmd = Command::new(&self.agent);
        cmd.args(["enroll", "--server", &self.url(n)]);
        for m in also {
            cmd.args(["--server", &self.url(*m)]);
        }
        cmd.args(["--name", name])
            .args(["--ca-sha256", &self.fp])
            .arg("--token-file")
            .arg(self.path("tokens").join(format!("{name}.token")))
            .arg("--state")
            .arg(state)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn agent_dir(&self, name: &str) -> PathBuf {
        self.path("agents").join(name)
    }

    fn run_agent(&mut self, name: &str) {
        let log = std::fs::File::create(self.path(&format!("agent-{name}.log"))).unwrap();
        let child = Command::new(&self.agent)
            .arg("run")
            .arg("--state")
            .arg(self.agent_dir(name))
            .args(["--interval", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs.add(name, child);
    }

    /// Waits (bounded) until `f` holds of `op show --json` through ps`n`; the last view.
    fn wait_op(&self, n: usize, what: &str, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let out = self.remote(n, &["op", "show", "--json"]);
            if out.status.success() {
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                if f(&v) {
                    return v;
                }
                assert!(
                    Instant::now() < deadline,
                    "{what}: not within {secs} s; last view:\n{v:#}\n{}",
                    self.logs()
                );
            } else {
                assert!(
                    Instant::now() < deadline,
                    "{what}: op show failed: {}\n{}",
                    text(&out),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The store's records without the audit log, through ps`n`.
    fn state_dump(&self, n: usize) -> Value {
        let mut d = self.remote_json(n, &["store", "dump"]);
        d.as_object_mut()
            .unwrap()
            .retain(|k, _| !k.starts_with("audit/"));
        d
    }

    /// How many audit entries of `event` the store holds, through ps`n`.
    fn audited(&self, n: usize, event: &str) -> usize {
        let d = self.remote_json(n, &["store", "dump"]);
        d.as_object()
            .unwrap()
            .iter()
            .filter(|(k, v)| k.starts_with("audit/") && v["value"]["event"] == event)
            .count()
    }
}

fn statuses(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (list, status) in [("servers", "status"), ("devices", "status")] {
        for m in v[list].as_array().unwrap() {
            let name = m["fqdn"].as_str().or(m["name"].as_str()).unwrap();
            out.push((name.to_string(), m[status].as_str().unwrap().to_string()));
        }
    }
    out
}

fn devices() -> Vec<String> {
    (1..=DEVICES).map(|i| format!("dev-{i}")).collect()
}

/// curl against ps1 (at 127.0.0.1:`port`, its name checked) with a member's credential
/// directory (cert.pem, key.pem, trust.pem).
fn curl(port: u16, cred: &Path, path: &str, body: &str) -> (Option<u16>, String) {
    let host = ps(1);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .arg("--cacert")
        .arg(cred.join("trust.pem"))
        .arg("--cert")
        .arg(cred.join("cert.pem"))
        .arg("--key")
        .arg(cred.join("key.pem"))
        .args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ])
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .unwrap();
    let t = text(&out);
    let code = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .filter(|c| *c != 0);
    (code, t)
}

#[cfg_attr(
    not(zonepki_has_postgres),
    ignore = "needs PostgreSQL: set ZONEPKI_TEST_POSTGRES (see tests/common/pg.rs); .ci/run starts one"
)]
#[cfg_attr(
    not(all(zonepki_has_openssl, unix)),
    ignore = "needs openssl and curl on PATH; .ci/run installs them"
)]
#[test]
fn three_zoned_on_one_postgres_d1_d2_n6() {
    common::require("curl");
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("[{:>5.1} s] {what}", t0.elapsed().as_secs_f64());
    let mut z = Zone {
        dir: tempfile::tempdir().unwrap(),
        db: TestDb::new("net_multi"),
        zonectl: common::zonectl_bin().to_path_buf(),
        zoned: common::example_bin("zoned"),
        agent: common::example_bin("zone_agent"),
        ports: [0; 4],
        starts: [0; 4],
        fp: String::new(),
        procs: Procs::default(),
    };
    // The zone, made on the shared store; ps1 holds the CA key.
    let out = z.local(&["init", "--zone", ZONE, "--first-server", &ps(1)]);
    assert!(out.status.success(), "{}", text(&out));
    let ca: Value = serde_json::from_slice(&z.local(&["ca", "show", "--json"]).stdout).unwrap();
    z.fp = ca["sha256"].as_str().unwrap().to_string();
    let old_ca = z.path("old-ca.pem");
    let out = z.local(&["ca", "export", "--out", old_ca.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    z.start_zoned(1);
    // ps2 and ps3 recorded through ps1; each enrols on its own host and starts its zoned.
    let tokens = z.path("tokens");
    for n in [2, 3] {
        z.remote_ok(1, &["server", "add", &ps(n), "--role", "primary"]);
        z.remote_ok(
            1,
            &[
                "member",
                "token",
                &ps(n),
                "--out-dir",
                tokens.to_str().unwrap(),
            ],
        );
        let out = z.enroll(1, &ps(n), &z.state(n));
        assert!(out.status.success(), "enroll ps{n}: {}", text(&out));
        z.start_zoned(n);
    }
    step("three zoned up");
    // Every zoned recorded where it listens (D2), each once.
    let dump = z.state_dump(2);
    for n in 1..=3 {
        assert_eq!(
            dump[format!("endpoint/{}", ps(n))]["value"]["url"],
            format!("https://127.0.0.1:{}", z.ports[n]),
            "{dump:#}"
        );
    }

    // --- Devices recorded through ps2, tokens through ps3, enrolled at ps2 and ps3 ---
    let mut add = vec!["device", "add"];
    let names = devices();
    add.extend(names.iter().map(String::as_str));
    add.push(LATE);
    z.remote_ok(2, &add);
    let mut tok = vec!["member", "token"];
    tok.extend(names.iter().map(String::as_str));
    tok.extend([LATE, "--out-dir", tokens.to_str().unwrap()]);
    z.remote_ok(3, &tok);
    for (i, d) in names.iter().enumerate() {
        // Each knows both ps2 and ps3 (D1): the first one it enrols with, the other when the
        // first cannot be reached.
        let n = 2 + i % 2;
        let out = z.enroll_also(n, &[5 - n], d, &z.agent_dir(d));
        assert!(
            out.status.success(),
            "enroll {d} at ps{n}: {}\n{}",
            text(&out),
            z.logs()
        );
    }
    // D2: ps2 and ps3 had ps1 sign; neither holds a CA key.
    let ps1_log = z.all_logs(1);
    for n in [2, 3] {
        assert!(
            ps1_log.contains(&format!("\"caller\":\"{}\"", ps(n))),
            "ps1 logged no server-to-server call of ps{n}:\n{}",
            z.logs()
        );
        let ca_dir = z.state(n).join("ca");
        let held = std::fs::read_dir(&ca_dir).map_or(0, |d| d.count());
        assert_eq!(held, 0, "ps{n} holds CA files in {}", ca_dir.display());
    }
    // A credential enrolled at ps3 validates to the zone CA (OpenSSL, clientAuth).
    let cred = z.agent_dir("dev-2").join("current");
    let out = common::tool("openssl")
        .args(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile"])
        .arg(&old_ca)
        .arg(cred.join("cert.pem"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && text(&out).contains(": OK"),
        "{}",
        text(&out)
    );
    step("devices enrolled at ps2 and ps3");

    // --- Refusals of the server-to-server path, each audited ---
    let refused = z.audited(2, "refused");
    let call = r#"{"member":"ps1.acme.example","request":{"call":"ping"}}"#;
    // A device's credential is no Primary Server's.
    let (code, out) = curl(z.ports[1], &cred, "/v1/peer/call", call);
    assert_eq!(code, Some(403), "{out}");
    assert!(out.contains("not a Primary Server"), "{out}");
    // A Primary Server asking ps1 for another member's agent: no relaying.
    let ps2_cred = z.state(2).join("current");
    let relay = r#"{"member":"ps3.acme.example","request":{"call":"ping"}}"#;
    let (code, out) = curl(z.ports[1], &ps2_cred, "/v1/peer/call", relay);
    assert_eq!(code, Some(400), "{out}");
    assert!(out.contains("only for its own agent"), "{out}");
    // Garbage.
    let (code, out) = curl(z.ports[1], &ps2_cred, "/v1/peer/call", "{not json");
    assert_eq!(code, Some(400), "{out}");
    // And a Primary Server's proper call passes.
    let (code, out) = curl(z.ports[1], &ps2_cred, "/v1/peer/call", call);
    assert_eq!(code, Some(200), "{out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while z.audited(2, "refused") < refused + 3 {
        assert!(Instant::now() < deadline, "the refusals were not audited");
        std::thread::sleep(Duration::from_millis(200));
    }

    // --- Two administrators on two servers start conflicting operations at once (B6) ---
    for d in &names {
        z.run_agent(d);
    }
    std::thread::sleep(Duration::from_secs(2));
    let activation = Timestamp::now_utc().plus(Duration::from_secs(40));
    let at = activation.to_rfc3339();
    // Both start a Remint CA (the same activation, another update name): one operation at a
    // time per zone, so exactly one may start, whichever server each command went through.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| z.remote(2, &["ca", "remint", "--activate-at", &at]));
        let b = s.spawn(|| {
            z.remote(
                3,
                &[
                    "ca",
                    "remint",
                    "--activate-at",
                    &at,
                    "--update-name",
                    "Remint CA (ps3)",
                ],
            )
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    let wins = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(
        wins,
        1,
        "exactly one of two racing operations must start:\nvia ps2: {}\nvia ps3: {}",
        text(&a),
        text(&b)
    );
    let loser = if a.status.success() { &b } else { &a };
    assert!(
        text(loser).contains("in progress") || text(loser).contains("changed"),
        "the refused start says why: {}",
        text(loser)
    );
    assert_eq!(z.audited(3, "op.start"), 1);
    let v = z.remote_json(2, &["op", "show"]);
    assert_eq!(v["kind"], "remint_ca", "{v:#}");
    step("operation started");
    // Replication and staging on every member, servers' future certificates signed by ps1.
    z.wait_op(2, "staging", 35, |v| {
        v["replication"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "replicated")
            && statuses(v)
                .iter()
                .all(|(n, s)| n == LATE || s == "applied" || s == "activated")
            && v["servers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["certificate_status"] == "new certificate created")
    });
    step("staged");

    // --- The certificate server killed mid-operation ---
    z.procs.kill(&ps(1));
    let before = z.state_dump(2);
    let out = z.enroll(2, LATE, &z.agent_dir(LATE));
    assert!(
        !out.status.success(),
        "enrolled without the certificate server"
    );
    assert!(
        text(&out).contains("cannot be reached") && text(&out).contains(&ps(1)),
        "the refusal says what it waits for: {}",
        text(&out)
    );
    assert!(text(&out).contains("503"), "{}", text(&out));
    assert_eq!(
        z.state_dump(2),
        before,
        "a refused enrolment changed the zone"
    );
    step("ps1 killed; an enrolment waits for it");
    // ps2 killed too: its devices poll ps3 instead (their other server).
    z.procs.kill(&ps(2));
    step("ps2 killed");
    // ps3 carries on: the activation runs (exactly once) and every device reports it.
    let v = z.wait_op(3, "activation", 80, |v| {
        v["state"] == "activated"
            && statuses(v)
                .iter()
                .all(|(n, s)| n == &ps(1) || n == &ps(2) || n == LATE || s == "activated")
    });
    assert_eq!(z.audited(3, "op.activate"), 1, "{v:#}");
    let failed_over = (1..=DEVICES)
        .step_by(2)
        .filter(|i| {
            std::fs::read_to_string(z.path(&format!("agent-dev-{i}.log")))
                .unwrap_or_default()
                .contains("trying the next one")
        })
        .count();
    assert!(failed_over > 0, "no device of ps2 polled ps3 instead");
    step("activated with ps1 and ps2 down");
    // ps1 and ps2 come back: they resume (their own agents switch), the waiting enrolment
    // passes now, under the new CA.
    z.start_zoned(1);
    z.start_zoned(2);
    z.wait_op(2, "ps1 activated", 60, |v| {
        statuses(v)
            .iter()
            .all(|(n, s)| n == LATE || s == "activated")
    });
    let out = z.enroll(3, LATE, &z.agent_dir(LATE));
    assert!(out.status.success(), "{}\n{}", text(&out), z.logs());
    assert_eq!(z.audited(2, "op.activate"), 1);
    step("ps1 resumed");

    // --- What ps2 and ps3 serve: OpenSSL with the new CA, and with the old one (bridge) ---
    let trust = z.agent_dir("dev-1").join("current/trust.pem");
    for n in [2, 3] {
        for (ca, what) in [(&trust, "the new CA"), (&old_ca, "the old CA (bridge)")] {
            let out = common::tool("openssl")
                .args(["s_client", "-connect", &format!("127.0.0.1:{}", z.ports[n])])
                .args(["-verify_return_error", "-brief", "-CAfile"])
                .arg(ca)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "s_client ps{n} with {what}: {}",
                text(&out)
            );
        }
    }
    z.remote_ok(3, &["audit", "verify"]);
    for d in &names {
        z.procs.kill(d);
    }
    for n in 1..=3 {
        let status = z.procs.terminate(&ps(n));
        assert!(
            status.success(),
            "ps{n} after SIGTERM: {status}\n{}",
            z.logs()
        );
    }
    step("done");
}
