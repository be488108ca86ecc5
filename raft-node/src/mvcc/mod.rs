//! The MVCC state machine behind etcd's v3 API (DESIGN.md §10).
//!
//! A cluster-wide revision grows by one per write request that changes
//! something (a transaction is one revision). Every key keeps its versions
//! ([`key_history`]) until a compaction drops what no read can see any more,
//! so a read at an older revision answers as etcd would. Everything that
//! changes the store arrives through the log ([`Store::apply`]); apply is
//! deterministic (no clock, no randomness, no local state).
//!
//! The key map is a persistent map: cloning the store is O(1), so the
//! driver publishes a consistent view to readers after every batch, and a
//! snapshot serializes such a view while apply goes on.

mod authorized;
mod command;
mod dedupe;
mod error;
mod events;
mod histories;
mod key_history;
mod leases;
mod range;
mod snapshot;
mod txn;
mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

pub use command::{Command, FORMAT_V1};
pub use dedupe::{
    decode_response, encode_response, Limits as DedupeLimits, Once, RequestId,
    Table as DedupeTable, REQUEST_ID_HEADER,
};
pub use error::MvccError;
pub use events::RECENT_CHANGES;
pub use key_history::{KeyHistory, Version};
pub use leases::Lease;
pub use range::KeyRange;
pub use txn::{check_txn, MAX_TXN_OPS};

use crate::api::pb::etcdserverpb::alarm_request::AlarmAction;
use crate::api::pb::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, AlarmType, CompactionResponse, DeleteRangeResponse,
    LeaseGrantResponse, LeaseRevokeResponse, PutResponse, RangeRequest, RangeResponse,
    ResponseHeader, TxnResponse,
};
use crate::api::pb::raftnodepb::internal_request::Request;
use writer::Writer;

/// What a write request produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// A put.
    Put(PutResponse),
    /// A delete of a key or range.
    DeleteRange(DeleteRangeResponse),
    /// A transaction.
    Txn(TxnResponse),
    /// A compaction.
    Compaction(CompactionResponse),
    /// An alarm activated or disarmed.
    Alarm(AlarmResponse),
    /// A lease granted.
    LeaseGrant(LeaseGrantResponse),
    /// A lease revoked (its keys deleted).
    LeaseRevoke(LeaseRevokeResponse),
    /// An auth change applied (see `auth/`).
    Auth(ResponseHeader),
}

/// What applying one log entry did; handed to the client that proposed it.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// A command ran, or was refused with nothing changed.
    Command(Result<Response, MvccError>),
    /// The entry held no command (no-op, membership change).
    Nothing,
}

/// Keys compacted per step of a compaction. Each key costs a few
/// microseconds on a large store (it copies the map's path to the key when
/// a published view shares it), so a step is well under a millisecond; the
/// driver runs steps until its per-round compaction budget is spent.
pub const COMPACTION_STEP_KEYS: usize = 32;

/// The multi-version key-value store.
#[derive(Debug, Clone)]
pub struct Store {
    keys: histories::Histories,
    /// The revision of the last write (1 for an empty store, as in etcd).
    revision: i64,
    /// Reads below this revision are refused.
    compact_revision: i64,
    applied_index: u64,
    /// Term of the last applied entry.
    applied_term: u64,
    /// Keys live at the current revision.
    live_keys: usize,
    /// Approximate bytes of every retained version.
    size: u64,
    /// Wrapping sum of [`pair_hash`] over every live pair.
    digest: u32,
    /// Raised alarms: (member id, etcd alarm type).
    alarms: BTreeSet<(u64, i32)>,
    /// What the proposer of each applied membership change attached about
    /// the member it added (its addresses), by node id. Replicated state: it
    /// travels in snapshots.
    members: BTreeMap<u64, Vec<u8>>,
    /// Leases by id.
    leases: leases::Leases,
    /// Request ids applied and their first results (replicated state).
    dedupe: dedupe::Table,
    /// Users, roles and permissions (`auth/`). Replicated state.
    auth: crate::auth::AuthState,
    /// Recent changes for watchers, oldest first (not replicated state).
    recent: imbl::Vector<events::Change>,
    /// Every change at or after this revision is in `recent`.
    recent_from: i64,
    /// A stand-in without keys, published while the state is rebuilt from
    /// a snapshot (see [`Store::stand_in`]).
    restoring: bool,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            keys: histories::Histories::default(),
            revision: 1,
            compact_revision: 0,
            applied_index: 0,
            applied_term: 0,
            live_keys: 0,
            size: 0,
            digest: 0,
            alarms: BTreeSet::new(),
            members: BTreeMap::new(),
            leases: leases::Leases::new(),
            dedupe: dedupe::Table::default(),
            auth: crate::auth::AuthState::default(),
            recent: imbl::Vector::new(),
            recent_from: 1,
            restoring: false,
        }
    }
}

/// CRC32 of one key/value pair, length-delimited.
fn pair_hash(k: &[u8], v: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&(k.len() as u64).to_le_bytes());
    h.update(k);
    h.update(&(v.len() as u64).to_le_bytes());
    h.update(v);
    h.finalize()
}

impl Store {
    /// Applies the data of the committed entry at `index` (of `term`). Data
    /// that does not decode as a command is skipped and logged: it must not
    /// stop the node.
    pub fn apply(&mut self, index: u64, term: u64, data: &[u8]) -> Applied {
        self.apply_at(index, term, data).1
    }

    /// [`Store::apply`], also returning the (index, term) of the entry whose
    /// result this is: the entry's own, or for a retried request (one whose
    /// request id was applied before, see [`dedupe`]) the first entry's.
    pub fn apply_at(&mut self, index: u64, term: u64, data: &[u8]) -> ((u64, u64), Applied) {
        debug_assert!(index > self.applied_index, "entries apply in order");
        self.applied_index = index;
        self.applied_term = term;
        match Command::decode_once(data) {
            Ok((Command(req), None)) => ((index, term), Applied::Command(self.run(req, term))),
            Ok((Command(req), Some(once))) => self.run_once(index, term, req, once),
            Err(e) => {
                tracing::warn!(index, error = %e, "skipping undecodable entry");
                ((index, term), Applied::Nothing)
            }
        }
    }

    fn run(&mut self, req: Request, term: u64) -> Result<Response, MvccError> {
        match req {
            Request::Put(p) => {
                let mut w = Writer::new(self, term);
                let mut resp = w.put(&p)?;
                resp.header = Some(w.finish());
                Ok(Response::Put(resp))
            }
            Request::DeleteRange(d) => {
                let mut w = Writer::new(self, term);
                let mut resp = w.delete_range(&d)?;
                resp.header = Some(w.finish());
                Ok(Response::DeleteRange(resp))
            }
            Request::Txn(t) => {
                check_txn(&t)?;
                if self.alarmed_nospace() && txn_writes(&t) {
                    return Err(MvccError::NoSpace);
                }
                // O(1): the persistent map shares everything until written.
                let before = self.clone();
                let mut w = Writer::new(self, term);
                match w.txn(&t) {
                    Ok(mut resp) => {
                        resp.header = Some(w.finish());
                        Ok(Response::Txn(resp))
                    }
                    Err(e) => {
                        *self = before;
                        self.applied_term = term;
                        Err(e)
                    }
                }
            }
            Request::Compaction(c) => {
                self.compact(c.revision)?;
                Ok(Response::Compaction(CompactionResponse {
                    header: Some(self.header(term)),
                }))
            }
            Request::Alarm(a) => Ok(Response::Alarm(self.alarm(&a, term))),
            Request::LeaseGrant(g) => {
                let mut resp = self.grant(&g)?;
                resp.header = Some(self.header(term));
                Ok(Response::LeaseGrant(resp))
            }
            Request::LeaseRevoke(r) => {
                let mut w = Writer::new(self, term);
                let mut resp = w.revoke(&r)?;
                resp.header = Some(w.finish());
                Ok(Response::LeaseRevoke(resp))
            }
            Request::Authorized(a) => self.run_authorized(*a, term),
            Request::AuthEnable(_)
            | Request::AuthDisable(_)
            | Request::AuthUserAdd(_)
            | Request::AuthUserDelete(_)
            | Request::AuthUserChangePassword(_)
            | Request::AuthUserGrantRole(_)
            | Request::AuthUserRevokeRole(_)
            | Request::AuthRoleAdd(_)
            | Request::AuthRoleDelete(_)
            | Request::AuthRoleGrantPermission(_)
            | Request::AuthRoleRevokePermission(_) => self.run_auth_change(&req, term),
        }
    }

    /// A header at the current revision.
    pub fn header(&self, raft_term: u64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: 0,
            member_id: 0,
            revision: self.revision,
            raft_term,
        }
    }

    /// Drops every version no read at or after `rev` can see; reads below
    /// `rev` are refused from then on.
    pub fn compact(&mut self, rev: i64) -> Result<(), MvccError> {
        if rev > self.revision {
            return Err(MvccError::FutureRevision);
        }
        if rev <= self.compact_revision {
            return Err(MvccError::Compacted);
        }
        self.compact_revision = rev;
        self.keys.start_compaction(rev);
        // A small compaction finishes here; the rest is the driver's, in
        // steps between rounds (`continue_compaction`).
        self.continue_compaction();
        Ok(())
    }

    /// Drops some of what the last compaction made unreadable, at most
    /// [`COMPACTION_STEP_KEYS`] keys' worth. Returns true while more is
    /// left. Reads answer the same whether or not this has run.
    pub fn continue_compaction(&mut self) -> bool {
        self.size -= self.keys.compact_step(COMPACTION_STEP_KEYS);
        self.keys.compaction_pending()
    }

    fn alarm(&mut self, a: &AlarmRequest, term: u64) -> AlarmResponse {
        let key = (a.member_id, a.alarm);
        let changed = match AlarmAction::try_from(a.action) {
            Ok(AlarmAction::Activate) if a.alarm != AlarmType::None as i32 => {
                self.alarms.insert(key);
                vec![key]
            }
            Ok(AlarmAction::Deactivate) => {
                let gone: Vec<_> = self
                    .alarms
                    .iter()
                    .copied()
                    .filter(|&(m, t)| {
                        (a.member_id == 0 || m == a.member_id)
                            && (a.alarm == AlarmType::None as i32 || t == a.alarm)
                    })
                    .collect();
                for g in &gone {
                    self.alarms.remove(g);
                }
                gone
            }
            _ => Vec::new(),
        };
        AlarmResponse {
            header: Some(self.header(term)),
            alarms: changed
                .into_iter()
                .map(|(member_id, alarm)| AlarmMember { member_id, alarm })
                .collect(),
        }
    }

    /// Serves a `Range` at the current revision (header: revision only).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, MvccError> {
        if req.key.is_empty() {
            return Err(MvccError::EmptyKey);
        }
        let mut resp = self.range_at(req, self.revision)?;
        resp.header = Some(self.header(self.applied_term));
        Ok(resp)
    }

    /// Runs a transaction that cannot write (see [`txn_is_read_only`]) on
    /// this view, without a log entry.
    pub fn read_only_txn(
        &self,
        t: &crate::api::pb::etcdserverpb::TxnRequest,
    ) -> Result<TxnResponse, MvccError> {
        debug_assert!(txn_is_read_only(t));
        self.check_keys_readable()?;
        let mut scratch = self.clone();
        let mut w = Writer::new(&mut scratch, self.applied_term);
        let mut resp = w.txn(t)?;
        resp.header = Some(w.finish());
        Ok(resp)
    }

    /// The live value of `key` now.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>, MvccError> {
        self.check_keys_readable()?;
        let latest = self.keys.get(key).and_then(KeyHistory::latest);
        Ok(latest.and_then(|v| v.value.as_deref()))
    }

    /// What readers see while this state is replaced by a snapshot's, which
    /// is decoded on another thread: the same revision, members, leases,
    /// auth and request ids, and none of the keys. Reads of keys or events
    /// on it fail with [`MvccError::Restoring`]. Readers get this instead of
    /// the old state so that the old state can be freed before the new one
    /// is decoded: a follower catching up never holds two states at once.
    pub fn stand_in(&self) -> Store {
        Store {
            keys: histories::Histories::default(),
            revision: self.revision,
            compact_revision: self.compact_revision,
            applied_index: self.applied_index,
            applied_term: self.applied_term,
            live_keys: self.live_keys,
            size: self.size,
            digest: self.digest,
            alarms: self.alarms.clone(),
            members: self.members.clone(),
            leases: self.leases.clone(),
            dedupe: self.dedupe.clone(),
            auth: self.auth.clone(),
            recent: imbl::Vector::new(),
            recent_from: self.revision + 1,
            restoring: true,
        }
    }

    /// Whether this is a [`Store::stand_in`].
    pub fn is_restoring(&self) -> bool {
        self.restoring
    }

    /// Fails on a [`Store::stand_in`], which holds no keys.
    fn check_keys_readable(&self) -> Result<(), MvccError> {
        if self.restoring {
            return Err(MvccError::Restoring);
        }
        Ok(())
    }

    /// etcd's `HashKV`: a hash of every retained version at or below `rev`
    /// (<= 0: the current revision), with the revision hashed and the
    /// compaction revision. Equal on members with equal histories.
    pub fn hash_kv(&self, rev: i64) -> Result<(u32, i64), MvccError> {
        let rev = self.readable_revision(rev, self.revision)?;
        let mut h = crc32fast::Hasher::new();
        for (k, history) in self.keys.iter() {
            let retained = history.retained(self.compact_revision);
            for v in retained.iter().take_while(|v| v.mod_rev <= rev) {
                h.update(&(k.len() as u64).to_le_bytes());
                h.update(k);
                for n in [
                    v.mod_rev,
                    i64::from(v.sub),
                    v.create_rev,
                    v.version,
                    v.lease,
                ] {
                    h.update(&n.to_le_bytes());
                }
                match &v.value {
                    Some(val) => {
                        h.update(&[1]);
                        h.update(&(val.len() as u64).to_le_bytes());
                        h.update(val);
                    }
                    None => h.update(&[0]),
                }
            }
        }
        Ok((h.finalize(), rev))
    }

    /// Whether the NOSPACE alarm is raised for any member.
    pub fn alarmed_nospace(&self) -> bool {
        self.alarms
            .iter()
            .any(|&(_, t)| t == AlarmType::Nospace as i32)
    }

    /// Raised alarms as (member id, etcd alarm type).
    pub fn alarms(&self) -> impl Iterator<Item = (u64, i32)> + '_ {
        self.alarms.iter().copied()
    }

    /// Records (`Some`) or forgets (`None`) what is known about member `id`.
    pub fn set_member(&mut self, id: u64, context: Option<Vec<u8>>) {
        match context {
            Some(c) => self.members.insert(id, c),
            None => self.members.remove(&id),
        };
    }

    /// Every recorded member context, by id.
    pub fn members(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.members.iter().map(|(&id, c)| (id, c.as_slice()))
    }

    /// Marks `index` applied without a command (no-ops, membership changes).
    pub fn skip(&mut self, index: u64, term: u64) {
        if index > self.applied_index {
            self.applied_index = index;
            self.applied_term = term;
        }
    }

    /// The revision of the last write.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Reads below this revision are refused (0: never compacted).
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.live_keys
    }

    /// True if no key is live.
    pub fn is_empty(&self) -> bool {
        self.live_keys == 0
    }

    /// Approximate bytes of every retained version (etcd's db size).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Order-independent digest of the live keys and values: equal on two
    /// nodes iff (with overwhelming probability) their live maps are equal.
    pub fn digest(&self) -> u32 {
        self.digest
    }
}

/// The store as of the driver's last batch, shared with readers: cloning
/// the store is O(1), so publishing never copies data, and a reader holds a
/// consistent view for as long as it needs without blocking apply.
#[derive(Debug, Clone)]
pub struct SharedStore(tokio::sync::watch::Sender<Arc<Store>>);

impl Default for SharedStore {
    fn default() -> Self {
        SharedStore(tokio::sync::watch::Sender::new(Arc::new(Store::default())))
    }
}

impl SharedStore {
    /// The latest published view.
    pub fn get(&self) -> Arc<Store> {
        self.0.borrow().clone()
    }

    /// Publishes `store` as the latest view, and returns the view it
    /// replaces (whose drop frees the old state if nothing else holds it).
    pub fn publish(&self, store: &Store) -> Arc<Store> {
        self.0.send_replace(Arc::new(store.clone()))
    }

    /// A receiver that sees every view published from now on (watchers).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Store>> {
        self.0.subscribe()
    }

    /// Waits until a view that has applied `index` is published (not a
    /// [`Store::stand_in`]), and returns it.
    pub async fn applied(&self, index: u64) -> Arc<Store> {
        let mut rx = self.0.subscribe();
        let view = match rx
            .wait_for(|s| !s.is_restoring() && s.applied_index() >= index)
            .await
        {
            Ok(view) => view.clone(),
            // Unreachable while `self` holds the sender; the latest view is all there is.
            Err(_) => self.get(),
        };
        view
    }
}

/// Whether a transaction holds no put or delete on any branch: it can be
/// served from a view like a range.
pub fn txn_is_read_only(t: &crate::api::pb::etcdserverpb::TxnRequest) -> bool {
    use crate::api::pb::etcdserverpb::request_op::Request as Op;
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(Op::RequestRange(_)) => true,
            Some(Op::RequestTxn(inner)) => txn_is_read_only(inner),
            _ => false,
        })
}

/// Whether a transaction can write (a NOSPACE alarm refuses it then).
fn txn_writes(t: &crate::api::pb::etcdserverpb::TxnRequest) -> bool {
    use crate::api::pb::etcdserverpb::request_op::Request as Op;
    t.success
        .iter()
        .chain(&t.failure)
        .any(|op| match &op.request {
            Some(Op::RequestPut(_)) => true,
            Some(Op::RequestTxn(inner)) => txn_writes(inner),
            _ => false,
        })
}

#[cfg(test)]
mod tests;
