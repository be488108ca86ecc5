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
use crate::kv::Command;
use crate::storage::{StorageFailure, WalStorage};

/// Real time per core tick.
pub const TICK: Duration = Duration::from_millis(20);

type Router = Arc<Mutex<HashMap<u64, DriverHandle>>>;

/// Delivers messages to the drivers of the other nodes in this process; a
/// stopped node is like a lost packet.
struct ChannelTransport(Router);

impl Transport for ChannelTransport {
    fn send(&self, msg: Message) {
        let to = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&msg.to)
            .cloned();
        if let Some(h) = to {
            h.deliver(msg);
        }
    }
}

/// A local cluster of nodes `1..=n` with data under one directory.
pub struct LocalCluster {
    dir: PathBuf,
    voters: Vec<u64>,
    router: Router,
    /// Last status of every node ever started (kept after a stop).
    last_status: HashMap<u64, NodeStatus>,
    running: HashMap<u64, Driver>,
}

impl LocalCluster {
    /// Starts (or restarts, if `dir` holds data) nodes `1..=n`.
    pub fn start(dir: &Path, n: u64) -> Result<LocalCluster, StorageFailure> {
        let mut c = LocalCluster {
            dir: dir.to_path_buf(),
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
        let storage = WalStorage::open_or_bootstrap(&self.node_dir(id), &self.voters)?;
        let mut opts = DriverOptions::new(id);
        opts.tick = TICK;
        let driver = Driver::spawn(opts, storage, ChannelTransport(self.router.clone())).map_err(
            |source| StorageFailure::Io {
                path: self.node_dir(id),
                source,
            },
        )?;
        self.router
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, driver.handle());
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
            let (req, rx) = Request::read(key, false);
            driver.handle().submit(req);
            match rx.blocking_recv() {
                Ok(r @ Ok(_)) => return r,
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
