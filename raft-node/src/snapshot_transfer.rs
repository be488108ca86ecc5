//! Shipping snapshots to followers over the transport's bulk lane.
//!
//! The leader's core asks for a snapshot to be sent with an `InstallSnapshot`
//! message. The node streams the snapshot file as checksummed chunks
//! ([`raft_snapshot::Chunk`]) on the bulk lane, so heartbeats and appends on
//! the message lane are never delayed; the `InstallSnapshot` message rides on
//! the last chunk. The follower feeds the chunks to a
//! [`raft_snapshot::SnapshotReceiver`], which verifies the header, every chunk
//! and the body checksum before the file becomes visible in its store; only
//! then is the `InstallSnapshot` message stepped into its core. A transfer
//! that breaks or is refused is reported to the leader's core, which probes
//! and sends again.

use std::collections::HashMap;
use std::time::Duration;

use raft_core::{Message, MessageBody};
use raft_snapshot::{Chunk, Received, SnapshotId, SnapshotReceiver, SnapshotStore};
use serde::{Deserialize, Serialize};

use crate::driver::DriverHandle;

/// Bytes per chunk.
pub const CHUNK_BYTES: usize = 1 << 20;

/// How long to wait for queue space for one chunk before giving up.
const CHUNK_SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// After the last chunk is queued, how long the follower has to install the
/// snapshot and answer before the leader treats the transfer as failed (a
/// no-op if the follower already answered).
const ACK_GRACE: Duration = Duration::from_secs(10);

/// One chunk of a snapshot on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotPiece {
    /// Sending node (checked against its certificate by the transport).
    pub from: u64,
    /// Last included index of the snapshot.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// Byte offset of `data` in the snapshot file.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// True on the last chunk.
    pub done: bool,
    /// Checksum of `offset`, `done` and `data`.
    pub crc: u32,
    /// The leader's `InstallSnapshot` message, on the last chunk.
    pub install: Option<Message>,
}

impl raft_net::Envelope for SnapshotPiece {
    fn claimed_sender(&self) -> Option<u64> {
        Some(self.from)
    }
}

/// The transport the node uses: raft messages on the message lane; snapshot
/// pieces and forwarded client requests on the bulk lane.
pub type PeerNet = raft_net::Transport<crate::identity::PeerMessage, crate::forward::PeerBulk>;

/// The snapshot an `InstallSnapshot` message asks to ship, if it is one.
pub fn snapshot_of(msg: &Message) -> Option<SnapshotId> {
    match &msg.body {
        MessageBody::InstallSnapshot { snapshot, .. } => Some(SnapshotId {
            index: snapshot.index,
            term: snapshot.term,
        }),
        _ => None,
    }
}

/// Streams snapshot `id` to `msg.to`; returns whether every chunk was queued.
pub async fn send(net: &PeerNet, store: &SnapshotStore, msg: Message, id: SnapshotId) -> bool {
    let to = msg.to;
    let mut source = match tokio::task::block_in_place(|| store.chunks(id, CHUNK_BYTES)) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(to, index = id.index, error = %e, "cannot open snapshot to send");
            return false;
        }
    };
    let mut install = Some(msg);
    loop {
        let chunk = match tokio::task::block_in_place(|| source.next_chunk()) {
            Ok(Some(c)) => c,
            Ok(None) => return true,
            Err(e) => {
                tracing::warn!(to, index = id.index, error = %e, "cannot read snapshot to send");
                return false;
            }
        };
        let piece = SnapshotPiece {
            from: net.id(),
            index: id.index,
            term: id.term,
            offset: chunk.offset,
            done: chunk.done,
            crc: chunk.crc,
            install: if chunk.done { install.take() } else { None },
            data: chunk.data,
        };
        match tokio::time::timeout(
            CHUNK_SEND_TIMEOUT,
            net.send_bulk_wait(to, crate::forward::PeerBulk::Snapshot(piece)),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(to, index = id.index, error = %e, "snapshot transfer failed");
                return false;
            }
            Err(_) => {
                tracing::warn!(to, index = id.index, "snapshot transfer stalled");
                return false;
            }
        }
    }
}

/// True if `install`, carried on the last chunk of a transfer from the
/// authenticated peer `from`, is that peer's `InstallSnapshot` for snapshot
/// `id`. The transport checks only the chunk's claimed sender; the message
/// inside is the peer's word, and a peer may not speak for another node (nor
/// install a snapshot other than the one it shipped).
fn install_matches(install: &Message, from: u64, id: SnapshotId) -> bool {
    let ok = install.from == from && snapshot_of(install) == Some(id);
    if !ok {
        tracing::warn!(
            from,
            claimed = install.from,
            index = id.index,
            "InstallSnapshot on a transfer does not match its authenticated sender or snapshot; dropped"
        );
    }
    ok
}

/// Ships snapshots for the leader: at most one transfer per follower at a time.
pub struct Shipper {
    net: PeerNet,
    store: SnapshotStore,
    runtime: tokio::runtime::Handle,
    active: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
}

impl Shipper {
    /// A shipper sending from `store` over `net`, spawning on `runtime`.
    pub fn new(net: PeerNet, store: SnapshotStore, runtime: tokio::runtime::Handle) -> Self {
        Shipper {
            net,
            store,
            runtime,
            active: Default::default(),
        }
    }

    /// Starts shipping `id` with `msg` unless a transfer to `msg.to` is
    /// running; `report(to, delivered)` is called when it ends.
    pub fn ship(&self, msg: Message, id: SnapshotId, report: impl Fn(u64, bool) + Send + 'static) {
        let to = msg.to;
        if !self
            .active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(to)
        {
            return;
        }
        let (net, store, active) = (self.net.clone(), self.store.clone(), self.active.clone());
        self.runtime.spawn(async move {
            tracing::info!(to, index = id.index, term = id.term, "sending snapshot");
            let queued = send(&net, &store, msg, id).await;
            if queued {
                tokio::time::sleep(ACK_GRACE).await;
            }
            active.lock().unwrap_or_else(|e| e.into_inner()).remove(&to);
            // A no-op if the follower already acknowledged the snapshot.
            report(to, false);
        });
    }
}

/// Receives snapshot pieces from leaders into the node's store.
pub struct Intake {
    store: SnapshotStore,
    transfers: HashMap<u64, (SnapshotId, SnapshotReceiver)>,
}

impl Intake {
    /// Receives into `store`.
    pub fn new(store: SnapshotStore) -> Self {
        Intake {
            store,
            transfers: HashMap::new(),
        }
    }

    /// The store snapshots are received into.
    pub fn store(&self) -> &SnapshotStore {
        &self.store
    }

    /// Takes one piece from `from`. Returns the `InstallSnapshot` message to
    /// step once the whole snapshot is verified and durable in the store.
    pub fn accept(&mut self, from: u64, piece: SnapshotPiece) -> Option<Message> {
        let id = SnapshotId {
            index: piece.index,
            term: piece.term,
        };
        if piece.offset == 0 {
            // A new transfer (or a restarted one) replaces whatever was in progress.
            if let Some((_, old)) = self.transfers.remove(&from) {
                old.abort();
            }
            let rx = self.store.receiver().expecting(id);
            self.transfers.insert(from, (id, rx));
        }
        let Some((current, rx)) = self.transfers.get_mut(&from) else {
            tracing::debug!(
                from,
                offset = piece.offset,
                "snapshot piece without a transfer"
            );
            return None;
        };
        if *current != id {
            tracing::debug!(from, "snapshot piece of another transfer");
            return None;
        }
        let chunk = Chunk {
            offset: piece.offset,
            data: piece.data,
            done: piece.done,
            crc: piece.crc,
        };
        match tokio::task::block_in_place(|| rx.accept(&chunk)) {
            Ok(Received::Progress { .. }) => None,
            Ok(Received::Installed(h)) => {
                self.transfers.remove(&from);
                tracing::info!(
                    from,
                    index = h.meta.index,
                    term = h.meta.term,
                    "received snapshot"
                );
                piece.install.filter(|m| install_matches(m, from, id))
            }
            Err(e) => {
                tracing::warn!(from, index = id.index, error = %e, "snapshot transfer refused");
                if let Some((_, rx)) = self.transfers.remove(&from) {
                    rx.abort();
                }
                None
            }
        }
    }
}

/// Hands a received snapshot's `InstallSnapshot` message to the driver.
/// The core installs it if it is ahead of this node's log; the driver then
/// rebuilds its state from the file off its thread (see `driver/restore.rs`).
///
/// An install whose snapshot a newer one already replaced in the store is
/// dropped (as a lost message would be): the newer one's install follows.
pub fn deliver_install(handle: &DriverHandle, store: &SnapshotStore, install: Message) {
    if let Some(id) = snapshot_of(&install) {
        let newest = store.list().ok().and_then(|ids| ids.last().copied());
        if newest.is_some_and(|newest| newest > id) {
            tracing::debug!(
                index = id.index,
                "a newer snapshot arrived before this one was installed; dropped"
            );
            return;
        }
    }
    handle.deliver(install);
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft_core::SnapshotMeta;
    use raft_snapshot::{Membership, StoreOptions};
    use std::io::Write;

    fn install(from: u64, index: u64) -> Message {
        Message {
            from,
            to: 3,
            term: 5,
            body: MessageBody::InstallSnapshot {
                snapshot: SnapshotMeta {
                    index,
                    term: 2,
                    conf: raft_core::ConfState::with_voters([1, 2, 3]),
                },
                tag: 1,
            },
        }
    }

    /// Feeds a whole snapshot from authenticated peer 2 whose last chunk
    /// carries `msg`; returns what the intake hands to the driver.
    fn transfer(msg: Message) -> Option<Message> {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let leader = SnapshotStore::open(a.path(), StoreOptions::default()).unwrap();
        let follower = SnapshotStore::open(b.path(), StoreOptions::default()).unwrap();
        let meta = raft_snapshot::SnapshotMeta {
            index: 7,
            term: 2,
            membership: Membership::voters([1, 2, 3]),
        };
        let mut w = leader.create(meta.clone()).unwrap();
        w.write_all(&[9u8; 10_000]).unwrap();
        w.commit().unwrap();
        let mut intake = Intake::new(follower);
        let mut source = leader.chunks(meta.id(), 1024).unwrap();
        let mut out = None;
        let mut msg = Some(msg);
        while let Some(c) = source.next_chunk().unwrap() {
            let piece = SnapshotPiece {
                from: 2,
                index: 7,
                term: 2,
                offset: c.offset,
                done: c.done,
                crc: c.crc,
                install: if c.done { msg.take() } else { None },
                data: c.data,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .build()
                .unwrap();
            out = rt.block_on(async { intake.accept(2, piece) });
        }
        out
    }

    #[test]
    fn the_install_message_must_come_from_the_authenticated_sender() {
        assert_eq!(transfer(install(2, 7)), Some(install(2, 7)));
        assert_eq!(transfer(install(1, 7)), None, "peer 2 speaking for node 1");
        assert_eq!(
            transfer(install(2, 8)),
            None,
            "another snapshot than shipped"
        );
    }
}
