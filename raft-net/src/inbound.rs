//! The accepting side: handshakes, stream headers, identity checks and frame decoding.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use quinn::VarInt;
use rustls::pki_types::CertificateDer;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::frame::{self, FrameReader, Lane, ReadError, HEADER_LEN};
use crate::outbound::Settings;
use crate::queue::Producer;
use crate::stats::{inc, PeerCounters, Registry};
use crate::tls::{cert_names_node, peer_certificate};
use crate::transport::close_code;
use crate::{NodeId, Wire};

/// What the accepting tasks share.
pub(crate) struct AcceptCtx<M, B> {
    pub(crate) settings: Arc<Settings>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) msg_tx: Producer<(NodeId, M)>,
    pub(crate) bulk_tx: Producer<(NodeId, B)>,
}

pub(crate) async fn accept_loop<M: Wire, B: Wire>(
    endpoint: quinn::Endpoint,
    ctx: Arc<AcceptCtx<M, B>>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { return };
                conns.spawn(serve_connection(incoming, ctx.clone()));
            }
            Some(_) = conns.join_next() => {}
        }
    }
}

/// Closes an inbound connection for a violation, with a logged reason.
fn refuse(conn: &quinn::Connection, peer: Option<NodeId>, code: u32, reason: &str) {
    warn!(remote = %conn.remote_address(), peer = ?peer, code, %reason, "closing inbound peer connection");
    let mut bytes = reason.as_bytes();
    // Keep the close reason within one packet.
    bytes = &bytes[..bytes.len().min(256)];
    conn.close(VarInt::from_u32(code), bytes);
}

async fn serve_connection<M: Wire, B: Wire>(incoming: quinn::Incoming, ctx: Arc<AcceptCtx<M, B>>) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            inc(&ctx.registry.handshake_failures, 1);
            warn!(node = ctx.settings.id, %remote, error = %e, "refused peer: handshake failed");
            return;
        }
    };
    let Some(cert) = peer_certificate(&conn) else {
        // The verifier requires a client certificate, so this should not happen.
        inc(&ctx.registry.handshake_failures, 1);
        refuse(
            &conn,
            None,
            close_code::NO_CERTIFICATE,
            "no client certificate",
        );
        return;
    };
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            stream = conn.accept_uni() => match stream {
                Ok(recv) => {
                    streams.spawn(read_stream(conn.clone(), recv, cert.clone(), ctx.clone()));
                }
                Err(e) => {
                    debug!(node = ctx.settings.id, %remote, reason = %e, "inbound connection ended");
                    return;
                }
            },
            Some(_) = streams.join_next() => {}
        }
    }
}

async fn read_stream<M: Wire, B: Wire>(
    conn: quinn::Connection,
    mut recv: quinn::RecvStream,
    cert: CertificateDer<'static>,
    ctx: Arc<AcceptCtx<M, B>>,
) {
    let mut reader = FrameReader::new(ctx.settings.max_frame);
    let mut header = [0u8; HEADER_LEN];
    let refused = |code: u32, reason: &str| {
        inc(&ctx.registry.refused_connections, 1);
        refuse(&conn, None, code, reason);
    };
    match tokio::time::timeout(
        ctx.settings.header_timeout,
        reader.read_exact_into(&mut recv, &mut header),
    )
    .await
    {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return,
        Ok(Err(ReadError::Stream(e))) => {
            debug!(node = ctx.settings.id, reason = %e, "inbound stream ended before its header");
            return;
        }
        Ok(Err(_)) => return refused(close_code::PROTOCOL, "stream ended inside its header"),
        Err(_) => return refused(close_code::PROTOCOL, "no stream header in time"),
    }
    let (lane, from) = match frame::parse_header(&header) {
        Ok(h) => h,
        Err(reason) => return refused(close_code::PROTOCOL, &reason),
    };
    if !cert_names_node(&cert, from) {
        return refused(
            close_code::IMPERSONATION,
            &format!("stream claims node {from} but the certificate does not name it"),
        );
    }
    let counters = ctx.registry.peer(from);
    let result = match lane {
        Lane::Message => {
            read_frames(
                &mut reader,
                &mut recv,
                from,
                &counters,
                &counters.messages_received,
                &ctx.msg_tx,
            )
            .await
        }
        Lane::Bulk => {
            read_frames(
                &mut reader,
                &mut recv,
                from,
                &counters,
                &counters.bulk_received,
                &ctx.bulk_tx,
            )
            .await
        }
    };
    if let Err((code, reason)) = result {
        inc(&counters.rejected, 1);
        refuse(&conn, Some(from), code, &reason);
    }
}

/// Largest run of already-buffered frames handed to the inbox as one batch.
const INBOX_BATCH: usize = 256;

/// Reads frames until the stream ends; `Err((code, reason))` on a violation. Frames that
/// arrived together are decoded together and handed to the inbox as one batch (one lock,
/// at most one wake-up of the consumer). A violation still delivers the frames before it.
async fn read_frames<T: Wire>(
    reader: &mut FrameReader,
    recv: &mut quinn::RecvStream,
    from: NodeId,
    counters: &PeerCounters,
    received: &AtomicU64,
    tx: &Producer<(NodeId, T)>,
) -> Result<(), (u32, String)> {
    let mut batch = Vec::with_capacity(INBOX_BATCH);
    loop {
        let mut bytes = 0;
        let mut outcome = match reader.next_frame(recv).await {
            Ok(Some(payload)) => accept_frame(payload, from, &mut batch, &mut bytes),
            Ok(None) => Err(None),
            Err(e) => Err(read_failure(e, from)),
        };
        while outcome.is_ok() && batch.len() < INBOX_BATCH {
            outcome = match reader.arrived_frame(recv) {
                Ok(Some(payload)) => accept_frame(payload, from, &mut batch, &mut bytes),
                Ok(None) => break,
                Err(e) => Err(read_failure(e, from)),
            };
        }
        inc(&counters.bytes_received, bytes);
        inc(received, batch.len() as u64);
        if !tx.push_batch(&mut batch).await {
            // The inbox is gone: the transport is shutting down.
            return Ok(());
        }
        match outcome {
            Ok(()) => {}
            Err(None) => return Ok(()),
            Err(Some(violation)) => return Err(violation),
        }
    }
}

/// Why reading a stream stopped: `None` for its end, `Some((close code, reason))` for a
/// violation by the peer.
type Stop = Option<(u32, String)>;

/// Decodes one frame's payload from the verified peer `from` into `batch`.
fn accept_frame<T: Wire>(
    payload: &[u8],
    from: NodeId,
    batch: &mut Vec<(NodeId, T)>,
    bytes: &mut u64,
) -> Result<(), Stop> {
    let msg: T = frame::decode(payload).map_err(|reason| Some((close_code::MALFORMED, reason)))?;
    if let Some(claimed) = msg.claimed_sender() {
        if claimed != from {
            return Err(Some((
                close_code::IMPERSONATION,
                format!("message claims sender {claimed} on a connection verified as node {from}"),
            )));
        }
    }
    *bytes += (payload.len() + frame::PREFIX_LEN) as u64;
    batch.push((from, msg));
    Ok(())
}

fn read_failure(e: ReadError, from: NodeId) -> Stop {
    match e {
        ReadError::TooLarge(len) => Some((
            close_code::FRAME_TOO_LARGE,
            format!("frame of {len} bytes exceeds the limit"),
        )),
        ReadError::Truncated => Some((close_code::PROTOCOL, "stream ended inside a frame".into())),
        ReadError::Stream(e) => {
            debug!(peer = from, reason = %e, "inbound stream ended");
            None
        }
    }
}
