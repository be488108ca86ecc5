//! The simulated cluster: nodes, virtual time, the driver loop, faults and the workload.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use raft_core::{
    ConfChange, ConfChangeSingle, Config, EntryKind, MemStorage, Message, MessageBody, RawNode,
    Ready, Role, SnapshotMeta, Storage,
};

use crate::checker::{chain, Check, Checker, GENESIS_HASH};
use crate::network::{Network, Partition};
use crate::rng::SimRng;

/// The replicated state machine: a hash chain over every applied entry, so two equal
/// hashes at one index mean equal histories.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sm {
    pub applied: u64,
    pub hash: u64,
    pub writes: u64,
}

/// A message on the wire; snapshots travel with their state-machine image.
#[derive(Clone, Debug)]
struct Envelope {
    msg: Message,
    snapshot: Option<Sm>,
}

#[derive(Debug)]
enum Event {
    Deliver(Box<Envelope>),
    Tick(u64),
    Chaos,
    Heal,
}

struct Queued {
    at_ms: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at_ms, self.seq) == (o.at_ms, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at_ms, self.seq).cmp(&(o.at_ms, o.seq))
    }
}

/// Per-run knobs, drawn from the seed.
#[derive(Clone, Debug)]
pub struct Params {
    pub voters: u64,
    pub spare_nodes: u64,
    pub tick_ms: u64,
    pub election_ticks: u32,
    pub heartbeat_ticks: u32,
    pub max_inflight_msgs: usize,
    pub max_size_per_msg_bytes: u64,
    pub max_uncommitted_bytes: u64,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub lease_reads: bool,
    /// Upper bound of the gap between two workload/fault actions.
    pub chaos_gap_max_ms: u64,
    /// Membership changes several times more often than usual.
    pub membership_heavy: bool,
    pub fault_ms: u64,
    pub heal_deadline_ms: u64,
}

impl Params {
    pub fn from_seed(rng: &mut SimRng) -> Self {
        let mut p = Self::draw(rng);
        if (!p.pre_vote && !p.check_quorum) || p.lease_reads {
            p.check_quorum = true;
        }
        p
    }

    fn draw(rng: &mut SimRng) -> Self {
        Params {
            voters: if rng.chance(50) { 3 } else { 5 },
            spare_nodes: 2,
            tick_ms: 10,
            election_ticks: rng.range(8, 15) as u32,
            heartbeat_ticks: rng.range(1, 4) as u32,
            max_inflight_msgs: rng.range(1, 8) as usize,
            max_size_per_msg_bytes: rng.pick(&[1, 300, 2000, 1 << 20]).unwrap_or(1),
            max_uncommitted_bytes: rng.pick(&[600, 4000, 1 << 30]).unwrap_or(1 << 30),
            // Both on by default; one of them off in some runs. With both off a removed
            // node that never learned of its removal can disrupt forever (thesis 4.2.3).
            pre_vote: rng.chance(85),
            check_quorum: rng.chance(85),
            lease_reads: rng.chance(25),
            chaos_gap_max_ms: if rng.chance(30) { 12 } else { 60 },
            membership_heavy: rng.chance(30),
            fault_ms: rng.range(2000, 8000),
            heal_deadline_ms: 20_000,
        }
    }
}

struct SimNode {
    raft: Option<RawNode<MemStorage>>,
    /// Durable storage while crashed.
    down_storage: Option<MemStorage>,
    /// Durable state machine (applied with each Ready, so it never loses applied entries).
    sm: Sm,
    /// State-machine image of the storage's snapshot.
    snapshot_sm: Sm,
    /// Prefix hash of every durable log position (from the snapshot on).
    hash_at: BTreeMap<u64, u64>,
    incoming_snapshot: Option<(u64, u64, Sm)>,
    restarts: u64,
    crash_in_next_ready: Option<u8>,
    seen: (u64, u64, u64),
    durable: (u64, u64),
    /// Proposals this node accepted: index -> (term, write id).
    proposals: HashMap<u64, (u64, u64)>,
}

pub struct Stats {
    pub acked_writes: u64,
    pub reads_served: u64,
    pub elections: u64,
    pub snapshots_sent: u64,
    /// Appends whose entries start at or below the sender's snapshot: served from
    /// trailing entries instead of sending the snapshot.
    pub trailing_appends: u64,
    pub conf_changes: u64,
    pub crashes: u64,
    pub sim_ms: u64,
}

pub struct Sim {
    seed: u64,
    rng: SimRng,
    params: Params,
    now_ms: u64,
    seq: u64,
    ids: Vec<u64>,
    nodes: BTreeMap<u64, SimNode>,
    net: Network,
    queue: BinaryHeap<Reverse<Queued>>,
    check: Checker,
    next_write_id: u64,
    next_read_id: u64,
    /// read id -> (node, highest acknowledged write index when the read started)
    reads: HashMap<u64, (u64, u64)>,
    healed: bool,
    trace: bool,
    stats: Stats,
}

impl Sim {
    pub fn new(seed: u64, trace: bool) -> Self {
        let mut rng = SimRng::new(seed);
        let params = Params::from_seed(&mut rng);
        let ids: Vec<u64> = (1..=params.voters + params.spare_nodes).collect();
        let voters: Vec<u64> = (1..=params.voters).collect();
        let mut sim = Sim {
            seed,
            rng,
            now_ms: 0,
            seq: 0,
            net: Network::new(&ids),
            nodes: BTreeMap::new(),
            queue: BinaryHeap::new(),
            check: Checker::default(),
            next_write_id: 1,
            next_read_id: 1,
            reads: HashMap::new(),
            healed: false,
            trace,
            stats: Stats {
                acked_writes: 0,
                reads_served: 0,
                elections: 0,
                snapshots_sent: 0,
                trailing_appends: 0,
                conf_changes: 0,
                crashes: 0,
                sim_ms: 0,
            },
            ids: ids.clone(),
            params,
        };
        for &id in &ids {
            let founding = voters.contains(&id);
            let (storage, sm) = if founding {
                (
                    MemStorage::new_bootstrap(voters.iter().copied()),
                    Sm {
                        applied: 1,
                        hash: GENESIS_HASH,
                        writes: 0,
                    },
                )
            } else {
                (MemStorage::new(), Sm::default())
            };
            let mut hash_at = BTreeMap::new();
            hash_at.insert(sm.applied, sm.hash);
            let node = SimNode {
                raft: None,
                down_storage: Some(storage),
                sm,
                snapshot_sm: sm,
                hash_at,
                incoming_snapshot: None,
                restarts: 0,
                crash_in_next_ready: None,
                seen: (0, 0, 0),
                durable: (0, 0),
                proposals: HashMap::new(),
            };
            sim.nodes.insert(id, node);
            sim.start(id).expect("initial start");
            let offset = sim.rng.range(0, sim.params.tick_ms);
            sim.schedule(offset, Event::Tick(id));
        }
        sim.net.randomize_links(&mut sim.rng);
        sim.schedule(1, Event::Chaos);
        let fault_ms = sim.params.fault_ms;
        sim.schedule(fault_ms, Event::Heal);
        sim
    }

    fn log(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("[{:>6}ms] {}", self.now_ms, what());
        }
    }

    fn schedule(&mut self, delay_ms: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at_ms: self.now_ms + delay_ms,
            seq: self.seq,
            event,
        }));
    }

    fn config(&self, id: u64, applied: u64, restarts: u64) -> Config {
        let mut cfg = Config::new(id);
        cfg.election_timeout_ticks = self.params.election_ticks;
        cfg.heartbeat_interval_ticks = self.params.heartbeat_ticks;
        cfg.max_inflight_msgs = self.params.max_inflight_msgs;
        cfg.max_size_per_msg_bytes = self.params.max_size_per_msg_bytes;
        cfg.max_uncommitted_entries_bytes = self.params.max_uncommitted_bytes;
        cfg.max_committed_bytes_per_ready = 4096;
        cfg.pre_vote = self.params.pre_vote;
        cfg.check_quorum = self.params.check_quorum;
        cfg.lease_reads = self.params.lease_reads;
        cfg.tick_interval_nanos = self.params.tick_ms * 1_000_000;
        cfg.applied_index = applied;
        cfg.seed = self
            .seed
            .wrapping_mul(31)
            .wrapping_add(id * 1000 + restarts);
        cfg
    }

    /// Starts (or restarts) a node from its durable storage only.
    fn start(&mut self, id: u64) -> Check {
        let node = self.nodes.get_mut(&id).ok_or("no such node")?;
        let Some(storage) = node.down_storage.take() else {
            return Ok(());
        };
        let restarts = node.restarts;
        let applied = node.sm.applied;
        let cfg = self.config(id, applied, restarts);
        let raft =
            RawNode::new(cfg, storage).map_err(|e| format!("restart of {id} failed: {e}"))?;
        let node = self.nodes.get_mut(&id).ok_or("no such node")?;
        if raft.term() < node.durable.0 || raft.commit_index() < node.durable.1 {
            return Err(format!("node {id} restarted behind its durable state"));
        }
        if raft.applied_index() != node.sm.applied {
            return Err(format!(
                "node {id} restarted with applied {} != {}",
                raft.applied_index(),
                node.sm.applied
            ));
        }
        node.seen = (raft.term(), raft.commit_index(), raft.applied_index());
        node.raft = Some(raft);
        node.restarts += 1;
        Ok(())
    }

    fn crash(&mut self, id: u64) {
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        if let Some(raft) = node.raft.take() {
            node.down_storage = Some(raft.into_storage());
            node.proposals.clear();
            node.incoming_snapshot = None;
            node.crash_in_next_ready = None;
            self.stats.crashes += 1;
            self.log(|| format!("crash {id}"));
        }
    }

    fn live(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The leader with the highest term, if any.
    fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter_map(|(id, n)| {
                n.raft
                    .as_ref()
                    .filter(|r| r.role() == Role::Leader)
                    .map(|r| (r.term(), *id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// Every live node that believes it is leader.
    fn believed_leaders(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.as_ref().is_some_and(|r| r.role() == Role::Leader))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Node `id`'s core, its clock set to the virtual time (as a driver does before
    /// every input).
    fn raft(&mut self, id: u64) -> Option<&mut RawNode<MemStorage>> {
        let now_nanos = self.now_ms * 1_000_000;
        let raft = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut())?;
        raft.set_clock(now_nanos);
        Some(raft)
    }

    // ----- the run -----

    pub fn run(mut self) -> Result<Stats, String> {
        let deadline = self.params.fault_ms + self.params.heal_deadline_ms;
        let mut next_liveness_check = 0;
        while let Some(Reverse(q)) = self.queue.pop() {
            self.now_ms = q.at_ms;
            if self.now_ms > deadline {
                return Err(self.liveness_report());
            }
            self.handle(q.event)?;
            if self.healed && self.now_ms >= next_liveness_check {
                next_liveness_check = self.now_ms + 50;
                if self.converged() {
                    self.stats.sim_ms = self.now_ms;
                    self.stats.acked_writes = self.check.acked_writes;
                    self.stats.reads_served = self.check.reads_served;
                    return Ok(self.stats);
                }
            }
        }
        Err("event queue ran dry".into())
    }

    fn handle(&mut self, event: Event) -> Check {
        match event {
            Event::Tick(id) => {
                let tick_ms = self.params.tick_ms;
                self.schedule(tick_ms, Event::Tick(id));
                if let Some(r) = self.raft(id) {
                    r.tick();
                    self.process(id)?;
                }
            }
            Event::Deliver(env) => {
                let to = env.msg.to;
                let Some(node) = self.nodes.get_mut(&to) else {
                    return Ok(());
                };
                if node.raft.is_none() {
                    return Ok(());
                }
                if let (Some(sm), MessageBody::InstallSnapshot { snapshot, .. }) =
                    (env.snapshot, &env.msg.body)
                {
                    node.incoming_snapshot = Some((snapshot.index, snapshot.term, sm));
                }
                if let Some(r) = node.raft.as_mut() {
                    r.set_clock(self.now_ms * 1_000_000);
                    r.step(env.msg).map_err(|e| format!("step failed: {e}"))?;
                }
                self.process(to)?;
            }
            Event::Chaos => {
                if !self.healed {
                    self.chaos()?;
                    let gap = self.rng.range(2, self.params.chaos_gap_max_ms);
                    self.schedule(gap, Event::Chaos);
                }
            }
            Event::Heal => {
                self.log(|| {
                    "heal: network healthy, everyone restarts, workload continues lightly".into()
                });
                self.healed = true;
                self.net.heal();
                for id in self.ids.clone() {
                    if let Some(n) = self.nodes.get_mut(&id) {
                        n.crash_in_next_ready = None;
                    }
                    self.start(id)?;
                }
            }
        }
        Ok(())
    }

    // ----- the driver: handle Readys exactly as the contract says -----

    fn process(&mut self, id: u64) -> Check {
        loop {
            let Some(r) = self.raft(id) else {
                return Ok(());
            };
            if !r.has_ready() {
                break;
            }
            let rd = r
                .ready()
                .map_err(|e| format!("node {id}: ready failed: {e}"))?;
            self.handle_ready(id, rd)?;
        }
        self.after_event(id)
    }

    fn send(&mut self, from: u64, msgs: Vec<Message>) -> Check {
        for msg in msgs {
            let snapshot = match &msg.body {
                MessageBody::InstallSnapshot { snapshot, .. } => {
                    let image = self.nodes[&from].snapshot_sm;
                    if image.applied != snapshot.index {
                        return Err(format!(
                            "node {from} sends snapshot {} without its image",
                            snapshot.index
                        ));
                    }
                    self.stats.snapshots_sent += 1;
                    Some(image)
                }
                MessageBody::Append { entries, .. } => {
                    let snap = self.nodes[&from]
                        .raft
                        .as_ref()
                        .map_or(0, |r| r.storage().snapshot_meta().index);
                    if entries.first().is_some_and(|e| e.index <= snap) {
                        self.stats.trailing_appends += 1;
                    }
                    None
                }
                _ => None,
            };
            let delays = self.net.deliveries(&mut self.rng, msg.from, msg.to);
            for d in delays {
                let env = Envelope {
                    msg: msg.clone(),
                    snapshot,
                };
                self.schedule(d, Event::Deliver(Box::new(env)));
            }
        }
        Ok(())
    }

    fn handle_ready(&mut self, id: u64, rd: Ready) -> Check {
        if let Some(role) = rd.role {
            self.log(|| {
                format!(
                    "node {id} is {:?} term {} leader {:?}",
                    role.role, role.term, role.leader_id
                )
            });
        }
        let mut became_leader = rd.role.filter(|r| r.role == Role::Leader).map(|r| r.term);
        // Leadership counts once its term and vote are durable, or once it speaks: a node
        // that won and crashed before persisting, having sent nothing, never led.
        if let (Some(term), false) = (became_leader, rd.messages.is_empty()) {
            self.stats.elections += 1;
            self.check.leader_elected(term, id)?;
            self.check_leader_completeness(id, term)?;
            became_leader = None;
        }
        // 1. Messages that may go before the persist.
        let nothing_to_persist = rd.nothing_to_persist();
        self.send(id, rd.messages)?;
        // A pending crash strikes during a Ready that has something to persist.
        let crash_point = if nothing_to_persist {
            None
        } else {
            self.nodes
                .get_mut(&id)
                .and_then(|n| n.crash_in_next_ready.take())
        };
        if crash_point == Some(0) {
            self.crash(id);
            return Ok(());
        }
        // 2. Persist: snapshot, entries, hard state.
        let node = self.nodes.get_mut(&id).ok_or("no node")?;
        let raft = node.raft.as_mut().ok_or("no raft")?;
        let mut persisted: Vec<(u64, u64, u64)> = Vec::new();
        if let Some(meta) = &rd.snapshot {
            let Some((index, term, image)) = node.incoming_snapshot.take() else {
                return Err(format!(
                    "node {id}: Ready asks to install a snapshot it never received"
                ));
            };
            if (index, term) != (meta.index, meta.term) || image.applied != meta.index {
                return Err(format!("node {id}: snapshot image mismatch"));
            }
            raft.storage_mut().apply_snapshot(meta.clone());
            node.sm = image;
            node.snapshot_sm = image;
            node.hash_at.clear();
            node.hash_at.insert(meta.index, image.hash);
            persisted.push((meta.index, meta.term, image.hash));
        }
        if let Some(first) = rd.entries.first() {
            let _ = node.hash_at.split_off(&first.index);
            let mut prev = *node.hash_at.get(&(first.index - 1)).ok_or_else(|| {
                format!(
                    "node {id}: entries at {} leave a gap in the log",
                    first.index
                )
            })?;
            for e in &rd.entries {
                prev = chain(prev, e);
                node.hash_at.insert(e.index, prev);
                persisted.push((e.index, e.term, prev));
            }
            raft.storage_mut().append(&rd.entries);
        }
        if let Some(hs) = rd.hard_state {
            if hs.term < node.durable.0 || hs.commit < node.durable.1 {
                return Err(format!(
                    "node {id}: durable term/commit went backwards: {hs:?} after {:?}",
                    node.durable
                ));
            }
            node.durable = (hs.term, hs.commit);
            raft.storage_mut().set_hard_state(hs);
        }
        for (index, term, hash) in persisted {
            self.check.persisted_entry(id, index, term, hash)?;
        }
        if let Some(term) = became_leader {
            self.stats.elections += 1;
            self.check.leader_elected(term, id)?;
            self.check_leader_completeness(id, term)?;
        }
        if crash_point == Some(1) {
            self.crash(id);
            return Ok(());
        }
        // 3. Messages that needed the persist.
        self.send(id, rd.persisted_messages)?;
        // 4. Apply.
        for e in &rd.committed_entries {
            let node = self.nodes.get_mut(&id).ok_or("no node")?;
            if e.index != node.sm.applied + 1 {
                return Err(format!(
                    "node {id}: applied {} after {}",
                    e.index, node.sm.applied
                ));
            }
            node.sm.applied = e.index;
            node.sm.hash = chain(node.sm.hash, e);
            if e.kind == EntryKind::Normal {
                node.sm.writes += 1;
            }
            let hash = node.sm.hash;
            let mine = node.proposals.remove(&e.index);
            self.check.applied(id, e.index, hash)?;
            if let Some((term, write_id)) = mine {
                if term == e.term && e.data.get(..8) == Some(&write_id.to_le_bytes()[..]) {
                    self.check.acked_writes += 1;
                    self.check.acked_max_index = self.check.acked_max_index.max(e.index);
                }
            }
            if let EntryKind::ConfChange(cc) = &e.kind {
                self.log(|| format!("node {id} applies conf change {cc:?} at {}", e.index));
            }
        }
        // 5. Reads.
        for rs in &rd.read_states {
            let read_id =
                u64::from_le_bytes(rs.ctx.as_slice().try_into().map_err(|_| "bad read ctx")?);
            let Some((node_id, acked_at_start)) = self.reads.remove(&read_id) else {
                return Err(format!("node {id}: unknown or duplicate read {read_id}"));
            };
            if node_id != id {
                return Err(format!(
                    "read {read_id} confirmed on {id}, asked on {node_id}"
                ));
            }
            if rs.index < acked_at_start {
                return Err(format!(
                    "stale read on node {id}: read index {} misses write acknowledged at {acked_at_start}",
                    rs.index
                ));
            }
            self.check.reads_served += 1;
        }
        let raft = self.raft(id).ok_or("no raft")?;
        raft.advance();
        Ok(())
    }

    fn check_leader_completeness(&mut self, id: u64, term: u64) -> Check {
        let Some((index, entry_term)) = self.check.committed_before(term) else {
            return Ok(());
        };
        let raft = self.raft(id).ok_or("no raft")?;
        match raft.entry_term(index) {
            Ok(t) if t == entry_term => Ok(()),
            Err(raft_core::StorageError::Compacted) => Ok(()),
            other => Err(format!(
                "leader completeness: leader {id} of term {term} has {other:?} at {index}, committed with term {entry_term}"
            )),
        }
    }

    /// Per-event checks on the node that just handled something.
    fn after_event(&mut self, id: u64) -> Check {
        let node = self.nodes.get_mut(&id).ok_or("no node")?;
        let Some(raft) = node.raft.as_ref() else {
            return Ok(());
        };
        let now = (raft.term(), raft.commit_index(), raft.applied_index());
        if now.0 < node.seen.0 || now.1 < node.seen.1 || now.2 < node.seen.2 {
            return Err(format!(
                "node {id}: (term, commit, applied) went backwards: {now:?} after {:?}",
                node.seen
            ));
        }
        if now.1 > raft.last_index() {
            return Err(format!(
                "node {id}: commit {} beyond last index {}",
                now.1,
                raft.last_index()
            ));
        }
        node.seen = now;
        if raft.role() == Role::Leader {
            let (term, commit) = (raft.term(), raft.commit_index());
            let entry_term = raft.entry_term(commit).unwrap_or(0);
            self.check.leader_committed(term, commit, entry_term);
        }
        Ok(())
    }

    // ----- the workload and the faults -----

    fn chaos(&mut self) -> Check {
        if self.params.membership_heavy && self.rng.chance(20) {
            if let Some(id) = self.leader() {
                return self.change_membership(id);
            }
        }
        let roll = self.rng.range(0, 100);
        // Clients often reach whichever node believes it leads (possibly a stale leader).
        let leader = if self.rng.chance(30) {
            self.rng.pick(&self.believed_leaders())
        } else {
            self.leader()
        };
        match roll {
            0..=34 => {
                let target = if self.rng.chance(85) {
                    leader
                } else {
                    self.rng.pick(&self.live())
                };
                if let Some(id) = target {
                    for _ in 0..self.rng.range(1, 4) {
                        self.propose(id);
                    }
                    self.process(id)?;
                }
            }
            35..=49 => {
                // Clients read from every node that believes it leads, stale ones included.
                for id in self.believed_leaders() {
                    let read_id = self.next_read_id;
                    self.next_read_id += 1;
                    let acked = self.check.acked_max_index;
                    if let Some(r) = self.raft(id) {
                        if r.read_index(read_id.to_le_bytes().to_vec()).is_ok() {
                            self.reads.insert(read_id, (id, acked));
                        }
                    }
                    self.process(id)?;
                }
            }
            50..=56 => {
                let kinds = [
                    Partition::Halves,
                    Partition::IsolateLeader,
                    Partition::MajoritiesRing,
                    Partition::Bridge,
                    Partition::OneWay,
                ];
                let kind = self.rng.pick(&kinds).unwrap_or(Partition::Halves);
                let mut ids = self.ids.clone();
                self.rng.shuffle(&mut ids);
                self.net.partition(&mut self.rng, kind, &ids, leader);
                self.log(|| format!("partition {kind:?} over {ids:?}"));
            }
            57..=63 => {
                self.net.blocked.clear();
                self.log(|| "partition healed".into());
            }
            64..=66 => self.net.randomize_links(&mut self.rng),
            67..=71 => {
                let live = self.live();
                if live.len() > 1 {
                    if let Some(id) = self.rng.pick(&live) {
                        if self.rng.chance(50) {
                            self.crash(id);
                        } else {
                            let point = self.rng.range(0, 2) as u8;
                            self.nodes
                                .get_mut(&id)
                                .ok_or("no node")?
                                .crash_in_next_ready = Some(point);
                        }
                    }
                }
            }
            72..=79 => {
                let down: Vec<u64> = self
                    .ids
                    .iter()
                    .copied()
                    .filter(|id| self.nodes[id].raft.is_none())
                    .collect();
                if let Some(id) = self.rng.pick(&down) {
                    self.log(|| format!("restart {id}"));
                    self.start(id)?;
                }
            }
            80..=85 => {
                if let Some(id) = self.rng.pick(&self.live()) {
                    self.compact(id)?;
                }
            }
            86..=89 => {
                if let Some(id) = leader {
                    let voters: Vec<u64> = self
                        .raft(id)
                        .map(|r| r.conf_state().voters.iter().copied().collect())
                        .unwrap_or_default();
                    if let Some(to) = self.rng.pick(&voters) {
                        if let Some(r) = self.raft(id) {
                            let ok = r.transfer_leader(to).is_ok();
                            self.log(|| format!("transfer {id} -> {to}: {ok}"));
                        }
                        self.process(id)?;
                    }
                }
            }
            _ => {
                if let Some(id) = leader {
                    self.change_membership(id)?;
                }
            }
        }
        Ok(())
    }

    fn propose(&mut self, id: u64) {
        let write_id = self.next_write_id;
        self.next_write_id += 1;
        let pad = self.rng.range(0, 200) as usize;
        let mut data = write_id.to_le_bytes().to_vec();
        data.resize(8 + pad, 0xAB);
        let Some(node) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        if let Ok(pos) = raft.propose(data) {
            node.proposals.insert(pos.index, (pos.term, write_id));
        }
    }

    fn compact(&mut self, id: u64) -> Check {
        let node = self.nodes.get_mut(&id).ok_or("no node")?;
        let Some(raft) = node.raft.as_mut() else {
            return Ok(());
        };
        let applied = raft.applied_index();
        if applied <= raft.storage().snapshot_meta().index || applied != node.sm.applied {
            return Ok(());
        }
        // Keep a few entries sometimes, so slightly slow followers still get entries.
        let trailing = match self.rng.range(0, 3) {
            0 => 0,
            _ => self.rng.range(1, 40),
        };
        let meta: SnapshotMeta = raft.snapshot_meta_at_applied().map_err(|e| e.to_string())?;
        raft.storage_mut()
            .compact_keeping(meta.clone(), trailing)
            .map_err(|e| format!("compact failed: {e}"))?;
        node.snapshot_sm = node.sm;
        let kept = node.hash_at.split_off(&meta.index);
        node.hash_at = kept;
        self.log(|| format!("node {id} compacts to {} keeping {trailing}", meta.index));
        Ok(())
    }

    fn change_membership(&mut self, leader: u64) -> Check {
        let Some(raft) = self.raft(leader) else {
            return Ok(());
        };
        let conf = raft.conf_state().clone();
        let members = conf.members();
        let non_members: Vec<u64> = self
            .ids
            .iter()
            .copied()
            .filter(|id| !members.contains(id))
            .collect();
        let learners: Vec<u64> = conf.learners.iter().copied().collect();
        let voters: Vec<u64> = conf.voters.iter().copied().collect();
        let mut changes = Vec::new();
        match self.rng.range(0, 9) {
            0 => changes.extend(
                self.rng
                    .pick(&non_members)
                    .map(ConfChangeSingle::AddLearner),
            ),
            1 => changes.extend(self.rng.pick(&learners).map(ConfChangeSingle::AddVoter)),
            2 if voters.len() > 3 => {
                changes.extend(self.rng.pick(&voters).map(ConfChangeSingle::Remove))
            }
            3 if voters.len() > 3 => {
                changes.extend(self.rng.pick(&voters).map(ConfChangeSingle::AddLearner))
            }
            4 => changes.extend(self.rng.pick(&learners).map(ConfChangeSingle::Remove)),
            5 | 6 => {
                // An arbitrary new voter set (fresh nodes included), reached in one joint change.
                let mut pool = self.ids.clone();
                self.rng.shuffle(&mut pool);
                let size = self.rng.range(1, pool.len().min(5) as u64 + 1) as usize;
                let target = &pool[..size];
                for &id in target {
                    if !voters.contains(&id) {
                        changes.push(ConfChangeSingle::AddVoter(id));
                    }
                }
                for &id in &voters {
                    if !target.contains(&id) {
                        changes.push(if self.rng.chance(50) {
                            ConfChangeSingle::Remove(id)
                        } else {
                            ConfChangeSingle::AddLearner(id)
                        });
                    }
                }
            }
            _ => {
                // Swap: a new voter in, an old one out, in one joint change.
                let incoming = self
                    .rng
                    .pick(&learners)
                    .or_else(|| self.rng.pick(&non_members));
                let outgoing = self.rng.pick(&voters);
                if let (Some(a), Some(b)) = (incoming, outgoing) {
                    changes.push(ConfChangeSingle::AddVoter(a));
                    changes.push(ConfChangeSingle::Remove(b));
                }
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        let cc = ConfChange { changes };
        let Some(raft) = self.raft(leader) else {
            return Ok(());
        };
        let res = raft.propose_conf_change(cc.clone(), Vec::new());
        if res.is_ok() {
            self.stats.conf_changes += 1;
        }
        self.log(|| format!("leader {leader} proposes {cc:?}: {res:?}"));
        self.process(leader)
    }

    // ----- liveness -----

    fn converged(&self) -> bool {
        let Some(leader) = self.leader() else {
            return false;
        };
        let Some(raft) = self.nodes[&leader].raft.as_ref() else {
            return false;
        };
        let conf = raft.conf_state();
        if conf.is_joint() || raft.commit_index() < self.check.acked_max_index {
            return false;
        }
        conf.members().iter().all(|id| {
            self.nodes
                .get(id)
                .and_then(|n| n.raft.as_ref())
                .is_some_and(|r| {
                    r.applied_index() >= self.check.acked_max_index && r.leader_id() == Some(leader)
                })
        })
    }

    fn liveness_report(&self) -> String {
        let mut s = format!(
            "liveness: no convergence {}ms after healing (acked max index {}); nodes:",
            self.params.heal_deadline_ms, self.check.acked_max_index
        );
        for (id, n) in &self.nodes {
            match &n.raft {
                Some(r) => s.push_str(&format!(
                    " [{id}: {:?} t{} lead {:?} commit {} applied {} last {} conf {:?}]",
                    r.role(),
                    r.term(),
                    r.leader_id(),
                    r.commit_index(),
                    r.applied_index(),
                    r.last_index(),
                    r.conf_state()
                )),
                None => s.push_str(&format!(" [{id}: down]")),
            }
        }
        s
    }

    pub fn params(&self) -> &Params {
        &self.params
    }
}
