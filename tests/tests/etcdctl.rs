//! End-to-end tests of raft-node's etcd v3 API with the real `etcdctl` 3.4
//! (Debian `etcd-client`) against a 3-node cluster, and of etcd's JSON
//! gateway with plain HTTP requests.
//!
//! The expected outputs are etcd's own: with `RAFT_TESTS_AGAINST_ETCD=1` the
//! very same tests run against a real 3-member etcd 3.4 cluster (Debian
//! `etcd-server`, `etcd` on `PATH`) instead of raft-node, and must pass there
//! too. Assertions compare `etcdctl`'s printed output or its parsed `-w json`
//! output, never anything raft-node-specific, except where raft-node
//! deliberately differs; each such place branches on [`System::is_etcd`] and
//! says why.
//!
//! Every request kind goes to the leader and to a follower (followers
//! forward writes and linearizable reads to the leader).
//!
//! Without `etcdctl` on `PATH` the etcdctl tests print why they are skipped
//! and pass (`scripts/install-test-deps` installs it for CI); the gateway
//! test needs only HTTP and runs anyway.
//!
//! Every discrepancy these tests found in raft-node is fixed; the checks are
//! strict on both systems.
//!
//! ```sh
//! cargo test -p raft-tests --test etcdctl                              # raft-node
//! RAFT_TESTS_AGAINST_ETCD=1 cargo test -p raft-tests --test etcdctl    # etcd 3.4
//! ```
//!
//! The tests collect every failed check of a run and fail at the end with all
//! of them, so one discrepancy does not hide the next ones. A failing run
//! keeps its directory (logs of every node) under
//! `target/etcdctl-tests/`; the path is printed.

mod etcdctl_common;

use std::time::{Duration, Instant};

use etcdctl_common::*;
use raft_tests::cluster::{Cluster, ClusterOptions};
use raft_tests::etcd::EtcdCluster;
use serde_json::Value;

// ---------------------------------------------------------------- tests

/// put / get (every flag etcdctl 3.4 has that the issue names) / del / txn /
/// compaction, on the leader and on a follower.
#[test]
fn etcdctl_kv_txn_and_compaction() {
    let Some(env) = setup("etcdctl_kv_txn_and_compaction", true) else {
        return;
    };
    let mut ck = Checks::new(system_name());
    let t = env.wait_leader(Duration::from_secs(30));
    let (l, f) = (t.leader_ep(), t.follower_ep());
    let c = &env.ctl;

    // ---- put. The first put's revision is the base of the expected ones.
    let v = c.json(&mut ck, &[l], &["put", "foo", "bar"]);
    let r1 = header_revision(&v);
    ck.check(r1 > 0, || format!("put -w json has a header revision: {v}"));
    for (ep, k, val) in [
        (f, "foo/a", "1"),
        (l, "foo/b", "2"),
        (f, "foo/c", "3"),
        (f, "zoo", "z"),
    ] {
        let out = c.ok(&mut ck, &[ep], &["put", k, val]);
        ck.eq(
            &format!("`put {k} {val}` on {ep}"),
            out.stdout.as_str(),
            "OK\n",
        );
    }
    // r1+5: foo becomes bar2; --prev-kv prints the old pair.
    let out = c.ok(&mut ck, &[f], &["put", "foo", "bar2", "--prev-kv"]);
    ck.eq(
        "put --prev-kv (follower)",
        out.stdout.as_str(),
        "OK\nfoo\nbar\n",
    );

    // ---- get, on the leader and on a follower (linearizable by default:
    // the follower must see the writes just acknowledged).
    for ep in t.both() {
        let e = [ep];
        let out = c.ok(&mut ck, &e, &["get", "foo"]);
        ck.eq(
            &format!("get foo on {ep}"),
            out.stdout.as_str(),
            "foo\nbar2\n",
        );

        let v = c.json(&mut ck, &e, &["get", "foo"]);
        ck.eq(
            &format!("get foo -w json kvs on {ep}"),
            kvs(&v),
            vec![kv("foo", "bar2", r1, r1 + 5, 2)],
        );
        ck.eq(
            &format!("get foo -w json count on {ep}"),
            num(&v["count"]),
            Some(1),
        );
        ck.eq(
            &format!("get foo -w json header revision on {ep}"),
            header_revision(&v),
            r1 + 5,
        );

        let out = c.ok(&mut ck, &e, &["get", "foo", "--prefix"]);
        ck.eq(
            &format!("get foo --prefix on {ep}"),
            out.stdout.as_str(),
            "foo\nbar2\nfoo/a\n1\nfoo/b\n2\nfoo/c\n3\n",
        );

        let v = c.json(&mut ck, &e, &["get", "foo/", "--prefix", "--limit", "2"]);
        ck.eq(
            &format!("get foo/ --prefix --limit 2 on {ep}"),
            kvs(&v),
            vec![
                kv("foo/a", "1", r1 + 1, r1 + 1, 1),
                kv("foo/b", "2", r1 + 2, r1 + 2, 1),
            ],
        );
        ck.eq(
            &format!("--limit 2: more on {ep}"),
            v["more"].as_bool(),
            Some(true),
        );
        ck.eq(
            &format!("--limit 2: count on {ep}"),
            num(&v["count"]),
            Some(3),
        );

        let out = c.ok(&mut ck, &e, &["get", "foo/b", "--from-key"]);
        ck.eq(
            &format!("get foo/b --from-key on {ep}"),
            out.stdout.as_str(),
            "foo/b\n2\nfoo/c\n3\nzoo\nz\n",
        );

        let out = c.ok(&mut ck, &e, &["get", "foo/", "--prefix", "--keys-only"]);
        ck.eq(
            &format!("get --keys-only on {ep}"),
            out.lines(),
            vec!["foo/a", "foo/b", "foo/c"],
        );
        let v = c.json(&mut ck, &e, &["get", "foo/", "--prefix", "--keys-only"]);
        let has_value = v["kvs"]
            .as_array()
            .is_some_and(|a| a.iter().any(|kv| kv.get("value").is_some()));
        ck.check(!has_value && kvs(&v).len() == 3, || {
            format!("get --keys-only -w json on {ep}: 3 kvs without values: {v}")
        });

        let out = c.ok(
            &mut ck,
            &e,
            &[
                "get",
                "foo/",
                "--prefix",
                "--sort-by=VALUE",
                "--order=DESCEND",
            ],
        );
        ck.eq(
            &format!("--sort-by=VALUE --order=DESCEND on {ep}"),
            out.stdout.as_str(),
            "foo/c\n3\nfoo/b\n2\nfoo/a\n1\n",
        );
        let out = c.ok(
            &mut ck,
            &e,
            &[
                "get",
                "",
                "--from-key",
                "--keys-only",
                "--sort-by=MODIFY",
                "--order=DESCEND",
            ],
        );
        ck.eq(
            &format!("--sort-by=MODIFY --order=DESCEND on {ep}"),
            out.lines(),
            vec!["foo", "zoo", "foo/c", "foo/b", "foo/a"],
        );
        let out = c.ok(
            &mut ck,
            &e,
            &[
                "get",
                "",
                "--from-key",
                "--keys-only",
                "--sort-by=CREATE",
                "--order=ASCEND",
            ],
        );
        ck.eq(
            &format!("--sort-by=CREATE --order=ASCEND on {ep}"),
            out.lines(),
            vec!["foo", "foo/a", "foo/b", "foo/c", "zoo"],
        );
        let out = c.ok(
            &mut ck,
            &e,
            &[
                "get",
                "",
                "--from-key",
                "--keys-only",
                "--sort-by=KEY",
                "--order=DESCEND",
            ],
        );
        ck.eq(
            &format!("--sort-by=KEY --order=DESCEND on {ep}"),
            out.lines(),
            vec!["zoo", "foo/c", "foo/b", "foo/a", "foo"],
        );

        // Historical reads.
        let out = c.ok(&mut ck, &e, &["get", "foo", "--rev", &r1.to_string()]);
        ck.eq(
            &format!("get foo --rev {r1} on {ep}"),
            out.stdout.as_str(),
            "foo\nbar\n",
        );
        let v = c.json(&mut ck, &e, &["get", "foo", "--rev", &r1.to_string()]);
        ck.eq(
            &format!("get foo --rev {r1} -w json on {ep}"),
            kvs(&v),
            vec![kv("foo", "bar", r1, r1, 1)],
        );
        let out = c.ok(
            &mut ck,
            &e,
            &["get", "foo/", "--prefix", "--rev", &(r1 + 2).to_string()],
        );
        ck.eq(
            &format!("get foo/ --prefix --rev {} on {ep}", r1 + 2),
            out.stdout.as_str(),
            "foo/a\n1\nfoo/b\n2\n",
        );
        c.fails_with(
            &mut ck,
            &e,
            &["get", "foo", "--rev", &(r1 + 1000).to_string()],
            "required revision is a future revision",
        );

        // Serializable: answered locally, possibly stale; the follower
        // catches up within a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = c.run(&e, &["get", "foo", "--consistency=s"], None);
            if out.stdout == "foo\nbar2\n" || Instant::now() >= deadline {
                ck.eq(
                    &format!("get foo --consistency=s on {ep}"),
                    out.stdout.as_str(),
                    "foo\nbar2\n",
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // ---- del: r1+6 deletes the three foo/ keys.
    let out = c.ok(&mut ck, &[f], &["del", "foo/", "--prefix", "--prev-kv"]);
    ck.eq(
        "del foo/ --prefix --prev-kv (follower)",
        out.stdout.as_str(),
        "3\nfoo/a\n1\nfoo/b\n2\nfoo/c\n3\n",
    );
    let out = c.ok(&mut ck, &[l], &["del", "nothing-here"]);
    ck.eq("del of a missing key (leader)", out.stdout.as_str(), "0\n");
    let out = c.ok(&mut ck, &[l], &["del", "zoo"]); // r1+7
    ck.eq("del zoo (leader)", out.stdout.as_str(), "1\n");
    for ep in t.both() {
        let out = c.ok(&mut ck, &[ep], &["get", "", "--from-key"]);
        ck.eq(
            &format!("everything after the deletes on {ep}"),
            out.stdout.as_str(),
            "foo\nbar2\n",
        );
        let v = c.json(
            &mut ck,
            &[ep],
            &["get", "foo/", "--prefix", "--rev", &(r1 + 5).to_string()],
        );
        ck.eq(
            &format!("deleted keys are still there at --rev {} on {ep}", r1 + 5),
            num(&v["count"]),
            Some(3),
        );
    }

    // ---- txn, interactive input on stdin: compares on value, version,
    // create and mod revision. r1+8: all hold, the success branch runs;
    // its `get` sees the branch's own put.
    let input = format!(
        "value(\"foo\") = \"bar2\"\nversion(\"foo\") = \"2\"\ncreate(\"foo\") = \"{r1}\"\nmod(\"foo\") = \"{}\"\n\nput foo bar3\nget foo\n\nput foo never\n\n",
        r1 + 5
    );
    let out = c.ok_in(&mut ck, &[f], &["txn"], &input);
    ck.eq(
        "txn, all compares true (follower)",
        out.stdout.as_str(),
        "SUCCESS\n\nOK\n\nfoo\nbar3\n",
    );

    // r1+9: a false compare (mod > current) runs the failure branch.
    let input = format!(
        "value(\"foo\") = \"bar3\"\nmod(\"foo\") > \"{}\"\n\nput foo never\n\nput txn-failed yes\nget foo\n\n",
        r1 + 8
    );
    let out = c.ok_in(&mut ck, &[l], &["txn", "-w", "json"], &input);
    match serde_json::from_str::<Value>(&out.stdout) {
        Ok(v) => {
            ck.check(!v["succeeded"].as_bool().unwrap_or(false), || {
                format!("txn with a false compare did not succeed: {v}")
            });
            ck.eq("txn failure branch: revision", header_revision(&v), r1 + 9);
            let resp = &v["responses"];
            ck.check(resp[0]["Response"].get("ResponsePut").is_some(), || {
                format!("first response is the put: {v}")
            });
            ck.eq(
                "txn failure branch: get",
                kvs(&resp[1]["Response"]["ResponseRange"]),
                vec![kv("foo", "bar3", r1, r1 + 8, 3)],
            );
            // (etcd fills only `revision` in the headers of the responses
            // inside a txn, raft-node the whole header: both carry the
            // txn's revision.)
            ck.eq(
                "txn failure branch: the get's header revision",
                header_revision(&resp[1]["Response"]["ResponseRange"]),
                r1 + 9,
            );
        }
        Err(e) => ck.fail(format!("txn -w json is not JSON ({e}): {}", out.describe())),
    }

    // Create-if-absent (version 0 of a missing key), with --interactive's
    // prompts; then the same txn again takes the failure branch. Also
    // `<` and `>` on create and mod revisions.
    let input = format!(
        "version(\"lock\") = \"0\"\ncreate(\"foo\") < \"{}\"\nmod(\"foo\") > \"{r1}\"\n\nput lock me\n\nget lock\n\n",
        r1 + 1
    );
    let out = c.ok_in(&mut ck, &[f], &["txn", "--interactive"], &input);
    ck.eq(
        "txn --interactive, create-if-absent (follower)",
        out.stdout.as_str(),
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\nSUCCESS\n\nOK\n",
    );
    let out = c.ok_in(&mut ck, &[l], &["txn"], &input);
    ck.eq(
        "txn create-if-absent again (leader)",
        out.stdout.as_str(),
        "FAILURE\n\nlock\nme\n",
    );
    let out = c.ok(&mut ck, &[f], &["get", "", "--from-key"]);
    ck.eq(
        "keys after the txns (follower)",
        out.stdout.as_str(),
        "foo\nbar3\nlock\nme\ntxn-failed\nyes\n",
    );
    let v = c.json(&mut ck, &[f], &["get", "lock"]);
    ck.eq(
        "lock was created at r1+10",
        kvs(&v),
        vec![kv("lock", "me", r1 + 10, r1 + 10, 1)],
    );

    // ---- requests etcd refuses, with its errors; none of them writes.
    c.fails_with(
        &mut ck,
        &[f],
        &["put", "no-such-key", "--ignore-value"],
        "etcdserver: key not found",
    );
    c.fails_with(
        &mut ck,
        &[l],
        &["put", "k", "v", "--lease=1234"],
        "etcdserver: requested lease not found",
    );
    // A 1.6 MiB value (etcdctl reads it from stdin) is over etcd's default
    // 1.5 MiB request limit.
    let big = "x".repeat(1_600_000);
    c.fails_with_in(
        &mut ck,
        &[f],
        &["put", "big"],
        Some(&big),
        "etcdserver: request is too large",
    );
    let many: String = (0..129).map(|i| format!("put many-{i} v\n")).collect();
    let input = format!("\n{many}\n\n");
    c.fails_with_in(
        &mut ck,
        &[l],
        &["txn"],
        Some(&input),
        "etcdserver: too many operations in txn request",
    );
    c.fails_with_in(
        &mut ck,
        &[f],
        &["txn"],
        Some("\nput dup 1\ndel dup\n\n\n"),
        "etcdserver: duplicate key given in txn request",
    );
    let v = c.json(&mut ck, &[f], &["get", "", "--from-key", "--keys-only"]);
    ck.eq(
        "no write after the refused requests: revision",
        header_revision(&v),
        r1 + 10,
    );
    ck.eq(
        "no write after the refused requests: count",
        num(&v["count"]),
        Some(3),
    );

    // ---- compaction at r1+5 (foo = bar2): below it is gone, at it is not.
    let out = c.ok(&mut ck, &[f], &["compaction", &(r1 + 5).to_string()]);
    ck.eq(
        "compaction (follower)",
        out.stdout.as_str(),
        format!("compacted revision {}\n", r1 + 5).as_str(),
    );
    for ep in t.both() {
        c.fails_with(
            &mut ck,
            &[ep],
            &["get", "foo", "--rev", &(r1 + 4).to_string()],
            "required revision has been compacted",
        );
        let out = c.ok(
            &mut ck,
            &[ep],
            &["get", "foo", "--rev", &(r1 + 5).to_string()],
        );
        ck.eq(
            &format!("get at the compacted revision on {ep}"),
            out.stdout.as_str(),
            "foo\nbar2\n",
        );
    }
    let out = c.ok(
        &mut ck,
        &[l],
        &["compaction", "--physical", &(r1 + 6).to_string()],
    );
    ck.eq(
        "compaction --physical (leader)",
        out.stdout.as_str(),
        format!("compacted revision {}\n", r1 + 6).as_str(),
    );
    c.fails_with(
        &mut ck,
        &[f],
        &["compaction", &(r1 + 2).to_string()],
        "required revision has been compacted",
    );
    c.fails_with(
        &mut ck,
        &[f],
        &["get", "foo", "--rev", &(r1 + 5).to_string()],
        "required revision has been compacted",
    );
    c.fails_with(
        &mut ck,
        &[l],
        &["compaction", &(r1 + 1000).to_string()],
        "required revision is a future revision",
    );

    drop(env);
    ck.finish();
}

/// `member list/add/promote/remove`, `endpoint status/health/hashkv`,
/// `alarm list`, `move-leader`.
#[test]
fn etcdctl_cluster_and_maintenance() {
    let Some(env) = setup("etcdctl_cluster_and_maintenance", true) else {
        return;
    };
    let mut ck = Checks::new(system_name());
    let t = env.wait_leader(Duration::from_secs(30));
    let (l, f) = (t.leader_ep(), t.follower_ep());
    let all_owned = env.endpoints();
    let all: Vec<&str> = all_owned.iter().map(String::as_str).collect();
    let c = &env.ctl;
    let is_etcd = env.sys.is_etcd();
    let mut ids: Vec<(String, u64)> = vec![t.leader.clone()];
    ids.extend(t.followers.iter().cloned());

    for (i, ep) in [l, f, l, f].iter().enumerate() {
        c.ok(&mut ck, &[ep], &["put", &format!("k{i}"), &format!("v{i}")]);
    }
    // The checks below read every member's state: wait until all have it.
    env.wait_caught_up(Duration::from_secs(30));

    // ---- member list: the members are the endpoints' members. Member IDs
    // are small integers in raft-node (its configured node ids) and random
    // 64-bit numbers in etcd; etcdctl prints them in hex either way, so the
    // checks use the IDs `endpoint status` reported.
    for ep in t.both() {
        let v = c.json(&mut ck, &[ep], &["member", "list"]);
        let mut got: Vec<(u64, Vec<String>, bool, bool)> = v["members"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| {
                        (
                            m["ID"].as_u64().unwrap_or(0),
                            m["clientURLs"]
                                .as_array()
                                .map(|u| {
                                    u.iter()
                                        .filter_map(|s| s.as_str().map(String::from))
                                        .collect()
                                })
                                .unwrap_or_default(),
                            m["name"].as_str().is_some_and(|n| !n.is_empty()),
                            m["isLearner"].as_bool().unwrap_or(false),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        got.sort();
        let mut want: Vec<(u64, Vec<String>, bool, bool)> = ids
            .iter()
            .map(|(e, id)| (*id, vec![env.sys.client_url(e)], true, false))
            .collect();
        want.sort();
        ck.eq(
            &format!("member list -w json on {ep}: (ID, clientURLs, named, learner)"),
            got,
            want,
        );

        let out = c.ok(&mut ck, &[ep], &["member", "list"]);
        let mut rows: Vec<String> = out.lines().iter().map(|s| s.to_string()).collect();
        rows.sort();
        let mut want: Vec<String> = Vec::new();
        for m in v["members"].as_array().into_iter().flatten() {
            want.push(format!(
                "{:x}, started, {}, {}, {}, false",
                m["ID"].as_u64().unwrap_or(0),
                m["name"].as_str().unwrap_or(""),
                m["peerURLs"][0].as_str().unwrap_or(""),
                m["clientURLs"][0].as_str().unwrap_or("")
            ));
        }
        want.sort();
        ck.eq(&format!("member list on {ep}"), rows, want);

        let out = c.ok(&mut ck, &[ep], &["member", "list", "-w", "table"]);
        for (e, id) in &ids {
            let row = out
                .stdout
                .lines()
                .find(|r| r.contains(&format!(" {} ", env.sys.client_url(e))));
            let cells: Vec<&str> = row
                .map(|r| r.split('|').map(str::trim).collect())
                .unwrap_or_default();
            ck.check(
                cells.len() > 6 && cells[1] == format!("{id:x}") && cells[2] == "started" && cells[6] == "false",
                || format!("member list -w table on {ep} has the row `| {id:x} | started | ... | {} | false |`:\n{}", env.sys.client_url(e), out.stdout),
            );
        }
    }

    // ---- endpoint status (every member, then one follower alone).
    let v = c.json(&mut ck, &all, &["endpoint", "status"]);
    let entries = v.as_array().cloned().unwrap_or_default();
    ck.eq("endpoint status: one entry per endpoint", entries.len(), 3);
    for s in &entries {
        let st = &s["Status"];
        let ep = s["Endpoint"].as_str().unwrap_or("?");
        // The version differs on purpose: raft-node answers "3.4.0" (the
        // etcd API version it implements), etcd its own release, "3.4.x".
        ck.check(
            st["version"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.4.")),
            || format!("endpoint status version 3.4.x on {ep}: {st}"),
        );
        // (Compared with the other members' answers below, not with the
        // leader found at the start: a loaded machine may elect anew.)
        ck.check(
            st["leader"]
                .as_u64()
                .is_some_and(|x| ids.iter().any(|(_, id)| *id == x)),
            || format!("endpoint status on {ep} names a member as leader: {st}"),
        );
        ck.check(num(&st["dbSize"]).unwrap_or(0) > 0, || {
            format!("endpoint status dbSize > 0 on {ep}: {st}")
        });
        let (term, index, applied) = (
            num(&st["raftTerm"]).unwrap_or(0),
            num(&st["raftIndex"]).unwrap_or(0),
            num(&st["raftAppliedIndex"]).unwrap_or(0),
        );
        ck.check(term > 0 && applied > 0 && applied <= index, || {
            format!("endpoint status raft term/index/applied on {ep}: {st}")
        });
        ck.check(!st["isLearner"].as_bool().unwrap_or(false), || {
            format!("endpoint status: not a learner on {ep}: {st}")
        });
        ck.check(
            st.get("errors")
                .is_none_or(|e| e.as_array().is_some_and(Vec::is_empty)),
            || format!("endpoint status: no errors on {ep}: {st}"),
        );
    }
    let mut members: Vec<u64> = entries
        .iter()
        .filter_map(|s| s["Status"]["header"]["member_id"].as_u64())
        .collect();
    members.sort();
    let mut want: Vec<u64> = ids.iter().map(|(_, id)| *id).collect();
    want.sort();
    ck.eq("endpoint status: member ids", members, want);
    let leaders: Vec<Option<u64>> = entries
        .iter()
        .map(|s| s["Status"]["leader"].as_u64())
        .collect();
    ck.check(leaders.iter().all(|x| *x == leaders[0]), || {
        format!("endpoint status: every member names the same leader: {leaders:?}")
    });
    let out = c.ok(&mut ck, &[f], &["endpoint", "status", "-w", "table"]);
    let f_leads = env.wait_leader(Duration::from_secs(30)).leader.1 == t.followers[0].1;
    let row = out.stdout.lines().find(|r| r.contains(f)).unwrap_or("");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    ck.check(
        cells.len() > 6 && cells[2] == format!("{:x}", t.followers[0].1) && cells[5] == f_leads.to_string() && cells[6] == "false",
        || format!("endpoint status -w table on the follower: `| {f} | {:x} | .. | {f_leads} | false |`:\n{}", t.followers[0].1, out.stdout),
    );

    // ---- `--cluster`: etcdctl takes the endpoints from MemberList's
    // client URLs and dials each one on its own connection for Status,
    // HashKV and Defragment.
    let mut urls: Vec<String> = all.iter().map(|e| env.sys.client_url(e)).collect();
    urls.sort();
    let out = c.ok(&mut ck, &[f], &["endpoint", "health", "--cluster"]);
    for u in &urls {
        ck.check(
            out.stderr.lines().any(|line| {
                line.starts_with(&format!("{u} is healthy: successfully committed proposal"))
            }),
            || {
                format!(
                    "endpoint health --cluster names {u} healthy: {}",
                    out.describe()
                )
            },
        );
    }
    for what in ["status", "hashkv"] {
        let v = c.json(&mut ck, &[f], &["endpoint", what, "--cluster"]);
        let mut seen: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["Endpoint"].as_str().map(String::from))
            .collect();
        seen.sort();
        ck.eq(
            &format!("endpoint {what} --cluster: endpoints"),
            &seen,
            &urls,
        );
    }
    let out = c.ok(&mut ck, &[f], &["defrag", "--cluster"]);
    for u in &urls {
        ck.check(
            out.stdout
                .contains(&format!("Finished defragmenting etcd member[{u}]\n")),
            || format!("defrag --cluster defragments {u}: {}", out.describe()),
        );
    }
    // The same with endpoints given as URLs, as etcd users write them.
    // etcdctl dials each endpoint of a per-endpoint Maintenance call
    // (endpoint status, endpoint hashkv, defrag, move-leader) with the
    // endpoint verbatim as the HTTP/2 `:authority`, here
    // "http://127.0.0.x:port"; raft-node repairs that authority
    // (api/authority.rs) where its HTTP/2 server would reset the stream.
    let http_eps: Vec<String> = all.iter().map(|e| format!("http://{e}")).collect();
    let http_eps: Vec<&str> = http_eps.iter().map(String::as_str).collect();
    let out = c.run(&http_eps, &["endpoint", "status", "-w", "json"], None);
    let answered = serde_json::from_str::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len));
    ck.check(out.success() && answered == Some(3), || {
        format!(
            "endpoint status on http:// endpoints answers for all 3: {}",
            out.describe()
        )
    });
    let out = c.run(&[http_eps[0]], &["get", "k0"], None);
    ck.eq(
        "get on an http:// endpoint",
        out.stdout.as_str(),
        "k0\nv0\n",
    );
    let out = c.ok(&mut ck, &[l], &["defrag"]);
    ck.eq(
        "defrag (leader)",
        out.stdout.as_str(),
        format!("Finished defragmenting etcd member[{l}]\n").as_str(),
    );

    // ---- endpoint health.
    let out = c.ok(&mut ck, &all, &["endpoint", "health"]);
    for ep in &all {
        ck.check(
            // etcdctl prints the health lines on stderr.
            out.stderr.lines().any(|line| {
                line.starts_with(&format!("{ep} is healthy: successfully committed proposal"))
            }),
            || format!("endpoint health names {ep} healthy: {}", out.describe()),
        );
    }
    let v = c.json(&mut ck, &all, &["endpoint", "health"]);
    let mut healthy: Vec<(String, bool)> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["endpoint"].as_str().unwrap_or("").to_string(),
                h["health"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    healthy.sort();
    let mut want: Vec<(String, bool)> = all.iter().map(|e| (e.to_string(), true)).collect();
    want.sort();
    ck.eq("endpoint health -w json", healthy, want);

    // ---- endpoint hashkv: at a given revision every member hashes the
    // same (members may apply it a moment apart: retry briefly), and the
    // next write changes the hash of the next revision, not of this one.
    let rev = header_revision(&c.json(&mut ck, &[l], &["get", "k0"]));
    let hashes = |ck: &mut Checks, rev: u64| -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let out = c.run(
                &all,
                &[
                    "endpoint",
                    "hashkv",
                    "--rev",
                    &rev.to_string(),
                    "-w",
                    "json",
                ],
                None,
            );
            let v: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
            let h: Vec<u64> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["HashKV"]["hash"].as_u64())
                .collect();
            let same = h.len() == 3 && h.iter().all(|x| *x == h[0]);
            if (out.success() && same) || Instant::now() >= deadline {
                ck.check(out.success() && same && h[0] != 0, || {
                    format!(
                        "endpoint hashkv --rev {rev}: the same non-zero hash on all 3: {}",
                        out.describe()
                    )
                });
                return h;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let h1 = hashes(&mut ck, rev);
    c.ok(&mut ck, &[f], &["put", "k0", "changed"]);
    let h2 = hashes(&mut ck, rev + 1);
    let h1_again = hashes(&mut ck, rev);
    ck.eq(
        "hashkv of an old revision is stable",
        h1_again.first(),
        h1.first(),
    );
    ck.check(h1.first() != h2.first(), || {
        format!("hashkv changes with a write: {h1:?} vs {h2:?}")
    });
    let out = c.ok(
        &mut ck,
        &all,
        &["endpoint", "hashkv", "--rev", &rev.to_string()],
    );
    for ep in &all {
        ck.check(
            out.stdout
                .lines()
                .any(|line| h1.first().is_some_and(|h| line == format!("{ep}, {h}"))),
            || format!("endpoint hashkv prints `{ep}, <hash>`: {}", out.describe()),
        );
    }

    // ---- alarm list: no alarm.
    for ep in t.both() {
        let out = c.ok(&mut ck, &[ep], &["alarm", "list"]);
        ck.eq(&format!("alarm list on {ep}"), out.stdout.as_str(), "");
        let v = c.json(&mut ck, &[ep], &["alarm", "list"]);
        ck.check(
            v.get("alarms")
                .is_none_or(|a| a.as_array().is_some_and(Vec::is_empty)),
            || format!("alarm list -w json on {ep} has no alarms: {v}"),
        );
    }

    // ---- member add --learner (through a follower), promote (fails: the
    // learner never starts, so it is not in sync), remove.
    let peer_port = std::net::TcpListener::bind("127.0.0.1:0")
        .map(|s| s.local_addr().map(|a| a.port()).unwrap_or(1))
        .unwrap_or(1);
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let peer_flag = format!("--peer-urls={peer_url}");
    let add = ["member", "add", "newbie", "--learner", &peer_flag];
    // etcd refuses membership changes ("unhealthy cluster") until its
    // members have been connected for 5 s (--strict-reconfig-check), which
    // a fresh cluster may not be yet: retry that error for a while.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut out = c.run(&[f], &add, None);
    while !out.success() && out.stderr.contains("unhealthy cluster") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        out = c.run(&[f], &add, None);
    }
    ck.check(out.success(), || {
        format!("expected success: {}", out.describe())
    });
    let first: Vec<&str> = out
        .stdout
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let new_id = match first.as_slice() {
        ["Member", id, "added", "to", "cluster", _] => u64::from_str_radix(id, 16).ok(),
        _ => None,
    };
    ck.check(new_id.is_some(), || {
        format!(
            "member add prints `Member <id> added to cluster <id>`: {}",
            out.describe()
        )
    });
    let new_id = new_id.unwrap_or(0);
    ck.check(out.stdout.contains("ETCD_NAME=\"newbie\"\n"), || {
        format!("member add prints ETCD_NAME: {}", out.describe())
    });
    ck.check(
        out.stdout
            .contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\"\n"),
        || {
            format!(
                "member add prints ETCD_INITIAL_CLUSTER_STATE: {}",
                out.describe()
            )
        },
    );
    ck.check(
        out.stdout.contains(&format!(
            "ETCD_INITIAL_ADVERTISE_PEER_URLS=\"{peer_url}\"\n"
        )),
        || {
            format!(
                "member add prints ETCD_INITIAL_ADVERTISE_PEER_URLS: {}",
                out.describe()
            )
        },
    );
    // etcdctl builds ETCD_INITIAL_CLUSTER from a MemberList it sends right
    // after the MemberAdd, to the member that answered the add: that list
    // must already hold the new member. raft-node's peer URLs always have
    // the https scheme (its peers talk QUIC with TLS), whatever scheme was
    // given: compare from "://".
    let initial = out
        .stdout
        .lines()
        .find(|l| l.starts_with("ETCD_INITIAL_CLUSTER="))
        .unwrap_or("");
    // The member that serves a MemberAdd answers once it applied the
    // change, so this list holds the new member.
    ck.check(
        initial.contains(&format!("newbie={}", if is_etcd { "http" } else { "https" }))
            && initial.contains(&peer_url[4..]),
        || format!("member add (through a follower) prints ETCD_INITIAL_CLUSTER with the new member newbie=...{}: {}", &peer_url[4..], out.describe()),
    );

    // Another member than the one that served the add may apply it a
    // moment later (MemberList is a local read in etcd 3.4): wait for it.
    for ep in [f, l] {
        let v = json_when(c, &mut ck, ep, &["member", "list"], |v| {
            v["members"].as_array().is_some_and(|a| a.len() == 4)
        });
        let list = v["members"].as_array().cloned().unwrap_or_default();
        ck.eq(
            &format!("member list after the add on {ep}: 4 members"),
            list.len(),
            4,
        );
        let m = list
            .iter()
            .find(|m| m["ID"].as_u64() == Some(new_id))
            .cloned()
            .unwrap_or(Value::Null);
        ck.eq(
            &format!("the new member is a learner on {ep}"),
            m["isLearner"].as_bool(),
            Some(true),
        );
        ck.check(
            m["peerURLs"][0]
                .as_str()
                .is_some_and(|u| u.ends_with(&peer_url[4..])),
            || format!("the new member's peer URL on {ep}: {m}"),
        );
        ck.check(
            m.get("clientURLs")
                .is_none_or(|u| u.as_array().is_some_and(Vec::is_empty)),
            || format!("the new member has no client URL yet on {ep}: {m}"),
        );
    }
    let out = c.ok(&mut ck, &[l], &["member", "list", "-w", "table"]);
    let row = out
        .stdout
        .lines()
        .find(|r| r.contains(&peer_url[4..]))
        .unwrap_or("");
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    ck.check(
        cells.len() > 6 && cells[1] == format!("{new_id:x}") && cells[6] == "true",
        || {
            format!(
                "member list -w table shows the learner `| {new_id:x} | ... | true |`:\n{}",
                out.stdout
            )
        },
    );
    // A member that never started has no name yet, so etcdctl shows it
    // "unstarted".
    ck.check(
        cells.len() > 6 && cells[2] == "unstarted" && cells[3].is_empty(),
        || format!("member list -w table shows the never-started learner `| {new_id:x} | unstarted | <no name> | ...`:\n{}", out.stdout),
    );

    let hex = format!("{new_id:x}");
    for ep in [f, l] {
        let out = c.run(&[ep], &["member", "promote", &hex], None);
        // A learner that never started is not in sync with the leader:
        // promoting it is refused.
        ck.check(
            !out.success()
                && out
                    .stderr
                    .contains("can only promote a learner member which is in sync with leader"),
            || format!("member promote of the never-started learner through {ep} fails with etcd's \"can only promote a learner member which is in sync with leader\": {}", out.describe()),
        );
    }

    // member update: a new peer URL for the learner (through the leader).
    let peer_port2 = std::net::TcpListener::bind("127.0.0.1:0")
        .map(|s| s.local_addr().map(|a| a.port()).unwrap_or(2))
        .unwrap_or(2);
    let peer_url2 = format!("http://127.0.0.1:{peer_port2}");
    let out = c.ok(
        &mut ck,
        &[l],
        &[
            "member",
            "update",
            &hex,
            &format!("--peer-urls={peer_url2}"),
        ],
    );
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    ck.check(
        matches!(words.as_slice(), ["Member", id, "updated", "in", "cluster", _] if *id == hex),
        || {
            format!(
                "member update prints `Member {hex} updated in cluster <id>`: {}",
                out.describe()
            )
        },
    );
    for ep in [l, f] {
        let want = |m: &Value| {
            m["peerURLs"][0]
                .as_str()
                .is_some_and(|u| u.ends_with(&peer_url2[4..]))
        };
        let v = json_when(c, &mut ck, ep, &["member", "list"], |v| {
            v["members"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|m| m["ID"].as_u64() == Some(new_id) && want(m))
            })
        });
        let m = v["members"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["ID"].as_u64() == Some(new_id));
        ck.check(m.is_some_and(want), || {
            format!(
                "member list on {ep} shows the updated peer URL ...{}: {v}",
                &peer_url2[4..]
            )
        });
    }

    let out = c.ok(&mut ck, &[f], &["member", "remove", &hex]);
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    ck.check(
        matches!(words.as_slice(), ["Member", id, "removed", "from", "cluster", _] if *id == hex),
        || {
            format!(
                "member remove prints `Member {hex} removed from cluster <id>`: {}",
                out.describe()
            )
        },
    );
    for ep in [f, l] {
        // The member that served the remove (f) lists the members after it
        // at once; the other one may apply it a moment later (MemberList
        // is a local read in etcd 3.4), so it is waited for.
        if ep == f {
            let v = c.json(&mut ck, &[ep], &["member", "list"]);
            ck.check(
                v["members"].as_array().is_some_and(|a| a.len() == 3),
                || format!("member list right after member remove, on the follower that served it ({ep}): {v}"),
            );
        }
        let v = json_when(c, &mut ck, ep, &["member", "list"], |v| {
            v["members"].as_array().is_some_and(|a| a.len() == 3)
        });
        let mut got: Vec<u64> = v["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["ID"].as_u64())
            .collect();
        got.sort();
        let mut want: Vec<u64> = ids.iter().map(|(_, id)| *id).collect();
        want.sort();
        ck.eq(&format!("member list after the remove on {ep}"), got, want);
    }
    c.fails_with(
        &mut ck,
        &[l],
        &["member", "remove", &hex],
        "member not found",
    );

    // The same through a follower with -w json: MemberAdd's and
    // MemberRemove's responses carry the member list after the change.
    let peer_port3 = std::net::TcpListener::bind("127.0.0.1:0")
        .map(|s| s.local_addr().map(|a| a.port()).unwrap_or(3))
        .unwrap_or(3);
    let peer_url3 = format!("http://127.0.0.1:{peer_port3}");
    let flag3 = format!("--peer-urls={peer_url3}");
    let v = c.json(
        &mut ck,
        &[f],
        &["member", "add", "newbie2", "--learner", &flag3],
    );
    let id3 = v["member"]["ID"].as_u64().unwrap_or(0);
    ck.check(
        id3 != 0 && v["member"]["isLearner"].as_bool() == Some(true),
        || format!("member add -w json: the new learner in `member`: {v}"),
    );
    let ids_in = |v: &Value| -> Vec<u64> {
        let mut ids: Vec<u64> = v["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["ID"].as_u64())
            .collect();
        ids.sort();
        ids
    };
    let mut with3: Vec<u64> = ids.iter().map(|(_, id)| *id).chain([id3]).collect();
    with3.sort();
    // The response's `members` is the list after the change, also when a
    // follower served the call.
    ck.check(ids_in(&v) == with3, || {
        format!("member add -w json through {f}: `members` holds the new member {id3}: {v}")
    });
    let v = c.json(&mut ck, &[f], &["member", "remove", &format!("{id3:x}")]);
    let mut without: Vec<u64> = ids.iter().map(|(_, id)| *id).collect();
    without.sort();
    ck.check(ids_in(&v) == without, || {
        format!("member remove -w json through {f}: `members` without the removed {id3}: {v}")
    });
    let v = json_when(c, &mut ck, l, &["member", "list"], |v| ids_in(v) == without);
    ck.eq("member list after the second remove", ids_in(&v), without);

    // ---- move-leader to a follower (etcdctl sends it to the leader among
    // the endpoints it is given).
    let now = env.wait_leader(Duration::from_secs(30));
    let (to_ep, to) = now.followers[0].clone();
    let out = c.ok(&mut ck, &all, &["move-leader", &format!("{to:x}")]);
    ck.eq(
        "move-leader",
        out.stdout.as_str(),
        format!("Leadership transferred from {:x} to {to:x}\n", now.leader.1).as_str(),
    );
    let l = now.leader_ep();
    let deadline = Instant::now() + Duration::from_secs(10);
    let moved = loop {
        let out = c.run(&all, &["endpoint", "status", "-w", "json"], None);
        let tp = parse_topology(&out, &all);
        if tp.as_ref().is_some_and(|tp| tp.leader.1 == to) || Instant::now() >= deadline {
            break tp;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    ck.eq(
        "endpoint status: the leader after move-leader",
        moved.map(|tp| tp.leader),
        Some((to_ep.clone(), to)),
    );
    // The old leader is now a follower that forwards.
    let out = c.ok(&mut ck, &[l], &["put", "after-move", "yes"]);
    ck.eq(
        "put on the old leader after move-leader",
        out.stdout.as_str(),
        "OK\n",
    );
    let out = c.ok(&mut ck, &[&to_ep], &["get", "after-move"]);
    ck.eq(
        "get on the new leader after move-leader",
        out.stdout.as_str(),
        "after-move\nyes\n",
    );

    drop(env);
    ck.finish();
}

/// `snapshot save` (through a follower), then a restore into a new cluster
/// that serves the same keys, values, revisions and history.
#[test]
fn etcdctl_snapshot_save_and_restore() {
    let Some(env) = setup("etcdctl_snapshot_save_and_restore", true) else {
        return;
    };
    let mut ck = Checks::new(system_name());
    let t = env.wait_leader(Duration::from_secs(30));
    let (l, f) = (t.leader_ep(), t.follower_ep());
    let c = &env.ctl;

    let r1 = header_revision(&c.json(&mut ck, &[l], &["put", "app/a", "1"]));
    c.ok(&mut ck, &[f], &["put", "app/b", "2"]);
    c.ok(&mut ck, &[l], &["put", "app/a", "one"]);
    c.ok(&mut ck, &[f], &["put", "app/gone", "x"]);
    c.ok(&mut ck, &[f], &["del", "app/gone"]);
    c.ok(&mut ck, &[l], &["put", "other", "o"]); // r1+5
    let before = c.json(&mut ck, &[l], &["get", "", "--from-key"]);
    let old_cluster_id = before["header"]["cluster_id"].as_u64();
    ck.eq(
        "keys before the snapshot",
        kvs(&before),
        vec![
            kv("app/a", "one", r1, r1 + 2, 2),
            kv("app/b", "2", r1 + 1, r1 + 1, 1),
            kv("other", "o", r1 + 5, r1 + 5, 1),
        ],
    );

    // etcdctl 3.4 saves a snapshot from exactly one endpoint.
    let file = env.dir.0.join("backup.db");
    let file_s = file.to_string_lossy().into_owned();
    let out = c.ok(&mut ck, &[f], &["snapshot", "save", &file_s]);
    ck.check(
        out.stdout.contains(&format!("Snapshot saved at {file_s}")),
        || format!("snapshot save output: {}", out.describe()),
    );
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    ck.check(size > 0, || format!("{file_s} is not empty"));

    if env.sys.is_etcd() {
        // Only etcd's file is a bbolt database that `etcdctl snapshot
        // status` can read; raft-node's snapshot file is its own format
        // (the MVCC state with etcd's SHA-256 trailer, so that `snapshot
        // save`'s integrity check passes), restored by `raft-node restore`.
        let v = c.json(&mut ck, &[], &["snapshot", "status", &file_s]);
        ck.eq(
            "snapshot status: revision",
            num(&v["revision"]),
            Some(r1 + 5),
        );
    }

    // A new cluster from the file: `raft-node restore` for raft-node,
    // `etcdctl snapshot restore` for etcd (each system's documented restore
    // procedure), every member on a fresh data dir and new ports.
    let restored_dir = env.dir.0.join("restored");
    let restored = match &env.sys {
        System::Raft { bin, .. } => System::Raft {
            cluster: Cluster::start_restored(
                bin,
                &restored_dir,
                ClusterOptions::for_tests(3),
                &file,
            )
            .unwrap_or_else(|e| panic!("restoring raft-node from {file_s}: {e}")),
            bin: bin.clone(),
        },
        System::Etcd { etcd, .. } => {
            let mut cluster =
                EtcdCluster::start_restored(etcd, &c.etcdctl, &restored_dir, 3, &file)
                    .unwrap_or_else(|e| panic!("restoring etcd from {file_s}: {e}"));
            cluster
                .wait_healthy(&c.etcdctl, Duration::from_secs(30))
                .unwrap_or_else(|e| panic!("{e}"));
            System::Etcd {
                cluster,
                etcd: etcd.clone(),
            }
        }
    };
    // The old cluster stops; only the new one answers from here on.
    let old_eps = env.endpoints();
    let Env {
        sys: old,
        ctl,
        dir,
        _lock,
    } = env;
    drop(old);
    let env = Env {
        sys: restored,
        ctl,
        dir,
        _lock,
    };
    let c = &env.ctl;
    let t2 = env.wait_leader(Duration::from_secs(30));
    ck.check(
        t2.both()
            .iter()
            .all(|ep| !old_eps.contains(&ep.to_string())),
        || "the restored cluster has its own endpoints".into(),
    );

    for ep in t2.both() {
        let v = c.json(&mut ck, &[ep], &["get", "", "--from-key"]);
        ck.eq(&format!("restored keys on {ep}"), kvs(&v), kvs(&before));
        let cluster_id = v["header"]["cluster_id"].as_u64();
        if env.sys.is_etcd() {
            // etcd gives a restored cluster a new identity. raft-node's
            // cluster id is a hash of the founding member ids (1, 2, 3
            // here, as in the old cluster), so it stays the same; the new
            // cluster's own CA keeps the two apart instead.
            ck.check(cluster_id.is_some() && cluster_id != old_cluster_id, || {
                format!("the restored etcd cluster has a new cluster id: {cluster_id:?} vs {old_cluster_id:?}")
            });
        }
        ck.eq(
            &format!("restored revision on {ep}"),
            header_revision(&v),
            r1 + 5,
        );
        let out = c.ok(&mut ck, &[ep], &["get", "app/", "--prefix"]);
        ck.eq(
            &format!("restored get app/ --prefix on {ep}"),
            out.stdout.as_str(),
            "app/a\none\napp/b\n2\n",
        );
        // History came along.
        let out = c.ok(&mut ck, &[ep], &["get", "app/a", "--rev", &r1.to_string()]);
        ck.eq(
            &format!("restored history of app/a on {ep}"),
            out.stdout.as_str(),
            "app/a\n1\n",
        );
    }
    let eps = env.endpoints();
    let v = c.json(&mut ck, &[t2.follower_ep()], &["member", "list"]);
    let mut urls: Vec<String> = v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["clientURLs"][0].as_str().map(String::from))
        .collect();
    urls.sort();
    let mut want: Vec<String> = eps.iter().map(|e| env.sys.client_url(e)).collect();
    want.sort();
    ck.eq(
        "the restored cluster's members are the new ones",
        urls,
        want,
    );
    // And it takes writes, continuing the revisions.
    let v = c.json(
        &mut ck,
        &[t2.follower_ep()],
        &["put", "after-restore", "yes"],
    );
    ck.eq(
        "the first write after the restore",
        header_revision(&v),
        r1 + 6,
    );

    drop(env);
    ck.finish();
}

/// etcd's JSON gateway (`POST /v3/...`, base64 `bytes`, int64 as strings),
/// with plain HTTP requests to a follower and to the leader.
#[test]
fn json_gateway() {
    let Some(env) = setup("json_gateway", false) else {
        return;
    };
    let mut ck = Checks::new(system_name());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client");
    let try_post = |ep: &str, path: &str, body: &str| -> Result<(u16, Value), String> {
        rt.block_on(async {
            let resp = http
                .post(format!("http://{ep}{path}"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| format!("POST {path} to {ep}: {e}"))?;
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            Ok((
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            ))
        })
    };
    let post = |ep: &str, path: &str, body: &str| -> (u16, Value) {
        try_post(ep, path, body).unwrap_or_else(|e| panic!("{e}"))
    };
    let all = env.endpoints();

    // The leader, from the gateway's own status call on every member (no
    // etcdctl needed): all answer and name the same leader, one of them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let t = loop {
        let mut members = Vec::new();
        let mut leaders = Vec::new();
        for ep in &all {
            if let Ok((200, v)) = try_post(ep, "/v3/maintenance/status", "{}") {
                members.push((ep.clone(), num(&v["header"]["member_id"]).unwrap_or(0)));
                leaders.push(num(&v["leader"]).unwrap_or(0));
            }
        }
        let leader = leaders.first().copied().unwrap_or(0);
        let agreed = members.len() == all.len()
            && leader != 0
            && leaders.iter().all(|&x| x == leader)
            && members.iter().any(|(_, id)| *id == leader);
        if agreed {
            let lead = members.iter().find(|(_, id)| *id == leader).cloned();
            let followers = members
                .iter()
                .filter(|(_, id)| *id != leader)
                .cloned()
                .collect();
            break Topology {
                leader: lead.expect("the leader is a member"),
                followers,
            };
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leader in /v3/maintenance/status within 30 s: {members:?} {leaders:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (l, f) = (t.leader_ep(), t.follower_ep());

    // put through the follower; int64 fields are JSON strings.
    let (status, v) = post(f, "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#);
    ck.eq("put: HTTP status", status, 200);
    ck.check(v["header"]["revision"].is_string(), || {
        format!("put: header.revision is a string: {v}")
    });
    let rev = num(&v["header"]["revision"]).unwrap_or(0);
    let rev_s = rev.to_string();
    for ep in t.both() {
        let (status, v) = post(ep, "/v3/kv/range", r#"{"key":"Zm9v"}"#);
        ck.eq(&format!("range on {ep}: HTTP status"), status, 200);
        let kv0 = &v["kvs"][0];
        ck.eq(
            &format!("range on {ep}: key"),
            kv0["key"].as_str(),
            Some("Zm9v"),
        );
        ck.eq(
            &format!("range on {ep}: value"),
            kv0["value"].as_str(),
            Some("YmFy"),
        );
        ck.eq(
            &format!("range on {ep}: create_revision"),
            kv0["create_revision"].as_str(),
            Some(rev_s.as_str()),
        );
        ck.eq(
            &format!("range on {ep}: mod_revision"),
            kv0["mod_revision"].as_str(),
            Some(rev_s.as_str()),
        );
        ck.eq(
            &format!("range on {ep}: version"),
            kv0["version"].as_str(),
            Some("1"),
        );
        ck.eq(
            &format!("range on {ep}: count"),
            v["count"].as_str(),
            Some("1"),
        );
        ck.check(
            v["header"]["cluster_id"].is_string() && v["header"]["member_id"].is_string(),
            || format!("range on {ep}: header ids are strings: {v}"),
        );

        let (status, v) = post(ep, "/v3/maintenance/status", "{}");
        ck.eq(&format!("status on {ep}: HTTP status"), status, 200);
        ck.check(
            v["version"].as_str().is_some_and(|s| s.starts_with("3.4.")),
            || format!("status on {ep}: version 3.4.x: {v}"),
        );
        ck.check(
            v["leader"].is_string()
                && num(&v["leader"])
                    .is_some_and(|x| x == t.leader.1 || t.followers.iter().any(|(_, id)| *id == x)),
            || format!("status on {ep}: the leader, a member id as a string: {v}"),
        );
        ck.check(
            v["raftIndex"].is_string() && num(&v["raftIndex"]).unwrap_or(0) > 0,
            || format!("status on {ep}: raftIndex a non-zero string: {v}"),
        );
        ck.check(
            v["raftTerm"].is_string() && num(&v["raftTerm"]).unwrap_or(0) > 0,
            || format!("status on {ep}: raftTerm a non-zero string: {v}"),
        );

        let (status, v) = post(ep, "/v3/cluster/member/list", "{}");
        ck.eq(&format!("member list on {ep}: HTTP status"), status, 200);
        let mut urls: Vec<String> = v["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["clientURLs"][0].as_str().map(String::from))
            .collect();
        urls.sort();
        let mut want: Vec<String> = all.iter().map(|e| env.sys.client_url(e)).collect();
        want.sort();
        ck.eq(&format!("member list on {ep}: client URLs"), urls, want);
        ck.check(
            v["members"]
                .as_array()
                .is_some_and(|a| a.iter().all(|m| m["ID"].is_string())),
            || format!("member list on {ep}: IDs are strings: {v}"),
        );
    }

    // txn (create-if-absent, enum names as strings) and deleterange with
    // prev_kv, on the leader.
    let txn = format!(
        r#"{{"compare":[{{"key":"{k}","result":"EQUAL","target":"VERSION","version":"0"}}],"success":[{{"request_put":{{"key":"{k}","value":"{v}"}}}}],"failure":[{{"request_range":{{"key":"{k}"}}}}]}}"#,
        k = b64("lock"),
        v = b64("me")
    );
    let (status, v) = post(l, "/v3/kv/txn", &txn);
    ck.eq("txn: HTTP status", status, 200);
    ck.eq("txn: succeeded", v["succeeded"].as_bool(), Some(true));
    let (_, v) = post(f, "/v3/kv/txn", &txn);
    ck.check(!v["succeeded"].as_bool().unwrap_or(false), || {
        format!("txn again: failed compare: {v}")
    });
    ck.eq(
        "txn again: the failure branch's range",
        v["responses"][0]["response_range"]["kvs"][0]["value"].as_str(),
        Some(b64("me").as_str()),
    );
    let (status, v) = post(l, "/v3/kv/deleterange", r#"{"key":"Zm9v","prev_kv":true}"#);
    ck.eq("deleterange: HTTP status", status, 200);
    ck.eq("deleterange: deleted", v["deleted"].as_str(), Some("1"));
    ck.eq(
        "deleterange: prev_kvs",
        v["prev_kvs"][0]["value"].as_str(),
        Some("YmFy"),
    );

    // Errors: a gRPC code and message in etcd's gateway body.
    let (status, v) = post(
        f,
        "/v3/kv/range",
        &format!(r#"{{"key":"Zm9v","revision":"{}"}}"#, rev + 1000),
    );
    ck.eq("future revision: HTTP status", status, 400);
    ck.eq("future revision: code", v["code"].as_u64(), Some(11));
    ck.check(
        v["error"]
            .as_str()
            .is_some_and(|m| m.contains("required revision is a future revision"))
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("required revision is a future revision")),
        || format!("future revision: error and message: {v}"),
    );
    let (status, v) = post(
        l,
        "/v3/kv/compaction",
        &format!(r#"{{"revision":"{rev}"}}"#),
    );
    ck.eq("compaction: HTTP status", status, 200);
    ck.check(v["header"]["revision"].is_string(), || {
        format!("compaction: answered with a header: {v}")
    });
    let (status, v) = post(
        f,
        "/v3/kv/range",
        &format!(r#"{{"key":"Zm9v","revision":"{}"}}"#, rev - 1),
    );
    ck.eq("compacted revision: HTTP status", status, 400);
    ck.eq("compacted revision: code", v["code"].as_u64(), Some(11));
    ck.check(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("required revision has been compacted")),
        || format!("compacted revision: message: {v}"),
    );
    // Malformed JSON: InvalidArgument. The messages differ (each system
    // names its own JSON parser's complaint), the shape does not.
    let (status, v) = post(f, "/v3/kv/range", r#"{"key":"#);
    ck.eq("malformed body: HTTP status", status, 400);
    ck.eq("malformed body: code", v["code"].as_u64(), Some(3));
    ck.check(v["error"].is_string() && v["message"].is_string(), || {
        format!("malformed body: error and message: {v}")
    });
    let (status, v) = post(l, "/v3/kv/put", r#"{"value":"YmFy"}"#);
    ck.eq("put without a key: HTTP status", status, 400);
    ck.eq("put without a key: code", v["code"].as_u64(), Some(3));
    ck.eq(
        "put without a key: message",
        v["message"].as_str(),
        Some("etcdserver: key is not provided"),
    );

    drop(env);
    ck.finish();
}
