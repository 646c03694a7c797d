//! Replays every file of every fuzz corpus (`fuzz/corpus/<target>/`) through the same harness
//! the fuzz target runs (`fuzz/fuzz_targets/harness/<target>.rs`), so the seeds and every
//! crasher added to a corpus stay regression tests under plain `cargo test`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

#[path = "../fuzz/fuzz_targets/harness/bundle.rs"]
mod bundle_harness;
#[path = "../fuzz/fuzz_targets/harness/chain.rs"]
mod chain_harness;
#[path = "../fuzz/fuzz_targets/harness/cmp_message.rs"]
mod cmp_message_harness;
#[path = "../fuzz/fuzz_targets/harness/csr.rs"]
mod csr_harness;
#[path = "../fuzz/fuzz_targets/harness/protocol.rs"]
mod protocol_harness;
#[path = "../fuzz/fuzz_targets/harness/store_record.rs"]
mod store_record_harness;

use store_record_harness::Slot;

/// Every file in `fuzz/corpus/<target>`, sorted by name.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the {target} corpus is empty");
    files
}

/// Runs `harness` on every corpus file of `target`, naming the file that panics.
fn replay(target: &str, harness: fn(&[u8])) {
    for path in corpus(target) {
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| harness(&data)).is_err() {
            panic!(
                "fuzz target {target} panics on corpus file {}",
                path.display()
            );
        }
    }
}

#[test]
fn bundle_corpus() {
    replay("bundle", bundle_harness::run);
}

#[test]
fn cmp_message_corpus() {
    replay("cmp_message", cmp_message_harness::run);
    // The seeds openssl made parse (so the body parsers above ran on real messages).
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/cmp_message");
    for file in ["genm-caCerts.der", "p10cr.der"] {
        let data = std::fs::read(dir.join(file)).unwrap();
        assert!(
            zonepki::cmp::asn1::PkiMessage::from_der(&data).is_ok(),
            "seed {file} is a PKIMessage"
        );
    }
}

#[test]
fn chain_corpus() {
    replay("chain", chain_harness::run);
}

#[test]
fn protocol_corpus() {
    replay("protocol", protocol_harness::run);
    // The seeds that are messages are accepted, so the round trip above was exercised.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/protocol");
    for (file, agent) in [
        ("poll.json", true),
        ("report-staged.json", true),
        ("report-csr.json", true),
        ("answer-stage.json", false),
        ("answer-nothing.json", false),
    ] {
        let data = std::fs::read(dir.join(file)).unwrap();
        let ok = if agent {
            zonepki::protocol::decode_agent_message(&data).is_ok()
        } else {
            zonepki::protocol::decode_zone_answer(&data).is_ok()
        };
        assert!(ok, "seed {file} is a valid message");
    }
}

#[test]
fn csr_corpus() {
    replay("csr", csr_harness::run);
}

// Issue 9 item 8: a damaged store is an error, never a panic. Each store-record target's
// corpus holds the fixture's own records (`ok-*`, on which every read path must succeed) and
// damaged ones (`err-*`).

#[test]
fn zone_record_corpus() {
    replay("zone_record", |d| store_record_harness::run(Slot::Zone, d));
}

#[test]
fn server_record_corpus() {
    replay("server_record", |d| {
        store_record_harness::run(Slot::Server, d)
    });
}

#[test]
fn device_record_corpus() {
    replay("device_record", |d| {
        store_record_harness::run(Slot::Device, d)
    });
}

#[test]
fn op_record_corpus() {
    replay("op_record", |d| {
        store_record_harness::run(Slot::Operation, d)
    });
}

#[test]
fn member_update_corpus() {
    replay("member_update", |d| {
        store_record_harness::run(Slot::MemberUpdate, d)
    });
}

#[test]
fn audit_entry_corpus() {
    replay("audit_entry", |d| store_record_harness::run(Slot::Audit, d));
}

/// The store-record targets cover every record the service reads back: each key of the
/// fixture zone belongs to one target's slot, except the issued-serial records, which are only
/// ever created (with an "absent" precondition, S3) and never decoded.
#[test]
fn store_record_targets_cover_every_record() {
    let slots = [
        Slot::Zone,
        Slot::Server,
        Slot::Device,
        Slot::Operation,
        Slot::MemberUpdate,
        Slot::Audit,
    ];
    for slot in slots {
        assert!(
            !slot.keys().is_empty(),
            "the fixture has no {slot:?} record"
        );
    }
    for (key, _) in store_record_harness::fixture() {
        let holders = slots.iter().filter(|s| s.holds(key)).count();
        if key.starts_with("serial/") {
            assert_eq!(holders, 0, "{key}");
        } else {
            assert_eq!(holders, 1, "{key} is covered by {holders} targets, not one");
        }
    }
}

#[test]
fn chain_split_follows_der_boundaries() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/chain");
    let leaf = std::fs::read(dir.join("leaf-p256.der")).unwrap();
    let chain = std::fs::read(dir.join("chain.der")).unwrap();
    let pieces = chain_harness::split(&chain);
    assert_eq!(pieces.len(), 3);
    assert_eq!(pieces[0], &leaf[..]);
    assert_eq!(pieces.concat(), chain);
    assert!(chain_harness::split(&[]).is_empty());
    assert_eq!(chain_harness::split(&[0x30, 0x85, 1, 2]).len(), 1);
}
