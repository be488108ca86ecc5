//! Streaming snapshot reader: a snapshot in, state bytes out, verified.

use std::io::{self, BufReader, Read, Write};

use crate::error::{CorruptionKind, Error, Result};
use crate::format::{self, SnapshotHeader, PREFIX_BYTES};

/// Compressed bytes read from the source at a time.
const BODY_BUFFER_BYTES: usize = 256 << 10;

/// The compressed body, limited to its recorded size, checksummed as read.
struct BodySource<R> {
    inner: R,
    remaining: u64,
    crc: crc32fast::Hasher,
    /// The source ended before `remaining` reached zero.
    short: bool,
    /// The source returned an error (as opposed to zstd rejecting the data).
    failed: bool,
}

impl<R: Read> Read for BodySource<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.remaining) as usize;
        let n = loop {
            match self.inner.read(&mut buf[..want]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
                Ok(n) => break n,
            }
        };
        if n == 0 {
            self.short = true;
        }
        self.crc.update(&buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reading,
    Verified,
    Failed,
}

/// Reads a snapshot from any `Read` source, streaming: state bytes come out
/// as the body is decompressed, so the state never has to fit in memory.
///
/// [`new`](Self::new) reads and verifies the header (magic, version,
/// checksum). The body is checked as it streams; the body checksum, the sizes
/// and zstd's content checksum can only be confirmed at the end, so **the
/// state read is trustworthy only once a read returned 0 (end) without
/// error**. Restore into a fresh state machine and adopt it only then, or use
/// [`restore_into`](Self::restore_into), which does exactly that. Every error
/// is an [`Error`]; through `std::io::Read` it arrives wrapped in an
/// `io::Error` (recover it with [`Error::from_io`]).
///
/// ```
/// use std::io::Cursor;
/// use raft_snapshot::{CorruptionKind, Error, SnapshotMeta, SnapshotReader, SnapshotWriter};
///
/// let (file, _) = SnapshotWriter::new(Cursor::new(Vec::new()), SnapshotMeta::default(), 3)
///     .unwrap()
///     .finish()
///     .unwrap();
/// let mut bytes = file.into_inner();
/// bytes.truncate(bytes.len() - 1);
/// let mut r = SnapshotReader::new(&bytes[..]).unwrap();
/// let err = r.restore_into(&mut std::io::sink()).unwrap_err();
/// assert!(matches!(err, Error::Corruption { kind: CorruptionKind::Truncated { .. }, .. }));
/// ```
pub struct SnapshotReader<R: Read> {
    header: SnapshotHeader,
    decoder: zstd::stream::read::Decoder<'static, BufReader<BodySource<R>>>,
    produced: u64,
    state: State,
}

impl<R: Read> std::fmt::Debug for SnapshotReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("header", &self.header)
            .field("produced", &self.produced)
            .field("state", &self.state)
            .finish()
    }
}

/// Reads as much of `buf` as `r` has; returns how many bytes were read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads and verifies a header from the start of `r`.
fn read_header(r: &mut impl Read) -> Result<SnapshotHeader> {
    let mut prefix = [0u8; PREFIX_BYTES];
    let got = read_full(r, &mut prefix).map_err(|e| Error::io("read", None, e))?;
    if got < PREFIX_BYTES {
        return Err(Error::corrupt(CorruptionKind::Truncated {
            expected: PREFIX_BYTES as u64,
            found: got as u64,
        }));
    }
    let len = format::decode_prefix(&prefix)?;
    let mut h = vec![0u8; len];
    h[..PREFIX_BYTES].copy_from_slice(&prefix);
    let got = read_full(r, &mut h[PREFIX_BYTES..]).map_err(|e| Error::io("read", None, e))?;
    if got < len - PREFIX_BYTES {
        return Err(Error::corrupt(CorruptionKind::Truncated {
            expected: len as u64,
            found: (PREFIX_BYTES + got) as u64,
        }));
    }
    format::decode_header(&h)
}

impl<R: Read> SnapshotReader<R> {
    /// Reads and verifies the header from the current position of `inner`.
    pub fn new(mut inner: R) -> Result<SnapshotReader<R>> {
        let header = read_header(&mut inner)?;
        let source = BodySource {
            inner,
            remaining: header.compressed_bytes,
            crc: crc32fast::Hasher::new(),
            short: false,
            failed: false,
        };
        let decoder = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(
            BODY_BUFFER_BYTES,
            source,
        ))
        .map_err(|e| Error::io("zstd init", None, e))?
        .single_frame();
        Ok(SnapshotReader {
            header,
            decoder,
            produced: 0,
            state: State::Reading,
        })
    }

    /// The verified header.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// Bytes of state produced so far.
    pub fn produced_bytes(&self) -> u64 {
        self.produced
    }

    /// True once the whole body was read and every check passed.
    pub fn is_verified(&self) -> bool {
        self.state == State::Verified
    }

    /// Copies the whole state into `out` and verifies it; returns the number
    /// of bytes copied. On error, whatever reached `out` must be discarded.
    pub fn restore_into(&mut self, out: &mut impl Write) -> Result<u64> {
        let mut buf = vec![0u8; BODY_BUFFER_BYTES];
        let mut total = 0;
        loop {
            let n = self.read_body(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            out.write_all(&buf[..n])
                .map_err(|e| Error::io("write restored state", None, e))?;
            total += n as u64;
        }
    }

    /// Reads the rest of the body without keeping it, verifying everything.
    pub fn verify(mut self) -> Result<SnapshotHeader> {
        self.restore_into(&mut io::sink())?;
        Ok(self.header)
    }

    fn source(&self) -> &BodySource<R> {
        self.decoder.get_ref().get_ref()
    }

    fn truncated(&self) -> Error {
        let s = self.source();
        let buffered = self.decoder.get_ref().buffer().len() as u64;
        let consumed = self.header.compressed_bytes - s.remaining - buffered;
        Error::corrupt(CorruptionKind::Truncated {
            expected: self.header.file_bytes(),
            found: self.header.header_bytes + consumed + buffered,
        })
    }

    /// Checks run once zstd reports the end of the frame.
    fn verify_end(&self) -> Result<()> {
        let s = self.source();
        let left = s.remaining + self.decoder.get_ref().buffer().len() as u64;
        if left > 0 {
            return Err(Error::corrupt(CorruptionKind::SizeMismatch {
                what: "compressed",
                expected: self.header.compressed_bytes,
                found: self.header.compressed_bytes - left,
            }));
        }
        let computed = s.crc.clone().finalize();
        if computed != self.header.body_crc {
            return Err(Error::corrupt(CorruptionKind::BodyChecksum {
                stored: self.header.body_crc,
                computed,
            }));
        }
        if self.produced != self.header.uncompressed_bytes {
            return Err(Error::corrupt(CorruptionKind::SizeMismatch {
                what: "uncompressed",
                expected: self.header.uncompressed_bytes,
                found: self.produced,
            }));
        }
        Ok(())
    }

    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize> {
        match self.state {
            State::Verified => return Ok(0),
            State::Failed => {
                return Err(Error::InvalidArgument(
                    "the snapshot reader already failed verification".into(),
                ))
            }
            State::Reading => {}
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let res = match self.decoder.read(buf) {
            Ok(0) => self.verify_end().map(|()| 0),
            Ok(n) => {
                self.produced += n as u64;
                if self.produced > self.header.uncompressed_bytes {
                    Err(Error::corrupt(CorruptionKind::SizeMismatch {
                        what: "uncompressed",
                        expected: self.header.uncompressed_bytes,
                        found: self.produced,
                    }))
                } else {
                    Ok(n)
                }
            }
            Err(e) => {
                if self.source().failed {
                    Err(Error::io("read", None, e))
                } else if self.source().short {
                    Err(self.truncated())
                } else {
                    Err(Error::corrupt(CorruptionKind::Decompress(e.to_string())))
                }
            }
        };
        match res {
            Ok(0) => self.state = State::Verified,
            Ok(_) => {}
            Err(_) => self.state = State::Failed,
        }
        if let Err(e) = &res {
            tracing::warn!(
                index = self.header.meta.index,
                term = self.header.meta.term,
                error = %e,
                "snapshot failed verification while reading"
            );
        }
        res
    }
}

impl<R: Read> Read for SnapshotReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_body(buf).map_err(Error::into_io)
    }
}
