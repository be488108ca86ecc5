//! Streaming snapshot writer: state bytes in, a snapshot file out.

use std::io::{self, BufWriter, Seek, SeekFrom, Write};

use crate::error::{Error, Result};
use crate::format::{self, SnapshotHeader, SnapshotMeta};

/// zstd level used when none is given: fast enough to write a large state at
/// several hundred MB/s on one core, with most of the ratio of higher levels
/// on key-value data (see the crate README for measurements).
pub const DEFAULT_LEVEL: i32 = 1;

/// Bytes of state gathered before they are handed to zstd, so that many small
/// writes (one per key, say) cost one compression call.
const INPUT_BUFFER_BYTES: usize = 256 << 10;

/// The compressed bytes on their way to the underlying writer, counted and
/// checksummed.
struct BodySink<W> {
    inner: W,
    bytes: u64,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for BodySink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a snapshot to any `Write + Seek` destination, streaming: the state
/// is compressed as it arrives, so it never has to fit in memory.
///
/// The header goes first but holds the body's sizes and checksum, so the
/// writer reserves it (as zeros, which no reader accepts) and fills it in at
/// [`finish`](Self::finish). Until then the destination does not hold a valid
/// snapshot. [`SnapshotStore`](crate::SnapshotStore) wraps this with the
/// temporary-file, fsync and rename steps that make it durable.
///
/// ```
/// use std::io::{Cursor, Read, Write};
/// use raft_snapshot::{Membership, SnapshotMeta, SnapshotReader, SnapshotWriter};
///
/// # fn main() -> Result<(), raft_snapshot::Error> {
/// let meta = SnapshotMeta { index: 10, term: 2, membership: Membership::voters([1, 2, 3]) };
/// let mut w = SnapshotWriter::new(Cursor::new(Vec::new()), meta.clone(), 3)?;
/// for i in 0..1000u32 {
///     w.write_all(format!("key{i}=value{i}\n").as_bytes()).unwrap();
/// }
/// let (file, header) = w.finish()?;
/// assert!(header.compressed_bytes < header.uncompressed_bytes);
///
/// let bytes = file.into_inner();
/// let mut r = SnapshotReader::new(&bytes[..])?;
/// assert_eq!(r.header().meta, meta);
/// let mut state = Vec::new();
/// r.restore_into(&mut state)?; // verifies both checksums and the sizes
/// assert!(state.starts_with(b"key0=value0\n"));
/// # Ok(())
/// # }
/// ```
pub struct SnapshotWriter<W: Write + Seek> {
    input: BufWriter<zstd::stream::write::Encoder<'static, BodySink<W>>>,
    meta: SnapshotMeta,
    start: u64,
    header_bytes: u64,
    uncompressed: u64,
}

impl<W: Write + Seek> SnapshotWriter<W> {
    /// Starts a snapshot at the current position of `inner`, compressing at
    /// zstd `level` (1..=22; negative levels are faster still) on the calling
    /// thread.
    pub fn new(inner: W, meta: SnapshotMeta, level: i32) -> Result<SnapshotWriter<W>> {
        SnapshotWriter::with_workers(inner, meta, level, 0)
    }

    /// Like [`new`](Self::new), but compresses on `workers` background
    /// threads of libzstd (0 = on the calling thread). Worth it only with
    /// idle cores; the output is a normal snapshot either way.
    pub fn with_workers(
        mut inner: W,
        meta: SnapshotMeta,
        level: i32,
        workers: u32,
    ) -> Result<SnapshotWriter<W>> {
        let range = zstd::compression_level_range();
        if !range.contains(&level) {
            return Err(Error::InvalidArgument(format!(
                "zstd level {level} outside {range:?}"
            )));
        }
        let header_bytes = format::header_bytes(&meta)?;
        let start = inner
            .stream_position()
            .map_err(|e| Error::io("seek", None, e))?;
        inner
            .write_all(&vec![0u8; header_bytes])
            .map_err(|e| Error::io("write", None, e))?;
        let sink = BodySink {
            inner,
            bytes: 0,
            crc: crc32fast::Hasher::new(),
        };
        let mut enc = zstd::stream::write::Encoder::new(sink, level)
            .map_err(|e| Error::io("zstd init", None, e))?;
        // zstd's own xxhash of the content: a second, end-to-end check of the
        // decompressed bytes on top of the CRC over the compressed ones.
        enc.include_checksum(true)
            .map_err(|e| Error::io("zstd init", None, e))?;
        if workers > 0 {
            enc.multithread(workers)
                .map_err(|e| Error::io("zstd init", None, e))?;
        }
        Ok(SnapshotWriter {
            input: BufWriter::with_capacity(INPUT_BUFFER_BYTES, enc),
            meta,
            start,
            header_bytes: header_bytes as u64,
            uncompressed: 0,
        })
    }

    /// Bytes of state written so far.
    pub fn uncompressed_bytes(&self) -> u64 {
        self.uncompressed
    }

    /// The snapshot's index, term and membership.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Ends the body, writes the header, flushes, and returns the destination
    /// (positioned just after the snapshot) with the header written. Does not
    /// fsync: that is the caller's (or the store's) job.
    pub fn finish(self) -> Result<(W, SnapshotHeader)> {
        let enc = self
            .input
            .into_inner()
            .map_err(|e| Error::io("write", None, e.into_error()))?;
        let sink = enc.finish().map_err(|e| Error::io("write", None, e))?;
        let body_crc = sink.crc.finalize();
        let mut inner = sink.inner;
        let header = format::encode_header(&self.meta, self.uncompressed, sink.bytes, body_crc)?;
        let end = self.start + self.header_bytes + sink.bytes;
        (|| {
            inner.seek(SeekFrom::Start(self.start))?;
            inner.write_all(&header)?;
            inner.seek(SeekFrom::Start(end))?;
            inner.flush()
        })()
        .map_err(|e| Error::io("write", None, e))?;
        Ok((
            inner,
            SnapshotHeader {
                meta: self.meta,
                uncompressed_bytes: self.uncompressed,
                compressed_bytes: sink.bytes,
                body_crc,
                header_bytes: self.header_bytes,
            },
        ))
    }
}

impl<W: Write + Seek> Write for SnapshotWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.input.write(buf)?;
        self.uncompressed += n as u64;
        Ok(n)
    }

    /// Pushes buffered state into the compressor. It does not end the zstd
    /// block (that would cost ratio); only [`finish`](Self::finish) completes
    /// the snapshot.
    fn flush(&mut self) -> io::Result<()> {
        self.input.flush()
    }
}
