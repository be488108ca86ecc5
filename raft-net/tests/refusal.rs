//! Refusals: each bad peer is refused, its messages never reach the inbox, and the
//! endpoint keeps serving good peers afterwards.

mod common;

use std::time::{Duration, Instant};

use common::*;
use raft_net::{close_code, Inbound, SendError};

/// Nothing but `allowed` senders' messages reach `inbox` within `window`.
async fn assert_nothing_from_others(inbox: &mut NetInbox, window: Duration) {
    if let Some((from, item)) = recv_within(inbox, window).await {
        panic!("unexpected inbound item from {from}: {item:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_another_ca_is_refused() {
    init_tracing();
    let dir = make_certs(&[1, 2]);
    let foreign = make_certs(&[1]);
    let (b, mut inbox) = start(2, dir.path());
    // Trusts the real CA (so the server is accepted) but presents node 1's certificate
    // from another CA.
    let client = RawClient::new(
        "127.0.0.1:0",
        read_cert(&dir.path().join("ca.crt")),
        Some((
            read_cert(&foreign.path().join("node-1.crt")),
            read_key(&foreign.path().join("node-1.key")),
        )),
    );
    if let Ok(conn) = client.connect(b.local_addr(), 2).await {
        // Client authentication fails on the server after the client's side finished.
        if let Ok(mut s) = conn.open_uni().await {
            let _ = s.write_all(&header(0, 1)).await;
            let _ = s.write_all(&frame(&msg(1, 0, Instant::now()))).await;
        }
        let reason = conn.closed().await;
        assert!(
            !matches!(reason, quinn::ConnectionError::LocallyClosed),
            "closed by the server: {reason}"
        );
    }
    assert_nothing_from_others(&mut inbox, Duration::from_millis(300)).await;
    wait_for("handshake failure counted", Duration::from_secs(5), || {
        b.stats().handshake_failures >= 1
    })
    .await;
    assert!(b.stats().peers.iter().all(|p| p.messages_received == 0));
    let (good, _good_inbox) = start(1, dir.path());
    assert_serves_good_peer(&b, &mut inbox, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_without_client_certificate_is_refused() {
    init_tracing();
    let dir = make_certs(&[1, 2]);
    let (b, mut inbox) = start(2, dir.path());
    let client = RawClient::new("127.0.0.1:0", read_cert(&dir.path().join("ca.crt")), None);
    if let Ok(conn) = client.connect(b.local_addr(), 2).await {
        if let Ok(mut s) = conn.open_uni().await {
            let _ = s.write_all(&header(0, 1)).await;
            let _ = s.write_all(&frame(&msg(1, 0, Instant::now()))).await;
        }
        let reason = conn.closed().await;
        assert!(!matches!(reason, quinn::ConnectionError::LocallyClosed));
    }
    assert_nothing_from_others(&mut inbox, Duration::from_millis(300)).await;
    wait_for("handshake failure counted", Duration::from_secs(5), || {
        b.stats().handshake_failures >= 1
    })
    .await;
    let (good, _good_inbox) = start(1, dir.path());
    assert_serves_good_peer(&b, &mut inbox, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_claiming_another_node_id_is_refused() {
    init_tracing();
    let dir = make_certs(&[1, 2, 3]);
    let (b, mut inbox) = start(2, dir.path());
    // Node 3's valid certificate, claiming to be node 1.
    let client = RawClient::new(
        "127.0.0.3:0",
        read_cert(&dir.path().join("ca.crt")),
        Some((
            read_cert(&dir.path().join("node-3.crt")),
            read_key(&dir.path().join("node-3.key")),
        )),
    );
    let conn = client.connect(b.local_addr(), 2).await.expect("handshake");
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&header(0, 1)).await.unwrap();
    let _ = s.write_all(&frame(&msg(1, 0, Instant::now()))).await;
    assert_eq!(close_code(&conn).await, Some(close_code::IMPERSONATION));
    assert_nothing_from_others(&mut inbox, Duration::from_millis(300)).await;
    assert!(b.stats().refused_connections >= 1);
    let (good, _good_inbox) = start(1, dir.path());
    assert_serves_good_peer(&b, &mut inbox, &good).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_claiming_another_sender_is_dropped() {
    init_tracing();
    let dir = make_certs(&[1, 2]);
    let (a, _a_inbox) = start(1, dir.path());
    let (b, mut inbox) = start(2, dir.path());
    link(&[&a, &b]);
    let epoch = Instant::now();
    // Node 1, properly identified, forwards a message that claims to come from node 3.
    let mut forged = msg(1, 0, epoch);
    forged.from = 3;
    a.send(2, forged).unwrap();
    assert_nothing_from_others(&mut inbox, Duration::from_millis(500)).await;
    wait_for("rejection counted", Duration::from_secs(5), || {
        b.peer_stats(1).is_some_and(|p| p.rejected == 1)
    })
    .await;
    assert_eq!(b.peer_stats(1).unwrap().messages_received, 0);
    // The sender reconnects by itself; its honest messages get through.
    assert_serves_good_peer(&b, &mut inbox, &a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_refused_before_allocation() {
    init_tracing();
    let dir = make_certs(&[1, 2]);
    let (b, mut inbox) = start(2, dir.path());
    let client = RawClient::new(
        "127.0.0.1:0",
        read_cert(&dir.path().join("ca.crt")),
        Some((
            read_cert(&dir.path().join("node-1.crt")),
            read_key(&dir.path().join("node-1.key")),
        )),
    );
    let conn = client.connect(b.local_addr(), 2).await.expect("handshake");
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&header(0, 1)).await.unwrap();
    // Announce 4 GiB - 1 (the limit is 1 MiB) and send only a few bytes: a reader that
    // allocated first would try to reserve 4 GiB or wait for them.
    s.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
    let _ = s.write_all(&[0u8; 16]).await;
    assert_eq!(close_code(&conn).await, Some(close_code::FRAME_TOO_LARGE));
    assert_nothing_from_others(&mut inbox, Duration::from_millis(300)).await;
    assert_eq!(b.peer_stats(1).unwrap().rejected, 1);

    // The transport never sends a message over the limit: dropped and counted.
    let (a, _a_inbox) = start(1, dir.path());
    a.add_peer(2, b.local_addr());
    let mut big = msg(1, 0, Instant::now());
    big.pad = vec![7u8; 2 << 20];
    assert_eq!(a.send(2, big), Err(SendError::TooLarge(2)));
    assert_eq!(a.peer_stats(2).unwrap().oversized, 1);
    assert_serves_good_peer(&b, &mut inbox, &a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_close_the_connection() {
    init_tracing();
    let dir = make_certs(&[1, 2]);
    let (b, mut inbox) = start(2, dir.path());
    let client = RawClient::new(
        "127.0.0.1:0",
        read_cert(&dir.path().join("ca.crt")),
        Some((
            read_cert(&dir.path().join("node-1.crt")),
            read_key(&dir.path().join("node-1.key")),
        )),
    );
    // Garbage in place of the stream header.
    let conn = client.connect(b.local_addr(), 2).await.expect("handshake");
    let mut s = conn.open_uni().await.unwrap();
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(close_code(&conn).await, Some(close_code::PROTOCOL));

    // A good header, then a frame whose bytes do not decode as a message.
    let conn = client.connect(b.local_addr(), 2).await.expect("handshake");
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&header(0, 1)).await.unwrap();
    let garbage = [0xffu8; 40];
    s.write_all(&(garbage.len() as u32).to_le_bytes())
        .await
        .unwrap();
    let _ = s.write_all(&garbage).await;
    assert_eq!(close_code(&conn).await, Some(close_code::MALFORMED));

    // A good frame followed by a frame cut short by the end of the stream.
    let conn = client.connect(b.local_addr(), 2).await.expect("handshake");
    let mut s = conn.open_uni().await.unwrap();
    s.write_all(&header(0, 1)).await.unwrap();
    s.write_all(&frame(&msg(1, 42, Instant::now())))
        .await
        .unwrap();
    s.write_all(&100u32.to_le_bytes()).await.unwrap();
    s.write_all(&[1, 2, 3]).await.unwrap();
    s.finish().unwrap();
    assert_eq!(close_code(&conn).await, Some(close_code::PROTOCOL));
    // The good frame before the damage was delivered, nothing else.
    let (from, item) = recv_within(&mut inbox, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(from, 1);
    assert!(matches!(item, Inbound::Message(m) if m.seq == 42));
    assert_nothing_from_others(&mut inbox, Duration::from_millis(300)).await;

    assert_eq!(b.peer_stats(1).unwrap().rejected, 2);
    assert_eq!(b.stats().refused_connections, 1);
    let (good, _good_inbox) = start(1, dir.path());
    assert_serves_good_peer(&b, &mut inbox, &good).await;
}
