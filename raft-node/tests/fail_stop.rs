//! Fail-stop, liveness and safety of the node (issue 15): storage read errors stop
//! the node, waiters never get a false "not applied", membership changes that remove
//! the leader do not stall the cluster, and similar.

use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_node::local_cluster::LocalCluster;
use raft_node::mvcc::Command;
use raft_node::storage::StorageIo;
use raft_wal::fault::{FaultFs, FaultOp};

const T: Duration = Duration::from_secs(15);

fn put(c: &LocalCluster, key: &str) -> u64 {
    let cmd = Command::put(key, b"v".to_vec());
    c.write(cmd, T)
        .unwrap_or_else(|e| panic!("write {key}: {e}"))
        .index
}

/// A follower that cannot read back the entries it must apply stops with an
/// error naming the file, instead of spinning on a Ready that never empties.
#[test]
fn a_read_error_after_start_stops_the_node_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let disks: Vec<Arc<FaultFs>> = (0..3).map(|_| Arc::new(FaultFs::new())).collect();
    let for_node = disks.clone();
    let c = LocalCluster::start_with_io(dir.path(), 3, 0, move |id| StorageIo {
        fs: for_node[id as usize - 1].clone(),
        wal: raft_wal::Options::default(),
    })
    .unwrap();
    assert!(c.wait_for(T, |c| c.leader().is_some()), "no leader");
    put(&c, "a");
    let leader = c.leader().unwrap();
    let follower = c.running().into_iter().find(|&id| id != leader).unwrap();
    // The follower appends entries in one batch and learns of their commit in a
    // later one; it then reads them back from its WAL to apply them. That read fails.
    disks[follower as usize - 1].fail_next(FaultOp::Read, libc::EIO);
    let started = Instant::now();
    for i in 0..5 {
        put(&c, &format!("b{i}"));
    }
    let stopped = c.wait_for(T, |c| c.status(follower).failed.is_some());
    let status = c.status(follower);
    assert!(
        stopped,
        "node {follower} did not stop on a failed read (applied {} of commit {})",
        status.applied, status.commit
    );
    let why = status.failed.unwrap();
    assert!(
        why.contains("storage read failed") && why.contains("/wal/"),
        "the reason names the WAL file: {why}"
    );
    assert!(started.elapsed() < T);
    // The other two keep serving.
    put(&c, "after");
}
