//! `POST /v1/members` for a new, empty node asked for as a voter: it joins as a
//! learner, is not promoted while it has nothing (an empty voter lowers
//! availability), and is promoted automatically once it runs and catches up.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use raft_node::config::Member;
use raft_node::http::{router, AddressBook, ApiState};
use raft_node::local_cluster::LocalCluster;
use raft_node::metrics::Metrics;
use serde_json::Value;

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_voter_joins_as_a_learner_and_is_promoted_once_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start(dir.path(), 3).unwrap();
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
    let leader = tokio::task::block_in_place(|| {
        assert!(cluster.wait_for(T, |c| c.leader().is_some()), "no leader");
        cluster.leader().unwrap()
    });
    let client = reqwest::Client::new();
    let added: Value = client
        .post(format!("{}/v1/members", urls[&leader]))
        .body(r#"{"id":4,"peer_addr":"127.0.0.1:9","client_addr":"127.0.0.1:9"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(added["learner"], Value::Bool(true), "{added}");
    // Node 4 is not running: it must not become a voter, however short the log.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = cluster.status(leader);
    assert_eq!(
        (s.voters.clone(), s.learners.clone()),
        (vec![1, 2, 3], vec![4]),
        "an empty node was made a voter"
    );
    // Once it runs and catches up, it is promoted without another request.
    tokio::task::block_in_place(|| {
        cluster.start_node(4).unwrap();
        assert!(
            cluster.wait_for(T, |c| c.status(leader).voters == vec![1, 2, 3, 4]),
            "node 4 was not promoted: {:?}",
            cluster.status(leader)
        );
        cluster.shutdown();
    });
}
