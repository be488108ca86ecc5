//! The log handle: appends with log-assigned indexes, group commit across
//! threads, truncation, compaction, the metadata slot, and reads.
//!
//! Locking: `Inner::w` (the writer state) is held for memory work and
//! `pwrite`s, never across an `fdatasync` of appended data; `Inner::r` (the
//! index and segment list readers use) is write-locked only for short updates.
//! Readers take only `r`, so they never wait for an fsync.

use std::collections::VecDeque;
use std::ops::{Bound, Range, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use crate::error::{no_space_io_error, CorruptionKind, Error, PoisonCause, Result};
use crate::format::{
    self, Decoded, Record, SnapshotMarker, ENTRY_PREFIX_BYTES, MAX_METADATA_BYTES,
    MAX_PAYLOAD_BYTES,
};
use crate::fs::{Fs, FsFile, Mapping, OpenMode, StdFs};
use crate::index::{Loc, LogIndex};
use crate::options::{LogOptions, Preallocate};
use crate::prealloc::{self, Prealloc};
use crate::recovery::{self, Access, RecoveryReport, META_FILE, META_TMP_FILE, PREALLOC_FILE};
use crate::segment::Segment;
use crate::wake::WakeWord;

/// Replays tried by a read-only open whose files a live writer deleted
/// meanwhile.
const READ_ONLY_ATTEMPTS: usize = 5;

/// Replays `dir` for a read-only open, which holds no lock: a writer may
/// delete segments (compaction) or the meta file's temporary name between
/// listing the directory and reading a file, so a missing file restarts the
/// replay.
fn recover_read_only(
    fs: &dyn Fs,
    dir: &Path,
    mode: recovery::RecoveryMode,
) -> Result<recovery::Recovered> {
    let mut attempt = 1;
    loop {
        match recovery::recover(fs, dir, mode, Access::ReadOnlyUnlocked, None) {
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound
                    && attempt < READ_ONLY_ATTEMPTS =>
            {
                tracing::debug!(dir = %dir.display(), attempt, "a file vanished during a read-only replay; replaying again");
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Longest a sync leader waits for other callers to join its sync (only when
/// several callers shared the previous one; see `Inner::gather`).
const GATHER_MAX: std::time::Duration = std::time::Duration::from_micros(200);

/// A gathering leader stops waiting when no caller joined for this long.
const GATHER_IDLE_MAX: std::time::Duration = std::time::Duration::from_micros(50);

/// Largest entry the log accepts, in bytes.
pub const MAX_ENTRY_BYTES: usize = MAX_PAYLOAD_BYTES - ENTRY_PREFIX_BYTES;

/// What readers see: the index of every entry written to a segment file, the
/// segments, and how far the log is durable.
struct ReadState {
    index: LogIndex,
    segments: VecDeque<Arc<Segment>>,
    /// Every entry in `[first_index, synced_last]` is durable.
    synced_last: u64,
}

impl ReadState {
    fn segment(&self, seq: u64) -> Option<&Arc<Segment>> {
        let front = self.segments.front()?.seq;
        self.segments
            .get(usize::try_from(seq.checked_sub(front)?).ok()?)
    }
}

/// Undo information for the changes made since the last sync began.
struct Batch {
    /// Metadata before the batch, if the batch changed it.
    base_metadata: Option<Vec<u8>>,
    /// Snapshot marker before the batch.
    base_marker: Option<SnapshotMarker>,
    /// `synced_last` before the batch.
    base_synced_last: u64,
    /// The index entries `(low, base_last]` of the log before the batch were
    /// truncated by this batch and are kept here, ascending, to put back.
    low: u64,
    stash: Vec<Loc>,
    /// Write head and file length of the active segment when the batch began.
    start_offset: u64,
    start_file_len: u64,
    /// Furthest byte any write of this batch reached.
    dirty_end: u64,
    /// Change numbers of this batch start after this one.
    base_change: u64,
}

/// The writer's state, behind `Inner::w`.
struct Writer {
    /// The segment appends go to (`None`: the last one is sealed, or none).
    active: Option<Arc<Segment>>,
    /// Sequence number of the last segment (0: none yet).
    last_seq: u64,
    /// Encoded records not yet written to the active segment.
    pending: Vec<u8>,
    /// Locations of the entries in `pending`, in order.
    pending_locs: Vec<Loc>,
    first_index: u64,
    next_index: u64,
    metadata: Vec<u8>,
    marker: Option<SnapshotMarker>,
    batch: Option<Batch>,
    prealloc: Prealloc,
    poisoned: Option<PoisonCause>,
    /// A thread is in an `fdatasync` of appended data, outside the lock.
    sync_running: bool,
    /// Number of the sync started last (running if `sync_running`).
    sync_seq: u64,
    /// Changes up to here are covered by the sync started last.
    running_upto: u64,
    /// A thread is about to lead the next sync and waits for callers to
    /// join it (see `Inner::gather`); others wait for that sync meanwhile.
    gathering: bool,
    /// Callers of the last sync: its leader, the threads it covered and the
    /// threads then waiting for the next one. If several, the next leader
    /// gathers: it waits for that many callers (for at most
    /// [`GATHER_MAX`]) before it captures the batch.
    last_callers: usize,
    /// Number of changes made (never decreases, also not on rollback).
    change: u64,
    /// Every change numbered up to here is durable or was rolled back.
    synced_change: u64,
    /// Change-number ranges `(after, upto]` discarded by disk-full rollbacks.
    rolled_back: Vec<(u64, u64)>,
    /// Lowest `from - 1` of the truncations made since the running sync
    /// captured its batch.
    truncated_below: u64,
}

/// Where threads wait for a sync (see `Inner::wait_for`).
///
/// Sync number `s` (counted by `Writer::sync_seq`) wakes only the threads
/// whose changes it covers: they wait in slot `s % 2`. Threads whose changes
/// came after it captured its batch wait in the other slot for sync `s + 1`;
/// when `s` finishes, one of them is handed the lead (woken alone), and the
/// rest sleep on until that sync is done. So no thread is woken only to go
/// back to sleep, and a finished sync wakes its waiters with one call, after
/// it has released the writer lock. Waiters sleep on the slot's word itself
/// (a futex on Linux), not on a condition variable, so the woken threads do
/// not queue on a mutex to get out.
#[derive(Default)]
struct WaitSlot {
    word: WakeWord,
    /// Threads counted under the writer lock before they wait here.
    waiting: std::sync::atomic::AtomicUsize,
}

/// The wake-ups a finished sync owes, made after the writer lock is
/// released (see `Inner::finish_sync`).
struct Wakeup {
    /// The sync that finished: its callers wait in slot `seq % 2`.
    seq: u64,
    /// Wake one thread waiting for sync `seq + 1` to lead it.
    handoff: bool,
}

/// State the waiting threads read without the writer lock.
#[derive(Default)]
struct SyncBoard {
    slots: [WaitSlot; 2],
    /// Number of the last sync that finished (or failed).
    done_seq: AtomicU64,
    /// Sync number whose lead is handed to one waiting thread (0: none).
    handoff: AtomicU64,
    /// `Writer::synced_change`, published for waiters.
    synced_change: AtomicU64,
    /// Set when the handle is poisoned or a disk-full rollback discarded
    /// changes: waiters then check their outcome under the writer lock.
    troubled: std::sync::atomic::AtomicBool,
    /// Set when the handle is poisoned: every waiter wakes up.
    poisoned: std::sync::atomic::AtomicBool,
}

struct Inner {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    options: LogOptions,
    _lock: Box<dyn Send + Sync>,
    w: Mutex<Writer>,
    /// Where threads wait for syncs.
    board: SyncBoard,
    r: RwLock<ReadState>,
    /// Bumped whenever entries leave the index other than at its end by
    /// appends (truncation, rollback, compaction), so iterators drop what
    /// they fetched before.
    generation: AtomicU64,
    report: RecoveryReport,
    /// The memory map of the sealed segment read last, by sequence number.
    /// A sealed segment's view is otherwise released with its last reader
    /// (see `segment.rs`); holding this one lets reads that come back to the
    /// same segment (range reads, a follower catching up) reuse the mapping,
    /// while at most one sealed segment stays mapped this way.
    last_sealed_view: Mutex<Option<(u64, Mapping)>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The preparation thread writes in our directory: finish it before the
        // lock is released.
        let w = self.w.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = std::mem::replace(&mut w.prealloc, Prealloc::Idle).settle();
    }
}

/// A segmented, checksummed write-ahead log of opaque entries, with one
/// opaque metadata value.
///
/// The log assigns indexes: [`append`](Log::append) returns the entry's
/// index, starting at 1. Changes ([`append`](Log::append),
/// [`set_metadata`](Log::set_metadata)) are buffered and become durable
/// together at the next [`sync`](Log::sync), which costs one `fdatasync`.
/// [`truncate_from`](Log::truncate_from) and
/// [`compact_before`](Log::compact_before) are durable when they return.
///
/// A `Log` is a cheap, cloneable handle (`Clone + Send + Sync`): clones
/// share one log, and concurrent [`append_sync`](Log::append_sync) or
/// [`sync`](Log::sync) callers share one `fdatasync` (group commit). Reads
/// through a `Log` see every appended entry, synced or not; a
/// [`LogReader`] sees only synced ones and never waits for an fsync.
///
/// ```
/// use raft_wal::{Log, LogOptions};
///
/// # fn main() -> Result<(), raft_wal::Error> {
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), LogOptions::default())?;
/// assert_eq!(log.append(b"first")?, 1);
/// assert_eq!(log.append_batch([&b"second"[..], b"third"])?, 2..4);
/// log.set_metadata(b"checkpoint=1")?;
/// log.sync()?; // one fdatasync for all four changes
/// drop(log);
///
/// let log = Log::open(dir.path(), LogOptions::default())?;
/// assert_eq!((log.first_index(), log.last_index()), (1, 3));
/// let all: Vec<Vec<u8>> = log.iter(..)?.map(|e| e.map(|e| e.to_vec())).collect::<Result<_, _>>()?;
/// assert_eq!(all, [&b"first"[..], b"second", b"third"]);
/// assert_eq!(log.metadata(), b"checkpoint=1");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.inner.dir)
            .field("first_index", &self.first_index())
            .field("last_index", &self.last_index())
            .field("last_synced_index", &self.last_synced_index())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl Log {
    /// Opens (creating if needed) the log in `dir` on the real file system.
    ///
    /// Takes an exclusive lock on the directory; a second writer, in this or
    /// another process, fails with [`Error::Locked`]. Replays the segments and
    /// handles damage as [`LogOptions::recovery_mode`] says; see
    /// [`recovery_report`](Log::recovery_report) for what was found.
    ///
    /// With [`read_only`](LogOptions::read_only) it opens as
    /// [`open_read_only`](Log::open_read_only) does: no lock, nothing written.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log> {
        Log::open_with_fs(Arc::new(StdFs), dir, options)
    }

    /// Opens the log in `dir` read-only, even while another process (or
    /// another handle in this one) has it open for writing.
    ///
    /// A read-only open takes **no lock** and never writes, truncates or
    /// removes anything. It replays what is on disk at the time of the open
    /// and shows that state until it is dropped (reopen to see newer
    /// entries); every write call fails with [`Error::ReadOnly`]. What it sees:
    ///
    /// - every entry the writer had synced before the open began, and
    ///   possibly some it had written but not yet synced (those may still be
    ///   lost in a crash, or discarded by the writer after a full disk);
    /// - a record the live writer is in the middle of writing looks like a
    ///   torn tail: under the default [`RecoveryMode::TolerateTornTail`] it
    ///   is left out and reported in
    ///   [`recovery_report`](Log::recovery_report)`.torn_tail` (the file is
    ///   not touched). [`RecoveryMode::Strict`] refuses it instead, so use the
    ///   default mode to read a live log;
    /// - if the writer deletes a segment (compaction) while the replay runs,
    ///   the replay starts again, a few times at most.
    ///
    /// Segments are read into memory with ordinary reads rather than memory
    /// mapped (a writer may shrink a file, and a mapped page past the end of
    /// a file cannot be read safely), so iterating over a large log costs
    /// memory in proportion to the segments it touches.
    ///
    /// ```
    /// use raft_wal::{Log, LogOptions};
    /// # let dir = tempfile::tempdir().unwrap();
    /// let writer = Log::open(dir.path(), LogOptions::default()).unwrap();
    /// writer.append_sync(b"synced").unwrap();
    /// let reader = Log::open_read_only(dir.path(), LogOptions::default()).unwrap();
    /// assert_eq!(reader.read(1).unwrap().data(), b"synced");
    /// assert!(reader.append(b"x").is_err());
    /// ```
    pub fn open_read_only(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log> {
        Log::open(dir, options.read_only(true))
    }

    /// Opens the log in `dir` through `fs` (for example a
    /// [`FaultFs`](crate::fault::FaultFs) in tests).
    pub fn open_with_fs(
        fs: Arc<dyn Fs>,
        dir: impl AsRef<Path>,
        options: LogOptions,
    ) -> Result<Log> {
        let dir = dir.as_ref().to_path_buf();
        if options.segment_size_bytes < 4096 {
            return Err(Error::InvalidOptions {
                reason: "segment_size_bytes must be at least 4096",
            });
        }
        if !options.read_only {
            fs.create_dir_all(&dir)
                .map_err(|e| Error::io("create_dir", &dir, e))?;
        }
        let (dir_lock, rec) = if options.read_only {
            // No lock: a live writer may hold the exclusive one.
            let lock: Box<dyn Send + Sync> = Box::new(());
            (
                lock,
                recover_read_only(fs.as_ref(), &dir, options.recovery_mode)?,
            )
        } else {
            let lock = fs.lock_dir(&dir, true).map_err(|e| match e.kind() {
                std::io::ErrorKind::WouldBlock => Error::Locked { dir: dir.clone() },
                _ => Error::io("lock", &dir, e),
            })?;
            let rec = recovery::recover(
                fs.as_ref(),
                &dir,
                options.recovery_mode,
                Access::Write,
                None,
            )?;
            (lock, rec)
        };
        let segments: VecDeque<Arc<Segment>> = rec.segments.into_iter().map(Arc::new).collect();
        let active = segments.back().filter(|s| !s.sealed()).cloned();
        let last_seq = segments.back().map_or(0, |s| s.seq);
        let (first_index, last_index) = (rec.index.first_index(), rec.index.last_index());
        let writer = Writer {
            active,
            last_seq,
            pending: Vec::new(),
            pending_locs: Vec::new(),
            first_index,
            next_index: last_index + 1,
            metadata: rec.metadata,
            marker: rec.snapshot_marker,
            batch: None,
            prealloc: Prealloc::Idle,
            poisoned: None,
            sync_running: false,
            sync_seq: 0,
            running_upto: 0,
            gathering: false,
            last_callers: 1,
            change: 0,
            synced_change: 0,
            rolled_back: Vec::new(),
            truncated_below: u64::MAX,
        };
        let inner = Inner {
            fs,
            dir,
            options,
            _lock: dir_lock,
            w: Mutex::new(writer),
            board: SyncBoard::default(),
            r: RwLock::new(ReadState {
                index: rec.index,
                segments,
                synced_last: last_index,
            }),
            generation: AtomicU64::new(0),
            last_sealed_view: Mutex::new(None),
            report: rec.report,
        };
        tracing::info!(
            dir = %inner.dir.display(),
            first_index,
            last_index,
            segments = inner.report.segments,
            torn_tail = inner.report.torn_tail.is_some(),
            dropped = inner.report.dropped.is_some(),
            "opened WAL"
        );
        if !inner.options.read_only {
            // Finish a compaction that was cut short before its deletes.
            let mut w = lock(&inner.w);
            inner.remove_obsolete_segments(&mut w)?;
        }
        Ok(Log {
            inner: Arc::new(inner),
        })
    }

    /// What recovery found and did when this log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options this log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.inner.options
    }

    /// First index held (1 for a new log, or the boundary of the last
    /// compaction).
    pub fn first_index(&self) -> u64 {
        lock(&self.inner.w).first_index
    }

    /// Last index held, synced or not; `first_index() - 1` when empty.
    pub fn last_index(&self) -> u64 {
        lock(&self.inner.w).next_index - 1
    }

    /// Last index that is durable: every entry in
    /// `[first_index, last_synced_index]` survives a crash.
    /// `first_index() - 1` when none is.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let log = raft_wal::Log::open(dir.path(), Default::default()).unwrap();
    /// log.append(b"a").unwrap();
    /// assert_eq!((log.last_index(), log.last_synced_index()), (1, 0));
    /// log.sync().unwrap();
    /// assert_eq!(log.last_synced_index(), 1);
    /// ```
    pub fn last_synced_index(&self) -> u64 {
        read(&self.inner.r).synced_last
    }

    /// The newest metadata value, including one set but not yet synced
    /// (empty if none was ever set).
    pub fn metadata(&self) -> Vec<u8> {
        lock(&self.inner.w).metadata.clone()
    }

    /// True if there are changes that the next [`sync`](Log::sync) will make
    /// durable.
    pub fn has_unsynced(&self) -> bool {
        let w = lock(&self.inner.w);
        w.batch.is_some() || w.change > w.synced_change
    }

    /// A handle for reading synced entries from other threads. It never
    /// waits for an fsync in progress and keeps the log open (and its
    /// directory locked) while it lives.
    pub fn reader(&self) -> LogReader {
        LogReader {
            inner: self.inner.clone(),
        }
    }

    /// Buffers `data` as the next entry and returns its index. Durable after
    /// the next [`sync`](Log::sync); readable through this handle at once.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let log = raft_wal::Log::open(dir.path(), Default::default()).unwrap();
    /// assert_eq!(log.append(b"a").unwrap(), 1);
    /// assert_eq!(log.append(b"b").unwrap(), 2);
    /// assert_eq!(log.read(2).unwrap().data(), b"b");
    /// assert!(log.has_unsynced());
    /// ```
    pub fn append(&self, data: &[u8]) -> Result<u64> {
        let mut w = lock(&self.inner.w);
        self.inner.append(&mut w, 0, data)
    }

    /// Buffers several entries and returns the range of indexes they got.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let log = raft_wal::Log::open(dir.path(), Default::default()).unwrap();
    /// let events = vec![b"x".to_vec(), b"y".to_vec()];
    /// assert_eq!(log.append_batch(&events).unwrap(), 1..3);
    /// ```
    ///
    /// On error, entries appended before the failing one stay buffered
    /// (except after a disk-full rollback, which discards the whole unsynced
    /// batch).
    pub fn append_batch<I, T>(&self, entries: I) -> Result<Range<u64>>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let mut w = lock(&self.inner.w);
        let start = w.next_index;
        for e in entries {
            self.inner.append(&mut w, 0, e.as_ref())?;
        }
        Ok(start..w.next_index)
    }

    /// Appends `data` and waits until it is durable; returns its index.
    /// Concurrent callers share one `fdatasync` (group commit). Fails with
    /// [`Error::NoSpace`] if a full disk discarded this entry.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let log = raft_wal::Log::open(dir.path(), Default::default()).unwrap();
    /// let threads: Vec<_> = (0..4).map(|t| {
    ///     let log = log.clone();
    ///     std::thread::spawn(move || log.append_sync(format!("from {t}").as_bytes()).unwrap())
    /// }).collect();
    /// for t in threads { t.join().unwrap(); }
    /// assert_eq!(log.last_synced_index(), 4);
    /// ```
    pub fn append_sync(&self, data: &[u8]) -> Result<u64> {
        let mut w = lock(&self.inner.w);
        let index = self.inner.append(&mut w, 0, data)?;
        let mine = w.change;
        self.inner.sync_until(w, mine, mine - 1)?;
        Ok(index)
    }

    /// Buffers a new metadata value (at most 64 KiB), written with the
    /// entries at the next [`sync`](Log::sync). Setting the current value
    /// again does nothing. The value survives compaction: it is copied into
    /// every new segment.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let log = raft_wal::Log::open(dir.path(), Default::default()).unwrap();
    /// log.append(b"event").unwrap();
    /// log.set_metadata(b"applied=1").unwrap(); // durable with the event
    /// log.sync().unwrap();
    /// # drop(log);
    /// let log = raft_wal::Log::open(dir.path(), Default::default()).unwrap();
    /// assert_eq!(log.metadata(), b"applied=1");
    /// ```
    pub fn set_metadata(&self, value: &[u8]) -> Result<()> {
        let mut w = lock(&self.inner.w);
        self.inner.set_metadata(&mut w, value)
    }

    /// Makes every buffered change durable with one `fdatasync` shared with
    /// concurrent callers. Does nothing if nothing changed.
    ///
    /// On [`Error::NoSpace`] every change not yet synced is discarded and
    /// the handle stays usable; a `sync` whose changes a full disk discarded
    /// (possibly in another thread) also fails with `NoSpace`. Any other
    /// failure poisons the handle.
    pub fn sync(&self) -> Result<()> {
        let w = lock(&self.inner.w);
        self.inner.check_writable(&w)?;
        let (target, from) = (w.change, w.synced_change);
        self.inner.sync_until(w, target, from)
    }

    /// Removes every entry at or after `index` (the log then ends at
    /// `index - 1`), syncing buffered changes with it. **Durable when it
    /// returns**, like [`compact_before`](Log::compact_before). `index` must
    /// lie in `[first_index, last_index + 1]`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let log = raft_wal::Log::open(dir.path(), Default::default()).unwrap();
    /// log.append_batch([b"a", b"b", b"c"]).unwrap();
    /// log.truncate_from(2).unwrap(); // removes 2..
    /// assert_eq!((log.last_index(), log.last_synced_index()), (1, 1));
    /// assert_eq!(log.append(b"B").unwrap(), 2);
    /// ```
    pub fn truncate_from(&self, index: u64) -> Result<()> {
        let mut w = lock(&self.inner.w);
        self.inner
            .truncate_buffered(&mut w, index, "truncate_from")?;
        let (target, from) = (w.change, w.synced_change);
        drop(self.inner.sync_to(w, target, from)?);
        Ok(())
    }

    /// Removes every entry before `index` (the log then starts at `index`),
    /// syncing buffered changes first. **Durable when it returns**, like
    /// [`truncate_from`](Log::truncate_from). Whole segments holding only
    /// removed entries are deleted. `index` must lie in
    /// `[first_index, last_index + 1]`: compacting past the end is an error
    /// ([`Error::BoundaryOutOfRange`]); `last_index + 1` empties the log.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let log = raft_wal::Log::open(dir.path(), Default::default()).unwrap();
    /// log.append_batch([b"a", b"b", b"c"]).unwrap();
    /// log.compact_before(3).unwrap(); // removes ..3
    /// assert_eq!((log.first_index(), log.last_index()), (3, 3));
    /// assert!(log.compact_before(5).is_err());
    /// ```
    pub fn compact_before(&self, index: u64) -> Result<()> {
        let w = lock(&self.inner.w);
        self.inner.check_writable(&w)?;
        if index < w.first_index || index > w.next_index {
            return Err(Error::BoundaryOutOfRange {
                op: "compact_before",
                index,
                first_index: w.first_index,
                last_index: w.next_index - 1,
            });
        }
        self.inner.compact(w, index)
    }

    /// The entry at `index`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let log = raft_wal::Log::open(dir.path(), Default::default()).unwrap();
    /// log.append(b"a").unwrap();
    /// assert_eq!(log.read(1).unwrap().to_vec(), b"a");
    /// assert!(matches!(log.read(2), Err(raft_wal::Error::OutOfRange { .. })));
    /// ```
    pub fn read(&self, index: u64) -> Result<LogEntry> {
        match self.iter(index..=index)?.next() {
            Some(e) => e,
            None => Err(self.inner.out_of_range(index, false)),
        }
    }

    /// Iterates over the entries in `range` (`..`, `lo..`, `lo..hi`,
    /// `lo..=hi`), synced or not. The range must lie within
    /// `[first_index, last_index]` (an empty range anywhere in
    /// `[first_index, last_index + 1]` is fine). Payloads are borrowed from
    /// the memory-mapped segment where possible; each entry's checksum is
    /// verified as it is read.
    ///
    /// The end is fixed when the iterator is made; entries truncated away
    /// meanwhile end it early, and entries compacted away yield
    /// [`Error::OutOfRange`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let log = raft_wal::Log::open(dir.path(), Default::default()).unwrap();
    /// for i in 0..10u8 { log.append(&[i]).unwrap(); }
    /// let tail: Vec<u64> = log.iter(8..).unwrap().map(|e| e.unwrap().index()).collect();
    /// assert_eq!(tail, [8, 9, 10]);
    /// assert_eq!(log.iter(3..5).unwrap().next().unwrap().unwrap().data(), &[2]);
    /// ```
    pub fn iter(&self, range: impl RangeBounds<u64>) -> Result<Iter> {
        let mut w = lock(&self.inner.w);
        self.inner.check_usable(&w)?;
        if !w.pending_locs.is_empty() {
            // Entries are read from the segment file: write them there first.
            self.inner.flush(&mut w)?;
        }
        let (first, last) = (w.first_index, w.next_index - 1);
        drop(w);
        Iter::new(self.inner.clone(), range, first, last, false)
    }

    /// Raft layer: appends entry `index` (which must be the next one) with
    /// a term.
    pub(crate) fn append_at(&self, index: u64, term: u64, data: &[u8]) -> Result<()> {
        let mut w = lock(&self.inner.w);
        if index != w.next_index {
            self.inner.check_usable(&w)?;
            return Err(Error::NotNextIndex {
                index,
                expected: w.next_index,
            });
        }
        self.inner.append(&mut w, term, data).map(|_| ())
    }

    /// Raft layer: a truncation buffered until the next sync.
    pub(crate) fn truncate_buffered(&self, from: u64) -> Result<()> {
        let mut w = lock(&self.inner.w);
        self.inner
            .truncate_buffered(&mut w, from, "truncate_suffix")
    }

    /// Raft layer: compaction that may pass the end of the log (a follower
    /// installing a newer snapshot); the next index is then `index`.
    pub(crate) fn compact_or_reset(&self, index: u64) -> Result<()> {
        let w = lock(&self.inner.w);
        self.inner.check_writable(&w)?;
        if index <= w.first_index {
            let (target, from) = (w.change, w.synced_change);
            drop(self.inner.sync_to(w, target, from)?);
            return Ok(());
        }
        self.inner.compact(w, index)
    }

    /// Raft layer: the term of entry `index`.
    pub(crate) fn term(&self, index: u64) -> Result<Option<u64>> {
        let w = lock(&self.inner.w);
        self.inner.check_usable(&w)?;
        if let Some(l) = w
            .pending_locs
            .get(index.wrapping_sub(w.next_index - w.pending_locs.len() as u64) as usize)
        {
            return Ok(Some(l.term));
        }
        drop(w);
        Ok(read(&self.inner.r).index.get(index).map(|l| l.term))
    }

    /// Raft layer: the snapshot marker.
    pub(crate) fn marker(&self) -> Option<SnapshotMarker> {
        lock(&self.inner.w).marker
    }

    /// Raft layer: durably records a snapshot marker.
    pub(crate) fn mark_snapshot(&self, marker: SnapshotMarker) -> Result<()> {
        let mut w = lock(&self.inner.w);
        self.inner.check_writable(&w)?;
        match w.marker {
            Some(m) if m == marker => {}
            Some(m) if marker.0 <= m.0 => {
                return Err(Error::SnapshotMarkerNotNewer {
                    index: marker.0,
                    current: m.0,
                })
            }
            _ if marker.0 == 0 => {
                return Err(Error::SnapshotMarkerNotNewer {
                    index: 0,
                    current: 0,
                })
            }
            _ => {
                self.inner.begin_batch(&mut w)?;
                let seq = w.active.as_ref().expect("batch has a segment").seq;
                format::encode_snapshot_marker(&mut w.pending, seq, marker);
                w.marker = Some(marker);
                w.change += 1;
            }
        }
        let (target, from) = (w.change, w.synced_change);
        drop(self.inner.sync_to(w, target, from)?);
        Ok(())
    }

    pub(crate) fn check_usable(&self) -> Result<()> {
        self.inner.check_usable(&lock(&self.inner.w))
    }
}

impl Inner {
    fn check_usable(&self, w: &Writer) -> Result<()> {
        match &w.poisoned {
            Some(cause) => Err(cause.to_error()),
            None => Ok(()),
        }
    }

    fn check_writable(&self, w: &Writer) -> Result<()> {
        self.check_usable(w)?;
        if self.options.read_only {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    /// Records `err` as the reason this handle is unusable, and returns it.
    fn poison(&self, w: &mut Writer, err: Error) -> Error {
        if w.poisoned.is_none() {
            tracing::error!(dir = %self.dir.display(), error = %err, "WAL poisoned");
            w.poisoned = Some(PoisonCause::of(&err, &self.dir));
            // Every waiter must see it, whichever sync it waits for.
            self.board.troubled.store(true, Ordering::SeqCst);
            self.board.poisoned.store(true, Ordering::SeqCst);
            self.wake(0);
            self.wake(1);
        }
        err
    }

    fn out_of_range(&self, index: u64, reader: bool) -> Error {
        let (first_index, last_index) = if reader {
            // Readers never take the writer's lock (it is held across the
            // fsyncs of a segment rotation).
            let r = read(&self.r);
            (r.index.first_index(), r.synced_last)
        } else {
            let w = lock(&self.w);
            (w.first_index, w.next_index - 1)
        };
        Error::OutOfRange {
            index,
            first_index,
            last_index,
        }
    }

    fn append(&self, w: &mut Writer, term: u64, data: &[u8]) -> Result<u64> {
        self.check_writable(w)?;
        if data.len() > MAX_ENTRY_BYTES {
            return Err(Error::EntryTooLarge {
                bytes: data.len(),
                max_bytes: MAX_ENTRY_BYTES,
            });
        }
        self.begin_batch(w)?;
        let seg = w.active.as_ref().expect("a batch has an active segment");
        let (seq, seq_crc) = (seg.seq, seg.seq_crc);
        let offset = seg.written() + w.pending.len() as u64;
        let index = w.next_index;
        format::encode_entry_fast(&mut w.pending, seq_crc, index, term, data);
        w.pending_locs.push(Loc { seq, offset, term });
        w.next_index += 1;
        w.change += 1;
        if w.pending.len() >= self.options.flush_threshold_bytes {
            self.flush(w)?;
        }
        Ok(index)
    }

    fn set_metadata(&self, w: &mut Writer, value: &[u8]) -> Result<()> {
        self.check_writable(w)?;
        if value.len() > MAX_METADATA_BYTES {
            return Err(Error::MetadataTooLarge {
                bytes: value.len(),
                max_bytes: MAX_METADATA_BYTES,
            });
        }
        if value == w.metadata.as_slice() {
            return Ok(());
        }
        self.begin_batch(w)?;
        let seq = w
            .active
            .as_ref()
            .expect("a batch has an active segment")
            .seq;
        format::encode_metadata(&mut w.pending, seq, value);
        let old = std::mem::replace(&mut w.metadata, value.to_vec());
        let batch = w.batch.as_mut().expect("batch begun");
        batch.base_metadata.get_or_insert(old);
        w.change += 1;
        Ok(())
    }

    fn truncate_buffered(&self, w: &mut Writer, from: u64, op: &'static str) -> Result<()> {
        self.check_writable(w)?;
        let (first, next) = (w.first_index, w.next_index);
        if from < first || from > next {
            return Err(Error::BoundaryOutOfRange {
                op,
                index: from,
                first_index: first,
                last_index: next - 1,
            });
        }
        if from == next {
            return Ok(());
        }
        // Truncation works on the shared index: move pending entries there.
        self.flush(w)?;
        self.begin_batch(w)?;
        let seq = w
            .active
            .as_ref()
            .expect("a batch has an active segment")
            .seq;
        format::encode_truncate(&mut w.pending, seq, from);
        let popped = {
            let mut r = write(&self.r);
            r.synced_last = r.synced_last.min(from - 1);
            self.generation.fetch_add(1, Ordering::AcqRel);
            r.index.truncate_from(from)
        };
        w.next_index = from;
        w.change += 1;
        w.truncated_below = w.truncated_below.min(from - 1);
        let batch = w.batch.as_mut().expect("batch begun");
        if from <= batch.low {
            // Entries (from-1, low] predate the batch: keep them for a rollback.
            let n = (batch.low - (from - 1)) as usize;
            let mut older: Vec<Loc> = popped[..n].to_vec();
            older.append(&mut batch.stash);
            batch.stash = older;
            batch.low = from - 1;
        }
        Ok(())
    }

    /// Opens a batch if none is open, starting a new segment first if the
    /// active one is full. On error nothing has changed.
    fn begin_batch(&self, w: &mut Writer) -> Result<()> {
        if w.batch.is_some() {
            return Ok(());
        }
        let full = match &w.active {
            None => true,
            Some(s) => s.written() >= self.options.segment_size_bytes,
        };
        if full {
            self.rotate(w)?;
        }
        let seg = w.active.as_ref().expect("rotate leaves an active segment");
        let (start_offset, start_file_len) = (seg.written(), seg.file_len());
        let base_synced_last = read(&self.r).synced_last;
        w.batch = Some(Batch {
            base_metadata: None,
            base_marker: w.marker,
            base_synced_last,
            low: w.next_index - 1,
            stash: Vec::new(),
            start_offset,
            start_file_len,
            dirty_end: start_offset,
            base_change: w.change,
        });
        Ok(())
    }

    /// Writes buffered records to the active segment without syncing, and
    /// publishes their entries to the index.
    fn flush(&self, w: &mut Writer) -> Result<()> {
        if w.pending.is_empty() {
            return Ok(());
        }
        let seg = w
            .active
            .clone()
            .expect("pending records belong to a segment");
        let at = seg.written();
        let end = at + w.pending.len() as u64;
        if let Some(b) = w.batch.as_mut() {
            b.dirty_end = b.dirty_end.max(end);
        }
        match seg.file.write_at(&w.pending, at) {
            Ok(()) => {
                seg.set_written(end);
                seg.set_file_len(seg.file_len().max(end));
                if let Some(m) = &self.options.metrics {
                    m.bytes_written(w.pending.len() as u64);
                }
                w.pending.clear();
                if !w.pending_locs.is_empty() {
                    write(&self.r).index.extend(w.pending_locs.drain(..));
                }
                Ok(())
            }
            Err(e) => {
                let err = Error::io("write", seg.path.clone(), e);
                Err(self.fail_batch(w, err))
            }
        }
    }

    /// Waits until every change numbered up to `target` is durable, leading
    /// the sync if no other thread is. Fails with [`Error::NoSpace`] if a
    /// rollback discarded any change in `(from, target]`.
    fn sync_to<'a>(
        &'a self,
        mut w: MutexGuard<'a, Writer>,
        target: u64,
        from: u64,
    ) -> Result<MutexGuard<'a, Writer>> {
        loop {
            self.check_usable(&w)?;
            if w.synced_change >= target {
                break;
            }
            if !w.sync_running && !w.gathering {
                w = self.gather(w);
                // The lock was released: another thread may have poisoned
                // the handle (no other sync ran: they waited for this one).
                self.check_usable(&w)?;
                self.lead_sync(w)?;
                w = lock(&self.w);
                continue;
            }
            self.wait_for(w, target);
            w = lock(&self.w);
        }
        self.check_rolled_back(&w, target, from)?;
        Ok(w)
    }

    /// [`sync_to`](Inner::sync_to) for callers that do not need the lock
    /// afterwards: a thread woken by the sync that covered its change returns
    /// without taking the writer lock again.
    fn sync_until<'a>(
        &'a self,
        mut w: MutexGuard<'a, Writer>,
        target: u64,
        from: u64,
    ) -> Result<()> {
        loop {
            self.check_usable(&w)?;
            if w.synced_change >= target {
                break;
            }
            if !w.sync_running && !w.gathering {
                w = self.gather(w);
                // The lock was released: another thread may have poisoned
                // the handle (no other sync ran: they waited for this one).
                self.check_usable(&w)?;
                self.lead_sync(w)?;
            } else {
                self.wait_for(w, target);
            }
            let b = &self.board;
            if b.synced_change.load(Ordering::Acquire) >= target
                && !b.troubled.load(Ordering::Acquire)
            {
                return Ok(());
            }
            w = lock(&self.w);
        }
        self.check_rolled_back(&w, target, from)
    }

    /// Fails with [`Error::NoSpace`] if a rollback discarded any change in
    /// `(from, target]`.
    fn check_rolled_back(&self, w: &Writer, target: u64, from: u64) -> Result<()> {
        let lost = w.rolled_back.iter().find(|(a, b)| *a < target && *b > from);
        if let Some(_range) = lost {
            let path = w
                .active
                .as_ref()
                .map_or_else(|| self.dir.clone(), |s| s.path.clone());
            return Err(Error::NoSpace { path });
        }
        Ok(())
    }

    /// Releases the writer lock and sleeps until the sync that covers
    /// change `target` has finished, this thread is handed the lead of the
    /// next sync, or the handle is poisoned. The caller then looks again
    /// under the lock. Called while a sync runs or a leader gathers.
    fn wait_for(&self, w: MutexGuard<'_, Writer>, target: u64) {
        let seq = if w.sync_running && target <= w.running_upto {
            w.sync_seq
        } else {
            // Not in the running sync's batch: the next sync covers it.
            w.sync_seq + 1
        };
        let b = &self.board;
        let slot = &b.slots[(seq % 2) as usize];
        // Counted under the writer lock, so the finishing leader sees us.
        // A gathering leader watches this count.
        slot.waiting.fetch_add(1, Ordering::AcqRel);
        drop(w);
        loop {
            // Loaded before the checks: a wake-up after them moves the word,
            // and the sleep below then returns at once.
            let seen = slot.word.load();
            if b.done_seq.load(Ordering::SeqCst) >= seq || b.poisoned.load(Ordering::SeqCst) {
                break;
            }
            if b.handoff.load(Ordering::SeqCst) == seq
                && b.handoff
                    .compare_exchange(seq, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                break;
            }
            slot.word.wait(seen);
        }
        slot.waiting.fetch_sub(1, Ordering::AcqRel);
    }

    /// If several callers shared the last sync, waits (releasing the lock)
    /// until as many wait for the next one, so that one sync covers them
    /// all: for at most [`GATHER_MAX`], and no longer than
    /// [`GATHER_IDLE_MAX`] after the last caller joined. Others arriving
    /// meanwhile wait for the sync this thread then leads. Called while no
    /// sync runs.
    ///
    /// The leader yields its CPU while it waits instead of sleeping: the
    /// callers it waits for were just woken and need a CPU to append, and a
    /// leader put to sleep would need a wake-up of its own (tens of
    /// microseconds on a virtual machine) once the last one joined.
    fn gather<'a>(&'a self, mut w: MutexGuard<'a, Writer>) -> MutexGuard<'a, Writer> {
        let want = w.last_callers;
        if want <= 1 {
            return w;
        }
        let next = &self.board.slots[((w.sync_seq + 1) % 2) as usize];
        let deadline = Instant::now() + GATHER_MAX;
        w.gathering = true;
        drop(w);
        let (mut seen, mut last_join) = (0, Instant::now());
        loop {
            let joined = next.waiting.load(Ordering::Acquire);
            if joined + 1 >= want {
                break;
            }
            let now = Instant::now();
            if joined != seen {
                (seen, last_join) = (joined, now);
            }
            if now >= deadline || now - last_join >= GATHER_IDLE_MAX {
                break;
            }
            std::thread::yield_now();
        }
        let mut w = lock(&self.w);
        w.gathering = false;
        w
    }

    /// Wakes the threads waiting in slot `parity`, if any.
    fn wake(&self, parity: usize) {
        let slot = &self.board.slots[parity];
        if slot.waiting.load(Ordering::Acquire) > 0 {
            slot.word.bump_and_wake(true);
        }
    }

    /// Records that every change up to `upto` is durable or rolled back.
    fn set_synced_change(&self, w: &mut Writer, upto: u64) {
        w.synced_change = w.synced_change.max(upto);
        self.board
            .synced_change
            .store(w.synced_change, Ordering::Release);
    }

    /// Ends sync number `w.sync_seq` (under the writer lock): publishes it
    /// as done and, if threads wait for the next sync with changes to
    /// write, hands its lead to one of them. The returned [`Wakeup`] wakes
    /// them; run it after releasing the lock, so the woken threads do not
    /// find it taken.
    fn finish_sync(&self, w: &mut Writer) -> Wakeup {
        let seq = w.sync_seq;
        let b = &self.board;
        let covered = b.slots[(seq % 2) as usize].waiting.load(Ordering::Acquire);
        let next_waiting = b.slots[((seq + 1) % 2) as usize]
            .waiting
            .load(Ordering::Acquire);
        w.last_callers = 1 + covered + next_waiting;
        b.done_seq.store(seq, Ordering::SeqCst);
        let handoff = w.change > w.synced_change && next_waiting > 0;
        if handoff {
            b.handoff.store(seq + 1, Ordering::SeqCst);
        }
        Wakeup { seq, handoff }
    }

    /// Wakes what [`finish_sync`](Inner::finish_sync) said: the next
    /// sync's leader first (woken before the callers this sync covered, it
    /// runs before them where threads of equal priority queue in order),
    /// then every caller the sync covered, with one call.
    fn wakeup(&self, wk: Wakeup) {
        if wk.handoff {
            self.board.slots[((wk.seq + 1) % 2) as usize]
                .word
                .bump_and_wake(false);
        }
        self.wake((wk.seq % 2) as usize);
    }

    /// Writes and fsyncs the current batch, releasing the lock during the
    /// `fdatasync` so other threads can append (and readers read) meanwhile.
    /// Called only while no sync runs. Returns with the lock released (the
    /// callers it covered are woken after that).
    fn lead_sync(&self, mut w: MutexGuard<'_, Writer>) -> Result<()> {
        let flushed = self.flush(&mut w);
        let upto = w.change;
        // Counted as a sync even with nothing to write, so that every thread
        // waiting for "the next sync" is woken.
        w.sync_seq += 1;
        w.running_upto = upto;
        if let Err(err) = flushed {
            // The batch was rolled back (or the handle poisoned): nothing
            // up to `upto` is pending any more.
            self.set_synced_change(&mut w, upto);
            let wk = self.finish_sync(&mut w);
            drop(w);
            self.wakeup(wk);
            return Err(err);
        }
        let Some(_batch) = w.batch.take() else {
            self.set_synced_change(&mut w, upto);
            let wk = self.finish_sync(&mut w);
            drop(w);
            self.wakeup(wk);
            return Ok(());
        };
        let seg = w.active.clone().expect("a batch has an active segment");
        let captured_last = w.next_index - 1;
        w.truncated_below = u64::MAX;
        w.sync_running = true;
        drop(w);
        let started = Instant::now();
        let res = seg.file.sync_data();
        let mut w = lock(&self.w);
        w.sync_running = false;
        let out = match res {
            Ok(()) => {
                if let Some(m) = &self.options.metrics {
                    m.synced(started.elapsed());
                }
                let synced = captured_last.min(w.truncated_below);
                let mut r = write(&self.r);
                r.synced_last = r.synced_last.max(synced).min(w.next_index - 1);
                drop(r);
                self.set_synced_change(&mut w, upto);
                Ok(())
            }
            Err(e) => {
                // Never retry: the kernel may have dropped the dirty pages.
                let err = match Error::io("fdatasync", seg.path.clone(), e) {
                    Error::NoSpace { path } => Error::Io {
                        op: "fdatasync",
                        path,
                        source: no_space_io_error(),
                    },
                    other => other,
                };
                Err(self.poison(&mut w, err))
            }
        };
        let wk = self.finish_sync(&mut w);
        drop(w);
        self.wakeup(wk);
        out
    }

    /// Handles a failed write of the current batch: ENOSPC rolls the batch
    /// back (the log is as of the last sync); anything else poisons.
    fn fail_batch(&self, w: &mut Writer, err: Error) -> Error {
        if !matches!(err, Error::NoSpace { .. }) {
            return self.poison(w, err);
        }
        let batch = w.batch.take().expect("writes happen inside a batch");
        let seg = w.active.clone().expect("batch has an active segment");
        // Scrub what the failed write may have left so it can never be
        // replayed as records, then give back any space it took.
        let scrub_end = batch.dirty_end.min(batch.start_file_len);
        let scrub = (|| -> std::io::Result<()> {
            if scrub_end > batch.start_offset {
                let zeros = vec![0u8; (scrub_end - batch.start_offset) as usize];
                seg.file.write_at(&zeros, batch.start_offset)?;
            }
            if seg.file.len()? > batch.start_file_len {
                seg.file.set_len(batch.start_file_len)?;
            }
            seg.file.sync_data()
        })();
        seg.invalidate_view();
        if let Err(e) = scrub {
            return self.poison(w, Error::io("rollback", seg.path.clone(), e));
        }
        seg.set_written(batch.start_offset);
        seg.set_file_len(batch.start_file_len);
        w.pending.clear();
        w.pending_locs.clear();
        {
            let mut r = write(&self.r);
            self.generation.fetch_add(1, Ordering::AcqRel);
            r.index.truncate_from(batch.low + 1);
            for loc in batch.stash {
                r.index.push(loc);
            }
            w.next_index = r.index.last_index() + 1;
            // The batch's truncations lowered it; a sync that finished
            // meanwhile may have raised it.
            r.synced_last = r
                .synced_last
                .max(batch.base_synced_last)
                .min(w.next_index - 1);
        }
        if let Some(m) = batch.base_metadata {
            w.metadata = m;
        }
        w.marker = batch.base_marker;
        let discarded = w.change - batch.base_change;
        w.rolled_back.push((batch.base_change, w.change));
        // Waiters must now look for their change in `rolled_back`.
        self.board.troubled.store(true, Ordering::Release);
        if let Some(m) = &self.options.metrics {
            m.rolled_back(discarded);
        }
        tracing::warn!(dir = %self.dir.display(), discarded, "disk full: discarded the unsynced batch");
        err
    }

    /// Takes the prepared next segment file, preparing it now if needed.
    /// On error nothing has changed (a failed fsync poisons).
    fn take_prealloc(&self, w: &mut Writer) -> Result<Arc<dyn FsFile>> {
        let state = std::mem::replace(&mut w.prealloc, Prealloc::Idle).settle();
        if let Prealloc::Ready(file) = state {
            return Ok(file.into());
        }
        let size = match self.options.preallocate {
            Preallocate::None => 0,
            _ => self.options.segment_size_bytes,
        };
        match prealloc::prepare(self.fs.as_ref(), &self.dir, size) {
            Ok(file) => Ok(file.into()),
            Err(err @ Error::NoSpace { .. }) => Err(err),
            Err(err) => Err(self.poison(w, err)),
        }
    }

    /// Starts preparing the segment after the one just opened.
    fn start_prealloc(&self, w: &mut Writer) -> Result<()> {
        let size = self.options.segment_size_bytes;
        match self.options.preallocate {
            Preallocate::None => Ok(()),
            Preallocate::Background => {
                w.prealloc = prealloc::spawn(self.fs.clone(), self.dir.clone(), size);
                Ok(())
            }
            Preallocate::Inline => {
                match prealloc::prepare(self.fs.as_ref(), &self.dir, size) {
                    Ok(file) => w.prealloc = Prealloc::Ready(file),
                    // Not an error yet: the next rotation retries and reports it.
                    Err(Error::NoSpace { .. }) => {
                        tracing::warn!(dir = %self.dir.display(), "no space to preallocate the next segment");
                    }
                    Err(err) => return Err(self.poison(w, err)),
                }
                Ok(())
            }
        }
    }

    /// Seals the active segment (if any) and starts the next one.
    fn rotate(&self, w: &mut Writer) -> Result<()> {
        let next_file = self.take_prealloc(w)?;
        if let Some(seg) = w.active.clone() {
            let mut seal = Vec::new();
            format::encode_seal(&mut seal, seg.seq);
            let at = seg.written();
            if let Err(e) = seg.file.write_at(&seal, at) {
                let err = Error::io("write", seg.path.clone(), e);
                return Err(match err {
                    // A partial seal is a torn tail; the next write overwrites it.
                    Error::NoSpace { .. } => err,
                    other => self.poison(w, other),
                });
            }
            if let Err(e) = seg.file.sync_data() {
                let err = Error::io("fdatasync", seg.path.clone(), e);
                return Err(self.poison(w, err));
            }
            seg.set_written(at + seal.len() as u64);
            seg.set_file_len(seg.file_len().max(seg.written()));
            seg.set_sealed();
            w.active = None;
        }
        let seq = w.last_seq + 1;
        let first_index = w.next_index;
        let path = self.dir.join(format::segment_name(seq, first_index));
        let from = self.dir.join(PREALLOC_FILE);
        let mut head = Vec::new();
        format::encode_header(&mut head, seq, first_index);
        // Like the metadata, so deleting older segments never loses them.
        format::encode_metadata(&mut head, seq, &w.metadata);
        if let Some(marker) = w.marker {
            format::encode_snapshot_marker(&mut head, seq, marker);
        }
        let res = (|| -> Result<()> {
            self.fs
                .rename(&from, &path)
                .map_err(|e| Error::io("rename", &path, e))?;
            next_file
                .write_at(&head, 0)
                .map_err(|e| Error::io("write", &path, e))?;
            next_file
                .sync_data()
                .map_err(|e| Error::io("fdatasync", &path, e))?;
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("sync_dir", &self.dir, e))
        })();
        if let Err(err) = res {
            return Err(self.poison(w, err));
        }
        let seg = Segment::new(seq, path, next_file);
        seg.set_written(head.len() as u64);
        let file_len = match self.options.preallocate {
            Preallocate::None => head.len() as u64,
            _ => self.options.segment_size_bytes.max(head.len() as u64),
        };
        seg.set_file_len(file_len);
        let seg = Arc::new(seg);
        tracing::debug!(seq, first_index, "started WAL segment");
        write(&self.r).segments.push_back(seg.clone());
        w.active = Some(seg);
        w.last_seq = seq;
        if let Some(m) = &self.options.metrics {
            m.segment_created(seq);
        }
        self.start_prealloc(w)
    }

    /// Syncs, then makes `index` the durable first index and deletes the
    /// segments holding only entries before it. `index` may pass the end
    /// (the next append then gets `index`).
    fn compact(&self, w: MutexGuard<'_, Writer>, index: u64) -> Result<()> {
        let (target, from) = (w.change, w.synced_change);
        let mut w = self.sync_to(w, target, from)?;
        if index <= w.first_index {
            return Ok(());
        }
        self.write_meta(&mut w, index)?;
        {
            let mut r = write(&self.r);
            self.generation.fetch_add(1, Ordering::AcqRel);
            r.index.compact_to(index);
            r.synced_last = r.synced_last.max(index - 1);
        }
        w.first_index = index;
        w.next_index = w.next_index.max(index);
        self.remove_obsolete_segments(&mut w)
    }

    /// Atomically replaces the meta file: temp write, fsync, rename, dir fsync.
    fn write_meta(&self, w: &mut Writer, first_index: u64) -> Result<()> {
        let tmp = self.dir.join(META_TMP_FILE);
        let dst = self.dir.join(META_FILE);
        let _ = self.fs.remove_file(&tmp);
        let file = self
            .fs
            .open(&tmp, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", &tmp, e))?;
        let meta = format::encode_meta(first_index, w.marker);
        if let Err(e) = file.write_at(&meta, 0) {
            drop(file);
            let _ = self.fs.remove_file(&tmp);
            return Err(Error::io("write", &tmp, e));
        }
        let res = (|| {
            file.sync_data()
                .map_err(|e| Error::io("fdatasync", &tmp, e))?;
            self.fs
                .rename(&tmp, &dst)
                .map_err(|e| Error::io("rename", &dst, e))?;
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("sync_dir", &self.dir, e))
        })();
        res.map_err(|err| self.poison(w, err))
    }

    /// Deletes leading segments that hold no live entry (never the last one),
    /// with one directory sync for all of them.
    ///
    /// The files are closed on a background thread: closing the last handle
    /// of an unlinked file is when the kernel drops its cached pages and frees
    /// its blocks, about 20 ms per 64 MiB segment on ext4, which a caller
    /// compacting a dozen segments should not wait for. Durability does not
    /// depend on it (nor on the unlinks: recovery skips segments that hold
    /// only entries before the durable first index).
    fn remove_obsolete_segments(&self, w: &mut Writer) -> Result<()> {
        let mut removed = Vec::new();
        let res = loop {
            let seg = {
                let mut r = write(&self.r);
                let Some(last_seq) = r.segments.back().map(|s| s.seq) else {
                    break Ok(());
                };
                let needed = r.index.first_seq().unwrap_or(last_seq).min(last_seq);
                if r.segments.front().is_none_or(|s| s.seq >= needed) {
                    break Ok(());
                }
                r.segments.pop_front().expect("checked")
            };
            // A held mapping would keep the deleted file's blocks allocated.
            let mut held = self
                .last_sealed_view
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if held.as_ref().is_some_and(|(seq, _)| *seq == seg.seq) {
                *held = None;
            }
            drop(held);
            if let Err(e) = self.fs.remove_file(&seg.path) {
                break Err(Error::io("remove", &seg.path, e));
            }
            removed.push(seg);
        };
        let res = res.and_then(|()| {
            if removed.is_empty() {
                return Ok(());
            }
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("sync_dir", &self.dir, e))
        });
        for seg in &removed {
            if let Some(m) = &self.options.metrics {
                m.segment_removed(seg.seq);
            }
            tracing::debug!(seq = seg.seq, "deleted compacted WAL segment");
        }
        close_in_background(removed);
        res.map_err(|err| self.poison(w, err))
    }
}

/// Drops `segments` (closing their files) on a short-lived thread, or here if
/// no thread can be started.
fn close_in_background(segments: Vec<Arc<Segment>>) {
    if segments.is_empty() {
        return;
    }
    let closer = std::thread::Builder::new().name("wal-close".into());
    if let Err(e) = closer.spawn(move || drop(segments)) {
        tracing::debug!(error = %e, "no thread to close removed segments on; closing them here");
    }
}

/// A read-only handle on a [`Log`] for other threads: `Clone + Send + Sync`.
///
/// It sees only synced entries (`[first_index, last_synced_index]`) and
/// never waits for an fsync in progress: a writer holds no lock a reader
/// needs while it syncs.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let log = raft_wal::Log::open(dir.path(), Default::default()).unwrap();
/// let reader = log.reader();
/// log.append(b"unsynced").unwrap();
/// assert_eq!(reader.iter(..).unwrap().count(), 0);
/// log.sync().unwrap();
/// let t = std::thread::spawn(move || reader.read(1).unwrap().to_vec());
/// assert_eq!(t.join().unwrap(), b"unsynced");
/// ```
#[derive(Clone)]
pub struct LogReader {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("dir", &self.inner.dir)
            .finish()
    }
}

impl LogReader {
    /// First index held.
    pub fn first_index(&self) -> u64 {
        read(&self.inner.r).index.first_index()
    }

    /// Last durable index; what this reader can see.
    pub fn last_synced_index(&self) -> u64 {
        read(&self.inner.r).synced_last
    }

    /// The synced entry at `index`.
    pub fn read(&self, index: u64) -> Result<LogEntry> {
        match self.iter(index..=index)?.next() {
            Some(e) => e,
            None => Err(self.inner.out_of_range(index, true)),
        }
    }

    /// Iterates over synced entries in `range`, which must lie within
    /// `[first_index, last_synced_index]`; see [`Log::iter`].
    pub fn iter(&self, range: impl RangeBounds<u64>) -> Result<Iter> {
        let (first, last) = {
            let r = read(&self.inner.r);
            (r.index.first_index(), r.synced_last)
        };
        Iter::new(self.inner.clone(), range, first, last, true)
    }
}

/// One entry read from the log. Its payload is borrowed from the segment's
/// memory map where possible (no copy); [`to_vec`](LogEntry::to_vec) copies.
/// A `LogEntry` keeps its mapping alive, so it may outlive the iterator.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let log = raft_wal::Log::open(dir.path(), Default::default()).unwrap();
/// log.append_sync(b"payload").unwrap();
/// let e = log.read(1).unwrap();
/// assert_eq!((e.index(), e.data()), (1, &b"payload"[..]));
/// let owned: Vec<u8> = e.into_vec();
/// # assert_eq!(owned, b"payload");
/// ```
#[derive(Clone)]
pub struct LogEntry {
    index: u64,
    payload: Payload,
}

#[derive(Clone)]
enum Payload {
    Mapped {
        map: Mapping,
        start: usize,
        len: usize,
    },
    Owned(Vec<u8>),
}

impl std::fmt::Debug for LogEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogEntry")
            .field("index", &self.index)
            .field("len", &self.data().len())
            .finish()
    }
}

impl LogEntry {
    /// The entry's index.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The entry's bytes.
    pub fn data(&self) -> &[u8] {
        match &self.payload {
            Payload::Mapped { map, start, len } => &map.bytes()[*start..*start + *len],
            Payload::Owned(v) => v,
        }
    }

    /// A copy of the entry's bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        self.data().to_vec()
    }

    /// The entry's bytes, copied only if they are borrowed from a mapping.
    pub fn into_vec(self) -> Vec<u8> {
        match self.payload {
            Payload::Owned(v) => v,
            Payload::Mapped { .. } => self.to_vec(),
        }
    }
}

impl AsRef<[u8]> for LogEntry {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

/// Entries fetched from the index per lock of it.
const ITER_CHUNK: usize = 256;

/// An iterator over log entries; see [`Log::iter`].
pub struct Iter {
    inner: Arc<Inner>,
    next: u64,
    end: u64,
    reader: bool,
    buf: VecDeque<(u64, Loc)>,
    /// The segments the entries in `buf` live in, ascending, each once.
    segs: VecDeque<Arc<Segment>>,
    view: Option<(u64, Mapping, u64)>,
    /// `synced_last` when `buf` was filled: entries at or below it never
    /// change on disk, so their payloads can stay borrowed.
    synced: u64,
    /// The log's generation when `buf` was filled.
    generation: u64,
}

impl std::fmt::Debug for Iter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter")
            .field("next", &self.next)
            .field("end", &self.end)
            .finish()
    }
}

impl Iter {
    fn new(
        inner: Arc<Inner>,
        range: impl RangeBounds<u64>,
        first: u64,
        last: u64,
        reader: bool,
    ) -> Result<Iter> {
        let lo = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => first,
        };
        let hi = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => last + 1,
        };
        if lo < hi {
            for i in [lo, hi - 1] {
                if i < first || i > last {
                    return Err(Error::OutOfRange {
                        index: i,
                        first_index: first,
                        last_index: last,
                    });
                }
            }
        } else if lo < first || lo > last + 1 {
            return Err(Error::OutOfRange {
                index: lo,
                first_index: first,
                last_index: last,
            });
        }
        Ok(Iter {
            inner,
            next: lo,
            end: hi.max(lo),
            reader,
            buf: VecDeque::new(),
            segs: VecDeque::new(),
            view: None,
            synced: 0,
            generation: 0,
        })
    }

    fn refill(&mut self) -> Result<()> {
        self.segs.clear();
        self.buf.clear();
        let r = read(&self.inner.r);
        // Read under the lock, so no change to the index slips in between.
        self.generation = self.inner.generation.load(Ordering::Acquire);
        self.synced = r.synced_last;
        let limit = if self.reader {
            r.synced_last.saturating_add(1).min(self.end)
        } else {
            self.end
        };
        let Some(locs) = r.index.iter_from(self.next) else {
            return Err(Error::OutOfRange {
                index: self.next,
                first_index: r.index.first_index(),
                last_index: r.index.last_index(),
            });
        };
        let wanted = limit.saturating_sub(self.next).min(ITER_CHUNK as u64) as usize;
        for (i, loc) in (self.next..).zip(locs.take(wanted)) {
            if self.segs.back().is_none_or(|s| s.seq != loc.seq) {
                let seg = r.segment(loc.seq).expect("live entries have segments");
                self.segs.push_back(seg.clone());
            }
            self.buf.push_back((i, loc));
        }
        if self.buf.is_empty() {
            // Truncated meanwhile (or, for a reader, no longer synced).
            self.end = self.next;
        }
        Ok(())
    }

    /// Decodes entry `index` at `loc` and passes its payload (and mapping)
    /// to `f`.
    #[inline]
    fn with_entry<T>(
        &mut self,
        index: u64,
        loc: &Loc,
        f: impl FnOnce(&Mapping, &[u8], u64) -> T,
    ) -> Result<T> {
        while self.segs.front().is_some_and(|s| s.seq < loc.seq) {
            self.segs.pop_front();
        }
        let seg = self.segs.front().expect("buffered entries have segments");
        // The index does not keep lengths: the view must show the record's
        // header, which gives the length, and then the whole record.
        let held = &self.inner.last_sealed_view;
        ensure_view(
            &mut self.view,
            held,
            seg,
            loc.offset + format::RECORD_HEADER_BYTES as u64,
        )?;
        let end = {
            let (_, map, _) = self.view.as_ref().expect("ensured");
            loc.offset + format::record_bytes_at(map.bytes(), loc.offset as usize) as u64
        };
        if let Err(e) = ensure_view(&mut self.view, held, seg, end) {
            if map_too_short(&e) {
                // The header claims more bytes than the segment holds.
                return Err(Error::corruption(
                    &seg.path,
                    loc.offset,
                    CorruptionKind::BadLength {
                        len: end - loc.offset,
                    },
                ));
            }
            return Err(e);
        }
        let (_, map, _) = self.view.as_ref().expect("ensured");
        let off = loc.offset as usize;
        match format::decode(map.bytes(), off, seg.seq) {
            Decoded::Record(
                Record::Entry {
                    index: got,
                    term,
                    data,
                },
                _,
            ) if got == index && term == loc.term => Ok(f(map, data, term)),
            Decoded::Invalid(kind) => Err(Error::corruption(&seg.path, loc.offset, kind)),
            _ => Err(Error::corruption(
                &seg.path,
                loc.offset,
                CorruptionKind::BadPayload,
            )),
        }
    }

    fn read_one(&mut self, index: u64, loc: &Loc) -> Result<LogEntry> {
        let synced = self.synced;
        self.with_entry(index, loc, |map, data, _term| {
            // Unsynced bytes can be rolled back (and the file shrunk) under
            // a mapping: copy them; synced ones never change.
            let payload = if index <= synced || !map.is_live() {
                let start = data.as_ptr() as usize - map.bytes().as_ptr() as usize;
                Payload::Mapped {
                    map: map.clone(),
                    start,
                    len: data.len(),
                }
            } else {
                Payload::Owned(data.to_vec())
            };
            LogEntry { index, payload }
        })
    }

    /// The next entry handed to `f` as `(index, term, data)` without making
    /// a [`LogEntry`] (for callers that copy the bytes anyway).
    #[inline]
    pub(crate) fn next_with<T>(
        &mut self,
        f: impl FnOnce(u64, u64, &[u8]) -> T,
    ) -> Option<Result<T>> {
        let (index, loc) = match self.advance()? {
            Ok(x) => x,
            Err(e) => return Some(Err(e)),
        };
        let out = self.with_entry(index, &loc, |_, data, term| f(index, term, data));
        if out.is_err() {
            self.end = self.next;
        }
        Some(out)
    }

    /// The location of the next entry, refilling the buffer as needed.
    #[inline]
    fn advance(&mut self) -> Option<Result<(u64, Loc)>> {
        if self.next >= self.end {
            return None;
        }
        let stale = self.inner.generation.load(Ordering::Acquire) != self.generation;
        if self.buf.is_empty() || stale {
            if let Err(e) = self.refill() {
                self.end = self.next;
                return Some(Err(e));
            }
        }
        let (index, loc) = self.buf.pop_front()?;
        self.next = index + 1;
        Some(Ok((index, loc)))
    }
}

impl Iterator for Iter {
    type Item = Result<LogEntry>;

    fn next(&mut self) -> Option<Result<LogEntry>> {
        let (index, loc) = match self.advance()? {
            Ok(x) => x,
            Err(e) => return Some(Err(e)),
        };
        let out = self.read_one(index, &loc);
        if out.is_err() {
            self.end = self.next;
        }
        Some(out)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, usize::try_from(self.end - self.next).ok())
    }
}

/// Makes `view` a view of `seg` that shows at least its first `end` bytes,
/// mapping the segment again if it does not; a sealed segment's new mapping
/// is also kept in `held` (see `Inner::last_sealed_view`).
#[inline(always)]
fn ensure_view(
    view: &mut Option<(u64, Mapping, u64)>,
    held: &Mutex<Option<(u64, Mapping)>>,
    seg: &Segment,
    end: u64,
) -> Result<()> {
    let reusable = matches!(view, Some((seq, m, valid)) if *seq == seg.seq
        && end <= *valid && end <= m.bytes().len() as u64);
    if reusable {
        return Ok(());
    }
    remap_view(view, held, seg, end)
}

/// The slow path of [`ensure_view`].
#[inline(never)]
fn remap_view(
    view: &mut Option<(u64, Mapping, u64)>,
    held: &Mutex<Option<(u64, Mapping)>>,
    seg: &Segment,
    end: u64,
) -> Result<()> {
    let (m, valid) = seg
        .view(end)
        .map_err(|e| Error::io("map", seg.path.clone(), e))?;
    if seg.sealed() && m.is_live() {
        *held.lock().unwrap_or_else(|e| e.into_inner()) = Some((seg.seq, m.clone()));
    }
    *view = Some((seg.seq, m, valid));
    Ok(())
}

/// Whether `e` says a segment is shorter than a read needed.
fn map_too_short(e: &Error) -> bool {
    matches!(e, Error::Io { op: "map", source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_seq(log: &Log) -> Option<u64> {
        let held = log.inner.last_sealed_view.lock().unwrap();
        held.as_ref().map(|(seq, _)| *seq)
    }

    fn seq_of(log: &Log, index: u64) -> u64 {
        read(&log.inner.r).index.get(index).unwrap().seq
    }

    /// The index keeps no record lengths: a read takes the length from the
    /// record's header, so a header damaged after the open must be reported
    /// as corruption at that offset, whatever length it claims.
    #[test]
    fn a_record_length_damaged_after_open_is_corruption_on_read() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default()).unwrap();
        log.append_batch([&b"one"[..], b"two", b"three"]).unwrap();
        log.sync().unwrap();
        let loc = read(&log.inner.r).index.get(2).unwrap();
        let path = read(&log.inner.r).segment(loc.seq).unwrap().path.clone();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        for len in [4u32, 1 << 27] {
            let len_kind = ((format::Kind::Entry as u32) << 28) | len;
            file.write_all_at(&len_kind.to_le_bytes(), loc.offset + 4)
                .unwrap();
            match log.read(2) {
                Err(Error::Corruption { offset, .. }) => {
                    assert_eq!(offset, loc.offset, "len {len}")
                }
                other => panic!("len {len}: expected corruption, got {other:?}"),
            }
        }
        assert_eq!(log.read(3).unwrap().data(), b"three");
    }

    #[test]
    fn the_sealed_segment_read_last_stays_mapped_until_another_is_read_or_it_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogOptions::default().segment_size_bytes(4096)).unwrap();
        for _ in 0..40 {
            // Segments roll over at a sync.
            log.append_sync(&[5u8; 1000]).unwrap();
        }
        let last = log.last_index();
        let (a, b) = (seq_of(&log, 1), seq_of(&log, 9));
        assert!(a < b && b < seq_of(&log, last), "three segments at least");

        // The active segment keeps its own view; nothing is held for it.
        log.read(last).unwrap();
        assert_eq!(held_seq(&log), None);
        log.read(1).unwrap();
        assert_eq!(held_seq(&log), Some(a), "held for the next read of it");
        log.read(9).unwrap();
        assert_eq!(held_seq(&log), Some(b), "one sealed segment at a time");

        // Compacting its segment away lets it go (the file's blocks with it).
        log.compact_before(seq_first_index_after(&log, b)).unwrap();
        assert_eq!(held_seq(&log), None);
    }

    /// The first index past segment `seq`.
    fn seq_first_index_after(log: &Log, seq: u64) -> u64 {
        (log.first_index()..=log.last_index())
            .find(|&i| seq_of(log, i) > seq)
            .unwrap()
    }
}
