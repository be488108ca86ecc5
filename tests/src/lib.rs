//! Support code for the process-level fault suite, and integration tests
//! across crates and processes (in `tests/tests/`).
//!
//! - [`linearizability`] records concurrent key-value histories and checks
//!   them for linearizability.
//! - [`cluster`] runs real `raft-node serve` processes on 127.0.0.1..N.
//! - [`etcd`] runs a real etcd 3.4 cluster, to run the `etcdctl` tests
//!   (`tests/etcdctl.rs`) against etcd itself.
//! - [`client`] talks to the node's HTTP API and records operations with
//!   their exact outcome (ok, definitely failed, unknown); [`grpc_client`]
//!   does the same through etcd's v3 gRPC API with the `etcd-client` crate;
//!   [`etcd_api`] connects that crate to a cluster's members.
//! - [`nemesis`] injects faults: iptables partitions and loss, SIGKILL,
//!   SIGSTOP, leadership transfers, membership changes.
//! - [`suite`] runs clients against a cluster under a nemesis and checks the
//!   result (`tests/fault_suite.rs` is the entry point); [`watch_check`]
//!   checks one watch stream per node against the final history.

pub mod client;
pub mod cluster;
pub mod etcd;
pub mod etcd_api;
pub mod grpc_client;
pub mod linearizability;
pub mod nemesis;
pub mod suite;
pub mod watch_check;
