//! A replicated key-value service built on `raft-core`, `raft-wal` and
//! `raft-net`. So far this crate holds the command-line interface of the
//! `raft-node` binary, whose only command is the offline `wal` inspector.
#![warn(missing_docs)]

pub mod cli;
