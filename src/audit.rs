//! The append-only, hash-chained audit log (S6).
//!
//! Each state change appends one entry `audit/<seq>` in the same store transaction as the
//! change itself, and moves `audit/head`. Entry `n` carries `prev`, the hash of entry `n-1`
//! (64 zeros for the first), and `hash` = SHA-256 over `prev` and the entry's canonical JSON
//! body; so editing, removing or reordering any entry breaks every hash after it, and
//! [`verify`] finds the first broken link offline.
//!
//! Because every append is a compare-and-swap on `audit/head`, two frontends on one store can
//! never both commit a change made from the same view of the zone (B6): the second one gets a
//! conflict and must reload.

use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::Timestamp;
use crate::store::{Committed, Expect, Storage, StoreError, Write};
use crate::zone::RECORD_VERSION;

pub(crate) const HEAD: &str = "audit/head";
const PREFIX: &str = "audit/entry/";
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A link of the chain is broken: an entry was changed, removed or reordered.
    #[error("audit log broken at entry {seq}: {reason}")]
    Broken {
        /// The first entry that does not verify.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// Reading the log failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The body that is hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Body {
    seq: u64,
    at: Timestamp,
    event: String,
    detail: serde_json::Value,
    prev: String,
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Record format version.
    pub v: u32,
    /// Position in the log, from 1.
    pub seq: u64,
    /// When the change was made (the service's clock).
    pub at: Timestamp,
    /// What happened, e.g. `zone.init`, `server.add`.
    pub event: String,
    /// Facts of the change (never secrets).
    pub detail: serde_json::Value,
    /// Hash of the previous entry (hex).
    pub prev: String,
    /// SHA-256 over `prev` and this entry's body (hex).
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Head {
    v: u32,
    seq: u64,
    hash: String,
}

fn hash_body(body: &Body) -> String {
    let json = serde_json::to_vec(body).expect("a body of strings, numbers and JSON serialises");
    let mut h = Sha256::new();
    h.update(body.prev.as_bytes());
    h.update(&json);
    base16ct::lower::encode_string(&h.finalize())
}

fn entry_key(seq: u64) -> String {
    format!("{PREFIX}{seq:020}")
}

/// What a command decided from, as one number: the version of the audit head when it began.
///
/// Every commit of the service appends an audit entry, so every commit moves the head: the head
/// is a zone-wide epoch. A command reads it before anything it decides from, and its commit
/// expects the head still at that version, so a commit that any other commit overtook fails
/// with a conflict instead of committing a decision made on a stale view (B6: no lost update,
/// no write skew). Coarse by design: two commands that could have committed side by side also
/// conflict, and the loser simply runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch(Option<u64>);

impl Epoch {
    /// The epoch of `store` now.
    pub(crate) fn read(store: &dyn Storage) -> Result<Epoch, StoreError> {
        Ok(Epoch(store.get(HEAD)?.map(|r| r.version)))
    }

    /// The head's version (`None`: an empty log).
    pub(crate) fn version(self) -> Option<u64> {
        self.0
    }

    /// The epoch after a commit that wrote `writes` (ending with [`append`]'s) and got
    /// `committed` back: the version the commit gave the head, as the store reports it (not
    /// "the version read + 1", which a backend need not follow).
    pub(crate) fn after(writes: &[Write], committed: &Committed) -> Result<Epoch, StoreError> {
        let head = writes.iter().rposition(|w| w.key == HEAD);
        match head.and_then(|i| committed.version(i)) {
            Some(v) => Ok(Epoch(Some(v))),
            // Only a backend that breaks `Storage::commit`'s contract gets here.
            None => Err(StoreError::backend(
                "commit to the audit log",
                "the store reported no version for the audit head it wrote",
            )),
        }
    }

    fn expect(self) -> Expect {
        self.0.map_or(Expect::Absent, Expect::Version)
    }
}

/// The writes that append one entry after the head as it was at `epoch`. Commit them in the
/// same transaction as the change they describe; the commit then fails if any other commit came
/// after `epoch` (B6). Fails at once with [`StoreError::Conflict`] when the head has already
/// moved.
pub(crate) fn append(
    store: &dyn Storage,
    epoch: Epoch,
    at: Timestamp,
    event: &str,
    detail: serde_json::Value,
) -> Result<Vec<Write>, StoreError> {
    let head = store.get(HEAD)?;
    let found = head.as_ref().map(|r| r.version);
    if found != epoch.0 {
        return Err(StoreError::Conflict {
            key: HEAD.into(),
            expected: epoch.expect(),
            found,
        });
    }
    let (expect, seq, prev) = match head {
        Some(rec) => {
            let head: Head =
                serde_json::from_slice(&rec.value).map_err(|e| StoreError::Corrupt {
                    key: HEAD.into(),
                    reason: e.to_string(),
                })?;
            // A damaged head may name the last possible entry (issue 9 item 8: this addition
            // used to overflow).
            let seq = head.seq.checked_add(1).ok_or_else(|| StoreError::Corrupt {
                key: HEAD.into(),
                reason: format!(
                    "it names entry {}, after which no entry can follow; the log is damaged \
                     (check it with an audit verification)",
                    head.seq
                ),
            })?;
            (Expect::Version(rec.version), seq, head.hash)
        }
        None => (Expect::Absent, 1, GENESIS.to_string()),
    };
    let body = Body {
        seq,
        at,
        event: event.to_string(),
        detail,
        prev,
    };
    let hash = hash_body(&body);
    let entry = AuditEntry {
        v: RECORD_VERSION,
        seq,
        at,
        event: body.event,
        detail: body.detail,
        prev: body.prev,
        hash: hash.clone(),
    };
    let head = Head {
        v: RECORD_VERSION,
        seq,
        hash,
    };
    Ok(vec![
        Write::create(
            entry_key(seq),
            serde_json::to_vec(&entry).expect("entry serialises"),
        ),
        Write::put(
            HEAD,
            expect,
            serde_json::to_vec(&head).expect("head serialises"),
        ),
    ])
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuditReport {
    /// Number of entries checked.
    pub entries: u64,
    /// Hash of the last entry (the value to write down to detect a truncated log later).
    pub head: String,
}

/// Checks one entry read at `key`: that it is entry `expected_seq`, links to `prev` and matches
/// its hash. Its hash, the next entry's `prev`, on success.
fn check_entry(
    key: &str,
    value: &[u8],
    expected_seq: u64,
    prev: &str,
) -> Result<String, AuditError> {
    let e: AuditEntry = serde_json::from_slice(value).map_err(|err| AuditError::Broken {
        seq: expected_seq,
        reason: format!("{key} unreadable: {err}"),
    })?;
    if e.seq != expected_seq || key != entry_key(expected_seq) {
        return Err(AuditError::Broken {
            seq: expected_seq,
            reason: format!(
                "found entry {} at {key}: an entry is missing or moved",
                e.seq
            ),
        });
    }
    if e.prev != prev {
        return Err(AuditError::Broken {
            seq: e.seq,
            reason: "does not link to the previous entry's hash".into(),
        });
    }
    let body = Body {
        seq: e.seq,
        at: e.at,
        event: e.event,
        detail: e.detail,
        prev: e.prev,
    };
    if hash_body(&body) != e.hash {
        return Err(AuditError::Broken {
            seq: e.seq,
            reason: "content does not match its hash (entry altered)".into(),
        });
    }
    Ok(e.hash)
}

/// The last `n` entries of the log, newest first (the web console's audit pane, W2). Reads
/// `n` entries by their keys from the head, not the whole log, so it stays fast on a long log;
/// it does not verify the chain ([`verify`] does).
pub fn recent(store: &dyn Storage, n: usize) -> Result<Vec<AuditEntry>, AuditError> {
    let Some(head) = store.get(HEAD)? else {
        return Ok(Vec::new());
    };
    let head: Head = serde_json::from_slice(&head.value).map_err(|e| AuditError::Broken {
        seq: 0,
        reason: format!("head unreadable: {e}"),
    })?;
    let mut out = Vec::with_capacity(n.min(head.seq as usize));
    let mut seq = head.seq;
    while seq > 0 && out.len() < n {
        let rec = store
            .get(&entry_key(seq))?
            .ok_or_else(|| AuditError::Broken {
                seq,
                reason: "the entry the head counts is missing".into(),
            })?;
        let entry: AuditEntry =
            serde_json::from_slice(&rec.value).map_err(|e| AuditError::Broken {
                seq,
                reason: format!("entry unreadable: {e}"),
            })?;
        out.push(entry);
        seq -= 1;
    }
    Ok(out)
}

/// Reads the whole log and checks every link, the sequence numbers and the head. The log is
/// read one entry at a time ([`Storage::scan_each`]), so verifying a long log needs memory for
/// one entry, not for all.
pub fn verify(store: &dyn Storage) -> Result<AuditReport, AuditError> {
    let mut prev = GENESIS.to_string();
    let mut count = 0u64;
    let mut broken = None;
    store.scan_each(
        PREFIX,
        &mut |key, rec| match check_entry(&key, &rec.value, count + 1, &prev) {
            Ok(hash) => {
                prev = hash;
                count += 1;
                ControlFlow::Continue(())
            }
            Err(e) => {
                broken = Some(e);
                ControlFlow::Break(())
            }
        },
    )?;
    if let Some(e) = broken {
        return Err(e);
    }
    match store.get(HEAD)? {
        Some(rec) => {
            let head: Head =
                serde_json::from_slice(&rec.value).map_err(|e| AuditError::Broken {
                    seq: count,
                    reason: format!("head unreadable: {e}"),
                })?;
            if head.seq != count || head.hash != prev {
                return Err(AuditError::Broken {
                    seq: count,
                    reason: format!(
                        "head names entry {} but the log ends at entry {count}: entries were \
                         removed from the end",
                        head.seq
                    ),
                });
            }
        }
        None if count > 0 => {
            return Err(AuditError::Broken {
                seq: count,
                reason: "head record missing".into(),
            });
        }
        None => {}
    }
    Ok(AuditReport {
        entries: count,
        head: prev,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn t() -> Timestamp {
        "2027-01-01T00:00:00Z".parse().unwrap()
    }

    fn log(n: u64) -> MemoryStore {
        let s = MemoryStore::new();
        for i in 0..n {
            let epoch = Epoch::read(&s).unwrap();
            let w = append(&s, epoch, t(), "test", serde_json::json!({ "i": i })).unwrap();
            s.commit(&w).unwrap();
        }
        s
    }

    #[test]
    fn verifies_and_detects_tampering() {
        let s = log(5);
        assert_eq!(verify(&s).unwrap().entries, 5);
        // Alter entry 3's detail.
        let key = entry_key(3);
        let rec = s.get(&key).unwrap().unwrap();
        let mut e: AuditEntry = serde_json::from_slice(&rec.value).unwrap();
        e.detail = serde_json::json!({ "i": 99 });
        s.commit(&[Write::put(
            &key,
            Expect::Any,
            serde_json::to_vec(&e).unwrap(),
        )])
        .unwrap();
        let err = verify(&s).unwrap_err().to_string();
        assert!(err.contains("entry 3") && err.contains("altered"), "{err}");
    }

    #[test]
    fn detects_removed_entries() {
        let s = log(4);
        s.commit(&[Write::delete(entry_key(2), Expect::Any)])
            .unwrap();
        assert!(verify(&s).unwrap_err().to_string().contains("entry 2"));
        let s = log(4);
        s.commit(&[Write::delete(entry_key(4), Expect::Any)])
            .unwrap();
        assert!(
            verify(&s)
                .unwrap_err()
                .to_string()
                .contains("removed from the end")
        );
    }

    /// Issue 9 item 8: a damaged head naming entry u64::MAX is an error, not an overflow.
    #[test]
    fn append_after_the_last_possible_entry_is_refused() {
        let s = MemoryStore::new();
        let head = serde_json::json!({ "v": 1, "seq": u64::MAX, "hash": "00" });
        s.commit(&[Write::create(HEAD, serde_json::to_vec(&head).unwrap())])
            .unwrap();
        let epoch = Epoch::read(&s).unwrap();
        let err = append(&s, epoch, t(), "a", serde_json::Value::Null).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { key, .. } if key == HEAD),
            "{err}"
        );
        assert!(err.to_string().contains("18446744073709551615"), "{err}");
    }

    #[test]
    fn concurrent_appends_conflict() {
        let s = log(1);
        let epoch = Epoch::read(&s).unwrap();
        let a = append(&s, epoch, t(), "a", serde_json::Value::Null).unwrap();
        let b = append(&s, epoch, t(), "b", serde_json::Value::Null).unwrap();
        let committed = s.commit(&a).unwrap();
        assert!(matches!(s.commit(&b), Err(StoreError::Conflict { .. })));
        verify(&s).unwrap();
        // B6: a command that read the zone at `epoch` cannot even prepare its commit now.
        let err = append(&s, epoch, t(), "c", serde_json::Value::Null).unwrap_err();
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
        assert_eq!(
            Epoch::read(&s).unwrap(),
            Epoch::after(&a, &committed).unwrap()
        );
    }

    #[test]
    fn epoch_after_a_commit_is_the_head_version_the_store_reports() {
        // A backend may number versions as it likes (only upwards): the epoch follows what the
        // commit reports for the head, not "the version read + 1".
        let s = log(2);
        let writes = append(
            &s,
            Epoch::read(&s).unwrap(),
            t(),
            "x",
            serde_json::Value::Null,
        )
        .unwrap();
        let head = writes.iter().position(|w| w.key == HEAD).unwrap();
        let mut versions = vec![Some(1); writes.len()];
        versions[head] = Some(40);
        let epoch = Epoch::after(&writes, &Committed::new(versions)).unwrap();
        assert_eq!(epoch, Epoch(Some(40)));
        // A backend that reports no version for the head breaks the contract: an error, not a
        // guess.
        let err = Epoch::after(&writes, &Committed::default()).unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("no version"), "{err}");
    }
}
