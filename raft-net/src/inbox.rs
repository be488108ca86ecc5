//! The receiving side of a transport.

use crate::queue::Consumer;
use crate::NodeId;

/// What arrived from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound<M, B = M> {
    /// A message from the message lane.
    Message(M),
    /// An item from the bulk lane (e.g. a snapshot chunk).
    Bulk(B),
}

/// Receiving side of a [`Transport`]: inbound messages and bulk items with the verified
/// id of the peer that sent them. Messages are preferred over bulk items when both wait.
pub struct Inbox<M, B = M> {
    msgs: Consumer<(NodeId, M)>,
    bulk: Consumer<(NodeId, B)>,
}

impl<M, B> Inbox<M, B> {
    pub(crate) fn new(msgs: Consumer<(NodeId, M)>, bulk: Consumer<(NodeId, B)>) -> Self {
        Inbox { msgs, bulk }
    }

    /// Waits until an item waits in either lane; `false` once both lanes are closed and
    /// empty.
    async fn ready(&mut self) -> bool {
        loop {
            let (msgs_open, bulk_open) = (!self.msgs.is_closed(), !self.bulk.is_closed());
            tokio::select! {
                biased;
                true = self.msgs.ready(), if msgs_open => return true,
                true = self.bulk.ready(), if bulk_open => return true,
                else => {
                    // Both closed, or one closed and the other just closed too: a last
                    // look for items queued before the close.
                    if self.msgs.is_closed() && self.bulk.is_closed() {
                        return self.msgs.ready().await || self.bulk.ready().await;
                    }
                }
            }
        }
    }
}

impl<M, B> Inbox<M, B> {
    /// Waits for the next inbound item; `None` once the transport is gone.
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
    /// let sent = a.send(2, vec![1]);
    /// assert!(sent.is_ok());
    /// let (from, item) = inbox.recv().await.unwrap();
    /// assert_eq!((from, item), (1, Inbound::Message(vec![1])));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn recv(&mut self) -> Option<(NodeId, Inbound<M, B>)> {
        loop {
            if let Some(item) = self.try_recv() {
                return Some(item);
            }
            if !self.ready().await {
                return None;
            }
        }
    }

    /// Waits for at least one inbound item, then moves up to `limit` waiting items into
    /// `out` (messages first, then bulk items) and returns how many; 0 once the transport
    /// is gone. Draining in batches is what a driver's event loop wants: one wake-up per
    /// batch instead of one per message.
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
    /// a.send(2, vec![1])?;
    /// a.send(2, vec![2])?;
    /// let mut batch = Vec::new();
    /// let mut n = 0;
    /// while n < 2 {
    ///     n += inbox.recv_many(&mut batch, 64).await;
    /// }
    /// assert_eq!(batch[1], (1, Inbound::Message(vec![2])));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn recv_many(
        &mut self,
        out: &mut Vec<(NodeId, Inbound<M, B>)>,
        limit: usize,
    ) -> usize {
        loop {
            let mut n = self
                .msgs
                .try_drain(limit, |(from, m)| out.push((from, Inbound::Message(m))));
            n += self
                .bulk
                .try_drain(limit - n, |(from, b)| out.push((from, Inbound::Bulk(b))));
            if n > 0 || limit == 0 {
                return n;
            }
            if !self.ready().await {
                return 0;
            }
        }
    }

    /// Returns an inbound item if one is waiting, without blocking.
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
    /// assert!(inbox.try_recv().is_none());
    /// a.send(2, vec![1])?;
    /// let _ = inbox.recv().await;
    /// assert!(inbox.try_recv().is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn try_recv(&mut self) -> Option<(NodeId, Inbound<M, B>)> {
        if let Some((from, m)) = self.msgs.try_pop() {
            return Some((from, Inbound::Message(m)));
        }
        self.bulk
            .try_pop()
            .map(|(from, b)| (from, Inbound::Bulk(b)))
    }
}
