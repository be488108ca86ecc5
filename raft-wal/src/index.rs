//! The in-memory index: where each live entry sits, and its term.
//!
//! Each entry costs 16 bytes (its segment and offset). Terms change rarely, so
//! they are kept as runs (the first index of each run and its term), not per
//! entry; a record's length is read from its header when it is read.

use std::collections::VecDeque;

/// Location and term of one entry record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    /// Segment sequence number.
    pub seq: u64,
    /// Offset of the record header within the segment.
    pub offset: u64,
    /// Entry term (kept here so `term(i)` never touches the disk).
    pub term: u64,
}

/// Where one entry's record is: what the index stores per entry.
#[derive(Debug, Clone, Copy)]
struct Slot {
    seq: u64,
    offset: u64,
}

/// Locations of the entries `[first, first + slots.len())`.
#[derive(Debug, Default)]
pub(crate) struct LogIndex {
    first: u64,
    slots: VecDeque<Slot>,
    /// Term runs `(first index, term)`, ascending: each run's term holds from
    /// its index up to the next run's. The first run starts at or before
    /// `first`; empty exactly when `slots` is.
    terms: VecDeque<(u64, u64)>,
}

impl LogIndex {
    pub fn new(first: u64) -> LogIndex {
        LogIndex {
            first,
            slots: VecDeque::new(),
            terms: VecDeque::new(),
        }
    }

    pub fn first_index(&self) -> u64 {
        self.first
    }

    /// Last index held; `first_index() - 1` when empty.
    pub fn last_index(&self) -> u64 {
        self.first + self.slots.len() as u64 - 1
    }

    pub fn get(&self, index: u64) -> Option<Loc> {
        let pos = index.checked_sub(self.first)?;
        let slot = self.slots.get(usize::try_from(pos).ok()?)?;
        Some(Loc {
            seq: slot.seq,
            offset: slot.offset,
            term: self.term_of(index),
        })
    }

    /// The entries from `from` on, in order (none if `from` is past the
    /// end); `None` if `from` is below the first index.
    pub fn iter_from(&self, from: u64) -> Option<impl Iterator<Item = Loc> + '_> {
        let pos = from.checked_sub(self.first)?;
        let pos = usize::try_from(pos)
            .unwrap_or(usize::MAX)
            .min(self.slots.len());
        let mut run = self
            .terms
            .partition_point(|&(start, _)| start <= from)
            .saturating_sub(1);
        let mut index = from;
        Some(self.slots.range(pos..).map(move |slot| {
            while self
                .terms
                .get(run + 1)
                .is_some_and(|&(start, _)| start <= index)
            {
                run += 1;
            }
            index += 1;
            Loc {
                seq: slot.seq,
                offset: slot.offset,
                term: self.terms[run].1,
            }
        }))
    }

    /// Term of `index`, which the index holds.
    fn term_of(&self, index: u64) -> u64 {
        let (last_start, last_term) = *self.terms.back().expect("a held entry has a term run");
        if index >= last_start {
            return last_term;
        }
        let run = self.terms.partition_point(|&(start, _)| start <= index);
        self.terms[run - 1].1
    }

    /// Adds the location of entry `last_index() + 1`.
    pub fn push(&mut self, loc: Loc) {
        if self.terms.back().is_none_or(|&(_, term)| term != loc.term) {
            self.terms.push_back((self.last_index() + 1, loc.term));
        }
        self.slots.push_back(Slot {
            seq: loc.seq,
            offset: loc.offset,
        });
    }

    /// Adds the locations of the entries after `last_index()`, in order.
    pub fn extend(&mut self, locs: impl IntoIterator<Item = Loc>) {
        for loc in locs {
            self.push(loc);
        }
    }

    /// Drops entries at or above `from` (clamped to the log), returning them in
    /// ascending order.
    pub fn truncate_from(&mut self, from: u64) -> Vec<Loc> {
        let keep = from.saturating_sub(self.first).min(self.slots.len() as u64) as usize;
        let dropped: Vec<Loc> = (keep..self.slots.len())
            .map(|pos| self.get(self.first + pos as u64).expect("held"))
            .collect();
        self.slots.truncate(keep);
        let end = self.first + keep as u64;
        while self.terms.back().is_some_and(|&(start, _)| start >= end) {
            self.terms.pop_back();
        }
        if self.slots.is_empty() {
            self.terms.clear();
        }
        dropped
    }

    /// Drops entries below `new_first`; a `new_first` past the end empties the
    /// log and moves its start there.
    pub fn compact_to(&mut self, new_first: u64) {
        if new_first <= self.first {
            return;
        }
        let drop = (new_first - self.first).min(self.slots.len() as u64) as usize;
        self.slots.drain(..drop);
        self.first = new_first;
        if self.slots.is_empty() {
            self.terms.clear();
        }
        while self.terms.len() >= 2 && self.terms[1].0 <= new_first {
            self.terms.pop_front();
        }
    }

    /// Sequence number of the segment holding the first live entry.
    pub fn first_seq(&self) -> Option<u64> {
        self.slots.front().map(|s| s.seq)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(term: u64) -> Loc {
        Loc {
            seq: 1,
            offset: term * 10,
            term,
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
        ix.push(loc(7));
        assert_eq!(ix.get(10), Some(loc(7)));
    }

    /// Against a model that keeps every entry's term: terms of entries
    /// pushed in runs survive truncations and compactions at any point.
    #[test]
    fn term_runs_match_a_per_entry_model() {
        let mut ix = LogIndex::new(1);
        let mut model: VecDeque<Loc> = VecDeque::new();
        let mut first = 1u64;
        // A deterministic walk of pushes in runs, truncations and compactions.
        let mut x = 12345u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut term = 1;
        for step in 0..2000 {
            match next() % 10 {
                0 => {
                    let last = first + model.len() as u64;
                    let from = first + next() % (model.len() as u64 + 1);
                    let popped = ix.truncate_from(from);
                    let kept = (from - first) as usize;
                    let expect: Vec<Loc> = model.drain(kept..).collect();
                    assert_eq!(popped, expect, "step {step}: truncate {from} of ..{last}");
                }
                1 => {
                    let to = first + next() % (model.len() as u64 + 2);
                    ix.compact_to(to);
                    let n = ((to - first) as usize).min(model.len());
                    model.drain(..n);
                    first = first.max(to);
                }
                k => {
                    if k == 2 {
                        term += 1;
                    }
                    let l = Loc {
                        seq: step,
                        offset: next() % 1000,
                        term,
                    };
                    ix.push(l);
                    model.push_back(l);
                }
            }
            assert_eq!(ix.first_index(), first, "step {step}");
            assert_eq!(ix.len(), model.len(), "step {step}");
            for (i, l) in model.iter().enumerate() {
                assert_eq!(ix.get(first + i as u64), Some(*l), "step {step} entry {i}");
            }
            let from = first + next() % (model.len() as u64 + 2);
            let tail: Vec<Loc> = ix.iter_from(from).expect("not below first").collect();
            let skip = ((from - first) as usize).min(model.len());
            assert!(
                tail.iter().eq(model.iter().skip(skip)),
                "step {step} from {from}"
            );
            assert!(first == 0 || ix.iter_from(first - 1).is_none());
            assert!(ix.terms.len() <= model.len());
        }
    }
}
