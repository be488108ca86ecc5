//! Clients waiting on the driver: writes until their entry is applied, reads
//! until their ReadIndex is confirmed and applied. Every waiter has a
//! deadline; past it the client hears [`ClientError::Timeout`].

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use raft_core::{ConfChange, ConfChangeSingle, ConfState, Entry, RawNode, ReadState};

use super::requests::{ClientError, Reply, Request, WriteOutcome};
use crate::mvcc::{Applied, Store};
use crate::storage::WalStorage;

enum WriteReply {
    Kv(Reply<WriteOutcome>),
    Members(Reply<u64>),
}

struct PendingWrite {
    term: u64,
    deadline: Instant,
    reply: WriteReply,
}

struct PendingRead {
    deadline: Instant,
    /// Set once the leader confirmed the read: serve when applied reaches it.
    index: Option<u64>,
    reply: Reply<u64>,
}

pub(super) struct Waiters {
    timeout: Duration,
    /// See [`DriverOptions::promote_max_lag_entries`](super::DriverOptions).
    promote_max_lag: u64,
    /// Pending proposals by log index.
    writes: BTreeMap<u64, PendingWrite>,
    /// Pending linearizable reads by the id carried in their ReadIndex context.
    reads: HashMap<u64, PendingRead>,
    next_read_id: u64,
}

impl Waiters {
    pub(super) fn new(timeout: Duration, promote_max_lag: u64) -> Self {
        Waiters {
            timeout,
            promote_max_lag,
            writes: BTreeMap::new(),
            reads: HashMap::new(),
            next_read_id: 1,
        }
    }

    /// Hands `req` to the core, or answers it at once.
    pub(super) fn submit(&mut self, node: &mut RawNode<WalStorage>, req: Request) {
        let deadline = Instant::now() + self.timeout;
        match req {
            Request::Write { cmd, reply } => match node.propose(cmd.encode()) {
                Ok(at) => self.add_write(at.index, at.term, deadline, WriteReply::Kv(reply)),
                Err(e) => {
                    let _ = reply.send(Err(ClientError::from_core(e)));
                }
            },
            Request::ChangeMembers {
                change,
                context,
                reply,
            } => {
                let refusal = lagging_promotion(
                    node.conf_state(),
                    &change,
                    node.last_index(),
                    |id| node.match_index(id),
                    self.promote_max_lag,
                );
                if let Some(why) = refusal {
                    let _ = reply.send(Err(ClientError::Busy(why)));
                    return;
                }
                match node.propose_conf_change(change, context) {
                    Ok(at) => {
                        self.add_write(at.index, at.term, deadline, WriteReply::Members(reply))
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ClientError::from_core(e)));
                    }
                }
            }
            Request::ReadIndex { reply } => {
                let id = self.next_read_id;
                self.next_read_id += 1;
                match node.read_index(id.to_le_bytes().to_vec()) {
                    Ok(()) => {
                        self.reads.insert(
                            id,
                            PendingRead {
                                deadline,
                                index: None,
                                reply,
                            },
                        );
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ClientError::from_core(e)));
                    }
                }
            }
            Request::Snapshot { reply } => {
                // Handled by the driver loop itself; never routed here.
                let _ = reply.send(Err(ClientError::Invalid(
                    "misrouted snapshot request".into(),
                )));
            }
            Request::TransferLeader { to, reply } => {
                let _ = reply.send(node.transfer_leader(to).map_err(ClientError::from_core));
            }
        }
    }

    fn add_write(&mut self, index: u64, term: u64, deadline: Instant, reply: WriteReply) {
        // An older waiter at this index belongs to an entry that was replaced.
        if let Some(old) = self.writes.insert(
            index,
            PendingWrite {
                term,
                deadline,
                reply,
            },
        ) {
            old.reply.fail(ClientError::Overwritten);
        }
    }

    /// Entry `e` was applied with result `applied`: answer its proposer.
    pub(super) fn applied(&mut self, e: &Entry, applied: Applied) {
        let Some(w) = self.writes.remove(&e.index) else {
            return;
        };
        if w.term != e.term {
            w.reply.fail(ClientError::Overwritten);
            return;
        }
        match w.reply {
            WriteReply::Kv(reply) => {
                let _ = reply.send(Ok(WriteOutcome {
                    index: e.index,
                    term: e.term,
                    applied,
                }));
            }
            WriteReply::Members(reply) => {
                let _ = reply.send(Ok(e.index));
            }
        }
    }

    /// The leader confirmed these reads.
    pub(super) fn confirmed_reads(&mut self, states: &[ReadState]) {
        for rs in states {
            let Ok(id) = <[u8; 8]>::try_from(rs.ctx.as_slice()) else {
                continue;
            };
            if let Some(r) = self.reads.get_mut(&u64::from_le_bytes(id)) {
                r.index = Some(rs.index);
            }
        }
    }

    /// Answers confirmed reads whose index the state machine has applied.
    pub(super) fn serve_reads(&mut self, kv: &Store) {
        let applied = kv.applied_index();
        let ready: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.index.is_some_and(|i| i <= applied))
            .map(|(&id, _)| id)
            .collect();
        for id in ready {
            if let Some(r) = self.reads.remove(&id) {
                let _ = r.reply.send(Ok(applied));
            }
        }
    }

    /// Times out every waiter whose deadline passed.
    pub(super) fn expire(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .writes
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(&i, _)| i)
            .collect();
        for i in late {
            if let Some(w) = self.writes.remove(&i) {
                w.reply.fail(ClientError::Timeout);
            }
        }
        let late: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            if let Some(r) = self.reads.remove(&id) {
                let _ = r.reply.send(Err(ClientError::Timeout));
            }
        }
    }

    /// Answers every waiter with `err` (the node is stopping).
    pub(super) fn fail_all(&mut self, err: ClientError) {
        for (_, w) in std::mem::take(&mut self.writes) {
            w.reply.fail(err.clone());
        }
        for (_, r) in std::mem::take(&mut self.reads) {
            let _ = r.reply.send(Err(err.clone()));
        }
    }
}

impl WriteReply {
    fn fail(self, err: ClientError) {
        match self {
            WriteReply::Kv(r) => {
                let _ = r.send(Err(err));
            }
            WriteReply::Members(r) => {
                let _ = r.send(Err(err));
            }
        }
    }
}

/// Why `change` may not go ahead now: it promotes a learner whose log is more than
/// `max_lag` entries behind the leader's last index (`match_of` answers the leader's
/// view; `None` off the leader, where the core refuses the change anyway).
fn lagging_promotion(
    conf: &ConfState,
    change: &ConfChange,
    last_index: u64,
    match_of: impl Fn(u64) -> Option<u64>,
    max_lag: u64,
) -> Option<String> {
    change.changes.iter().find_map(|step| {
        let ConfChangeSingle::AddVoter(id) = *step else {
            return None;
        };
        if !conf.learners.contains(&id) {
            return None;
        }
        let matched = match_of(id)?;
        let behind = last_index.saturating_sub(matched);
        (behind > max_lag).then(|| {
            format!(
                "learner {id} has replicated up to index {matched} as far as the leader knows, \
                 {behind} entries behind its last index {last_index} (at most {max_lag} to be \
                 promoted); retry once it has caught up"
            )
        })
    })
}

#[cfg(test)]
mod promotion_tests {
    use super::*;

    fn conf() -> ConfState {
        let mut c = ConfState::with_voters([1, 2, 3]);
        c.learners.insert(4);
        c
    }

    fn promote(id: u64) -> ConfChange {
        ConfChange {
            changes: vec![ConfChangeSingle::AddVoter(id)],
        }
    }

    #[test]
    fn a_learner_far_behind_is_not_promoted() {
        let why = lagging_promotion(&conf(), &promote(4), 5_000, |_| Some(100), 1_000);
        assert!(why
            .unwrap()
            .contains("up to index 100 as far as the leader knows, 4900 entries behind"));
    }

    #[test]
    fn a_caught_up_learner_new_voters_and_followers_go_ahead() {
        assert_eq!(
            lagging_promotion(&conf(), &promote(4), 5_000, |_| Some(4_000), 1_000),
            None
        );
        // Not a learner: adding a new voter is not a promotion.
        assert_eq!(
            lagging_promotion(&conf(), &promote(5), 5_000, |_| Some(0), 1_000),
            None
        );
        // Off the leader nothing is known; the core refuses the change itself.
        assert_eq!(
            lagging_promotion(&conf(), &promote(4), 5_000, |_| None, 1_000),
            None
        );
        let remove = ConfChange {
            changes: vec![ConfChangeSingle::Remove(4)],
        };
        assert_eq!(
            lagging_promotion(&conf(), &remove, 5_000, |_| Some(0), 1_000),
            None
        );
    }
}
