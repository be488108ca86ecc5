//! Options of [`Log::open`](crate::Log::open), their presets, and the metrics hook.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::recovery::RecoveryMode;

/// How the log prepares the file of its next segment.
///
/// A preallocated segment is reserved, filled with zeros and fsynced before
/// the log writes into it, so an append's `fdatasync` writes only data, never
/// file-size or extent metadata. That makes small synced appends faster on
/// ext4 and XFS, at the cost of a full segment of disk space up front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Preallocate {
    /// No preallocation: segment files grow as records are written. Opening
    /// and closing a small log is cheap and it takes only the space its
    /// records need.
    None,
    /// Prepare the next segment in the caller's thread when the log starts a
    /// segment (deterministic I/O, e.g. under a fault-injecting file system).
    Inline,
    /// Prepare the next segment on a background thread.
    Background,
}

/// Callbacks for the log's I/O, for exporting metrics. Every method has an
/// empty default, so an implementation picks what it needs; no metrics crate
/// is imposed. Calls happen on the thread doing the I/O, sometimes under the
/// log's internal lock: keep them cheap (an atomic add, a histogram record).
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use raft_wal::{Log, LogOptions, Metrics};
///
/// #[derive(Default)]
/// struct Counters { syncs: AtomicU64, bytes: AtomicU64 }
/// impl Metrics for Counters {
///     fn bytes_written(&self, bytes: u64) { self.bytes.fetch_add(bytes, Ordering::Relaxed); }
///     fn synced(&self, _latency: std::time::Duration) { self.syncs.fetch_add(1, Ordering::Relaxed); }
/// }
///
/// let counters = Arc::new(Counters::default());
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), LogOptions::default().metrics(counters.clone())).unwrap();
/// log.append(b"hello").unwrap();
/// log.sync().unwrap();
/// assert_eq!(counters.syncs.load(Ordering::Relaxed), 1);
/// assert!(counters.bytes.load(Ordering::Relaxed) > 5);
/// ```
pub trait Metrics: Send + Sync + 'static {
    /// `bytes` of records were written to a segment (not yet synced).
    fn bytes_written(&self, bytes: u64) {
        let _ = bytes;
    }
    /// One `fdatasync` of appended data completed, taking `latency`.
    fn synced(&self, latency: Duration) {
        let _ = latency;
    }
    /// Segment `seq` was started.
    fn segment_created(&self, seq: u64) {
        let _ = seq;
    }
    /// Segment `seq` was deleted by compaction.
    fn segment_removed(&self, seq: u64) {
        let _ = seq;
    }
    /// A full disk made the log discard `changes` unsynced changes.
    fn rolled_back(&self, changes: u64) {
        let _ = changes;
    }
}

/// Options for [`Log::open`](crate::Log::open).
///
/// Start from [`LogOptions::default()`] (light: no preallocation, suits small
/// and short-lived logs) or [`LogOptions::production()`] (64 MiB segments
/// preallocated in the background: lowest sync latency for a busy log), then
/// adjust with the builder methods. The fields can be read; new ones may be
/// added in minor releases.
///
/// ```
/// use raft_wal::{LogOptions, Preallocate, RecoveryMode};
/// let opts = LogOptions::production()
///     .segment_size_bytes(16 << 20)
///     .recovery_mode(RecoveryMode::Strict);
/// assert_eq!(opts.segment_size_bytes, 16 << 20);
/// assert_eq!(opts.preallocate, Preallocate::Background);
/// assert_eq!(LogOptions::default().preallocate, Preallocate::None);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct LogOptions {
    /// Target size of a segment file; a new segment starts once the active
    /// one reaches it. At least 4096.
    pub segment_size_bytes: u64,
    /// Buffered bytes after which appended records are written to the file
    /// (still without fsync) to bound memory.
    pub flush_threshold_bytes: usize,
    /// Open without changing anything on disk and without the directory
    /// lock, alongside a live writer if there is one (see
    /// [`Log::open_read_only`](crate::Log::open_read_only)); every write call
    /// fails with [`Error::ReadOnly`](crate::Error::ReadOnly).
    pub read_only: bool,
    /// How the next segment file is prepared.
    pub preallocate: Preallocate,
    /// What opening does with damaged data.
    pub recovery_mode: RecoveryMode,
    /// Receiver of I/O metrics, if any.
    pub metrics: Option<Arc<dyn Metrics>>,
}

impl fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogOptions")
            .field("segment_size_bytes", &self.segment_size_bytes)
            .field("flush_threshold_bytes", &self.flush_threshold_bytes)
            .field("read_only", &self.read_only)
            .field("preallocate", &self.preallocate)
            .field("recovery_mode", &self.recovery_mode)
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

impl Default for LogOptions {
    /// Light settings: 64 MiB segments that grow as written (no
    /// preallocation, no background thread), 4 MiB flush threshold,
    /// [`RecoveryMode::TolerateTornTail`].
    fn default() -> LogOptions {
        LogOptions {
            segment_size_bytes: 64 << 20,
            flush_threshold_bytes: 4 << 20,
            read_only: false,
            preallocate: Preallocate::None,
            recovery_mode: RecoveryMode::TolerateTornTail,
            metrics: None,
        }
    }
}

impl LogOptions {
    /// The production preset: the defaults with every segment preallocated
    /// (reserved, zero-filled and fsynced) on a background thread. Each
    /// segment takes its full 64 MiB on disk from the start; in exchange an
    /// append's `fdatasync` never has to write file metadata.
    pub fn production() -> LogOptions {
        LogOptions {
            preallocate: Preallocate::Background,
            ..LogOptions::default()
        }
    }

    /// Sets [`segment_size_bytes`](LogOptions::segment_size_bytes).
    pub fn segment_size_bytes(mut self, bytes: u64) -> LogOptions {
        self.segment_size_bytes = bytes;
        self
    }

    /// Sets [`flush_threshold_bytes`](LogOptions::flush_threshold_bytes).
    pub fn flush_threshold_bytes(mut self, bytes: usize) -> LogOptions {
        self.flush_threshold_bytes = bytes;
        self
    }

    /// Sets [`read_only`](LogOptions::read_only).
    pub fn read_only(mut self, read_only: bool) -> LogOptions {
        self.read_only = read_only;
        self
    }

    /// Sets [`preallocate`](LogOptions::preallocate).
    pub fn preallocate(mut self, preallocate: Preallocate) -> LogOptions {
        self.preallocate = preallocate;
        self
    }

    /// Sets [`recovery_mode`](LogOptions::recovery_mode).
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> LogOptions {
        self.recovery_mode = mode;
        self
    }

    /// Sets the [`Metrics`] receiver.
    pub fn metrics(mut self, metrics: Arc<dyn Metrics>) -> LogOptions {
        self.metrics = Some(metrics);
        self
    }
}
