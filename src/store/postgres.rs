//! [`PostgresStore`]: the shared [`Storage`] of a zone run by several Primary Servers (B6, D1),
//! one PostgreSQL database. Feature `postgres`.
//!
//! # Layout
//!
//! Two tables in the database's default schema (the first of the connection's `search_path`):
//!
//! ```sql
//! CREATE TABLE zonepki_schema (version integer NOT NULL);   -- one row: the layout's version
//! CREATE TABLE zonepki_records (
//!     key bytea PRIMARY KEY,                                  -- the key's UTF-8 bytes
//!     version bigint NOT NULL CHECK (version >= 1),
//!     value bytea NOT NULL
//! );
//! ```
//!
//! Keys are stored as `bytea`, so PostgreSQL orders them by their bytes (the [`Storage`] order)
//! whatever the database's collation, and a key may hold any character, NUL included.
//!
//! # Versioned schema
//!
//! [`MIGRATIONS`] lists the steps from one layout version to the next. [`PostgresStore::create`]
//! makes `zonepki_schema` at version 0 and applies every step; [`PostgresStore::open`] applies
//! the steps a database made by an older build lacks, under a table lock so that two servers
//! starting together migrate once. A database whose layout is newer than this build knows is
//! refused ([`SchemaTooNew`]): an older server must not write records it does not understand.
//!
//! # Commits
//!
//! A [`commit`](Storage::commit) is one transaction at `READ COMMITTED`:
//!
//! 1. `SELECT key, version ... WHERE key = ANY(keys) ORDER BY key FOR UPDATE` locks the rows
//!    of every written key that exists, in key order, and reads their versions;
//! 2. the preconditions are checked against those versions in the order of the writes, so a
//!    refusal is the same [`StoreError::Conflict`] the other backends give;
//! 3. the writes are applied (one `INSERT`, one `UPDATE`, one `DELETE`, each over arrays,
//!    in key order) and the transaction commits.
//!
//! The locks make a precondition hold until the commit. A key that is absent has no row to
//! lock: two commits creating it race, and the second one's `INSERT` fails with a unique
//! violation once the first commits. The store then runs the whole transaction again, which
//! now finds the key and reports the conflict exactly. It does the same for a deadlock or a
//! serialization failure (SQLSTATE 40P01, 40001), a few times, then reports a retryable
//! [`StoreError::Backend`]. Running a commit again is safe because its whole read set is the
//! versions of the keys it writes (the service conditions a command on what it read through the
//! audit head, which every commit writes, see the [store module](super)); for the same reason
//! `SERIALIZABLE` isolation would add nothing but aborts for unrelated keys that share an
//! index page.
//!
//! Locks are taken in key order and inserts made in key order, so two commits never wait for
//! each other in a cycle.
//!
//! # Reads
//!
//! [`get`](Storage::get), [`scan`](Storage::scan) and [`last`](Storage::last) are one indexed
//! statement each; a scan's `LIMIT` is the page's, so a read holds at most one page.
//! [`scan_each`](Storage::scan_each) walks a family through a portal of one `REPEATABLE READ`
//! read-only transaction, [`SCAN_PAGE`] rows per fetch: one snapshot of the
//! store, one page in memory, as redb's read transaction (a dump or a copy is one state of the
//! zone).
//!
//! # Connections
//!
//! The store keeps a few idle connections and opens more when threads use it at once. A
//! connection that PostgreSQL closed (a restart, `pg_terminate_backend`, a network failure) is
//! dropped with every other idle one, and the call runs again on a new connection if nothing
//! of it can have been applied: a read, or a commit that had not sent `COMMIT` yet. A commit
//! whose `COMMIT` was under way when the connection was lost may or may not have been applied;
//! it fails with a retryable [`StoreError::Backend`], and the caller re-reads (the service
//! re-runs the command, which re-reads the zone). While the server is down, calls fail the same
//! way; the first call after it is back works.
//!
//! Connections are plain TCP or a Unix socket (no TLS): run the database on the servers'
//! private network or host.
//!
//! The client (the `postgres` crate) drives each connection on a runtime of its own: from async
//! code, call the store in a blocking task (`tokio::task::spawn_blocking`), as for redb.
//!
//! # Secrets
//!
//! The connection URL may hold a password. The store shows the URL without it
//! ([`PostgresStore::location`], `Debug`, every error), and never logs.

use std::error::Error as StdError;
use std::fmt;
use std::ops::{Bound, ControlFlow};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ::postgres::config::Host;
use ::postgres::error::SqlState;
use ::postgres::{Client, Config, IsolationLevel, NoTls, Statement};

use super::{
    Committed, Record, SCAN_PAGE, Storage, StoreError, Write, check, next_version, page_bounds,
    prefix_end, validate,
};

/// The layout steps: `MIGRATIONS[i]` takes a database from layout version `i` to `i + 1`.
/// Version 0 is `zonepki_schema` alone, as [`PostgresStore::create`] makes it.
pub const MIGRATIONS: &[&str] = &["CREATE TABLE zonepki_records (
        key bytea PRIMARY KEY,
        version bigint NOT NULL CHECK (version >= 1),
        value bytea NOT NULL
    )"];

/// The layout version this build reads and writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// How many connections a store keeps open while idle.
const IDLE: usize = 8;

/// How many times a commit runs when it meets a race PostgreSQL resolved by aborting it (a
/// unique violation on a key it created, a deadlock, a serialization failure) or a connection
/// lost before `COMMIT`.
const ATTEMPTS: usize = 8;

/// How long a connection attempt may take when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A database whose zonepki layout is newer than this build knows: its records may hold what
/// this build would misread or lose. The [`source`](std::error::Error::source) of the
/// [`StoreError::Backend`] that [`PostgresStore::open`] returns; not retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the database's zonepki layout is version {found}, newer than the version {known} this \
     build knows: run a zonepki at least as new as the one that upgraded it"
)]
pub struct SchemaTooNew {
    /// The version found in `zonepki_schema`.
    pub found: i64,
    /// [`SCHEMA_VERSION`].
    pub known: u32,
}

/// A [`Storage`] in a PostgreSQL database, shared by every process that connects to it.
///
/// See the [module documentation](self) for the layout, how commits stay atomic and ordered,
/// and how the store survives a lost connection.
pub struct PostgresStore {
    config: Config,
    location: String,
    idle: Mutex<Vec<Conn>>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Whether a URL names a PostgreSQL store (`postgres://` or `postgresql://`) rather than a
/// file.
pub fn is_url(store: &str) -> bool {
    store.starts_with("postgres://") || store.starts_with("postgresql://")
}

/// `url` without its password: `postgres://USER@HOST:PORT/DBNAME` (what [`PostgresStore`]
/// shows of it). A URL that does not parse shows as `postgres://(invalid URL)`.
pub fn redact(url: &str) -> String {
    match Config::from_str(url) {
        Ok(config) => location(&config),
        Err(_) => "postgres://(invalid URL)".to_owned(),
    }
}

fn location(config: &Config) -> String {
    let mut out = String::from("postgres://");
    if let Some(user) = config.get_user() {
        out.push_str(user);
        out.push('@');
    }
    let ports = config.get_ports();
    for (i, host) in config.get_hosts().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match host {
            Host::Tcp(name) if name.contains(':') => out.push_str(&format!("[{name}]")),
            Host::Tcp(name) => out.push_str(name),
            Host::Unix(path) => out.push_str(&path.display().to_string().replace('/', "%2F")),
        }
        if let Some(port) = ports.get(i).or(ports.first()) {
            out.push_str(&format!(":{port}"));
        }
    }
    out.push('/');
    if let Some(db) = config.get_dbname() {
        out.push_str(db);
    }
    out
}

/// Why [`PostgresStore::connect`] opened what it opened.
enum Mode {
    Create,
    Open,
    OpenOrCreate,
}

impl PostgresStore {
    /// Makes the zonepki tables in the database `url` names (which must exist) and opens it.
    ///
    /// Refuses a database that already has them with [`StoreError::AlreadyExists`]: one
    /// database holds one store. Of two creates at the same time one succeeds.
    pub fn create(url: &str) -> Result<Self, StoreError> {
        Self::start(url, Mode::Create)
    }

    /// Opens the store in the database `url` names, applying the layout steps it lacks.
    ///
    /// Fails with [`StoreError::NotFound`] if the database has no zonepki tables (create them
    /// first), with a [`StoreError::Backend`] whose source is [`SchemaTooNew`] if its layout is
    /// newer than this build's, and with a retryable [`StoreError::Backend`] while the server
    /// cannot be reached.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::start(url, Mode::Open)
    }

    /// Opens the store in the database `url` names, making its tables first if it has none
    /// (a server's first start on a new database, the target of a copy).
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        Self::start(url, Mode::OpenOrCreate)
    }

    fn start(url: &str, mode: Mode) -> Result<Self, StoreError> {
        let mut config = Config::from_str(url).map_err(|e| {
            // The parser's message names the option at fault, never the URL's text.
            StoreError::backend(
                "cannot read the PostgreSQL URL (postgres://USER[:PASSWORD]@HOST[:PORT]/DBNAME)",
                e,
            )
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("zonepki");
        }
        let store = PostgresStore {
            location: location(&config),
            config,
            idle: Mutex::new(Vec::new()),
        };
        let mut client = store.connect_client()?;
        match mode {
            Mode::Create => store.create_schema(&mut client)?,
            Mode::Open => store.migrate(&mut client)?,
            Mode::OpenOrCreate => match store.create_schema(&mut client) {
                Err(StoreError::AlreadyExists { .. }) => store.migrate(&mut client)?,
                other => other?,
            },
        }
        let conn = store.prepare(client)?;
        store.lock().push(conn);
        Ok(store)
    }

    /// The store's database as a URL without its password: `postgres://USER@HOST:PORT/DBNAME`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Removes the zonepki tables and every record in them: what [`create`](Self::create) made.
    /// For a frontend undoing a store it has just created, and for tests; the records are gone
    /// for every process that uses the database.
    pub fn destroy(self) -> Result<(), StoreError> {
        let mut client = self.connect_client()?;
        self.lock().clear();
        client
            .batch_execute(
                "BEGIN; DROP TABLE IF EXISTS zonepki_records; \
                 DROP TABLE IF EXISTS zonepki_schema; COMMIT",
            )
            .map_err(|e| self.error("cannot remove the tables of", e))
    }

    /// The layout version the database holds (`None`: no zonepki tables).
    pub fn schema_version(&self) -> Result<Option<i64>, StoreError> {
        let mut client = self.connect_client()?;
        read_schema_version(&mut client).map_err(|e| self.error("cannot read", e))
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(&self.location)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Conn>> {
        // A list of idle connections: a panic elsewhere leaves it usable.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn connect_client(&self) -> Result<Client, StoreError> {
        self.config
            .connect(NoTls)
            .map_err(|e| self.error("cannot connect to", e))
    }

    fn create_schema(&self, client: &mut Client) -> Result<(), StoreError> {
        let result = (|| {
            let mut txn = client.transaction()?;
            txn.batch_execute(
                "CREATE TABLE zonepki_schema (version integer NOT NULL); \
                 INSERT INTO zonepki_schema (version) VALUES (0)",
            )?;
            for step in MIGRATIONS {
                txn.batch_execute(step)?;
            }
            txn.execute(
                "UPDATE zonepki_schema SET version = $1",
                &[&i32::try_from(SCHEMA_VERSION).unwrap_or(i32::MAX)],
            )?;
            txn.commit()
        })();
        match result {
            Ok(()) => Ok(()),
            // The table exists (42P07), or a create running at the same time made it first:
            // its catalog row wins the unique index (23505).
            Err(e)
                if matches!(
                    e.code(),
                    Some(&SqlState::DUPLICATE_TABLE | &SqlState::UNIQUE_VIOLATION)
                ) =>
            {
                Err(StoreError::AlreadyExists { path: self.path() })
            }
            Err(e) => Err(self.error("cannot create the tables of", e)),
        }
    }

    fn migrate(&self, client: &mut Client) -> Result<(), StoreError> {
        let version = read_schema_version(client)
            .map_err(|e| self.error("cannot read", e))?
            .ok_or_else(|| StoreError::NotFound { path: self.path() })?;
        if version == i64::from(SCHEMA_VERSION) {
            return Ok(());
        }
        self.check_version(version)?;
        // Older: apply the missing steps, once, however many servers start together.
        let result = (|| {
            let mut txn = client.transaction()?;
            txn.batch_execute("LOCK TABLE zonepki_schema IN ACCESS EXCLUSIVE MODE")?;
            let version: i64 = txn
                .query_one("SELECT version::bigint FROM zonepki_schema", &[])?
                .try_get(0)?;
            let from = usize::try_from(version).unwrap_or(usize::MAX);
            for step in MIGRATIONS.iter().skip(from) {
                txn.batch_execute(step)?;
            }
            txn.execute(
                "UPDATE zonepki_schema SET version = $1",
                &[&i32::try_from(SCHEMA_VERSION).unwrap_or(i32::MAX)],
            )?;
            txn.commit()?;
            Ok::<i64, ::postgres::Error>(version)
        })();
        match result {
            Ok(found) => self.check_version(found),
            Err(e) => Err(self.error("cannot upgrade the tables of", e)),
        }
    }

    fn check_version(&self, version: i64) -> Result<(), StoreError> {
        if version > i64::from(SCHEMA_VERSION) {
            return Err(StoreError::backend(
                format!("cannot open store {}", self.location),
                SchemaTooNew {
                    found: version,
                    known: SCHEMA_VERSION,
                },
            ));
        }
        if version < 0 {
            return Err(StoreError::Damaged {
                path: self.path(),
                source: format!("zonepki_schema holds version {version}").into(),
            });
        }
        Ok(())
    }

    fn prepare(&self, client: Client) -> Result<Conn, StoreError> {
        Conn::new(client).map_err(|e| self.error("cannot prepare statements on", e))
    }

    /// Runs `f` on a connection, again on a new one if the connection was lost before `f`
    /// can have changed anything ([`Failure::Lost`]), or in a new transaction if PostgreSQL
    /// aborted it for a race ([`Failure::Race`]).
    fn run<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&mut Conn) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let popped = self.lock().pop();
            let mut conn = match popped {
                Some(conn) if !conn.client.is_closed() => conn,
                _ => {
                    let client = self.connect_client()?;
                    self.prepare(client)?
                }
            };
            match f(&mut conn) {
                Ok(value) => {
                    self.put_back(conn);
                    return Ok(value);
                }
                Err(Failure::Store(e)) => {
                    self.put_back(conn);
                    return Err(e);
                }
                Err(Failure::Race(e)) => {
                    self.put_back(conn);
                    last = Some(e);
                }
                Err(Failure::Lost(e)) => {
                    // The server went away: the idle connections went with it.
                    self.lock().clear();
                    last = Some(e);
                }
                Err(Failure::Unknown(e)) => {
                    self.lock().clear();
                    return Err(StoreError::backend_retryable(
                        format!(
                            "the connection to store {} was lost while a commit was under \
                             way: it may or may not have been applied; read the store again",
                            self.location
                        ),
                        PgError(e),
                    ));
                }
                Err(Failure::Pg(e)) => {
                    if conn.client.is_closed() {
                        self.lock().clear();
                    } else {
                        self.put_back(conn);
                    }
                    return Err(self.error(what, e));
                }
            }
        }
        Err(match last {
            Some(e) => StoreError::backend_retryable(
                format!(
                    "{what} store {}: gave up after {ATTEMPTS} attempts",
                    self.location
                ),
                PgError(e),
            ),
            None => StoreError::backend_retryable(
                format!("{what} store {}", self.location),
                "no attempt was made",
            ),
        })
    }

    fn put_back(&self, conn: Conn) {
        if conn.client.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < IDLE {
            idle.push(conn);
        }
    }

    /// A PostgreSQL error as a [`StoreError`], with what the store was doing and where, and
    /// the server's own message (the client's error shows only "db error").
    fn error(&self, what: &str, e: ::postgres::Error) -> StoreError {
        let context = format!("{what} store {}", self.location);
        if e.code() == Some(&SqlState::UNDEFINED_TABLE) {
            return StoreError::Damaged {
                path: self.path(),
                source: PgError(e).into(),
            };
        }
        if retryable(&e) {
            StoreError::backend_retryable(context, PgError(e))
        } else {
            StoreError::backend(context, PgError(e))
        }
    }
}

/// An error of the PostgreSQL client, shown with the server's own message and SQLSTATE (the
/// client shows a server's error as "db error" alone). Its [`source`](StdError::source) is the
/// client's [`postgres::Error`], for callers that inspect it.
#[derive(Debug)]
pub struct PgError(pub ::postgres::Error);

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_db_error() {
            Some(db) => {
                write!(
                    f,
                    "{}: {} (SQLSTATE {})",
                    db.severity(),
                    db.message(),
                    db.code().code()
                )?;
                if let Some(detail) = db.detail() {
                    write!(f, "; {detail}")?;
                }
                Ok(())
            }
            None => {
                write!(f, "{}", self.0)?;
                if let Some(source) = StdError::source(&self.0) {
                    write!(f, ": {source}")?;
                }
                Ok(())
            }
        }
    }
}

impl StdError for PgError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

/// A failure inside [`PostgresStore::run`]: what to do about it.
enum Failure {
    /// The answer: a conflict, a corrupt record.
    Store(StoreError),
    /// PostgreSQL aborted the transaction for a race: run it again.
    Race(::postgres::Error),
    /// The connection was lost before anything can have been applied: run it again on a new one.
    Lost(::postgres::Error),
    /// The connection was lost while `COMMIT` was under way: the outcome is unknown.
    Unknown(::postgres::Error),
    /// Any other error of PostgreSQL.
    Pg(::postgres::Error),
}

impl Failure {
    fn of(e: ::postgres::Error) -> Self {
        if lost(&e) {
            Failure::Lost(e)
        } else if race(&e) {
            Failure::Race(e)
        } else {
            Failure::Pg(e)
        }
    }
}

impl From<::postgres::Error> for Failure {
    fn from(e: ::postgres::Error) -> Self {
        Failure::of(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

/// A race PostgreSQL resolved by aborting one transaction, which may pass when run again.
fn race(e: &::postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(
            &SqlState::T_R_SERIALIZATION_FAILURE
                | &SqlState::T_R_DEADLOCK_DETECTED
                | &SqlState::UNIQUE_VIOLATION
        )
    )
}

/// A connection that is gone or going: closed, an I/O failure, the server shutting down or
/// starting up, or a connection exception (SQLSTATE class 08).
fn lost(e: &::postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return matches!(
            code,
            &SqlState::ADMIN_SHUTDOWN | &SqlState::CRASH_SHUTDOWN | &SqlState::CANNOT_CONNECT_NOW
        ) || code.code().starts_with("08");
    }
    e.as_db_error().is_none()
        && StdError::source(e).is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
}

/// Whether running the same work again may pass: a race, or a lost or refused connection.
fn retryable(e: &::postgres::Error) -> bool {
    if race(e) || lost(e) {
        return true;
    }
    // Timeouts (connect, lock, statement) and too many connections.
    matches!(
        e.code(),
        Some(
            &SqlState::LOCK_NOT_AVAILABLE
                | &SqlState::QUERY_CANCELED
                | &SqlState::TOO_MANY_CONNECTIONS
        )
    ) || (e.as_db_error().is_none() && e.to_string().contains("timeout"))
}

fn read_schema_version(client: &mut Client) -> Result<Option<i64>, ::postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('zonepki_schema') IS NOT NULL", &[])?
        .try_get(0)?;
    if !exists {
        return Ok(None);
    }
    let row = client.query_opt("SELECT version::bigint FROM zonepki_schema", &[])?;
    Ok(Some(match row {
        Some(row) => row.try_get(0)?,
        // A table without its row: a create that never finished cannot leave this (it is one
        // transaction); count it as the empty layout.
        None => 0,
    }))
}

/// One connection with its prepared statements.
struct Conn {
    client: Client,
    get: Statement,
    /// Scans by (start included?, end bounded?).
    scan_from_to: Statement,
    scan_from: Statement,
    scan_after_to: Statement,
    scan_after: Statement,
    last_to: Statement,
    last: Statement,
    lock: Statement,
    insert: Statement,
    update: Statement,
    delete: Statement,
}

const COLUMNS: &str = "SELECT key, version, value FROM zonepki_records";

impl Conn {
    fn new(mut client: Client) -> Result<Self, ::postgres::Error> {
        let mut p = |sql: &str| client.prepare(sql);
        let get = p("SELECT version, value FROM zonepki_records WHERE key = $1")?;
        let scan_from_to = p(&format!(
            "{COLUMNS} WHERE key >= $1 AND key < $2 ORDER BY key LIMIT $3"
        ))?;
        let scan_from = p(&format!("{COLUMNS} WHERE key >= $1 ORDER BY key LIMIT $2"))?;
        let scan_after_to = p(&format!(
            "{COLUMNS} WHERE key > $1 AND key < $2 ORDER BY key LIMIT $3"
        ))?;
        let scan_after = p(&format!("{COLUMNS} WHERE key > $1 ORDER BY key LIMIT $2"))?;
        let last_to = p(&format!(
            "{COLUMNS} WHERE key >= $1 AND key < $2 ORDER BY key DESC LIMIT 1"
        ))?;
        let last = p(&format!(
            "{COLUMNS} WHERE key >= $1 ORDER BY key DESC LIMIT 1"
        ))?;
        let lock = p(
            "SELECT key, version FROM zonepki_records WHERE key = ANY($1) ORDER BY key FOR UPDATE",
        )?;
        let insert = p("INSERT INTO zonepki_records (key, version, value) \
             SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[])")?;
        let update = p(
            "UPDATE zonepki_records AS r SET version = u.version, value = u.value \
             FROM unnest($1::bytea[], $2::int8[], $3::bytea[]) AS u(key, version, value) \
             WHERE r.key = u.key",
        )?;
        let delete = p("DELETE FROM zonepki_records WHERE key = ANY($1)")?;
        Ok(Conn {
            client,
            get,
            scan_from_to,
            scan_from,
            scan_after_to,
            scan_after,
            last_to,
            last,
            lock,
            insert,
            update,
            delete,
        })
    }

    /// The statement and parameters of the page `bounds`, `limit` rows at most.
    fn page_query(&self, bounds: (Bound<&str>, Bound<&str>)) -> (Statement, Vec<Vec<u8>>) {
        let bytes = |s: &str| s.as_bytes().to_vec();
        let (stmt, params) = match bounds {
            (Bound::Excluded(a), Bound::Excluded(e)) => {
                (&self.scan_after_to, vec![bytes(a), bytes(e)])
            }
            (Bound::Excluded(a), _) => (&self.scan_after, vec![bytes(a)]),
            (Bound::Included(s), Bound::Excluded(e)) => {
                (&self.scan_from_to, vec![bytes(s), bytes(e)])
            }
            (Bound::Included(s), _) | (Bound::Unbounded, Bound::Excluded(s)) => {
                // `page_bounds` never starts unbounded; a start of "" is every key.
                (&self.scan_from, vec![bytes(s)])
            }
            (Bound::Unbounded, _) => (&self.scan_from, vec![Vec::new()]),
        };
        (stmt.clone(), params)
    }

    /// Locks the rows of `keys` (sorted) and returns their versions, by key.
    fn lock_versions(
        txn: &mut ::postgres::Transaction<'_>,
        stmt: &Statement,
        keys: &[&[u8]],
    ) -> Result<std::collections::HashMap<Vec<u8>, u64>, Failure> {
        let mut found = std::collections::HashMap::with_capacity(keys.len());
        for row in txn.query(stmt, &[&keys])? {
            let key: Vec<u8> = row.try_get(0)?;
            let version = version_of(&key, row.try_get(1)?)?;
            found.insert(key, version);
        }
        Ok(found)
    }

    /// Applies `writes` in one transaction, every precondition checked first (an import's
    /// writes carry the versions to give their keys).
    fn apply(&mut self, writes: Plan<'_>) -> Result<Vec<Option<u64>>, Failure> {
        let (lock, insert, update, delete) = (&self.lock, &self.insert, &self.update, &self.delete);
        let mut txn = self.client.transaction()?;
        let mut sorted: Vec<&[u8]> = writes.keys().collect();
        sorted.sort_unstable();
        let found = Self::lock_versions(&mut txn, lock, &sorted)?;
        // Preconditions in the order of the writes; new versions from what was found.
        let mut versions = Vec::with_capacity(writes.len());
        // The rows of each statement, each in key order (sorted below).
        let (mut ins, mut upd, mut del) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..writes.len() {
            let (write, explicit) = writes.get(i);
            let key = write.key.as_bytes();
            let current = found.get(key).copied();
            check(write, current)?;
            match &write.value {
                Some(value) => {
                    let version = match explicit {
                        Some(v) => v,
                        None => next_version(&write.key, current)?,
                    };
                    let stored = i64::try_from(version).map_err(|_| StoreError::Corrupt {
                        key: write.key.clone(),
                        reason: format!("version {version} does not fit PostgreSQL's bigint"),
                    })?;
                    let row = (key, stored, value.as_slice());
                    match current {
                        Some(_) => upd.push(row),
                        None => ins.push(row),
                    }
                    versions.push(Some(version));
                }
                None => {
                    if current.is_some() {
                        del.push(key);
                    }
                    versions.push(None);
                }
            }
        }
        del.sort_unstable();
        let (ins, upd) = (Columns::sorted(ins), Columns::sorted(upd));
        if !del.is_empty() {
            txn.execute(delete, &[&del])?;
        }
        if !upd.keys.is_empty() {
            txn.execute(update, &[&upd.keys, &upd.versions, &upd.values])?;
        }
        if !ins.keys.is_empty() {
            txn.execute(insert, &[&ins.keys, &ins.versions, &ins.values])?;
        }
        match txn.commit() {
            Ok(()) => Ok(versions),
            Err(e) if lost(&e) => Err(Failure::Unknown(e)),
            Err(e) => Err(Failure::of(e)),
        }
    }
}

/// Rows for one array statement.
#[derive(Default)]
struct Columns<'a> {
    keys: Vec<&'a [u8]>,
    versions: Vec<i64>,
    values: Vec<&'a [u8]>,
}

impl<'a> Columns<'a> {
    /// The columns of `rows` (key, version, value), in key order.
    fn sorted(mut rows: Vec<(&'a [u8], i64, &'a [u8])>) -> Self {
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut out = Columns::default();
        for (key, version, value) in rows {
            out.keys.push(key);
            out.versions.push(version);
            out.values.push(value);
        }
        out
    }
}

/// What a transaction writes: commits with their preconditions, or an import with explicit
/// versions (each a create).
enum Plan<'a> {
    Commit(&'a [Write]),
    Import(&'a [(Write, u64)]),
}

impl Plan<'_> {
    fn len(&self) -> usize {
        match self {
            Plan::Commit(w) => w.len(),
            Plan::Import(r) => r.len(),
        }
    }

    fn get(&self, i: usize) -> (&Write, Option<u64>) {
        match self {
            Plan::Commit(w) => (&w[i], None),
            Plan::Import(r) => (&r[i].0, Some(r[i].1)),
        }
    }

    fn keys(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i).0.key.as_bytes())
    }
}

fn version_of(key: &[u8], stored: i64) -> Result<u64, StoreError> {
    match u64::try_from(stored) {
        Ok(v) if v >= 1 => Ok(v),
        _ => Err(StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: format!("version {stored} (versions start at 1)"),
        }),
    }
}

fn record(row: &::postgres::Row) -> Result<(String, Record), Failure> {
    let key: Vec<u8> = row.try_get(0)?;
    let version = version_of(&key, row.try_get(1)?)?;
    let value: Vec<u8> = row.try_get(2)?;
    let key = String::from_utf8(key).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(e.as_bytes()).into_owned(),
        reason: "the key is not UTF-8".to_owned(),
    })?;
    Ok((key, Record { version, value }))
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

impl Storage for PostgresStore {
    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.run("cannot read", |conn| {
            let row = conn.client.query_opt(&conn.get, &[&key.as_bytes()])?;
            match row {
                Some(row) => Ok(Some(Record {
                    version: version_of(key.as_bytes(), row.try_get(0)?)?,
                    value: row.try_get(1)?,
                })),
                None => Ok(None),
            }
        })
    }

    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        let end = prefix_end(prefix);
        let Some(bounds) = page_bounds(prefix, after, end.as_deref()) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.run("cannot read", |conn| {
            let (stmt, keys) = conn.page_query(bounds);
            let limit = limit_param(limit);
            let rows = match keys.as_slice() {
                [a] => conn.client.query(&stmt, &[a, &limit])?,
                [a, b] => conn.client.query(&stmt, &[a, b, &limit])?,
                _ => unreachable!("a page has one or two bounds"),
            };
            rows.iter().map(record).collect()
        })
    }

    fn last(&self, prefix: &str) -> Result<Option<(String, Record)>, StoreError> {
        let end = prefix_end(prefix);
        self.run("cannot read", |conn| {
            let start = prefix.as_bytes();
            let row = match &end {
                Some(end) => conn
                    .client
                    .query_opt(&conn.last_to, &[&start, &end.as_bytes()])?,
                None => conn.client.query_opt(&conn.last, &[&start])?,
            };
            row.as_ref().map(record).transpose()
        })
    }

    /// One `REPEATABLE READ` read-only transaction for the whole walk (one snapshot), fetched
    /// through a portal [`SCAN_PAGE`] rows at a time. `f` runs while the transaction is open,
    /// on this store's other connections if it uses the store.
    fn scan_each(
        &self,
        prefix: &str,
        f: &mut dyn FnMut(String, Record) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let end = prefix_end(prefix);
        let mut first = true;
        self.run("cannot read", |conn| {
            // `f` may have seen records of an attempt that lost its connection: never again.
            if !first {
                return Err(Failure::Store(StoreError::backend_retryable(
                    format!(
                        "cannot read store {}: the connection was lost during a walk",
                        self.location
                    ),
                    "connection lost",
                )));
            }
            let (stmt, params) = conn.page_query((
                Bound::Included(prefix),
                end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
            ));
            let all = limit_param(usize::MAX);
            let mut txn = conn
                .client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            first = false;
            let portal = match params.as_slice() {
                [a] => txn.bind(&stmt, &[a, &all])?,
                [a, b] => txn.bind(&stmt, &[a, b, &all])?,
                _ => unreachable!("a page has one or two bounds"),
            };
            let page = i32::try_from(SCAN_PAGE).unwrap_or(i32::MAX);
            loop {
                let rows = txn.query_portal(&portal, page)?;
                let full = rows.len() == SCAN_PAGE;
                for row in &rows {
                    let (key, rec) = record(row)?;
                    if f(key, rec).is_break() {
                        return Ok(txn.commit()?);
                    }
                }
                if !full {
                    return Ok(txn.commit()?);
                }
            }
        })
    }

    fn commit(&self, writes: &[Write]) -> Result<Committed, StoreError> {
        validate(writes)?;
        if writes.is_empty() {
            return Ok(Committed::default());
        }
        self.run("cannot commit to", |conn| conn.apply(Plan::Commit(writes)))
            .map(Committed::new)
    }

    fn import(&self, records: &[(String, Record)]) -> Result<(), StoreError> {
        let writes = super::import_writes(records)?;
        if writes.is_empty() {
            return Ok(());
        }
        self.run("cannot import into", |conn| {
            conn.apply(Plan::Import(&writes))
        })
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_drops_the_password_and_the_options() {
        assert_eq!(
            redact("postgres://zone:s3cret@db.example:5433/zone?sslmode=disable"),
            "postgres://zone@db.example:5433/zone"
        );
        assert_eq!(
            redact("postgresql://zone@127.0.0.1/zone?password=s3cret"),
            "postgres://zone@127.0.0.1:5432/zone"
        );
        assert_eq!(
            redact("postgres://zone:s3cret@db:notaport/zone"),
            "postgres://(invalid URL)"
        );
        assert!(is_url("postgres://x/y") && is_url("postgresql://x/y"));
        assert!(!is_url("zone.db") && !is_url("./postgres://x"));
    }

    #[test]
    fn a_bad_url_is_refused_without_its_text() {
        let err = PostgresStore::open("postgres://zone:s3cret@db.example:notaport/zone")
            .expect_err("a port that is not a number");
        let text = format!("{err} {err:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn an_unreachable_server_is_retryable_and_named_without_password() {
        // Port 1 on the loopback: nothing listens there, the connection is refused at once.
        let err = PostgresStore::open("postgres://zone:s3cret@127.0.0.1:1/zone")
            .expect_err("nothing listens");
        let text = format!("{err} {err:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("postgres://zone@127.0.0.1:1/zone"), "{text}");
        assert!(err.is_retryable(), "{err}");
    }
}
