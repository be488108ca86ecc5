//! Errors returned by the core. Every error is a value; nothing a peer sends can panic.

use std::fmt;

/// Why a [`Storage`](crate::Storage) read could not be served.
///
/// `Compacted` and `Unavailable` are answers about the log's bounds, which the algorithm
/// expects and handles (it sends a snapshot, or rejects an append). `Io` is different: the
/// storage is broken (a failed read, a record that does not decode). The core never
/// guesses around it: the node stops, and every later [`RawNode::ready`](crate::RawNode::ready)
/// and [`RawNode::step`](crate::RawNode::step) returns [`Error::Storage`] with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// The requested index is at or below the last snapshot: only the snapshot has it.
    Compacted,
    /// The requested index is beyond the last stored entry.
    Unavailable,
    /// The storage failed to read what it holds; the text says what and where (for a
    /// file-backed storage: the file). Fatal for the node.
    Io(String),
}

impl StorageError {
    /// True for a failure of the storage itself, as opposed to an index out of bounds.
    pub fn is_fatal(&self) -> bool {
        matches!(self, StorageError::Io(_))
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Compacted => write!(f, "requested index is compacted"),
            StorageError::Unavailable => write!(f, "requested index is not stored yet"),
            StorageError::Io(what) => write!(f, "storage read failed: {what}"),
        }
    }
}

impl std::error::Error for StorageError {}

/// Why a proposal or a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// Only the leader accepts this request; `leader_hint` is the leader this node knows of.
    NotLeader {
        /// The current leader as far as this node knows.
        leader_hint: Option<u64>,
    },
    /// The leader is handing leadership over and refuses new proposals meanwhile.
    TransferInProgress,
    /// Accepting the proposal would exceed `max_uncommitted_entries_bytes`.
    UncommittedLimitExceeded,
    /// Another configuration change is not yet applied; only one may be pending at a time.
    ConfChangeInProgress,
    /// The configuration change is not valid against the current configuration.
    InvalidConfChange(&'static str),
    /// The leadership transfer target is not a voter other than this node.
    InvalidTransferTarget,
    /// The configuration given to [`RawNode::new`](crate::RawNode::new) is not valid.
    InvalidConfig(&'static str),
    /// A storage read failed.
    Storage(StorageError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotLeader { leader_hint } => {
                write!(f, "not the leader (leader hint: {leader_hint:?})")
            }
            Error::TransferInProgress => write!(f, "leadership transfer in progress"),
            Error::UncommittedLimitExceeded => write!(f, "too many uncommitted bytes"),
            Error::ConfChangeInProgress => write!(f, "a configuration change is still pending"),
            Error::InvalidConfChange(why) => write!(f, "invalid configuration change: {why}"),
            Error::InvalidTransferTarget => write!(f, "invalid leadership transfer target"),
            Error::InvalidConfig(why) => write!(f, "invalid config: {why}"),
            Error::Storage(e) => write!(f, "storage: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Self {
        Error::Storage(e)
    }
}

/// Result alias used across the crate.
pub type Result<T> = std::result::Result<T, Error>;
