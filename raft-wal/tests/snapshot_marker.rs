//! The snapshot marker: durable, carried across compaction and segment
//! deletion, answers `term`, and survives a crash at every operation of
//! mark + compact.

use std::path::PathBuf;
use std::sync::Arc;

use raft_wal::fault::{CrashMode, FaultFs};
use raft_wal::{Error, Options, Wal};

fn dir() -> PathBuf {
    PathBuf::from("/wal")
}

fn opts() -> Options {
    Options {
        segment_size_bytes: 4096,
        preallocate_in_background: false,
        ..Options::default()
    }
}

fn open(fs: &FaultFs) -> raft_wal::Result<Wal> {
    Wal::open_with_fs(Arc::new(fs.clone()), dir(), opts())
}

fn data(i: u64) -> Vec<u8> {
    vec![(i % 251) as u8; 50 + (i as usize * 13) % 200]
}

fn term_of(i: u64) -> u64 {
    1 + i / 40
}

/// A WAL of entries 1..=n over several small segments, synced.
fn filled(n: u64) -> FaultFs {
    let fs = FaultFs::new();
    let mut wal = open(&fs).unwrap();
    for i in 1..=n {
        wal.append(i, term_of(i), &data(i)).unwrap();
        if i % 7 == 0 {
            wal.sync().unwrap();
        }
    }
    wal.sync().unwrap();
    fs
}

fn check_entries(wal: &Wal, ctx: &str) {
    for i in wal.first_index()..=wal.last_index() {
        let e = wal
            .entry(i)
            .unwrap_or_else(|e| panic!("{ctx}: entry {i}: {e}"));
        assert_eq!((e.term, e.data), (term_of(i), data(i)), "{ctx}: entry {i}");
    }
}

#[test]
fn marker_survives_reopen_and_deletion_of_the_segment_that_held_it() {
    let fs = filled(200);
    let mut wal = open(&fs).unwrap();
    assert_eq!(wal.snapshot_marker(), None);
    wal.mark_snapshot(150, term_of(150)).unwrap();
    // More segments after the marker, then compaction deletes its segment.
    for i in 201..=400 {
        wal.append(i, term_of(i), &data(i)).unwrap();
    }
    wal.sync().unwrap();
    wal.compact_prefix(350).unwrap();
    assert_eq!(
        wal.term(149).unwrap(),
        None,
        "compacted, and not the marker"
    );
    assert_eq!(wal.term(150).unwrap(), Some(term_of(150)), "the marker");
    drop(wal);
    fs.crash(CrashMode::LOSE_UNSYNCED);
    let mut wal = open(&fs).unwrap();
    assert_eq!(wal.snapshot_marker(), Some((150, term_of(150))));
    assert_eq!(wal.recovery_report().snapshot_marker, wal.snapshot_marker());
    assert_eq!(wal.first_index(), 351);
    check_entries(&wal, "after reopen");

    // A newer marker, compaction exactly to it: term(first - 1) is known.
    wal.mark_snapshot(380, term_of(380)).unwrap();
    wal.compact_prefix(380).unwrap();
    assert_eq!(wal.term(380).unwrap(), Some(term_of(380)));
    drop(wal);
    fs.crash(CrashMode::LOSE_UNSYNCED);
    let wal = open(&fs).unwrap();
    assert_eq!(wal.snapshot_marker(), Some((380, term_of(380))));
    assert_eq!(wal.term(380).unwrap(), Some(term_of(380)));
    assert_eq!(wal.term(379).unwrap(), None);
}

#[test]
fn marker_past_the_end_of_the_log_after_installing_a_snapshot() {
    let fs = filled(20);
    let mut wal = open(&fs).unwrap();
    wal.mark_snapshot(1000, 9).unwrap();
    wal.compact_prefix(1000).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (1001, 1000));
    wal.append(1001, 9, b"next").unwrap();
    wal.sync().unwrap();
    drop(wal);
    fs.crash(CrashMode::LOSE_UNSYNCED);
    let wal = open(&fs).unwrap();
    assert_eq!(wal.snapshot_marker(), Some((1000, 9)));
    assert_eq!((wal.first_index(), wal.last_index()), (1001, 1001));
    assert_eq!(wal.term(1000).unwrap(), Some(9));
}

#[test]
fn markers_only_move_forward() {
    let fs = filled(20);
    let mut wal = open(&fs).unwrap();
    wal.mark_snapshot(10, 1).unwrap();
    let ops = fs.mutating_ops();
    wal.mark_snapshot(10, 1).unwrap();
    assert_eq!(
        fs.mutating_ops(),
        ops,
        "the same marker again costs nothing"
    );
    assert!(matches!(
        wal.mark_snapshot(9, 1),
        Err(Error::SnapshotMarkerNotNewer {
            index: 9,
            current: 10
        })
    ));
    assert!(matches!(
        wal.mark_snapshot(10, 2),
        Err(Error::SnapshotMarkerNotNewer {
            index: 10,
            current: 10
        })
    ));
    assert!(matches!(
        wal.mark_snapshot(0, 0),
        Err(Error::SnapshotMarkerNotNewer { index: 0, .. })
    ));
    assert_eq!(wal.snapshot_marker(), Some((10, 1)));
}

#[test]
fn marker_on_a_full_disk_fails_cleanly() {
    let fs = filled(20);
    let mut wal = open(&fs).unwrap();
    wal.mark_snapshot(5, 1).unwrap();
    fs.set_space_limit(Some(fs.used_bytes()));
    // Fill the active segment's preallocated room first.
    let mut i = 21;
    let err = loop {
        match wal
            .append(i, term_of(i), &data(i))
            .and_then(|()| wal.sync())
        {
            Ok(()) => i += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    let last = wal.last_index();
    let err = wal.mark_snapshot(15, 1).unwrap_err();
    assert!(matches!(err, Error::NoSpace { .. }), "{err}");
    assert_eq!(wal.snapshot_marker(), Some((5, 1)), "rolled back");
    fs.set_space_limit(None);
    wal.mark_snapshot(15, 1).unwrap();
    drop(wal);
    fs.crash(CrashMode::LOSE_UNSYNCED);
    let wal = open(&fs).unwrap();
    assert_eq!(wal.snapshot_marker(), Some((15, 1)));
    assert_eq!(wal.last_index(), last);
}

/// Crash at every mutating operation of `mark_snapshot` + `compact_prefix`
/// (torn or not, each crash mode): the reopened log holds the old or the new
/// marker (the new one if `mark_snapshot` returned), the old or the new first
/// index (the new one if compaction returned), never a new first index without
/// the new marker, and every remaining entry intact.
#[test]
fn crash_at_every_operation_of_mark_and_compact() {
    const N: u64 = 300;
    const SNAP: u64 = 250;
    const KEEP: u64 = 20;
    let step = |wal: &mut Wal| -> (bool, bool) {
        if wal.mark_snapshot(SNAP, term_of(SNAP)).is_err() {
            return (false, false);
        }
        (true, wal.compact_prefix(SNAP - KEEP).is_ok())
    };
    let (base, total) = {
        let fs = filled(N);
        let mut wal = open(&fs).unwrap();
        wal.mark_snapshot(100, term_of(100)).unwrap();
        let base = fs.mutating_ops();
        assert_eq!(step(&mut wal), (true, true));
        (base, fs.mutating_ops() - base)
    };
    assert!(total > 5, "mark + compact must do some I/O, did {total}");
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
    let mut seen = std::collections::BTreeSet::new();
    for op in 0..=total {
        for torn in [None, Some(3), Some(20)] {
            for mode in modes {
                let fs = filled(N);
                let mut wal = open(&fs).unwrap();
                wal.mark_snapshot(100, term_of(100)).unwrap();
                assert_eq!(fs.mutating_ops(), base);
                fs.crash_at_op(base + op, torn);
                let (marked, compacted) = step(&mut wal);
                drop(wal);
                fs.crash(mode);
                let ctx =
                    format!("op {op} torn {torn:?} {mode:?} marked {marked} compacted {compacted}");
                let mut wal = open(&fs).unwrap_or_else(|e| panic!("{ctx}: reopen: {e}"));
                let marker = wal.snapshot_marker();
                let first = wal.first_index();
                assert!(
                    marker == Some((100, term_of(100))) || marker == Some((SNAP, term_of(SNAP))),
                    "{ctx}: marker {marker:?}"
                );
                if marked {
                    assert_eq!(marker, Some((SNAP, term_of(SNAP))), "{ctx}");
                }
                assert!(
                    first == 1 || first == SNAP - KEEP + 1,
                    "{ctx}: first {first}"
                );
                if compacted {
                    assert_eq!(first, SNAP - KEEP + 1, "{ctx}");
                }
                if first > 1 {
                    assert_eq!(
                        marker,
                        Some((SNAP, term_of(SNAP))),
                        "{ctx}: compacted without marker"
                    );
                }
                assert_eq!(wal.last_index(), N, "{ctx}");
                check_entries(&wal, &ctx);
                seen.insert((marker.map(|m| m.0), first));
                // Finishing the interrupted step works and is durable.
                wal.mark_snapshot(SNAP, term_of(SNAP)).unwrap();
                wal.compact_prefix(SNAP - KEEP).unwrap();
                drop(wal);
                fs.crash(CrashMode::LOSE_UNSYNCED);
                let wal = open(&fs).unwrap();
                assert_eq!(wal.snapshot_marker(), Some((SNAP, term_of(SNAP))), "{ctx}");
                assert_eq!(wal.first_index(), SNAP - KEEP + 1, "{ctx}");
            }
        }
    }
    // The sweep saw all three stages: before, marked only, marked + compacted.
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[test]
fn format_1_meta_file_is_still_read() {
    let tmp = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(tmp.path(), Options::default()).unwrap();
    for i in 1..=10 {
        wal.append(i, 1, b"x").unwrap();
    }
    wal.compact_prefix(5).unwrap();
    drop(wal);
    let mut m = b"RWALMETA".to_vec();
    m.extend_from_slice(&1u32.to_le_bytes());
    m.extend_from_slice(&6u64.to_le_bytes());
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(tmp.path().join("meta"), &m).unwrap();
    let wal = Wal::open(tmp.path(), Options::default()).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (6, 10));
    assert_eq!(wal.snapshot_marker(), None);
}
