//! The events between two revisions, for watchers.
//!
//! Events come from the key histories the store keeps until compaction, so
//! a watcher catches up exactly, from any revision not yet compacted, on any
//! member, across restarts and snapshot installs. A bounded index of recent
//! changes ([`Store::record_change`]) finds the events of recent revisions
//! without scanning the watched range; older ones are found by a scan.

use bytes::Bytes;

use super::range::{key_value, KeyRange};
use super::{MvccError, Store};
use crate::api::pb::mvccpb::event::EventType;
use crate::api::pb::mvccpb::{Event, KeyValue};

/// Changes kept in the recent-change index.
pub const RECENT_CHANGES: usize = 50_000;

/// One change in the recent-change index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Revision of the change.
    pub rev: i64,
    /// Its position within the revision.
    pub sub: u32,
    /// The key it changed.
    pub key: Bytes,
}

impl Store {
    /// Notes a change for watchers (not replicated state: a restored store
    /// starts with an empty index, and watchers fall back to a scan).
    pub(super) fn record_change(&mut self, rev: i64, sub: u32, key: &Bytes) {
        self.recent.push_back(Change {
            rev,
            sub,
            key: key.clone(),
        });
        while self.recent.len() > RECENT_CHANGES {
            if let Some(old) = self.recent.pop_front() {
                self.recent_from = self.recent_from.max(old.rev + 1);
            }
        }
    }

    /// Every event on `range` with a revision in `[from, to]`, in revision
    /// order (and write order within a revision). `prev_kv` adds the
    /// version each event replaced, when it is still kept. Fails with
    /// [`MvccError::Compacted`] if `from` is below the compaction revision.
    pub fn events(
        &self,
        range: &KeyRange,
        from: i64,
        to: i64,
        prev_kv: bool,
    ) -> Result<Vec<Event>, MvccError> {
        self.check_keys_readable()?;
        if from < self.compact_revision {
            return Err(MvccError::Compacted);
        }
        if from > to {
            return Ok(Vec::new());
        }
        let mut found: Vec<(i64, u32, Bytes, usize)> = Vec::new();
        if from >= self.recent_from {
            let start = self.recent.binary_search_by(|c| {
                if c.rev < from {
                    std::cmp::Ordering::Less
                } else {
                    std::cmp::Ordering::Greater
                }
            });
            let start = start.unwrap_or_else(|i| i);
            for c in self.recent.iter().skip(start) {
                if c.rev > to {
                    break;
                }
                if !range.contains(&c.key) {
                    continue;
                }
                if let Some(h) = self.keys.get(c.key.as_ref()) {
                    if let Some(i) = h
                        .retained(self.compact_revision)
                        .iter()
                        .position(|v| v.mod_rev == c.rev && v.sub == c.sub)
                    {
                        found.push((c.rev, c.sub, c.key.clone(), i));
                    }
                }
            }
        } else {
            for (k, h) in self.keys_in(range) {
                for (i, v) in h.retained(self.compact_revision).iter().enumerate() {
                    if (from..=to).contains(&v.mod_rev) {
                        found.push((v.mod_rev, v.sub, k.clone(), i));
                    }
                }
            }
            found.sort_unstable_by_key(|(rev, sub, _, _)| (*rev, *sub));
        }
        Ok(found
            .into_iter()
            .filter_map(|(_, _, key, i)| {
                let versions = self.keys.get(key.as_ref())?.retained(self.compact_revision);
                let v = &versions[i];
                let prev = if prev_kv && i > 0 {
                    let p = &versions[i - 1];
                    p.value.as_ref().map(|_| key_value(&key, p, false))
                } else {
                    None
                };
                Some(match &v.value {
                    Some(_) => Event {
                        r#type: EventType::Put as i32,
                        kv: Some(key_value(&key, v, false)),
                        prev_kv: prev,
                    },
                    None => Event {
                        r#type: EventType::Delete as i32,
                        kv: Some(KeyValue {
                            key: key.to_vec(),
                            mod_revision: v.mod_rev,
                            ..Default::default()
                        }),
                        prev_kv: prev,
                    },
                })
            })
            .collect())
    }
}
