//! A snapshot of a large state does not stop the node. In its own test
//! binary: writing 150 MiB with fsyncs would starve the short-timed clusters
//! of the other in-process tests if it ran beside them.

use std::time::Duration;

use raft_node::driver::Request;
use raft_node::local_cluster::LocalCluster;
use raft_node::mvcc::Command;

const T: Duration = Duration::from_secs(15);

fn put(c: &LocalCluster, i: u32) -> u64 {
    let cmd = Command::put(format!("k{i}"), i.to_le_bytes().to_vec());
    c.write(cmd, T)
        .unwrap_or_else(|e| panic!("write {i}: {e}"))
        .index
}

/// Submits `cmds` to the current leader together (so that they share fsyncs)
/// and waits for them. A write that failed (on a busy machine this load can
/// cost the leader its term) is written again through the new leader:
/// writing one of these keys twice only adds a revision, which these tests
/// do not look at.
fn write_all(c: &LocalCluster, cmds: Vec<Command>) {
    let leader = c.leader().and_then(|l| c.handle(l));
    let pending: Vec<_> = cmds
        .into_iter()
        .map(|cmd| {
            let (req, rx) = Request::write(cmd.clone());
            if let Some(h) = &leader {
                h.submit(req);
            }
            (cmd, rx)
        })
        .collect();
    for (cmd, rx) in pending {
        if !matches!(rx.blocking_recv(), Ok(Ok(_))) {
            c.write(cmd, T)
                .unwrap_or_else(|e| panic!("a write failed twice: {e}"));
        }
    }
}

/// Taking a snapshot of a large state (about 150 MiB of incompressible
/// values) does not stop the node: writes submitted while it is written go
/// through in a small fraction of the time the snapshot takes.
#[test]
fn a_snapshot_of_a_large_state_does_not_stall_the_node() {
    use rand::RngCore;
    let dir = tempfile::tempdir().unwrap();
    let c = LocalCluster::start(dir.path(), 1).unwrap();
    assert!(c.wait_for(T, |c| c.leader().is_some()), "no leader");
    let h = c.handle(1).unwrap();
    // 2,400 values of 64 KiB (150 MiB), submitted 32 at a time so they share fsyncs.
    let mut rng = rand::rngs::OsRng;
    for chunk in 0..75 {
        let pending: Vec<_> = (0..32)
            .map(|i| {
                let mut value = vec![0u8; 64 << 10];
                rng.fill_bytes(&mut value);
                let key = format!("big{}", chunk * 32 + i);
                let (req, rx) = Request::write(Command::put(key, value));
                h.submit(req);
                rx
            })
            .collect();
        for rx in pending {
            rx.blocking_recv().unwrap().unwrap();
        }
    }

    let (reply, mut snapshot) = tokio::sync::oneshot::channel();
    let started = std::time::Instant::now();
    h.submit(Request::Snapshot { reply });
    let mut slowest = Duration::ZERO;
    let mut writes = 0;
    let index = loop {
        match snapshot.try_recv() {
            Ok(r) => break r.expect("snapshot failed"),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            Err(e) => panic!("snapshot reply lost: {e}"),
        }
        let t = std::time::Instant::now();
        put(&c, writes);
        slowest = slowest.max(t.elapsed());
        writes += 1;
    };
    let took = started.elapsed();
    assert!(index > 2_400, "snapshot at {index}");
    assert!(
        took >= Duration::from_millis(200),
        "the state is too small to show anything: the snapshot took {took:?}"
    );
    assert!(
        slowest * 3 < took,
        "a write during the snapshot took {slowest:?}; the snapshot took {took:?} ({writes} writes meanwhile)"
    );
    eprintln!("snapshot of ~150 MiB took {took:?}; {writes} writes meanwhile, slowest {slowest:?}; longest driver round {:?}", h.counters().longest_stall());
}

/// Installing a large snapshot from the leader does not stop the follower:
/// the state is decoded off its driver thread before the install, so no
/// driver round of the follower comes near the time a decode takes.
#[test]
fn installing_a_large_snapshot_does_not_stall_the_follower() {
    use rand::RngCore;
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::start(dir.path(), 3).unwrap();
    assert!(c.wait_for(T, |c| c.leader().is_some()), "no leader");
    let leader = c.leader().unwrap();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    c.stop_node(follower);
    let h = c.handle(leader).unwrap();
    // 3,200 values of 64 KiB (200 MiB), 32 at a time.
    let mut rng = rand::rngs::OsRng;
    for chunk in 0..100 {
        let cmds = (0..32)
            .map(|i| {
                let mut value = vec![0u8; 64 << 10];
                rng.fill_bytes(&mut value);
                Command::put(format!("big{}", chunk * 32 + i), value)
            })
            .collect();
        write_all(&c, cmds);
    }
    // The leader's snapshot drops the log the follower misses.
    let (reply, snapshot) = tokio::sync::oneshot::channel();
    h.submit(Request::Snapshot { reply });
    let index = snapshot.blocking_recv().unwrap().expect("snapshot failed");
    assert!(index > 3_200, "snapshot at {index}");

    c.start_node(follower).unwrap();
    let f = c.handle(follower).unwrap();
    assert!(
        c.wait_for(Duration::from_secs(120), |c| c.status(follower).applied
            >= index),
        "the follower did not catch up"
    );
    assert!(
        f.counters().snapshots_installed() >= 1,
        "the follower caught up without a snapshot: the test proved nothing"
    );
    let longest = f.counters().longest_stall();
    c.stop_node(follower);

    // What decoding that snapshot takes, measured here on the same file.
    let store = raft_snapshot::SnapshotStore::open(
        c.node_dir(follower).join("snapshots"),
        raft_snapshot::StoreOptions::default(),
    )
    .unwrap();
    let id = *store
        .list()
        .unwrap()
        .last()
        .expect("the installed snapshot");
    let started = std::time::Instant::now();
    let state = raft_node::storage::read_state(&store, id).unwrap();
    let decode = started.elapsed();
    assert!(state.len() >= 3_200, "decoded {} keys", state.len());
    eprintln!(
        "installing a ~200 MiB snapshot: decoding it takes {decode:?}; the follower's longest driver round {longest:?}"
    );
    assert!(
        decode >= Duration::from_millis(100),
        "the state is too small to show anything: decoding took {decode:?}"
    );
    assert!(
        longest * 3 < decode,
        "a driver round of the installing follower took {longest:?}; decoding the snapshot takes {decode:?}"
    );
    c.shutdown();
}

/// A member that restarts with a long log re-applies it in rounds of
/// bounded work: its driver keeps answering (heartbeats, reads) meanwhile
/// instead of applying the whole log in one round.
#[test]
fn re_applying_a_long_log_after_a_restart_does_not_stall_the_node() {
    use rand::RngCore;
    let dir = tempfile::tempdir().unwrap();
    let mut c = LocalCluster::start(dir.path(), 3).unwrap();
    assert!(c.wait_for(T, |c| c.leader().is_some()), "no leader");
    let leader = c.leader().unwrap();
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    // 80,000 values of 4 KiB (320 MiB), 256 at a time; no snapshots. On a
    // quiet machine with a warm page cache 40,000 re-applied in 0.25 s,
    // too little to tell bounded rounds from one long one.
    let mut rng = rand::rngs::OsRng;
    let mut value = vec![0u8; 4 << 10];
    for chunk in 0..320 {
        let cmds = (0..256)
            .map(|i| {
                rng.fill_bytes(&mut value);
                Command::put(format!("log{}", chunk * 256 + i), value.clone())
            })
            .collect();
        write_all(&c, cmds);
    }
    assert!(c.wait_for(T, |c| c.leader().is_some()), "no leader");
    let applied = c.status(c.leader().unwrap()).applied;
    assert!(
        c.wait_for(T, |c| c.status(follower).applied >= applied),
        "the follower did not apply everything"
    );
    c.stop_node(follower);
    let started = std::time::Instant::now();
    c.start_node(follower).unwrap();
    let f = c.handle(follower).unwrap();
    assert!(
        c.wait_for(Duration::from_secs(120), |c| c.status(follower).applied
            >= applied),
        "the restarted follower did not re-apply its log"
    );
    let took = started.elapsed();
    let longest = f.counters().longest_stall();
    eprintln!("re-applying {applied} entries took {took:?}; the longest driver round {longest:?}");
    assert!(
        took >= Duration::from_millis(300),
        "re-applying took only {took:?}: too little work to show anything"
    );
    assert!(
        longest * 3 < took && longest < Duration::from_millis(500),
        "a driver round took {longest:?} while re-applying for {took:?}"
    );
    c.shutdown();
}
