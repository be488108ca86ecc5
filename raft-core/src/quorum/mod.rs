//! Quorum arithmetic: committed index and vote outcome for a majority and a joint config.

pub mod joint;
pub mod majority;

/// Outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// Not decided yet: more votes may still arrive.
    Pending,
    /// A quorum rejected.
    Lost,
    /// A quorum granted.
    Won,
}
