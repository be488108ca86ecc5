//! Snapshots for the Raft stack: zstd-compressed, checksummed, streamed,
//! written atomically, transferred in verified chunks, and compacted against
//! the write-ahead log in a crash-safe order.
//!
//! - [`SnapshotWriter`] / [`SnapshotReader`]: the file format over any
//!   `std::io` stream. A header (magic, version, index, term, membership,
//!   sizes) with its own CRC32, a zstd body, a CRC32 over the body. The state
//!   streams through, so it never has to fit in memory.
//! - [`SnapshotStore`]: a directory of snapshots. Temporary file, fsync,
//!   rename, directory fsync; keep the newest N; a damaged newest snapshot is
//!   reported and the previous one is used.
//! - [`ChunkSource`] / [`SnapshotReceiver`]: chunked, resumable transfer that
//!   never exposes a partial or corrupt snapshot.
//! - [`compaction`]: the contract with `raft-wal` — snapshot durable, then its
//!   marker in the WAL, then removal of covered entries — and the recovery
//!   that reconciles the two after a crash at any point.
//!
//! All file I/O goes through [`raft_wal::fs::Fs`], so the WAL's fault layer
//! ([`raft_wal::fault::FaultFs`]) tests both together.
//!
//! # Example
//!
//! ```
//! use std::io::{Read, Write};
//! use raft_snapshot::{Membership, SnapshotMeta, SnapshotStore, StoreOptions};
//!
//! # fn main() -> Result<(), raft_snapshot::Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = SnapshotStore::open(dir.path(), StoreOptions::default())?;
//!
//! let meta = SnapshotMeta { index: 100, term: 3, membership: Membership::voters([1, 2, 3]) };
//! let mut snap = store.create(meta.clone())?;
//! for key in 0..10_000u32 {
//!     snap.write_all(format!("{key}:value-{key}\n").as_bytes()).unwrap();
//! }
//! let header = snap.commit()?; // durable and visible from here on
//! assert!(header.compression_ratio() > 2.0);
//!
//! let mut reader = store.open_newest()?.expect("one snapshot");
//! assert_eq!(reader.header().meta, meta);
//! let mut state = Vec::new();
//! reader.restore_into(&mut state)?; // all checks pass before this returns Ok
//! assert!(state.starts_with(b"0:value-0\n"));
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod compaction;
mod error;
mod format;
mod fsio;
mod reader;
mod store;
mod transfer;
mod writer;

pub use error::{CorruptionKind, Error, Result};
pub use format::{
    Membership, SnapshotHeader, SnapshotId, SnapshotMeta, FORMAT_VERSION, MAGIC, MAX_HEADER_BYTES,
};
pub use fsio::FileReader;
pub use reader::SnapshotReader;
pub use store::{DamagedSnapshot, NewestValid, PendingSnapshot, SnapshotStore, StoreOptions};
pub use transfer::{Chunk, ChunkSource, Received, SnapshotReceiver, DEFAULT_CHUNK_BYTES};
pub use writer::{SnapshotWriter, DEFAULT_LEVEL};
