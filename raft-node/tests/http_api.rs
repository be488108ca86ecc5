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

async fn json_of(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// A write with a `Request-Id` is applied once however often it is sent:
/// again to the leader, through a follower (307 to the leader), and after a
/// leader change; every reply is the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_a_request_id_is_applied_once() {
    let f = start().await;
    let leader = f.cluster.leader().unwrap();
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let client = reqwest::Client::new();
    let put = |url: &str, id: &str, v: &str| {
        client
            .put(format!("{url}/v1/kv/once"))
            .header("Request-Id", id)
            .body(v.to_string())
            .send()
    };
    let (status, first) = json_of(put(&f.urls[&leader], "77/1", "a").await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let rev = first["revision"].as_i64().unwrap();
    // Someone else writes the key in between.
    let other = client
        .put(format!("{}/v1/kv/once", f.urls[&leader]))
        .body("b")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);
    for url in [&f.urls[&leader], &f.urls[&follower]] {
        let (status, again) = json_of(put(url, "77/1", "a").await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{again}");
        assert_eq!(again, first, "a retry gets the first reply");
    }
    let value = client
        .get(format!("{}/v1/kv/once", f.urls[&leader]))
        .send()
        .await
        .unwrap();
    assert_eq!(
        value.text().await.unwrap(),
        "b",
        "the retries changed nothing"
    );

    // A new leader has the table too (it is replicated state).
    let r = client
        .post(format!("{}/v1/leader/transfer", f.urls[&leader]))
        .body(format!("{{\"to\":{follower}}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    let c = &f.cluster;
    assert!(tokio::task::block_in_place(|| {
        c.wait_for(Duration::from_secs(15), |c| c.leader() == Some(follower))
    }));
    let (status, again) = json_of(put(&f.urls[&follower], "77/1", "a").await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again, first);
    // The next id of the client applies: one revision after the other write.
    let (_, next) = json_of(put(&f.urls[&follower], "77/2", "c").await.unwrap()).await;
    assert_eq!(next["revision"].as_i64(), Some(rev + 2), "{next}");
    // The same id with another request is refused; a bad id is a bad request.
    let (status, reused) = json_of(put(&f.urls[&follower], "77/2", "d").await.unwrap()).await;
    assert_eq!(
        (status.as_u16(), reused["code"].as_str()),
        (409, Some("request_id_reused"))
    );
    let (status, bad) = json_of(put(&f.urls[&follower], "77", "d").await.unwrap()).await;
    assert_eq!(
        (status.as_u16(), bad["code"].as_str()),
        (400, Some("bad_request"))
    );
    // Deletes and compare-and-swaps too.
    for _ in 0..2 {
        let r = client
            .post(format!("{}/v1/cas/once", f.urls[&follower]))
            .header("Request-Id", "78/1")
            .body(r#"{"expected":"c","value":"e"}"#)
            .send()
            .await
            .unwrap();
        let (status, cas) = json_of(r).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            cas["succeeded"], true,
            "the retry reports the first success: {cas}"
        );
        let r = client
            .delete(format!("{}/v1/kv/once", f.urls[&follower]))
            .header("Request-Id", "78/2")
            .send()
            .await
            .unwrap();
        let (status, del) = json_of(r).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            del["deleted"], true,
            "the retry reports the first delete: {del}"
        );
    }
}

/// An endpoint that passes a request on to `target` and then loses the
/// answer (504, outcome unknown), counting what it saw: the write happened,
/// but the client cannot know.
async fn reply_losing_proxy(target: String) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::extract::Request as AxumRequest;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |req: AxumRequest| {
        let target = target.clone();
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let id = parts
                .headers
                .get("request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_string();
            log.lock().unwrap().push(id);
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let mut fwd = reqwest::Client::new().request(
                parts.method.clone(),
                format!("{target}{}", parts.uri.path_and_query().unwrap()),
            );
            for (k, v) in parts.headers.iter() {
                if k != "host" && k != "content-length" {
                    fwd = fwd.header(k, v);
                }
            }
            let r = fwd.body(body).send().await.unwrap();
            assert!(r.status().is_success(), "the write went through");
            (
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                r#"{"error":"timed out; the outcome is unknown","code":"timeout"}"#,
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, seen)
}

/// `raft-node put/del/cas` send a request id and retry an unknown outcome on
/// the next endpoint with the same id: the write is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_retries_a_write_with_its_request_id_and_it_applies_once() {
    use raft_node::cli::client::{run, ClientCommand, Endpoints};
    let f = start().await;
    let leader = f.cluster.leader().unwrap();
    let lurl = f.urls[&leader].clone();
    let (proxy, seen) = reply_losing_proxy(lurl.clone()).await;
    let endpoints = Endpoints {
        endpoints: vec![proxy, lurl.clone()],
        cacert: None,
        cert: None,
        key: None,
    };
    let before: Value = reqwest::Client::new()
        .put(format!("{lurl}/v1/kv/cli"))
        .body("0")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rev0 = before["revision"].as_i64().unwrap();
    let cmds = [
        ClientCommand::Put {
            key: "cli".into(),
            value: "1".into(),
        },
        ClientCommand::Cas {
            key: "cli".into(),
            expected: Some("1".into()),
            value: Some("2".into()),
        },
        ClientCommand::Del { key: "cli".into() },
    ];
    for (n, cmd) in cmds.into_iter().enumerate() {
        let eps = endpoints.clone();
        let out = tokio::task::spawn_blocking(move || run(&cmd, &eps))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("command {n} failed: {e}"));
        let reply: Value = serde_json::from_str(&out).unwrap();
        let rev = reply["revision"].as_i64();
        if let Some(rev) = rev {
            assert_eq!(rev, rev0 + 1 + n as i64, "applied once: {reply}");
        }
        if n == 1 {
            assert_eq!(reply["succeeded"], true, "the first result: {reply}");
        }
        if n == 2 {
            assert_eq!(reply["deleted"], true, "the first result: {reply}");
        }
    }
    let ids = seen.lock().unwrap().clone();
    assert_eq!(
        ids.len(),
        3,
        "each write went to the reply-losing endpoint once"
    );
    assert!(
        ids.iter()
            .all(|id| id.parse::<raft_node::mvcc::RequestId>().is_ok()),
        "{ids:?}"
    );
    // One revision per command: none was applied twice.
    let r = reqwest::Client::new()
        .put(format!("{lurl}/v1/kv/cli"))
        .body("3")
        .send()
        .await
        .unwrap();
    let after: Value = r.json().await.unwrap();
    assert_eq!(after["revision"].as_i64(), Some(rev0 + 4), "{after}");
}
