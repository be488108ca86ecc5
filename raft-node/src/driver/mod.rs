//! The driver: one thread owns a node's [`RawNode`] and its [`WalStorage`].
//!
//! Peer messages and client requests arrive on one channel. Each turn of the
//! loop drains everything that arrived, feeds it to the core, and handles the
//! resulting [`raft_core::Ready`] as one batch: appends go to followers
//! *before* the leader's own fsync (replication overlaps the write), then
//! one WAL write + `fdatasync` covers every proposal of the batch (group
//! commit), then the messages that must follow persistence (votes, append
//! acks) go out, then committed entries are applied and their clients
//! answered. The WAL's blocking fsync runs on this dedicated thread, never on
//! an async worker.

mod clock;
mod counters;
mod requests;
mod restore;
mod retire;
mod round;
mod snapshot;
mod status;
mod waiters;

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raft_core::{ConfChange, Config, EntryKind, Message, RawNode};

pub use counters::DriverCounters;
pub use requests::{ClientError, Pending, Reply, Request, WriteOutcome};
pub use status::NodeStatus;

use crate::mvcc::{Applied, SharedStore, Store};
use crate::storage::WalStorage;
use round::{Phase, RoundTimes};
use waiters::Waiters;

/// Where the driver sends peer messages. Sending must never block: a
/// transport that cannot deliver drops the message (Raft retries).
pub trait Transport: Send + 'static {
    /// Queues `msg` for `msg.to`.
    fn send(&self, msg: Message);

    /// A membership change was applied; `context` is what its proposer
    /// attached (the HTTP API attaches the new member's addresses).
    fn conf_change_applied(&self, _cc: &ConfChange, _context: &[u8]) {}

    /// The state machine was restored from a snapshot (start-up, or a
    /// snapshot from the leader): these are the member contexts it holds.
    fn members_restored(&self, _members: &[(u64, Vec<u8>)]) {}
}

/// What goes into a driver.
pub enum Input {
    /// A message from a peer.
    Peer(Message),
    /// A client request.
    Client(Request),
    /// The transport finished sending a snapshot to a follower.
    SnapshotReport {
        /// The follower.
        to: u64,
        /// Whether it was delivered (false: the leader probes and retries).
        delivered: bool,
    },
    /// Finish the current batch (its fsync included) and stop.
    Stop,
}

/// Timing and limits of a driver.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// This node's id.
    pub id: u64,
    /// Real time per core tick.
    pub tick: Duration,
    /// Election timeout in ticks (randomized in `[t, 2t)` by the core).
    pub election_ticks: u32,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: u32,
    /// How long a client waits for its write to be applied or its read to be
    /// confirmed before it gets [`ClientError::Timeout`].
    pub request_timeout: Duration,
    /// Seed of the core's election-timeout randomness.
    pub seed: u64,
    /// Take a snapshot once this many entries were applied since the last
    /// one (0: not by entries).
    pub snapshot_threshold_entries: u64,
    /// Take a snapshot once this many bytes of entries were applied since
    /// the last one (0: not by bytes).
    pub snapshot_threshold_bytes: u64,
    /// A learner is promoted to voter only when its log is at most this many
    /// entries behind the leader's; otherwise the request is refused as busy
    /// (a voter that is far behind cannot help commit, and one more failure
    /// could then stall the cluster until it catches up).
    pub promote_max_lag_entries: u64,
    /// Serve linearizable reads from the leader lease (see the config key
    /// `lease_reads`).
    pub lease_reads: bool,
}

impl DriverOptions {
    /// Defaults for node `id`: 20 ms ticks, elections after 10-20 ticks,
    /// heartbeats every tick, 5 s request timeout, a time-derived seed,
    /// snapshots every 10,000 entries, promotion of learners within 1,000
    /// entries of the leader.
    pub fn new(id: u64) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        DriverOptions {
            id,
            tick: Duration::from_millis(20),
            election_ticks: 10,
            heartbeat_ticks: 1,
            request_timeout: Duration::from_secs(5),
            seed: id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ nanos,
            snapshot_threshold_entries: 100_000,
            snapshot_threshold_bytes: 64 << 20,
            promote_max_lag_entries: 1_000,
            lease_reads: false,
        }
    }
}

/// Wait between attempts to persist while the disk is full.
const DISK_FULL_RETRY: Duration = Duration::from_millis(100);

/// Most inputs folded into one batch before the core is asked for a Ready.
const MAX_BATCH_INPUTS: usize = 4096;

/// Readies are handled (persisted, applied) one after another for at most
/// about this long before the driver takes inputs and ticks again: a
/// follower catching up on a long log, or applying a large compaction, must
/// not stop heartbeats and reads for seconds.
const READY_BUDGET: Duration = Duration::from_millis(50);

/// Driver time per round given to dropping what a compaction made
/// unreadable. With 1,024 keys per round (about 11 ms on a loaded 100,000-key
/// store) every round during a compaction stalled the writes it carried:
/// p99 at 256 writers was 29-45 ms against 21-22 ms with auto-compaction off.
const COMPACTION_BUDGET: Duration = Duration::from_millis(1);

/// Bytes of committed entries per Ready: with [`READY_BUDGET`], what bounds
/// the apply work of one round.
const COMMITTED_BYTES_PER_READY: u64 = 4 << 20;

/// A running driver thread.
pub struct Driver {
    inbox: Sender<Input>,
    store: SharedStore,
    status: Arc<Mutex<NodeStatus>>,
    counters: Arc<DriverCounters>,
    thread: Option<JoinHandle<()>>,
}

impl Driver {
    /// Starts the driver thread for `storage`.
    pub fn spawn(
        opts: DriverOptions,
        storage: WalStorage,
        transport: impl Transport,
    ) -> std::io::Result<Driver> {
        let (tx, rx) = mpsc::channel();
        let status = Arc::new(Mutex::new(NodeStatus::default()));
        let shared = status.clone();
        let counters = Arc::new(DriverCounters::default());
        let shared_counters = counters.clone();
        let store = SharedStore::default();
        let view = store.clone();
        let id = opts.id;
        let thread = std::thread::Builder::new()
            .name(format!("raft-driver-{id}"))
            .spawn(move || {
                if let Err(e) = run(
                    opts,
                    storage,
                    transport,
                    rx,
                    &shared,
                    &shared_counters,
                    &view,
                ) {
                    tracing::error!(node = id, error = %e, "node stopped on error");
                    status::lock(&shared).failed = Some(e);
                }
            })?;
        Ok(Driver {
            inbox: tx,
            store,
            status,
            counters,
            thread: Some(thread),
        })
    }

    /// A cheap handle for feeding this driver from other threads or tasks.
    pub fn handle(&self) -> DriverHandle {
        DriverHandle {
            inbox: self.inbox.clone(),
            store: self.store.clone(),
            status: self.status.clone(),
            counters: self.counters.clone(),
        }
    }

    /// False once the driver thread has ended (stopped, failed on storage, or
    /// panicked on a broken invariant).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the driver after its current batch and waits for it.
    pub fn stop(&mut self) {
        let _ = self.inbox.send(Input::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends inputs to a driver and reads its status.
#[derive(Clone)]
pub struct DriverHandle {
    inbox: Sender<Input>,
    store: SharedStore,
    status: Arc<Mutex<NodeStatus>>,
    counters: Arc<DriverCounters>,
}

impl DriverHandle {
    /// Delivers a peer message (dropped if the driver stopped).
    pub fn deliver(&self, msg: Message) {
        let _ = self.inbox.send(Input::Peer(msg));
    }

    /// Submits a client request. If the driver has stopped, the request's
    /// reply is dropped, which its waiter sees as [`ClientError::Stopped`].
    pub fn submit(&self, req: Request) {
        let _ = self.inbox.send(Input::Client(req));
    }

    /// Reports the end of a snapshot transfer to `to`.
    pub fn report_snapshot(&self, to: u64, delivered: bool) {
        let _ = self.inbox.send(Input::SnapshotReport { to, delivered });
    }

    /// The state machine as of the driver's last batch: a consistent view
    /// that readers use without blocking apply. Serializable reads read it
    /// directly; linearizable reads after a [`Request::ReadIndex`].
    pub fn store(&self) -> std::sync::Arc<Store> {
        self.store.get()
    }

    /// The shared store itself (to wait until an index is applied).
    pub fn shared_store(&self) -> &SharedStore {
        &self.store
    }

    /// The driver's counters (for `/metrics`).
    pub fn counters(&self) -> &DriverCounters {
        &self.counters
    }

    /// The status the driver last published.
    pub fn status(&self) -> NodeStatus {
        status::lock(&self.status).clone()
    }
}

/// The loop. Returns on `Stop`, or with an error when storage fails (the
/// node then stops: fail-stop is the only safe answer to a failed fsync).
fn run(
    opts: DriverOptions,
    storage: WalStorage,
    transport: impl Transport,
    inbox: Receiver<Input>,
    status: &Mutex<NodeStatus>,
    counters: &DriverCounters,
    view: &SharedStore,
) -> Result<(), String> {
    let id = opts.id;
    let mut cfg = Config::new(id);
    cfg.seed = opts.seed;
    cfg.election_timeout_ticks = opts.election_ticks;
    cfg.heartbeat_interval_ticks = opts.heartbeat_ticks;
    // Ticks never come faster than this on average (missed ones are dropped);
    // the core bounds a leader lease with it and the clock passed below.
    cfg.tick_interval_nanos = u64::try_from(opts.tick.as_nanos()).unwrap_or(u64::MAX);
    cfg.max_committed_bytes_per_ready = COMMITTED_BYTES_PER_READY;
    cfg.lease_reads = opts.lease_reads;
    let mut kv = Store::default();
    storage.load_state(&mut kv).map_err(|e| e.to_string())?;
    view.publish(&kv);
    transport.members_restored(&member_list(&kv));
    cfg.applied_index = kv.applied_index();
    let mut node = RawNode::new(cfg, storage).map_err(|e| e.to_string())?;
    let mut waiters = Waiters::new(opts.request_timeout, opts.promote_max_lag_entries);
    let mut next_tick = Instant::now() + opts.tick;
    let mut stopping = false;
    let mut snapshots = snapshot::Snapshotter::new();
    let mut restorer = restore::Restorer::new();
    while !stopping {
        // Committed entries left over from a round that hit its apply budget
        // are taken up at once, after the inputs that arrived meanwhile.
        let wait = if node.has_ready() {
            Duration::ZERO
        } else {
            next_tick.saturating_duration_since(Instant::now())
        };
        let first = match inbox.recv_timeout(wait) {
            Ok(input) => Some(input),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // How long this round keeps the driver busy (the stall histogram).
        let busy_from = Instant::now();
        let mut times = RoundTimes::start(busy_from);
        let mut batch = first
            .into_iter()
            .chain(inbox.try_iter())
            .take(MAX_BATCH_INPUTS);
        // Client writes in a row are proposed together (one `propose_batch`), flushed
        // before any other input so that inputs still reach the core in arrival order.
        let mut writes: Vec<waiters::Write> = Vec::new();
        for input in &mut batch {
            if let Input::Client(Request::Write { cmd, id, reply }) = input {
                counters.proposal();
                writes.push((cmd, id, reply));
                continue;
            }
            if !writes.is_empty() {
                node.set_clock(clock::now_nanos());
                waiters.submit_writes(&mut node, std::mem::take(&mut writes));
            }
            // The core's lease must see the time each input is handled at.
            node.set_clock(clock::now_nanos());
            match input {
                Input::Peer(m) => {
                    if let Some(snap) = crate::snapshot_transfer::snapshot_of(&m) {
                        // Only a snapshot already verified and durable here may be installed.
                        if !node.storage().has_snapshot(snap) {
                            tracing::warn!(
                                node = id,
                                from = m.from,
                                index = snap.index,
                                "InstallSnapshot without its snapshot file; dropped"
                            );
                            continue;
                        }
                    }
                    if let Err(e) = node.step(m) {
                        if let raft_core::Error::Storage(_) = e {
                            let why = read_failure(&node, &e);
                            waiters.fail_all(ClientError::Stopped(why.clone()));
                            return Err(why);
                        }
                        tracing::debug!(node = id, error = %e, "peer message rejected");
                    }
                }
                Input::Client(Request::Snapshot { reply }) if restorer.in_progress() => {
                    let why = "restoring a snapshot from the leader; try again shortly";
                    let _ = reply.send(Err(ClientError::Busy(why.into())));
                }
                Input::Client(Request::Snapshot { reply }) => {
                    snapshots.request(&node, &kv, reply);
                }
                Input::Client(req) => waiters.submit(&mut node, req),
                Input::SnapshotReport { to, delivered } => node.report_snapshot(to, delivered),
                Input::Stop => {
                    stopping = true;
                    break;
                }
            }
        }
        if !writes.is_empty() {
            node.set_clock(clock::now_nanos());
            waiters.submit_writes(&mut node, writes);
        }
        let now = Instant::now();
        if now >= next_tick {
            node.set_clock(clock::now_nanos());
            node.tick();
            next_tick += opts.tick;
            if next_tick < now {
                // Fell behind (a long fsync): do not replay missed ticks in a burst.
                next_tick = now + opts.tick;
            }
        }
        waiters.expire(now);
        match restorer.poll(&mut node, &mut kv) {
            Ok(true) => {
                transport.members_restored(&member_list(&kv));
                counters.installed();
            }
            Ok(false) => {}
            Err(why) => {
                waiters.fail_all(ClientError::Stopped(why.clone()));
                return Err(why);
            }
        }
        times.mark(Phase::Inputs);
        let ready_until = Instant::now() + READY_BUDGET;
        while node.has_ready() && Instant::now() < ready_until {
            let rd = match node.ready() {
                Ok(rd) => rd,
                Err(e) => {
                    // A storage read failed: fail-stop (the process exits non-zero
                    // and a supervisor restarts it from what is durable).
                    let why = read_failure(&node, &e);
                    waiters.fail_all(ClientError::Stopped(why.clone()));
                    return Err(why);
                }
            };
            for m in rd.messages.iter().cloned() {
                transport.send(m);
            }
            times.mark(Phase::Ready);
            let started = Instant::now();
            match persist_until_space(&mut node, &rd, &inbox, &mut waiters, counters, id) {
                Ok(true) => {}
                Ok(false) => {
                    // Stopped while waiting for disk space: nothing of this
                    // Ready was acknowledged, so nothing is lost by leaving.
                    waiters.fail_all(ClientError::Stopped("node is shutting down".into()));
                    return Ok(());
                }
                Err(e) => {
                    waiters.fail_all(ClientError::from_storage(&e));
                    return Err(e.to_string());
                }
            }
            counters.persisted(started.elapsed());
            times.mark(Phase::Persist);
            if let Some(meta) = &rd.snapshot {
                // The state is rebuilt off this thread; the entries after
                // the snapshot wait for it (see `restore.rs`).
                let id = raft_snapshot::SnapshotId {
                    index: meta.index,
                    term: meta.term,
                };
                if let Err(why) = restorer.start(id, &mut node, &mut kv, view) {
                    waiters.fail_all(ClientError::Stopped(why.clone()));
                    return Err(why);
                }
            }
            times.mark(Phase::Install);
            for m in rd.persisted_messages.iter().cloned() {
                transport.send(m);
            }
            for e in &rd.committed_entries {
                // `at`: the entry whose result this is (an earlier one for a
                // retried request id).
                let (at, applied) = match &e.kind {
                    EntryKind::Normal => {
                        snapshots.applied(e.data.len());
                        kv.apply_at(e.index, e.term, &e.data)
                    }
                    EntryKind::ConfChange(cc) => {
                        record_members(&mut kv, cc, &e.data);
                        transport.conf_change_applied(cc, &e.data);
                        kv.skip(e.index, e.term);
                        ((e.index, e.term), Applied::Nothing)
                    }
                    EntryKind::Noop => {
                        kv.skip(e.index, e.term);
                        ((e.index, e.term), Applied::Nothing)
                    }
                };
                waiters.applied_at(e, at, applied);
            }
            times.applied += rd.committed_entries.len();
            waiters.confirmed_reads(&rd.read_states);
            node.advance();
            times.mark(Phase::Apply);
        }
        // What a compaction made unreadable is dropped in steps, for at
        // most COMPACTION_BUDGET per round (at least one step), so a
        // compaction of a large store never holds the driver for long.
        let compacting_since = Instant::now();
        while kv.continue_compaction() && compacting_since.elapsed() < COMPACTION_BUDGET {}
        times.mark(Phase::Apply);
        let published = view.get();
        if published.applied_index() != kv.applied_index()
            || published.is_restoring() != kv.is_restoring()
        {
            view.publish(&kv);
        }
        drop(published);
        if !restorer.in_progress() {
            waiters.serve_reads(&kv);
        }
        times.mark(Phase::Publish);
        snapshots.poll(&mut node, counters);
        if !restorer.in_progress() {
            snapshots.maybe_start(&opts, &node, &kv);
        }
        if let Some(f) = node.storage().take_failure() {
            waiters.fail_all(ClientError::from_storage(&f));
            return Err(f.to_string());
        }
        status::publish(status, &node, &kv);
        times.mark(Phase::Snapshot);
        let took = busy_from.elapsed();
        counters.busy(took);
        times.report(id, took);
    }
    waiters.fail_all(ClientError::Stopped("node is shutting down".into()));
    status::publish(status, &node, &kv);
    Ok(())
}

/// The reason a core stopped on a storage error, naming the file when the
/// storage knows it.
fn read_failure(node: &RawNode<WalStorage>, e: &raft_core::Error) -> String {
    match node.storage().take_failure() {
        Some(f) => format!("storage read failed: {f}"),
        None => e.to_string(),
    }
}

fn member_list(kv: &Store) -> Vec<(u64, Vec<u8>)> {
    kv.members().map(|(id, c)| (id, c.to_vec())).collect()
}

/// Keeps the context of added members (their addresses) in the replicated
/// state, and forgets removed ones.
fn record_members(kv: &mut Store, cc: &ConfChange, context: &[u8]) {
    use raft_core::ConfChangeSingle as C;
    for step in &cc.changes {
        match *step {
            C::AddVoter(id) | C::AddLearner(id) if !context.is_empty() => {
                kv.set_member(id, Some(context.to_vec()))
            }
            C::Remove(id) => kv.set_member(id, None),
            _ => {}
        }
    }
}

/// Persists `rd`. On a full disk the WAL is left exactly as before the
/// attempt, so the same Ready is retried until space returns; meanwhile
/// clients are answered `DiskFull` (507) at once and peer messages are
/// dropped (Raft retransmits), and waiting clients time out as usual.
/// Returns `Ok(false)` if told to stop meanwhile.
fn persist_until_space(
    node: &mut RawNode<WalStorage>,
    rd: &raft_core::Ready,
    inbox: &Receiver<Input>,
    waiters: &mut Waiters,
    counters: &DriverCounters,
    id: u64,
) -> Result<bool, crate::storage::StorageFailure> {
    let mut warned = false;
    loop {
        match node.storage_mut().persist(rd) {
            Ok(()) => {
                if warned {
                    tracing::warn!(node = id, "disk space is back; resuming");
                }
                return Ok(true);
            }
            Err(e) if e.is_disk_full() => {
                if !warned {
                    tracing::error!(node = id, error = %e, "disk full: refusing writes until space returns");
                    counters.disk_full();
                    warned = true;
                }
                // Clients already waiting keep their deadlines (504: their
                // entries may still commit through other nodes).
                waiters.expire(Instant::now());
                let deadline = Instant::now() + DISK_FULL_RETRY;
                loop {
                    match inbox.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(Input::Client(req)) => refuse_disk_full(req),
                        Ok(Input::Peer(_) | Input::SnapshotReport { .. }) => {}
                        Ok(Input::Stop) | Err(RecvTimeoutError::Disconnected) => return Ok(false),
                        Err(RecvTimeoutError::Timeout) => break,
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Answers a request while the disk is full: `DiskFull` (serializable reads
/// do not come here; they read the published view).
fn refuse_disk_full(req: Request) {
    match req {
        Request::ReadIndex { reply } => {
            let _ = reply.send(Err(ClientError::DiskFull));
        }
        Request::Write { reply, .. } => {
            let _ = reply.send(Err(ClientError::DiskFull));
        }
        Request::ChangeMembers { reply, .. } | Request::Snapshot { reply } => {
            let _ = reply.send(Err(ClientError::DiskFull));
        }
        Request::TransferLeader { reply, .. } => {
            let _ = reply.send(Err(ClientError::DiskFull));
        }
    }
}
