//! The Raft layer: a thin view of a [`Log`] with terms, Raft's hard state
//! and a snapshot marker.
//!
//! - Each entry carries its term (stored in the entry record, so
//!   [`term`](RaftWal::term) never reads the disk).
//! - The [`HardState`] is the log's [metadata value](Log::set_metadata),
//!   encoded in 25 bytes.
//! - The snapshot marker `(index, term)` is a record of its own, copied into
//!   every new segment and the meta file so it survives compaction.
//!
//! Raft wants one `fdatasync` for a conflict truncation and the entries that
//! replace it, so [`truncate_suffix`](RaftWal::truncate_suffix) is buffered
//! until [`sync`](RaftWal::sync), unlike [`Log::truncate_from`].
//!
//! ```
//! use raft_wal::raft::{HardState, Options, RaftWal};
//!
//! # fn main() -> Result<(), raft_wal::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let mut wal = RaftWal::open(dir.path(), Options::default())?;
//! wal.append(1, 1, b"first")?;
//! wal.append(2, 1, b"second")?;
//! wal.set_hard_state(HardState { term: 1, vote: Some(3), commit: 1 })?;
//! wal.sync()?; // one fdatasync for all three records
//! drop(wal);
//!
//! let wal = RaftWal::open(dir.path(), Options::default())?;
//! assert_eq!((wal.first_index(), wal.last_index()), (1, 2));
//! assert_eq!(wal.term(2)?, Some(1));
//! assert_eq!(wal.entries(1, 3, u64::MAX)?[1].data, b"second");
//! assert_eq!(wal.hard_state().vote, Some(3));
//! # Ok(())
//! # }
//! ```

use std::path::Path;
use std::sync::Arc;

use crate::error::{CorruptionKind, Error, Result};
use crate::format;
use crate::fs::{Fs, StdFs};
use crate::log::Log;
use crate::options::{LogOptions, Preallocate};
use crate::recovery::RecoveryReport;

/// One log entry: a position, the term it was created in, and opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, starting at 1 (or after a compaction point).
    pub index: u64,
    /// Term of the entry.
    pub term: u64,
    /// The caller's payload; the WAL never looks inside.
    pub data: Vec<u8>,
}

/// The small record of election state that must survive restarts: Raft's
/// `currentTerm` and `votedFor`, plus the last known commit index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    /// Current term.
    pub term: u64,
    /// Candidate voted for in `term`, if any.
    pub vote: Option<u64>,
    /// Highest index known to be committed.
    pub commit: u64,
}

impl HardState {
    /// Decodes a metadata value written by [`RaftWal::set_hard_state`]; an
    /// empty value is the default hard state. `None` if `value` is neither.
    ///
    /// ```
    /// use raft_wal::raft::HardState;
    /// let hs = HardState { term: 2, vote: None, commit: 7 };
    /// assert_eq!(HardState::from_metadata(&hs.to_metadata()), Some(hs));
    /// assert_eq!(HardState::from_metadata(b""), Some(HardState::default()));
    /// assert_eq!(HardState::from_metadata(b"not one"), None);
    /// ```
    pub fn from_metadata(value: &[u8]) -> Option<HardState> {
        if value.is_empty() {
            return Some(HardState::default());
        }
        format::decode_hard_state(value)
    }

    /// The metadata value that stores this hard state (25 bytes).
    pub fn to_metadata(&self) -> Vec<u8> {
        format::hard_state_bytes(self).to_vec()
    }
}

/// Options of the Raft layer. Its defaults are the production preset
/// ([`LogOptions::production`]): 64 MiB segments preallocated on a
/// background thread.
#[derive(Debug, Clone)]
pub struct Options {
    /// Target size of a segment file. Default 64 MiB.
    pub segment_size_bytes: u64,
    /// Buffered bytes after which an unsynced batch is written to the file
    /// (still without fsync). Default 4 MiB.
    pub flush_threshold_bytes: usize,
    /// Open without changing anything on disk; every write call fails.
    pub read_only: bool,
    /// Prepare (zero-fill and fsync) the next segment on a background
    /// thread; `false` prepares it inline, for fully deterministic I/O, e.g.
    /// under a fault-injecting file system. Default true.
    pub preallocate_in_background: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options::production()
    }
}

impl Options {
    /// The production preset (the same as `Default`), named so that callers
    /// can say what they chose.
    pub fn production() -> Options {
        let p = LogOptions::production();
        Options {
            segment_size_bytes: p.segment_size_bytes,
            flush_threshold_bytes: p.flush_threshold_bytes,
            read_only: false,
            preallocate_in_background: true,
        }
    }

    /// The [`LogOptions`] these options stand for.
    pub fn to_log_options(&self) -> LogOptions {
        LogOptions::production()
            .segment_size_bytes(self.segment_size_bytes)
            .flush_threshold_bytes(self.flush_threshold_bytes)
            .read_only(self.read_only)
            .preallocate(if self.preallocate_in_background {
                Preallocate::Background
            } else {
                Preallocate::Inline
            })
    }
}

/// A write-ahead log of `(index, term, data)` entries plus a [`HardState`]
/// and a snapshot marker: the [`Log`] as Raft uses it.
///
/// Changes (append, hard state, truncation) are buffered and made durable
/// together by [`sync`](RaftWal::sync), which costs one `fdatasync`. Reads
/// see buffered changes immediately. See the [module docs](self).
pub struct RaftWal {
    log: Log,
}

impl std::fmt::Debug for RaftWal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftWal").field("log", &self.log).finish()
    }
}

impl RaftWal {
    /// Opens (creating if needed) the WAL in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<RaftWal> {
        RaftWal::open_with_fs(Arc::new(StdFs), dir, options)
    }

    /// Opens the WAL in `dir` through `fs` (for example a
    /// [`FaultFs`](crate::fault::FaultFs) in tests).
    pub fn open_with_fs(
        fs: Arc<dyn Fs>,
        dir: impl AsRef<Path>,
        options: Options,
    ) -> Result<RaftWal> {
        RaftWal::from_log(Log::open_with_fs(fs, dir, options.to_log_options())?)
    }

    /// The Raft view of `log`. Fails with [`Error::Corruption`] if its
    /// metadata is not a hard state (the log was written by something else).
    pub fn from_log(log: Log) -> Result<RaftWal> {
        if HardState::from_metadata(&log.metadata()).is_none() {
            return Err(Error::Corruption {
                file: log.dir().to_path_buf(),
                offset: 0,
                kind: CorruptionKind::BadMetadata,
            });
        }
        Ok(RaftWal { log })
    }

    /// The underlying log, e.g. for a [`LogReader`](crate::LogReader).
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// What recovery found when this handle was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        self.log.recovery_report()
    }

    /// The directory this WAL lives in.
    pub fn dir(&self) -> &Path {
        self.log.dir()
    }

    /// First index held (1 for a new log, or one past the compaction point).
    pub fn first_index(&self) -> u64 {
        self.log.first_index()
    }

    /// Last index held; `first_index() - 1` when the log is empty.
    pub fn last_index(&self) -> u64 {
        self.log.last_index()
    }

    /// The newest hard state, including one set but not yet synced.
    pub fn hard_state(&self) -> HardState {
        // Checked when the log was opened, and only this layer writes it.
        HardState::from_metadata(&self.log.metadata()).unwrap_or_default()
    }

    /// True if there are changes that the next [`sync`](RaftWal::sync) will
    /// make durable.
    pub fn has_unsynced(&self) -> bool {
        self.log.has_unsynced()
    }

    /// Buffers entry `index` (which must be `last_index() + 1`). Durable after
    /// the next [`sync`](RaftWal::sync); readable at once.
    pub fn append(&mut self, index: u64, term: u64, data: &[u8]) -> Result<()> {
        self.log.append_at(index, term, data)
    }

    /// Buffers a batch of entries; see [`append`](RaftWal::append).
    pub fn append_entries(&mut self, entries: &[Entry]) -> Result<()> {
        for e in entries {
            self.append(e.index, e.term, &e.data)?;
        }
        Ok(())
    }

    /// Buffers a new hard state. Setting the current value again does nothing,
    /// so it costs no sync.
    pub fn set_hard_state(&mut self, hard_state: HardState) -> Result<()> {
        if hard_state == self.hard_state() {
            return self.log.check_usable();
        }
        self.log.set_metadata(&hard_state.to_metadata())
    }

    /// Discards every entry at or above `from` (a Raft log conflict).
    /// **Buffered** like an append: durable, as one atomic step, at the next
    /// [`sync`](RaftWal::sync). `from` must lie in
    /// `[first_index, last_index + 1]`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let mut wal = raft_wal::raft::RaftWal::open(dir.path(), Default::default()).unwrap();
    /// for i in 1..=5 { wal.append(i, 1, b"old").unwrap(); }
    /// wal.sync().unwrap();
    /// // A new leader's log disagrees from index 4 on.
    /// wal.truncate_suffix(4).unwrap();
    /// wal.append(4, 2, b"new").unwrap();
    /// wal.sync().unwrap(); // truncation and append become durable together
    /// assert_eq!((wal.last_index(), wal.term(4).unwrap()), (4, Some(2)));
    /// ```
    pub fn truncate_suffix(&mut self, from: u64) -> Result<()> {
        self.log.truncate_buffered(from)
    }

    /// Makes every buffered change durable with one `fdatasync`. Does nothing
    /// if nothing changed since the last sync.
    ///
    /// On [`Error::NoSpace`] every change since the last successful sync is
    /// discarded and the handle stays usable. Any other failure poisons it.
    pub fn sync(&mut self) -> Result<()> {
        self.log.sync()
    }

    /// Discards every entry at or below `upto` (after a snapshot covering
    /// them) and makes the new first index `upto + 1` durable before
    /// returning. **Durable on return**; syncs any buffered changes first.
    /// Whole segments holding only discarded entries are deleted. `upto` may
    /// lie past `last_index` (a follower installing a newer snapshot): the
    /// log is then empty and the next append must be `upto + 1`.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let mut wal = raft_wal::raft::RaftWal::open(dir.path(), Default::default()).unwrap();
    /// for i in 1..=10 { wal.append(i, 1, b"x").unwrap(); }
    /// wal.compact_prefix(6).unwrap(); // a snapshot now covers 1..=6
    /// assert_eq!((wal.first_index(), wal.last_index()), (7, 10));
    /// wal.compact_prefix(100).unwrap(); // installed a newer snapshot
    /// assert_eq!((wal.first_index(), wal.last_index()), (101, 100));
    /// wal.append(101, 3, b"y").unwrap();
    /// ```
    pub fn compact_prefix(&mut self, upto: u64) -> Result<()> {
        self.log.compact_or_reset(upto.saturating_add(1))
    }

    /// Term of entry `index`, or `None` outside `[first_index, last_index]`.
    /// The index of the [snapshot marker](RaftWal::snapshot_marker) also
    /// answers after compaction removed its entry, so `term(first_index - 1)`
    /// is known when the log was compacted exactly up to the snapshot.
    pub fn term(&self, index: u64) -> Result<Option<u64>> {
        Ok(match self.log.term(index)? {
            Some(t) => Some(t),
            None => self.log.marker().filter(|m| m.0 == index).map(|m| m.1),
        })
    }

    /// The `(index, term)` of the newest snapshot recorded by
    /// [`mark_snapshot`](RaftWal::mark_snapshot), if any.
    pub fn snapshot_marker(&self) -> Option<(u64, u64)> {
        self.log.marker()
    }

    /// Durably records that a snapshot covering every entry up to `index`
    /// (whose term is `term`) exists, syncing any buffered changes with it.
    /// Durable when it returns.
    ///
    /// This is the middle step of the snapshot contract: make the snapshot
    /// file durable, then mark it here, then
    /// [`compact_prefix`](RaftWal::compact_prefix) entries it covers. The
    /// marker survives compaction (it is copied into every new segment and
    /// into the meta file), so after a crash the log says which snapshot it
    /// relies on, and [`term(index)`](RaftWal::term) still answers. Markers
    /// only move forward: an `index` below the current marker is refused; the
    /// same marker again does nothing.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let mut wal = raft_wal::raft::RaftWal::open(dir.path(), Default::default()).unwrap();
    /// for i in 1..=10 { wal.append(i, 2, b"x").unwrap(); }
    /// // ... a snapshot through index 8 is now durable elsewhere ...
    /// wal.mark_snapshot(8, 2).unwrap();
    /// wal.compact_prefix(8).unwrap();
    /// assert_eq!(wal.snapshot_marker(), Some((8, 2)));
    /// assert_eq!((wal.first_index(), wal.term(8).unwrap()), (9, Some(2)));
    /// # drop(wal);
    /// let wal = raft_wal::raft::RaftWal::open(dir.path(), Default::default()).unwrap();
    /// assert_eq!(wal.snapshot_marker(), Some((8, 2)));
    /// ```
    pub fn mark_snapshot(&mut self, index: u64, term: u64) -> Result<()> {
        self.log.mark_snapshot((index, term))?;
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
    /// # let mut wal = raft_wal::raft::RaftWal::open(dir.path(), Default::default()).unwrap();
    /// for i in 1..=100 { wal.append(i, 1, &[0u8; 100]).unwrap(); }
    /// let batch = wal.entries(1, 101, 1000).unwrap(); // about 1000 bytes of data
    /// assert_eq!(batch.len(), 10);
    /// assert_eq!(wal.entries(50, 51, 0).unwrap().len(), 1); // never empty
    /// ```
    pub fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>> {
        let mut out = Vec::with_capacity(hi.saturating_sub(lo).min(4096) as usize);
        if lo >= hi {
            self.log.check_usable()?;
            return Ok(out);
        }
        let mut bytes = 0u64;
        let mut it = self.log.iter(lo..hi)?;
        let mut full = false;
        while let Some(e) = it.next_with(|index, term, data| {
            let len = data.len() as u64;
            if !out.is_empty() && bytes + len > max_bytes {
                full = true;
                return;
            }
            bytes += len;
            out.push(Entry {
                index,
                term,
                data: data.to_vec(),
            });
        }) {
            e?;
            if full {
                break;
            }
        }
        Ok(out)
    }
}
