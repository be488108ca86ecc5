//! Command-line interface of the `raft-node` binary.
//!
//! `main.rs` only parses arguments and calls [`run`]; each command lives in its
//! own module so it can be tested without spawning a process.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod bench;
mod bench_grpc;
mod bench_http;
pub mod client;
pub mod demo;
pub mod restore;
pub mod serve;
pub mod wal;

/// A replicated key-value service built on Raft.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Endpoints for the client commands.
    #[command(flatten)]
    pub endpoints: client::Endpoints,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a local 3-node cluster (QUIC + mutual TLS between nodes, HTTP for
    /// clients), write and read a key to show it works, run until Ctrl-C.
    Demo(demo::DemoArgs),
    /// Run a node: QUIC to its peers, HTTP for clients. Stops cleanly on
    /// SIGINT/SIGTERM.
    Serve(serve::ServeArgs),
    /// Create a cluster CA and a certificate per node id.
    Certs(serve::CertsArgs),
    /// Prepare a founding member of a new cluster from an etcd API snapshot
    /// file (`etcdctl snapshot save`).
    Restore(restore::RestoreArgs),
    /// Inspect a write-ahead log directory offline (read-only).
    #[command(subcommand)]
    Wal(wal::WalCommand),
    /// Load-test a running cluster (throughput, latency percentiles, errors).
    Bench(bench::BenchArgs),
    /// Talk to a running cluster over its HTTP API.
    #[command(flatten)]
    Client(client::ClientCommand),
}

/// Exit code for a command that ran and found a problem (corruption, I/O
/// error, bad directory). Usage errors exit with 2 (clap's default).
pub const EXIT_FAILURE: u8 = 1;

/// Sends `tracing` diagnostics to stderr, filtered by `RUST_LOG` (default `warn`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Fails only if a subscriber is already installed, which is then kept.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

/// Runs a parsed command line, printing results to stdout and a one-line
/// error to stderr, and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Demo(args) => finish(demo::run(&args).map(|()| None), "demo failed: "),
        Command::Serve(args) => finish(serve::serve(&args).map(|()| None), ""),
        Command::Certs(args) => finish(serve::certs(&args).map(Some), ""),
        Command::Restore(args) => finish(restore::run(&args).map(Some), "restore failed: "),
        Command::Bench(args) => finish(bench::run(&args, &cli.endpoints).map(Some), ""),
        Command::Client(cmd) => finish(client::run(&cmd, &cli.endpoints).map(Some), ""),
        Command::Wal(cmd) => {
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            let res = wal::run(&cmd, &mut out);
            // wal::run flushed already; this only drops the buffer.
            let _ = out.flush();
            match res {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::debug!(error = ?err, "wal command failed");
                    eprintln!("error: {err}");
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
    }
}

/// Prints a command's output (if any) to stdout, or its error as one line on
/// stderr, and returns the exit code.
fn finish(result: Result<Option<String>, String>, error_prefix: &str) -> ExitCode {
    match result {
        Ok(output) => {
            if let Some(text) = output {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {error_prefix}{err}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
