//! `raft-node restore --snapshot FILE --config FILE`: start a new cluster
//! from an etcd API snapshot file (`etcdctl snapshot save`).
//!
//! Run it once per founding member of the new cluster, each with its own
//! configuration (whose `data_dir` must not hold a node's data yet), then
//! start every member with `raft-node serve`. The new cluster serves the
//! keys, their history and the revision of the snapshot; its members are
//! the ones its configurations name.

use std::path::PathBuf;

use crate::config::NodeConfig;
use crate::mvcc::Store;
use crate::storage::WalStorage;

/// Options of `restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The snapshot file (`etcdctl snapshot save FILE` against raft-node).
    #[arg(long)]
    pub snapshot: PathBuf,
    /// The configuration of the member to prepare.
    #[arg(long)]
    pub config: PathBuf,
}

/// Prepares the member's data directory; returns what to print.
pub fn run(args: &RestoreArgs) -> Result<String, String> {
    let cfg = NodeConfig::load(&args.config).map_err(|e| e.to_string())?;
    if cfg.join {
        return Err("restore prepares founding members; this configuration has join = true".into());
    }
    let bytes =
        std::fs::read(&args.snapshot).map_err(|e| format!("{}: {e}", args.snapshot.display()))?;
    let mut state =
        Store::from_backup(&bytes, 1).map_err(|e| format!("{}: {e}", args.snapshot.display()))?;
    // The old cluster's members are not this one's.
    let old: Vec<u64> = state.members().map(|(id, _)| id).collect();
    for id in old {
        state.set_member(id, None);
    }
    WalStorage::seed(&cfg.data_dir, &cfg.member_ids(), &state)
        .map_err(|e| format!("data_dir {}: {e}", cfg.data_dir.display()))?;
    Ok(format!(
        "restored {} keys at revision {} into {} (member {} of {:?}); start it with raft-node serve --config {}",
        state.len(),
        state.revision(),
        cfg.data_dir.display(),
        cfg.id,
        cfg.member_ids(),
        args.config.display()
    ))
}
