//! `raft-node demo`: start a local 3-node cluster (QUIC + mutual TLS between
//! the nodes, HTTPS for clients: gRPC and HTTP over TLS on each client port),
//! show it working, and keep it running until Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::serve::{runtime, stop_signal};
use crate::config::{Member, NodeConfig};
use crate::server::Server;

/// Options of the demo.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the nodes keep their data and certificates (created if missing;
    /// reused if present, so a second run resumes the same cluster).
    #[arg(long, default_value = "raft-demo-data")]
    pub dir: PathBuf,
    /// Client ports are BASE+1..BASE+3 and peer ports BASE+101..BASE+103, on 127.0.0.1.
    #[arg(long, default_value_t = 47000)]
    pub base_port: u16,
    /// Exit after showing the cluster works instead of waiting for Ctrl-C.
    #[arg(long)]
    pub no_wait: bool,
}

const IDS: [u64; 3] = [1, 2, 3];

fn configs(args: &DemoArgs) -> Result<Vec<NodeConfig>, String> {
    let port = |off: u16| {
        args.base_port
            .checked_add(off)
            .ok_or_else(|| format!("--base-port {} leaves no room for ports", args.base_port))
    };
    let mut members = Vec::new();
    for id in IDS {
        members.push(Member {
            id,
            peer_addr: ([127, 0, 0, 1], port(100 + id as u16)?).into(),
            client_addr: ([127, 0, 0, 1], port(id as u16)?).into(),
        });
    }
    let dir = std::path::absolute(&args.dir)
        .map_err(|e| format!("cannot resolve {}: {e}", args.dir.display()))?;
    let certs = dir.join("certs");
    Ok(members
        .iter()
        .map(|m| NodeConfig {
            id: m.id,
            data_dir: dir.join(format!("node-{}", m.id)),
            peer_addr: m.peer_addr,
            client_addr: m.client_addr,
            tls_dir: certs.clone(),
            members: members.clone(),
            join: false,
            election_timeout_ms: 500,
            heartbeat_interval_ms: 50,
            snapshot_threshold_entries: 10_000,
            snapshot_threshold_bytes: 64 << 20,
            snapshot_keep: 2,
            trailing_entries: 1_000,
            max_value_bytes: 1 << 20,
            request_timeout_ms: 5_000,
            lease_reads: false,
            max_request_bytes: crate::api::etcd::DEFAULT_MAX_REQUEST_BYTES,
            quota_backend_bytes: crate::api::etcd::DEFAULT_QUOTA_BYTES,
            watch_progress_notify_interval_ms: 600_000,
            auto_compaction_retention_revisions: 100_000,
            // Client TLS on, as in production; client certificates from the
            // cluster CA are checked when presented, not required.
            client_cert: Some(certs.join(raft_net::certs::server_cert_file(m.id))),
            client_key: Some(certs.join(raft_net::certs::server_key_file(m.id))),
            client_trusted_ca: Some(certs.join(raft_net::certs::CA_CERT_FILE)),
            client_cert_auth: false,
            insecure_client: false,
            auth_token_ttl_secs: crate::auth::tokens::DEFAULT_TTL_SECS,
            metrics_require_auth: false,
            max_client_connections: 4_096,
            max_client_streams: 1_000,
            max_header_bytes: 64 << 10,
            client_request_rate: 0,
            client_handshake_timeout_ms: 10_000,
            client_header_timeout_ms: 10_000,
            client_keepalive_ms: 30_000,
        })
        .collect())
}

/// Makes the cluster CA and node certificates on the first run, and the
/// client-port certificates a data directory from an older version lacks.
fn ensure_certs(certs: &Path) -> Result<(), String> {
    let bad = |e: raft_net::certs::CertError| format!("certificates: {e}");
    if !certs.join(raft_net::certs::CA_CERT_FILE).exists() {
        return raft_net::certs::generate_with_servers(certs, &IDS, |_| Vec::new()).map_err(bad);
    }
    for id in IDS {
        if !certs.join(raft_net::certs::server_cert_file(id)).exists() {
            raft_net::certs::issue_server(certs, id, &[]).map_err(bad)?;
        }
    }
    Ok(())
}

/// Writes each node's config next to its data so it can be run by hand with `serve`.
fn write_configs(dir: &Path, cfgs: &[NodeConfig]) -> Result<(), String> {
    for c in cfgs {
        let path = dir.join(format!("node-{}.toml", c.id));
        let text = toml::to_string(c).map_err(|e| format!("cannot encode config: {e}"))?;
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

async fn status(client: &reqwest::Client, url: &str) -> Option<Value> {
    client
        .get(format!("{url}/v1/status"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Waits until every node names the same leader and that leader says it leads.
async fn wait_for_leader(client: &reqwest::Client, urls: &[String]) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let mut leaders = Vec::new();
        for u in urls {
            leaders.push(status(client, u).await.and_then(|s| s["leader"].as_u64()));
        }
        if let Some(Some(l)) = leaders.first() {
            if leaders.iter().all(|x| *x == Some(*l)) {
                return Ok(*l);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("no leader was elected within 20 s".into())
}

async fn show(client: &reqwest::Client, urls: &[String]) {
    println!("    node  endpoint                role      term  leader  commit  applied");
    for (i, u) in urls.iter().enumerate() {
        match status(client, u).await {
            Some(s) => {
                let f = |k: &str| s[k].as_u64().map_or("-".to_string(), |v| v.to_string());
                println!(
                    "    {:<4}  {u:<22}  {:<8}  {:<4}  {:<6}  {:<6}  {}",
                    i + 1,
                    s["role"].as_str().unwrap_or("?"),
                    f("term"),
                    f("leader"),
                    f("commit_index"),
                    f("applied_index")
                )
            }
            None => println!("    {:<4}  {u:<22}  unreachable", i + 1),
        }
    }
}

async fn exercise(urls: &[String], ca: &Path) -> Result<(), String> {
    let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", ca.display()))?;
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let leader = wait_for_leader(&client, urls).await?;
    println!("Node {leader} was elected leader (PreVote + CheckQuorum).\n");

    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let value = format!("world-{secs}");
    let r = client
        .put(format!("{}/v1/kv/hello", urls[0]))
        .body(value.clone())
        .send()
        .await
        .map_err(|e| format!("PUT failed: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("PUT answered {}", r.status()));
    }
    let index = r.json::<Value>().await.map_err(|e| e.to_string())?["index"].clone();
    println!(
        "PUT  {}/v1/kv/hello  -> committed on a majority, fsync'd, applied at index {index}",
        urls[0]
    );
    let r = client
        .get(format!("{}/v1/kv/hello", urls[1]))
        .send()
        .await
        .map_err(|e| format!("GET failed: {e}"))?;
    let got = r.text().await.map_err(|e| e.to_string())?;
    if got != value {
        return Err(format!("read back {got:?}, wrote {value:?}"));
    }
    println!(
        "GET  {}/v1/kv/hello  -> {got:?} (linearizable read via the leader)\n",
        urls[1]
    );
    show(&client, urls).await;
    Ok(())
}

/// Runs the demo; returns an error message if any step fails.
pub fn run(args: &DemoArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.dir).map_err(|e| format!("{}: {e}", args.dir.display()))?;
    let cfgs = configs(args)?;
    let certs = &cfgs[0].tls_dir;
    ensure_certs(certs)?;
    write_configs(&args.dir, &cfgs)?;
    println!(
        "Starting a 3-node Raft cluster on 127.0.0.1 (QUIC + mutual TLS between nodes, HTTPS for clients); data and certs under {}",
        args.dir.display()
    );
    let ca = certs.join(raft_net::certs::CA_CERT_FILE);
    // As typed in a shell: relative to the current directory when the data is below it.
    let ca_arg = std::env::current_dir()
        .ok()
        .and_then(|cwd| ca.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| ca.clone());
    let ca_arg = ca_arg.display();
    let urls: Vec<String> = cfgs
        .iter()
        .map(|c| format!("https://{}", c.client_addr))
        .collect();
    let rt = runtime()?;
    rt.block_on(async {
        let mut servers = Vec::new();
        for c in &cfgs {
            match Server::start(c).await {
                Ok(s) => servers.push(s),
                Err(e) => {
                    for s in servers {
                        s.shutdown().await;
                    }
                    return Err(format!(
                        "node {}: {e} (is another demo running? try --base-port)",
                        c.id
                    ));
                }
            }
        }
        let outcome = exercise(&urls, &ca).await;
        if outcome.is_ok() && !args.no_wait {
            let eps = urls.join(",");
            println!("\nThe cluster is running; clients use TLS, verified with the cluster CA. Try:");
            println!("    curl --cacert {ca_arg} -X PUT -d bar {}/v1/kv/foo", urls[0]);
            println!("    curl --cacert {ca_arg} {}/v1/kv/foo", urls[1]);
            println!("    curl --cacert {ca_arg} {}/v1/status", urls[2]);
            println!("    raft-node put foo bar --cacert {ca_arg}   # --endpoints defaults to the demo's");
            println!("    raft-node get foo --cacert {ca_arg} --endpoints {eps}");
            println!("    raft-node status --cacert {ca_arg}");
            println!("etcd's v3 API (gRPC) is on the same ports, so etcdctl works unchanged:");
            println!("    export ETCDCTL_API=3 ETCDCTL_CACERT={ca_arg}");
            println!("    etcdctl --endpoints={eps} put foo bar");
            println!("    etcdctl --endpoints={eps} get foo --prefix -w json");
            println!("    etcdctl --endpoints={eps} txn -i");
            println!("    etcdctl --endpoints={eps} member list -w table");
            println!("    etcdctl --endpoints={eps} endpoint status -w table");
            println!("    etcdctl --endpoints={eps} snapshot save backup.db");
            println!(
                "    curl --cacert {ca_arg} -d '{{\"key\":\"Zm9v\"}}' {}/v3/kv/range   # the JSON gateway (base64 keys)",
                urls[0]
            );
            println!(
                "Node configs: {}/node-{{1,2,3}}.toml. Press Ctrl-C to stop.",
                args.dir.display()
            );
            stop_signal().await;
            println!("\nStopping the nodes...");
        }
        for s in servers {
            s.shutdown().await;
        }
        if outcome.is_ok() {
            println!("All nodes stopped cleanly.");
        }
        outcome
    })
}
