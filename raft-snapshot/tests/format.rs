//! The file format through the streaming writer and reader: round trips,
//! every single-byte corruption, truncation, wrong magic, future version.

mod common;

use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};

use common::{Compare, KvState};
use raft_snapshot::{
    CorruptionKind, Error, Membership, SnapshotMeta, SnapshotReader, SnapshotWriter, DEFAULT_LEVEL,
};

fn meta() -> SnapshotMeta {
    SnapshotMeta {
        index: 1234,
        term: 5,
        membership: Membership {
            voters: [1, 2, 3].into(),
            voters_outgoing: [1, 2, 4].into(),
            learners: [7].into(),
            learners_next: [4].into(),
        },
    }
}

fn snapshot_of(state: &[u8], level: i32) -> Vec<u8> {
    let mut w = SnapshotWriter::new(Cursor::new(Vec::new()), meta(), level).unwrap();
    w.write_all(state).unwrap();
    let (c, h) = w.finish().unwrap();
    let bytes = c.into_inner();
    assert_eq!(bytes.len() as u64, h.file_bytes());
    bytes
}

fn restore(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let mut r = SnapshotReader::new(bytes)?;
    let mut out = Vec::new();
    r.restore_into(&mut out)?;
    Ok(out)
}

fn small_state() -> Vec<u8> {
    let mut s = Vec::new();
    KvState::new(1, 3000).read_to_end(&mut s).unwrap();
    s
}

#[test]
fn empty_state_round_trips() {
    let bytes = snapshot_of(b"", DEFAULT_LEVEL);
    let mut r = SnapshotReader::new(&bytes[..]).unwrap();
    assert_eq!(r.header().meta, meta());
    assert_eq!(r.header().uncompressed_bytes, 0);
    let mut out = Vec::new();
    assert_eq!(r.read_to_end(&mut out).unwrap(), 0);
    assert!(r.is_verified());
}

#[test]
fn small_state_round_trips_at_several_levels() {
    let state = small_state();
    for level in [-5, 1, 3, 9, 19] {
        let bytes = snapshot_of(&state, level);
        assert_eq!(restore(&bytes).unwrap(), state, "level {level}");
    }
}

#[test]
fn writer_starts_at_the_current_position_of_its_destination() {
    let mut c = Cursor::new(b"prefix".to_vec());
    c.seek(SeekFrom::End(0)).unwrap();
    let mut w = SnapshotWriter::new(c, meta(), 3).unwrap();
    w.write_all(b"state").unwrap();
    let (c, h) = w.finish().unwrap();
    assert_eq!(c.position(), 6 + h.file_bytes());
    let bytes = c.into_inner();
    assert_eq!(restore(&bytes[6..]).unwrap(), b"state");
}

/// The default run streams 64 MiB; `SNAPSHOT_BIG_TEST=1` streams 3 GiB (more
/// than fits comfortably in this machine's memory budget for one test).
/// Neither the state nor the snapshot is ever held in memory: the snapshot
/// goes to a temporary file and the restored state is compared on the fly
/// against a regenerated copy.
#[test]
fn large_streamed_state_round_trips_without_being_held_in_memory() {
    let bytes: u64 = if std::env::var_os("SNAPSHOT_BIG_TEST").is_some() {
        3 << 30
    } else {
        64 << 20
    };
    let file = tempfile::tempfile().unwrap();
    let mut w = SnapshotWriter::new(io::BufWriter::new(file), meta(), DEFAULT_LEVEL).unwrap();
    let copied = io::copy(&mut KvState::new(7, bytes), &mut w).unwrap();
    assert_eq!(copied, bytes);
    let (file, h) = w.finish().unwrap();
    assert_eq!(h.uncompressed_bytes, bytes);
    assert!(
        h.compression_ratio() > 1.5,
        "ratio {}",
        h.compression_ratio()
    );
    let mut file = file.into_inner().unwrap();
    file.seek(SeekFrom::Start(0)).unwrap();
    let mut r = SnapshotReader::new(io::BufReader::new(file)).unwrap();
    let mut cmp = Compare::new(KvState::new(7, bytes));
    assert_eq!(r.restore_into(&mut cmp).unwrap(), bytes);
    assert!(cmp.at_end());
}

#[test]
fn every_single_byte_corruption_is_detected() {
    let state = small_state();
    let bytes = snapshot_of(&state, DEFAULT_LEVEL);
    let header_bytes = SnapshotReader::new(&bytes[..])
        .unwrap()
        .header()
        .header_bytes as usize;
    assert!(
        bytes.len() > header_bytes + 100,
        "body must be exercised too"
    );
    for pos in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff, 0x5a] {
            let mut b = bytes.clone();
            b[pos] ^= mask;
            match restore(&b) {
                Err(e) => assert!(
                    e.is_damage(),
                    "byte {pos} ^ {mask:#x}: not reported as damage: {e}"
                ),
                Ok(_) => panic!("byte {pos} ^ {mask:#x} went unnoticed"),
            }
        }
    }
}

#[test]
fn every_truncation_is_a_truncated_error() {
    let bytes = snapshot_of(&small_state(), DEFAULT_LEVEL);
    for len in 0..bytes.len() {
        match restore(&bytes[..len]) {
            Err(Error::Corruption {
                kind: CorruptionKind::Truncated { expected, found },
                ..
            }) => {
                assert!(
                    found < expected,
                    "len {len}: found {found} expected {expected}"
                );
            }
            other => panic!("truncated to {len}: {other:?}"),
        }
    }
}

#[test]
fn wrong_magic_is_bad_magic() {
    let mut bytes = snapshot_of(b"x", DEFAULT_LEVEL);
    bytes[..8].copy_from_slice(b"NOTASNAP");
    match SnapshotReader::new(&bytes[..]) {
        Err(Error::Corruption {
            kind: CorruptionKind::BadMagic { found },
            ..
        }) => assert_eq!(&found, b"NOTASNAP"),
        other => panic!("{other:?}"),
    }
    let err =
        SnapshotReader::new(&b"PK\x03\x04 a zip file, say, longer than a header"[..]).unwrap_err();
    assert!(err.to_string().contains("not a snapshot"), "{err}");
}

#[test]
fn future_version_is_unsupported_version_even_with_a_valid_checksum() {
    let mut bytes = snapshot_of(b"x", DEFAULT_LEVEL);
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let crc = crc32fast::hash(&bytes[..len - 4]);
    bytes[len - 4..len].copy_from_slice(&crc.to_le_bytes());
    match SnapshotReader::new(&bytes[..]) {
        Err(Error::UnsupportedVersion {
            found, supported, ..
        }) => assert_eq!((found, supported), (2, 1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reading_through_std_io_read_carries_typed_errors() {
    let mut bytes = snapshot_of(&small_state(), DEFAULT_LEVEL);
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let mut r = SnapshotReader::new(&bytes[..]).unwrap();
    let err = r.read_to_end(&mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(Error::from_io(err).is_damage());
    // A failed reader stays failed.
    assert!(r.read(&mut [0u8; 16]).is_err());
}

#[test]
fn invalid_level_is_refused() {
    let res = SnapshotWriter::new(Cursor::new(Vec::new()), meta(), 99);
    assert!(matches!(res, Err(Error::InvalidArgument(_))));
}

#[test]
fn compression_on_worker_threads_round_trips() {
    let mut state = Vec::new();
    KvState::new(3, 8 << 20).read_to_end(&mut state).unwrap();
    let mut w = SnapshotWriter::with_workers(Cursor::new(Vec::new()), meta(), 1, 2).unwrap();
    w.write_all(&state).unwrap();
    let (c, h) = w.finish().unwrap();
    assert_eq!(h.uncompressed_bytes, state.len() as u64);
    assert_eq!(restore(&c.into_inner()).unwrap(), state);
}
