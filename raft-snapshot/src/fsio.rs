//! `std::io` adapters over the positional file API of [`raft_wal::fs`].

use std::io::{self, Read, Seek, SeekFrom, Write};

use raft_wal::fs::FsFile;

/// Bytes gathered before one `write_at`.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Bytes written between two `fdatasync`s of a file being written. A large
/// snapshot otherwise leaves up to its whole size in dirty pages for the
/// final sync, and on a journaling file system a WAL `fdatasync` on the same
/// disk can wait behind that flush for seconds (a committed write stalls).
/// Syncing as it goes keeps each flush, and so each such wait, short.
pub(crate) const SYNC_EVERY_BYTES: u64 = 8 << 20;

/// A buffered, seekable writer over an [`FsFile`].
pub(crate) struct FileWriter {
    file: Box<dyn FsFile>,
    /// File offset of `buf[0]`.
    pos: u64,
    buf: Vec<u8>,
    /// Bytes written to the file since its last `fdatasync`.
    unsynced: u64,
}

impl FileWriter {
    pub fn new(file: Box<dyn FsFile>) -> FileWriter {
        FileWriter {
            file,
            pos: 0,
            buf: Vec::with_capacity(WRITE_BUFFER_BYTES),
            unsynced: 0,
        }
    }

    fn write_out(&mut self, data: &[u8], at: u64) -> io::Result<()> {
        self.file.write_at(data, at)?;
        self.unsynced += data.len() as u64;
        if self.unsynced >= SYNC_EVERY_BYTES {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(())
    }

    /// Writes out the buffer and returns the file.
    pub fn into_file(mut self) -> io::Result<Box<dyn FsFile>> {
        self.flush()?;
        Ok(self.file)
    }
}

impl Write for FileWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > WRITE_BUFFER_BYTES {
            self.flush()?;
        }
        if data.len() >= WRITE_BUFFER_BYTES {
            self.write_out(data, self.pos)?;
            self.pos += data.len() as u64;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let buf = std::mem::take(&mut self.buf);
            let written = self.write_out(&buf, self.pos);
            self.buf = buf;
            written?;
            self.pos += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

impl Seek for FileWriter {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.flush()?;
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::Current(d) => self.pos.checked_add_signed(d).ok_or_else(bad_seek)?,
            SeekFrom::End(d) => self
                .file
                .len()?
                .checked_add_signed(d)
                .ok_or_else(bad_seek)?,
        };
        Ok(self.pos)
    }
}

fn bad_seek() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "seek out of range")
}

/// A sequential reader over a snapshot file in a
/// [`SnapshotStore`](crate::SnapshotStore) (obtained from
/// [`open_snapshot`](crate::SnapshotStore::open_snapshot)).
pub struct FileReader {
    file: Box<dyn FsFile>,
    pos: u64,
    len: u64,
}

impl FileReader {
    pub(crate) fn new(file: Box<dyn FsFile>, len: u64) -> FileReader {
        FileReader { file, pos: 0, len }
    }
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.len - self.pos) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.file.read_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    /// A file that counts bytes written and syncs.
    struct Counting {
        written: Arc<AtomicU64>,
        syncs: Arc<AtomicU64>,
    }

    impl FsFile for Counting {
        fn len(&self) -> io::Result<u64> {
            Ok(self.written.load(Ordering::Relaxed))
        }
        fn read_at(&self, _: &mut [u8], _: u64) -> io::Result<()> {
            Err(io::ErrorKind::Unsupported.into())
        }
        fn write_at(&self, buf: &[u8], _: u64) -> io::Result<()> {
            self.written.fetch_add(buf.len() as u64, Ordering::Relaxed);
            Ok(())
        }
        fn sync_data(&self) -> io::Result<()> {
            self.syncs.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        fn allocate(&self, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn set_len(&self, _: u64) -> io::Result<()> {
            Ok(())
        }
        fn map(&self) -> io::Result<raft_wal::fs::Mapping> {
            Err(io::ErrorKind::Unsupported.into())
        }
    }

    #[test]
    fn a_large_file_is_synced_as_it_is_written() {
        let written = Arc::new(AtomicU64::new(0));
        let syncs = Arc::new(AtomicU64::new(0));
        let mut w = FileWriter::new(Box::new(Counting {
            written: written.clone(),
            syncs: syncs.clone(),
        }));
        let chunk = vec![7u8; 128 << 10];
        for _ in 0..(40 << 20) / chunk.len() {
            w.write_all(&chunk).unwrap();
        }
        w.write_all(&vec![1u8; 3 << 20]).unwrap();
        w.into_file().unwrap();
        assert_eq!(written.load(Ordering::Relaxed), (43 << 20) as u64);
        // One sync per 8 MiB written: no more than 8 MiB is ever dirty.
        assert_eq!(syncs.load(Ordering::Relaxed), 5);
    }
}
