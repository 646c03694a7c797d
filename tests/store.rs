//! One test suite for every `Storage` backend, plus redb-specific file handling and a model
//! test comparing `RedbStore` against `MemoryStore`.

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;

#[path = "common/net.rs"]
mod net;

use proptest::prelude::*;
use tempfile::TempDir;
use zonepki::store::{
    Committed, Expect, FaultyStore, InjectedFailure, MemoryStore, Record, RedbStore, Storage,
    StoreError, Write,
};

/// A store under test, with the directory that holds its file (if any).
struct Fixture {
    store: Arc<dyn Storage>,
    _dir: Option<TempDir>,
    /// What must live as long as the store (a remote store's server).
    _server: Option<net::TestServer>,
}

fn memory() -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::new()),
        _dir: None,
        _server: None,
    }
}

fn redb() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = RedbStore::create(dir.path().join("zone.redb")).expect("create store");
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
        _server: None,
    }
}

/// A `RemoteStore` (issue 11 item 4): a memory store behind the admin API of a test server
/// (tests/common/net.rs), over TLS pinned to the server's CA.
fn remote() -> Fixture {
    let (ca, chain, key) = net::own_ca("zone1.test.example");
    let server = net::TestServer::start(
        net::Backend::store_only(Arc::new(MemoryStore::new()), "store-suite-token"),
        ca,
        chain,
        &key,
    );
    let client = zonepki::net::remote::AdminClient::connect(
        server.url.parse().unwrap(),
        &server.pin.parse().unwrap(),
        zonepki::net::client::BearerToken::new(&server.admin_token),
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    Fixture {
        store: Arc::new(zonepki::net::remote::RemoteStore::new(client)),
        _dir: None,
        _server: Some(server),
    }
}

fn rec(version: u64, value: &[u8]) -> Option<Record> {
    Some(Record {
        version,
        value: value.to_vec(),
    })
}

fn keys(store: &dyn Storage, prefix: &str) -> Vec<String> {
    store
        .scan_all(prefix)
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The shared suite: every function takes a fresh store.

fn create_get_and_version_increments(s: &dyn Storage) {
    assert_eq!(s.get("zone").unwrap(), None);
    s.commit(&[Write::create("zone", *b"v1")]).unwrap();
    assert_eq!(s.get("zone").unwrap(), rec(1, b"v1"));
    s.commit(&[Write::put("zone", Expect::Version(1), *b"v2")])
        .unwrap();
    assert_eq!(s.get("zone").unwrap(), rec(2, b"v2"));
    s.commit(&[Write::put("zone", Expect::Any, *b"v3")])
        .unwrap();
    assert_eq!(s.get("zone").unwrap(), rec(3, b"v3"));
    // Expect::Any also creates.
    s.commit(&[Write::put("other", Expect::Any, Vec::new())])
        .unwrap();
    assert_eq!(s.get("other").unwrap(), rec(1, b""));
    // Binary payloads, including bytes that look like a version header, round-trip.
    let bin: Vec<u8> = (0..=255u8).chain([0; 8]).collect();
    s.commit(&[Write::create("bin", bin.clone())]).unwrap();
    assert_eq!(s.get("bin").unwrap(), rec(1, &bin));
    // Versions are per key.
    s.commit(&[
        Write::put("zone", Expect::Version(3), *b"v4"),
        Write::put("other", Expect::Version(1), *b"o2"),
    ])
    .unwrap();
    assert_eq!(s.get("zone").unwrap().map(|r| r.version), Some(4));
    assert_eq!(s.get("other").unwrap().map(|r| r.version), Some(2));
    assert_eq!(s.get("bin").unwrap().map(|r| r.version), Some(1));
}

fn absent_on_existing_conflicts_and_applies_nothing(s: &dyn Storage) {
    s.commit(&[
        Write::create("serial/ca/01", *b"cert-a"),
        Write::create("n", *b"1"),
    ])
    .unwrap();
    let before = s.scan_all("").unwrap();
    let err = s
        .commit(&[
            Write::create("cert/b", *b"cert-b"),
            Write::put("n", Expect::Version(1), *b"2"),
            Write::create("serial/ca/01", *b"cert-b"),
            Write::delete("cert/a", Expect::Any),
        ])
        .unwrap_err();
    match err {
        StoreError::Conflict {
            key,
            expected,
            found,
        } => {
            assert_eq!(key, "serial/ca/01");
            assert_eq!(expected, Expect::Absent);
            assert_eq!(found, Some(1));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        s.scan_all("").unwrap(),
        before,
        "a refused commit must change nothing"
    );
    assert_eq!(s.get("cert/b").unwrap(), None);
    assert_eq!(s.get("n").unwrap(), rec(1, b"1"));
}

fn version_mismatch_conflicts(s: &dyn Storage) {
    s.commit(&[Write::create("k", *b"1")]).unwrap();
    s.commit(&[Write::put("k", Expect::Version(1), *b"2")])
        .unwrap();
    // A stale writer that read version 1.
    let err = s.commit(&[
        Write::create("side", *b"x"),
        Write::put("k", Expect::Version(1), *b"3"),
    ]);
    assert!(
        matches!(
            err,
            Err(StoreError::Conflict { ref key, expected: Expect::Version(1), found: Some(2) })
                if key == "k"
        ),
        "{err:?}"
    );
    // Expecting a version of an absent key.
    let err = s.commit(&[Write::put("missing", Expect::Version(1), *b"x")]);
    assert!(
        matches!(err, Err(StoreError::Conflict { found: None, .. })),
        "{err:?}"
    );
    assert_eq!(s.get("k").unwrap(), rec(2, b"2"));
    assert_eq!(s.get("side").unwrap(), None);
    assert_eq!(s.get("missing").unwrap(), None);
}

fn delete(s: &dyn Storage) {
    s.commit(&[Write::create("a", *b"1"), Write::create("b", *b"1")])
        .unwrap();
    s.commit(&[Write::put("a", Expect::Version(1), *b"2")])
        .unwrap();
    // Wrong version: refused, nothing deleted.
    let err = s.commit(&[
        Write::delete("b", Expect::Any),
        Write::delete("a", Expect::Version(1)),
    ]);
    assert!(matches!(err, Err(StoreError::Conflict { .. })), "{err:?}");
    assert_eq!(keys(s, ""), ["a", "b"]);
    s.commit(&[
        Write::delete("a", Expect::Version(2)),
        Write::delete("b", Expect::Any),
    ])
    .unwrap();
    assert_eq!(s.get("a").unwrap(), None);
    assert_eq!(s.scan_all("").unwrap(), []);
    // Deleting an absent key with Any or Absent is a no-op; with a version it conflicts.
    s.commit(&[
        Write::delete("a", Expect::Any),
        Write::delete("b", Expect::Absent),
    ])
    .unwrap();
    let err = s.commit(&[Write::delete("a", Expect::Version(2))]);
    assert!(
        matches!(err, Err(StoreError::Conflict { found: None, .. })),
        "{err:?}"
    );
    // A re-created key starts over at version 1.
    s.commit(&[Write::create("a", *b"again")]).unwrap();
    assert_eq!(s.get("a").unwrap(), rec(1, b"again"));
}

fn scan_prefix_in_key_order(s: &dyn Storage) {
    let all = [
        "member/b",
        "member/a",
        "member",
        "member/a/x",
        "members",
        "cert/1",
        "m",
        "é",
        "z",
    ];
    let writes: Vec<Write> = all
        .iter()
        .map(|k| Write::create(*k, k.as_bytes()))
        .collect();
    s.commit(&writes).unwrap();
    assert_eq!(keys(s, "member/"), ["member/a", "member/a/x", "member/b"]);
    assert_eq!(
        keys(s, "member"),
        ["member", "member/a", "member/a/x", "member/b", "members"]
    );
    assert_eq!(keys(s, "nothing"), Vec::<String>::new());
    let mut sorted: Vec<String> = all.iter().map(|k| k.to_string()).collect();
    sorted.sort(); // byte order of UTF-8 = `str` order
    assert_eq!(keys(s, ""), sorted);
    assert_eq!(keys(s, "é"), ["é"]);
    for (k, r) in s.scan_all("").unwrap() {
        assert_eq!(
            r,
            Record {
                version: 1,
                value: k.into_bytes()
            }
        );
    }
}

fn invalid_writes_are_refused(s: &dyn Storage) {
    s.commit(&[Write::create("a", *b"1")]).unwrap();
    let err = s.commit(&[
        Write::create("b", *b"1"),
        Write::put("a", Expect::Version(1), *b"2"),
        Write::delete("a", Expect::Any),
    ]);
    assert!(
        matches!(err, Err(StoreError::InvalidWrite { ref key, .. }) if key == "a"),
        "{err:?}"
    );
    let err = s.commit(&[Write::create("c", *b"1"), Write::create("", *b"1")]);
    assert!(
        matches!(err, Err(StoreError::InvalidWrite { .. })),
        "{err:?}"
    );
    let err = s.commit(&[Write::put("a", Expect::Version(0), *b"1")]);
    assert!(
        matches!(err, Err(StoreError::InvalidWrite { .. })),
        "{err:?}"
    );
    assert_eq!(
        s.scan_all("").unwrap(),
        [(
            "a".to_owned(),
            Record {
                version: 1,
                value: b"1".to_vec()
            }
        )]
    );
}

fn empty_transaction_is_ok(s: &dyn Storage) {
    s.commit(&[]).unwrap();
    s.commit(&[Write::create("a", *b"1")]).unwrap();
    s.commit(&[]).unwrap();
    assert_eq!(s.get("a").unwrap(), rec(1, b"1"));
}

fn racing_creates_have_one_winner(s: Arc<dyn Storage>) {
    const THREADS: usize = 8;
    for round in 0..5 {
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (s, barrier) = (Arc::clone(&s), Arc::clone(&barrier));
                thread::spawn(move || {
                    barrier.wait();
                    s.commit(&[
                        Write::create(format!("cert/{round}/{t}"), *b"c"),
                        Write::create(format!("serial/ca/{round}"), t.to_string()),
                    ])
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<usize> = (0..THREADS).filter(|t| results[*t].is_ok()).collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        for r in &results {
            assert!(
                matches!(r, Ok(_) | Err(StoreError::Conflict { .. })),
                "{r:?}"
            );
        }
        let winner = winners[0];
        let serial = s.get(&format!("serial/ca/{round}")).unwrap().unwrap();
        assert_eq!(
            serial,
            Record {
                version: 1,
                value: winner.to_string().into_bytes()
            }
        );
        // Only the winner's other write landed.
        assert_eq!(
            keys(&*s, &format!("cert/{round}/")),
            [format!("cert/{round}/{winner}")]
        );
    }
}

fn racing_read_modify_write_loses_no_update(s: Arc<dyn Storage>) {
    const THREADS: u64 = 4;
    const INCREMENTS: u64 = 15;
    s.commit(&[Write::create("counter", 0u64.to_be_bytes())])
        .unwrap();
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let s = Arc::clone(&s);
            thread::spawn(move || {
                let mut conflicts = 0u64;
                for _ in 0..INCREMENTS {
                    loop {
                        let r = s.get("counter").unwrap().unwrap();
                        let n = u64::from_be_bytes(r.value.try_into().unwrap());
                        let w = Write::put(
                            "counter",
                            Expect::Version(r.version),
                            (n + 1).to_be_bytes(),
                        );
                        match s.commit(&[w]) {
                            Ok(_) => break,
                            Err(StoreError::Conflict { .. }) => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let r = s.get("counter").unwrap().unwrap();
    assert_eq!(
        u64::from_be_bytes(r.value.try_into().unwrap()),
        THREADS * INCREMENTS
    );
    assert_eq!(r.version, THREADS * INCREMENTS + 1);
}

fn faulty_store_applies_nothing_once_failing(s: Arc<dyn Storage>) {
    let faulty = FaultyStore::new(Arc::clone(&s), Some(1));
    faulty.commit(&[Write::create("a", *b"1")]).unwrap();
    let err = faulty.commit(&[
        Write::create("b", *b"1"),
        Write::put("a", Expect::Any, *b"2"),
    ]);
    match err {
        Err(ref e @ StoreError::Backend { .. }) => {
            assert!(
                e.to_string().contains("injected failure after 1 commits"),
                "{e}"
            );
            assert!(!e.is_retryable());
        }
        other => panic!("expected an injected failure, got {other:?}"),
    }
    assert_eq!(faulty.commits(), 1);
    assert_eq!(
        s.scan_all("").unwrap(),
        [(
            "a".to_owned(),
            Record {
                version: 1,
                value: b"1".to_vec()
            }
        )]
    );
    assert_eq!(faulty.get("a").unwrap(), rec(1, b"1"));
    faulty.set_fail_after(Some(2));
    faulty.commit(&[Write::create("b", *b"1")]).unwrap();
    assert!(faulty.commit(&[]).is_err());
    assert_eq!(keys(&faulty, ""), ["a", "b"]);
}

// Bounded reads (issue 10 item 2): pages, `last`, versions from commit, retryable errors.

/// Keys of several families that share leading bytes, non-ASCII ones included.
const FAMILY: [&str; 14] = [
    "dev",
    "dev/",
    "dev/a",
    "dev/b",
    "dev/b/1",
    "dev/é",
    "dev/ê",
    "dev/\u{10ffff}",
    "dev0",
    "devices/x",
    "de",
    "e\u{301}",
    "é",
    "é/1",
];

fn fill(s: &dyn Storage, keys: &[&str]) {
    let writes: Vec<Write> = keys
        .iter()
        .map(|k| Write::create(*k, k.as_bytes()))
        .collect();
    s.commit(&writes).unwrap();
}

fn page(s: &dyn Storage, prefix: &str, after: Option<&str>, limit: usize) -> Vec<String> {
    s.scan(prefix, after, limit)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// Walks `prefix` page by page as a caller does, checking every page's size.
fn walk(s: &dyn Storage, prefix: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let p = page(s, prefix, after.as_deref(), limit);
        assert!(p.len() <= limit, "a page of {} for limit {limit}", p.len());
        let done = p.len() < limit;
        after = p.last().cloned().or(after);
        out.extend(p);
        if done {
            return out;
        }
    }
}

fn paging_crosses_page_boundaries(s: &dyn Storage) {
    let many: Vec<String> = (0..37).map(|i| format!("dev/n{i:03}")).collect();
    let mut all: Vec<&str> = many.iter().map(String::as_str).collect();
    all.extend(FAMILY);
    fill(s, &all);
    for prefix in ["dev/", "dev", "", "é", "de"] {
        let whole = keys(s, prefix);
        assert!(!whole.is_empty(), "{prefix:?}");
        for limit in [1, 2, 3, 7, 36, 37, 38, 1000] {
            assert_eq!(walk(s, prefix, limit), whole, "{prefix:?} by {limit}");
        }
    }
    // Every page holds what it may and no more: the 44 keys of `dev/` in pages of 7.
    let family = keys(s, "dev/");
    assert_eq!(family.len(), 37 + 7);
    assert_eq!(page(s, "dev/", None, 7), family[..7]);
    assert_eq!(page(s, "dev/", Some(&family[6]), 7), family[7..14]);
    assert_eq!(page(s, "dev/", Some(&family[41]), 7), family[42..]);
}

fn scan_after_at_between_and_past_keys(s: &dyn Storage) {
    fill(s, &FAMILY);
    // At a key: strictly after it.
    assert_eq!(
        page(s, "dev/", Some("dev/a"), 10),
        ["dev/b", "dev/b/1", "dev/é", "dev/ê", "dev/\u{10ffff}"]
    );
    // Between keys (not stored): from the next one.
    assert_eq!(page(s, "dev/", Some("dev/az"), 2), ["dev/b", "dev/b/1"]);
    assert_eq!(page(s, "dev/", Some("dev/b/0"), 1), ["dev/b/1"]);
    // Before the family, even the prefix itself: from its first key.
    assert_eq!(page(s, "dev/", Some("a"), 2), ["dev/", "dev/a"]);
    assert_eq!(page(s, "dev/", Some("dev"), 1), ["dev/"]);
    assert_eq!(page(s, "dev/", Some(""), 1), ["dev/"]);
    // The prefix as a key: it belongs to its family, and `after` it excludes it.
    assert_eq!(page(s, "dev/", Some("dev/"), 1), ["dev/a"]);
    // At the last key, and after the family: nothing, whatever follows in the store.
    assert_eq!(
        page(s, "dev/", Some("dev/\u{10ffff}"), 10),
        Vec::<String>::new()
    );
    assert_eq!(page(s, "dev/", Some("dev0"), 10), Vec::<String>::new());
    assert_eq!(page(s, "dev/", Some("z"), 10), Vec::<String>::new());
    assert_eq!(page(s, "", Some("é/1"), 10), Vec::<String>::new());
    assert_eq!(page(s, "", Some("é"), 10), ["é/1"]);
    // Non-ASCII `after` inside the family.
    assert_eq!(
        page(s, "dev/", Some("dev/é"), 10),
        ["dev/ê", "dev/\u{10ffff}"]
    );
}

fn scan_limit_zero_and_one(s: &dyn Storage) {
    assert_eq!(page(s, "", None, 0), Vec::<String>::new());
    assert_eq!(page(s, "", None, 1), Vec::<String>::new());
    fill(s, &FAMILY);
    assert_eq!(page(s, "", None, 0), Vec::<String>::new());
    assert_eq!(page(s, "dev/", Some("dev/a"), 0), Vec::<String>::new());
    assert_eq!(page(s, "", None, 1), ["de"]);
    assert_eq!(page(s, "dev/", Some("dev/a"), 1), ["dev/b"]);
    assert_eq!(page(s, "dev/", None, usize::MAX).len(), 7);
    // Each record comes with its version and value.
    assert_eq!(
        s.scan("dev/b", None, 1).unwrap(),
        [(
            "dev/b".to_owned(),
            Record {
                version: 1,
                value: b"dev/b".to_vec()
            }
        )]
    );
}

fn prefix_edge_cases(s: &dyn Storage) {
    fill(s, &FAMILY);
    // A prefix that is the start of another family's keys takes them too; one with the
    // separator does not.
    assert_eq!(
        keys(s, "dev"),
        [
            "dev",
            "dev/",
            "dev/a",
            "dev/b",
            "dev/b/1",
            "dev/é",
            "dev/ê",
            "dev/\u{10ffff}",
            "dev0",
            "devices/x"
        ]
    );
    assert_eq!(keys(s, "dev/b"), ["dev/b", "dev/b/1"]);
    assert_eq!(keys(s, "dev/b/"), ["dev/b/1"]);
    // The empty prefix is every key, in byte order.
    let mut sorted: Vec<String> = FAMILY.iter().map(|k| k.to_string()).collect();
    sorted.sort();
    assert_eq!(keys(s, ""), sorted);
    assert_eq!(page(s, "", None, 3), sorted[..3]);
    // Non-ASCII: é is one code point (U+00E9); e + U+0301 is another key, in another family.
    assert_eq!(keys(s, "é"), ["é", "é/1"]);
    assert_eq!(keys(s, "e"), ["e\u{301}"]);
    assert_eq!(keys(s, "dev/é"), ["dev/é"]);
    // A family ending in the last code point: its end is computed past it.
    assert_eq!(keys(s, "dev/\u{10ffff}"), ["dev/\u{10ffff}"]);
    assert_eq!(keys(s, "zz"), Vec::<String>::new());
}

fn last_on_empty_and_non_empty(s: &dyn Storage) {
    assert_eq!(s.last("").unwrap(), None);
    assert_eq!(s.last("op/history/").unwrap(), None);
    fill(
        s,
        &[
            "op/history/000001",
            "op/history/000002",
            "op/history0",
            "op/historyz",
            "op/current",
        ],
    );
    assert_eq!(
        s.last("op/history/").unwrap(),
        Some((
            "op/history/000002".to_owned(),
            Record {
                version: 1,
                value: b"op/history/000002".to_vec()
            }
        ))
    );
    assert_eq!(
        s.last("op/history").unwrap().map(|(k, _)| k).as_deref(),
        Some("op/historyz")
    );
    assert_eq!(
        s.last("").unwrap().map(|(k, _)| k).as_deref(),
        Some("op/historyz")
    );
    assert_eq!(s.last("op/x").unwrap(), None);
    fill(s, &FAMILY);
    assert_eq!(
        s.last("dev/").unwrap().map(|(k, _)| k).as_deref(),
        Some("dev/\u{10ffff}")
    );
    assert_eq!(
        s.last("dev/b").unwrap().map(|(k, _)| k).as_deref(),
        Some("dev/b/1")
    );
    assert_eq!(s.last("").unwrap().map(|(k, _)| k).as_deref(), Some("é/1"));
    // It follows writes: a newer key, a deleted last key, a new version.
    s.commit(&[Write::create("op/history/000003", *b"3")])
        .unwrap();
    assert_eq!(
        s.last("op/history/").unwrap(),
        rec(1, b"3").map(|r| ("op/history/000003".to_owned(), r))
    );
    s.commit(&[
        Write::delete("op/history/000003", Expect::Version(1)),
        Write::put("op/history/000002", Expect::Version(1), *b"2b"),
    ])
    .unwrap();
    assert_eq!(
        s.last("op/history/").unwrap(),
        rec(2, b"2b").map(|r| ("op/history/000002".to_owned(), r))
    );
}

fn commit_returns_the_versions_get_reports(s: &dyn Storage) {
    assert_eq!(s.commit(&[]).unwrap().versions(), []);
    let c = s
        .commit(&[
            Write::create("a", *b"1"),
            Write::put("b", Expect::Any, *b"1"),
        ])
        .unwrap();
    assert_eq!(c.versions(), [Some(1), Some(1)]);
    for _ in 0..3 {
        s.commit(&[Write::put("a", Expect::Any, *b"x")]).unwrap();
    }
    let writes = [
        Write::put("b", Expect::Version(1), *b"2"),
        Write::delete("gone", Expect::Any),
        Write::put("a", Expect::Any, *b"y"),
        Write::create("c", *b"c"),
        Write::put("d", Expect::Absent, *b"d"),
    ];
    let c = s.commit(&writes).unwrap();
    assert_eq!(c.versions(), [Some(2), None, Some(5), Some(1), Some(1)]);
    assert_eq!(c.version(1), None);
    assert_eq!(c.version(99), None);
    for (w, v) in writes.iter().zip(c.versions()) {
        assert_eq!(s.get(&w.key).unwrap().map(|r| r.version), *v, "{}", w.key);
    }
    // A delete of a stored key gives no version, and the key is gone.
    let c = s
        .commit(&[
            Write::delete("a", Expect::Version(5)),
            Write::put("b", Expect::Version(2), *b"3"),
        ])
        .unwrap();
    assert_eq!(c.versions(), [None, Some(3)]);
    assert_eq!(s.get("a").unwrap(), None);
    assert_eq!(s.get("b").unwrap(), rec(3, b"3"));
    // A re-created key starts at 1 again, and the commit says so.
    assert_eq!(
        s.commit(&[Write::create("a", *b"z")]).unwrap().versions(),
        [Some(1)]
    );
}

fn conflict_is_retryable_and_changes_nothing(s: &dyn Storage) {
    fill(s, &["k", "other"]);
    s.commit(&[Write::put("k", Expect::Version(1), *b"2")])
        .unwrap();
    let before = s.scan_all("").unwrap();
    let err = s
        .commit(&[
            Write::create("new", *b"n"),
            Write::put("k", Expect::Version(1), *b"stale"),
            Write::delete("other", Expect::Any),
        ])
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert!(err.is_retryable(), "{err}");
    assert!(zonepki::Error::from(err).is_retryable());
    assert_eq!(
        s.scan_all("").unwrap(),
        before,
        "a refused commit changed the store"
    );
    // Retrying from a fresh read succeeds.
    let k = s.get("k").unwrap().unwrap();
    s.commit(&[Write::put("k", Expect::Version(k.version), *b"3")])
        .unwrap();
    // An invalid write is not retryable: the same transaction is refused again.
    let err = s
        .commit(&[Write::create("x", *b"1"), Write::create("x", *b"2")])
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(!zonepki::Error::from(err).is_retryable());
}

fn error_source_chain_is_kept(s: Arc<dyn Storage>) {
    let faulty = FaultyStore::new(Arc::clone(&s), Some(0));
    let err = faulty.commit(&[Write::create("a", *b"1")]).unwrap_err();
    let source = std::error::Error::source(&err).expect("a backend failure keeps its source");
    assert_eq!(
        source.downcast_ref::<InjectedFailure>(),
        Some(&InjectedFailure { commits: 0 })
    );
    // Through the umbrella error too: `Error::Store` is transparent, so the source is the
    // backend's error.
    let err = zonepki::Error::from(err);
    assert!(!err.is_retryable());
    let source = std::error::Error::source(&err).expect("source");
    assert!(
        source.downcast_ref::<InjectedFailure>().is_some(),
        "{source}"
    );
    // A backend marks what a retry may pass; the umbrella error follows the store's word.
    let busy = StoreError::backend_retryable(
        "cannot commit",
        std::io::Error::new(std::io::ErrorKind::TimedOut, "lock wait timeout"),
    );
    assert!(busy.is_retryable());
    assert!(busy.to_string().contains("lock wait timeout"), "{busy}");
    let io = std::error::Error::source(&busy)
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    assert_eq!(io, Some(std::io::ErrorKind::TimedOut));
    assert!(zonepki::Error::from(busy).is_retryable());
    assert_eq!(s.get("a").unwrap(), None);
}

macro_rules! suite {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            #[test]
            fn create_get_and_version_increments() {
                super::create_get_and_version_increments(&*$backend().store);
            }
            #[test]
            fn absent_on_existing_conflicts_and_applies_nothing() {
                super::absent_on_existing_conflicts_and_applies_nothing(&*$backend().store);
            }
            #[test]
            fn version_mismatch_conflicts() {
                super::version_mismatch_conflicts(&*$backend().store);
            }
            #[test]
            fn delete() {
                super::delete(&*$backend().store);
            }
            #[test]
            fn scan_prefix_in_key_order() {
                super::scan_prefix_in_key_order(&*$backend().store);
            }
            #[test]
            fn invalid_writes_are_refused() {
                super::invalid_writes_are_refused(&*$backend().store);
            }
            #[test]
            fn empty_transaction_is_ok() {
                super::empty_transaction_is_ok(&*$backend().store);
            }
            #[test]
            fn racing_creates_have_one_winner() {
                super::racing_creates_have_one_winner($backend().store);
            }
            #[test]
            fn racing_read_modify_write_loses_no_update() {
                super::racing_read_modify_write_loses_no_update($backend().store);
            }
            #[test]
            fn faulty_store_applies_nothing_once_failing() {
                super::faulty_store_applies_nothing_once_failing($backend().store);
            }
            #[test]
            fn paging_crosses_page_boundaries() {
                super::paging_crosses_page_boundaries(&*$backend().store);
            }
            #[test]
            fn scan_after_at_between_and_past_keys() {
                super::scan_after_at_between_and_past_keys(&*$backend().store);
            }
            #[test]
            fn scan_limit_zero_and_one() {
                super::scan_limit_zero_and_one(&*$backend().store);
            }
            #[test]
            fn prefix_edge_cases() {
                super::prefix_edge_cases(&*$backend().store);
            }
            #[test]
            fn last_on_empty_and_non_empty() {
                super::last_on_empty_and_non_empty(&*$backend().store);
            }
            #[test]
            fn commit_returns_the_versions_get_reports() {
                super::commit_returns_the_versions_get_reports(&*$backend().store);
            }
            #[test]
            fn conflict_is_retryable_and_changes_nothing() {
                super::conflict_is_retryable_and_changes_nothing(&*$backend().store);
            }
            #[test]
            fn error_source_chain_is_kept() {
                super::error_source_chain_is_kept($backend().store);
            }
        }
    };
}

suite!(memory);
suite!(redb);
suite!(remote);

// ---------------------------------------------------------------------------------------------
// RedbStore files.

#[test]
fn redb_persists_across_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zone.redb");
    {
        let store = RedbStore::create(&path).unwrap();
        assert_eq!(store.path(), path);
        store
            .commit(&[Write::create("a", *b"1"), Write::create("b", *b"2")])
            .unwrap();
        store
            .commit(&[Write::put("a", Expect::Version(1), *b"3")])
            .unwrap();
        store.commit(&[Write::delete("b", Expect::Any)]).unwrap();
    } // dropped
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(
        store.scan_all("").unwrap(),
        [(
            "a".to_owned(),
            Record {
                version: 2,
                value: b"3".to_vec()
            }
        )]
    );
    store
        .commit(&[Write::put("a", Expect::Version(2), *b"4")])
        .unwrap();
    store.close().unwrap();
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.get("a").unwrap(), rec(3, b"4"));
}

#[test]
fn redb_open_missing_is_not_found_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.redb");
    match RedbStore::open(&path) {
        Err(StoreError::NotFound { path: p }) => assert_eq!(p, path),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(!path.exists());
    // Also in a missing directory.
    let path = dir.path().join("no/such/dir/zone.redb");
    assert!(matches!(
        RedbStore::open(&path),
        Err(StoreError::NotFound { .. })
    ));
    assert!(!dir.path().join("no").exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn redb_create_refuses_existing_paths() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zone.redb");
    let store = RedbStore::create(&path).unwrap();
    store.commit(&[Write::create("a", *b"1")]).unwrap();
    drop(store);
    match RedbStore::create(&path) {
        Err(StoreError::AlreadyExists { path: p }) => assert_eq!(p, path),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        RedbStore::open(&path).unwrap().get("a").unwrap(),
        rec(1, b"1")
    );
    // Any existing file, even an empty one, is left alone.
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, b"keep me").unwrap();
    assert!(matches!(
        RedbStore::create(&other),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(std::fs::read(&other).unwrap(), b"keep me");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        RedbStore::create(&empty),
        Err(StoreError::AlreadyExists { .. })
    ));
}

#[test]
fn redb_create_in_missing_directory_is_a_backend_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/zone.redb");
    let err = RedbStore::create(&path).unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains("zone.redb"), "{err}");
}

fn assert_open_fails_cleanly(path: &Path) {
    let before = std::fs::read(path).unwrap();
    let result = std::panic::catch_unwind(|| RedbStore::open(path));
    match result {
        // A file that is not a store (or a damaged one) is named as such (issue 9 item 9).
        Ok(Err(e @ StoreError::Damaged { .. })) => {
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
            assert!(e.to_string().contains("damaged"), "{e}");
            // Damage is met again on a retry, and what redb found is kept as the source.
            assert!(!e.is_retryable(), "{e}");
            assert!(std::error::Error::source(&e).is_some(), "{e:?}");
        }
        Ok(other) => panic!("expected a damaged-store error, got {other:?}"),
        Err(_) => panic!("RedbStore::open panicked on {}", path.display()),
    }
    assert_eq!(
        std::fs::read(path).unwrap(),
        before,
        "a refused open must not change the file"
    );
}

#[test]
fn redb_open_garbage_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>); 4] = [
        ("empty", Vec::new()),
        ("short", b"not a database".to_vec()),
        ("text", b"-----BEGIN CERTIFICATE-----\n".repeat(500)),
        (
            "noise",
            (0..20_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        assert_open_fails_cleanly(&path);
    }
    // A directory is not a store either.
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err:?}");
}

#[test]
fn redb_damaged_file_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zone.redb");
    let store = RedbStore::create(&path).unwrap();
    for i in 0..100 {
        store
            .commit(&[Write::create(format!("cert/{i:03}"), vec![7u8; 300])])
            .unwrap();
    }
    drop(store);
    let original = std::fs::read(&path).unwrap();
    for offset in (0..original.len()).step_by(2039) {
        let mut damaged = original.clone();
        let end = (offset + 64).min(damaged.len());
        damaged[offset..end].iter_mut().for_each(|b| *b ^= 0x5a);
        std::fs::write(&path, &damaged).unwrap();
        let result = std::panic::catch_unwind(|| {
            let store = RedbStore::open(&path)?;
            store.scan_all("")
        });
        match result {
            Ok(Ok(_))
            | Ok(Err(
                StoreError::Backend { .. }
                | StoreError::Corrupt { .. }
                | StoreError::Damaged { .. },
            )) => {}
            Ok(Err(e)) => panic!("unexpected error for damage at {offset}: {e:?}"),
            Err(_) => panic!("panicked on a file damaged at offset {offset}"),
        }
    }
}

#[test]
fn redb_second_handle_on_open_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zone.redb");
    let store = Arc::new(RedbStore::create(&path).unwrap());
    let err = RedbStore::open(&path).unwrap_err();
    assert!(err.to_string().contains("already open"), "{err}");
    // Busy passes once the holder closes: retryable.
    assert!(
        matches!(err, StoreError::Busy { .. }) && err.is_retryable(),
        "{err}"
    );
    // Sharing the one handle is the supported way for several frontends.
    let frontend: Arc<dyn Storage> = store.clone();
    frontend.commit(&[Write::create("a", *b"1")]).unwrap();
    assert_eq!(store.get("a").unwrap(), rec(1, b"1"));
}

// ---------------------------------------------------------------------------------------------
// Model test: random transactions give the same results on RedbStore and MemoryStore.

/// A backend-independent view of a commit's outcome.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ok(Vec<Option<u64>>),
    Conflict {
        key: String,
        expected: Expect,
        found: Option<u64>,
    },
    Invalid {
        key: String,
    },
}

fn outcome(result: Result<Committed, StoreError>) -> Outcome {
    match result {
        Ok(c) => Outcome::Ok(c.into_versions()),
        Err(StoreError::Conflict {
            key,
            expected,
            found,
        }) => Outcome::Conflict {
            key,
            expected,
            found,
        },
        Err(StoreError::InvalidWrite { key, .. }) => Outcome::Invalid { key },
        Err(e) => panic!("unexpected error: {e}"),
    }
}

const KEYS: [&str; 8] = ["a", "a/1", "a/2", "ab", "b", "b/1", "é", "a\u{10ffff}"];
const PREFIXES: [&str; 7] = ["", "a", "a/", "b", "c", "é", "a\u{10ffff}"];
const AFTERS: [Option<&str>; 6] = [
    None,
    Some(""),
    Some("a"),
    Some("a/1"),
    Some("a0"),
    Some("z"),
];

fn arb_write() -> impl Strategy<Value = Write> {
    let key = prop::sample::select(&KEYS[..]);
    let expect = prop_oneof![
        Just(Expect::Absent),
        Just(Expect::Any),
        (1u64..4).prop_map(Expect::Version),
    ];
    let value = prop::option::weighted(0.8, prop::collection::vec(any::<u8>(), 0..12));
    (key, expect, value).prop_map(|(key, expect, value)| Write {
        key: key.to_owned(),
        expect,
        value,
    })
}

fn arb_txns() -> impl Strategy<Value = Vec<Vec<Write>>> {
    prop::collection::vec(prop::collection::vec(arb_write(), 0..4), 1..25)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn redb_behaves_like_memory(txns in arb_txns()) {
        let model = MemoryStore::new();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.redb");
        let mut redb = RedbStore::create(&path).unwrap();
        for (i, txn) in txns.iter().enumerate() {
            let before = model.scan_all("").unwrap();
            let expected = outcome(model.commit(txn));
            let actual = outcome(redb.commit(txn));
            prop_assert_eq!(&actual, &expected, "transaction {} {:?}", i, txn);
            if !matches!(expected, Outcome::Ok(_)) {
                prop_assert_eq!(model.scan_all("").unwrap(), before);
            }
            for prefix in PREFIXES {
                prop_assert_eq!(redb.scan_all(prefix).unwrap(), model.scan_all(prefix).unwrap());
                prop_assert_eq!(redb.last(prefix).unwrap(), model.last(prefix).unwrap());
                for after in AFTERS {
                    for limit in [0, 1, 2, 100] {
                        prop_assert_eq!(
                            redb.scan(prefix, after, limit).unwrap(),
                            model.scan(prefix, after, limit).unwrap()
                        );
                    }
                }
            }
            for key in KEYS {
                prop_assert_eq!(redb.get(key).unwrap(), model.get(key).unwrap());
            }
            if i % 8 == 7 {
                redb.close().unwrap();
                redb = RedbStore::open(&path).unwrap();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Streamed dump (issue 9 item 9): the same text as the whole dump, one record at a time.

#[test]
fn streamed_dump_is_the_pretty_dump_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let redb = RedbStore::create(dir.path().join("d.redb")).unwrap();
    let memory = MemoryStore::new();
    for store in [&redb as &dyn Storage, &memory] {
        let text = |s: &dyn Storage| {
            let mut out = Vec::new();
            zonepki::service::dump_to(s, &mut out).unwrap();
            let whole = serde_json::to_string_pretty(&zonepki::service::dump(s).unwrap()).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), whole);
        };
        text(store);
        store
            .commit(&[
                Write::create(
                    "a",
                    br#"{"z": [1, {"b": "x\ny"}], "a": {}, "e": []}"#.to_vec(),
                ),
                Write::create("b\"q", b"\x00\xffnot json".to_vec()),
                Write::create("c", b"7".to_vec()),
                Write::create("d", br#""text""#.to_vec()),
            ])
            .unwrap();
        text(store);
    }
    // Each record is visited in key order, and a stop is honoured.
    let mut seen = Vec::new();
    redb.scan_each("", &mut |k, _| {
        seen.push(k);
        if seen.len() == 2 {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(seen, ["a", "b\"q"]);
}
