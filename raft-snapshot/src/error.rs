//! Error values returned by this crate.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What is wrong with a snapshot file or stream that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorruptionKind {
    /// The data ends before the header or body is complete.
    Truncated {
        /// Bytes the header says there should be (or that were being read).
        expected: u64,
        /// Bytes actually present.
        found: u64,
    },
    /// The first eight bytes are not the snapshot magic.
    BadMagic {
        /// The bytes found.
        found: [u8; 8],
    },
    /// The header's CRC32 does not match its contents.
    HeaderChecksum {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the header.
        computed: u32,
    },
    /// The header passed its checksum but a field is impossible.
    BadHeader(String),
    /// The CRC32 over the compressed body does not match the header.
    BodyChecksum {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the body.
        computed: u32,
    },
    /// The body decompressed to a different size than the header says, or
    /// the compressed frame ended before or after the recorded size.
    SizeMismatch {
        /// Which size: `"uncompressed"` or `"compressed"`.
        what: &'static str,
        /// Size recorded in the header.
        expected: u64,
        /// Size found.
        found: u64,
    },
    /// zstd rejected the body.
    Decompress(String),
    /// The file holds bytes after the body.
    TrailingData {
        /// Expected file length.
        expected: u64,
        /// Actual file length.
        found: u64,
    },
}

impl fmt::Display for CorruptionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptionKind::Truncated { expected, found } => {
                write!(f, "truncated: expected {expected} bytes, found {found}")
            }
            CorruptionKind::BadMagic { found } => {
                write!(f, "not a snapshot (bad magic {found:02x?})")
            }
            CorruptionKind::HeaderChecksum { stored, computed } => write!(
                f,
                "header checksum mismatch (stored {stored:08x}, computed {computed:08x})"
            ),
            CorruptionKind::BadHeader(msg) => write!(f, "malformed header: {msg}"),
            CorruptionKind::BodyChecksum { stored, computed } => write!(
                f,
                "body checksum mismatch (stored {stored:08x}, computed {computed:08x})"
            ),
            CorruptionKind::SizeMismatch {
                what,
                expected,
                found,
            } => write!(f, "{what} size is {found}, header says {expected}"),
            CorruptionKind::Decompress(msg) => write!(f, "zstd rejected the body: {msg}"),
            CorruptionKind::TrailingData { expected, found } => write!(
                f,
                "file is {found} bytes, header and body account for {expected}"
            ),
        }
    }
}

/// Every error this crate returns.
#[derive(Debug)]
pub enum Error {
    /// An I/O operation failed.
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved, when known.
        path: Option<PathBuf>,
        /// The underlying error.
        source: io::Error,
    },
    /// The disk is full. Nothing became visible; the temporary file was removed.
    NoSpace {
        /// The file that could not grow, when known.
        path: Option<PathBuf>,
    },
    /// A snapshot file or stream failed validation.
    Corruption {
        /// The damaged file, when reading from a file.
        path: Option<PathBuf>,
        /// What is wrong.
        kind: CorruptionKind,
    },
    /// The snapshot was written by a newer (or unknown) format version.
    UnsupportedVersion {
        /// The damaged or newer file, when reading from a file.
        path: Option<PathBuf>,
        /// Version found in the header.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
    /// Another handle holds the snapshot directory's lock.
    Locked {
        /// The directory.
        dir: PathBuf,
    },
    /// No snapshot with this index and term is in the store.
    NotFound {
        /// Requested last included index.
        index: u64,
        /// Requested last included term.
        term: u64,
    },
    /// The caller asked for something impossible; nothing was changed.
    InvalidArgument(String),
    /// A transfer chunk arrived at an offset the receiver cannot use yet.
    /// Nothing was written; resend from `expected`.
    ChunkOutOfOrder {
        /// The offset the receiver needs next.
        expected: u64,
        /// The offset of the chunk that arrived.
        found: u64,
    },
    /// A transfer chunk failed its own checksum (damaged in flight). Nothing
    /// was written; resend the chunk.
    ChunkChecksum {
        /// Offset of the damaged chunk.
        offset: u64,
    },
    /// The receiver already failed (or finished) and accepts no more chunks.
    TransferClosed,
    /// An error from the write-ahead log during the compaction contract.
    Wal(raft_wal::Error),
    /// The WAL records a snapshot at `marker` but the store has no valid
    /// snapshot at or above it, and the WAL no longer holds the entries needed
    /// to rebuild the state from an older one. The node must obtain a snapshot
    /// from its leader (or be restored by an operator).
    SnapshotMissing {
        /// `(index, term)` recorded in the WAL.
        marker: (u64, u64),
        /// Newest valid snapshot in the store, if any.
        newest_valid: Option<(u64, u64)>,
        /// First index the WAL still holds.
        wal_first_index: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |p: &Option<PathBuf>| match p {
            Some(p) => format!(" in {}", p.display()),
            None => String::new(),
        };
        match self {
            Error::Io { op, path, source } => {
                write!(f, "snapshot I/O error during {op}{}: {source}", at(path))
            }
            Error::NoSpace { path } => write!(f, "no space left on device{}", at(path)),
            Error::Corruption { path, kind } => {
                write!(f, "snapshot corruption{}: {kind}", at(path))
            }
            Error::UnsupportedVersion {
                path,
                found,
                supported,
            } => write!(
                f,
                "snapshot{} has format version {found}; this build reads up to {supported}",
                at(path)
            ),
            Error::Locked { dir } => write!(
                f,
                "snapshot directory {} is locked by another handle",
                dir.display()
            ),
            Error::NotFound { index, term } => {
                write!(f, "no snapshot at index {index}, term {term}")
            }
            Error::InvalidArgument(msg) => write!(f, "invalid snapshot request: {msg}"),
            Error::ChunkOutOfOrder { expected, found } => write!(
                f,
                "snapshot chunk at offset {found}, but the receiver needs offset {expected}"
            ),
            Error::ChunkChecksum { offset } => {
                write!(f, "snapshot chunk at offset {offset} failed its checksum")
            }
            Error::TransferClosed => write!(f, "the snapshot receiver is closed"),
            Error::Wal(e) => write!(f, "WAL error during snapshot compaction: {e}"),
            Error::SnapshotMissing {
                marker,
                newest_valid,
                wal_first_index,
            } => write!(
                f,
                "the WAL records snapshot (index {}, term {}) but the store's newest valid \
                 snapshot is {newest_valid:?} and the WAL starts at index {wal_first_index}: \
                 the state cannot be rebuilt locally",
                marker.0, marker.1
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Wal(e) => Some(e),
            _ => None,
        }
    }
}

impl From<raft_wal::Error> for Error {
    fn from(e: raft_wal::Error) -> Error {
        Error::Wal(e)
    }
}

impl Error {
    /// Wraps an I/O error, turning ENOSPC into [`Error::NoSpace`] and
    /// unwrapping an [`Error`] that travelled inside an `io::Error` (from a
    /// [`SnapshotReader`](crate::SnapshotReader) used through `std::io::Read`).
    pub(crate) fn io(op: &'static str, path: Option<&Path>, source: io::Error) -> Error {
        let path = path.map(Path::to_path_buf);
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.kind() == io::ErrorKind::StorageFull
        {
            return Error::NoSpace { path };
        }
        if source.get_ref().is_some_and(|e| e.is::<Error>()) {
            let inner = source
                .into_inner()
                .expect("checked above")
                .downcast::<Error>()
                .expect("checked above");
            return inner.with_path(path.as_deref());
        }
        Error::Io { op, path, source }
    }

    pub(crate) fn corrupt(kind: CorruptionKind) -> Error {
        Error::Corruption { path: None, kind }
    }

    /// Attaches `path` to a file-related error that has none yet.
    pub(crate) fn with_path(mut self, p: Option<&Path>) -> Error {
        if let (
            Some(p),
            Error::Io { path, .. }
            | Error::NoSpace { path }
            | Error::Corruption { path, .. }
            | Error::UnsupportedVersion { path, .. },
        ) = (p, &mut self)
        {
            if path.is_none() {
                *path = Some(p.to_path_buf());
            }
        }
        self
    }

    /// Recovers an [`Error`] from an `io::Error` returned by the `Read` or
    /// `Write` implementation of this crate's streams; other I/O errors become
    /// [`Error::Io`].
    ///
    /// ```
    /// use std::io::Read;
    /// let mut bytes: &[u8] = b"definitely not a snapshot";
    /// let err = raft_snapshot::SnapshotReader::new(&mut bytes).unwrap_err();
    /// assert!(matches!(err, raft_snapshot::Error::Corruption { .. }));
    /// let io = std::io::Error::other(err);
    /// assert!(matches!(raft_snapshot::Error::from_io(io), raft_snapshot::Error::Corruption { .. }));
    /// ```
    pub fn from_io(e: io::Error) -> Error {
        Error::io("stream", None, e)
    }

    /// Wraps this error in an `io::Error` (kind `InvalidData` for damage).
    pub(crate) fn into_io(self) -> io::Error {
        let kind = match &self {
            Error::Io { source, .. } => source.kind(),
            Error::Corruption { .. } | Error::UnsupportedVersion { .. } => {
                io::ErrorKind::InvalidData
            }
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }

    /// True for damage or an unknown format (the file is unusable as is), as
    /// opposed to an I/O failure that may go away.
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            Error::Corruption { .. } | Error::UnsupportedVersion { .. }
        )
    }
}
