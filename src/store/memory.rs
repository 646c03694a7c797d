//! [`MemoryStore`]: a [`Storage`] held in memory, for tests and ephemeral use.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{Record, Storage, StoreError, Write, check, next_version, validate};

/// A [`Storage`] kept in a `BTreeMap` behind a mutex. Nothing is persisted.
///
/// Every operation holds the lock for its whole duration, so commits are atomic and
/// serialized with respect to each other and to reads.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<String, Record>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Record>> {
        // A commit checks every precondition before it changes the map and the changes cannot
        // fail halfway (short of running out of memory), so a poisoned map is still consistent.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Storage for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        Ok(self.lock().get(key).cloned())
    }

    fn scan(&self, prefix: &str) -> Result<Vec<(String, Record)>, StoreError> {
        let records = self.lock();
        Ok(records
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect())
    }

    fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        validate(writes)?;
        let mut records = self.lock();
        // Check every precondition and compute every new version before changing anything.
        let mut versions = Vec::with_capacity(writes.len());
        for w in writes {
            let found = records.get(&w.key).map(|r| r.version);
            check(w, found)?;
            versions.push(match w.value {
                Some(_) => Some(next_version(&w.key, found)?),
                None => None,
            });
        }
        for (w, version) in writes.iter().zip(versions) {
            match (&w.value, version) {
                (Some(value), Some(version)) => {
                    records.insert(
                        w.key.clone(),
                        Record {
                            version,
                            value: value.clone(),
                        },
                    );
                }
                _ => {
                    records.remove(&w.key);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Expect;

    #[test]
    fn create_update_delete() -> Result<(), StoreError> {
        let store = MemoryStore::new();
        store.commit(&[Write::create("a", *b"1")])?;
        store.commit(&[Write::put("a", Expect::Version(1), *b"2")])?;
        assert_eq!(
            store.get("a")?,
            Some(Record {
                version: 2,
                value: b"2".to_vec()
            })
        );
        store.commit(&[Write::delete("a", Expect::Version(2))])?;
        assert_eq!(store.get("a")?, None);
        Ok(())
    }

    #[test]
    fn conflict_applies_nothing() -> Result<(), StoreError> {
        let store = MemoryStore::new();
        store.commit(&[Write::create("b", *b"1")])?;
        let err = store.commit(&[Write::create("a", *b"x"), Write::create("b", *b"y")]);
        assert!(
            matches!(err, Err(StoreError::Conflict { ref key, found: Some(1), .. })
            if key == "b")
        );
        assert_eq!(store.get("a")?, None);
        assert_eq!(store.get("b")?.map(|r| r.value), Some(b"1".to_vec()));
        Ok(())
    }

    #[test]
    fn scan_is_prefix_and_ordered() -> Result<(), StoreError> {
        let store = MemoryStore::new();
        store.commit(&[
            Write::create("b/2", *b""),
            Write::create("a", *b""),
            Write::create("b/1", *b""),
            Write::create("c", *b""),
        ])?;
        let keys: Vec<String> = store.scan("b/")?.into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b/1", "b/2"]);
        assert_eq!(store.scan("")?.len(), 4);
        Ok(())
    }
}
