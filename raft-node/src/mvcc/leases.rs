//! Leases in the store: which exist, with their granted TTL and attached
//! keys. Granting, revoking (which deletes every attached key in one
//! revision) and attaching all come through the log, so every member holds
//! the same leases. When a lease expires is not decided here: the leader's
//! lessor ([`crate::lease`]) does that with its clock and proposes the revoke.

use bytes::Bytes;
use imbl::{OrdMap, OrdSet};

use super::writer::Writer;
use super::{MvccError, Store};
use crate::api::pb::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest,
    LeaseRevokeResponse,
};

/// One lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lease {
    /// Granted time-to-live, in seconds.
    pub ttl: i64,
    /// Keys attached to it.
    pub keys: OrdSet<Bytes>,
}

/// Every lease by id.
pub type Leases = OrdMap<i64, Lease>;

impl Store {
    /// The lease `id`, if it exists.
    pub fn lease(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// Every lease, by id.
    pub fn leases(&self) -> impl Iterator<Item = (i64, &Lease)> {
        self.leases.iter().map(|(&id, l)| (id, l))
    }

    pub(super) fn grant(&mut self, g: &LeaseGrantRequest) -> Result<LeaseGrantResponse, MvccError> {
        if g.id <= 0 {
            return Err(MvccError::Malformed("a lease id must be positive".into()));
        }
        if self.leases.contains_key(&g.id) {
            return Err(MvccError::LeaseExists);
        }
        self.leases.insert(
            g.id,
            Lease {
                ttl: g.ttl,
                keys: OrdSet::new(),
            },
        );
        Ok(LeaseGrantResponse {
            header: None,
            id: g.id,
            ttl: g.ttl,
            error: String::new(),
        })
    }

    /// Moves `key` from lease `from` to lease `to` (0: none).
    pub(super) fn reattach(&mut self, key: &Bytes, from: i64, to: i64) {
        if from == to {
            return;
        }
        if let Some(l) = self.leases.get_mut(&from) {
            l.keys.remove(key);
        }
        if let Some(l) = self.leases.get_mut(&to) {
            l.keys.insert(key.clone());
        }
    }
}

impl Writer<'_> {
    /// Revokes a lease: every attached key is deleted at one revision.
    pub(super) fn revoke(
        &mut self,
        r: &LeaseRevokeRequest,
    ) -> Result<LeaseRevokeResponse, MvccError> {
        let lease = self
            .store
            .leases
            .get(&r.id)
            .cloned()
            .ok_or(MvccError::LeaseNotFound)?;
        for key in lease.keys.iter() {
            self.delete_range(&DeleteRangeRequest {
                key: key.to_vec(),
                range_end: Vec::new(),
                prev_kv: false,
            })?;
        }
        self.store.leases.remove(&r.id);
        Ok(LeaseRevokeResponse { header: None })
    }
}
