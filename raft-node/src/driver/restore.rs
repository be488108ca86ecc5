//! Rebuilding the state machine from a snapshot the core installed, off the
//! driver thread and without holding the old state meanwhile.
//!
//! When the core installs a snapshot from the leader (`Ready::snapshot`,
//! already durable here), the driver drops its own state at once: readers
//! get a stand-in without keys ([`Store::stand_in`], whose key reads fail
//! as "restoring"), the core holds committed entries back
//! ([`RawNode::hold_apply`]), and a thread decodes the snapshot's state.
//! Replication, votes and heartbeats go on meanwhile. When the state is
//! decoded the driver swaps it in and releases the entries after it.
//!
//! Serving reads from the old state during the decode instead would hold
//! two whole states at once: a follower could then only ever catch up with
//! a state half the size of its memory.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_core::RawNode;
use raft_snapshot::{SnapshotId, SnapshotStore};

use super::retire::{retire, wait_until_retired};
use crate::mvcc::{SharedStore, Store};
use crate::storage::{StorageFailure, WalStorage};

/// How long a decode waits for the replaced state to be freed first.
const RETIRE_WAIT: Duration = Duration::from_secs(5);

/// At most one state is decoded at a time in the process (memory is
/// process-wide): a newer install waits for the decode before it.
static DECODING: Mutex<()> = Mutex::new(());

/// A decoded state (or why it could not be read).
struct Decoded {
    id: SnapshotId,
    result: Result<Store, StorageFailure>,
}

/// The driver's side of restores: which snapshot it waits for, and the
/// decoded states coming back.
pub(super) struct Restorer {
    /// The installed snapshot whose state is being decoded.
    current: Option<SnapshotId>,
    /// The same, for the decoding threads (a superseded one skips its work).
    wanted: Arc<Mutex<Option<SnapshotId>>>,
    done_tx: Sender<Decoded>,
    done_rx: Receiver<Decoded>,
}

impl Restorer {
    pub(super) fn new() -> Self {
        let (done_tx, done_rx) = mpsc::channel();
        Restorer {
            current: None,
            wanted: Arc::default(),
            done_tx,
            done_rx,
        }
    }

    /// Whether the state machine is a stand-in waiting for a decode.
    pub(super) fn in_progress(&self) -> bool {
        self.current.is_some()
    }

    /// Starts rebuilding `kv` from snapshot `id`, which the core just
    /// installed: frees the current state (readers get its stand-in), holds
    /// the core's committed entries back, and decodes the snapshot on a
    /// thread. A restore already under way is superseded.
    pub(super) fn start(
        &mut self,
        id: SnapshotId,
        node: &mut RawNode<WalStorage>,
        kv: &mut Store,
        view: &SharedStore,
    ) -> Result<(), String> {
        if !kv.is_restoring() {
            let stand_in = kv.stand_in();
            retire(Box::new(std::mem::replace(kv, stand_in)));
            // The published view shares the old state: it goes too.
            retire(view.publish(kv));
        }
        node.hold_apply(true);
        self.current = Some(id);
        *lock(&self.wanted) = Some(id);
        let (snapshots, wanted, done) = (
            node.storage().store().clone(),
            self.wanted.clone(),
            self.done_tx.clone(),
        );
        std::thread::Builder::new()
            .name("restore-state".into())
            .spawn(move || decode(id, &snapshots, &wanted, &done))
            .map(drop)
            .map_err(|e| format!("no thread to restore snapshot {} on: {e}", id.index))
    }

    /// Swaps in the state being decoded if it is ready, and releases the
    /// core's committed entries. Returns whether it did; an error if the
    /// snapshot the core installed cannot be read (the node must stop: a
    /// restart reads it again from disk).
    pub(super) fn poll(
        &mut self,
        node: &mut RawNode<WalStorage>,
        kv: &mut Store,
    ) -> Result<bool, String> {
        while let Ok(d) = self.done_rx.try_recv() {
            if self.current != Some(d.id) {
                // Superseded by a newer install while it was decoded.
                if let Ok(store) = d.result {
                    retire(Box::new(store));
                }
                continue;
            }
            let store = d.result.map_err(|e| {
                format!(
                    "cannot load the state of installed snapshot {}-{}: {e}",
                    d.id.index, d.id.term
                )
            })?;
            *kv = store;
            self.current = None;
            *lock(&self.wanted) = None;
            node.hold_apply(false);
            return Ok(true);
        }
        Ok(false)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The restore thread: waits its turn and for the replaced state to be
/// freed, then reads the snapshot's state and hands it back.
fn decode(
    id: SnapshotId,
    snapshots: &SnapshotStore,
    wanted: &Mutex<Option<SnapshotId>>,
    done: &Sender<Decoded>,
) {
    let _one = lock(&DECODING);
    if *lock(wanted) != Some(id) {
        tracing::debug!(
            index = id.index,
            "a newer snapshot was installed; not decoding this one"
        );
        return;
    }
    let waited = wait_until_retired(RETIRE_WAIT);
    if waited >= Duration::from_millis(100) {
        tracing::info!(
            index = id.index,
            waited_ms = waited.as_millis() as u64,
            "waited for the replaced state to be freed before decoding a snapshot"
        );
    }
    let started = Instant::now();
    let result = crate::storage::read_state(snapshots, id);
    if *lock(wanted) != Some(id) {
        // Superseded meanwhile: freed here, before the next decode may start.
        tracing::info!(
            index = id.index,
            "a newer snapshot was installed while this one was decoded"
        );
        return;
    }
    tracing::info!(
        index = id.index,
        term = id.term,
        took_ms = started.elapsed().as_millis() as u64,
        ok = result.is_ok(),
        "decoded an installed snapshot's state"
    );
    // The driver may have stopped meanwhile: then nobody needs it.
    let _ = done.send(Decoded { id, result });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{Command, MvccError};
    use raft_core::Config;

    fn store_with(key: &str) -> Store {
        let mut s = Store::default();
        s.apply(1, 1, &Command::put(key, "v").encode());
        s
    }

    /// A single-voter node whose snapshot holds `seeded`, and that snapshot's id.
    fn node_with_snapshot(dir: &std::path::Path) -> (RawNode<WalStorage>, SnapshotId) {
        WalStorage::seed(dir, &[1], &store_with("seeded")).unwrap();
        let storage = WalStorage::open_or_bootstrap(dir, &[1]).unwrap();
        let meta = storage.snapshot();
        let id = SnapshotId {
            index: meta.index,
            term: meta.term,
        };
        (RawNode::new(Config::new(1), storage).unwrap(), id)
    }

    fn wait_for_poll(
        r: &mut Restorer,
        node: &mut RawNode<WalStorage>,
        kv: &mut Store,
    ) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !r.poll(node, kv)? {
            assert!(Instant::now() < deadline, "no decoded state");
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    #[test]
    fn the_old_state_is_dropped_at_the_install_and_apply_waits_for_the_decoded_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut node, id) = node_with_snapshot(dir.path());
        let view = SharedStore::default();
        let mut kv = store_with("old");
        view.publish(&kv);
        let old_view = Arc::downgrade(&view.get());
        let mut r = Restorer::new();

        r.start(id, &mut node, &mut kv, &view).unwrap();
        assert!(r.in_progress() && node.apply_held());
        assert!(kv.is_restoring());
        let seen = view.get();
        assert!(seen.is_restoring(), "readers see the stand-in");
        assert_eq!(seen.get(b"old"), Err(MvccError::Restoring));
        assert_eq!(seen.revision(), 2, "with the old state's revision");
        drop(seen);
        wait_until_retired(Duration::from_secs(10));
        assert!(old_view.upgrade().is_none(), "the old state was freed");

        wait_for_poll(&mut r, &mut node, &mut kv).unwrap();
        assert!(!r.in_progress() && !node.apply_held());
        assert_eq!(kv.get(b"seeded"), Ok(Some(&b"v"[..])));
        assert_eq!(kv.get(b"old"), Ok(None));
    }

    /// A snapshot id the node's store does not hold.
    fn absent_after(id: SnapshotId) -> SnapshotId {
        SnapshotId {
            index: id.index + 100,
            term: id.term,
        }
    }

    /// Starts restores of `ids(base)` in order on a node whose store holds
    /// only snapshot `base`; returns the error the driver stops with, the
    /// last id started, and the state left.
    fn failed_restore(
        ids: impl FnOnce(SnapshotId) -> Vec<SnapshotId>,
    ) -> (String, SnapshotId, Store) {
        let dir = tempfile::tempdir().unwrap();
        let (mut node, base) = node_with_snapshot(dir.path());
        let (view, mut kv, mut r) = (SharedStore::default(), Store::default(), Restorer::new());
        let ids = ids(base);
        for &id in &ids {
            r.start(id, &mut node, &mut kv, &view).unwrap();
        }
        let err = wait_for_poll(&mut r, &mut node, &mut kv).unwrap_err();
        (err, *ids.last().unwrap(), kv)
    }

    #[test]
    fn an_installed_snapshot_that_cannot_be_read_stops_the_node_naming_it() {
        let (err, missing, _) = failed_restore(|base| vec![absent_after(base)]);
        assert!(
            err.contains(&format!("snapshot {}-{}", missing.index, missing.term)),
            "{err}"
        );
    }

    #[test]
    fn a_decode_superseded_by_a_newer_install_is_not_swapped_in() {
        // The newer one's file is missing: if the older decode were taken
        // for it, the node would not fail.
        let (err, newer, kv) = failed_restore(|base| vec![base, absent_after(base)]);
        assert!(
            err.contains(&format!("{}-{}", newer.index, newer.term)),
            "{err}"
        );
        assert!(kv.is_restoring());
    }
}
