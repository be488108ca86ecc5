//! Log entries and the small records that go to durable storage with them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::confchange::{ConfChange, ConfState};

/// Node identifier. `0` is never a valid node id.
pub type NodeId = u64;

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// Application data, handed to the state machine when committed.
    Normal,
    /// The empty entry a new leader appends at the start of its term.
    Noop,
    /// A membership change; the core applies it when the entry is applied.
    ConfChange(ConfChange),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log, starting at 1.
    pub index: u64,
    /// Term of the leader that created the entry.
    pub term: u64,
    /// What the entry carries.
    pub kind: EntryKind,
    /// Opaque application bytes (for `ConfChange` entries: an optional context).
    ///
    /// A [`Bytes`] so that the copies the core hands out (the `Ready`'s entries, one
    /// append per follower, committed entries) share one buffer instead of copying
    /// the payload each time. Serialized as a byte string (one length + the bytes),
    /// the same encoding `serde_bytes` gives a `Vec<u8>`.
    pub data: Bytes,
}

/// Fixed per-entry overhead counted by [`Entry::size_bytes`].
pub const ENTRY_OVERHEAD_BYTES: u64 = 24;

impl Entry {
    /// Approximate encoded size, used for every byte budget in the core.
    pub fn size_bytes(&self) -> u64 {
        let cc = match &self.kind {
            EntryKind::ConfChange(cc) => 9 * cc.changes.len() as u64,
            _ => 0,
        };
        ENTRY_OVERHEAD_BYTES + self.data.len() as u64 + cc
    }

    /// The entry's position as an [`EntryId`].
    pub fn id(&self) -> EntryId {
        EntryId {
            index: self.index,
            term: self.term,
        }
    }
}

/// A log position: an index and the term of the entry there.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct EntryId {
    /// Log index.
    pub index: u64,
    /// Term of the entry at `index`.
    pub term: u64,
}

/// Where [`RawNode::propose_batch`](crate::RawNode::propose_batch) appended a batch:
/// consecutive indexes, all in one term. Entry `i` of the batch is at
/// `indexes.start + i`; it is committed if the driver later applies an entry at that
/// index *with this term*.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposedBatch {
    /// The leader's term, which every entry of the batch carries.
    pub term: u64,
    /// The indexes of the entries, in proposal order (empty for an empty batch).
    pub indexes: std::ops::Range<u64>,
}

impl ProposedBatch {
    /// Number of entries proposed.
    pub fn len(&self) -> u64 {
        self.indexes.end - self.indexes.start
    }

    /// True if the batch was empty (nothing was appended).
    pub fn is_empty(&self) -> bool {
        self.indexes.is_empty()
    }

    /// The position of every entry, in proposal order.
    pub fn ids(&self) -> impl Iterator<Item = EntryId> + '_ {
        self.indexes.clone().map(|index| EntryId {
            index,
            term: self.term,
        })
    }

    /// The position of the last entry, if the batch was not empty.
    pub fn last(&self) -> Option<EntryId> {
        (!self.is_empty()).then(|| EntryId {
            index: self.indexes.end - 1,
            term: self.term,
        })
    }
}

/// The state that must be durable before a node answers votes or appends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: u64,
    /// Candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// Highest index known to be committed.
    pub commit: u64,
}

/// Describes a snapshot: the last index and term it covers and the membership at that point.
/// The core never sees the snapshot's bytes; the driver stores and ships them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Last log index covered by the snapshot.
    pub index: u64,
    /// Term of the entry at `index`.
    pub term: u64,
    /// Membership in force after applying every entry up to `index`.
    pub conf: ConfState,
}

/// Sum of [`Entry::size_bytes`] over `entries`.
pub fn total_size_bytes(entries: &[Entry]) -> u64 {
    entries.iter().map(Entry::size_bytes).sum()
}
