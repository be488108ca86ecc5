//! The real core driving real WALs: a 3-node cluster in one process survives
//! losing its leader, a restart from disk, and a full-cluster restart.

use std::time::Duration;

use raft_core::{ConfChange, ConfChangeSingle};
use raft_node::driver::{ClientError, Request};
use raft_node::local_cluster::LocalCluster;
use raft_node::mvcc::{Applied, Command, Response};

const T: Duration = Duration::from_secs(15);

fn put(c: &LocalCluster, i: u32) -> u64 {
    let cmd = Command::put(format!("k{i}"), i.to_le_bytes().to_vec());
    c.write(cmd, T)
        .unwrap_or_else(|e| panic!("write {i}: {e}"))
        .index
}

fn all_have(c: &LocalCluster, keys: usize) -> bool {
    let ids = c.running();
    let d = c.status(ids[0]).digest;
    ids.iter().all(|&id| {
        let s = c.status(id);
        s.keys == keys && s.digest == d && s.failed.is_none()
    })
}

#[test]
fn survives_leader_loss_restart_and_full_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::start(dir.path(), 3).unwrap();
    assert!(c.wait_for(T, |c| c.leader().is_some()), "no leader");
    for i in 0..30 {
        put(&c, i);
    }
    assert!(c.wait_for(T, |c| all_have(c, 30)));

    let old = c.leader().unwrap();
    c.stop_node(old);
    assert!(
        c.wait_for(T, |c| c.leader().is_some_and(|l| l != old)),
        "survivors elected no leader"
    );
    for i in 30..60 {
        put(&c, i);
    }
    assert!(c.wait_for(T, |c| all_have(c, 60)));
    c.start_node(old).unwrap();
    assert!(
        c.wait_for(T, |c| c.running().len() == 3 && all_have(c, 60)),
        "restarted node did not catch up"
    );

    // Everything acknowledged survives stopping and restarting every node.
    c.shutdown();
    drop(c);
    let c = LocalCluster::start(dir.path(), 3).unwrap();
    assert!(
        c.wait_for(T, |c| c.leader().is_some() && all_have(c, 60)),
        "a full restart lost acknowledged writes"
    );
}

#[test]
fn reads_see_acknowledged_writes_and_cas_and_delete_report_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start(dir.path(), 3).unwrap();
    assert!(c.wait_for(T, |c| c.leader().is_some()), "no leader");
    assert_eq!(c.read("k", T).unwrap(), None);
    put(&c, 7);
    let key = "k7";
    assert_eq!(c.read(key, T).unwrap(), Some(7u32.to_le_bytes().to_vec()));
    let cas = |expected: Option<&[u8]>, value: Option<&[u8]>| {
        let applied = c
            .write(
                Command::cas(
                    key.into(),
                    expected.map(<[u8]>::to_vec),
                    value.map(<[u8]>::to_vec),
                ),
                T,
            )
            .unwrap()
            .applied;
        match applied {
            Applied::Command(Ok(Response::Txn(t))) => t.succeeded,
            other => panic!("not a txn outcome: {other:?}"),
        }
    };
    assert!(!cas(None, Some(b"x")), "the key exists");
    assert!(cas(Some(&7u32.to_le_bytes()), Some(b"x")));
    assert_eq!(c.read(key, T).unwrap(), Some(b"x".to_vec()));
    let del = |c: &LocalCluster| match c.write(Command::delete(key), T).unwrap().applied {
        Applied::Command(Ok(Response::DeleteRange(d))) => d.deleted,
        other => panic!("not a delete outcome: {other:?}"),
    };
    assert_eq!(del(&c), 1);
    assert_eq!(del(&c), 0);
    assert_eq!(c.read(key, T).unwrap(), None);
}

#[test]
fn snapshots_compact_the_log_and_catch_up_a_lagging_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::start_with(dir.path(), 3, 25).unwrap();
    assert!(c.wait_for(T, |c| c.leader().is_some()), "no leader");
    let leader = c.leader().unwrap();
    let lagging = (1..=3).find(|&i| i != leader).unwrap();
    c.stop_node(lagging);
    for i in 0..120 {
        put(&c, i);
    }
    let running = c.running();
    assert!(c.wait_for(T, |c| running
        .iter()
        .all(|&id| c.status(id).snapshot_index >= 100)));

    // The stopped node is behind the leader's snapshot: it gets the snapshot.
    c.start_node(lagging).unwrap();
    assert!(
        c.wait_for(T, |c| c.running().len() == 3 && all_have(c, 120)),
        "lagging node did not catch up: {:?}",
        c.status(lagging)
    );
    assert!(c.status(lagging).snapshot_index >= 100);
    assert_eq!(
        c.handle(lagging).unwrap().counters().snapshots_installed(),
        1,
        "far behind the leader's trailing entries, the node needs the snapshot"
    );

    // A full restart restores every node from its snapshot plus its WAL.
    c.shutdown();
    let wal_dir = c.node_dir(leader).join("wal");
    drop(c);
    let report = raft_wal::inspect(&raft_wal::fs::StdFs, &wal_dir, &mut |_, _, _| {}).unwrap();
    assert!(
        report.first_index > 50 && report.snapshot_marker.is_some_and(|(i, _)| i >= 100),
        "the leader's WAL was compacted after its snapshot: {report:?}"
    );
    let c = LocalCluster::start_with(dir.path(), 3, 25).unwrap();
    assert!(c.wait_for(T, |c| c.leader().is_some() && all_have(c, 120)));
}

#[test]
fn a_full_disk_refuses_writes_with_disk_full_and_resumes_when_space_returns() {
    use raft_node::driver::ClientError;
    use raft_node::storage::StorageIo;
    use raft_wal::fault::FaultFs;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let disks: Vec<Arc<FaultFs>> = (0..3).map(|_| Arc::new(FaultFs::new())).collect();
    let for_node = disks.clone();
    let c = LocalCluster::start_with_io(dir.path(), 3, 0, move |id| {
        // Small segments: the disk fills at the next rotation, within a few writes.
        let wal = raft_wal::Options {
            segment_size_bytes: 16 << 10,
            preallocate_in_background: false,
            ..Default::default()
        };
        StorageIo {
            fs: for_node[id as usize - 1].clone(),
            wal,
        }
    })
    .unwrap();
    assert!(c.wait_for(T, |c| c.leader().is_some()), "no leader");
    for i in 0..10 {
        put(&c, i);
    }
    for d in &disks {
        d.set_space_limit(Some(d.used_bytes()));
    }
    // Writes fail with DiskFull (never a crash, never a torn log) ...
    let mut refused = false;
    for i in 10..200 {
        let cmd = Command::put(format!("k{i}"), vec![0u8; 512]);
        match c.write(cmd, Duration::from_secs(3)) {
            Ok(_) => continue,
            Err(ClientError::DiskFull) => {
                refused = true;
                break;
            }
            // The write in flight when the disk filled: its outcome is unknown.
            Err(ClientError::Timeout) => continue,
            // A leader whose driver waits for space stops ticking; on a
            // loaded machine its followers may time out and start an
            // election none can win (their disks are full too). Not a
            // crash and nothing lost: look again.
            Err(ClientError::NotLeader { leader: None }) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Err(e) => panic!("expected a disk-full refusal, got {e}"),
        }
    }
    assert!(refused, "the disk never filled up");
    for id in c.running() {
        assert!(
            c.status(id).failed.is_none(),
            "node {id} stopped on a full disk"
        );
    }
    // ... and resume once space returns.
    for d in &disks {
        d.set_space_limit(None);
    }
    let mut resumed = false;
    for _ in 0..50 {
        let cmd = Command::put("after", b"space".to_vec());
        if c.write(cmd, Duration::from_secs(3)).is_ok() {
            resumed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(resumed, "writes did not resume after space returned");
    assert_eq!(
        c.read("after", T).unwrap(),
        Some(b"space".to_vec()),
        "the write after recovery is readable"
    );
}

#[test]
fn a_node_slightly_behind_the_leaders_snapshot_catches_up_from_its_trailing_entries() {
    // Snapshots every 25 entries; LocalCluster keeps 10 trailing entries below them.
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::start_with(dir.path(), 3, 25).unwrap();
    assert!(c.wait_for(T, |c| c.leader().is_some()), "no leader");
    for i in 0..20 {
        put(&c, i);
    }
    assert!(c.wait_for(T, |c| all_have(c, 20)));
    let leader = c.leader().unwrap();
    let lagging = (1..=3).find(|&i| i != leader).unwrap();
    let behind_at = c.status(lagging).last_index;
    c.stop_node(lagging);
    let mut last = 0;
    for i in 20..28 {
        last = put(&c, i);
    }
    // The leader's snapshot now covers entries the stopped node lacks, within the 10
    // entries it keeps below it.
    assert!(c.wait_for(T, |c| c.status(leader).snapshot_index > behind_at));
    let snap = c.status(leader).snapshot_index;
    assert!(
        snap < behind_at + 10 && last > snap,
        "test set-up: snapshot {snap}, node behind at {behind_at}, last {last}"
    );

    c.start_node(lagging).unwrap();
    assert!(
        c.wait_for(T, |c| c.running().len() == 3 && all_have(c, 28)),
        "lagging node did not catch up: {:?}",
        c.status(lagging)
    );
    assert_eq!(
        c.handle(lagging).unwrap().counters().snapshots_installed(),
        0,
        "entries the leader kept below its snapshot were enough"
    );
}

/// Proposes a one-step membership change through the leader and waits for its answer.
fn change_members(c: &LocalCluster, step: ConfChangeSingle) -> Result<u64, ClientError> {
    let leader = c.leader().expect("a leader");
    let (reply, rx) = tokio::sync::oneshot::channel();
    c.handle(leader).unwrap().submit(Request::ChangeMembers {
        change: ConfChange {
            changes: vec![step],
        },
        context: Vec::new(),
        reply,
    });
    rx.blocking_recv().expect("the driver answers")
}

#[test]
fn a_learner_is_promoted_only_once_it_has_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::start(dir.path(), 3).unwrap();
    assert!(c.wait_for(T, |c| c.leader().is_some()), "no leader");
    change_members(&c, ConfChangeSingle::AddLearner(4)).unwrap();
    // Node 4 is not running: the leader's log runs more than 1,000 entries ahead of it.
    for i in 0..1_010 {
        put(&c, i);
    }
    let refused = change_members(&c, ConfChangeSingle::AddVoter(4));
    match refused {
        Err(ClientError::Busy(why)) => assert!(why.contains("learner 4 has replicated"), "{why}"),
        other => panic!("promoting a learner 1,000+ entries behind: {other:?}"),
    }
    let leader = c.leader().unwrap();
    assert_eq!(c.status(leader).voters, vec![1, 2, 3]);
    assert_eq!(c.status(leader).learners, vec![4]);

    // Once it runs and catches up, the same promotion goes through.
    c.start_node(4).unwrap();
    assert!(c.wait_for(T, |c| c.status(4).applied >= c.status(leader).commit));
    change_members(&c, ConfChangeSingle::AddVoter(4)).unwrap();
    assert!(c.wait_for(T, |c| c.status(leader).voters == vec![1, 2, 3, 4]));
    put(&c, 2_000);
    assert!(c.wait_for(T, |c| all_have(c, 1_011)));
}
