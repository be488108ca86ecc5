//! The gRPC side of `raft-node bench`: etcd's v3 `KV.Put` and linearizable
//! `KV.Range` through the generated tonic client, the same calls for
//! raft-node and for etcd.

use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use crate::api::pb::etcdserverpb::kv_client::KvClient;
use crate::api::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::api::pb::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};

/// A client's handle on a shared HTTP/2 connection (cloning shares it).
#[derive(Clone)]
pub struct GrpcConn {
    kv: KvClient<Channel>,
}

fn endpoint(url: &str, timeout: Duration) -> Result<Endpoint, String> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("bad endpoint {url}: {e}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout))
}

impl GrpcConn {
    /// Opens one HTTP/2 connection to `url`.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, String> {
        let channel = endpoint(url, timeout)?
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        Ok(Self {
            kv: KvClient::new(channel),
        })
    }

    /// One put (`read == false`) or one linearizable range of a single key.
    pub async fn send(&mut self, read: bool, key: &[u8], value: &[u8]) -> Result<(), String> {
        let outcome = if read {
            self.kv
                .range(RangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                })
                .await
                .map(drop)
        } else {
            self.kv
                .put(PutRequest {
                    key: key.to_vec(),
                    value: value.to_vec(),
                    ..Default::default()
                })
                .await
                .map(drop)
        };
        outcome.map_err(|status| format!("grpc_{:?}", status.code()))
    }
}

/// The endpoint whose `Maintenance.Status` names itself leader
/// (`leader == header.member_id`), retried for up to 20 s.
pub async fn find_leader(endpoints: &[String], timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::from("no endpoint answered");
    while Instant::now() < deadline {
        for url in endpoints {
            match status(url, timeout).await {
                Ok((member, leader)) if member != 0 && member == leader => return Ok(url.clone()),
                Ok(_) => {}
                Err(e) => last = e,
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "no endpoint reported itself leader within 20 s ({last})"
    ))
}

/// `(header.member_id, leader)` of one endpoint.
async fn status(url: &str, timeout: Duration) -> Result<(u64, u64), String> {
    let channel = endpoint(url, timeout.min(Duration::from_secs(2)))?
        .connect()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let s = MaintenanceClient::new(channel)
        .status(StatusRequest {})
        .await
        .map_err(|e| format!("{url}: {}", e.message()))?
        .into_inner();
    Ok((s.header.map_or(0, |h| h.member_id), s.leader))
}
