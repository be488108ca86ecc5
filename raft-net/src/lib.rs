//! QUIC peer transport with mutual TLS for the Raft stack.
//!
//! - One quinn endpoint per node, bound to its `peer_addr`, accepting and dialing.
//! - Mutual TLS 1.3 (rustls, `ring` provider) against a cluster CA; every node
//!   certificate names its node id as `node-<id>.raft` ([`certs`] creates them).
//! - Messages encoded with postcard behind a u32 length prefix on long-lived streams:
//!   one message lane and one bulk lane (snapshot chunks) per connection, so bulk
//!   transfers never hold up heartbeats or appends.
//! - Bounded per-peer queues that drop (and count) rather than block, reconnection with
//!   exponential backoff and jitter, counters per peer.
//!
//! See [`transport`](Transport) for the connection rule and the identity checks.
//!
//! # Example
//!
//! ```
//! use raft_net::{certs, Inbound, TlsConfig, Transport, TransportConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! certs::generate(dir.path(), &[1, 2])?;
//!
//! // Two nodes on loopback (port 0: the OS picks one); `Vec<u8>` messages and bulk items.
//! let (a, _a_inbox) = Transport::<Vec<u8>>::start(
//!     TransportConfig::new(1, "127.0.0.1:0".parse()?),
//!     &TlsConfig::load(dir.path(), 1)?,
//! )?;
//! let (b, mut b_inbox) = Transport::<Vec<u8>>::start(
//!     TransportConfig::new(2, "127.0.0.2:0".parse()?),
//!     &TlsConfig::load(dir.path(), 2)?,
//! )?;
//! a.add_peer(2, b.local_addr());
//! b.add_peer(1, a.local_addr());
//!
//! a.send(2, b"hello".to_vec())?;
//! a.send_bulk_wait(2, vec![0u8; 100_000]).await?;
//! let (from, first) = b_inbox.recv().await.expect("inbound");
//! assert_eq!((from, first), (1, Inbound::Message(b"hello".to_vec())));
//! let (from, second) = b_inbox.recv().await.expect("inbound");
//! assert_eq!((from, second), (1, Inbound::Bulk(vec![0u8; 100_000])));
//!
//! assert!(a.is_connected(2));
//! assert_eq!(a.peer_stats(2).unwrap().messages_sent, 1);
//! assert_eq!(b.stats().peers[0].bulk_received, 1);
//! a.remove_peer(2);
//! a.shutdown().await;
//! b.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod certs;
mod frame;
mod frame_queue;
mod inbound;
mod inbox;
mod outbound;
mod queue;
mod stats;
mod tls;
mod transport;

pub use inbox::{Inbound, Inbox};
pub use stats::{PeerStats, TransportStats};
pub use tls::{TlsConfig, TlsError};
pub use transport::{close_code, NetError, SendError, Transport, TransportConfig};

/// A node id (the same as `raft_core::NodeId`).
pub type NodeId = raft_core::NodeId;

/// What the transport needs to know about a message beyond its encoding: the sender it
/// claims, if any. A message claiming a sender other than the peer's verified id is
/// dropped and the connection closed.
///
/// ```
/// use raft_net::{Envelope, NodeId};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Chunk { from: NodeId, bytes: Vec<u8> }
/// impl Envelope for Chunk {
///     fn claimed_sender(&self) -> Option<NodeId> { Some(self.from) }
/// }
/// assert_eq!(Chunk { from: 2, bytes: vec![] }.claimed_sender(), Some(2));
/// ```
pub trait Envelope {
    /// The node the message says it comes from; `None` if it says nothing (the verified
    /// peer id is then the only sender information).
    fn claimed_sender(&self) -> Option<NodeId> {
        None
    }
}

impl Envelope for raft_core::Message {
    fn claimed_sender(&self) -> Option<NodeId> {
        Some(self.from)
    }
}

impl Envelope for Vec<u8> {}

/// Everything a message or bulk type needs: postcard-encodable, an [`Envelope`], and
/// shareable between tasks. Implemented for every such type.
///
/// ```
/// fn wire<T: raft_net::Wire>() {}
/// wire::<raft_core::Message>();
/// wire::<Vec<u8>>();
/// ```
pub trait Wire:
    serde::Serialize + serde::de::DeserializeOwned + Envelope + Send + Sync + 'static
{
}

impl<T: serde::Serialize + serde::de::DeserializeOwned + Envelope + Send + Sync + 'static> Wire
    for T
{
}
