//! The operator's repair of a damaged WAL directory.

use std::path::Path;

use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::recovery::{self, Access, RecoveryMode, RecoveryReport};

/// Repairs the WAL in `dir` after an open failed with
/// [`Error::Corruption`]: keeps everything before the first damaged record
/// and cuts the rest, like [`RecoveryMode::TruncateCorruptTail`], but first
/// keeps a copy of every file it changes or removes as `NAME.broken` next to
/// it (the log ignores those files; delete them once you are done).
///
/// Takes the directory's exclusive lock, so it fails with [`Error::Locked`]
/// while the log is open. A sound log is left as it is. Damage that cutting
/// cannot fix (a damaged meta file, entries missing at the start) is still an
/// error. The report says what was cut ([`RecoveryReport::dropped`],
/// [`RecoveryReport::torn_tail`]).
///
/// ```
/// use raft_wal::{fs::StdFs, Log, LogOptions, RecoveryMode};
/// let dir = tempfile::tempdir().unwrap();
/// let log = Log::open(dir.path(), LogOptions::default()).unwrap();
/// log.append_batch([b"a", b"b"]).unwrap();
/// log.sync().unwrap();
/// drop(log);
/// // Damage the second entry's record on disk.
/// let seg = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path())
///     .find(|p| p.extension().is_some_and(|x| x == "wal")).unwrap();
/// let mut bytes = std::fs::read(&seg).unwrap();
/// let at = bytes.len() - 1;
/// bytes[at] ^= 1;
/// std::fs::write(&seg, &bytes).unwrap();
///
/// let strict = LogOptions::default().recovery_mode(RecoveryMode::Strict);
/// assert!(Log::open(dir.path(), strict.clone()).is_err());
/// let report = raft_wal::repair(&StdFs, dir.path()).unwrap();
/// assert_eq!(report.last_index, 1);
/// let log = Log::open(dir.path(), strict).unwrap();
/// assert_eq!(log.last_index(), 1);
/// ```
pub fn repair(fs: &dyn Fs, dir: &Path) -> Result<RecoveryReport> {
    let _lock = fs.lock_dir(dir, true).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock => Error::Locked {
            dir: dir.to_path_buf(),
        },
        _ => Error::io("lock", dir, e),
    })?;
    let rec = recovery::recover(
        fs,
        dir,
        RecoveryMode::TruncateCorruptTail,
        Access::Repair,
        None,
    )?;
    if rec.report.dropped.is_some() || rec.report.torn_tail.is_some() {
        tracing::warn!(
            dir = %dir.display(),
            dropped = ?rec.report.dropped,
            torn_tail = ?rec.report.torn_tail,
            "repaired WAL"
        );
    }
    Ok(rec.report)
}
