//! One segment file: its identity, write head and read view.

use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::fs::{FsFile, Mapping};

/// A segment file of the log.
pub(crate) struct Segment {
    /// Sequence number; segments form an unbroken sequence.
    pub seq: u64,
    /// Full path of the file.
    pub path: PathBuf,
    /// The open file.
    pub file: Box<dyn FsFile>,
    /// Bytes of valid records in the file (the write head).
    pub written: u64,
    /// A seal record ends the segment; nothing more is written to it.
    pub sealed: bool,
    /// Length of the file, tracked here so the write path never needs a
    /// `stat` (which would make the next fdatasync write the inode too).
    pub file_len: u64,
    /// Cached read view and how many bytes of it are valid (everything for a
    /// live memory map; the write head at copy time for a copied view).
    view: Mutex<Option<(Mapping, u64)>>,
}

impl Segment {
    pub fn new(seq: u64, path: PathBuf, file: Box<dyn FsFile>) -> Segment {
        Segment {
            seq,
            path,
            file,
            written: 0,
            sealed: false,
            file_len: 0,
            view: Mutex::new(None),
        }
    }

    /// A read view that shows at least the first `end` bytes of the file, and
    /// how many of its bytes are valid.
    pub fn view(&self, end: u64) -> io::Result<(Mapping, u64)> {
        let mut slot = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((m, valid)) = slot.as_ref() {
            if m.bytes().len() as u64 >= end && end <= *valid {
                return Ok((m.clone(), *valid));
            }
        }
        let m = self.file.map()?;
        let valid = if m.is_live() { u64::MAX } else { self.written };
        if (m.bytes().len() as u64) < end {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "segment is shorter than the index says",
            ));
        }
        *slot = Some((m.clone(), valid));
        Ok((m, valid))
    }

    /// Forgets the cached view (after the file was rewritten in place).
    pub fn invalidate_view(&self) {
        *self.view.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
