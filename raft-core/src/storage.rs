//! Read access to the durable log, and an in-memory implementation.
//!
//! The core only reads through [`Storage`]; the driver writes (it appends the entries of
//! a [`Ready`](crate::Ready), records the hard state, installs and creates snapshots).

use crate::confchange::ConfState;
use crate::entry::{Entry, HardState, SnapshotMeta};
use crate::error::StorageError;

/// Synchronous read access to what the driver has made durable.
///
/// The log up to `snapshot_meta().index` is folded into the snapshot. A storage may keep
/// some entries the snapshot covers (*trailing entries*, as etcd keeps them), so that a
/// follower only slightly behind the snapshot catches up from the log instead of being
/// sent the snapshot: then `first_index() <= snapshot_meta().index`. Trailing entries
/// must be entries of the committed log; a storage may only keep them when its entry at
/// the snapshot index has the snapshot's term (by the Log Matching Property, everything
/// before it then agrees with the committed log too).
pub trait Storage {
    /// The hard state last persisted.
    fn hard_state(&self) -> HardState;
    /// The latest snapshot.
    fn snapshot_meta(&self) -> SnapshotMeta;
    /// Index of the first entry still held: `snapshot_meta().index + 1`, or lower when
    /// trailing entries are kept.
    fn first_index(&self) -> u64;
    /// Index of the last entry (the snapshot index when the log is empty).
    fn last_index(&self) -> u64;
    /// Term of the entry at `index`: the snapshot index answers the snapshot term, any
    /// index from `first_index()` to `last_index()` its entry's term.
    fn term(&self, index: u64) -> Result<u64, StorageError>;
    /// Entries in `lo..hi`, stopping once `max_bytes` is reached but always at least one
    /// entry when the range is not empty.
    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;
}

/// A [`Storage`] kept in memory, for tests, simulations and embedded use.
#[derive(Clone, Debug)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: SnapshotMeta,
    /// Index of `entries[0]`: `snapshot.index + 1`, or lower with trailing entries.
    first: u64,
    /// The entries held: `entries[i].index == first + i`.
    entries: Vec<Entry>,
}

impl MemStorage {
    /// Empty storage for a node that joins an existing cluster: it holds no configuration
    /// and waits for a leader to send it a snapshot.
    pub fn new() -> Self {
        MemStorage {
            hard_state: HardState::default(),
            snapshot: SnapshotMeta::default(),
            first: 1,
            entries: Vec::new(),
        }
    }

    /// Storage for a founding member of a new cluster. Every founding member must be
    /// created with the same `voters`: the initial configuration is recorded as a
    /// snapshot at index 1, term 1 (its state-machine image is empty), so nodes that join
    /// later learn it by snapshot.
    pub fn new_bootstrap(voters: impl IntoIterator<Item = u64>) -> Self {
        MemStorage {
            hard_state: HardState {
                term: 1,
                vote: None,
                commit: 1,
            },
            snapshot: SnapshotMeta {
                index: 1,
                term: 1,
                conf: ConfState::with_voters(voters),
            },
            first: 2,
            entries: Vec::new(),
        }
    }

    /// Records the hard state of a [`Ready`](crate::Ready).
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// Appends entries, first discarding any existing entries at or after the first new
    /// index (a conflicting suffix). Entries at or below the snapshot are ignored.
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let snap = self.snapshot.index;
        let skip = snap.saturating_sub(first.index - 1) as usize;
        if skip >= entries.len() {
            return;
        }
        let entries = &entries[skip..];
        let first_index = entries[0].index;
        let keep = (first_index - self.first) as usize;
        debug_assert!(keep <= self.entries.len(), "append would leave a gap");
        self.entries.truncate(keep.min(self.entries.len()));
        self.entries.extend_from_slice(entries);
    }

    /// Installs a received snapshot: the whole log is replaced by it.
    pub fn apply_snapshot(&mut self, meta: SnapshotMeta) {
        if meta.index <= self.snapshot.index {
            return;
        }
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.entries.clear();
        self.first = meta.index + 1;
        self.snapshot = meta;
    }

    /// Records a snapshot the driver made of its state machine at `meta.index` (which must
    /// be applied, hence stored) and drops the entries it covers.
    ///
    /// ```
    /// # use raft_core::{ConfState, Entry, EntryKind, MemStorage, SnapshotMeta, Storage};
    /// let mut s = MemStorage::new();
    /// s.append(&(1..=5).map(|i| Entry { index: i, term: 1, kind: EntryKind::Normal, data: Default::default() }).collect::<Vec<_>>());
    /// s.compact(SnapshotMeta { index: 4, term: 1, conf: ConfState::default() }).unwrap();
    /// assert_eq!((s.first_index(), s.last_index()), (5, 5));
    /// ```
    pub fn compact(&mut self, meta: SnapshotMeta) -> Result<(), StorageError> {
        self.compact_keeping(meta, 0)
    }

    /// Like [`compact`](Self::compact), but keeps up to `trailing` entries the snapshot
    /// covers, so a follower slightly behind it still gets entries rather than the
    /// snapshot.
    ///
    /// ```
    /// # use raft_core::{ConfState, Entry, EntryKind, MemStorage, SnapshotMeta, Storage};
    /// let mut s = MemStorage::new();
    /// s.append(&(1..=10).map(|i| Entry { index: i, term: 1, kind: EntryKind::Normal, data: Default::default() }).collect::<Vec<_>>());
    /// s.compact_keeping(SnapshotMeta { index: 8, term: 1, conf: ConfState::default() }, 3).unwrap();
    /// assert_eq!((s.first_index(), s.snapshot_meta().index, s.last_index()), (6, 8, 10));
    /// assert_eq!(s.entries(6, 9, u64::MAX).unwrap().len(), 3);
    /// ```
    pub fn compact_keeping(
        &mut self,
        meta: SnapshotMeta,
        trailing: u64,
    ) -> Result<(), StorageError> {
        if meta.index <= self.snapshot.index {
            return Err(StorageError::Compacted);
        }
        if meta.index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        debug_assert_eq!(
            self.term(meta.index),
            Ok(meta.term),
            "snapshot term must match the log"
        );
        let new_first = (meta.index + 1).saturating_sub(trailing).max(self.first);
        self.entries.drain(..(new_first - self.first) as usize);
        self.first = new_first;
        self.snapshot = meta;
        Ok(())
    }

    /// All entries held (trailing entries included).
    pub fn stored_entries(&self) -> &[Entry] {
        &self.entries
    }
}

impl Default for MemStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl Storage for MemStorage {
    fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot.clone()
    }

    fn first_index(&self) -> u64 {
        self.first
    }

    fn last_index(&self) -> u64 {
        (self.first + self.entries.len() as u64)
            .saturating_sub(1)
            .max(self.snapshot.index)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index == self.snapshot.index {
            return Ok(self.snapshot.term);
        }
        if index < self.first {
            return Err(StorageError::Compacted);
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        Ok(self.entries[(index - self.first) as usize].term)
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if lo < self.first {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        let held = &self.entries[(lo - self.first) as usize..(hi - self.first) as usize];
        let mut bytes = 0u64;
        let mut take = 0;
        for e in held {
            bytes += e.size_bytes();
            if take > 0 && bytes > max_bytes {
                break;
            }
            take += 1;
        }
        Ok(held[..take].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryKind;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: vec![0; 8].into(),
        }
    }

    #[test]
    fn append_truncates_conflicting_suffix() {
        let mut s = MemStorage::new();
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 1)]);
        s.append(&[ent(2, 2)]);
        assert_eq!(s.last_index(), 2);
        assert_eq!(s.term(2), Ok(2));
        assert_eq!(s.term(3), Err(StorageError::Unavailable));
    }

    #[test]
    fn compact_and_snapshot_bounds() {
        let mut s = MemStorage::new();
        s.append(&[ent(1, 1), ent(2, 1), ent(3, 2), ent(4, 2)]);
        s.compact(SnapshotMeta {
            index: 2,
            term: 1,
            conf: ConfState::default(),
        })
        .unwrap();
        assert_eq!(s.first_index(), 3);
        assert_eq!(s.term(2), Ok(1));
        assert_eq!(s.term(1), Err(StorageError::Compacted));
        assert_eq!(s.entries(2, 4, u64::MAX), Err(StorageError::Compacted));
        assert_eq!(s.entries(3, 5, 0).unwrap().len(), 1, "at least one entry");
        assert_eq!(s.entries(3, 5, u64::MAX).unwrap().len(), 2);
        s.apply_snapshot(SnapshotMeta {
            index: 10,
            term: 3,
            conf: ConfState::default(),
        });
        assert_eq!((s.first_index(), s.last_index()), (11, 10));
        s.append(&[ent(11, 3)]);
        assert_eq!(s.last_index(), 11);
    }

    #[test]
    fn trailing_entries_stay_readable_below_the_snapshot() {
        let mut s = MemStorage::new();
        s.append(&(1..=10).map(|i| ent(i, 1 + i / 6)).collect::<Vec<_>>());
        let meta = |index, term| SnapshotMeta {
            index,
            term,
            conf: ConfState::default(),
        };
        s.compact_keeping(meta(7, 2), 3).unwrap();
        assert_eq!((s.first_index(), s.last_index()), (5, 10));
        assert_eq!(
            (s.term(4), s.term(5), s.term(7)),
            (Err(StorageError::Compacted), Ok(1), Ok(2))
        );
        assert_eq!(s.entries(5, 8, u64::MAX).unwrap().len(), 3);
        assert_eq!(s.entries(4, 8, u64::MAX), Err(StorageError::Compacted));
        // A later compaction keeps at most as many; it never brings entries back.
        s.compact_keeping(meta(9, 2), 100).unwrap();
        assert_eq!(s.first_index(), 5);
        s.compact_keeping(meta(10, 2), 1).unwrap();
        assert_eq!(
            (s.first_index(), s.last_index(), s.term(9), s.term(10)),
            (10, 10, Err(StorageError::Compacted), Ok(2))
        );
        // Appends after the snapshot leave trailing entries alone; ones below are ignored.
        s.append(&[ent(10, 2), ent(11, 3)]);
        assert_eq!(
            (s.first_index(), s.last_index(), s.term(11)),
            (10, 11, Ok(3))
        );
        s.append(&[ent(11, 4)]);
        assert_eq!((s.term(10), s.term(11)), (Ok(2), Ok(4)));
        // An installed snapshot replaces the whole log, trailing entries included.
        s.apply_snapshot(meta(20, 5));
        assert_eq!(
            (s.first_index(), s.last_index(), s.term(10)),
            (21, 20, Err(StorageError::Compacted))
        );
    }

    #[test]
    fn bootstrap_records_the_initial_configuration() {
        let s = MemStorage::new_bootstrap([1, 2, 3]);
        assert_eq!(s.snapshot_meta().conf, ConfState::with_voters([1, 2, 3]));
        assert_eq!((s.first_index(), s.last_index(), s.term(1)), (2, 1, Ok(1)));
    }
}
