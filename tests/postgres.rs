//! The PostgreSQL store beyond the conformance suite (tests/store.rs): create/open semantics,
//! schema versions, secrets in URLs, reconnecting after the server dropped its connections
//! (also in the middle of a Remint CA), snapshots, and zonectl on PostgreSQL: `init`, `store
//! copy` between every pair of kinds with equal dumps, and its refusals (issue 12 items 1, 3,
//! 5; B6, D1, D3).
//!
//! Every test needs a server (`$ZONEPKI_TEST_POSTGRES`, see tests/common/pg.rs) and makes a
//! database of its own; without the variable they are ignored with the reason.
#![allow(clippy::unwrap_used)]

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/sim.rs"]
mod sim;

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};

use cli::{PS1, PS2, Zone};
use common::pg::TestDb;
use sim::{Sim, Spec, remint_ca, t};
use zonepki::cert::Certificate;
use zonepki::chain::verify_chain;
use zonepki::error::Result as ZResult;
use zonepki::store::postgres::{SCHEMA_VERSION, SchemaTooNew};
use zonepki::store::{Committed, Expect, PostgresStore, Record, Storage, StoreError, Write};
use zonepki::transport::{LoopbackTransport, RefreshOptions};

macro_rules! pg_test {
    ($(#[$m:meta])* fn $name:ident() $body:block) => {
        $(#[$m])*
        #[test]
        #[cfg_attr(
            not(zonepki_has_postgres),
            ignore = "needs PostgreSQL: set ZONEPKI_TEST_POSTGRES=postgres://USER@HOST:PORT/DB"
        )]
        fn $name() $body
    };
}

/// `url` (`postgres://USER[:PASSWORD]@HOST...`) with the password `password`. The test
/// server's user must need none (trust authentication ignores it), as `.ci/run` sets it up.
fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (user, host) = rest
        .split_once('@')
        .unwrap_or_else(|| panic!("{} must name a user (USER@HOST)", common::pg::ENV));
    let user = user.split(':').next().unwrap();
    format!("{scheme}://{user}:{password}@{host}")
}

fn rec(version: u64, value: &[u8]) -> Option<Record> {
    Some(Record {
        version,
        value: value.to_vec(),
    })
}

pg_test! {
    /// `create` / `open` / `connect` as RedbStore's create and open: a database without the
    /// tables is not found, one with them already exists; two handles are two servers.
    fn create_open_connect_mirror_redb() {
        let db = TestDb::new("semantics");
        match PostgresStore::open(&db.url) {
            Err(e @ StoreError::NotFound { .. }) => {
                assert!(e.to_string().contains("create it first"), "{e}");
                assert!(!e.is_retryable());
            }
            other => panic!("expected not found, got {other:?}"),
        }
        let first = PostgresStore::create(&db.url).unwrap();
        assert_eq!(first.schema_version().unwrap(), Some(i64::from(SCHEMA_VERSION)));
        assert!(matches!(
            PostgresStore::create(&db.url),
            Err(StoreError::AlreadyExists { .. })
        ));
        first.commit(&[Write::create("k", *b"1")]).unwrap();
        // A second handle (another server) sees the first one's commits, and conflicts with it.
        let second = PostgresStore::open(&db.url).unwrap();
        assert_eq!(second.get("k").unwrap(), rec(1, b"1"));
        second
            .commit(&[Write::put("k", Expect::Version(1), *b"2")])
            .unwrap();
        assert!(matches!(
            first.commit(&[Write::put("k", Expect::Version(1), *b"3")]),
            Err(StoreError::Conflict { found: Some(2), .. })
        ));
        let third = PostgresStore::connect(&db.url).unwrap();
        assert_eq!(third.get("k").unwrap(), rec(2, b"2"));
        // `connect` makes the tables of a database without them.
        let other = TestDb::new("semantics_connect");
        let made = PostgresStore::connect(&other.url).unwrap();
        assert!(made.scan("", None, 10).unwrap().is_empty());
        made.destroy().unwrap();
        assert!(matches!(
            PostgresStore::open(&other.url),
            Err(StoreError::NotFound { .. })
        ));
    }
}

pg_test! {
    /// Racing creates of one database: exactly one wins, the others are told it exists.
    fn racing_creates_one_wins() {
        let db = TestDb::new("create_race");
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| PostgresStore::create(&db.url).map(|_| ())))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
        for r in results.iter().filter(|r| r.is_err()) {
            assert!(matches!(r, Err(StoreError::AlreadyExists { .. })), "{r:?}");
        }
    }
}

pg_test! {
    /// A layout newer than the build is refused, clearly and for good; an older one is
    /// upgraded on open, records kept.
    fn newer_schema_refused_older_migrated() {
        let db = TestDb::new("schema");
        let store = PostgresStore::create(&db.url).unwrap();
        store.commit(&[Write::create("k", *b"v")]).unwrap();
        drop(store);
        let mut client = db.client();
        client
            .batch_execute("UPDATE zonepki_schema SET version = 99")
            .unwrap();
        let err = PostgresStore::open(&db.url).unwrap_err();
        let too_new = std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<SchemaTooNew>())
            .unwrap_or_else(|| panic!("not SchemaTooNew: {err:?}"));
        assert_eq!(too_new.found, 99);
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("version 99") && text.contains("newer"), "{text}");
        // Nothing was changed by the refusal.
        let version: i32 = client
            .query_one("SELECT version FROM zonepki_schema", &[])
            .unwrap()
            .get(0);
        assert_eq!(version, 99);

        // A database an older build made (layout version 0: the schema table alone).
        let old = TestDb::new("schema_old");
        old.client()
            .batch_execute(
                "CREATE TABLE zonepki_schema (version integer NOT NULL); \
                 INSERT INTO zonepki_schema VALUES (0)",
            )
            .unwrap();
        let store = PostgresStore::open(&old.url).unwrap();
        assert_eq!(store.schema_version().unwrap(), Some(i64::from(SCHEMA_VERSION)));
        store.commit(&[Write::create("k", *b"v")]).unwrap();
        assert_eq!(store.get("k").unwrap(), rec(1, b"v"));
    }
}

pg_test! {
    /// The URL's password shows nowhere: not in the store's Debug or location, not in errors.
    fn password_never_shown() {
        let db = TestDb::new("secret");
        let secret_url = with_password(&db.url, "S3cretPw");
        let store = PostgresStore::create(&secret_url).unwrap();
        let shown = format!("{store:?} {}", store.location());
        assert!(!shown.contains("S3cretPw"), "{shown}");
        assert!(shown.contains(&db.name), "{shown}");
        // An error that names the store: a database that does not exist.
        let missing = secret_url.replace(&db.name, "zt_no_such_database");
        let err = PostgresStore::open(&missing).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("S3cretPw"), "{text}");
        assert!(text.contains("zt_no_such_database"), "{text}");
    }
}

pg_test! {
    /// The server drops every connection (as a restart does): the next call works, reads and
    /// commits alike, and nothing was lost.
    fn reconnects_after_the_server_dropped_its_connections() {
        let db = TestDb::new("reconnect");
        let store = PostgresStore::create(&db.url).unwrap();
        store.commit(&[Write::create("a", *b"1")]).unwrap();
        // Several idle connections, all to be dropped.
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| store.get("a").unwrap());
            }
        });
        assert!(db.terminate_connections() >= 1);
        assert_eq!(store.get("a").unwrap(), rec(1, b"1"));
        assert!(db.terminate_connections() >= 1);
        let c = store
            .commit(&[Write::put("a", Expect::Version(1), *b"2")])
            .unwrap();
        assert_eq!(c, Committed::new(vec![Some(2)]));
        assert!(db.terminate_connections() >= 1);
        assert_eq!(store.scan_all("").unwrap().len(), 1);
        assert!(db.terminate_connections() >= 1);
        assert_eq!(store.last("").unwrap().map(|(k, _)| k).as_deref(), Some("a"));
        assert_eq!(store.get("a").unwrap(), rec(2, b"2"));
    }
}

pg_test! {
    /// `scan_each` reads one snapshot: a commit made during the walk is not seen by it.
    fn scan_each_is_one_snapshot() {
        let db = TestDb::new("snapshot");
        let store = PostgresStore::create(&db.url).unwrap();
        let writes: Vec<Write> = (0..1200)
            .map(|i| Write::create(format!("k/{i:05}"), *b"x"))
            .collect();
        store.commit(&writes).unwrap();
        let other = PostgresStore::open(&db.url).unwrap();
        let mut seen = 0;
        store
            .scan_each("k/", &mut |key, _| {
                if seen == 0 {
                    // Past this walk's position, in a later page.
                    other
                        .commit(&[
                            Write::create("k/99999", *b"late"),
                            Write::delete("k/01100", Expect::Any),
                        ])
                        .unwrap();
                }
                seen += 1;
                assert_ne!(key, "k/99999");
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(seen, 1200, "the walk saw the store as it was when it began");
        assert_eq!(store.scan_all("k/").unwrap().len(), 1200);
    }
}

pg_test! {
    /// `Storage::import` keeps versions and refuses a present key, writing nothing.
    fn import_keeps_versions_and_is_atomic() {
        let db = TestDb::new("import");
        let store = PostgresStore::create(&db.url).unwrap();
        let recs = vec![
            ("a".to_owned(), Record { version: 7, value: b"x".to_vec() }),
            ("b".to_owned(), Record { version: 1, value: Vec::new() }),
        ];
        store.import(&recs).unwrap();
        assert_eq!(store.get("a").unwrap(), rec(7, b"x"));
        let c = store
            .commit(&[Write::put("a", Expect::Version(7), *b"y")])
            .unwrap();
        assert_eq!(c.version(0), Some(8));
        let err = store
            .import(&[
                ("c".to_owned(), Record { version: 2, value: b"c".to_vec() }),
                ("b".to_owned(), Record { version: 3, value: b"b".to_vec() }),
            ])
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Conflict { ref key, expected: Expect::Absent, found: Some(1) }
                    if key == "b"
            ),
            "{err:?}"
        );
        assert_eq!(store.get("c").unwrap(), None);
    }
}

/// A store that has PostgreSQL drop every connection of the database before every `every`-th
/// call, as a server restart in the middle of a command would.
struct Restarting<'a> {
    inner: PostgresStore,
    db: &'a TestDb,
    calls: AtomicUsize,
    every: usize,
    drops: AtomicUsize,
}

impl Restarting<'_> {
    fn tick(&self) {
        if self.calls.fetch_add(1, Ordering::Relaxed) % self.every == self.every - 1 {
            self.db.terminate_connections();
            self.drops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Storage for Restarting<'_> {
    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.tick();
        self.inner.get(key)
    }
    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        self.tick();
        self.inner.scan(prefix, after, limit)
    }
    fn last(&self, prefix: &str) -> Result<Option<(String, Record)>, StoreError> {
        self.tick();
        self.inner.last(prefix)
    }
    fn commit(&self, writes: &[Write]) -> Result<Committed, StoreError> {
        self.tick();
        self.inner.commit(writes)
    }
    fn scan_each(
        &self,
        prefix: &str,
        f: &mut dyn FnMut(String, Record) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.tick();
        self.inner.scan_each(prefix, f)
    }
}

/// How many commands [`until_done`] saw fail retryably.
static RETRIED: AtomicUsize = AtomicUsize::new(0);

/// Runs a command until it does not fail retryably (a few times at most), as an administrator
/// or a server would after "try again"; any other failure fails the test.
fn until_done<T>(what: &str, mut f: impl FnMut() -> ZResult<T>) -> T {
    for _ in 0..5 {
        match f() {
            Ok(v) => return v,
            Err(e) if e.is_retryable() => {
                RETRIED.fetch_add(1, Ordering::Relaxed);
                eprintln!("{what}: retryable: {e}");
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
    panic!("{what}: still failing after 5 attempts")
}

pg_test! {
    /// A PostgreSQL "restart" (every connection dropped) again and again during a whole
    /// in-process Remint CA, between calls and in the middle of COMMITs: each command either
    /// succeeds or fails retryably, and once run again the operation completes as on an
    /// undisturbed store: the same statuses, audit length, operation records and number of
    /// serials, a verified audit log, every server on the new CA.
    fn remint_ca_survives_restarts() {
        /// The operation's end: its state and members' statuses, the audit log's length, the
        /// operation keys and how many serial numbers were issued.
        type End = (String, Vec<(String, String)>, u64, Vec<String>, usize);
        fn run<S: Storage>(sim: &Sim<S>, all: impl Fn() -> Vec<String>) -> End {
            let old_ca = sim.svc.ca_certificate().unwrap();
            until_done("start", || sim.svc.start_remint_ca(remint_ca("2027-01-08T00:00:00Z")));
            until_done("drive", || sim::drive_svc(&sim.svc, &RefreshOptions::default()));
            sim.clock.set(t("2027-01-08T00:00:00Z"));
            let v = until_done("activate", || sim::drive_svc(&sim.svc, &RefreshOptions::default()));
            let new_ca = sim.svc.ca_certificate().unwrap();
            assert_ne!(new_ca, old_ca);
            for server in [sim::PS1, sim::PS2, sim::SAT1] {
                let leaf = Certificate::try_from(&sim.chain(server)[0]).unwrap();
                verify_chain(&leaf, &[], std::slice::from_ref(&new_ca), sim.svc.now()).unwrap();
            }
            let report = until_done("audit", || sim.svc.verify_audit());
            let statuses = v.members().map(|(n, s)| (n.to_string(), s.to_string())).collect();
            let keys = all();
            let ops = keys.iter().filter(|k| k.starts_with("op/")).cloned().collect();
            let serials = keys.iter().filter(|k| k.starts_with("serial/")).count();
            (v.state.to_string(), statuses, report.entries, ops, serials)
        }
        let memory = Sim::new(4);
        let keys = |s: &dyn Storage| -> Vec<String> {
            s.scan_all("").unwrap().into_iter().map(|(k, _)| k).collect()
        };
        let reference = run(&memory, || keys(memory.svc.store()));

        let db = TestDb::new("restart");
        let store = Restarting {
            inner: PostgresStore::create(&db.url).unwrap(),
            db: &db,
            calls: AtomicUsize::new(0),
            every: 1_000_000,
            drops: AtomicUsize::new(0),
        };
        let sim = Sim::empty(store, LoopbackTransport::in_memory(), Spec::new(4));
        sim::init(&sim.svc, &sim.spec).unwrap();
        sim::add_ps2(&sim.svc).unwrap();
        sim::add_sat1(&sim.svc).unwrap();
        sim::add_content1(&sim.svc).unwrap();
        sim::add_devices(&sim.svc, &sim.spec).unwrap();
        sim.refresh(&[], &RefreshOptions::default());
        // From here on the server drops its connections before every 5th store call, and a
        // few commits lose their connection while PostgreSQL runs their COMMIT (a deferred
        // trigger ends its own backend at given rows written): their outcome is unknown to the
        // store, which says so with a retryable error.
        db.client()
            .batch_execute(
                "CREATE SEQUENCE zt_rows; \
                 CREATE FUNCTION zt_die() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                   IF nextval('zt_rows') = ANY (ARRAY[2, 30, 50]) THEN \
                     PERFORM pg_terminate_backend(pg_backend_pid()); \
                   END IF; RETURN NULL; END $$; \
                 CREATE CONSTRAINT TRIGGER zt_die AFTER INSERT OR UPDATE ON zonepki_records \
                   DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION zt_die()",
            )
            .unwrap();
        let (store, _, _) = sim.svc.into_parts();
        let store = Restarting { every: 5, ..store };
        let sim = Sim { svc: zonepki::service::ZoneService::new(store, sim.transport.clone(), sim.clock).without_bridges(), ..sim };
        let got = run(&sim, || keys(&sim.svc.store().inner));
        let drops = sim.svc.store().drops.load(Ordering::Relaxed);
        assert!(drops >= 10, "only {drops} drops of the connections");
        let rows: i64 = db
            .client()
            .query_one("SELECT last_value FROM zt_rows", &[])
            .unwrap()
            .get(0);
        // Three commits were cut off in COMMIT; the service's own retry of agents' reports
        // absorbs those it meets there, the others reach the caller as retryable errors.
        assert!(rows > 50, "only {rows} rows written: not every cut was made");
        let retried = RETRIED.load(Ordering::Relaxed);
        assert!(retried >= 1, "no command failed retryably");
        assert_eq!(got, reference);
        assert_eq!(got.0, "activated");
        assert!(got.1.iter().all(|(_, s)| s == "activated"), "{:?}", got.1);
    }
}

// ---------------------------------------------------------------------------------------------
// zonectl on PostgreSQL.

/// A zone made by zonectl on redb: ps1, ps2, the others of `Zone::fleet`, 3 devices.
fn redb_zone() -> Zone {
    Zone::fleet(&[], "3", "2027-01-01T00:00:00Z")
}

pg_test! {
    /// D3: `store copy` redb -> PostgreSQL -> redb and redb -> redb, every dump equal to the
    /// source's, the audit log verified on each; a target that holds a zone or stray records is
    /// refused and left as it was; the copy on PostgreSQL is a working zone.
    fn store_copy_round_trips_with_equal_dumps() {
        let z = redb_zone();
        let source_dump = z.ok(&["store", "dump"]);
        let db = TestDb::new("copy");
        let pg = db.url.as_str();
        let out = z.json(&["store", "copy", "--from", "zone.db", "--to", pg]);
        let records = out["records"].as_u64().unwrap();
        assert!(records > 10, "{out}");
        assert!(!out["to"].as_str().unwrap().contains('?'), "{out}");
        assert_eq!(z.ok(&["--store", pg, "store", "dump"]), source_dump);
        z.ok(&["--store", pg, "audit", "verify"]);

        z.ok(&["store", "copy", "--from", pg, "--to", "back.db"]);
        assert_eq!(z.ok(&["--store", "back.db", "store", "dump"]), source_dump);
        z.ok(&["store", "copy", "--from", "back.db", "--to", "again.db"]);
        assert_eq!(z.ok(&["--store", "again.db", "store", "dump"]), source_dump);
        z.ok(&["--store", "again.db", "audit", "verify"]);

        // Refusals: a target holding the zone (database, file), nothing written.
        let o = z.run(&["store", "copy", "--from", "again.db", "--to", pg]);
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert!(o.stderr.contains("already holds a zone"), "{}", o.stderr);
        assert_eq!(z.ok(&["--store", pg, "store", "dump"]), source_dump);
        let o = z.run(&["store", "copy", "--from", pg, "--to", "back.db"]);
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert!(o.stderr.contains("already holds a zone"), "{}", o.stderr);
        // A database with records but no zone (an incomplete copy) is refused as such.
        let stray = TestDb::new("copy_stray");
        PostgresStore::create(&stray.url)
            .unwrap()
            .commit(&[Write::create("audit/head", *b"x")])
            .unwrap();
        let o = z.run(&["store", "copy", "--from", "zone.db", "--to", &stray.url]);
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert!(o.stderr.contains("incomplete copy"), "{}", o.stderr);
        let left = PostgresStore::open(&stray.url).unwrap().scan_all("").unwrap();
        assert_eq!(left.len(), 1);
        // A source without a zone: nothing to copy, no target made.
        let empty = TestDb::new("copy_empty");
        PostgresStore::create(&empty.url).unwrap();
        let o = z.run(&["store", "copy", "--from", &empty.url, "--to", "none.db"]);
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert!(o.stderr.contains("holds no zone"), "{}", o.stderr);
        assert!(!z.path("none.db").exists());

        // The copy is the zone: commands work on it, and it moves on from where redb was.
        z.ok(&["--store", pg, "server", "add", "ps3.acme.example", "--role", "primary",
               "--now", "2027-01-02T00:00:00Z"]);
        z.ok(&["--store", pg, "audit", "verify"]);
        assert_ne!(z.ok(&["--store", pg, "store", "dump"]), source_dump);
    }
}

pg_test! {
    /// `init` on PostgreSQL (`$ZONECTL_STORE` or `--store`), then the zone's commands; a second
    /// init is refused with the store unchanged, and an init refused by its options writes no
    /// tables.
    fn zonectl_init_and_commands_on_postgres() {
        let z = Zone::new();
        let db = TestDb::new("init");
        let env = [("ZONECTL_STORE", db.url.as_str())];
        // Refused by the library (a bad first server name): nothing is written.
        let o = z.run_env(
            &["init", "--zone", "Acme", "--first-server", "not a name", "--now", "2027-01-01T00:00:00Z"],
            &env,
        );
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert!(matches!(PostgresStore::open(&db.url), Err(StoreError::NotFound { .. })));
        z.ok_env(
            &["init", "--zone", "Acme", "--first-server", PS1, "--now", "2027-01-01T00:00:00Z"],
            &env,
        );
        z.ok_env(&["server", "add", PS2, "--role", "primary", "--now", "2027-01-01T00:00:00Z"], &env);
        let before = z.ok_env(&["store", "dump"], &env);
        let o = z.run_env(
            &["init", "--zone", "Other", "--first-server", PS1, "--now", "2027-01-01T00:00:00Z"],
            &env,
        );
        assert_eq!(o.code, 1, "{}", o.stderr);
        assert!(o.stderr.contains("already holds a zone"), "{}", o.stderr);
        assert_eq!(z.ok_env(&["store", "dump"], &env), before);
        let servers = z.json_env(&["server", "list"], &env);
        assert_eq!(servers.as_array().map(Vec::len), Some(2), "{servers}");
        z.ok_env(&["audit", "verify"], &env);
        // Without the password in what zonectl prints, on success and on a refusal.
        let secret = with_password(&db.url, "Pw0rdX");
        let o = z.run(&["store", "copy", "--from", &secret, "--to", "copy.db", "--json"]);
        assert_eq!(o.code, 0, "{}", o.stderr);
        let o2 = z.run(&["store", "copy", "--from", &secret, "--to", &secret]);
        assert_eq!(o2.code, 1);
        assert!(o2.stderr.contains("already holds a zone"), "{}", o2.stderr);
        for text in [o.stdout, o.stderr, o2.stdout, o2.stderr] {
            assert!(!text.contains("Pw0rdX"), "{text}");
        }
    }
}
