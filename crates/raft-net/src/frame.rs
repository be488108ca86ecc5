//! Wire format of the peer streams.
//!
//! Each unidirectional stream starts with a header: the magic `RNET`, a version byte,
//! the lane byte (0 = messages, 1 = bulk) and the sender's node id (u64, little endian).
//! Frames follow: a u32 little-endian length, then that many bytes of postcard.

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
    buf: &mut Vec<u8>,
    max_frame: usize,
) -> Result<usize, String> {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; PREFIX_LEN]);
    if let Err(e) = postcard::serialize_with_flavor(msg, AppendTo(&mut *buf)) {
        buf.truncate(start);
        return Err(format!("encode failed: {e}"));
    }
    let len = buf.len() - start - PREFIX_LEN;
    if len > max_frame || len > u32::MAX as usize {
        buf.truncate(start);
        return Err(format!(
            "message of {len} bytes exceeds the limit of {max_frame}"
        ));
    }
    buf[start..start + PREFIX_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(len + PREFIX_LEN)
}

/// Postcard output flavor appending straight to a `Vec` (the stock `to_io` flavor goes
/// through `io::Write` for every byte, which dominated encoding of byte vectors).
struct AppendTo<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
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

/// Buffered frame reader over a QUIC receive stream. Grows its buffer only after a
/// frame's length has been checked against the limit.
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_frame: usize,
}

impl FrameReader {
    pub(crate) fn new(max_frame: usize) -> Self {
        FrameReader {
            buf: vec![0u8; 64 * 1024],
            start: 0,
            end: 0,
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
        while self.end - self.start < out.len() {
            if !self.fill(recv).await? {
                return if self.end == self.start {
                    Ok(false)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
        out.copy_from_slice(&self.buf[self.start..self.start + out.len()]);
        self.start += out.len();
        Ok(true)
    }

    /// Returns the next frame's payload, or `None` at a clean end of stream.
    pub(crate) async fn next_frame(
        &mut self,
        recv: &mut quinn::RecvStream,
    ) -> Result<Option<&[u8]>, ReadError> {
        loop {
            if let Some((at, len)) = self.take_buffered()? {
                return Ok(Some(&self.buf[at..at + len]));
            }
            if !self.fill(recv).await? {
                return if self.end == self.start {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated)
                };
            }
        }
    }

    /// Returns the next frame's payload if it is already wholly buffered, without reading.
    pub(crate) fn buffered_frame(&mut self) -> Result<Option<&[u8]>, ReadError> {
        Ok(self
            .take_buffered()?
            .map(|(at, len)| &self.buf[at..at + len]))
    }

    /// Consumes the next frame if it is wholly buffered and returns where its payload lies
    /// in `buf`. Otherwise makes sure `buf` can hold it (its length checked against the
    /// limit first, so the allocation is bounded).
    fn take_buffered(&mut self) -> Result<Option<(usize, usize)>, ReadError> {
        let avail = self.end - self.start;
        if avail < PREFIX_LEN {
            return Ok(None);
        }
        let mut p = [0u8; PREFIX_LEN];
        p.copy_from_slice(&self.buf[self.start..self.start + PREFIX_LEN]);
        let len = u32::from_le_bytes(p) as usize;
        if len > self.max_frame {
            return Err(ReadError::TooLarge(len));
        }
        let total = PREFIX_LEN + len;
        if avail < total {
            if self.buf.len() < total {
                self.buf.resize(total, 0);
            }
            return Ok(None);
        }
        let at = self.start + PREFIX_LEN;
        self.start += total;
        Ok(Some((at, len)))
    }

    /// Reads more bytes; `Ok(false)` at end of stream.
    async fn fill(&mut self, recv: &mut quinn::RecvStream) -> Result<bool, ReadError> {
        if self.end == self.buf.len() {
            // Move the unread tail to the front to make room.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        match recv.read(&mut self.buf[self.end..]).await {
            Ok(Some(n)) => {
                self.end += n;
                Ok(true)
            }
            Ok(None) => Ok(false),
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
        let mut buf = vec![9u8];
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
}
