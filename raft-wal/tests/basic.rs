//! Behaviour of the WAL on the real file system.

use raft_wal::{Error, HardState, Options, Wal};

fn small() -> Options {
    Options {
        segment_size_bytes: 8192,
        ..Options::default()
    }
}

fn data(i: u64) -> Vec<u8> {
    format!("entry-{i}-")
        .repeat((i % 7) as usize + 1)
        .into_bytes()
}

fn fill(wal: &mut Wal, lo: u64, hi: u64, term: u64) {
    for i in lo..=hi {
        wal.append(i, term, &data(i)).unwrap();
        if i % 50 == 0 {
            wal.sync().unwrap();
        }
    }
    wal.sync().unwrap();
}

fn check(wal: &Wal, lo: u64, hi: u64) {
    let got = wal.entries(lo, hi + 1, u64::MAX).unwrap();
    assert_eq!(got.len() as u64, hi + 1 - lo);
    for e in got {
        assert_eq!(e.data, data(e.index), "entry {}", e.index);
    }
}

#[test]
fn survives_reopen_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    fill(&mut wal, 1, 2000, 1);
    let hs = HardState {
        term: 4,
        vote: Some(2),
        commit: 1500,
    };
    wal.set_hard_state(hs).unwrap();
    wal.sync().unwrap();
    check(&wal, 1, 2000);
    drop(wal);
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("wal".as_ref()))
        .count();
    assert!(segments > 5, "expected several segments, got {segments}");

    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (1, 2000));
    assert_eq!(wal.hard_state(), hs);
    assert_eq!(wal.term(77).unwrap(), Some(1));
    assert_eq!(wal.term(2001).unwrap(), None);
    check(&wal, 1, 2000);
    assert!(wal.recovery_report().torn_tail.is_none());
}

#[test]
fn truncate_then_append_new_terms() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    fill(&mut wal, 1, 500, 1);
    wal.truncate_suffix(100).unwrap();
    assert_eq!(wal.last_index(), 99);
    for i in 100..=150 {
        wal.append(i, 2, &data(i)).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(wal.last_index(), 150);
    assert_eq!(wal.term(99).unwrap(), Some(1));
    assert_eq!(wal.term(100).unwrap(), Some(2));
    check(&wal, 1, 150);
}

#[test]
fn compaction_deletes_whole_segments_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    fill(&mut wal, 1, 2000, 1);
    let count = || std::fs::read_dir(dir.path()).unwrap().count();
    let before = count();
    wal.compact_prefix(1500).unwrap();
    assert!(count() < before);
    assert_eq!(wal.first_index(), 1501);
    assert!(matches!(
        wal.entries(1400, 1600, u64::MAX),
        Err(Error::OutOfRange { .. })
    ));
    check(&wal, 1501, 2000);
    drop(wal);
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (1501, 2000));
    check(&wal, 1501, 2000);
    // Compacting past the end (installing a newer snapshot) empties the log.
    wal.compact_prefix(5000).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (5001, 5000));
    fill(&mut wal, 5001, 5010, 3);
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (5001, 5010));
    check(&wal, 5001, 5010);
}

#[test]
fn reads_see_unsynced_entries_and_respect_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    fill(&mut wal, 1, 10, 1);
    wal.append(11, 1, &data(11)).unwrap();
    assert!(wal.has_unsynced());
    check(&wal, 1, 11);
    let limited = wal.entries(1, 12, 30).unwrap();
    assert!(!limited.is_empty() && limited.len() < 11);
    let total: usize = limited[..limited.len() - 1]
        .iter()
        .map(|e| e.data.len())
        .sum();
    assert!(total <= 30);
    assert_eq!(wal.entries(3, 4, 0).unwrap().len(), 1, "always one entry");
}

#[test]
fn rejects_bad_requests_without_changing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    fill(&mut wal, 1, 5, 1);
    assert!(matches!(
        wal.append(7, 1, b"gap"),
        Err(Error::NotNextIndex {
            index: 7,
            expected: 6
        })
    ));
    assert!(matches!(
        wal.truncate_suffix(9),
        Err(Error::BoundaryOutOfRange {
            index: 9,
            first_index: 1,
            last_index: 5,
            ..
        })
    ));
    assert!(matches!(
        wal.entries(4, 9, u64::MAX),
        Err(Error::OutOfRange { index: 8, .. })
    ));
    assert_eq!(wal.last_index(), 5);
    assert!(!wal.has_unsynced());
}

#[test]
fn second_open_of_a_directory_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small()).unwrap();
    let err = Wal::open(dir.path(), small()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("locked"));
    drop(wal);
    Wal::open(dir.path(), small()).unwrap();
}

#[test]
fn sync_with_nothing_new_is_free_and_same_hard_state_is_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    wal.sync().unwrap();
    assert!(!wal.has_unsynced());
    let hs = HardState {
        term: 1,
        vote: None,
        commit: 0,
    };
    wal.set_hard_state(hs).unwrap();
    assert!(wal.has_unsynced());
    wal.sync().unwrap();
    wal.set_hard_state(hs).unwrap();
    assert!(!wal.has_unsynced());
}

#[test]
fn read_only_open_and_inspect_do_not_modify() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    fill(&mut wal, 1, 300, 2);
    drop(wal);
    let ro = Wal::open(
        dir.path(),
        Options {
            read_only: true,
            ..small()
        },
    )
    .unwrap();
    check(&ro, 1, 300);
    let mut ro2 = Wal::open(
        dir.path(),
        Options {
            read_only: true,
            ..small()
        },
    )
    .unwrap();
    assert!(matches!(ro2.append(301, 2, b"x"), Err(Error::ReadOnly)));
    // Read-only opens take no lock: a writer opens alongside them (and they
    // keep showing the log as of their open).
    let mut wal = Wal::open(dir.path(), small()).unwrap();
    fill(&mut wal, 301, 310, 2);
    check(&ro, 1, 300);
}
