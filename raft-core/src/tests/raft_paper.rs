//! One test per rule of the paper, named after its section. Each drives a small cluster
//! by hand through `Network`, which delivers messages and handles Readys synchronously.

use std::collections::BTreeMap;

use crate::*;

/// A hand-driven cluster: deliver messages explicitly, drop links, look at state.
pub(crate) struct Network {
    pub nodes: BTreeMap<u64, RawNode<MemStorage>>,
    pub applied: BTreeMap<u64, Vec<Entry>>,
    pub queue: Vec<Message>,
    pub cut: Vec<(u64, u64)>,
    /// The drivers' clock: advanced by one tick interval per `tick_all` round.
    pub clock_nanos: u64,
}

/// Tick interval of the test drivers.
pub(crate) const TICK_NANOS: u64 = 10_000_000;

impl Network {
    pub fn new(ids: &[u64]) -> Self {
        Self::with_config(ids, |_| {})
    }

    pub fn with_config(ids: &[u64], tweak: impl Fn(&mut Config)) -> Self {
        let mut nodes = BTreeMap::new();
        for &id in ids {
            let mut cfg = Config::new(id);
            cfg.tick_interval_nanos = TICK_NANOS;
            tweak(&mut cfg);
            nodes.insert(
                id,
                RawNode::new(cfg, MemStorage::new_bootstrap(ids.iter().copied())).unwrap(),
            );
        }
        Network {
            nodes,
            applied: BTreeMap::new(),
            queue: Vec::new(),
            cut: Vec::new(),
            clock_nanos: 0,
        }
    }

    pub fn node(&mut self, id: u64) -> &mut RawNode<MemStorage> {
        self.nodes.get_mut(&id).unwrap()
    }

    /// Handles every pending Ready; queues their messages.
    pub fn flush(&mut self) {
        for (id, node) in self.nodes.iter_mut() {
            while node.has_ready() {
                let rd = node.ready().unwrap();
                self.queue.extend(rd.messages);
                if let Some(s) = rd.snapshot {
                    node.storage_mut().apply_snapshot(s);
                }
                node.storage_mut().append(&rd.entries);
                if let Some(hs) = rd.hard_state {
                    node.storage_mut().set_hard_state(hs);
                }
                self.queue.extend(rd.persisted_messages);
                self.applied
                    .entry(*id)
                    .or_default()
                    .extend(rd.committed_entries);
                node.advance();
            }
        }
    }

    /// Delivers messages until the network is quiet.
    pub fn settle(&mut self) {
        for _ in 0..1000 {
            self.flush();
            if self.queue.is_empty() {
                return;
            }
            let msgs = std::mem::take(&mut self.queue);
            for m in msgs {
                if self.cut.contains(&(m.from, m.to)) || self.cut.contains(&(m.to, m.from)) {
                    continue;
                }
                if let Some(n) = self.nodes.get_mut(&m.to) {
                    n.step(m).unwrap();
                }
            }
        }
        panic!("network did not settle");
    }

    pub fn isolate(&mut self, id: u64) {
        let others: Vec<u64> = self.nodes.keys().copied().filter(|o| *o != id).collect();
        for o in others {
            self.cut.push((id, o));
        }
    }

    pub fn tick_all(&mut self, n: usize) {
        for _ in 0..n {
            self.clock_nanos += TICK_NANOS;
            for node in self.nodes.values_mut() {
                node.set_clock(self.clock_nanos);
                node.tick();
            }
            self.settle();
        }
    }

    pub fn elect(&mut self, id: u64) {
        self.node(id).campaign();
        self.settle();
        assert_eq!(
            self.node(id).role(),
            Role::Leader,
            "node {id} should have won"
        );
    }

    pub fn leaders(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.role() == Role::Leader)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn applied_data(&self, id: u64) -> Vec<Vec<u8>> {
        self.applied
            .get(&id)
            .map(|v| {
                v.iter()
                    .filter(|e| e.kind == EntryKind::Normal)
                    .map(|e| e.data.to_vec())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[test]
fn s5_2_a_node_starts_as_follower_and_times_out_into_an_election() {
    let mut net = Network::new(&[1, 2, 3]);
    assert!(net.nodes.values().all(|n| n.role() == Role::Follower));
    net.tick_all(25);
    assert_eq!(net.leaders().len(), 1);
    let leader = net.leaders()[0];
    let term = net.node(leader).term();
    assert!(net
        .nodes
        .values()
        .all(|n| n.term() == term && n.leader_id() == Some(leader)));
}

#[test]
fn s5_2_candidate_wins_with_majority_and_votes_once_per_term() {
    let mut net = Network::with_config(&[1, 2, 3], |c| {
        c.pre_vote = false;
        c.check_quorum = false;
    });
    net.node(1).campaign();
    net.node(2).campaign();
    net.settle();
    // Both asked in the same term; each voter votes once, so at most one won.
    assert!(net.leaders().len() <= 1);
    let t1 = net.node(1).term();
    assert_eq!(t1, net.node(2).term());
}

#[test]
fn s5_3_leader_replicates_and_commits_on_majority() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    let id = net.node(1).propose(b"x".to_vec()).unwrap();
    net.settle();
    assert_eq!(net.node(1).commit_index(), id.index, "two of three suffice");
    assert_eq!(net.applied_data(1), vec![b"x".to_vec()]);
    net.cut.clear();
    net.tick_all(3);
    assert_eq!(net.applied_data(3), vec![b"x".to_vec()]);
}

#[test]
fn s5_3_follower_truncates_conflicting_entries() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.settle();
    // Leader 1 appends entries only it sees.
    net.isolate(1);
    net.node(1).propose(b"lost1".to_vec()).unwrap();
    net.node(1).propose(b"lost2".to_vec()).unwrap();
    net.settle();
    // 2 becomes leader of a later term and commits something else.
    net.cut.clear();
    net.cut.push((1, 2));
    net.cut.push((1, 3));
    net.tick_all(25);
    let leader = net
        .leaders()
        .into_iter()
        .find(|l| *l != 1)
        .expect("2 or 3 leads");
    net.node(leader).propose(b"kept".to_vec()).unwrap();
    net.settle();
    net.cut.clear();
    net.tick_all(25);
    for id in [1, 2, 3] {
        assert_eq!(net.applied_data(id), vec![b"kept".to_vec()], "node {id}");
    }
}

#[test]
fn s5_4_1_election_restriction_rejects_stale_logs() {
    let mut net = Network::with_config(&[1, 2, 3], |c| {
        c.pre_vote = false;
        c.check_quorum = false;
    });
    net.elect(1);
    net.cut.push((1, 3));
    net.cut.push((2, 3));
    net.node(1).propose(b"a".to_vec()).unwrap();
    net.settle();
    net.cut.clear();
    net.cut.push((1, 2));
    net.cut.push((1, 3));
    // 3 lacks the committed entry: 2 refuses its vote.
    net.node(3).campaign();
    net.settle();
    assert_ne!(net.node(3).role(), Role::Leader);
    net.node(2).campaign();
    net.settle();
    assert_eq!(net.node(2).role(), Role::Leader);
}

#[test]
fn s5_4_2_leader_commits_previous_terms_only_through_its_own_entry() {
    let mut net = Network::with_config(&[1, 2, 3], |c| {
        c.pre_vote = false;
        c.check_quorum = false;
    });
    net.elect(1);
    let noop1 = net.node(1).commit_index();
    // 1 appends an entry that reaches only 2, then 1 is cut off before committing it.
    net.cut.push((1, 3));
    net.node(1).propose(b"old".to_vec()).unwrap();
    net.flush();
    let to2: Vec<Message> = net.queue.drain(..).filter(|m| m.to == 2).collect();
    for m in to2 {
        net.node(2).step(m).unwrap();
    }
    net.flush();
    net.queue.clear(); // 2's ack is lost
    assert_eq!(net.node(1).commit_index(), noop1);
    net.isolate(1);
    // 2 wins term 3 with the old entry and must commit it only via its own no-op.
    net.node(2).campaign();
    let before = net.node(2).commit_index();
    net.flush();
    assert_eq!(net.node(2).commit_index(), before);
    net.settle();
    assert_eq!(net.node(2).role(), Role::Leader);
    let last = net.node(2).last_index();
    assert_eq!(net.node(2).entry_term(last), Ok(net.node(2).term()));
    assert_eq!(net.node(2).commit_index(), last);
    assert_eq!(net.applied_data(2), vec![b"old".to_vec()]);
}

#[test]
fn s6_prevote_keeps_a_rejoining_node_from_disrupting() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    let term = net.node(1).term();
    net.isolate(3);
    net.tick_all(50);
    assert_eq!(net.node(3).term(), term, "PreVote never raised the term");
    net.cut.clear();
    net.tick_all(3);
    assert_eq!(net.node(1).role(), Role::Leader);
    assert_eq!(net.node(1).term(), term);
}

#[test]
fn s6_check_quorum_makes_a_cut_off_leader_step_down() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(1);
    net.tick_all(25);
    assert_ne!(net.node(1).role(), Role::Leader);
}

#[test]
fn s6_4_read_index_confirms_with_a_quorum() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).propose(b"w".to_vec()).unwrap();
    net.settle();
    let commit = net.node(1).commit_index();
    net.node(1).read_index(b"r1".to_vec()).unwrap();
    net.isolate(1);
    net.flush();
    let rd = net.node(1).ready().unwrap();
    assert!(rd.read_states.is_empty(), "not confirmed without a quorum");
    net.node(1).advance();
    net.queue.clear();
    net.cut.clear();
    net.tick_all(1);
    let rd_states: Vec<_> = net
        .nodes
        .get_mut(&1)
        .map(|n| n.pending_read_count())
        .into_iter()
        .collect();
    assert_eq!(rd_states, vec![0]);
    let _ = commit;
}

#[test]
fn s3_10_leadership_transfer() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).transfer_leader(3).unwrap();
    assert_eq!(
        net.node(1).propose(b"x".to_vec()),
        Err(Error::TransferInProgress)
    );
    net.settle();
    assert_eq!(net.node(3).role(), Role::Leader);
    assert_eq!(net.node(1).role(), Role::Follower);
}

#[test]
fn s4_membership_joint_change_and_auto_leave() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    // Node 4 joins with empty storage.
    net.nodes
        .insert(4, RawNode::new(Config::new(4), MemStorage::new()).unwrap());
    let cc = ConfChange {
        changes: vec![ConfChangeSingle::AddLearner(4)],
    };
    net.node(1).propose_conf_change(cc, Vec::new()).unwrap();
    net.tick_all(3);
    assert!(net.node(1).conf_state().learners.contains(&4));
    assert!(
        net.node(4).conf_state().learners.contains(&4),
        "joiner learned the config by snapshot"
    );
    let cc = ConfChange {
        changes: vec![ConfChangeSingle::AddVoter(4), ConfChangeSingle::Remove(1)],
    };
    net.node(1).propose_conf_change(cc, Vec::new()).unwrap();
    net.tick_all(5);
    let conf = ConfState::with_voters([2, 3, 4]);
    for id in [2, 3, 4] {
        assert_eq!(net.node(id).conf_state(), &conf, "node {id}");
    }
    net.tick_all(30);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], 1, "the removed leader stepped down");
}

#[test]
fn snapshot_brings_a_lagging_follower_up_to_date() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    for i in 0..10u8 {
        net.node(1).propose(vec![i]).unwrap();
    }
    net.settle();
    let meta = net.node(1).snapshot_meta_at_applied().unwrap();
    net.node(1).storage_mut().compact(meta.clone()).unwrap();
    net.cut.clear();
    net.tick_all(3);
    assert_eq!(net.node(3).commit_index(), net.node(1).commit_index());
    assert!(net.node(3).storage().snapshot_meta().index >= meta.index);
}

#[test]
fn messages_from_strangers_and_junk_do_not_panic() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    let junk = [
        MessageBody::AppendResponse {
            tag: 99,
            outcome: AppendOutcome::Accepted {
                match_index: 1 << 40,
            },
        },
        MessageBody::Append {
            prev: EntryId {
                index: 1 << 40,
                term: 1,
            },
            entries: vec![],
            leader_commit: u64::MAX,
            tag: 1,
        },
        MessageBody::Heartbeat {
            commit: u64::MAX,
            read_round: 7,
            tag: 1,
        },
        MessageBody::TimeoutNow,
        MessageBody::VoteResponse {
            pre_vote: false,
            granted: true,
            commit: EntryId {
                index: 1 << 40,
                term: 9,
            },
        },
    ];
    for body in junk {
        for term in [0, 1, 2, 1000] {
            for id in [1, 2] {
                let m = Message {
                    from: 77,
                    to: id,
                    term,
                    body: body.clone(),
                };
                net.node(id).step(m).unwrap();
            }
        }
    }
    net.flush();
    net.queue.clear();
}
