//! The compaction contract between the snapshot store and the WAL, and the
//! recovery that reconciles them after a crash.
//!
//! # The contract
//!
//! Taking (or installing) a snapshot at `(index, term)` is three durable
//! steps, always in this order:
//!
//! 1. **Snapshot durable**: the file is complete, fsynced, renamed into the
//!    store and the directory fsynced ([`PendingSnapshot::commit`] or a
//!    [`SnapshotReceiver`](crate::SnapshotReceiver) install).
//! 2. **Marker in the WAL**: [`Wal::mark_snapshot`]`(index, term)`, durable
//!    when it returns. From here on the WAL relies on the snapshot.
//! 3. **WAL compaction**: entries at or below `index - trailing_entries` are
//!    removed ([`Wal::compact_prefix`]); the trailing entries let a slightly
//!    slow follower catch up from the log instead of needing a snapshot. If
//!    the log disagrees with the snapshot (a follower installing a leader's
//!    snapshot over uncommitted entries of another term at `index`), or ends
//!    before `index`, the whole log is discarded instead, as Raft requires.
//!
//! Because each step is durable before the next starts, a crash leaves one of
//! these states, and [`recover`] (run on every start, after opening both)
//! turns each into a consistent one:
//!
//! | on disk after the crash                         | `recover` does                        |
//! |-------------------------------------------------|---------------------------------------|
//! | no new snapshot (crash in step 1)               | uses the previous snapshot + the WAL  |
//! | new snapshot, old marker (crash before step 2)  | adopts it, then does steps 2 and 3    |
//! | new snapshot and marker (crash before step 3)   | does step 3                           |
//! | all three done                                  | nothing                               |
//!
//! **Fallback rule.** The newest *valid* snapshot is used; damaged ones are
//! reported and renamed aside ([`SnapshotStore::newest_valid`]). If that
//! leaves a snapshot older than the WAL's marker (the marked file was lost or
//! damaged after the fact), recovery falls back to it only if the WAL still
//! holds every entry after it (`wal.first_index() <= snapshot.index + 1`,
//! which trailing entries often make true); the state is then rebuilt by
//! replaying those entries, and [`Recovered::fell_back_from`] says so.
//! Otherwise the state cannot be rebuilt locally and recovery fails with
//! [`Error::SnapshotMissing`]: the node needs a snapshot from its leader.
//! The same error (with a marker term of 0) is returned for a WAL that was
//! compacted with no marker and no snapshot to account for it.

use raft_wal::Wal;

use crate::error::{Error, Result};
use crate::format::{SnapshotHeader, SnapshotId, SnapshotMeta};
use crate::store::{DamagedSnapshot, PendingSnapshot, SnapshotStore};

/// A reasonable default for the entries kept below a snapshot.
pub const DEFAULT_TRAILING_ENTRIES: u64 = 1024;

/// What [`compact_wal`] did to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compaction {
    /// The log agrees with the snapshot: entries at or below `upto` are gone
    /// (no-op if they already were).
    Prefix {
        /// Last removed index.
        upto: u64,
    },
    /// The log disagreed with the snapshot at its index, or ended before it:
    /// every entry was discarded and the log continues at `index + 1`.
    Discarded,
    /// The WAL already relies on a newer snapshot; nothing was done.
    Superseded,
}

/// Steps 2 and 3 of the contract for a snapshot that is already durable:
/// mark it in the WAL, then compact (see the [module docs](self)).
/// Idempotent, so it also completes a sequence cut short by a crash.
///
/// ```
/// use raft_snapshot::compaction::{compact_wal, Compaction};
/// use raft_snapshot::SnapshotId;
///
/// let dir = tempfile::tempdir().unwrap();
/// let mut wal = raft_wal::Wal::open(dir.path(), Default::default()).unwrap();
/// for i in 1..=100 { wal.append(i, 1, b"entry").unwrap(); }
/// wal.sync().unwrap();
/// // ... a snapshot through index 90 is durable in the store ...
/// let done = compact_wal(&mut wal, SnapshotId { index: 90, term: 1 }, 10).unwrap();
/// assert_eq!(done, Compaction::Prefix { upto: 80 });
/// assert_eq!((wal.snapshot_marker(), wal.first_index()), (Some((90, 1)), 81));
/// ```
pub fn compact_wal(wal: &mut Wal, id: SnapshotId, trailing_entries: u64) -> Result<Compaction> {
    match wal.snapshot_marker() {
        Some((index, _)) if index > id.index => return Ok(Compaction::Superseded),
        Some(m) if m == (id.index, id.term) => {}
        _ => wal.mark_snapshot(id.index, id.term)?,
    }
    let (first, last) = (wal.first_index(), wal.last_index());
    let in_log = (first..=last).contains(&id.index);
    let agrees = if in_log {
        wal.term(id.index)? == Some(id.term)
    } else {
        // Compacted already (consistent: compaction follows a marker), or
        // past the end of the log (the log is all older than the snapshot).
        id.index < first
    };
    if agrees {
        let upto = id.index.saturating_sub(trailing_entries);
        wal.compact_prefix(upto)?;
        tracing::debug!(index = id.index, upto, "compacted WAL after snapshot");
        return Ok(Compaction::Prefix { upto });
    }
    if first <= last {
        tracing::info!(
            index = id.index,
            term = id.term,
            first,
            last,
            "log disagrees with the snapshot; discarding it"
        );
        wal.truncate_suffix(first)?;
        wal.sync()?;
    }
    wal.compact_prefix(id.index)?;
    Ok(Compaction::Discarded)
}

/// The whole contract for a snapshot taken locally: writes the state with
/// `write_state` into a new snapshot, makes it durable, marks it in the WAL,
/// then compacts the WAL keeping `trailing_entries` below the snapshot.
///
/// ```
/// use std::io::Write;
/// use raft_snapshot::{compaction, SnapshotMeta, SnapshotStore, StoreOptions};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = SnapshotStore::open(dir.path().join("snap"), StoreOptions::default()).unwrap();
/// let mut wal = raft_wal::Wal::open(dir.path().join("wal"), Default::default()).unwrap();
/// for i in 1..=50 { wal.append(i, 2, b"set x").unwrap(); }
/// wal.sync().unwrap();
///
/// let meta = SnapshotMeta { index: 40, term: 2, ..SnapshotMeta::default() };
/// let header = compaction::take_snapshot(&store, &mut wal, meta, 5, |w| {
///     w.write_all(b"x = 40")
/// }).unwrap();
/// assert_eq!(header.meta.index, 40);
/// assert_eq!((wal.snapshot_marker(), wal.first_index()), (Some((40, 2)), 36));
/// ```
pub fn take_snapshot(
    store: &SnapshotStore,
    wal: &mut Wal,
    meta: SnapshotMeta,
    trailing_entries: u64,
    write_state: impl FnOnce(&mut PendingSnapshot) -> std::io::Result<()>,
) -> Result<SnapshotHeader> {
    let mut pending = store.create(meta)?;
    write_state(&mut pending).map_err(Error::from_io)?;
    let header = pending.commit()?;
    compact_wal(wal, header.id(), trailing_entries)?;
    Ok(header)
}

/// What [`recover`] found and did.
#[derive(Debug)]
pub struct Recovered {
    /// The snapshot to restore the state machine from (`None`: start from an
    /// empty state and replay the WAL from index 1).
    pub snapshot: Option<SnapshotHeader>,
    /// Snapshots found damaged (newest first); reported and renamed aside.
    pub damaged: Vec<DamagedSnapshot>,
    /// Set when the snapshot the WAL marks was missing or damaged and an
    /// older one is used instead (the WAL still holds the entries after it).
    pub fell_back_from: Option<(u64, u64)>,
    /// What was done to finish an interrupted contract, if anything was due.
    pub compaction: Option<Compaction>,
}

/// Reconciles the store and the WAL on start-up, after a crash at any point
/// of the contract (see the [module docs](self) for the states and the
/// fallback rule). Returns the snapshot to restore from; replay the WAL from
/// `snapshot.index + 1` on top of it.
///
/// ```
/// use raft_snapshot::{compaction, SnapshotMeta, SnapshotStore, StoreOptions};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = SnapshotStore::open(dir.path().join("snap"), StoreOptions::default()).unwrap();
/// let mut wal = raft_wal::Wal::open(dir.path().join("wal"), Default::default()).unwrap();
/// for i in 1..=50 { wal.append(i, 2, b"set x").unwrap(); }
/// wal.sync().unwrap();
/// // A crash right after the snapshot became durable, before its WAL marker:
/// let meta = SnapshotMeta { index: 40, term: 2, ..SnapshotMeta::default() };
/// store.create(meta).unwrap().commit().unwrap();
///
/// let r = compaction::recover(&store, &mut wal, 5).unwrap();
/// assert_eq!(r.snapshot.unwrap().meta.index, 40);
/// assert_eq!((wal.snapshot_marker(), wal.first_index()), (Some((40, 2)), 36));
/// ```
pub fn recover(store: &SnapshotStore, wal: &mut Wal, trailing_entries: u64) -> Result<Recovered> {
    let found = store.newest_valid()?;
    let marker = wal.snapshot_marker();
    let snap_index = found.header.as_ref().map_or(0, |h| h.meta.index);
    let newest_valid = found.header.as_ref().map(|h| (h.meta.index, h.meta.term));
    let missing = |wal_first_index: u64| Error::SnapshotMissing {
        marker: marker.unwrap_or((wal_first_index - 1, 0)),
        newest_valid,
        wal_first_index,
    };
    match (&found.header, marker) {
        (Some(h), m) if m.is_none_or(|m| h.meta.index >= m.0) => {
            let compaction = compact_wal(wal, h.id(), trailing_entries)?;
            if wal.first_index() > h.meta.index + 1 {
                return Err(missing(wal.first_index()));
            }
            Ok(Recovered {
                snapshot: found.header,
                damaged: found.damaged,
                fell_back_from: None,
                compaction: Some(compaction),
            })
        }
        (_, m) => {
            // No snapshot, or one older than the marker.
            if wal.first_index() > snap_index + 1 {
                return Err(missing(wal.first_index()));
            }
            if let Some(h) = &found.header {
                let t = wal.term(h.meta.index)?;
                if t.is_some_and(|t| t != h.meta.term) {
                    return Err(missing(wal.first_index()));
                }
            }
            if let Some(m) = m {
                tracing::error!(
                    marker_index = m.0,
                    marker_term = m.1,
                    using_index = snap_index,
                    "the snapshot the WAL marks is missing or damaged; \
                     falling back to an older one and replaying the WAL"
                );
            }
            Ok(Recovered {
                snapshot: found.header,
                damaged: found.damaged,
                fell_back_from: m,
                compaction: None,
            })
        }
    }
}
