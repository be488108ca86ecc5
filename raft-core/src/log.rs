//! The raft log: durable entries read through [`Storage`] plus the unstable tail.

use std::cell::RefCell;

use crate::entry::{Entry, EntryId, SnapshotMeta};
use crate::error::StorageError;
use crate::log_unstable::Unstable;
use crate::storage::Storage;

/// The log as the algorithm sees it.
pub struct RaftLog<S: Storage> {
    /// Durable part.
    pub storage: S,
    /// Not yet durable part.
    pub unstable: Unstable,
    /// Highest index known to be committed.
    pub committed: u64,
    /// Highest index the driver has applied (acknowledged through `advance`).
    pub applied: u64,
    /// The first fatal storage failure seen by any read; once set the node is stopped.
    /// Reads happen through `&self` all over the algorithm, hence the cell.
    failure: RefCell<Option<StorageError>>,
}

impl<S: Storage> RaftLog<S> {
    /// Opens the log over `storage`, with `applied` as reported by the driver.
    pub fn new(storage: S, applied: u64) -> Self {
        let offset = storage.last_index() + 1;
        // Everything the snapshot covers is committed and applied (trailing entries
        // below it included).
        let snapshot = storage.snapshot_meta().index;
        let committed = storage.hard_state().commit.max(snapshot);
        let applied = applied.max(snapshot).min(committed);
        RaftLog {
            storage,
            unstable: Unstable::new(offset),
            committed,
            applied,
            failure: RefCell::new(None),
        }
    }

    /// The first fatal storage failure, if a read has failed.
    pub fn failure(&self) -> Option<StorageError> {
        self.failure.borrow().clone()
    }

    /// True once a fatal storage failure was recorded.
    pub fn has_failed(&self) -> bool {
        self.failure.borrow().is_some()
    }

    /// Records `e` as the node's fatal failure (the first one is kept).
    pub fn fail(&self, e: StorageError) {
        let mut f = self.failure.borrow_mut();
        if f.is_none() {
            *f = Some(e);
        }
    }

    /// Passes a storage answer through, recording a fatal failure.
    fn note<T>(&self, r: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(e) = &r {
            if e.is_fatal() {
                self.fail(e.clone());
            }
        }
        r
    }

    /// First index still held as an entry.
    pub fn first_index(&self) -> u64 {
        self.unstable
            .maybe_first_index()
            .unwrap_or_else(|| self.storage.first_index())
    }

    /// Last index in the log.
    pub fn last_index(&self) -> u64 {
        self.unstable
            .maybe_last_index()
            .unwrap_or_else(|| self.storage.last_index())
    }

    /// Term at `index`.
    pub fn term(&self, index: u64) -> Result<u64, StorageError> {
        // Fast path: an unstable entry (the leader's recent proposals, a follower's
        // latest appends) answers without the bounds checks below.
        if let Some(e) = index
            .checked_sub(self.unstable.offset)
            .and_then(|i| self.unstable.entries.get(i as usize))
        {
            return Ok(e.term);
        }
        let dummy = self.first_index() - 1;
        if index < dummy {
            return Err(StorageError::Compacted);
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        if let Some(t) = self.unstable.maybe_term(index) {
            return Ok(t);
        }
        self.note(self.storage.term(index))
    }

    /// Position of the last entry.
    pub fn last_entry_id(&self) -> EntryId {
        let index = self.last_index();
        // The last index always has a term (an entry or the snapshot).
        EntryId {
            index,
            term: self.term(index).unwrap_or(0),
        }
    }

    /// True if the entry at `index` has term `term`.
    pub fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index) == Ok(term)
    }

    /// Election restriction (§5.4.1): is a log ending at `last` at least as up to date?
    pub fn is_up_to_date(&self, last: EntryId) -> bool {
        let mine = self.last_entry_id();
        last.term > mine.term || (last.term == mine.term && last.index >= mine.index)
    }

    /// First entry of `entries` that is missing or has another term here; `None` if the
    /// log already holds all of them.
    pub fn find_conflict(&self, entries: &[Entry]) -> Option<u64> {
        entries
            .iter()
            .find(|e| !self.match_term(e.index, e.term))
            .map(|e| e.index)
    }

    /// Appends entries, truncating any conflicting tail; the first must follow an existing one.
    pub fn append(&mut self, entries: Vec<Entry>) {
        let Some(first) = entries.first() else { return };
        debug_assert!(
            first.index > self.committed,
            "must never overwrite committed entries"
        );
        debug_assert!(
            first.index <= self.last_index() + 1,
            "append would leave a gap"
        );
        self.unstable.truncate_and_append(entries);
    }

    /// Appends one entry right after the last index (the leader's own proposals).
    pub fn push(&mut self, entry: Entry) {
        debug_assert_eq!(entry.index, self.last_index() + 1, "push would leave a gap");
        self.unstable.push(entry);
    }

    /// Entries in `lo..hi`, at most `max_bytes` (but at least one).
    pub fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        self.entries_with_size(lo, hi, max_bytes)
            .map(|(entries, _)| entries)
    }

    /// Like [`entries`](Self::entries), also returning their [`Entry::size_bytes`] sum.
    pub fn entries_with_size(
        &self,
        lo: u64,
        hi: u64,
        max_bytes: u64,
    ) -> Result<(Vec<Entry>, u64), StorageError> {
        if lo < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        if lo >= hi {
            return Ok((Vec::new(), 0));
        }
        let offset = self.unstable.offset;
        let mut out = if lo < offset {
            let stored_hi = hi.min(offset);
            let part = self.note(self.storage.entries(lo, stored_hi, max_bytes))?;
            if (part.len() as u64) < stored_hi - lo {
                let bytes = crate::entry::total_size_bytes(&part);
                return Ok((part, bytes));
            }
            part
        } else {
            Vec::new()
        };
        let mut bytes: u64 = crate::entry::total_size_bytes(&out);
        if hi > offset {
            let tail = self.unstable.slice(lo.max(offset), hi);
            // Count first, then copy the entries that fit in one go.
            let mut take = 0;
            for e in tail {
                let size = e.size_bytes();
                if (!out.is_empty() || take > 0) && bytes + size > max_bytes {
                    break;
                }
                bytes += size;
                take += 1;
            }
            out.extend_from_slice(&tail[..take]);
        }
        Ok((out, bytes))
    }

    /// Raises the commit index.
    pub fn commit_to(&mut self, index: u64) {
        if index > self.committed {
            debug_assert!(index <= self.last_index(), "commit beyond the log");
            self.committed = index;
        }
    }

    /// Committed entries not yet handed out, up to `max_bytes` (at least one).
    ///
    /// The range is inside the log by construction, so any error here (a failed read, or
    /// a storage that lost entries it reported) is fatal and recorded as such: handing
    /// out an empty batch instead would leave the entries pending forever.
    pub fn next_committed_entries(&self, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        let lo = self.applied + 1;
        if self.committed < lo || lo < self.first_index() {
            return Ok(Vec::new());
        }
        match self.entries(lo, self.committed + 1, max_bytes) {
            Ok(entries) if !entries.is_empty() => Ok(entries),
            Ok(_) => {
                let e = StorageError::Io(format!(
                    "no entries returned for committed range {lo}..={}",
                    self.committed
                ));
                self.fail(e.clone());
                Err(e)
            }
            Err(e) => {
                let e = match e {
                    StorageError::Io(_) => e,
                    other => StorageError::Io(format!(
                        "committed entries {lo}..={} unreadable: {other}",
                        self.committed
                    )),
                };
                self.fail(e.clone());
                Err(e)
            }
        }
    }

    /// Replaces the log with a received snapshot.
    pub fn restore(&mut self, snapshot: SnapshotMeta) {
        self.committed = snapshot.index;
        self.unstable.restore(snapshot);
    }

    /// Last index known durable (entries not yet persisted are not counted).
    pub fn persisted_index(&self) -> u64 {
        if self.unstable.snapshot.is_some() {
            return 0;
        }
        if self.unstable.entries.is_empty() {
            self.last_index()
        } else {
            self.unstable.offset - 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confchange::ConfState;
    use crate::entry::EntryKind;
    use crate::storage::MemStorage;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: vec![1; 10].into(),
        }
    }

    fn log_with(stored: &[(u64, u64)], unstable: &[(u64, u64)]) -> RaftLog<MemStorage> {
        let mut s = MemStorage::new();
        s.append(&stored.iter().map(|&(i, t)| ent(i, t)).collect::<Vec<_>>());
        let mut log = RaftLog::new(s, 0);
        log.append(unstable.iter().map(|&(i, t)| ent(i, t)).collect());
        log
    }

    #[test]
    fn reads_span_storage_and_unstable() {
        let log = log_with(&[(1, 1), (2, 1)], &[(3, 2), (4, 2)]);
        assert_eq!(log.last_index(), 4);
        assert_eq!(log.term(2), Ok(1));
        assert_eq!(log.term(4), Ok(2));
        assert_eq!(log.term(5), Err(StorageError::Unavailable));
        let all = log.entries(1, 5, u64::MAX).unwrap();
        assert_eq!(
            all.iter().map(|e| e.index).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        let some = log.entries(2, 5, 2 * ent(1, 1).size_bytes()).unwrap();
        assert_eq!(some.len(), 2);
        assert_eq!(log.persisted_index(), 2);
    }

    #[test]
    fn up_to_date_compares_term_then_index() {
        let log = log_with(&[(1, 1), (2, 2)], &[]);
        assert!(log.is_up_to_date(EntryId { index: 1, term: 3 }));
        assert!(log.is_up_to_date(EntryId { index: 2, term: 2 }));
        assert!(!log.is_up_to_date(EntryId { index: 1, term: 2 }));
        assert!(!log.is_up_to_date(EntryId { index: 9, term: 1 }));
    }

    #[test]
    fn conflict_and_truncation() {
        let mut log = log_with(&[(1, 1), (2, 1), (3, 1)], &[]);
        assert_eq!(log.find_conflict(&[ent(2, 1), ent(3, 1)]), None);
        assert_eq!(
            log.find_conflict(&[ent(2, 1), ent(3, 2), ent(4, 2)]),
            Some(3)
        );
        log.append(vec![ent(3, 2), ent(4, 2)]);
        assert_eq!(log.term(3), Ok(2));
        assert_eq!(log.entries(1, 5, u64::MAX).unwrap().len(), 4);
        assert_eq!(log.persisted_index(), 2);
    }

    #[test]
    fn restore_replaces_everything() {
        let mut log = log_with(&[(1, 1), (2, 1)], &[(3, 1)]);
        log.restore(SnapshotMeta {
            index: 10,
            term: 4,
            conf: ConfState::default(),
        });
        assert_eq!(
            (log.first_index(), log.last_index(), log.committed),
            (11, 10, 10)
        );
        assert_eq!(log.term(10), Ok(4));
        assert_eq!(log.term(9), Err(StorageError::Compacted));
    }
}
