//! A replicated key-value service built on `raft-core`, `raft-wal` and
//! `raft-net`.
//!
//! So far this crate holds:
//! - [`storage::WalStorage`]: durable Raft storage over a `raft-wal` log;
//! - [`kv::KvStore`]: the key-value state machine;
//! - [`local_cluster::LocalCluster`]: nodes driving the real core on threads
//!   in one process, wired by channels (`raft-node demo` and tests use it);
//! - [`cli`]: the `raft-node` command line (`demo`, `wal dump|verify`).
//!
//! The networked node (QUIC peers, HTTP clients) is not built yet.
#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod driver;
pub mod http;
pub mod kv;
pub mod local_cluster;
pub mod metrics;
pub mod server;
pub mod snapshot_transfer;
pub mod storage;
