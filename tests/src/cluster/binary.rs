//! Finding (building if needed) the `raft-node` binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root (the parent of this package's directory).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package lives inside the workspace")
        .to_path_buf()
}

/// The cargo target directory: `CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// The `raft-node` binary to run: `RAFT_NODE_BIN` if set, else
/// `<target>/debug/raft-node` after `cargo build -p raft-node --bin raft-node
/// --profile test` (a no-op when `cargo test` already built it; cargo is the
/// `CARGO` of the running `cargo test`, or `cargo`), hard-linked to
/// `<target>/fault-suite/bin/fsnode-<pid>` (see `private_copy`). Resolved once
/// per process.
pub fn node_binary() -> Result<PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("RAFT_NODE_BIN") {
            // A relative path is taken from the workspace root, where the
            // documented commands run (cargo runs tests in the crate's dir).
            let bin = workspace_root().join(bin);
            return if bin.is_file() {
                Ok(bin)
            } else {
                Err(format!("RAFT_NODE_BIN={} is not a file", bin.display()))
            };
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let target = target_dir();
        let out = Command::new(&cargo)
            .current_dir(workspace_root())
            .env("CARGO_TARGET_DIR", &target)
            .args([
                "build",
                "--quiet",
                "-p",
                "raft-node",
                "--bin",
                "raft-node",
                "--profile",
                "test",
            ])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
        if !out.status.success() {
            return Err(format!(
                "building raft-node failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let bin = target.join("debug").join("raft-node");
        if !bin.is_file() {
            return Err(format!("{} missing after the build", bin.display()));
        }
        private_copy(&bin, &target.join("fault-suite").join("bin"))
    })
    .clone()
}

/// Links (or copies) `bin` into `dir` under a name without "raft-node" in it,
/// unique to this process, so that a `pkill raft-node` by someone else on a
/// shared machine cannot stop the suite's nodes mid-run (it happened: every
/// node got SIGTERM at once, which looked like a node bug).
fn private_copy(bin: &Path, dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let dest = dir.join(format!("fsnode-{}", std::process::id()));
    let _ = std::fs::remove_file(&dest);
    if std::fs::hard_link(bin, &dest).is_err() {
        std::fs::copy(bin, &dest).map_err(|e| format!("copying {}: {e}", bin.display()))?;
    }
    // Leftovers of earlier runs (other pids) are removed.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(pid) = name
                .strip_prefix("fsnode-")
                .and_then(|p| p.parse::<i32>().ok())
            {
                // SAFETY: kill(pid, 0) only checks that the process exists.
                let alive = unsafe { libc::kill(pid, 0) == 0 };
                if pid != std::process::id() as i32 && !alive {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
    Ok(dest)
}
