//! Receiving a message: the term rules every message obeys, then dispatch by kind.

use crate::entry::EntryId;
use crate::error::Result;
use crate::message::{Message, MessageBody};
use crate::raw_node::RawNode;
use crate::ready::Role;
use crate::storage::Storage;

impl<S: Storage> RawNode<S> {
    /// Feeds a message from a peer. Messages that are stale, duplicated, reordered,
    /// misaddressed or from non-members are ignored; nothing a peer sends can panic.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) if a storage read failed, during this
    /// step or before: the node is stopped (see [`RawNode::ready`]).
    pub fn step(&mut self, m: Message) -> Result<()> {
        self.debug_check_not_in_ready();
        self.check_failure()?;
        self.step_inner(m)?;
        self.check_failure()
    }

    fn step_inner(&mut self, m: Message) -> Result<()> {
        if m.to != self.id || m.from == self.id || m.from == 0 {
            return Ok(());
        }
        // Campaign traffic carries commit facts both ways (see `VoteResponse::commit`).
        match &m.body {
            MessageBody::VoteResponse { commit, .. } | MessageBody::RequestVote { commit, .. } => {
                self.learn_commit(*commit)
            }
            _ => {}
        }
        if m.term > self.term {
            if !self.accept_higher_term(&m) {
                return Ok(());
            }
        } else if m.term < self.term {
            self.answer_stale_term(&m);
            return Ok(());
        }
        match m.body {
            MessageBody::RequestVote { pre_vote, last, .. } => {
                self.handle_vote_request(m.from, m.term, pre_vote, last)
            }
            MessageBody::VoteResponse {
                pre_vote, granted, ..
            } => self.handle_vote_response(m.from, m.term, pre_vote, granted),
            MessageBody::Append {
                prev,
                entries,
                leader_commit,
                tag,
            } => {
                if self.follow_sender(m.from) {
                    self.handle_append(m.from, prev, entries, leader_commit, tag);
                }
            }
            MessageBody::Heartbeat {
                commit,
                read_round,
                tag,
            } => {
                if self.follow_sender(m.from) {
                    self.handle_heartbeat(m.from, commit, read_round, tag);
                }
            }
            MessageBody::InstallSnapshot { snapshot, tag } => {
                if self.follow_sender(m.from) {
                    self.handle_install_snapshot(m.from, snapshot, tag);
                }
            }
            MessageBody::AppendResponse { tag, outcome } => {
                if self.role == Role::Leader {
                    self.handle_append_response(m.from, tag, outcome);
                }
            }
            MessageBody::HeartbeatResponse { read_round, tag } => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_response(m.from, read_round, tag);
                }
            }
            MessageBody::TimeoutNow => {
                if self.role == Role::Follower && self.leader_id == Some(m.from) {
                    self.hup(true);
                }
            }
        }
        Ok(())
    }

    /// Adopts a peer's commit index if our log holds the very entry it committed there.
    fn learn_commit(&mut self, commit: EntryId) {
        if commit.index > self.log.committed && self.log.match_term(commit.index, commit.term) {
            self.log.commit_to(commit.index);
        }
    }

    pub(crate) fn commit_id(&self) -> EntryId {
        let index = self.log.committed;
        EntryId {
            index,
            term: self.log.term(index).unwrap_or(0),
        }
    }

    /// `m` carries a higher term. Returns false if the message must be dropped.
    fn accept_higher_term(&mut self, m: &Message) -> bool {
        match m.body {
            MessageBody::RequestVote {
                pre_vote, transfer, ..
            } => {
                // Leader lease (thesis 4.2.3): while we hear from a leader, ignore
                // candidates, unless leadership is being handed over on purpose.
                let in_lease = self.cfg.check_quorum
                    && (self.leader_id.is_some() || self.startup_lease_guard)
                    && self.election_elapsed_ticks < self.cfg.election_timeout_ticks;
                if in_lease && !transfer {
                    return false;
                }
                if !pre_vote {
                    self.become_follower(m.term, None);
                }
                true
            }
            // A granted PreVote carries the term we would campaign in; nobody moved to it.
            MessageBody::VoteResponse {
                pre_vote: true,
                granted: true,
                ..
            } => true,
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.become_follower(m.term, Some(m.from));
                true
            }
            _ => {
                self.become_follower(m.term, None);
                true
            }
        }
    }

    /// `m` carries a lower term: tell a stale leader or pre-candidate about our term.
    fn answer_stale_term(&mut self, m: &Message) {
        match m.body {
            // The stale leader must learn the newer term from us: with CheckQuorum or
            // PreVote nobody may ever disrupt it by campaigning, and a campaigner whose
            // configuration no longer includes the stale leader never asks it for a vote.
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.send(
                    m.from,
                    MessageBody::HeartbeatResponse {
                        read_round: 0,
                        tag: 0,
                    },
                );
            }
            // A stale (pre-)candidate learns our term (§5.1) and catches up; otherwise a
            // candidate that only talks to nodes of higher term could never win.
            MessageBody::RequestVote { pre_vote, .. } => {
                self.send(
                    m.from,
                    MessageBody::VoteResponse {
                        pre_vote,
                        granted: false,
                        commit: self.commit_id(),
                    },
                );
            }
            _ => {}
        }
    }

    /// A leader of our term spoke: follow it. Returns false if we are leader ourselves
    /// (two leaders in one term cannot happen, so the message is junk).
    fn follow_sender(&mut self, from: u64) -> bool {
        match self.role {
            Role::Leader => false,
            Role::Follower => {
                self.leader_id = Some(from);
                self.election_elapsed_ticks = 0;
                true
            }
            Role::Candidate | Role::PreCandidate => {
                self.become_follower(self.term, Some(from));
                true
            }
        }
    }
}
