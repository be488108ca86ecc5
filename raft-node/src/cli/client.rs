//! Client commands (`put`, `get`, `del`, `cas`, `status`, `members`) that speak
//! the HTTP API. Each tries the endpoints in order until one answers; the
//! HTTP client follows the API's 307 redirects to the leader.
//!
//! A write (`put`, `del`, `cas`) carries a request id (`Request-Id:
//! CLIENT/SEQ`, a random client id per invocation) and every attempt sends
//! the same one, so the cluster applies it at most once however often it is
//! retried. Only because of that does a write whose outcome is unknown (an
//! answer lost, 504) go on to the next endpoint; a write is never re-sent
//! without an id.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::mvcc::{RequestId, REQUEST_ID_HEADER};

/// Rounds over the endpoints before giving up (with a pause between rounds,
/// e.g. while a new leader is elected).
const ROUNDS: usize = 3;

/// Pause between rounds.
const ROUND_PAUSE: Duration = Duration::from_millis(500);

/// Client endpoints of `raft-node demo`, the default for `--endpoints`.
pub const DEMO_ENDPOINTS: &str =
    "https://127.0.0.1:47001,https://127.0.0.1:47002,https://127.0.0.1:47003";

/// Where to send requests, and the TLS material to reach them with.
#[derive(Debug, Clone, clap::Args)]
pub struct Endpoints {
    /// Comma-separated base URLs of the nodes' client API (https:// for
    /// nodes with client TLS, which `raft-node demo` runs with).
    #[arg(long, default_value = DEMO_ENDPOINTS, value_delimiter = ',', global = true)]
    pub endpoints: Vec<String>,
    /// CA certificate (PEM) that https:// endpoints are verified against, e.g.
    /// the cluster's `ca.crt` (the demo's: raft-demo-data/certs/ca.crt).
    #[arg(long, global = true)]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) to present, for nodes with client_cert_auth
    /// (`raft-node certs --client NAME` makes one).
    #[arg(
        long = "cert",
        id = "client_cert",
        global = true,
        requires = "client_key"
    )]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(
        long = "key",
        id = "client_key",
        global = true,
        requires = "client_cert"
    )]
    pub key: Option<PathBuf>,
}

impl Endpoints {
    /// An HTTP client builder that trusts only `--cacert` (no system roots)
    /// and presents `--cert`/`--key` if given.
    pub fn http_client(&self) -> Result<reqwest::ClientBuilder, String> {
        let read = |flag: &str, p: &Path| {
            std::fs::read(p).map_err(|e| format!("{flag} {}: {e}", p.display()))
        };
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false);
        match &self.cacert {
            Some(path) => {
                let ca = reqwest::Certificate::from_pem(&read("--cacert", path)?)
                    .map_err(|e| format!("--cacert {}: {e}", path.display()))?;
                b = b.add_root_certificate(ca);
            }
            None => {
                if let Some(ep) = self.endpoints.iter().find(|e| e.starts_with("https://")) {
                    return Err(format!(
                        "{ep} needs --cacert (the CA that signed the node's certificate, e.g. \
                         raft-demo-data/certs/ca.crt for the demo)"
                    ));
                }
            }
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let mut pem = read("--cert", cert)?;
            pem.push(b'\n');
            pem.extend(read("--key", key)?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("--cert {} / --key {}: {e}", cert.display(), key.display()))?;
            b = b.identity(id);
        }
        Ok(b)
    }
}

/// A client command.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClientCommand {
    /// Set KEY to VALUE (linearizable; printed: the log index).
    Put {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Print the value of KEY (linearizable unless --stale).
    Get {
        /// Key.
        key: String,
        /// Read the contacted node's local state without checking with the leader.
        #[arg(long)]
        stale: bool,
    },
    /// Delete KEY.
    Del {
        /// Key.
        key: String,
    },
    /// Compare-and-swap: set KEY to --value (or delete it without --value)
    /// if it holds --expected (or is absent without --expected); prints
    /// whether it held and the key's value afterwards.
    Cas {
        /// Key.
        key: String,
        /// The value KEY must hold (omitted: KEY must be absent).
        #[arg(long)]
        expected: Option<String>,
        /// The new value (omitted: delete KEY).
        #[arg(long)]
        value: Option<String>,
    },
    /// Print each endpoint's status.
    Status,
    /// Print the membership as the first reachable node knows it.
    Members,
}

/// The outcome of a command: text for stdout, or an error line.
pub type Outcome = Result<String, String>;

fn trim(s: &str) -> &str {
    s.trim_end_matches('/')
}

/// Runs `cmd` against `endpoints`.
pub fn run(cmd: &ClientCommand, endpoints: &Endpoints) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the client runtime: {e}"))?;
    rt.block_on(run_async(cmd, endpoints))
}

async fn run_async(cmd: &ClientCommand, endpoints: &Endpoints) -> Outcome {
    let client = endpoints
        .http_client()?
        .timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let endpoints = &endpoints.endpoints;
    if endpoints.is_empty() {
        return Err("no endpoints given".into());
    }
    match cmd {
        ClientCommand::Status => {
            let mut out = String::new();
            for ep in endpoints {
                let line = match client.get(format!("{}/v1/status", trim(ep))).send().await {
                    Ok(r) => r.text().await.unwrap_or_else(|e| format!("error: {e}")),
                    Err(e) => format!("unreachable: {e}"),
                };
                out.push_str(&format!("{ep}  {line}\n"));
            }
            Ok(out.trim_end().to_string())
        }
        _ => {
            // One id for every attempt of this write.
            let id = is_write(cmd).then(|| RequestId {
                client: rand::RngCore::next_u64(&mut rand::rngs::OsRng),
                seq: 1,
            });
            let mut last = String::new();
            for round in 0..ROUNDS {
                if round > 0 {
                    tokio::time::sleep(ROUND_PAUSE).await;
                }
                for ep in endpoints {
                    match one(&client, cmd, id, trim(ep)).await {
                        Ok(out) => return out,
                        Err(next) => {
                            tracing::debug!(endpoint = %ep, error = %next, "trying the next endpoint");
                            last = next;
                        }
                    }
                }
            }
            Err(format!("no endpoint answered (last: {last})"))
        }
    }
}

fn is_write(cmd: &ClientCommand) -> bool {
    matches!(
        cmd,
        ClientCommand::Put { .. } | ClientCommand::Del { .. } | ClientCommand::Cas { .. }
    )
}

/// `Err` when another endpoint may do better: this one could not be reached,
/// knows no leader, or (a write with a request id only) left the outcome
/// unknown.
async fn one(
    client: &reqwest::Client,
    cmd: &ClientCommand,
    id: Option<RequestId>,
    ep: &str,
) -> Result<Outcome, String> {
    let key_url = |k: &str| format!("{ep}/v1/kv/{}", encode_key(k));
    let req = match cmd {
        ClientCommand::Put { key, value } => client.put(key_url(key)).body(value.clone()),
        ClientCommand::Cas {
            key,
            expected,
            value,
        } => client
            .post(format!("{ep}/v1/cas/{}", encode_key(key)))
            .json(&serde_json::json!({ "expected": expected, "value": value })),
        ClientCommand::Get { key, stale } => {
            let q = if *stale { "?consistency=stale" } else { "" };
            client.get(format!("{}{q}", key_url(key)))
        }
        ClientCommand::Del { key } => client.delete(key_url(key)),
        ClientCommand::Members => client.get(format!("{ep}/v1/members")),
        ClientCommand::Status => unreachable!("handled by the caller"),
    };
    let req = match id {
        Some(id) => req.header(REQUEST_ID_HEADER, id.to_string()),
        None => req,
    };
    let resp = match req.send().await {
        Ok(r) => r,
        // Not sent at all: safe to try elsewhere, with or without an id.
        Err(e) if e.is_connect() => return Err(format!("{ep}: {e}")),
        // Maybe sent: only a write with an id may go again.
        Err(e) if id.is_some() || !is_write(cmd) => return Err(format!("{ep}: {e}")),
        Err(e) => return Ok(Err(format!("{ep}: {e} (the outcome is unknown)"))),
    };
    let status = resp.status();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) if id.is_some() || !is_write(cmd) => return Err(format!("{ep}: {e}")),
        Err(e) => return Ok(Err(format!("{ep}: {e} (the outcome is unknown)"))),
    };
    if status.as_u16() == 503 && is_code(&body, "no_leader") {
        // Another endpoint may know the leader.
        return Err(format!("{ep}: no leader"));
    }
    if status.as_u16() == 504 && id.is_some() {
        // Outcome unknown: the same id through another endpoint is applied
        // at most once, and answers with the first result if it was.
        return Err(format!("{ep}: {}", String::from_utf8_lossy(&body)));
    }
    if !status.is_success() {
        if matches!(cmd, ClientCommand::Get { .. }) && status.as_u16() == 404 {
            return Ok(Err("not found".into()));
        }
        let why = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        return Ok(Err(format!("{} from {ep}: {why}", status.as_u16())));
    }
    Ok(Ok(match cmd {
        ClientCommand::Get { .. } => String::from_utf8_lossy(&body).into_owned(),
        _ => String::from_utf8_lossy(&body).trim().to_string(),
    }))
}

fn is_code(body: &[u8], code: &str) -> bool {
    serde_json::from_slice::<Value>(body).is_ok_and(|v| v["code"] == code)
}

/// Percent-encodes everything but unreserved characters, so any key survives the URL.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded() {
        assert_eq!(encode_key("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(encode_key("plain-key_1.x~"), "plain-key_1.x~");
        assert_eq!(encode_key("é"), "%C3%A9");
    }
}
