//! The Raft consensus algorithm as a pure, deterministic state machine.
//!
//! `raft-core` does no I/O, has no clock, spawns no thread and never blocks. Everything
//! comes in through [`RawNode`]'s methods (`tick`, `step`, `propose`, `read_index`, ...)
//! and everything to be done goes out through a [`Ready`]. Randomness (election
//! timeouts) comes from a seeded generator, so a run is reproducible from its seeds.
//!
//! # The driver loop
//!
//! ```text
//! loop {
//!     feed inputs: node.tick() every tick, node.step(msg) per received message,
//!                  node.propose(..) or node.propose_batch(..), node.read_index(..), ...
//!     if node.has_ready() {
//!         let rd = node.ready()?;            // Err: storage failed, stop the node
//!         send rd.messages                         (may overlap with the persist)
//!         persist rd.snapshot, rd.entries, rd.hard_state   (fsync)
//!         send rd.persisted_messages               (only after the persist!)
//!         apply rd.committed_entries; serve rd.read_states once applied
//!         node.advance();
//!     }
//! }
//! ```
//!
//! # Example: a three-node cluster in memory
//!
//! ```
//! use raft_core::{Config, MemStorage, Message, RawNode, Role};
//!
//! let mut nodes: Vec<RawNode<MemStorage>> = (1..=3)
//!     .map(|id| RawNode::new(Config::new(id), MemStorage::new_bootstrap([1, 2, 3])).unwrap())
//!     .collect();
//! nodes[0].campaign();
//!
//! // Deliver messages until nothing moves; persist and apply every Ready.
//! let mut applied: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 3];
//! let mut pump = |nodes: &mut Vec<RawNode<MemStorage>>, applied: &mut Vec<Vec<Vec<u8>>>| loop {
//!     let mut inflight: Vec<Message> = Vec::new();
//!     for (i, node) in nodes.iter_mut().enumerate() {
//!         while node.has_ready() {
//!             let rd = node.ready().unwrap();
//!             inflight.extend(rd.messages);
//!             if let Some(hs) = rd.hard_state {
//!                 node.storage_mut().set_hard_state(hs);
//!             }
//!             node.storage_mut().append(&rd.entries);
//!             inflight.extend(rd.persisted_messages);
//!             for e in rd.committed_entries {
//!                 if !e.data.is_empty() {
//!                     applied[i].push(e.data.to_vec());
//!                 }
//!             }
//!             node.advance();
//!         }
//!     }
//!     if inflight.is_empty() {
//!         break;
//!     }
//!     for m in inflight {
//!         let to = (m.to - 1) as usize;
//!         nodes[to].step(m).unwrap();
//!     }
//! };
//! pump(&mut nodes, &mut applied);
//! assert_eq!(nodes[0].role(), Role::Leader);
//!
//! nodes[0].propose(b"hello".to_vec()).unwrap();
//! pump(&mut nodes, &mut applied);
//! // The leader learns the commit from the acks; followers with the next heartbeat.
//! nodes[0].tick();
//! pump(&mut nodes, &mut applied);
//! for log in &applied {
//!     assert_eq!(log, &vec![b"hello".to_vec()]);
//! }
//! ```
//!
//! # Module map
//!
//! Types: [`entry`], [`message`], [`confchange`], [`ready`], [`config`], [`error`].
//! Storage: [`storage`] (trait + [`MemStorage`]), `log` and `log_unstable` (the raft log).
//! Leader bookkeeping: `progress`, `inflights`, `quorum`, `read_only`.
//! Algorithm (all `impl RawNode`): `step` (term rules), `election`, `replication`,
//! `membership`, `transfer`, `reads`, and `raw_node` (API and the Ready cycle).

#![deny(missing_docs)]

pub mod confchange;
pub mod config;
pub mod entry;
pub mod error;
pub mod message;
pub mod quorum;
pub mod ready;
pub mod storage;

mod election;
mod inflights;
mod log;
mod log_unstable;
mod membership;
mod progress;
mod progress_map;
mod raw_node;
mod read_only;
mod reads;
mod replication;
mod rng;
mod step;
mod transfer;

#[cfg(test)]
mod tests;

/// The payload type of [`Entry::data`], re-exported so drivers need not depend on `bytes`.
pub use bytes::Bytes;
pub use confchange::{ConfChange, ConfChangeSingle, ConfState};
pub use config::Config;
pub use entry::{Entry, EntryId, EntryKind, HardState, NodeId, ProposedBatch, SnapshotMeta};
pub use error::{Error, Result, StorageError};
pub use message::{AppendOutcome, Message, MessageBody};
pub use raw_node::RawNode;
pub use ready::{ReadState, Ready, Role, RoleState};
pub use storage::{MemStorage, Storage};
