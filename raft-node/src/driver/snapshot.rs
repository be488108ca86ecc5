//! Taking a snapshot of the applied state: automatically once the log since
//! the last snapshot passes `snapshot_threshold_entries` entries or
//! `snapshot_threshold_bytes` bytes (and, for a state larger than
//! `snapshot_threshold_bytes`, half the state's size in bytes), or on
//! request.
//!
//! The driver only captures: the snapshot's metadata and a clone of the
//! MVCC store, which is O(1) (its maps are structurally shared, so later
//! writes copy only the paths they change). A `snapshot` thread serializes,
//! compresses and fsyncs that view into the snapshot store while the driver
//! keeps applying and answering; the driver then adopts it (marks it in the
//! WAL and compacts, which deletes whole segments). So the driver never
//! stalls for longer than the capture and the compaction, whatever the size
//! of the state. One snapshot is written at a time.

use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use raft_core::{RawNode, SnapshotMeta};

use super::counters::DriverCounters;
use super::requests::Reply;
use super::{ClientError, DriverOptions};
use crate::mvcc::Store;
use crate::storage::{StorageFailure, WalStorage};

/// How long to wait before trying again after a failed snapshot.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// What the snapshot thread reports.
struct Written {
    meta: SnapshotMeta,
    result: Result<u64, StorageFailure>,
    took: Duration,
}

/// The driver's side of snapshotting.
pub(super) struct Snapshotter {
    done_tx: Sender<Written>,
    done_rx: Receiver<Written>,
    /// The index of the snapshot being written, if one is.
    in_flight: Option<u64>,
    /// Requests waiting for the snapshot in flight.
    waiting: Vec<Reply<u64>>,
    /// After a failure, no automatic snapshot before this.
    retry_at: Option<Instant>,
    /// Bytes of entries applied since the last snapshot started.
    log_bytes: u64,
}

impl Snapshotter {
    pub(super) fn new() -> Self {
        let (done_tx, done_rx) = mpsc::channel();
        Snapshotter {
            done_tx,
            done_rx,
            in_flight: None,
            waiting: Vec::new(),
            retry_at: None,
            log_bytes: 0,
        }
    }

    /// Counts an applied entry's payload towards the byte threshold.
    pub(super) fn applied(&mut self, bytes: usize) {
        self.log_bytes = self.log_bytes.saturating_add(bytes as u64);
    }

    /// Starts an automatic snapshot if one is due.
    pub(super) fn maybe_start(
        &mut self,
        opts: &DriverOptions,
        node: &RawNode<WalStorage>,
        kv: &Store,
    ) {
        if self.in_flight.is_some() || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let base = node.storage().snapshot().index;
        let by_entries = opts.snapshot_threshold_entries > 0
            && kv.applied_index() >= base + opts.snapshot_threshold_entries;
        let by_bytes = opts.snapshot_threshold_bytes > 0
            && self.log_bytes >= opts.snapshot_threshold_bytes
            && kv.applied_index() > base;
        // Writing a snapshot costs the whole state. Past
        // `snapshot_threshold_bytes` of state, wait until the log since the
        // last snapshot holds half the state's size too, so that snapshots
        // never cost more than twice the log they replace (a 1 GiB state
        // is not rewritten every 10,000 small entries).
        let size = kv.size();
        let amortized = opts.snapshot_threshold_bytes == 0
            || size <= opts.snapshot_threshold_bytes
            || self.log_bytes.saturating_mul(2) >= size;
        if (by_entries || by_bytes) && amortized {
            if let Err(e) = self.start(node, kv) {
                tracing::error!(error = %e, "cannot start a snapshot; retrying in 10 s");
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
            }
        }
    }

    /// A snapshot on request: answered when the one in flight (or a new one
    /// of the applied state) is durable and adopted.
    pub(super) fn request(&mut self, node: &RawNode<WalStorage>, kv: &Store, reply: Reply<u64>) {
        if self.in_flight.is_none() {
            if kv.applied_index() <= node.storage().snapshot().index {
                let _ = reply.send(Ok(node.storage().snapshot().index));
                return;
            }
            if let Err(e) = self.start(node, kv) {
                tracing::error!(error = %e, "snapshot failed");
                let _ = reply.send(Err(ClientError::from_storage(&e)));
                return;
            }
        }
        self.waiting.push(reply);
    }

    /// Captures the applied state and hands it to a snapshot thread.
    fn start(&mut self, node: &RawNode<WalStorage>, kv: &Store) -> Result<(), StorageFailure> {
        let meta = node
            .snapshot_meta_at_applied()
            .map_err(|e| StorageFailure::Corrupt(format!("snapshot metadata: {e}")))?;
        debug_assert_eq!(
            meta.index,
            kv.applied_index(),
            "snapshot of the applied state"
        );
        let view = kv.clone();
        let store = node.storage().store().clone();
        let done = self.done_tx.clone();
        let index = meta.index;
        std::thread::Builder::new()
            .name("snapshot".into())
            .spawn(move || {
                let started = Instant::now();
                let result = WalStorage::write_snapshot(&store, &meta, |w| view.write_snapshot(w));
                // Free the view here, not on the driver.
                drop(view);
                let took = started.elapsed();
                let _ = done.send(Written { meta, result, took });
            })
            .map_err(|e| {
                StorageFailure::Corrupt(format!("cannot start the snapshot thread: {e}"))
            })?;
        self.in_flight = Some(index);
        self.log_bytes = 0;
        tracing::debug!(index, "snapshot started");
        Ok(())
    }

    /// Adopts a snapshot the thread finished, if any, and answers the
    /// requests waiting for it.
    pub(super) fn poll(&mut self, node: &mut RawNode<WalStorage>, counters: &DriverCounters) {
        let Ok(w) = self.done_rx.try_recv() else {
            return;
        };
        self.in_flight = None;
        let index = w.meta.index;
        let adopted = w.result.and_then(|bytes| {
            let catch_up = node.catch_up_index();
            node.storage_mut().adopt_snapshot(w.meta, bytes, catch_up)
        });
        let answer = match adopted {
            Ok(_) => {
                counters.snapshot(w.took);
                self.retry_at = None;
                Ok(index)
            }
            Err(e) => {
                // The log keeps growing but nothing is lost; try again later.
                tracing::error!(index, error = %e, "snapshot failed; retrying in 10 s");
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                Err(ClientError::from_storage(&e))
            }
        };
        for reply in self.waiting.drain(..) {
            let _ = reply.send(answer.clone());
        }
    }
}
