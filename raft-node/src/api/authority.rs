//! Repairs the HTTP/2 `:authority` of requests from etcd's Go clients.
//!
//! etcdctl 3.4 (and clientv3's per-endpoint Maintenance calls) dial an
//! endpoint given as `http://host:port` with that whole string as the
//! `:authority` pseudo-header. etcd's Go server accepts it; the `h2` crate
//! under raft-node's server rejects it as malformed and resets the stream
//! (`PROTOCOL_ERROR`). This adapter sits between the TCP stream and the
//! HTTP server: on an HTTP/2 connection it decodes every header block
//! (HPACK, with the connection's dynamic table), turns an `:authority` of
//! `scheme://host:port[/...]` into `host:port`, and re-encodes the block.
//! Every other frame, and HTTP/1.1 connections, pass through untouched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame the server accepts by default (SETTINGS_MAX_FRAME_SIZE).
const MAX_FRAME: usize = 16_384;
/// Largest header block buffered (beyond it the connection passes through).
const MAX_BLOCK: usize = 1 << 20;

enum Mode {
    /// Not yet known whether this is HTTP/2.
    Sniffing,
    /// HTTP/2: header blocks are rewritten.
    Http2,
    /// HTTP/1.1, or a stream this adapter gave up on: bytes pass as they are.
    Passthrough,
}

/// A header block being gathered from HEADERS + CONTINUATION frames.
struct Pending {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// See the module docs.
pub struct AuthorityFix<S> {
    inner: S,
    mode: Mode,
    input: BytesMut,
    output: BytesMut,
    pending: Option<Pending>,
    decoder: fluke_hpack::Decoder<'static>,
    encoder: fluke_hpack::Encoder<'static>,
    /// Whether a header block of this connection was seen: the first one
    /// decides whether the connection needs repairs at all.
    seen_block: bool,
}

impl<S> AuthorityFix<S> {
    /// Wraps a freshly accepted connection.
    pub fn new(inner: S) -> Self {
        AuthorityFix {
            inner,
            mode: Mode::Sniffing,
            input: BytesMut::new(),
            output: BytesMut::new(),
            pending: None,
            decoder: fluke_hpack::Decoder::new(),
            encoder: fluke_hpack::Encoder::new(),
            seen_block: false,
        }
    }

    /// Moves what can be moved from `input` to `output`.
    fn process(&mut self) {
        loop {
            match self.mode {
                Mode::Passthrough => {
                    let all = self.input.split();
                    self.output.extend_from_slice(&all);
                    return;
                }
                Mode::Sniffing => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.mode = Mode::Passthrough;
                    } else if n == PREFACE.len() {
                        self.input.advance(n);
                        self.output.extend_from_slice(PREFACE);
                        self.mode = Mode::Http2;
                    } else {
                        return;
                    }
                }
                Mode::Http2 => {
                    if self.input.len() < FRAME_HEADER {
                        return;
                    }
                    let len = (usize::from(self.input[0]) << 16)
                        | (usize::from(self.input[1]) << 8)
                        | usize::from(self.input[2]);
                    if self.input.len() < FRAME_HEADER + len {
                        return;
                    }
                    let frame = self.input.split_to(FRAME_HEADER + len);
                    if !self.frame(&frame) {
                        // Undecodable: hand everything over as it is and let
                        // the HTTP/2 server judge it.
                        self.give_up(&frame);
                    }
                }
            }
        }
    }

    fn give_up(&mut self, frame: &[u8]) {
        if let Some(p) = self.pending.take() {
            let first = p.flags & !END_HEADERS;
            self.emit(first, p.stream, p.priority, &p.block);
        }
        self.output.extend_from_slice(frame);
        self.mode = Mode::Passthrough;
    }

    /// Handles one whole frame; false if it cannot be understood.
    fn frame(&mut self, frame: &[u8]) -> bool {
        let kind = frame[3];
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        match (kind, &mut self.pending) {
            (HEADERS, None) => {
                let mut body = payload;
                let mut pad = 0;
                if flags & PADDED != 0 {
                    let Some((&p, rest)) = body.split_first() else {
                        return false;
                    };
                    pad = usize::from(p);
                    body = rest;
                }
                let mut priority = None;
                if flags & PRIORITY != 0 {
                    if body.len() < 5 {
                        return false;
                    }
                    priority = Some([body[0], body[1], body[2], body[3], body[4]]);
                    body = &body[5..];
                }
                if pad > body.len() {
                    return false;
                }
                let block = body[..body.len() - pad].to_vec();
                self.pending = Some(Pending {
                    stream,
                    flags: flags & !PADDED,
                    priority,
                    block,
                });
            }
            (CONTINUATION, Some(p)) if p.stream == stream => {
                if p.block.len() + payload.len() > MAX_BLOCK {
                    return false;
                }
                p.block.extend_from_slice(payload);
            }
            (HEADERS | CONTINUATION, _) => return false,
            (_, Some(_)) => return false,
            _ => {
                self.output.extend_from_slice(frame);
                return true;
            }
        }
        if flags & END_HEADERS != 0 {
            let Some(p) = self.pending.take() else {
                return false;
            };
            let Ok(headers) = self.decoder.decode(&p.block) else {
                self.pending = Some(p);
                return false;
            };
            if !self.seen_block {
                self.seen_block = true;
                // A client dials one target per connection, so its first
                // request tells: one whose authority is fine (every client
                // but etcd's Go ones) passes through untouched from here on,
                // with its block as it encoded it, and costs nothing more.
                let fine = headers
                    .iter()
                    .all(|(n, v)| n != b":authority" || repair(v) == *v);
                if fine {
                    self.emit(p.flags | END_HEADERS, p.stream, p.priority, &p.block);
                    self.mode = Mode::Passthrough;
                    return true;
                }
            }
            let headers: Vec<(Vec<u8>, Vec<u8>)> = headers
                .into_iter()
                .map(|(name, value)| {
                    let value = if name == b":authority" {
                        repair(&value)
                    } else {
                        value
                    };
                    (name, value)
                })
                .collect();
            let block = self
                .encoder
                .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
            self.emit(p.flags | END_HEADERS, p.stream, p.priority, &block);
        }
        true
    }

    /// Writes a header block as HEADERS (+ CONTINUATION) frames of at most
    /// [`MAX_FRAME`] bytes; END_HEADERS (if in `flags`) goes on the last.
    fn emit(&mut self, flags: u8, stream: u32, priority: Option<[u8; 5]>, block: &[u8]) {
        let end_headers = flags & END_HEADERS;
        let mut first = true;
        let mut rest = block;
        loop {
            let room = MAX_FRAME - if first && priority.is_some() { 5 } else { 0 };
            let (chunk, tail) = rest.split_at(rest.len().min(room));
            let last = tail.is_empty();
            let (kind, mut f) = if first {
                (HEADERS, flags & !END_HEADERS)
            } else {
                (CONTINUATION, 0)
            };
            if last {
                f |= end_headers;
            }
            let prio_len = if first { priority.map_or(0, |_| 5) } else { 0 };
            let len = chunk.len() + prio_len;
            self.output.put_u8((len >> 16) as u8);
            self.output.put_u8((len >> 8) as u8);
            self.output.put_u8(len as u8);
            self.output.put_u8(kind);
            self.output.put_u8(f);
            self.output.put_u32(stream);
            if first {
                if let Some(p) = priority {
                    self.output.extend_from_slice(&p);
                }
            }
            self.output.extend_from_slice(chunk);
            first = false;
            rest = tail;
            if last {
                return;
            }
        }
    }
}

/// `scheme://host:port[/path]` becomes `host:port`; anything else is kept.
fn repair(authority: &[u8]) -> Vec<u8> {
    let Some(at) = authority.windows(3).position(|w| w == b"://") else {
        return authority.to_vec();
    };
    let rest = &authority[at + 3..];
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    rest[..end].to_vec()
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if matches!(this.mode, Mode::Passthrough) && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        // End of stream: flush what is held back as it is.
                        let rest = this.input.split();
                        if let Some(p) = this.pending.take() {
                            let flags = p.flags & !END_HEADERS;
                            this.emit(flags, p.stream, p.priority, &p.block);
                        }
                        this.output.extend_from_slice(&rest);
                        if this.output.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    this.input.extend_from_slice(rb.filled());
                    this.process();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A listener whose connections go through [`AuthorityFix`].
pub struct FixAuthority<L>(pub L);

impl<L: axum::serve::Listener> axum::serve::Listener for FixAuthority<L> {
    type Io = AuthorityFix<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.0.accept().await;
        (AuthorityFix::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        let len = payload.len();
        f.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    async fn through(bytes: Vec<u8>) -> Vec<u8> {
        let mut fix = AuthorityFix::new(&bytes[..]);
        let mut out = Vec::new();
        fix.read_to_end(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn an_authority_with_a_scheme_loses_it_and_other_frames_pass() {
        let mut client = fluke_hpack::Encoder::new();
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/etcdserverpb.Maintenance/Status"),
            (b":authority", b"http://127.0.0.1:2379"),
        ];
        let block = client.encode(headers.clone());
        let settings = frame(0x4, 0, 0, &[]);
        let mut input = PREFACE.to_vec();
        input.extend(&settings);
        // The block split over HEADERS (padded) + CONTINUATION.
        let (a, b) = block.split_at(block.len() / 2);
        let mut padded = vec![3u8];
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0, 0, 0]);
        input.extend(frame(HEADERS, PADDED | 0x1, 1, &padded));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        input.extend(frame(0x0, 0x1, 1, b"data"));
        // A second request reuses the client's dynamic table.
        input.extend(frame(HEADERS, END_HEADERS, 3, &client.encode(headers)));
        let out = through(input).await;
        assert_eq!(&out[..PREFACE.len()], PREFACE);
        let mut rest = &out[PREFACE.len()..];
        assert_eq!(&rest[..settings.len()], &settings[..]);
        rest = &rest[settings.len()..];
        let mut server = fluke_hpack::Decoder::new();
        let mut requests = 0;
        while !rest.is_empty() {
            let len =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
            if kind == HEADERS {
                assert_ne!(flags & END_HEADERS, 0);
                let decoded = server.decode(payload).unwrap();
                let authority = decoded.iter().find(|(n, _)| n == b":authority").unwrap();
                assert_eq!(authority.1, b"127.0.0.1:2379");
                requests += 1;
            } else {
                assert_eq!((kind, payload), (0x0, &b"data"[..]));
            }
            rest = &rest[FRAME_HEADER + len..];
        }
        assert_eq!(requests, 2);
    }

    #[tokio::test]
    async fn a_connection_whose_first_authority_is_fine_passes_through_untouched() {
        let mut client = fluke_hpack::Encoder::new();
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/etcdserverpb.KV/Put"),
            (b":authority", b"127.0.0.1:2379"),
        ];
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        input.extend(frame(
            HEADERS,
            END_HEADERS,
            1,
            &client.encode(headers.clone()),
        ));
        input.extend(frame(0x0, 0x1, 1, b"data"));
        // Later blocks, even a malformed one, are not looked at any more.
        input.extend(frame(HEADERS, END_HEADERS, 3, &client.encode(headers)));
        input.extend(frame(HEADERS, END_HEADERS, 5, b"\xff\xff"));
        assert_eq!(through(input.clone()).await, input);
    }

    #[tokio::test]
    async fn http1_passes_through_untouched() {
        let req = b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(through(req.clone()).await, req);
    }

    #[test]
    fn repair_keeps_plain_authorities() {
        assert_eq!(repair(b"127.0.0.1:2379"), b"127.0.0.1:2379");
        assert_eq!(repair(b"https://h:1/x"), b"h:1");
    }
}
