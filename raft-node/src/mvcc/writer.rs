//! Writes of one request: every change lands at the same new revision.

use bytes::Bytes;

use super::key_history::Version;
use super::range::{key_value, KeyRange};
use super::{pair_hash, MvccError, Store};
use crate::api::pb::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, ResponseHeader,
};

/// Applies the writes of one request at revision `store.revision + 1`; the
/// store's revision moves there only if something changed ([`Writer::finish`]).
pub(super) struct Writer<'a> {
    pub(super) store: &'a mut Store,
    rev: i64,
    sub: u32,
    raft_term: u64,
}

impl<'a> Writer<'a> {
    pub(super) fn new(store: &'a mut Store, raft_term: u64) -> Self {
        let rev = store.revision + 1;
        Writer {
            store,
            rev,
            sub: 0,
            raft_term,
        }
    }

    /// The revision reads inside the request see: the new one once written.
    pub(super) fn read_revision(&self) -> i64 {
        if self.sub > 0 {
            self.rev
        } else {
            self.store.revision
        }
    }

    /// A header at the revision reads see now.
    pub(super) fn header(&self) -> ResponseHeader {
        ResponseHeader {
            cluster_id: 0,
            member_id: 0,
            revision: self.read_revision(),
            raft_term: self.raft_term,
        }
    }

    /// Ends the request: the store's revision becomes the new one if anything changed.
    pub(super) fn finish(self) -> ResponseHeader {
        if self.sub > 0 {
            self.store.revision = self.rev;
        }
        self.store.header(self.raft_term)
    }

    /// Checks a put against the current state without changing anything;
    /// `prev` is the key's live version, if any.
    fn check_put(&self, p: &PutRequest, prev: Option<&Version>) -> Result<(), MvccError> {
        if p.key.is_empty() {
            return Err(MvccError::EmptyKey);
        }
        if self.store.alarmed_nospace() {
            return Err(MvccError::NoSpace);
        }
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(MvccError::KeyNotFound);
        }
        if p.lease != 0 && !p.ignore_lease && self.store.lease(p.lease).is_none() {
            return Err(MvccError::LeaseNotFound);
        }
        Ok(())
    }

    pub(super) fn put(&mut self, p: &PutRequest) -> Result<PutResponse, MvccError> {
        // One lookup serves the checks and the new version (a put is on the
        // apply path of every write).
        let prev = self
            .store
            .keys
            .get(p.key.as_slice())
            .and_then(|h| h.latest())
            .cloned();
        self.check_put(p, prev.as_ref())?;
        let key = Bytes::copy_from_slice(&p.key);
        let value = match (&prev, p.ignore_value) {
            (Some(prev), true) => prev.value.clone().unwrap_or_default(),
            _ => Bytes::copy_from_slice(&p.value),
        };
        let lease = match (&prev, p.ignore_lease) {
            (Some(prev), true) => prev.lease,
            _ => p.lease,
        };
        let version = Version {
            mod_rev: self.rev,
            sub: self.sub,
            create_rev: prev.as_ref().map_or(self.rev, |v| v.create_rev),
            version: prev.as_ref().map_or(1, |v| v.version + 1),
            lease,
            value: Some(value.clone()),
        };
        self.sub += 1;
        let store = &mut *self.store;
        store.size += version.footprint(&key);
        store.digest = store.digest.wrapping_add(pair_hash(&key, &value));
        if let Some(prev) = &prev {
            let old = prev.value.as_deref().unwrap_or_default();
            store.digest = store.digest.wrapping_sub(pair_hash(&key, old));
        } else {
            store.live_keys += 1;
        }
        store.keys.push(&key, version);
        store.record_change(self.rev, self.sub - 1, &key);
        store.reattach(&key, prev.as_ref().map_or(0, |v| v.lease), lease);
        Ok(PutResponse {
            header: None,
            prev_kv: if p.prev_kv {
                prev.as_ref().map(|v| key_value(&key, v, false))
            } else {
                None
            },
        })
    }

    pub(super) fn delete_range(
        &mut self,
        d: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, MvccError> {
        if d.key.is_empty() {
            return Err(MvccError::EmptyKey);
        }
        let range = KeyRange::new(&d.key, &d.range_end);
        let doomed: Vec<(Bytes, Version)> = self
            .store
            .live_at(&range, i64::MAX)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut prev_kvs = Vec::new();
        for (key, prev) in &doomed {
            let tombstone = Version {
                mod_rev: self.rev,
                sub: self.sub,
                create_rev: 0,
                version: 0,
                lease: 0,
                value: None,
            };
            self.sub += 1;
            let store = &mut *self.store;
            store.size += tombstone.footprint(key);
            let old = prev.value.as_deref().unwrap_or_default();
            store.digest = store.digest.wrapping_sub(pair_hash(key, old));
            store.live_keys -= 1;
            store.keys.push(key, tombstone);
            store.record_change(self.rev, self.sub - 1, key);
            store.reattach(key, prev.lease, 0);
            if d.prev_kv {
                prev_kvs.push(key_value(key, prev, false));
            }
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: doomed.len() as i64,
            prev_kvs,
        })
    }
}
