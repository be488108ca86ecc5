//! The general `Log` API: log-assigned indexes, the metadata slot, truncation
//! and compaction, range reads, readers, and group commit across threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use raft_wal::fault::{CrashMode, FaultFs};
use raft_wal::fs::{Fs, FsFile, Mapping, OpenMode};
use raft_wal::{Error, Log, LogOptions, Metrics, Preallocate};

fn data(i: u64) -> Vec<u8> {
    format!("event-{i}-")
        .repeat((i % 5) as usize + 1)
        .into_bytes()
}

fn small() -> LogOptions {
    LogOptions::default().segment_size_bytes(4096)
}

fn all(log: &Log) -> Vec<(u64, Vec<u8>)> {
    log.iter(..)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.index(), e.to_vec())
        })
        .collect()
}

#[test]
fn the_log_assigns_indexes_and_keeps_them_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small()).unwrap();
    assert_eq!((log.first_index(), log.last_index()), (1, 0));
    for i in 1..=300 {
        assert_eq!(log.append(&data(i)).unwrap(), i);
    }
    let range = log.append_batch((301..=310).map(data)).unwrap();
    assert_eq!(range, 301..311);
    log.sync().unwrap();
    drop(log);
    let log = Log::open(dir.path(), small()).unwrap();
    assert_eq!((log.first_index(), log.last_index()), (1, 310));
    assert_eq!(log.last_synced_index(), 310);
    let got = all(&log);
    assert_eq!(got.len(), 310);
    for (i, d) in got {
        assert_eq!(d, data(i), "entry {i}");
    }
    assert_eq!(log.append(b"next").unwrap(), 311);
}

#[test]
fn ranges_of_every_shape() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small()).unwrap();
    log.append_batch((1..=50).map(data)).unwrap();
    let idx = |it: raft_wal::Iter| it.map(|e| e.unwrap().index()).collect::<Vec<_>>();
    assert_eq!(idx(log.iter(..).unwrap()).len(), 50);
    assert_eq!(idx(log.iter(48..).unwrap()), [48, 49, 50]);
    assert_eq!(idx(log.iter(10..13).unwrap()), [10, 11, 12]);
    assert_eq!(idx(log.iter(10..=12).unwrap()), [10, 11, 12]);
    assert_eq!(idx(log.iter(..3).unwrap()), [1, 2]);
    assert!(
        idx(log.iter(51..).unwrap()).is_empty(),
        "empty range at the end"
    );
    assert!(matches!(
        log.iter(40..52),
        Err(Error::OutOfRange { index: 51, .. })
    ));
    assert!(matches!(
        log.iter(0..3),
        Err(Error::OutOfRange { index: 0, .. })
    ));
    assert!(matches!(log.read(51), Err(Error::OutOfRange { .. })));
    assert_eq!(log.read(7).unwrap().data(), &data(7)[..]);
    assert_eq!(log.read(7).unwrap().into_vec(), data(7));
}

#[test]
fn metadata_is_written_with_the_next_sync_and_survives_compaction() {
    let fs = FaultFs::new();
    let open = || Log::open_with_fs(Arc::new(fs.clone()), "/log", small()).unwrap();
    let log = open();
    log.append_batch((1..=200).map(data)).unwrap();
    log.set_metadata(b"checkpoint=100").unwrap();
    assert_eq!(log.metadata(), b"checkpoint=100");
    log.sync().unwrap();
    log.set_metadata(b"checkpoint=150").unwrap();
    drop(log);
    // Unsynced metadata is lost in a power cut; synced is not.
    fs.crash(CrashMode::LOSE_UNSYNCED);
    let log = open();
    assert_eq!(log.metadata(), b"checkpoint=100");
    assert_eq!(log.recovery_report().metadata, b"checkpoint=100");
    // Compaction deletes the segment the metadata was written in.
    log.append_batch((201..=400).map(data)).unwrap();
    log.sync().unwrap();
    log.compact_before(390).unwrap();
    drop(log);
    let log = open();
    assert_eq!(log.first_index(), 390);
    assert_eq!(log.metadata(), b"checkpoint=100");
    let big = vec![0u8; 64 * 1024 + 1];
    assert!(matches!(
        log.set_metadata(&big),
        Err(Error::MetadataTooLarge { .. })
    ));
}

#[test]
fn truncate_and_compact_share_one_convention_and_are_durable_on_return() {
    let fs = FaultFs::new();
    let open = || Log::open_with_fs(Arc::new(fs.clone()), "/log", small()).unwrap();
    let log = open();
    log.append_batch((1..=100).map(data)).unwrap();
    // Both take the boundary index: truncate_from removes `index..`,
    // compact_before removes `..index`.
    log.truncate_from(91).unwrap();
    log.compact_before(11).unwrap();
    assert_eq!((log.first_index(), log.last_index()), (11, 90));
    assert_eq!(log.last_synced_index(), 90);
    drop(log);
    fs.crash(CrashMode::LOSE_UNSYNCED);
    let log = open();
    assert_eq!((log.first_index(), log.last_index()), (11, 90));
    assert_eq!(log.read(90).unwrap().to_vec(), data(90));

    for (res, op, index) in [
        (log.compact_before(92), "compact_before", 92),
        (log.compact_before(5), "compact_before", 5),
        (log.truncate_from(92), "truncate_from", 92),
        (log.truncate_from(10), "truncate_from", 10),
    ] {
        match res {
            Err(Error::BoundaryOutOfRange {
                op: o,
                index: i,
                first_index: 11,
                last_index: 90,
            }) => assert_eq!((o, i), (op, index)),
            other => panic!("{op}({index}): {other:?}"),
        }
    }
    // The end itself is a valid boundary for both.
    log.truncate_from(91).unwrap();
    log.compact_before(91).unwrap();
    assert_eq!((log.first_index(), log.last_index()), (91, 90));
    assert_eq!(log.append(b"x").unwrap(), 91);
}

#[test]
fn reads_see_unsynced_entries_but_readers_see_only_synced_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small()).unwrap();
    let reader = log.reader();
    log.append_batch((1..=10).map(data)).unwrap();
    log.sync().unwrap();
    log.append_batch((11..=15).map(data)).unwrap();
    assert_eq!(log.last_synced_index(), 10);
    assert_eq!(reader.last_synced_index(), 10);
    assert_eq!(all(&log).len(), 15);
    assert_eq!(reader.iter(..).unwrap().count(), 10);
    assert!(matches!(
        reader.read(11),
        Err(Error::OutOfRange { last_index: 10, .. })
    ));
    log.sync().unwrap();
    assert_eq!(reader.read(15).unwrap().to_vec(), data(15));
    // Truncation lowers what readers see at once.
    log.truncate_from(13).unwrap();
    assert_eq!(reader.last_synced_index(), 12);
    assert_eq!(reader.iter(..).unwrap().count(), 12);
}

#[test]
fn an_iterator_ends_early_when_the_log_is_truncated_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small()).unwrap();
    log.append_batch((1..=200).map(data)).unwrap();
    log.sync().unwrap();
    let mut it = log.reader().iter(..).unwrap();
    assert_eq!(it.next().unwrap().unwrap().index(), 1);
    log.truncate_from(100).unwrap();
    let rest: Vec<u64> = it.map(|e| e.unwrap().index()).collect();
    // Nothing truncated away is returned, even if it was fetched before.
    assert_eq!(rest, (2..100).collect::<Vec<_>>());
}

/// A file system that holds every `sync_data` while its gate is closed.
#[derive(Clone)]
struct GatedFs {
    inner: FaultFs,
    gate: Arc<(Mutex<Gate>, Condvar)>,
}

#[derive(Default)]
struct Gate {
    closed: bool,
    waiting: usize,
}

struct GatedFile {
    inner: Box<dyn FsFile>,
    gate: Arc<(Mutex<Gate>, Condvar)>,
}

impl GatedFs {
    fn new() -> GatedFs {
        GatedFs {
            inner: FaultFs::new(),
            gate: Arc::default(),
        }
    }

    fn close(&self) {
        self.gate.0.lock().unwrap().closed = true;
    }

    fn open_gate(&self) {
        self.gate.0.lock().unwrap().closed = false;
        self.gate.1.notify_all();
    }

    fn wait_for_waiters(&self, n: usize) {
        let (m, cv) = &*self.gate;
        let mut g = m.lock().unwrap();
        while g.waiting < n {
            g = cv.wait_timeout(g, Duration::from_millis(10)).unwrap().0;
        }
    }
}

impl FsFile for GatedFile {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        let (m, cv) = &*self.gate;
        let mut g = m.lock().unwrap();
        if g.closed {
            g.waiting += 1;
            cv.notify_all();
            while g.closed {
                g = cv.wait(g).unwrap();
            }
            g.waiting -= 1;
        }
        drop(g);
        self.inner.sync_data()
    }
    fn allocate(&self, len: u64) -> std::io::Result<()> {
        self.inner.allocate(len)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn map(&self) -> std::io::Result<Mapping> {
        self.inner.map()
    }
}

impl Fs for GatedFs {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list_dir(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list_dir(dir)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> std::io::Result<Box<dyn FsFile>> {
        Ok(Box::new(GatedFile {
            inner: self.inner.open(path, mode)?,
            gate: self.gate.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path, exclusive: bool) -> std::io::Result<Box<dyn Send + Sync>> {
        self.inner.lock_dir(dir, exclusive)
    }
}

#[derive(Default)]
struct Counters {
    syncs: AtomicU64,
    bytes: AtomicU64,
    segments: AtomicU64,
}

impl Metrics for Counters {
    fn bytes_written(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    fn synced(&self, _: Duration) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
    }
    fn segment_created(&self, _: u64) {
        self.segments.fetch_add(1, Ordering::Relaxed);
    }
}

/// A log on `fs` whose first segment already exists, so that the syncs the
/// tests hold back are syncs of appended data.
fn gated_log(fs: &GatedFs, counters: Arc<Counters>) -> Log {
    let opts = LogOptions::default()
        .preallocate(Preallocate::None)
        .metrics(counters);
    let log = Log::open_with_fs(Arc::new(fs.clone()), PathBuf::from("/log"), opts).unwrap();
    log.append(b"first").unwrap();
    log.sync().unwrap();
    log
}

#[test]
fn readers_and_appenders_do_not_wait_for_a_sync_in_progress() {
    let fs = GatedFs::new();
    let log = gated_log(&fs, Arc::default());
    log.append(b"second").unwrap();
    fs.close();
    let syncer = {
        let log = log.clone();
        std::thread::spawn(move || log.sync())
    };
    fs.wait_for_waiters(1);
    // The sync is stuck in fdatasync. A reader reads, a writer appends.
    let reader = log.reader();
    let t = std::thread::spawn(move || reader.read(1).map(|e| e.to_vec()));
    assert_eq!(t.join().unwrap().unwrap(), b"first");
    assert_eq!(log.append(b"third").unwrap(), 3);
    assert_eq!(
        log.last_synced_index(),
        1,
        "not synced while the fsync hangs"
    );
    fs.open_gate();
    syncer.join().unwrap().unwrap();
    assert_eq!(
        log.last_synced_index(),
        2,
        "the sync covered what it captured"
    );
    log.sync().unwrap();
    assert_eq!(log.last_synced_index(), 3);
}

#[test]
fn concurrent_append_sync_callers_share_one_fdatasync() {
    let fs = GatedFs::new();
    let counters = Arc::new(Counters::default());
    let log = gated_log(&fs, counters.clone());
    let before = counters.syncs.load(Ordering::Relaxed);
    fs.close();
    let leader = {
        let log = log.clone();
        std::thread::spawn(move || log.append_sync(b"leader").unwrap())
    };
    fs.wait_for_waiters(1);
    // While the leader's fsync hangs, eight more threads append and wait.
    let followers: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || log.append_sync(format!("follower {t}").as_bytes()))
        })
        .collect();
    while log.last_index() < 10 {
        std::thread::sleep(Duration::from_millis(1));
    }
    fs.open_gate();
    assert_eq!(leader.join().unwrap(), 2);
    let mut got: Vec<u64> = followers
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, (3..=10).collect::<Vec<_>>());
    let syncs = counters.syncs.load(Ordering::Relaxed) - before;
    assert_eq!(syncs, 2, "one fsync for the leader, one for all followers");
    assert_eq!(log.last_synced_index(), 10);
}

#[test]
fn a_failed_fdatasync_fails_every_waiting_caller() {
    let fs = GatedFs::new();
    let log = gated_log(&fs, Arc::default());
    fs.close();
    let leader = {
        let log = log.clone();
        std::thread::spawn(move || log.append_sync(b"leader"))
    };
    fs.wait_for_waiters(1);
    // Followers wait for the next sync; the running one is about to fail.
    let followers: Vec<_> = (0..6)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || log.append_sync(format!("follower {t}").as_bytes()))
        })
        .collect();
    while log.last_index() < 8 {
        std::thread::sleep(Duration::from_millis(1));
    }
    fs.inner
        .fail_next(raft_wal::fault::FaultOp::Sync, libc::EIO);
    fs.open_gate();
    assert!(leader.join().unwrap().is_err());
    for t in followers {
        let err = t.join().unwrap().unwrap_err();
        assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    }
    assert_eq!(log.last_synced_index(), 1);
}

#[test]
fn many_threads_appending_and_syncing_all_finish_durable() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small()).unwrap();
    let threads: Vec<_> = (0..32u64)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for k in 0..40u64 {
                    let payload = (t * 1000 + k).to_le_bytes();
                    if k % 3 == 0 {
                        mine.push((log.append(&payload).unwrap(), payload));
                        log.sync().unwrap();
                    } else {
                        mine.push((log.append_sync(&payload).unwrap(), payload));
                    }
                    // Everything this thread was told is durable is.
                    assert!(log.last_synced_index() >= mine.last().unwrap().0);
                }
                mine
            })
        })
        .collect();
    let mut seen = 0;
    for t in threads {
        for (i, payload) in t.join().unwrap() {
            assert_eq!(log.read(i).unwrap().to_vec(), payload);
            seen += 1;
        }
    }
    assert_eq!(
        (seen, log.last_index(), log.last_synced_index()),
        (1280, 1280, 1280)
    );
}

#[test]
fn a_full_disk_fails_the_append_sync_whose_entry_it_discarded() {
    let fs = FaultFs::new();
    let opts = small().preallocate(Preallocate::None);
    let log = Log::open_with_fs(Arc::new(fs.clone()), "/log", opts).unwrap();
    log.append_batch((1..=5).map(data)).unwrap();
    log.sync().unwrap();
    let used = fs.used_bytes();
    fs.set_space_limit(Some(used + 10));
    let err = log.append_sync(&[7u8; 500]).unwrap_err();
    assert!(err.is_no_space(), "{err}");
    assert_eq!(log.last_index(), 5, "the entry was discarded");
    // A plain append followed by another thread's failed sync: this sync
    // must not report success for the discarded entry either.
    log.append(&[8u8; 500]).unwrap();
    let other = log.clone();
    assert!(other.sync().unwrap_err().is_no_space());
    assert!(log.sync().is_ok(), "nothing left to sync");
    fs.set_space_limit(None);
    assert_eq!(log.append_sync(b"space is back").unwrap(), 6);
}

#[test]
fn light_defaults_take_little_space_and_production_preallocates() {
    let dir = tempfile::tempdir().unwrap();
    let light = dir.path().join("light");
    let log = Log::open(&light, LogOptions::default()).unwrap();
    log.append_sync(b"one record").unwrap();
    drop(log);
    let bytes: u64 = std::fs::read_dir(&light)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(bytes < 4096, "a one-record light log takes {bytes} bytes");

    let heavy = dir.path().join("production");
    let opts = LogOptions::production().segment_size_bytes(1 << 20);
    let log = Log::open(&heavy, opts).unwrap();
    log.append_sync(b"one record").unwrap();
    drop(log);
    let seg: u64 = std::fs::read_dir(&heavy)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(seg, 1 << 20, "the production preset preallocates segments");
}

#[test]
fn metrics_count_bytes_syncs_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    let counters = Arc::new(Counters::default());
    let log = Log::open(dir.path(), small().metrics(counters.clone())).unwrap();
    for i in 1..=100 {
        log.append(&data(i)).unwrap();
        if i % 10 == 0 {
            log.sync().unwrap();
        }
    }
    assert_eq!(counters.syncs.load(Ordering::Relaxed), 10);
    let written = counters.bytes.load(Ordering::Relaxed);
    let payload: u64 = (1..=100).map(|i| data(i).len() as u64).sum();
    assert!(written > payload, "{written} <= {payload}");
    assert!(counters.segments.load(Ordering::Relaxed) > 1);
}

#[test]
fn a_read_only_open_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small()).unwrap();
    log.append_sync(b"x").unwrap();
    drop(log);
    let ro = Log::open(dir.path(), small().read_only(true)).unwrap();
    assert!(matches!(ro.append(b"y"), Err(Error::ReadOnly)));
    assert!(matches!(ro.set_metadata(b"y"), Err(Error::ReadOnly)));
    assert!(matches!(ro.compact_before(1), Err(Error::ReadOnly)));
    assert_eq!(ro.read(1).unwrap().to_vec(), b"x");
}

#[test]
fn a_read_only_open_works_while_a_writer_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small()).unwrap();
    for i in 1..=200 {
        log.append(&data(i)).unwrap();
    }
    log.set_metadata(b"checkpoint=200").unwrap();
    log.sync().unwrap();
    // A second writer is refused, a reader is not.
    assert!(matches!(
        Log::open(dir.path(), small()),
        Err(Error::Locked { .. })
    ));
    let ro = Log::open_read_only(dir.path(), small()).unwrap();
    assert_eq!((ro.first_index(), ro.last_index()), (1, 200));
    assert_eq!(ro.metadata(), b"checkpoint=200");
    for (i, d) in all(&ro) {
        assert_eq!(d, data(i), "entry {i}");
    }
    assert!(matches!(ro.append(b"y"), Err(Error::ReadOnly)));
    assert!(matches!(ro.sync(), Err(Error::ReadOnly)));
    // The reader shows the log as of its open; the writer goes on.
    log.append_sync(&data(201)).unwrap();
    assert_eq!(ro.last_index(), 200);
    assert_eq!(log.last_index(), 201);
    // The writer can also open while a reader is open (no lock either way).
    drop(log);
    let log = Log::open(dir.path(), small()).unwrap();
    assert_eq!(log.last_index(), 201);
    assert_eq!(ro.read(200).unwrap().to_vec(), data(200));
}

/// The active segment (the highest sequence number) of a log directory.
fn last_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

#[test]
fn a_read_only_open_leaves_out_a_record_the_live_writer_is_writing() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    for i in 1..=20 {
        log.append(&data(i)).unwrap();
    }
    log.sync().unwrap();
    // What a reader sees while the writer is halfway through a record: the
    // first bytes of a record header and payload, nothing after them.
    let seg = last_segment(dir.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    let half_written = [0x5au8; 13];
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::OpenOptions::new().write(true).open(&seg).unwrap(),
        &half_written,
        len,
    )
    .unwrap();
    let before = std::fs::read(&seg).unwrap();
    let ro = Log::open_read_only(dir.path(), LogOptions::default()).unwrap();
    assert_eq!(ro.last_index(), 20);
    let torn = ro
        .recovery_report()
        .torn_tail
        .clone()
        .expect("torn tail reported");
    assert_eq!(
        (torn.file, torn.offset, torn.discarded_bytes),
        (seg.clone(), len, 13)
    );
    for (i, d) in all(&ro) {
        assert_eq!(d, data(i), "entry {i}");
    }
    // Nothing was cut or zeroed: that is the writer's business.
    assert_eq!(std::fs::read(&seg).unwrap(), before);
    // A strict reader refuses the half-written record instead.
    assert!(matches!(
        Log::open_read_only(
            dir.path(),
            LogOptions::default().recovery_mode(raft_wal::RecoveryMode::Strict)
        ),
        Err(Error::Corruption { .. })
    ));
}

#[test]
fn read_only_opens_during_appends_rotations_and_compactions_see_a_consistent_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small()).unwrap();
    log.append_sync(&data(1)).unwrap();
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || {
            for i in 2..=6_000 {
                log.append(&data(i)).unwrap();
                if i % 7 == 0 {
                    log.sync().unwrap();
                }
                if i % 500 == 0 {
                    // Deletes whole segments a reader may be replaying.
                    log.compact_before(i - 200).unwrap();
                }
            }
            log.sync().unwrap();
        })
    };
    let (mut opens, mut torn) = (0, 0);
    while opens < 40 || !writer.is_finished() {
        let synced_before = log.last_synced_index();
        let ro = match Log::open_read_only(dir.path(), small()) {
            Ok(ro) => ro,
            Err(e) => panic!("read-only open failed: {e}"),
        };
        torn += usize::from(ro.recovery_report().torn_tail.is_some());
        assert!(
            ro.last_index() >= synced_before,
            "a reader missed synced entries"
        );
        let got = all(&ro);
        assert_eq!(got.len() as u64, ro.last_index() + 1 - ro.first_index());
        for (i, d) in got {
            assert_eq!(d, data(i), "entry {i}");
        }
        opens += 1;
    }
    writer.join().unwrap();
    eprintln!("{opens} read-only opens, {torn} saw a record being written");
    assert_eq!(log.last_index(), 6_000);
}

#[test]
fn a_raft_wal_refuses_a_log_whose_metadata_is_not_a_hard_state() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), small()).unwrap();
    log.set_metadata(b"not a hard state").unwrap();
    log.sync().unwrap();
    drop(log);
    let log = Log::open(dir.path(), small()).unwrap();
    assert!(matches!(
        raft_wal::raft::RaftWal::from_log(log),
        Err(Error::Corruption {
            kind: raft_wal::CorruptionKind::BadMetadata,
            ..
        })
    ));
}

#[test]
fn concurrent_writers_and_readers_lose_nothing_acknowledged_in_a_power_cut() {
    let fs = FaultFs::new();
    let opts = small().preallocate(Preallocate::Inline);
    let log = Log::open_with_fs(Arc::new(fs.clone()), "/log", opts.clone()).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A reader checks, while the writers run, that what it sees is durable
    // data in order and that the durable end never moves back.
    let reader = {
        let (r, stop) = (log.reader(), stop.clone());
        std::thread::spawn(move || {
            let mut last_seen = 0;
            let mut reads = 0u64;
            // Until the writers are done, and a few passes after that.
            let mut passes_after = 0;
            while passes_after < 3 {
                if stop.load(Ordering::Relaxed) {
                    passes_after += 1;
                }
                let synced = r.last_synced_index();
                assert!(synced >= last_seen, "durable end went back");
                last_seen = synced;
                let mut prev = 0;
                for e in r.iter(..).unwrap() {
                    let e = e.unwrap();
                    assert!(e.index() <= r.last_synced_index());
                    assert!(prev == 0 || e.index() == prev + 1);
                    prev = e.index();
                    reads += 1;
                }
            }
            reads
        })
    };
    let writers: Vec<_> = (0..8u8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..150u32 {
                    let payload = format!("writer {t} entry {i}").into_bytes();
                    let index = if i % 3 == 0 {
                        let index = log.append(&payload).unwrap();
                        log.sync().unwrap();
                        index
                    } else {
                        log.append_sync(&payload).unwrap()
                    };
                    acked.push((index, payload));
                }
                acked
            })
        })
        .collect();
    let mut acked: Vec<(u64, Vec<u8>)> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    // One more unsynced entry, which the power cut may take.
    log.append(b"unsynced").unwrap();
    drop(log);
    fs.crash(CrashMode::LOSE_UNSYNCED);

    let log = Log::open_with_fs(Arc::new(fs.clone()), "/log", opts).unwrap();
    acked.sort();
    let indexes: Vec<u64> = acked.iter().map(|a| a.0).collect();
    assert_eq!(indexes, (1..=1200).collect::<Vec<_>>(), "every index once");
    assert!(log.last_index() >= 1200);
    for (index, payload) in acked {
        assert_eq!(log.read(index).unwrap().to_vec(), payload, "entry {index}");
    }
}
