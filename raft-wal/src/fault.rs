//! An in-memory file system that injects faults, for testing code built on the WAL.
//!
//! [`FaultFs`] keeps two copies of every file and directory: what the process
//! sees (the page cache) and what survives a crash (made durable by
//! `sync_data` for file bytes and `sync_dir` for names). On top of that it can:
//!
//! - stop the "process" at the N-th mutating operation, optionally tearing that
//!   write after a given number of bytes ([`FaultFs::crash_at_op`]);
//! - simulate the crash itself, losing unsynced bytes and/or unsynced names
//!   ([`FaultFs::crash`]);
//! - fail the next operation of a kind with an errno such as `EIO` or
//!   `ENOSPC` ([`FaultFs::fail_next`]), or cap the space of the whole disk
//!   ([`FaultFs::set_space_limit`]);
//! - flip a bit of a file on "disk" ([`FaultFs::flip_bit`]).
//!
//! The model assumes unsynced writes to one file reach the disk in order (a
//! crash keeps all or none of them, the last possibly torn), which is how
//! append-only files behave on ext4 and XFS in practice.
//!
//! ```
//! use std::sync::Arc;
//! use raft_wal::fault::{CrashMode, FaultFs, FaultOp};
//! use raft_wal::{Error, Options, Wal};
//!
//! let fs = FaultFs::new();
//! let mut wal = Wal::open_with_fs(Arc::new(fs.clone()), "/wal", Options::default()).unwrap();
//! wal.append(1, 1, b"synced").unwrap();
//! wal.sync().unwrap();
//! wal.append(2, 1, b"not synced").unwrap();
//! fs.fail_next(FaultOp::Sync, libc::EIO);
//! assert!(wal.sync().is_err());
//! assert!(matches!(wal.append(3, 1, b"x"), Err(Error::Poisoned { .. })));
//! drop(wal);
//!
//! fs.crash(CrashMode::LOSE_UNSYNCED); // power cut
//! let wal = Wal::open_with_fs(Arc::new(fs.clone()), "/wal", Options::default()).unwrap();
//! assert_eq!(wal.last_index(), 1);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{Fs, FsFile, Mapping, OpenMode};

/// Kinds of operation a fault can target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// `write_at`.
    Write,
    /// `sync_data`.
    Sync,
    /// `read_at` and `map`.
    Read,
    /// `allocate` (preallocation).
    Allocate,
    /// `sync_dir`.
    SyncDir,
    /// `rename`.
    Rename,
}

/// What survives [`FaultFs::crash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashMode {
    /// Unsynced file bytes reached the disk (all of them, in order).
    pub keep_unsynced_data: bool,
    /// Unsynced directory changes (create, rename, remove) reached the disk.
    pub keep_unsynced_names: bool,
}

impl CrashMode {
    /// Nothing unsynced survives: the strictest model of a power cut.
    pub const LOSE_UNSYNCED: CrashMode = CrashMode {
        keep_unsynced_data: false,
        keep_unsynced_names: false,
    };
    /// Everything written survives (a process kill with the kernel still up).
    pub const KEEP_UNSYNCED: CrashMode = CrashMode {
        keep_unsynced_data: true,
        keep_unsynced_names: true,
    };
}

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
    allocated: u64,
}

#[derive(Default)]
struct Dir {
    names: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
}

#[derive(Default)]
struct State {
    generation: u64,
    dirs: BTreeMap<PathBuf, Dir>,
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    mutating_ops: u64,
    crash_at_op: Option<(u64, Option<usize>)>,
    crashed: bool,
    fail_next: Vec<(FaultOp, i32)>,
    space_limit: Option<u64>,
    locks: HashMap<PathBuf, (bool, usize)>,
}

/// A fault-injecting in-memory file system. Cloning gives another handle to
/// the same disk.
#[derive(Clone, Default)]
pub struct FaultFs {
    state: Arc<Mutex<State>>,
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn crashed_err() -> io::Error {
    io::Error::other("simulated crash: the process is gone")
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let parent = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    Ok((parent.to_path_buf(), name.to_string_lossy().into_owned()))
}

impl State {
    /// Bookkeeping for every operation: stale handles, crashes, one-shot faults.
    fn enter(&mut self, generation: u64, op: Option<FaultOp>, mutating: bool) -> io::Result<()> {
        if generation != self.generation || self.crashed {
            return Err(crashed_err());
        }
        if let Some(op) = op {
            if let Some(pos) = self.fail_next.iter().position(|(o, _)| *o == op) {
                let (_, code) = self.fail_next.remove(pos);
                return Err(errno(code));
            }
        }
        if mutating {
            if let Some((at, _)) = self.crash_at_op {
                if self.mutating_ops >= at {
                    self.crashed = true;
                    return Err(crashed_err());
                }
            }
            self.mutating_ops += 1;
        }
        Ok(())
    }

    fn used_bytes(&self) -> u64 {
        self.inodes
            .values()
            .map(|i| (i.data.len() as u64).max(i.allocated))
            .sum()
    }

    fn dir(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.dirs
            .get_mut(dir)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such directory"))
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (parent, name) = split(path)?;
        self.dirs
            .get(&parent)
            .and_then(|d| d.names.get(&name).copied())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    /// Room left for `extra` more bytes under the space limit.
    fn room(&self, extra: u64) -> u64 {
        match self.space_limit {
            None => extra,
            Some(limit) => limit.saturating_sub(self.used_bytes()).min(extra),
        }
    }
}

impl FaultFs {
    /// A new, empty disk.
    pub fn new() -> FaultFs {
        FaultFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of mutating operations (writes, syncs, allocations, directory
    /// changes) performed so far.
    pub fn mutating_ops(&self) -> u64 {
        self.lock().mutating_ops
    }

    /// The process "dies" at mutating operation number `op` (0-based): that
    /// operation and everything after it fail until [`crash`](Self::crash).
    /// If that operation is a write and `torn_bytes` is set, its first
    /// `torn_bytes` bytes land in the page cache before the failure.
    pub fn crash_at_op(&self, op: u64, torn_bytes: Option<usize>) {
        self.lock().crash_at_op = Some((op, torn_bytes));
    }

    /// Simulates a crash and restart: every open handle goes stale, locks are
    /// released, and unsynced state is kept or lost as `mode` says.
    pub fn crash(&self, mode: CrashMode) {
        let mut s = self.lock();
        s.generation += 1;
        s.crashed = false;
        s.crash_at_op = None;
        s.fail_next.clear();
        s.locks.clear();
        for dir in s.dirs.values_mut() {
            if mode.keep_unsynced_names {
                dir.durable = dir.names.clone();
            } else {
                dir.names = dir.durable.clone();
            }
        }
        let live: std::collections::HashSet<u64> = s
            .dirs
            .values()
            .flat_map(|d| d.names.values().copied())
            .collect();
        s.inodes.retain(|ino, _| live.contains(ino));
        for inode in s.inodes.values_mut() {
            if mode.keep_unsynced_data {
                inode.durable = inode.data.clone();
            } else {
                inode.data = inode.durable.clone();
            }
            inode.allocated = inode.allocated.min(inode.data.len() as u64);
        }
    }

    /// The next operation of kind `op` fails with OS error `code` (e.g.
    /// `libc::EIO`, `libc::ENOSPC`). Several may be queued.
    pub fn fail_next(&self, op: FaultOp, code: i32) {
        self.lock().fail_next.push((op, code));
    }

    /// Caps the bytes all files may occupy; growth beyond it fails with ENOSPC.
    pub fn set_space_limit(&self, bytes: Option<u64>) {
        self.lock().space_limit = bytes;
    }

    /// Bytes currently occupied by all files.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes()
    }

    /// Flips one bit of the file at `path`, on disk and in the page cache.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let mut s = self.lock();
        let ino = s.lookup(path)?;
        let inode = s.inodes.get_mut(&ino).expect("dir entry points to inode");
        let at = offset as usize;
        for buf in [&mut inode.data, &mut inode.durable] {
            if let Some(b) = buf.get_mut(at) {
                *b ^= 1 << (bit % 8);
            }
        }
        Ok(())
    }

    /// The page-cache bytes of the file at `path`.
    pub fn read_all(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.lock();
        let ino = s.lookup(path)?;
        Ok(s.inodes[&ino].data.clone())
    }
}

struct FaultFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    generation: u64,
    writable: bool,
}

impl FaultFile {
    fn with<T>(
        &self,
        op: Option<FaultOp>,
        mutating: bool,
        f: impl FnOnce(&mut State, &mut Inode) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if mutating && !self.writable {
            return Err(errno(libc::EBADF));
        }
        s.enter(self.generation, op, mutating)?;
        let mut inode = s
            .inodes
            .remove(&self.ino)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "file was removed"))?;
        let res = f(&mut s, &mut inode);
        s.inodes.insert(self.ino, inode);
        res
    }
}

fn write_into(data: &mut Vec<u8>, buf: &[u8], offset: u64) {
    let end = offset as usize + buf.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset as usize..end].copy_from_slice(buf);
}

impl FsFile for FaultFile {
    fn len(&self) -> io::Result<u64> {
        self.with(None, false, |_, i| Ok(i.data.len() as u64))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with(Some(FaultOp::Read), false, |_, i| {
            let start = offset as usize;
            let src = i
                .data
                .get(start..start + buf.len())
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "short file"))?;
            buf.copy_from_slice(src);
            Ok(())
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let torn = {
            let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match s.crash_at_op {
                Some((at, torn)) if s.mutating_ops == at && !s.crashed => torn,
                _ => None,
            }
        };
        let res = self.with(Some(FaultOp::Write), true, |s, i| {
            let end = offset + buf.len() as u64;
            let grow = end.saturating_sub((i.data.len() as u64).max(i.allocated));
            let room = s.room(grow);
            if room < grow {
                // Write what fits, then fail like a real short write + ENOSPC.
                let fits = buf.len() - (grow - room) as usize;
                write_into(&mut i.data, &buf[..fits], offset);
                return Err(errno(libc::ENOSPC));
            }
            write_into(&mut i.data, buf, offset);
            Ok(())
        });
        if let (Err(_), Some(n)) = (&res, torn) {
            // The crash point was this write: a prefix of it reached the page cache.
            let s = &mut *self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = s.inodes.get_mut(&self.ino) {
                write_into(&mut i.data, &buf[..n.min(buf.len())], offset);
            }
        }
        res
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(Some(FaultOp::Sync), true, |_, i| {
            i.durable = i.data.clone();
            Ok(())
        })
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.with(Some(FaultOp::Allocate), true, |s, i| {
            let grow = len.saturating_sub((i.data.len() as u64).max(i.allocated));
            if s.room(grow) < grow {
                return Err(errno(libc::ENOSPC));
            }
            i.allocated = i.allocated.max(len);
            if (i.data.len() as u64) < len {
                i.data.resize(len as usize, 0);
            }
            Ok(())
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(None, true, |s, i| {
            let grow = len.saturating_sub((i.data.len() as u64).max(i.allocated));
            if s.room(grow) < grow {
                return Err(errno(libc::ENOSPC));
            }
            i.data.resize(len as usize, 0);
            i.allocated = i.allocated.min(len);
            Ok(())
        })
    }

    fn map(&self) -> io::Result<Mapping> {
        self.with(Some(FaultOp::Read), false, |_, i| {
            Ok(Mapping::new(Arc::new(i.data.clone()), false))
        })
    }
}

impl Fs for FaultFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let generation = s.generation;
        s.enter(generation, None, false)?;
        for d in dir.ancestors() {
            s.dirs.entry(d.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut s = self.lock();
        let generation = s.generation;
        s.enter(generation, None, false)?;
        Ok(s.dir(dir)?.names.keys().cloned().collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        let mut s = self.lock();
        let generation = s.generation;
        let ino = if mode == OpenMode::CreateNew {
            s.enter(generation, None, true)?;
            let (parent, name) = split(path)?;
            if s.dir(&parent)?.names.contains_key(&name) {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
            }
            s.next_ino += 1;
            let ino = s.next_ino;
            s.inodes.insert(ino, Inode::default());
            s.dir(&parent)?.names.insert(name, ino);
            ino
        } else {
            s.enter(generation, None, false)?;
            s.lookup(path)?
        };
        Ok(Box::new(FaultFile {
            state: self.state.clone(),
            ino,
            generation,
            writable: mode != OpenMode::Read,
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let generation = s.generation;
        s.enter(generation, Some(FaultOp::Rename), true)?;
        let ino = s.lookup(from)?;
        let (fp, fname) = split(from)?;
        let (tp, tname) = split(to)?;
        s.dir(&tp)?;
        s.dir(&fp)?.names.remove(&fname);
        s.dir(&tp)?.names.insert(tname, ino);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let generation = s.generation;
        s.enter(generation, None, true)?;
        s.lookup(path)?;
        let (parent, name) = split(path)?;
        s.dir(&parent)?.names.remove(&name);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        let generation = s.generation;
        s.enter(generation, Some(FaultOp::SyncDir), true)?;
        let d = s.dir(dir)?;
        d.durable = d.names.clone();
        Ok(())
    }

    fn lock_dir(&self, dir: &Path, exclusive: bool) -> io::Result<Box<dyn Send + Sync>> {
        let mut s = self.lock();
        let generation = s.generation;
        s.enter(generation, None, false)?;
        s.dir(dir)?;
        let slot = s.locks.entry(dir.to_path_buf()).or_insert((false, 0));
        if slot.1 > 0 && (exclusive || slot.0) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "directory lock is held",
            ));
        }
        *slot = (exclusive, slot.1 + 1);
        Ok(Box::new(FaultLock {
            state: self.state.clone(),
            dir: dir.to_path_buf(),
            generation,
        }))
    }
}

struct FaultLock {
    state: Arc<Mutex<State>>,
    dir: PathBuf,
    generation: u64,
}

impl Drop for FaultLock {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.generation != self.generation {
            return;
        }
        if let Some(slot) = s.locks.get_mut(&self.dir) {
            slot.1 -= 1;
            if slot.1 == 0 {
                s.locks.remove(&self.dir);
            }
        }
    }
}
