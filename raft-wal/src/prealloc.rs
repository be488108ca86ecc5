//! Preparing the next segment file ahead of time, off the append path.
//!
//! The file is reserved (`fallocate` on Linux, so a full disk fails fast; the
//! zero-fill does the reserving elsewhere) and then
//! filled with real zeros and fsynced. Appends into a segment then overwrite
//! blocks that already exist, so their `fdatasync` writes only data, never
//! extent or size metadata. Filling 64 MiB takes a while, so by default it runs
//! on a background thread and the next rotation just picks the file up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::fs::{Fs, FsFile, OpenMode};
use crate::recovery::PREALLOC_FILE;

const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// State of the next segment file.
pub(crate) enum Prealloc {
    /// Nothing prepared.
    Idle,
    /// Prepared and durable.
    Ready(Box<dyn FsFile>),
    /// Being prepared by a background thread.
    Pending(JoinHandle<Result<Box<dyn FsFile>>>),
}

/// Creates, reserves, zero-fills and fsyncs `DIR/prealloc.tmp`, then fsyncs
/// the directory. On error the partial file is removed.
pub(crate) fn prepare(fs: &dyn Fs, dir: &Path, size_bytes: u64) -> Result<Box<dyn FsFile>> {
    let path = dir.join(PREALLOC_FILE);
    let _ = fs.remove_file(&path);
    let file = fs
        .open(&path, OpenMode::CreateNew)
        .map_err(|e| Error::io("create", &path, e))?;
    if size_bytes == 0 {
        // No preallocation: the segment grows as it is written. Its name is
        // made durable by the directory sync after the rename.
        return Ok(file);
    }
    let filled = (|| {
        file.allocate(size_bytes)
            .map_err(|e| Error::io("fallocate", &path, e))?;
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let mut off = 0u64;
        while off < size_bytes {
            let n = (size_bytes - off).min(ZERO_CHUNK_BYTES as u64) as usize;
            file.write_at(&zeros[..n], off)
                .map_err(|e| Error::io("write", &path, e))?;
            off += n as u64;
        }
        file.sync_data()
            .map_err(|e| Error::io("fdatasync", &path, e))?;
        fs.sync_dir(dir).map_err(|e| Error::io("sync_dir", dir, e))
    })();
    match filled {
        Ok(()) => Ok(file),
        Err(err) => {
            drop(file);
            let _ = fs.remove_file(&path);
            Err(err)
        }
    }
}

/// Starts preparing on a background thread.
pub(crate) fn spawn(fs: Arc<dyn Fs>, dir: PathBuf, size_bytes: u64) -> Prealloc {
    let spawned = std::thread::Builder::new()
        .name("wal-prealloc".into())
        .spawn(move || prepare(fs.as_ref(), &dir, size_bytes));
    match spawned {
        Ok(handle) => Prealloc::Pending(handle),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the preallocation thread");
            Prealloc::Idle
        }
    }
}

impl Prealloc {
    /// Waits for a background preparation, if any. Its failure is logged and
    /// turns into `Idle`: the caller then prepares inline, where errors are
    /// reported to the user properly.
    pub(crate) fn settle(self) -> Prealloc {
        match self {
            Prealloc::Pending(handle) => match handle.join() {
                Ok(Ok(file)) => Prealloc::Ready(file),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "background segment preallocation failed");
                    Prealloc::Idle
                }
                Err(_) => {
                    tracing::error!("background segment preallocation panicked");
                    Prealloc::Idle
                }
            },
            other => other,
        }
    }
}
