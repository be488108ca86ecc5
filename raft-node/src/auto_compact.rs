//! Automatic compaction of the MVCC history, by revision.
//!
//! The store keeps every version until a compaction, so without one its
//! memory and snapshots grow with every write. While a node leads, this task
//! proposes a compaction that keeps the last `retain` revisions whenever the
//! history has grown past that by a tenth (etcd's "revision" mode of
//! `--auto-compaction-retention`). The compaction goes through the log like
//! a client's. `retain = 0` turns it off (etcd's default; then only
//! `Compact` calls compact).

use std::sync::Arc;
use std::time::Duration;

use raft_core::Role;

use crate::api::pb::etcdserverpb::CompactionRequest;
use crate::api::pb::raftnodepb::internal_request::Request as Internal;
use crate::api::EtcdApi;
use crate::mvcc::Command;

/// How often the leader checks the history's length.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The revision to compact at, if the history kept beyond `retain`
/// revisions has grown by more than a tenth of `retain` since the last
/// compaction.
pub fn due(revision: i64, compacted: i64, retain: i64) -> Option<i64> {
    if retain <= 0 {
        return None;
    }
    let target = revision - retain;
    (target > compacted + (retain / 10).max(1)).then_some(target)
}

/// Runs until the process ends.
pub async fn run(api: Arc<EtcdApi>, retain: i64) {
    if retain <= 0 {
        return;
    }
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        let status = api.driver.status();
        if status.role != Some(Role::Leader) {
            continue;
        }
        let view = api.driver.store();
        let Some(revision) = due(view.revision(), view.compact_revision(), retain) else {
            continue;
        };
        tracing::info!(revision, retain, "auto-compacting the MVCC history");
        let compact = Command(Internal::Compaction(CompactionRequest {
            revision,
            physical: false,
        }));
        if let Err(e) = api.write(compact).await {
            tracing::warn!(revision, error = %e, "auto-compaction failed; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn compacts_once_the_history_outgrows_the_retention_by_a_tenth() {
        assert_eq!(due(1_000, 0, 0), None, "off");
        assert_eq!(due(1_000, 0, 1_000), None);
        assert_eq!(due(1_100, 0, 1_000), None);
        assert_eq!(due(1_101, 0, 1_000), Some(101));
        assert_eq!(due(1_150, 101, 1_000), None);
        assert_eq!(due(1_300, 101, 1_000), Some(300));
    }
}
