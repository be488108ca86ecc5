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
    /// Directory to write `ca.crt`, `ca.key`, `node-<id>.crt`, `node-<id>.key` into.
    #[arg(long)]
    pub out: PathBuf,
    /// Comma-separated node ids.
    #[arg(long, value_delimiter = ',', required = true)]
    pub ids: Vec<u64>,
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

/// Creates a cluster CA and one certificate per id.
pub fn certs(args: &CertsArgs) -> Result<String, String> {
    if args.ids.contains(&0) {
        return Err("node id 0 is not valid".into());
    }
    raft_net::certs::generate(&args.out, &args.ids).map_err(|e| e.to_string())?;
    Ok(format!(
        "wrote a cluster CA and certificates for nodes {:?} to {}",
        args.ids,
        args.out.display()
    ))
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
