//! The tail of the log that the driver has not yet made durable.

use crate::entry::{Entry, SnapshotMeta};

/// Entries (and possibly a snapshot) not yet acknowledged as persisted.
#[derive(Clone, Debug, Default)]
pub struct Unstable {
    /// A received snapshot waiting to be installed.
    pub snapshot: Option<SnapshotMeta>,
    /// Entries from `offset` on.
    pub entries: Vec<Entry>,
    /// Index of `entries[0]` (or where it would be).
    pub offset: u64,
}

impl Unstable {
    /// An empty tail starting at `offset`.
    pub fn new(offset: u64) -> Self {
        Unstable {
            snapshot: None,
            entries: Vec::new(),
            offset,
        }
    }

    /// First index if only the unstable snapshot knows it.
    pub fn maybe_first_index(&self) -> Option<u64> {
        self.snapshot.as_ref().map(|s| s.index + 1)
    }

    /// Last index if the unstable part knows it.
    pub fn maybe_last_index(&self) -> Option<u64> {
        match (self.entries.last(), &self.snapshot) {
            (Some(e), _) => Some(e.index),
            (None, Some(s)) => Some(s.index),
            (None, None) => None,
        }
    }

    /// Term at `index` if the unstable part knows it.
    pub fn maybe_term(&self, index: u64) -> Option<u64> {
        if index < self.offset {
            return self
                .snapshot
                .as_ref()
                .filter(|s| s.index == index)
                .map(|s| s.term);
        }
        self.entries
            .get((index - self.offset) as usize)
            .map(|e| e.term)
    }

    /// Entries at or below `(index, term)` are now durable: drop them.
    pub fn stable_to(&mut self, index: u64, term: u64) {
        if self.maybe_term(index) != Some(term) || index < self.offset {
            // Replaced by a conflicting append since the Ready was taken; keep it.
            return;
        }
        let n = (index + 1 - self.offset) as usize;
        if n >= self.entries.len() {
            self.entries.clear();
        } else {
            self.entries.drain(..n);
        }
        self.offset = index + 1;
    }

    /// The snapshot at `index` is now installed.
    pub fn stable_snapshot(&mut self, index: u64) {
        if self.snapshot.as_ref().is_some_and(|s| s.index == index) {
            self.snapshot = None;
        }
    }

    /// Replaces everything with a received snapshot.
    pub fn restore(&mut self, snapshot: SnapshotMeta) {
        self.offset = snapshot.index + 1;
        self.entries.clear();
        self.snapshot = Some(snapshot);
    }

    /// Appends `entries` (taking them, no copy), first discarding any unstable entries
    /// at or after the first one.
    pub fn truncate_and_append(&mut self, mut entries: Vec<Entry>) {
        let Some(first) = entries.first() else { return };
        let after = first.index;
        if after == self.offset + self.entries.len() as u64 {
            if self.entries.is_empty() {
                self.entries = entries;
            } else {
                self.entries.append(&mut entries);
            }
        } else if after <= self.offset {
            // Replaces part of the durable log too; the driver truncates it on append.
            self.offset = after;
            self.entries = entries;
        } else {
            self.entries.truncate((after - self.offset) as usize);
            self.entries.append(&mut entries);
        }
    }

    /// Appends one entry right after the last one (the leader's own proposals).
    pub fn push(&mut self, entry: Entry) {
        if entry.index == self.offset + self.entries.len() as u64 {
            self.entries.push(entry);
        } else {
            self.truncate_and_append(vec![entry]);
        }
    }

    /// Entries in `lo..hi`, all of which must be in the unstable part.
    pub fn slice(&self, lo: u64, hi: u64) -> &[Entry] {
        debug_assert!(
            lo >= self.offset && hi <= self.offset + self.entries.len() as u64 && lo <= hi
        );
        &self.entries[(lo - self.offset) as usize..(hi - self.offset) as usize]
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
            data: Default::default(),
        }
    }

    #[test]
    fn truncate_and_append_cases() {
        let mut u = Unstable::new(5);
        u.truncate_and_append(vec![ent(5, 1), ent(6, 1), ent(7, 1)]);
        u.truncate_and_append(vec![ent(8, 1)]);
        assert_eq!(u.maybe_last_index(), Some(8));
        u.truncate_and_append(vec![ent(7, 2)]);
        assert_eq!((u.maybe_last_index(), u.maybe_term(7)), (Some(7), Some(2)));
        u.truncate_and_append(vec![ent(3, 3)]);
        assert_eq!((u.offset, u.maybe_last_index()), (3, Some(3)));
    }

    #[test]
    fn stable_to_ignores_replaced_entries() {
        let mut u = Unstable::new(1);
        u.truncate_and_append(vec![ent(1, 1), ent(2, 1)]);
        u.stable_to(2, 5);
        assert_eq!(u.entries.len(), 2);
        u.stable_to(1, 1);
        assert_eq!((u.offset, u.entries.len()), (2, 1));
    }
}
