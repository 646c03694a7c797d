//! A real PostgreSQL restart in the middle of an in-process Remint CA (issue 12 item 5): the
//! server is stopped (`pg_ctl stop -m fast`, which ends every connection) and started again.
//! While it is down a command fails at once and retryably; once it is back the next command
//! works (or fails retryably, and works when run again), and the operation completes with a
//! verified audit log and every member activated.
//!
//! Alone in its test binary, since it stops the server every PostgreSQL test uses. Needs
//! `$ZONEPKI_TEST_POSTGRES` and `$ZONEPKI_TEST_POSTGRES_CTL`, the server's `pg_ctl` with its
//! options, to which the test appends `stop ...` and `start ...` (`.ci/run` sets both);
//! ignored with the reason without them.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/sim.rs"]
mod sim;

use std::process::Command;
use std::time::{Duration, Instant};

use common::pg::TestDb;
use sim::{Sim, Spec, remint_ca, t};
use zonepki::error::Result as ZResult;
use zonepki::store::PostgresStore;
use zonepki::transport::{Fleet, LoopbackTransport, RefreshOptions};

const CTL: &str = "ZONEPKI_TEST_POSTGRES_CTL";

fn ctl(action: &str) {
    let prefix = std::env::var(CTL)
        .unwrap_or_else(|_| panic!("{CTL} is not set: the server's pg_ctl with its options"));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{prefix} {action} >/dev/null"))
        .status()
        .unwrap();
    assert!(status.success(), "pg_ctl {action} failed");
}

/// Starts the server again if the test stops while it is down, for the tests that follow.
struct Restart(bool);

impl Drop for Restart {
    fn drop(&mut self) {
        if self.0 {
            ctl("start -w");
        }
    }
}

/// Runs a command until it does not fail retryably (a few times at most); counts the retries.
fn until_done<T>(what: &str, retries: &mut usize, mut f: impl FnMut() -> ZResult<T>) -> T {
    for _ in 0..5 {
        match f() {
            Ok(v) => return v,
            Err(e) if e.is_retryable() => {
                *retries += 1;
                eprintln!("{what}: retryable: {e}");
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
    panic!("{what}: still failing after 5 attempts")
}

#[test]
#[cfg_attr(
    not(all(zonepki_has_postgres, zonepki_has_postgres_ctl)),
    ignore = "needs PostgreSQL and its pg_ctl: set ZONEPKI_TEST_POSTGRES and \
              ZONEPKI_TEST_POSTGRES_CTL (.ci/run does)"
)]
fn remint_ca_across_a_postgres_restart() {
    let db = TestDb::new("pg_restart");
    let sim = Sim::build(
        PostgresStore::create(&db.url).unwrap(),
        LoopbackTransport::in_memory(),
        Spec::new(3),
    );
    let mut retries = 0;
    sim.svc
        .start_remint_ca(remint_ca("2027-01-08T00:00:00Z"))
        .unwrap();

    // Down: every command fails at once, retryably, saying what it could not reach.
    let mut guard = Restart(true);
    ctl("stop -m fast -w");
    let began = Instant::now();
    let err = sim.svc.op_show().unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains(&db.name), "{err}");
    let err = sim
        .svc
        .refresh(&[], &RefreshOptions::default(), |_, _| {})
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "a refused connection fails fast"
    );

    // Back: the next commands work, and the operation completes.
    ctl("start -w");
    guard.0 = false;
    let v = until_done("drive", &mut retries, || {
        sim::drive_svc(&sim.svc, &RefreshOptions::default())
    });
    assert_eq!(v.state.to_string(), "assigned");
    // A second restart between assignment and activation.
    ctl("restart -m fast -w");
    sim.clock.set(t("2027-01-08T00:00:00Z"));
    let v = until_done("activate", &mut retries, || {
        sim::drive_svc(&sim.svc, &RefreshOptions::default())
    });
    assert_eq!(v.state.to_string(), "activated");
    assert!(v.members().all(|(_, s)| s == "activated"), "{v:?}");
    for name in sim.all_names() {
        for server in [sim::PS1, sim::PS2, sim::SAT1] {
            if name != server && !name.starts_with("content") {
                assert!(sim.communicates(&name, server), "{name} -> {server}");
            }
        }
    }
    until_done("audit", &mut retries, || sim.svc.verify_audit());
    eprintln!("retryable failures after the restarts: {retries}");
}
