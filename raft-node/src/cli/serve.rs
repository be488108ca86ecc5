//! `raft-node serve --config FILE` and `raft-node certs --out DIR --ids 1,2,3`.

use std::path::{Path, PathBuf};

use crate::config::NodeConfig;
use crate::server::Server;

/// Options of `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The node's TOML configuration file.
    #[arg(long)]
    pub config: PathBuf,
    /// Bootstrap this founding member even though its data_dir exists and
    /// holds no Raft state (refused otherwise: a member that lost its data
    /// must not rejoin as if new). Only for creating a new cluster.
    #[arg(long)]
    pub force_new_cluster: bool,
}

/// Options of `certs`.
#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// Directory to write `ca.crt`, `ca.key`, `node-<id>.crt`/`.key` (peer
    /// mTLS) and `server-<id>.crt`/`.key` (the client port's TLS) into.
    #[arg(long)]
    pub out: PathBuf,
    /// Comma-separated node ids: makes a new cluster CA and their certificates.
    #[arg(long, value_delimiter = ',', required_unless_present = "client")]
    pub ids: Vec<u64>,
    /// Names clients reach the nodes' client ports by, put in the server
    /// certificates besides localhost, 127.0.0.1 and ::1: `ID=HOST` for one
    /// node, `HOST` for all; host names or IP addresses, comma-separated
    /// (e.g. `1=10.0.0.1,2=10.0.0.2,3=10.0.0.3,db.example.com`).
    #[arg(long, value_delimiter = ',')]
    pub client_hosts: Vec<String>,
    /// Make a client certificate with common name NAME (`client-NAME.crt`,
    /// `client-NAME.key`) with the CA in --out; with client_cert_auth the
    /// name is the user.
    #[arg(long, value_name = "NAME")]
    pub client: Option<String>,
}

/// Builds the multi-threaded runtime the node runs on.
pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Resolves when the process gets SIGINT (Ctrl-C) or SIGTERM.
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs a node until SIGINT/SIGTERM, then shuts it down cleanly.
pub fn serve(args: &ServeArgs) -> Result<(), String> {
    let cfg = NodeConfig::load(&args.config).map_err(|e| e.to_string())?;
    crate::heap::use_one_arena();
    let rt = runtime()?;
    rt.block_on(async {
        check_data_dir(&cfg.data_dir, cfg.join, args.force_new_cluster)?;
        let server = Server::start(&cfg).await.map_err(|e| e.to_string())?;
        let failure = tokio::select! {
            _ = stop_signal() => None,
            why = server.failed() => Some(why),
        };
        tracing::info!(node = cfg.id, "stopping");
        server.shutdown().await;
        match failure {
            None => Ok(()),
            Some(why) => Err(format!("node {} stopped: {why}", cfg.id)),
        }
    })
}

/// Refuses to bootstrap a founding member (`join = false`) on a `data_dir`
/// that exists but holds no Raft state (no WAL, no snapshot), unless
/// `force_new_cluster`.
///
/// A founding member bootstraps with the initial configuration at term 1.
/// Doing that again on a member whose state was lost (a wiped or replaced
/// disk) is unsafe: it forgets the votes it cast (it could vote twice in a
/// term) and the entries it acknowledged, and the leader, which still counts
/// its old match index, may never repair it. A node cannot tell "never
/// initialized" from "wiped" by the directory alone, so the rule is:
/// - `data_dir` does not exist: a brand-new member (how `demo`, the tests and
///   fresh deployments start); it is created and bootstrapped;
/// - `data_dir` exists with Raft state: opened as it is;
/// - `data_dir` exists without Raft state: refused. Remove the member from
///   the cluster and add it back (`join = true`), or, if this really is a
///   new cluster, start once with `--force-new-cluster`.
///
/// A data directory deleted as a whole still looks brand-new here; the node
/// then starts as a new incarnation of its id, which its peers refuse (see
/// `crate::identity`).
pub fn check_data_dir(dir: &Path, join: bool, force_new_cluster: bool) -> Result<(), String> {
    if join || force_new_cluster {
        return Ok(());
    }
    let has_entries = |sub: &str| -> Result<Option<bool>, String> {
        match std::fs::read_dir(dir.join(sub)) {
            Ok(mut it) => Ok(Some(it.next().is_some())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("data_dir {}: {e}", dir.join(sub).display())),
        }
    };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("data_dir {}: {e}", dir.display())),
        Ok(_) => {}
    }
    let state = [has_entries("wal")?, has_entries("snapshots")?];
    if state.contains(&Some(true)) {
        return Ok(());
    }
    Err(format!(
        "data_dir {} exists but holds no Raft state (no WAL, no snapshot): if this member \
         lost its data, remove it from the cluster and add it back with join = true; if this \
         is a new cluster, start once with --force-new-cluster",
        dir.display()
    ))
}

/// Splits `--client-hosts` into the hosts of node `id`.
fn hosts_of(spec: &[String], ids: &[u64]) -> Result<Vec<(u64, Vec<String>)>, String> {
    let mut per_node: Vec<(u64, Vec<String>)> = ids.iter().map(|&id| (id, Vec::new())).collect();
    for item in spec.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match item.split_once('=') {
            Some((id, host)) => {
                let id: u64 = id
                    .trim()
                    .parse()
                    .map_err(|_| format!("--client-hosts {item:?}: expected ID=HOST or HOST"))?;
                let Some((_, hosts)) = per_node.iter_mut().find(|(n, _)| *n == id) else {
                    return Err(format!(
                        "--client-hosts {item:?}: node {id} is not in --ids"
                    ));
                };
                hosts.push(host.trim().to_string());
            }
            None => per_node
                .iter_mut()
                .for_each(|(_, hosts)| hosts.push(item.to_string())),
        }
    }
    Ok(per_node)
}

/// The config lines that turn client TLS with client certificates on, for
/// node `<id>`, with the files `certs` wrote into `dir`.
fn client_tls_snippet(dir: &Path) -> String {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let file = |name: &str| abs.join(name).display().to_string();
    format!(
        "client TLS for node <id> (add to its config; clients then need a certificate from \
         `raft-node certs --out {} --client NAME`):\n\
         tls_dir = {:?}\n\
         client_cert = {:?}\n\
         client_key = {:?}\n\
         client_trusted_ca = {:?}\n\
         client_cert_auth = true",
        dir.display(),
        abs.display().to_string(),
        file("server-<id>.crt"),
        file("server-<id>.key"),
        file(raft_net::certs::CA_CERT_FILE),
    )
}

/// Creates a cluster CA and, per id, a peer certificate and a client-port
/// certificate; and/or a client certificate from the CA in `--out`.
pub fn certs(args: &CertsArgs) -> Result<String, String> {
    let mut done = Vec::new();
    if !args.ids.is_empty() {
        if args.ids.contains(&0) {
            return Err("node id 0 is not valid".into());
        }
        let hosts = hosts_of(&args.client_hosts, &args.ids)?;
        raft_net::certs::generate_with_servers(&args.out, &args.ids, |id| {
            hosts
                .iter()
                .find(|(n, _)| *n == id)
                .map(|(_, h)| h.clone())
                .unwrap_or_default()
        })
        .map_err(|e| e.to_string())?;
        done.push(format!(
            "wrote a cluster CA, peer certificates (node-<id>) and client-port certificates \
             (server-<id>) for nodes {:?} to {}",
            args.ids,
            args.out.display()
        ));
        done.push(client_tls_snippet(&args.out));
    } else if !args.client_hosts.is_empty() {
        return Err("--client-hosts goes with --ids".into());
    }
    if let Some(name) = &args.client {
        raft_net::certs::issue_client(&args.out, name, None).map_err(|e| e.to_string())?;
        done.push(format!(
            "wrote client certificate {} (common name {name:?}) and its key",
            args.out
                .join(raft_net::certs::client_cert_file(name))
                .display()
        ));
    }
    Ok(done.join("\n"))
}

#[cfg(test)]
mod certs_tests {
    use super::*;

    fn args(out: &Path, ids: &[u64], hosts: &[&str], client: Option<&str>) -> CertsArgs {
        CertsArgs {
            out: out.to_path_buf(),
            ids: ids.to_vec(),
            client_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            client: client.map(String::from),
        }
    }

    #[test]
    fn client_hosts_per_node_and_for_all() {
        let h = hosts_of(&["1=10.0.0.1".into(), "db.example".into()], &[1, 2]).unwrap();
        assert_eq!(
            h,
            vec![
                (1, vec!["10.0.0.1".to_string(), "db.example".to_string()]),
                (2, vec!["db.example".to_string()])
            ]
        );
        assert!(hosts_of(&["3=x".into()], &[1, 2])
            .unwrap_err()
            .contains("not in --ids"));
        assert!(hosts_of(&["a=x".into()], &[1])
            .unwrap_err()
            .contains("ID=HOST"));
    }

    #[test]
    fn makes_node_server_and_client_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("c");
        let said = certs(&args(&out, &[1, 2], &["2=10.9.8.7"], None)).unwrap();
        for f in ["ca.crt", "node-1.crt", "server-1.crt", "server-2.key"] {
            assert!(out.join(f).exists(), "{f}");
        }
        // The printed config lines parse as a node config with client TLS on.
        let snippet: String = said
            .lines()
            .skip_while(|l| !l.starts_with("tls_dir"))
            .map(|l| format!("{}\n", l.replace("<id>", "1")))
            .collect();
        let cfg = crate::config::NodeConfig::parse(&format!(
            "id = 1\ndata_dir = \"d\"\npeer_addr = \"10.0.0.1:7000\"\nclient_addr = \"10.0.0.1:8000\"\n\
             {snippet}\n[[members]]\nid = 1\npeer_addr = \"10.0.0.1:7000\"\nclient_addr = \"10.0.0.1:8000\"\n"
        ))
        .unwrap();
        let tls = cfg.client_tls().expect("client TLS on");
        assert!(tls.client_cert_auth && tls.cert.ends_with("server-1.crt"));
        assert!(crate::client_port::ClientPort::new(Some(&tls), cfg.client_limits()).is_ok());
        certs(&args(&out, &[], &[], Some("alice"))).unwrap();
        assert!(out.join("client-alice.crt").exists());
        let e = certs(&args(&out, &[], &[], Some("alice"))).unwrap_err();
        assert!(e.contains("exists already"), "{e}");
        let e = certs(&args(&out, &[], &[], Some("a/b"))).unwrap_err();
        assert!(e.contains("client name"), "{e}");
        let e = certs(&args(&dir.path().join("none"), &[], &[], Some("bob"))).unwrap_err();
        assert!(e.contains("ca.key"), "{e}");
        let e = certs(&args(&dir.path().join("d"), &[1], &["1=bad host"], None)).unwrap_err();
        assert!(e.contains("bad host"), "{e}");
    }
}

#[cfg(test)]
mod data_dir_tests {
    use super::*;

    #[test]
    fn a_founding_member_never_bootstraps_over_a_wiped_data_dir() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("node-1");
        // Never created: a brand-new member.
        assert!(check_data_dir(&dir, false, false).is_ok());
        // Exists without Raft state (emptied, or a blank replacement disk).
        std::fs::create_dir_all(dir.join("wal")).unwrap();
        let e = check_data_dir(&dir, false, false).unwrap_err();
        assert!(
            e.contains("holds no Raft state") && e.contains("--force-new-cluster"),
            "{e}"
        );
        assert!(check_data_dir(&dir, false, true).is_ok(), "forced");
        assert!(
            check_data_dir(&dir, true, false).is_ok(),
            "a joining node starts empty"
        );
        // With state it opens as usual.
        std::fs::write(dir.join("wal").join("00000001.seg"), b"x").unwrap();
        assert!(check_data_dir(&dir, false, false).is_ok());
    }
}
