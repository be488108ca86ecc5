//! Counters of a transport, per peer and overall.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::NodeId;

/// Counters of one peer, as returned by [`Transport::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's id.
    pub id: NodeId,
    /// The address dialed, if the peer is configured (not for peers only heard from).
    pub addr: Option<SocketAddr>,
    /// Whether our outbound connection to the peer is up.
    pub connected: bool,
    /// Bytes written to the peer (frames, both lanes).
    pub bytes_sent: u64,
    /// Bytes of accepted frames received from the peer (both lanes).
    pub bytes_received: u64,
    /// Messages written on the message lane.
    pub messages_sent: u64,
    /// Messages received on the message lane and handed to the inbox.
    pub messages_received: u64,
    /// Items written on the bulk lane.
    pub bulk_sent: u64,
    /// Items received on the bulk lane and handed to the inbox.
    pub bulk_received: u64,
    /// Messages and bulk items dropped because the peer's queue was full.
    pub dropped: u64,
    /// Outbound messages dropped because they encode larger than `max_frame_bytes`.
    pub oversized: u64,
    /// Inbound connections from this peer closed for a protocol violation (oversized or
    /// malformed frame, impersonation).
    pub rejected: u64,
    /// Outbound connections established after the first one.
    pub reconnects: u64,
    /// Failed outbound connection attempts.
    pub connect_failures: u64,
}

/// Counters of the whole transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Per peer, sorted by id.
    pub peers: Vec<PeerStats>,
    /// Inbound handshakes that failed (no certificate, certificate from another CA, ...).
    pub handshake_failures: u64,
    /// Inbound connections closed before a peer id was verified (bad header, a
    /// certificate not naming the claimed id).
    pub refused_connections: u64,
}

#[derive(Default)]
pub(crate) struct PeerCounters {
    pub(crate) connected: AtomicBool,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) bulk_sent: AtomicU64,
    pub(crate) bulk_received: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) oversized: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
}

pub(crate) fn inc(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) peers: Mutex<HashMap<NodeId, Arc<PeerCounters>>>,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) refused_connections: AtomicU64,
}

impl Registry {
    pub(crate) fn peer(&self, id: NodeId) -> Arc<PeerCounters> {
        let mut map = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(id).or_default().clone()
    }
}
