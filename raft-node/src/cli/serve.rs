//! `raft-node serve --config FILE` and `raft-node certs --out DIR --ids 1,2,3`.

use std::path::PathBuf;

use crate::config::NodeConfig;
use crate::server::Server;

/// Options of `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The node's TOML configuration file.
    #[arg(long)]
    pub config: PathBuf,
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
