//! [`RedbStore`]: the embedded default [`Storage`], one redb database file.
//!
//! All records live in one redb table, `records`, keyed by the record key (`&str`). Each value
//! is the record's version as 8 big-endian bytes followed by the payload. A
//! [`commit`](Storage::commit) is one redb write transaction: it reads the current versions of
//! every key it writes, checks every precondition, and only then applies the writes and
//! commits; on a failed precondition it aborts, so the file does not change. redb serializes
//! write transactions and gives reads a consistent snapshot, and each commit is durable (fsync)
//! before [`commit`](Storage::commit) returns.
//!
//! # One handle per file
//!
//! redb locks the file while a [`Database`] has it open. A second [`RedbStore::open`] of the
//! same file, from this process or another one, fails with [`StoreError::Busy`] until the
//! first handle is dropped or [closed](RedbStore::close). Frontends that share a store in one
//! process therefore share one `RedbStore`, for example through an `Arc<RedbStore>` (which is
//! itself a [`Storage`]).
//!
//! # Read-only handles
//!
//! [`RedbStore::open_read_only`] opens the file for reading only: it works on a file without
//! write permission, never changes the file (not even its modification time), and several
//! read-only handles may be open at once. A writable handle and a read-only one exclude each
//! other ([`StoreError::Busy`]), so a reader never sees a half-written file. A commit through a
//! read-only handle fails with [`StoreError::ReadOnly`].

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};

use ::redb::{
    Builder, Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    ReadableTable, StorageError, TableDefinition, TableError, TransactionError, WriteTransaction,
};

use super::{
    Committed, Expect, Record, Storage, StoreError, Write, check, import_writes, next_version,
    page_bounds, prefix_end, validate,
};

/// The one table holding every record.
const RECORDS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("records");

/// Length of the version header in front of every stored value.
const HEADER: usize = 8;

/// A [`Storage`] in a redb database file.
///
/// See the [module documentation](self) for the file layout and for why a file can be open
/// through only one `RedbStore` at a time.
pub struct RedbStore {
    db: Db,
    path: PathBuf,
}

/// The open database: writable, or read-only ([`RedbStore::open_read_only`]).
enum Db {
    Write(Database),
    Read(ReadOnlyDatabase),
}

impl Db {
    fn begin_read(&self) -> Result<ReadTransaction, TransactionError> {
        match self {
            Db::Write(db) => db.begin_read(),
            Db::Read(db) => db.begin_read(),
        }
    }
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Creates a new, empty store file at `path`.
    ///
    /// Refuses a path that already exists (any file, even an empty one) with
    /// [`StoreError::AlreadyExists`]. If initializing the database fails, the file just created
    /// is removed again.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        // `create_new` claims the path atomically, so two concurrent creates cannot both win.
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StoreError::AlreadyExists { path });
            }
            Err(e) => return Err(io_error(&path, "cannot create", e)),
        }
        match Self::initialize(&path) {
            Ok(db) => Ok(RedbStore {
                db: Db::Write(db),
                path,
            }),
            Err(e) => {
                // Best effort: the file is ours and holds nothing yet.
                let _ = fs::remove_file(&path);
                Err(e)
            }
        }
    }

    fn initialize(path: &Path) -> Result<Database, StoreError> {
        let db = Builder::new()
            .create(path)
            .map_err(|e| database_error(path, "cannot create", e))?;
        let txn = db
            .begin_write()
            .map_err(|e| backend(path, "cannot write", e))?;
        txn.open_table(RECORDS)
            .map_err(|e| backend(path, "cannot create table of", e))?;
        txn.commit()
            .map_err(|e| backend(path, "cannot commit to", e))?;
        Ok(db)
    }

    /// Opens an existing store file. Never creates one.
    ///
    /// Fails with [`StoreError::NotFound`] if `path` does not exist, with [`StoreError::Busy`]
    /// if it is already open (see the [module documentation](self)), with
    /// [`StoreError::Damaged`] if it is not a redb database or is corrupt, and with
    /// [`StoreError::Backend`] for other I/O errors (such as a file without write permission).
    /// The whole file is checksummed on open, so a file damaged outside redb is reported as an
    /// error rather than trusted.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        check_exists(&path)?;
        let db = Builder::new()
            .set_check_integrity_on_open(true)
            .open(&path)
            .map_err(|e| database_error(&path, "cannot open", e))?;
        Ok(RedbStore {
            db: Db::Write(db),
            path,
        })
    }

    /// Opens an existing store file for reading only. Never creates or changes one.
    ///
    /// Reads work as through [`open`](Self::open); [`commit`](Storage::commit) fails with
    /// [`StoreError::ReadOnly`]. Needs only read permission, leaves the file's contents and
    /// modification time as they are, and may be open beside other read-only handles. Fails as
    /// [`open`](Self::open) does, and with [`StoreError::Backend`] for a file that was not
    /// closed cleanly (recovering it is a write: open it writable once).
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        check_exists(&path)?;
        let db = Builder::new()
            .open_read_only(&path)
            .map_err(|e| database_error(&path, "cannot open", e))?;
        Ok(RedbStore {
            db: Db::Read(db),
            path,
        })
    }

    /// Whether this handle was opened with [`open_read_only`](Self::open_read_only).
    pub fn is_read_only(&self) -> bool {
        matches!(self.db, Db::Read(_))
    }

    /// The path of the store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the store, reporting an error that dropping it would ignore.
    pub fn close(self) -> Result<(), StoreError> {
        let RedbStore { db, path } = self;
        match db {
            Db::Write(db) => db.close(),
            Db::Read(db) => db.close(),
        }
        .map_err(|e| database_error(&path, "cannot close", e))
    }

    /// Applies `writes` in order inside `txn`, checking each precondition as it goes. The
    /// caller aborts the transaction on an error, so a refused commit writes nothing, and the
    /// error is the one of the first write, in order, that fails (as if every precondition had
    /// been checked first).
    fn apply(
        &self,
        txn: &WriteTransaction,
        writes: &[Write],
    ) -> Result<Vec<Option<u64>>, StoreError> {
        let path = self.path.as_path();
        let mut versions = Vec::with_capacity(writes.len());
        let mut table = txn
            .open_table(RECORDS)
            .map_err(|e| backend(path, "cannot open table of", e))?;
        // One buffer for every value's version header + payload.
        let mut bytes = Vec::new();
        for w in writes {
            // A put expecting "absent" or a version knows its new version before reading:
            // insert, and check the value it replaced (one B-tree walk instead of a get and
            // an insert).
            let known = match (&w.value, w.expect) {
                (Some(value), Expect::Absent) => Some((1, value)),
                (Some(value), Expect::Version(v)) => v.checked_add(1).map(|n| (n, value)),
                _ => None,
            };
            if let Some((version, value)) = known {
                encode_into(&mut bytes, version, value);
                let replaced = table
                    .insert(w.key.as_str(), bytes.as_slice())
                    .map_err(|e| backend(path, "cannot write", e))?;
                let found = match replaced {
                    Some(guard) => Some(decode_version(&w.key, guard.value())?),
                    None => None,
                };
                check(w, found)?;
                versions.push(Some(version));
                continue;
            }
            let found = match table
                .get(w.key.as_str())
                .map_err(|e| backend(path, "cannot read", e))?
            {
                Some(guard) => Some(decode_version(&w.key, guard.value())?),
                None => None,
            };
            check(w, found)?;
            match &w.value {
                Some(value) => {
                    let version = next_version(&w.key, found)?;
                    encode_into(&mut bytes, version, value);
                    table
                        .insert(w.key.as_str(), bytes.as_slice())
                        .map_err(|e| backend(path, "cannot write", e))?;
                    versions.push(Some(version));
                }
                None => {
                    table
                        .remove(w.key.as_str())
                        .map_err(|e| backend(path, "cannot write", e))?;
                    versions.push(None);
                }
            }
        }
        Ok(versions)
    }

    /// A read transaction's table, `None` in a file that has none yet.
    fn read_table(
        &self,
    ) -> Result<Option<::redb::ReadOnlyTable<&'static str, &'static [u8]>>, StoreError> {
        let path = self.path.as_path();
        let txn = self
            .db
            .begin_read()
            .map_err(|e| backend(path, "cannot read", e))?;
        match txn.open_table(RECORDS) {
            Ok(table) => Ok(Some(table)),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(backend(path, "cannot open table of", e)),
        }
    }
}

impl Storage for RedbStore {
    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        let path = self.path.as_path();
        let Some(table) = self.read_table()? else {
            return Ok(None);
        };
        match table
            .get(key)
            .map_err(|e| backend(path, "cannot read", e))?
        {
            Some(guard) => decode(key, guard.value()).map(Some),
            None => Ok(None),
        }
    }

    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        // A range query over the page's keys: the B-tree is entered at the first key after
        // `after` and left after `limit` records, whatever the size of the family.
        let path = self.path.as_path();
        let end = prefix_end(prefix);
        let Some(bounds) = page_bounds(prefix, after, end.as_deref()) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let Some(table) = self.read_table()? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(limit.min(super::SCAN_PAGE));
        for entry in table
            .range::<&str>(bounds)
            .map_err(|e| backend(path, "cannot read", e))?
            .take(limit)
        {
            let (key, value) = entry.map_err(|e| backend(path, "cannot read", e))?;
            let key = key.value();
            out.push((key.to_owned(), decode(key, value.value())?));
        }
        Ok(out)
    }

    fn last(&self, prefix: &str) -> Result<Option<(String, Record)>, StoreError> {
        let path = self.path.as_path();
        let end = prefix_end(prefix);
        let Some(table) = self.read_table()? else {
            return Ok(None);
        };
        let bounds = (
            Bound::Included(prefix),
            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        );
        match table
            .range::<&str>(bounds)
            .map_err(|e| backend(path, "cannot read", e))?
            .next_back()
        {
            Some(entry) => {
                let (key, value) = entry.map_err(|e| backend(path, "cannot read", e))?;
                let key = key.value();
                Ok(Some((key.to_owned(), decode(key, value.value())?)))
            }
            None => Ok(None),
        }
    }

    fn scan_each(
        &self,
        prefix: &str,
        f: &mut dyn FnMut(String, Record) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        // One read transaction: a consistent snapshot, one record in memory at a time.
        let path = self.path.as_path();
        let end = prefix_end(prefix);
        let Some(table) = self.read_table()? else {
            return Ok(());
        };
        let bounds = (
            Bound::Included(prefix),
            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        );
        for entry in table
            .range::<&str>(bounds)
            .map_err(|e| backend(path, "cannot read", e))?
        {
            let (key, value) = entry.map_err(|e| backend(path, "cannot read", e))?;
            let key = key.value();
            let rec = decode(key, value.value())?;
            if f(key.to_owned(), rec).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn commit(&self, writes: &[Write]) -> Result<Committed, StoreError> {
        validate(writes)?;
        if writes.is_empty() {
            return Ok(Committed::default());
        }
        let path = self.path.as_path();
        let Db::Write(db) = &self.db else {
            return Err(StoreError::ReadOnly {
                path: self.path.clone(),
            });
        };
        let txn = db
            .begin_write()
            .map_err(|e| backend(path, "cannot write", e))?;
        match self.apply(&txn, writes) {
            Ok(versions) => {
                txn.commit()
                    .map_err(|e| backend(path, "cannot commit to", e))?;
                Ok(Committed::new(versions))
            }
            Err(e) => {
                // Dropping the transaction would abort it as well; the refusal is what matters.
                let _ = txn.abort();
                Err(e)
            }
        }
    }

    fn import(&self, records: &[(String, Record)]) -> Result<(), StoreError> {
        let writes = import_writes(records)?;
        if writes.is_empty() {
            return Ok(());
        }
        let path = self.path.as_path();
        let Db::Write(db) = &self.db else {
            return Err(StoreError::ReadOnly {
                path: self.path.clone(),
            });
        };
        let txn = db
            .begin_write()
            .map_err(|e| backend(path, "cannot write", e))?;
        let applied = (|| {
            let mut table = txn
                .open_table(RECORDS)
                .map_err(|e| backend(path, "cannot open table of", e))?;
            let mut bytes = Vec::new();
            for (w, version) in &writes {
                let value = w.value.as_deref().unwrap_or_default();
                encode_into(&mut bytes, *version, value);
                let replaced = table
                    .insert(w.key.as_str(), bytes.as_slice())
                    .map_err(|e| backend(path, "cannot write", e))?;
                let found = match replaced {
                    Some(guard) => Some(decode_version(&w.key, guard.value())?),
                    None => None,
                };
                check(w, found)?;
            }
            Ok::<(), StoreError>(())
        })();
        match applied {
            Ok(()) => txn
                .commit()
                .map_err(|e| backend(path, "cannot commit to", e)),
            Err(e) => {
                let _ = txn.abort();
                Err(e)
            }
        }
    }
}

fn encode_into(bytes: &mut Vec<u8>, version: u64, payload: &[u8]) {
    bytes.clear();
    bytes.extend_from_slice(&version.to_be_bytes());
    bytes.extend_from_slice(payload);
}

#[cfg(test)]
fn encode(version: u64, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER + payload.len());
    bytes.extend_from_slice(&version.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

fn decode_version(key: &str, bytes: &[u8]) -> Result<u64, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: key.to_owned(),
        reason,
    };
    let header: [u8; HEADER] = bytes
        .get(..HEADER)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| {
            corrupt(format!(
                "{} bytes, shorter than the version header",
                bytes.len()
            ))
        })?;
    match u64::from_be_bytes(header) {
        0 => Err(corrupt("version 0 (versions start at 1)".to_owned())),
        version => Ok(version),
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<Record, StoreError> {
    let version = decode_version(key, bytes)?;
    Ok(Record {
        version,
        value: bytes[HEADER..].to_vec(),
    })
}

/// A failure of redb, with what the store was doing. Damage redb finds while reading or
/// writing is [`StoreError::Damaged`]; an I/O error that a second attempt may not meet
/// (interrupted, would block, timed out) is a retryable [`StoreError::Backend`]; anything else
/// is a backend failure that a retry meets again.
fn backend(path: &Path, what: &str, e: impl Into<::redb::Error>) -> StoreError {
    let e: ::redb::Error = e.into();
    match e {
        ::redb::Error::Corrupted(_) => StoreError::Damaged {
            path: path.to_owned(),
            source: e.into(),
        },
        ::redb::Error::Io(ref io)
            if matches!(
                io.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            StoreError::backend_retryable(format!("{what} store {}", path.display()), e)
        }
        e => StoreError::backend(format!("{what} store {}", path.display()), e),
    }
}

/// An I/O failure on the store file outside redb (creating it, checking that it exists).
fn io_error(path: &Path, what: &str, e: io::Error) -> StoreError {
    backend(path, what, ::redb::Error::from(e))
}

fn check_exists(path: &Path) -> Result<(), StoreError> {
    match path.try_exists() {
        Ok(true) => Ok(()),
        Ok(false) => Err(StoreError::NotFound {
            path: path.to_owned(),
        }),
        Err(e) => Err(io_error(path, "cannot open", e)),
    }
}

fn database_error(path: &Path, what: &str, e: DatabaseError) -> StoreError {
    match e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            StoreError::Busy {
                path: path.to_owned(),
            }
        }
        DatabaseError::Storage(StorageError::Io(io)) if io.kind() == io::ErrorKind::NotFound => {
            StoreError::NotFound {
                path: path.to_owned(),
            }
        }
        // redb reports a wrong magic number or a short header as invalid data.
        DatabaseError::Storage(StorageError::Io(io))
            if matches!(
                io.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ) =>
        {
            StoreError::Damaged {
                path: path.to_owned(),
                source: io.into(),
            }
        }
        DatabaseError::Storage(StorageError::Corrupted(reason)) => StoreError::Damaged {
            path: path.to_owned(),
            source: reason.into(),
        },
        DatabaseError::UpgradeRequired(v) => StoreError::Damaged {
            path: path.to_owned(),
            source: format!("redb file format {v}, not the one this build reads").into(),
        },
        DatabaseError::RepairAborted => StoreError::backend(
            format!("{what} store {}", path.display()),
            "it was not closed cleanly and needs a recovery, which only a writable open does",
        ),
        e => backend(path, what, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Expect;

    fn temp() -> Result<tempfile::TempDir, StoreError> {
        tempfile::tempdir().map_err(|e| StoreError::backend("cannot make a directory", e))
    }

    #[test]
    fn value_layout_is_version_then_payload() -> Result<(), StoreError> {
        assert_eq!(encode(258, b"xy"), [0, 0, 0, 0, 0, 0, 1, 2, b'x', b'y']);
        assert_eq!(
            decode("k", &encode(7, b"abc"))?,
            Record {
                version: 7,
                value: b"abc".to_vec()
            }
        );
        assert_eq!(
            decode("k", &encode(1, b""))?,
            Record {
                version: 1,
                value: Vec::new()
            }
        );
        assert!(matches!(
            decode("k", &[0, 1, 2]),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            decode("k", &[0; 8]),
            Err(StoreError::Corrupt { .. })
        ));
        Ok(())
    }

    #[test]
    fn truncated_record_is_reported_corrupt() -> Result<(), StoreError> {
        let dir = temp()?;
        let store = RedbStore::create(dir.path().join("s.redb"))?;
        // Write a malformed value behind the store's back.
        let Db::Write(db) = &store.db else {
            panic!("created writable")
        };
        let txn = db
            .begin_write()
            .map_err(|e| backend(store.path(), "w", e))?;
        {
            let mut table = txn
                .open_table(RECORDS)
                .map_err(|e| backend(store.path(), "t", e))?;
            table
                .insert("bad", &[1u8, 2][..])
                .map_err(|e| backend(store.path(), "i", e))?;
        }
        txn.commit().map_err(|e| backend(store.path(), "c", e))?;
        assert!(matches!(store.get("bad"), Err(StoreError::Corrupt { key, .. }) if key == "bad"));
        assert!(matches!(
            store.scan("", None, 10),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(store.last(""), Err(StoreError::Corrupt { .. })));
        assert!(matches!(
            store.scan_all(""),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            store.commit(&[Write::put("bad", Expect::Any, *b"x")]),
            Err(StoreError::Corrupt { .. })
        ));
        Ok(())
    }

    #[test]
    fn second_open_in_process_is_refused_until_closed() -> Result<(), StoreError> {
        let dir = temp()?;
        let path = dir.path().join("s.redb");
        let store = RedbStore::create(&path)?;
        store.commit(&[Write::create("k", *b"v")])?;
        match RedbStore::open(&path) {
            Err(e @ StoreError::Busy { .. }) => {
                assert!(e.to_string().contains("already open"), "{e}");
                assert!(e.to_string().contains("s.redb"), "{e}");
            }
            other => panic!("expected already-open error, got {other:?}"),
        }
        // A reader is refused beside the writer as well.
        assert!(matches!(
            RedbStore::open_read_only(&path),
            Err(StoreError::Busy { .. })
        ));
        store.close()?;
        let store = RedbStore::open(&path)?;
        assert_eq!(store.get("k")?.map(|r| r.version), Some(1));
        Ok(())
    }

    #[test]
    fn read_only_handle_reads_and_never_writes() -> Result<(), StoreError> {
        let dir = temp()?;
        let path = dir.path().join("s.redb");
        let store = RedbStore::create(&path)?;
        store.commit(&[Write::create("k", *b"v")])?;
        store.close()?;
        let mtime = || fs::metadata(&path).and_then(|m| m.modified()).ok();
        let before = mtime();
        let reader = RedbStore::open_read_only(&path)?;
        assert!(reader.is_read_only());
        // Readers share the file with each other, and exclude a writer.
        let second = RedbStore::open_read_only(&path)?;
        assert!(matches!(
            RedbStore::open(&path),
            Err(StoreError::Busy { .. })
        ));
        assert_eq!(second.get("k")?.map(|r| r.value), Some(b"v".to_vec()));
        assert_eq!(reader.scan("", None, 10)?.len(), 1);
        assert!(matches!(
            reader.commit(&[Write::create("x", *b"1")]),
            Err(StoreError::ReadOnly { .. })
        ));
        reader.close()?;
        second.close()?;
        assert_eq!(before, mtime(), "a read-only handle changed the file");
        let store = RedbStore::open(&path)?;
        assert!(store.get("x")?.is_none());
        Ok(())
    }

    #[test]
    fn damaged_and_missing_files_are_named_as_such() -> Result<(), StoreError> {
        let dir = temp()?;
        let path = dir.path().join("s.redb");
        assert!(matches!(
            RedbStore::open(&path),
            Err(StoreError::NotFound { .. })
        ));
        fs::write(&path, vec![0x5a; 8192]).map_err(|e| io_error(&path, "w", e))?;
        for result in [RedbStore::open(&path), RedbStore::open_read_only(&path)] {
            match result {
                Err(e @ StoreError::Damaged { .. }) => {
                    assert!(e.to_string().contains("damaged"), "{e}")
                }
                other => panic!("expected a damaged store, got {other:?}"),
            }
        }
        Ok(())
    }

    #[test]
    fn debug_shows_path() -> Result<(), StoreError> {
        let dir = temp()?;
        let store = RedbStore::create(dir.path().join("s.redb"))?;
        assert!(format!("{store:?}").contains("s.redb"));
        Ok(())
    }
}
