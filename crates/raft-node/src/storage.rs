//! Durable Raft storage for a node: the log and hard state in a [`raft_wal::Wal`],
//! plus the latest snapshot's metadata in a small checksummed file.

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};

use raft_core::{
    ConfState, Entry, EntryKind, HardState, Ready, SnapshotMeta, Storage, StorageError,
};
use raft_wal::{Options, Wal};

/// File holding the postcard-encoded [`SnapshotMeta`] and a CRC32 of it.
const SNAPSHOT_META_FILE: &str = "snapshot.meta";

/// Why the storage could not do what was asked.
#[derive(Debug)]
pub enum StorageFailure {
    /// The WAL failed (I/O, corruption, poisoned, full disk).
    Wal(raft_wal::Error),
    /// Reading or writing the snapshot metadata file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A stored record does not decode.
    Corrupt(String),
    /// The core asked for something this storage does not support yet.
    Unsupported(&'static str),
}

impl fmt::Display for StorageFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageFailure::Wal(e) => write!(f, "{e}"),
            StorageFailure::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StorageFailure::Corrupt(why) => write!(f, "corrupt node storage: {why}"),
            StorageFailure::Unsupported(what) => write!(f, "not supported yet: {what}"),
        }
    }
}

impl std::error::Error for StorageFailure {}

impl StorageFailure {
    /// True if the failure is a full disk (the WAL then holds exactly what it
    /// held after its last successful sync).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StorageFailure::Wal(raft_wal::Error::NoSpace { .. }) => true,
            StorageFailure::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }
}

impl From<raft_wal::Error> for StorageFailure {
    fn from(e: raft_wal::Error) -> Self {
        StorageFailure::Wal(e)
    }
}

/// A node's durable state: WAL in `DIR/wal`, snapshot metadata in `DIR/snapshot.meta`.
pub struct WalStorage {
    wal: Wal,
    snapshot: SnapshotMeta,
    /// The first read failure; reads through the [`Storage`] trait cannot return
    /// it, so the driver checks [`WalStorage::take_failure`] after each step.
    failure: RefCell<Option<StorageFailure>>,
}

fn encode_entry(e: &Entry) -> Vec<u8> {
    postcard::to_stdvec(&(&e.kind, &e.data)).expect("encoding into a Vec cannot fail")
}

fn decode_entry(index: u64, term: u64, bytes: &[u8]) -> Result<Entry, StorageFailure> {
    let (kind, data): (EntryKind, Vec<u8>) = postcard::from_bytes(bytes)
        .map_err(|e| StorageFailure::Corrupt(format!("entry {index}: {e}")))?;
    Ok(Entry {
        index,
        term,
        kind,
        data,
    })
}

fn to_wal_hs(hs: HardState) -> raft_wal::HardState {
    raft_wal::HardState {
        term: hs.term,
        vote: hs.vote,
        commit: hs.commit,
    }
}

fn write_snapshot_meta(dir: &Path, meta: &SnapshotMeta) -> Result<(), StorageFailure> {
    let body = postcard::to_stdvec(meta).expect("encoding into a Vec cannot fail");
    let mut bytes = crc32fast::hash(&body).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let tmp = dir.join(format!("{SNAPSHOT_META_FILE}.tmp"));
    let path = dir.join(SNAPSHOT_META_FILE);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StorageFailure::Io { path, source }
    };
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

fn read_snapshot_meta(dir: &Path) -> Result<Option<SnapshotMeta>, StorageFailure> {
    let path = dir.join(SNAPSHOT_META_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StorageFailure::Io { path, source }),
    };
    let bad = || StorageFailure::Corrupt(format!("{} is damaged", path.display()));
    if bytes.len() < 4 {
        return Err(bad());
    }
    let (crc, body) = bytes.split_at(4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(bad());
    }
    postcard::from_bytes(body).map(Some).map_err(|_| bad())
}

impl WalStorage {
    /// Opens the storage in `dir`. A directory that has never been used is
    /// bootstrapped as a founding member of a cluster of `voters`: the initial
    /// configuration becomes a snapshot at index 1, term 1 (the same for every
    /// founding member, so it never conflicts).
    pub fn open_or_bootstrap(dir: &Path, voters: &[u64]) -> Result<WalStorage, StorageFailure> {
        std::fs::create_dir_all(dir).map_err(|source| StorageFailure::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut wal = Wal::open(dir.join("wal"), Options::default())?;
        let snapshot = match read_snapshot_meta(dir)? {
            Some(meta) => meta,
            None => {
                let meta = SnapshotMeta {
                    index: 1,
                    term: 1,
                    conf: ConfState::with_voters(voters.iter().copied()),
                };
                wal.set_hard_state(raft_wal::HardState {
                    term: 1,
                    vote: None,
                    commit: 1,
                })?;
                wal.compact_prefix(1)?;
                write_snapshot_meta(dir, &meta)?;
                meta
            }
        };
        if wal.first_index() != snapshot.index + 1 {
            wal.compact_prefix(snapshot.index)?;
        }
        Ok(WalStorage {
            wal,
            snapshot,
            failure: RefCell::new(None),
        })
    }

    /// Makes the persistent parts of `rd` durable (entries, then hard state, one
    /// fsync). Must complete before `rd.persisted_messages` are sent.
    pub fn persist(&mut self, rd: &Ready) -> Result<(), StorageFailure> {
        if rd.snapshot.is_some() {
            return Err(StorageFailure::Unsupported(
                "installing a snapshot (lands with raft-snapshot)",
            ));
        }
        let entries: Vec<&Entry> = rd
            .entries
            .iter()
            .filter(|e| e.index > self.snapshot.index)
            .collect();
        if let Some(first) = entries.first() {
            if first.index <= self.wal.last_index() {
                self.wal.truncate_suffix(first.index)?;
            }
            for e in entries {
                self.wal.append(e.index, e.term, &encode_entry(e))?;
            }
        }
        if let Some(hs) = rd.hard_state {
            self.wal.set_hard_state(to_wal_hs(hs))?;
        }
        self.wal.sync()?;
        Ok(())
    }

    /// The first read failure since the last call, if any.
    pub fn take_failure(&self) -> Option<StorageFailure> {
        self.failure.borrow_mut().take()
    }

    fn fail(&self, f: StorageFailure) -> StorageError {
        tracing::error!(error = %f, "storage read failed");
        self.failure.borrow_mut().get_or_insert(f);
        StorageError::Unavailable
    }
}

impl Storage for WalStorage {
    fn hard_state(&self) -> HardState {
        let hs = self.wal.hard_state();
        HardState {
            term: hs.term,
            vote: hs.vote,
            commit: hs.commit,
        }
    }

    fn snapshot_meta(&self) -> SnapshotMeta {
        self.snapshot.clone()
    }

    fn first_index(&self) -> u64 {
        self.snapshot.index + 1
    }

    fn last_index(&self) -> u64 {
        self.wal.last_index().max(self.snapshot.index)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index == self.snapshot.index {
            return Ok(self.snapshot.term);
        }
        if index < self.snapshot.index {
            return Err(StorageError::Compacted);
        }
        match self.wal.term(index) {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(StorageError::Unavailable),
            Err(e) => Err(self.fail(e.into())),
        }
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if lo <= self.snapshot.index {
            return Err(StorageError::Compacted);
        }
        if hi > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        let raw = self
            .wal
            .entries(lo, hi, max_bytes)
            .map_err(|e| self.fail(e.into()))?;
        raw.into_iter()
            .map(|e| decode_entry(e.index, e.term, &e.data))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|f| self.fail(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_persist_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = WalStorage::open_or_bootstrap(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!((s.first_index(), s.last_index()), (2, 1));
        assert_eq!(s.term(1), Ok(1));
        let rd = Ready {
            entries: vec![
                Entry {
                    index: 2,
                    term: 2,
                    kind: EntryKind::Noop,
                    data: vec![],
                },
                Entry {
                    index: 3,
                    term: 2,
                    kind: EntryKind::Normal,
                    data: b"x".to_vec(),
                },
            ],
            hard_state: Some(HardState {
                term: 2,
                vote: Some(1),
                commit: 2,
            }),
            ..Ready::default()
        };
        s.persist(&rd).unwrap();
        // A conflicting append replaces the suffix.
        let rd = Ready {
            entries: vec![Entry {
                index: 3,
                term: 3,
                kind: EntryKind::Normal,
                data: b"y".to_vec(),
            }],
            ..Ready::default()
        };
        s.persist(&rd).unwrap();
        drop(s);
        let s = WalStorage::open_or_bootstrap(dir.path(), &[9]).unwrap();
        assert_eq!(
            s.snapshot_meta().conf.voters.len(),
            3,
            "bootstrap runs once"
        );
        assert_eq!(s.last_index(), 3);
        assert_eq!(s.hard_state().vote, Some(1));
        let es = s.entries(2, 4, u64::MAX).unwrap();
        assert_eq!(es[0].kind, EntryKind::Noop);
        assert_eq!((es[1].term, es[1].data.as_slice()), (3, &b"y"[..]));
        assert!(s.take_failure().is_none());
    }
}
