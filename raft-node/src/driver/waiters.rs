//! Clients waiting on the driver: writes until their entry is applied, reads
//! until their ReadIndex is confirmed and applied. Every waiter has a
//! deadline; past it the client hears [`ClientError::Timeout`].

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use raft_core::{ConfChange, ConfChangeSingle, ConfState, Entry, RawNode, ReadState, Storage};

use super::requests::{ClientError, Reply, Request, WriteOutcome};
use crate::mvcc::{Applied, Command, Once, RequestId, Store};

/// A client write: its command, request id (if any) and reply.
pub(super) type Write = (Command, Option<RequestId>, Reply<WriteOutcome>);

/// Encodes `cmd` for a proposal by this node; a request with an id carries
/// this node's wall clock (the request-id table's clock).
fn proposal(cmd: &Command, id: Option<RequestId>) -> Vec<u8> {
    cmd.encode_once(id.map(|id| Once {
        id,
        proposed_at_ms: super::clock::wall_ms(),
    }))
}

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
    /// Pending proposals by log index; several when a proposal reused the index
    /// of an older one that has not been resolved yet (see `add_write`).
    writes: BTreeMap<u64, Vec<PendingWrite>>,
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
    pub(super) fn submit<S: Storage>(&mut self, node: &mut RawNode<S>, req: Request) {
        let deadline = Instant::now() + self.timeout;
        match req {
            Request::Write { cmd, id, reply } => match node.propose(proposal(&cmd, id)) {
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

    /// Hands client writes to the core as one batch (one `propose_batch`): they get
    /// consecutive indexes of one term. If the core refuses the batch (not leader,
    /// uncommitted limit...), each write is proposed alone instead, so every client
    /// hears exactly what a lone proposal would have heard (e.g. the first writes
    /// may still fit under the uncommitted limit).
    pub(super) fn submit_writes<S: Storage>(&mut self, node: &mut RawNode<S>, writes: Vec<Write>) {
        if writes.len() == 1 {
            for (cmd, id, reply) in writes {
                self.submit(node, Request::Write { cmd, id, reply });
            }
            return;
        }
        let deadline = Instant::now() + self.timeout;
        let encoded: Vec<Vec<u8>> = writes
            .iter()
            .map(|(cmd, id, _)| proposal(cmd, *id))
            .collect();
        match node.propose_batch(encoded) {
            Ok(batch) => {
                debug_assert_eq!(batch.len(), writes.len() as u64);
                for (index, (_, _, reply)) in batch.indexes.zip(writes) {
                    self.add_write(index, batch.term, deadline, WriteReply::Kv(reply));
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, writes = writes.len(), "batch refused; proposing one by one");
                for (cmd, id, reply) in writes {
                    self.submit(node, Request::Write { cmd, id, reply });
                }
            }
        }
    }

    fn add_write(&mut self, index: u64, term: u64, deadline: Instant, reply: WriteReply) {
        // An older waiter at this index stays: that its entry left this node's log
        // does not prove it will never commit (another node holding it may still win
        // an election and commit it). Only the entry applied at the index decides.
        self.writes.entry(index).or_default().push(PendingWrite {
            term,
            deadline,
            reply,
        });
    }

    /// Entry `e` was applied with result `applied`: answer its proposer. Any
    /// waiter at this index whose entry had another term is now certainly not
    /// applied (the log holds exactly one entry per index once committed).
    #[cfg(test)]
    pub(super) fn applied(&mut self, e: &Entry, applied: Applied) {
        self.applied_at(e, (e.index, e.term), applied);
    }

    /// [`Waiters::applied`] for a result first produced by the entry at
    /// `first` = (index, term) (a retried request id): the proposer of `e`
    /// hears that entry's position.
    pub(super) fn applied_at(&mut self, e: &Entry, first: (u64, u64), applied: Applied) {
        let Some(waiting) = self.writes.remove(&e.index) else {
            return;
        };
        let mut applied = Some(applied);
        for w in waiting {
            if w.term != e.term {
                w.reply.fail(ClientError::Overwritten);
                continue;
            }
            match (w.reply, applied.take()) {
                (WriteReply::Kv(reply), Some(applied)) => {
                    let _ = reply.send(Ok(WriteOutcome {
                        index: first.0,
                        term: first.1,
                        applied,
                    }));
                }
                (WriteReply::Members(reply), _) => {
                    let _ = reply.send(Ok(e.index));
                }
                // Two waiters for one (index, term): impossible, as a leader
                // proposes each index once per term. Do not guess.
                (WriteReply::Kv(reply), None) => {
                    let _ = reply.send(Err(ClientError::Timeout));
                }
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
            .filter(|(_, ws)| ws.iter().any(|w| w.deadline <= now))
            .map(|(&i, _)| i)
            .collect();
        for i in late {
            let Some(waiting) = self.writes.remove(&i) else {
                continue;
            };
            let (late, keep): (Vec<_>, Vec<_>) =
                waiting.into_iter().partition(|w| w.deadline <= now);
            for w in late {
                w.reply.fail(ClientError::Timeout);
            }
            if !keep.is_empty() {
                self.writes.insert(i, keep);
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
        for w in std::mem::take(&mut self.writes).into_values().flatten() {
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
        if matched == 0 {
            // Not even the snapshot it starts from: not running, or never reached.
            // As a voter it would count toward every quorum while helping none.
            return Some(format!(
                "learner {id} has replicated nothing yet as far as the leader knows; \
                 start it and retry once it has caught up"
            ));
        }
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
        // A learner that never answered is refused however short the log is.
        let why = lagging_promotion(&conf(), &promote(4), 5, |_| Some(0), 1_000);
        assert!(why
            .unwrap()
            .contains("learner 4 has replicated nothing yet"));
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

/// The five-node story of issue 15: an old leader's uncommitted entry is
/// displaced from its log and its index reused by its own later proposal, yet
/// another node that holds the old entry wins the next term and commits it.
#[cfg(test)]
mod reused_index_tests {
    use std::collections::BTreeMap;

    use raft_core::{Config, EntryKind, MemStorage, Message, RawNode, Role};

    use super::*;

    struct Cluster {
        nodes: BTreeMap<u64, RawNode<MemStorage>>,
        applied: BTreeMap<u64, Vec<Entry>>,
    }

    impl Cluster {
        fn new(n: u64) -> Self {
            let ids: Vec<u64> = (1..=n).collect();
            let nodes = ids
                .iter()
                .map(|&id| {
                    let s = MemStorage::new_bootstrap(ids.iter().copied());
                    (id, RawNode::new(Config::new(id), s).unwrap())
                })
                .collect();
            Cluster {
                nodes,
                applied: BTreeMap::new(),
            }
        }

        fn node(&mut self, id: u64) -> &mut RawNode<MemStorage> {
            self.nodes.get_mut(&id).unwrap()
        }

        /// Handles Readys and delivers the messages `allow` lets through (the
        /// others are lost) until nothing moves.
        fn run(&mut self, allow: impl Fn(&Message) -> bool) {
            for _ in 0..200 {
                let mut out = Vec::new();
                for (id, n) in self.nodes.iter_mut() {
                    while n.has_ready() {
                        let rd = n.ready().unwrap();
                        out.extend(rd.messages);
                        if let Some(hs) = rd.hard_state {
                            n.storage_mut().set_hard_state(hs);
                        }
                        n.storage_mut().append(&rd.entries);
                        out.extend(rd.persisted_messages);
                        self.applied
                            .entry(*id)
                            .or_default()
                            .extend(rd.committed_entries);
                        n.advance();
                    }
                }
                out.retain(|m| allow(m));
                if out.is_empty() {
                    return;
                }
                for m in out {
                    let to = m.to;
                    self.node(to).step(m).unwrap();
                }
            }
            panic!("did not settle");
        }

        fn tick(&mut self, ids: &[u64], allow: impl Fn(&Message) -> bool + Copy) {
            for &id in ids {
                self.node(id).tick();
            }
            self.run(allow);
        }
    }

    fn within(group: &'static [u64]) -> impl Fn(&Message) -> bool + Copy {
        move |m| group.contains(&m.from) && group.contains(&m.to)
    }

    fn votes_only(m: &Message) -> bool {
        matches!(
            m.body,
            raft_core::MessageBody::RequestVote { .. }
                | raft_core::MessageBody::VoteResponse { .. }
        )
    }

    fn write(w: &mut Waiters, at: raft_core::EntryId) -> super::super::Pending<WriteOutcome> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let deadline = Instant::now() + Duration::from_secs(60);
        w.add_write(at.index, at.term, deadline, WriteReply::Kv(reply));
        rx
    }

    #[test]
    fn a_displaced_entry_that_still_commits_is_not_reported_as_not_applied() {
        let mut c = Cluster::new(5);
        let all = |_: &Message| true;
        c.node(1).campaign();
        c.run(all);
        c.tick(&[1, 2, 3, 4, 5], all);
        assert_eq!(c.node(1).role(), Role::Leader);
        let t1 = c.node(1).term();

        // Term t1: leader 1 proposes A, B, X; only node 3 receives them.
        let mut w = Waiters::new(Duration::from_secs(60), 1_000);
        let mut pending = Vec::new();
        for data in [b"A", b"B", b"X"] {
            let at = c.node(1).propose(data.to_vec()).unwrap();
            pending.push((at, write(&mut w, at)));
        }
        c.run(within(&[1, 3]));
        let x_at = pending[2].0;
        assert!(
            c.node(1).commit_index() < pending[0].0.index,
            "not committed"
        );

        // Term t2: node 2 wins with 4 and 5; only node 1 hears its no-op, which
        // replaces A, B and X in node 1's log.
        for _ in 0..10 {
            c.tick(&[2, 4, 5], within(&[2, 4, 5]));
        }
        if c.nodes
            .values()
            .all(|n| n.role() != Role::Leader || n.id() == 1)
        {
            c.node(2).campaign();
        }
        c.run(|m| within(&[2, 4, 5])(m) && votes_only(m));
        let l2 = [2, 4, 5]
            .into_iter()
            .find(|&id| c.nodes[&id].role() == Role::Leader)
            .expect("a leader of term t2");
        // Its first append was lost; the next heartbeat round brings it to node 1.
        c.tick(&[l2], move |m| {
            m.from == l2 && m.to == 1 || m.from == 1 && m.to == l2
        });
        assert!(c.node(1).last_index() < x_at.index, "X left node 1's log");

        // Term t3: node 1 wins with 4 and 5 (only votes reach them) and reuses
        // X's index for a new proposal Y.
        c.node(1).campaign();
        c.run(|m| (within(&[1, 4, 5])(m)) && votes_only(m));
        assert_eq!(c.node(1).role(), Role::Leader);
        let y_at = c.node(1).propose(b"Y".to_vec()).unwrap();
        assert_eq!(y_at.index, x_at.index, "Y reuses X's index");
        assert!(y_at.term > t1);
        let mut y_rx = write(&mut w, y_at);
        c.run(|_| false);
        assert!(
            pending[2].1.try_recv().is_err(),
            "X's client must not hear anything yet: X may still commit"
        );

        // Term t4: node 3, which holds X, wins with 4 and 5 and commits X.
        for _ in 0..2 {
            c.node(3).campaign();
            c.run(|m| within(&[3, 4, 5])(m));
        }
        assert_eq!(c.node(3).role(), Role::Leader);
        c.tick(&[3, 4, 5], within(&[3, 4, 5]));
        assert!(c.node(3).commit_index() >= x_at.index);

        // Everyone reconnects; node 1 applies X at its index and answers.
        for _ in 0..3 {
            c.tick(&[1, 2, 3, 4, 5], all);
        }
        let applied = c.applied.get(&1).cloned().unwrap_or_default();
        let x = applied
            .iter()
            .find(|e| e.index == x_at.index)
            .expect("node 1 applied the index");
        assert_eq!(
            (x.term, x.kind.clone(), &x.data[..]),
            (t1, EntryKind::Normal, &b"X"[..])
        );
        for e in &applied {
            w.applied(e, Applied::Nothing);
        }
        for (at, mut rx) in pending {
            let got = rx.try_recv().expect("answered");
            assert_eq!(
                got.map(|o| o.index),
                Ok(at.index),
                "entry {at:?} was applied"
            );
        }
        assert_eq!(y_rx.try_recv().unwrap(), Err(ClientError::Overwritten));
    }
}

/// Client writes drained in one loop iteration go to the core as one batch.
#[cfg(test)]
mod batch_tests {
    use raft_core::{Config, MemStorage, RawNode, Role};

    use super::super::Pending;
    use super::*;

    fn leader() -> RawNode<MemStorage> {
        let mut n = RawNode::new(Config::new(1), MemStorage::new_bootstrap([1])).unwrap();
        n.campaign();
        assert_eq!(n.role(), Role::Leader);
        while n.has_ready() {
            let rd = n.ready().unwrap();
            n.storage_mut().append(&rd.entries);
            if let Some(hs) = rd.hard_state {
                n.storage_mut().set_hard_state(hs);
            }
            n.advance();
        }
        n
    }

    type Writes = Vec<Write>;

    fn writes(n: usize) -> (Writes, Vec<Pending<WriteOutcome>>) {
        (0..n)
            .map(|i| {
                let (reply, rx) = tokio::sync::oneshot::channel();
                ((Command::put(format!("k{i}"), "v"), None, reply), rx)
            })
            .unzip()
    }

    #[test]
    fn a_batch_of_writes_waits_at_consecutive_indexes_in_order() {
        let mut node = leader();
        let mut w = Waiters::new(Duration::from_secs(60), 1_000);
        let first = node.last_index() + 1;
        let (batch, _pending) = writes(3);
        let cmds: Vec<Vec<u8>> = batch.iter().map(|(c, _, _)| c.encode()).collect();
        w.submit_writes(&mut node, batch);
        assert_eq!(node.last_index(), first + 2);
        let waiting: Vec<(u64, u64)> = w
            .writes
            .iter()
            .flat_map(|(i, ws)| ws.iter().map(move |p| (*i, p.term)))
            .collect();
        let term = node.term();
        assert_eq!(
            waiting,
            vec![(first, term), (first + 1, term), (first + 2, term)]
        );
        // Each index holds the command of the write waiting there.
        let rd = node.ready().unwrap();
        let data: Vec<Vec<u8>> = rd.entries.iter().map(|e| e.data.to_vec()).collect();
        assert_eq!(data, cmds);
        node.advance();
    }

    #[test]
    fn a_refused_batch_answers_every_write() {
        let mut follower =
            RawNode::new(Config::new(2), MemStorage::new_bootstrap([1, 2, 3])).unwrap();
        let mut w = Waiters::new(Duration::from_secs(60), 1_000);
        let (batch, pending) = writes(2);
        w.submit_writes(&mut follower, batch);
        assert!(w.writes.is_empty());
        for mut rx in pending {
            assert!(
                matches!(rx.try_recv(), Ok(Err(_))),
                "refused, not left waiting"
            );
        }
    }
}
