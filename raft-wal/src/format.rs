//! On-disk encoding: records, segment file names and the meta file.
//!
//! A segment is a sequence of records. Each record is
//!
//! ```text
//! crc: u32 LE | len_kind: u32 LE (kind in the top 4 bits, payload length below) | payload
//! ```
//!
//! The CRC32 covers the segment's sequence number (not stored in the record), the
//! `len_kind` word and the payload, so a record copied into another segment fails
//! the check. Entry payloads carry their index and term, so those are covered too.
//! A header word of all zeros marks the end of written data in a preallocated file.
//!
//! Segment format versions: 1 had entries, hard states, truncations, seals and
//! snapshot markers; 2 adds the opaque metadata record (kind 7). Version 1
//! segments are still read; new segments are written as version 2.

use crate::raft::HardState;

/// Bytes of the fixed record header (crc + len_kind).
pub(crate) const RECORD_HEADER_BYTES: usize = 8;
/// Largest payload a record may carry (the length field has 28 bits).
pub(crate) const MAX_PAYLOAD_BYTES: usize = (1 << 28) - 1;
/// Bytes of an entry payload before the caller's data (index + term).
pub(crate) const ENTRY_PREFIX_BYTES: usize = 16;

const SEGMENT_MAGIC: &[u8; 8] = b"RAFTWAL\x01";
/// Segment format this version writes.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// Oldest segment format this version reads.
const OLDEST_FORMAT_VERSION: u32 = 1;
/// Largest metadata value [`encode_metadata`] accepts (it is copied into the
/// head of every new segment, so it must stay small).
pub(crate) const MAX_METADATA_BYTES: usize = 64 << 10;
const META_MAGIC: &[u8; 8] = b"RWALMETA";
/// Format of the meta file this version writes (2 added the snapshot marker;
/// format 1 files are still read).
const META_VERSION: u32 = 2;
/// Size of a format-1 meta file: magic, version, first index, crc.
const META_V1_BYTES: usize = 8 + 4 + 8 + 4;
/// Size of the encoded meta file: magic, version, first index, marker index
/// (0 = none), marker term, crc.
pub(crate) const META_BYTES: usize = 8 + 4 + 8 + 8 + 8 + 4;

/// Kind tags of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Header = 1,
    Entry = 2,
    HardState = 3,
    Truncate = 4,
    Seal = 5,
    SnapshotMarker = 6,
    Metadata = 7,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Header,
            2 => Kind::Entry,
            3 => Kind::HardState,
            4 => Kind::Truncate,
            5 => Kind::Seal,
            6 => Kind::SnapshotMarker,
            7 => Kind::Metadata,
            _ => return None,
        })
    }
}

/// A decoded record borrowing from the segment bytes, as shown to
/// [`inspect`](crate::inspect) visitors.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Record<'a> {
    /// First record of every segment.
    Header {
        /// Segment sequence number.
        seq: u64,
        /// Index the log expected next when the segment was created.
        first_index: u64,
    },
    /// A log entry.
    Entry {
        /// Entry index.
        index: u64,
        /// Entry term (Raft layer); 0 for entries appended through the
        /// general [`Log`](crate::Log) API.
        term: u64,
        /// Entry payload.
        data: &'a [u8],
    },
    /// A hard state written by format 1 (the newest metadata record of
    /// either kind wins; format 2 writes [`Record::Metadata`] instead).
    HardState(HardState),
    /// The opaque metadata value set with
    /// [`Log::set_metadata`](crate::Log::set_metadata); the newest one wins.
    Metadata(&'a [u8]),
    /// Every entry at or above `from` is discarded.
    Truncate {
        /// First discarded index.
        from: u64,
    },
    /// The segment ends here; no further records follow.
    Seal,
}

/// Outcome of decoding one record position.
#[derive(Debug)]
pub(crate) enum Decoded<'a> {
    /// A valid record and the offset just past it.
    Record(Record<'a>, usize),
    /// The header word is all zeros: the end of written data.
    End,
    /// Something is wrong at this offset.
    Invalid(crate::error::CorruptionKind),
    /// A snapshot marker `(index, term)` and the offset just past it. Kept
    /// out of the public [`Record`] so that adding it did not break code that
    /// matches on every record kind.
    Marker(SnapshotMarker, usize),
}

/// The `(index, term)` of the newest durable snapshot, as recorded in the WAL.
pub(crate) type SnapshotMarker = (u64, u64);

/// Highest record kind this version knows.
pub(crate) const MAX_KIND: u32 = Kind::Metadata as u32;

fn crc(seq: u64, len_kind: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&len_kind.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Appends one record to `out`. `parts` are concatenated as the payload.
fn encode(out: &mut Vec<u8>, seq: u64, kind: Kind, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    debug_assert!(len <= MAX_PAYLOAD_BYTES, "caller checks payload size");
    let len_kind = ((kind as u32) << 28) | len as u32;
    out.reserve(RECORD_HEADER_BYTES + len);
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&len_kind.to_le_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
    // The length/kind word and the payload are contiguous: one pass.
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&out[start + 4..]);
    let c = h.finalize();
    out[start..start + 4].copy_from_slice(&c.to_le_bytes());
}

/// Encoded size of an entry record with `data_len` bytes of data.
#[cfg(test)]
pub(crate) fn entry_record_bytes(data_len: usize) -> usize {
    RECORD_HEADER_BYTES + ENTRY_PREFIX_BYTES + data_len
}

/// Size of the record at `off` as its header states it (header included),
/// without checking anything; [`decode`] checks. `buf` must hold the header.
pub(crate) fn record_bytes_at(buf: &[u8], off: usize) -> usize {
    let len_kind = u32_at(buf, off + 4);
    RECORD_HEADER_BYTES + (len_kind & ((1 << 28) - 1)) as usize
}

pub(crate) fn encode_header(out: &mut Vec<u8>, seq: u64, first_index: u64) {
    let mut p = [0u8; 32];
    p[0..8].copy_from_slice(SEGMENT_MAGIC);
    p[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    p[16..24].copy_from_slice(&seq.to_le_bytes());
    p[24..32].copy_from_slice(&first_index.to_le_bytes());
    encode(out, seq, Kind::Header, &[&p]);
}

/// The CRC32 of a segment's sequence number, the first bytes every record
/// checksum of that segment covers; [`encode_entry_fast`] continues from it.
pub(crate) fn seq_crc(seq: u64) -> u32 {
    crc32fast::hash(&seq.to_le_bytes())
}

#[cfg(test)]
pub(crate) fn encode_entry(out: &mut Vec<u8>, seq: u64, index: u64, term: u64, data: &[u8]) {
    encode_entry_fast(out, seq_crc(seq), index, term, data);
}

/// Appends an entry record to `out`, given [`seq_crc`] of its segment: the
/// append path. The header is built on the stack and copied with the data,
/// and the checksum continues from `seq_crc` in one pass over both (no
/// separate pass over the sequence number).
#[inline]
pub(crate) fn encode_entry_fast(
    out: &mut Vec<u8>,
    seq_crc: u32,
    index: u64,
    term: u64,
    data: &[u8],
) {
    let len = ENTRY_PREFIX_BYTES + data.len();
    debug_assert!(len <= MAX_PAYLOAD_BYTES, "caller checks payload size");
    let len_kind = ((Kind::Entry as u32) << 28) | len as u32;
    let mut head = [0u8; RECORD_HEADER_BYTES + ENTRY_PREFIX_BYTES];
    head[4..8].copy_from_slice(&len_kind.to_le_bytes());
    head[8..16].copy_from_slice(&index.to_le_bytes());
    head[16..24].copy_from_slice(&term.to_le_bytes());
    out.reserve(head.len() + data.len());
    let start = out.len();
    out.extend_from_slice(&head);
    out.extend_from_slice(data);
    // Everything after the CRC word is contiguous now: one pass over it.
    let mut h = crc32fast::Hasher::new_with_initial(seq_crc);
    h.update(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&h.finalize().to_le_bytes());
}

/// Bytes of an encoded hard state.
pub(crate) const HARD_STATE_BYTES: usize = 25;

/// The 25-byte encoding of a hard state (the payload of a format-1 hard-state
/// record, and the Raft layer's metadata value).
pub(crate) fn hard_state_bytes(hs: &HardState) -> [u8; HARD_STATE_BYTES] {
    let mut p = [0u8; HARD_STATE_BYTES];
    p[0..8].copy_from_slice(&hs.term.to_le_bytes());
    p[8..16].copy_from_slice(&hs.commit.to_le_bytes());
    if let Some(v) = hs.vote {
        p[16..24].copy_from_slice(&v.to_le_bytes());
        p[24] = 1;
    }
    p
}

/// Decodes [`hard_state_bytes`]; `None` if `p` is not such an encoding.
pub(crate) fn decode_hard_state(p: &[u8]) -> Option<HardState> {
    if p.len() != HARD_STATE_BYTES || p[24] > 1 {
        return None;
    }
    Some(HardState {
        term: u64_at(p, 0),
        commit: u64_at(p, 8),
        vote: (p[24] == 1).then(|| u64_at(p, 16)),
    })
}

#[cfg(test)]
pub(crate) fn encode_hard_state(out: &mut Vec<u8>, seq: u64, hs: &HardState) {
    encode(out, seq, Kind::HardState, &[&hard_state_bytes(hs)]);
}

pub(crate) fn encode_metadata(out: &mut Vec<u8>, seq: u64, value: &[u8]) {
    debug_assert!(value.len() <= MAX_METADATA_BYTES, "caller checks size");
    encode(out, seq, Kind::Metadata, &[value]);
}

pub(crate) fn encode_truncate(out: &mut Vec<u8>, seq: u64, from: u64) {
    encode(out, seq, Kind::Truncate, &[&from.to_le_bytes()]);
}

pub(crate) fn encode_snapshot_marker(out: &mut Vec<u8>, seq: u64, marker: SnapshotMarker) {
    let mut p = [0u8; 16];
    p[0..8].copy_from_slice(&marker.0.to_le_bytes());
    p[8..16].copy_from_slice(&marker.1.to_le_bytes());
    encode(out, seq, Kind::SnapshotMarker, &[&p]);
}

pub(crate) fn encode_seal(out: &mut Vec<u8>, seq: u64) {
    encode(out, seq, Kind::Seal, &[]);
}

/// Decodes the record at `off` in `buf`, a segment with sequence number `seq`.
pub(crate) fn decode(buf: &[u8], off: usize, seq: u64) -> Decoded<'_> {
    use crate::error::CorruptionKind as C;
    let Some(head) = buf.get(off..off + RECORD_HEADER_BYTES) else {
        // Fewer than 8 bytes left: zeros mean the end, anything else is a torn header.
        return if buf[off.min(buf.len())..].iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Invalid(C::BadLength {
                len: RECORD_HEADER_BYTES as u64,
            })
        };
    };
    let stored_crc = u32_at(head, 0);
    let len_kind = u32_at(head, 4);
    if stored_crc == 0 && len_kind == 0 {
        return Decoded::End;
    }
    let len = (len_kind & ((1 << 28) - 1)) as usize;
    let kind_raw = (len_kind >> 28) as u8;
    let body_start = off + RECORD_HEADER_BYTES;
    if len > buf.len() - body_start {
        return Decoded::Invalid(C::BadLength { len: len as u64 });
    }
    let payload = &buf[body_start..body_start + len];
    if crc(seq, len_kind, payload) != stored_crc {
        return Decoded::Invalid(C::BadChecksum);
    }
    let Some(kind) = Kind::from_u8(kind_raw) else {
        return Decoded::Invalid(C::UnknownKind(kind_raw));
    };
    let record = match kind {
        Kind::Header => {
            if len != 32
                || &payload[0..8] != SEGMENT_MAGIC
                || !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&u32_at(payload, 8))
                || u64_at(payload, 16) != seq
            {
                return Decoded::Invalid(C::BadSegmentHeader);
            }
            Record::Header {
                seq,
                first_index: u64_at(payload, 24),
            }
        }
        Kind::Entry => {
            if len < ENTRY_PREFIX_BYTES {
                return Decoded::Invalid(C::BadPayload);
            }
            Record::Entry {
                index: u64_at(payload, 0),
                term: u64_at(payload, 8),
                data: &payload[ENTRY_PREFIX_BYTES..],
            }
        }
        Kind::HardState => match decode_hard_state(payload) {
            Some(hs) => Record::HardState(hs),
            None => return Decoded::Invalid(C::BadPayload),
        },
        Kind::Metadata => Record::Metadata(payload),
        Kind::Truncate => {
            if len != 8 {
                return Decoded::Invalid(C::BadPayload);
            }
            Record::Truncate {
                from: u64_at(payload, 0),
            }
        }
        Kind::Seal => {
            if len != 0 {
                return Decoded::Invalid(C::BadPayload);
            }
            Record::Seal
        }
        Kind::SnapshotMarker => {
            if len != 16 {
                return Decoded::Invalid(C::BadPayload);
            }
            return Decoded::Marker((u64_at(payload, 0), u64_at(payload, 8)), body_start + len);
        }
    };
    Decoded::Record(record, body_start + len)
}

/// File name of segment `seq` whose first entry is `first_index`.
pub(crate) fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}.wal")
}

/// Parses a segment file name into `(seq, first_index)`.
pub(crate) fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 16 || b.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

/// Encodes the meta file: the log's first index and the snapshot marker
/// (meta format 2; format 1 had only the first index).
pub(crate) fn encode_meta(first_index: u64, marker: Option<SnapshotMarker>) -> [u8; META_BYTES] {
    let mut m = [0u8; META_BYTES];
    m[0..8].copy_from_slice(META_MAGIC);
    m[8..12].copy_from_slice(&META_VERSION.to_le_bytes());
    m[12..20].copy_from_slice(&first_index.to_le_bytes());
    if let Some((index, term)) = marker {
        m[20..28].copy_from_slice(&index.to_le_bytes());
        m[28..36].copy_from_slice(&term.to_le_bytes());
    }
    let c = crc32fast::hash(&m[..META_BYTES - 4]);
    m[META_BYTES - 4..].copy_from_slice(&c.to_le_bytes());
    m
}

/// Decodes a meta file of format 1 or 2 into the first index and the
/// snapshot marker; `None` if it is damaged.
pub(crate) fn decode_meta(m: &[u8]) -> Option<(u64, Option<SnapshotMarker>)> {
    if m.len() < 12 || &m[0..8] != META_MAGIC {
        return None;
    }
    let version = u32_at(m, 8);
    let len = match version {
        1 => META_V1_BYTES,
        META_VERSION => META_BYTES,
        _ => return None,
    };
    if m.len() != len || crc32fast::hash(&m[..len - 4]) != u32_at(m, len - 4) {
        return None;
    }
    let marker = if version == 1 || u64_at(m, 20) == 0 {
        None
    } else {
        Some((u64_at(m, 20), u64_at(m, 28)))
    };
    Some((u64_at(m, 12), marker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_entry_encoder_writes_what_the_generic_one_does() {
        for (seq, index, term, len) in [(1, 1, 0, 0), (7, 42, 3, 5), (u64::MAX, 9, 9, 300)] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            let mut fast = vec![0xAA];
            encode_entry_fast(&mut fast, seq_crc(seq), index, term, &data);
            let mut p = [0u8; ENTRY_PREFIX_BYTES];
            p[0..8].copy_from_slice(&index.to_le_bytes());
            p[8..16].copy_from_slice(&term.to_le_bytes());
            let mut generic = vec![0xAA];
            encode(&mut generic, seq, Kind::Entry, &[&p, &data]);
            assert_eq!(fast, generic);
        }
    }

    #[test]
    fn entry_round_trips_and_is_bound_to_its_segment() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, 7, 42, 3, b"hello");
        assert_eq!(buf.len(), entry_record_bytes(5));
        match decode(&buf, 0, 7) {
            Decoded::Record(
                Record::Entry {
                    index: 42,
                    term: 3,
                    data,
                },
                end,
            ) => {
                assert_eq!(data, b"hello");
                assert_eq!(end, buf.len());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(decode(&buf, 0, 8), Decoded::Invalid(_)));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_hard_state(
            &mut buf,
            1,
            &HardState {
                term: 5,
                vote: Some(2),
                commit: 9,
            },
        );
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode(&b, 0, 1), Decoded::Record(..)),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn zero_header_is_end_and_short_garbage_is_invalid() {
        assert!(matches!(decode(&[0u8; 64], 0, 1), Decoded::End));
        assert!(matches!(decode(&[0u8; 3], 0, 1), Decoded::End));
        assert!(matches!(decode(&[1u8, 0, 0], 0, 1), Decoded::Invalid(_)));
    }

    #[test]
    fn names_and_meta_round_trip() {
        let n = segment_name(3, 1001);
        assert_eq!(parse_segment_name(&n), Some((3, 1001)));
        assert_eq!(parse_segment_name("x.wal"), None);
        let m = encode_meta(77, None);
        assert_eq!(decode_meta(&m), Some((77, None)));
        let m = encode_meta(77, Some((70, 3)));
        assert_eq!(decode_meta(&m), Some((77, Some((70, 3)))));
        for byte in 0..m.len() {
            let mut bad = m;
            bad[byte] ^= 4;
            assert_eq!(decode_meta(&bad), None, "byte {byte}");
        }
    }

    #[test]
    fn format_1_meta_is_still_read() {
        let mut m = Vec::new();
        m.extend_from_slice(META_MAGIC);
        m.extend_from_slice(&1u32.to_le_bytes());
        m.extend_from_slice(&55u64.to_le_bytes());
        let c = crc32fast::hash(&m);
        m.extend_from_slice(&c.to_le_bytes());
        assert_eq!(decode_meta(&m), Some((55, None)));
    }

    #[test]
    fn snapshot_marker_round_trips_and_every_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_snapshot_marker(&mut buf, 4, (100, 7));
        match decode(&buf, 0, 4) {
            Decoded::Marker((100, 7), end) => assert_eq!(end, buf.len()),
            other => panic!("unexpected {other:?}"),
        }
        for bit in 0..buf.len() * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode(&b, 0, 4), Decoded::Marker(..) | Decoded::Record(..)),
                "flip of bit {bit} went unnoticed"
            );
        }
    }
}
