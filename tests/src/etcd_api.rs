//! The real Rust `etcd-client` against a raft-node [`Cluster`]: connecting
//! to a member, finding the leader, and reading a member's metrics, as the
//! etcd API test binaries (`tests/etcd_client.rs`, `tests/etcd_watch_lease.rs`)
//! all need.

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};

use crate::cluster::Cluster;

/// The gRPC endpoint of member `id` (`https://` with client TLS).
pub fn endpoint(c: &Cluster, id: u64) -> String {
    c.node(id).url()
}

/// A client of member `id`, retried for up to `patience` (with the
/// cluster's CA and client certificate when it has client TLS).
pub async fn connect_within(c: &Cluster, id: u64, patience: Duration) -> Option<Client> {
    let deadline = Instant::now() + patience;
    let options = c
        .client_tls()
        .map(|tls| ConnectOptions::new().with_tls(tls.etcd_options()));
    loop {
        if let Ok(client) = Client::connect([endpoint(c, id)], options.clone()).await {
            return Some(client);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client of member `id`; panics if it cannot connect within 20 s.
pub async fn connect(c: &Cluster, id: u64) -> Client {
    connect_within(c, id, Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("cannot connect to node {id}"))
}

/// The leader as member `via`'s `Status` reports it, once there is one and
/// a write through `via` succeeds; panics after 30 s without one.
pub async fn leader(c: &Cluster, via: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client = connect(c, via).await;
    loop {
        if let Ok(s) = client.status().await {
            if s.leader() != 0 && client.put("ready", "1", None).await.is_ok() {
                return s.leader();
            }
        }
        assert!(Instant::now() < deadline, "no leader within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first of `names` that member `id`'s `/metrics` reports, as a number
/// (`None` when the member does not answer or has none of them).
pub fn metric(c: &Cluster, id: u64, names: &[&str]) -> Option<f64> {
    metric_at(&c.node(id).client_addr.to_string(), names)
}

/// The first of `names` that the member with client address `addr`
/// (`host:port`, plain HTTP) reports in `/metrics`, as a number.
pub fn metric_at(addr: &str, names: &[&str]) -> Option<f64> {
    let mut tcp = std::net::TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(tcp, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut body = String::new();
    tcp.read_to_string(&mut body).ok()?;
    body.lines().find_map(|l| {
        let (name, value) = l.split_once(' ')?;
        names.contains(&name).then(|| value.trim().parse().ok())?
    })
}
