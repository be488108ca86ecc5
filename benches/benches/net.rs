//! `raft-net` message throughput against a raw quinn stream on loopback.
//!
//! Two endpoints on 127.0.0.1 and 127.0.0.2 with the cluster's mutual TLS. Groups:
//!
//! - `net_msg_128B`: `raft_core::Message::Append` of one small entry, 128 bytes encoded,
//!   one iteration = one message.
//! - `net_append_64KiB`: `raft_core::Message::Append` carrying 64 entries of 1 KiB,
//!   one iteration = one message.
//!
//! In each group `transport` goes through `Transport::send_wait` to the peer's
//! `Inbox` (encode, queue, write, read, decode, deliver); each message is cloned first,
//! as a caller hands over an owned message. `raw_quinn` writes the same frames (encoded
//! once beforehand) to one quinn unidirectional stream in 64 KiB writes and reads them
//! back as chunks without decoding: the best one could do with quinn and the same bytes.
//! `raw_quinn_codec` is that stream plus the codec: it clones and encodes every message
//! and decodes every frame, the least any postcard-over-a-stream pipe must do.
//! `postcard_codec_only` is a diagnostic: encoding and decoding the message once on one
//! thread, no I/O. After the criterion groups, paired rounds run the three back to back
//! (order rotating) and print the median throughput ratios transport / raw and
//! transport / (raw + codec), the figures the README quotes.
//!
//! `--features mimalloc` runs it on mimalloc instead of the system allocator.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use raft_core::{Entry, EntryId, EntryKind, Message, MessageBody};
use raft_net::{certs, Inbox, TlsConfig, Transport, TransportConfig, Wire};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::runtime::Runtime;

/// One side of a comparison: a running transport pair, or a raw quinn stream.
struct Pair<M: Wire> {
    a: Transport<M>,
    b_inbox: Inbox<M>,
    raw_send: Option<quinn::SendStream>,
    raw_recv: quinn::RecvStream,
    /// Frame as the transport writes it (length prefix + postcard).
    frame: Vec<u8>,
    msg: M,
    // Kept alive for the duration of the bench.
    _b: Transport<M>,
    _raw_endpoints: (quinn::Endpoint, quinn::Endpoint),
    _raw_conn: (quinn::Connection, quinn::Connection),
    _dir: tempfile::TempDir,
}

fn tls_configs(dir: &std::path::Path) -> (quinn::ServerConfig, quinn::ClientConfig) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = CertificateDer::from_pem_file(dir.join("ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let roots = Arc::new(roots);
    let cert = |id: u64| CertificateDer::from_pem_file(dir.join(format!("node-{id}.crt"))).unwrap();
    let key = |id: u64| PrivateKeyDer::from_pem_file(dir.join(format!("node-{id}.key"))).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![cert(2)], key(2))
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![cert(1)], key(1))
        .unwrap();
    let server = quinn::crypto::rustls::QuicServerConfig::try_from(server).unwrap();
    let client = quinn::crypto::rustls::QuicClientConfig::try_from(client).unwrap();
    (
        quinn::ServerConfig::with_crypto(Arc::new(server)),
        quinn::ClientConfig::new(Arc::new(client)),
    )
}

fn setup<M: Wire + Clone>(rt: &Runtime, msg: M) -> Pair<M> {
    let dir = tempfile::tempdir().unwrap();
    certs::generate(dir.path(), &[1, 2]).unwrap();
    rt.block_on(async {
        let cfg = |id: u64| TransportConfig::new(id, format!("127.0.0.{id}:0").parse().unwrap());
        let (a, _a_inbox) =
            Transport::<M>::start(cfg(1), &TlsConfig::load(dir.path(), 1).unwrap()).unwrap();
        let (b, b_inbox) =
            Transport::<M>::start(cfg(2), &TlsConfig::load(dir.path(), 2).unwrap()).unwrap();
        a.add_peer(2, b.local_addr());
        b.add_peer(1, a.local_addr());
        while !a.is_connected(2) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let (server_cfg, client_cfg) = tls_configs(dir.path());
        let server = quinn::Endpoint::server(server_cfg, "127.0.0.2:0".parse().unwrap()).unwrap();
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        client.set_default_client_config(client_cfg);
        let server_addr: SocketAddr = server.local_addr().unwrap();
        let accept = tokio::spawn({
            let server = server.clone();
            async move { server.accept().await.unwrap().await.unwrap() }
        });
        let conn = client
            .connect(server_addr, "node-2.raft")
            .unwrap()
            .await
            .unwrap();
        let mut raw_send = conn.open_uni().await.unwrap();
        raw_send.write_all(&[0u8]).await.unwrap(); // makes the stream visible to the peer
        let server_conn = accept.await.unwrap();
        let mut raw_recv = server_conn.accept_uni().await.unwrap();
        let mut one = [0u8; 1];
        raw_recv.read_exact(&mut one).await.unwrap();

        let body = postcard::to_stdvec(&msg).unwrap();
        let mut frame = (body.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&body);
        Pair {
            a,
            b_inbox,
            raw_send: Some(raw_send),
            raw_recv,
            frame,
            msg,
            _b: b,
            _raw_endpoints: (server, client),
            _raw_conn: (conn, server_conn),
            _dir: dir,
        }
    })
}

/// Sends `n` messages through the transport and waits until all arrived.
async fn run_transport<M: Wire + Clone>(p: &mut Pair<M>, n: u64) -> Duration {
    let start = Instant::now();
    let a = p.a.clone();
    let msg = p.msg.clone();
    let sender = tokio::spawn(async move {
        for _ in 0..n {
            a.send_wait(2, msg.clone()).await.unwrap();
        }
    });
    // Drained in batches, as a driver's event loop does.
    let mut got = 0;
    let mut batch = Vec::with_capacity(1024);
    while got < n {
        let k = p.b_inbox.recv_many(&mut batch, 1024).await;
        assert!(k > 0, "transport closed");
        got += k as u64;
        black_box(&batch);
        batch.clear();
    }
    let elapsed = start.elapsed();
    sender.await.unwrap();
    elapsed
}

/// Calls `frame` `n` times to append one frame each to a buffer, writing the buffer to
/// `send` whenever it holds 64 KiB, then the rest; hands the stream back at the end.
fn spawn_writer(
    mut send: quinn::SendStream,
    n: u64,
    mut frame: impl FnMut(&mut Vec<u8>) + Send + 'static,
) -> tokio::task::JoinHandle<quinn::SendStream> {
    tokio::spawn(async move {
        let mut buf = Vec::with_capacity(128 * 1024);
        for _ in 0..n {
            frame(&mut buf);
            if buf.len() >= 64 * 1024 {
                send.write_all(&buf).await.unwrap();
                buf.clear();
            }
        }
        if !buf.is_empty() {
            send.write_all(&buf).await.unwrap();
        }
        send
    })
}

/// Writes `n` frames to the raw stream in 64 KiB writes and reads them back.
async fn run_raw<M: Wire>(p: &mut Pair<M>, n: u64) -> Duration {
    let total = p.frame.len() as u64 * n;
    let start = Instant::now();
    // The stream is moved into the writer task and handed back.
    let send = p.raw_send.take().expect("raw stream");
    let frame = p.frame.clone();
    let writer = spawn_writer(send, n, move |buf| buf.extend_from_slice(&frame));
    let mut got = 0u64;
    while got < total {
        let chunk = p
            .raw_recv
            .read_chunk(usize::MAX, true)
            .await
            .unwrap()
            .unwrap();
        got += black_box(chunk.bytes).len() as u64;
    }
    let elapsed = start.elapsed();
    p.raw_send = Some(writer.await.unwrap());
    elapsed
}

/// The same raw stream, but the writer encodes every message (cloned first, as the
/// transport's caller does) and the reader decodes every frame: the least any
/// postcard-over-one-stream pipe must do. The gap between it and `run_raw` is the
/// codec's; the gap between `run_transport` and it is the transport's own.
async fn run_raw_codec<M: Wire + Clone>(p: &mut Pair<M>, n: u64) -> Duration {
    let start = Instant::now();
    let send = p.raw_send.take().expect("raw stream");
    let msg = p.msg.clone();
    let writer = spawn_writer(send, n, move |buf| {
        let m = msg.clone();
        let at = buf.len();
        buf.extend_from_slice(&[0u8; 4]);
        *buf = postcard::to_extend(&m, std::mem::take(buf)).unwrap();
        let len = (buf.len() - at - 4) as u32;
        buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    });
    let mut got = 0u64;
    let mut pending: Vec<u8> = Vec::with_capacity(128 * 1024);
    while got < n {
        let chunk = p
            .raw_recv
            .read_chunk(usize::MAX, true)
            .await
            .unwrap()
            .unwrap();
        pending.extend_from_slice(&chunk.bytes);
        let mut at = 0;
        while pending.len() - at >= 4 {
            let len = u32::from_le_bytes(pending[at..at + 4].try_into().unwrap()) as usize;
            if pending.len() - at - 4 < len {
                break;
            }
            let m: M = postcard::from_bytes(&pending[at + 4..at + 4 + len]).unwrap();
            black_box(m);
            at += 4 + len;
            got += 1;
        }
        pending.drain(..at);
    }
    let elapsed = start.elapsed();
    p.raw_send = Some(writer.await.unwrap());
    elapsed
}

/// A Raft message of exactly 128 bytes on the wire after its length prefix: an append
/// of one small entry, the kind a leader sends per client write at low batching.
fn msg_128() -> Message {
    let mut data_len = 0;
    loop {
        let msg = append(1, data_len);
        let len = postcard::to_stdvec(&msg).unwrap().len();
        match len.cmp(&128) {
            std::cmp::Ordering::Equal => return msg,
            std::cmp::Ordering::Less => data_len += 1,
            std::cmp::Ordering::Greater => panic!("no entry size gives 128 bytes"),
        }
    }
}

fn append_64k() -> Message {
    append(64, 1024)
}

/// An append of `n` entries of `size` bytes each.
fn append(n: u64, size: usize) -> Message {
    let entries = (0..n)
        .map(|i| Entry {
            index: 1000 + i,
            term: 7,
            kind: EntryKind::Normal,
            data: vec![i as u8; size].into(),
        })
        .collect();
    Message {
        from: 1,
        to: 2,
        term: 7,
        body: MessageBody::Append {
            prev: EntryId {
                index: 999,
                term: 7,
            },
            entries,
            leader_commit: 990,
            tag: 1,
        },
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn group<M: Wire + Clone>(c: &mut Criterion, name: &str, msg: M, rounds_n: u64) {
    let rt = runtime();
    let mut pair = setup(&rt, msg);
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(pair.frame.len() as u64));
    g.bench_function("transport", |b| {
        b.iter_custom(|iters| rt.block_on(run_transport(&mut pair, iters)))
    });
    g.bench_function("raw_quinn", |b| {
        b.iter_custom(|iters| rt.block_on(run_raw(&mut pair, iters)))
    });
    g.bench_function("raw_quinn_codec", |b| {
        b.iter_custom(|iters| rt.block_on(run_raw_codec(&mut pair, iters)))
    });
    // Diagnostic: postcard encode + decode of the message alone, on one thread (the
    // transport does both, on the two ends; raw quinn does neither).
    let codec_msg = pair.msg.clone();
    g.bench_function("postcard_codec_only", |b| {
        b.iter(|| {
            let bytes = postcard::to_stdvec(black_box(&codec_msg)).unwrap();
            black_box(postcard::from_bytes::<M>(&bytes).unwrap())
        })
    });
    g.finish();

    // Paired rounds: the three back to back, order rotating, medians compared.
    let rounds = 15;
    let mut times: [Vec<Duration>; 3] = Default::default();
    for r in 0..rounds {
        for k in 0..3 {
            let which = (r + k) % 3;
            let d = match which {
                0 => rt.block_on(run_transport(&mut pair, rounds_n)),
                1 => rt.block_on(run_raw(&mut pair, rounds_n)),
                _ => rt.block_on(run_raw_codec(&mut pair, rounds_n)),
            };
            times[which].push(d);
        }
    }
    let [t, w, wc] = times.map(|mut v| {
        v.sort();
        v[rounds / 2]
    });
    let bytes = (pair.frame.len() as u64 * rounds_n) as f64;
    let mbps = |d: Duration| bytes / d.as_secs_f64() / 1e6;
    // A bench's report, like criterion's own output.
    eprintln!(
        "{name}: paired rounds ({rounds} x {rounds_n} messages of {} B on the wire): transport {:.0} MB/s ({:.0} msg/s), raw quinn {:.0} MB/s, raw quinn + codec {:.0} MB/s; ratio transport/raw = {:.2}, transport/(raw + codec) = {:.2}",
        pair.frame.len(),
        mbps(t),
        rounds_n as f64 / t.as_secs_f64(),
        mbps(w),
        mbps(wc),
        w.as_secs_f64() / t.as_secs_f64(),
        wc.as_secs_f64() / t.as_secs_f64(),
    );
    let stats = pair.a.peer_stats(2).unwrap();
    eprintln!(
        "{name}: transport counters: messages_sent {} dropped {} reconnects {}",
        stats.messages_sent, stats.dropped, stats.reconnects
    );
}

fn msg_128b(c: &mut Criterion) {
    group(c, "net_msg_128B", msg_128(), 100_000);
}

fn append_64kib(c: &mut Criterion) {
    group(c, "net_append_64KiB", append_64k(), 400);
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = msg_128b, append_64kib
}
criterion_main!(benches);
