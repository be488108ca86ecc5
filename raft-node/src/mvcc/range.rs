//! Key ranges and `Range` requests (etcd's rules for `range_end`, limits,
//! filters and sorting).

use std::ops::Bound;

use bytes::Bytes;

use super::key_history::Version;
use super::{MvccError, Store};
use crate::api::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::api::pb::etcdserverpb::{RangeRequest, RangeResponse};
use crate::api::pb::mvccpb::KeyValue;

/// The keys a request names: `key` alone (empty `range_end`), `[key,
/// range_end)`, or every key at or after `key` (`range_end` = `"\0"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRange {
    /// One key.
    Single(Bytes),
    /// `[start, end)`; `end = None` means no upper bound.
    Span {
        /// First key.
        start: Bytes,
        /// Bound past the last key.
        end: Option<Bytes>,
    },
}

impl KeyRange {
    /// Interprets `key` and `range_end` as etcd does.
    pub fn new(key: &[u8], range_end: &[u8]) -> KeyRange {
        match range_end {
            [] => KeyRange::Single(Bytes::copy_from_slice(key)),
            [0] => KeyRange::Span {
                start: Bytes::copy_from_slice(key),
                end: None,
            },
            end => KeyRange::Span {
                start: Bytes::copy_from_slice(key),
                end: Some(Bytes::copy_from_slice(end)),
            },
        }
    }

    /// Whether `k` is in the range.
    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            KeyRange::Single(s) => s.as_ref() == k,
            KeyRange::Span { start, end } => {
                k >= start.as_ref() && end.as_ref().is_none_or(|e| k < e.as_ref())
            }
        }
    }

    /// Whether the two ranges share a key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        let (a0, a1) = self.bounds();
        let (b0, b1) = other.bounds();
        let a_before_b_ends = b1.as_ref().is_none_or(|e| a0 < e.as_slice());
        let b_before_a_ends = a1.as_ref().is_none_or(|e| b0 < e.as_slice());
        a_before_b_ends && b_before_a_ends
    }

    /// `[start, end)` with `end = None` for no bound; a single key `k` is `[k, k\0)`.
    fn bounds(&self) -> (&[u8], Option<Vec<u8>>) {
        match self {
            KeyRange::Single(k) => {
                let mut e = k.to_vec();
                e.push(0);
                (k.as_ref(), Some(e))
            }
            KeyRange::Span { start, end } => (start.as_ref(), end.as_ref().map(|e| e.to_vec())),
        }
    }
}

impl Store {
    /// Every key of `range` with its history, in key order.
    pub(super) fn keys_in<'a>(
        &'a self,
        range: &'a KeyRange,
    ) -> Box<dyn Iterator<Item = (&'a Bytes, &'a super::KeyHistory)> + 'a> {
        match range {
            KeyRange::Single(k) => Box::new(self.keys.get_key_value(k.as_ref()).into_iter()),
            KeyRange::Span { start, end } => {
                if end.as_ref().is_some_and(|e| e.as_ref() <= start.as_ref()) {
                    return Box::new(std::iter::empty());
                }
                let hi = match end {
                    Some(e) => Bound::Excluded(e.as_ref()),
                    None => Bound::Unbounded,
                };
                Box::new(
                    self.keys
                        .range::<_, [u8]>((Bound::Included(start.as_ref()), hi)),
                )
            }
        }
    }

    /// The live versions of `range` at `rev`, in key order.
    pub(super) fn live_at<'a>(
        &'a self,
        range: &'a KeyRange,
        rev: i64,
    ) -> impl Iterator<Item = (&'a Bytes, &'a Version)> + 'a {
        self.keys_in(range)
            .filter_map(move |(k, h)| h.at(rev).map(|v| (k, v)))
    }

    /// Checks that `rev` (<= 0: the current revision) can be read, and
    /// returns the revision to read at.
    pub(super) fn readable_revision(&self, rev: i64, current: i64) -> Result<i64, MvccError> {
        self.check_keys_readable()?;
        if rev <= 0 {
            return Ok(current);
        }
        if rev > current {
            return Err(MvccError::FutureRevision);
        }
        if rev < self.compact_revision {
            return Err(MvccError::Compacted);
        }
        Ok(rev)
    }

    /// Serves a `Range` at the store's revision `current` (the current
    /// revision, or a transaction's own revision inside a transaction).
    pub(super) fn range_at(
        &self,
        req: &RangeRequest,
        current: i64,
    ) -> Result<RangeResponse, MvccError> {
        let rev = self.readable_revision(req.revision, current)?;
        let range = KeyRange::new(&req.key, &req.range_end);
        let sort_order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
        let sort_target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
        // etcd sorts by the target ascending when a target other than the key
        // is named without an order.
        let sort_order = match (sort_order, sort_target) {
            (SortOrder::None, t) if t != SortTarget::Key => SortOrder::Ascend,
            (o, _) => o,
        };
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let passes = |v: &Version| {
            (req.min_mod_revision == 0 || v.mod_rev >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || v.mod_rev <= req.max_mod_revision)
                && (req.min_create_revision == 0 || v.create_rev >= req.min_create_revision)
                && (req.max_create_revision == 0 || v.create_rev <= req.max_create_revision)
        };
        let limit = usize::try_from(req.limit).unwrap_or(0);
        let mut count = 0i64;
        let mut picked: Vec<(&Bytes, &Version)> = Vec::new();
        // Without sorting or filters the first `limit + 1` keys decide `more`.
        let stop_early = sort_order == SortOrder::None && !filtered && limit > 0;
        for (k, v) in self.live_at(&range, rev) {
            count += 1;
            if req.count_only || (stop_early && picked.len() > limit) {
                continue;
            }
            if passes(v) {
                picked.push((k, v));
            }
        }
        if req.count_only {
            return Ok(RangeResponse {
                header: None,
                kvs: Vec::new(),
                more: false,
                count,
            });
        }
        sort(&mut picked, sort_order, sort_target);
        let more = limit > 0 && picked.len() > limit;
        if more {
            picked.truncate(limit);
        }
        let kvs = picked
            .into_iter()
            .map(|(k, v)| key_value(k, v, req.keys_only))
            .collect();
        Ok(RangeResponse {
            header: None,
            kvs,
            more,
            count,
        })
    }
}

fn sort(kvs: &mut [(&Bytes, &Version)], order: SortOrder, target: SortTarget) {
    if order == SortOrder::None {
        return;
    }
    // Stable sorts keep key order among equal targets, as etcd does.
    match target {
        SortTarget::Key => {}
        SortTarget::Version => kvs.sort_by_key(|(_, v)| v.version),
        SortTarget::Create => kvs.sort_by_key(|(_, v)| v.create_rev),
        SortTarget::Mod => kvs.sort_by_key(|(_, v)| v.mod_rev),
        SortTarget::Value => kvs.sort_by(|a, b| a.1.value.cmp(&b.1.value)),
    }
    if order == SortOrder::Descend {
        kvs.reverse();
    }
}

/// The wire form of a live version of `key`.
pub(super) fn key_value(key: &Bytes, v: &Version, keys_only: bool) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        create_revision: v.create_rev,
        mod_revision: v.mod_rev,
        version: v.version,
        value: if keys_only {
            Vec::new()
        } else {
            v.value.as_ref().map_or_else(Vec::new, |b| b.to_vec())
        },
        lease: v.lease,
    }
}

#[cfg(test)]
mod tests {
    use super::KeyRange;

    #[test]
    fn range_end_rules() {
        let single = KeyRange::new(b"a", b"");
        assert!(single.contains(b"a") && !single.contains(b"ab"));
        let prefix = KeyRange::new(b"a", b"b");
        assert!(prefix.contains(b"a") && prefix.contains(b"azz") && !prefix.contains(b"b"));
        let from = KeyRange::new(b"m", b"\0");
        assert!(from.contains(b"m") && from.contains(b"zzz") && !from.contains(b"l"));
        let all = KeyRange::new(b"\0", b"\0");
        assert!(all.contains(b"\0") && all.contains(b"anything"));
        assert!(single.overlaps(&prefix));
        assert!(!KeyRange::new(b"b", b"").overlaps(&prefix));
        assert!(from.overlaps(&KeyRange::new(b"z", b"")));
        assert!(!from.overlaps(&KeyRange::new(b"a", b"m")));
    }
}
