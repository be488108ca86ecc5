//! Sending a snapshot to another node in chunks, and receiving it: in order,
//! resumable, verified before it becomes visible.

use std::path::{Path, PathBuf};

use raft_wal::fs::FsFile;

use crate::error::{CorruptionKind, Error, Result};
use crate::format::{self, SnapshotHeader, SnapshotId, PREFIX_BYTES};
use crate::store::SnapshotStore;

/// A reasonable chunk size for [`SnapshotStore::chunks`]: large enough to
/// amortise per-message costs, small enough not to hog a connection.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

/// A piece of a snapshot file in flight: `data` belongs at `offset`, and
/// `done` marks the last piece. `crc` covers all three, so a chunk damaged in
/// transit is refused on its own and can simply be sent again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Byte offset of `data` within the snapshot file.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// True on the chunk that ends the file.
    pub done: bool,
    /// CRC32 of `offset`, `done` and `data`.
    pub crc: u32,
}

fn chunk_crc(offset: u64, done: bool, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&offset.to_le_bytes());
    h.update(&[done as u8]);
    h.update(data);
    h.finalize()
}

impl Chunk {
    /// A chunk with its checksum computed.
    ///
    /// ```
    /// let c = raft_snapshot::Chunk::new(0, b"abc".to_vec(), true);
    /// assert!(c.is_intact());
    /// let mut bad = c.clone();
    /// bad.data[1] ^= 1;
    /// assert!(!bad.is_intact());
    /// ```
    pub fn new(offset: u64, data: Vec<u8>, done: bool) -> Chunk {
        let crc = chunk_crc(offset, done, &data);
        Chunk {
            offset,
            data,
            done,
            crc,
        }
    }

    /// True if `crc` matches the rest of the chunk.
    pub fn is_intact(&self) -> bool {
        chunk_crc(self.offset, self.done, &self.data) == self.crc
    }
}

/// Reads a stored snapshot as chunks, from the start or from any offset a
/// receiver acknowledged (to resume after a broken connection). Obtained from
/// [`SnapshotStore::chunks`]; see [`SnapshotReceiver`] for an example.
pub struct ChunkSource {
    id: SnapshotId,
    path: PathBuf,
    file: Box<dyn FsFile>,
    len: u64,
    next: u64,
    chunk_bytes: usize,
    sent_done: bool,
}

impl std::fmt::Debug for ChunkSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkSource")
            .field("id", &self.id)
            .field("path", &self.path)
            .field("len", &self.len)
            .field("next", &self.next)
            .finish()
    }
}

impl ChunkSource {
    pub(crate) fn new(
        id: SnapshotId,
        path: PathBuf,
        file: Box<dyn FsFile>,
        len: u64,
        chunk_bytes: usize,
    ) -> Result<ChunkSource> {
        if chunk_bytes == 0 {
            return Err(Error::InvalidArgument(
                "chunk size must be at least 1 byte".into(),
            ));
        }
        Ok(ChunkSource {
            id,
            path,
            file,
            len,
            next: 0,
            chunk_bytes,
            sent_done: false,
        })
    }

    /// The snapshot being sent.
    pub fn id(&self) -> SnapshotId {
        self.id
    }

    /// Size of the whole file.
    pub fn total_bytes(&self) -> u64 {
        self.len
    }

    /// Offset of the next chunk [`next_chunk`](Self::next_chunk) returns.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// Continues from `offset` (a receiver's
    /// [`next_offset`](SnapshotReceiver::next_offset)).
    pub fn seek(&mut self, offset: u64) -> Result<()> {
        if offset > self.len {
            return Err(Error::InvalidArgument(format!(
                "offset {offset} past the end of a {}-byte snapshot",
                self.len
            )));
        }
        self.next = offset;
        self.sent_done = false;
        Ok(())
    }

    /// The chunk starting at `offset`.
    pub fn chunk_at(&self, offset: u64) -> Result<Chunk> {
        if offset > self.len {
            return Err(Error::InvalidArgument(format!(
                "offset {offset} past the end of a {}-byte snapshot",
                self.len
            )));
        }
        let n = ((self.len - offset) as usize).min(self.chunk_bytes);
        let mut data = vec![0u8; n];
        self.file
            .read_at(&mut data, offset)
            .map_err(|e| Error::io("read", Some(&self.path), e))?;
        Ok(Chunk::new(offset, data, offset + n as u64 == self.len))
    }

    /// The next chunk, or `None` once the last one was returned.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        if self.sent_done {
            return Ok(None);
        }
        let c = self.chunk_at(self.next)?;
        self.next += c.data.len() as u64;
        self.sent_done = c.done;
        Ok(Some(c))
    }
}

/// What [`SnapshotReceiver::accept`] did with a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Stored (or already had it). Acknowledge `next_offset`; it is where a
    /// resumed transfer continues.
    Progress {
        /// Bytes received so far, in order.
        next_offset: u64,
    },
    /// The last chunk arrived, every check passed, and the snapshot is now
    /// durable and visible in the store.
    Installed(SnapshotHeader),
}

/// Receives a snapshot in chunks into a [`SnapshotStore`].
///
/// Chunks must arrive in order. A chunk that repeats bytes already received
/// is fine (only the new part is used); one that would leave a gap, or that
/// fails its own checksum, is refused with an error and changes nothing, so
/// the sender resends from [`next_offset`](Self::next_offset) — which is also
/// how a transfer resumes after a broken connection.
///
/// The header is verified as soon as it has arrived and the body checksum at
/// the end; only then is the file fsynced, renamed into the store and the
/// directory fsynced. Damage to the snapshot itself (bad header, bad body
/// checksum, wrong size, or a different snapshot than
/// [`expecting`](Self::expecting) said) fails the whole transfer: the
/// partial file is deleted, the receiver closes, and the store is exactly as
/// it was. Nothing partial is ever visible. Partial files do not survive a
/// restart (the store removes them on open): a restarted receiver starts over.
///
/// ```
/// use std::io::Write;
/// use raft_snapshot::{Received, SnapshotMeta, SnapshotStore, StoreOptions};
///
/// # fn main() -> Result<(), raft_snapshot::Error> {
/// let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
/// let leader = SnapshotStore::open(a.path(), StoreOptions::default())?;
/// let follower = SnapshotStore::open(b.path(), StoreOptions::default())?;
/// let meta = SnapshotMeta { index: 7, term: 2, ..SnapshotMeta::default() };
/// let mut w = leader.create(meta.clone())?;
/// w.write_all(&vec![42u8; 100_000]).unwrap();
/// w.commit()?;
///
/// let mut source = leader.chunks(meta.id(), 64)?;
/// let mut rx = follower.receiver().expecting(meta.id());
/// let mut installed = None;
/// while let Some(chunk) = source.next_chunk()? {
///     if let Received::Installed(h) = rx.accept(&chunk)? {
///         installed = Some(h);
///     }
/// }
/// assert_eq!(installed.unwrap().meta, meta);
/// assert_eq!(follower.list()?, [meta.id()]);
/// # Ok(())
/// # }
/// ```
pub struct SnapshotReceiver {
    store: SnapshotStore,
    expect: Option<SnapshotId>,
    tmp: Option<(PathBuf, Box<dyn FsFile>)>,
    next: u64,
    head: Vec<u8>,
    header_len: Option<usize>,
    header: Option<SnapshotHeader>,
    body_bytes: u64,
    crc: crc32fast::Hasher,
    closed: bool,
    /// Bytes written since the last `fdatasync` (see `fsio::SYNC_EVERY_BYTES`).
    unsynced: u64,
}

impl std::fmt::Debug for SnapshotReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReceiver")
            .field("expect", &self.expect)
            .field("next", &self.next)
            .field("header", &self.header)
            .field("closed", &self.closed)
            .finish()
    }
}

impl SnapshotReceiver {
    pub(crate) fn new(store: SnapshotStore) -> SnapshotReceiver {
        SnapshotReceiver {
            store,
            expect: None,
            tmp: None,
            next: 0,
            head: Vec::new(),
            header_len: None,
            header: None,
            body_bytes: 0,
            crc: crc32fast::Hasher::new(),
            closed: false,
            unsynced: 0,
        }
    }

    /// Refuse the transfer if its header names a different snapshot.
    pub fn expecting(mut self, id: SnapshotId) -> SnapshotReceiver {
        self.expect = Some(id);
        self
    }

    /// Bytes received so far, in order: the offset to acknowledge and to
    /// resume from.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// The snapshot's header, once it has arrived and been verified.
    pub fn header(&self) -> Option<&SnapshotHeader> {
        self.header.as_ref()
    }

    /// True once the transfer failed or finished.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Takes the next chunk. See the type's docs for what each outcome means.
    pub fn accept(&mut self, chunk: &Chunk) -> Result<Received> {
        if self.closed {
            return Err(Error::TransferClosed);
        }
        if !chunk.is_intact() {
            tracing::warn!(offset = chunk.offset, "refused a damaged snapshot chunk");
            return Err(Error::ChunkChecksum {
                offset: chunk.offset,
            });
        }
        if chunk.offset > self.next {
            return Err(Error::ChunkOutOfOrder {
                expected: self.next,
                found: chunk.offset,
            });
        }
        let end = chunk.offset + chunk.data.len() as u64;
        let fresh = &chunk.data[(self.next.min(end) - chunk.offset) as usize..];
        if fresh.is_empty() && !(chunk.done && end == self.next) {
            // A resend of bytes we already hold.
            return Ok(Received::Progress {
                next_offset: self.next,
            });
        }
        match self.take(fresh, chunk.done) {
            Ok(r) => Ok(r),
            Err(e) => {
                self.fail(&e);
                Err(e)
            }
        }
    }

    fn take(&mut self, fresh: &[u8], done: bool) -> Result<Received> {
        self.absorb(fresh)?;
        if !fresh.is_empty() {
            if self.tmp.is_none() {
                let what = match self.expect {
                    Some(id) => format!("recv-{}", crate::store::file_name(id)),
                    None => "recv".to_string(),
                };
                self.tmp = Some(self.store.create_tmp(&what)?);
            }
            let (path, file) = self.tmp.as_ref().expect("created above");
            file.write_at(fresh, self.next)
                .map_err(|e| Error::io("write", Some(path), e))?;
            self.next += fresh.len() as u64;
            self.unsynced += fresh.len() as u64;
            if self.unsynced >= crate::fsio::SYNC_EVERY_BYTES {
                file.sync_data()
                    .map_err(|e| Error::io("sync", Some(path), e))?;
                self.unsynced = 0;
            }
        }
        if !done {
            return Ok(Received::Progress {
                next_offset: self.next,
            });
        }
        let header = match &self.header {
            Some(h) if self.next == h.file_bytes() => h.clone(),
            other => {
                return Err(Error::corrupt(CorruptionKind::Truncated {
                    expected: other
                        .as_ref()
                        .map_or(PREFIX_BYTES as u64, |h| h.file_bytes()),
                    found: self.next,
                }))
            }
        };
        let computed = self.crc.clone().finalize();
        if computed != header.body_crc {
            return Err(Error::corrupt(CorruptionKind::BodyChecksum {
                stored: header.body_crc,
                computed,
            }));
        }
        let (path, file) = self.tmp.take().expect("a complete snapshot has bytes");
        self.closed = true;
        // No pruning here: the node has not decided to install it yet, and
        // pruning could delete the snapshot its own log continues from.
        self.store
            .publish_then(&path, file.as_ref(), header.id(), false)
            .map_err(|e| e.with_path(Some(&path)))?;
        tracing::info!(
            index = header.meta.index,
            term = header.meta.term,
            bytes = header.file_bytes(),
            "installed received snapshot"
        );
        Ok(Received::Installed(header))
    }

    /// Feeds new in-order bytes to the header parser and body checksum.
    fn absorb(&mut self, mut data: &[u8]) -> Result<()> {
        while self.header.is_none() && !data.is_empty() {
            let target = self.header_len.unwrap_or(PREFIX_BYTES);
            let take = (target - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.head.len() < target {
                break;
            }
            if self.header_len.is_none() {
                self.header_len = Some(format::decode_prefix(&self.head)?);
                continue;
            }
            let h = format::decode_header(&self.head)?;
            if let Some(id) = self.expect {
                if h.id() != id {
                    return Err(Error::corrupt(CorruptionKind::BadHeader(format!(
                        "expected snapshot index {} term {}, got index {} term {}",
                        id.index, id.term, h.meta.index, h.meta.term
                    ))));
                }
            }
            self.header = Some(h);
        }
        if let Some(h) = &self.header {
            self.body_bytes += data.len() as u64;
            if self.body_bytes > h.compressed_bytes {
                return Err(Error::corrupt(CorruptionKind::TrailingData {
                    expected: h.file_bytes(),
                    found: h.header_bytes + self.body_bytes,
                }));
            }
            self.crc.update(data);
        }
        Ok(())
    }

    /// Closes the transfer after an error that invalidates it.
    fn fail(&mut self, err: &Error) {
        self.closed = true;
        tracing::warn!(error = %err, "snapshot transfer failed; discarding the partial file");
        self.discard();
    }

    fn discard(&mut self) {
        if let Some((path, file)) = self.tmp.take() {
            drop(file);
            let _ = self.store.fs().remove_file(&path);
        }
    }

    /// Gives up on the transfer and deletes the partial file.
    pub fn abort(mut self) {
        self.closed = true;
        self.discard();
    }

    /// Path of the partial file, if one exists (for diagnostics).
    pub fn partial_path(&self) -> Option<&Path> {
        self.tmp.as_ref().map(|(p, _)| p.as_path())
    }
}

impl Drop for SnapshotReceiver {
    fn drop(&mut self) {
        self.discard();
    }
}
