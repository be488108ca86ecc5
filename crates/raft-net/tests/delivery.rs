//! Delivery: order per peer with two and three nodes, restart and reconnection, dead
//! peers, and the bulk lane not delaying messages.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use raft_net::{Inbound, NodeId};

/// Every node sends `n` messages to every other; each receiver sees each sender's
/// messages complete and in order.
async fn exchange_in_order(ids: &[NodeId], n: u64) {
    init_tracing();
    let dir = make_certs(ids);
    let mut nodes = Vec::new();
    for &id in ids {
        nodes.push(start(id, dir.path()));
    }
    let refs: Vec<&Net> = nodes.iter().map(|(t, _)| t).collect();
    link(&refs);
    let epoch = Instant::now();
    for (t, _) in &nodes {
        for &to in ids.iter().filter(|&&to| to != t.id()) {
            wait_for("connection", Duration::from_secs(10), || t.is_connected(to)).await;
        }
    }
    let senders: Vec<Net> = nodes.iter().map(|(t, _)| t.clone()).collect();
    let send_ids = ids.to_vec();
    let sending = tokio::spawn(async move {
        for seq in 0..n {
            for t in &senders {
                for &to in send_ids.iter().filter(|&&to| to != t.id()) {
                    // Back off instead of dropping, to check completeness as well as order.
                    while t.send(to, msg(t.id(), seq, epoch)).is_err() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
        }
    });
    for (t, inbox) in nodes.iter_mut() {
        let mut next: HashMap<NodeId, u64> = ids
            .iter()
            .filter(|&&i| i != t.id())
            .map(|&i| (i, 0))
            .collect();
        let expected = n * (ids.len() as u64 - 1);
        for _ in 0..expected {
            let (from, item) = recv_within(inbox, Duration::from_secs(20))
                .await
                .expect("message");
            let Inbound::Message(m) = item else {
                panic!("unexpected bulk item")
            };
            assert_eq!(m.from, from, "inbound id is the verified sender");
            let want = next.get_mut(&from).expect("known sender");
            assert_eq!(
                m.seq,
                *want,
                "messages from {from} to {} out of order",
                t.id()
            );
            *want += 1;
        }
        assert!(next.values().all(|&v| v == n));
    }
    sending.await.unwrap();
    for (t, _) in &nodes {
        let stats = t.stats();
        for p in &stats.peers {
            assert_eq!(p.messages_sent, n, "node {} to {}", t.id(), p.id);
            assert_eq!(p.messages_received, n, "node {} from {}", t.id(), p.id);
            assert!(p.bytes_sent > 0 && p.bytes_received > 0);
        }
        t.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_in_order() {
    exchange_in_order(&[1, 2], 5_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_exchange_in_order() {
    exchange_in_order(&[1, 2, 3], 2_000).await;
}
