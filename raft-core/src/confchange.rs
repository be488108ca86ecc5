//! Membership: the configuration in force and how a change request transforms it.
//!
//! Any change to the voter set goes through joint consensus: the first entry moves the
//! cluster to the joint configuration `C_old,new` (decisions need a majority of both), and
//! the leader then proposes an empty change that leaves it for `C_new`. Changes that only
//! touch learners take effect directly.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::entry::NodeId;

/// One step of a membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfChangeSingle {
    /// Make the node a voter (adds it, or promotes a learner).
    AddVoter(NodeId),
    /// Make the node a learner (adds it, or demotes a voter once the joint phase ends).
    AddLearner(NodeId),
    /// Remove the node from the configuration.
    Remove(NodeId),
}

/// A membership change request. An empty list means "leave the joint configuration".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfChange {
    /// The steps, applied in order.
    pub changes: Vec<ConfChangeSingle>,
}

impl ConfChange {
    /// The change that leaves a joint configuration.
    pub fn leave_joint() -> Self {
        ConfChange {
            changes: Vec::new(),
        }
    }
}

/// The membership in force.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfState {
    /// Voters of the (incoming) configuration.
    pub voters: BTreeSet<NodeId>,
    /// Voters of the outgoing configuration; non-empty exactly while joint.
    pub voters_outgoing: BTreeSet<NodeId>,
    /// Learners: receive the log, never vote.
    pub learners: BTreeSet<NodeId>,
    /// Voters being demoted: they become learners when the joint phase ends.
    pub learners_next: BTreeSet<NodeId>,
}

impl ConfState {
    /// A plain configuration with the given voters.
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        ConfState {
            voters: voters.into_iter().collect(),
            ..Default::default()
        }
    }

    /// True while in a joint configuration.
    pub fn is_joint(&self) -> bool {
        !self.voters_outgoing.is_empty()
    }

    /// True if `id` votes in either half of the configuration.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.voters_outgoing.contains(&id)
    }

    /// True if `id` is a member in any role.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id) || self.learners_next.contains(&id)
    }

    /// Every member, each once, in ascending order.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        all.extend(&self.voters_outgoing);
        all.extend(&self.learners);
        all.extend(&self.learners_next);
        all
    }

    /// Returns the configuration after `cc`, or why `cc` is not allowed here.
    pub fn apply(&self, cc: &ConfChange) -> Result<ConfState, &'static str> {
        if cc.changes.is_empty() {
            return self.leave_joint();
        }
        if self.is_joint() {
            return Err("already in a joint configuration; leave it first");
        }
        let mut incoming = self.voters.clone();
        let mut learners = self.learners.clone();
        let mut learners_next = BTreeSet::new();
        for change in &cc.changes {
            match *change {
                ConfChangeSingle::AddVoter(id) => {
                    if id == 0 {
                        return Err("node id 0 is reserved");
                    }
                    incoming.insert(id);
                    learners.remove(&id);
                    learners_next.remove(&id);
                }
                ConfChangeSingle::AddLearner(id) => {
                    if id == 0 {
                        return Err("node id 0 is reserved");
                    }
                    incoming.remove(&id);
                    if self.voters.contains(&id) {
                        // Still votes in the outgoing half; becomes a learner on leaving.
                        learners_next.insert(id);
                    } else {
                        learners.insert(id);
                    }
                }
                ConfChangeSingle::Remove(id) => {
                    incoming.remove(&id);
                    learners.remove(&id);
                    learners_next.remove(&id);
                }
            }
        }
        if incoming.is_empty() {
            return Err("a configuration needs at least one voter");
        }
        if incoming == self.voters {
            debug_assert!(learners_next.is_empty());
            return Ok(ConfState {
                voters: incoming,
                voters_outgoing: BTreeSet::new(),
                learners,
                learners_next,
            });
        }
        let next = ConfState {
            voters: incoming,
            voters_outgoing: self.voters.clone(),
            learners,
            learners_next,
        };
        debug_assert!(next.check_invariants().is_ok());
        Ok(next)
    }

    fn leave_joint(&self) -> Result<ConfState, &'static str> {
        if !self.is_joint() {
            return Err("not in a joint configuration");
        }
        let mut learners = self.learners.clone();
        learners.extend(&self.learners_next);
        Ok(ConfState {
            voters: self.voters.clone(),
            voters_outgoing: BTreeSet::new(),
            learners,
            learners_next: BTreeSet::new(),
        })
    }

    /// Checks the structural rules: learners never vote, `learners_next` only while joint
    /// and only for outgoing voters.
    pub fn check_invariants(&self) -> Result<(), &'static str> {
        if self.learners.iter().any(|id| self.is_voter(*id)) {
            return Err("a learner is also a voter");
        }
        if !self.learners_next.is_empty() && !self.is_joint() {
            return Err("learners_next outside a joint configuration");
        }
        if self
            .learners_next
            .iter()
            .any(|id| !self.voters_outgoing.contains(id) || self.voters.contains(id))
        {
            return Err("learners_next must be outgoing-only voters");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConfChangeSingle::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn learner_only_change_is_direct() {
        let c = ConfState::with_voters([1, 2, 3]);
        let n = c
            .apply(&ConfChange {
                changes: vec![AddLearner(4)],
            })
            .unwrap();
        assert!(!n.is_joint());
        assert_eq!(n.learners, set(&[4]));
    }

    #[test]
    fn voter_change_enters_and_leaves_joint() {
        let c = ConfState::with_voters([1, 2, 3]);
        let j = c
            .apply(&ConfChange {
                changes: vec![AddVoter(4), Remove(1)],
            })
            .unwrap();
        assert!(j.is_joint());
        assert_eq!(j.voters, set(&[2, 3, 4]));
        assert_eq!(j.voters_outgoing, set(&[1, 2, 3]));
        assert!(j
            .apply(&ConfChange {
                changes: vec![AddVoter(5)]
            })
            .is_err());
        let n = j.apply(&ConfChange::leave_joint()).unwrap();
        assert_eq!(n, ConfState::with_voters([2, 3, 4]));
        assert!(n.apply(&ConfChange::leave_joint()).is_err());
    }

    #[test]
    fn demotion_goes_through_learners_next() {
        let c = ConfState::with_voters([1, 2, 3]);
        let j = c
            .apply(&ConfChange {
                changes: vec![AddLearner(3)],
            })
            .unwrap();
        assert!(j.is_joint());
        assert_eq!(j.learners_next, set(&[3]));
        assert!(j.check_invariants().is_ok());
        let n = j.apply(&ConfChange::leave_joint()).unwrap();
        assert_eq!(n.voters, set(&[1, 2]));
        assert_eq!(n.learners, set(&[3]));
    }

    #[test]
    fn cannot_remove_every_voter() {
        let c = ConfState::with_voters([1]);
        assert!(c
            .apply(&ConfChange {
                changes: vec![Remove(1)]
            })
            .is_err());
    }
}
