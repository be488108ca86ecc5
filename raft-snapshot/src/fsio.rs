//! `std::io` adapters over the positional file API of [`raft_wal::fs`].

use std::io::{self, Read, Seek, SeekFrom, Write};

use raft_wal::fs::FsFile;

/// Bytes gathered before one `write_at`.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// A buffered, seekable writer over an [`FsFile`].
pub(crate) struct FileWriter {
    file: Box<dyn FsFile>,
    /// File offset of `buf[0]`.
    pos: u64,
    buf: Vec<u8>,
}

impl FileWriter {
    pub fn new(file: Box<dyn FsFile>) -> FileWriter {
        FileWriter {
            file,
            pos: 0,
            buf: Vec::with_capacity(WRITE_BUFFER_BYTES),
        }
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
            self.file.write_at(data, self.pos)?;
            self.pos += data.len() as u64;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_at(&self.buf, self.pos)?;
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
