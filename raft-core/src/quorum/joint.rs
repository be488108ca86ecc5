//! A joint configuration: decisions need a majority of both halves.

use super::{majority, VoteResult};
use crate::confchange::ConfState;
use crate::entry::NodeId;

/// Highest index acknowledged by a quorum of `conf` (both halves while joint).
pub fn committed_index(conf: &ConfState, acked: impl Fn(NodeId) -> Option<u64>) -> u64 {
    let incoming = majority::committed_index(&conf.voters, &acked);
    let outgoing = majority::committed_index(&conf.voters_outgoing, &acked);
    let index = incoming.min(outgoing);
    // Only reachable with no voters at all, which ConfState::apply never produces.
    if index == u64::MAX {
        0
    } else {
        index
    }
}

/// Vote outcome in `conf`: won only if both halves win; lost if either half loses.
pub fn vote_result(conf: &ConfState, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    let incoming = majority::vote_result(&conf.voters, &vote);
    let outgoing = majority::vote_result(&conf.voters_outgoing, &vote);
    match (incoming, outgoing) {
        (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
        (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
        _ => VoteResult::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confchange::{ConfChange, ConfChangeSingle};

    #[test]
    fn joint_needs_both_majorities() {
        let old = ConfState::with_voters([1, 2, 3]);
        let joint = old
            .apply(&ConfChange {
                changes: vec![
                    ConfChangeSingle::AddVoter(4),
                    ConfChangeSingle::AddVoter(5),
                    ConfChangeSingle::Remove(2),
                    ConfChangeSingle::Remove(3),
                ],
            })
            .unwrap();
        // Old {1,2,3}, new {1,4,5}. 1,2 granted: old wins, new pending.
        assert_eq!(
            vote_result(&joint, |id| [1, 2].contains(&id).then_some(true)),
            VoteResult::Pending
        );
        assert_eq!(
            vote_result(&joint, |id| [1, 2, 4].contains(&id).then_some(true)),
            VoteResult::Won
        );
        assert_eq!(
            vote_result(&joint, |id| [4, 5].contains(&id).then_some(false)),
            VoteResult::Lost
        );
        let acked = |id: u64| {
            Some(match id {
                1 => 9,
                2 => 9,
                3 => 1,
                4 => 5,
                _ => 0,
            })
        };
        // old: 9,9,1 -> 9; new: 9,5,0 -> 5.
        assert_eq!(committed_index(&joint, acked), 5);
        assert_eq!(committed_index(&old, acked), 9);
    }
}
