//! The sending side: one task per peer that dials it, keeps the connection, and writes
//! the message and bulk lanes from the peer's queues.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::VarInt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, info, warn};

use crate::certs::node_server_name;
use crate::frame::{self, Lane};
use crate::queue::Consumer;
use crate::stats::{inc, PeerCounters};
use crate::transport::close_code;
use crate::{NodeId, Wire};

/// Settings the tasks need, shared read-only.
pub(crate) struct Settings {
    pub(crate) id: NodeId,
    pub(crate) max_frame: usize,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) header_timeout: Duration,
}

/// The task sending to one peer: dials, reconnects, and writes both lanes.
pub(crate) struct Outbound {
    pub(crate) settings: Arc<Settings>,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) client_config: quinn::ClientConfig,
    pub(crate) peer: NodeId,
    pub(crate) addr: SocketAddr,
    pub(crate) counters: Arc<PeerCounters>,
}

/// Why a lane writer stopped.
enum LaneEnd {
    /// The queue's sender is gone (peer removed or transport dropped): stop for good.
    QueueClosed,
    /// The connection or stream failed: reconnect.
    Failed(String),
}

/// Largest batch of frames gathered into one stream write.
const BATCH_BYTES: usize = 64 * 1024;

/// Batches at least this large are given to quinn without copying.
const HAND_OVER_BYTES: usize = 16 * 1024;

impl Outbound {
    pub(crate) async fn run<M: Wire, B: Wire>(
        self,
        mut msg_rx: Consumer<M>,
        mut bulk_rx: Consumer<B>,
    ) {
        // Items taken from a queue but not yet written; they survive a reconnect.
        let mut msg_pending = VecDeque::new();
        let mut bulk_pending = VecDeque::new();
        let mut rng = SmallRng::from_entropy();
        let mut backoff = self.settings.backoff_min;
        let mut ever_connected = false;
        let server_name = node_server_name(self.peer);
        loop {
            let conn = match self.connect(&server_name).await {
                Ok(conn) => conn,
                Err(reason) => {
                    inc(&self.counters.connect_failures, 1);
                    let delay = jitter(&mut rng, backoff);
                    debug!(node = self.settings.id, peer = self.peer, addr = %self.addr, %reason, ?delay, "connect failed; retrying");
                    tokio::time::sleep(delay).await;
                    backoff = (backoff * 2).min(self.settings.backoff_max);
                    continue;
                }
            };
            if ever_connected {
                inc(&self.counters.reconnects, 1);
            }
            ever_connected = true;
            self.counters.connected.store(true, Ordering::Relaxed);
            info!(node = self.settings.id, peer = self.peer, addr = %self.addr, "connected to peer");
            let since = Instant::now();
            let end = tokio::select! {
                end = self.lane(&conn, Lane::Message, &mut msg_rx, &mut msg_pending) => end,
                end = self.lane(&conn, Lane::Bulk, &mut bulk_rx, &mut bulk_pending) => end,
                e = conn.closed() => LaneEnd::Failed(e.to_string()),
            };
            self.counters.connected.store(false, Ordering::Relaxed);
            conn.close(VarInt::from_u32(close_code::SHUTDOWN), b"reconnect");
            match end {
                LaneEnd::QueueClosed => return,
                LaneEnd::Failed(reason) => {
                    info!(node = self.settings.id, peer = self.peer, %reason, "connection to peer lost; reconnecting");
                }
            }
            if since.elapsed() >= self.settings.backoff_max {
                backoff = self.settings.backoff_min;
            }
            tokio::time::sleep(jitter(&mut rng, backoff)).await;
            backoff = (backoff * 2).min(self.settings.backoff_max);
        }
    }

    async fn connect(&self, server_name: &str) -> Result<quinn::Connection, String> {
        let connecting = self
            .endpoint
            .connect_with(self.client_config.clone(), self.addr, server_name)
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(self.settings.connect_timeout, connecting).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("handshake timed out".into()),
        }
    }

    /// Opens a lane's stream and writes queued items to it in batches until the queue
    /// closes or the stream fails. Everything waiting is taken from the queue at once
    /// (one lock, one wake-up) and written in batches of up to [`BATCH_BYTES`].
    async fn lane<T: Wire>(
        &self,
        conn: &quinn::Connection,
        lane: Lane,
        rx: &mut Consumer<T>,
        pending: &mut VecDeque<T>,
    ) -> LaneEnd {
        let failed = |e: &dyn std::fmt::Display| LaneEnd::Failed(format!("{lane:?} lane: {e}"));
        let mut send = match conn.open_uni().await {
            Ok(s) => s,
            Err(e) => return failed(&e),
        };
        let _ = send.set_priority(if lane == Lane::Message { 1 } else { 0 });
        if let Err(e) = send.write_all(&frame::header(lane, self.settings.id)).await {
            return failed(&e);
        }
        let (sent_items, max_batch) = match lane {
            Lane::Message => (&self.counters.messages_sent, BATCH_BYTES),
            // Bulk items are large; write each on its own so the lane yields between them.
            Lane::Bulk => (&self.counters.bulk_sent, 1),
        };
        let mut buf = Vec::with_capacity(BATCH_BYTES + 1024);
        loop {
            if pending.is_empty() {
                if !rx.ready().await {
                    let _ = send.finish();
                    return LaneEnd::QueueClosed;
                }
                rx.take_all(pending);
            }
            buf.clear();
            let mut count = 0u64;
            while buf.len() < max_batch {
                let Some(item) = pending.pop_front() else {
                    break;
                };
                match frame::encode_into(&item, &mut buf, self.settings.max_frame) {
                    Ok(_) => count += 1,
                    Err(reason) => {
                        inc(&self.counters.oversized, 1);
                        warn!(node = self.settings.id, peer = self.peer, %reason, "outbound message dropped");
                    }
                }
            }
            if buf.is_empty() {
                continue;
            }
            let len = buf.len() as u64;
            // quinn keeps what it is given until the peer acknowledges it. A large batch
            // is handed over as is (no copy) and a new buffer started; a small one is
            // copied so that a heartbeat does not pin a 64 KiB buffer.
            let chunk = if buf.len() >= HAND_OVER_BYTES {
                Bytes::from(std::mem::replace(
                    &mut buf,
                    Vec::with_capacity(BATCH_BYTES + 1024),
                ))
            } else {
                Bytes::copy_from_slice(&buf)
            };
            if let Err(e) = send.write_chunk(chunk).await {
                return failed(&e);
            }
            inc(sent_items, count);
            inc(&self.counters.bytes_sent, len);
            if lane == Lane::Bulk {
                // Both lanes run in this task; while bulk items are queued and the stream
                // has room, every await above is ready at once, so give the message lane
                // its turn after each item.
                tokio::task::yield_now().await;
            }
        }
    }
}

/// A delay in `[d/2, d]`.
fn jitter(rng: &mut SmallRng, d: Duration) -> Duration {
    let half = d / 2;
    let extra = rng.gen_range(0..=half.as_micros().max(1) as u64);
    half + Duration::from_micros(extra)
}
