//! The sending side: one task per peer that dials it, keeps the connection, and writes
//! the message and bulk lanes from the peer's queues.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::VarInt;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, info};

use crate::certs::node_server_name;
use crate::frame::{self, Lane};
use crate::frame_queue::FrameQueue;
use crate::stats::{inc, PeerCounters};
use crate::transport::close_code;
use crate::NodeId;

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

impl Outbound {
    pub(crate) async fn run(self, msg_queue: Arc<FrameQueue>, bulk_queue: Arc<FrameQueue>) {
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
                end = self.lane(&conn, Lane::Message, &msg_queue) => end,
                end = self.lane(&conn, Lane::Bulk, &bulk_queue) => end,
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

    /// Opens a lane's stream and writes the queue's frames to it until the queue closes
    /// or the stream fails. Everything queued is taken at once (one lock, one wake-up)
    /// and written as one chunk.
    async fn lane(&self, conn: &quinn::Connection, lane: Lane, queue: &FrameQueue) -> LaneEnd {
        let failed = |e: &dyn std::fmt::Display| LaneEnd::Failed(format!("{lane:?} lane: {e}"));
        let mut send = match conn.open_uni().await {
            Ok(s) => s,
            Err(e) => return failed(&e),
        };
        let _ = send.set_priority(if lane == Lane::Message { 1 } else { 0 });
        if let Err(e) = send.write_all(&frame::header(lane, self.settings.id)).await {
            return failed(&e);
        }
        let sent_items = match lane {
            Lane::Message => &self.counters.messages_sent,
            Lane::Bulk => &self.counters.bulk_sent,
        };
        loop {
            if !queue.ready().await {
                let _ = send.finish();
                return LaneEnd::QueueClosed;
            }
            // Let other ready tasks (a sender in the middle of a burst among them) run
            // first, so the take below gets more frames per write. When nothing else is
            // ready this returns at once.
            tokio::task::yield_now().await;
            let (chunk, frames) = queue.take_all();
            let len = chunk.len() as u64;
            if let Err(e) = send.write_chunk(chunk).await {
                return failed(&e);
            }
            inc(sent_items, frames as u64);
            inc(&self.counters.bytes_sent, len);
            if lane == Lane::Bulk {
                // Both lanes run in this task; give the message lane its turn after each
                // bulk write even when the stream had room for all of it at once.
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
