//! The snapshot store: atomic creation, retention, damage fallback, crash
//! recovery (through the WAL's fault-injecting file system), locking.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft_snapshot::{
    CorruptionKind, Error, Membership, SnapshotId, SnapshotMeta, SnapshotStore, StoreOptions,
};
use raft_wal::fault::{CrashMode, FaultFs};
use raft_wal::fs::Fs;

fn dir() -> PathBuf {
    PathBuf::from("/snap")
}

fn open(fs: &FaultFs) -> raft_snapshot::Result<SnapshotStore> {
    SnapshotStore::open_with_fs(Arc::new(fs.clone()), dir(), StoreOptions::default())
}

fn meta(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term: 1 + index / 100,
        membership: Membership::voters([1, 2, 3]),
    }
}

fn state(index: u64) -> Vec<u8> {
    let mut s = Vec::new();
    common::KvState::new(index, 20_000 + index * 10)
        .read_to_end(&mut s)
        .unwrap();
    s
}

fn write(store: &SnapshotStore, index: u64) -> raft_snapshot::Result<SnapshotId> {
    let mut w = store.create(meta(index))?;
    w.write_all(&state(index)).map_err(Error::from_io)?;
    Ok(w.commit()?.id())
}

fn read_back(store: &SnapshotStore, id: SnapshotId) -> Vec<u8> {
    let mut r = store.open_snapshot(id).unwrap();
    let mut out = Vec::new();
    r.restore_into(&mut out).unwrap();
    out
}

fn names(fs: &dyn Fs, dir: &Path) -> Vec<String> {
    let mut n = fs.list_dir(dir).unwrap();
    n.sort();
    n
}

#[test]
fn keeps_the_newest_n_and_deletes_older_ones() {
    for keep in [1, 2, 3] {
        let fs = FaultFs::new();
        let opts = StoreOptions {
            keep,
            ..StoreOptions::default()
        };
        let store = SnapshotStore::open_with_fs(Arc::new(fs.clone()), dir(), opts).unwrap();
        for i in 1..=5 {
            write(&store, i * 10).unwrap();
        }
        let got: Vec<u64> = store.list().unwrap().iter().map(|id| id.index).collect();
        let want: Vec<u64> = (6 - keep as u64..=5).map(|i| i * 10).collect();
        assert_eq!(got, want, "keep {keep}");
        assert_eq!(read_back(&store, meta(50).id()), state(50));
    }
}

#[test]
fn open_by_id_and_missing_id() {
    let fs = FaultFs::new();
    let store = open(&fs).unwrap();
    write(&store, 10).unwrap();
    write(&store, 20).unwrap();
    assert_eq!(read_back(&store, meta(10).id()), state(10));
    match store.open_snapshot(SnapshotId { index: 10, term: 9 }) {
        Err(Error::NotFound { index: 10, term: 9 }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn damaged_newest_snapshot_is_reported_and_the_previous_one_is_used() {
    let fs = FaultFs::new();
    let store = open(&fs).unwrap();
    write(&store, 10).unwrap();
    let newest = write(&store, 20).unwrap();
    let path = store.path_of(newest);
    let len = fs.read_all(&path).unwrap().len() as u64;
    fs.flip_bit(&path, len - 10, 3).unwrap();

    let found = store.newest_valid().unwrap();
    assert_eq!(found.header.unwrap().meta, meta(10));
    assert_eq!(found.damaged.len(), 1);
    let d = &found.damaged[0];
    assert_eq!(d.id, newest);
    assert!(
        matches!(
            d.error,
            Error::Corruption {
                kind: CorruptionKind::BodyChecksum { .. },
                path: Some(_)
            }
        ),
        "{:?}",
        d.error
    );
    assert!(
        d.error.to_string().contains("0000000000000014"),
        "{}",
        d.error
    );
    // Renamed aside, so it no longer counts as a snapshot.
    assert!(d.path.to_string_lossy().ends_with(".damaged"));
    assert_eq!(store.list().unwrap(), [meta(10).id()]);
    let mut r = store.open_newest().unwrap().unwrap();
    let mut out = Vec::new();
    r.restore_into(&mut out).unwrap();
    assert_eq!(out, state(10));
}

#[test]
fn header_damage_and_truncation_are_reported_with_the_file() {
    let fs = FaultFs::new();
    let store = open(&fs).unwrap();
    let id = write(&store, 10).unwrap();
    let path = store.path_of(id);
    fs.flip_bit(&path, 20, 0).unwrap();
    match store.verify(id) {
        Err(Error::Corruption {
            kind: CorruptionKind::HeaderChecksum { .. },
            path: Some(p),
        }) => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
    let found = store.newest_valid().unwrap();
    assert!(found.header.is_none());
    assert_eq!(found.damaged.len(), 1);
}

#[test]
fn truncated_file_in_the_store_is_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let store = SnapshotStore::open(tmp.path(), StoreOptions::default()).unwrap();
    let id = write(&store, 10).unwrap();
    let path = store.path_of(id);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - 1).unwrap();
    assert!(matches!(
        store.verify(id),
        Err(Error::Corruption {
            kind: CorruptionKind::Truncated { .. },
            ..
        })
    ));
    f.set_len(10).unwrap();
    assert!(matches!(
        store.verify(id),
        Err(Error::Corruption {
            kind: CorruptionKind::Truncated { .. },
            ..
        })
    ));
}

#[test]
fn leftover_temporary_files_are_removed_on_open() {
    let fs = FaultFs::new();
    let store = open(&fs).unwrap();
    write(&store, 10).unwrap();
    let mut pending = store.create(meta(20)).unwrap();
    pending.write_all(&state(20)).unwrap();
    pending.flush().unwrap();
    // The process dies mid-write: the pending handle never commits or drops.
    std::mem::forget(pending);
    drop(store);
    fs.crash(CrashMode::KEEP_UNSYNCED);
    assert!(names(&fs, &dir()).iter().any(|n| n.ends_with(".tmp")));
    let store = open(&fs).unwrap();
    assert!(
        !names(&fs, &dir()).iter().any(|n| n.ends_with(".tmp")),
        "{:?}",
        names(&fs, &dir())
    );
    assert_eq!(store.list().unwrap(), [meta(10).id()]);
}

#[test]
fn dropping_an_uncommitted_snapshot_removes_its_file() {
    let fs = FaultFs::new();
    let store = open(&fs).unwrap();
    let mut pending = store.create(meta(20)).unwrap();
    pending.write_all(b"half a state").unwrap();
    drop(pending);
    assert_eq!(names(&fs, &dir()), Vec::<String>::new());
}

#[test]
fn second_open_of_the_same_directory_is_locked() {
    let fs = FaultFs::new();
    let _store = open(&fs).unwrap();
    assert!(matches!(open(&fs), Err(Error::Locked { .. })));
}

/// Crash at every mutating file-system operation of a commit (with and without
/// unsynced data and names surviving): after reopening, the store holds the
/// previous snapshots and either a complete new one or none, never a partial
/// one, and a commit that returned Ok is never lost.
#[test]
fn crash_at_every_operation_of_a_commit_leaves_old_or_new() {
    let setup = || {
        let fs = FaultFs::new();
        let store = open(&fs).unwrap();
        write(&store, 10).unwrap();
        write(&store, 20).unwrap();
        drop(store);
        fs
    };
    let ops = {
        let fs = setup();
        let store = open(&fs).unwrap();
        let before = fs.mutating_ops();
        write(&store, 30).unwrap();
        fs.mutating_ops() - before
    };
    assert!(
        ops >= 5,
        "a commit is at least write, fsync, rename, dir fsync, delete"
    );
    let modes = [
        CrashMode::LOSE_UNSYNCED,
        CrashMode::KEEP_UNSYNCED,
        CrashMode {
            keep_unsynced_data: true,
            keep_unsynced_names: false,
        },
        CrashMode {
            keep_unsynced_data: false,
            keep_unsynced_names: true,
        },
    ];
    let (mut failed, mut kept_new, mut kept_old) = (0, 0, 0);
    for op in 0..=ops {
        for torn in [None, Some(7)] {
            for mode in modes {
                let fs = setup();
                let store = open(&fs).unwrap();
                fs.crash_at_op(fs.mutating_ops() + op, torn);
                let res = write(&store, 30);
                drop(store);
                fs.crash(mode);
                let store = open(&fs).unwrap();
                let ctx = format!("op {op} torn {torn:?} {mode:?} -> {res:?}");
                assert!(
                    !names(&fs, &dir()).iter().any(|n| n.ends_with(".tmp")),
                    "{ctx}"
                );
                let found = store.newest_valid().unwrap();
                assert!(found.damaged.is_empty(), "{ctx}: {:?}", found.damaged);
                let newest = found.header.unwrap().meta.index;
                if res.is_ok() {
                    assert_eq!(newest, 30, "{ctx}");
                } else {
                    failed += 1;
                    assert!(newest == 20 || newest == 30, "{ctx}");
                }
                if newest == 30 {
                    kept_new += 1;
                } else {
                    kept_old += 1;
                }
                for id in store.list().unwrap() {
                    assert_eq!(read_back(&store, id), state(id.index), "{ctx}");
                }
                assert!(store.list().unwrap().contains(&meta(20).id()) || newest == 30);
            }
        }
    }
    // The sweep really crashed before, inside and after the commit point.
    assert!(failed > 0 && kept_new > 0 && kept_old > 0);
}

#[test]
fn disk_full_fails_cleanly_and_leaves_no_file() {
    let fs = FaultFs::new();
    let store = open(&fs).unwrap();
    write(&store, 10).unwrap();
    fs.set_space_limit(Some(fs.used_bytes() + 1000));
    let err = write(&store, 20).unwrap_err();
    assert!(matches!(err, Error::NoSpace { .. }), "{err:?}");
    assert_eq!(store.list().unwrap(), [meta(10).id()]);
    assert!(!names(&fs, &dir()).iter().any(|n| n.ends_with(".tmp")));
    fs.set_space_limit(None);
    write(&store, 20).unwrap();
}
