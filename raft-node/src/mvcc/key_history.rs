//! The versions of one key kept until compaction.

use std::sync::Arc;

use bytes::Bytes;

/// One version of a key: a put (with a value) or a delete (a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Revision of the write.
    pub mod_rev: i64,
    /// Position of the write among the writes of its revision (0, 1, ...).
    pub sub: u32,
    /// Revision that created the key (its first put after absence); 0 for a tombstone.
    pub create_rev: i64,
    /// Puts since creation (1 for the first); 0 for a tombstone.
    pub version: i64,
    /// Attached lease (0: none).
    pub lease: i64,
    /// The value; `None` marks a delete.
    pub value: Option<Bytes>,
}

impl Version {
    /// Approximate bytes this version holds for `key` (the store's size).
    pub fn footprint(&self, key: &[u8]) -> u64 {
        (key.len() + self.value.as_ref().map_or(0, Bytes::len) + 40) as u64
    }
}

/// Every retained version of a key, oldest first (ascending `mod_rev`).
///
/// The versions are shared (`Arc`), so cloning a history is one reference
/// count: the store's map copies whole nodes of histories when it writes
/// to a node that a published view shares, and a compaction that touches
/// keys all over the map copies most nodes. A write replaces the slice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyHistory {
    versions: Arc<[Version]>,
}

impl KeyHistory {
    /// Builds a history from versions in ascending revision order.
    pub fn from_versions(versions: Vec<Version>) -> Self {
        KeyHistory {
            versions: versions.into(),
        }
    }

    /// Every retained version, oldest first.
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// The live version at `rev` (the newest at or below it, if not a delete).
    pub fn at(&self, rev: i64) -> Option<&Version> {
        let i = self.versions.partition_point(|v| v.mod_rev <= rev);
        let v = self.versions.get(i.checked_sub(1)?)?;
        v.value.as_ref().map(|_| v)
    }

    /// The live version now.
    pub fn latest(&self) -> Option<&Version> {
        let v = self.versions.last()?;
        v.value.as_ref().map(|_| v)
    }

    /// Appends a newer version.
    pub fn push(&mut self, v: Version) {
        debug_assert!(self.versions.last().is_none_or(|l| l.mod_rev <= v.mod_rev));
        self.versions = self
            .versions
            .iter()
            .cloned()
            .chain(std::iter::once(v))
            .collect();
    }

    /// Drops what no read at or above `rev` can see: every version older
    /// than the newest one at or below `rev`, and that one too if it is a
    /// delete. Returns the bytes freed (for `key`).
    pub fn compact(&mut self, rev: i64, key: &[u8]) -> u64 {
        let keep_from = self.compaction_keeps_from(rev);
        let freed = self.versions[..keep_from]
            .iter()
            .map(|v| v.footprint(key))
            .sum();
        self.versions = self.versions[keep_from..].iter().cloned().collect();
        freed
    }

    /// The versions a compaction at `rev` keeps: what reads see of the
    /// history once the store is compacted at `rev`, whether or not the
    /// compaction has reached this key yet.
    pub fn retained(&self, rev: i64) -> &[Version] {
        &self.versions[self.compaction_keeps_from(rev)..]
    }

    /// Whether compacting at `rev` would drop anything.
    pub fn compacts_at(&self, rev: i64) -> bool {
        self.compaction_keeps_from(rev) > 0
    }

    /// The lowest revision at which a compaction drops something: the
    /// first version's if it is a delete, else the second version's (the
    /// first is hidden from then on). `None` for one live version.
    pub fn compactable_from(&self) -> Option<i64> {
        match &*self.versions {
            [] => None,
            [first, ..] if first.value.is_none() => Some(first.mod_rev),
            [_, second, ..] => Some(second.mod_rev),
            [_] => None,
        }
    }

    /// The first version a compaction at `rev` keeps.
    fn compaction_keeps_from(&self, rev: i64) -> usize {
        let at_or_below = self.versions.partition_point(|v| v.mod_rev <= rev);
        match at_or_below.checked_sub(1).map(|i| &self.versions[i]) {
            None => 0,
            Some(newest) if newest.value.is_some() => at_or_below - 1,
            Some(_) => at_or_below,
        }
    }

    /// True once every version is compacted away.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(rev: i64, value: &str) -> Version {
        Version {
            mod_rev: rev,
            sub: 0,
            create_rev: rev,
            version: 1,
            lease: 0,
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
        }
    }

    fn del(rev: i64) -> Version {
        Version {
            mod_rev: rev,
            sub: 0,
            create_rev: 0,
            version: 0,
            lease: 0,
            value: None,
        }
    }

    #[test]
    fn reads_at_revisions_and_compacts() {
        let mut h = KeyHistory::default();
        h.push(put(2, "a"));
        h.push(del(4));
        h.push(put(6, "b"));
        assert_eq!(h.at(1), None);
        assert_eq!(h.at(3).unwrap().mod_rev, 2);
        assert_eq!(h.at(5), None);
        assert_eq!(h.latest().unwrap().mod_rev, 6);
        h.compact(3, b"k");
        assert_eq!(h.versions().len(), 3, "the put at 2 is still visible at 3");
        h.compact(5, b"k");
        assert_eq!(
            h.versions().len(),
            1,
            "the delete at 4 hides everything older"
        );
        h.compact(7, b"k");
        assert_eq!(h.versions().len(), 1, "the newest live version stays");
    }
}
