//! A replicated key-value service built on `raft-core`, `raft-wal` and
//! `raft-net`.
//!
//! So far this crate holds:
//! - [`storage::WalStorage`]: durable Raft storage over a `raft-wal` log;
//! - [`mvcc::Store`]: the multi-version key-value state machine behind etcd's v3 API;
//! - [`auth`]: etcd's users, roles and permissions (replicated through the log);
//! - [`local_cluster::LocalCluster`]: nodes driving the real core on threads
//!   in one process, wired by channels (`raft-node demo` and tests use it);
//! - [`server`]: the networked node (QUIC peers; gRPC, the `/v3` JSON gateway
//!   and the `/v1` HTTP API on one client port);
//! - [`cli`]: the `raft-node` command line.
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod auto_compact;
pub mod cli;
pub mod client_port;
pub mod config;
pub mod driver;
pub mod forward;
pub mod heap;
pub mod http;
pub mod identity;
pub mod lease;
pub mod local_cluster;
pub mod metrics;
pub mod mvcc;
pub mod server;
pub mod snapshot_transfer;
pub mod storage;
pub mod watch;
