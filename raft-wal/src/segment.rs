//! One segment file: its identity, write head and read view.
//!
//! A segment is shared (through an `Arc`) between the writer and readers.
//! Its mutable fields are atomics that only the writer changes, under its
//! lock; readers only load them.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::fs::{FsFile, Mapping, WeakMapping};

/// How a segment keeps its read view between reads.
///
/// The segment being written keeps its view: it is read at once (entries
/// are applied and sent right after they are written). A sealed segment is
/// read again only by readers that fell behind or replay, so it keeps a weak
/// handle: its pages stay mapped (and count in the process's resident
/// memory) only while some reader holds the view, not for as long as the
/// segment exists. (The log holds the view of the one sealed segment read
/// last, so that range reads coming back to it do not map it again.)
enum CachedView {
    Held(Mapping),
    Released(WeakMapping),
}

impl CachedView {
    fn get(&self) -> Option<Mapping> {
        match self {
            CachedView::Held(m) => Some(m.clone()),
            CachedView::Released(w) => w.upgrade(),
        }
    }
}

/// A segment file of the log.
pub(crate) struct Segment {
    /// Sequence number; segments form an unbroken sequence.
    pub seq: u64,
    /// Full path of the file.
    pub path: PathBuf,
    /// CRC32 of `seq`, where every record checksum of this segment starts.
    pub seq_crc: u32,
    /// The open file.
    pub file: Arc<dyn FsFile>,
    /// Bytes of valid records in the file (the write head).
    written: AtomicU64,
    /// A seal record ends the segment; nothing more is written to it.
    sealed: AtomicBool,
    /// Length of the file, tracked here so the write path never needs a
    /// `stat` (which would make the next fdatasync write the inode too).
    file_len: AtomicU64,
    /// Cached read view and how many bytes of it are valid (everything for a
    /// live memory map; the write head at copy time for a copied view).
    view: Mutex<Option<(CachedView, u64)>>,
    /// Read with ordinary reads into memory instead of mapping the file (a
    /// read-only open without the directory lock: the live writer may shrink
    /// a file, and touching a mapped page past the end would raise `SIGBUS`).
    copy_reads: bool,
}

impl Segment {
    pub fn new(seq: u64, path: PathBuf, file: Arc<dyn FsFile>) -> Segment {
        Segment {
            seq,
            seq_crc: crate::format::seq_crc(seq),
            path,
            file,
            written: AtomicU64::new(0),
            sealed: AtomicBool::new(false),
            file_len: AtomicU64::new(0),
            view: Mutex::new(None),
            copy_reads: false,
        }
    }

    /// Makes reads copy the file instead of mapping it (see `copy_reads`).
    pub fn with_copy_reads(mut self, copy: bool) -> Segment {
        self.copy_reads = copy;
        self
    }

    /// The file's bytes: a memory map, or with copy reads the first `len`
    /// bytes (all of them for `None`) read into memory.
    pub fn map(&self, len: Option<u64>) -> io::Result<Mapping> {
        if !self.copy_reads {
            return self.file.map();
        }
        let len = match len {
            Some(len) => len,
            None => self.file.len()?,
        };
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
        let mut buf = vec![0u8; len];
        self.file.read_at(&mut buf, 0)?;
        Ok(Mapping::new(Arc::new(buf), false))
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    pub fn set_written(&self, v: u64) {
        self.written.store(v, Ordering::Release);
    }

    pub fn sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// Marks the segment sealed; from now on its read view is released
    /// once no reader holds it (see [`CachedView`]).
    pub fn set_sealed(&self) {
        self.sealed.store(true, Ordering::Release);
        let mut slot = self.view.lock().unwrap_or_else(|e| e.into_inner());
        *slot = match slot.take() {
            Some((CachedView::Held(m), valid)) => Some((Self::cache(true, m), valid)),
            other => other,
        };
    }

    pub fn file_len(&self) -> u64 {
        self.file_len.load(Ordering::Acquire)
    }

    pub fn set_file_len(&self, v: u64) {
        self.file_len.store(v, Ordering::Release);
    }

    /// A read view that shows at least the first `end` bytes of the file, and
    /// how many of its bytes are valid.
    pub fn view(&self, end: u64) -> io::Result<(Mapping, u64)> {
        let mut slot = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, valid)) = slot.as_ref() {
            if let Some(m) = cached.get() {
                if m.bytes().len() as u64 >= end && end <= *valid {
                    return Ok((m, *valid));
                }
            }
        }
        // Loaded before the bytes are copied: the writer writes records
        // before it moves the head past them, so a copy taken afterwards
        // holds at least this much (loaded after, it could claim records
        // the copy missed).
        let written = self.written();
        let m = self.map(self.copy_reads.then_some(written))?;
        let valid = if m.is_live() { u64::MAX } else { written };
        if (m.bytes().len() as u64) < end || valid < end {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment is shorter than the index says",
            ));
        }
        *slot = Some((Self::cache(self.sealed(), m.clone()), valid));
        Ok((m, valid))
    }

    /// How to keep view `m` of a segment that is `sealed` or not: a sealed
    /// segment's memory map is held weakly. A copy (see `copy_reads`) is
    /// always kept, since making it again reads the whole file.
    fn cache(sealed: bool, m: Mapping) -> CachedView {
        if sealed && m.is_live() {
            CachedView::Released(m.downgrade())
        } else {
            CachedView::Held(m)
        }
    }

    /// Forgets the cached view (after the file was rewritten in place).
    pub fn invalidate_view(&self) {
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{Fs, OpenMode, StdFs};

    fn cached(seg: &Segment) -> Option<Mapping> {
        let slot = seg.view.lock().unwrap();
        slot.as_ref().and_then(|(c, _)| c.get())
    }

    /// A segment of 8 KiB of 7s in `dir`, written up to its end.
    fn segment(dir: &tempfile::TempDir, copy_reads: bool) -> Segment {
        let path = dir.path().join("seg");
        let file = StdFs.open(&path, OpenMode::CreateNew).unwrap();
        file.write_at(&[7u8; 8192], 0).unwrap();
        let seg = Segment::new(1, path, file.into()).with_copy_reads(copy_reads);
        seg.set_written(8192);
        seg
    }

    #[test]
    fn a_sealed_segment_keeps_its_pages_mapped_only_while_a_reader_holds_them() {
        let dir = tempfile::tempdir().unwrap();
        let seg = segment(&dir, false);

        // The segment being written keeps its view for the next reader.
        drop(seg.view(4096).unwrap());
        assert!(cached(&seg).is_some(), "active segment's view is kept");

        // Sealed: the view lives only as long as a reader holds it.
        let (held, _) = seg.view(8192).unwrap();
        seg.set_sealed();
        assert!(cached(&seg).is_some(), "a reader still holds it");
        drop(held);
        assert!(cached(&seg).is_none(), "released with its last reader");

        // A later reader maps it again and sees the same bytes.
        let (again, _) = seg.view(8192).unwrap();
        assert_eq!(&again.bytes()[..8192], &[7u8; 8192][..]);
        drop(again);
        assert!(cached(&seg).is_none());
    }

    #[test]
    fn a_copied_view_is_kept_even_when_sealed() {
        // Copy reads (a read-only open beside a live writer) read the whole
        // file to make a view: releasing it would read it again per call.
        let dir = tempfile::tempdir().unwrap();
        let seg = segment(&dir, true);
        seg.set_sealed();
        drop(seg.view(8192).unwrap());
        assert!(cached(&seg).is_some());
    }
}
