//! Issue 10 item 2: commands read what their answer needs, through bounded store reads. A
//! store that records every read shows that a page of devices decodes only the page's device
//! records and that no read returns more than a page, and that the last operation is one
//! `last` read, not a scan of the history.
#![allow(clippy::unwrap_used)]

#[path = "common/sim.rs"]
mod sim;

use std::sync::Mutex;

use sim::{Sim, Spec, add_devices, init, remint_ca};
use zonepki::store::{Committed, MemoryStore, Record, SCAN_PAGE, Storage, StoreError, Write};
use zonepki::transport::LoopbackTransport;
use zonepki::view::DeviceQuery;

/// One read of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Read {
    Get(String),
    Scan {
        prefix: String,
        limit: usize,
        returned: usize,
    },
    Last(String),
    Commit,
}

/// A memory store that records its reads. `scan_each` and `scan_all` are the provided ones,
/// so walks show up as the pages they read.
#[derive(Default)]
struct Recording {
    inner: MemoryStore,
    reads: Mutex<Vec<Read>>,
}

impl Recording {
    fn take(&self) -> Vec<Read> {
        std::mem::take(&mut *self.reads.lock().unwrap())
    }
    fn note(&self, r: Read) {
        self.reads.lock().unwrap().push(r);
    }
}

impl Storage for Recording {
    fn get(&self, key: &str) -> Result<Option<Record>, StoreError> {
        self.note(Read::Get(key.to_owned()));
        self.inner.get(key)
    }
    fn scan(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Record)>, StoreError> {
        let page = self.inner.scan(prefix, after, limit)?;
        self.note(Read::Scan {
            prefix: prefix.to_owned(),
            limit,
            returned: page.len(),
        });
        Ok(page)
    }
    fn last(&self, prefix: &str) -> Result<Option<(String, Record)>, StoreError> {
        self.note(Read::Last(prefix.to_owned()));
        self.inner.last(prefix)
    }
    fn commit(&self, writes: &[Write]) -> Result<Committed, StoreError> {
        self.note(Read::Commit);
        self.inner.commit(writes)
    }
}

const DEVICES: usize = 1200;

/// A zone of one server and `DEVICES` devices, dev-1..dev-1200, none refreshed.
fn zone() -> Sim<Recording> {
    let spec = Spec::new(DEVICES);
    let sim = Sim::empty(
        Recording::default(),
        LoopbackTransport::in_memory(),
        spec.clone(),
    );
    init(&sim.svc, &spec).unwrap();
    add_devices(&sim.svc, &spec).unwrap();
    sim
}

fn device_gets(reads: &[Read]) -> Vec<String> {
    reads
        .iter()
        .filter_map(|r| match r {
            Read::Get(k) if k.starts_with("device/") => Some(k.clone()),
            _ => None,
        })
        .collect()
}

fn assert_pages_bounded(reads: &[Read]) {
    for r in reads {
        if let Read::Scan {
            limit, returned, ..
        } = r
        {
            assert!(
                *limit <= SCAN_PAGE && *returned <= SCAN_PAGE,
                "an unbounded read: {r:?}"
            );
        }
    }
}

#[test]
fn a_page_of_devices_decodes_only_its_devices_and_reads_in_pages() {
    let sim = zone();
    let store = sim.svc.store();
    store.take();
    let mut query = DeviceQuery::all();
    query.limit = Some(5);
    query.after = Some("dev-9".into());
    let page = sim.svc.device_list(&query).unwrap();
    let names: Vec<&str> = page.devices.iter().map(|d| d.name.as_str()).collect();
    // Natural order: dev-10 follows dev-9, although "dev-10" < "dev-9" as bytes.
    assert_eq!(names, ["dev-10", "dev-11", "dev-12", "dev-13", "dev-14"]);
    assert!(page.more);
    let reads = store.take();
    assert_pages_bounded(&reads);
    assert_eq!(
        device_gets(&reads),
        names
            .iter()
            .map(|n| format!("device/{n}"))
            .collect::<Vec<_>>(),
        "only the page's device records are read one by one"
    );
    // The names were walked in pages: more than one page for 1,200 devices.
    let device_pages = reads
        .iter()
        .filter(|r| matches!(r, Read::Scan { prefix, .. } if prefix == "device/"))
        .count();
    assert_eq!(device_pages, DEVICES.div_ceil(SCAN_PAGE));

    // The last page, with a status filter (no operation runs: every device is `none`).
    query.after = Some(format!("dev-{}", DEVICES - 2));
    query.status = Some(zonepki::view::UpdateStatus::None);
    let page = sim.svc.device_list(&query).unwrap();
    let names: Vec<&str> = page.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [format!("dev-{}", DEVICES - 1), format!("dev-{DEVICES}")]
    );
    assert!(!page.more);
    let reads = store.take();
    assert_pages_bounded(&reads);
    assert_eq!(device_gets(&reads).len(), 2);

    // A status nobody has: an empty page, and no device record read.
    query.after = None;
    query.status = Some(zonepki::view::UpdateStatus::Applied);
    let page = sim.svc.device_list(&query).unwrap();
    assert!(page.devices.is_empty() && !page.more);
    assert!(device_gets(&store.take()).is_empty());

    // Limit 0: nothing, but says whether devices follow.
    let mut query = DeviceQuery::all();
    query.limit = Some(0);
    let page = sim.svc.device_list(&query).unwrap();
    assert!(page.devices.is_empty() && page.more);
    // Every device, when that is the question: the same order as sorting them all.
    let all = sim.svc.devices().unwrap();
    assert_eq!(all.len(), DEVICES);
    assert_eq!(all[0].name, "dev-1");
    assert_eq!(all[DEVICES - 1].name, format!("dev-{DEVICES}"));
    assert_pages_bounded(&store.take());
}

#[test]
fn the_last_operation_is_one_read_not_a_scan_of_the_history() {
    let sim: Sim<Recording> = Sim::build(
        Recording::default(),
        LoopbackTransport::in_memory(),
        Spec::new(2),
    );
    sim.svc
        .start_remint_ca(remint_ca("2027-03-01T00:00:00Z"))
        .unwrap();
    sim.svc.cancel().unwrap();
    let store = sim.svc.store();
    store.take();
    let op = sim.svc.op().unwrap().unwrap();
    assert_eq!(op.id, 1);
    let reads = store.take();
    assert!(
        reads.contains(&Read::Last("op/history/".into())),
        "{reads:?}"
    );
    assert!(
        !reads.iter().any(|r| matches!(r, Read::Scan { .. })),
        "the history was scanned: {reads:?}"
    );
    // The next operation's id comes from the same one read.
    sim.svc
        .start_remint_ca(remint_ca("2027-03-01T00:00:00Z"))
        .unwrap();
    assert_eq!(sim.svc.op().unwrap().unwrap().id, 2);
}

/// The reads before the first commit of a command: what it decided from.
fn decided_from(reads: &[Read]) -> &[Read] {
    let end = reads
        .iter()
        .position(|r| *r == Read::Commit)
        .expect("the command commits");
    &reads[..end]
}

#[test]
fn ignore_and_redeploy_of_named_members_read_only_those_members() {
    let sim = zone();
    sim.svc
        .start_remint_ca(remint_ca("2027-03-01T00:00:00Z"))
        .unwrap();
    let store = sim.svc.store();
    store.take();
    sim.svc
        .ignore(&["dev-7".into(), "ps1.zone.example".into()])
        .unwrap();
    let reads = store.take();
    let before = decided_from(&reads);
    assert!(
        !before.iter().any(|r| matches!(r, Read::Scan { .. })),
        "ignore read a whole family before committing: {before:?}"
    );
    assert!(
        before.contains(&Read::Get("device/dev-7".into())),
        "{before:?}"
    );
    assert!(
        before.contains(&Read::Get("server/ps1.zone.example".into())),
        "{before:?}"
    );
    // The ignore took: the named members are out of the update.
    for name in ["dev-7", "ps1.zone.example"] {
        let rec = store.get(&format!("op/000001/m/{name}")).unwrap().unwrap();
        let u: serde_json::Value = serde_json::from_slice(&rec.value).unwrap();
        assert_eq!(u["status"], "ignored", "{name}");
    }
    // A name that is no member is refused without reading the others.
    store.take();
    assert!(sim.svc.ignore(&["nobody".into()]).is_err());
    assert!(
        !store
            .take()
            .iter()
            .any(|r| matches!(r, Read::Scan { prefix, .. } if prefix == "device/")),
    );
    // Redeploying a named member that has not failed is refused without reading the
    // operation's member records as a family.
    store.take();
    assert!(sim.svc.redeploy(&["dev-8".into()]).is_err());
    let reads = store.take();
    assert!(
        !reads
            .iter()
            .any(|r| matches!(r, Read::Scan { prefix, .. } if prefix.starts_with("op/"))),
        "{reads:?}"
    );
}

#[test]
fn a_status_filter_reads_the_operations_records_in_pages_not_one_per_device() {
    // Issue 13 item 5: the console's device table filtered by status over 100,000 devices.
    let sim = zone();
    let svc = &sim.svc;
    svc.start_remint_ca(remint_ca("2027-03-01T00:00:00Z"))
        .unwrap();
    svc.assign_now().unwrap();
    let ignored: Vec<String> = (1..=300).map(|i| format!("dev-{}", i * 4)).collect();
    svc.ignore(&ignored).unwrap();
    let store = svc.store();
    store.take();
    let mut query = DeviceQuery::all();
    query.limit = Some(5);
    query.status = Some(zonepki::view::UpdateStatus::Ignored);
    let page = svc.device_list(&query).unwrap();
    let names: Vec<&str> = page.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["dev-4", "dev-8", "dev-12", "dev-16", "dev-20"]);
    assert!(page.more);
    let reads = store.take();
    assert_pages_bounded(&reads);
    let member_gets = reads
        .iter()
        .filter(|r| matches!(r, Read::Get(k) if k.starts_with("op/") && k.contains("/m/")))
        .count();
    assert_eq!(
        member_gets, 0,
        "a status filter reads no member's update record one by one"
    );
    let member_pages = reads
        .iter()
        .filter(|r| matches!(r, Read::Scan { prefix, .. } if prefix.starts_with("op/") && prefix.ends_with("/m/")))
        .count();
    assert_eq!(member_pages, ignored.len().div_ceil(SCAN_PAGE).max(1));

    // The same statuses as op show's, for every status a device has here.
    let view = svc.op_show().unwrap();
    for status in [
        zonepki::view::UpdateStatus::Ignored,
        zonepki::view::UpdateStatus::Assigned,
    ] {
        let mut q = DeviceQuery::all();
        q.status = Some(status);
        let mut got: Vec<String> = svc
            .device_list(&q)
            .unwrap()
            .devices
            .into_iter()
            .map(|d| d.name)
            .collect();
        let mut expected: Vec<String> = view
            .devices
            .iter()
            .filter(|d| d.status == status && d.name.starts_with("dev-"))
            .map(|d| d.name.clone())
            .collect();
        got.sort();
        expected.sort();
        assert_eq!(
            got.len(),
            if status == zonepki::view::UpdateStatus::Ignored {
                300
            } else {
                DEVICES - 300
            }
        );
        assert_eq!(got, expected, "{status:?}");
    }
}
