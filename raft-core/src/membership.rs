//! Membership changes (thesis ch. 4): proposing, applying, and leaving joint consensus.

use crate::confchange::{ConfChange, ConfState};
use crate::entry::{EntryId, EntryKind};
use crate::error::{Error, Result};
use crate::message::MessageBody;
use crate::raw_node::{RawNode, StepDown};
use crate::ready::Role;
use crate::storage::Storage;

impl<S: Storage> RawNode<S> {
    /// Proposes a membership change. Any change of voters goes through joint consensus;
    /// the leader leaves the joint configuration by itself once it is applied. Only one
    /// change may be pending (proposed and not yet applied) at a time.
    pub fn propose_conf_change(&mut self, cc: ConfChange, context: Vec<u8>) -> Result<EntryId> {
        self.debug_check_not_in_ready();
        self.check_can_propose()?;
        if self.pending_conf_index > self.log.applied {
            return Err(Error::ConfChangeInProgress);
        }
        if cc.changes.is_empty() {
            return Err(Error::InvalidConfChange(
                "leaving a joint configuration is automatic",
            ));
        }
        self.conf.apply(&cc).map_err(Error::InvalidConfChange)?;
        let id = self.append_entry(EntryKind::ConfChange(cc), context.into());
        self.pending_conf_index = id.index;
        Ok(id)
    }

    /// Applies a committed change (called as its entry is applied). A change that is not
    /// valid here is ignored, identically on every node.
    pub(crate) fn apply_conf_change(&mut self, cc: &ConfChange) {
        if let Ok(next) = self.conf.apply(cc) {
            self.switch_to_conf(next);
        }
    }

    fn switch_to_conf(&mut self, next: ConfState) {
        debug_assert!(next.check_invariants().is_ok());
        self.conf = next;
        if self.role != Role::Leader {
            return;
        }
        self.sync_progress_with_members();
        if self.lead_transferee.is_some_and(|t| !self.conf.is_voter(t)) {
            self.lead_transferee = None;
        }
        if !self.conf.is_voter(self.id) {
            // Removed (or demoted) once C_new is in force. Stepping down at once would
            // be too early (thesis 4.2.2 leaves the leader in charge until C_new is
            // committed, and here it is, but nobody may know): if no member of C_new
            // learned that commit, their next leader still counts quorums of the
            // configuration it last applied, which the operator may already have
            // shut down, and the cluster stalls for good. So keep leading, without
            // taking proposals, and keep sending heartbeats that carry the commit
            // index, until a quorum of C_new has answered one carrying it; then hand
            // over to a caught-up member of C_new.
            self.stepping_down = Some(StepDown {
                conf_index: self.log.applied,
                ticks: 0,
            });
            self.broadcast_pending = true;
            self.bcast_heartbeat();
            self.maybe_finish_stepping_down();
            return;
        }
        if self.maybe_commit() {
            self.broadcast_pending = true;
        }
        self.broadcast_pending = true;
    }

    /// Leader removed from the configuration: steps down once a quorum of the applied
    /// configuration has learned that the change committed (see `switch_to_conf`), and
    /// tells the most caught-up voter to campaign at once.
    pub(crate) fn maybe_finish_stepping_down(&mut self) {
        let Some(sd) = self.stepping_down else {
            return;
        };
        let known = crate::quorum::joint::committed_index(&self.conf, |id| {
            self.progress.get(&id).map(|p| p.commit_acked)
        });
        if known < sd.conf_index {
            return;
        }
        self.step_down_to_successor();
    }

    /// Leader removed from the configuration: steps down, first sending TimeoutNow to a
    /// voter that holds the whole log, if there is one.
    pub(crate) fn step_down_to_successor(&mut self) {
        let last = self.log.last_index();
        let successor = self
            .progress
            .iter()
            .filter(|(id, p)| self.conf.is_voter(**id) && p.match_index == last)
            .map(|(id, _)| *id)
            .next();
        if let Some(to) = successor {
            self.lease_revoked = true;
            self.send(to, MessageBody::TimeoutNow);
        }
        self.become_follower(self.term, None);
    }

    /// Leader: every member of the applied or the latest configuration, each once.
    pub(crate) fn tracked_members(&self) -> std::collections::BTreeSet<u64> {
        let mut all = self.conf.members();
        all.extend(self.latest_conf.members());
        all
    }

    /// Leader: progress for exactly the tracked members; newcomers start probing.
    pub(crate) fn sync_progress_with_members(&mut self) {
        let members = self.tracked_members();
        self.progress.retain(|id, _| members.contains(id));
        let next_index = self.log.last_index() + 1;
        for id in members {
            if !self.progress.contains_key(&id) {
                // A fresh tag: answers meant for an earlier membership of `id` are ignored.
                let pr = self.new_progress(next_index);
                self.progress.insert(id, pr);
            }
        }
    }

    /// Highest index held by a quorum of both the applied and the latest configuration.
    /// Counting only the applied one (as etcd-raft does) would let a leader whose log
    /// already holds a newer, committed configuration commit with the old majority alone.
    pub(crate) fn quorum_index(&self, acked: impl Fn(u64) -> Option<u64>) -> u64 {
        let applied = crate::quorum::joint::committed_index(&self.conf, &acked);
        let latest = crate::quorum::joint::committed_index(&self.latest_conf, &acked);
        applied.min(latest)
    }

    /// Leader: once the joint configuration is applied, propose leaving it.
    pub(crate) fn maybe_auto_leave_joint(&mut self) {
        if self.role == Role::Leader
            && self.conf.is_joint()
            && self.pending_conf_index <= self.log.applied
        {
            let id = self.append_entry(
                EntryKind::ConfChange(ConfChange::leave_joint()),
                Default::default(),
            );
            self.pending_conf_index = id.index;
        }
    }
}
