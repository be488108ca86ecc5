//! The file-system seam: every byte the WAL reads or writes goes through [`Fs`]
//! and [`FsFile`], so tests can swap in [`FaultFs`](crate::fault::FaultFs) and
//! inject torn writes, lost unsynced data, bit flips, EIO and ENOSPC.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; the file must not exist yet.
    CreateNew,
}

/// A read-only view of a file's bytes.
#[derive(Clone)]
pub struct Mapping {
    bytes: Arc<dyn Deref<Target = [u8]> + Send + Sync>,
    live: bool,
}

impl Mapping {
    /// Wraps bytes. `live` says whether later writes to the file show through
    /// this view (true for a shared memory map, false for a copy).
    pub fn new(bytes: Arc<dyn Deref<Target = [u8]> + Send + Sync>, live: bool) -> Mapping {
        Mapping { bytes, live }
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether writes made after mapping are visible through this view.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// A handle that does not keep the bytes mapped (or allocated).
    pub(crate) fn downgrade(&self) -> WeakMapping {
        WeakMapping {
            bytes: Arc::downgrade(&self.bytes),
            live: self.live,
        }
    }
}

/// A [`Mapping`] that is released once no strong handle is left.
pub(crate) struct WeakMapping {
    bytes: std::sync::Weak<dyn Deref<Target = [u8]> + Send + Sync>,
    live: bool,
}

impl WeakMapping {
    /// The mapping, if something still holds it.
    pub(crate) fn upgrade(&self) -> Option<Mapping> {
        Some(Mapping {
            bytes: self.bytes.upgrade()?,
            live: self.live,
        })
    }
}

/// An open file.
#[allow(clippy::len_without_is_empty)] // an io::Result length is not a collection size
pub trait FsFile: Send + Sync {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; a short file is an `UnexpectedEof` error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes written data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Reserves `len` bytes of zeros on disk, extending the file to `len`.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Maps the whole file for reading.
    fn map(&self) -> io::Result<Mapping>;
}

/// A file system: the real one ([`StdFs`]) or a test double.
pub trait Fs: Send + Sync {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries in `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens `path`.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, deletes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an advisory lock on `dir`, exclusive or shared. Fails with
    /// `WouldBlock` if a conflicting lock is held. Dropping the guard releases it.
    fn lock_dir(&self, dir: &Path, exclusive: bool) -> io::Result<Box<dyn Send + Sync>>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

struct StdFile(File);

struct EmptyBytes;
impl Deref for EmptyBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &[]
    }
}

impl FsFile for StdFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        positional::read_exact_at(&self.0, buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        positional::write_all_at(&self.0, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        reserve(&self.0, len)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn map(&self) -> io::Result<Mapping> {
        if self.len()? == 0 {
            return Ok(Mapping::new(Arc::new(EmptyBytes), false));
        }
        // SAFETY: the WAL holds an exclusive lock on its directory, so no other
        // process truncates the file under the map; our own code never shrinks a
        // mapped file below bytes it reads.
        let map = unsafe { memmap2::Mmap::map(&self.0)? };
        Ok(Mapping::new(Arc::new(map), true))
    }
}

/// Reserves `len` bytes for `file` with `fallocate(2)`, so a full disk fails
/// here rather than at a later write.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn reserve(file: &File, len: u64) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    let len_off = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
    // SAFETY: plain syscall on a file descriptor we own.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len_off) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        // File systems without fallocate get a sparse file of the right size.
        return file.set_len(len);
    }
    Err(err)
}

/// Portable reservation: extend the file to `len`. The caller zero-fills the
/// file with real writes and fsyncs it, and those writes are what allocate
/// the blocks (and fail with `ENOSPC` on a full disk).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn reserve(file: &File, len: u64) -> io::Result<()> {
    if file.metadata()?.len() < len {
        file.set_len(len)?;
    }
    Ok(())
}

/// Positional reads and writes (`pread`/`pwrite` on Unix, `seek_read`/
/// `seek_write` on Windows).
mod positional {
    use std::fs::File;
    use std::io;

    #[cfg(unix)]
    pub fn read_exact_at(f: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(f, buf, offset)
    }

    #[cfg(unix)]
    pub fn write_all_at(f: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(f, buf, offset)
    }

    #[cfg(windows)]
    pub fn read_exact_at(f: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            match f.seek_read(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    #[cfg(windows)]
    pub fn write_all_at(f: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        use std::os::windows::fs::FileExt;
        while !buf.is_empty() {
            match f.seek_write(buf, offset) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Fs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        let mut o = OpenOptions::new();
        match mode {
            OpenMode::Read => o.read(true),
            OpenMode::ReadWrite => o.read(true).write(true),
            OpenMode::CreateNew => o.read(true).write(true).create_new(true),
        };
        Ok(Box::new(StdFile(o.open(path)?)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock_dir(&self, dir: &Path, exclusive: bool) -> io::Result<Box<dyn Send + Sync>> {
        let path = dir.join("LOCK");
        let file = if exclusive {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?
        } else {
            match File::open(&path) {
                Ok(f) => f,
                // No writer has ever opened this directory, so none holds it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Box::new(())),
                Err(e) => return Err(e),
            }
        };
        let res = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match res {
            Ok(()) => Ok(Box::new(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "directory lock is held",
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}
