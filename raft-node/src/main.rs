//! The `raft-node` binary.
use std::process::ExitCode;

use clap::Parser;
use raft_node::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_tracing();
    cli::run(cli)
}
