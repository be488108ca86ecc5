//! The leader's [`Progress`] per tracked member, kept in id order.
//!
//! A cluster has a handful of members and the leader looks one up on every
//! acknowledgement, every append it sends and every commit check, so the map is
//! a vector sorted by id: a lookup is a short search in one cache line or two,
//! where a `BTreeMap` chased node pointers. Iteration is in id order, as the
//! deterministic core needs.

use crate::entry::NodeId;
use crate::progress::Progress;

/// Progress per member id, iterated in ascending id order.
#[derive(Clone, Debug, Default)]
pub(crate) struct ProgressMap {
    /// Member ids, ascending; `progress[i]` belongs to `ids[i]`. Kept apart from the
    /// (large) progress records so that a lookup scans a few contiguous words.
    ids: Vec<NodeId>,
    progress: Vec<Progress>,
}

/// Up to this many members a lookup scans the ids; above, it bisects them.
const LINEAR_SCAN_MAX: usize = 16;

impl ProgressMap {
    fn position(&self, id: NodeId) -> Result<usize, usize> {
        if self.ids.len() <= LINEAR_SCAN_MAX {
            match self.ids.iter().position(|&k| k >= id) {
                Some(i) if self.ids[i] == id => Ok(i),
                Some(i) => Err(i),
                None => Err(self.ids.len()),
            }
        } else {
            self.ids.binary_search(&id)
        }
    }

    pub(crate) fn get(&self, id: &NodeId) -> Option<&Progress> {
        self.position(*id).ok().map(|i| &self.progress[i])
    }

    pub(crate) fn get_mut(&mut self, id: &NodeId) -> Option<&mut Progress> {
        self.position(*id).ok().map(|i| &mut self.progress[i])
    }

    pub(crate) fn contains_key(&self, id: &NodeId) -> bool {
        self.position(*id).is_ok()
    }

    /// Inserts or replaces the progress of `id`.
    pub(crate) fn insert(&mut self, id: NodeId, pr: Progress) {
        match self.position(id) {
            Ok(i) => self.progress[i] = pr,
            Err(i) => {
                self.ids.insert(i, id);
                self.progress.insert(i, pr);
            }
        }
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&NodeId, &mut Progress) -> bool) {
        let mut i = 0;
        while i < self.ids.len() {
            if keep(&self.ids[i], &mut self.progress[i]) {
                i += 1;
            } else {
                self.ids.remove(i);
                self.progress.remove(i);
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.ids.clear();
        self.progress.clear();
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Progress)> {
        self.ids.iter().zip(&self.progress)
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&NodeId, &mut Progress)> {
        self.ids.iter().zip(&mut self.progress)
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut Progress> {
        self.progress.iter_mut()
    }

    /// The smallest id above `after` (the smallest of all with `None`).
    pub(crate) fn next_id_after(&self, after: Option<NodeId>) -> Option<NodeId> {
        let start = match after {
            None => 0,
            Some(a) => self.ids.partition_point(|&id| id <= a),
        };
        self.ids.get(start).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pr(next: u64) -> Progress {
        Progress::new(next, 1, 4, u64::MAX)
    }

    #[test]
    fn members_stay_in_id_order_through_inserts_and_removals() {
        let mut m = ProgressMap::default();
        for id in [5, 1, 3, 9, 7] {
            m.insert(id, pr(id * 10));
        }
        let ids: Vec<u64> = m.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [1, 3, 5, 7, 9]);
        assert_eq!(m.get(&7).map(|p| p.next_index), Some(70));
        assert!(m.get(&4).is_none());
        m.insert(7, pr(71));
        assert_eq!(m.get(&7).map(|p| p.next_index), Some(71));
        m.retain(|id, _| *id != 3);
        assert!(!m.contains_key(&3));
        assert_eq!(m.next_id_after(None), Some(1));
        assert_eq!(m.next_id_after(Some(1)), Some(5));
        assert_eq!(m.next_id_after(Some(2)), Some(5));
        assert_eq!(m.next_id_after(Some(9)), None);
        if let Some(p) = m.get_mut(&9) {
            p.match_index = 4;
        }
        assert_eq!(m.iter().last().map(|(_, p)| p.match_index), Some(4));
        m.clear();
        assert_eq!(m.next_id_after(None), None);
    }

    #[test]
    fn a_large_membership_is_searched_the_same_way() {
        let mut m = ProgressMap::default();
        let ids: Vec<u64> = (0..40).rev().map(|i| i * 3 + 1).collect();
        for &id in &ids {
            m.insert(id, pr(id));
        }
        for &id in &ids {
            assert_eq!(m.get(&id).map(|p| p.next_index), Some(id));
            assert!(!m.contains_key(&(id + 1)));
        }
        let in_order: Vec<u64> = m.iter().map(|(id, _)| *id).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(in_order, sorted);
        m.retain(|id, _| id % 2 == 0);
        assert!(m.iter().all(|(id, p)| id % 2 == 0 && p.next_index == *id));
    }
}
