//! What a driver publishes about its node after every batch.

use std::sync::{Mutex, MutexGuard};

use raft_core::{RawNode, Role, Storage};

use crate::mvcc::Store;
use crate::storage::WalStorage;

/// A node's state as of its last batch (for `/v1/status`, metrics, tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// This node's id (0 before the first batch).
    pub id: u64,
    /// Current role (`None` before the first batch).
    pub role: Option<Role>,
    /// Current term.
    pub term: u64,
    /// Known leader.
    pub leader: Option<u64>,
    /// Commit index.
    pub commit: u64,
    /// Index applied to the key-value state machine.
    pub applied: u64,
    /// Last index in the log.
    pub last_index: u64,
    /// Index covered by the latest snapshot.
    pub snapshot_index: u64,
    /// Voters (of the incoming configuration while joint).
    pub voters: Vec<u64>,
    /// Voters of the outgoing configuration (non-empty only while joint).
    pub voters_outgoing: Vec<u64>,
    /// Learners.
    pub learners: Vec<u64>,
    /// Keys in the state machine.
    pub keys: usize,
    /// Digest of the state machine (equal on nodes with equal maps).
    pub digest: u32,
    /// The MVCC store's revision.
    pub revision: i64,
    /// Approximate bytes the MVCC store holds (history included).
    pub db_size: u64,
    /// Set when the node stopped on an error.
    pub failed: Option<String>,
}

pub(super) fn lock(m: &Mutex<NodeStatus>) -> MutexGuard<'_, NodeStatus> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn publish(shared: &Mutex<NodeStatus>, node: &RawNode<WalStorage>, kv: &Store) {
    let conf = node.conf_state();
    let mut s = lock(shared);
    s.id = node.id();
    s.role = Some(node.role());
    s.term = node.term();
    s.leader = node.leader_id();
    s.commit = node.commit_index();
    s.last_index = node.last_index();
    s.snapshot_index = node.storage().snapshot_meta().index;
    if s.voters.len() != conf.voters.len() || !s.voters.iter().eq(conf.voters.iter()) {
        s.voters = conf.voters.iter().copied().collect();
    }
    if !s.voters_outgoing.iter().eq(conf.voters_outgoing.iter()) {
        s.voters_outgoing = conf.voters_outgoing.iter().copied().collect();
    }
    if !s.learners.iter().eq(conf.learners.iter()) {
        s.learners = conf.learners.iter().copied().collect();
    }
    if s.applied != kv.applied_index() {
        s.applied = kv.applied_index();
        s.keys = kv.len();
        s.digest = kv.digest();
        s.revision = kv.revision();
        s.db_size = kv.size();
    }
}
