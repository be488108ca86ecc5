//! The HTTP side of `raft-node bench`: raft-node's own `/v1/kv` API over
//! HTTP/1.1 (one connection per request in flight).

use std::time::{Duration, Instant};

use serde_json::Value;

/// A client's handle: the shared connection pool and its node's base URL.
pub struct HttpConn {
    client: reqwest::Client,
    base: String,
    url: String,
}

/// The connection pool shared by every client, from `builder` (which
/// carries the `--cacert/--cert/--key` TLS settings).
pub fn client(
    builder: reqwest::ClientBuilder,
    clients: usize,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    builder
        .timeout(timeout)
        .pool_max_idle_per_host(clients)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())
}

impl HttpConn {
    /// A client sending to `base`.
    pub fn new(client: reqwest::Client, base: String) -> Self {
        Self {
            client,
            base,
            url: String::new(),
        }
    }

    /// One PUT (`read == false`) or one linearizable GET.
    pub async fn send(&mut self, read: bool, key: &[u8], value: &[u8]) -> Result<(), String> {
        self.url.clear();
        self.url.push_str(&self.base);
        self.url.push_str("/v1/kv/");
        self.url.push_str(&String::from_utf8_lossy(key));
        let req = if read {
            self.client.get(&self.url)
        } else {
            self.client.put(&self.url).body(value.to_vec())
        };
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                // Drain the body so the connection is reused.
                let _ = r.bytes().await;
                match status {
                    200 => Ok(()),
                    404 if read => Ok(()),
                    s => Err(format!("http_{s}")),
                }
            }
            Err(e) => Err(error_kind(&e)),
        }
    }
}

fn error_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// The base URL of the endpoint whose `/v1/status` says it leads.
pub async fn find_leader(client: &reqwest::Client, endpoints: &[String]) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        for ep in endpoints {
            let Ok(r) = client.get(format!("{ep}/v1/status")).send().await else {
                continue;
            };
            let Ok(s) = r.json::<Value>().await else {
                continue;
            };
            if s["role"] == "leader" {
                return Ok(ep.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("no endpoint reported itself leader within 20 s".into())
}
