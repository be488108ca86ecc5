//! The compaction contract with raft-wal: snapshot durable, then marker, then
//! WAL compaction; a crash at every I/O operation (and between every two
//! steps) recovers to a consistent state.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use raft_snapshot::compaction::{self, Compaction};
use raft_snapshot::{Error, Membership, SnapshotId, SnapshotMeta, SnapshotStore, StoreOptions};
use raft_wal::fault::{CrashMode, FaultFs};
use raft_wal::{Options, Wal};

const LAST: u64 = 300;
const TRAILING: u64 = 20;

fn wal_opts() -> Options {
    Options {
        segment_size_bytes: 4096,
        preallocate_in_background: false,
        ..Options::default()
    }
}

fn open(fs: &FaultFs) -> (SnapshotStore, Wal) {
    let store = SnapshotStore::open_with_fs(
        Arc::new(fs.clone()),
        PathBuf::from("/snap"),
        StoreOptions::default(),
    )
    .unwrap();
    let wal = Wal::open_with_fs(Arc::new(fs.clone()), PathBuf::from("/wal"), wal_opts()).unwrap();
    (store, wal)
}

fn term_of(i: u64) -> u64 {
    1 + i / 64
}

fn entry(i: u64) -> Vec<u8> {
    format!("set key{} = {}", i % 17, i).into_bytes()
}

fn meta(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term: term_of(index),
        membership: Membership::voters([1, 2, 3]),
    }
}

/// The state machine's serialized state after applying entries 1..=index.
fn state(index: u64) -> Vec<u8> {
    let mut s = Vec::new();
    common::KvState::new(index, 5000 + index)
        .read_to_end(&mut s)
        .unwrap();
    s
}

/// A node with entries 1..=LAST in its WAL and a first snapshot at 100 taken
/// through the contract.
fn node() -> FaultFs {
    let fs = FaultFs::new();
    let (store, mut wal) = open(&fs);
    for i in 1..=LAST {
        wal.append(i, term_of(i), &entry(i)).unwrap();
    }
    wal.sync().unwrap();
    compaction::take_snapshot(&store, &mut wal, meta(100), TRAILING, |w| {
        w.write_all(&state(100))
    })
    .unwrap();
    fs
}

fn snapshot_250(store: &SnapshotStore, wal: &mut Wal) -> raft_snapshot::Result<()> {
    compaction::take_snapshot(store, wal, meta(250), TRAILING, |w| {
        w.write_all(&state(250))
    })
    .map(|_| ())
}

/// Everything a restarted node relies on is consistent: the snapshot restores
/// to the right state, the WAL holds every entry after it, intact.
fn assert_consistent(store: &SnapshotStore, wal: &Wal, r: &compaction::Recovered, ctx: &str) {
    let snap = r
        .snapshot
        .as_ref()
        .expect("there is always a snapshot here");
    let index = snap.meta.index;
    let mut restored = Vec::new();
    store
        .open_snapshot(snap.id())
        .unwrap()
        .restore_into(&mut restored)
        .unwrap();
    assert_eq!(restored, state(index), "{ctx}");
    assert!(wal.first_index() <= index + 1, "{ctx}: gap after snapshot");
    assert_eq!(wal.last_index(), LAST, "{ctx}");
    for i in wal.first_index()..=LAST {
        let e = wal.entry(i).unwrap();
        assert_eq!((e.term, e.data), (term_of(i), entry(i)), "{ctx}: entry {i}");
    }
    assert_eq!(wal.term(index).unwrap(), Some(term_of(index)), "{ctx}");
}

#[test]
fn contract_runs_in_order_and_keeps_trailing_entries() {
    let fs = node();
    let (store, mut wal) = open(&fs);
    assert_eq!(wal.snapshot_marker(), Some((100, term_of(100))));
    assert_eq!(wal.first_index(), 100 - TRAILING + 1);
    snapshot_250(&store, &mut wal).unwrap();
    assert_eq!(wal.snapshot_marker(), Some((250, term_of(250))));
    assert_eq!(wal.first_index(), 250 - TRAILING + 1);
    assert_eq!(store.list().unwrap(), [meta(100).id(), meta(250).id()]);
    let r = compaction::recover(&store, &mut wal, TRAILING).unwrap();
    assert_eq!(r.compaction, Some(Compaction::Prefix { upto: 230 }));
    assert_consistent(&store, &wal, &r, "after the contract");
}

/// A crash at every mutating I/O operation of the whole contract (snapshot
/// write, fsyncs, rename, directory fsync, pruning, WAL marker, meta file,
/// segment deletes), torn or not, in each crash mode.
#[test]
fn crash_at_every_operation_of_the_contract_recovers_consistently() {
    let (base, total) = {
        let fs = node();
        let (store, mut wal) = open(&fs);
        let base = fs.mutating_ops();
        snapshot_250(&store, &mut wal).unwrap();
        (base, fs.mutating_ops() - base)
    };
    assert!(total > 10, "the contract did only {total} operations");
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
    let mut outcomes = std::collections::BTreeSet::new();
    for op in 0..=total {
        for torn in [None, Some(5)] {
            for mode in modes {
                let fs = node();
                let (store, mut wal) = open(&fs);
                assert_eq!(fs.mutating_ops(), base);
                fs.crash_at_op(base + op, torn);
                let res = snapshot_250(&store, &mut wal);
                // What was on disk at the crash, before recovery touches it.
                drop((store, wal));
                fs.crash(mode);
                let ctx = format!("op {op} torn {torn:?} {mode:?} -> {res:?}");
                let (store, mut wal) = open(&fs);
                let before = (wal.snapshot_marker().map(|m| m.0), wal.first_index());
                let r = compaction::recover(&store, &mut wal, TRAILING)
                    .unwrap_or_else(|e| panic!("{ctx}: recover: {e}"));
                assert!(r.damaged.is_empty(), "{ctx}");
                assert!(r.fell_back_from.is_none(), "{ctx}");
                let index = r.snapshot.as_ref().unwrap().meta.index;
                if res.is_ok() {
                    assert_eq!(index, 250, "{ctx}");
                }
                assert!(index == 100 || index == 250, "{ctx}");
                // Recovery finished the contract for the snapshot it chose.
                assert_eq!(
                    wal.snapshot_marker(),
                    Some((index, term_of(index))),
                    "{ctx}"
                );
                assert_eq!(wal.first_index(), index - TRAILING + 1, "{ctx}");
                assert_consistent(&store, &wal, &r, &ctx);
                outcomes.insert((before, index));
                // And it is durable: a crash now changes nothing.
                drop((store, wal));
                fs.crash(CrashMode::LOSE_UNSYNCED);
                let (store, mut wal) = open(&fs);
                let again = compaction::recover(&store, &mut wal, TRAILING).unwrap();
                assert_eq!(again.snapshot.unwrap().meta.index, index, "{ctx}");
                assert_eq!(wal.first_index(), index - TRAILING + 1, "{ctx}");
            }
        }
    }
    // Crashes landed before the snapshot was durable, between snapshot and
    // marker, between marker and compaction, and after.
    let stages: std::collections::BTreeSet<_> = outcomes
        .iter()
        .map(|((marker, first), index)| (*marker, *first, *index))
        .collect();
    assert!(stages.contains(&(Some(100), 81, 100)), "{stages:?}");
    assert!(stages.contains(&(Some(100), 81, 250)), "{stages:?}");
    assert!(stages.contains(&(Some(250), 81, 250)), "{stages:?}");
    assert!(stages.contains(&(Some(250), 231, 250)), "{stages:?}");
}

/// Explicit states between the steps, built by doing only some of them.
#[test]
fn crash_between_each_two_steps() {
    // Step 1 only: snapshot durable, no marker.
    let fs = node();
    let (store, wal) = open(&fs);
    let mut w = store.create(meta(250)).unwrap();
    w.write_all(&state(250)).unwrap();
    w.commit().unwrap();
    drop((store, wal));
    fs.crash(CrashMode::LOSE_UNSYNCED);
    let (store, mut wal) = open(&fs);
    assert_eq!(wal.snapshot_marker(), Some((100, term_of(100))));
    let r = compaction::recover(&store, &mut wal, TRAILING).unwrap();
    assert_eq!(r.compaction, Some(Compaction::Prefix { upto: 230 }));
    assert_consistent(&store, &wal, &r, "snapshot only");
    assert_eq!(wal.snapshot_marker(), Some((250, term_of(250))));

    // Steps 1 and 2: marker written, no compaction.
    let fs = node();
    let (store, mut wal) = open(&fs);
    let mut w = store.create(meta(250)).unwrap();
    w.write_all(&state(250)).unwrap();
    w.commit().unwrap();
    wal.mark_snapshot(250, term_of(250)).unwrap();
    drop((store, wal));
    fs.crash(CrashMode::LOSE_UNSYNCED);
    let (store, mut wal) = open(&fs);
    assert_eq!(wal.first_index(), 81);
    let r = compaction::recover(&store, &mut wal, TRAILING).unwrap();
    assert_eq!(wal.first_index(), 231);
    assert_consistent(&store, &wal, &r, "snapshot and marker");
}

#[test]
fn marked_snapshot_damaged_falls_back_while_the_wal_still_covers_the_gap() {
    // Marker at 250 but no compaction yet (first index 81 <= 100 + 1).
    let fs = node();
    let (store, mut wal) = open(&fs);
    let mut w = store.create(meta(250)).unwrap();
    w.write_all(&state(250)).unwrap();
    w.commit().unwrap();
    wal.mark_snapshot(250, term_of(250)).unwrap();
    let path = store.path_of(meta(250).id());
    fs.flip_bit(&path, 60, 1).unwrap();
    let r = compaction::recover(&store, &mut wal, TRAILING).unwrap();
    assert_eq!(r.fell_back_from, Some((250, term_of(250))));
    assert_eq!(r.damaged.len(), 1);
    assert_eq!(r.damaged[0].id, meta(250).id());
    assert_eq!(r.snapshot.as_ref().unwrap().meta.index, 100);
    assert_eq!(wal.first_index(), 81, "nothing compacted on a fallback");
    assert_consistent(&store, &wal, &r, "fallback");
}

#[test]
fn marked_snapshot_lost_after_compaction_is_a_clear_error() {
    let fs = node();
    let (store, mut wal) = open(&fs);
    snapshot_250(&store, &mut wal).unwrap();
    store.remove(meta(250).id()).unwrap();
    match compaction::recover(&store, &mut wal, TRAILING) {
        Err(Error::SnapshotMissing {
            marker,
            newest_valid,
            wal_first_index,
        }) => {
            assert_eq!(marker, (250, term_of(250)));
            assert_eq!(newest_valid, Some((100, term_of(100))));
            assert_eq!(wal_first_index, 231);
        }
        other => panic!("{other:?}"),
    }
    // Nothing was changed by the failed recovery.
    assert_eq!(wal.first_index(), 231);
    assert_eq!(store.list().unwrap(), [meta(100).id()]);
}

#[test]
fn fresh_node_recovers_to_nothing() {
    let fs = FaultFs::new();
    let (store, mut wal) = open(&fs);
    let r = compaction::recover(&store, &mut wal, TRAILING).unwrap();
    assert!(r.snapshot.is_none() && r.compaction.is_none());
}

/// A follower installing a leader's snapshot: its log may hold uncommitted
/// entries of another term at the snapshot's index (discard them all), or end
/// before the index (the log restarts after it).
#[test]
fn install_over_a_conflicting_or_short_log_discards_it() {
    let fs = FaultFs::new();
    let (store, mut wal) = open(&fs);
    for i in 1..=50 {
        wal.append(i, if i > 40 { 9 } else { 1 }, b"follower")
            .unwrap();
    }
    wal.sync().unwrap();
    let id = SnapshotId { index: 45, term: 2 };
    let mut w = store
        .create(SnapshotMeta {
            index: 45,
            term: 2,
            membership: Membership::voters([1]),
        })
        .unwrap();
    w.write_all(b"leader state").unwrap();
    w.commit().unwrap();
    assert_eq!(
        compaction::compact_wal(&mut wal, id, TRAILING).unwrap(),
        Compaction::Discarded
    );
    assert_eq!((wal.first_index(), wal.last_index()), (46, 45));
    assert_eq!(wal.term(45).unwrap(), Some(2));
    wal.append(46, 2, b"from leader").unwrap();
    wal.sync().unwrap();

    // A snapshot past the end of the log.
    let id = SnapshotId {
        index: 500,
        term: 3,
    };
    store
        .create(SnapshotMeta {
            index: 500,
            term: 3,
            membership: Membership::voters([1]),
        })
        .unwrap()
        .commit()
        .unwrap();
    assert_eq!(
        compaction::compact_wal(&mut wal, id, TRAILING).unwrap(),
        Compaction::Discarded
    );
    assert_eq!((wal.first_index(), wal.last_index()), (501, 500));
    drop((store, wal));
    fs.crash(CrashMode::LOSE_UNSYNCED);
    let (store, mut wal) = open(&fs);
    let r = compaction::recover(&store, &mut wal, TRAILING).unwrap();
    assert_eq!(r.snapshot.unwrap().id(), id);
    assert_eq!(wal.first_index(), 501);
    // An older snapshot does not move the WAL back.
    assert_eq!(
        compaction::compact_wal(&mut wal, SnapshotId { index: 45, term: 2 }, 0).unwrap(),
        Compaction::Superseded
    );
}
