//! A cluster of nodes in one process: each node runs the real core on its own
//! thread with a durable [`WalStorage`], and messages travel over in-process
//! channels. Used by `raft-node demo` and tests; the networked node (QUIC +
//! HTTP) drives the core the same way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_core::{Message, Role};

use crate::driver::{
    ClientError, Driver, DriverHandle, DriverOptions, NodeStatus, Request, Transport, WriteOutcome,
};
use crate::mvcc::Command;
use crate::snapshot_transfer::{deliver_install, snapshot_of, CHUNK_BYTES};
use crate::storage::{SnapshotPolicy, StorageFailure, StorageIo, WalStorage};
use raft_snapshot::{Received, SnapshotId, SnapshotStore};

/// Real time per core tick.
pub const TICK: Duration = Duration::from_millis(20);

type Router = Arc<Mutex<HashMap<u64, (DriverHandle, SnapshotStore)>>>;

/// Delivers messages to the drivers of the other nodes in this process; a
/// stopped node is like a lost packet. A snapshot is copied chunk by chunk
/// into the receiver's store (verified there) before its `InstallSnapshot`
/// message is delivered, as the networked node does over QUIC.
struct ChannelTransport {
    router: Router,
    me: u64,
    /// Snapshots being copied to a node: one copy of each at a time.
    copying: Arc<Mutex<std::collections::HashSet<(u64, SnapshotId)>>>,
}

impl ChannelTransport {
    fn copy_snapshot(from: &SnapshotStore, to: &SnapshotStore, id: SnapshotId) -> bool {
        let copy = || -> Result<bool, raft_snapshot::Error> {
            let mut source = from.chunks(id, CHUNK_BYTES)?;
            let mut rx = to.receiver().expecting(id);
            while let Some(chunk) = source.next_chunk()? {
                if let Received::Installed(_) = rx.accept(&chunk)? {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        copy().unwrap_or_else(|e| {
            tracing::warn!(index = id.index, error = %e, "local snapshot copy failed");
            false
        })
    }
}

impl Transport for ChannelTransport {
    fn send(&self, msg: Message) {
        let (to, mine) = {
            let r = self.router.lock().unwrap_or_else(|e| e.into_inner());
            (
                r.get(&msg.to).cloned(),
                r.get(&self.me).map(|x| x.1.clone()),
            )
        };
        let Some((handle, their_store)) = to else {
            return;
        };
        let Some(id) = snapshot_of(&msg) else {
            handle.deliver(msg);
            return;
        };
        // Copying and decoding a snapshot is slow: not on the sender's
        // driver thread (the networked node streams it from a task too).
        let to = msg.to;
        if !self
            .copying
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((to, id))
        {
            return; // The copy under way delivers it.
        }
        let (router, me, copying) = (self.router.clone(), self.me, self.copying.clone());
        let copier = std::thread::Builder::new().name(format!("snapshot-to-{to}"));
        let spawned = copier.spawn(move || {
            let copied = mine.is_some_and(|s| Self::copy_snapshot(&s, &their_store, id));
            if copied {
                deliver_install(&handle, &their_store, msg);
            } else {
                let sender = router
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&me)
                    .cloned();
                if let Some((sender, _)) = sender {
                    sender.report_snapshot(to, false);
                }
            }
            copying
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(to, id));
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread to send a snapshot on");
            self.copying
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(to, id));
        }
    }
}

/// A local cluster of nodes `1..=n` with data under one directory.
pub struct LocalCluster {
    dir: PathBuf,
    voters: Vec<u64>,
    router: Router,
    /// Snapshot after this many applied entries (0: never).
    snapshot_threshold: u64,
    /// File system and WAL options of each node.
    io: Box<dyn Fn(u64) -> StorageIo>,
    /// Last status of every node ever started (kept after a stop).
    last_status: HashMap<u64, NodeStatus>,
    running: HashMap<u64, Driver>,
}

impl LocalCluster {
    /// Starts (or restarts, if `dir` holds data) nodes `1..=n`.
    pub fn start(dir: &Path, n: u64) -> Result<LocalCluster, StorageFailure> {
        Self::start_with(dir, n, 0)
    }

    /// Like [`start`](Self::start), with automatic snapshots every
    /// `snapshot_threshold` applied entries (0: never).
    pub fn start_with(
        dir: &Path,
        n: u64,
        snapshot_threshold: u64,
    ) -> Result<LocalCluster, StorageFailure> {
        Self::start_with_io(dir, n, snapshot_threshold, |_| StorageIo::default())
    }

    /// Like [`start_with`](Self::start_with), with each node's file system
    /// and WAL options chosen by `io` (tests inject faults this way).
    pub fn start_with_io(
        dir: &Path,
        n: u64,
        snapshot_threshold: u64,
        io: impl Fn(u64) -> StorageIo + 'static,
    ) -> Result<LocalCluster, StorageFailure> {
        let mut c = LocalCluster {
            dir: dir.to_path_buf(),
            snapshot_threshold,
            io: Box::new(io),
            voters: (1..=n).collect(),
            router: Arc::default(),
            last_status: HashMap::new(),
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
        let policy = SnapshotPolicy {
            keep: 2,
            trailing_entries: 10,
        };
        let storage =
            WalStorage::open_with_io(&self.node_dir(id), &self.voters, policy, (self.io)(id))?;
        let store = storage.store().clone();
        let mut opts = DriverOptions::new(id);
        opts.tick = TICK;
        opts.snapshot_threshold_entries = self.snapshot_threshold;
        // Tests choose when snapshots happen by entries only.
        opts.snapshot_threshold_bytes = 0;
        let transport = ChannelTransport {
            router: self.router.clone(),
            me: id,
            copying: Arc::default(),
        };
        let driver =
            Driver::spawn(opts, storage, transport).map_err(|source| StorageFailure::Io {
                path: self.node_dir(id),
                source,
            })?;
        self.router
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (driver.handle(), store));
        self.running.insert(id, driver);
        Ok(())
    }

    /// Stops node `id` abruptly: it drops off the network at once. Everything it
    /// acknowledged is already on disk.
    pub fn stop_node(&mut self, id: u64) {
        self.router
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(mut d) = self.running.remove(&id) {
            d.stop();
            self.last_status.insert(id, d.handle().status());
        }
    }

    /// A handle to the driver of running node `id`.
    pub fn handle(&self, id: u64) -> Option<DriverHandle> {
        self.running.get(&id).map(Driver::handle)
    }

    /// Ids of running nodes.
    pub fn running(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.running.keys().copied().collect();
        ids.sort();
        ids
    }

    /// Current status of node `id` (its last one if stopped).
    pub fn status(&self, id: u64) -> NodeStatus {
        match self.running.get(&id) {
            Some(d) => d.handle().status(),
            None => self.last_status.get(&id).cloned().unwrap_or_default(),
        }
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

    /// Writes `cmd` through the current leader, retrying across leader
    /// changes until `timeout`; returns where and how it was applied.
    pub fn write(&self, cmd: Command, timeout: Duration) -> Result<WriteOutcome, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut last_err = ClientError::NotLeader { leader: None };
        while Instant::now() < deadline {
            let Some(driver) = self.leader().and_then(|l| self.running.get(&l)) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let (req, rx) = Request::write(cmd.clone());
            driver.handle().submit(req);
            match rx.blocking_recv() {
                Ok(Ok(done)) => return Ok(done),
                // Unknown outcome: retrying could apply the command twice.
                Ok(Err(ClientError::Timeout)) => return Err(ClientError::Timeout),
                Ok(Err(e)) => last_err = e,
                Err(e) => last_err = e.into(),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(last_err)
    }

    /// A linearizable read of `key` through the current leader.
    pub fn read(&self, key: &str, timeout: Duration) -> Result<Option<Vec<u8>>, ClientError> {
        let deadline = Instant::now() + timeout;
        let mut last_err = ClientError::NotLeader { leader: None };
        while Instant::now() < deadline {
            let Some(driver) = self.leader().and_then(|l| self.running.get(&l)) else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let (req, rx) = Request::read_index();
            let handle = driver.handle();
            handle.submit(req);
            match rx.blocking_recv() {
                Ok(Ok(_)) => match handle.store().get(key.as_bytes()) {
                    Ok(v) => return Ok(v.map(<[u8]>::to_vec)),
                    // A leader still restoring a snapshot: retried.
                    Err(e) => last_err = ClientError::Busy(e.message()),
                },
                Ok(Err(e)) => last_err = e,
                Err(e) => last_err = e.into(),
            }
            std::thread::sleep(Duration::from_millis(10));
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
