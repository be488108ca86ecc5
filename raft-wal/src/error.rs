//! Error values returned by the WAL.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What was wrong with a record, segment or meta file that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// The stored CRC32 does not match the record's header, payload and segment id.
    BadChecksum,
    /// A length field points past the end of the file (or past the record size limit).
    BadLength {
        /// The length the record claims.
        len: u64,
    },
    /// A record kind this version does not know.
    UnknownKind(u8),
    /// The record payload is too short or malformed for its kind.
    BadPayload,
    /// The first record of a segment is not a valid segment header.
    BadSegmentHeader,
    /// An entry index does not follow the previous one.
    IndexGap {
        /// The index replay expected next.
        expected: u64,
        /// The index found in the record.
        found: u64,
    },
    /// A segment in the middle of the sequence is missing.
    MissingSegment {
        /// Sequence number of the missing segment.
        seq: u64,
    },
    /// A segment other than the last one does not end with a seal record.
    Unsealed,
    /// The meta file (holding the first index) is damaged.
    BadMeta,
    /// A file name in the WAL directory that looks like a segment but cannot be parsed.
    BadFileName,
    /// The metadata value is not what the layer reading it expects (for the
    /// Raft layer: not an encoded hard state).
    BadMetadata,
}

impl fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptionKind::BadChecksum => write!(f, "checksum mismatch"),
            CorruptionKind::BadLength { len } => {
                write!(f, "record length {len} points past the end of the file")
            }
            CorruptionKind::UnknownKind(k) => write!(f, "unknown record kind {k}"),
            CorruptionKind::BadPayload => write!(f, "malformed record payload"),
            CorruptionKind::BadSegmentHeader => write!(f, "invalid segment header"),
            CorruptionKind::IndexGap { expected, found } => {
                write!(f, "entry index gap: expected {expected}, found {found}")
            }
            CorruptionKind::MissingSegment { seq } => write!(f, "segment {seq} is missing"),
            CorruptionKind::Unsealed => write!(f, "sealed segment has no seal record"),
            CorruptionKind::BadMeta => write!(f, "meta file is damaged"),
            CorruptionKind::BadFileName => write!(f, "unparseable segment file name"),
            CorruptionKind::BadMetadata => write!(f, "metadata value is not in the expected form"),
        }
    }
}

/// Every error the WAL can return.
///
/// Matching is by variant; new variants may be added in minor releases.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed. For writes and syncs this also poisons the handle.
    Io {
        /// What the WAL was doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The disk is full. The log is exactly as it was after the last successful
    /// [`sync`](crate::Log::sync); the handle stays usable.
    NoSpace {
        /// The file that could not grow.
        path: PathBuf,
    },
    /// Data on disk failed validation. The open fails rather than drop data that
    /// may have been acknowledged (see [`RecoveryMode`](crate::RecoveryMode)
    /// and [`repair`](crate::repair) for the alternatives).
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged record within `file`.
        offset: u64,
        /// What is wrong.
        kind: CorruptionKind,
    },
    /// Another handle (in this or another process) holds the directory's lock.
    Locked {
        /// The WAL directory.
        dir: PathBuf,
    },
    /// An earlier write or fsync failed; this handle refuses all further calls.
    /// Reopen the WAL to continue from what is durably on disk.
    Poisoned {
        /// What the WAL was doing when it failed (`"fdatasync"`, `"write"`...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The first failure: same [`kind`](io::Error::kind) and
        /// [`raw_os_error`](io::Error::raw_os_error) as the original error.
        source: io::Error,
    },
    /// The handle was opened read-only and a write was attempted.
    ReadOnly,
    /// The options passed to open are unusable; nothing was opened.
    InvalidOptions {
        /// Which option and why.
        reason: &'static str,
    },
    /// A Raft-layer append named an index other than the next one.
    NotNextIndex {
        /// The index given.
        index: u64,
        /// The index the log assigns next (`last_index + 1`).
        expected: u64,
    },
    /// An entry is larger than a record can hold.
    EntryTooLarge {
        /// Size of the entry.
        bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// A metadata value is larger than the slot holds.
    MetadataTooLarge {
        /// Size of the value.
        bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// A truncation or compaction boundary lies outside
    /// `[first_index, last_index + 1]`. Nothing was changed.
    BoundaryOutOfRange {
        /// The operation (`"truncate_from"`, `"compact_before"`...).
        op: &'static str,
        /// The boundary given.
        index: u64,
        /// First index held.
        first_index: u64,
        /// Last index held.
        last_index: u64,
    },
    /// A Raft-layer snapshot marker does not move forward (or has index 0).
    SnapshotMarkerNotNewer {
        /// The marker given.
        index: u64,
        /// The current marker's index (0: none).
        current: u64,
    },
    /// A read asked for indexes outside `[first_index, last_index]` (for a
    /// [`LogReader`](crate::LogReader): `[first_index, last_synced_index]`).
    OutOfRange {
        /// Requested index.
        index: u64,
        /// First index held.
        first_index: u64,
        /// Last index held (or visible).
        last_index: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => {
                write!(
                    f,
                    "WAL I/O error during {op} on {}: {source}",
                    path.display()
                )
            }
            Error::NoSpace { path } => {
                write!(f, "no space left on device writing {}", path.display())
            }
            Error::Corruption { file, offset, kind } => write!(
                f,
                "WAL corruption in {} at offset {offset}: {kind}",
                file.display()
            ),
            Error::Locked { dir } => write!(
                f,
                "WAL directory {} is locked by another process or handle",
                dir.display()
            ),
            Error::Poisoned { op, path, source } => write!(
                f,
                "WAL handle is poisoned by an earlier failure during {op} on {}: {source}",
                path.display()
            ),
            Error::ReadOnly => write!(f, "the WAL was opened read-only"),
            Error::InvalidOptions { reason } => write!(f, "invalid WAL options: {reason}"),
            Error::NotNextIndex { index, expected } => write!(
                f,
                "append of index {index}, but the next index is {expected}"
            ),
            Error::EntryTooLarge { bytes, max_bytes } => write!(
                f,
                "entry of {bytes} bytes exceeds the limit of {max_bytes} bytes"
            ),
            Error::MetadataTooLarge { bytes, max_bytes } => write!(
                f,
                "metadata of {bytes} bytes exceeds the limit of {max_bytes} bytes"
            ),
            Error::BoundaryOutOfRange {
                op,
                index,
                first_index,
                last_index,
            } => write!(
                f,
                "{op}({index}) outside [{first_index}, {}]",
                last_index + 1
            ),
            Error::SnapshotMarkerNotNewer { index, current } => write!(
                f,
                "snapshot marker at index {index} is not newer than the current one at {current}"
            ),
            Error::OutOfRange {
                index,
                first_index,
                last_index,
            } => write!(
                f,
                "index {index} is outside the log [{first_index}, {last_index}]"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Poisoned { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    /// Wraps an I/O error, turning ENOSPC into [`Error::NoSpace`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        let path = path.into();
        if is_no_space(&source) {
            Error::NoSpace { path }
        } else {
            Error::Io { op, path, source }
        }
    }

    pub(crate) fn corruption(file: impl Into<PathBuf>, offset: u64, kind: CorruptionKind) -> Error {
        Error::Corruption {
            file: file.into(),
            offset,
            kind,
        }
    }

    /// True if this is a full disk ([`Error::NoSpace`]).
    ///
    /// ```
    /// let e = raft_wal::Error::NoSpace { path: "/wal/x".into() };
    /// assert!(e.is_no_space());
    /// ```
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::NoSpace { .. })
    }
}

/// The first failure that poisoned a handle, kept so that every later call
/// can return an [`Error::Poisoned`] with the same kind and OS error.
#[derive(Debug, Clone)]
pub(crate) struct PoisonCause {
    op: &'static str,
    path: PathBuf,
    kind: io::ErrorKind,
    raw_os_error: Option<i32>,
    message: String,
}

impl PoisonCause {
    pub(crate) fn of(err: &Error, dir: &std::path::Path) -> PoisonCause {
        match err {
            Error::Io { op, path, source } | Error::Poisoned { op, path, source } => PoisonCause {
                op,
                path: path.clone(),
                kind: source.kind(),
                raw_os_error: source.raw_os_error(),
                message: source.to_string(),
            },
            Error::NoSpace { path } => PoisonCause {
                op: "write",
                path: path.clone(),
                kind: io::ErrorKind::StorageFull,
                raw_os_error: enospc(),
                message: "no space left on device".into(),
            },
            other => PoisonCause {
                op: "wal",
                path: dir.to_path_buf(),
                kind: io::ErrorKind::Other,
                raw_os_error: None,
                message: other.to_string(),
            },
        }
    }

    pub(crate) fn to_error(&self) -> Error {
        let source = match self.raw_os_error {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(self.kind, self.message.clone()),
        };
        Error::Poisoned {
            op: self.op,
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(unix)]
fn enospc() -> Option<i32> {
    Some(libc::ENOSPC)
}

#[cfg(not(unix))]
fn enospc() -> Option<i32> {
    None
}

/// True if `err` means the device is out of space.
pub(crate) fn is_no_space(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::StorageFull || {
        #[cfg(unix)]
        {
            err.raw_os_error() == Some(libc::ENOSPC)
        }
        #[cfg(not(unix))]
        {
            false
        }
    }
}

/// The I/O error for "no space", as the OS reports it.
pub(crate) fn no_space_io_error() -> io::Error {
    match enospc() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::from(io::ErrorKind::StorageFull),
    }
}
