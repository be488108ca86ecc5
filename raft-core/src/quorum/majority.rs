//! A simple majority configuration.

use std::collections::BTreeSet;

use super::VoteResult;
use crate::entry::NodeId;

/// The highest index acknowledged by a majority of `voters`, where `acked(id)` returns the
/// index a voter has acknowledged (or `None` if unknown, counted as 0).
/// An empty voter set returns `u64::MAX` so that it never restricts a joint configuration.
pub fn committed_index(voters: &BTreeSet<NodeId>, acked: impl Fn(NodeId) -> Option<u64>) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    // With n voters, a majority is n/2+1; the (n/2)-th largest (0-based) is held by a
    // majority. Usual cluster sizes sort on the stack (this runs on every ack).
    let mut small = [0u64; 9];
    let mut large = Vec::new();
    let indexes: &mut [u64] = if voters.len() <= small.len() {
        &mut small[..voters.len()]
    } else {
        large.resize(voters.len(), 0);
        &mut large
    };
    for (slot, id) in indexes.iter_mut().zip(voters) {
        *slot = acked(*id).unwrap_or(0);
    }
    indexes.sort_unstable_by(|a, b| b.cmp(a));
    indexes[voters.len() / 2]
}

/// Counts the votes of `voters`, where `vote(id)` is `Some(granted)` once `id` has answered.
/// An empty voter set wins, so that it never restricts a joint configuration.
pub fn vote_result(voters: &BTreeSet<NodeId>, vote: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    if voters.is_empty() {
        return VoteResult::Won;
    }
    let (mut granted, mut missing) = (0usize, 0usize);
    for id in voters {
        match vote(*id) {
            Some(true) => granted += 1,
            Some(false) => {}
            None => missing += 1,
        }
    }
    let quorum = voters.len() / 2 + 1;
    if granted >= quorum {
        VoteResult::Won
    } else if granted + missing >= quorum {
        VoteResult::Pending
    } else {
        VoteResult::Lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn committed_index_is_the_majority_median() {
        let voters: BTreeSet<u64> = [1, 2, 3, 4, 5].into();
        let acked: BTreeMap<u64, u64> = [(1, 10), (2, 8), (3, 8), (4, 2)].into();
        // 10, 8, 8, 2, 0: three voters hold 8.
        assert_eq!(committed_index(&voters, |id| acked.get(&id).copied()), 8);
        let four: BTreeSet<u64> = [1, 2, 3, 4].into();
        // 10, 8, 8, 2: three of four hold 8.
        assert_eq!(committed_index(&four, |id| acked.get(&id).copied()), 8);
        assert_eq!(committed_index(&BTreeSet::new(), |_| None), u64::MAX);
    }

    #[test]
    fn vote_result_counts_majorities() {
        let voters: BTreeSet<u64> = [1, 2, 3].into();
        assert_eq!(
            vote_result(&voters, |id| (id == 1).then_some(true)),
            VoteResult::Pending
        );
        assert_eq!(
            vote_result(&voters, |id| (id <= 2).then_some(true)),
            VoteResult::Won
        );
        assert_eq!(
            vote_result(&voters, |id| if id == 1 { Some(true) } else { Some(false) }),
            VoteResult::Lost
        );
        assert_eq!(
            vote_result(&voters, |id| (id >= 2).then_some(false)),
            VoteResult::Lost
        );
    }
}
