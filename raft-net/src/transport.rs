//! The peer transport: one QUIC endpoint per node, a sending task per peer, and an inbox.
//!
//! # Connection rule
//!
//! Each node dials every peer it sends to and uses that connection only for sending;
//! connections that peers dial in are only read from. So between nodes A and B there are
//! two connections, A→B carrying A's traffic and B→A carrying B's. Both sides dialing at
//! once therefore needs no tie-break, and each direction has a single owner that
//! reconnects it. On a connection the dialer opens two long-lived unidirectional streams:
//! the message lane (priority over bulk) and the bulk lane (snapshot chunks). Order is
//! kept per peer and per lane, as long as a connection lives; messages in flight when a
//! connection breaks may be lost (Raft tolerates loss).
//!
//! # Identity
//!
//! The TLS handshake checks that a peer's certificate is signed by the cluster CA (a peer
//! presenting none is refused). Each stream then starts with a header naming the sender's
//! node id; the stream is accepted only if the certificate names that node
//! (`node-<id>.raft`), otherwise the connection is closed. Every decoded message whose
//! [`Envelope::claimed_sender`] differs from that verified id is dropped, counted and the
//! connection closed. Inbound items carry the verified id, never a claimed one.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use quinn::VarInt;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::frame_queue::{FrameQueue, QueueError};
use crate::inbound::{accept_loop, AcceptCtx};
use crate::inbox::Inbox;
use crate::outbound::{Outbound, Settings};
use crate::queue;
use crate::stats::{inc, PeerCounters, PeerStats, Registry, TransportStats};
use crate::tls::{TlsConfig, TlsError};
use crate::{NodeId, Wire};

/// Application error codes with which the transport closes a QUIC connection.
pub mod close_code {
    /// Orderly shutdown or reconnect.
    pub const SHUTDOWN: u32 = 0;
    /// Bad stream header, truncated frame or unexpected stream.
    pub const PROTOCOL: u32 = 1;
    /// A frame's length prefix exceeded the configured limit.
    pub const FRAME_TOO_LARGE: u32 = 2;
    /// A frame did not decode as a message.
    pub const MALFORMED: u32 = 3;
    /// The certificate does not name the node the stream or a message claims to be from.
    pub const IMPERSONATION: u32 = 4;
    /// The peer presented no certificate.
    pub const NO_CERTIFICATE: u32 = 5;
}

/// Settings of a [`Transport`]. Build with [`TransportConfig::new`] and adjust fields.
///
/// ```
/// let mut cfg = raft_net::TransportConfig::new(1, "127.0.0.1:7001".parse().unwrap());
/// cfg.peers.insert(2, "127.0.0.2:7001".parse().unwrap());
/// cfg.max_frame_bytes = 1 << 20;
/// assert_eq!(cfg.id, 1);
/// ```
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// This node's id; must match the TLS identity.
    pub id: NodeId,
    /// Address the endpoint binds (the node's `peer_addr`); used for accepting and dialing.
    pub listen: SocketAddr,
    /// Peers to dial, by id. More can be added with [`Transport::add_peer`].
    pub peers: HashMap<NodeId, SocketAddr>,
    /// Largest accepted frame payload (both lanes), checked before allocating.
    pub max_frame_bytes: usize,
    /// Capacity of each peer's outbound message queue, in messages (held encoded);
    /// beyond it messages are dropped.
    pub queue_capacity: usize,
    /// Capacity of each peer's outbound bulk queue, in items.
    pub bulk_queue_capacity: usize,
    /// Capacity of each inbox lane (messages, bulk), in items; a stream reader's batch
    /// (at most 256 items) may pass it once. A full lane pushes back on the sending peer
    /// through QUIC flow control.
    pub inbox_capacity: usize,
    /// First reconnect delay; doubled after each failure up to `backoff_max`, with jitter.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Time allowed for a QUIC + TLS handshake when dialing.
    pub connect_timeout: Duration,
    /// A connection with no traffic (keep-alives included) for this long is closed.
    pub idle_timeout: Duration,
    /// Interval of keep-alive packets on idle connections.
    pub keep_alive: Duration,
    /// Time an accepted stream may take to send its header.
    pub header_timeout: Duration,
}

impl TransportConfig {
    /// Defaults: 16 MiB frames, 4096 queued messages and 64 queued bulk items per peer,
    /// 4096 inbound items per lane, backoff 50 ms..1 s, 2 s connect timeout, 5 s idle
    /// timeout, 1 s keep-alive, 5 s header timeout.
    ///
    /// ```
    /// let cfg = raft_net::TransportConfig::new(3, "127.0.0.3:0".parse().unwrap());
    /// assert!(cfg.peers.is_empty());
    /// ```
    pub fn new(id: NodeId, listen: SocketAddr) -> Self {
        TransportConfig {
            id,
            listen,
            peers: HashMap::new(),
            max_frame_bytes: 16 << 20,
            queue_capacity: 4096,
            bulk_queue_capacity: 64,
            inbox_capacity: 4096,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(1),
            header_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a [`Transport`] could not start.
#[derive(Debug)]
pub enum NetError {
    /// The endpoint could not bind its address (or no Tokio runtime is running).
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The TLS material could not be turned into a QUIC configuration.
    Tls(TlsError),
    /// The TLS identity belongs to another node than the configuration's id.
    IdMismatch {
        /// Id in the configuration.
        config: NodeId,
        /// Id of the TLS identity.
        tls: NodeId,
    },
    /// A configuration value is unusable.
    Config(String),
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetError::Bind { addr, source } => write!(f, "cannot bind {addr}: {source}"),
            NetError::Tls(e) => write!(f, "{e}"),
            NetError::IdMismatch { config, tls } => write!(
                f,
                "configured as node {config} but the TLS identity is node {tls}"
            ),
            NetError::Config(reason) => write!(f, "bad transport configuration: {reason}"),
        }
    }
}

impl std::error::Error for NetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetError::Bind { source, .. } => Some(source),
            NetError::Tls(e) => Some(e),
            _ => None,
        }
    }
}

/// Why [`Transport::send`] did not queue a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No peer with this id is configured.
    UnknownPeer(NodeId),
    /// The peer's queue is full; the message was dropped and counted.
    QueueFull(NodeId),
    /// The message encodes larger than `max_frame_bytes` (or does not encode); it was
    /// dropped and counted in [`PeerStats::oversized`].
    TooLarge(NodeId),
    /// The transport is shutting down.
    Closed,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::UnknownPeer(id) => write!(f, "unknown peer {id}"),
            SendError::QueueFull(id) => write!(f, "queue to peer {id} is full; message dropped"),
            SendError::TooLarge(id) => {
                write!(f, "message to peer {id} exceeds the frame limit; dropped")
            }
            SendError::Closed => write!(f, "transport closed"),
        }
    }
}

impl std::error::Error for SendError {}

/// A configured peer. Dropping it (removal, re-addressing, shutdown) closes its queues
/// and stops its sending task.
struct Peer {
    addr: SocketAddr,
    msg_queue: Arc<FrameQueue>,
    bulk_queue: Arc<FrameQueue>,
    counters: Arc<PeerCounters>,
    task: JoinHandle<()>,
}

impl Peer {
    /// Closes the queues (senders get `SendError::Closed`, waiting ones included) and
    /// stops the sending task.
    fn stop(&self) {
        self.msg_queue.close();
        self.bulk_queue.close();
        self.task.abort();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Inner<M, B> {
    settings: Arc<Settings>,
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    queue_capacity: usize,
    bulk_queue_capacity: usize,
    peers: RwLock<HashMap<NodeId, Peer>>,
    registry: Arc<Registry>,
    accept_task: JoinHandle<()>,
    /// The runtime the transport was started in; peer tasks are spawned on it,
    /// so `add_peer` works from any thread (e.g. a driver thread outside Tokio).
    runtime: tokio::runtime::Handle,
    /// Messages `M` go out on the message lane and bulk items `B` on the bulk lane.
    lanes: PhantomData<fn(M, B)>,
}

impl<M, B> Inner<M, B> {
    fn peers(&self) -> RwLockReadGuard<'_, HashMap<NodeId, Peer>> {
        self.peers.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn peers_mut(&self) -> RwLockWriteGuard<'_, HashMap<NodeId, Peer>> {
        self.peers.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<M, B> Drop for Inner<M, B> {
    fn drop(&mut self) {
        self.endpoint
            .close(VarInt::from_u32(close_code::SHUTDOWN), b"shutdown");
        self.accept_task.abort();
        // Dropping the peers stops their tasks.
        self.peers
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// A node's peer transport. Cheap to clone; the endpoint closes when the last clone is
/// dropped or on [`Transport::shutdown`].
///
/// `M` is the message type (message lane), `B` the bulk type (bulk lane, e.g. snapshot
/// chunks). Must be created inside a Tokio runtime.
///
/// See the [crate documentation](crate) for an example; each method has its own.
pub struct Transport<M, B = M> {
    inner: Arc<Inner<M, B>>,
}

impl<M, B> Clone for Transport<M, B> {
    fn clone(&self) -> Self {
        Transport {
            inner: self.inner.clone(),
        }
    }
}

fn transport_config(cfg: &TransportConfig) -> Result<Arc<quinn::TransportConfig>, NetError> {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(cfg.idle_timeout)
        .map_err(|e| NetError::Config(format!("idle_timeout: {e}")))?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(cfg.keep_alive));
    // A dialer opens exactly two streams (message and bulk lanes); nothing else.
    t.max_concurrent_uni_streams(VarInt::from_u32(2));
    t.max_concurrent_bidi_streams(VarInt::from_u32(0));
    Ok(Arc::new(t))
}

impl<M: Wire, B: Wire> Transport<M, B> {
    /// Binds the endpoint at `config.listen`, starts accepting, and starts a sending task
    /// for each configured peer. Returns the transport and its inbox.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let dir = tempfile::tempdir()?;
    /// raft_net::certs::generate(dir.path(), &[1])?;
    /// let tls = raft_net::TlsConfig::load(dir.path(), 1)?;
    /// let cfg = raft_net::TransportConfig::new(1, "127.0.0.1:0".parse()?);
    /// let (net, _inbox) = raft_net::Transport::<raft_core::Message>::start(cfg, &tls)?;
    /// assert_eq!(net.id(), 1);
    /// // The identity must match the configured id.
    /// let other = raft_net::TransportConfig::new(2, "127.0.0.1:0".parse()?);
    /// assert!(raft_net::Transport::<raft_core::Message>::start(other, &tls).is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn start(
        config: TransportConfig,
        tls: &TlsConfig,
    ) -> Result<(Self, Inbox<M, B>), NetError> {
        if tls.node_id() != config.id {
            return Err(NetError::IdMismatch {
                config: config.id,
                tls: tls.node_id(),
            });
        }
        if config.queue_capacity == 0
            || config.bulk_queue_capacity == 0
            || config.inbox_capacity == 0
        {
            return Err(NetError::Config(
                "queue capacities must be at least 1".into(),
            ));
        }
        if config.max_frame_bytes > u32::MAX as usize {
            return Err(NetError::Config(
                "max_frame_bytes must fit in 32 bits".into(),
            ));
        }
        let tc = transport_config(&config)?;
        let server_config = tls.server_config(tc.clone()).map_err(NetError::Tls)?;
        let client_config = tls.client_config(tc).map_err(NetError::Tls)?;
        let endpoint = quinn::Endpoint::server(server_config, config.listen).map_err(|source| {
            NetError::Bind {
                addr: config.listen,
                source,
            }
        })?;
        let settings = Arc::new(Settings {
            id: config.id,
            max_frame: config.max_frame_bytes,
            backoff_min: config.backoff_min,
            backoff_max: config.backoff_max.max(config.backoff_min),
            connect_timeout: config.connect_timeout,
            header_timeout: config.header_timeout,
        });
        let registry = Arc::new(Registry::default());
        let (msg_tx, msgs) = queue::bounded(config.inbox_capacity);
        let (bulk_tx, bulk) = queue::bounded(config.inbox_capacity);
        let accept_ctx = Arc::new(AcceptCtx {
            settings: settings.clone(),
            registry: registry.clone(),
            msg_tx,
            bulk_tx,
        });
        let accept_task = tokio::spawn(accept_loop(endpoint.clone(), accept_ctx));
        let inner = Inner {
            settings,
            endpoint,
            client_config,
            queue_capacity: config.queue_capacity,
            bulk_queue_capacity: config.bulk_queue_capacity,
            peers: RwLock::new(HashMap::new()),
            registry,
            accept_task,
            runtime: tokio::runtime::Handle::current(),
            lanes: PhantomData,
        };
        let transport = Transport {
            inner: Arc::new(inner),
        };
        for (&id, &addr) in &config.peers {
            transport.add_peer(id, addr);
        }
        info!(node = config.id, addr = %transport.local_addr(), "peer transport started");
        Ok((transport, Inbox::new(msgs, bulk)))
    }

    /// Adds (or re-addresses) a peer and starts dialing it. Re-adding a peer with a new
    /// address drops what was queued for the old one. Adding this node's own id is ignored.
    /// Callable from any thread, inside the transport's Tokio runtime or not.
    ///
    /// ```
    /// # use raft_net::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # certs::generate(dir.path(), &[1, 2])?;
    /// # let (a, mut a_inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(1, "127.0.0.1:0".parse()?), &TlsConfig::load(dir.path(), 1)?)?;
    /// # let (b, mut inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(2, "127.0.0.2:0".parse()?), &TlsConfig::load(dir.path(), 2)?)?;
    /// # a.add_peer(2, b.local_addr());
    /// # b.add_peer(1, a.local_addr());
    /// // (done above for both nodes) a node joining later is added the same way:
    /// a.add_peer(3, "127.0.0.3:9".parse()?);
    /// assert!(!a.is_connected(3));
    /// # Ok(())
    /// # }
    /// ```
    pub fn add_peer(&self, id: NodeId, addr: SocketAddr) {
        if id == self.inner.settings.id {
            return;
        }
        let mut peers = self.inner.peers_mut();
        if peers.get(&id).is_some_and(|old| old.addr == addr) {
            return;
        }
        let max_frame = self.inner.settings.max_frame;
        let msg_queue = Arc::new(FrameQueue::new(self.inner.queue_capacity, max_frame));
        let bulk_queue = Arc::new(FrameQueue::new(self.inner.bulk_queue_capacity, max_frame));
        let counters = self.inner.registry.peer(id);
        let out = Outbound {
            settings: self.inner.settings.clone(),
            endpoint: self.inner.endpoint.clone(),
            client_config: self.inner.client_config.clone(),
            peer: id,
            addr,
            counters: counters.clone(),
        };
        let task = self
            .inner
            .runtime
            .spawn(out.run(msg_queue.clone(), bulk_queue.clone()));
        // Replacing an old entry drops it, which stops its task.
        peers.insert(
            id,
            Peer {
                addr,
                msg_queue,
                bulk_queue,
                counters,
                task,
            },
        );
    }

    /// Stops dialing a peer and drops what is queued for it. Its counters are kept.
    ///
    /// ```
    /// # use raft_net::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # certs::generate(dir.path(), &[1, 2])?;
    /// # let (a, mut a_inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(1, "127.0.0.1:0".parse()?), &TlsConfig::load(dir.path(), 1)?)?;
    /// # let (b, mut inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(2, "127.0.0.2:0".parse()?), &TlsConfig::load(dir.path(), 2)?)?;
    /// # a.add_peer(2, b.local_addr());
    /// # b.add_peer(1, a.local_addr());
    /// a.remove_peer(2);
    /// assert_eq!(a.send(2, vec![1]), Err(SendError::UnknownPeer(2)));
    /// # Ok(())
    /// # }
    /// ```
    pub fn remove_peer(&self, id: NodeId) {
        let mut peers = self.inner.peers_mut();
        if let Some(peer) = peers.remove(&id) {
            peer.counters.connected.store(false, Ordering::Relaxed);
        }
    }

    /// Queues a message for `to` without waiting. When the peer's queue is full the
    /// message is dropped, counted in [`PeerStats::dropped`] and `QueueFull` returned.
    ///
    /// ```
    /// # use raft_net::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # certs::generate(dir.path(), &[1, 2])?;
    /// # let (a, mut a_inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(1, "127.0.0.1:0".parse()?), &TlsConfig::load(dir.path(), 1)?)?;
    /// # let (b, mut inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(2, "127.0.0.2:0".parse()?), &TlsConfig::load(dir.path(), 2)?)?;
    /// # a.add_peer(2, b.local_addr());
    /// # b.add_peer(1, a.local_addr());
    /// a.send(2, b"append".to_vec())?;
    /// assert_eq!(a.send(9, vec![]), Err(SendError::UnknownPeer(9)));
    /// assert_eq!(inbox.recv().await.unwrap(), (1, Inbound::Message(b"append".to_vec())));
    /// # Ok(())
    /// # }
    /// ```
    pub fn send(&self, to: NodeId, msg: M) -> Result<(), SendError> {
        self.try_queue(to, &msg, |p| &p.msg_queue)
    }

    /// Queues a message for `to`, waiting while the peer's queue is full instead of
    /// dropping. For senders that want back-pressure (bulk loaders, benchmarks); a Raft
    /// driver should use [`Transport::send`], which never waits.
    ///
    /// ```
    /// # use raft_net::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # certs::generate(dir.path(), &[1, 2])?;
    /// # let (a, mut a_inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(1, "127.0.0.1:0".parse()?), &TlsConfig::load(dir.path(), 1)?)?;
    /// # let (b, mut inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(2, "127.0.0.2:0".parse()?), &TlsConfig::load(dir.path(), 2)?)?;
    /// # a.add_peer(2, b.local_addr());
    /// # b.add_peer(1, a.local_addr());
    /// for i in 0..10u8 {
    ///     a.send_wait(2, vec![i]).await?;
    /// }
    /// assert_eq!(inbox.recv().await.unwrap(), (1, Inbound::Message(vec![0])));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send_wait(&self, to: NodeId, msg: M) -> Result<(), SendError> {
        self.queue_waiting(to, &msg, |p| &p.msg_queue).await
    }

    /// Queues a bulk item (e.g. a snapshot chunk) for `to` without waiting; like
    /// [`Transport::send`], a full queue drops and counts it.
    ///
    /// ```
    /// # use raft_net::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # certs::generate(dir.path(), &[1, 2])?;
    /// # let (a, mut a_inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(1, "127.0.0.1:0".parse()?), &TlsConfig::load(dir.path(), 1)?)?;
    /// # let (b, mut inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(2, "127.0.0.2:0".parse()?), &TlsConfig::load(dir.path(), 2)?)?;
    /// # a.add_peer(2, b.local_addr());
    /// # b.add_peer(1, a.local_addr());
    /// a.send_bulk(2, vec![7; 1000])?;
    /// assert_eq!(inbox.recv().await.unwrap(), (1, Inbound::Bulk(vec![7; 1000])));
    /// # Ok(())
    /// # }
    /// ```
    pub fn send_bulk(&self, to: NodeId, item: B) -> Result<(), SendError> {
        self.try_queue(to, &item, |p| &p.bulk_queue)
    }

    /// Queues a bulk item for `to`, waiting while the peer's bulk queue is full (for a
    /// snapshot sender that wants back-pressure rather than loss). Never affects the
    /// message lane.
    ///
    /// ```
    /// # use raft_net::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # certs::generate(dir.path(), &[1, 2])?;
    /// # let (a, mut a_inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(1, "127.0.0.1:0".parse()?), &TlsConfig::load(dir.path(), 1)?)?;
    /// # let (b, mut inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(2, "127.0.0.2:0".parse()?), &TlsConfig::load(dir.path(), 2)?)?;
    /// # a.add_peer(2, b.local_addr());
    /// # b.add_peer(1, a.local_addr());
    /// for chunk in 0..4u8 {
    ///     a.send_bulk_wait(2, vec![chunk; 64 * 1024]).await?;
    /// }
    /// assert_eq!(inbox.recv().await.unwrap(), (1, Inbound::Bulk(vec![0; 64 * 1024])));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn send_bulk_wait(&self, to: NodeId, item: B) -> Result<(), SendError> {
        self.queue_waiting(to, &item, |p| &p.bulk_queue).await
    }

    /// Encodes `item` onto one of `to`'s queues without waiting; a full queue drops and
    /// counts it.
    fn try_queue<T: Wire>(
        &self,
        to: NodeId,
        item: &T,
        lane: impl Fn(&Peer) -> &Arc<FrameQueue>,
    ) -> Result<(), SendError> {
        let peers = self.inner.peers();
        let peer = peers.get(&to).ok_or(SendError::UnknownPeer(to))?;
        let result = lane(peer).try_push(item);
        self.outcome(to, peer, result)
    }

    /// Encodes `item` onto one of `to`'s queues, waiting while it is full.
    async fn queue_waiting<T: Wire>(
        &self,
        to: NodeId,
        item: &T,
        lane: impl Fn(&Peer) -> &Arc<FrameQueue>,
    ) -> Result<(), SendError> {
        let queue = {
            let peers = self.inner.peers();
            let peer = peers.get(&to).ok_or(SendError::UnknownPeer(to))?;
            // Fast path, without cloning the queue handle.
            match lane(peer).try_push(item) {
                Err(QueueError::Full) => lane(peer).clone(),
                other => return self.outcome(to, peer, other),
            }
        };
        let result = queue.push(item).await;
        let peers = self.inner.peers();
        match peers.get(&to) {
            Some(peer) => self.outcome(to, peer, result),
            // Removed while waiting.
            None => Err(SendError::Closed),
        }
    }

    /// Counts a refused item and turns a queue's answer into the caller's.
    fn outcome(
        &self,
        to: NodeId,
        peer: &Peer,
        result: Result<(), QueueError>,
    ) -> Result<(), SendError> {
        match result {
            Ok(()) => Ok(()),
            Err(QueueError::Full) => {
                inc(&peer.counters.dropped, 1);
                Err(SendError::QueueFull(to))
            }
            Err(QueueError::Closed) => Err(SendError::Closed),
            Err(QueueError::Encode(reason)) => {
                inc(&peer.counters.oversized, 1);
                warn!(node = self.inner.settings.id, peer = to, %reason, "outbound message dropped");
                Err(SendError::TooLarge(to))
            }
        }
    }
}

impl<M, B> Transport<M, B> {
    /// This node's id.
    ///
    /// ```
    /// # use raft_net::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # certs::generate(dir.path(), &[1, 2])?;
    /// # let (a, mut a_inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(1, "127.0.0.1:0".parse()?), &TlsConfig::load(dir.path(), 1)?)?;
    /// # let (b, mut inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(2, "127.0.0.2:0".parse()?), &TlsConfig::load(dir.path(), 2)?)?;
    /// # a.add_peer(2, b.local_addr());
    /// # b.add_peer(1, a.local_addr());
    /// assert_eq!(a.id(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn id(&self) -> NodeId {
        self.inner.settings.id
    }

    /// The address the endpoint is bound to (useful after binding port 0).
    ///
    /// ```
    /// # use raft_net::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # certs::generate(dir.path(), &[1, 2])?;
    /// # let (a, mut a_inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(1, "127.0.0.1:0".parse()?), &TlsConfig::load(dir.path(), 1)?)?;
    /// # let (b, mut inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(2, "127.0.0.2:0".parse()?), &TlsConfig::load(dir.path(), 2)?)?;
    /// # a.add_peer(2, b.local_addr());
    /// # b.add_peer(1, a.local_addr());
    /// assert_eq!(b.local_addr().ip().to_string(), "127.0.0.2");
    /// assert_ne!(b.local_addr().port(), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.inner
            .endpoint
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Whether the outbound connection to `peer` is currently up.
    ///
    /// ```
    /// # use raft_net::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # certs::generate(dir.path(), &[1, 2])?;
    /// # let (a, mut a_inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(1, "127.0.0.1:0".parse()?), &TlsConfig::load(dir.path(), 1)?)?;
    /// # let (b, mut inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(2, "127.0.0.2:0".parse()?), &TlsConfig::load(dir.path(), 2)?)?;
    /// # a.add_peer(2, b.local_addr());
    /// # b.add_peer(1, a.local_addr());
    /// while !a.is_connected(2) {
    ///     tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    /// }
    /// assert!(!a.is_connected(7));
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_connected(&self, peer: NodeId) -> bool {
        let peers = self.inner.peers();
        peers
            .get(&peer)
            .is_some_and(|p| p.counters.connected.load(Ordering::Relaxed))
    }

    /// Counters of one peer (configured or heard from).
    ///
    /// ```
    /// # use raft_net::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # certs::generate(dir.path(), &[1, 2])?;
    /// # let (a, mut a_inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(1, "127.0.0.1:0".parse()?), &TlsConfig::load(dir.path(), 1)?)?;
    /// # let (b, mut inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(2, "127.0.0.2:0".parse()?), &TlsConfig::load(dir.path(), 2)?)?;
    /// # a.add_peer(2, b.local_addr());
    /// # b.add_peer(1, a.local_addr());
    /// a.send(2, vec![1, 2, 3])?;
    /// let _ = inbox.recv().await;
    /// let s = b.peer_stats(1).unwrap();
    /// assert_eq!(s.messages_received, 1);
    /// assert!(s.bytes_received > 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn peer_stats(&self, peer: NodeId) -> Option<PeerStats> {
        self.stats().peers.into_iter().find(|p| p.id == peer)
    }

    /// A snapshot of all counters.
    ///
    /// ```
    /// # use raft_net::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # certs::generate(dir.path(), &[1, 2])?;
    /// # let (a, mut a_inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(1, "127.0.0.1:0".parse()?), &TlsConfig::load(dir.path(), 1)?)?;
    /// # let (b, mut inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(2, "127.0.0.2:0".parse()?), &TlsConfig::load(dir.path(), 2)?)?;
    /// # a.add_peer(2, b.local_addr());
    /// # b.add_peer(1, a.local_addr());
    /// let stats = a.stats();
    /// assert_eq!(stats.peers.len(), 1);
    /// assert_eq!(stats.peers[0].id, 2);
    /// assert_eq!(stats.handshake_failures, 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn stats(&self) -> TransportStats {
        let addrs: HashMap<NodeId, SocketAddr> = {
            let peers = self.inner.peers();
            peers.iter().map(|(&id, p)| (id, p.addr)).collect()
        };
        let counters: Vec<(NodeId, Arc<PeerCounters>)> = {
            let map = self
                .inner
                .registry
                .peers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            map.iter().map(|(&id, c)| (id, c.clone())).collect()
        };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut peers: Vec<PeerStats> = counters
            .into_iter()
            .map(|(id, c)| PeerStats {
                id,
                addr: addrs.get(&id).copied(),
                connected: addrs.contains_key(&id) && c.connected.load(Ordering::Relaxed),
                bytes_sent: load(&c.bytes_sent),
                bytes_received: load(&c.bytes_received),
                messages_sent: load(&c.messages_sent),
                messages_received: load(&c.messages_received),
                bulk_sent: load(&c.bulk_sent),
                bulk_received: load(&c.bulk_received),
                dropped: load(&c.dropped),
                oversized: load(&c.oversized),
                rejected: load(&c.rejected),
                reconnects: load(&c.reconnects),
                connect_failures: load(&c.connect_failures),
            })
            .collect();
        peers.sort_by_key(|p| p.id);
        TransportStats {
            peers,
            handshake_failures: load(&self.inner.registry.handshake_failures),
            refused_connections: load(&self.inner.registry.refused_connections),
        }
    }

    /// Closes the endpoint (peers see an orderly close), stops all tasks and waits briefly
    /// for the close to reach the peers. Other clones of the transport stop working.
    ///
    /// ```
    /// # use raft_net::*;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = tempfile::tempdir()?;
    /// # certs::generate(dir.path(), &[1, 2])?;
    /// # let (a, mut a_inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(1, "127.0.0.1:0".parse()?), &TlsConfig::load(dir.path(), 1)?)?;
    /// # let (b, mut inbox) = Transport::<Vec<u8>>::start(TransportConfig::new(2, "127.0.0.2:0".parse()?), &TlsConfig::load(dir.path(), 2)?)?;
    /// # a.add_peer(2, b.local_addr());
    /// # b.add_peer(1, a.local_addr());
    /// a.shutdown().await;
    /// b.shutdown().await;
    /// // Once the transport is gone, its inbox ends.
    /// assert!(inbox.recv().await.is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(&self) {
        self.inner
            .endpoint
            .close(VarInt::from_u32(close_code::SHUTDOWN), b"shutdown");
        self.inner.accept_task.abort();
        {
            let peers = self.inner.peers();
            for peer in peers.values() {
                peer.stop();
                peer.counters.connected.store(false, Ordering::Relaxed);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
        info!(node = self.inner.settings.id, "peer transport shut down");
    }
}
