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
///    `hard_state`;
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
}
