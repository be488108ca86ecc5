//! The global safety checks, fed by the cluster as events happen.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use raft_core::{Entry, EntryKind};

/// Hash of everything an entry carries except its position.
pub fn content_hash(e: &Entry) -> u64 {
    let mut h = DefaultHasher::new();
    match &e.kind {
        EntryKind::Normal => 0u8.hash(&mut h),
        EntryKind::Noop => 1u8.hash(&mut h),
        EntryKind::ConfChange(cc) => {
            2u8.hash(&mut h);
            format!("{cc:?}").hash(&mut h);
        }
    }
    e.data.hash(&mut h);
    h.finish()
}

/// Chains the hash of a log prefix (and of a state machine) with one more entry.
pub fn chain(prev: u64, e: &Entry) -> u64 {
    let mut h = DefaultHasher::new();
    (prev, e.index, e.term, content_hash(e)).hash(&mut h);
    h.finish()
}

/// Hash of the bootstrap snapshot (index 1, term 1) every founding member starts from.
pub const GENESIS_HASH: u64 = 0x6E6E_5157_0000_0001;

#[derive(Default)]
pub struct Checker {
    leaders_by_term: HashMap<u64, u64>,
    /// Log matching: (index, term) -> hash of the whole prefix ending there.
    prefix_hash: HashMap<(u64, u64), u64>,
    /// State machine safety: index -> state-machine hash after applying it.
    applied_hash: HashMap<u64, u64>,
    /// For leader completeness: per term, the highest (index, entry term) its leader committed.
    committed_by_term: BTreeMap<u64, (u64, u64)>,
    /// Highest index of a write acknowledged to its client.
    pub acked_max_index: u64,
    pub acked_writes: u64,
    pub reads_served: u64,
}

pub type Check = Result<(), String>;

impl Checker {
    pub fn leader_elected(&mut self, term: u64, id: u64) -> Check {
        if let Some(other) = self.leaders_by_term.insert(term, id) {
            if other != id {
                return Err(format!("two leaders in term {term}: {other} and {id}"));
            }
        }
        Ok(())
    }

    /// The highest entry committed by a leader of a term before `term`, as (index, term).
    pub fn committed_before(&self, term: u64) -> Option<(u64, u64)> {
        self.committed_by_term.range(..term).map(|(_, v)| *v).max()
    }

    pub fn leader_committed(&mut self, term: u64, index: u64, entry_term: u64) {
        let slot = self
            .committed_by_term
            .entry(term)
            .or_insert((index, entry_term));
        if index > slot.0 {
            *slot = (index, entry_term);
        }
    }

    pub fn persisted_entry(&mut self, node: u64, index: u64, term: u64, hash: u64) -> Check {
        match self.prefix_hash.insert((index, term), hash) {
            Some(h) if h != hash => Err(format!(
                "log matching violated at node {node}: entry ({index}, {term}) has a different prefix than elsewhere"
            )),
            _ => Ok(()),
        }
    }

    pub fn applied(&mut self, node: u64, index: u64, sm_hash: u64) -> Check {
        match self.applied_hash.insert(index, sm_hash) {
            Some(h) if h != sm_hash => Err(format!(
                "node {node} applied a different entry at index {index}"
            )),
            _ => Ok(()),
        }
    }
}
