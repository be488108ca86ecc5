//! Durable Raft storage for a node: the log and hard state in a [`raft_wal::Wal`]
//! (`DIR/wal`), snapshots of the state machine in a [`SnapshotStore`]
//! (`DIR/snapshots`), kept consistent by `raft-snapshot`'s compaction contract
//! (snapshot durable, then its marker in the WAL, then WAL compaction).

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};

use raft_core::{
    ConfState, Entry, EntryKind, HardState, Ready, SnapshotMeta, Storage, StorageError,
};
use raft_snapshot::{compaction, Membership, SnapshotId, SnapshotStore, StoreOptions};
use raft_wal::{Options, Wal};

use crate::mvcc::Store;

/// Why the storage could not do what was asked.
#[derive(Debug)]
pub enum StorageFailure {
    /// The WAL failed (I/O, corruption, poisoned, full disk).
    Wal(raft_wal::Error),
    /// The snapshot store failed (I/O, damage, missing snapshot).
    Snapshot(raft_snapshot::Error),
    /// Reading or writing the snapshot metadata file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A stored record does not decode.
    Corrupt(String),
}

impl fmt::Display for StorageFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageFailure::Wal(e) => write!(f, "{e}"),
            StorageFailure::Snapshot(e) => write!(f, "snapshot: {e}"),
            StorageFailure::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StorageFailure::Corrupt(why) => write!(f, "corrupt node storage: {why}"),
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
            StorageFailure::Snapshot(raft_snapshot::Error::NoSpace { .. }) => true,
            StorageFailure::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }
}

impl From<raft_snapshot::Error> for StorageFailure {
    fn from(e: raft_snapshot::Error) -> Self {
        match e {
            raft_snapshot::Error::Wal(w) => StorageFailure::Wal(w),
            other => StorageFailure::Snapshot(other),
        }
    }
}

impl From<raft_wal::Error> for StorageFailure {
    fn from(e: raft_wal::Error) -> Self {
        StorageFailure::Wal(e)
    }
}

/// Snapshot settings of a node's storage.
#[derive(Debug, Clone)]
pub struct SnapshotPolicy {
    /// Snapshots kept on disk (at least 1).
    pub keep: usize,
    /// Entries kept in the WAL below a snapshot: a follower less than this far
    /// behind catches up from them instead of receiving the snapshot, and they
    /// are a recovery fallback if the newest snapshot is found damaged.
    pub trailing_entries: u64,
}

impl Default for SnapshotPolicy {
    fn default() -> Self {
        SnapshotPolicy {
            keep: 2,
            trailing_entries: 1_000,
        }
    }
}

/// Where and how a node's storage does its file I/O.
#[derive(Clone)]
pub struct StorageIo {
    /// The file system (tests inject faults through `raft_wal::fault::FaultFs`).
    pub fs: std::sync::Arc<dyn raft_wal::fs::Fs>,
    /// WAL options (segment size...); the production preset by default.
    pub wal: Options,
}

impl Default for StorageIo {
    fn default() -> Self {
        StorageIo {
            fs: std::sync::Arc::new(raft_wal::fs::StdFs),
            wal: Options::production(),
        }
    }
}

/// A node's durable state: the WAL in `DIR/wal`, snapshots in `DIR/snapshots`.
pub struct WalStorage {
    wal: Wal,
    store: SnapshotStore,
    policy: SnapshotPolicy,
    /// The snapshot the log continues from (index 0: none yet, a joining node).
    snapshot: SnapshotMeta,
    /// The first read failure. Reads through the [`Storage`] trait return it to
    /// the core as [`StorageError::Io`] (text only; the core then stops); the
    /// driver takes the typed failure from here with [`WalStorage::take_failure`].
    failure: RefCell<Option<StorageFailure>>,
}

fn encode_entry(e: &Entry) -> Vec<u8> {
    // Bytes, not a sequence of u8: identical encoding, much faster.
    postcard::to_stdvec(&(&e.kind, serde_bytes::Bytes::new(&e.data)))
        .expect("encoding into a Vec cannot fail")
}

fn decode_entry(index: u64, term: u64, bytes: &[u8]) -> Result<Entry, StorageFailure> {
    let (kind, data): (EntryKind, serde_bytes::ByteBuf) = postcard::from_bytes(bytes)
        .map_err(|e| StorageFailure::Corrupt(format!("entry {index}: {e}")))?;
    Ok(Entry {
        index,
        term,
        kind,
        data: data.into_vec().into(),
    })
}

fn to_wal_hs(hs: HardState) -> raft_wal::HardState {
    raft_wal::HardState {
        term: hs.term,
        vote: hs.vote,
        commit: hs.commit,
    }
}

fn to_membership(c: &ConfState) -> Membership {
    Membership {
        voters: c.voters.clone(),
        voters_outgoing: c.voters_outgoing.clone(),
        learners: c.learners.clone(),
        learners_next: c.learners_next.clone(),
    }
}

fn to_conf(m: &Membership) -> ConfState {
    ConfState {
        voters: m.voters.clone(),
        voters_outgoing: m.voters_outgoing.clone(),
        learners: m.learners.clone(),
        learners_next: m.learners_next.clone(),
    }
}

fn to_core_meta(m: &raft_snapshot::SnapshotMeta) -> SnapshotMeta {
    SnapshotMeta {
        index: m.index,
        term: m.term,
        conf: to_conf(&m.membership),
    }
}

fn to_file_meta(m: &SnapshotMeta) -> raft_snapshot::SnapshotMeta {
    raft_snapshot::SnapshotMeta {
        index: m.index,
        term: m.term,
        membership: to_membership(&m.conf),
    }
}

impl WalStorage {
    /// Opens the storage in `dir` and reconciles the WAL with the snapshot
    /// store (finishing a compaction a crash interrupted). A directory that has
    /// never been used is bootstrapped as a founding member of a cluster of
    /// `voters`: the initial configuration becomes a snapshot at index 1, term 1
    /// (the same on every founding member, so it never conflicts). With no
    /// `voters` the node starts empty and waits for a snapshot from a leader.
    pub fn open_or_bootstrap(dir: &Path, voters: &[u64]) -> Result<WalStorage, StorageFailure> {
        Self::open_with(dir, voters, SnapshotPolicy::default())
    }

    /// [`open_or_bootstrap`](Self::open_or_bootstrap) with a snapshot policy.
    pub fn open_with(
        dir: &Path,
        voters: &[u64],
        policy: SnapshotPolicy,
    ) -> Result<WalStorage, StorageFailure> {
        Self::open_with_io(dir, voters, policy, StorageIo::default())
    }

    /// [`open_with`](Self::open_with) over a given file system and WAL options.
    pub fn open_with_io(
        dir: &Path,
        voters: &[u64],
        policy: SnapshotPolicy,
        io: StorageIo,
    ) -> Result<WalStorage, StorageFailure> {
        io.fs
            .create_dir_all(dir)
            .map_err(|source| StorageFailure::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        let mut wal = Wal::open_with_fs(io.fs.clone(), dir.join("wal"), io.wal)?;
        let store = SnapshotStore::open_with_fs(
            io.fs,
            dir.join("snapshots"),
            StoreOptions {
                keep: policy.keep.max(1),
                ..StoreOptions::default()
            },
        )?;
        let recovered = compaction::recover(&store, &mut wal, policy.trailing_entries)?;
        for d in &recovered.damaged {
            tracing::error!(index = d.id.index, term = d.id.term, path = %d.path.display(), error = %d.error, "damaged snapshot set aside");
        }
        let fresh = recovered.snapshot.is_none()
            && wal.last_index() == 0
            && wal.hard_state() == raft_wal::HardState::default();
        let snapshot = match recovered.snapshot {
            Some(h) => to_core_meta(&h.meta),
            None if fresh && !voters.is_empty() => {
                let meta = bootstrap(&store, &mut wal, voters, &Store::default())?;
                tracing::info!(?voters, "bootstrapped a new cluster member");
                meta
            }
            None if wal.first_index() == 1 => SnapshotMeta::default(),
            None => {
                return Err(StorageFailure::Corrupt(format!(
                    "the WAL starts at index {} but there is no snapshot to cover the entries before it",
                    wal.first_index()
                )))
            }
        };
        Ok(WalStorage {
            wal,
            store,
            policy,
            snapshot,
            failure: RefCell::new(None),
        })
    }

    /// Prepares `dir` (which must hold no WAL and no snapshot) as a founding
    /// member of a new cluster of `voters` whose state starts as `state`
    /// (a restore from an etcd API snapshot file). A later
    /// [`open_with`](Self::open_with) continues from it.
    pub fn seed(dir: &Path, voters: &[u64], state: &Store) -> Result<(), StorageFailure> {
        let fs: std::sync::Arc<dyn raft_wal::fs::Fs> = std::sync::Arc::new(raft_wal::fs::StdFs);
        fs.create_dir_all(dir)
            .map_err(|source| StorageFailure::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        let mut wal = Wal::open_with_fs(fs.clone(), dir.join("wal"), Options::default())?;
        let store =
            SnapshotStore::open_with_fs(fs, dir.join("snapshots"), StoreOptions::default())?;
        let empty = store.list()?.is_empty()
            && wal.last_index() == 0
            && wal.hard_state() == raft_wal::HardState::default();
        if !empty {
            return Err(StorageFailure::Corrupt(format!(
                "{} already holds a node's data; restore into an empty directory",
                dir.display()
            )));
        }
        bootstrap(&store, &mut wal, voters, state)?;
        Ok(())
    }

    /// The snapshot the log continues from.
    pub fn snapshot(&self) -> &SnapshotMeta {
        &self.snapshot
    }

    /// The snapshot store (to stream a snapshot to a follower, or receive one).
    pub fn store(&self) -> &SnapshotStore {
        &self.store
    }

    /// True if the store holds snapshot `id`.
    pub fn has_snapshot(&self, id: SnapshotId) -> bool {
        self.store.list().is_ok_and(|ids| ids.contains(&id))
    }

    /// Replaces `kv` with the state of the current snapshot (start-up, and
    /// after installing a snapshot from the leader).
    pub fn load_state(&self, kv: &mut Store) -> Result<(), StorageFailure> {
        if self.snapshot.index == 0 {
            *kv = Store::default();
            return Ok(());
        }
        let id = SnapshotId {
            index: self.snapshot.index,
            term: self.snapshot.term,
        };
        *kv = read_state(&self.store, id)?;
        Ok(())
    }

    /// Writes snapshot `meta` with `write_state` into the snapshot store and
    /// makes it durable, without touching the WAL: the half of taking a
    /// snapshot that may run on another thread (with a clone of the store
    /// and a consistent view of the state). [`WalStorage::adopt_snapshot`]
    /// then finishes it on the driver.
    pub fn write_snapshot(
        store: &SnapshotStore,
        meta: &SnapshotMeta,
        write_state: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<u64, StorageFailure> {
        let mut pending = store.create(to_file_meta(meta))?;
        write_state(&mut pending)
            .map_err(|e| StorageFailure::Snapshot(raft_snapshot::Error::from_io(e)))?;
        let header = pending.commit()?;
        Ok(header.file_bytes())
    }

    /// Makes the durable snapshot `meta` (written by
    /// [`WalStorage::write_snapshot`]) the log's base: marks it in the WAL and
    /// compacts the WAL per the contract, keeping the entries from
    /// `catch_up` on (see [`RawNode::catch_up_index`](raft_core::RawNode::catch_up_index))
    /// back to the previous snapshot at most. A snapshot no newer than the
    /// current base (one installed from the leader meanwhile) is left alone.
    pub fn adopt_snapshot(
        &mut self,
        meta: SnapshotMeta,
        bytes: u64,
        catch_up: Option<u64>,
    ) -> Result<bool, StorageFailure> {
        if meta.index <= self.snapshot.index {
            return Ok(false);
        }
        self.wal.sync()?;
        let id = SnapshotId {
            index: meta.index,
            term: meta.term,
        };
        let trailing = trailing_entries(
            meta.index,
            self.snapshot.index,
            self.policy.trailing_entries,
            catch_up,
        );
        compaction::compact_wal(&mut self.wal, id, trailing)?;
        tracing::info!(
            index = meta.index,
            term = meta.term,
            bytes,
            trailing,
            "took a snapshot and compacted the WAL"
        );
        self.snapshot = meta;
        Ok(true)
    }

    /// Makes the persistent parts of `rd` durable (entries, then hard state, one
    /// fsync). Must complete before `rd.persisted_messages` are sent. A hard state
    /// that moves only the commit index is written without an fsync
    /// ([`Ready::must_sync`]): the next sync carries it, so the leader does not
    /// wait for the disk between a quorum's acknowledgement and applying.
    pub fn persist(&mut self, rd: &Ready) -> Result<(), StorageFailure> {
        let must_sync = rd.must_sync(&self.hard_state());
        if let Some(meta) = &rd.snapshot {
            self.install_snapshot(meta)?;
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
        if must_sync {
            self.wal.sync()?;
        }
        Ok(())
    }

    /// Installs a snapshot received from the leader (already durable in the
    /// store): the core discards its whole log for it, and so does the WAL.
    fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), StorageFailure> {
        let id = SnapshotId {
            index: meta.index,
            term: meta.term,
        };
        self.store.verify(id)?;
        let (first, last) = (self.wal.first_index(), self.wal.last_index());
        if first <= last && last > meta.index {
            self.wal.truncate_suffix((meta.index + 1).max(first))?;
        }
        compaction::compact_wal(&mut self.wal, id, 0)?;
        // Received snapshots are kept until one is installed (the base must
        // survive until then); now this one is the base.
        self.store.retain_newest(id)?;
        tracing::info!(
            index = meta.index,
            term = meta.term,
            "installed a snapshot from the leader"
        );
        self.snapshot = meta.clone();
        Ok(())
    }

    /// The first read failure since the last call, if any.
    pub fn take_failure(&self) -> Option<StorageFailure> {
        self.failure.borrow_mut().take()
    }

    fn fail(&self, f: StorageFailure) -> StorageError {
        tracing::error!(error = %f, "storage read failed");
        let err = StorageError::Io(f.to_string());
        self.failure.borrow_mut().get_or_insert(f);
        err
    }
}

/// Entries to keep below a new local snapshot at `index`: the policy's
/// `trailing`, or more for a follower that is catching up and needs the
/// entries from `catch_up` on (one that just installed the previous snapshot
/// would otherwise need this one too), but never the previous snapshot
/// `base` or anything below it: the log kept is bounded by two snapshot
/// intervals, whatever a slow follower needs.
fn trailing_entries(index: u64, base: u64, trailing: u64, catch_up: Option<u64>) -> u64 {
    let wanted = match catch_up {
        Some(from) if from <= index => (index + 1 - from).min(index - base),
        _ => 0,
    };
    trailing.max(wanted)
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

    /// Trailing entries the WAL keeps below the snapshot count: compaction keeps them
    /// only when the WAL's entry at the snapshot index has the snapshot's term (see
    /// `compaction::compact_wal`), and a snapshot from the leader drops them all.
    fn first_index(&self) -> u64 {
        self.wal.first_index().min(self.snapshot.index + 1)
    }

    fn last_index(&self) -> u64 {
        self.wal.last_index().max(self.snapshot.index)
    }

    fn term(&self, index: u64) -> Result<u64, StorageError> {
        if index == self.snapshot.index {
            return Ok(self.snapshot.term);
        }
        if index < self.first_index() {
            return Err(StorageError::Compacted);
        }
        match self.wal.term(index) {
            Ok(Some(t)) => Ok(t),
            Ok(None) => Err(StorageError::Unavailable),
            Err(e) => Err(self.fail(e.into())),
        }
    }

    fn entries(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if lo < self.first_index() {
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

/// Writes a new cluster's first state: a snapshot of `state` at index 1 with
/// `voters` as the configuration, and term 1 committed up to it.
fn bootstrap(
    store: &SnapshotStore,
    wal: &mut Wal,
    voters: &[u64],
    state: &Store,
) -> Result<SnapshotMeta, StorageFailure> {
    let meta = SnapshotMeta {
        index: 1,
        term: 1,
        conf: ConfState::with_voters(voters.iter().copied()),
    };
    compaction::take_snapshot(store, wal, to_file_meta(&meta), 0, |w| {
        state.write_snapshot(w)
    })?;
    wal.set_hard_state(raft_wal::HardState {
        term: 1,
        vote: None,
        commit: 1,
    })?;
    wal.sync()?;
    Ok(meta)
}

/// The state held in snapshot `id` of `store`, read and decoded (every
/// checksum verified). Slow for a large state: the driver calls it only at
/// start-up; a snapshot installed from a leader is decoded on a restore
/// thread (see `driver/restore.rs`).
pub fn read_state(store: &SnapshotStore, id: SnapshotId) -> Result<Store, StorageFailure> {
    let failed = |e| StorageFailure::Snapshot(raft_snapshot::Error::from_io(e));
    let mut reader = store.open_snapshot(id)?;
    let mut kv = Store::default();
    kv.restore_snapshot(id.index, &mut reader).map_err(failed)?;
    // Reading to the end verified the body checksum; make sure it was all read.
    if !reader.is_verified() {
        std::io::copy(&mut reader, &mut std::io::sink()).map_err(failed)?;
    }
    Ok(kv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catching_up_follower_keeps_the_log_back_to_the_previous_snapshot_at_most() {
        // Nobody lags, or a follower within the policy's trailing entries.
        assert_eq!(trailing_entries(10_000, 5_000, 1_000, None), 1_000);
        assert_eq!(trailing_entries(10_000, 5_000, 1_000, Some(9_500)), 1_000);
        assert_eq!(trailing_entries(10_000, 5_000, 1_000, Some(10_001)), 1_000);
        // A follower that installed the previous snapshot needs 5,001 onwards.
        assert_eq!(trailing_entries(10_000, 5_000, 1_000, Some(5_001)), 5_000);
        assert_eq!(trailing_entries(10_000, 5_000, 1_000, Some(7_001)), 3_000);
        // Never the previous snapshot or below it.
        assert_eq!(trailing_entries(10_000, 5_000, 1_000, Some(2)), 5_000);
        assert_eq!(trailing_entries(10_000, 9_800, 1_000, Some(2)), 1_000);
    }

    #[test]
    fn a_commit_only_hard_state_is_not_synced_until_the_next_sync_carries_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = WalStorage::open_or_bootstrap(dir.path(), &[1, 2, 3]).unwrap();
        let entry = |index| Entry {
            index,
            term: 2,
            kind: EntryKind::Normal,
            data: b"x".to_vec().into(),
        };
        let hs = |commit| HardState {
            term: 2,
            vote: Some(1),
            commit,
        };
        s.persist(&Ready {
            entries: vec![entry(2)],
            hard_state: Some(hs(1)),
            ..Ready::default()
        })
        .unwrap();
        // Only the commit index moves: no fsync, so a crash (dropping the
        // handle without a sync) loses it, and only it.
        s.persist(&Ready {
            hard_state: Some(hs(2)),
            ..Ready::default()
        })
        .unwrap();
        assert_eq!(s.hard_state(), hs(2));
        drop(s);
        let mut s = WalStorage::open_or_bootstrap(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!(
            s.hard_state(),
            hs(1),
            "the commit-only change was not synced"
        );
        assert_eq!(s.last_index(), 2);
        // The next persist with entries syncs the commit index with them.
        s.persist(&Ready {
            hard_state: Some(hs(2)),
            ..Ready::default()
        })
        .unwrap();
        s.persist(&Ready {
            entries: vec![entry(3)],
            ..Ready::default()
        })
        .unwrap();
        drop(s);
        let s = WalStorage::open_or_bootstrap(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!((s.hard_state(), s.last_index()), (hs(2), 3));
    }

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
                    data: Default::default(),
                },
                Entry {
                    index: 3,
                    term: 2,
                    kind: EntryKind::Normal,
                    data: b"x".to_vec().into(),
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
                data: b"y".to_vec().into(),
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
        assert_eq!((es[1].term, &es[1].data[..]), (3, &b"y"[..]));
        assert!(s.take_failure().is_none());
    }
}
