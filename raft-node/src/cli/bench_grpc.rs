//! The gRPC side of `raft-node bench`: etcd's v3 `KV.Put` and linearizable
//! `KV.Range`, the same calls for raft-node and for etcd.
//!
//! Requests go straight onto an HTTP/2 connection through `h2`: the calling
//! task writes the request's headers and its one length-prefixed protobuf
//! message, then reads the response and checks `grpc-status`. A generic
//! client stack (tonic's `Channel`) passes every call through a buffer task
//! and hyper's dispatch and body-piping tasks; here each call costs the
//! caller's task and the connection's task only, so the load generator uses
//! less CPU than the servers it measures.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{Method, Request, Uri};
use prost::Message;
use tonic::transport::{Channel, Endpoint};

use crate::api::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::api::pb::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};

/// Paths of the two calls the bench makes.
const PUT_PATH: &str = "/etcdserverpb.KV/Put";
const RANGE_PATH: &str = "/etcdserverpb.KV/Range";

/// A client's handle on a shared HTTP/2 connection (cloning shares it).
#[derive(Clone)]
pub struct GrpcConn {
    shared: Arc<Shared>,
    put_uri: Uri,
    range_uri: Uri,
    body: BytesMut,
}

/// What the handles of one connection share.
struct Shared {
    /// `host:port` of the endpoint.
    authority: String,
    timeout: Duration,
    /// The live connection; `None` after it failed, until a call reconnects.
    send: Mutex<Option<SendRequest<Bytes>>>,
}

fn endpoint(url: &str, timeout: Duration) -> Result<Endpoint, String> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("bad endpoint {url}: {e}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .timeout(timeout))
}

/// The `host:port` of an `http://` endpoint.
fn authority(url: &str) -> Result<String, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("bad endpoint {url}: {e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(a)) => Ok(a.to_string()),
        (Some("https"), _) => Err(format!(
            "{url}: the gRPC bench speaks plain HTTP/2 only; use --protocol http for TLS"
        )),
        _ => Err(format!("bad endpoint {url}: expected http://host:port")),
    }
}

/// Opens an HTTP/2 connection (prior knowledge, as gRPC over plain TCP is).
async fn open(authority: &str) -> Result<SendRequest<Bytes>, String> {
    let connect = tokio::net::TcpStream::connect(authority);
    let tcp = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| format!("cannot connect to {authority}: timed out"))?
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    tcp.set_nodelay(true)
        .map_err(|e| format!("cannot set TCP_NODELAY: {e}"))?;
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake(tcp)
        .await
        .map_err(|e| format!("HTTP/2 handshake with {authority} failed: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "bench connection closed");
        }
    });
    Ok(send)
}

impl GrpcConn {
    /// Opens one HTTP/2 connection to `url`.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, String> {
        let authority = authority(url)?;
        let send = open(&authority).await?;
        let uri = |path: &str| -> Result<Uri, String> {
            format!("http://{authority}{path}")
                .parse()
                .map_err(|e| format!("bad endpoint {url}: {e}"))
        };
        Ok(Self {
            put_uri: uri(PUT_PATH)?,
            range_uri: uri(RANGE_PATH)?,
            shared: Arc::new(Shared {
                authority,
                timeout,
                send: Mutex::new(Some(send)),
            }),
            body: BytesMut::new(),
        })
    }

    /// One put (`read == false`) or one linearizable range of a single key.
    pub async fn send(&mut self, read: bool, key: &[u8], value: &[u8]) -> Result<(), String> {
        // gRPC's message framing: no compression, the length, the message.
        self.body.clear();
        self.body.put_u8(0);
        let uri = if read {
            let req = RangeRequest {
                key: key.to_vec(),
                ..Default::default()
            };
            self.body.put_u32(req.encoded_len() as u32);
            req.encode(&mut self.body).map_err(|e| e.to_string())?;
            self.range_uri.clone()
        } else {
            let req = PutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                ..Default::default()
            };
            self.body.put_u32(req.encoded_len() as u32);
            req.encode(&mut self.body).map_err(|e| e.to_string())?;
            self.put_uri.clone()
        };
        let body = self.body.split().freeze();
        let call = self.call(uri, body);
        match tokio::time::timeout(self.shared.timeout, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err("grpc_DeadlineExceeded".into()),
        }
    }

    /// Sends one unary call and waits for its status.
    async fn call(&self, uri: Uri, body: Bytes) -> Result<(), String> {
        let send = self.connection().await?;
        let outcome = Self::exchange(send, uri, body).await;
        if let Err(Failure::Connection(e)) = &outcome {
            tracing::debug!(error = %e, "bench connection failed; the next call reconnects");
            *self.shared.send.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        outcome.map_err(|f| match f {
            Failure::Connection(_) => "grpc_Unavailable".to_string(),
            Failure::Status(code) => format!("grpc_{:?}", tonic::Code::from(code)),
        })
    }

    /// The live connection, reconnecting if the last one failed.
    async fn connection(&self) -> Result<SendRequest<Bytes>, String> {
        let current = self
            .shared
            .send
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(send) = current {
            return Ok(send);
        }
        let send = open(&self.shared.authority).await.map_err(|e| {
            tracing::debug!(error = %e, "bench cannot reconnect");
            "grpc_Unavailable".to_string()
        })?;
        *self.shared.send.lock().unwrap_or_else(|e| e.into_inner()) = Some(send.clone());
        Ok(send)
    }

    async fn exchange(send: SendRequest<Bytes>, uri: Uri, body: Bytes) -> Result<(), Failure> {
        let mut send = send.ready().await.map_err(Failure::Connection)?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|_| Failure::Status(tonic::Code::Internal as i32))?;
        let (response, mut stream) = send
            .send_request(request, false)
            .map_err(Failure::Connection)?;
        stream.send_data(body, true).map_err(Failure::Connection)?;
        let response = response.await.map_err(Failure::Connection)?;
        if response.status() != http::StatusCode::OK {
            return Err(Failure::Status(tonic::Code::Unknown as i32));
        }
        // A failure may come as a trailers-only response: the status in the headers.
        if let Some(code) = grpc_status(response.headers()) {
            if code != 0 {
                return Err(Failure::Status(code));
            }
        }
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(Failure::Connection)?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = body.trailers().await.map_err(Failure::Connection)?;
        match trailers.as_ref().and_then(grpc_status) {
            Some(0) => Ok(()),
            Some(code) => Err(Failure::Status(code)),
            None => Err(Failure::Status(tonic::Code::Unknown as i32)),
        }
    }
}

/// Why a call failed.
enum Failure {
    /// The connection broke (or refused the stream); the call's outcome is unknown.
    Connection(h2::Error),
    /// The server answered with this gRPC status code.
    Status(i32),
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
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
    let channel: Channel = endpoint(url, timeout.min(Duration::from_secs(2)))?
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_plain_http_with_a_port() {
        assert_eq!(
            authority("http://127.0.0.1:2379").unwrap(),
            "127.0.0.1:2379"
        );
        assert!(authority("https://127.0.0.1:2379")
            .unwrap_err()
            .contains("--protocol http"));
        assert!(authority("127.0.0.1:2379").is_err());
        assert!(authority("http://").is_err());
    }

    #[test]
    fn grpc_status_is_read_from_headers_or_trailers() {
        let mut h = http::HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        h.insert("grpc-status", http::HeaderValue::from_static("14"));
        assert_eq!(grpc_status(&h), Some(14));
        h.insert("grpc-status", http::HeaderValue::from_static("x"));
        assert_eq!(grpc_status(&h), None);
    }
}
