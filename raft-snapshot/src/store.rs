//! A directory of snapshot files: atomic creation, listing, verification,
//! retention, and recovery from damage and crashes.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use raft_wal::fs::{Fs, FsFile, OpenMode, StdFs};

use crate::error::{CorruptionKind, Error, Result};
use crate::format::{self, SnapshotHeader, SnapshotId, SnapshotMeta, PREFIX_BYTES};
use crate::fsio::{FileReader, FileWriter};
use crate::reader::SnapshotReader;
use crate::transfer::{ChunkSource, SnapshotReceiver};
use crate::writer::{SnapshotWriter, DEFAULT_LEVEL};

const SNAP_SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".tmp";
const DAMAGED_SUFFIX: &str = ".damaged";
/// Bytes read at a time when verifying a body checksum.
const VERIFY_BUFFER_BYTES: usize = 1 << 20;

/// Tuning knobs for [`SnapshotStore::open`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How many snapshots to keep; older ones are deleted after each new one
    /// becomes durable. At least 1. Default 2, so a damaged newest snapshot
    /// still leaves one to fall back to.
    pub keep: usize,
    /// zstd compression level. Default [`DEFAULT_LEVEL`].
    pub level: i32,
    /// Background compression threads (0 = compress on the writing thread).
    /// Default 0: a node's cores belong to the node; see the README for
    /// what more buys on an idle machine.
    pub workers: u32,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            keep: 2,
            level: DEFAULT_LEVEL,
            workers: 0,
        }
    }
}

/// A snapshot file found to be unusable; it was renamed to
/// `<name>.damaged` (kept for inspection, ignored from then on).
#[derive(Debug)]
pub struct DamagedSnapshot {
    /// The snapshot's id, from its file name.
    pub id: SnapshotId,
    /// Where the file now is.
    pub path: PathBuf,
    /// What was wrong.
    pub error: Error,
}

/// The result of [`SnapshotStore::newest_valid`].
#[derive(Debug)]
pub struct NewestValid {
    /// Header of the newest snapshot that passed every check, if any.
    pub header: Option<SnapshotHeader>,
    /// Newer snapshots that failed verification, newest first.
    pub damaged: Vec<DamagedSnapshot>,
}

struct Inner {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    options: StoreOptions,
    _lock: Box<dyn Send + Sync>,
    tmp_counter: AtomicU64,
    /// Serialises publish + prune.
    publish: Mutex<()>,
}

/// A directory of snapshots, one file per snapshot, named by index and term.
///
/// - **Atomic**: a snapshot is written under a temporary name, fsynced,
///   renamed to its final name, and the directory is fsynced. A crash at any
///   point leaves either no new snapshot or a complete one; leftover
///   temporary files are removed on [`open`](Self::open).
/// - **Retention**: after each new snapshot is durable, all but the newest
///   [`StoreOptions::keep`] are deleted.
/// - **Damage**: [`newest_valid`](Self::newest_valid) verifies the header
///   and body checksums; a damaged snapshot is reported (and renamed aside)
///   and the previous one is used.
/// - **One writer**: an exclusive lock on the directory.
///
/// Cloning gives another handle to the same store.
///
/// ```
/// use std::io::{Read, Write};
/// use raft_snapshot::{Membership, SnapshotMeta, SnapshotStore, StoreOptions};
///
/// # fn main() -> Result<(), raft_snapshot::Error> {
/// let dir = tempfile::tempdir().unwrap();
/// let store = SnapshotStore::open(dir.path(), StoreOptions::default())?;
/// for index in [10, 20, 30] {
///     let meta = SnapshotMeta { index, term: 1, membership: Membership::voters([1]) };
///     let mut w = store.create(meta)?;
///     w.write_all(format!("state at {index}").as_bytes()).unwrap();
///     w.commit()?; // durable when this returns
/// }
/// // keep = 2: the oldest one is gone.
/// let ids: Vec<u64> = store.list()?.iter().map(|id| id.index).collect();
/// assert_eq!(ids, [20, 30]);
///
/// let newest = store.newest_valid()?.header.unwrap();
/// let mut state = String::new();
/// store.open_snapshot(newest.id())?.read_to_string(&mut state).unwrap();
/// assert_eq!(state, "state at 30");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SnapshotStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SnapshotStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotStore")
            .field("dir", &self.inner.dir)
            .field("options", &self.inner.options)
            .finish()
    }
}

/// File name of snapshot `id`: hex index then term, so names sort by index.
pub(crate) fn file_name(id: SnapshotId) -> String {
    format!("{:016x}-{:016x}{SNAP_SUFFIX}", id.index, id.term)
}

fn parse_name(name: &str) -> Option<SnapshotId> {
    let stem = name.strip_suffix(SNAP_SUFFIX)?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 16 || b.len() != 16 {
        return None;
    }
    Some(SnapshotId {
        index: u64::from_str_radix(a, 16).ok()?,
        term: u64::from_str_radix(b, 16).ok()?,
    })
}

impl SnapshotStore {
    /// Opens (creating if needed) the store in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<SnapshotStore> {
        SnapshotStore::open_with_fs(Arc::new(StdFs), dir, options)
    }

    /// Opens the store in `dir` through `fs` (for example a
    /// [`FaultFs`](raft_wal::fault::FaultFs) in tests). Removes temporary
    /// files left by a crash.
    pub fn open_with_fs(
        fs: Arc<dyn Fs>,
        dir: impl AsRef<Path>,
        options: StoreOptions,
    ) -> Result<SnapshotStore> {
        let dir = dir.as_ref().to_path_buf();
        if options.keep == 0 {
            return Err(Error::InvalidArgument("keep must be at least 1".into()));
        }
        if !zstd::compression_level_range().contains(&options.level) {
            return Err(Error::InvalidArgument(format!(
                "zstd level {} outside {:?}",
                options.level,
                zstd::compression_level_range()
            )));
        }
        fs.create_dir_all(&dir)
            .map_err(|e| Error::io("create_dir", Some(&dir), e))?;
        let lock = fs.lock_dir(&dir, true).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => Error::Locked { dir: dir.clone() },
            _ => Error::io("lock", Some(&dir), e),
        })?;
        let mut removed = 0;
        for name in fs
            .list_dir(&dir)
            .map_err(|e| Error::io("list", Some(&dir), e))?
        {
            if name.ends_with(TMP_SUFFIX) {
                let path = dir.join(&name);
                fs.remove_file(&path)
                    .map_err(|e| Error::io("remove", Some(&path), e))?;
                tracing::info!(file = %path.display(), "removed unfinished snapshot");
                removed += 1;
            }
        }
        if removed > 0 {
            fs.sync_dir(&dir)
                .map_err(|e| Error::io("sync_dir", Some(&dir), e))?;
        }
        Ok(SnapshotStore {
            inner: Arc::new(Inner {
                fs,
                dir,
                options,
                _lock: lock,
                tmp_counter: AtomicU64::new(0),
                publish: Mutex::new(()),
            }),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// Path of snapshot `id` (whether or not it exists).
    pub fn path_of(&self, id: SnapshotId) -> PathBuf {
        self.inner.dir.join(file_name(id))
    }

    pub(crate) fn fs(&self) -> &dyn Fs {
        self.inner.fs.as_ref()
    }

    /// Snapshots present, oldest first (by index, then term). Nothing is
    /// verified.
    pub fn list(&self) -> Result<Vec<SnapshotId>> {
        let dir = &self.inner.dir;
        let mut ids: Vec<SnapshotId> = self
            .fs()
            .list_dir(dir)
            .map_err(|e| Error::io("list", Some(dir), e))?
            .iter()
            .filter_map(|n| parse_name(n))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Creates a fresh temporary file in the store's directory.
    pub(crate) fn create_tmp(&self, what: &str) -> Result<(PathBuf, Box<dyn FsFile>)> {
        let n = self.inner.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let path = self.inner.dir.join(format!("{what}-{n}{TMP_SUFFIX}"));
        let _ = self.fs().remove_file(&path);
        let file = self
            .fs()
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", Some(&path), e))?;
        Ok((path, file))
    }

    /// Starts a new snapshot. Write the state into the returned
    /// [`PendingSnapshot`], then [`commit`](PendingSnapshot::commit) it.
    /// Nothing is visible until the commit returns.
    pub fn create(&self, meta: SnapshotMeta) -> Result<PendingSnapshot> {
        let (tmp, file) = self.create_tmp(&file_name(meta.id()))?;
        let o = &self.inner.options;
        let writer = SnapshotWriter::with_workers(FileWriter::new(file), meta, o.level, o.workers)
            .map_err(|e| e.with_path(Some(&tmp)));
        match writer {
            Ok(w) => Ok(PendingSnapshot {
                store: self.clone(),
                tmp,
                writer: Some(w),
            }),
            Err(e) => {
                let _ = self.fs().remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Makes the complete temporary file `tmp` snapshot `id`: fsync, rename,
    /// directory fsync, then delete snapshots beyond the retention count. On
    /// error the temporary file is removed (best effort) and nothing new is
    /// visible... unless the failure came after the rename, in which case the
    /// snapshot may or may not survive a crash (the error says which step).
    pub(crate) fn publish(&self, tmp: &Path, file: &dyn FsFile, id: SnapshotId) -> Result<()> {
        self.publish_then(tmp, file, id, true)
    }

    /// [`publish`](Self::publish), pruning afterwards only if `prune`. A
    /// received snapshot is published without pruning: until its node
    /// decides to install it, the node's own base snapshot must stay (the
    /// node calls [`retain_newest`](Self::retain_newest) once it knows).
    pub(crate) fn publish_then(
        &self,
        tmp: &Path,
        file: &dyn FsFile,
        id: SnapshotId,
        prune: bool,
    ) -> Result<()> {
        let dst = self.path_of(id);
        let _guard = self.inner.publish.lock().unwrap_or_else(|e| e.into_inner());
        let fs = self.fs();
        let dir = &self.inner.dir;
        let res = file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", Some(tmp), e))
            .and_then(|()| {
                fs.rename(tmp, &dst)
                    .map_err(|e| Error::io("rename", Some(&dst), e))
            });
        if let Err(e) = res {
            let _ = fs.remove_file(tmp);
            return Err(e);
        }
        fs.sync_dir(dir)
            .map_err(|e| Error::io("sync_dir", Some(dir), e))?;
        tracing::info!(index = id.index, term = id.term, file = %dst.display(), "snapshot durable");
        if prune {
            self.prune(id)
        } else {
            Ok(())
        }
    }

    /// Deletes all but the newest [`StoreOptions::keep`] snapshots, never
    /// `base` (the snapshot the node's log continues from). A node calls it
    /// after installing a received snapshot, which the receiver publishes
    /// without pruning.
    pub fn retain_newest(&self, base: SnapshotId) -> Result<()> {
        let _guard = self.inner.publish.lock().unwrap_or_else(|e| e.into_inner());
        self.prune(base)
    }

    /// Deletes all but the newest `keep` snapshots (never `keep_id`).
    fn prune(&self, keep_id: SnapshotId) -> Result<()> {
        let ids = self.list()?;
        let excess = ids.len().saturating_sub(self.inner.options.keep);
        let mut removed = false;
        for id in ids.into_iter().take(excess).filter(|&id| id != keep_id) {
            let path = self.path_of(id);
            self.fs()
                .remove_file(&path)
                .map_err(|e| Error::io("remove", Some(&path), e))?;
            tracing::debug!(index = id.index, term = id.term, "deleted old snapshot");
            removed = true;
        }
        if removed {
            let dir = &self.inner.dir;
            self.fs()
                .sync_dir(dir)
                .map_err(|e| Error::io("sync_dir", Some(dir), e))?;
        }
        Ok(())
    }

    /// Deletes snapshot `id` durably.
    pub fn remove(&self, id: SnapshotId) -> Result<()> {
        let path = self.path_of(id);
        let dir = &self.inner.dir;
        self.fs().remove_file(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound {
                index: id.index,
                term: id.term,
            },
            _ => Error::io("remove", Some(&path), e),
        })?;
        self.fs()
            .sync_dir(dir)
            .map_err(|e| Error::io("sync_dir", Some(dir), e))
    }

    fn open_file(&self, id: SnapshotId) -> Result<(PathBuf, Box<dyn FsFile>, u64)> {
        let path = self.path_of(id);
        let file = self
            .fs()
            .open(&path, OpenMode::Read)
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::NotFound {
                    index: id.index,
                    term: id.term,
                },
                _ => Error::io("open", Some(&path), e),
            })?;
        let len = file.len().map_err(|e| Error::io("stat", Some(&path), e))?;
        Ok((path, file, len))
    }

    /// Checks snapshot `id` without decompressing it: the header (magic,
    /// version, checksum, that it matches the file name), the file length,
    /// and the CRC over the compressed body. Reads the whole file once.
    pub fn verify(&self, id: SnapshotId) -> Result<SnapshotHeader> {
        let (path, file, len) = self.open_file(id)?;
        verify_file(file.as_ref(), len, id).map_err(|e| e.with_path(Some(&path)))
    }

    /// Opens snapshot `id` for reading after [verifying](Self::verify) it.
    /// The reader checks everything again as it streams (including zstd's
    /// checksum of the decompressed state).
    pub fn open_snapshot(&self, id: SnapshotId) -> Result<SnapshotReader<FileReader>> {
        self.verify(id)?;
        self.open_unverified(id)
    }

    /// Opens snapshot `id` for streaming without the up-front checksum pass.
    /// The reader still verifies everything by the time it reaches the end.
    pub fn open_unverified(&self, id: SnapshotId) -> Result<SnapshotReader<FileReader>> {
        let (path, file, len) = self.open_file(id)?;
        SnapshotReader::new(FileReader::new(file, len)).map_err(|e| e.with_path(Some(&path)))
    }

    /// Finds the newest snapshot that passes [`verify`](Self::verify). Each
    /// newer one that fails with damage is logged, renamed to
    /// `<name>.damaged` and reported in [`NewestValid::damaged`]; an I/O error
    /// (which may be transient) is returned instead.
    pub fn newest_valid(&self) -> Result<NewestValid> {
        let mut damaged = Vec::new();
        for id in self.list()?.into_iter().rev() {
            match self.verify(id) {
                Ok(header) => {
                    return Ok(NewestValid {
                        header: Some(header),
                        damaged,
                    })
                }
                Err(error) if error.is_damage() => {
                    let path = self.quarantine(id)?;
                    tracing::error!(
                        index = id.index,
                        term = id.term,
                        file = %path.display(),
                        %error,
                        "snapshot is damaged; falling back to the previous one"
                    );
                    damaged.push(DamagedSnapshot { id, path, error });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(NewestValid {
            header: None,
            damaged,
        })
    }

    /// Opens the newest valid snapshot, if any (see [`newest_valid`](Self::newest_valid)).
    pub fn open_newest(&self) -> Result<Option<SnapshotReader<FileReader>>> {
        match self.newest_valid()?.header {
            Some(h) => self.open_unverified(h.id()).map(Some),
            None => Ok(None),
        }
    }

    /// Renames a damaged snapshot aside, durably.
    fn quarantine(&self, id: SnapshotId) -> Result<PathBuf> {
        let from = self.path_of(id);
        let to = self
            .inner
            .dir
            .join(format!("{}{DAMAGED_SUFFIX}", file_name(id)));
        let dir = &self.inner.dir;
        self.fs()
            .rename(&from, &to)
            .map_err(|e| Error::io("rename", Some(&from), e))?;
        self.fs()
            .sync_dir(dir)
            .map_err(|e| Error::io("sync_dir", Some(dir), e))?;
        Ok(to)
    }

    /// Reads snapshot `id` as a sequence of chunks of at most `chunk_bytes`
    /// for sending to another node (see [`ChunkSource`]).
    pub fn chunks(&self, id: SnapshotId, chunk_bytes: usize) -> Result<ChunkSource> {
        let (path, file, len) = self.open_file(id)?;
        ChunkSource::new(id, path, file, len, chunk_bytes)
    }

    /// A receiver for a snapshot sent in chunks by another node.
    pub fn receiver(&self) -> SnapshotReceiver {
        SnapshotReceiver::new(self.clone())
    }
}

/// Reads and verifies the header of a file of `len` bytes.
fn read_header_at(file: &dyn FsFile, len: u64) -> Result<SnapshotHeader> {
    let read = |at: u64, n: usize| -> Result<Vec<u8>> {
        let n = n.min(len.saturating_sub(at) as usize);
        let mut buf = vec![0u8; n];
        file.read_at(&mut buf, at)
            .map_err(|e| Error::io("read", None, e))?;
        Ok(buf)
    };
    let mut h = read(0, PREFIX_BYTES)?;
    let truncated = |expected: usize| {
        Error::corrupt(CorruptionKind::Truncated {
            expected: expected as u64,
            found: len,
        })
    };
    if h.len() < PREFIX_BYTES {
        return Err(truncated(PREFIX_BYTES));
    }
    let header_len = format::decode_prefix(&h)?;
    h.extend(read(PREFIX_BYTES as u64, header_len - PREFIX_BYTES)?);
    if h.len() < header_len {
        return Err(truncated(header_len));
    }
    format::decode_header(&h)
}

/// Verifies the header and body checksum of a complete snapshot file.
pub(crate) fn verify_file(file: &dyn FsFile, len: u64, id: SnapshotId) -> Result<SnapshotHeader> {
    let header = read_header_at(file, len)?;
    if header.id() != id {
        return Err(Error::corrupt(CorruptionKind::BadHeader(format!(
            "header says index {} term {}, file name says index {} term {}",
            header.meta.index, header.meta.term, id.index, id.term
        ))));
    }
    if len < header.file_bytes() {
        return Err(Error::corrupt(CorruptionKind::Truncated {
            expected: header.file_bytes(),
            found: len,
        }));
    }
    if len > header.file_bytes() {
        return Err(Error::corrupt(CorruptionKind::TrailingData {
            expected: header.file_bytes(),
            found: len,
        }));
    }
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; VERIFY_BUFFER_BYTES.min(header.compressed_bytes as usize)];
    let mut off = header.header_bytes;
    while off < len {
        let n = ((len - off) as usize).min(buf.len());
        file.read_at(&mut buf[..n], off)
            .map_err(|e| Error::io("read", None, e))?;
        crc.update(&buf[..n]);
        off += n as u64;
    }
    let computed = crc.finalize();
    if computed != header.body_crc {
        return Err(Error::corrupt(CorruptionKind::BodyChecksum {
            stored: header.body_crc,
            computed,
        }));
    }
    Ok(header)
}

/// A snapshot being written into a [`SnapshotStore`]. Write the state with
/// `std::io::Write`, then [`commit`](Self::commit). Dropping it without a
/// commit removes the temporary file.
pub struct PendingSnapshot {
    store: SnapshotStore,
    tmp: PathBuf,
    writer: Option<SnapshotWriter<FileWriter>>,
}

impl std::fmt::Debug for PendingSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSnapshot")
            .field("tmp", &self.tmp)
            .finish()
    }
}

impl PendingSnapshot {
    /// The snapshot's index, term and membership.
    pub fn meta(&self) -> &SnapshotMeta {
        self.writer.as_ref().expect("present until commit").meta()
    }

    /// Finishes the file and makes it durable and visible (fsync, rename,
    /// directory fsync), then deletes snapshots beyond the retention count.
    pub fn commit(mut self) -> Result<SnapshotHeader> {
        let writer = self.writer.take().expect("present until commit");
        let id = writer.meta().id();
        let tmp = self.tmp.clone();
        let res = writer.finish().and_then(|(w, header)| {
            let file = w
                .into_file()
                .map_err(|e| Error::io("write", Some(&tmp), e))?;
            Ok((file, header))
        });
        let (file, header) = match res {
            Ok(v) => v,
            Err(e) => {
                let _ = self.store.fs().remove_file(&tmp);
                return Err(e.with_path(Some(&tmp)));
            }
        };
        self.store.publish(&tmp, file.as_ref(), id)?;
        tracing::debug!(
            index = id.index,
            uncompressed_bytes = header.uncompressed_bytes,
            compressed_bytes = header.compressed_bytes,
            "snapshot written"
        );
        Ok(header)
    }
}

impl Write for PendingSnapshot {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer
            .as_mut()
            .expect("present until commit")
            .write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.as_mut().expect("present until commit").flush()
    }
}

impl Drop for PendingSnapshot {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = self.store.fs().remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_by_index() {
        let a = SnapshotId { index: 9, term: 3 };
        let b = SnapshotId {
            index: 0x1_0000,
            term: 1,
        };
        assert_eq!(parse_name(&file_name(a)), Some(a));
        assert!(file_name(a) < file_name(b));
        assert_eq!(parse_name("x.snap"), None);
        assert_eq!(parse_name(&format!("{}.tmp", file_name(a))), None);
    }
}
