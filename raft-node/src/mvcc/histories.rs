//! Every key's history, with an index of the keys a compaction can shrink.
//!
//! A compaction at revision `r` drops, for each key, the versions no read at
//! or above `r` can see. Finding those keys by walking the whole map costs
//! time in proportion to the store (a large state, at every auto-compaction,
//! on the driver thread); the index finds them in proportion to the work.
//! Each key with something to drop at some revision is indexed by the
//! lowest such revision ([`KeyHistory::compactable_from`]).
//!
//! Dropping is done in bounded steps ([`Histories::compact_step`]): a
//! compaction that makes a large part of a large store due would otherwise
//! hold the driver for as long as it takes to copy every node of the map it
//! touches. Until a step reaches a key, its history still holds versions
//! that no read can see; whoever reads a whole history reads
//! [`KeyHistory::retained`] at the store's compaction revision, so what a
//! member answers does not depend on how far its steps have got.

use std::ops::Deref;

use bytes::Bytes;
use imbl::{OrdMap, OrdSet};

use super::key_history::{KeyHistory, Version};

/// The store's key histories. Reading goes through the map (`Deref`);
/// every change goes through these methods, which keep the index right.
#[derive(Debug, Clone, Default)]
pub struct Histories {
    keys: OrdMap<Bytes, KeyHistory>,
    /// `(revision from which a compaction frees something, key)`.
    compactable: OrdSet<(i64, Bytes)>,
    /// The revision the steps are compacting to (0: none yet).
    compacting_to: i64,
}

impl Deref for Histories {
    type Target = OrdMap<Bytes, KeyHistory>;
    fn deref(&self) -> &Self::Target {
        &self.keys
    }
}

impl Histories {
    /// Appends a newer version of `key`.
    pub fn push(&mut self, key: &Bytes, v: Version) {
        let h = self.keys.entry(key.clone()).or_default();
        let before = h.compactable_from();
        h.push(v);
        let after = h.compactable_from();
        self.reindex(key, before, after);
    }

    /// Adds a whole history (snapshot restore); `key` must be new.
    pub fn insert(&mut self, key: Bytes, h: KeyHistory) {
        if let Some(r) = h.compactable_from() {
            self.compactable.insert((r, key.clone()));
        }
        let old = self.keys.insert(key, h);
        debug_assert!(old.is_none(), "a key restored twice");
    }

    /// Starts a compaction at `rev`: [`compact_step`](Self::compact_step)
    /// then drops what no read at or above `rev` can see. A later
    /// compaction started before the steps finished includes the earlier.
    pub fn start_compaction(&mut self, rev: i64) {
        self.compacting_to = self.compacting_to.max(rev);
    }

    /// True while some key has versions the compaction started last drops.
    pub fn compaction_pending(&self) -> bool {
        self.compactable
            .get_min()
            .is_some_and(|(from, _)| *from <= self.compacting_to)
    }

    /// Compacts at most `max_keys` of the keys with something to drop
    /// (and only those: writing to a key copies the map's path to it, which
    /// views share). Keys left without versions are removed. Returns the
    /// bytes freed.
    pub fn compact_step(&mut self, max_keys: usize) -> u64 {
        let rev = self.compacting_to;
        let mut freed = 0;
        let mut later = Vec::new();
        // Entry by entry from the lowest: O(log n) each, and the set is
        // shared with views, so nothing else of it is copied.
        for _ in 0..max_keys {
            if !self.compaction_pending() {
                break;
            }
            let Some((_, key)) = self.compactable.remove_min() else {
                break;
            };
            let Some(h) = self.keys.get_mut(key.as_ref()) else {
                debug_assert!(false, "an indexed key without a history");
                continue;
            };
            freed += h.compact(rev, &key);
            if h.is_empty() {
                self.keys.remove(key.as_ref());
            } else if let Some(r) = h.compactable_from() {
                later.push((r, key));
            }
        }
        // Keys with versions after `rev` are due again later (`r > rev`).
        for entry in later {
            self.compactable.insert(entry);
        }
        freed
    }

    fn reindex(&mut self, key: &Bytes, before: Option<i64>, after: Option<i64>) {
        if before == after {
            return;
        }
        if let Some(r) = before {
            self.compactable.remove(&(r, key.clone()));
        }
        if let Some(r) = after {
            self.compactable.insert((r, key.clone()));
        }
    }

    /// The index entries, for tests that check them against a full walk.
    #[cfg(test)]
    pub fn indexed(&self) -> Vec<(i64, Bytes)> {
        self.compactable.iter().cloned().collect()
    }
}
