//! Persistence: versioned records, compare-and-swap writes and atomic multi-record commits.
//!
//! Every record the crate keeps (the zone, its members, certificates, issued serial numbers,
//! operation state, the audit log) lives in a [`Storage`]: a map from UTF-8 string keys to
//! byte values. The model is deliberately small:
//!
//! * **Versioned records.** Each stored value carries a [`Record::version`]. A key's version is
//!   1 when the key is created and goes up by one on every write of that key. Deleting a key
//!   forgets its version: if the key is created again it starts over at 1.
//! * **Compare-and-swap.** Every [`Write`] states what it [`Expect`]s to find: no record
//!   ([`Expect::Absent`]), a record at exactly one version ([`Expect::Version`]), or anything
//!   ([`Expect::Any`]). A frontend reads the records a command depends on, decides, and writes
//!   back expecting the versions it read. If another frontend wrote first, the commit fails
//!   with [`StoreError::Conflict`] and the frontend reloads and retries (optimistic
//!   concurrency, requirement B6). Uniqueness, such as one serial number per issuer (S3), is a
//!   write of `serial/<issuer>/<serial>` expecting [`Expect::Absent`].
//! * **Atomic multi-record commits.** [`Storage::commit`] takes all the writes of one command.
//!   Every precondition is checked before anything is written; either all writes are applied
//!   or none is. A refused command therefore leaves the store exactly as it was.
//!
//! * **Commits conditioned on what the command read (B6).** Compare-and-swap on the records
//!   a command writes is not enough: a command can decide from records it does not write (the
//!   CA that signs a new server's certificate, "no operation runs" for a Move CA). The service
//!   therefore treats the audit log's head as a zone-wide *epoch*: every commit appends an
//!   audit entry and so moves the head; every command reads the head before anything it
//!   decides from, and its commit expects the head still at that version; a command that
//!   commits in steps goes on from the head version its commit returned. A commit that any
//!   other commit overtook fails as a whole, and the service reports
//!   [`Error::ZoneChanged`](crate::error::Error::ZoneChanged), which is retryable: running the
//!   command again re-reads the zone. The price is that two commands that could have
//!   committed side by side also conflict; for a zone's administrative commands that is
//!   cheap, and it needs nothing of a backend beyond compare-and-swap.
//!
//! * **Bounded, ranged reads.** [`Storage::scan`] returns one *page*: at most `limit` records
//!   of a key family (a prefix), in key order, strictly after the key `after` (`None`: from
//!   the start). A caller walks a family page by page, passing the last key of one page as
//!   `after` of the next, so no read holds more than one page; [`Storage::last`] is the
//!   greatest key of a family (the newest `op/history/` entry) without reading the others.
//!   [`Storage::scan_each`] walks a family one record at a time over pages (a dump), and
//!   [`Storage::scan_all`] collects a family for callers whose answer needs every record.
//!   Keys are compared as bytes, which for UTF-8 is code point order.
//! * **Versions from the commit.** [`Storage::commit`] returns [`Committed`]: the version each
//!   put gave its key, aligned with the writes (a delete gives none). A caller that writes a
//!   record and goes on from it (the audit head, that is the zone's epoch above) takes its
//!   version from there instead of predicting "read version + 1", so the service's
//!   bookkeeping never disagrees with the store's.
//! * **Retryable errors.** [`StoreError::is_retryable`] says whether the same transaction, run
//!   again after re-reading, may succeed: a [`Conflict`](StoreError::Conflict), a
//!   [`Busy`](StoreError::Busy) store, and a [`Backend`](StoreError::Backend) failure that its
//!   backend marks retryable (a serialization failure, a lock timeout). Damage, a missing
//!   store, a read-only store or an invalid write are met again on a retry. A backend failure
//!   keeps the backend's own error as its [`source`](std::error::Error::source), so a caller
//!   can inspect it.
//!
//! * **Moving a zone (D3).** [`Storage::import`] creates records with the versions they have
//!   elsewhere, so [`copy`] moves every record of a zone to another store exactly (a `store dump`
//!   of both is the same), in pages; the zone record goes last, so a copy cut short is no zone.
//!
//! Three backends are provided: [`RedbStore`], a single-file embedded database (the default),
//! [`MemoryStore`], for tests and ephemeral use, and with the `postgres` feature
//! `PostgresStore`, a PostgreSQL database that several servers share (B6, D1). With the
//! `test-util` feature, `FaultyStore` wraps any of them to inject commit failures in crash tests.

use std::error::Error as StdError;
use std::fmt;
use std::ops::{Bound, ControlFlow};
use std::path::PathBuf;
use std::sync::Arc;
#[cfg(any(test, feature = "test-util"))]
use std::sync::{Mutex, PoisonError};

mod copy;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod redb;

pub use self::copy::{Copied, CopyError, copy};
pub use self::memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use self::postgres::PostgresStore;
pub use self::redb::RedbStore;

/// A stored value and its version.
///
/// Versions start at 1 when a key is created and go up by one on every write of that key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The version of the value: 1 after the key was created, +1 after every later write.
    pub version: u64,
    /// The stored bytes.
    pub value: Vec<u8>,
}

/// What a write expects to find (compare-and-swap precondition).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The key must not exist.
    Absent,
    /// The key must exist at exactly this version (versions start at 1).
    Version(u64),
    /// No precondition: the write applies whatever is stored.
    Any,
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Absent => f.write_str("absent"),
            Expect::Version(v) => write!(f, "version {v}"),
            Expect::Any => f.write_str("any"),
        }
    }
}

impl Expect {
    /// Whether a key whose current version is `found` (`None`: absent) meets this precondition.
    pub fn matches(self, found: Option<u64>) -> bool {
        match self {
            Expect::Absent => found.is_none(),
            Expect::Version(v) => found == Some(v),
            Expect::Any => true,
        }
    }
}

/// One write of a transaction: `value: None` deletes the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The key written; must not be empty.
    pub key: String,
    /// The precondition checked before the transaction is applied.
    pub expect: Expect,
    /// The new value, or `None` to delete the key (deleting an absent key does nothing).
    pub value: Option<Vec<u8>>,
}

impl Write {
    /// Stores `value` under `key` if `expect` holds.
    pub fn put(key: impl Into<String>, expect: Expect, value: impl Into<Vec<u8>>) -> Self {
        Write {
            key: key.into(),
            expect,
            value: Some(value.into()),
        }
    }

    /// Creates `key` with `value`; the key must not exist yet ([`Expect::Absent`]).
    pub fn create(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Write::put(key, Expect::Absent, value)
    }

    /// Deletes `key` if `expect` holds.
    pub fn delete(key: impl Into<String>, expect: Expect) -> Self {
        Write {
            key: key.into(),
            expect,
            value: None,
        }
    }
}

/// What a successful [`Storage::commit`] wrote: the new version of each written key, aligned
/// with the writes (`versions()[i]` belongs to `writes[i]`).
///
/// A put gives its key's new version (1 for a key it created); a delete gives `None`. An empty
/// transaction gives an empty list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    versions: Vec<Option<u64>>,
}

impl Committed {
    /// The result of a commit whose writes got `versions`, in the order of the writes (for
    /// backends implementing [`Storage`]).
    pub fn new(versions: Vec<Option<u64>>) -> Self {
        Committed { versions }
    }

    /// The new version of each written key, in the order of the writes (`None`: deleted).
    pub fn versions(&self) -> &[Option<u64>] {
        &self.versions
    }

    /// The new version the write at `index` gave its key; `None` for a delete or an index past
    /// the writes.
    pub fn version(&self, index: usize) -> Option<u64> {
        self.versions.get(index).copied().flatten()
    }

    /// The versions, in the order of the writes.
    pub fn into_versions(self) -> Vec<Option<u64>> {
        self.versions
    }
}

/// A backend's own error, as kept by [`StoreError::Backend`] and [`StoreError::Damaged`].
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A precondition failed: somebody else wrote first. Nothing of the transaction was applied.
    #[error(
        "conflict on {key:?}: expected {expected}, found {}; the store changed since it was \
         read, reload and retry",
        found_text(*found)
    )]
    Conflict {
        /// The key whose precondition failed (the first one, in the order of the writes).
        key: String,
        /// What the write expected.
        expected: Expect,
        /// The version actually stored, `None` if the key was absent.
        found: Option<u64>,
    },
    /// The store file is missing (open).
    #[error("store {} not found (create it first)", path.display())]
    NotFound {
        /// The path that was opened.
        path: PathBuf,
    },
    /// The store file already exists (create).
    #[error("store {} already exists (open it instead)", path.display())]
    AlreadyExists {
        /// The path that was to be created.
        path: PathBuf,
    },
    /// The store file is held by another handle, in another process (another frontend) or in
    /// this one: an embedded store has one writer at a time. Nothing was read or written; the
    /// same open succeeds once that handle is closed.
    #[error(
        "store {} is already open by another process or handle, which holds it until it \
         finishes; retry once it has",
        path.display()
    )]
    Busy {
        /// The path that was opened.
        path: PathBuf,
    },
    /// The store file exists but is not a valid store: damaged, truncated, or another kind of
    /// file. It was not changed; restore it from a copy or a backup. Not retryable.
    #[error(
        "store {} is damaged or is not a zonepki store ({source}); it was left as it is: \
         restore it from a copy or a backup",
        path.display()
    )]
    Damaged {
        /// The path that was opened.
        path: PathBuf,
        /// What the backend found wrong, as the backend reported it.
        #[source]
        source: BoxError,
    },
    /// A write to a store opened read-only (for example a read-only file opened by a command
    /// that only shows the zone). Nothing was written.
    #[error("store {} is open read-only: it cannot be written", path.display())]
    ReadOnly {
        /// The path of the store.
        path: PathBuf,
    },
    /// The backend failed (I/O, database error, a lost connection). The message gives what the
    /// store was doing and the backend's own text; [`source`](std::error::Error::source) is the
    /// backend's error itself. Whether the same transaction may succeed when run again is the
    /// backend's call ([`is_retryable`](StoreError::is_retryable)): a serialization failure or a
    /// lock timeout is, a full disk or a broken file is not.
    #[error("store backend failed: {context}: {source}")]
    Backend {
        /// What the store was doing, e.g. `cannot write store /var/lib/zone.redb`.
        context: String,
        /// The backend's own error.
        #[source]
        source: BoxError,
        /// Whether running the transaction again (after re-reading) may succeed.
        retryable: bool,
    },
    /// A stored record is malformed (e.g. its version header is truncated).
    #[error("stored record {key:?} is corrupt: {reason}")]
    Corrupt {
        /// The key of the malformed record.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Invalid use: empty key, the same key twice within one transaction, etc.
    #[error("invalid write of {key:?}: {reason}")]
    InvalidWrite {
        /// The offending key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl StoreError {
    /// A [`Backend`](StoreError::Backend) failure that a retry would meet again.
    pub fn backend(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        StoreError::Backend {
            context: context.into(),
            source: source.into(),
            retryable: false,
        }
    }

    /// A [`Backend`](StoreError::Backend) failure that may pass when the transaction runs again
    /// (a serialization failure, a deadlock victim, a lock or connection timeout).
    pub fn backend_retryable(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        StoreError::Backend {
            context: context.into(),
            source: source.into(),
            retryable: true,
        }
    }

    /// Whether the same transaction, run again after re-reading what it decides from, may
    /// succeed: a [`Conflict`](StoreError::Conflict) (somebody else wrote first), a
    /// [`Busy`](StoreError::Busy) store (its holder finishes), and a
    /// [`Backend`](StoreError::Backend) failure its backend marked retryable. Damage, corrupt
    /// records, a missing or read-only store and invalid writes are not: a retry meets them
    /// again.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Conflict { .. } | StoreError::Busy { .. } => true,
            StoreError::Backend { retryable, .. } => *retryable,
            StoreError::NotFound { .. }
            | StoreError::AlreadyExists { .. }
            | StoreError::Damaged { .. }
            | StoreError::ReadOnly { .. }
            | StoreError::Corrupt { .. }
            | StoreError::InvalidWrite { .. } => false,
        }
    }
}

fn found_text(found: Option<u64>) -> String {
    match found {
        Some(v) => format!("version {v}"),
        None => "absent".to_owned(),
    }
}

/// Opens the existing store `name` names: a PostgreSQL database for a `postgres://` or
/// `postgresql://` URL (with the `postgres` feature; without it such a URL is refused, saying
/// so), a redb file for anything else. For frontends whose `--store` takes either (zonectl,
/// zoned); errors as [`RedbStore::open`] and `PostgresStore::open` give them.
pub fn open(name: &str) -> Result<Box<dyn Storage>, StoreError> {
    if name.starts_with("postgres://") || name.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Box::new(PostgresStore::open(name)?));
        #[cfg(not(feature = "postgres"))]
        return Err(StoreError::backend(
            "cannot open a PostgreSQL store",
            "this build of zonepki has no PostgreSQL support: build it with the `postgres` \
             feature",
        ));
    }
    Ok(Box::new(RedbStore::open(name)?))
}

/// A store's name as messages show it: a file's path as given, a PostgreSQL URL without its
/// password and options (a URL's secret never reaches a message or a log).
pub fn display_name(name: &str) -> String {
    if name.starts_with("postgres://") || name.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return postgres::redact(name);
        #[cfg(not(feature = "postgres"))]
        return "postgres://(a PostgreSQL URL)".to_owned();
    }
    name.to_owned()
}

/// How many records [`Storage::scan_each`] and [`Storage::scan_all`] read per page.
pub const SCAN_PAGE: usize = 512;

/// Persistent, versioned key-value records with atomic compare-and-swap transactions.
///
/// Keys are UTF-8 strings, ordered by their bytes. Implementations are shared between threads
/// (and frontends) and must make [`commit`](Storage::commit) atomic with respect to every other
/// commit and read of the same store. Every read is bounded: [`get`](Storage::get) and
/// [`last`](Storage::last) return one record, [`scan`](Storage::scan) at most `limit`.
pub trait Storage: Send + Sync {
    /// The record stored under `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Record>, StoreError>;

    /// One page of a key family: at most `limit` records whose key starts with `prefix` and
    /// is strictly greater than `after` (`None`: from the family's first key), in key order,
    /// from one consistent snapshot. `""` is the family of every key.
    ///
    /// To walk a family, pass the last key of each page as `after` of the next; a page shorter
    /// than `limit` is the last. `after` need not be a stored key, nor start with `prefix`: a
    /// key before the family starts the page at the family's first key, one after it gives an
    /// empty page. `limit` 0 gives an empty page.
    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, StoreError>;

    /// The record with the greatest key that starts with `prefix` (`None`: no such key),
    /// without reading the others: the newest of a family whose keys sort by age.
    fn last(&self, prefix: &str) -> Result<Option<(String, Record)>, StoreError>;

    /// Applies all writes atomically, or none (every precondition is checked before anything
    /// is written), and returns the version each write gave its key, aligned with `writes`.
    ///
    /// Fails with [`StoreError::InvalidWrite`] for an empty key, a key written twice, or
    /// [`Expect::Version(0)`](Expect::Version); with [`StoreError::Conflict`] for the first
    /// write (in order) whose precondition does not hold. An empty transaction succeeds,
    /// changes nothing and returns no versions.
    fn commit(&self, writes: &[Write]) -> Result<Committed, StoreError>;

    /// Creates every key of `records` with that record's value *and version*, atomically (all
    /// or none): what [`copy`] writes, so that the target holds the source's records exactly.
    ///
    /// Every key must be absent: the first one (in order) that exists fails the whole import
    /// with [`StoreError::Conflict`] (expected absent). Fails with
    /// [`StoreError::InvalidWrite`] for an empty key, a key given twice, or version 0. An empty
    /// import succeeds and changes nothing.
    ///
    /// The provided method can only create keys at version 1 (through
    /// [`commit`](Storage::commit)) and refuses a record at a later version with
    /// [`StoreError::InvalidWrite`]; the crate's backends import any version.
    fn import(&self, records: &[(String, Record)]) -> Result<(), StoreError> {
        let writes = import_writes(records)?;
        if let Some((w, v)) = writes.iter().find(|(_, v)| *v != 1) {
            return Err(invalid(
                &w.key,
                &format!("this store can only create a record at version 1, not {v}"),
            ));
        }
        let creates: Vec<Write> = writes.into_iter().map(|(w, _)| w).collect();
        self.commit(&creates).map(|_| ())
    }

    /// Calls `f` with every record whose key starts with `prefix`, in key order, until `f`
    /// returns [`ControlFlow::Break`], holding one page of records at a time.
    ///
    /// The provided method reads pages of [`SCAN_PAGE`] through [`scan`](Storage::scan): each
    /// page is a consistent snapshot, the walk as a whole sees commits made while it runs. A
    /// backend that can hold one snapshot for a whole walk (redb's read transaction) overrides
    /// it, so that a dump is one state of the store.
    fn scan_each(
        &self,
        prefix: &str,
        f: &mut dyn FnMut(String, Record) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let mut after: Option<String> = None;
        loop {
            let page = self.scan(prefix, after.as_deref(), SCAN_PAGE)?;
            let full = page.len() == SCAN_PAGE;
            for (key, rec) in page {
                after = Some(key.clone());
                if f(key, rec).is_break() {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Every record whose key starts with `prefix`, in key order, collected through
    /// [`scan_each`](Storage::scan_each). Its memory grows with the family: it is for callers
    /// whose answer needs every record of it (a small family such as the servers, a
    /// verification of the whole audit log, tests); others page with [`scan`](Storage::scan).
    fn scan_all(&self, prefix: &str) -> Result<Vec<(String, Record)>, StoreError> {
        let mut out = Vec::new();
        self.scan_each(prefix, &mut |key, rec| {
            out.push((key, rec));
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }
}

macro_rules! forward_storage {
    ($($ty:ty),*) => {$(
        impl<T: Storage + ?Sized> Storage for $ty {
            fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
                (**self).get(key)
            }
            fn scan(
                &self,
                prefix: &str,
                after: Option<&str>,
                limit: usize,
            ) -> Result<Vec<(String, Record)>, StoreError> {
                (**self).scan(prefix, after, limit)
            }
            fn last(&self, prefix: &str) -> Result<Option<(String, Record)>, StoreError> {
                (**self).last(prefix)
            }
            fn commit(&self, writes: &[Write]) -> Result<Committed, StoreError> {
                (**self).commit(writes)
            }
            fn import(&self, records: &[(String, Record)]) -> Result<(), StoreError> {
                (**self).import(records)
            }
            fn scan_each(
                &self,
                prefix: &str,
                f: &mut dyn FnMut(String, Record) -> ControlFlow<()>,
            ) -> Result<(), StoreError> {
                (**self).scan_each(prefix, f)
            }
            fn scan_all(&self, prefix: &str) -> Result<Vec<(String, Record)>, StoreError> {
                (**self).scan_all(prefix)
            }
        }
    )*};
}

forward_storage!(Arc<T>, &T, Box<T>);

/// The key range of a page: keys starting with `prefix`, strictly after `after`. `None` when
/// the page is empty whatever is stored (`after` at or past the family's end). Shared by the
/// backends so they agree on every edge.
pub(crate) fn page_bounds<'a>(
    prefix: &'a str,
    after: Option<&'a str>,
    end: Option<&'a str>,
) -> Option<(Bound<&'a str>, Bound<&'a str>)> {
    let start = match after {
        Some(a) if a >= prefix => Bound::Excluded(a),
        _ => Bound::Included(prefix),
    };
    if let (Bound::Excluded(a), Some(end)) = (start, end)
        && a >= end
    {
        return None;
    }
    Some((start, end.map_or(Bound::Unbounded, Bound::Excluded)))
}

/// The least string greater than every string that starts with `prefix` (`None` for `""`,
/// whose family is every key, and for a prefix of only U+10FFFF). UTF-8's byte order is code
/// point order, so this is the prefix with its last character incremented; a last character
/// that has no successor is dropped and the one before it incremented.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            // The surrogates are not characters: U+D7FF is followed by U+E000.
            '\u{d7ff}' => Some('\u{e000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Checks what can be checked without reading the store: no empty key, no key twice, no
/// expected version 0. Shared by every backend so they refuse the same transactions.
pub(crate) fn validate(writes: &[Write]) -> Result<(), StoreError> {
    let mut seen = std::collections::BTreeSet::new();
    for w in writes {
        if w.key.is_empty() {
            return Err(invalid(&w.key, "the key is empty"));
        }
        if w.expect == Expect::Version(0) {
            return Err(invalid(
                &w.key,
                "expected version 0, but versions start at 1",
            ));
        }
        if !seen.insert(w.key.as_str()) {
            return Err(invalid(
                &w.key,
                "the key is written twice in one transaction",
            ));
        }
    }
    Ok(())
}

/// An import as creates, each with the version it must get: checked as [`validate`] checks a
/// commit (no empty key, no key twice, no version 0). Shared by every backend.
pub(crate) fn import_writes(records: &[(String, Record)]) -> Result<Vec<(Write, u64)>, StoreError> {
    let writes: Vec<Write> = records
        .iter()
        .map(|(key, rec)| Write::create(key.clone(), rec.value.clone()))
        .collect();
    validate(&writes)?;
    if let Some((key, _)) = records.iter().find(|(_, rec)| rec.version == 0) {
        return Err(invalid(key, "version 0, but versions start at 1"));
    }
    Ok(writes
        .into_iter()
        .zip(records.iter().map(|(_, rec)| rec.version))
        .collect())
}

fn invalid(key: &str, reason: &str) -> StoreError {
    StoreError::InvalidWrite {
        key: key.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The conflict error if `write`'s precondition does not hold for a key at version `found`.
pub(crate) fn check(write: &Write, found: Option<u64>) -> Result<(), StoreError> {
    if write.expect.matches(found) {
        Ok(())
    } else {
        Err(StoreError::Conflict {
            key: write.key.clone(),
            expected: write.expect,
            found,
        })
    }
}

/// The version a put gives a key now at version `found`.
pub(crate) fn next_version(key: &str, found: Option<u64>) -> Result<u64, StoreError> {
    match found {
        None => Ok(1),
        Some(v) => v.checked_add(1).ok_or_else(|| StoreError::Corrupt {
            key: key.to_owned(),
            reason: "version counter at its maximum".to_owned(),
        }),
    }
}

/// A [`Storage`] wrapper that injects commit failures, for crash and recovery tests.
///
/// Reads pass through. Commits pass through until `fail_after` commits have succeeded; from
/// then on every commit fails with [`StoreError::Backend`] (not retryable, its source an
/// [`InjectedFailure`]) without reaching the inner store, so nothing of it is applied. Commits that the
/// inner store refuses (conflicts, invalid writes) do not count as successful.
///
/// Commits through one `FaultyStore` are serialized, so the count is exact under concurrency.
///
/// Only with the `test-util` feature: a test helper, not for production builds.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    state: Mutex<FaultState>,
}

#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Clone, Copy)]
struct FaultState {
    commits: u64,
    fail_after: Option<u64>,
}

#[cfg(any(test, feature = "test-util"))]
impl<S> FaultyStore<S> {
    /// Wraps `inner`; `fail_after_commits: Some(n)` fails every commit after `n` successful
    /// ones, `None` never fails.
    pub fn new(inner: S, fail_after_commits: Option<u64>) -> Self {
        FaultyStore {
            inner,
            state: Mutex::new(FaultState {
                commits: 0,
                fail_after: fail_after_commits,
            }),
        }
    }

    /// How many commits have succeeded through this wrapper.
    pub fn commits(&self) -> u64 {
        self.state().commits
    }

    /// Changes the failure point: `Some(n)` fails every commit once `n` commits have succeeded
    /// in total (immediately, if that many already have), `None` stops failing.
    pub fn set_fail_after(&self, fail_after_commits: Option<u64>) {
        self.lock().fail_after = fail_after_commits;
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner store.
    pub fn into_inner(self) -> S {
        self.inner
    }

    fn state(&self) -> FaultState {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        // The state is two plain integers, always consistent: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The failure a [`FaultyStore`] injects, as the [`source`](std::error::Error::source) of its
/// [`StoreError::Backend`].
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("injected failure after {commits} commits")]
pub struct InjectedFailure {
    /// How many commits had succeeded when this one was refused.
    pub commits: u64,
}

#[cfg(any(test, feature = "test-util"))]
impl<S: Storage> Storage for FaultyStore<S> {
    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.inner.get(key)
    }

    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        self.inner.scan(prefix, after, limit)
    }

    fn last(&self, prefix: &str) -> Result<Option<(String, Record)>, StoreError> {
        self.inner.last(prefix)
    }

    fn scan_each(
        &self,
        prefix: &str,
        f: &mut dyn FnMut(String, Record) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.inner.scan_each(prefix, f)
    }

    fn commit(&self, writes: &[Write]) -> Result<Committed, StoreError> {
        let mut state = self.lock();
        if let Some(n) = state.fail_after
            && state.commits >= n
        {
            // Not retryable: the crash tests stand for a store that is gone, not one that is
            // momentarily busy.
            return Err(StoreError::backend(
                "injected commit failure",
                InjectedFailure { commits: n },
            ));
        }
        let committed = self.inner.commit(writes)?;
        state.commits += 1;
        Ok(committed)
    }

    /// Counts, and fails, as a commit.
    fn import(&self, records: &[(String, Record)]) -> Result<(), StoreError> {
        let mut state = self.lock();
        if let Some(n) = state.fail_after
            && state.commits >= n
        {
            return Err(StoreError::backend(
                "injected import failure",
                InjectedFailure { commits: n },
            ));
        }
        self.inner.import(records)?;
        state.commits += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_refuses_empty_duplicate_and_version_zero() {
        let dup = [Write::create("a", *b"1"), Write::delete("a", Expect::Any)];
        assert!(matches!(validate(&dup), Err(StoreError::InvalidWrite { key, .. }) if key == "a"));
        assert!(matches!(
            validate(&[Write::create("", *b"1")]),
            Err(StoreError::InvalidWrite { .. })
        ));
        assert!(matches!(
            validate(&[Write::put("k", Expect::Version(0), *b"1")]),
            Err(StoreError::InvalidWrite { .. })
        ));
        assert!(validate(&[]).is_ok());
        assert!(validate(&[Write::create("a", *b""), Write::create("b", *b"")]).is_ok());
    }

    #[test]
    fn expect_matches() {
        assert!(Expect::Absent.matches(None));
        assert!(!Expect::Absent.matches(Some(1)));
        assert!(Expect::Version(2).matches(Some(2)));
        assert!(!Expect::Version(2).matches(Some(3)));
        assert!(!Expect::Version(2).matches(None));
        assert!(Expect::Any.matches(None));
        assert!(Expect::Any.matches(Some(7)));
    }

    #[test]
    fn next_version_overflow_is_an_error() {
        assert_eq!(next_version("k", None).ok(), Some(1));
        assert_eq!(next_version("k", Some(4)).ok(), Some(5));
        assert!(matches!(
            next_version("k", Some(u64::MAX)),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn conflict_message_says_reload_and_retry() {
        let err = StoreError::Conflict {
            key: "serial/ca/01".to_owned(),
            expected: Expect::Absent,
            found: Some(3),
        };
        let text = err.to_string();
        assert!(text.contains("serial/ca/01"), "{text}");
        assert!(text.contains("expected absent, found version 3"), "{text}");
        assert!(text.contains("reload and retry"), "{text}");
    }

    #[test]
    fn faulty_store_fails_after_n_commits() -> Result<(), StoreError> {
        let store = FaultyStore::new(MemoryStore::new(), Some(2));
        store.commit(&[Write::create("a", *b"1")])?;
        // A refused commit does not count.
        assert!(matches!(
            store.commit(&[Write::create("a", *b"x")]),
            Err(StoreError::Conflict { .. })
        ));
        store.commit(&[Write::create("b", *b"2")])?;
        assert_eq!(store.commits(), 2);
        let err = store.commit(&[Write::create("c", *b"3")]);
        match err {
            Err(e @ StoreError::Backend { .. }) => {
                assert!(!e.is_retryable());
                let source =
                    std::error::Error::source(&e).and_then(|s| s.downcast_ref::<InjectedFailure>());
                assert_eq!(source, Some(&InjectedFailure { commits: 2 }));
                assert!(
                    e.to_string().contains("injected failure after 2 commits"),
                    "{e}"
                );
            }
            other => panic!("expected an injected failure, got {other:?}"),
        }
        assert_eq!(store.get("c")?, None);
        assert_eq!(store.scan_all("")?.len(), 2);
        store.set_fail_after(None);
        store.commit(&[Write::create("c", *b"3")])?;
        assert_eq!(store.commits(), 3);
        store.set_fail_after(Some(0));
        assert!(matches!(store.commit(&[]), Err(StoreError::Backend { .. })));
        assert_eq!(store.into_inner().scan_all("")?.len(), 3);
        Ok(())
    }

    #[test]
    fn storage_is_object_safe_and_forwarded() -> Result<(), StoreError> {
        let shared: Arc<dyn Storage> = Arc::new(MemoryStore::new());
        shared.commit(&[Write::create("k", *b"v")])?;
        let by_ref: &dyn Storage = &*shared;
        assert_eq!(by_ref.get("k")?.map(|r| r.version), Some(1));
        let boxed: Box<dyn Storage> = Box::new(Arc::clone(&shared));
        assert_eq!(boxed.scan("", None, 5)?.len(), 1);
        assert_eq!(boxed.last("")?.map(|(k, _)| k).as_deref(), Some("k"));
        Ok(())
    }

    #[test]
    fn open_chooses_the_backend_by_name() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::backend("temp dir", e))?;
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        assert!(matches!(
            open(&path("none.db")),
            Err(StoreError::NotFound { .. })
        ));
        RedbStore::create(path("zone.db"))?.close()?;
        open(&path("zone.db"))?.commit(&[Write::create("k", *b"v")])?;
        // A URL is a database: here one where nothing listens, named without its password.
        let err = open("postgres://zone:pw-x@127.0.0.1:1/zone").err();
        let text = format!("{err:?}");
        assert!(!text.contains("pw-x"), "{text}");
        assert!(err.is_some_and(|e| matches!(e, StoreError::Backend { .. })));
        Ok(())
    }

    #[test]
    fn prefix_end_is_the_least_key_past_the_family() {
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a").as_deref(), Some("b"));
        assert_eq!(prefix_end("op/history/").as_deref(), Some("op/history0"));
        assert_eq!(prefix_end("é").as_deref(), Some("ê"));
        assert_eq!(prefix_end("a\u{d7ff}").as_deref(), Some("a\u{e000}"));
        assert_eq!(prefix_end("a\u{10ffff}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10ffff}\u{10ffff}"), None);
        // Every key of the family sorts before it, and the next family does not.
        for p in ["a", "é", "a\u{10ffff}", "x\u{7f}"] {
            let end = prefix_end(p).unwrap();
            for k in [
                p.to_string(),
                format!("{p}\u{10ffff}\u{10ffff}"),
                format!("{p}\0"),
            ] {
                assert!(k.as_str() < end.as_str(), "{k:?} !< {end:?}");
            }
            assert!(!end.starts_with(p));
        }
    }

    #[test]
    fn page_bounds_edges() {
        use Bound::{Excluded, Included, Unbounded};
        assert_eq!(
            page_bounds("b/", None, Some("b0")),
            Some((Included("b/"), Excluded("b0")))
        );
        // `after` before the family: from its first key.
        assert_eq!(
            page_bounds("b/", Some("a"), Some("b0")),
            Some((Included("b/"), Excluded("b0")))
        );
        assert_eq!(
            page_bounds("b/", Some("b/x"), Some("b0")),
            Some((Excluded("b/x"), Excluded("b0")))
        );
        // At or past the family's end: nothing.
        assert_eq!(page_bounds("b/", Some("b0"), Some("b0")), None);
        assert_eq!(page_bounds("b/", Some("c"), Some("b0")), None);
        assert_eq!(
            page_bounds("", Some("z"), None),
            Some((Excluded("z"), Unbounded))
        );
    }
}
