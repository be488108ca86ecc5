//! Log replication (§5.3): sending appends and snapshots, the follower's checks, progress
//! updates with fast backtracking, and the commit rule (§5.4.2, Figure 8).

use crate::entry::{Entry, EntryId, NodeId, SnapshotMeta};
use crate::message::{AppendOutcome, MessageBody};
use crate::progress::ProgressState;
use crate::raw_node::RawNode;
use crate::ready::Role;
use crate::storage::Storage;

impl<S: Storage> RawNode<S> {
    // ----- leader side: sending -----

    /// Sends the next append to `to` if its progress allows. With `send_if_empty` an
    /// append without entries still goes (to probe or carry the commit index).
    pub(crate) fn send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        if to == self.id {
            return false;
        }
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let next = pr.next_index;
        let prev_index = next - 1;
        let read = self.log.term(prev_index).and_then(|prev_term| {
            self.log
                .entries_with_size(
                    next,
                    self.log.last_index() + 1,
                    self.cfg.max_size_per_msg_bytes,
                )
                .map(|(entries, bytes)| (prev_term, entries, bytes))
        });
        let (prev_term, entries, bytes) = match read {
            Ok(read) => read,
            // A broken storage stops the node (the log recorded the failure).
            Err(e) if e.is_fatal() => return false,
            // The entries the follower needs are compacted: send the snapshot instead.
            Err(_) => return self.send_snapshot(to),
        };
        if entries.is_empty() && !send_if_empty {
            return false;
        }
        let last = prev_index + entries.len() as u64;
        let Some(pr) = self.progress.get_mut(&to) else {
            return false;
        };
        pr.sent_entries(last, bytes);
        let tag = pr.tag;
        let prev = EntryId {
            index: prev_index,
            term: prev_term,
        };
        self.send(
            to,
            MessageBody::Append {
                prev,
                entries,
                leader_commit: self.log.committed,
                tag,
            },
        );
        true
    }

    fn send_snapshot(&mut self, to: NodeId) -> bool {
        let snapshot = self.log.storage.snapshot_meta();
        let Some(pr) = self.progress.get_mut(&to) else {
            return false;
        };
        pr.become_snapshot(snapshot.index);
        let tag = pr.tag;
        self.send(to, MessageBody::InstallSnapshot { snapshot, tag });
        true
    }

    /// Sends appends (or commit updates) to every member.
    pub(crate) fn bcast_append(&mut self) {
        // Walk the members in id order without collecting them (this runs every Ready).
        let mut after = None;
        while let Some(id) = self.progress.next_id_after(after) {
            after = Some(id);
            self.send_append(id, true);
            // Pipeline: fill the in-flight window of peers already replicating.
            while self
                .progress
                .get(&id)
                .is_some_and(|p| p.state == ProgressState::Replicate)
                && self.send_append(id, false)
            {}
        }
    }

    /// Sends heartbeats carrying the current ReadIndex round.
    pub(crate) fn bcast_heartbeat(&mut self) {
        let read_round = self.read_only.next_round(self.ticks, self.clock_nanos);
        let targets: Vec<(NodeId, u64, u64)> = self
            .progress
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, pr)| (*id, pr.match_index.min(self.log.committed), pr.tag))
            .collect();
        for (to, commit, tag) in targets {
            if let Some(pr) = self.progress.get_mut(&to) {
                if pr.commit_probe.is_none() && commit > pr.commit_acked {
                    pr.commit_probe = Some((read_round, commit));
                }
            }
            self.send(
                to,
                MessageBody::Heartbeat {
                    commit,
                    read_round,
                    tag,
                },
            );
        }
        // A lone voter confirms its own rounds.
        self.confirm_reads();
    }

    /// Commits the highest index a quorum holds, if it is of the current term.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let index = self.quorum_index(|id| self.progress.get(&id).map(|p| p.match_index));
        if index <= self.log.committed || self.log.term(index) != Ok(self.term) {
            return false;
        }
        let first_in_term = self.log.term(self.log.committed) != Ok(self.term);
        self.log.commit_to(index);
        if first_in_term {
            self.release_parked_reads();
        }
        true
    }

    // ----- leader side: responses -----

    pub(crate) fn handle_append_response(
        &mut self,
        from: NodeId,
        tag: u64,
        outcome: AppendOutcome,
    ) {
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        if pr.tag != tag {
            return;
        }
        pr.recent_active = true;
        match outcome {
            AppendOutcome::Accepted { match_index } => {
                if match_index > last_index {
                    return;
                }
                let was_paused = pr.is_paused();
                if !pr.maybe_update(match_index) {
                    if pr.state == ProgressState::Replicate {
                        pr.inflights.free_to(match_index);
                    }
                    return;
                }
                match pr.state {
                    ProgressState::Probe => pr.become_replicate(),
                    ProgressState::Snapshot if pr.match_index >= pr.pending_snapshot => {
                        pr.become_probe()
                    }
                    ProgressState::Snapshot => {}
                    ProgressState::Replicate => pr.inflights.free_to(match_index),
                }
                let caught_up = pr.match_index == last_index;
                if self.maybe_commit() {
                    self.broadcast_pending = true;
                } else if was_paused {
                    self.send_append(from, false);
                }
                while self.send_append(from, false) {}
                if caught_up && self.lead_transferee == Some(from) {
                    self.lease_revoked = true;
                    self.send(from, MessageBody::TimeoutNow);
                }
            }
            AppendOutcome::Rejected {
                rejected_index,
                conflict_term,
                conflict_first_index,
            } => {
                let stale = match pr.state {
                    ProgressState::Replicate => rejected_index <= pr.match_index,
                    ProgressState::Probe => rejected_index + 1 != pr.next_index,
                    ProgressState::Snapshot => true,
                };
                if stale {
                    return;
                }
                let mut next = conflict_first_index;
                if let Some(t) = conflict_term {
                    if let Some(i) =
                        self.last_index_of_term_at_most(rejected_index.min(last_index), t)
                    {
                        next = i + 1;
                    }
                }
                let Some(pr) = self.progress.get_mut(&from) else {
                    return;
                };
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                pr.next_index = next.min(rejected_index).max(pr.match_index + 1).max(1);
                pr.probe_sent = false;
                self.send_append(from, true);
            }
        }
    }

    /// Scanning back from `from`, the last index whose term is `term`; `None` if the log
    /// only has other terms there (or they are compacted).
    fn last_index_of_term_at_most(&self, from: u64, term: u64) -> Option<u64> {
        let mut i = from;
        loop {
            match self.log.term(i) {
                Ok(t) if t == term => return Some(i),
                Ok(t) if t > term && i > 0 => i -= 1,
                _ => return None,
            }
        }
    }

    pub(crate) fn handle_heartbeat_response(&mut self, from: NodeId, read_round: u64, tag: u64) {
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        if pr.tag != tag {
            return;
        }
        pr.recent_active = true;
        pr.probe_sent = false;
        if pr.state == ProgressState::Replicate && pr.inflights.is_full() {
            // The follower is alive but no append was acknowledged for a whole
            // window: acknowledgements are late or lost. Free one slot, as etcd does,
            // so the next append goes out (it carries the commit index and draws an
            // acknowledgement that frees the rest). Dropping to Probe instead threw
            // the pipeline away on every heartbeat under load; a real gap in the
            // follower's log still shows up as a rejection, which probes.
            pr.inflights.free_first_one();
        }
        if let Some((round, commit)) = pr.commit_probe {
            if read_round >= round {
                pr.commit_acked = pr.commit_acked.max(commit);
                pr.commit_probe = None;
            }
        }
        let lagging = pr.match_index < last_index || pr.state == ProgressState::Probe;
        let round_news = read_round > pr.read_round_acked;
        if round_news {
            pr.read_round_acked = read_round;
        }
        if lagging {
            self.send_append(from, true);
        }
        if round_news && (self.conf.is_voter(from) || self.latest_conf.is_voter(from)) {
            self.confirm_reads();
        }
        self.maybe_finish_stepping_down();
    }

    // ----- follower side -----

    pub(crate) fn handle_append(
        &mut self,
        from: NodeId,
        prev: EntryId,
        mut entries: Vec<Entry>,
        leader_commit: u64,
        tag: u64,
    ) {
        debug_assert_eq!(self.role, Role::Follower);
        let well_formed = entries.iter().enumerate().all(|(i, e)| {
            e.index == prev.index + 1 + i as u64 && e.term <= self.term && e.term >= prev.term
        });
        if !well_formed {
            return;
        }
        if prev.index < self.log.committed {
            // Already have (and committed) more than this; report what we hold.
            let outcome = AppendOutcome::Accepted {
                match_index: self.log.committed,
            };
            self.send(from, MessageBody::AppendResponse { tag, outcome });
            return;
        }
        if self.log.match_term(prev.index, prev.term) {
            let last_new = prev.index + entries.len() as u64;
            if let Some(conflict) = self.log.find_conflict(&entries) {
                if conflict <= self.log.committed {
                    // A leader may never ask to overwrite committed entries; drop it.
                    return;
                }
                entries.drain(..(conflict - prev.index - 1) as usize);
                self.log.append(entries);
            }
            self.log.commit_to(leader_commit.min(last_new));
            let outcome = AppendOutcome::Accepted {
                match_index: last_new,
            };
            self.send(from, MessageBody::AppendResponse { tag, outcome });
            return;
        }
        let outcome = match self.log.term(prev.index) {
            Ok(t) => {
                let mut first = prev.index;
                while first > self.log.committed + 1 && self.log.term(first - 1) == Ok(t) {
                    first -= 1;
                }
                AppendOutcome::Rejected {
                    rejected_index: prev.index,
                    conflict_term: Some(t),
                    conflict_first_index: first,
                }
            }
            Err(_) => AppendOutcome::Rejected {
                rejected_index: prev.index,
                conflict_term: None,
                conflict_first_index: self.log.last_index() + 1,
            },
        };
        self.send(from, MessageBody::AppendResponse { tag, outcome });
    }

    pub(crate) fn handle_heartbeat(
        &mut self,
        from: NodeId,
        commit: u64,
        read_round: u64,
        tag: u64,
    ) {
        // The leader sends min(our match, its commit), so this never commits an entry we
        // have not matched; a larger value is junk and ignored.
        if commit <= self.log.last_index() {
            self.log.commit_to(commit);
        }
        self.send(from, MessageBody::HeartbeatResponse { read_round, tag });
    }

    pub(crate) fn handle_install_snapshot(
        &mut self,
        from: NodeId,
        snapshot: SnapshotMeta,
        tag: u64,
    ) {
        let match_index = if snapshot.index <= self.log.committed {
            self.log.committed
        } else if self.log.match_term(snapshot.index, snapshot.term) {
            // We already hold the snapshot's last entry: keep the log, just commit.
            self.log.commit_to(snapshot.index);
            snapshot.index
        } else if snapshot.conf.check_invariants().is_err() || snapshot.conf.voters.is_empty() {
            return;
        } else {
            let index = snapshot.index;
            self.conf = snapshot.conf.clone();
            self.log.restore(snapshot);
            index
        };
        let outcome = AppendOutcome::Accepted { match_index };
        self.send(from, MessageBody::AppendResponse { tag, outcome });
    }
}
