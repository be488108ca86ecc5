//! End-to-end tests of Watch, Lease and the concurrency recipes built on
//! them (`etcdctl lock`, `etcdctl elect`) with the real `etcdctl` 3.4
//! against a 3-node cluster.
//!
//! As in `etcdctl.rs`, the expected outputs are etcd's own: with
//! `RAFT_TESTS_AGAINST_ETCD=1` the same tests run against a real etcd 3.4
//! cluster and must pass there too. Watches run on followers while the
//! writes go through the leader, so every event crosses the replication
//! path. Without `etcdctl` on `PATH` the tests print why they are skipped.
//!
//! ```sh
//! cargo test -p raft-tests --test etcdctl_watch_lease
//! RAFT_TESTS_AGAINST_ETCD=1 cargo test -p raft-tests --test etcdctl_watch_lease
//! ```
//!
//! etcdctl 3.4 has no `watch --progress-notify` (3.5 added it); progress
//! notifications are tested through the Rust client in `etcd_client.rs`.

mod etcdctl_common;

use std::time::Duration;

use etcdctl_common::*;
use serde_json::Value;

/// Watcher gauges on a member: raft-node's, then etcd 3.4's.
const WATCHER_METRICS: &[&str] = &["etcd_watchers", "etcd_debugging_mvcc_watcher_total"];

/// Waits until the member at `ep` counts at least `n` watchers, so that
/// writes made next are certain to reach them.
fn wait_watchers(ck: &mut Checks, ep: &str, n: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let have = metric(ep, WATCHER_METRICS).unwrap_or(-1.0);
        if have >= n {
            return;
        }
        if std::time::Instant::now() >= deadline {
            ck.fail(format!("{ep}: {have} watchers after 10 s, want {n}"));
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for `bg` to print exactly `want` (and checks it printed no more).
fn expect_output(ck: &mut Checks, what: &str, bg: &Bg, want: &str) {
    bg.wait_stdout(Duration::from_secs(10), |out| out.len() >= want.len());
    // Anything extra (a duplicate) would arrive right behind.
    std::thread::sleep(Duration::from_millis(300));
    ck.eq(what, bg.stdout(), want.to_string());
}

/// The events etcdctl's simple format prints: the type, then (with
/// `--prev-kv`) the previous key and value, then the key and value (empty
/// for a delete).
fn events(list: &[(&str, Option<&str>, &str, &str)]) -> String {
    let mut out = String::new();
    for (kind, prev, key, value) in list {
        out.push_str(kind);
        out.push('\n');
        if let Some(prev) = prev {
            out.push_str(&format!("{key}\n{prev}\n"));
        }
        out.push_str(&format!("{key}\n{value}\n"));
    }
    out
}

/// `etcdctl watch` on a key, a prefix, a range and with `--prev-kv` on one
/// follower sees exactly the puts, deletes and txn made through the leader;
/// `--rev` on the other follower replays them from the history; a watch from
/// a compacted revision is cancelled with etcd's error.
#[test]
fn etcdctl_watch_sees_exactly_the_writes_made_elsewhere() {
    let Some(env) = setup("watch", true) else {
        return;
    };
    let mut ck = Checks::new(system_name());
    let t = env.wait_leader(Duration::from_secs(30));
    let (lead, f1, f2) = (
        t.leader_ep(),
        t.followers[0].0.as_str(),
        t.followers[1].0.as_str(),
    );
    let c = &env.ctl;
    let start = header_revision(&c.json(&mut ck, &[lead], &["get", "nothing"]));

    let dir = &env.dir.0;
    let on_key = c.spawn(dir, "key", &[f1], &["watch", "wk"]);
    let on_prefix = c.spawn(dir, "prefix", &[f1], &["watch", "--prefix", "wp/"]);
    let on_range = c.spawn(dir, "range", &[f1], &["watch", "wp/a", "wp/c"]);
    let with_prev = c.spawn(
        dir,
        "prev",
        &[f1],
        &["watch", "--prev-kv", "--prefix", "wp/"],
    );
    wait_watchers(&mut ck, f1, 4.0);

    for args in [
        &["put", "wk", "v1"][..],
        &["put", "wp/a", "1"],
        &["put", "wp/b", "2"],
        &["put", "wp/a", "11"],
        &["del", "wp/a"],
        &["put", "wk", "v2"],
        &["put", "elsewhere", "x"],
    ] {
        c.ok(&mut ck, &[lead], args);
    }
    // One revision, two events.
    c.ok_in(&mut ck, &[lead], &["txn"], "\nput wp/c 3\ndel wp/b\n\n\n");
    c.ok(&mut ck, &[lead], &["del", "wk"]);

    let prefix_events = events(&[
        ("PUT", None, "wp/a", "1"),
        ("PUT", None, "wp/b", "2"),
        ("PUT", None, "wp/a", "11"),
        ("DELETE", None, "wp/a", ""),
        ("PUT", None, "wp/c", "3"),
        ("DELETE", None, "wp/b", ""),
    ]);
    expect_output(
        &mut ck,
        "watch wk",
        &on_key,
        &events(&[
            ("PUT", None, "wk", "v1"),
            ("PUT", None, "wk", "v2"),
            ("DELETE", None, "wk", ""),
        ]),
    );
    expect_output(&mut ck, "watch --prefix wp/", &on_prefix, &prefix_events);
    expect_output(
        &mut ck,
        "watch wp/a wp/c",
        &on_range,
        &events(&[
            ("PUT", None, "wp/a", "1"),
            ("PUT", None, "wp/b", "2"),
            ("PUT", None, "wp/a", "11"),
            ("DELETE", None, "wp/a", ""),
            ("DELETE", None, "wp/b", ""),
        ]),
    );
    expect_output(
        &mut ck,
        "watch --prev-kv --prefix wp/",
        &with_prev,
        &events(&[
            ("PUT", None, "wp/a", "1"),
            ("PUT", None, "wp/b", "2"),
            ("PUT", Some("1"), "wp/a", "11"),
            ("DELETE", Some("11"), "wp/a", ""),
            ("PUT", None, "wp/c", "3"),
            ("DELETE", Some("2"), "wp/b", ""),
        ]),
    );

    // History: a watch created afterwards, from the first revision, on the
    // other follower.
    let from = (start + 1).to_string();
    let replay = c.spawn(
        dir,
        "replay",
        &[f2],
        &["watch", "--prefix", "--rev", &from, "wp/"],
    );
    expect_output(
        &mut ck,
        "watch --rev from the start",
        &replay,
        &prefix_events,
    );
    drop(replay);

    // Compact past the start: a watch from there is cancelled.
    let now = header_revision(&c.json(&mut ck, &[lead], &["get", "nothing"]));
    c.ok(&mut ck, &[lead], &["compaction", &now.to_string()]);
    let mut compacted = c.spawn(dir, "compacted", &[f2], &["watch", "--rev", &from, "wk"]);
    let code = compacted.wait_exit(Duration::from_secs(10));
    ck.check(code.is_some_and(|c| c != 0), || {
        format!(
            "a watch from a compacted revision must end with an error: {}",
            compacted.describe()
        )
    });
    ck.check(
        compacted
            .stderr()
            .contains("required revision has been compacted"),
        || format!("etcd's compaction error expected: {}", compacted.describe()),
    );
    ck.finish();
}

/// Parses the id out of `lease 694d77b9f4f9b218 granted with TTL(60s)`.
fn granted_id(out: &Out) -> Option<String> {
    let rest = out.stdout.strip_prefix("lease ")?;
    Some(rest.split_whitespace().next()?.to_string())
}

/// `etcdctl lease grant / put --lease / timetolive --keys / list /
/// keep-alive --once / revoke`, across members; the revoke deletes the
/// attached keys in one revision on every member; an abandoned short lease
/// expires on its own.
#[test]
fn etcdctl_lease_lifecycle() {
    let Some(env) = setup("lease", true) else {
        return;
    };
    let mut ck = Checks::new(system_name());
    let t = env.wait_leader(Duration::from_secs(30));
    let (lead, f1, f2) = (
        t.leader_ep(),
        t.followers[0].0.as_str(),
        t.followers[1].0.as_str(),
    );
    let c = &env.ctl;

    let granted = c.ok(&mut ck, &[f1], &["lease", "grant", "60"]);
    let Some(id) = granted_id(&granted) else {
        ck.fail(format!("no lease id: {}", granted.describe()));
        ck.finish();
        return;
    };
    ck.eq(
        "lease grant",
        granted.stdout.clone(),
        format!("lease {id} granted with TTL(60s)\n"),
    );
    c.ok(&mut ck, &[f2], &["put", "--lease", &id, "lk/1", "a"]);
    c.ok(&mut ck, &[lead], &["put", "--lease", &id, "lk/2", "b"]);
    c.ok(&mut ck, &[lead], &["put", "lk/3", "kept"]);

    let ttl = c.ok(&mut ck, &[f2], &["lease", "timetolive", "--keys", &id]);
    let want_prefix = format!("lease {id} granted with TTL(60s), remaining(");
    let remaining = ttl
        .stdout
        .strip_prefix(&want_prefix)
        .and_then(|r| r.split_once("s), attached keys([lk/1 lk/2])\n"))
        .and_then(|(secs, rest)| rest.is_empty().then(|| secs.parse::<i64>().ok())?);
    ck.check(remaining.is_some_and(|s| (50..=60).contains(&s)), || {
        format!("timetolive --keys: {}", ttl.describe())
    });

    let list = c.ok(&mut ck, &[f1], &["lease", "list"]);
    ck.eq(
        "lease list",
        list.stdout.clone(),
        format!("found 1 leases\n{id}\n"),
    );

    let kept = c.ok(&mut ck, &[f2], &["lease", "keep-alive", "--once", &id]);
    ck.eq(
        "lease keep-alive --once",
        kept.stdout.clone(),
        format!("lease {id} keepalived with TTL(60)\n"),
    );

    let before = header_revision(&c.json(&mut ck, &[lead], &["get", "nothing"]));
    let revoked = c.ok(&mut ck, &[f1], &["lease", "revoke", &id]);
    ck.eq(
        "lease revoke",
        revoked.stdout.clone(),
        format!("lease {id} revoked\n"),
    );
    for ep in [lead, f1, f2] {
        let v = json_when(c, &mut ck, ep, &["get", "--prefix", "lk/"], |v| {
            kvs(v).len() == 1
        });
        let left: Vec<String> = kvs(&v).into_iter().map(|(k, ..)| k).collect();
        ck.eq(
            &format!("keys left after the revoke on {ep}"),
            left,
            vec!["lk/3".to_string()],
        );
        // Both keys went in one revision, the one after `before`.
        ck.eq(
            &format!("revision after the revoke on {ep}"),
            header_revision(&v),
            before + 1,
        );
    }
    let gone = c.ok(&mut ck, &[f2], &["lease", "timetolive", &id]);
    ck.eq(
        "timetolive of a revoked lease",
        gone.stdout.clone(),
        format!("lease {id} already expired\n"),
    );
    c.fails_with(
        &mut ck,
        &[lead],
        &["put", "--lease", &id, "lk/4", "x"],
        "requested lease not found",
    );

    // An abandoned lease expires by itself (TTL 5 s; the minimum TTL on
    // both systems' test settings is below that) and takes its key along.
    let short = c.ok(&mut ck, &[f1], &["lease", "grant", "5"]);
    if let Some(short_id) = granted_id(&short) {
        c.ok(
            &mut ck,
            &[f1],
            &["put", "--lease", &short_id, "lk/short", "x"],
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mut expired = false;
        while std::time::Instant::now() < deadline && !expired {
            std::thread::sleep(Duration::from_millis(250));
            let out = c.run(&[f2], &["get", "lk/short"], None);
            expired = out.success() && out.stdout.is_empty();
        }
        ck.check(expired, || {
            "a 5 s lease left alone was not revoked within 15 s".into()
        });
    } else {
        ck.fail(format!("no lease id: {}", short.describe()));
    }
    ck.finish();
}

/// `etcdctl lock` with two contenders on different members: the second gets
/// the lock only when the first exits; their critical sections never
/// overlap.
#[test]
fn etcdctl_lock_is_mutually_exclusive_across_members() {
    let Some(env) = setup("lock", true) else {
        return;
    };
    let mut ck = Checks::new(system_name());
    let t = env.wait_leader(Duration::from_secs(30));
    let (f1, f2) = (t.followers[0].0.as_str(), t.followers[1].0.as_str());
    let c = &env.ctl;
    let dir = &env.dir.0;
    let log = dir.join("critical.log");
    let section = |who: &str| {
        format!(
            "echo {who}-in >> {0}; sleep 2; echo {who}-out >> {0}",
            log.display()
        )
    };
    let mut first = c.spawn(
        dir,
        "lock-a",
        &[f1],
        &["lock", "L", "--", "sh", "-c", &section("a")],
    );
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !read().contains("a-in") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut second = c.spawn(
        dir,
        "lock-b",
        &[f2],
        &["lock", "L", "--", "sh", "-c", &section("b")],
    );
    ck.eq(
        "first contender",
        first.wait_exit(Duration::from_secs(15)),
        Some(0),
    );
    ck.eq(
        "second contender",
        second.wait_exit(Duration::from_secs(15)),
        Some(0),
    );
    ck.eq(
        "critical sections",
        read(),
        "a-in\na-out\nb-in\nb-out\n".to_string(),
    );
    ck.finish();
}

/// `etcdctl elect`: the first candidate leads; the second waits until the
/// first resigns (Ctrl-C), then leads; an observer on a third member sees
/// both leaders in turn.
#[test]
fn etcdctl_elect_hands_over_when_the_leader_resigns() {
    let Some(env) = setup("elect", true) else {
        return;
    };
    let mut ck = Checks::new(system_name());
    let t = env.wait_leader(Duration::from_secs(30));
    let (lead, f1, f2) = (
        t.leader_ep(),
        t.followers[0].0.as_str(),
        t.followers[1].0.as_str(),
    );
    let c = &env.ctl;
    let dir = &env.dir.0;
    let mut p1 = c.spawn(dir, "p1", &[f1], &["elect", "E", "p1"]);
    ck.check(
        p1.wait_stdout(Duration::from_secs(10), |o| o.ends_with("p1\n")),
        || format!("p1 should be elected: {}", p1.describe()),
    );
    let p2 = c.spawn(dir, "p2", &[f2], &["elect", "E", "p2"]);
    let observer = c.spawn(dir, "observer", &[lead], &["elect", "--listen", "E"]);
    ck.check(
        observer.wait_stdout(Duration::from_secs(10), |o| o.contains("p1\n")),
        || format!("the observer should see p1: {}", observer.describe()),
    );
    std::thread::sleep(Duration::from_secs(1));
    ck.eq("p2 while p1 leads", p2.stdout(), String::new());

    p1.interrupt();
    ck.check(p1.wait_exit(Duration::from_secs(10)).is_some(), || {
        format!("p1 should exit on Ctrl-C: {}", p1.describe())
    });
    ck.check(
        p2.wait_stdout(Duration::from_secs(10), |o| o.ends_with("p2\n")),
        || format!("p2 should be elected after p1 resigns: {}", p2.describe()),
    );
    ck.check(
        observer.wait_stdout(Duration::from_secs(10), |o| o.contains("p2\n")),
        || format!("the observer should see p2: {}", observer.describe()),
    );
    let seen: Vec<String> = observer
        .stdout()
        .lines()
        .filter(|l| !l.starts_with("E/"))
        .map(str::to_string)
        .collect();
    ck.eq(
        "leaders the observer saw",
        seen,
        vec!["p1".into(), "p2".into()],
    );
    ck.finish();
}

/// One streamed call of etcd's JSON gateway: its `{"result": ...}` objects,
/// one per line, as they arrive.
struct GatewayStream {
    lines: tokio::sync::mpsc::UnboundedReceiver<Result<Value, String>>,
}

impl GatewayStream {
    async fn open(http: &reqwest::Client, ep: &str, path: &str, body: String) -> GatewayStream {
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let resp = http
            .post(format!("http://{ep}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let path = path.to_string();
        tokio::spawn(async move {
            let mut resp = match resp {
                Ok(r) if r.status().is_success() => r,
                Ok(r) => {
                    let _ = tx.send(Err(format!("{path}: HTTP {}", r.status())));
                    return;
                }
                Err(e) => {
                    let _ = tx.send(Err(format!("{path}: {e}")));
                    return;
                }
            };
            let mut buf = Vec::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(format!("{path}: {e}")));
                        return;
                    }
                }
                while let Some(end) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let parsed = serde_json::from_slice::<Value>(&line)
                        .map_err(|e| format!("{path}: not JSON ({e}): {line:?}"));
                    if tx.send(parsed).is_err() {
                        return;
                    }
                }
            }
        });
        GatewayStream { lines }
    }

    /// The next object's `result`, waiting up to 10 s.
    async fn next(&mut self) -> Result<Value, String> {
        match tokio::time::timeout(Duration::from_secs(10), self.lines.recv()).await {
            Ok(Some(Ok(v))) => Ok(v["result"].clone()),
            Ok(Some(Err(e))) => Err(e),
            Ok(None) => Err("the stream ended".into()),
            Err(_) => Err("nothing within 10 s".into()),
        }
    }
}

/// The (type, key, value) of each event of a watch response, decoded.
fn gateway_events(result: &Value) -> Vec<(String, String, String)> {
    result["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    let kv = &e["kv"];
                    (
                        e["type"].as_str().unwrap_or("PUT").to_string(),
                        kv["key"].as_str().and_then(unb64).unwrap_or_default(),
                        kv["value"].as_str().and_then(unb64).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// etcd's JSON gateway for Watch and Lease, with plain HTTP: `/v3/watch`
/// streams `{"result": ...}` lines on a follower (created, then every event
/// of writes made through the leader); `/v3/lease/grant`, `put` with the
/// lease, `/v3/lease/timetolive` with keys, `/v3/lease/leases`,
/// `/v3/lease/keepalive` (streamed) and `/v3/lease/revoke`, whose delete the
/// watch sees.
#[test]
fn json_gateway_watch_and_lease() {
    let Some(env) = setup("json_gateway_watch_and_lease", false) else {
        return;
    };
    let mut ck = Checks::new(system_name());
    let t = env.wait_leader(Duration::from_secs(30));
    let (lead, f1, f2) = (
        t.leader_ep().to_string(),
        t.followers[0].0.clone(),
        t.followers[1].0.clone(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client");
    let post = |ep: &str, path: &str, body: String| -> (u16, Value) {
        rt.block_on(async {
            let resp = http
                .post(format!("http://{ep}{path}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("POST {path} to {ep}: {e}"));
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        })
    };

    // A watch over the prefix `gw/` on a follower.
    let mut watch = rt.block_on(GatewayStream::open(
        &http,
        &f1,
        "/v3/watch",
        format!(
            r#"{{"create_request":{{"key":"{}","range_end":"{}"}}}}"#,
            b64("gw/"),
            b64("gw0")
        ),
    ));
    match rt.block_on(watch.next()) {
        Ok(created) => ck.check(created["created"] == Value::Bool(true), || {
            format!("the first watch response says created: {created}")
        }),
        Err(e) => ck.fail(format!("watch create: {e}")),
    }
    wait_watchers(&mut ck, &f1, 1.0);

    // A lease, granted on the other follower.
    let (status, granted) = post(&f2, "/v3/lease/grant", r#"{"TTL":"60"}"#.into());
    ck.eq("lease grant: HTTP status", status, 200);
    ck.eq("lease grant: TTL", granted["TTL"].as_str(), Some("60"));
    let id = granted["ID"].as_str().unwrap_or("").to_string();
    ck.check(id.parse::<i64>().is_ok_and(|i| i > 0), || {
        format!("lease grant: ID is an int64 string: {granted}")
    });

    let (status, _) = post(
        &lead,
        "/v3/kv/put",
        format!(
            r#"{{"key":"{}","value":"{}","lease":"{id}"}}"#,
            b64("gw/leased"),
            b64("x")
        ),
    );
    ck.eq("put with a lease: HTTP status", status, 200);
    let (status, _) = post(
        &lead,
        "/v3/kv/put",
        format!(r#"{{"key":"{}","value":"{}"}}"#, b64("gw/kept"), b64("y")),
    );
    ck.eq("put: HTTP status", status, 200);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match rt.block_on(watch.next()) {
            Ok(r) => seen.extend(gateway_events(&r)),
            Err(e) => {
                ck.fail(format!("watch events after the puts: {e}"));
                break;
            }
        }
    }
    ck.eq(
        "watch events of the two puts",
        seen.clone(),
        vec![
            ("PUT".into(), "gw/leased".into(), "x".into()),
            ("PUT".into(), "gw/kept".into(), "y".into()),
        ],
    );

    let (status, ttl) = post(
        &f1,
        "/v3/lease/timetolive",
        format!(r#"{{"ID":"{id}","keys":true}}"#),
    );
    ck.eq("timetolive: HTTP status", status, 200);
    ck.eq(
        "timetolive: grantedTTL",
        ttl["grantedTTL"].as_str(),
        Some("60"),
    );
    ck.check(
        ttl["TTL"]
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .is_some_and(|s| (50..=60).contains(&s)),
        || format!("timetolive: remaining TTL within 50..=60: {ttl}"),
    );
    let keys: Vec<String> = ttl["keys"]
        .as_array()
        .map(|k| {
            k.iter()
                .filter_map(|k| k.as_str().and_then(unb64))
                .collect()
        })
        .unwrap_or_default();
    ck.eq("timetolive: keys", keys, vec!["gw/leased".to_string()]);

    let (status, leases) = post(&f2, "/v3/lease/leases", "{}".into());
    ck.eq("leases: HTTP status", status, 200);
    let ids: Vec<&str> = leases["leases"]
        .as_array()
        .map(|l| l.iter().filter_map(|l| l["ID"].as_str()).collect())
        .unwrap_or_default();
    ck.eq("leases: ids", ids, vec![id.as_str()]);

    let mut keep = rt.block_on(GatewayStream::open(
        &http,
        &f2,
        "/v3/lease/keepalive",
        format!(r#"{{"ID":"{id}"}}"#),
    ));
    match rt.block_on(keep.next()) {
        Ok(r) => {
            ck.eq("keepalive: ID", r["ID"].as_str(), Some(id.as_str()));
            ck.eq("keepalive: TTL", r["TTL"].as_str(), Some("60"));
        }
        Err(e) => ck.fail(format!("keepalive: {e}")),
    }
    drop(keep);

    // The revoke deletes the leased key; the watch sees that delete.
    let (status, _) = post(&lead, "/v3/lease/revoke", format!(r#"{{"ID":"{id}"}}"#));
    ck.eq("revoke: HTTP status", status, 200);
    match rt.block_on(watch.next()) {
        Ok(r) => ck.eq(
            "watch event of the revoke",
            gateway_events(&r),
            vec![("DELETE".into(), "gw/leased".into(), String::new())],
        ),
        Err(e) => ck.fail(format!("watch event of the revoke: {e}")),
    }
    let (status, gone) = post(
        &f1,
        "/v3/kv/range",
        format!(r#"{{"key":"{}"}}"#, b64("gw/leased")),
    );
    ck.eq("range after the revoke: HTTP status", status, 200);
    ck.check(gone["kvs"].is_null(), || {
        format!("the leased key is gone after the revoke: {gone}")
    });
    drop(watch);
    ck.finish();
}
