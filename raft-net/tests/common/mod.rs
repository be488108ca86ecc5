//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raft_net::{certs, Envelope, Inbound, Inbox, NodeId, TlsConfig, Transport, TransportConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// Test message: claims its sender, carries a sequence number and a send timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Msg {
    pub from: NodeId,
    pub seq: u64,
    /// Nanoseconds since the test's epoch at send time.
    pub sent_ns: u64,
    pub pad: Vec<u8>,
}

impl Envelope for Msg {
    fn claimed_sender(&self) -> Option<NodeId> {
        Some(self.from)
    }
}

/// Bulk item: a snapshot chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub seq: u64,
    pub data: Vec<u8>,
}

impl Envelope for Chunk {}

pub type Net = Transport<Msg, Chunk>;
pub type NetInbox = Inbox<Msg, Chunk>;

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,quinn=warn,quinn_proto=warn,rustls=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn make_certs(ids: &[NodeId]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    certs::generate(dir.path(), ids).unwrap();
    dir
}

/// Test settings: fast reconnects and short timeouts.
pub fn config(id: NodeId, listen: SocketAddr) -> TransportConfig {
    let mut cfg = TransportConfig::new(id, listen);
    cfg.backoff_min = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_millis(200);
    cfg.connect_timeout = Duration::from_secs(1);
    cfg.idle_timeout = Duration::from_secs(3);
    cfg.keep_alive = Duration::from_millis(500);
    cfg.header_timeout = Duration::from_secs(2);
    cfg.max_frame_bytes = 1 << 20;
    cfg
}

pub fn start_with(cfg: TransportConfig, dir: &Path) -> (Net, NetInbox) {
    let tls = TlsConfig::load(dir, cfg.id).unwrap();
    Transport::start(cfg, &tls).unwrap()
}

/// Starts node `id` on `127.0.0.<id>:0`.
pub fn start(id: NodeId, dir: &Path) -> (Net, NetInbox) {
    start_with(config(id, format!("127.0.0.{id}:0").parse().unwrap()), dir)
}

/// Makes every node dial every other.
pub fn link(nodes: &[&Net]) {
    for a in nodes {
        for b in nodes {
            if a.id() != b.id() {
                a.add_peer(b.id(), b.local_addr());
            }
        }
    }
}

pub fn msg(from: NodeId, seq: u64, epoch: Instant) -> Msg {
    Msg {
        from,
        seq,
        sent_ns: epoch.elapsed().as_nanos() as u64,
        pad: vec![seq as u8; 16],
    }
}

pub async fn recv_within(
    inbox: &mut NetInbox,
    limit: Duration,
) -> Option<(NodeId, Inbound<Msg, Chunk>)> {
    tokio::time::timeout(limit, inbox.recv())
        .await
        .ok()
        .flatten()
}

/// Waits until `cond` holds, polling; panics with `what` after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks that `to` still serves a good peer: a fresh node `good` sends it a message
/// and it arrives.
pub async fn assert_serves_good_peer(to: &Net, inbox: &mut NetInbox, good: &Net) {
    good.add_peer(to.id(), to.local_addr());
    let epoch = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 1_000_000;
    loop {
        assert!(
            Instant::now() < deadline,
            "good peer's message never arrived"
        );
        let _ = good.send(to.id(), msg(good.id(), seq, epoch));
        seq += 1;
        if let Some((from, Inbound::Message(m))) =
            recv_within(inbox, Duration::from_millis(200)).await
        {
            if from == good.id() {
                assert_eq!(m.from, good.id());
                return;
            }
        }
    }
}

/// A raw QUIC client endpoint with its own TLS settings, for attacks the transport
/// itself would never make.
pub struct RawClient {
    pub endpoint: quinn::Endpoint,
}

pub fn read_cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

pub fn read_key(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).unwrap()
}

impl RawClient {
    /// Trusts `ca` for the server; presents `client` (cert, key) if given.
    pub fn new(
        bind: &str,
        ca: CertificateDer<'static>,
        client: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
    ) -> RawClient {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots);
        let mut tls = match client {
            Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
            None => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = vec![b"raft-net/1".to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client(bind.parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        RawClient { endpoint }
    }

    /// Connects to node `id` at `addr`; the handshake may still be refused afterwards
    /// by the server (TLS 1.3 client authentication completes after the client's side).
    pub async fn connect(&self, addr: SocketAddr, id: NodeId) -> Result<quinn::Connection, String> {
        let connecting = self
            .endpoint
            .connect(addr, &certs::node_server_name(id))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(5), connecting).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("handshake timed out".into()),
        }
    }
}

/// Stream header as the transport writes it (kept independent of the crate's code so
/// the test pins the wire format).
pub fn header(lane: u8, from: NodeId) -> Vec<u8> {
    let mut h = b"RNET".to_vec();
    h.push(1);
    h.push(lane);
    h.extend_from_slice(&from.to_le_bytes());
    h
}

/// Encodes one frame the way the transport does.
pub fn frame(m: &Msg) -> Vec<u8> {
    let body = postcard::to_stdvec(m).unwrap();
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// Waits for `conn` to be closed and returns the application close code, if any.
pub async fn close_code(conn: &quinn::Connection) -> Option<u32> {
    match tokio::time::timeout(Duration::from_secs(5), conn.closed()).await {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => {
            Some(u32::try_from(close.error_code.into_inner()).unwrap())
        }
        Ok(other) => panic!("connection closed without an application code: {other}"),
        Err(_) => panic!("connection was not closed"),
    }
}
