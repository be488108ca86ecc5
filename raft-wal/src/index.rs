//! The in-memory index: where each live entry sits, and its term.

use std::collections::VecDeque;

/// Location of one entry record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    /// Segment sequence number.
    pub seq: u64,
    /// Offset of the record header within the segment.
    pub offset: u64,
    /// Entry term (kept here so `term(i)` never touches the disk).
    pub term: u64,
    /// Length of the entry's data.
    pub data_len: u32,
}

/// Locations of the entries `[first, first + locs.len())`.
#[derive(Debug, Default)]
pub(crate) struct LogIndex {
    first: u64,
    locs: VecDeque<Loc>,
}

impl LogIndex {
    pub fn new(first: u64) -> LogIndex {
        LogIndex {
            first,
            locs: VecDeque::new(),
        }
    }

    pub fn first_index(&self) -> u64 {
        self.first
    }

    /// Last index held; `first_index() - 1` when empty.
    pub fn last_index(&self) -> u64 {
        self.first + self.locs.len() as u64 - 1
    }

    pub fn get(&self, index: u64) -> Option<&Loc> {
        let pos = index.checked_sub(self.first)?;
        self.locs.get(usize::try_from(pos).ok()?)
    }

    /// Adds the location of entry `last_index() + 1`.
    pub fn push(&mut self, loc: Loc) {
        self.locs.push_back(loc);
    }

    /// Adds the locations of the entries after `last_index()`, in order.
    pub fn extend(&mut self, locs: impl IntoIterator<Item = Loc>) {
        self.locs.extend(locs);
    }

    /// Drops entries at or above `from` (clamped to the log), returning them in
    /// ascending order.
    pub fn truncate_from(&mut self, from: u64) -> Vec<Loc> {
        let keep = from.saturating_sub(self.first).min(self.locs.len() as u64) as usize;
        self.locs.drain(keep..).collect()
    }

    /// Drops entries below `new_first`; a `new_first` past the end empties the
    /// log and moves its start there.
    pub fn compact_to(&mut self, new_first: u64) {
        if new_first <= self.first {
            return;
        }
        let drop = (new_first - self.first).min(self.locs.len() as u64) as usize;
        self.locs.drain(..drop);
        self.first = new_first;
    }

    /// Sequence number of the segment holding the first live entry.
    pub fn first_seq(&self) -> Option<u64> {
        self.locs.front().map(|l| l.seq)
    }

    pub fn len(&self) -> usize {
        self.locs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(term: u64) -> Loc {
        Loc {
            seq: 1,
            offset: 0,
            term,
            data_len: 0,
        }
    }

    #[test]
    fn push_truncate_compact() {
        let mut ix = LogIndex::new(1);
        assert_eq!(ix.last_index(), 0);
        for t in 1..=5 {
            ix.push(loc(t));
        }
        assert_eq!(ix.last_index(), 5);
        let popped = ix.truncate_from(4);
        assert_eq!(popped.iter().map(|l| l.term).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(ix.last_index(), 3);
        ix.compact_to(3);
        assert_eq!((ix.first_index(), ix.last_index()), (3, 3));
        assert_eq!(ix.get(3).map(|l| l.term), Some(3));
        assert!(ix.get(2).is_none());
        ix.compact_to(10);
        assert_eq!((ix.first_index(), ix.last_index(), ix.len()), (10, 9, 0));
    }
}
