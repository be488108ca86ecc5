//! A storage that fails to read is fatal: the core hands out the error instead of an
//! empty batch (a driver looping on `has_ready` would spin forever), and never campaigns
//! under a configuration it could not read.

use std::cell::Cell;
use std::rc::Rc;

use crate::*;

/// MemStorage whose reads of stored entries fail (as an EIO would) once `broken` is set.
struct FlakyStorage {
    inner: MemStorage,
    broken: Rc<Cell<bool>>,
}

impl Storage for FlakyStorage {
    fn hard_state(&self) -> HardState {
        self.inner.hard_state()
    }
    fn snapshot_meta(&self) -> SnapshotMeta {
        self.inner.snapshot_meta()
    }
    fn first_index(&self) -> u64 {
        self.inner.first_index()
    }
    fn last_index(&self) -> u64 {
        self.inner.last_index()
    }
    fn term(&self, index: u64) -> std::result::Result<u64, StorageError> {
        if self.broken.get() && index > self.inner.snapshot_meta().index {
            return Err(StorageError::Io("wal/00000001.seg: EIO".into()));
        }
        self.inner.term(index)
    }
    fn entries(
        &self,
        lo: u64,
        hi: u64,
        max_bytes: u64,
    ) -> std::result::Result<Vec<Entry>, StorageError> {
        if self.broken.get() {
            return Err(StorageError::Io("wal/00000001.seg: EIO".into()));
        }
        self.inner.entries(lo, hi, max_bytes)
    }
}

type Node = RawNode<FlakyStorage>;

fn node(id: u64, voters: &[u64], broken: &Rc<Cell<bool>>) -> Node {
    let storage = FlakyStorage {
        inner: MemStorage::new_bootstrap(voters.iter().copied()),
        broken: broken.clone(),
    };
    RawNode::new(Config::new(id), storage).unwrap()
}

/// Handles every Ready of `n` like a driver; returns the messages it sent.
fn drive(n: &mut Node) -> Result<Vec<Message>> {
    let mut out = Vec::new();
    let mut readys = 0;
    while n.has_ready() {
        readys += 1;
        assert!(readys < 100, "the Ready loop does not end");
        let rd = n.ready()?;
        out.extend(rd.messages);
        if let Some(hs) = rd.hard_state {
            n.storage_mut().inner.set_hard_state(hs);
        }
        n.storage_mut().inner.append(&rd.entries);
        out.extend(rd.persisted_messages);
        n.advance();
    }
    Ok(out)
}

fn deliver(nodes: &mut [Node], msgs: Vec<Message>) -> Vec<Message> {
    let mut out = Vec::new();
    for m in msgs {
        let to = (m.to - 1) as usize;
        nodes[to].step(m).unwrap();
        out.extend(drive(&mut nodes[to]).unwrap());
    }
    out
}

fn settle(nodes: &mut [Node]) {
    let mut msgs: Vec<Message> = Vec::new();
    for n in nodes.iter_mut() {
        msgs.extend(drive(n).unwrap());
    }
    for _ in 0..100 {
        if msgs.is_empty() {
            return;
        }
        msgs = deliver(nodes, msgs);
    }
    panic!("did not settle");
}

#[test]
fn a_failed_read_of_committed_entries_is_an_error_not_an_endless_empty_ready() {
    let flags: Vec<Rc<Cell<bool>>> = (0..3).map(|_| Rc::new(Cell::new(false))).collect();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| node(id, &[1, 2, 3], &flags[id as usize - 1]))
        .collect();
    nodes[0].campaign();
    settle(&mut nodes);
    assert_eq!(nodes[0].role(), Role::Leader);
    // Follower 2 appends the entry in one Ready and learns that it committed later: it
    // then reads the entry back from storage to apply it. That read fails.
    nodes[0].propose(b"x".to_vec()).unwrap();
    let msgs = drive(&mut nodes[0]).unwrap();
    let to_2: Vec<Message> = msgs.into_iter().filter(|m| m.to == 2).collect();
    let acks = deliver(&mut nodes, to_2);
    deliver(&mut nodes, acks);
    assert!(nodes[0].commit_index() > nodes[1].commit_index());
    flags[1].set(true);
    nodes[0].tick();
    let heartbeats: Vec<Message> = drive(&mut nodes[0])
        .unwrap()
        .into_iter()
        .filter(|m| m.to == 2)
        .collect();
    assert!(!heartbeats.is_empty());
    for m in heartbeats {
        nodes[1].step(m).unwrap();
    }
    assert!(nodes[1].commit_index() > nodes[1].applied_index());
    match drive(&mut nodes[1]) {
        Err(Error::Storage(StorageError::Io(what))) => assert!(what.contains("00000001.seg")),
        other => panic!("expected the storage error, got {other:?}"),
    }
    // The node stays stopped: it reports the failure, takes no input, sends nothing.
    assert!(
        nodes[1].has_ready(),
        "the failure is reported, not swallowed"
    );
    assert!(nodes[1].ready().is_err());
    assert!(nodes[1].storage_failure().is_some());
    let hb = Message {
        from: 1,
        to: 2,
        term: nodes[0].term(),
        body: MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
            tag: 0,
        },
    };
    assert!(matches!(nodes[1].step(hb), Err(Error::Storage(_))));
    for _ in 0..50 {
        nodes[1].tick();
    }
    assert!(nodes[1].ready().is_err());
}

#[test]
fn a_failed_read_of_the_latest_configuration_never_starts_a_campaign() {
    let flags: Vec<Rc<Cell<bool>>> = (0..3).map(|_| Rc::new(Cell::new(false))).collect();
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| node(id, &[1, 2, 3], &flags[id as usize - 1]))
        .collect();
    nodes[0].campaign();
    settle(&mut nodes);
    // Node 3 holds an uncommitted configuration change (removing node 1) beyond its
    // applied index: it campaigns under that configuration, which it must read.
    let cc = ConfChange {
        changes: vec![ConfChangeSingle::AddVoter(4), ConfChangeSingle::Remove(2)],
    };
    nodes[0].propose_conf_change(cc, vec![]).unwrap();
    let to_3: Vec<Message> = drive(&mut nodes[0])
        .unwrap()
        .into_iter()
        .filter(|m| m.to == 3)
        .collect();
    for m in to_3 {
        nodes[2].step(m).unwrap();
    }
    drive(&mut nodes[2]).unwrap();
    assert!(nodes[2].last_index() > nodes[2].applied_index());
    flags[2].set(true);
    let mut sent = Vec::new();
    let mut outcome = Ok(());
    for _ in 0..40 {
        nodes[2].tick();
        match drive(&mut nodes[2]) {
            Ok(msgs) => sent.extend(msgs),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    assert!(
        !sent
            .iter()
            .any(|m| matches!(m.body, MessageBody::RequestVote { .. })),
        "campaigned under a configuration it could not read: {sent:?}"
    );
    assert!(matches!(outcome, Err(Error::Storage(StorageError::Io(_)))));
    assert_ne!(nodes[2].role(), Role::Candidate);
}
