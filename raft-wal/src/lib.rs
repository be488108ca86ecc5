//! A segmented, checksummed, fsync-correct write-ahead log.
//!
//! [`Log`] stores opaque entries, numbered by the log from 1, and one opaque
//! metadata value, in an append-only stream of segment files. The
//! [`raft`] module is a thin layer on top with Raft's terms, hard state and
//! snapshot marker.
//!
//! - **Group commit**: [`Log::append`] and [`Log::set_metadata`] buffer;
//!   [`Log::sync`] writes the batch with one `write` and one `fdatasync`.
//!   `Log` handles are `Clone + Send + Sync`, and concurrent
//!   [`Log::append_sync`] callers share one `fdatasync`.
//! - **Readers**: [`LogReader`] sees synced entries and never waits for an
//!   fsync; [`Log::iter`] takes any range and borrows payloads from the
//!   memory-mapped segment.
//! - **Checksums**: every record carries a CRC32 over its header, payload and
//!   the id of the segment it belongs in, checked on every read.
//! - **Recovery**: [`Log::open`] replays the segments; [`RecoveryMode`] says
//!   what to do with damage (by default a torn record at the very tail is
//!   cut and reported, anything else fails the open with an
//!   [`Error::Corruption`] naming the file and offset). [`repair`] is the
//!   operator's tool after a strict open failed.
//! - **Crash safety**: truncation is a single durable record; compaction
//!   durably records the new first index before deleting whole segments.
//! - **Fail-stop**: a failed write or fsync poisons the handle; `ENOSPC`
//!   discards the unsynced batch and leaves the handle usable.
//! - **Testability**: all I/O goes through [`fs::Fs`]; [`fault::FaultFs`]
//!   injects crashes, torn writes, bit flips, `EIO` and `ENOSPC`.
//!
//! # Example
//!
//! ```
//! use raft_wal::{Log, LogOptions};
//!
//! # fn main() -> Result<(), raft_wal::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let log = Log::open(dir.path(), LogOptions::default())?;
//! let first = log.append(b"event 1")?;
//! log.append(b"event 2")?;
//! log.set_metadata(b"applied=1")?;
//! log.sync()?; // one fdatasync for all three changes
//!
//! for entry in log.iter(first..)? {
//!     let entry = entry?;
//!     println!("{}: {:?}", entry.index(), entry.data());
//! }
//! log.compact_before(2)?; // entries before 2 are gone, durably
//! assert_eq!(log.first_index(), 2);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod error;
pub mod fault;
mod format;
pub mod fs;
mod index;
mod inspect;
mod log;
mod options;
mod prealloc;
pub mod raft;
mod recovery;
mod repair;
mod segment;
mod wake;

pub use error::{CorruptionKind, Error, Result};
pub use format::Record;
pub use inspect::inspect;
pub use log::{Iter, Log, LogEntry, LogReader, MAX_ENTRY_BYTES};
pub use options::{LogOptions, Metrics, Preallocate};
pub use recovery::{DroppedTail, RecoveryMode, RecoveryReport, TornTail};
pub use repair::repair;

/// The Raft layer under the names it had before the general [`Log`] API
/// existed: [`raft::RaftWal`], [`raft::Options`], [`raft::HardState`] and
/// [`raft::Entry`].
pub use raft::{Entry, HardState, Options, RaftWal as Wal};

#[allow(dead_code)]
fn assert_handles_are_shareable() {
    fn shareable<T: Send + Sync + Clone>() {}
    fn send<T: Send>() {}
    shareable::<Log>();
    shareable::<LogReader>();
    send::<Wal>();
    send::<Iter>();
}
