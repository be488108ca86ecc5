//! Recovery modes and `repair`, against the fault-injecting file system.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft_wal::fault::{CrashMode, FaultFs};
use raft_wal::fs::Fs;
use raft_wal::{CorruptionKind, Error, Log, LogOptions, Preallocate, Record, RecoveryMode};

fn dir() -> PathBuf {
    PathBuf::from("/log")
}

fn opts(mode: RecoveryMode) -> LogOptions {
    LogOptions::default()
        .segment_size_bytes(4096)
        .preallocate(Preallocate::Inline)
        .recovery_mode(mode)
}

fn open(fs: &FaultFs, mode: RecoveryMode) -> raft_wal::Result<Log> {
    Log::open_with_fs(Arc::new(fs.clone()), dir(), opts(mode))
}

fn data(i: u64) -> Vec<u8> {
    vec![(i % 251) as u8; 60 + (i as usize * 13) % 200]
}

/// A log of `n` entries over several segments, synced every 5 entries.
fn filled(n: u64) -> FaultFs {
    let fs = FaultFs::new();
    let log = open(&fs, RecoveryMode::Strict).unwrap();
    for i in 1..=n {
        log.append(&data(i)).unwrap();
        if i % 5 == 0 {
            log.sync().unwrap();
        }
    }
    log.sync().unwrap();
    fs
}

/// `(file, offset, index)` of every entry record, in log order.
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

fn check_prefix(log: &Log, last: u64) {
    assert_eq!(log.last_index(), last);
    for e in log.iter(..).unwrap() {
        let e = e.unwrap();
        assert_eq!(e.to_vec(), data(e.index()), "entry {}", e.index());
    }
}

/// A crash in the middle of a batch write leaves a torn tail.
fn torn(fs: &FaultFs) {
    let log = open(fs, RecoveryMode::Strict).unwrap();
    let next = log.last_index() + 1;
    for i in next..next + 5 {
        log.append(&data(i)).unwrap();
    }
    fs.crash_at_op(fs.mutating_ops(), Some(30));
    assert!(log.sync().is_err());
    drop(log);
    fs.crash(CrashMode::KEEP_UNSYNCED);
}

#[test]
fn strict_refuses_a_torn_tail_and_changes_nothing() {
    let fs = filled(20);
    torn(&fs);
    let ops = fs.mutating_ops();
    match open(&fs, RecoveryMode::Strict) {
        Err(Error::Corruption { .. }) => {}
        other => panic!("expected corruption, got {other:?}"),
    }
    assert_eq!(fs.mutating_ops(), ops, "a refused open writes nothing");
    // The default mode cuts it and reports it.
    let log = open(&fs, RecoveryMode::TolerateTornTail).unwrap();
    assert!(log.recovery_report().torn_tail.is_some());
    assert!(log.recovery_report().dropped.is_none());
    check_prefix(&log, 20);
    drop(log);
    let log = open(&fs, RecoveryMode::Strict).unwrap();
    check_prefix(&log, 20);
}

#[test]
fn damage_in_a_sealed_segment_is_refused_or_cut_at_the_first_bad_record() {
    let fs = filled(120);
    let recs = entry_records(&fs);
    let first_file = recs[0].0.clone();
    let (file, off, index) = recs
        .iter()
        .filter(|r| r.0 == first_file)
        .nth(3)
        .cloned()
        .unwrap();
    assert_ne!(file, recs.last().unwrap().0, "must be a sealed segment");
    let later: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = recs.iter().map(|r| r.0.clone()).collect();
        v.dedup();
        v.into_iter().filter(|f| *f > file).collect()
    };
    fs.flip_bit(&file, off + 20, 3).unwrap();
    for mode in [RecoveryMode::Strict, RecoveryMode::TolerateTornTail] {
        match open(&fs, mode) {
            Err(Error::Corruption {
                file: f, offset: o, ..
            }) => assert_eq!((f, o), (file.clone(), off)),
            other => panic!("{mode:?}: expected corruption, got {other:?}"),
        }
    }
    let log = open(&fs, RecoveryMode::TruncateCorruptTail).unwrap();
    let dropped = log.recovery_report().dropped.clone().expect("dropped");
    assert_eq!((dropped.file.clone(), dropped.offset), (file.clone(), off));
    assert_eq!(dropped.kind, CorruptionKind::BadChecksum);
    assert_eq!(dropped.last_index_kept, index - 1);
    assert_eq!(dropped.removed_segments, later);
    check_prefix(&log, index - 1);
    // The log goes on from there, and survives a strict reopen.
    assert_eq!(log.append_sync(&data(index)).unwrap(), index);
    drop(log);
    let log = open(&fs, RecoveryMode::Strict).unwrap();
    check_prefix(&log, index);
    for f in &later {
        assert!(fs
            .list_dir(&dir())
            .unwrap()
            .iter()
            .all(|n| *f != dir().join(n)));
    }
}

#[test]
fn a_missing_middle_segment_is_refused_or_cut_there() {
    let fs = filled(120);
    let recs = entry_records(&fs);
    let mut files: Vec<PathBuf> = recs.iter().map(|r| r.0.clone()).collect();
    files.dedup();
    assert!(files.len() >= 4);
    let gone = files[2].clone();
    fs.remove_file(&gone).unwrap();
    match open(&fs, RecoveryMode::TolerateTornTail) {
        Err(Error::Corruption {
            kind: CorruptionKind::MissingSegment { .. },
            ..
        }) => {}
        other => panic!("expected a missing segment, got {other:?}"),
    }
    let log = open(&fs, RecoveryMode::TruncateCorruptTail).unwrap();
    let last_kept = recs.iter().rfind(|r| r.0 < gone).unwrap().2;
    check_prefix(&log, last_kept);
    let dropped = log.recovery_report().dropped.clone().unwrap();
    assert_eq!(dropped.removed_segments, files[3..].to_vec());
}

#[test]
fn repair_keeps_copies_of_what_it_cuts_and_makes_a_strict_open_work() {
    let fs = filled(120);
    let recs = entry_records(&fs);
    let (file, off, index) = recs[recs.len() / 2].clone();
    fs.flip_bit(&file, off + 9, 0).unwrap();
    assert!(open(&fs, RecoveryMode::Strict).is_err());
    let before = fs.read_all(&file).unwrap();

    let report = raft_wal::repair(&fs, &dir()).unwrap();
    let dropped = report.dropped.clone().expect("repair cut something");
    assert_eq!(
        (dropped.file.as_path(), dropped.offset),
        (file.as_path(), off)
    );
    assert_eq!(report.last_index, index - 1);
    let names = fs.list_dir(&dir()).unwrap();
    let broken = |p: &Path| format!("{}.broken", p.file_name().unwrap().to_string_lossy());
    assert!(names.contains(&broken(&file)), "{names:?}");
    assert_eq!(fs.read_all(&dir().join(broken(&file))).unwrap(), before);
    for f in &dropped.removed_segments {
        assert!(names.contains(&broken(f)), "{names:?}");
    }
    let log = open(&fs, RecoveryMode::Strict).unwrap();
    check_prefix(&log, index - 1);
    // A sound log is left alone.
    drop(log);
    let ops = fs.mutating_ops();
    let again = raft_wal::repair(&fs, &dir()).unwrap();
    assert!(again.dropped.is_none() && again.torn_tail.is_none());
    assert_eq!(fs.mutating_ops(), ops);
}

#[test]
fn repair_refuses_while_the_log_is_open_and_on_a_damaged_meta_file() {
    let fs = filled(60);
    let log = open(&fs, RecoveryMode::Strict).unwrap();
    assert!(matches!(
        raft_wal::repair(&fs, &dir()),
        Err(Error::Locked { .. })
    ));
    log.compact_before(30).unwrap();
    drop(log);
    fs.flip_bit(&dir().join("meta"), 14, 1).unwrap();
    assert!(matches!(
        raft_wal::repair(&fs, &dir()),
        Err(Error::Corruption {
            kind: CorruptionKind::BadMeta,
            ..
        })
    ));
}

#[test]
fn crash_at_every_write_with_truncate_corrupt_tail_keeps_every_synced_entry() {
    // Count the mutating operations of one run, then crash at each of them.
    let run = |fs: &FaultFs| -> u64 {
        let log = match open(fs, RecoveryMode::TruncateCorruptTail) {
            Ok(l) => l,
            Err(_) => return 0,
        };
        let mut synced = 0;
        for i in 1..=60u64 {
            if log.append(&data(i)).is_err() {
                break;
            }
            if i % 4 == 0 {
                if log.sync().is_err() {
                    break;
                }
                synced = i;
            }
        }
        synced
    };
    let total = {
        let fs = FaultFs::new();
        assert_eq!(run(&fs), 60);
        fs.mutating_ops()
    };
    assert!(total > 30, "the sweep covers {total} operations");
    for op in 0..total {
        for keep in [CrashMode::LOSE_UNSYNCED, CrashMode::KEEP_UNSYNCED] {
            let fs = FaultFs::new();
            fs.crash_at_op(op, Some(7));
            let synced = run(&fs);
            fs.crash(keep);
            let log = open(&fs, RecoveryMode::TruncateCorruptTail)
                .unwrap_or_else(|e| panic!("op {op} {keep:?}: {e}"));
            assert!(
                log.last_index() >= synced,
                "op {op} {keep:?}: lost synced entries ({} < {synced})",
                log.last_index()
            );
            assert!(
                log.recovery_report().dropped.is_none(),
                "op {op} {keep:?}: a crash is a torn tail at most: {:?}",
                log.recovery_report().dropped
            );
            check_prefix(&log, log.last_index());
        }
    }
}
