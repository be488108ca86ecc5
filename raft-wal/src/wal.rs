//! The write-ahead log handle: appends, group commit, truncation, compaction
//! and reads.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{CorruptionKind, Error, Result};
use crate::format::{self, Decoded, Record, SnapshotMarker, ENTRY_PREFIX_BYTES, MAX_PAYLOAD_BYTES};
use crate::fs::{Fs, OpenMode, StdFs};
use crate::index::{Loc, LogIndex};
use crate::prealloc::{self, Prealloc};
use crate::recovery::{self, RecoveryReport, META_FILE, META_TMP_FILE, PREALLOC_FILE};
use crate::segment::Segment;
use crate::types::{Entry, HardState};

/// Tuning knobs for [`Wal::open`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Target size of a segment file; a new segment starts once the active one
    /// reaches it. Default 64 MiB.
    pub segment_size_bytes: u64,
    /// Buffered bytes after which an unsynced batch is written to the file
    /// (still without fsync) to bound memory. Default 4 MiB.
    pub flush_threshold_bytes: usize,
    /// Open without changing anything on disk; every write call fails.
    pub read_only: bool,
    /// Prepare (zero-fill and fsync) the next segment on a background thread.
    /// Turn off for fully deterministic I/O, e.g. under a fault-injecting
    /// file system. Default true.
    pub preallocate_in_background: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            segment_size_bytes: 64 << 20,
            flush_threshold_bytes: 4 << 20,
            read_only: false,
            preallocate_in_background: true,
        }
    }
}

/// A segment's read view cached across the entries of one range read.
struct View {
    seq: u64,
    mapping: crate::fs::Mapping,
    valid: u64,
}

/// Undo information for the changes made since the last successful sync.
struct Batch {
    /// Hard state before the batch.
    base_hard_state: HardState,
    /// Snapshot marker before the batch.
    base_marker: Option<SnapshotMarker>,
    /// The index entries `(low, base_last]` of the log before the batch were
    /// truncated by this batch and are kept here, ascending, to put back.
    low: u64,
    stash: Vec<Loc>,
    /// Write head and file length of the active segment when the batch began.
    start_offset: u64,
    start_file_len: u64,
    /// Furthest byte any write of this batch reached.
    dirty_end: u64,
}

/// A segmented, checksummed write-ahead log of `(index, term, data)` entries
/// plus a [`HardState`].
///
/// Changes (append, hard state, truncation) are buffered into a batch and made
/// durable together by [`sync`](Wal::sync), which costs one `fdatasync`.
/// Reads see buffered changes immediately. See the crate docs for an example.
pub struct Wal {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    options: Options,
    _lock: Box<dyn Send + Sync>,
    segments: VecDeque<Segment>,
    index: LogIndex,
    hard_state: HardState,
    snapshot_marker: Option<SnapshotMarker>,
    /// Encoded records not yet written to the active segment.
    pending: Vec<u8>,
    batch: Option<Batch>,
    prealloc: Prealloc,
    poisoned: Option<String>,
    report: RecoveryReport,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("first_index", &self.first_index())
            .field("last_index", &self.last_index())
            .field("hard_state", &self.hard_state)
            .field("segments", &self.segments.len())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // The preparation thread writes in our directory: finish it before the
        // lock is released.
        let _ = std::mem::replace(&mut self.prealloc, Prealloc::Idle).settle();
    }
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Wal> {
        Wal::open_with_fs(Arc::new(StdFs), dir, options)
    }

    /// Opens the WAL in `dir` through `fs` (for example a
    /// [`FaultFs`](crate::fault::FaultFs) in tests).
    pub fn open_with_fs(fs: Arc<dyn Fs>, dir: impl AsRef<Path>, options: Options) -> Result<Wal> {
        let dir = dir.as_ref().to_path_buf();
        if options.segment_size_bytes < 4096 {
            return Err(Error::InvalidArgument(
                "segment_size_bytes must be at least 4096".into(),
            ));
        }
        if !options.read_only {
            fs.create_dir_all(&dir)
                .map_err(|e| Error::io("create_dir", &dir, e))?;
        }
        let lock = fs
            .lock_dir(&dir, !options.read_only)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::WouldBlock => Error::Locked { dir: dir.clone() },
                _ => Error::io("lock", &dir, e),
            })?;
        let rec = recovery::recover(fs.as_ref(), &dir, options.read_only, None)?;
        let mut wal = Wal {
            fs,
            dir,
            options,
            _lock: lock,
            segments: rec.segments,
            index: rec.index,
            hard_state: rec.hard_state,
            snapshot_marker: rec.snapshot_marker,
            pending: Vec::new(),
            batch: None,
            prealloc: Prealloc::Idle,
            poisoned: None,
            report: rec.report,
        };
        tracing::info!(
            dir = %wal.dir.display(),
            first_index = wal.first_index(),
            last_index = wal.last_index(),
            segments = wal.segments.len(),
            torn_tail = wal.report.torn_tail.is_some(),
            "opened WAL"
        );
        if !wal.options.read_only {
            // Finish a compaction that was cut short before its deletes.
            wal.remove_obsolete_segments()?;
        }
        Ok(wal)
    }

    /// What recovery found when this handle was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The directory this WAL lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// First index held (1 for a new log, or one past the compaction point).
    pub fn first_index(&self) -> u64 {
        self.index.first_index()
    }

    /// Last index held; `first_index() - 1` when the log is empty.
    pub fn last_index(&self) -> u64 {
        self.index.last_index()
    }

    /// The newest hard state, including one set but not yet synced.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// True if there are changes that the next [`sync`](Wal::sync) will make durable.
    pub fn has_unsynced(&self) -> bool {
        self.batch.is_some()
    }

    fn check_writable(&self) -> Result<()> {
        self.check_usable()?;
        if self.options.read_only {
            return Err(Error::InvalidArgument(
                "the WAL was opened read-only".into(),
            ));
        }
        Ok(())
    }

    fn check_usable(&self) -> Result<()> {
        match &self.poisoned {
            Some(cause) => Err(Error::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Records `err` as the reason this handle is unusable, and returns it.
    fn poison(&mut self, err: Error) -> Error {
        if self.poisoned.is_none() {
            tracing::error!(dir = %self.dir.display(), error = %err, "WAL poisoned");
            self.poisoned = Some(err.to_string());
        }
        err
    }

    fn active(&self) -> Option<&Segment> {
        self.segments.back().filter(|s| !s.sealed)
    }

    fn active_mut(&mut self) -> Option<&mut Segment> {
        self.segments.back_mut().filter(|s| !s.sealed)
    }

    /// Opens a batch if none is open, starting a new segment first if the
    /// active one is full. On error nothing has changed.
    fn begin_batch(&mut self) -> Result<()> {
        if self.batch.is_some() {
            return Ok(());
        }
        let full = match self.active() {
            None => true,
            Some(s) => s.written >= self.options.segment_size_bytes,
        };
        if full {
            self.rotate()?;
        }
        let seg = self.active().expect("rotate leaves an active segment");
        let start_file_len = seg.file_len;
        self.batch = Some(Batch {
            base_hard_state: self.hard_state,
            base_marker: self.snapshot_marker,
            low: self.index.last_index(),
            stash: Vec::new(),
            start_offset: seg.written,
            start_file_len,
            dirty_end: seg.written,
        });
        Ok(())
    }

    fn active_seq_and_head(&self) -> (u64, u64) {
        let seg = self.active().expect("a batch has an active segment");
        (seg.seq, seg.written + self.pending.len() as u64)
    }

    /// Buffers entry `index` (which must be `last_index() + 1`). Durable after
    /// the next [`sync`](Wal::sync); readable at once.
    pub fn append(&mut self, index: u64, term: u64, data: &[u8]) -> Result<()> {
        self.check_writable()?;
        let expected = self.last_index() + 1;
        if index != expected {
            return Err(Error::InvalidArgument(format!(
                "append of index {index}, but the next index is {expected}"
            )));
        }
        if data.len() > MAX_PAYLOAD_BYTES - ENTRY_PREFIX_BYTES {
            return Err(Error::InvalidArgument(format!(
                "entry of {} bytes exceeds the limit of {} bytes",
                data.len(),
                MAX_PAYLOAD_BYTES - ENTRY_PREFIX_BYTES
            )));
        }
        self.begin_batch()?;
        let (seq, offset) = self.active_seq_and_head();
        format::encode_entry(&mut self.pending, seq, index, term, data);
        self.index.push(Loc {
            seq,
            offset,
            term,
            data_len: data.len() as u32,
        });
        if self.pending.len() >= self.options.flush_threshold_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// Buffers a batch of entries; see [`append`](Wal::append).
    pub fn append_entries(&mut self, entries: &[Entry]) -> Result<()> {
        for e in entries {
            self.append(e.index, e.term, &e.data)?;
        }
        Ok(())
    }

    /// Buffers a new hard state. Setting the current value again does nothing,
    /// so it costs no sync.
    pub fn set_hard_state(&mut self, hard_state: HardState) -> Result<()> {
        self.check_writable()?;
        if hard_state == self.hard_state {
            return Ok(());
        }
        self.begin_batch()?;
        let (seq, _) = self.active_seq_and_head();
        format::encode_hard_state(&mut self.pending, seq, &hard_state);
        self.hard_state = hard_state;
        Ok(())
    }

    /// Discards every entry at or above `from` (a Raft log conflict). Buffered
    /// like an append: durable, as one atomic step, at the next
    /// [`sync`](Wal::sync). `from` must lie in `[first_index, last_index + 1]`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let mut wal = raft_wal::Wal::open(dir.path(), Default::default()).unwrap();
    /// for i in 1..=5 { wal.append(i, 1, b"old").unwrap(); }
    /// wal.sync().unwrap();
    /// // A new leader's log disagrees from index 4 on.
    /// wal.truncate_suffix(4).unwrap();
    /// wal.append(4, 2, b"new").unwrap();
    /// wal.sync().unwrap(); // truncation and append become durable together
    /// assert_eq!((wal.last_index(), wal.term(4).unwrap()), (4, Some(2)));
    /// ```
    pub fn truncate_suffix(&mut self, from: u64) -> Result<()> {
        self.check_writable()?;
        let (first, last) = (self.first_index(), self.last_index());
        if from < first || from > last + 1 {
            return Err(Error::InvalidArgument(format!(
                "truncate_suffix({from}) outside [{first}, {}]",
                last + 1
            )));
        }
        if from == last + 1 {
            return Ok(());
        }
        self.begin_batch()?;
        let (seq, _) = self.active_seq_and_head();
        format::encode_truncate(&mut self.pending, seq, from);
        let popped = self.index.truncate_from(from);
        let batch = self.batch.as_mut().expect("batch begun");
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

    /// Writes buffered records to the active segment without syncing.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let at = self
            .active()
            .expect("pending records belong to a segment")
            .written;
        let end = at + self.pending.len() as u64;
        if let Some(b) = self.batch.as_mut() {
            b.dirty_end = b.dirty_end.max(end);
        }
        let seg = self.active().expect("checked above");
        match seg.file.write_at(&self.pending, at) {
            Ok(()) => {
                let seg = self.active_mut().expect("active");
                seg.written = end;
                seg.file_len = seg.file_len.max(end);
                self.pending.clear();
                Ok(())
            }
            Err(e) => {
                let err = Error::io("write", seg.path.clone(), e);
                Err(self.fail_batch(err))
            }
        }
    }

    /// Makes every buffered change durable with one `fdatasync`. Does nothing
    /// if nothing changed since the last sync.
    ///
    /// On [`Error::NoSpace`] every change since the last successful sync is
    /// discarded and the handle stays usable. Any other failure poisons it.
    pub fn sync(&mut self) -> Result<()> {
        self.check_writable()?;
        if self.batch.is_none() {
            return Ok(());
        }
        self.flush()?;
        let seg = self.active().expect("a batch has an active segment");
        if let Err(e) = seg.file.sync_data() {
            let err = Error::io("fdatasync", seg.path.clone(), e);
            // Never retry: the kernel may have dropped the dirty pages.
            let err = match err {
                Error::NoSpace { path } => Error::Io {
                    op: "fdatasync",
                    path,
                    source: std::io::Error::from_raw_os_error(libc::ENOSPC),
                },
                other => other,
            };
            return Err(self.poison(err));
        }
        self.batch = None;
        Ok(())
    }

    /// Handles a failed write of the current batch: ENOSPC rolls the batch
    /// back (the log is as of the last sync); anything else poisons.
    fn fail_batch(&mut self, err: Error) -> Error {
        if !matches!(err, Error::NoSpace { .. }) {
            return self.poison(err);
        }
        let batch = self.batch.take().expect("writes happen inside a batch");
        let seg = self.active().expect("batch has an active segment");
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
            let path = seg.path.clone();
            return self.poison(Error::io("rollback", path, e));
        }
        let seg = self.active_mut().expect("active");
        seg.written = batch.start_offset;
        seg.file_len = batch.start_file_len;
        self.pending.clear();
        self.index.truncate_from(batch.low + 1);
        for loc in batch.stash {
            self.index.push(loc);
        }
        self.hard_state = batch.base_hard_state;
        self.snapshot_marker = batch.base_marker;
        tracing::warn!(dir = %self.dir.display(), "disk full: discarded the unsynced batch");
        err
    }

    /// Takes the prepared next segment file, preparing it now if needed.
    /// On error nothing has changed (a failed fsync poisons).
    fn take_prealloc(&mut self) -> Result<Box<dyn crate::fs::FsFile>> {
        let state = std::mem::replace(&mut self.prealloc, Prealloc::Idle).settle();
        if let Prealloc::Ready(file) = state {
            return Ok(file);
        }
        match prealloc::prepare(self.fs.as_ref(), &self.dir, self.options.segment_size_bytes) {
            Ok(file) => Ok(file),
            Err(err @ Error::NoSpace { .. }) => Err(err),
            Err(err) => Err(self.poison(err)),
        }
    }

    /// Starts preparing the segment after the one just opened.
    fn start_prealloc(&mut self) -> Result<()> {
        let size = self.options.segment_size_bytes;
        if self.options.preallocate_in_background {
            self.prealloc = prealloc::spawn(self.fs.clone(), self.dir.clone(), size);
            return Ok(());
        }
        match prealloc::prepare(self.fs.as_ref(), &self.dir, size) {
            Ok(file) => self.prealloc = Prealloc::Ready(file),
            // Not an error yet: the next rotation retries and reports it.
            Err(Error::NoSpace { .. }) => {
                tracing::warn!(dir = %self.dir.display(), "no space to preallocate the next segment");
            }
            Err(err) => return Err(self.poison(err)),
        }
        Ok(())
    }

    /// Seals the active segment (if any) and starts the next one.
    fn rotate(&mut self) -> Result<()> {
        let next_file = self.take_prealloc()?;
        if let Some(seg) = self.active() {
            let mut seal = Vec::new();
            format::encode_seal(&mut seal, seg.seq);
            let at = seg.written;
            if let Err(e) = seg.file.write_at(&seal, at) {
                let err = Error::io("write", seg.path.clone(), e);
                return Err(match err {
                    // A partial seal is a torn tail; the next write overwrites it.
                    Error::NoSpace { .. } => err,
                    other => self.poison(other),
                });
            }
            if let Err(e) = seg.file.sync_data() {
                let err = Error::io("fdatasync", seg.path.clone(), e);
                return Err(self.poison(err));
            }
            let seg = self.active_mut().expect("active");
            seg.written = at + seal.len() as u64;
            seg.file_len = seg.file_len.max(seg.written);
            seg.sealed = true;
        }
        let seq = self.segments.back().map_or(1, |s| s.seq + 1);
        let first_index = self.last_index() + 1;
        let path = self.dir.join(format::segment_name(seq, first_index));
        let from = self.dir.join(PREALLOC_FILE);
        let mut head = Vec::new();
        format::encode_header(&mut head, seq, first_index);
        format::encode_hard_state(&mut head, seq, &self.hard_state);
        if let Some(marker) = self.snapshot_marker {
            // Like the hard state, so deleting older segments never loses it.
            format::encode_snapshot_marker(&mut head, seq, marker);
        }
        let res = (|| -> Result<Box<dyn crate::fs::FsFile>> {
            self.fs
                .rename(&from, &path)
                .map_err(|e| Error::io("rename", &path, e))?;
            let file = next_file;
            file.write_at(&head, 0)
                .map_err(|e| Error::io("write", &path, e))?;
            file.sync_data()
                .map_err(|e| Error::io("fdatasync", &path, e))?;
            self.fs
                .sync_dir(&self.dir)
                .map_err(|e| Error::io("sync_dir", &self.dir, e))?;
            Ok(file)
        })();
        let file = match res {
            Ok(f) => f,
            Err(err) => return Err(self.poison(err)),
        };
        let mut seg = Segment::new(seq, path, file);
        seg.written = head.len() as u64;
        seg.file_len = self.options.segment_size_bytes.max(seg.written);
        tracing::debug!(seq, first_index, "started WAL segment");
        self.segments.push_back(seg);
        self.start_prealloc()
    }

    /// Discards every entry at or below `upto` (after a snapshot covering them)
    /// and makes the new first index `upto + 1` durable before returning.
    /// Syncs any buffered changes first.
    /// Whole segments holding only discarded entries are deleted. `upto` may
    /// lie past `last_index` (a follower installing a newer snapshot): the log
    /// is then empty and the next append must be `upto + 1`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let mut wal = raft_wal::Wal::open(dir.path(), Default::default()).unwrap();
    /// for i in 1..=10 { wal.append(i, 1, b"x").unwrap(); }
    /// wal.compact_prefix(6).unwrap(); // a snapshot now covers 1..=6
    /// assert_eq!((wal.first_index(), wal.last_index()), (7, 10));
    /// wal.compact_prefix(100).unwrap(); // installed a newer snapshot
    /// assert_eq!((wal.first_index(), wal.last_index()), (101, 100));
    /// wal.append(101, 3, b"y").unwrap();
    /// ```
    pub fn compact_prefix(&mut self, upto: u64) -> Result<()> {
        self.check_writable()?;
        self.sync()?;
        if upto < self.first_index() {
            return Ok(());
        }
        let new_first = upto + 1;
        self.write_meta(new_first)?;
        self.index.compact_to(new_first);
        self.remove_obsolete_segments()
    }

    /// Atomically replaces the meta file: temp write, fsync, rename, dir fsync.
    fn write_meta(&mut self, first_index: u64) -> Result<()> {
        let tmp = self.dir.join(META_TMP_FILE);
        let dst = self.dir.join(META_FILE);
        let _ = self.fs.remove_file(&tmp);
        let file = self
            .fs
            .open(&tmp, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", &tmp, e))?;
        let meta = format::encode_meta(first_index, self.snapshot_marker);
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
        res.map_err(|err| self.poison(err))
    }

    /// Deletes leading segments that hold no live entry (never the last one).
    fn remove_obsolete_segments(&mut self) -> Result<()> {
        let last_seq = match self.segments.back() {
            Some(s) => s.seq,
            None => return Ok(()),
        };
        let needed = self.index.first_seq().unwrap_or(last_seq).min(last_seq);
        while self.segments.front().is_some_and(|s| s.seq < needed) {
            let seg = self.segments.pop_front().expect("checked");
            let res = self
                .fs
                .remove_file(&seg.path)
                .map_err(|e| Error::io("remove", &seg.path, e))
                .and_then(|()| {
                    self.fs
                        .sync_dir(&self.dir)
                        .map_err(|e| Error::io("sync_dir", &self.dir, e))
                });
            if let Err(err) = res {
                return Err(self.poison(err));
            }
            tracing::debug!(seq = seg.seq, "deleted compacted WAL segment");
        }
        Ok(())
    }

    /// Term of entry `index`, or `None` outside `[first_index, last_index]`.
    /// The index of the [snapshot marker](Wal::snapshot_marker) also answers
    /// after compaction removed its entry, so `term(first_index - 1)` is known
    /// when the log was compacted exactly up to the snapshot.
    pub fn term(&self, index: u64) -> Result<Option<u64>> {
        self.check_usable()?;
        Ok(match self.index.get(index) {
            Some(l) => Some(l.term),
            None => self.snapshot_marker.filter(|m| m.0 == index).map(|m| m.1),
        })
    }

    /// The `(index, term)` of the newest snapshot recorded by
    /// [`mark_snapshot`](Wal::mark_snapshot), if any.
    pub fn snapshot_marker(&self) -> Option<(u64, u64)> {
        self.snapshot_marker
    }

    /// Durably records that a snapshot covering every entry up to `index`
    /// (whose term is `term`) exists, syncing any buffered changes with it.
    /// Durable when it returns.
    ///
    /// This is the middle step of the snapshot contract: make the snapshot
    /// file durable, then mark it here, then
    /// [`compact_prefix`](Wal::compact_prefix) entries it covers. The marker
    /// survives compaction (it is copied into every new segment and into the
    /// meta file), so after a crash the log says which snapshot it relies on,
    /// and [`term(index)`](Wal::term) still answers. Markers only move forward:
    /// an `index` below the current marker is refused; the same marker again
    /// does nothing.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let mut wal = raft_wal::Wal::open(dir.path(), Default::default()).unwrap();
    /// for i in 1..=10 { wal.append(i, 2, b"x").unwrap(); }
    /// // ... a snapshot through index 8 is now durable elsewhere ...
    /// wal.mark_snapshot(8, 2).unwrap();
    /// wal.compact_prefix(8).unwrap();
    /// assert_eq!(wal.snapshot_marker(), Some((8, 2)));
    /// assert_eq!((wal.first_index(), wal.term(8).unwrap()), (9, Some(2)));
    /// # drop(wal);
    /// let wal = raft_wal::Wal::open(dir.path(), Default::default()).unwrap();
    /// assert_eq!(wal.snapshot_marker(), Some((8, 2)));
    /// ```
    pub fn mark_snapshot(&mut self, index: u64, term: u64) -> Result<()> {
        self.check_writable()?;
        if index == 0 {
            return Err(Error::InvalidArgument(
                "a snapshot marker needs an index of at least 1".into(),
            ));
        }
        match self.snapshot_marker {
            Some(m) if m == (index, term) => return self.sync(),
            Some(m) if index <= m.0 => {
                return Err(Error::InvalidArgument(format!(
                    "snapshot marker ({index}, {term}) is not newer than ({}, {})",
                    m.0, m.1
                )))
            }
            _ => {}
        }
        self.begin_batch()?;
        let (seq, _) = self.active_seq_and_head();
        format::encode_snapshot_marker(&mut self.pending, seq, (index, term));
        self.snapshot_marker = Some((index, term));
        self.sync()?;
        tracing::debug!(index, term, "recorded snapshot marker");
        Ok(())
    }

    /// Entry `index`.
    pub fn entry(&self, index: u64) -> Result<Entry> {
        let mut out = self.entries(index, index + 1, u64::MAX)?;
        Ok(out.pop().expect("one entry requested"))
    }

    /// Entries `[lo, hi)`, stopping early once their data exceeds `max_bytes`
    /// (at least one entry is always returned when `lo < hi`). The range must
    /// lie within `[first_index, last_index + 1]`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let mut wal = raft_wal::Wal::open(dir.path(), Default::default()).unwrap();
    /// for i in 1..=100 { wal.append(i, 1, &[0u8; 100]).unwrap(); }
    /// let batch = wal.entries(1, 101, 1000).unwrap(); // about 1000 bytes of data
    /// assert_eq!(batch.len(), 10);
    /// assert_eq!(wal.entries(50, 51, 0).unwrap().len(), 1); // never empty
    /// ```
    pub fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>> {
        self.check_usable()?;
        let (first, last) = (self.first_index(), self.last_index());
        for i in [lo, hi.saturating_sub(1)] {
            if lo < hi && (i < first || i > last) {
                return Err(Error::OutOfRange {
                    index: i,
                    first_index: first,
                    last_index: last,
                });
            }
        }
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let mut view: Option<View> = None;
        for i in lo..hi {
            let loc = *self.index.get(i).expect("range checked");
            if !out.is_empty() && bytes + loc.data_len as u64 > max_bytes {
                break;
            }
            bytes += loc.data_len as u64;
            out.push(self.read_entry(i, &loc, &mut view)?);
        }
        Ok(out)
    }

    fn segment(&self, seq: u64) -> &Segment {
        let front = self
            .segments
            .front()
            .expect("live entries have segments")
            .seq;
        &self.segments[(seq - front) as usize]
    }

    fn read_entry(&self, index: u64, loc: &Loc, view: &mut Option<View>) -> Result<Entry> {
        let seg = self.segment(loc.seq);
        let record_len = format::entry_record_bytes(loc.data_len as usize) as u64;
        let (buf, off, base): (&[u8], usize, u64);
        let mapping;
        if loc.offset >= seg.written {
            // Still in the unwritten batch buffer.
            base = seg.written;
            buf = &self.pending;
            off = (loc.offset - seg.written) as usize;
        } else {
            let end = loc.offset + record_len;
            let reusable = matches!(view, Some(v) if v.seq == loc.seq && end <= v.valid
                && end <= v.mapping.bytes().len() as u64);
            if !reusable {
                let (mapping, valid) = seg
                    .view(end)
                    .map_err(|e| Error::io("map", seg.path.clone(), e))?;
                *view = Some(View {
                    seq: loc.seq,
                    mapping,
                    valid,
                });
            }
            mapping = &view.as_ref().expect("set above").mapping;
            base = 0;
            buf = mapping.bytes();
            off = loc.offset as usize;
        }
        match format::decode(buf, off, seg.seq) {
            Decoded::Record(
                Record::Entry {
                    index: got,
                    term,
                    data,
                },
                _,
            ) if got == index && term == loc.term => Ok(Entry {
                index,
                term,
                data: data.to_vec(),
            }),
            Decoded::Invalid(kind) => Err(Error::corruption(&seg.path, base + off as u64, kind)),
            _ => Err(Error::corruption(
                &seg.path,
                base + off as u64,
                CorruptionKind::BadPayload,
            )),
        }
    }
}
