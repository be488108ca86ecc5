//! Snapshot files for the Raft stack: zstd-compressed, checksummed, written
//! atomically. (Work in progress: this crate is built after `raft-wal` and
//! `raft-core`; it exports nothing yet.)
