//! Taking a snapshot of the applied state (automatically every
//! `snapshot_threshold_entries`, or on request).

use raft_core::RawNode;

use crate::mvcc::Store;
use crate::storage::{StorageFailure, WalStorage};

/// Snapshots `kv` at the core's applied index (which equals `kv`'s: the
/// driver applies a Ready's entries before advancing) and compacts the WAL.
/// Returns the snapshot's index.
pub(super) fn take(node: &mut RawNode<WalStorage>, kv: &Store) -> Result<u64, StorageFailure> {
    let meta = node
        .snapshot_meta_at_applied()
        .map_err(|e| StorageFailure::Corrupt(format!("snapshot metadata: {e}")))?;
    debug_assert_eq!(
        meta.index,
        kv.applied_index(),
        "snapshot of the applied state"
    );
    let index = meta.index;
    node.storage_mut()
        .take_snapshot(meta, |w| kv.write_snapshot(w))?;
    Ok(index)
}
