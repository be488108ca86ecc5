//! Leader election (§5.2) with PreVote (thesis 9.6) and the election restriction (§5.4.1).

use crate::confchange::ConfState;
use crate::entry::{EntryId, EntryKind, NodeId};
use crate::error::StorageError;
use crate::message::MessageBody;
use crate::progress::ProgressState;
use crate::quorum::{joint, VoteResult};
use crate::raw_node::RawNode;
use crate::ready::Role;
use crate::storage::Storage;

impl<S: Storage> RawNode<S> {
    /// Clears per-term state; moves to `term` (forgetting the vote) if it is new.
    fn reset(&mut self, term: u64) {
        if term != self.term {
            debug_assert!(term > self.term, "terms never decrease");
            self.term = term;
            self.vote = None;
        }
        self.leader_id = None;
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        self.reset_randomized_election_timeout();
        self.lead_transferee = None;
        self.votes.clear();
        self.progress.clear();
        self.uncommitted_bytes = 0;
        self.pending_conf_index = 0;
        self.broadcast_pending = false;
        self.read_only.reset();
        self.lease_revoked = false;
        self.stepping_down = None;
    }

    /// Becomes a follower of `leader` in `term`.
    pub(crate) fn become_follower(&mut self, term: u64, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader_id = leader;
    }

    fn become_pre_candidate(&mut self) {
        // Neither term nor vote change: a PreVote round must not disturb anybody.
        self.votes.clear();
        self.leader_id = None;
        self.role = Role::PreCandidate;
    }

    fn become_candidate(&mut self) {
        self.reset(self.term + 1);
        self.vote = Some(self.id);
        self.role = Role::Candidate;
    }

    fn become_leader(&mut self) {
        debug_assert_eq!(self.role, Role::Candidate);
        self.reset(self.term);
        self.role = Role::Leader;
        self.leader_id = Some(self.id);
        let next = self.log.last_index() + 1;
        // The campaign's configuration is the latest in the log.
        self.latest_conf = std::mem::take(&mut self.election_conf);
        for id in self.tracked_members() {
            let mut pr = self.new_progress(next);
            if id == self.id {
                pr.become_replicate();
                pr.maybe_update(self.log.persisted_index());
                pr.recent_active = true;
            }
            self.progress.insert(id, pr);
        }
        // Changes in the log but not yet applied may still be pending.
        self.pending_conf_index = self.log.last_index();
        // A no-op of the new term lets the leader commit earlier entries (Figure 8).
        self.append_entry(EntryKind::Noop, Default::default());
    }

    /// The configuration elections run under: the latest one in the log, applied or not
    /// (thesis 4.1). Using the applied one instead lets a node that has not yet learned
    /// that a change committed campaign in a configuration the cluster already left, and
    /// win alongside a leader of the new configuration in the same term.
    ///
    /// A failed read is an error, never "no change in the log": campaigning under the
    /// applied configuration could win without a quorum of the latest one.
    pub(crate) fn election_conf(&self) -> Result<ConfState, StorageError> {
        let mut conf = self.conf.clone();
        let lo = self.log.applied.max(self.log.first_index() - 1) + 1;
        let hi = self.log.last_index() + 1;
        if lo < hi {
            for e in self.log.entries(lo, hi, u64::MAX)? {
                if let EntryKind::ConfChange(cc) = &e.kind {
                    if let Ok(next) = conf.apply(cc) {
                        conf = next;
                    }
                }
            }
        }
        Ok(conf)
    }

    /// True if this node may campaign: it votes in the applied configuration or in the
    /// latest one in its log. A node that the latest (maybe uncommitted) configuration
    /// leaves out still campaigns, as it may be needed until that entry commits
    /// (thesis 4.2.2); it then counts only the votes of that configuration. False when
    /// the log cannot be read (the node is then stopped).
    pub(crate) fn promotable(&self) -> bool {
        if self.failed() {
            return false;
        }
        self.conf.is_voter(self.id)
            || self
                .election_conf()
                .is_ok_and(|conf| conf.is_voter(self.id))
    }

    fn has_unapplied_conf_changes(&self) -> bool {
        if self.log.committed <= self.log.applied {
            return false;
        }
        let lo = self.log.applied + 1;
        match self.log.entries(lo, self.log.committed + 1, u64::MAX) {
            Ok(entries) => entries
                .iter()
                .any(|e| matches!(e.kind, EntryKind::ConfChange(_))),
            // Compacted entries were applied through a snapshot being installed.
            Err(_) => true,
        }
    }

    pub(crate) fn tick_election(&mut self) {
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.cfg.election_timeout_ticks {
            self.startup_lease_guard = false;
        }
        if self.election_elapsed_ticks >= self.randomized_election_timeout_ticks
            && self.promotable()
        {
            self.election_elapsed_ticks = 0;
            self.hup(false);
        }
    }

    /// Starts a campaign if allowed. `transfer` skips PreVote and the peers' leader lease.
    pub(crate) fn hup(&mut self, transfer: bool) {
        if self.role == Role::Leader || !self.promotable() || self.has_unapplied_conf_changes() {
            return;
        }
        self.campaign_round(self.cfg.pre_vote && !transfer, transfer);
    }

    fn campaign_round(&mut self, pre_vote: bool, transfer: bool) {
        let vote_term = if pre_vote {
            self.become_pre_candidate();
            self.term + 1
        } else {
            self.become_candidate();
            self.term
        };
        self.election_conf = match self.election_conf() {
            Ok(conf) => conf,
            Err(e) => {
                // Never campaign under a configuration we could not read; the failure
                // stops the node (recorded by the log if fatal).
                if !e.is_fatal() {
                    self.log.fail(StorageError::Io(format!(
                        "log entries after the applied index unreadable: {e}"
                    )));
                }
                self.become_follower(self.term, None);
                return;
            }
        };
        self.votes.insert(self.id, true);
        if self.tally_votes() != VoteResult::Pending {
            return;
        }
        let last = self.log.last_entry_id();
        let mut voters = self.election_conf.voters.clone();
        voters.extend(&self.election_conf.voters_outgoing);
        voters.remove(&self.id);
        let commit = self.commit_id();
        for to in voters {
            self.send_with_term(
                to,
                vote_term,
                MessageBody::RequestVote {
                    pre_vote,
                    last,
                    transfer,
                    commit,
                },
            );
        }
    }

    /// Acts on the votes so far: win, lose or keep waiting.
    fn tally_votes(&mut self) -> VoteResult {
        let result = joint::vote_result(&self.election_conf, |id| self.votes.get(&id).copied());
        match (result, self.role) {
            (VoteResult::Won, Role::PreCandidate) => self.campaign_round(false, false),
            (VoteResult::Won, Role::Candidate) => self.become_leader(),
            (VoteResult::Lost, _) => self.become_follower(self.term, None),
            _ => {}
        }
        result
    }

    pub(crate) fn handle_vote_request(
        &mut self,
        from: NodeId,
        msg_term: u64,
        pre_vote: bool,
        last: EntryId,
    ) {
        let can_vote = self.vote == Some(from)
            || (self.vote.is_none() && self.leader_id.is_none())
            || (pre_vote && msg_term > self.term);
        if can_vote && self.log.is_up_to_date(last) {
            self.send_with_term(
                from,
                msg_term,
                MessageBody::VoteResponse {
                    pre_vote,
                    granted: true,
                    commit: self.commit_id(),
                },
            );
            if !pre_vote {
                self.election_elapsed_ticks = 0;
                self.vote = Some(from);
            }
        } else {
            self.send(
                from,
                MessageBody::VoteResponse {
                    pre_vote,
                    granted: false,
                    commit: self.commit_id(),
                },
            );
        }
    }

    pub(crate) fn handle_vote_response(
        &mut self,
        from: NodeId,
        msg_term: u64,
        pre_vote: bool,
        granted: bool,
    ) {
        let expected = match self.role {
            Role::PreCandidate if pre_vote => msg_term == self.term + 1 || !granted,
            Role::Candidate if !pre_vote => msg_term == self.term,
            _ => false,
        };
        if !expected || !self.election_conf.is_voter(from) {
            return;
        }
        self.votes.entry(from).or_insert(granted);
        self.tally_votes();
    }

    /// Leader tick: heartbeats, CheckQuorum, transfer timeout, snapshot timeout.
    pub(crate) fn tick_leader(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.cfg.election_timeout_ticks {
            self.election_elapsed_ticks = 0;
            if self.cfg.check_quorum {
                let active = joint::vote_result(&self.conf, |id| {
                    self.progress.get(&id).map(|p| p.recent_active)
                });
                if active != VoteResult::Won {
                    self.become_follower(self.term, None);
                    return;
                }
                let me = self.id;
                for (id, pr) in self.progress.iter_mut() {
                    pr.recent_active = *id == me;
                }
            }
            self.lead_transferee = None;
        }
        if let Some(sd) = self.stepping_down.as_mut() {
            sd.ticks += 1;
            if sd.ticks >= 2 * self.cfg.election_timeout_ticks {
                // The new configuration does not answer (partitioned away): waiting
                // longer cannot help it, and CheckQuorum may be off.
                self.step_down_to_successor();
                return;
            }
        }
        let snapshot_timeout = 2 * self.cfg.election_timeout_ticks;
        for pr in self.progress.values_mut() {
            if pr.state == ProgressState::Snapshot {
                pr.snapshot_ticks += 1;
                if pr.snapshot_ticks >= snapshot_timeout {
                    pr.become_probe();
                }
            }
        }
        if self.heartbeat_elapsed_ticks >= self.cfg.heartbeat_interval_ticks {
            self.heartbeat_elapsed_ticks = 0;
            self.bcast_heartbeat();
        }
    }
}
