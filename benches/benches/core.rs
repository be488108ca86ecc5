//! `raft-core` beside tikv/raft-rs 0.7, driven the same way in one run (issue 17).
//!
//! Each library runs an in-memory 3-node cluster on one thread (its own `MemStorage`,
//! no I/O, no network): the leader proposes a batch of 64-byte entries, then every
//! Ready is handled (messages queued, entries and hard state persisted to the
//! storage, committed entries applied) and every message delivered until all three
//! nodes applied the batch; an entry counts once it is applied on all three.
//!
//! * `batch_N/raft-core propose`: `propose` once per entry.
//! * `batch_N/raft-core propose_batch`: one `propose_batch` call for the batch.
//! * `batch_N/raft-rs propose`: raft-rs's `RawNode::propose` once per entry.
//! * `batch_N/raft-rs step`: one `MsgPropose` carrying the whole batch, via `step`.
//! * `closed_loop`: one proposal at a time: propose one entry, deliver messages
//!   round by round until all three nodes applied it (messages still in flight then
//!   stay queued for the next proposal), repeat.
//!
//! Each function keeps one cluster for all its samples (warm-up included), so the
//! first samples do not pay for a cold allocator or growing logs. The leader ticks
//! only when a round left nothing in flight and some node has not applied the batch
//! yet (followers may learn a commit with the next heartbeat).
//! Both libraries run with PreVote and CheckQuorum on, an election timeout of 10
//! ticks, a heartbeat every tick, 1 MiB per append message and 256 appends in flight.
//!
//! Times are the bench thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time:
//! the machine is shared, and wall time there mostly measures who else was running.
//! `CORE_BENCH_WALL_CLOCK=1` measures wall time instead.
//!
//! `cargo bench -p raft-benches --bench core -- --warm-up-time 1 --measurement-time 3`,
//! then `python3 benches/core_ratios.py` for the raft-core / raft-rs table.
//!
//! `CORE_BENCH_PAIRED=1 cargo bench -p raft-benches --bench core` runs paired rounds
//! instead of criterion: in each round every mode of both libraries commits the same
//! number of entries, one after another in a rotating order, and the round's ratio is
//! raft-core's best mode over raft-rs's best mode; it prints the median ratio per point
//! and the range over the rounds (see [`paired`]).

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion, Throughput};
use std::time::Duration;

/// Bytes of application data per entry.
const ENTRY_BYTES: usize = 64;
/// Proposals per iteration in the batch groups.
const BATCHES: [usize; 4] = [1, 16, 256, 4096];
/// Proposals per iteration in the closed loop.
const CLOSED_LOOP_PROPOSALS: usize = 64;
/// Both clusters compact their storages once they hold more entries than this, so a
/// long measurement does not grow memory without bound.
const COMPACT_AFTER_ENTRIES: u64 = 200_000;

fn payload() -> Vec<u8> {
    vec![7u8; ENTRY_BYTES]
}

mod core_cluster {
    use raft_core::{Config, MemStorage, Message, RawNode, Role, Storage};

    /// How the leader is given a batch.
    #[derive(Clone, Copy, Debug)]
    pub enum Mode {
        /// `propose` once per entry.
        PerEntry,
        /// One `propose_batch` call for the whole batch.
        Batch,
    }

    pub struct Cluster {
        nodes: Vec<RawNode<MemStorage>>,
        applied: Vec<u64>,
        inflight: Vec<Message>,
    }

    impl Cluster {
        pub fn new() -> Cluster {
            let nodes = (1..=3)
                .map(|id| {
                    RawNode::new(Config::new(id), MemStorage::new_bootstrap([1, 2, 3])).unwrap()
                })
                .collect();
            let mut c = Cluster {
                nodes,
                applied: vec![0; 3],
                inflight: Vec::new(),
            };
            c.nodes[0].campaign();
            c.pump();
            assert_eq!(c.nodes[0].role(), Role::Leader);
            c
        }

        /// Handles every Ready of every node once (moving their messages to `inflight`).
        fn handle_readies(&mut self) {
            for (i, node) in self.nodes.iter_mut().enumerate() {
                while node.has_ready() {
                    let rd = node.ready().unwrap();
                    self.inflight.extend(rd.messages);
                    if let Some(s) = &rd.snapshot {
                        node.storage_mut().apply_snapshot(s.clone());
                    }
                    node.storage_mut().append(&rd.entries);
                    if let Some(hs) = rd.hard_state {
                        node.storage_mut().set_hard_state(hs);
                    }
                    self.inflight.extend(rd.persisted_messages);
                    if let Some(last) = rd.committed_entries.last() {
                        self.applied[i] = last.index;
                    }
                    node.advance();
                }
            }
        }

        /// Delivers every message in flight.
        fn deliver(&mut self) {
            for m in std::mem::take(&mut self.inflight) {
                let to = (m.to - 1) as usize;
                self.nodes[to].step(m).unwrap();
            }
        }

        /// Handles every Ready and delivers every message until nothing moves.
        fn pump(&mut self) {
            loop {
                self.handle_readies();
                if self.inflight.is_empty() {
                    return;
                }
                self.deliver();
            }
        }

        fn all_applied(&self, index: u64) -> bool {
            self.applied.iter().all(|&a| a >= index)
        }

        /// Proposes `n` entries and runs until all nodes applied them.
        pub fn commit_batch(&mut self, n: usize, mode: Mode) {
            let last = match mode {
                Mode::PerEntry => {
                    let mut last = 0;
                    for _ in 0..n {
                        last = self.nodes[0].propose(super::payload()).unwrap().index;
                    }
                    last
                }
                Mode::Batch => {
                    let batch = (0..n).map(|_| super::payload());
                    self.nodes[0].propose_batch(batch).unwrap().indexes.end - 1
                }
            };
            loop {
                self.pump();
                if self.all_applied(last) {
                    break;
                }
                // Followers learn the commit index with the next heartbeat.
                self.nodes[0].tick();
            }
            self.maybe_compact();
        }

        /// Proposes one entry and runs round by round until all nodes applied it.
        pub fn commit_one(&mut self) {
            let last = self.nodes[0].propose(super::payload()).unwrap().index;
            loop {
                self.handle_readies();
                if self.all_applied(last) {
                    break;
                }
                if self.inflight.is_empty() {
                    self.nodes[0].tick();
                }
                self.deliver();
            }
            self.maybe_compact();
        }

        fn maybe_compact(&mut self) {
            let first = self.nodes[0].storage().first_index();
            if self.nodes[0].applied_index() - first < super::COMPACT_AFTER_ENTRIES {
                return;
            }
            for node in &mut self.nodes {
                let meta = node.snapshot_meta_at_applied().unwrap();
                node.storage_mut().compact(meta).unwrap();
            }
        }
    }
}

mod rs_cluster {
    use raft::eraftpb::{ConfState, Entry, Message, MessageType};
    use raft::storage::MemStorage;
    use raft::{Config, RawNode, StateRole, Storage};

    /// How the leader is given a batch.
    #[derive(Clone, Copy, Debug)]
    pub enum Mode {
        /// `RawNode::propose` once per entry.
        Propose,
        /// One `MsgPropose` carrying every entry, through `RawNode::step`.
        Step,
    }

    pub struct Cluster {
        nodes: Vec<RawNode<MemStorage>>,
        applied: Vec<u64>,
        inflight: Vec<Message>,
    }

    impl Cluster {
        pub fn new() -> Cluster {
            let logger = slog::Logger::root(slog::Discard, slog::o!());
            let nodes = (1..=3)
                .map(|id| {
                    let cfg = Config {
                        id,
                        election_tick: 10,
                        heartbeat_tick: 1,
                        max_size_per_msg: 1 << 20,
                        max_inflight_msgs: 256,
                        pre_vote: true,
                        check_quorum: true,
                        ..Default::default()
                    };
                    let storage =
                        MemStorage::new_with_conf_state(ConfState::from((vec![1, 2, 3], vec![])));
                    RawNode::new(&cfg, storage, &logger).unwrap()
                })
                .collect();
            let mut c = Cluster {
                nodes,
                applied: vec![0; 3],
                inflight: Vec::new(),
            };
            c.nodes[0].campaign().unwrap();
            c.pump();
            assert_eq!(c.nodes[0].raft.state, StateRole::Leader);
            c
        }

        /// Handles every Ready of every node once (raft-rs 0.7's Ready / LightReady cycle).
        fn handle_readies(&mut self) {
            for (i, node) in self.nodes.iter_mut().enumerate() {
                while node.has_ready() {
                    let mut rd = node.ready();
                    self.inflight.extend(rd.take_messages());
                    if !rd.snapshot().is_empty() {
                        let s = rd.snapshot().clone();
                        node.mut_store().wl().apply_snapshot(s).unwrap();
                    }
                    if let Some(e) = rd.committed_entries().last() {
                        self.applied[i] = e.index;
                    }
                    if !rd.entries().is_empty() {
                        node.mut_store().wl().append(rd.entries()).unwrap();
                    }
                    if let Some(hs) = rd.hs() {
                        node.mut_store().wl().set_hardstate(hs.clone());
                    }
                    self.inflight.extend(rd.take_persisted_messages());
                    let mut light = node.advance(rd);
                    if let Some(commit) = light.commit_index() {
                        node.mut_store().wl().mut_hard_state().set_commit(commit);
                    }
                    self.inflight.extend(light.take_messages());
                    if let Some(e) = light.committed_entries().last() {
                        self.applied[i] = e.index;
                    }
                    node.advance_apply();
                }
            }
        }

        fn deliver(&mut self) {
            for m in std::mem::take(&mut self.inflight) {
                let to = (m.to - 1) as usize;
                // A peer may refuse a stale message; that is not an error of the bench.
                let _ = self.nodes[to].step(m);
            }
        }

        fn pump(&mut self) {
            loop {
                self.handle_readies();
                if self.inflight.is_empty() {
                    return;
                }
                self.deliver();
            }
        }

        fn all_applied(&self, index: u64) -> bool {
            self.applied.iter().all(|&a| a >= index)
        }

        fn last_index(&self) -> u64 {
            self.nodes[0].raft.raft_log.last_index()
        }

        pub fn commit_batch(&mut self, n: usize, mode: Mode) {
            match mode {
                Mode::Propose => {
                    for _ in 0..n {
                        self.nodes[0].propose(vec![], super::payload()).unwrap();
                    }
                }
                Mode::Step => {
                    let mut m = Message::default();
                    m.set_msg_type(MessageType::MsgPropose);
                    m.from = 1;
                    let entries: Vec<Entry> = (0..n)
                        .map(|_| Entry {
                            data: super::payload().into(),
                            ..Default::default()
                        })
                        .collect();
                    m.set_entries(entries.into());
                    self.nodes[0].step(m).unwrap();
                }
            }
            let last = self.last_index();
            loop {
                self.pump();
                if self.all_applied(last) {
                    break;
                }
                self.nodes[0].tick();
            }
            self.maybe_compact();
        }

        pub fn commit_one(&mut self) {
            self.nodes[0].propose(vec![], super::payload()).unwrap();
            let last = self.last_index();
            loop {
                self.handle_readies();
                if self.all_applied(last) {
                    break;
                }
                if self.inflight.is_empty() {
                    self.nodes[0].tick();
                }
                self.deliver();
            }
            self.maybe_compact();
        }

        fn maybe_compact(&mut self) {
            let first = self.nodes[0].store().first_index().unwrap();
            let applied = self.nodes[0].raft.raft_log.applied;
            if applied - first < super::COMPACT_AFTER_ENTRIES {
                return;
            }
            for node in &mut self.nodes {
                let applied = node.raft.raft_log.applied;
                node.mut_store().wl().compact(applied).unwrap();
            }
        }
    }
}

/// CPU time of the calling thread: the clusters run on one thread, and on a machine
/// shared with other jobs wall time mostly measures the scheduler (a library measured
/// while a neighbour's build runs looks slower than one measured a second later).
struct ThreadCpuTime;

fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill in.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, d: &Duration) -> f64 {
        d.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WallTime.formatter()
    }
}

fn bench_batches<M: Measurement>(c: &mut Criterion<M>) {
    for &n in &BATCHES {
        let mut group = c.benchmark_group(format!("batch_{n}"));
        group.throughput(Throughput::Elements(n as u64));
        let modes = [
            ("raft-core propose", core_cluster::Mode::PerEntry),
            ("raft-core propose_batch", core_cluster::Mode::Batch),
        ];
        for (name, mode) in modes {
            let mut cluster = core_cluster::Cluster::new();
            group.bench_function(BenchmarkId::new(name, format!("{ENTRY_BYTES}B")), |b| {
                b.iter(|| cluster.commit_batch(n, mode));
            });
        }
        let modes = [
            ("raft-rs propose", rs_cluster::Mode::Propose),
            ("raft-rs step", rs_cluster::Mode::Step),
        ];
        for (name, mode) in modes {
            let mut cluster = rs_cluster::Cluster::new();
            group.bench_function(BenchmarkId::new(name, format!("{ENTRY_BYTES}B")), |b| {
                b.iter(|| cluster.commit_batch(n, mode));
            });
        }
        group.finish();
    }
}

fn bench_closed_loop<M: Measurement>(c: &mut Criterion<M>) {
    let mut group = c.benchmark_group("closed_loop");
    group.throughput(Throughput::Elements(CLOSED_LOOP_PROPOSALS as u64));
    let mut cluster = core_cluster::Cluster::new();
    group.bench_function(
        BenchmarkId::new("raft-core", format!("{ENTRY_BYTES}B")),
        |b| {
            b.iter(|| {
                for _ in 0..CLOSED_LOOP_PROPOSALS {
                    cluster.commit_one();
                }
            });
        },
    );
    let mut cluster = rs_cluster::Cluster::new();
    group.bench_function(
        BenchmarkId::new("raft-rs", format!("{ENTRY_BYTES}B")),
        |b| {
            b.iter(|| {
                for _ in 0..CLOSED_LOOP_PROPOSALS {
                    cluster.commit_one();
                }
            });
        },
    );
    group.finish();
}

/// Paired rounds: raft-core and raft-rs interleaved in time, so that a slow phase of
/// the shared machine hits both libraries alike (criterion measures one function after
/// another, minutes apart, and the ratio of two such medians moves by more than the
/// margin it is meant to show).
mod paired {
    use super::{core_cluster, rs_cluster, thread_cpu_now};
    use std::time::Duration;

    /// Rounds per point; each round runs all four modes once, in a rotating order.
    const ROUNDS: usize = 21;
    /// Entries each mode commits per round (at least one batch).
    const ENTRIES_PER_TURN: usize = 32_768;

    /// One library mode with its own cluster, kept for every round.
    enum Runner {
        Core(core_cluster::Cluster, core_cluster::Mode),
        Rs(rs_cluster::Cluster, rs_cluster::Mode),
    }

    impl Runner {
        fn is_core(&self) -> bool {
            matches!(self, Runner::Core(..))
        }

        /// Entries per second of thread CPU time, committing `batches` batches of `n`
        /// (`n == 0`: `batches` single proposals in the closed loop).
        fn run(&mut self, n: usize, batches: usize) -> f64 {
            let start = thread_cpu_now();
            for _ in 0..batches {
                match self {
                    Runner::Core(c, _) if n == 0 => c.commit_one(),
                    Runner::Core(c, mode) => c.commit_batch(n, *mode),
                    Runner::Rs(c, _) if n == 0 => c.commit_one(),
                    Runner::Rs(c, mode) => c.commit_batch(n, *mode),
                }
            }
            let spent = thread_cpu_now()
                .saturating_sub(start)
                .max(Duration::from_nanos(1));
            (batches * n.max(1)) as f64 / spent.as_secs_f64()
        }
    }

    fn runners(closed_loop: bool) -> Vec<Runner> {
        let mut r = vec![
            Runner::Core(core_cluster::Cluster::new(), core_cluster::Mode::PerEntry),
            Runner::Rs(rs_cluster::Cluster::new(), rs_cluster::Mode::Propose),
        ];
        if !closed_loop {
            r.push(Runner::Core(
                core_cluster::Cluster::new(),
                core_cluster::Mode::Batch,
            ));
            r.push(Runner::Rs(
                rs_cluster::Cluster::new(),
                rs_cluster::Mode::Step,
            ));
        }
        r
    }

    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    }

    /// Runs every point and prints, per point, the median over rounds of
    /// (raft-core's best mode / raft-rs's best mode) in that round.
    pub fn run() {
        println!(
            "paired rounds ({ROUNDS} per point, thread CPU time), raft-core best / raft-rs best:"
        );
        let points: Vec<(String, usize)> = super::BATCHES
            .iter()
            .map(|&n| (format!("batch {n}"), n))
            .chain(std::iter::once(("closed loop".to_string(), 0)))
            .collect();
        for (name, n) in points {
            let mut runners = runners(n == 0);
            let batches = (ENTRIES_PER_TURN / n.max(1)).max(1);
            // One warm-up turn each: allocator, logs and caches reach their steady state.
            for r in runners.iter_mut() {
                r.run(n, batches);
            }
            let mut ratios = Vec::with_capacity(ROUNDS);
            let (mut core_best, mut rs_best) = (Vec::new(), Vec::new());
            for round in 0..ROUNDS {
                let k = runners.len();
                let (mut core, mut rs) = (0f64, 0f64);
                for i in 0..k {
                    let r = &mut runners[(i + round) % k];
                    let rate = r.run(n, batches);
                    if r.is_core() {
                        core = core.max(rate);
                    } else {
                        rs = rs.max(rate);
                    }
                }
                ratios.push(core / rs);
                core_best.push(core);
                rs_best.push(rs);
            }
            let (lo, hi) = ratios
                .iter()
                .fold((f64::MAX, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
            println!(
                "  {name:>11}: {:.2}x (rounds {lo:.2}-{hi:.2}); raft-core {:.0} k/s, raft-rs {:.0} k/s (medians)",
                median(&mut ratios),
                median(&mut core_best) / 1e3,
                median(&mut rs_best) / 1e3,
            );
        }
    }
}

fn main() {
    if std::env::var_os("CORE_BENCH_PAIRED").is_some() {
        paired::run();
        return;
    }
    if std::env::var_os("CORE_BENCH_WALL_CLOCK").is_some() {
        let mut c = Criterion::default().configure_from_args();
        bench_batches(&mut c);
        bench_closed_loop(&mut c);
        c.final_summary();
    } else {
        let mut c = Criterion::default()
            .with_measurement(ThreadCpuTime)
            .configure_from_args();
        bench_batches(&mut c);
        bench_closed_loop(&mut c);
        c.final_summary();
    }
}
