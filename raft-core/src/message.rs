//! Messages exchanged between nodes. They derive serde so a transport can encode them
//! (the project uses postcard).

use serde::{Deserialize, Serialize};

use crate::entry::{Entry, EntryId, NodeId, SnapshotMeta};

/// A message from one node to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// Sender's term (for a PreVote request: the term it would campaign in).
    pub term: u64,
    /// What the message says.
    pub body: MessageBody,
}

/// Answer of a follower to an append.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendOutcome {
    /// The follower's log now matches the leader's up to `match_index` (durably).
    Accepted {
        /// Last index known to match.
        match_index: u64,
    },
    /// The entry at `prev_log_index` did not match.
    Rejected {
        /// The `prev_log_index` of the rejected append.
        rejected_index: u64,
        /// Term of the follower's entry at `rejected_index`, if it has one.
        conflict_term: Option<u64>,
        /// First index of `conflict_term` in the follower's log, or its last index + 1
        /// when it has no entry at `rejected_index`.
        conflict_first_index: u64,
    },
}

/// The kinds of messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// Leader to follower: entries following `prev`, and the leader's commit index.
    Append {
        /// Position just before the first entry.
        prev: EntryId,
        /// Entries to append (may be empty: a probe or a commit update).
        entries: Vec<Entry>,
        /// Leader's commit index.
        leader_commit: u64,
        /// Progress tag to echo.
        tag: u64,
    },
    /// Follower to leader: result of an `Append` or `InstallSnapshot`.
    AppendResponse {
        /// Echoed progress tag.
        tag: u64,
        /// Accepted or rejected, with backtracking hints.
        outcome: AppendOutcome,
    },
    /// Leader to follower: "I am still leader", with a commit index safe for this follower
    /// and the latest ReadIndex round.
    Heartbeat {
        /// `min(follower match, leader commit)`.
        commit: u64,
        /// ReadIndex round to confirm.
        read_round: u64,
        /// Progress tag to echo.
        tag: u64,
    },
    /// Follower to leader: answer to a heartbeat.
    HeartbeatResponse {
        /// Echoed ReadIndex round.
        read_round: u64,
        /// Echoed progress tag.
        tag: u64,
    },
    /// Leader to follower: install the snapshot described here. The driver ships the
    /// snapshot bytes with this message and steps it in only once they are complete.
    InstallSnapshot {
        /// The snapshot to install.
        snapshot: SnapshotMeta,
        /// Progress tag to echo.
        tag: u64,
    },
    /// Candidate (or pre-candidate) asking for a vote.
    RequestVote {
        /// True for a PreVote round: nobody changes term or vote.
        pre_vote: bool,
        /// Candidate's last log position.
        last: EntryId,
        /// Campaign started by a leadership transfer: ignore the leader lease.
        transfer: bool,
        /// The candidate's commit index and the term there (see `VoteResponse::commit`).
        commit: EntryId,
    },
    /// Answer to `RequestVote`.
    VoteResponse {
        /// Answer to a PreVote round.
        pre_vote: bool,
        /// Whether the vote was granted.
        granted: bool,
        /// The sender's commit index and the term of its entry there. Committed entries
        /// are facts: a receiver holding the same entry may commit up to it. This lets a
        /// voter that never heard the commit of a configuration change (its leader left)
        /// apply it and elect itself under the new configuration.
        commit: EntryId,
    },
    /// Leader to transfer target: start an election now.
    TimeoutNow,
}

impl Message {
    /// True for messages that may only leave once the sender's hard state and entries are
    /// durable: votes, vote requests and append acknowledgements (anything a follower or
    /// candidate says). A leader's own messages, and PreVote traffic, may go at once.
    pub(crate) fn needs_persist_first(&self, sender_is_leader: bool) -> bool {
        match &self.body {
            MessageBody::RequestVote { pre_vote: true, .. }
            | MessageBody::VoteResponse { pre_vote: true, .. } => false,
            _ => !sender_is_leader,
        }
    }
}
