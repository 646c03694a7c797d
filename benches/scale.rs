//! Scale benchmarks: whole operations at fleet size, on the redb store, one run each, with the
//! raw primitives they are judged against measured in the same process.
//!
//! | scenario  | what                                                                      | targets                          |
//! |-----------|---------------------------------------------------------------------------|----------------------------------|
//! | `zone`    | 100,000 devices, 50 Primary Servers, 100 satellites: a whole Remint CA     | <= 10 s, <= 256 MB peak RSS      |
//! |           | (start, replication, assignment, 100,150 reports, activation)             | status commits <= 2x raw redb    |
//! | `servers` | 1,000 servers: an internal Server Remint of all, keys made on the agents  | <= 1.3x sum of the primitives    |
//!
//! Run (release): `cargo bench --bench scale` (both), `cargo bench --bench scale -- zone`,
//! `cargo bench --bench scale -- servers`. Smaller sizes for profiling:
//! `cargo bench --bench scale -- zone --devices 10000`, `-- servers --servers 200`.
//! `--check` exits with status 1 when a target is missed. `--heap` also counts live heap bytes
//! per phase (a counting global allocator; off by default, it then costs one relaxed load per
//! allocation). With `SCALE_PERF_CTL=<fifo>` the timed phases (not the setup) switch
//! `perf record -D -1 --control fifo:<fifo>` on and off. See benches/scale.md.
//!
//! A plain `harness = false` binary: criterion's repeated sampling does not suit one
//! ten-second run, so each phase is timed once and the results are printed as a table.
//! Setup (building the zone) is timed separately and is not part of any target.
//!
//! Instrumentation: the store and the transport are wrapped to add up the time spent in
//! `Storage::{get, scan, last, commit}` and in each kind of transport request (two
//! `Instant::now()` and two atomic adds per call: well under 1% of any phase). Since the
//! agent-driven protocol only server-to-server calls use the transport; the agents' messages go
//! through `ZoneService::answer_batch` inside the fleet driver, each encoded and parsed. The
//! cost of that serialisation is measured after the zone scenario, from the bench, on messages
//! rebuilt from the agents' real states (`wire_costs`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use zonepki::agent::{AgentRequest, AgentResponse};
use zonepki::ca::{CaParams, Serial, ServerProfile, issue_server_certificate, self_signed_ca};
use zonepki::cert::{Certificate, CertificateDer};
use zonepki::chain::verify_chain;
use zonepki::clock::{ManualClock, Timestamp};
use zonepki::csr::{CsrDer, CsrRequest, VerifiedCsr, build_csr};
use zonepki::key::{KeySpec, PrivateKey};
use zonepki::ops::ActivationRequest;
use zonepki::protocol::{
    self, AgentMessage, AgentState, Instruction, Report as AgentReport, Standing, ZoneAnswer,
};
use zonepki::service::{
    InitInternal, NewServer, RemintCaRequest, ServerRemintRequest, ZoneService,
};
use zonepki::store::{Committed, Record, RedbStore, Storage, StoreError, Write};
use zonepki::transport::{Fleet, RefreshOptions, RefreshOutcome};
use zonepki::transport::{LoopbackTransport, Transport, TransportError};
use zonepki::zone::{Fqdn, ServerRole};

const T0: &str = "2027-01-01T00:00:00Z";
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
/// The service's batch (`BATCH` in src/service/operations.rs): members per transaction.
const SERVICE_BATCH: usize = 5_000;
/// Devices per `add_devices` call while building the zone.
const ADD_CHUNK: usize = 5_000;
const MB: f64 = 1024.0 * 1024.0;

const ZONE_TOTAL_TARGET: Duration = Duration::from_secs(10);
const ZONE_RSS_TARGET_MB: f64 = 256.0;
const STATUS_WRITE_TARGET: f64 = 2.0;
const SERVERS_RATIO_TARGET: f64 = 1.3;

// ---------------------------------------------------------------------------------------------
// Instrumentation.

/// A count and a total time, added to from any thread.
#[derive(Default)]
struct Acc {
    n: AtomicU64,
    nanos: AtomicU64,
}

impl Acc {
    fn add(&self, d: Duration) {
        self.n.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
    fn get(&self) -> Tally {
        Tally {
            n: self.n.load(Ordering::Relaxed),
            t: Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    n: u64,
    t: Duration,
}

impl Tally {
    fn minus(self, before: Tally) -> Tally {
        Tally {
            n: self.n - before.n,
            t: self.t.saturating_sub(before.t),
        }
    }
}

/// What a timed phase's status writes looked like, for the raw redb baseline: every
/// `op/<id>/m/<name>` write of every committed transaction, in order, as key and value length,
/// and how many of them each transaction held.
#[derive(Default)]
struct Capture {
    keys: String,
    key_ends: Vec<u32>,
    value_lens: Vec<u32>,
    batches: Vec<u32>,
}

impl Capture {
    fn len(&self) -> usize {
        self.value_lens.len()
    }
    fn key(&self, i: usize) -> &str {
        let start = if i == 0 {
            0
        } else {
            self.key_ends[i - 1] as usize
        };
        &self.keys[start..self.key_ends[i] as usize]
    }
    fn value_len(&self, i: usize) -> usize {
        self.value_lens[i] as usize
    }
    fn value_bytes(&self) -> usize {
        self.value_lens.iter().map(|&n| n as usize).sum()
    }
}

fn is_status_key(key: &str) -> bool {
    key.starts_with("op/") && key.contains("/m/")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A [`Storage`] that adds up the time spent in each call of the store it wraps.
struct TimedStore<S> {
    inner: S,
    get: Acc,
    scan: Acc,
    commit: Acc,
    writes: AtomicU64,
    capture: Mutex<Option<Capture>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct StoreTally {
    get: Tally,
    scan: Tally,
    commit: Tally,
    writes: u64,
}

impl StoreTally {
    fn minus(self, b: StoreTally) -> StoreTally {
        StoreTally {
            get: self.get.minus(b.get),
            scan: self.scan.minus(b.scan),
            commit: self.commit.minus(b.commit),
            writes: self.writes - b.writes,
        }
    }
}

impl<S: Storage> TimedStore<S> {
    fn new(inner: S) -> Self {
        TimedStore {
            inner,
            get: Acc::default(),
            scan: Acc::default(),
            commit: Acc::default(),
            writes: AtomicU64::new(0),
            capture: Mutex::new(None),
        }
    }
    fn tally(&self) -> StoreTally {
        StoreTally {
            get: self.get.get(),
            scan: self.scan.get(),
            commit: self.commit.get(),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }
    fn start_capture(&self) {
        *lock(&self.capture) = Some(Capture::default());
    }
    fn take_capture(&self) -> Capture {
        lock(&self.capture).take().unwrap_or_default()
    }
}

impl<S: Storage> Storage for TimedStore<S> {
    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let t = Instant::now();
        let r = self.inner.get(key);
        self.get.add(t.elapsed());
        r
    }
    // `scan_each` is the provided one: it pages through `scan`, so a walk is timed page by
    // page and the callbacks' work is not counted as the store's.
    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        let t = Instant::now();
        let r = self.inner.scan(prefix, after, limit);
        self.scan.add(t.elapsed());
        r
    }
    fn last(&self, prefix: &str) -> Result<Option<(String, Record)>, StoreError> {
        let t = Instant::now();
        let r = self.inner.last(prefix);
        self.scan.add(t.elapsed());
        r
    }
    fn commit(&self, writes: &[Write]) -> Result<Committed, StoreError> {
        let t = Instant::now();
        let r = self.inner.commit(writes);
        self.commit.add(t.elapsed());
        self.writes
            .fetch_add(writes.len() as u64, Ordering::Relaxed);
        if r.is_ok()
            && let Some(c) = lock(&self.capture).as_mut()
        {
            let mut n = 0;
            for w in writes {
                if let (true, Some(v)) = (is_status_key(&w.key), &w.value) {
                    c.keys.push_str(&w.key);
                    c.key_ends.push(c.keys.len() as u32);
                    c.value_lens.push(v.len() as u32);
                    n += 1;
                }
            }
            if n > 0 {
                c.batches.push(n);
            }
        }
        r
    }
}

/// Server-to-server request kinds, for the per-kind tallies of [`TimedTransport`]. Since the
/// agent-driven protocol (issue 10 item 3) the zone never calls a member's agent during a
/// refresh: the agents poll through `ZoneService::answer_batch` inside the fleet driver, so
/// only these calls (the certificate server signing, the CA's custody) reach the transport.
const KINDS: [&str; 7] = [
    "enroll (keygen + CSR)",
    "install",
    "create CA",
    "ping",
    "discard future CA",
    "sign certificate",
    "other",
];

fn kind(r: &AgentRequest) -> usize {
    match r {
        AgentRequest::Enroll { .. } => 0,
        AgentRequest::Install { .. } => 1,
        AgentRequest::CreateCa { .. } => 2,
        AgentRequest::Ping => 3,
        AgentRequest::DiscardFutureCa { .. } => 4,
        AgentRequest::SignCertificate { .. } => 5,
        _ => 6,
    }
}

/// A [`Transport`] that adds up the time spent in each kind of agent request.
struct TimedTransport {
    inner: LoopbackTransport,
    calls: [Acc; KINDS.len()],
}

type AgentTally = [Tally; KINDS.len()];

impl TimedTransport {
    fn new(inner: LoopbackTransport) -> Self {
        TimedTransport {
            inner,
            calls: Default::default(),
        }
    }
    fn tally(&self) -> AgentTally {
        std::array::from_fn(|i| self.calls[i].get())
    }
}

impl Transport for TimedTransport {
    fn call(&self, member: &str, request: AgentRequest) -> Result<AgentResponse, TransportError> {
        let k = kind(&request);
        let t = Instant::now();
        let r = self.inner.call(member, request);
        self.calls[k].add(t.elapsed());
        r
    }
}

impl zonepki::transport::InProcessFleet for TimedTransport {
    fn fleet(&self) -> &LoopbackTransport {
        &self.inner
    }
}

fn agent_minus(a: &AgentTally, b: &AgentTally) -> AgentTally {
    std::array::from_fn(|i| a[i].minus(b[i]))
}

fn agent_total(a: &AgentTally) -> Tally {
    a.iter().fold(Tally::default(), |acc, t| Tally {
        n: acc.n + t.n,
        t: acc.t + t.t,
    })
}

/// Writes `enable` / `disable` to the perf control FIFO named by `SCALE_PERF_CTL`, so that
/// `perf record -D -1 --control fifo:<ctl>` samples the timed phases only (not the setup).
fn perf_control(cmd: &str) {
    use std::io::Write as _;
    if let Some(path) = std::env::var_os("SCALE_PERF_CTL") {
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(path) {
            let _ = writeln!(f, "{cmd}");
        }
        // Let perf act on it before the phase starts.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Live heap bytes, counted by a wrapper around the system allocator when `--heap` is given
/// (otherwise one relaxed load per allocation). Tells data held by the service and the
/// agents apart from allocator retention and redb's cache in RSS.
mod heap {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

    static ON: AtomicBool = AtomicBool::new(false);
    // Signed: blocks allocated before counting started may be freed later (a few KB).
    static LIVE: AtomicIsize = AtomicIsize::new(0);
    static PEAK: AtomicIsize = AtomicIsize::new(0);

    pub(crate) struct Counting;

    // SAFETY: every call is forwarded unchanged to `System`; only counters are added.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if ON.load(Ordering::Relaxed) {
                let size = layout.size() as isize;
                let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
                PEAK.fetch_max(live, Ordering::Relaxed);
            }
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            if ON.load(Ordering::Relaxed) {
                LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
            }
            // SAFETY: forwarded with the caller's pointer and layout.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if ON.load(Ordering::Relaxed) {
                let grow = new_size as isize - layout.size() as isize;
                let live = LIVE.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(live, Ordering::Relaxed);
            }
            // SAFETY: forwarded with the caller's arguments.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    /// Starts counting (at start-up: what was allocated before is not counted).
    pub(crate) fn enable() {
        ON.store(true, Ordering::Relaxed);
    }
    pub(crate) fn enabled() -> bool {
        ON.load(Ordering::Relaxed)
    }
    /// Resets the peak to the current live bytes, which it returns.
    pub(crate) fn reset_peak() -> usize {
        let live = LIVE.load(Ordering::Relaxed);
        PEAK.store(live, Ordering::Relaxed);
        live.max(0) as usize
    }
    pub(crate) fn peak() -> usize {
        PEAK.load(Ordering::Relaxed).max(0) as usize
    }
}

#[global_allocator]
static ALLOC: heap::Counting = heap::Counting;

type Svc<'c> = ZoneService<TimedStore<RedbStore>, TimedTransport, &'c ManualClock>;

// ---------------------------------------------------------------------------------------------
// Reporting.

struct Row {
    scenario: &'static str,
    phase: String,
    value: String,
    target: String,
    ok: Option<bool>,
}

/// One timed phase with what it spent in the store and in agents.
struct Detail {
    scenario: &'static str,
    phase: String,
    wall: Duration,
    /// CPU time of the whole process (every thread) during the phase.
    cpu: Duration,
    store: StoreTally,
    agents: AgentTally,
    /// VmHWM during the phase (reset before it), MB.
    peak_rss: f64,
    /// Live heap bytes at the start of the phase and at its peak (with `--heap`).
    heap: (usize, usize),
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    details: Vec<Detail>,
    notes: Vec<String>,
}

impl Report {
    fn row(&mut self, scenario: &'static str, phase: impl Into<String>, value: impl Into<String>) {
        self.rows.push(Row {
            scenario,
            phase: phase.into(),
            value: value.into(),
            target: String::new(),
            ok: None,
        });
    }
    fn check(
        &mut self,
        scenario: &'static str,
        phase: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        ok: bool,
    ) {
        self.rows.push(Row {
            scenario,
            phase: phase.into(),
            value: value.into(),
            target: target.into(),
            ok: Some(ok),
        });
    }

    /// Runs `f` as one phase: wall time plus store and agent tallies.
    fn phase<R>(
        &mut self,
        scenario: &'static str,
        name: &str,
        svc: &Svc<'_>,
        f: impl FnOnce() -> R,
    ) -> (R, Duration) {
        // `SCALE_PERF_PHASE=<text>`: profile only the phases whose name contains it.
        let profiled = !name.starts_with("setup")
            && !name.starts_with("(info)")
            && std::env::var("SCALE_PERF_PHASE").map_or(true, |p| name.contains(&p));
        reset_peak_rss();
        let heap0 = heap::reset_peak();
        let (s0, a0) = (svc.store().tally(), svc.transport().tally());
        if profiled {
            perf_control("enable");
        }
        let cpu0 = cpu_time();
        let t = Instant::now();
        let r = f();
        let wall = t.elapsed();
        let cpu = cpu_time().saturating_sub(cpu0);
        if profiled {
            perf_control("disable");
        }
        let (s1, a1) = (svc.store().tally(), svc.transport().tally());
        let (_, peak_rss) = rss();
        let heap_peak = heap::peak();
        self.row(scenario, name, fmt_d(wall));
        self.details.push(Detail {
            scenario,
            phase: name.to_string(),
            wall,
            cpu,
            store: s1.minus(s0),
            agents: agent_minus(&a1, &a0),
            peak_rss,
            heap: (heap0, heap_peak),
        });
        (r, wall)
    }

    fn missed(&self) -> bool {
        self.rows.iter().any(|r| r.ok == Some(false))
    }

    fn print(&self) {
        println!();
        println!("| scenario | phase | wall time | target | ok? |");
        println!("|---|---|---:|---|---|");
        for r in &self.rows {
            let ok = match r.ok {
                Some(true) => "ok",
                Some(false) => "**MISSED**",
                None => "",
            };
            println!(
                "| {} | {} | {} | {} | {} |",
                r.scenario, r.phase, r.value, r.target, ok
            );
        }
        println!();
        println!(
            "Where each timed phase spends its time (store calls and server-to-server transport calls):"
        );
        println!();
        println!(
            "| scenario | phase | wall | CPU (all threads) | peak RSS | live heap start / peak | store get | store scan | store commit (writes) | transport calls | transport calls by kind |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for d in &self.details {
            let total = agent_total(&d.agents);
            let mut kinds = String::new();
            for (i, t) in d.agents.iter().enumerate() {
                if t.n > 0 {
                    if !kinds.is_empty() {
                        kinds.push_str(", ");
                    }
                    let _ = write!(kinds, "{} {}x {}", KINDS[i], t.n, fmt_d(t.t));
                }
            }
            let heap = if heap::enabled() {
                format!(
                    "{:.0} / {:.0} MB",
                    d.heap.0 as f64 / MB,
                    d.heap.1 as f64 / MB
                )
            } else {
                "(--heap)".into()
            };
            println!(
                "| {} | {} | {} | {} | {:.0} MB | {} | {}x {} | {}x {} | {}x {} ({}) | {}x {} | {} |",
                d.scenario,
                d.phase,
                fmt_d(d.wall),
                fmt_d(d.cpu),
                d.peak_rss,
                heap,
                d.store.get.n,
                fmt_d(d.store.get.t),
                d.store.scan.n,
                fmt_d(d.store.scan.t),
                d.store.commit.n,
                fmt_d(d.store.commit.t),
                d.store.writes,
                total.n,
                fmt_d(total.t),
                kinds
            );
        }
        if !self.notes.is_empty() {
            println!();
            for n in &self.notes {
                println!("- {n}");
            }
        }
    }
}

/// CPU time used so far by the whole process, every thread (ended ones too), user + system.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn fmt_d(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

fn fmt_n(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `VmRSS` and `VmHWM` of this process, in MB.
fn rss() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb * 1024.0 / MB)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets `VmHWM` to the current RSS (Linux >= 4.0), so each scenario's peak is its own.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn fq(s: &str) -> Fqdn {
    s.parse().unwrap()
}

fn count(outcomes: &[RefreshOutcome], what: &str) -> usize {
    outcomes.iter().filter(|o| o.outcome == what).count()
}

fn expect_all(outcomes: &[RefreshOutcome], what: &str, n: usize, phase: &str) {
    let got = count(outcomes, what);
    if got != n {
        let other: Vec<_> = outcomes
            .iter()
            .filter(|o| o.outcome != what)
            .take(5)
            .collect();
        panic!("{phase}: {got} of {n} members {what}; first others: {other:?}");
    }
}

fn new_service<'c>(dir: &Path, clock: &'c ManualClock) -> Svc<'c> {
    let store = RedbStore::create(dir.join("zone.redb")).unwrap();
    ZoneService::new(
        TimedStore::new(store),
        TimedTransport::new(LoopbackTransport::in_memory()),
        clock,
    )
}

fn init_zone(svc: &Svc<'_>, ca_server: &str) {
    svc.init_internal(
        InitInternal::new(
            "Scale Zone",
            NewServer::new(fq(ca_server), ServerRole::Primary),
        )
        .with_ca_key(KeySpec::P256)
        .with_validity(5.try_into().unwrap()),
    )
    .unwrap();
}

fn satellite(name: &str, parent: &str) -> NewServer {
    let mut s = NewServer::new(fq(name), ServerRole::AuthSatellite);
    s.parent = Some(fq(parent));
    s
}

// ---------------------------------------------------------------------------------------------
// Scenario 1: a whole Remint CA over 100,000 devices, 50 Primary Servers and 100 satellites.

struct ZoneSize {
    devices: usize,
    primaries: usize,
    satellites: usize,
}

fn zone_scenario(size: &ZoneSize, report: &mut Report) {
    const S: &str = "zone";
    let peak_reset = reset_peak_rss();
    let (rss_before, _) = rss();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(ts(T0));
    let svc = new_service(dir.path(), &clock);
    let members = 1 + (size.primaries - 1) + size.satellites + size.devices;
    let servers = size.primaries + size.satellites;

    // Setup: not part of any target.
    let primary = |i: usize| format!("ps{i:03}.zone.example");
    report.phase(
        S,
        &format!(
            "setup: init + {} Primary Servers + {} satellites (enrolled)",
            size.primaries - 1,
            size.satellites
        ),
        &svc,
        || {
            init_zone(&svc, &primary(1));
            for i in 2..=size.primaries {
                svc.add_server(NewServer::new(fq(&primary(i)), ServerRole::Primary))
                    .unwrap();
            }
            for i in 1..=size.satellites {
                let parent = primary(1 + (i - 1) % size.primaries);
                svc.add_server(satellite(&format!("sat{i:03}.zone.example"), &parent))
                    .unwrap();
            }
        },
    );
    report.phase(
        S,
        &format!(
            "setup: {} devices (add_devices, {} per call)",
            fmt_n(size.devices),
            fmt_n(ADD_CHUNK)
        ),
        &svc,
        || {
            let names: Vec<String> = (1..=size.devices).map(|i| format!("dev-{i:06}")).collect();
            for chunk in names.chunks(ADD_CHUNK) {
                svc.add_devices(chunk, "24.4").unwrap();
            }
        },
    );
    report.phase(
        S,
        "setup: refresh of all (every agent learns the zone's trust)",
        &svc,
        || {
            let out = svc
                .refresh(&[], &RefreshOptions::default(), |_, _| {})
                .unwrap();
            // Servers were enrolled by `add_server` and already trust the zone; devices
            // learn it now.
            expect_all(
                &out[..servers],
                "up-to-date",
                servers,
                "initial refresh (servers)",
            );
            expect_all(
                &out[servers..],
                "trust-updated",
                size.devices,
                "initial refresh (devices)",
            );
        },
    );
    let (rss_built, _) = rss();
    let old_ca = svc.ca_certificate().unwrap();

    // The Remint CA.
    let activation = clock.now_plus(WEEK);
    let mut total = Duration::ZERO;
    let (view, t) = report.phase(S, "start (start_remint_ca, returns op show)", &svc, || {
        svc.start_remint_ca(
            RemintCaRequest::new(ActivationRequest::At(activation))
                .with_key(KeySpec::P256)
                .with_validity(5.try_into().unwrap())
                .with_include_dns(true),
        )
        .unwrap()
    });
    total += t;
    assert_eq!(view.state, "replicating");
    let content: Vec<Fqdn> = view.replication.iter().map(|r| fq(&r.server)).collect();
    // Views hold a row per member: drop each at once, so the bench holds no more than a
    // frontend printing it would.
    drop(view);
    assert_eq!(content.len(), size.primaries);
    let (last, first) = content.split_last().unwrap();
    let (view, t) = report.phase(
        S,
        &format!(
            "replication (replicate: {} of {} content servers, returns op show)",
            first.len(),
            content.len()
        ),
        &svc,
        || svc.replicate(first).unwrap(),
    );
    total += t;
    assert_eq!(view.state, "replicating");
    drop(view);
    let (view, t) = report.phase(
        S,
        "assignment (replicate: the last content server; O4 assigns, returns op show)",
        &svc,
        || svc.replicate(std::slice::from_ref(last)).unwrap(),
    );
    total += t;
    assert_eq!(view.state, "assigned");
    drop(view);

    // For the cost of serialisation (not timed): what a device and a satellite say before
    // the apply refresh.
    let wire_dev = format!("dev-{:06}", size.devices);
    let wire_sat = "sat001.zone.example";
    let state_of = |name: &str| {
        svc.transport()
            .inner
            .with_agent(name, |a| a.state())
            .unwrap()
    };
    let before_apply = (state_of(&wire_dev), state_of(wire_sat));

    svc.store().start_capture();
    let (out, t) = report.phase(
        S,
        &format!(
            "apply: refresh of {} members ({} reports, {servers} new server certs)",
            fmt_n(members),
            fmt_n(size.devices)
        ),
        &svc,
        || {
            svc.refresh(&[], &RefreshOptions::default(), |_, _| {})
                .unwrap()
        },
    );
    total += t;
    let capture = svc.store().take_capture();
    expect_all(&out, "applied", members, "apply refresh");
    drop(out);
    let apply = report.details.last().map(|d| d.store).unwrap();
    let apply_wall = t;
    let staged_of = |name: &str| {
        svc.transport()
            .inner
            .with_agent(name, |a| {
                let s = a.staged().expect("staged by the apply refresh");
                Staged {
                    state: a.state(),
                    op_id: s.op_id,
                    activation: s.activation,
                    trust_now: a.trust().to_vec(),
                    trust_after: s.trust_after.clone(),
                    chain: s.chain.clone(),
                }
            })
            .unwrap()
    };
    let after_apply = (staged_of(&wire_dev), staged_of(wire_sat));

    clock.set(activation);
    let (out, t) = report.phase(
        S,
        &format!(
            "activation: clock to activation, refresh of {} members",
            fmt_n(members)
        ),
        &svc,
        || {
            svc.refresh(&[], &RefreshOptions::default(), |_, _| {})
                .unwrap()
        },
    );
    total += t;
    expect_all(&out, "activated", members, "activation refresh");
    drop(out);
    let activation_wall = t;
    let after_activation = (state_of(&wire_dev), state_of(wire_sat));
    let (_, peak) = rss();

    report.check(
        S,
        "**Remint CA total** (start .. activation)",
        fmt_d(total),
        "<= 10 s",
        total <= ZONE_TOTAL_TARGET,
    );
    report.check(
        S,
        if peak_reset {
            "peak RSS (VmHWM) during the scenario"
        } else {
            "peak RSS (VmHWM) of the process"
        },
        format!("{peak:.0} MB"),
        "<= 256 MB",
        peak <= ZONE_RSS_TARGET_MB,
    );
    report.row(
        S,
        "RSS before the zone was built / after setup",
        format!("{rss_before:.0} MB / {rss_built:.0} MB"),
    );

    // Checks (not timed): the zone switched, members hold the new CA.
    let new_ca = svc.ca_certificate().unwrap();
    assert_ne!(new_ca.der(), old_ca.der());
    let dev_trust = svc
        .transport()
        .inner
        .with_agent(&format!("dev-{:06}", size.devices), |a| a.trust().to_vec())
        .unwrap();
    assert_eq!(dev_trust.first(), Some(new_ca.der()));
    let sat_chain = svc
        .transport()
        .inner
        .with_agent("sat001.zone.example", |a| a.chain().to_vec())
        .unwrap();
    // The satellite presents a chain that the new CA vouches for.
    let certs: Vec<Certificate> = sat_chain
        .iter()
        .map(|c| Certificate::try_from(c).unwrap())
        .collect();
    verify_chain(
        &certs[0],
        &certs[1..],
        std::slice::from_ref(&new_ca),
        activation,
    )
    .expect("a satellite's chain validates against the new CA");
    let (view, _) = report.phase(
        S,
        &format!("(info) op show after activation: {} rows", fmt_n(members)),
        &svc,
        || svc.op_show().unwrap(),
    );
    assert_eq!(view.state, "activated");
    assert!(view.stranded.is_empty());
    assert_eq!(view.servers.len(), servers);
    assert_eq!(view.devices.len(), size.devices);
    assert_eq!(view.members().count(), members);
    drop(view);
    let file = std::fs::metadata(dir.path().join("zone.redb")).map_or(0, |m| m.len());
    drop(svc);

    wire_costs(
        &WireSample {
            device: wire_dev,
            satellite: wire_sat.to_string(),
            before_apply,
            after_apply,
            after_activation,
            now: ts(T0),
            activation,
        },
        size,
        (apply_wall, activation_wall),
        report,
    );

    // Raw redb: the same status records, same sizes, same transactions, fresh database.
    let n = capture.len();
    assert!(
        n >= members,
        "{n} status writes captured for {members} members"
    );
    let mut raws: Vec<Duration> = (0..3).map(|_| raw_redb(dir.path(), &capture)).collect();
    raws.sort();
    let raw = raws[1];
    report.row(
        S,
        format!(
            "raw redb: the same {} records ({:.1} MB) in {} write txns, fresh database (median of 3)",
            fmt_n(n),
            (capture.value_bytes() + 8 * n) as f64 / MB,
            capture.batches.len(),
        ),
        format!(
            "{} ({})",
            fmt_d(raw),
            raws.iter()
                .map(|d| fmt_d(*d))
                .collect::<Vec<_>>()
                .join(" / ")
        ),
    );
    report.row(
        S,
        format!(
            "status writes: store commits during apply ({} txns, {} writes)",
            apply.commit.n,
            fmt_n(apply.writes as usize)
        ),
        fmt_d(apply.commit.t),
    );
    let ratio = apply.commit.t.as_secs_f64() / raw.as_secs_f64();
    report.check(
        S,
        "status-write ratio: store commits / raw redb",
        format!("{ratio:.2}x"),
        "<= 2x",
        ratio <= STATUS_WRITE_TARGET,
    );
    report.notes.push(format!(
        "zone: {} members ({} Primary Servers, {} satellites, {} devices); store file {:.0} MB; \
         activation {}; service batch {} members per transaction",
        fmt_n(members),
        size.primaries,
        size.satellites,
        fmt_n(size.devices),
        file as f64 / MB,
        activation,
        fmt_n(SERVICE_BATCH)
    ));
}

// ---------------------------------------------------------------------------------------------
// The cost of serialisation: every message of the refreshes above goes through
// `protocol::encode` and `decode_agent_message` / `decode_zone_answer` once each, inside the
// fleet driver (`LoopbackTransport::refresh`). The library has no timing code; the bench
// rebuilds each kind of message from the agents' real states and staged material and times
// encode + parse of it, then multiplies by how many of that kind each phase exchanged.

/// What an agent held after the apply refresh.
struct Staged {
    state: AgentState,
    op_id: u64,
    activation: Timestamp,
    trust_now: Vec<CertificateDer>,
    trust_after: Vec<CertificateDer>,
    chain: Vec<CertificateDer>,
}

struct WireSample {
    device: String,
    satellite: String,
    /// Agent states (device, satellite) before the apply refresh.
    before_apply: (AgentState, AgentState),
    after_apply: (Staged, Staged),
    after_activation: (AgentState, AgentState),
    now: Timestamp,
    activation: Timestamp,
}

/// One message on the wire, in the direction it travels.
enum Wire {
    Agent(AgentMessage),
    Zone(ZoneAnswer),
}

impl Wire {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Wire::Agent(m) => protocol::encode(m),
            Wire::Zone(a) => protocol::encode(a),
        }
    }
    /// Encode and parse, as the fleet driver does for every message.
    fn round_trip(&self) -> usize {
        match self {
            Wire::Agent(m) => {
                let b = protocol::encode(black_box(m));
                black_box(protocol::decode_agent_message(&b).unwrap());
                b.len()
            }
            Wire::Zone(a) => {
                let b = protocol::encode(black_box(a));
                black_box(protocol::decode_zone_answer(&b).unwrap());
                b.len()
            }
        }
    }
}

fn answer(instruction: Instruction, standing: Standing, poll_by: Option<Timestamp>) -> Wire {
    let mut a = ZoneAnswer::new(instruction, standing);
    a.poll_by = poll_by;
    Wire::Zone(a)
}

/// (phase, member kind, the messages by name).
type Conversation = (&'static str, &'static str, Vec<(&'static str, Wire)>);

/// The conversations of one device and one satellite in the apply and the activation
/// refreshes, message by message, as docs/protocol.md ("Conversations") and the fleet
/// driver have them: (phase, member kind, messages).
fn conversations(w: &WireSample) -> Vec<Conversation> {
    let msg = |name: &str, state: &AgentState, report: Option<AgentReport>| {
        Wire::Agent(AgentMessage::new(name, w.now, state.clone()).with_report(report))
    };
    let at = w.activation;
    let (dev, sat) = (&w.device, &w.satellite);
    let (d1, s1) = &w.after_apply;
    let stage = |s: &Staged| Instruction::Stage {
        op_id: s.op_id,
        activation: s.activation,
        trust_now: s.trust_now.clone(),
        trust_after: s.trust_after.clone(),
        chain: s.chain.clone(),
    };
    // The satellite's CSR, as its agent makes it for `make_key` (not timed).
    let request = CsrRequest::default_for(sat);
    let csr = build_csr(&request, &PrivateKey::generate(KeySpec::P256).unwrap()).unwrap();
    let mut pending = w.before_apply.1.clone();
    pending.pending_key = true;
    let staged_rep = |s: &Staged| AgentReport::Staged {
        op_id: s.op_id,
        chain: Vec::new(),
    };
    let activated = |s: &Staged| AgentReport::Activated { op_id: s.op_id, at };
    vec![
        (
            "apply",
            "device",
            vec![
                ("device poll", msg(dev, &w.before_apply.0, None)),
                (
                    "stage (trust now + after)",
                    answer(stage(d1), Standing::InProgress, None),
                ),
                ("report staged", msg(dev, &d1.state, Some(staged_rep(d1)))),
                (
                    "nothing (applied)",
                    answer(Instruction::Nothing, Standing::Applied, Some(at)),
                ),
            ],
        ),
        (
            "apply",
            "server",
            vec![
                ("server poll", msg(sat, &w.before_apply.1, None)),
                (
                    "make_key",
                    answer(
                        Instruction::MakeKey {
                            op_id: Some(s1.op_id),
                            key: KeySpec::P256,
                            request,
                        },
                        Standing::InProgress,
                        None,
                    ),
                ),
                (
                    "report csr",
                    msg(
                        sat,
                        &pending,
                        Some(AgentReport::Csr {
                            op_id: Some(s1.op_id),
                            csr,
                        }),
                    ),
                ),
                (
                    "stage with chain",
                    answer(stage(s1), Standing::InProgress, None),
                ),
                ("report staged", msg(sat, &s1.state, Some(staged_rep(s1)))),
                (
                    "nothing (applied)",
                    answer(Instruction::Nothing, Standing::Applied, Some(at)),
                ),
            ],
        ),
        (
            "activation",
            "device",
            vec![
                ("poll, staged", msg(dev, &d1.state, None)),
                (
                    "nothing",
                    answer(Instruction::Nothing, Standing::Applied, Some(at)),
                ),
                (
                    "report activated",
                    msg(dev, &w.after_activation.0, Some(activated(d1))),
                ),
                (
                    "nothing (activated)",
                    answer(Instruction::Nothing, Standing::Activated, None),
                ),
            ],
        ),
        (
            "activation",
            "server",
            vec![
                ("poll, staged", msg(sat, &s1.state, None)),
                (
                    "nothing",
                    answer(Instruction::Nothing, Standing::Applied, Some(at)),
                ),
                (
                    "report activated",
                    msg(sat, &w.after_activation.1, Some(activated(s1))),
                ),
                (
                    "nothing (activated)",
                    answer(Instruction::Nothing, Standing::Activated, None),
                ),
            ],
        ),
    ]
}

/// Times encode + parse of each message kind (`RUNS` runs of `REPS` each) and reports
/// the share of serialisation in the apply and activation phases.
fn wire_costs(
    w: &WireSample,
    size: &ZoneSize,
    (apply, activation): (Duration, Duration),
    report: &mut Report,
) {
    const S: &str = "zone";
    const REPS: u32 = 1_000;
    const RUNS: usize = 7;
    let servers = size.primaries + size.satellites;
    // Per phase: the median total, the best total, messages, bytes.
    let mut cost = [(Duration::ZERO, Duration::ZERO); 2];
    let mut phase_msgs = [0usize; 2];
    let mut phase_bytes = [0usize; 2];
    let mut kinds = Vec::new();
    for (phase, member, msgs) in conversations(w) {
        let n = if member == "device" {
            size.devices
        } else {
            servers
        };
        let (mut median, mut best) = (Duration::ZERO, Duration::ZERO);
        let mut bytes = 0;
        let mut parts = Vec::new();
        for (what, m) in &msgs {
            let mut runs: Vec<Duration> = (0..RUNS)
                .map(|_| {
                    let t = Instant::now();
                    for _ in 0..REPS {
                        black_box(m.round_trip());
                    }
                    t.elapsed() / REPS
                })
                .collect();
            runs.sort();
            let len = m.bytes().len();
            median += runs[RUNS / 2];
            best += runs[0];
            bytes += len;
            parts.push(format!(
                "{what} {len} B {:.1} µs",
                runs[RUNS / 2].as_secs_f64() * 1e6
            ));
        }
        let i = usize::from(phase == "activation");
        cost[i].0 += median * n as u32;
        cost[i].1 += best * n as u32;
        phase_msgs[i] += msgs.len() * n;
        phase_bytes[i] += bytes * n;
        kinds.push(format!(
            "{phase}, per {member} ({} messages, {:.1} µs median, {:.1} µs best): {}",
            msgs.len(),
            median.as_secs_f64() * 1e6,
            best.as_secs_f64() * 1e6,
            parts.join("; ")
        ));
    }
    for (i, (name, wall)) in [("apply", apply), ("activation", activation)]
        .into_iter()
        .enumerate()
    {
        let share = |d: Duration| 100.0 * d.as_secs_f64() / wall.as_secs_f64();
        report.row(
            S,
            format!(
                "serialisation in {name}: encode + parse of {} messages ({:.0} MB of JSON); \
                 median (best) of {RUNS} runs, share of the phase's wall time",
                fmt_n(phase_msgs[i]),
                phase_bytes[i] as f64 / MB
            ),
            format!(
                "{} ({}): {:.0}% ({:.0}%) of {}",
                fmt_d(cost[i].0),
                fmt_d(cost[i].1),
                share(cost[i].0),
                share(cost[i].1),
                fmt_d(wall)
            ),
        );
    }
    for k in kinds {
        report.notes.push(format!("wire: {k}"));
    }
}

/// Writes the captured status records into a fresh redb database: same keys, same stored
/// sizes (the store's 8-byte version header included), same transactions. Returns the time
/// of the writes and commits (database and table creation excluded, as in `RedbStore::create`).
fn raw_redb(dir: &Path, c: &Capture) -> Duration {
    const RECORDS: redb::TableDefinition<'static, &str, &[u8]> =
        redb::TableDefinition::new("records");
    let path = dir.join("raw.redb");
    let _ = std::fs::remove_file(&path);
    let db = redb::Database::create(&path).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(RECORDS).unwrap();
    txn.commit().unwrap();
    let max = c.value_lens.iter().copied().max().unwrap_or(0) as usize;
    let filler: Vec<u8> = (0..max + 8).map(|i| b'a' + (i % 26) as u8).collect();
    let t = Instant::now();
    let mut i = 0;
    for &n in &c.batches {
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(RECORDS).unwrap();
            for _ in 0..n {
                table
                    .insert(c.key(i), &filler[..c.value_len(i) + 8])
                    .unwrap();
                i += 1;
            }
        }
        txn.commit().unwrap();
    }
    let d = t.elapsed();
    drop(db);
    let _ = std::fs::remove_file(&path);
    d
}

// ---------------------------------------------------------------------------------------------
// Scenario 2: an internal Server Remint of 1,000 servers, against its primitives.

fn servers_scenario(n: usize, report: &mut Report) {
    const S: &str = "servers";
    reset_peak_rss();
    let (rss_start, _) = rss();
    let workers = std::thread::available_parallelism().map_or(1, |w| w.get());
    // The service as it comes (a refresh serves members on one worker per CPU), then the same
    // remint with members served one at a time, so the cost of the work itself shows too.
    let default = server_remint(n, None, report);
    let one = server_remint(n, NonZeroUsize::new(1), report);
    let (_, peak) = rss();

    let p = primitives(n);
    let sum = p.keygen + p.csr + p.verify + p.issue;
    let sum5 = sum + p.chain;
    report.row(
        S,
        format!(
            "**Server Remint end to end** ({} servers; the default service: {workers} workers on {workers} CPUs)",
            fmt_n(n)
        ),
        format!(
            "{} wall ({:.0} µs/server); {} CPU",
            fmt_d(default.wall),
            per(default.wall, n),
            fmt_d(default.cpu)
        ),
    );
    report.row(
        S,
        "Server Remint end to end, members one at a time (`with_concurrency(1)`)",
        format!(
            "{} wall ({:.0} µs/server); {} CPU",
            fmt_d(one.wall),
            per(one.wall, n),
            fmt_d(one.cpu)
        ),
    );
    for (what, d) in [
        ("P-256 keygen (PrivateKey::generate)", p.keygen),
        ("CSR build + sign (csr::build_csr)", p.csr),
        ("CSR verify (VerifiedCsr::from_der)", p.verify),
        (
            "issue (ca::issue_server_certificate, PrivateKey signer)",
            p.issue,
        ),
    ] {
        report.row(
            S,
            format!("primitive x{}: {what}", fmt_n(n)),
            format!("{} ({:.0} µs each)", fmt_d(d), per(d, n)),
        );
    }
    report.row(
        S,
        "sum of the four primitives (one thread)",
        format!("{} ({:.0} µs/server)", fmt_d(sum), per(sum, n)),
    );
    let ratio = default.wall.as_secs_f64() / sum.as_secs_f64();
    report.check(
        S,
        "**ratio end to end (wall) / sum of the four primitives**",
        format!("{ratio:.2}x"),
        "<= 1.3x",
        ratio <= SERVERS_RATIO_TARGET,
    );
    report.row(
        S,
        format!(
            "(info) primitive x{}: the agent's check of its new chain before staging (chain::verify_chain)",
            fmt_n(n)
        ),
        format!("{} ({:.0} µs each)", fmt_d(p.chain), per(p.chain, n)),
    );
    let r = |d: Duration, over: Duration| format!("{:.2}x", d.as_secs_f64() / over.as_secs_f64());
    report.row(
        S,
        "(info) CPU of the end to end / the four primitives; / the five (with the agent's chain check)",
        format!(
            "{} ; {} (default) — {} ; {} (one at a time)",
            r(default.cpu, sum),
            r(default.cpu, sum5),
            r(one.cpu, sum),
            r(one.cpu, sum5)
        ),
    );
    report.row(
        S,
        "(info) members one at a time: wall / the four primitives; / the five",
        format!("{} ; {}", r(one.wall, sum), r(one.wall, sum5)),
    );
    report.row(
        S,
        "peak RSS (VmHWM) during the scenario / RSS at its start",
        format!("{peak:.0} MB / {rss_start:.0} MB"),
    );
}

/// Wall and CPU time of one Server Remint end to end (start, apply, activation).
struct Run {
    wall: Duration,
    cpu: Duration,
}

/// Builds a zone of `n` servers and remints all of them; `workers` as the service's
/// `with_concurrency` (`None`: the default).
fn server_remint(n: usize, workers: Option<NonZeroUsize>, report: &mut Report) -> Run {
    const S: &str = "servers";
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(ts(T0));
    let mut svc = new_service(dir.path(), &clock);
    let mode = match workers {
        Some(w) => {
            svc = svc.with_concurrency(w);
            format!("{w} worker(s)")
        }
        None => "default workers".into(),
    };
    let name = |i: usize| {
        if i == 0 {
            "ps0000.zone.example".to_string()
        } else {
            format!("sat{i:04}.zone.example")
        }
    };
    report.phase(
        S,
        &format!(
            "setup [{mode}]: init (CA Primary Server) + {} satellites (enrolled)",
            fmt_n(n - 1)
        ),
        &svc,
        || {
            init_zone(&svc, &name(0));
            for i in 1..n {
                svc.add_server(satellite(&name(i), &name(0))).unwrap();
            }
        },
    );
    let fqdns: Vec<Fqdn> = (0..n).map(|i| fq(&name(i))).collect();
    let before = svc.server_chain(&fqdns[n - 1]).unwrap();
    let activation = clock.now_plus(WEEK);

    let (_, start) = report.phase(
        S,
        &format!("start [{mode}] (start_server_remint)"),
        &svc,
        || {
            svc.start_server_remint(
                ServerRemintRequest::new(
                    fqdns.clone(),
                    "Server Remint (scale)",
                    ActivationRequest::At(activation),
                )
                .with_key(KeySpec::P256),
            )
            .unwrap()
        },
    );
    let (_, apply) = report.phase(
        S,
        &format!("apply [{mode}]: refresh until all {} applied", fmt_n(n)),
        &svc,
        || {
            let mut applied = 0;
            for _ in 0..3 {
                let out = svc
                    .refresh(&[], &RefreshOptions::default(), |_, _| {})
                    .unwrap();
                applied += count(&out, "applied");
                if applied == n {
                    break;
                }
            }
            assert_eq!(applied, n, "servers applied");
        },
    );
    clock.set(activation);
    let (_, activate) = report.phase(
        S,
        &format!("activation [{mode}]: clock to activation, refresh of all"),
        &svc,
        || {
            let out = svc
                .refresh(&[], &RefreshOptions::default(), |_, _| {})
                .unwrap();
            expect_all(&out, "activated", n, "server activation");
        },
    );
    let cpu = report.details.iter().rev().take(3).map(|d| d.cpu).sum();
    // Checks (not timed): every server switched to a new key and certificate.
    let after = svc.server_chain(&fqdns[n - 1]).unwrap();
    assert_ne!(before[0], after[0]);
    let agent_chain = svc
        .transport()
        .inner
        .with_agent(fqdns[n - 1].as_str(), |a| a.chain().to_vec())
        .unwrap();
    assert_eq!(agent_chain[0], after[0]);
    Run {
        wall: start + apply + activate,
        cpu,
    }
}

fn per(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

struct Primitives {
    keygen: Duration,
    csr: Duration,
    verify: Duration,
    issue: Duration,
    /// Not one of the four the target names: the agent's check of the chain it stages.
    chain: Duration,
}

/// Each primitive `n` times, on inputs prepared outside the timed loop (the names, requests,
/// profiles and serials), as the service's Server Remint uses them.
fn primitives(n: usize) -> Primitives {
    let now = ts(T0);
    let ca_key = PrivateKey::generate(KeySpec::P256).unwrap();
    let params = CaParams {
        common_name: "Scale Zone".into(),
        validity: 5.try_into().unwrap(),
    };
    let ca = self_signed_ca(&ca_key, &params, &Serial::random().unwrap(), now).unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("sat{i:04}.zone.example")).collect();
    let requests: Vec<CsrRequest> = names.iter().map(|f| CsrRequest::default_for(f)).collect();
    let profiles: Vec<ServerProfile> = names
        .iter()
        .map(|f| ServerProfile {
            fqdn: f.clone(),
            common_name: None,
            dns_names: Vec::new(),
            include_dns: false,
            not_after: None,
        })
        .collect();
    let serials: Vec<Serial> = (0..n).map(|_| Serial::random().unwrap()).collect();

    let t = Instant::now();
    let keys: Vec<PrivateKey> = (0..n)
        .map(|_| PrivateKey::generate(KeySpec::P256).unwrap())
        .collect();
    let keygen = t.elapsed();

    let t = Instant::now();
    let csrs: Vec<CsrDer> = keys
        .iter()
        .zip(&requests)
        .map(|(k, r)| build_csr(r, k).unwrap())
        .collect();
    let csr = t.elapsed();

    let t = Instant::now();
    let verified: Vec<VerifiedCsr> = csrs
        .iter()
        .map(|c| VerifiedCsr::from_der(black_box(c.as_bytes())).unwrap())
        .collect();
    let verify = t.elapsed();

    let t = Instant::now();
    let certs: Vec<_> = verified
        .iter()
        .zip(&profiles)
        .zip(&serials)
        .map(|((c, p), s)| issue_server_certificate(&ca, &ca_key, c, p, s, now).unwrap())
        .collect();
    let issue = t.elapsed();

    // As `Agent::stage` does it: the chain [leaf, CA] against the anchor CA.
    let ca_der = ca.der().clone();
    let chains: Vec<Vec<CertificateDer>> = certs
        .iter()
        .map(|c| vec![c.der().clone(), ca_der.clone()])
        .collect();
    let anchors = [ca_der];
    let t = Instant::now();
    for chain in &chains {
        let certs: Vec<Certificate> = chain
            .iter()
            .map(|c| Certificate::try_from(c).unwrap())
            .collect();
        let anchors: Vec<Certificate> = anchors
            .iter()
            .map(|c| Certificate::try_from(c).unwrap())
            .collect();
        let (leaf, rest) = certs.split_first().unwrap();
        black_box(verify_chain(leaf, rest, &anchors, now).unwrap());
    }
    let chain = t.elapsed();
    Primitives {
        keygen,
        csr,
        verify,
        issue,
        chain,
    }
}

// ---------------------------------------------------------------------------------------------

trait NowPlus {
    fn now_plus(&self, d: Duration) -> Timestamp;
}

impl NowPlus for ManualClock {
    fn now_plus(&self, d: Duration) -> Timestamp {
        zonepki::clock::Clock::now(self).plus(d)
    }
}

fn main() {
    // `cargo bench` passes `--bench`; everything else is ours.
    let mut args = std::env::args().skip(1);
    let mut scenarios = Vec::new();
    let mut zone = ZoneSize {
        devices: 100_000,
        primaries: 50,
        satellites: 100,
    };
    let mut servers = 1_000;
    let mut check = false;
    let number = |v: Option<String>, what: &str| -> usize {
        v.and_then(|s| s.replace(['_', ','], "").parse().ok())
            .unwrap_or_else(|| panic!("{what} needs a number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "zone" | "servers" => scenarios.push(a),
            "--devices" => zone.devices = number(args.next(), "--devices"),
            "--primaries" => zone.primaries = number(args.next(), "--primaries").max(1),
            "--satellites" => zone.satellites = number(args.next(), "--satellites"),
            "--servers" => servers = number(args.next(), "--servers").max(2),
            "--check" => check = true,
            "--heap" => heap::enable(),
            "--bench" => {}
            other if other.starts_with("--") => {}
            other => panic!(
                "unknown argument {other:?}: expected zone, servers, --devices N, --primaries N, --satellites N, --servers N, --check"
            ),
        }
    }
    if scenarios.is_empty() {
        scenarios = vec!["zone".into(), "servers".into()];
    }
    let mut report = Report::default();
    report.notes.push(format!(
        "machine: {}; build: {}",
        machine(),
        if cfg!(debug_assertions) {
            "debug (numbers meaningless: use cargo bench)"
        } else {
            "release"
        }
    ));
    for s in &scenarios {
        eprintln!("running {s} ...");
        match s.as_str() {
            "zone" => zone_scenario(&zone, &mut report),
            _ => servers_scenario(servers, &mut report),
        }
    }
    report.print();
    if check && report.missed() {
        std::process::exit(1);
    }
}
