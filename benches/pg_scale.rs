//! The 100,000-device Remint CA of `benches/scale.rs` on [`PostgresStore`] (issue 12 item 6,
//! in process): wall time per phase, peak RSS, the store's size, and the status writes against
//! raw batched SQL writing the same rows in the same run (target <= 2x; B6, D1).
//!
//! Run (release): `ZONEPKI_BENCH_POSTGRES=postgres://USER@HOST:PORT/DB cargo bench --bench
//! pg_scale`, or `cargo bench --bench pg_scale -- --postgres URL`. `--devices N` (default
//! 100,000), `--primaries N` (50), `--satellites N` (100), `--raw-runs N` (3), `--check` (exit
//! status 1 when a target is missed). The URL names a server and a user that may create
//! databases; the bench makes a database of its own (`zonepki_bench_<pid>`) and drops it at
//! the end. Without a URL it says so and exits 0 without measuring anything.
//!
//! The zone, the phases and the fleet are those of `benches/scale.rs`'s `zone` scenario (the
//! same library calls: `init_internal`, `add_server`, `add_devices` 5,000 at a time, the
//! in-process fleet's agent-driven `refresh`, `start_remint_ca`, `replicate`, activation by
//! the clock); only the store differs. Every phase is timed once; the store is wrapped to add
//! up the time of each call and to record the status writes (`op/<id>/m/<name>`) of the apply
//! and activation refreshes.
//!
//! Per phase: wall time; CPU of this process (`getrusage`: the zone, the in-process agents and
//! the PostgreSQL client); CPU of the PostgreSQL server when it runs on this host (the
//! postmaster found as a backend's parent in /proc: its own and its reaped children's time plus
//! every live child's); WAL written (`pg_current_wal_lsn`, the whole cluster's, so autovacuum's
//! too); peak RSS (`VmHWM`, reset before each phase); the store calls. The table's size is
//! `pg_total_relation_size('zonepki_records')` after setup and after the Remint CA.
//!
//! **The raw baseline.** Just before the apply and the activation refreshes (not timed), the
//! whole `zonepki_records` table is copied (`CREATE TABLE ... AS SELECT`, then `CHECKPOINT`):
//! the state the phase starts from. After the scenario, each raw run copies that copy again
//! into a table of the store's layout (`CREATE TABLE ... (LIKE zonepki_records INCLUDING
//! ALL)`, `INSERT ... SELECT`, `VACUUM ANALYZE`, `CHECKPOINT`), and on one connection made with
//! the same URL writes again each transaction the store committed with status writes during
//! the phase: the same status keys, values of the same lengths, the same grouping, each
//! transaction `BEGIN`, the rows, `COMMIT`. So the raw writer inserts where the store created
//! a record and updates where it rewrote one, in a table of the same size; it neither reads
//! nor checks a version. Two forms of "the rows", each run `--raw-runs` times, alternating:
//! one prepared multi-row `INSERT ... SELECT FROM unnest(...) ON CONFLICT (key) DO UPDATE`,
//! and, told beforehand which keys exist, one multi-row `UPDATE ... FROM unnest(...)` plus one
//! multi-row `INSERT` (the store's own statements without its locking read). The faster
//! median of the two is the baseline. The ratio is the store's commit time during the phase
//! (every commit of the phase: the status writes and the few others) over that baseline.
//! `CHECKPOINT` needs a superuser; for another user it is skipped.
//!
//! The server's `fsync`, `synchronous_commit` and `shared_buffers` are printed with the figures:
//! the figures in the README and docs/scale-1m.md say which they were measured with.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};
use zonepki::cert::Certificate;
use zonepki::chain::verify_chain;
use zonepki::clock::{Clock, ManualClock, Timestamp};
use zonepki::key::KeySpec;
use zonepki::ops::ActivationRequest;
use zonepki::service::{InitInternal, NewServer, RemintCaRequest, ZoneService};
use zonepki::store::{Committed, PostgresStore, Record, Storage, StoreError, Write};
use zonepki::transport::{Fleet, LoopbackTransport, RefreshOptions, RefreshOutcome};
use zonepki::zone::{Fqdn, ServerRole};

const ENV: &str = "ZONEPKI_BENCH_POSTGRES";
const T0: &str = "2027-01-01T00:00:00Z";
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
/// `add_devices` per call, as in benches/scale.rs.
const ADD_CHUNK: usize = 5_000;
const MB: f64 = 1024.0 * 1024.0;
const STATUS_WRITE_TARGET: f64 = 2.0;

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

/// The status writes of one phase: every `op/<id>/m/<name>` write of every committed
/// transaction, as key and value length, how many each transaction held, and how long each of
/// those commits took in the store.
#[derive(Default)]
struct Capture {
    keys: Vec<String>,
    value_lens: Vec<usize>,
    batches: Vec<usize>,
    commit_times: Vec<Duration>,
}

impl Capture {
    fn len(&self) -> usize {
        self.keys.len()
    }
    fn value_bytes(&self) -> usize {
        self.value_lens.iter().sum()
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
    // `scan_each` is the provided one: it pages through `scan`.
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
        let took = t.elapsed();
        self.commit.add(took);
        self.writes
            .fetch_add(writes.len() as u64, Ordering::Relaxed);
        if r.is_ok()
            && let Some(c) = lock(&self.capture).as_mut()
        {
            let mut n = 0;
            for w in writes {
                if let (true, Some(v)) = (is_status_key(&w.key), &w.value) {
                    c.keys.push(w.key.clone());
                    c.value_lens.push(v.len());
                    n += 1;
                }
            }
            if n > 0 {
                c.batches.push(n);
                c.commit_times.push(took);
            }
        }
        r
    }
}

type Svc<'c> = ZoneService<TimedStore<PostgresStore>, LoopbackTransport, &'c ManualClock>;

// ---------------------------------------------------------------------------------------------
// Reporting.

struct Row {
    phase: String,
    value: String,
    target: String,
    ok: Option<bool>,
}

/// One timed phase with what it spent in the store.
struct Detail {
    phase: String,
    wall: Duration,
    /// CPU time of this process (every thread) during the phase.
    cpu: Duration,
    /// CPU time of the PostgreSQL server during the phase (same host only).
    pg_cpu: Option<Duration>,
    /// WAL the server wrote during the phase, bytes (every database of the cluster).
    wal: Option<i64>,
    store: StoreTally,
    /// VmHWM during the phase (reset before it), MB.
    peak_rss: f64,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    details: Vec<Detail>,
    notes: Vec<String>,
}

impl Report {
    fn row(&mut self, phase: impl Into<String>, value: impl Into<String>) {
        self.rows.push(Row {
            phase: phase.into(),
            value: value.into(),
            target: String::new(),
            ok: None,
        });
    }
    fn check(
        &mut self,
        phase: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        ok: bool,
    ) {
        self.rows.push(Row {
            phase: phase.into(),
            value: value.into(),
            target: target.into(),
            ok: Some(ok),
        });
    }

    /// Runs `f` as one phase: wall time, CPU time, peak RSS and store tallies.
    fn phase<R>(&mut self, name: &str, svc: &Svc<'_>, f: impl FnOnce() -> R) -> (R, Duration) {
        eprintln!("  {name} ...");
        reset_peak_rss();
        let s0 = svc.store().tally();
        let pg0 = pg_cpu_time();
        let wal0 = wal_position();
        let cpu0 = cpu_time();
        let t = Instant::now();
        let r = f();
        let wall = t.elapsed();
        let cpu = cpu_time().saturating_sub(cpu0);
        let pg_cpu = pg_cpu_time().zip(pg0).map(|(b, a)| b.saturating_sub(a));
        let wal = wal_position().zip(wal0).map(|(b, a)| b - a);
        let s1 = svc.store().tally();
        let (_, peak_rss) = rss();
        self.row(name, fmt_d(wall));
        self.details.push(Detail {
            phase: name.to_string(),
            wall,
            cpu,
            pg_cpu,
            wal,
            store: s1.minus(s0),
            peak_rss,
        });
        (r, wall)
    }

    fn missed(&self) -> bool {
        self.rows.iter().any(|r| r.ok == Some(false))
    }

    fn print(&self) {
        println!();
        println!("| phase | value | target | ok? |");
        println!("|---|---:|---|---|");
        for r in &self.rows {
            let ok = match r.ok {
                Some(true) => "ok",
                Some(false) => "**MISSED**",
                None => "",
            };
            println!("| {} | {} | {} | {} |", r.phase, r.value, r.target, ok);
        }
        println!();
        println!("Where each timed phase spends its time (store calls, this process):");
        println!();
        println!(
            "| phase | wall | CPU (this process) | CPU (PostgreSQL server) | WAL written | peak RSS | store get | store scan | store commit (writes) |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for d in &self.details {
            println!(
                "| {} | {} | {} | {} | {} | {:.0} MB | {}x {} | {}x {} | {}x {} ({}) |",
                d.phase,
                fmt_d(d.wall),
                fmt_d(d.cpu),
                d.pg_cpu.map_or("(other host)".into(), fmt_d),
                d.wal
                    .map_or("?".into(), |b| format!("{:.1} MB", b as f64 / MB)),
                d.peak_rss,
                d.store.get.n,
                fmt_d(d.store.get.t),
                d.store.scan.n,
                fmt_d(d.store.scan.t),
                d.store.commit.n,
                fmt_d(d.store.commit.t),
                d.store.writes,
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

/// CPU time used so far by the whole process, every thread, user + system.
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

/// A connection for reading the server's WAL position around each phase.
static WAL: std::sync::OnceLock<Mutex<Client>> = std::sync::OnceLock::new();

/// The server's current WAL position (bytes since the cluster began).
fn wal_position() -> Option<i64> {
    let mut c = lock(WAL.get()?);
    c.query_one(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint",
        &[],
    )
    .ok()
    .map(|r| r.get(0))
}

/// The PostgreSQL server's postmaster, when it runs on this host (found from a backend's
/// parent in /proc); `None` for a server elsewhere.
static POSTMASTER: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();

/// Fields 14-17 of /proc/<pid>/stat (utime, stime, cutime, cstime) and field 4 (ppid), in
/// clock ticks; the command name (field 2) may hold spaces, so fields are counted after it.
fn proc_stat(pid: u32) -> Option<(u32, [u64; 4])> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let ppid = f.get(1)?.parse().ok()?;
    let n = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Some((ppid, [n(14), n(15), n(16), n(17)]))
}

/// CPU time used so far by the PostgreSQL server (the postmaster, every live child, and the
/// children it has reaped), when it runs on this host.
fn pg_cpu_time() -> Option<Duration> {
    let pm = (*POSTMASTER.get()?)?;
    let tick = 1.0 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (_, own) = proc_stat(pm)?;
    let mut ticks: u64 = own.iter().sum();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((ppid, t)) = proc_stat(pid)
            && ppid == pm
        {
            ticks += t[0] + t[1];
        }
    }
    Some(Duration::from_secs_f64(ticks as f64 * tick))
}

fn find_postmaster(c: &mut Client) -> Option<u32> {
    let backend: i32 = c.query_one("SELECT pg_backend_pid()", &[]).ok()?.get(0);
    let (ppid, _) = proc_stat(u32::try_from(backend).ok()?)?;
    // A backend's parent is the postmaster; a server on another host shows no such process.
    let cmd = std::fs::read_to_string(format!("/proc/{ppid}/cmdline")).ok()?;
    cmd.contains("postgres").then_some(ppid)
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

fn median(mut v: Vec<Duration>) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[v.len() / 2]
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

/// Resets `VmHWM` to the current RSS (Linux >= 4.0), so each phase's peak is its own.
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

fn expect_all(outcomes: &[RefreshOutcome], what: &str, n: usize, phase: &str) {
    let got = outcomes.iter().filter(|o| o.outcome == what).count();
    if got != n {
        let other: Vec<_> = outcomes
            .iter()
            .filter(|o| o.outcome != what)
            .take(5)
            .collect();
        panic!("{phase}: {got} of {n} members {what}; first others: {other:?}");
    }
}

fn satellite(name: &str, parent: &str) -> NewServer {
    let mut s = NewServer::new(fq(name), ServerRole::AuthSatellite);
    s.parent = Some(fq(parent));
    s
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL: a database of the bench's own, the server's settings, sizes.

/// `url` with its database name replaced by `db` (query options kept).
fn with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

fn connect(url: &str) -> Client {
    Client::connect(url, NoTls).unwrap_or_else(|e| {
        panic!(
            "cannot connect to the PostgreSQL server {} ({e}); check {ENV} / --postgres",
            zonepki::store::postgres::redact(url)
        )
    })
}

/// A database made for this run, dropped (with its connections) when the value is dropped.
struct BenchDb {
    server: String,
    name: String,
    url: String,
}

impl BenchDb {
    fn new(server: &str) -> BenchDb {
        let name = format!("zonepki_bench_{}", std::process::id());
        let mut admin = connect(server);
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin
                .batch_execute(&sql)
                .unwrap_or_else(|e| panic!("cannot create database {name}: {e:?}"));
        }
        BenchDb {
            server: server.to_string(),
            url: with_db(server, &name),
            name,
        }
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        let _ = connect(&self.server).batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

fn setting(c: &mut Client, name: &str) -> String {
    c.query_one(&format!("SHOW {name}"), &[])
        .and_then(|r| r.try_get::<_, String>(0))
        .unwrap_or_else(|e| format!("(unknown: {e})"))
}

/// `pg_total_relation_size` (heap, TOAST, indexes) of `zonepki_records` and its row count.
fn store_size(c: &mut Client) -> (i64, i64) {
    let row = c
        .query_one(
            "SELECT pg_total_relation_size('zonepki_records'), \
                    (SELECT count(*) FROM zonepki_records)",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

fn fmt_size(c: &mut Client) -> String {
    let (table, rows) = store_size(c);
    format!(
        "{:.1} MB ({} records, {:.0} bytes a record)",
        table as f64 / MB,
        fmt_n(rows as usize),
        table as f64 / rows.max(1) as f64
    )
}

/// Copies `zonepki_records` as it is now into the table `name` (not timed): the state a phase
/// starts from, for [`raw_sql`].
fn snapshot(c: &mut Client, name: &str) {
    c.batch_execute(&format!(
        "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} AS SELECT * FROM zonepki_records"
    ))
    .unwrap();
    checkpoint(c);
}

/// How the raw writer writes a transaction's rows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Raw {
    /// One multi-row `INSERT ... ON CONFLICT (key) DO UPDATE`.
    Upsert,
    /// Told which keys exist (found before the timing), one multi-row `UPDATE ... FROM
    /// unnest` of those and one multi-row `INSERT` of the others: what the store does, without
    /// its locking read and its checks.
    Split,
}

impl Raw {
    fn name(self) -> &'static str {
        match self {
            Raw::Upsert => "one INSERT ... ON CONFLICT DO UPDATE",
            Raw::Split => "one UPDATE ... FROM unnest + one INSERT (told which keys exist)",
        }
    }
}

/// Writes dirty pages and the WAL out (superuser only; otherwise nothing), so the timing that
/// follows does not pay for the copy made just before it.
fn checkpoint(c: &mut Client) {
    let _ = c.batch_execute("CHECKPOINT");
}

/// One raw run: a fresh copy of the phase's starting state `snapshot` (not timed), then the
/// captured transactions written again, the same rows in the same grouping (an insert where
/// the store created the record, an update where it rewrote it). Returns the total and each
/// transaction's time.
fn raw_sql(url: &str, snapshot: &str, c: &Capture, form: Raw) -> (Duration, Vec<Duration>) {
    let mut client = connect(url);
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS raw_records; \
             CREATE TABLE raw_records (LIKE zonepki_records INCLUDING ALL); \
             INSERT INTO raw_records SELECT * FROM {snapshot}"
        ))
        .unwrap();
    client.batch_execute("VACUUM ANALYZE raw_records").unwrap();
    checkpoint(&mut client);
    let upsert = client
        .prepare(
            "INSERT INTO raw_records (key, version, value) \
             SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[]) \
             ON CONFLICT (key) DO UPDATE \
             SET version = raw_records.version + 1, value = excluded.value",
        )
        .unwrap();
    let insert = client
        .prepare(
            "INSERT INTO raw_records (key, version, value) \
             SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[])",
        )
        .unwrap();
    let update = client
        .prepare(
            "UPDATE raw_records AS r SET version = r.version + 1, value = u.value \
             FROM unnest($1::bytea[], $2::bytea[]) AS u(key, value) WHERE r.key = u.key",
        )
        .unwrap();
    // Which captured keys exist when the phase starts (for `Split`; not timed).
    let mut exists = std::collections::HashSet::new();
    if form == Raw::Split {
        let all: Vec<&[u8]> = c.keys.iter().map(|k| k.as_bytes()).collect();
        for row in client
            .query("SELECT key FROM raw_records WHERE key = ANY($1)", &[&all])
            .unwrap()
        {
            exists.insert(row.get::<_, Vec<u8>>(0));
        }
    }
    let max = c.value_lens.iter().copied().max().unwrap_or(0);
    let filler: Vec<u8> = (0..max).map(|i| b'a' + (i % 26) as u8).collect();
    let mut times = Vec::with_capacity(c.batches.len());
    let t = Instant::now();
    let mut i = 0;
    for &n in &c.batches {
        let b = Instant::now();
        let keys: Vec<&[u8]> = c.keys[i..i + n].iter().map(|k| k.as_bytes()).collect();
        let values: Vec<&[u8]> = c.value_lens[i..i + n]
            .iter()
            .map(|&l| &filler[..l])
            .collect();
        let mut txn = client.transaction().unwrap();
        match form {
            Raw::Upsert => {
                let versions: Vec<i64> = vec![1; n];
                txn.execute(&upsert, &[&keys, &versions, &values]).unwrap();
            }
            Raw::Split => {
                let (mut uk, mut uv, mut ik, mut iv) = (vec![], vec![], vec![], vec![]);
                for (k, v) in keys.iter().zip(&values) {
                    if exists.contains(*k) {
                        uk.push(*k);
                        uv.push(*v);
                    } else {
                        exists.insert(k.to_vec());
                        ik.push(*k);
                        iv.push(*v);
                    }
                }
                if !uk.is_empty() {
                    txn.execute(&update, &[&uk, &uv]).unwrap();
                }
                if !ik.is_empty() {
                    let versions: Vec<i64> = vec![1; ik.len()];
                    txn.execute(&insert, &[&ik, &versions, &iv]).unwrap();
                }
            }
        }
        txn.commit().unwrap();
        times.push(b.elapsed());
        i += n;
    }
    let total = t.elapsed();
    client.batch_execute("DROP TABLE raw_records").unwrap();
    (total, times)
}

/// A timed phase whose status writes are compared with raw SQL.
struct Measured<'a> {
    /// The phase's name in the report.
    what: &'a str,
    /// The table holding the store's records as they were when the phase started.
    snapshot: &'a str,
    /// The store's tallies during the phase.
    store: StoreTally,
    /// Its status writes.
    capture: Capture,
    /// Whether the ratio is the bench's target (<= 2x) or for information.
    target: bool,
}

/// The store's commits of a phase against `runs` raw runs of the same status writes.
fn compare(report: &mut Report, url: &str, m: &Measured<'_>, runs: usize) {
    let (what, snapshot, phase, c, target) = (m.what, m.snapshot, &m.store, &m.capture, m.target);
    if c.keys.is_empty() {
        report.row(format!("{what}: no status writes captured"), "");
        return;
    }
    // Both raw forms, alternating; the faster median is the baseline.
    let forms = [Raw::Upsert, Raw::Split];
    let mut totals: [Vec<Duration>; 2] = Default::default();
    let mut per_txn: [Vec<Duration>; 2] = Default::default();
    for _ in 0..runs.max(1) {
        for (f, form) in forms.iter().enumerate() {
            let (total, times) = raw_sql(url, snapshot, c, *form);
            totals[f].push(total);
            per_txn[f].extend(times);
        }
    }
    let medians = [median(totals[0].clone()), median(totals[1].clone())];
    let best = if medians[1] < medians[0] { 1 } else { 0 };
    let raw = medians[best];
    for (f, form) in forms.iter().enumerate() {
        report.row(
            format!(
                "{what}: raw SQL, the same {} status records ({:.1} MB) in {} transactions, \
                 each {} (median of {}; each run){}",
                fmt_n(c.len()),
                c.value_bytes() as f64 / MB,
                c.batches.len(),
                form.name(),
                totals[f].len(),
                if f == best { "; the baseline" } else { "" },
            ),
            format!(
                "{} ({})",
                fmt_d(medians[f]),
                totals[f]
                    .iter()
                    .map(|d| fmt_d(*d))
                    .collect::<Vec<_>>()
                    .join(" / ")
            ),
        );
    }
    report.row(
        format!(
            "{what}: store commits during the phase ({} transactions, {} writes; {} of them with \
             status writes)",
            phase.commit.n,
            fmt_n(phase.writes as usize),
            c.batches.len()
        ),
        fmt_d(phase.commit.t),
    );
    let typical = c.batches.iter().copied().max().unwrap_or(0);
    report.row(
        format!(
            "{what}: median per transaction, store / raw baseline (transactions of up to {} \
             status writes)",
            fmt_n(typical)
        ),
        format!(
            "{} / {}",
            fmt_d(median(c.commit_times.clone())),
            fmt_d(median(per_txn[best].clone()))
        ),
    );
    let ratio = phase.commit.t.as_secs_f64() / raw.as_secs_f64();
    if target {
        report.check(
            format!("**{what}: status-write ratio, store commits / raw SQL**"),
            format!("**{ratio:.2}x**"),
            "<= 2x",
            ratio <= STATUS_WRITE_TARGET,
        );
    } else {
        report.row(
            format!("{what}: status-write ratio, store commits / raw SQL (info)"),
            format!("{ratio:.2}x"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The scenario: benches/scale.rs's `zone`, on PostgreSQL.

struct Size {
    devices: usize,
    primaries: usize,
    satellites: usize,
}

fn scenario(url: &str, size: &Size, raw_runs: usize, report: &mut Report) {
    let (rss_before, _) = rss();
    let clock = ManualClock::new(ts(T0));
    let store = PostgresStore::create(url).unwrap();
    let svc: Svc<'_> = ZoneService::new(
        TimedStore::new(store),
        LoopbackTransport::in_memory(),
        &clock,
    );
    let mut sql = connect(url);
    let members = 1 + (size.primaries - 1) + size.satellites + size.devices;
    let servers = size.primaries + size.satellites;

    // Setup: not part of any target.
    let primary = |i: usize| format!("ps{i:03}.zone.example");
    report.phase(
        &format!(
            "setup: init + {} Primary Servers + {} satellites (enrolled)",
            size.primaries - 1,
            size.satellites
        ),
        &svc,
        || {
            svc.init_internal(
                InitInternal::new(
                    "Scale Zone",
                    NewServer::new(fq(&primary(1)), ServerRole::Primary),
                )
                .with_ca_key(KeySpec::P256)
                .with_validity(5.try_into().unwrap()),
            )
            .unwrap();
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
        "setup: refresh of all (every agent learns the zone's trust)",
        &svc,
        || {
            let out = svc
                .refresh(&[], &RefreshOptions::default(), |_, _| {})
                .unwrap();
            expect_all(&out[..servers], "up-to-date", servers, "initial refresh");
            expect_all(
                &out[servers..],
                "trust-updated",
                size.devices,
                "initial refresh",
            );
        },
    );
    let (rss_built, _) = rss();
    let size_built = fmt_size(&mut sql);
    let old_ca = svc.ca_certificate().unwrap();

    // The Remint CA.
    let activation = clock.now().plus(WEEK);
    let mut total = Duration::ZERO;
    let mut peak = 0.0f64;
    let first_phase = report.details.len();
    let (view, t) = report.phase("start (start_remint_ca, returns op show)", &svc, || {
        svc.start_remint_ca(
            RemintCaRequest::new(ActivationRequest::At(activation))
                .with_key(KeySpec::P256)
                .with_validity(5.try_into().unwrap())
                .with_include_dns(true),
        )
        .unwrap()
    });
    total += t;
    peak = peak.max(rss().1);
    assert_eq!(view.state, "replicating");
    let content: Vec<Fqdn> = view.replication.iter().map(|r| fq(&r.server)).collect();
    drop(view);
    assert_eq!(content.len(), size.primaries);
    let (last, first) = content.split_last().unwrap();
    let (view, t) = report.phase(
        &format!(
            "replication (replicate: {} of {} content servers, returns op show)",
            first.len(),
            content.len()
        ),
        &svc,
        || svc.replicate(first).unwrap(),
    );
    total += t;
    peak = peak.max(rss().1);
    assert_eq!(view.state, "replicating");
    drop(view);
    let (view, t) = report.phase(
        "assignment (replicate: the last content server; O4 assigns, returns op show)",
        &svc,
        || svc.replicate(std::slice::from_ref(last)).unwrap(),
    );
    total += t;
    peak = peak.max(rss().1);
    assert_eq!(view.state, "assigned");
    drop(view);

    snapshot(&mut sql, "bench_before_apply");
    svc.store().start_capture();
    let (out, t) = report.phase(
        &format!(
            "apply: refresh of {} members (every device staged and reporting, {servers} new \
             server certs)",
            fmt_n(members),
        ),
        &svc,
        || {
            svc.refresh(&[], &RefreshOptions::default(), |_, _| {})
                .unwrap()
        },
    );
    total += t;
    peak = peak.max(rss().1);
    let apply_capture = svc.store().take_capture();
    expect_all(&out, "applied", members, "apply refresh");
    drop(out);
    let apply = report.details.last().map(|d| d.store).unwrap();

    clock.set(activation);
    snapshot(&mut sql, "bench_before_activation");
    svc.store().start_capture();
    let (out, t) = report.phase(
        &format!(
            "activation: clock to activation, refresh of {} members (every one reporting)",
            fmt_n(members)
        ),
        &svc,
        || {
            svc.refresh(&[], &RefreshOptions::default(), |_, _| {})
                .unwrap()
        },
    );
    total += t;
    peak = peak.max(rss().1);
    let activation_capture = svc.store().take_capture();
    expect_all(&out, "activated", members, "activation refresh");
    drop(out);
    let activated = report.details.last().map(|d| d.store).unwrap();

    report.row("**Remint CA total** (start .. activation)", fmt_d(total));
    let phases = &report.details[first_phase..];
    let cpu: Duration = phases.iter().map(|d| d.cpu).sum();
    let pg_cpu: Option<Duration> = phases.iter().map(|d| d.pg_cpu).sum();
    let per = |d: Duration| format!("{:.0} µs", d.as_secs_f64() * 1e6 / members as f64);
    let wal: Option<i64> = phases.iter().map(|d| d.wal).sum();
    report.row(
        "CPU during the Remint CA: this process (zone + agents + client); per member",
        format!("{}; {}", fmt_d(cpu), per(cpu)),
    );
    report.row(
        "WAL written during the Remint CA; per member",
        wal.map_or("?".into(), |b| {
            format!(
                "{:.0} MB; {:.0} bytes",
                b as f64 / MB,
                b as f64 / members as f64
            )
        }),
    );
    report.row(
        "CPU during the Remint CA: the PostgreSQL server; per member",
        pg_cpu.map_or("(server on another host)".into(), |d| {
            format!("{}; {}", fmt_d(d), per(d))
        }),
    );
    report.row(
        "peak RSS (VmHWM) of this process during the Remint CA (PostgreSQL's own processes not \
         counted)",
        format!("{peak:.0} MB"),
    );
    report.row(
        "RSS before the zone was built / after setup",
        format!("{rss_before:.0} MB / {rss_built:.0} MB"),
    );
    report.row(
        "store size after setup: pg_total_relation_size(zonepki_records)",
        size_built,
    );

    // Checks (not timed): the zone switched, members hold the new CA.
    let new_ca = svc.ca_certificate().unwrap();
    assert_ne!(new_ca.der(), old_ca.der());
    let dev_trust = svc
        .transport()
        .with_agent(&format!("dev-{:06}", size.devices), |a| a.trust().to_vec())
        .unwrap();
    assert_eq!(dev_trust.first(), Some(new_ca.der()));
    let sat_chain = svc
        .transport()
        .with_agent("sat001.zone.example", |a| a.chain().to_vec())
        .unwrap();
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
        &format!("(info) op show after activation: {} rows", fmt_n(members)),
        &svc,
        || svc.op_show().unwrap(),
    );
    assert_eq!(view.state, "activated");
    assert!(view.stranded.is_empty());
    assert_eq!(view.members().count(), members);
    drop(view);
    report.row(
        "store size after the Remint CA: pg_total_relation_size(zonepki_records)",
        fmt_size(&mut sql),
    );
    drop(svc);

    // The raw baselines (not timed against the phases above; the store is idle).
    eprintln!("  raw SQL baselines ...");
    for m in [
        Measured {
            what: "apply",
            snapshot: "bench_before_apply",
            store: apply,
            capture: apply_capture,
            target: true,
        },
        Measured {
            what: "activation",
            snapshot: "bench_before_activation",
            store: activated,
            capture: activation_capture,
            target: false,
        },
    ] {
        compare(report, url, &m, raw_runs);
    }
    report.notes.push(format!(
        "zone: {} members ({} Primary Servers, {} satellites, {} devices); activation {}",
        fmt_n(members),
        size.primaries,
        size.satellites,
        fmt_n(size.devices),
        activation,
    ));
}

fn main() {
    // `cargo bench` passes `--bench`; everything else is ours.
    let mut args = std::env::args().skip(1);
    let mut size = Size {
        devices: 100_000,
        primaries: 50,
        satellites: 100,
    };
    let mut url = std::env::var(ENV).ok().filter(|u| !u.is_empty());
    let mut raw_runs = 3;
    let mut check = false;
    let number = |v: Option<String>, what: &str| -> usize {
        v.and_then(|s| s.replace(['_', ','], "").parse().ok())
            .unwrap_or_else(|| panic!("{what} needs a number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--postgres" => url = Some(args.next().expect("--postgres needs a URL")),
            "--devices" => size.devices = number(args.next(), "--devices"),
            "--primaries" => size.primaries = number(args.next(), "--primaries").max(1),
            "--satellites" => size.satellites = number(args.next(), "--satellites"),
            "--raw-runs" => raw_runs = number(args.next(), "--raw-runs").max(1),
            "--check" => check = true,
            "--bench" => {}
            other if other.starts_with("--") => {}
            other => panic!(
                "unknown argument {other:?}: expected --postgres URL, --devices N, \
                 --primaries N, --satellites N, --raw-runs N, --check"
            ),
        }
    }
    let Some(server) = url else {
        println!(
            "pg_scale: skipped, no PostgreSQL server given. Set {ENV}=postgres://USER@HOST:PORT/DB \
             (a user that may create databases) or pass `-- --postgres URL`; the bench makes a \
             database of its own there and drops it at the end."
        );
        return;
    };
    let db = BenchDb::new(&server);
    let mut report = Report::default();
    {
        let mut c = connect(&db.url);
        let version = setting(&mut c, "server_version");
        let fsync = setting(&mut c, "fsync");
        let sync = setting(&mut c, "synchronous_commit");
        let buffers = setting(&mut c, "shared_buffers");
        POSTMASTER.get_or_init(|| find_postmaster(&mut c));
        let _ = WAL.set(Mutex::new(c));
        report.notes.push(format!(
            "machine: {}; build: {}; PostgreSQL {version} at {} (same host, TCP), fsync={fsync}, \
             synchronous_commit={sync}, shared_buffers={buffers}",
            machine(),
            if cfg!(debug_assertions) {
                "debug (numbers meaningless: use cargo bench)"
            } else {
                "release"
            },
            zonepki::store::postgres::redact(&server),
        ));
    }
    eprintln!(
        "pg_scale: {} devices on {}",
        fmt_n(size.devices),
        zonepki::store::postgres::redact(&db.url)
    );
    scenario(&db.url, &size, raw_runs, &mut report);
    report.print();
    drop(db);
    if check && report.missed() {
        std::process::exit(1);
    }
}
