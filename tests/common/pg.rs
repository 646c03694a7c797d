//! A PostgreSQL database of its own for each test, on the server `$ZONEPKI_TEST_POSTGRES`
//! names (`.ci/run` starts one and sets it).
//!
//! A test that needs PostgreSQL is marked
//! `#[cfg_attr(not(zonepki_has_postgres), ignore = "needs PostgreSQL: ...")]`: build.rs sets
//! `zonepki_has_postgres` when the variable is set at build time, and always under CI. Without
//! it `cargo test` lists the test as ignored with that reason; with it, a test that finds no
//! variable or no server fails, never passes silently.

use std::sync::atomic::{AtomicU64, Ordering};

/// The variable naming the test server: `postgres://USER@HOST:PORT/DB`, a user that may create
/// databases.
pub const ENV: &str = "ZONEPKI_TEST_POSTGRES";

/// The URL of the test server's maintenance database.
pub fn server_url() -> String {
    match std::env::var(ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "{ENV} is not set: set it to a PostgreSQL server (postgres://USER@HOST:PORT/DB) to \
             run this test (.ci/run starts one), or rebuild without it so that the test is \
             marked ignored"
        ),
    }
}

/// `url` with its database name replaced by `db`.
pub fn with_db(url: &str, db: &str) -> String {
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

/// A database made for one test, dropped (with its connections) when the value is dropped.
pub struct TestDb {
    /// The URL of the new database.
    pub url: String,
    /// Its name.
    pub name: String,
    server: String,
}

impl TestDb {
    /// A new, empty database named after `tag`, the process and a counter.
    pub fn new(tag: &str) -> TestDb {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let server = server_url();
        let tag: String = tag
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        let name = format!(
            "zt_{tag}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // Two statements: CREATE DATABASE cannot run inside the transaction a batch makes.
        let mut client = admin(&server);
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            if let Err(e) = client.batch_execute(&sql) {
                panic!("cannot create database {name} on {ENV}'s server: {e:?}");
            }
        }
        TestDb {
            url: with_db(&server, &name),
            name,
            server,
        }
    }

    /// A client connected to this database as the test server's user.
    pub fn client(&self) -> postgres::Client {
        admin(&self.url)
    }

    /// Ends every connection to this database, as a server restart would
    /// (`pg_terminate_backend`). Returns how many it ended.
    pub fn terminate_connections(&self) -> usize {
        let mut client = admin(&self.server);
        let rows = client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.name],
            )
            .unwrap();
        rows.len()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let dropped = admin(&self.server).batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
        if let Err(e) = dropped
            && !std::thread::panicking()
        {
            panic!("cannot drop database {}: {e}", self.name);
        }
    }
}

fn admin(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL server ({ENV}): {e}"))
}
