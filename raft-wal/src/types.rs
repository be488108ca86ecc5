//! The values the WAL stores.

/// One log entry: a position, the term it was created in, and opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, starting at 1 (or after a compaction point).
    pub index: u64,
    /// Term of the entry.
    pub term: u64,
    /// The caller's payload; the WAL never looks inside.
    pub data: Vec<u8>,
}

/// The small record of election state that must survive restarts: Raft's
/// `currentTerm` and `votedFor`, plus the last known commit index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HardState {
    /// Current term.
    pub term: u64,
    /// Candidate voted for in `term`, if any.
    pub vote: Option<u64>,
    /// Highest index known to be committed.
    pub commit: u64,
}
