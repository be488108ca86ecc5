//! The HTTP API of DESIGN.md §6 over an in-process 3-node cluster: one axum
//! server per node on 127.0.0.1, real drivers and WALs behind them.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use raft_node::config::Member;
use raft_node::http::{router, AddressBook, ApiState};
use raft_node::local_cluster::LocalCluster;
use raft_node::metrics::Metrics;
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::{json, Value};

struct Fixture {
    cluster: LocalCluster,
    urls: BTreeMap<u64, String>,
    _dir: tempfile::TempDir,
}

async fn start() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(dir.path(), 3).unwrap();
    let book: AddressBook = Arc::new(RwLock::new(BTreeMap::new()));
    let mut urls = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        book.write().unwrap().insert(
            id,
            Member {
                id,
                peer_addr: addr,
                client_addr: addr,
            },
        );
        urls.insert(id, format!("http://{addr}"));
        let state = Arc::new(ApiState {
            driver: cluster.handle(id).unwrap(),
            members: book.clone(),
            max_value_bytes: 1024,
            metrics: Arc::new(Metrics::default()),
            client_scheme: "http",
            metrics_require_auth: false,
        });
        tokio::spawn(async move {
            axum::serve(listener, router(state)).await.unwrap();
        });
    }
    let c = &cluster;
    let ok = tokio::task::block_in_place(|| {
        c.wait_for(Duration::from_secs(15), |c| c.leader().is_some())
    });
    assert!(ok, "no leader");
    Fixture {
        cluster,
        urls,
        _dir: dir,
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_redirects_and_leader_serves_the_kv_api() {
    let f = start().await;
    let leader = f.cluster.leader().unwrap();
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let (lurl, furl) = (&f.urls[&leader], &f.urls[&follower]);
    let raw = no_redirects();

    // A follower points writes and linearizable reads at the leader.
    let r = raw
        .put(format!("{furl}/v1/kv/a"))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(r.headers()["location"], format!("{lurl}/v1/kv/a").as_str());
    let r = raw.get(format!("{furl}/v1/kv/a?x=1")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        r.headers()["location"],
        format!("{lurl}/v1/kv/a?x=1").as_str()
    );

    // A client that follows redirects just works from any node.
    let client = reqwest::Client::new();
    let r = client
        .put(format!("{furl}/v1/kv/a"))
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let index = r.json::<Value>().await.unwrap()["index"].as_u64().unwrap();
    assert!(index > 1);
    let r = client.get(format!("{furl}/v1/kv/a")).send().await.unwrap();
    assert_eq!(
        (r.status(), r.text().await.unwrap()),
        (StatusCode::OK, "1".into())
    );
    let r = client
        .get(format!("{lurl}/v1/kv/missing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "not_found");

    // Stale reads are served locally, once the follower has applied the write.
    let mut seen = None;
    for _ in 0..100 {
        let r = raw
            .get(format!("{furl}/v1/kv/a?consistency=stale"))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            seen = Some(r.text().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.as_deref(), Some("1"));

    // Compare-and-swap, absent distinct from empty.
    let cas = |expected: Value, value: Value| {
        let client = client.clone();
        let url = format!("{lurl}/v1/cas/b");
        async move {
            let r = client
                .post(url)
                .json(&json!({"expected": expected, "value": value}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }
    };
    let v = cas(Value::Null, json!("")).await;
    assert_eq!(
        (v["succeeded"].clone(), v["current"].clone()),
        (json!(true), json!(""))
    );
    let v = cas(Value::Null, json!("x")).await;
    assert_eq!(
        (v["succeeded"].clone(), v["current"].clone()),
        (json!(false), json!(""))
    );
    let v = cas(json!(""), Value::Null).await;
    assert_eq!(
        (v["succeeded"].clone(), v["current"].clone()),
        (json!(true), Value::Null)
    );

    // Delete reports whether the key existed.
    let r = client
        .delete(format!("{lurl}/v1/kv/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["deleted"], json!(true));
    let r = client
        .delete(format!("{lurl}/v1/kv/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["deleted"], json!(false));

    // Status, members and metrics.
    let s: Value = client
        .get(format!("{furl}/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["id"], json!(follower));
    assert_eq!(s["role"], "follower");
    assert_eq!(s["leader"], json!(leader));
    assert_eq!(s["voters"], json!([1, 2, 3]));
    for k in [
        "term",
        "commit_index",
        "applied_index",
        "last_index",
        "snapshot_index",
        "learners",
    ] {
        assert!(s.get(k).is_some(), "status lacks {k}: {s}");
    }
    let m: Value = client
        .get(format!("{lurl}/v1/members"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["members"].as_array().unwrap().len(), 3);
    let r = client
        .post(format!("{furl}/v1/snapshot"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let snap: Value = r.json().await.unwrap();
    assert!(snap["snapshot_index"].as_u64().unwrap() >= index, "{snap}");
    let text = client
        .get(format!("{lurl}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("raft_is_leader 1"), "{text}");
    assert!(text.contains("kv_writes_total{outcome=\"ok\"}"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors() {
    let f = start().await;
    let lurl = &f.urls[&f.cluster.leader().unwrap()];
    let client = reqwest::Client::new();
    let check = |r: reqwest::Response, status: u16, code: &'static str| async move {
        assert_eq!(r.status().as_u16(), status);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], code, "{v}");
        assert!(v["error"].is_string());
    };
    let r = client
        .put(format!("{lurl}/v1/kv/big"))
        .body(vec![7u8; 1025])
        .send()
        .await
        .unwrap();
    check(r, 413, "too_large").await;
    let r = client
        .post(format!("{lurl}/v1/cas/k"))
        .body("{nope")
        .send()
        .await
        .unwrap();
    check(r, 400, "bad_request").await;
    let r = client
        .put(format!("{lurl}/v1/kv/"))
        .body("v")
        .send()
        .await
        .unwrap();
    check(r, 400, "bad_request").await;
    let long = "k".repeat(2000);
    let r = client
        .put(format!("{lurl}/v1/kv/{long}"))
        .body("v")
        .send()
        .await
        .unwrap();
    check(r, 400, "bad_request").await;
    let r = client
        .get(format!("{lurl}/v1/kv/k?consistency=weird"))
        .send()
        .await
        .unwrap();
    check(r, 400, "bad_request").await;
    let r = client
        .post(format!("{lurl}/v1/leader/transfer"))
        .body("{\"to\":99}")
        .send()
        .await
        .unwrap();
    check(r, 400, "bad_request").await;
    let r = client.get(format!("{lurl}/v2/what")).send().await.unwrap();
    check(r, 404, "not_found").await;
    // The node still serves good requests afterwards.
    let r = client
        .put(format!("{lurl}/v1/kv/k"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
