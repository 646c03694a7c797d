//! A zone on real processes (issue 11 item 5; N1-N7, B1, B7): zoned and, as separate
//! processes, an Authentication Satellite's agent and 20 device agents on 127.0.0.1, through a
//! whole Remint CA: replication, staging, a device stopped through activation and recovered when
//! it comes back, zoned killed with SIGKILL and restarted between staging and activation, agents
//! switching at the activation time while zoned is down; then OpenSSL checks what is served and
//! issued. And the refusals of the wire, each audited with the store otherwise unchanged.
//!
//! Every wait is bounded; every process is killed by PID on every path (`Procs`' drop).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/procs.rs"]
mod procs;

use procs::Procs;

use std::io::{Read, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use zonepki::clock::Timestamp;
use zonepki::protocol::{self, AgentMessage, AgentState};

const PS1: &str = "ps1.acme.example";
const SAT1: &str = "sat1.acme.example";
const DEVICES: usize = 20;
/// The device that is stopped through activation.
const AWAY: &str = "dev-20";

struct Zone {
    dir: tempfile::TempDir,
    zonectl: PathBuf,
    zoned: PathBuf,
    agent: PathBuf,
    port: u16,
    fp: String,
    procs: Procs,
    starts: u32,
}

fn text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s
}

impl Zone {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn state(&self) -> PathBuf {
        self.path("fleet").join(PS1)
    }

    fn token_file(&self) -> PathBuf {
        self.state().join("admin-token")
    }

    /// zonectl on the store file (zoned not running).
    fn local(&self, args: &[&str]) -> Output {
        Command::new(&self.zonectl)
            .arg("--store")
            .arg(self.path("zone.db"))
            .arg("--root")
            .arg(self.path("fleet"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// zonectl through zoned's admin API.
    fn remote(&self, args: &[&str]) -> Output {
        Command::new(&self.zonectl)
            .args(["--server", &self.url(), "--ca-sha256", &self.fp])
            .arg("--admin-token-file")
            .arg(self.token_file())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn remote_ok(&self, args: &[&str]) -> String {
        let out = self.remote(args);
        assert!(
            out.status.success(),
            "zonectl {args:?}: {}\n{}",
            text(&out),
            self.logs()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn remote_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.remote_ok(&a)).unwrap()
    }

    /// The tail of every zoned log so far, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.starts {
            let log =
                std::fs::read_to_string(self.path(&format!("zoned-{i}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            out.push_str(&format!("--- zoned start {i} (last lines) ---\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }

    /// Starts zoned (on `self.port`, or a free port the first time) and waits, bounded, for its
    /// `listening on` line.
    fn start_zoned(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.path(&format!("zoned-{}.log", self.starts))).unwrap();
        let mut child = Command::new(&self.zoned)
            .arg("--store")
            .arg(self.path("zone.db"))
            .args(["--fqdn", PS1])
            .arg("--state")
            .arg(self.state())
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let port = procs::listening_port(&mut child, 60);
        self.procs.add("zoned", child);
        let port = port.unwrap_or_else(|e| panic!("zoned: {e}\n{}", self.logs()));
        assert!(
            self.port == 0 || self.port == port,
            "zoned moved to port {port}"
        );
        self.port = port;
    }

    fn enroll(&self, name: &str, state: &Path, token: &Path) -> Output {
        Command::new(&self.agent)
            .args([
                "enroll",
                "--server",
                &self.url(),
                "--name",
                name,
                "--ca-sha256",
                &self.fp,
            ])
            .arg("--token-file")
            .arg(token)
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

    /// Waits (bounded) until `f` holds of `op show --json`; the last view.
    fn wait_op(&self, what: &str, secs: u64, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let out = self.remote(&["op", "show", "--json"]);
            if out.status.success() {
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                if f(&v) {
                    return v;
                }
                if Instant::now() > deadline {
                    panic!(
                        "{what}: not within {secs} s; last view:\n{v:#}\n{}",
                        self.logs()
                    );
                }
            } else if Instant::now() > deadline {
                panic!("{what}: op show failed: {}\n{}", text(&out), self.logs());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The store without the audit log, through zoned.
    fn state_dump(&self) -> Value {
        let mut d = self.remote_json(&["store", "dump"]);
        d.as_object_mut()
            .unwrap()
            .retain(|k, _| !k.starts_with("audit/"));
        d
    }

    fn refusals(&self) -> usize {
        let d = self.remote_json(&["store", "dump"]);
        d.as_object()
            .unwrap()
            .iter()
            .filter(|(k, v)| k.starts_with("audit/") && v["value"]["event"] == "refused")
            .count()
    }

    /// curl against zoned's agent port as `member` (its credential), with the zone's name for
    /// 127.0.0.1 so that curl checks the server's name.
    fn curl(&self, cred: &Path, path: &str, body: &Path) -> (Option<u16>, String) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
            .args(["--resolve", &format!("{PS1}:{}:127.0.0.1", self.port)])
            .arg("--cacert")
            .arg(cred.join("trust.pem"))
            .arg("--cert")
            .arg(cred.join("cert.pem"))
            .arg("--key")
            .arg(cred.join("key.pem"))
            .args(["-H", "content-type: application/json", "--data-binary"])
            .arg(format!("@{}", body.display()))
            .arg(format!("https://{PS1}:{}{path}", self.port))
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
}

fn statuses(v: &Value) -> Vec<(String, String)> {
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn device_names() -> Vec<String> {
    (1..=DEVICES).map(|i| format!("dev-{i}")).collect()
}

#[cfg_attr(
    not(all(zonepki_has_openssl, unix)),
    ignore = "needs openssl and curl on PATH; .ci/run installs them"
)]
#[test]
fn a_whole_remint_ca_on_real_processes_n1_n7() {
    common::require("curl");
    let t0 = Instant::now();
    let mut z = Zone {
        dir: tempfile::tempdir().unwrap(),
        zonectl: common::zonectl_bin().to_path_buf(),
        zoned: common::example_bin("zoned"),
        agent: common::example_bin("zone_agent"),
        port: 0,
        fp: String::new(),
        procs: Procs::default(),
        starts: 0,
    };
    // The zone, made where its files are; its CA's fingerprint for the pins.
    let out = z.local(&["init", "--zone", "Acme", "--first-server", PS1]);
    assert!(out.status.success(), "{}", text(&out));
    let ca: Value = serde_json::from_slice(&z.local(&["ca", "show", "--json"]).stdout).unwrap();
    z.fp = ca["sha256"].as_str().unwrap().to_string();
    let old_ca = z.path("old-ca.pem");
    assert!(
        z.local(&["ca", "export", "--out", old_ca.to_str().unwrap()])
            .status
            .success()
    );

    eprintln!("[{:>5.1} s] zoned started", t0.elapsed().as_secs_f64());
    z.start_zoned();
    // Members recorded through zoned; their agents enrol with tokens.
    z.remote_ok(&[
        "server",
        "add",
        SAT1,
        "--role",
        "auth-satellite",
        "--parent",
        PS1,
    ]);
    let devices = device_names();
    let mut add = vec!["device", "add"];
    add.extend(devices.iter().map(String::as_str));
    z.remote_ok(&add);
    let tokens = z.path("tokens");
    let mut tok = vec!["member", "token", SAT1];
    tok.extend(devices.iter().map(String::as_str));
    tok.extend(["--out-dir", tokens.to_str().unwrap()]);
    z.remote_ok(&tok);
    let mut members = vec![SAT1.to_string()];
    members.extend(devices.iter().cloned());
    for m in &members {
        let out = z.enroll(m, &z.agent_dir(m), &tokens.join(format!("{m}.token")));
        assert!(
            out.status.success(),
            "enroll {m}: {}\n{}",
            text(&out),
            z.logs()
        );
        let key = z.agent_dir(m).join("current/key.pem");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    eprintln!("[{:>5.1} s] members enrolled", t0.elapsed().as_secs_f64());
    // --- Refusals, each audited, the store otherwise unchanged (N3) ---
    let before = z.state_dump();
    let refused_before = z.refusals();
    let mut expected = 0;
    // A reused token.
    let out = z.enroll("dev-1", &z.path("again/dev-1"), &tokens.join("dev-1.token"));
    assert!(!out.status.success());
    assert!(text(&out).contains("already used"), "{}", text(&out));
    expected += 1;
    // An expired token: made two hours ago, valid for one.
    let two_hours_ago = Timestamp::now_utc()
        .minus(Duration::from_secs(7200))
        .to_rfc3339();
    let old_tokens = z.path("old-tokens");
    z.remote_ok(&[
        "member",
        "token",
        "dev-2",
        "--valid-hours",
        "1",
        "--out-dir",
        old_tokens.to_str().unwrap(),
        "--now",
        &two_hours_ago,
    ]);
    let out = z.enroll(
        "dev-2",
        &z.path("again/dev-2"),
        &old_tokens.join("dev-2.token"),
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("expired"), "{}", text(&out));
    expected += 1;
    let before = {
        // The new token record is the one change the command above made: take the state
        // after it as the reference.
        let _ = before;
        z.state_dump()
    };
    // dev-1's credential reporting for dev-2.
    let cred1 = z.agent_dir("dev-1").join("current");
    let forged = z.path("forged.json");
    let msg = AgentMessage::new("dev-2", Timestamp::now_utc(), AgentState::default());
    std::fs::write(&forged, protocol::encode(&msg)).unwrap();
    let (code, out) = z.curl(&cred1, "/v1/poll", &forged);
    assert_eq!(code, Some(403), "{out}");
    assert!(out.contains("speaks only for itself"), "{out}");
    expected += 1;
    // Garbage and an oversized body.
    let garbage = z.path("garbage.json");
    std::fs::write(&garbage, b"\x00\x01garbage{{").unwrap();
    let (code, out) = z.curl(&cred1, "/v1/poll", &garbage);
    assert_eq!(code, Some(400), "{out}");
    expected += 1;
    let big = z.path("big.json");
    std::fs::write(&big, vec![b' '; 3 * 1024 * 1024]).unwrap();
    let (code, out) = z.curl(&cred1, "/v1/poll", &big);
    assert!(code == Some(413) || code.is_none(), "{out}");
    expected += 1;
    // A client certificate from another zone: the handshake is refused.
    let other = tempfile::tempdir().unwrap();
    let out = Command::new(&z.zonectl)
        .arg("--store")
        .arg(other.path().join("zone.db"))
        .arg("--root")
        .arg(other.path().join("fleet"))
        .args(["init", "--zone", "Other", "--first-server", PS1])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let foreign = z.path("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    let ofleet = other.path().join("fleet").join(PS1).join("current");
    std::fs::copy(ofleet.join("cert.pem"), foreign.join("cert.pem")).unwrap();
    std::fs::copy(ofleet.join("key.pem"), foreign.join("key.pem")).unwrap();
    std::fs::copy(cred1.join("trust.pem"), foreign.join("trust.pem")).unwrap();
    let (code, out) = z.curl(&foreign, "/v1/poll", &forged);
    assert!(code.is_none() || code == Some(401), "{out}");
    expected += 1;
    // No client certificate at all.
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .args(["--resolve", &format!("{PS1}:{}:127.0.0.1", z.port)])
        .arg("--cacert")
        .arg(cred1.join("trust.pem"))
        .args(["--data-binary", "{}"])
        .arg(format!("https://{PS1}:{}/v1/poll", z.port))
        .output()
        .unwrap();
    assert!(text(&out).trim_end().ends_with("401"), "{}", text(&out));
    expected += 1;
    // An idle connection that never finishes its request is closed (bounded read).
    let mut idle = TcpStream::connect(("127.0.0.1", z.port)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    idle.write_all(b"\x16\x03\x01").unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(
        n, 0,
        "zoned answered a connection that never finished its handshake"
    );
    assert!(started.elapsed() < Duration::from_secs(59));
    // Each refusal audited; nothing else changed.
    assert_eq!(z.state_dump(), before);
    let refused = z.refusals() - refused_before;
    assert!(
        refused >= expected,
        "{refused} refusals audited, {expected} expected\n{}",
        z.logs()
    );

    eprintln!("[{:>5.1} s] refusals checked", t0.elapsed().as_secs_f64());
    // --- The Remint CA, every agent its own process ---
    for m in &members {
        z.run_agent(m);
    }
    // Every agent has polled once (each reports its trust).
    std::thread::sleep(Duration::from_secs(3));
    // dev-20 goes away before the operation and stays away through activation.
    z.procs.kill(AWAY);
    let activation = Timestamp::now_utc().plus(Duration::from_secs(30));
    z.remote_ok(&["ca", "remint", "--activate-at", &activation.to_rfc3339()]);
    // Replication (ps1), then staging on every member but dev-20.
    z.wait_op("staging", 30, |v| {
        v["replication"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "replicated")
            && statuses(v).iter().all(|(n, s)| n == AWAY || s == "applied")
            && v["servers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["certificate_status"] == "new certificate created")
    });
    eprintln!("[{:>5.1} s] staged", t0.elapsed().as_secs_f64());
    // zoned killed and restarted between staging and activation: it resumes.
    z.procs.kill("zoned");
    z.start_zoned();
    let v = z.remote_json(&["op", "show"]);
    assert_eq!(v["state"], "assigned", "{v:#}");
    eprintln!("[{:>5.1} s] restarted", t0.elapsed().as_secs_f64());
    // zoned down over the activation time: the agents switch by their own clocks (N5).
    let until = |t: Timestamp| {
        let now = Timestamp::now_utc().unix();
        Duration::from_secs(u64::try_from(t.unix() - now).unwrap_or(0))
    };
    std::thread::sleep(until(activation.minus(Duration::from_secs(4))));
    z.procs.kill("zoned");
    std::thread::sleep(until(activation.plus(Duration::from_secs(4))));
    for m in ["dev-1", SAT1] {
        let trust = std::fs::read_to_string(z.agent_dir(m).join("current/trust.pem")).unwrap();
        let old = std::fs::read_to_string(&old_ca).unwrap();
        assert!(
            !trust.starts_with(old.trim()),
            "{m} has not switched to the new CA by its own clock while zoned was down"
        );
    }
    z.start_zoned();
    let v = z.wait_op("activation reported", 60, |v| {
        v["state"] == "activated"
            && statuses(v).iter().all(|(n, s)| {
                if n == AWAY {
                    s == "stranded" || s == "bridged"
                } else {
                    s == "activated"
                }
            })
    });
    assert!(
        v["stranded"].as_array().map(Vec::len).unwrap_or(0) <= 1,
        "{v:#}"
    );
    eprintln!(
        "[{:>5.1} s] activation reported",
        t0.elapsed().as_secs_f64()
    );
    // dev-20 comes back: recovered.
    z.run_agent(AWAY);
    z.wait_op("dev-20 recovered", 60, |v| {
        statuses(v)
            .iter()
            .any(|(n, s)| n == AWAY && (s == "recovered" || s == "activated"))
    });

    eprintln!("[{:>5.1} s] dev-20 recovered", t0.elapsed().as_secs_f64());
    // --- OpenSSL checks what is served and issued ---
    let trust = z.agent_dir("dev-1").join("current/trust.pem");
    let out = common::tool("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", z.port)])
        .args(["-verify_return_error", "-brief", "-CAfile"])
        .arg(&trust)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "s_client: {}", text(&out));
    assert!(text(&out).contains("Verification: OK"), "{}", text(&out));
    // A client that still trusts only the old CA validates the bridge chain (N4, B1).
    let out = common::tool("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{}", z.port)])
        .args(["-verify_return_error", "-brief", "-CAfile"])
        .arg(&old_ca)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "s_client with the old CA: {}",
        text(&out)
    );
    // The satellite's chain.
    let cur = z.agent_dir(SAT1).join("current");
    let chain =
        zonepki::cert::bundle::read_certificates(&std::fs::read(cur.join("cert.pem")).unwrap())
            .unwrap();
    let chain: Vec<_> = chain.iter().map(|c| c.der().clone()).collect();
    let leaf = z.path("sat-leaf.pem");
    let rest = z.path("sat-rest.pem");
    std::fs::write(&leaf, zonepki::cert::bundle::to_pem(&chain[..1])).unwrap();
    std::fs::write(&rest, zonepki::cert::bundle::to_pem(&chain[1..])).unwrap();
    let mut cmd = common::tool("openssl");
    cmd.args(["verify", "-x509_strict", "-purpose", "sslserver", "-CAfile"])
        .arg(cur.join("trust.pem"));
    if chain.len() > 1 {
        cmd.arg("-untrusted").arg(&rest);
    }
    let out = cmd.arg(&leaf).output().unwrap();
    assert!(
        out.status.success() && text(&out).contains(": OK"),
        "{}",
        text(&out)
    );
    // The audit log's hash chain holds; SIGTERM stops zoned cleanly.
    z.remote_ok(&["audit", "verify"]);
    for m in &members {
        z.procs.kill(m);
    }
    let status = z.procs.terminate("zoned");
    assert!(
        status.success(),
        "zoned after SIGTERM: {status}\n{}",
        z.logs()
    );
}
