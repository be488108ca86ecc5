//! The WAL under injected faults: crashes at every write, torn writes, bit
//! flips, EIO and ENOSPC, through `FaultFs`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{apply_to_wal, is_prefix_outcome, Model, Op};
use raft_wal::fault::{CrashMode, FaultFs, FaultOp};
use raft_wal::{CorruptionKind, Error, HardState, Options, Record, Wal};

fn dir() -> PathBuf {
    PathBuf::from("/wal")
}

fn opts() -> Options {
    Options {
        segment_size_bytes: 4096,
        // Deterministic operation numbering for the crash sweep, and no
        // background thread to consume an injected fault.
        preallocate_in_background: false,
        ..Options::default()
    }
}

fn open(fs: &FaultFs) -> raft_wal::Result<Wal> {
    Wal::open_with_fs(Arc::new(fs.clone()), dir(), opts())
}

fn payload(i: usize) -> Vec<u8> {
    vec![(i % 251) as u8; 40 + (i * 37) % 300]
}

/// A workload of batches that spans several segments and uses every kind of
/// change. Each inner vector is one batch, synced at its end.
fn workload() -> Vec<Vec<Op>> {
    let mut batches = Vec::new();
    let mut model = Model::default();
    let mut n = 0;
    for b in 0..24 {
        let mut batch = Vec::new();
        let mut m = model.clone();
        let term = 1 + b / 6;
        if b % 6 == 5 && m.last() > m.first + 3 {
            batch.push(Op::Truncate { from: m.last() - 2 });
        }
        for _ in 0..(1 + b % 4) * 3 {
            n += 1;
            batch.push(Op::Append {
                term,
                data: payload(n),
            });
        }
        if b % 3 == 0 {
            batch.push(Op::HardState(HardState {
                term,
                vote: Some(b % 3),
                commit: m.first,
            }));
        }
        for op in &batch {
            m.apply(op);
        }
        if b % 8 == 7 {
            batch.push(Op::Compact {
                upto: m.last() - 10,
            });
        }
        for op in &batch {
            model.apply(op);
        }
        batches.push(batch);
    }
    batches
}

/// Runs the workload until the first error. Returns the last acknowledged
/// model and the ops of the batch that was in flight when it failed.
fn run(wal: &mut Wal, batches: &[Vec<Op>]) -> (Model, Vec<Op>) {
    let mut acked = Model::default();
    for batch in batches {
        let mut done = Vec::new();
        for op in batch {
            if let Op::Compact { .. } = op {
                // Compaction syncs the batch so far, then is its own step.
                if wal.sync().is_err() {
                    return (acked, done);
                }
                for o in done.drain(..) {
                    acked.apply(&o);
                }
                if apply_to_wal(wal, op).is_err() {
                    return (acked, vec![op.clone()]);
                }
                acked.apply(op);
                continue;
            }
            if apply_to_wal(wal, op).is_err() {
                return (acked, done);
            }
            done.push(op.clone());
        }
        if wal.sync().is_err() {
            return (acked, done);
        }
        for o in &done {
            acked.apply(o);
        }
    }
    (acked, Vec::new())
}

#[test]
fn crash_at_every_write_boundary_never_loses_synced_data() {
    let batches = workload();
    let total_ops = {
        let fs = FaultFs::new();
        let mut wal = open(&fs).unwrap();
        let (acked, inflight) = run(&mut wal, &batches);
        assert!(inflight.is_empty());
        assert!(acked.last() > 100);
        drop(wal);
        let segs = max_segment_seq(&fs);
        assert!(segs > 3, "workload must span segments, got {segs}");
        fs.mutating_ops()
    };
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
    let mut torn_tails = 0;
    for op in 0..total_ops {
        for torn in [None, Some(1), Some(9), Some(100)] {
            for mode in modes {
                let fs = FaultFs::new();
                let mut wal = open(&fs).unwrap();
                fs.crash_at_op(op, torn);
                let (acked, inflight) = run(&mut wal, &batches);
                drop(wal);
                fs.crash(mode);
                let ctx = format!("crash at op {op}, torn {torn:?}, {mode:?}");
                let wal = open(&fs).unwrap_or_else(|e| panic!("{ctx}: reopen failed: {e}"));
                if wal.recovery_report().torn_tail.is_some() {
                    torn_tails += 1;
                }
                let got = Model::of(&wal);
                assert!(
                    is_prefix_outcome(&got, &acked, &inflight),
                    "{ctx}: recovered state is neither the acknowledged state nor a \
                     prefix of the in-flight batch\n got: first {} last {} hs {:?}\n \
                     acked: first {} last {} hs {:?}\n inflight: {} ops",
                    got.first,
                    got.last(),
                    got.hard_state,
                    acked.first,
                    acked.last(),
                    acked.hard_state,
                    inflight.len()
                );
                // The recovered log must accept new writes and survive another reopen.
                let mut wal = wal;
                let next = wal.last_index() + 1;
                wal.append(next, 99, b"after").unwrap();
                wal.sync().unwrap();
                drop(wal);
                fs.crash(CrashMode::LOSE_UNSYNCED);
                let wal = open(&fs).unwrap_or_else(|e| panic!("{ctx}: second reopen: {e}"));
                assert_eq!(wal.last_index(), next, "{ctx}");
            }
        }
    }
    assert!(torn_tails > 0, "the sweep never produced a torn tail");
}

fn max_segment_seq(fs: &FaultFs) -> u64 {
    let mut n = 0;
    raft_wal::inspect(fs, &dir(), &mut |_, _, r| {
        if let Record::Header { seq, .. } = r {
            n = n.max(*seq)
        }
    })
    .unwrap();
    n
}

/// `(file, offset)` of every entry record, in log order.
fn entry_records(fs: &FaultFs) -> Vec<(PathBuf, u64, u64)> {
    let mut out = Vec::new();
    raft_wal::inspect(fs, &dir(), &mut |f, off, r| {
        if let Record::Entry { index, .. } = r {
            out.push((f.to_path_buf(), off, *index));
        }
    })
    .unwrap();
    out
}

fn filled(n: usize) -> FaultFs {
    let fs = FaultFs::new();
    let mut wal = open(&fs).unwrap();
    for i in 1..=n {
        wal.append(i as u64, 1, &payload(i)).unwrap();
        if i % 5 == 0 {
            wal.sync().unwrap();
        }
    }
    wal.sync().unwrap();
    fs
}

fn expect_corruption(fs: &FaultFs, file: &Path, offset: u64) {
    match open(fs) {
        Err(Error::Corruption {
            file: f, offset: o, ..
        }) => {
            assert_eq!((f.as_path(), o), (file, offset));
        }
        other => panic!(
            "expected corruption at {}:{offset}, got {other:?}",
            file.display()
        ),
    }
}

#[test]
fn bit_flip_in_a_sealed_segment_is_corruption_naming_file_and_offset() {
    let fs = filled(120);
    let recs = entry_records(&fs);
    let first_file = recs[0].0.clone();
    let (file, off, _) = recs
        .iter()
        .filter(|r| r.0 == first_file)
        .nth(3)
        .cloned()
        .unwrap();
    assert_ne!(file, recs.last().unwrap().0, "must be a sealed segment");
    fs.flip_bit(&file, off + 20, 3).unwrap();
    expect_corruption(&fs, &file, off);
}

#[test]
fn bit_flip_in_the_middle_of_the_active_segment_is_corruption() {
    let fs = filled(120);
    let recs = entry_records(&fs);
    let last_file = recs.last().unwrap().0.clone();
    let in_last: Vec<_> = recs.iter().filter(|r| r.0 == last_file).collect();
    assert!(in_last.len() >= 3);
    let (file, off, _) = in_last[in_last.len() / 2].clone();
    // Flip the length field: the record now claims to run past its end.
    fs.flip_bit(&file, off + 6, 2).unwrap();
    expect_corruption(&fs, &file, off);
}

#[test]
fn damaged_segment_header_and_meta_are_corruption() {
    let fs = filled(120);
    let recs = entry_records(&fs);
    let file = recs[0].0.clone();
    fs.flip_bit(&file, 10, 0).unwrap();
    expect_corruption(&fs, &file, 0);

    let fs = filled(120);
    let mut wal = open(&fs).unwrap();
    wal.compact_prefix(50).unwrap();
    drop(wal);
    fs.flip_bit(&dir().join("meta"), 14, 1).unwrap();
    match open(&fs) {
        Err(Error::Corruption {
            kind: CorruptionKind::BadMeta,
            ..
        }) => {}
        other => panic!("expected BadMeta, got {other:?}"),
    }
}

#[test]
fn torn_tail_is_cut_and_reported() {
    let fs = filled(20);
    let mut wal = open(&fs).unwrap();
    for i in 21..=25 {
        wal.append(i, 1, &payload(i as usize)).unwrap();
    }
    // The batch write is the next mutating op; tear it after 30 bytes.
    fs.crash_at_op(fs.mutating_ops(), Some(30));
    assert!(wal.sync().is_err());
    drop(wal);
    fs.crash(CrashMode::KEEP_UNSYNCED);
    let wal = open(&fs).unwrap();
    let torn = wal.recovery_report().torn_tail.clone().expect("torn tail");
    assert!(torn.discarded_bytes > 0);
    assert_eq!(wal.last_index(), 20);
}

#[test]
fn fsync_eio_poisons_the_handle() {
    let fs = filled(10);
    let mut wal = open(&fs).unwrap();
    wal.append(11, 1, b"x").unwrap();
    fs.fail_next(FaultOp::Sync, libc::EIO);
    let err = wal.sync().unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    // Every later call fails, including the one that might "succeed" falsely,
    // and says what the first failure was.
    match wal.sync() {
        Err(Error::Poisoned { op, source, .. }) => {
            assert_eq!(op, "fdatasync");
            assert_eq!(source.raw_os_error(), Some(libc::EIO));
            assert_eq!(
                source.kind(),
                std::io::Error::from_raw_os_error(libc::EIO).kind()
            );
        }
        other => panic!("expected Poisoned, got {other:?}"),
    }
    assert!(matches!(
        wal.append(12, 1, b"y"),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(wal.entries(1, 2, 10), Err(Error::Poisoned { .. })));
    assert!(matches!(wal.term(1), Err(Error::Poisoned { .. })));
    assert!(matches!(wal.compact_prefix(3), Err(Error::Poisoned { .. })));
    drop(wal);
    fs.crash(CrashMode::LOSE_UNSYNCED);
    assert_eq!(open(&fs).unwrap().last_index(), 10);
}

#[test]
fn write_eio_poisons_the_handle() {
    let fs = filled(10);
    let mut wal = open(&fs).unwrap();
    wal.append(11, 1, b"x").unwrap();
    fs.fail_next(FaultOp::Write, libc::EIO);
    assert!(matches!(wal.sync(), Err(Error::Io { .. })));
    assert!(matches!(
        wal.append(12, 1, b"y"),
        Err(Error::Poisoned { .. })
    ));
}

#[test]
fn read_eio_is_an_error_not_a_panic() {
    let fs = filled(10);
    fs.fail_next(FaultOp::Read, libc::EIO);
    assert!(matches!(open(&fs), Err(Error::Io { .. })));
    assert_eq!(open(&fs).unwrap().last_index(), 10);
}

#[test]
fn enospc_on_write_discards_the_batch_and_the_handle_recovers() {
    let fs = filled(10);
    let mut wal = open(&fs).unwrap();
    let before = Model::of(&wal);
    wal.truncate_suffix(8).unwrap();
    for i in 8..=12 {
        wal.append(i, 2, b"new").unwrap();
    }
    wal.set_hard_state(HardState {
        term: 2,
        vote: Some(1),
        commit: 3,
    })
    .unwrap();
    fs.fail_next(FaultOp::Write, libc::ENOSPC);
    assert!(matches!(wal.sync(), Err(Error::NoSpace { .. })));
    assert_eq!(
        Model::of(&wal),
        before,
        "log must be exactly as before the batch"
    );
    // Space is back: the same handle works.
    wal.append(11, 1, b"later").unwrap();
    wal.sync().unwrap();
    let mut expected = before.clone();
    expected.apply(&Op::Append {
        term: 1,
        data: b"later".to_vec(),
    });
    assert_eq!(Model::of(&wal), expected);
    drop(wal);
    for mode in [CrashMode::KEEP_UNSYNCED, CrashMode::LOSE_UNSYNCED] {
        fs.crash(mode);
        assert_eq!(Model::of(&open(&fs).unwrap()), expected);
    }
}

#[test]
fn disk_full_at_rotation_and_mid_write_leaves_the_log_unchanged() {
    disk_full_leaves_the_log_unchanged(false);
}

#[test]
fn disk_full_with_background_preallocation_leaves_the_log_unchanged() {
    disk_full_leaves_the_log_unchanged(true);
}

fn disk_full_leaves_the_log_unchanged(background: bool) {
    let fs = filled(30);
    let options = Options {
        preallocate_in_background: background,
        ..opts()
    };
    let mut wal = Wal::open_with_fs(Arc::new(fs.clone()), dir(), options).unwrap();
    let mut expected = Model::of(&wal);
    fs.set_space_limit(Some(fs.used_bytes()));
    // Keep appending batches: sooner or later a rotation or an oversized batch
    // needs space that is not there.
    let mut failures = 0;
    for round in 0..40 {
        let next = wal.last_index() + 1;
        let big = vec![7u8; 900 + round * 50];
        let res = wal
            .append(next, 3, &big)
            .and_then(|()| wal.append(next + 1, 3, &big))
            .and_then(|()| wal.sync());
        match res {
            Ok(()) => {
                for _ in 0..2 {
                    expected.apply(&Op::Append {
                        term: 3,
                        data: big.clone(),
                    });
                }
            }
            Err(Error::NoSpace { .. }) => failures += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
        assert_eq!(Model::of(&wal), expected, "round {round}");
    }
    assert!(failures > 0, "the space limit never bit");
    fs.set_space_limit(None);
    let next = wal.last_index() + 1;
    wal.append(next, 4, b"space is back").unwrap();
    wal.sync().unwrap();
    expected.apply(&Op::Append {
        term: 4,
        data: b"space is back".to_vec(),
    });
    drop(wal);
    for mode in [CrashMode::KEEP_UNSYNCED, CrashMode::LOSE_UNSYNCED] {
        fs.crash(mode);
        assert_eq!(Model::of(&open(&fs).unwrap()), expected);
    }
}

#[test]
fn second_open_on_the_same_fs_is_locked() {
    let fs = filled(3);
    let _wal = open(&fs).unwrap();
    assert!(matches!(open(&fs), Err(Error::Locked { .. })));
}
