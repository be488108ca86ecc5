//! Read-only inspection of a WAL directory, for tools such as `raft-node wal dump`.

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::Record;
use crate::fs::Fs;
use crate::recovery::{self, Access, RecoveryMode, RecoveryReport};

/// Replays the WAL in `dir` without changing anything, calling `visit` for
/// every valid record with its file and offset, and verifying every checksum.
/// Takes a shared lock, so it fails with [`Error::Locked`] while a writer has
/// the WAL open.
///
/// ```
/// use raft_wal::{fs::StdFs, Log, Record};
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), Default::default()).unwrap();
/// log.append(b"x").unwrap();
/// log.sync().unwrap();
/// drop(log);
/// let mut entries = 0;
/// let report = raft_wal::inspect(&StdFs, dir.path(), &mut |_file, _offset, rec| {
///     if let Record::Entry { .. } = rec { entries += 1 }
/// }).unwrap();
/// assert_eq!((entries, report.last_index), (1, 1));
/// ```
pub fn inspect(
    fs: &dyn Fs,
    dir: &Path,
    visit: &mut dyn FnMut(&Path, u64, &Record<'_>),
) -> Result<RecoveryReport> {
    let _lock = fs.lock_dir(dir, false).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => Error::Locked {
            dir: dir.to_path_buf(),
        },
        _ => Error::io("lock", dir, e),
    })?;
    let rec = recovery::recover(
        fs,
        dir,
        RecoveryMode::TolerateTornTail,
        Access::ReadOnly,
        Some(visit),
    )?;
    Ok(rec.report)
}
