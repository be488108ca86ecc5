//! Every key's history, with an index of the keys a compaction can shrink.
//!
//! A compaction at revision `r` drops, for each key, the versions no read at
//! or above `r` can see. Finding those keys by walking the whole map costs
//! time in proportion to the store (a large state, at every auto-compaction,
//! on the driver thread); the index finds them in proportion to the work.
//! Each key with something to drop at some revision is indexed by the
//! lowest such revision ([`KeyHistory::compactable_from`]).

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

    /// Compacts every key with something to drop at `rev` (and only those:
    /// writing to a key copies the map's path to it, which views share).
    /// Keys left without versions are removed. Returns the bytes freed.
    pub fn compact(&mut self, rev: i64) -> u64 {
        let mut freed = 0;
        let mut later = Vec::new();
        // Entry by entry from the lowest: O(log n) each, and the set is
        // shared with views, so nothing else of it is copied.
        while self
            .compactable
            .get_min()
            .is_some_and(|(from, _)| *from <= rev)
        {
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
