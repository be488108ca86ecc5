//! Scenario tests for the engineering rules around the paper: the persistence contract,
//! batching, flow control, backtracking, stale responses and lease reads.

use super::raft_paper::Network;
use crate::*;

fn single_node() -> RawNode<MemStorage> {
    let mut n = RawNode::new(Config::new(1), MemStorage::new_bootstrap([1])).unwrap();
    n.campaign();
    assert_eq!(n.role(), Role::Leader);
    n
}

fn persist(n: &mut RawNode<MemStorage>, rd: &Ready) {
    if let Some(s) = &rd.snapshot {
        n.storage_mut().apply_snapshot(s.clone());
    }
    n.storage_mut().append(&rd.entries);
    if let Some(hs) = rd.hard_state {
        n.storage_mut().set_hard_state(hs);
    }
}

#[test]
fn leader_counts_itself_only_for_persisted_entries() {
    let mut n = single_node();
    let rd = n.ready().unwrap();
    persist(&mut n, &rd);
    n.advance();
    let rd = n.ready().unwrap();
    n.advance();
    drop(rd);
    let id = n.propose(b"a".to_vec()).unwrap();
    let rd = n.ready().unwrap();
    assert_eq!(rd.entries.len(), 1);
    assert!(
        rd.committed_entries.is_empty(),
        "not committed before the leader's own persist"
    );
    assert!(n.commit_index() < id.index);
    persist(&mut n, &rd);
    n.advance();
    assert_eq!(
        n.commit_index(),
        id.index,
        "a single voter commits once persisted"
    );
    let rd = n.ready().unwrap();
    assert_eq!(rd.committed_entries.last().map(|e| e.index), Some(id.index));
    n.advance();
}

#[test]
fn proposals_between_two_readys_are_batched() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    for i in 0..5u8 {
        net.node(1).propose(vec![i]).unwrap();
    }
    let rd = net.node(1).ready().unwrap();
    assert_eq!(rd.entries.len(), 5);
    let appends: Vec<_> = rd
        .messages
        .iter()
        .filter(|m| matches!(&m.body, MessageBody::Append { entries, .. } if entries.len() == 5))
        .collect();
    assert_eq!(
        appends.len(),
        2,
        "one append per follower carrying the whole batch"
    );
    persist(net.node(1), &rd);
    net.node(1).advance();
}

#[test]
fn followers_ack_and_vote_only_after_persist() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).propose(b"x".to_vec()).unwrap();
    let rd = net.node(1).ready().unwrap();
    assert!(rd
        .messages
        .iter()
        .all(|m| matches!(m.body, MessageBody::Append { .. })));
    let appends = rd.messages.clone();
    persist(net.node(1), &rd);
    net.node(1).advance();
    for m in appends {
        let to = m.to;
        net.node(to).step(m).unwrap();
        let rd = net.node(to).ready().unwrap();
        assert!(rd.messages.is_empty());
        assert!(rd
            .persisted_messages
            .iter()
            .any(|m| matches!(m.body, MessageBody::AppendResponse { .. })));
        assert_eq!(rd.entries.len(), 1);
        net.node(to).advance();
    }
    // A real vote waits for the persisted vote; a PreVote does not.
    let mut net = Network::with_config(&[1, 2, 3], |c| c.check_quorum = false);
    net.node(1).campaign();
    let rd = net.node(1).ready().unwrap();
    assert!(rd
        .messages
        .iter()
        .all(|m| matches!(m.body, MessageBody::RequestVote { pre_vote: true, .. })));
    let prevotes = rd.messages.clone();
    net.node(1).advance();
    net.node(2).step(prevotes[0].clone()).unwrap();
    let rd = net.node(2).ready().unwrap();
    assert_eq!(rd.messages.len(), 1, "PreVote answers need no persist");
    assert!(rd.hard_state.is_none());
    net.node(2).advance();
    let mut net = Network::with_config(&[1, 2, 3], |c| {
        c.pre_vote = false;
        c.check_quorum = false;
    });
    net.node(1).campaign();
    let rd = net.node(1).ready().unwrap();
    assert!(rd.messages.is_empty());
    assert_eq!(rd.hard_state.map(|h| h.vote), Some(Some(1)));
    let req = rd.persisted_messages[0].clone();
    net.node(1).advance();
    let to = req.to;
    net.node(to).step(req).unwrap();
    let rd = net.node(to).ready().unwrap();
    assert!(rd.messages.is_empty());
    assert_eq!(rd.hard_state.map(|h| h.vote), Some(Some(1)));
    assert!(matches!(
        rd.persisted_messages[0].body,
        MessageBody::VoteResponse { granted: true, .. }
    ));
    net.node(to).advance();
}

#[test]
fn pipelining_respects_the_inflight_window_and_message_size() {
    let mut net = Network::with_config(&[1, 2], |c| {
        c.max_inflight_msgs = 2;
        c.max_size_per_msg_bytes = 1;
    });
    net.elect(1);
    net.settle();
    for i in 0..6u8 {
        net.node(1).propose(vec![i; 10]).unwrap();
    }
    let rd = net.node(1).ready().unwrap();
    let appends: Vec<usize> = rd
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::Append { entries, .. } => Some(entries.len()),
            _ => None,
        })
        .collect();
    assert_eq!(
        appends,
        vec![1, 1],
        "two single-entry appends, then the window is full"
    );
    persist(net.node(1), &rd);
    net.node(1).advance();
    net.queue.extend(rd.messages);
    net.settle();
    assert_eq!(net.node(2).last_index(), net.node(1).last_index());
}

#[test]
fn uncommitted_bytes_cap_refuses_proposals() {
    let mut net = Network::with_config(&[1, 2, 3], |c| c.max_uncommitted_entries_bytes = 200);
    net.elect(1);
    net.isolate(1);
    let mut refused = false;
    for _ in 0..10 {
        if net.node(1).propose(vec![0; 50]) == Err(Error::UncommittedLimitExceeded) {
            refused = true;
            break;
        }
    }
    assert!(refused);
    net.cut.clear();
    net.tick_all(3);
    assert!(
        net.node(1).propose(vec![0; 50]).is_ok(),
        "room again once committed"
    );
}

#[test]
fn fast_backtracking_skips_a_whole_conflicting_term() {
    let mut net = Network::with_config(&[1, 2, 3], |c| {
        c.pre_vote = false;
        c.check_quorum = false;
    });
    net.elect(1);
    // Leader 1 writes 50 entries nobody else gets.
    net.isolate(1);
    for i in 0..50u8 {
        net.node(1).propose(vec![i]).unwrap();
    }
    net.settle();
    // 2 takes over and writes 5 entries with 3.
    net.cut = vec![(1, 2), (1, 3)];
    net.elect(2);
    for i in 0..5u8 {
        net.node(2).propose(vec![i]).unwrap();
    }
    net.settle();
    net.cut.clear();
    // Count the append rejections 1 sends before matching.
    let mut rejections = 0;
    for _ in 0..20 {
        net.node(2).tick();
        net.flush();
        for m in &net.queue {
            if matches!(
                m.body,
                MessageBody::AppendResponse {
                    outcome: AppendOutcome::Rejected { .. },
                    ..
                }
            ) {
                rejections += 1;
            }
        }
        let msgs = std::mem::take(&mut net.queue);
        for m in msgs {
            let to = m.to;
            net.node(to).step(m).unwrap();
        }
    }
    net.settle();
    assert_eq!(net.node(1).last_index(), net.node(2).last_index());
    assert!(
        rejections <= 2,
        "one rejection names the whole conflicting term ({rejections})"
    );
}

#[test]
fn stale_responses_for_a_removed_then_readded_node_are_ignored() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.node(1).propose(b"a".to_vec()).unwrap();
    net.settle();
    // Capture an ack from 3 for the current progress.
    net.node(1).propose(b"b".to_vec()).unwrap();
    net.flush();
    let to3: Vec<Message> = net.queue.iter().filter(|m| m.to == 3).cloned().collect();
    net.queue.retain(|m| m.to != 3);
    net.settle();
    for m in to3 {
        net.node(3).step(m).unwrap();
    }
    let rd = net.node(3).ready().unwrap();
    let stale_ack = rd.persisted_messages[0].clone();
    persist(net.node(3), &rd);
    net.node(3).advance();
    // Remove 3 and add it back as a learner: a fresh progress with a new tag.
    let rm = ConfChange {
        changes: vec![ConfChangeSingle::Remove(3)],
    };
    net.node(1).propose_conf_change(rm, vec![]).unwrap();
    net.tick_all(3);
    let add = ConfChange {
        changes: vec![ConfChangeSingle::AddLearner(3)],
    };
    net.cut = vec![(1, 3)];
    net.node(1).propose_conf_change(add, vec![]).unwrap();
    net.settle();
    assert!(net.node(1).conf_state().learners.contains(&3));
    let before = net
        .node(1)
        .progress
        .get(&3)
        .cloned()
        .expect("progress of 3");
    net.node(1).step(stale_ack).unwrap();
    let after = net.node(1).progress.get(&3).expect("progress of 3");
    assert_eq!(before.match_index, after.match_index, "stale ack ignored");
    assert_eq!(after.match_index, 0);
}

#[test]
fn read_index_waits_for_a_commit_in_the_leaders_term() {
    let mut net = Network::new(&[1, 2, 3]);
    net.node(1).campaign();
    // Let the election finish but hold back the append acks.
    for _ in 0..4 {
        net.flush();
        let msgs = std::mem::take(&mut net.queue);
        for m in msgs {
            if !matches!(m.body, MessageBody::AppendResponse { .. }) {
                let to = m.to;
                net.node(to).step(m).unwrap();
            }
        }
    }
    assert_eq!(net.node(1).role(), Role::Leader);
    net.node(1).read_index(b"r".to_vec()).unwrap();
    assert_eq!(net.node(1).pending_read_count(), 1);
    net.queue.clear();
    net.tick_all(2);
    assert_eq!(net.node(1).pending_read_count(), 0);
    let reads: Vec<_> = net.applied.get(&1).map(|v| v.len()).into_iter().collect();
    assert!(!reads.is_empty());
    assert_eq!(
        net.node(2).read_index(vec![]),
        Err(Error::NotLeader {
            leader_hint: Some(1)
        })
    );
}

#[test]
fn lease_reads_are_immediate_when_enabled() {
    let mut net = Network::with_config(&[1, 2, 3], |c| c.lease_reads = true);
    // Restarted nodes refuse votes for an election timeout (they may have granted a
    // lease just before): an immediate campaign fails, a later one succeeds.
    net.node(1).campaign();
    net.settle();
    assert_ne!(net.node(1).role(), Role::Leader);
    net.tick_all(30);
    let l = net.leaders()[0];
    net.tick_all(1);
    net.node(l).read_index(b"r".to_vec()).unwrap();
    let rd = net.node(l).ready().unwrap();
    assert_eq!(
        rd.read_states.len(),
        1,
        "a quorum echoed a recent heartbeat"
    );
    net.node(l).advance();
    // Cut off, the lease runs out before anyone else could be elected.
    net.isolate(l);
    for _ in 0..8 {
        net.clock_nanos += super::raft_paper::TICK_NANOS;
        let now = net.clock_nanos;
        net.node(l).set_clock(now);
        net.node(l).tick();
        net.settle();
    }
    net.node(l).read_index(b"s".to_vec()).unwrap();
    let rd = net.node(l).ready().unwrap();
    assert!(
        rd.read_states.is_empty(),
        "lease expired: falls back to ReadIndex"
    );
    net.node(l).advance();
}

#[test]
fn a_leader_stalled_longer_than_an_election_timeout_serves_no_lease_read() {
    use super::raft_paper::TICK_NANOS;
    let mut net = Network::with_config(&[1, 2, 3], |c| c.lease_reads = true);
    net.tick_all(30);
    let l = net.leaders()[0];
    net.tick_all(1);
    net.node(l).read_index(b"before".to_vec()).unwrap();
    let rd = net.node(l).ready().unwrap();
    assert_eq!(rd.read_states.len(), 1, "the lease holds before the stall");
    persist(net.node(l), &rd);
    net.node(l).advance();
    let served_at = rd.read_states[0].index;
    // The leader stalls (a long fsync, CPU starvation): no tick, no message, for three
    // election timeouts of real time. The others elect a leader and commit a write.
    net.isolate(l);
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&id| id != l).collect();
    for _ in 0..30 {
        net.clock_nanos += TICK_NANOS;
        let now = net.clock_nanos;
        for &o in &others {
            net.node(o).set_clock(now);
            net.node(o).tick();
        }
        net.settle();
    }
    let new_leader = others
        .iter()
        .copied()
        .find(|&o| net.nodes[&o].role() == Role::Leader)
        .expect("the others elected a leader");
    let w = net.node(new_leader).propose(b"w".to_vec()).unwrap();
    net.settle();
    assert!(net.node(new_leader).commit_index() >= w.index);
    // The old leader resumes. Its driver dropped the ticks it missed: one tick, and the
    // clock shows the real time. A read arrives before any message from the others.
    let now = net.clock_nanos;
    net.node(l).set_clock(now);
    net.node(l).tick();
    assert_eq!(net.node(l).role(), Role::Leader, "it does not know yet");
    net.node(l).read_index(b"after".to_vec()).unwrap();
    let rd = net.node(l).ready().unwrap();
    assert!(
        rd.read_states.is_empty(),
        "a stalled leader served a lease read at index {} (it served {served_at} before) \
         while leader {new_leader} had committed {}",
        rd.read_states.first().map_or(0, |r| r.index),
        w.index
    );
    persist(net.node(l), &rd);
    net.node(l).advance();
}

#[test]
fn lease_reads_need_a_clock() {
    let mut cfg = Config::new(1);
    cfg.lease_reads = true;
    assert!(RawNode::new(cfg.clone(), MemStorage::new_bootstrap([1])).is_err());
    cfg.tick_interval_nanos = 1;
    assert!(RawNode::new(cfg, MemStorage::new_bootstrap([1])).is_ok());
}

#[test]
fn restart_recovers_configuration_and_hard_state() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    let cc = ConfChange {
        changes: vec![ConfChangeSingle::AddLearner(9)],
    };
    net.node(1).propose_conf_change(cc, vec![]).unwrap();
    net.tick_all(2);
    let node = net.nodes.remove(&2).unwrap();
    let (term, commit, applied) = (node.term(), node.commit_index(), node.applied_index());
    let mut cfg = Config::new(2);
    cfg.applied_index = applied;
    let restarted = RawNode::new(cfg, node.into_storage()).unwrap();
    assert_eq!(restarted.term(), term);
    assert_eq!(restarted.commit_index(), commit);
    assert!(restarted.conf_state().learners.contains(&9));
}

#[test]
fn a_leader_elected_in_this_batch_speaks_only_after_persisting_its_vote() {
    let mut n = RawNode::new(Config::new(1), MemStorage::new_bootstrap([1])).unwrap();
    let cc = ConfChange {
        changes: vec![ConfChangeSingle::AddLearner(2)],
    };
    n.campaign();
    let rd = n.ready().unwrap();
    persist(&mut n, &rd);
    n.advance();
    n.propose_conf_change(cc, vec![]).unwrap();
    for _ in 0..3 {
        let rd = n.ready().unwrap();
        persist(&mut n, &rd);
        n.advance();
    }
    assert!(n.conf_state().learners.contains(&2));
    // Step down (higher term seen), then win again alone within one batch.
    n.step(Message {
        from: 2,
        to: 1,
        term: 50,
        body: MessageBody::HeartbeatResponse {
            read_round: 0,
            tag: 0,
        },
    })
    .unwrap();
    n.campaign();
    assert_eq!(n.role(), Role::Leader);
    let rd = n.ready().unwrap();
    assert_eq!(rd.hard_state.map(|h| (h.term, h.vote)), Some((51, Some(1))));
    assert!(
        rd.messages.is_empty(),
        "nothing may leave before the new vote is durable"
    );
    assert!(rd
        .persisted_messages
        .iter()
        .any(|m| m.to == 2 && m.term == 51));
    persist(&mut n, &rd);
    n.advance();
}

#[test]
fn a_read_starts_its_heartbeat_round_without_waiting_for_a_tick() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.settle();
    assert!(!net.node(1).has_ready());
    net.node(1).read_index(b"now".to_vec()).unwrap();
    assert!(
        net.node(1).has_ready(),
        "the read's round must go out at once, not at the next heartbeat tick"
    );
    net.settle();
    assert_eq!(
        net.node(1).pending_read_count(),
        0,
        "confirmed by a quorum without any tick"
    );
}

/// Issue 15: a membership change that removes the leader, then every removed node is
/// stopped at once, the moment the leader steps down. The commit of the change must
/// be known to the new configuration by then, or its next leader keeps counting
/// quorums of a configuration that is gone.
#[test]
fn removing_the_leader_then_stopping_every_removed_node_does_not_stall() {
    use super::raft_paper::TICK_NANOS;
    let mut net = Network::new(&[1, 2, 3]);
    for id in [4, 5] {
        let mut cfg = Config::new(id);
        cfg.tick_interval_nanos = TICK_NANOS;
        net.nodes
            .insert(id, RawNode::new(cfg, MemStorage::new()).unwrap());
    }
    net.elect(1);
    let learners = ConfChange {
        changes: vec![
            ConfChangeSingle::AddLearner(4),
            ConfChangeSingle::AddLearner(5),
        ],
    };
    net.node(1).propose_conf_change(learners, vec![]).unwrap();
    net.tick_all(3);
    assert!(net
        .nodes
        .values()
        .all(|n| n.applied_index() == net.nodes[&1].applied_index()));
    // C_old = {1,2,3}, C_new = {3,4,5}: the new members are no quorum of the old.
    let swap = ConfChange {
        changes: vec![
            ConfChangeSingle::AddVoter(4),
            ConfChangeSingle::AddVoter(5),
            ConfChangeSingle::Remove(1),
            ConfChangeSingle::Remove(2),
        ],
    };
    net.node(1).propose_conf_change(swap, vec![]).unwrap();
    // Deliver everything, except that the network loses what the leader sends in the
    // batch where it applies C_new (the appends carrying its commit).
    let mut lost_commit = false;
    for _ in 0..200 {
        for (id, node) in net.nodes.iter_mut() {
            while node.has_ready() {
                let rd = node.ready().unwrap();
                let applies_c_new = *id == 1
                    && rd.committed_entries.iter().any(
                        |e| matches!(&e.kind, EntryKind::ConfChange(cc) if cc.changes.is_empty()),
                    );
                if applies_c_new {
                    lost_commit = true;
                } else {
                    net.queue.extend(rd.messages);
                }
                if let Some(s) = &rd.snapshot {
                    node.storage_mut().apply_snapshot(s.clone());
                }
                node.storage_mut().append(&rd.entries);
                if let Some(hs) = rd.hard_state {
                    node.storage_mut().set_hard_state(hs);
                }
                net.queue.extend(rd.persisted_messages);
                node.advance();
            }
        }
        if lost_commit && net.node(1).role() != Role::Leader {
            break;
        }
        if net.queue.is_empty() {
            net.tick_all(1);
            continue;
        }
        for m in std::mem::take(&mut net.queue) {
            let to = m.to;
            net.node(to).step(m).unwrap();
        }
    }
    assert!(lost_commit, "the leader applied C_new");
    assert_ne!(
        net.node(1).role(),
        Role::Leader,
        "the removed leader stepped down"
    );
    // The operator stops every removed node the moment the leader steps down.
    net.isolate(1);
    net.isolate(2);
    net.queue.clear();
    let mut leader = None;
    for _ in 0..100 {
        net.clock_nanos += TICK_NANOS;
        let now = net.clock_nanos;
        for id in [3, 4, 5] {
            net.node(id).set_clock(now);
            net.node(id).tick();
        }
        net.settle();
        leader = [3, 4, 5]
            .into_iter()
            .find(|&id| net.nodes[&id].role() == Role::Leader);
        if leader.is_some() {
            break;
        }
    }
    let leader = leader.expect("C_new elected a leader");
    let w = net.node(leader).propose(b"after".to_vec()).unwrap();
    net.tick_all(5);
    assert!(
        net.nodes[&leader].commit_index() >= w.index,
        "the new configuration {{3,4,5}} cannot commit without the stopped nodes: \
         leader {leader} commit {} < {}, applied conf {:?}",
        net.nodes[&leader].commit_index(),
        w.index,
        net.nodes[&leader].conf_state()
    );
}

/// A heartbeat answer while the in-flight window is full frees one slot (as etcd
/// does) instead of dropping a replicating follower back to Probe on every heartbeat.
#[test]
fn a_heartbeat_answer_with_a_full_window_keeps_the_follower_replicating() {
    let mut net = Network::with_config(&[1, 2], |c| {
        c.max_inflight_msgs = 2;
        c.max_size_per_msg_bytes = 1;
    });
    net.elect(1);
    net.tick_all(1);
    // Fill the window; the appends are lost on the way (acks late under load).
    for i in 0..4u8 {
        net.node(1).propose(vec![i; 10]).unwrap();
    }
    let rd = net.node(1).ready().unwrap();
    let appends = rd
        .messages
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Append { .. }))
        .count();
    assert_eq!(appends, 2, "the window holds two appends");
    persist(net.node(1), &rd);
    net.node(1).advance();
    let tag = match rd.messages[0].body {
        MessageBody::Append { tag, .. } => tag,
        _ => unreachable!(),
    };
    let term = net.node(1).term();
    net.node(1)
        .step(Message {
            from: 2,
            to: 1,
            term,
            body: MessageBody::HeartbeatResponse { read_round: 0, tag },
        })
        .unwrap();
    let rd = net.node(1).ready().unwrap();
    let sent: Vec<(u64, usize)> = rd
        .messages
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::Append { prev, entries, .. } => Some((prev.index, entries.len())),
            _ => None,
        })
        .collect();
    persist(net.node(1), &rd);
    net.node(1).advance();
    let last = net.node(1).last_index();
    assert_eq!(
        sent,
        vec![(last - 2, 1)],
        "one slot freed: the next entry goes out, pipelined after the lost ones \
         (a drop to Probe would resend from the match point)"
    );
}

#[test]
fn propose_batch_appends_consecutive_entries_in_one_append_per_follower() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    let before = net.node(1).last_index();
    net.node(1).propose(b"single".to_vec()).unwrap();
    let batch = net
        .node(1)
        .propose_batch((0..100u8).map(|i| vec![i; 3]))
        .unwrap();
    assert_eq!(batch.term, net.node(1).term());
    assert_eq!(batch.indexes, before + 2..before + 102);
    assert_eq!(batch.len(), 100);
    assert_eq!(
        batch.last(),
        Some(EntryId {
            index: before + 101,
            term: batch.term
        })
    );
    assert_eq!(batch.ids().count(), 100);
    let rd = net.node(1).ready().unwrap();
    assert_eq!(
        rd.entries.len(),
        101,
        "the batch joins the earlier proposal"
    );
    let appends = rd
        .messages
        .iter()
        .filter(|m| matches!(&m.body, MessageBody::Append { entries, .. } if entries.len() == 101))
        .count();
    assert_eq!(appends, 2, "one append per follower");
    net.queue.extend(rd.messages.iter().cloned());
    net.queue.extend(rd.persisted_messages.iter().cloned());
    let applied = rd.committed_entries.iter().cloned();
    net.applied.entry(1).or_default().extend(applied);
    persist(net.node(1), &rd);
    net.node(1).advance();
    net.settle();
    net.tick_all(1);
    for id in [1, 2, 3] {
        let data = net.applied_data(id);
        assert_eq!(data.len(), 101, "node {id}");
        assert_eq!(data[0], b"single");
        for (i, d) in data[1..].iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 3], "node {id}, entry {i}");
        }
    }
}

#[test]
fn propose_batch_of_nothing_appends_nothing() {
    let mut n = single_node();
    let rd = n.ready().unwrap();
    persist(&mut n, &rd);
    n.advance();
    while n.has_ready() {
        let rd = n.ready().unwrap();
        persist(&mut n, &rd);
        n.advance();
    }
    let last = n.last_index();
    let batch = n.propose_batch(Vec::<Vec<u8>>::new()).unwrap();
    assert!(batch.is_empty());
    assert_eq!((batch.indexes.start, batch.last()), (last + 1, None));
    assert_eq!(n.last_index(), last);
    assert!(!n.has_ready(), "an empty batch asks the driver for nothing");
}

#[test]
fn propose_batch_is_refused_whole_by_a_follower_and_over_the_uncommitted_limit() {
    let mut net = Network::with_config(&[1, 2, 3], |c| c.max_uncommitted_entries_bytes = 500);
    net.elect(1);
    assert_eq!(
        net.node(2).propose_batch([b"x".to_vec()]),
        Err(Error::NotLeader {
            leader_hint: Some(1)
        })
    );
    net.isolate(1);
    // Nothing uncommitted: a batch above the limit is still accepted whole.
    let big = net.node(1).propose_batch((0..10).map(|_| vec![0u8; 50]));
    assert_eq!(big.map(|b| b.len()), Ok(10));
    let last = net.node(1).last_index();
    assert_eq!(
        net.node(1).propose_batch([vec![0u8; 10], vec![0u8; 10]]),
        Err(Error::UncommittedLimitExceeded)
    );
    assert_eq!(net.node(1).last_index(), last, "all or nothing");
    net.cut.clear();
    net.tick_all(3);
    assert!(
        net.node(1)
            .propose_batch([vec![0u8; 10], vec![0u8; 10]])
            .is_ok(),
        "room again once committed"
    );
}

#[test]
fn catch_up_index_is_the_lowest_entry_a_live_follower_still_needs() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    assert_eq!(net.node(2).catch_up_index(), None, "only on the leader");
    assert_eq!(net.node(1).catch_up_index(), None, "nobody lags");
    net.cut = vec![(1, 3)];
    for i in 0..5u8 {
        net.node(1).propose(vec![i]).unwrap();
    }
    net.settle();
    let behind = net.node(1).match_index(3).unwrap();
    assert!(behind < net.node(1).last_index());
    assert_eq!(net.node(1).catch_up_index(), Some(behind + 1));
    // Sent a snapshot: what it needs starts after the snapshot.
    let last = net.node(1).last_index();
    net.node(1)
        .progress
        .get_mut(&3)
        .unwrap()
        .become_snapshot(last - 2);
    assert_eq!(net.node(1).catch_up_index(), Some(last - 1));
    // Silent through a CheckQuorum round: no longer counted.
    let timeout = net.node(1).cfg.election_timeout_ticks as usize;
    net.tick_all(timeout);
    assert_eq!(net.node(1).role(), Role::Leader);
    assert_eq!(
        net.node(1).catch_up_index(),
        None,
        "node 3 is not heard from"
    );
}

#[test]
fn a_follower_holding_apply_still_acknowledges_and_applies_in_order_when_released() {
    let mut net = Network::new(&[1, 2, 3]);
    net.elect(1);
    net.isolate(2);
    net.node(3).hold_apply(true);
    let held_from = net.node(3).applied_index();
    for i in 0..3u8 {
        net.node(1).propose(vec![i]).unwrap();
    }
    net.settle();
    let commit = net.node(1).commit_index();
    assert_eq!(
        net.node(1).applied_index(),
        commit,
        "with node 2 cut off, the leader's quorum needs node 3's acknowledgements"
    );
    assert_eq!(
        net.node(3).commit_index(),
        commit,
        "node 3 learned the commit"
    );
    assert_eq!(
        net.node(3).applied_index(),
        held_from,
        "but applied nothing"
    );
    assert!(!net.applied_data(3).contains(&vec![0]));

    net.node(3).hold_apply(false);
    net.settle();
    assert_eq!(net.node(3).applied_index(), commit);
    assert_eq!(
        net.applied_data(3),
        net.applied_data(1),
        "released, it applies the same entries in the same order"
    );
}
