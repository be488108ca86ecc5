//! Watch and Lease through the real Rust `etcd-client`, under load and
//! faults:
//! - 32 watchers over overlapping ranges on every member while 8 writers
//!   run, across a leader kill and restart and a compaction: every
//!   watcher's events are exactly the committed history of its range.
//! - A kept-alive lease survives a leader kill; an abandoned one expires
//!   within its TTL plus an election, and every member deletes its key at
//!   the same revision.
//! - A watcher that reads nothing for 60 s while writes go on: its node's
//!   memory stays bounded and another watcher on that node is not delayed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{EventType, PutOptions, WatchOptions};
use raft_tests::cluster::{node_binary, Cluster, ClusterOptions};
use raft_tests::etcd_api::{connect, connect_within, leader, metric};

/// One cluster at a time: on two cores, concurrent clusters make
/// elections, not the API, what a run measures.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn start(nodes: usize) -> (tempfile::TempDir, Cluster) {
    let bin = node_binary().unwrap_or_else(|e| panic!("no raft-node binary: {e}"));
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&bin, dir.path(), ClusterOptions::for_tests(nodes)).unwrap();
    (dir, cluster)
}

/// One event as a watcher saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    rev: i64,
    key: String,
    put: bool,
    value: String,
}

/// What a watcher covers: `[from, to)` over the keys `k/00`..`k/63`.
#[derive(Debug, Clone)]
struct Range {
    from: String,
    to: String,
}

impl Range {
    fn contains(&self, key: &str) -> bool {
        self.from.as_str() <= key && key < self.to.as_str()
    }
}

fn key(i: u64) -> String {
    format!("k/{i:02}")
}

/// A watcher that re-creates its watch from its next revision whenever its
/// stream or its member goes away, until `stop` and it has seen progress up
/// to `until` (set when the writers are done).
async fn watch_loop(
    c: Arc<Cluster>,
    member: u64,
    range: Range,
    first: i64,
    next_rev: Arc<AtomicI64>,
    until: Arc<AtomicI64>,
) -> Vec<Seen> {
    let mut seen: Vec<Seen> = Vec::new();
    next_rev.store(first, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(120);
    'reconnect: loop {
        assert!(
            Instant::now() < deadline,
            "watcher on {member} never finished"
        );
        let Some(mut client) = connect_within(&c, member, Duration::from_secs(1)).await else {
            continue;
        };
        let opts = WatchOptions::new()
            .with_range(range.to.clone())
            .with_start_revision(next_rev.load(Ordering::SeqCst));
        let Ok(mut stream) = client.watch(range.from.clone(), Some(opts)).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        loop {
            let target = until.load(Ordering::SeqCst);
            if target > 0 && stream.request_progress().await.is_err() {
                continue 'reconnect;
            }
            let msg = tokio::time::timeout(Duration::from_millis(500), stream.message()).await;
            let resp = match msg {
                Err(_) => continue,
                Ok(Ok(Some(resp))) => resp,
                Ok(_) => continue 'reconnect,
            };
            assert!(
                !resp.canceled(),
                "watch on {member} [{}, {}) cancelled: {}",
                range.from,
                range.to,
                resp.cancel_reason()
            );
            for e in resp.events() {
                let kv = e.kv().expect("an event has a kv");
                seen.push(Seen {
                    rev: kv.mod_revision(),
                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                    put: e.event_type() == EventType::Put,
                    value: String::from_utf8_lossy(kv.value()).into_owned(),
                });
                next_rev.store(kv.mod_revision() + 1, Ordering::SeqCst);
            }
            let at = resp.header().map_or(0, |h| h.revision());
            if resp.events().is_empty() && !resp.created() && target > 0 && at >= target {
                // A progress answer: every event up to `at` was delivered.
                return seen;
            }
        }
    }
}

/// 32 watchers (a third per member, overlapping ranges, some the whole
/// prefix) follow 8 writers through a leader kill and restart and a
/// compaction. Checked: each watcher's events are in revision order with no
/// duplicate; watchers agree on every revision; each has every event any
/// other watcher saw in its range and every acknowledged write of it; and
/// from the compaction revision on, the union equals the history the
/// leader replays at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watchers_see_exactly_the_committed_history_across_a_leader_kill_and_compaction() {
    let _one = SERIAL.lock().await;
    let (_dir, c) = start(3);
    let c = Arc::new(c);
    let first_leader = leader(&c, 1).await;
    let mut admin = connect(&c, 1).await;
    let start_rev = admin
        .put("begin", "", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
        + 1;

    let until = Arc::new(AtomicI64::new(0));
    let mut watchers = Vec::new();
    for w in 0..32u64 {
        let range = if w % 8 == 0 {
            Range {
                from: "k/".into(),
                to: "k0".into(),
            }
        } else {
            let a = (w * 7) % 48;
            Range {
                from: key(a),
                to: key(a + 16),
            }
        };
        let member = w % 3 + 1;
        let next = Arc::new(AtomicI64::new(start_rev));
        let task = tokio::spawn(watch_loop(
            c.clone(),
            member,
            range.clone(),
            start_rev,
            next.clone(),
            until.clone(),
        ));
        watchers.push((member, range, next, task));
    }

    // 8 writers, one put (7 in 8) or delete per request, on every member.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let (c, stop, acked) = (c.clone(), stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::SmallRng::seed_from_u64(w);
            let member = w % 3 + 1;
            let mut client = connect(&c, member).await;
            let mut seq = 0u64;
            while !stop.load(Ordering::SeqCst) {
                seq += 1;
                let k = key(rng.gen_range(0..64));
                if rng.gen_ratio(1, 8) {
                    if let Ok(r) = client.delete(k.clone(), None).await {
                        if r.deleted() > 0 {
                            let rev = r.header().unwrap().revision();
                            let value = String::new();
                            acked.lock().unwrap().push(Seen {
                                rev,
                                key: k,
                                put: false,
                                value,
                            });
                        }
                    }
                } else {
                    let value = format!("w{w}-{seq}");
                    match client.put(k.clone(), value.clone(), None).await {
                        Ok(r) => {
                            let rev = r.header().unwrap().revision();
                            acked.lock().unwrap().push(Seen {
                                rev,
                                key: k,
                                put: true,
                                value,
                            });
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(3)).await;
    c.kill(first_leader).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.spawn(first_leader).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Compact below every watcher's position: none of them needs that history.
    let compact_at = watchers
        .iter()
        .map(|(_, _, next, _)| next.load(Ordering::SeqCst) - 1)
        .min()
        .unwrap();
    let live = c.ids().into_iter().find(|&id| id != first_leader).unwrap();
    let mut compactor = connect(&c, live).await;
    compactor.compact(compact_at, None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let final_rev = compactor
        .put("end", "", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    until.store(final_rev, Ordering::SeqCst);

    let mut results = Vec::new();
    for (member, range, _, task) in watchers {
        results.push((member, range, task.await.unwrap()));
    }

    // The committed history after the compaction revision, replayed (a
    // delete at the compaction revision itself is compacted away).
    let mut history: BTreeMap<i64, Seen> = BTreeMap::new();
    let mut replay = compactor
        .watch(
            "k/",
            Some(
                WatchOptions::new()
                    .with_range("k0")
                    .with_start_revision(compact_at + 1),
            ),
        )
        .await
        .unwrap();
    while history.keys().next_back().copied().unwrap_or(0) < final_rev {
        replay.request_progress().await.unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), replay.message())
            .await
            .expect("history replay stalled")
            .unwrap()
            .expect("history replay ended");
        for e in resp.events() {
            let kv = e.kv().unwrap();
            let s = Seen {
                rev: kv.mod_revision(),
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                put: e.event_type() == EventType::Put,
                value: String::from_utf8_lossy(kv.value()).into_owned(),
            };
            history.insert(s.rev, s);
        }
        let at = resp.header().map_or(0, |h| h.revision());
        if resp.events().is_empty() && !resp.created() && at >= final_rev {
            break;
        }
    }

    // Every watcher: ordered, no duplicate; all agree on each revision.
    let mut union: BTreeMap<i64, Seen> = BTreeMap::new();
    for (member, range, seen) in &results {
        for pair in seen.windows(2) {
            assert!(
                pair[0].rev < pair[1].rev,
                "watcher on {member} {range:?}: out of order or duplicate: {pair:?}"
            );
        }
        for s in seen {
            assert!(
                range.contains(&s.key),
                "watcher on {member} {range:?} got {s:?}"
            );
            assert!(
                s.rev >= start_rev && s.rev <= final_rev,
                "{s:?} outside the run"
            );
            if let Some(other) = union.insert(s.rev, s.clone()) {
                assert_eq!(&other, s, "watchers disagree on revision {}", s.rev);
            }
        }
    }
    // After the compaction, the union is the committed history.
    let union_after: BTreeMap<i64, Seen> = union
        .range(compact_at + 1..)
        .map(|(r, s)| (*r, s.clone()))
        .collect();
    let differ: Vec<i64> = union_after
        .keys()
        .chain(history.keys())
        .filter(|r| union_after.get(r) != history.get(r))
        .copied()
        .collect();
    assert!(
        differ.is_empty(),
        "watchers and the replayed history differ at {} revisions, first {:?}: watchers {:?}, history {:?}",
        differ.len(),
        differ.first(),
        differ.first().and_then(|r| union_after.get(r)),
        differ.first().and_then(|r| history.get(r)),
    );
    // Every acknowledged write was seen.
    let acked = acked.lock().unwrap().clone();
    for a in &acked {
        assert_eq!(
            union.get(&a.rev),
            Some(a),
            "acknowledged write missing or different"
        );
    }
    // No gap: each watcher has every event of its range.
    let mut total = 0;
    for (member, range, seen) in &results {
        let want: Vec<&Seen> = union.values().filter(|s| range.contains(&s.key)).collect();
        let got: Vec<&Seen> = seen.iter().collect();
        if got != want {
            let missing: Vec<i64> = want
                .iter()
                .filter(|s| !got.contains(s))
                .map(|s| s.rev)
                .collect();
            panic!(
                "watcher on {member} {range:?} has {} events, want {}; missing revisions {:?}",
                got.len(),
                want.len(),
                &missing[..missing.len().min(20)]
            );
        }
        total += seen.len();
    }
    assert!(
        acked.len() > 100,
        "too few writes to mean anything: {}",
        acked.len()
    );
    eprintln!(
        "32 watchers: {total} events over revisions {start_rev}..={final_rev}, {} acknowledged writes, compacted at {compact_at}",
        acked.len()
    );
    c.shutdown(Duration::from_secs(5));
}

/// The revision at which `key` was deleted, as member `id` replays it
/// (waiting up to 30 s for the member to be up and caught up).
async fn deleted_at(c: &Cluster, id: u64, key: &str, from: i64) -> Option<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(mut client) = connect_within(c, id, Duration::from_secs(1)).await else {
            continue;
        };
        let opts = WatchOptions::new().with_start_revision(from);
        let Ok(mut stream) = client.watch(key, Some(opts)).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while Instant::now() < deadline {
            let next = tokio::time::timeout(Duration::from_secs(1), stream.message()).await;
            match next {
                Err(_) => continue,
                Ok(Ok(Some(resp))) => {
                    let delete = resp
                        .events()
                        .iter()
                        .find(|e| e.event_type() == EventType::Delete);
                    if let Some(e) = delete {
                        return e.kv().map(|kv| kv.mod_revision());
                    }
                }
                Ok(_) => break,
            }
        }
    }
    None
}

/// Keeps lease `id` alive through node `via` every 500 ms, re-opening the
/// keep-alive stream whenever it fails (as etcd's Go client does).
async fn keep_alive_forever(c: Arc<Cluster>, via: u64, id: i64) {
    loop {
        let Some(mut client) = connect_within(&c, via, Duration::from_secs(1)).await else {
            continue;
        };
        let Ok((mut keeper, mut answers)) = client.lease_keep_alive(id).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        loop {
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(5), answers.message()).await {
                Ok(Ok(Some(_))) => {}
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Two 3 s leases; the leader is killed. The one kept alive (through a
/// follower that stays up) never expires; the abandoned one expires within
/// TTL + election timeout (+1 s of scheduling slack) of the kill, not
/// before its TTL, and every member deletes its key at the same revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_change_never_expires_a_kept_lease_and_expiry_is_one_revision_everywhere() {
    let _one = SERIAL.lock().await;
    let (_dir, c) = start(3);
    let c = Arc::new(c);
    let first_leader = leader(&c, 1).await;
    let via = c.ids().into_iter().find(|&id| id != first_leader).unwrap();
    let mut client = connect(&c, via).await;
    let ttl = 3;
    let kept = client.lease_grant(ttl, None).await.unwrap().id();
    let abandoned = client.lease_grant(ttl, None).await.unwrap();
    let granted_at = Instant::now();
    let from = abandoned.header().unwrap().revision();
    let abandoned = abandoned.id();
    client
        .put("kept", "1", Some(PutOptions::new().with_lease(kept)))
        .await
        .unwrap();
    client
        .put("gone", "1", Some(PutOptions::new().with_lease(abandoned)))
        .await
        .unwrap();
    let keeping = tokio::spawn(keep_alive_forever(c.clone(), via, kept));

    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = Instant::now();
    c.kill(first_leader).unwrap();
    let election = Duration::from_millis(c.options().election_timeout_ms * 2);
    let bound = Duration::from_secs(ttl as u64) + election + Duration::from_secs(1);
    let expired_after = loop {
        let r = client.get("gone", None).await;
        if r.is_ok_and(|r| r.kvs().is_empty()) {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < bound + Duration::from_secs(5),
            "the abandoned lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        granted_at.elapsed() >= Duration::from_secs(ttl as u64),
        "expired before its TTL"
    );
    assert!(
        expired_after <= bound,
        "expired {expired_after:?} after the leader kill; bound {bound:?}"
    );
    // Kept alive across the leader change, for several TTLs.
    tokio::time::sleep(Duration::from_secs(3 * ttl as u64)).await;
    let still = client.get("kept", None).await.unwrap();
    assert_eq!(
        still.kvs().len(),
        1,
        "a kept-alive lease expired across a leader change"
    );
    keeping.abort();

    c.spawn(first_leader).unwrap();
    let mut revisions = Vec::new();
    for id in c.ids() {
        revisions.push((id, deleted_at(&c, id, "gone", from).await));
    }
    for (id, r) in &revisions {
        if r.is_none() {
            let log = std::fs::read_to_string(&c.node(*id).log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "node {id} saw no delete; its log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    let first = revisions[0].1;
    assert!(
        first.is_some(),
        "no delete event on node {}",
        revisions[0].0
    );
    assert!(
        revisions.iter().all(|(_, r)| *r == first),
        "members disagree on the expiry's revision: {revisions:?}"
    );
    eprintln!("abandoned lease expired {expired_after:?} after the leader kill (bound {bound:?}); deleted at {revisions:?}");
    c.shutdown(Duration::from_secs(5));
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A watcher that reads nothing for 60 s (set `RAFT_TESTS_STALL_SECS` to
/// change it) on a follower while a writer overwrites 64 keys with 4 KiB
/// values: that follower's RSS ends within 64 MiB of the other follower's
/// (same store, no stalled watcher), and a second watcher on it sees each
/// write within 1 s of its acknowledgement (p99).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_watcher_keeps_memory_bounded_and_does_not_delay_others() {
    let _one = SERIAL.lock().await;
    let secs: u64 = std::env::var("RAFT_TESTS_STALL_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let (_dir, c) = start(3);
    let lead = leader(&c, 1).await;
    let followers: Vec<u64> = c.ids().into_iter().filter(|&id| id != lead).collect();
    let (stalled_on, other) = (followers[0], followers[1]);

    // The stalled watcher: created, then never read.
    let mut stalled_client = connect(&c, stalled_on).await;
    let _stalled = stalled_client
        .watch(
            "s/",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    // The live one, on the same member.
    let mut live_client = connect(&c, stalled_on).await;
    let mut live = live_client
        .watch("s/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let rss_start = (
        rss_kib(c.pid(stalled_on).unwrap()),
        rss_kib(c.pid(other).unwrap()),
    );

    let mut writer = connect(&c, lead).await;
    let value = vec![b'v'; 4096];
    let started = Instant::now();
    let mut lags = Vec::new();
    let mut n = 0u64;
    let mut acked_at: BTreeMap<i64, Instant> = BTreeMap::new();
    while started.elapsed() < Duration::from_secs(secs) {
        n += 1;
        let r = writer
            .put(format!("s/{}", n % 64), value.clone(), None)
            .await
            .unwrap();
        acked_at.insert(r.header().unwrap().revision(), Instant::now());
        // Drain what the live watcher has, without waiting.
        while let Ok(Ok(Some(resp))) =
            tokio::time::timeout(Duration::from_millis(0), live.message()).await
        {
            let now = Instant::now();
            for e in resp.events() {
                let rev = e.kv().unwrap().mod_revision();
                if let Some(at) = acked_at.remove(&rev) {
                    lags.push(now.saturating_duration_since(at));
                }
            }
        }
    }
    // The rest of the live watcher's events.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !acked_at.is_empty() && Instant::now() < deadline {
        if let Ok(Ok(Some(resp))) =
            tokio::time::timeout(Duration::from_secs(1), live.message()).await
        {
            let now = Instant::now();
            for e in resp.events() {
                if let Some(at) = acked_at.remove(&e.kv().unwrap().mod_revision()) {
                    lags.push(now.saturating_duration_since(at));
                }
            }
        }
    }
    assert!(
        acked_at.is_empty(),
        "the live watcher missed {} writes",
        acked_at.len()
    );
    lags.sort();
    let p99 = lags[lags.len() * 99 / 100];
    let rss_end = (
        rss_kib(c.pid(stalled_on).unwrap()),
        rss_kib(c.pid(other).unwrap()),
    );
    let written_mib = n * 4096 / (1 << 20);
    eprintln!(
        "stalled watcher: {n} writes ({written_mib} MiB) in {secs} s; live watcher lag p99 {p99:?}; \
         RSS KiB stalled member {} -> {}, other follower {} -> {}",
        rss_start.0, rss_end.0, rss_start.1, rss_end.1
    );
    assert!(p99 < Duration::from_secs(1), "live watcher lag p99 {p99:?}");
    let excess = rss_end.0.saturating_sub(rss_end.1);
    assert!(
        excess < 64 * 1024,
        "the stalled watcher's member uses {excess} KiB more than the other follower"
    );
    c.shutdown(Duration::from_secs(5));
}

/// A watch on a follower that misses 600 writes while it is stopped, and
/// catches up by installing the leader's snapshot (the nodes snapshot every
/// 200 entries and keep 50): its stream goes on, and delivers every write
/// before, during and after the install exactly once, in revision order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_on_a_member_that_installs_a_snapshot_misses_nothing() {
    let _one = SERIAL.lock().await;
    let (_dir, c) = start(3);
    let lead = leader(&c, 1).await;
    let member = c.ids().into_iter().find(|&id| id != lead).unwrap();
    let installed = |c: &Cluster| metric(c, member, &["raft_snapshots_installed_total"]);
    let installed_before = installed(&c).expect("the member reports its installs");

    let mut watch_client = connect(&c, member).await;
    let mut stream = watch_client
        .watch("i/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    let mut writer = connect(&c, lead).await;
    // (revision, key, is a put) of every acknowledged write, in order.
    let mut written: Vec<(i64, String, bool)> = Vec::new();
    let key_of = |i: u64| format!("i/{:04}", i % 500);
    for i in 0..50 {
        let key = key_of(i);
        let r = writer.put(key.as_str(), i.to_string(), None).await.unwrap();
        written.push((r.header().unwrap().revision(), key, true));
    }
    assert!(c.pause(member), "SIGSTOP node {member}");
    for i in 50..650 {
        let key = key_of(i);
        let r = writer.put(key.as_str(), i.to_string(), None).await.unwrap();
        written.push((r.header().unwrap().revision(), key, true));
    }
    // A delete that the member too learns only from the snapshot.
    let r = writer.delete("i/0007", None).await.unwrap();
    written.push((r.header().unwrap().revision(), "i/0007".into(), false));
    assert!(c.resume(member), "SIGCONT node {member}");
    for i in 650..750 {
        let key = key_of(i);
        let r = writer.put(key.as_str(), i.to_string(), None).await.unwrap();
        written.push((r.header().unwrap().revision(), key, true));
    }

    let mut seen: Vec<(i64, String, bool)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < written.len() && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
            Ok(Ok(Some(resp))) => {
                assert!(
                    !resp.canceled(),
                    "watch cancelled: {}",
                    resp.cancel_reason()
                );
                for e in resp.events() {
                    let kv = e.kv().unwrap();
                    seen.push((
                        kv.mod_revision(),
                        kv.key_str().unwrap().to_string(),
                        e.event_type() == EventType::Put,
                    ));
                }
            }
            Ok(Ok(None)) => panic!("the watch stream ended"),
            Ok(Err(e)) => panic!("the watch stream failed: {e}"),
            Err(_) => {}
        }
    }
    let installs = installed(&c).unwrap_or(0.0) - installed_before;
    eprintln!(
        "snapshot install under a watch: {} writes, {} events seen on node {member}, {installs} snapshot(s) installed",
        written.len(),
        seen.len()
    );
    assert!(
        installs >= 1.0,
        "node {member} caught up without installing a snapshot: the test proved nothing"
    );
    assert_eq!(seen.len(), written.len(), "every write seen exactly once");
    for (i, (w, s)) in written.iter().zip(&seen).enumerate() {
        assert_eq!(w, s, "event {i}: wrote {w:?}, the watch saw {s:?}");
    }
    c.shutdown(Duration::from_secs(5));
}
