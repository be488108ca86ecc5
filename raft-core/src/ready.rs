//! What the driver must do next, handed out by [`RawNode::ready`](crate::RawNode::ready).

use crate::entry::{Entry, HardState, NodeId, SnapshotMeta};
use crate::message::Message;

/// Role of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Running a PreVote round.
    PreCandidate,
    /// Running an election.
    Candidate,
    /// Leads its term.
    Leader,
}

/// Role and known leader, reported in a [`Ready`] when they change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleState {
    /// Current role.
    pub role: Role,
    /// Current term.
    pub term: u64,
    /// Known leader of `term`.
    pub leader_id: Option<NodeId>,
}

/// A linearizable read is safe once the state machine has applied `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// Commit index at the time the read was confirmed.
    pub index: u64,
    /// The context given to `read_index`.
    pub ctx: Vec<u8>,
}

/// A batch of work for the driver. Handle it in this order, then call
/// [`RawNode::advance`](crate::RawNode::advance):
///
/// 1. send `messages` (they may go before or while persisting);
/// 2. persist, atomically or in this order: `snapshot` (install it: discard the log),
///    `entries` (append, discarding any stored entries at or after the first one), then
///    `hard_state`; fsync if [`must_sync`](Ready::must_sync) says so;
/// 3. once durable, send `persisted_messages`;
/// 4. apply `committed_entries` in order (after restoring the state machine from `snapshot`);
/// 5. serve `read_states` whose index is applied.
#[derive(Debug, Default)]
#[must_use = "a Ready must be handled and then acknowledged with advance()"]
pub struct Ready {
    /// Role change since the last Ready.
    pub role: Option<RoleState>,
    /// Hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Snapshot to install (the driver received its bytes with the message).
    pub snapshot: Option<SnapshotMeta>,
    /// Entries to append to durable storage.
    pub entries: Vec<Entry>,
    /// Messages that may be sent immediately.
    pub messages: Vec<Message>,
    /// Messages that may be sent only after the persist completes.
    pub persisted_messages: Vec<Message>,
    /// Committed entries to apply.
    pub committed_entries: Vec<Entry>,
    /// Confirmed linearizable reads.
    pub read_states: Vec<ReadState>,
}

impl Ready {
    /// True if nothing needs to be persisted.
    pub fn nothing_to_persist(&self) -> bool {
        self.hard_state.is_none() && self.snapshot.is_none() && self.entries.is_empty()
    }

    /// True if persisting this Ready must end with an fsync before
    /// `persisted_messages` leave and `committed_entries` are applied; `stored` is
    /// the hard state the storage held before this Ready.
    ///
    /// A snapshot, entries, and a new term or vote must be durable first: votes and
    /// append acknowledgements promise them. A hard state that moves only `commit`
    /// need not be synced (the commit index is volatile state in Raft): write it
    /// without an fsync and let the next sync carry it. After a crash the node then
    /// restarts with an older commit index, never one past its durable log, and learns
    /// the rest from the leader. This is etcd's `MustSync` rule; it spares the leader an
    /// fsync between a follower's acknowledgement and applying the entry.
    ///
    /// ```
    /// use raft_core::{HardState, Ready};
    ///
    /// let stored = HardState { term: 2, vote: Some(1), commit: 5 };
    /// let commit_only = Ready {
    ///     hard_state: Some(HardState { commit: 7, ..stored }),
    ///     ..Ready::default()
    /// };
    /// assert!(!commit_only.must_sync(&stored));
    /// let new_vote = Ready {
    ///     hard_state: Some(HardState { term: 3, vote: Some(2), commit: 5 }),
    ///     ..Ready::default()
    /// };
    /// assert!(new_vote.must_sync(&stored));
    /// ```
    pub fn must_sync(&self, stored: &HardState) -> bool {
        self.snapshot.is_some()
            || !self.entries.is_empty()
            || self
                .hard_state
                .is_some_and(|hs| (hs.term, hs.vote) != (stored.term, stored.vote))
    }
}
