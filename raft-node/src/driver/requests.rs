//! Client requests to a driver and their outcomes.

use std::fmt;

use raft_core::ConfChange;

use crate::mvcc::{Applied, Command, RequestId};
use crate::storage::StorageFailure;

/// Where the driver sends a request's outcome. Works from threads and tasks
/// alike (`blocking_recv` or `.await`).
pub type Reply<T> = tokio::sync::oneshot::Sender<Result<T, ClientError>>;

/// The receiving end of a [`Reply`].
pub type Pending<T> = tokio::sync::oneshot::Receiver<Result<T, ClientError>>;

/// A request from a client.
pub enum Request {
    /// Propose a command; answered once it is applied.
    Write {
        /// The command.
        cmd: Command,
        /// The client's request id: the command is applied at most once per
        /// id (see `mvcc/dedupe.rs`).
        id: Option<RequestId>,
        /// Gets the log index and what applying did.
        reply: Reply<WriteOutcome>,
    },
    /// Confirm a linearizable read (ReadIndex on the leader): answered with
    /// the applied index once the state machine has applied everything
    /// committed when the read arrived. The reader then reads the driver's
    /// published view ([`crate::driver::DriverHandle::store`]).
    ReadIndex {
        /// Gets the applied index the read may be served at.
        reply: Reply<u64>,
    },
    /// Propose a membership change; answered once it is applied.
    ChangeMembers {
        /// The change.
        change: ConfChange,
        /// Carried in the entry (e.g. the new member's addresses).
        context: Vec<u8>,
        /// Gets the log index of the change.
        reply: Reply<u64>,
    },
    /// Take a snapshot of the applied state now; answered with its index.
    Snapshot {
        /// Gets the snapshot's index.
        reply: Reply<u64>,
    },
    /// Hand leadership to `to`; answered when the transfer has started.
    TransferLeader {
        /// Target voter.
        to: u64,
        /// Gets `()` once the transfer was started.
        reply: Reply<()>,
    },
}

/// The outcome of an applied write.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    /// Log index the command was applied at (for a retried request id: the
    /// index of the entry that applied it first).
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// What applying it did.
    pub applied: Applied,
}

/// Why a request was not served.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ClientError {
    /// Only the leader serves this; here is the leader this node knows of.
    NotLeader {
        /// The known leader, if any.
        leader: Option<u64>,
    },
    /// The outcome is unknown: the write may or may not be applied later.
    Timeout,
    /// A new leader replaced the entry: the write was certainly not applied.
    Overwritten,
    /// The leader is overloaded or busy (uncommitted limit, transfer); retry.
    Busy(String),
    /// The request is not valid here.
    Invalid(String),
    /// The disk is full; nothing was written.
    DiskFull,
    /// The node stopped (shutdown or storage failure); outcome unknown.
    Stopped(String),
}

impl ClientError {
    /// Maps a core refusal.
    pub fn from_core(e: raft_core::Error) -> Self {
        use raft_core::Error as E;
        match e {
            E::NotLeader { leader_hint } => ClientError::NotLeader {
                leader: leader_hint,
            },
            E::TransferInProgress | E::UncommittedLimitExceeded | E::ConfChangeInProgress => {
                ClientError::Busy(e.to_string())
            }
            E::InvalidConfChange(_) | E::InvalidTransferTarget | E::InvalidConfig(_) => {
                ClientError::Invalid(e.to_string())
            }
            E::Storage(_) => ClientError::Stopped(e.to_string()),
        }
    }

    /// Maps a storage failure that stopped the node.
    pub fn from_storage(e: &StorageFailure) -> Self {
        if e.is_disk_full() {
            ClientError::DiskFull
        } else {
            ClientError::Stopped(e.to_string())
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NotLeader { leader: Some(l) } => write!(f, "not the leader; node {l} is"),
            ClientError::NotLeader { leader: None } => write!(f, "no known leader"),
            ClientError::Timeout => write!(f, "timed out; the outcome is unknown"),
            ClientError::Overwritten => write!(f, "lost to a new leader; not applied"),
            ClientError::Busy(why) => write!(f, "busy: {why}"),
            ClientError::Invalid(why) => write!(f, "invalid request: {why}"),
            ClientError::DiskFull => write!(f, "disk full"),
            ClientError::Stopped(why) => write!(f, "node stopped: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<tokio::sync::oneshot::error::RecvError> for ClientError {
    fn from(_: tokio::sync::oneshot::error::RecvError) -> Self {
        ClientError::Stopped("node is not running".into())
    }
}

/// Builds the requests of the key-value API.
impl Request {
    /// A write of `cmd` and the receiver of its outcome.
    pub fn write(cmd: Command) -> (Request, Pending<WriteOutcome>) {
        Request::write_once(cmd, None)
    }

    /// A write of `cmd` applied at most once per request id `id` (a retry
    /// with the same id is answered with the first result).
    pub fn write_once(cmd: Command, id: Option<RequestId>) -> (Request, Pending<WriteOutcome>) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        (Request::Write { cmd, id, reply }, rx)
    }

    /// A linearizable read barrier and the receiver of the index to read at.
    pub fn read_index() -> (Request, Pending<u64>) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        (Request::ReadIndex { reply }, rx)
    }
}
