//! The `raft-node` binary.
use clap::Parser;

/// A replicated key-value service built on Raft.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
