//! Chunked transfer: in order, resumable after a cut at any offset, damaged
//! chunks refused, damaged snapshots never installed.

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use raft_snapshot::{
    Chunk, CorruptionKind, Error, Membership, Received, SnapshotHeader, SnapshotId, SnapshotMeta,
    SnapshotStore, StoreOptions,
};
use raft_wal::fault::FaultFs;
use raft_wal::fs::Fs;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

fn meta(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term: 3,
        membership: Membership::voters([1, 2, 3]),
    }
}

fn state(index: u64) -> Vec<u8> {
    let mut s = Vec::new();
    common::KvState::new(index, 200_000)
        .read_to_end(&mut s)
        .unwrap();
    s
}

struct Pair {
    fs: FaultFs,
    leader: SnapshotStore,
    follower: SnapshotStore,
}

/// A leader store holding snapshot 200 and a follower store holding an older
/// snapshot 100.
fn pair() -> Pair {
    let fs = FaultFs::new();
    let leader =
        SnapshotStore::open_with_fs(Arc::new(fs.clone()), "/leader", StoreOptions::default())
            .unwrap();
    let follower =
        SnapshotStore::open_with_fs(Arc::new(fs.clone()), "/follower", StoreOptions::default())
            .unwrap();
    for (store, index) in [(&leader, 200), (&follower, 100)] {
        let mut w = store.create(meta(index)).unwrap();
        w.write_all(&state(index)).unwrap();
        w.commit().unwrap();
    }
    Pair {
        fs,
        leader,
        follower,
    }
}

fn follower_files(p: &Pair) -> Vec<String> {
    let mut n = p.fs.list_dir(&PathBuf::from("/follower")).unwrap();
    n.sort();
    n
}

fn restored(store: &SnapshotStore, id: SnapshotId) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .open_snapshot(id)
        .unwrap()
        .restore_into(&mut out)
        .unwrap();
    out
}

fn assert_old_snapshot_kept(p: &Pair) {
    assert_eq!(p.follower.list().unwrap(), [meta(100).id()]);
    assert!(
        !follower_files(p).iter().any(|n| n.ends_with(".tmp")),
        "{:?}",
        follower_files(p)
    );
    let newest = p.follower.newest_valid().unwrap();
    assert_eq!(newest.header.unwrap().meta, meta(100));
    assert_eq!(restored(&p.follower, meta(100).id()), state(100));
}

#[test]
fn transfers_with_various_chunk_sizes() {
    for chunk_bytes in [1, 7, 4096, 1 << 20] {
        let p = pair();
        let mut src = p.leader.chunks(meta(200).id(), chunk_bytes).unwrap();
        let mut rx = p.follower.receiver().expecting(meta(200).id());
        let mut installed: Option<SnapshotHeader> = None;
        let mut chunks = 0;
        while let Some(c) = src.next_chunk().unwrap() {
            chunks += 1;
            assert!(installed.is_none(), "nothing after done");
            // Before the last chunk, nothing new is visible.
            assert_eq!(p.follower.list().unwrap(), [meta(100).id()]);
            if let Received::Installed(h) = rx.accept(&c).unwrap() {
                installed = Some(h);
            }
        }
        assert_eq!(installed.unwrap().meta, meta(200));
        assert!(rx.is_closed());
        assert_eq!(
            chunks as u64,
            src.total_bytes().div_ceil(chunk_bytes as u64)
        );
        assert_eq!(p.follower.list().unwrap(), [meta(100).id(), meta(200).id()]);
        assert_eq!(restored(&p.follower, meta(200).id()), state(200));
    }
}

/// The connection breaks at random offsets (chunks in flight are lost, and the
/// sender only learns the ack of some earlier chunk); each time the sender
/// resumes from an acknowledged offset, and overlapping resends are fine.
#[test]
fn connection_cut_at_random_offsets_resumes() {
    let mut rng = SmallRng::seed_from_u64(0x5eed);
    for round in 0..30 {
        let p = pair();
        let chunk_bytes = rng.gen_range(1..5000);
        let mut rx = p.follower.receiver();
        let mut acked = 0u64; // what the sender has heard back
        let mut cuts = 0;
        let header = loop {
            let mut src = p.leader.chunks(meta(200).id(), chunk_bytes).unwrap();
            src.seek(acked).unwrap();
            let cut_after = rng.gen_range(0..40);
            let mut sent = 0;
            let mut done = None;
            while let Some(c) = src.next_chunk().unwrap() {
                if sent == cut_after {
                    cuts += 1;
                    break; // connection broken: this and later chunks are lost
                }
                sent += 1;
                match rx.accept(&c).unwrap() {
                    Received::Progress { next_offset } => {
                        // Acks get lost too; the sender keeps an older one.
                        if rng.gen_bool(0.7) {
                            acked = next_offset;
                        }
                    }
                    Received::Installed(h) => done = Some(h),
                }
            }
            if let Some(h) = done {
                break h;
            }
            assert!(!rx.is_closed());
            assert_eq!(p.follower.list().unwrap(), [meta(100).id()]);
        };
        assert_eq!(header.meta, meta(200), "round {round}");
        assert!(cuts > 0 || chunk_bytes > 1000, "round {round}");
        assert_eq!(restored(&p.follower, meta(200).id()), state(200));
        assert!(!follower_files(&p).iter().any(|n| n.ends_with(".tmp")));
    }
}

#[test]
fn chunk_damaged_in_flight_is_refused_and_can_be_resent() {
    let p = pair();
    let mut src = p.leader.chunks(meta(200).id(), 1000).unwrap();
    let mut rx = p.follower.receiver();
    let mut damaged = 0;
    let mut installed = false;
    while let Some(c) = src.next_chunk().unwrap() {
        for field in 0..3 {
            let mut bad = c.clone();
            match field {
                0 => {
                    let mid = bad.data.len() / 2;
                    bad.data[mid] ^= 0x10;
                }
                1 => bad.offset += 1,
                _ => bad.done = !bad.done,
            }
            let before = rx.next_offset();
            match rx.accept(&bad) {
                Err(Error::ChunkChecksum { .. }) => damaged += 1,
                other => panic!("{other:?}"),
            }
            assert_eq!(rx.next_offset(), before);
        }
        installed |= matches!(rx.accept(&c).unwrap(), Received::Installed(_));
    }
    assert!(installed && damaged > 0);
    assert_eq!(restored(&p.follower, meta(200).id()), state(200));
}

#[test]
fn out_of_order_chunk_is_refused_without_changing_anything() {
    let p = pair();
    let src = p.leader.chunks(meta(200).id(), 1000).unwrap();
    let mut rx = p.follower.receiver();
    rx.accept(&src.chunk_at(0).unwrap()).unwrap();
    match rx.accept(&src.chunk_at(2000).unwrap()) {
        Err(Error::ChunkOutOfOrder {
            expected: 1000,
            found: 2000,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(rx.next_offset(), 1000);
    assert!(!rx.is_closed());
}

/// The snapshot itself is damaged at the source (the chunk checksum is
/// computed over damaged bytes, so it passes): the receiver must catch it with
/// the header or body checksum, discard the partial file, and keep the old
/// snapshot. Tried at many positions in header and body.
#[test]
fn snapshot_damaged_at_the_source_is_never_installed() {
    let p = pair();
    let src = p.leader.chunks(meta(200).id(), 4096).unwrap();
    let total = src.total_bytes();
    let mut rng = SmallRng::seed_from_u64(7);
    let mut positions: Vec<u64> = (0..120).collect();
    positions.extend((0..60).map(|_| rng.gen_range(0..total)));
    positions.push(total - 1);
    for pos in positions {
        let mut rx = p.follower.receiver();
        let mut failed = None;
        let mut offset = 0;
        while offset < total {
            let mut c = src.chunk_at(offset).unwrap();
            offset += c.data.len() as u64;
            if (c.offset..offset).contains(&pos) {
                c.data[(pos - c.offset) as usize] ^= 0x40;
                c = Chunk::new(c.offset, c.data, c.done);
            }
            match rx.accept(&c) {
                Ok(Received::Installed(_)) => panic!("damage at byte {pos} was installed"),
                Ok(Received::Progress { .. }) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let e = failed.unwrap_or_else(|| panic!("damage at byte {pos} went unnoticed"));
        assert!(e.is_damage(), "byte {pos}: {e}");
        assert!(rx.is_closed());
        assert!(matches!(
            rx.accept(&src.chunk_at(0).unwrap()),
            Err(Error::TransferClosed)
        ));
        assert_old_snapshot_kept(&p);
    }
}

#[test]
fn early_done_is_truncated_and_wrong_snapshot_is_refused() {
    let p = pair();
    let src = p.leader.chunks(meta(200).id(), 1000).unwrap();
    let mut rx = p.follower.receiver();
    rx.accept(&src.chunk_at(0).unwrap()).unwrap();
    let c = src.chunk_at(1000).unwrap();
    let early = Chunk::new(c.offset, c.data, true);
    assert!(matches!(
        rx.accept(&early),
        Err(Error::Corruption {
            kind: CorruptionKind::Truncated { .. },
            ..
        })
    ));
    assert_old_snapshot_kept(&p);

    let mut rx = p.follower.receiver().expecting(SnapshotId {
        index: 200,
        term: 4,
    });
    let err = rx.accept(&src.chunk_at(0).unwrap()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Corruption {
                kind: CorruptionKind::BadHeader(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert_old_snapshot_kept(&p);
}

#[test]
fn abandoned_receiver_leaves_nothing_behind() {
    let p = pair();
    let mut src = p.leader.chunks(meta(200).id(), 1000).unwrap();
    let mut rx = p.follower.receiver();
    for _ in 0..5 {
        rx.accept(&src.next_chunk().unwrap().unwrap()).unwrap();
    }
    assert!(rx.partial_path().is_some());
    drop(rx);
    assert_old_snapshot_kept(&p);
}

/// A received snapshot is not pruned against before its node decides to install
/// it: with `keep = 1` the node's own base snapshot survives any number of
/// received ones until the node calls `retain_newest` with its new base.
#[test]
fn received_snapshots_never_prune_the_base_snapshot() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opts = StoreOptions {
        keep: 1,
        ..StoreOptions::default()
    };
    let leader = SnapshotStore::open(a.path(), StoreOptions::default()).unwrap();
    let follower = SnapshotStore::open(b.path(), opts).unwrap();
    let base = meta(10);
    let mut w = follower.create(base.clone()).unwrap();
    w.write_all(&state(10)).unwrap();
    w.commit().unwrap();
    for index in [20, 30] {
        let m = meta(index);
        let mut w = leader.create(m.clone()).unwrap();
        w.write_all(&state(index)).unwrap();
        w.commit().unwrap();
        let mut source = leader.chunks(m.id(), 4096).unwrap();
        let mut rx = follower.receiver().expecting(m.id());
        let mut installed = false;
        while let Some(chunk) = source.next_chunk().unwrap() {
            installed |= matches!(rx.accept(&chunk).unwrap(), Received::Installed(_));
        }
        assert!(installed);
    }
    let ids: Vec<u64> = follower.list().unwrap().iter().map(|i| i.index).collect();
    assert_eq!(
        ids,
        [10, 20, 30],
        "the base snapshot 10 must survive receiving"
    );
    // The node installed 30: now the rest may go.
    follower.retain_newest(meta(30).id()).unwrap();
    let ids: Vec<u64> = follower.list().unwrap().iter().map(|i| i.index).collect();
    assert_eq!(ids, [30]);
}
