//! Moving a zone between stores (D3): [`copy`].

use std::ops::ControlFlow;

use super::{Record, SCAN_PAGE, Storage, StoreError};
use crate::audit::HEAD;
use crate::zone::keys::ZONE;

/// What [`copy`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Copied {
    /// How many records the target received (every record of the source).
    pub records: u64,
}

/// Why [`copy`] refused or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// The source holds no zone: nothing to move. Nothing was written.
    #[error("the source store holds no zone: there is nothing to copy")]
    NoZone,
    /// The target already holds a zone; a store holds one zone. Nothing was written.
    #[error(
        "the target store already holds a zone: copy into an empty store (a new file, or a \
         database without zonepki records)"
    )]
    TargetHoldsZone,
    /// The target holds records but no zone: an earlier copy that stopped halfway, or records
    /// of something else. Nothing was written.
    #[error(
        "the target store holds records (the first is {first:?}) but no zone: an incomplete \
         copy, or another use of it; empty it (remove the file, or the database's zonepki \
         tables) and copy again"
    )]
    TargetIncomplete {
        /// The target's first key.
        first: String,
    },
    /// The source changed while it was copied (another server wrote to it): the target holds
    /// its records but no zone, so it is refused as an incomplete copy until copied again.
    #[error(
        "the source store changed while it was copied (its audit log moved on): stop every \
         server and tool that writes to it, empty the target and copy again"
    )]
    SourceChanged,
    /// Reading the source failed.
    #[error("cannot read the source store: {0}")]
    Source(#[source] StoreError),
    /// Writing the target failed. Unless nothing was written yet, the target holds some records
    /// but no zone: see [`TargetIncomplete`](CopyError::TargetIncomplete).
    #[error("cannot write the target store: {0}")]
    Target(#[source] StoreError),
}

/// Copies every record of the zone in `from` into `to`, each with its value and its version
/// ([`Storage::import`]), so that the two stores hold the same records (`store dump` prints
/// the same for both) and the audit log still verifies. Tokens and every other record go as
/// they are; nothing in `from` changes.
///
/// `to` must hold no record at all ([`CopyError::TargetHoldsZone`],
/// [`CopyError::TargetIncomplete`]); it is written in pages of [`SCAN_PAGE`] records, one
/// atomic import each, so memory holds one page whatever the size of the zone. The source is
/// read in one walk ([`Storage::scan_each`]: one snapshot on redb and PostgreSQL).
///
/// # A copy cut short
///
/// The zone record (`zone`) is written last, alone, after the source's audit head was read
/// again and found where the walk saw it. Until then the target holds records but no zone:
/// every command of the service refuses it as a store without a zone, and a second copy
/// refuses it as [`CopyError::TargetIncomplete`]. So a crash, a lost connection or a write to
/// the source in the middle never leaves a target that looks like a zone but lacks records:
/// empty the target and copy again.
pub fn copy(from: &dyn Storage, to: &dyn Storage) -> Result<Copied, CopyError> {
    if from.get(ZONE).map_err(CopyError::Source)?.is_none() {
        return Err(CopyError::NoZone);
    }
    if to.get(ZONE).map_err(CopyError::Target)?.is_some() {
        return Err(CopyError::TargetHoldsZone);
    }
    if let Some((first, _)) = to
        .scan("", None, 1)
        .map_err(CopyError::Target)?
        .into_iter()
        .next()
    {
        return Err(CopyError::TargetIncomplete { first });
    }
    let mut page: Vec<(String, Record)> = Vec::with_capacity(SCAN_PAGE);
    let mut zone = None;
    let mut head = None;
    let mut records = 0u64;
    let mut failed = None;
    from.scan_each("", &mut |key, rec| {
        if key == HEAD {
            head = Some(rec.clone());
        }
        if key == ZONE {
            zone = Some(rec);
            return ControlFlow::Continue(());
        }
        page.push((key, rec));
        if page.len() == SCAN_PAGE {
            if let Err(e) = to.import(&page) {
                failed = Some(e);
                return ControlFlow::Break(());
            }
            records += page.len() as u64;
            page.clear();
        }
        ControlFlow::Continue(())
    })
    .map_err(CopyError::Source)?;
    if let Some(e) = failed {
        return Err(CopyError::Target(e));
    }
    to.import(&page).map_err(CopyError::Target)?;
    records += page.len() as u64;
    let Some(zone) = zone else {
        // Removed after the first look: the source is no zone any more.
        return Err(CopyError::SourceChanged);
    };
    // Every commit of the service appends to the audit log and so moves its head: a head
    // that moved since the walk is a write the target does not have.
    if from.get(HEAD).map_err(CopyError::Source)? != head {
        return Err(CopyError::SourceChanged);
    }
    to.import(&[(ZONE.to_owned(), zone)])
        .map_err(CopyError::Target)?;
    Ok(Copied {
        records: records + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Expect, FaultyStore, MemoryStore, Write};

    fn zone_with(n: usize) -> MemoryStore {
        let store = MemoryStore::new();
        let mut writes: Vec<Write> = (0..n)
            .map(|i| Write::create(format!("device/{i:05}"), format!("d{i}")))
            .collect();
        writes.push(Write::create(ZONE, *b"{}"));
        writes.push(Write::create(HEAD, *b"h"));
        store.commit(&writes).expect("fill");
        // Later versions survive the copy.
        store
            .commit(&[Write::put(HEAD, Expect::Version(1), *b"h2")])
            .expect("bump");
        store
    }

    #[test]
    fn copies_every_record_with_its_version() -> Result<(), CopyError> {
        let from = zone_with(SCAN_PAGE * 2 + 3);
        let to = MemoryStore::new();
        let copied = copy(&from, &to)?;
        assert_eq!(copied.records, (SCAN_PAGE * 2 + 5) as u64);
        assert_eq!(to.scan_all("").ok(), from.scan_all("").ok());
        assert_eq!(to.get(HEAD).ok().flatten().map(|r| r.version), Some(2));
        Ok(())
    }

    #[test]
    fn refuses_a_target_with_records_and_a_source_without_zone() {
        let from = zone_with(3);
        let to = MemoryStore::new();
        copy(&from, &to).expect("first copy");
        assert!(matches!(copy(&from, &to), Err(CopyError::TargetHoldsZone)));
        let other = MemoryStore::new();
        other
            .commit(&[Write::create("stray", *b"x")])
            .expect("write");
        assert!(matches!(
            copy(&from, &other),
            Err(CopyError::TargetIncomplete { ref first }) if first == "stray"
        ));
        assert_eq!(other.scan_all("").map(|r| r.len()).ok(), Some(1));
        assert!(matches!(
            copy(&MemoryStore::new(), &MemoryStore::new()),
            Err(CopyError::NoZone)
        ));
    }

    #[test]
    fn a_copy_cut_short_holds_no_zone_and_is_refused_again() {
        let from = zone_with(SCAN_PAGE + 1);
        // The first page lands, the second import fails.
        let to = FaultyStore::new(MemoryStore::new(), Some(1));
        assert!(matches!(copy(&from, &to), Err(CopyError::Target(_))));
        let partial = to.inner().scan_all("").expect("scan");
        assert_eq!(partial.len(), SCAN_PAGE);
        assert!(partial.iter().all(|(k, _)| k != ZONE));
        to.set_fail_after(None);
        assert!(matches!(
            copy(&from, &to),
            Err(CopyError::TargetIncomplete { .. })
        ));
    }
}
