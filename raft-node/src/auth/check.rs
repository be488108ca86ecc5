//! Range permission math: is a key, or the whole of a range, covered by the
//! permissions a user's roles grant?
//!
//! As etcd's: a permission or request with an empty `range_end` is the one
//! key; a `range_end` of `"\0"` means every key from `key` on; otherwise it
//! is `[key, range_end)`. A range request is allowed only if the union of
//! the granted ranges covers all of it (etcd merges its interval tree the
//! same way), so two adjacent grants together allow a range spanning both.

use std::cmp::Ordering;

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Range, Watch, compare keys, `prev_kv`.
    Read,
    /// Put, DeleteRange, LeaseRevoke of attached keys.
    Write,
}

/// The end of an interval: a key (exclusive) or past every key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Key(Vec<u8>),
    Unbounded,
}

impl PartialOrd for End {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for End {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (End::Unbounded, End::Unbounded) => Ordering::Equal,
            (End::Unbounded, _) => Ordering::Greater,
            (_, End::Unbounded) => Ordering::Less,
            (End::Key(a), End::Key(b)) => a.cmp(b),
        }
    }
}

/// `[start, end)` for a key and range end in etcd's encoding; `None` for an
/// empty range (`range_end <= key`), which covers nothing.
fn interval(key: &[u8], range_end: &[u8]) -> Option<(Vec<u8>, End)> {
    let end = match range_end {
        [] => {
            let mut next = key.to_vec();
            next.push(0);
            End::Key(next)
        }
        [0] => End::Unbounded,
        end => End::Key(end.to_vec()),
    };
    if let End::Key(e) = &end {
        if e.as_slice() <= key {
            return None;
        }
    }
    Some((key.to_vec(), end))
}

/// Whether the ranges `granted` (key, range_end pairs) together cover all of
/// `key`..`range_end`. An empty request range is covered by nothing (etcd
/// refuses it too).
pub fn covers<'a>(
    granted: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    key: &[u8],
    range_end: &[u8],
) -> bool {
    let Some((mut from, want_end)) = interval(key, range_end) else {
        return false;
    };
    let mut spans: Vec<(Vec<u8>, End)> = granted
        .into_iter()
        .filter_map(|(k, e)| interval(k, e))
        .collect();
    spans.sort();
    // Walk the grants in start order, extending the covered prefix of the
    // request; a gap before `from` is reached means it is not covered.
    for (start, end) in spans {
        if start > from {
            break;
        }
        if End::Key(from.clone()) < end {
            match end {
                End::Unbounded => return true,
                End::Key(e) => {
                    if End::Key(e.clone()) >= want_end {
                        return true;
                    }
                    from = e;
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(granted: &[(&str, &str)], key: &str, end: &str) -> bool {
        covers(
            granted.iter().map(|(k, e)| (k.as_bytes(), e.as_bytes())),
            key.as_bytes(),
            end.as_bytes(),
        )
    }

    #[test]
    fn single_keys() {
        assert!(c(&[("a", "")], "a", ""));
        assert!(!c(&[("a", "")], "b", ""));
        assert!(!c(&[("a", "")], "a\0", ""));
        assert!(!c(&[], "a", ""));
        // A single-key grant does not cover a range starting at it.
        assert!(!c(&[("a", "")], "a", "b"));
    }

    #[test]
    fn prefix_ranges() {
        // etcdctl's --prefix "pub/" is [pub/, pub0).
        let g = [("pub/", "pub0")];
        assert!(c(&g, "pub/x", ""));
        assert!(c(&g, "pub/", "pub0"));
        assert!(c(&g, "pub/a", "pub/b"));
        assert!(!c(&g, "pub", ""));
        assert!(!c(&g, "pub0", ""));
        assert!(!c(&g, "pub/", "pub1"));
        assert!(!c(&g, "pa", "pub/z"));
    }

    #[test]
    fn from_key_and_everything() {
        let all = [("\0", "\0")];
        assert!(c(&all, "anything", ""));
        assert!(c(&all, "\0", "\0"));
        let from_m = [("m", "\0")];
        assert!(c(&from_m, "m", "\0"));
        assert!(c(&from_m, "zzz", ""));
        assert!(!c(&from_m, "a", "\0"));
        // A bounded grant never covers an unbounded request.
        assert!(!c(&[("a", "zzzz")], "b", "\0"));
    }

    #[test]
    fn adjacent_and_overlapping_grants_merge() {
        assert!(c(&[("a", "c"), ("c", "e")], "b", "d"));
        assert!(c(&[("c", "e"), ("a", "c")], "a", "e"));
        assert!(c(&[("a", "d"), ("b", "c")], "a", "d"));
        assert!(!c(&[("a", "c"), ("d", "e")], "b", "d"));
        // A single-key grant fills the gap [c, c\0).
        assert!(c(&[("a", "c"), ("c", ""), ("c\0", "e")], "a", "e"));
    }

    #[test]
    fn empty_ranges_are_covered_by_nothing() {
        assert!(!c(&[("\0", "\0")], "b", "a"));
        assert!(!c(&[("\0", "\0")], "b", "b"));
        assert!(!c(&[("b", "a")], "b", ""));
    }
}
