//! Error values returned by the WAL.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What was wrong with a record, segment or meta file that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        }
    }
}

/// Every error the WAL can return.
#[derive(Debug)]
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
    /// [`sync`](crate::Wal::sync); the handle stays usable.
    NoSpace {
        /// The file that could not grow.
        path: PathBuf,
    },
    /// Data on disk failed validation. The open fails rather than drop data that
    /// may have been acknowledged.
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
        /// The first failure.
        cause: String,
    },
    /// The caller asked for something the log cannot do (a non-contiguous append,
    /// a truncation outside the log, an oversized entry...). Nothing was changed.
    InvalidArgument(String),
    /// A read asked for indexes outside `[first_index, last_index]`.
    OutOfRange {
        /// Requested index.
        index: u64,
        /// First index held.
        first_index: u64,
        /// Last index held.
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
            Error::Poisoned { cause } => {
                write!(f, "WAL handle is poisoned by an earlier failure: {cause}")
            }
            Error::InvalidArgument(msg) => write!(f, "invalid WAL request: {msg}"),
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
            Error::Io { source, .. } => Some(source),
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
}

/// True if `err` means the device is out of space.
pub(crate) fn is_no_space(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ENOSPC) || err.kind() == io::ErrorKind::StorageFull
}
