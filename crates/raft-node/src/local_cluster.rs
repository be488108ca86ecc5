//! A cluster of nodes in one process: each node runs the real core on its own
//! thread with a durable [`WalStorage`], and messages travel over in-process
//! channels. Used by `raft-node demo` and tests; the networked node (QUIC +
//! HTTP) drives the core the same way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raft_core::{Config, EntryKind, Message, RawNode, Role};

use crate::kv::KvStore;
use crate::storage::{StorageFailure, WalStorage};

/// Real time per core tick.
pub const TICK: Duration = Duration::from_millis(20);

/// Outcome of a proposal: the log index it was applied at, or why not.
pub type ProposeResult = Result<u64, String>;

enum Input {
    Msg(Message),
    Propose(Vec<u8>, Sender<ProposeResult>),
    Stop,
}

/// What a node last reported about itself.
#[derive(Debug, Clone, Default)]
pub struct NodeStatus {
    /// Current role.
    pub role: Option<Role>,
    /// Current term.
    pub term: u64,
    /// Known leader.
    pub leader: Option<u64>,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Keys in the state machine.
    pub keys: usize,
    /// Digest of the state machine.
    pub digest: u32,
    /// Set when the node stopped on an error.
    pub failed: Option<String>,
}

type Router = Arc<Mutex<HashMap<u64, Sender<Input>>>>;

struct Running {
    inbox: Sender<Input>,
    thread: JoinHandle<()>,
}

/// A local cluster of nodes `1..=n` with data under one directory.
pub struct LocalCluster {
    dir: PathBuf,
    voters: Vec<u64>,
    router: Router,
    statuses: HashMap<u64, Arc<Mutex<NodeStatus>>>,
    running: HashMap<u64, Running>,
}

impl LocalCluster {
    /// Starts (or restarts, if `dir` holds data) nodes `1..=n`.
    pub fn start(dir: &Path, n: u64) -> Result<LocalCluster, StorageFailure> {
        let mut c = LocalCluster {
            dir: dir.to_path_buf(),
            voters: (1..=n).collect(),
            router: Arc::default(),
            statuses: HashMap::new(),
            running: HashMap::new(),
        };
        for id in 1..=n {
            c.start_node(id)?;
        }
        Ok(c)
    }

    /// Data directory of node `id`.
    pub fn node_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}"))
    }

    /// Starts node `id` from whatever its directory holds.
    pub fn start_node(&mut self, id: u64) -> Result<(), StorageFailure> {
        let storage = WalStorage::open_or_bootstrap(&self.node_dir(id), &self.voters)?;
        let (tx, rx) = mpsc::channel();
        let status = self.statuses.entry(id).or_default().clone();
        *status.lock().unwrap_or_else(|e| e.into_inner()) = NodeStatus::default();
        let router = self.router.clone();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ nanos;
        let thread = std::thread::Builder::new()
            .name(format!("node-{id}"))
            .spawn(move || {
                if let Err(e) = drive(id, seed, storage, rx, &router, &status) {
                    tracing::error!(node = id, error = %e, "node stopped on error");
                    status.lock().unwrap_or_else(|e| e.into_inner()).failed = Some(e);
                }
            })
            .map_err(|source| StorageFailure::Io {
                path: self.node_dir(id),
                source,
            })?;
        self.router
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx.clone());
        self.running.insert(id, Running { inbox: tx, thread });
        Ok(())
    }

    /// Stops node `id` abruptly: it drops off the network at once. Everything it
    /// acknowledged is already on disk.
    pub fn stop_node(&mut self, id: u64) {
        self.router
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(r) = self.running.remove(&id) {
            let _ = r.inbox.send(Input::Stop);
            let _ = r.thread.join();
        }
    }

    /// Ids of running nodes.
    pub fn running(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.running.keys().copied().collect();
        ids.sort();
        ids
    }

    /// Last reported status of node `id`.
    pub fn status(&self, id: u64) -> NodeStatus {
        self.statuses
            .get(&id)
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// The leader that a majority of running nodes agree on, if any.
    pub fn leader(&self) -> Option<u64> {
        let ids = self.running();
        ids.iter().copied().find(|&id| {
            let s = self.status(id);
            s.role == Some(Role::Leader)
                && ids
                    .iter()
                    .filter(|&&o| self.status(o).leader == Some(id))
                    .count()
                    * 2
                    > self.voters.len()
        })
    }

    /// Waits up to `timeout` for `cond` to hold.
    pub fn wait_for(&self, timeout: Duration, mut cond: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond(self)
    }

    /// Proposes `data` through the current leader, retrying across leader
    /// changes until `timeout`; returns the index it was applied at.
    pub fn propose(&self, data: Vec<u8>, timeout: Duration) -> ProposeResult {
        let deadline = Instant::now() + timeout;
        let mut last_err = "no leader".to_string();
        while Instant::now() < deadline {
            let Some(leader) = self.leader() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let Some(r) = self.running.get(&leader) else {
                continue;
            };
            let (tx, rx) = mpsc::channel();
            if r.inbox.send(Input::Propose(data.clone(), tx)).is_err() {
                continue;
            }
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Ok(index)) => return Ok(index),
                Ok(Err(e)) => last_err = e,
                Err(_) => last_err = "timed out waiting for commit".into(),
            }
        }
        Err(last_err)
    }

    /// Stops every node.
    pub fn shutdown(&mut self) {
        for id in self.running() {
            self.stop_node(id);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn send(router: &Router, m: Message) {
    let to = m.to;
    let tx = router
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&to)
        .cloned();
    // A stopped node is like a lost packet: Raft retries.
    if let Some(tx) = tx {
        let _ = tx.send(Input::Msg(m));
    }
}

/// The driver loop of one node: feed inputs, then handle each Ready in the
/// order the core requires (send, persist + fsync, send acks, apply, advance).
fn drive(
    id: u64,
    seed: u64,
    storage: WalStorage,
    inbox: Receiver<Input>,
    router: &Router,
    status: &Mutex<NodeStatus>,
) -> Result<(), String> {
    let mut cfg = Config::new(id);
    cfg.seed = seed;
    let mut node = RawNode::new(cfg, storage).map_err(|e| e.to_string())?;
    let mut kv = KvStore::default();
    let mut waiters: HashMap<u64, (u64, Sender<ProposeResult>)> = HashMap::new();
    let mut next_tick = Instant::now() + TICK;
    loop {
        match inbox.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
            Ok(Input::Msg(m)) => {
                if let Err(e) = node.step(m) {
                    tracing::debug!(node = id, error = %e, "message rejected");
                }
            }
            Ok(Input::Propose(data, reply)) => match node.propose(data) {
                Ok(at) => {
                    waiters.insert(at.index, (at.term, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(e.to_string()));
                }
            },
            Ok(Input::Stop) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
            Err(RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= next_tick {
            node.tick();
            next_tick += TICK;
        }
        while node.has_ready() {
            let rd = node.ready();
            for m in rd.messages.iter().cloned() {
                send(router, m);
            }
            node.storage_mut().persist(&rd).map_err(|e| e.to_string())?;
            for m in rd.persisted_messages.iter().cloned() {
                send(router, m);
            }
            for e in &rd.committed_entries {
                match e.kind {
                    EntryKind::Normal => kv.apply(e.index, &e.data),
                    _ => kv.skip(e.index),
                }
                if let Some((term, reply)) = waiters.remove(&e.index) {
                    let outcome = if term == e.term {
                        Ok(e.index)
                    } else {
                        Err("proposal was overwritten by a new leader".to_string())
                    };
                    let _ = reply.send(outcome);
                }
            }
            node.advance();
        }
        if let Some(f) = node.storage().take_failure() {
            return Err(f.to_string());
        }
        let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
        s.role = Some(node.role());
        s.term = node.term();
        s.leader = node.leader_id();
        s.commit = node.commit_index();
        if s.applied != kv.applied_index() {
            s.applied = kv.applied_index();
            s.keys = kv.len();
            s.digest = kv.digest();
        }
    }
}
