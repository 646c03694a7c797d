//! Scale over the network (issue 11 item 6): a load generator with N agent identities (10,000
//! by default; `--members 100000`), each with its own key, credential and TLS connections,
//! against one zoned (a separate process, release build) on the embedded store, through a whole
//! Remint CA.
//!
//! Measured: wall time of the staging phase (start → every member staged) and of the activation
//! phase (activation time → every member's `activated` report answered), requests per second,
//! p50 / p99 latency per request type, zoned's CPU seconds (utime + stime from /proc) and peak
//! RSS (VmHWM), and, in the same run, the server-side CPU cost of one TLS handshake of the same
//! shape (P-256 server chain, P-256 client credential verified against the zone CA, TLS 1.3),
//! measured in this process on rustls in memory. zoned's CPU divided by (handshakes × that
//! cost) is the overhead ratio (target <= 1.5x); 100,000 members <= 120 s; zoned <= 512 MB.
//!
//! The identities are minted before zoned starts, with the CA key read from the certificate
//! server's member directory (setup, not measured): 100,000 enrolments through the API would
//! measure enrolment, which is not the question here.
//!
//! Run: `cargo bench --bench net_load` (10,000), `cargo bench --bench net_load -- --members
//! 100000`, `--concurrency C` (connections in flight, default 256), `--check` (exit 1 when a
//! target is missed). The load generator shares the machine's cores with zoned: its own TLS
//! client work is about the same as zoned's, which bounds the wall time on 2 cores.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use zonepki::agent::files::MemberDir;
use zonepki::agent::{Agent, AgentRequest, AgentResponse};
use zonepki::ca::{Serial, issue_client_certificate};
use zonepki::cert::Certificate;
use zonepki::clock::{SystemClock, Timestamp};
use zonepki::csr::{CsrRequest, CsrSubject, VerifiedCsr};
use zonepki::key::KeySpec;
use zonepki::net::api;
use zonepki::net::client::{BearerToken, CaPin, HttpsClient, ServerUrl, agent_tls_config};
use zonepki::net::remote::{AdminClient, RemoteStore, RemoteTransport};
use zonepki::ops::ActivationRequest;
use zonepki::protocol::{self, AgentMessage, Report};
use zonepki::service::{InitInternal, NewServer, RemintCaRequest, ZoneService};
use zonepki::store::{RedbStore, Storage};
use zonepki::transport::LoopbackTransport;
use zonepki::zone::ServerRole;

const PS1: &str = "ps1.bench.example";

struct Args {
    members: usize,
    concurrency: usize,
    check: bool,
    /// A PostgreSQL server (its maintenance database's URL): the zone goes into a new database
    /// there instead of a redb file.
    postgres: Option<String>,
    /// zoned processes (Primary Servers), each agent talking to one of them (round robin);
    /// more than one needs `postgres`.
    servers: usize,
}

fn args() -> Args {
    let mut a = Args {
        members: 10_000,
        concurrency: 256,
        check: false,
        postgres: None,
        servers: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--members" => a.members = it.next().unwrap().parse().unwrap(),
            "--concurrency" => a.concurrency = it.next().unwrap().parse().unwrap(),
            "--check" => a.check = true,
            "--postgres" => a.postgres = Some(it.next().unwrap()),
            "--servers" => a.servers = it.next().unwrap().parse().unwrap(),
            // cargo bench passes --bench.
            _ => {}
        }
    }
    assert!(
        a.servers >= 1 && (a.servers == 1 || a.postgres.is_some()),
        "--servers N > 1 needs --postgres URL (several zoned share one PostgreSQL store)"
    );
    a
}

fn ps(n: usize) -> String {
    if n == 1 {
        PS1.to_string()
    } else {
        format!("ps{n}.bench.example")
    }
}

/// A new database on the server `url` names, for this run; its URL.
fn new_database(url: &str) -> String {
    let name = format!("net_load_{}", std::process::id());
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .unwrap();
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// utime + stime of every process whose command line starts with `postgres` (the server and
/// its backends), seconds: the shared store's CPU.
fn postgres_cpu_seconds() -> f64 {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "postgres" {
            total += try_cpu_seconds(pid).unwrap_or(0.0);
        }
    }
    total
}

/// zoned, killed on every path.
struct Zoned(Child);

impl Drop for Zoned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn build_zoned() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--example", "zoned"])
        .args(["--message-format", "json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "building zoned failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "zoned")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("cargo reports the zoned executable")
}

fn start_zoned(bin: &Path, dir: &Path, store: &str, fqdn: &str) -> (Zoned, u16) {
    let log = std::fs::File::create(dir.join(format!("zoned-{fqdn}.log"))).unwrap();
    let mut child = Command::new(bin)
        .args(["--store", store])
        .args(["--fqdn", fqdn])
        .arg("--state")
        .arg(dir.join("fleet").join(fqdn))
        .args(["--listen", "127.0.0.1:0", "--advertise-host", "127.0.0.1"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("listening on https://")
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("zoned said {line:?}"));
    (Zoned(child), port)
}

/// utime + stime of `pid`, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    try_cpu_seconds(pid).expect("the process is gone")
}

/// utime + stime of `pid`, seconds, if it still runs.
fn try_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// Mints `names`' identities: each agent makes its key and CSR (S1), the CA key signs a client
/// credential, the agent installs it.
fn mint(names: &[String], ca_key: &zonepki::key::PrivateKey, ca: &Certificate) -> Vec<Agent> {
    let now = Timestamp::now_utc();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = names.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = names
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|name| {
                            let mut agent = Agent::new(name.clone());
                            let request = CsrRequest {
                                subject: CsrSubject::cn(name),
                                dns_names: vec![],
                            };
                            let AgentResponse::Csr(csr) = agent
                                .handle(AgentRequest::Enroll {
                                    key: KeySpec::P256,
                                    request,
                                })
                                .unwrap()
                            else {
                                panic!("no CSR")
                            };
                            let csr = VerifiedCsr::from_der(csr.as_bytes()).unwrap();
                            let leaf = issue_client_certificate(
                                ca,
                                ca_key,
                                &csr,
                                name,
                                &Serial::random().unwrap(),
                                now,
                                now.plus(Duration::from_secs(365 * 86400)),
                            )
                            .unwrap();
                            agent
                                .handle(AgentRequest::Install {
                                    chain: vec![leaf.der().clone(), ca.der().clone()],
                                    trust: vec![ca.der().clone()],
                                    now,
                                })
                                .unwrap();
                            agent
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// Latencies of one request type.
#[derive(Default)]
struct Lat(Vec<Duration>);

impl Lat {
    fn pct(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return 0.0;
        }
        self.0.sort();
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[i].as_secs_f64() * 1000.0
    }
}

/// What one agent's exchange measured: (request type, latency) per request.
type Samples = Vec<(&'static str, Duration)>;

/// How often one message is sent at most (the first time and its retries).
const MAX_RETRIES: usize = 20;

/// Messages sent again after a retryable refusal, over the run.
static RETRIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn kind(msg: &AgentMessage) -> &'static str {
    match &msg.report {
        None => "poll",
        Some(Report::Csr { .. }) => "report csr",
        Some(Report::Staged { .. }) => "report staged",
        Some(Report::Activated { .. }) => "report activated",
        Some(Report::Recovered { .. }) => "report recovered",
        Some(Report::Done) => "report done",
        Some(Report::Failed { .. }) => "report failed",
        Some(_) => "report other",
    }
}

/// One agent's conversation over its own new TLS connection: poll, follow, until `nothing`.
async fn converse(mut agent: Agent, url: ServerUrl) -> (Agent, Samples, bool) {
    let tls = agent_tls_config(agent.trust(), Some((agent.chain(), agent.key().unwrap()))).unwrap();
    let client = HttpsClient::new(url, tls).with_timeout(Duration::from_secs(120));
    let mut samples = Vec::new();
    let mut msg = agent.poll(Timestamp::now_utc());
    for _ in 0..8 {
        let k = kind(&msg);
        let t = Instant::now();
        // A retryable refusal (503: a commit lost to another server's, B6, more often than
        // zoned retries it) is sent again after a pause, as an agent does; counted.
        let mut answer = Err(None);
        for attempt in 0..MAX_RETRIES {
            match client
                .post_bytes(api::path::POLL, protocol::encode(&msg), api::MAX_AGENT_BODY)
                .await
            {
                Ok(b) => {
                    answer = Ok(b);
                    break;
                }
                Err(e) if e.is_retryable() && attempt + 1 < MAX_RETRIES => {
                    RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let pause = 50 + u64::from(t.elapsed().subsec_nanos() % 200);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(e) => {
                    answer = Err(Some(e));
                    break;
                }
            }
        }
        samples.push((k, t.elapsed()));
        let Ok(bytes) = answer else {
            return (agent, samples, false);
        };
        let answer = protocol::decode_zone_answer(&bytes).unwrap();
        match agent.follow(answer.instruction, Timestamp::now_utc()) {
            Some(next) => msg = next,
            None => return (agent, samples, true),
        }
    }
    (agent, samples, true)
}

/// Every agent converses once, `concurrency` at a time; the agents back, the samples, the
/// number of failed conversations.
async fn phase(
    agents: Vec<Agent>,
    urls: &[ServerUrl],
    concurrency: usize,
) -> (Vec<Agent>, Samples, usize) {
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut set = tokio::task::JoinSet::new();
    for (i, agent) in agents.into_iter().enumerate() {
        let permit = Arc::clone(&sem).acquire_owned().await.unwrap();
        let url = urls[i % urls.len()].clone();
        set.spawn(async move {
            let out = converse(agent, url).await;
            drop(permit);
            out
        });
    }
    let mut back = Vec::new();
    let mut samples = Vec::new();
    let mut failed = 0;
    while let Some(r) = set.join_next().await {
        let (agent, s, ok) = r.unwrap();
        back.push(agent);
        samples.extend(s);
        failed += usize::from(!ok);
    }
    (back, samples, failed)
}

/// Server-side CPU of one mutual-TLS handshake of the shape zoned does, in memory (rustls,
/// ring): only the server's calls are timed.
fn handshake_cost(server_agent: &Agent, client: &Agent, ca: &Certificate, rounds: u32) -> Duration {
    use rustls::pki_types::{CertificateDer as Der, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = zonepki::net::tls::provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(Der::from(ca.der().as_bytes().to_vec())).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let chain: Vec<Der<'static>> = server_agent
        .chain()
        .iter()
        .map(|c| Der::from(c.as_bytes().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        server_agent.key().unwrap().to_pkcs8_der().to_vec(),
    ));
    let server_config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap(),
    );
    let client_config = agent_tls_config(
        client.trust(),
        Some((client.chain(), client.key().unwrap())),
    )
    .unwrap();
    let name = rustls::pki_types::ServerName::try_from(PS1).unwrap();
    let mut server_time = Duration::ZERO;
    for _ in 0..rounds {
        let mut c =
            rustls::ClientConnection::new(Arc::clone(&client_config), name.clone()).unwrap();
        let mut s = rustls::ServerConnection::new(Arc::clone(&server_config)).unwrap();
        let mut buf = Vec::new();
        while c.is_handshaking() || s.is_handshaking() {
            buf.clear();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let t = Instant::now();
            if !buf.is_empty() {
                s.read_tls(&mut &buf[..]).unwrap();
                s.process_new_packets().unwrap();
            }
            let mut out = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut out).unwrap();
            }
            server_time += t.elapsed();
            if !out.is_empty() {
                c.read_tls(&mut &out[..]).unwrap();
                c.process_new_packets().unwrap();
            }
            if buf.is_empty() && out.is_empty() && !c.wants_write() {
                break;
            }
        }
        assert!(!s.is_handshaking() && s.peer_certificates().is_some());
    }
    server_time / rounds
}

fn main() {
    let a = args();
    let zoned_bin = build_zoned();
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet");
    let names: Vec<String> = (1..=a.members).map(|i| format!("dev-{i}")).collect();

    // --- Setup (not measured): the zone, its devices, their identities ---
    let setup = Instant::now();
    let store_name = match &a.postgres {
        Some(url) => new_database(url),
        None => dir.path().join("zone.db").to_str().unwrap().to_string(),
    };
    {
        let store: Box<dyn Storage> = match &a.postgres {
            Some(_) => Box::new(zonepki::store::PostgresStore::connect(&store_name).unwrap()),
            None => Box::new(RedbStore::create(&store_name).unwrap()),
        };
        let svc = ZoneService::new(store, LoopbackTransport::with_root(&fleet), SystemClock);
        svc.init_internal(InitInternal::new(
            "Bench",
            NewServer::new(PS1.parse().unwrap(), ServerRole::Primary),
        ))
        .unwrap();
        for n in 2..=a.servers {
            svc.add_server(NewServer::new(ps(n).parse().unwrap(), ServerRole::Primary))
                .unwrap();
        }
        svc.add_devices(&names, "bench").unwrap();
    }
    let ps1 = MemberDir::new(&fleet).load(PS1).unwrap();
    let ca = Certificate::try_from(ps1.ca_certificate().unwrap()).unwrap();
    let agents = mint(&names, ps1.ca_key().unwrap(), &ca);
    let base = handshake_cost(&ps1, &agents[0], &ca, 300);
    let pin = CaPin::of(ca.der());
    eprintln!(
        "setup: {} identities in {:.1} s; one server-side handshake {:.3} ms",
        agents.len(),
        setup.elapsed().as_secs_f64(),
        base.as_secs_f64() * 1000.0
    );

    let mut zoneds = Vec::new();
    let mut urls: Vec<ServerUrl> = Vec::new();
    for n in 1..=a.servers {
        let (z, port) = start_zoned(&zoned_bin, dir.path(), &store_name, &ps(n));
        zoneds.push(z);
        urls.push(format!("https://127.0.0.1:{port}").parse().unwrap());
    }
    let pids: Vec<u32> = zoneds.iter().map(|z| z.0.id()).collect();
    let zoned_cpu = || pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let url = urls[0].clone();
    let token = std::fs::read_to_string(fleet.join(PS1).join("admin-token")).unwrap();
    let admin = AdminClient::connect(
        url.clone(),
        &pin,
        BearerToken::new(token.trim()),
        Duration::from_secs(300),
    )
    .unwrap();
    let remote = ZoneService::new(
        RemoteStore::new(Arc::clone(&admin)),
        RemoteTransport::new(Arc::clone(&admin)),
        SystemClock,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cpu0 = zoned_cpu();
    let pg0 = postgres_cpu_seconds();

    // --- The Remint CA ---
    // The activation leaves time for staging at a conservative rate; the idle gap between the
    // last member staged and the activation time is not work and is not counted.
    let lead = Duration::from_secs(20 + (a.members as u64) / 400);
    let t0 = Instant::now();
    let activation = Timestamp::now_utc().plus(lead);
    remote
        .start_remint_ca(RemintCaRequest::new(ActivationRequest::At(activation)))
        .unwrap();
    // Replication (zoned's own agent) and assignment; then every device stages.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = remote.op_show().unwrap();
        if view.state == zonepki::view::OperationState::Assigned {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the update was not assigned within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (agents, mut stage_samples, failed) = rt.block_on(phase(agents, &urls, a.concurrency));
    let staging = t0.elapsed();
    assert_eq!(failed, 0, "conversations failed in staging");
    let not_staged = agents.iter().filter(|a| a.staged().is_none()).count();
    assert_eq!(not_staged, 0, "members not staged");
    let cpu_staging = zoned_cpu() - cpu0;

    // --- Activation: every agent switches by its own clock, then reports ---
    let wait = activation.unix() - Timestamp::now_utc().unix();
    assert!(wait > 0, "staging took longer than the lead; raise it");
    std::thread::sleep(Duration::from_secs(u64::try_from(wait).unwrap() + 1));
    let t1 = Instant::now();
    let mut agents = agents;
    let now = Timestamp::now_utc();
    for agent in &mut agents {
        assert!(agent.handle_timeout(now));
    }
    let (_agents, act_samples, failed) = rt.block_on(phase(agents, &urls, a.concurrency));
    let activating = t1.elapsed();
    assert_eq!(failed, 0, "conversations failed in activation");
    let view = remote.op_show().unwrap();
    let cpu_total = zoned_cpu() - cpu0;
    let pg_cpu = postgres_cpu_seconds() - pg0;
    let rss = pids.iter().map(|p| peak_rss_mb(*p)).fold(0.0, f64::max);

    // --- Report ---
    let handshakes = 2 * a.members as u64;
    let unavoidable = base.as_secs_f64() * handshakes as f64;
    let requests = stage_samples.len() + act_samples.len();
    let busy = staging + activating;
    stage_samples.extend(act_samples);
    let mut by_kind: std::collections::BTreeMap<&str, Lat> = Default::default();
    for (k, d) in stage_samples {
        by_kind.entry(k).or_default().0.push(d);
    }
    let ratio = cpu_total / unavoidable;
    let activated = view
        .members()
        .filter(|(_, s)| *s == zonepki::view::UpdateStatus::Activated)
        .count();
    println!(
        "\n## net_load: {} members, {} zoned on {}, concurrency {}\n",
        a.members,
        a.servers,
        if a.postgres.is_some() {
            "PostgreSQL"
        } else {
            "redb"
        },
        a.concurrency
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| staging phase (start → every member staged) | {:.1} s |",
        staging.as_secs_f64()
    );
    println!(
        "| activation phase (activation time → every member's report answered) | {:.1} s |",
        activating.as_secs_f64()
    );
    println!(
        "| whole Remint CA, without the idle wait for the activation time | {:.1} s |",
        busy.as_secs_f64()
    );
    println!(
        "| requests | {requests} ({:.0}/s over both phases) |",
        requests as f64 / busy.as_secs_f64()
    );
    for (k, lat) in &mut by_kind {
        println!(
            "| {k}: n, p50, p99 | {}, {:.1} ms, {:.1} ms |",
            lat.0.len(),
            lat.pct(0.5),
            lat.pct(0.99)
        );
    }
    println!(
        "| zoned CPU (user+system), staging / total | {cpu_staging:.1} s / {cpu_total:.1} s |"
    );
    println!(
        "| zoned CPU per member | {:.3} ms |",
        cpu_total * 1000.0 / a.members as f64
    );
    println!(
        "| TLS handshakes (one per member per phase) × server-side cost | {handshakes} × {:.3} ms = {unavoidable:.1} s |",
        base.as_secs_f64() * 1000.0
    );
    println!("| overhead: zoned CPU / unavoidable handshake CPU | {ratio:.2}x (target <= 1.5x) |");
    println!("| zoned peak RSS (VmHWM, largest process) | {rss:.0} MB (target <= 512 MB) |");
    if a.postgres.is_some() {
        println!("| PostgreSQL CPU (server and backends), both phases | {pg_cpu:.1} s |");
    }
    println!(
        "| messages sent again after a retryable refusal (503) | {} |",
        RETRIES.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!("| members activated (zone's count) | {activated} |");
    let scaled = busy.as_secs_f64() * 100_000.0 / a.members as f64;
    println!(
        "| whole Remint CA scaled linearly to 100,000 members | {scaled:.0} s (target <= 120 s) |"
    );
    let mut missed = Vec::new();
    if ratio > 1.5 {
        missed.push("CPU ratio");
    }
    if rss > 512.0 {
        missed.push("RSS");
    }
    if a.members >= 100_000 && busy.as_secs_f64() > 120.0 {
        missed.push("wall time");
    }
    if !missed.is_empty() {
        println!("\nmissed: {}", missed.join(", "));
        if a.check {
            std::process::exit(1);
        }
    }
    drop(zoneds);
}
