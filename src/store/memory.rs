//! [`MemoryStore`]: a [`Storage`] held in memory, for tests and ephemeral use.

use std::collections::BTreeMap;
use std::ops::{Bound, ControlFlow};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{
    Committed, Record, Storage, StoreError, Write, check, import_writes, next_version, page_bounds,
    prefix_end, validate,
};

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
        let records = self.lock();
        Ok(records
            .range::<str, _>(bounds)
            .take(limit)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect())
    }

    fn last(&self, prefix: &str) -> Result<Option<(String, Record)>, StoreError> {
        let end = prefix_end(prefix);
        let bounds = (
            Bound::Included(prefix),
            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        );
        Ok(self
            .lock()
            .range::<str, _>(bounds)
            .next_back()
            .map(|(k, r)| (k.clone(), r.clone())))
    }

    /// One snapshot for the whole walk, as redb's: the family is copied under the lock (the
    /// records are in memory already), then `f` runs without it, so `f` may use the store.
    fn scan_each(
        &self,
        prefix: &str,
        f: &mut dyn FnMut(String, Record) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let end = prefix_end(prefix);
        let bounds = (
            Bound::Included(prefix),
            end.as_deref().map_or(Bound::Unbounded, Bound::Excluded),
        );
        let family: Vec<(String, Record)> = self
            .lock()
            .range::<str, _>(bounds)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        for (key, rec) in family {
            if f(key, rec).is_break() {
                break;
            }
        }
        Ok(())
    }

    fn commit(&self, writes: &[Write]) -> Result<Committed, StoreError> {
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
        for (w, version) in writes.iter().zip(&versions) {
            match (&w.value, version) {
                (Some(value), Some(version)) => {
                    records.insert(
                        w.key.clone(),
                        Record {
                            version: *version,
                            value: value.clone(),
                        },
                    );
                }
                _ => {
                    records.remove(&w.key);
                }
            }
        }
        Ok(Committed::new(versions))
    }

    fn import(&self, records: &[(String, Record)]) -> Result<(), StoreError> {
        let writes = import_writes(records)?;
        let mut stored = self.lock();
        for (w, _) in &writes {
            check(w, stored.get(&w.key).map(|r| r.version))?;
        }
        for (key, rec) in records {
            stored.insert(key.clone(), rec.clone());
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
        let keys: Vec<String> = store.scan_all("b/")?.into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b/1", "b/2"]);
        assert_eq!(store.scan_all("")?.len(), 4);
        let page: Vec<String> = store
            .scan("", Some("a"), 2)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(page, ["b/1", "b/2"]);
        assert_eq!(store.last("b/")?.map(|(k, _)| k).as_deref(), Some("b/2"));
        Ok(())
    }
}
