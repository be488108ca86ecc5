//! A segmented, checksummed, fsync-correct write-ahead log.
//!
//! `raft-wal` stores log entries `(index, term, bytes)` and a small
//! [`HardState`] (`term`, `vote`, `commit`) in one append-only stream of
//! segment files. It knows nothing about Raft messages and can be used on its
//! own by anything that needs a durable, index-addressed log.
//!
//! - **Group commit**: [`Wal::append`], [`Wal::set_hard_state`] and
//!   [`Wal::truncate_suffix`] buffer; [`Wal::sync`] writes the batch with one
//!   `write` and one `fdatasync`. A sync with nothing new does nothing.
//! - **Checksums**: every record carries a CRC32 over its header, payload and
//!   the id of the segment it belongs in.
//! - **Recovery**: [`Wal::open`] replays the segments. A torn record at the very
//!   tail is cut and reported in the [`RecoveryReport`]; any other damage is an
//!   [`Error::Corruption`] naming the file and offset, and the open fails.
//! - **Crash safety**: truncation is a single durable record; compaction
//!   durably records the new first index before deleting whole segments.
//! - **Snapshots**: [`Wal::mark_snapshot`] durably records the newest snapshot
//!   the log relies on; it survives compaction and answers [`Wal::term`] for
//!   its index.
//! - **Fail-stop**: a failed write or fsync poisons the handle; `ENOSPC`
//!   discards the unsynced batch and leaves the handle usable.
//! - **Testability**: all I/O goes through [`fs::Fs`]; [`fault::FaultFs`]
//!   injects crashes, torn writes, bit flips, `EIO` and `ENOSPC`.
//!
//! # Example
//!
//! ```
//! use raft_wal::{HardState, Options, Wal};
//!
//! # fn main() -> Result<(), raft_wal::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let mut wal = Wal::open(dir.path(), Options::default())?;
//! wal.append(1, 1, b"first")?;
//! wal.append(2, 1, b"second")?;
//! wal.set_hard_state(HardState { term: 1, vote: Some(3), commit: 1 })?;
//! wal.sync()?; // one fdatasync for all three records
//! drop(wal);
//!
//! let wal = Wal::open(dir.path(), Options::default())?;
//! assert_eq!((wal.first_index(), wal.last_index()), (1, 2));
//! assert_eq!(wal.term(2)?, Some(1));
//! assert_eq!(wal.entries(1, 3, u64::MAX)?[1].data, b"second");
//! assert_eq!(wal.hard_state().vote, Some(3));
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
mod prealloc;
mod recovery;
mod segment;
mod types;
mod wal;

pub use error::{CorruptionKind, Error, Result};
pub use format::Record;
pub use inspect::inspect;
pub use recovery::{RecoveryReport, TornTail};
pub use types::{Entry, HardState};
pub use wal::{Options, Wal};

/// A `Wal` moves to whichever thread does the disk I/O.
#[allow(dead_code)]
fn assert_wal_is_send() {
    fn is_send<T: Send>() {}
    is_send::<Wal>();
}
