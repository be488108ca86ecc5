//! Wire format of the peer streams.
//!
//! Each unidirectional stream starts with a header: the magic `RNET`, a version byte,
//! the lane byte (0 = messages, 1 = bulk) and the sender's node id (u64, little endian).
//! Frames follow: a u32 little-endian length, then that many bytes of postcard.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::NodeId;

/// Magic bytes at the start of every stream.
pub(crate) const MAGIC: [u8; 4] = *b"RNET";
/// Wire format version.
pub(crate) const VERSION: u8 = 1;
/// Length of the stream header.
pub(crate) const HEADER_LEN: usize = 4 + 1 + 1 + 8;
/// Length of a frame's length prefix.
pub(crate) const PREFIX_LEN: usize = 4;

/// Which stream of a connection a frame travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Raft messages: small, latency sensitive.
    Message = 0,
    /// Bulk payloads such as snapshot chunks.
    Bulk = 1,
}

/// Encodes the stream header.
pub(crate) fn header(lane: Lane, from: NodeId) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h[5] = lane as u8;
    h[6..].copy_from_slice(&from.to_le_bytes());
    h
}

/// Decodes a stream header.
pub(crate) fn parse_header(h: &[u8; HEADER_LEN]) -> Result<(Lane, NodeId), String> {
    if h[..4] != MAGIC {
        return Err(format!("bad stream magic {:02x?}", &h[..4]));
    }
    if h[4] != VERSION {
        return Err(format!("unsupported wire version {}", h[4]));
    }
    let lane = match h[5] {
        0 => Lane::Message,
        1 => Lane::Bulk,
        other => return Err(format!("unknown lane {other}")),
    };
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[6..]);
    Ok((lane, u64::from_le_bytes(id)))
}

/// Appends one frame holding `msg` to `buf`. Returns the frame's length (prefix
/// included), or an error if the message does not encode or exceeds `max_frame`
/// (in which case `buf` is left as it was).
pub(crate) fn encode_into<T: Serialize>(
    msg: &T,
    buf: &mut BytesMut,
    max_frame: usize,
) -> Result<usize, String> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; PREFIX_LEN]);
    let limit = max_frame.min(u32::MAX as usize);
    let out = AppendTo {
        buf: &mut *buf,
        end: start + PREFIX_LEN + limit,
    };
    if let Err(e) = postcard::serialize_with_flavor(msg, out) {
        buf.truncate(start);
        return Err(if e == postcard::Error::SerializeBufferFull {
            format!("message exceeds the frame limit of {limit} bytes")
        } else {
            format!("encode failed: {e}")
        });
    }
    let len = buf.len() - start - PREFIX_LEN;
    buf[start..start + PREFIX_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(len + PREFIX_LEN)
}

/// Postcard output flavor appending straight to a buffer (the stock `to_io` flavor goes
/// through `io::Write` for every byte, which dominated encoding of byte vectors). It
/// stops as soon as the frame would pass its limit, so an oversized message is refused
/// without being encoded whole.
struct AppendTo<'a> {
    buf: &'a mut BytesMut,
    /// Length `buf` may not exceed.
    end: usize,
}

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if self.buf.len() + data.len() > self.end {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Decodes a frame's payload, rejecting trailing bytes.
pub(crate) fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(format!("{} trailing bytes after the message", rest.len())),
        Err(e) => Err(format!("undecodable message: {e}")),
    }
}

/// Why reading a frame failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The length prefix announces more than the limit.
    TooLarge(usize),
    /// The stream ended in the middle of a frame.
    Truncated,
    /// The stream or connection failed.
    Stream(quinn::ReadError),
}

/// Frame reader over a QUIC receive stream. It takes the stream's data as quinn holds
/// it (reference-counted chunks, one per received packet, no copy) and hands out each
/// frame that lies within one chunk in place; only a frame spanning chunks is copied,
/// into a buffer grown after its length has been checked against the limit.
pub(crate) struct FrameReader {
    /// The current chunk; `chunk[pos..]` is unread.
    chunk: Bytes,
    pos: usize,
    /// A frame (or a header) being assembled from several chunks.
    partial: Vec<u8>,
    /// Whether `partial` holds a complete frame handed out by the last call.
    partial_done: bool,
    /// Whether the stream has ended.
    ended: bool,
    /// Where in `chunk` the last frame handed out in place lies.
    current: (usize, usize),
    max_frame: usize,
}

/// Largest assembly buffer kept between frames (a 16 MiB frame's is given back).
const KEEP_PARTIAL_BYTES: usize = 4 << 20;

/// Where the last complete frame's payload lies.
enum Found {
    InChunk,
    InPartial,
}

impl FrameReader {
    pub(crate) fn new(max_frame: usize) -> Self {
        FrameReader {
            chunk: Bytes::new(),
            pos: 0,
            partial: Vec::new(),
            partial_done: false,
            ended: false,
            current: (0, 0),
            max_frame,
        }
    }

    /// Reads exactly `out.len()` bytes (used for the stream header). `Ok(false)` on a
    /// clean end of stream before any byte.
    pub(crate) async fn read_exact_into(
        &mut self,
        recv: &mut quinn::RecvStream,
        out: &mut [u8],
    ) -> Result<bool, ReadError> {
        let mut have = 0;
        while have < out.len() {
            if self.unread().is_empty() && !self.fill(recv).await? {
                return if have == 0 {
                    Ok(false)
                } else {
                    Err(ReadError::Truncated)
                };
            }
            let n = (out.len() - have).min(self.unread().len());
            out[have..have + n].copy_from_slice(&self.unread()[..n]);
            self.pos += n;
            have += n;
        }
        Ok(true)
    }

    /// Returns the next frame's payload, or `None` at a clean end of stream.
    pub(crate) async fn next_frame(
        &mut self,
        recv: &mut quinn::RecvStream,
    ) -> Result<Option<&[u8]>, ReadError> {
        loop {
            if let Some(found) = self.take_buffered()? {
                return Ok(Some(self.payload(found)));
            }
            if !self.fill(recv).await? {
                return if self.partial.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }

    /// Returns the next frame's payload if all of it has already arrived (in the chunks
    /// quinn holds for the stream), without waiting.
    pub(crate) fn arrived_frame(
        &mut self,
        recv: &mut quinn::RecvStream,
    ) -> Result<Option<&[u8]>, ReadError> {
        loop {
            if let Some(found) = self.take_buffered()? {
                return Ok(Some(self.payload(found)));
            }
            if !self.fill_now(recv)? {
                return Ok(None);
            }
        }
    }

    fn payload(&self, found: Found) -> &[u8] {
        match found {
            Found::InChunk => &self.chunk[self.current.0..self.current.1],
            Found::InPartial => &self.partial[PREFIX_LEN..],
        }
    }

    /// Consumes the next frame if all of it has arrived, saying where its bytes are;
    /// otherwise moves what there is of it into `partial` and returns `None`.
    fn take_buffered(&mut self) -> Result<Option<Found>, ReadError> {
        if self.partial_done {
            self.partial.clear();
            if self.partial.capacity() > KEEP_PARTIAL_BYTES {
                self.partial.shrink_to(KEEP_PARTIAL_BYTES);
            }
            self.partial_done = false;
        }
        if self.partial.is_empty() {
            // The common case: the whole frame lies in the current chunk.
            let unread = self.unread();
            if unread.len() >= PREFIX_LEN {
                let len = self.frame_len(&unread[..PREFIX_LEN])?;
                if unread.len() >= PREFIX_LEN + len {
                    let start = self.pos + PREFIX_LEN;
                    self.current = (start, start + len);
                    self.pos = start + len;
                    return Ok(Some(Found::InChunk));
                }
            }
        }
        // Assemble in `partial`: first the length prefix, then the payload.
        if self.partial.len() < PREFIX_LEN {
            self.move_to_partial(PREFIX_LEN);
            if self.partial.len() < PREFIX_LEN {
                return Ok(None);
            }
        }
        let total = PREFIX_LEN + self.frame_len(&self.partial[..PREFIX_LEN])?;
        // Bounded: the length was checked against the limit just above.
        self.partial.reserve_exact(total - self.partial.len());
        self.move_to_partial(total);
        if self.partial.len() < total {
            return Ok(None);
        }
        self.partial_done = true;
        Ok(Some(Found::InPartial))
    }

    fn unread(&self) -> &[u8] {
        &self.chunk[self.pos..]
    }

    /// Moves unread bytes into `partial` until it holds `upto` bytes or the chunk is
    /// used up.
    fn move_to_partial(&mut self, upto: usize) {
        let n = upto
            .saturating_sub(self.partial.len())
            .min(self.chunk.len() - self.pos);
        self.partial
            .extend_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
    }

    fn frame_len(&self, prefix: &[u8]) -> Result<usize, ReadError> {
        let mut p = [0u8; PREFIX_LEN];
        p.copy_from_slice(prefix);
        let len = u32::from_le_bytes(p) as usize;
        if len > self.max_frame {
            return Err(ReadError::TooLarge(len));
        }
        Ok(len)
    }

    /// Takes the stream's next chunk (only called once the current one is used up);
    /// `Ok(false)` at end of stream.
    async fn fill(&mut self, recv: &mut quinn::RecvStream) -> Result<bool, ReadError> {
        debug_assert!(self.unread().is_empty());
        if self.ended {
            return Ok(false);
        }
        let read = recv.read_chunk(usize::MAX, true).await;
        self.took(read)
    }

    /// Like `fill`, but only takes a chunk that has already arrived: `Ok(false)` if
    /// there is none yet (or the stream ended).
    fn fill_now(&mut self, recv: &mut quinn::RecvStream) -> Result<bool, ReadError> {
        debug_assert!(self.unread().is_empty());
        if self.ended {
            return Ok(false);
        }
        // Polled once with a waker that does nothing: if no chunk is there, the next
        // `fill` polls again with the task's own waker.
        let read = std::pin::pin!(recv.read_chunk(usize::MAX, true));
        match read.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(read) => self.took(read),
            Poll::Pending => Ok(false),
        }
    }

    fn took(
        &mut self,
        read: Result<Option<quinn::Chunk>, quinn::ReadError>,
    ) -> Result<bool, ReadError> {
        match read {
            Ok(Some(chunk)) => {
                self.chunk = chunk.bytes;
                self.pos = 0;
                Ok(true)
            }
            Ok(None) => {
                self.ended = true;
                Ok(false)
            }
            Err(e) => Err(ReadError::Stream(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_rejections() {
        let h = header(Lane::Bulk, 42);
        assert_eq!(parse_header(&h).unwrap(), (Lane::Bulk, 42));
        let mut bad = h;
        bad[0] = b'X';
        assert!(parse_header(&bad).is_err());
        let mut bad = h;
        bad[4] = 9;
        assert!(parse_header(&bad).is_err());
        let mut bad = h;
        bad[5] = 7;
        assert!(parse_header(&bad).is_err());
    }

    #[test]
    fn encode_respects_limit_and_decode_rejects_trailing_bytes() {
        let mut buf = BytesMut::from(&[9u8][..]);
        let n = encode_into(&vec![1u8; 10], &mut buf, 100).unwrap();
        assert_eq!(buf.len(), 1 + n);
        let len = u32::from_le_bytes(buf[1..5].try_into().unwrap()) as usize;
        assert_eq!(len, n - PREFIX_LEN);
        let back: Vec<u8> = decode(&buf[5..]).unwrap();
        assert_eq!(back, vec![1u8; 10]);
        assert!(encode_into(&vec![1u8; 200], &mut buf, 100).is_err());
        assert_eq!(
            buf.len(),
            1 + n,
            "a refused frame leaves the buffer as it was"
        );
        let mut trailing = buf[5..].to_vec();
        trailing.push(0);
        assert!(decode::<Vec<u8>>(&trailing).is_err());
    }

    /// Feeds `stream` to a reader in chunks of the given sizes (cycled) and collects the
    /// payloads of the frames it hands out, as `read_frames` does, without quinn.
    fn frames_from_chunks(
        stream: &[u8],
        sizes: &[usize],
        max: usize,
    ) -> Result<Vec<Vec<u8>>, String> {
        let mut reader = FrameReader::new(max);
        let mut out = Vec::new();
        let mut at = 0;
        let mut k = 0;
        loop {
            match reader
                .take_buffered()
                .map(|f| f.map(|f| reader.payload(f).to_vec()))
            {
                Ok(Some(p)) => out.push(p),
                Ok(None) => {
                    assert!(
                        reader.unread().is_empty(),
                        "a partial frame must use up the chunk"
                    );
                    if at == stream.len() {
                        return if reader.partial.is_empty() {
                            Ok(out)
                        } else {
                            Err("truncated".into())
                        };
                    }
                    let n = sizes[k % sizes.len()].min(stream.len() - at);
                    k += 1;
                    reader.chunk = Bytes::copy_from_slice(&stream[at..at + n]);
                    reader.pos = 0;
                    at += n;
                }
                Err(ReadError::TooLarge(len)) => return Err(format!("too large {len}")),
                Err(e) => return Err(format!("{e:?}")),
            }
        }
    }

    #[test]
    fn reader_reassembles_frames_across_any_chunk_boundaries() {
        let payloads: Vec<Vec<u8>> = vec![
            vec![],
            vec![1],
            (0..200).map(|i| i as u8).collect(),
            vec![7; 3],
            (0..1500).map(|i| (i * 7) as u8).collect(),
        ];
        let mut stream = Vec::new();
        for p in &payloads {
            stream.extend_from_slice(&(p.len() as u32).to_le_bytes());
            stream.extend_from_slice(p);
        }
        for sizes in [
            vec![1],
            vec![2],
            vec![3],
            vec![4],
            vec![5, 1],
            vec![7, 300],
            vec![1200],
            vec![stream.len()],
        ] {
            assert_eq!(
                frames_from_chunks(&stream, &sizes, 4096).unwrap(),
                payloads,
                "chunk sizes {sizes:?}"
            );
        }
        // Cut anywhere inside the last frame: truncated, never a short frame.
        for cut in stream.len() - 1500 - 3..stream.len() {
            assert!(
                frames_from_chunks(&stream[..cut], &[100], 4096).is_err(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn reader_refuses_an_oversized_length_before_allocating() {
        let mut stream = (1u32 << 30).to_le_bytes().to_vec();
        stream.extend_from_slice(&[0; 10]);
        for sizes in [vec![1], vec![2], vec![14]] {
            assert_eq!(
                frames_from_chunks(&stream, &sizes, 1 << 20),
                Err(format!("too large {}", 1u32 << 30))
            );
        }
    }
}
