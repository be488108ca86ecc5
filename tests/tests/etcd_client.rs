//! raft-node driven by the real Rust `etcd-client` crate over etcd's v3
//! gRPC API: the KV, Cluster and Maintenance calls on a leader and on
//! followers, and a compare-and-swap counter through `Txn` from 16 clients
//! on every node, whose final value must equal the successful increments.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse,
};
use raft_tests::cluster::{node_binary, Cluster, ClusterOptions};
use raft_tests::etcd_api::{connect, leader as leader_via};

/// The leader as node 1 sees it.
async fn leader(c: &Cluster) -> u64 {
    leader_via(c, 1).await
}

/// The tests run one at a time: three clusters at once on two cores make
/// elections and timeouts, not the API, what a run measures.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn start(nodes: usize) -> (tempfile::TempDir, Cluster) {
    let bin = node_binary().unwrap_or_else(|e| panic!("no raft-node binary: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&bin, dir.path(), ClusterOptions::for_tests(nodes)).unwrap();
    (dir, cluster)
}

/// A put that waits out "etcdserver: no leader": that answer means nothing
/// was proposed, so sending the same put again cannot apply it twice. The
/// tests' 300 ms election timeout lets a loaded machine start an election
/// of its own at any moment.
async fn put_when_led(client: &mut Client, key: String, value: String) -> etcd_client::PutResponse {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match client.put(key.as_str(), value.as_str(), None).await {
            Ok(r) => return r,
            Err(etcd_client::Error::GRpcStatus(s))
                if s.message() == "etcdserver: no leader" && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("put {key}: {e}"),
        }
    }
}

/// Moves leadership to `to` as a client must on a loaded machine: a
/// transfer fails ("leader transfer took too long") when an election of a
/// node's own overtakes it (the tests' 300 ms election timeout), so it asks
/// whoever leads then, again, until `to` leads (20 s at most). It writes
/// nothing (the tests count revisions).
async fn move_leader_to(c: &Cluster, to: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut on_target = connect(c, to).await;
    loop {
        let now = match on_target.status().await {
            Ok(s) => s.leader(),
            Err(_) => 0,
        };
        if now == to {
            return;
        }
        if now == 0 {
            assert!(Instant::now() < deadline, "no leader to move from");
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        match connect(c, now).await.move_leader(to).await {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("moving the leadership from {now} to {to} failed ({e}); asking again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("move the leadership from {now} to {to}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_cluster_and_maintenance_calls_through_etcd_client() {
    let _one = SERIAL.lock().await;
    let (_dir, c) = start(3);
    let leader = leader(&c).await;
    let follower = c.ids().into_iter().find(|&id| id != leader).unwrap();
    let mut on_leader = connect(&c, leader).await;
    let mut on_follower = connect(&c, follower).await;

    // Writes through a follower are forwarded to the leader.
    let first = on_follower.put("app/a", "1", None).await.unwrap();
    let rev_a = first.header().unwrap().revision();
    on_follower.put("app/b", "2", None).await.unwrap();
    let replaced = on_leader
        .put("app/a", "10", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert_eq!(replaced.prev_key().unwrap().value(), b"1");
    on_leader.put("other", "x", None).await.unwrap();

    // Linearizable reads on the follower see every acknowledged write.
    let got = on_follower
        .get("app/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    let kvs: Vec<(&[u8], &[u8])> = got.kvs().iter().map(|kv| (kv.key(), kv.value())).collect();
    assert_eq!(kvs, [(&b"app/a"[..], &b"10"[..]), (b"app/b", b"2")]);
    assert_eq!(got.count(), 2);
    let a = &got.kvs()[0];
    assert_eq!((a.create_revision(), a.version()), (rev_a, 2));

    // A read at the revision of the first put sees the old value.
    let old = on_follower
        .get("app/a", Some(GetOptions::new().with_revision(rev_a)))
        .await
        .unwrap();
    assert_eq!(old.kvs()[0].value(), b"1");

    // Limit, sort, keys-only, serializable.
    let limited = on_leader
        .get(
            "",
            Some(
                GetOptions::new()
                    .with_all_keys()
                    .with_limit(2)
                    .with_sort(SortTarget::Key, SortOrder::Descend)
                    .with_keys_only(),
            ),
        )
        .await
        .unwrap();
    let keys: Vec<&[u8]> = limited.kvs().iter().map(|kv| kv.key()).collect();
    assert_eq!(keys, [&b"ready"[..], b"other"]);
    assert!(limited.more());
    assert!(limited.kvs()[0].value().is_empty());
    let stale = on_follower
        .get("other", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert!(
        stale.kvs().len() <= 1,
        "a serializable read answers locally"
    );

    // A transaction: one revision, compares on value and version.
    let txn = Txn::new()
        .when([
            Compare::value("app/a", CompareOp::Equal, "10"),
            Compare::version("app/b", CompareOp::Equal, 1),
        ])
        .and_then([
            TxnOp::put("app/c", "3", None),
            TxnOp::delete("app/b", None),
            TxnOp::get("app/c", None),
        ])
        .or_else([TxnOp::get("app/a", None)]);
    let before = on_leader
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    let done = on_follower.txn(txn).await.unwrap();
    assert!(done.succeeded());
    assert_eq!(
        done.header().unwrap().revision(),
        before + 1,
        "a txn is one revision"
    );
    match &done.op_responses()[2] {
        TxnOpResponse::Get(g) => assert_eq!(g.kvs()[0].value(), b"3"),
        other => panic!("expected the get's response, got {other:?}"),
    }

    // Deletes with prev_kv and ranges.
    let del = on_follower
        .delete(
            "app/",
            Some(DeleteOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    assert_eq!(del.deleted(), 2);
    assert_eq!(del.prev_kvs().len(), 2);

    // Compaction: reads below it fail with etcd's error.
    let now = on_leader
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    on_follower.compact(now, None).await.unwrap();
    let err = on_leader
        .get("app/a", Some(GetOptions::new().with_revision(rev_a)))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("required revision has been compacted"),
        "{err}"
    );

    // Cluster and Maintenance.
    let members = on_follower.member_list().await.unwrap();
    assert_eq!(members.members().len(), 3);
    let status = on_follower.status().await.unwrap();
    assert_eq!(status.leader(), leader);
    let mut hashes = Vec::new();
    for id in c.ids() {
        let mut client = connect(&c, id).await;
        // Wait until this member applied everything, then hash the same revision.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = client.status().await.unwrap();
            if s.raft_applied_index() >= status.raft_index() {
                break;
            }
            assert!(Instant::now() < deadline, "member {id} did not catch up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hashes.push(client.hash_kv(now).await.unwrap().hash());
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
    let mut snap = on_leader.snapshot().await.unwrap();
    let mut bytes = 0;
    while let Some(part) = snap.message().await.unwrap() {
        bytes += part.blob().len();
    }
    assert!(
        bytes > 32 && (bytes - 32) % 512 == 0,
        "etcd's file shape: {bytes} bytes"
    );
    assert!(on_follower
        .alarm(
            etcd_client::AlarmAction::Get,
            etcd_client::AlarmType::None,
            None
        )
        .await
        .unwrap()
        .alarms()
        .is_empty());
    c.shutdown(Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cas_counter_from_16_clients_on_every_node_counts_exactly() {
    let _one = SERIAL.lock().await;
    let (_dir, c) = start(3);
    leader(&c).await;
    let mut seed = connect(&c, 1).await;
    seed.put("counter", "0", None).await.unwrap();
    let successes = Arc::new(AtomicU64::new(0));
    let unknown = Arc::new(AtomicU64::new(0));
    let ids = c.ids();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let mut client = connect(&c, ids[i % ids.len()]).await;
        let successes = successes.clone();
        let unknown = unknown.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = 0;
            let deadline = Instant::now() + Duration::from_secs(60);
            while mine < 4 && Instant::now() < deadline {
                let Ok(got) = client.get("counter", None).await else {
                    continue;
                };
                let kv = &got.kvs()[0];
                let n: u64 = std::str::from_utf8(kv.value()).unwrap().parse().unwrap();
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        "counter",
                        CompareOp::Equal,
                        kv.mod_revision(),
                    )])
                    .and_then([TxnOp::put("counter", (n + 1).to_string(), None)]);
                match client.txn(txn).await {
                    Ok(r) if r.succeeded() => {
                        mine += 1;
                        successes.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => {
                        unknown.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = successes.load(Ordering::Relaxed);
    let lost = unknown.load(Ordering::Relaxed);
    let got = seed.get("counter", None).await.unwrap();
    let value: u64 = std::str::from_utf8(got.kvs()[0].value())
        .unwrap()
        .parse()
        .unwrap();
    assert!(total >= 16 * 4 / 2, "too few increments: {total}");
    assert!(
        value >= total && value <= total + lost,
        "counter {value}, {total} successful increments, {lost} with unknown outcome"
    );
    if lost == 0 {
        assert_eq!(value, total);
    }
    c.shutdown(Duration::from_secs(5));
}

/// Reads watch responses until `want` events arrived (or 20 s passed).
async fn collect_events(
    stream: &mut etcd_client::WatchStream,
    want: usize,
) -> Vec<(Vec<u8>, i64, etcd_client::EventType)> {
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < want && Instant::now() < deadline {
        let next = tokio::time::timeout(Duration::from_secs(1), stream.message()).await;
        let Ok(Ok(Some(resp))) = next else {
            continue;
        };
        assert!(
            !resp.canceled(),
            "watch cancelled: {}",
            resp.cancel_reason()
        );
        for e in resp.events() {
            let kv = e.kv().unwrap();
            got.push((kv.key().to_vec(), kv.mod_revision(), e.event_type()));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watches_on_followers_see_every_revision_across_a_leader_change_and_leases_expire() {
    let _one = SERIAL.lock().await;
    let (_dir, c) = start(3);
    let leader = leader(&c).await;
    let followers: Vec<u64> = c.ids().into_iter().filter(|&id| id != leader).collect();
    let mut on_leader = connect(&c, leader).await;
    let mut watcher = connect(&c, followers[0]).await;
    let start = put_when_led(&mut on_leader, "w/0".into(), "0".into()).await;
    let from = start.header().unwrap().revision();
    // A watch from a past revision replays history, then follows new writes.
    let mut stream = watcher
        .watch(
            "w/",
            Some(
                etcd_client::WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(from),
            ),
        )
        .await
        .unwrap();
    let mut writer = connect(&c, followers[1]).await;
    for i in 1..20 {
        put_when_led(&mut writer, format!("w/{i}"), i.to_string()).await;
    }
    // Leadership moves to the follower that serves the watch.
    move_leader_to(&c, followers[0]).await;
    for i in 20..40 {
        put_when_led(&mut writer, format!("w/{i}"), i.to_string()).await;
    }
    writer
        .delete("w/", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    let events = collect_events(&mut stream, 80).await;
    assert_eq!(
        events.len(),
        80,
        "40 puts and 40 deletes, each exactly once"
    );
    let revs: Vec<i64> = events.iter().map(|e| e.1).collect();
    assert!(
        revs.windows(2).all(|w| w[0] <= w[1]),
        "in revision order: {revs:?}"
    );
    assert_eq!(revs[0], from);
    assert_eq!(revs[39], from + 39, "one revision per put, no gap");
    assert!(
        revs[40..].iter().all(|&r| r == from + 40),
        "the delete is one revision"
    );
    assert!(events[..40]
        .iter()
        .all(|e| e.2 == etcd_client::EventType::Put));
    assert!(events[40..]
        .iter()
        .all(|e| e.2 == etcd_client::EventType::Delete));

    // A lease kept alive through a leader change keeps its key; once the
    // keep-alives stop, it expires and the key is deleted (a watcher sees it).
    let lease = writer.lease_grant(2, None).await.unwrap().id();
    writer
        .put("leased", "x", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let mut deletes = watcher.watch("leased", None).await.unwrap();
    let (mut keeper, mut acks) = writer.lease_keep_alive(lease).await.unwrap();
    let now_leader = followers[0];
    let back = c.ids().into_iter().find(|&id| id != now_leader).unwrap();
    for round in 0..12 {
        keeper.keep_alive().await.unwrap();
        let ack = acks.message().await.unwrap().unwrap();
        assert!(ack.ttl() > 0, "the lease is alive");
        if round == 4 {
            move_leader_to(&c, back).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let still = on_leader.get("leased", None).await.unwrap();
    assert_eq!(still.kvs().len(), 1, "kept alive across a leader change");
    let ttl = writer.lease_time_to_live(lease, None).await.unwrap();
    assert!(ttl.ttl() > 0 && ttl.granted_ttl() == 2, "{ttl:?}");
    drop(keeper);
    drop(acks);
    let gone = collect_events(&mut deletes, 1).await;
    assert_eq!(gone.len(), 1, "the expiry deleted the key");
    assert_eq!(gone[0].2, etcd_client::EventType::Delete);
    assert!(on_leader
        .get("leased", None)
        .await
        .unwrap()
        .kvs()
        .is_empty());
    let ttl = writer.lease_time_to_live(lease, None).await.unwrap();
    assert_eq!(ttl.ttl(), -1, "an expired lease is gone");
    c.shutdown(Duration::from_secs(5));
}

/// `MemberAdd` as a voter of a node that has not started yet must not lower
/// availability: with one of three members down, a fourth voter would make
/// the quorum 3 of 4 with only 2 up. raft-node adds it as a learner (to be
/// promoted once it catches up), so writes keep committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_add_as_a_voter_joins_as_a_learner_and_keeps_the_cluster_available() {
    let _one = SERIAL.lock().await;
    let (_dir, c) = start(3);
    let leader = leader(&c).await;
    let down = c.ids().into_iter().find(|&id| id != leader).unwrap();
    c.kill(down).unwrap();
    let mut client = connect(&c, leader).await;
    let added = client
        .member_add(["https://127.0.0.1:1"], None)
        .await
        .expect("MemberAdd");
    let new = added.member().expect("the added member");
    assert!(new.is_learner(), "an empty new member joins as a learner");
    let list = client.member_list().await.unwrap();
    let listed = list.members().iter().find(|m| m.id() == new.id()).unwrap();
    assert!(listed.is_learner());
    // Two of the three voters are up: writes still commit.
    let put = tokio::time::timeout(Duration::from_secs(10), client.put("after-add", "1", None))
        .await
        .expect("a write after MemberAdd did not finish within 10 s");
    put.expect("a write after MemberAdd failed");
    c.shutdown(Duration::from_secs(5));
}
