//! The on-disk header of a snapshot file and the values it describes.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "RAFTSNAP"
//!      8     4  format version (1), u32 LE
//!     12     4  header length in bytes, including the trailing CRC, u32 LE
//!     16     8  last included index, u64 LE
//!     24     8  last included term, u64 LE
//!     32     8  uncompressed body size, u64 LE
//!     40     8  compressed body size, u64 LE
//!     48     4  CRC32 of the compressed body, u32 LE
//!     52     4  codec (1 = zstd), u32 LE
//!     56     .  membership: voters, voters_outgoing, learners, learners_next,
//!               each a u32 LE count followed by that many u64 LE ids (ascending)
//!    n-4     4  CRC32 of bytes [0, n-4), u32 LE
//!      n     .  compressed body (one zstd frame with its content checksum)
//! ```

use std::collections::BTreeSet;

use crate::error::{CorruptionKind, Error, Result};

/// First bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"RAFTSNAP";
/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the header before the membership lists.
pub(crate) const FIXED_BYTES: usize = 56;
/// Bytes needed to learn the header length (magic, version, length).
pub(crate) const PREFIX_BYTES: usize = 16;
/// Upper bound on a header (bounds the membership; checked before allocating).
pub const MAX_HEADER_BYTES: usize = 1 << 20;
const CODEC_ZSTD: u32 = 1;

/// A cluster configuration, as of the snapshot's last included entry.
///
/// Mirrors `raft_core::ConfState` field for field, so the node converts
/// between them without this crate depending on the consensus core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// Voters of the (incoming) configuration.
    pub voters: BTreeSet<u64>,
    /// Voters of the outgoing configuration during a joint change (empty otherwise).
    pub voters_outgoing: BTreeSet<u64>,
    /// Learners.
    pub learners: BTreeSet<u64>,
    /// Voters that become learners when the joint configuration is left.
    pub learners_next: BTreeSet<u64>,
}

impl Membership {
    /// A configuration of just these voters.
    ///
    /// ```
    /// let m = raft_snapshot::Membership::voters([1, 2, 3]);
    /// assert_eq!(m.voters.len(), 3);
    /// assert!(m.learners.is_empty());
    /// ```
    pub fn voters(ids: impl IntoIterator<Item = u64>) -> Membership {
        Membership {
            voters: ids.into_iter().collect(),
            ..Membership::default()
        }
    }

    fn lists(&self) -> [&BTreeSet<u64>; 4] {
        [
            &self.voters,
            &self.voters_outgoing,
            &self.learners,
            &self.learners_next,
        ]
    }

    fn encoded_bytes(&self) -> usize {
        self.lists().iter().map(|l| 4 + 8 * l.len()).sum()
    }
}

/// What a snapshot stands for: the state after applying every entry up to
/// and including `index` (of term `term`), and the configuration then.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Last included index.
    pub index: u64,
    /// Term of the last included entry.
    pub term: u64,
    /// Configuration as of `index`.
    pub membership: Membership,
}

impl SnapshotMeta {
    /// The `(index, term)` naming this snapshot.
    pub fn id(&self) -> SnapshotId {
        SnapshotId {
            index: self.index,
            term: self.term,
        }
    }
}

/// Names a snapshot by its last included index and term. Orders by index,
/// then term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId {
    /// Last included index.
    pub index: u64,
    /// Term of the last included entry.
    pub term: u64,
}

/// A decoded, checksum-verified snapshot header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Index, term and membership.
    pub meta: SnapshotMeta,
    /// Bytes of state before compression.
    pub uncompressed_bytes: u64,
    /// Bytes of the compressed body.
    pub compressed_bytes: u64,
    /// CRC32 of the compressed body.
    pub body_crc: u32,
    /// Bytes of the encoded header (the body starts here).
    pub header_bytes: u64,
}

impl SnapshotHeader {
    /// Total bytes of the snapshot file.
    pub fn file_bytes(&self) -> u64 {
        self.header_bytes + self.compressed_bytes
    }

    /// The snapshot's `(index, term)`.
    pub fn id(&self) -> SnapshotId {
        self.meta.id()
    }

    /// `uncompressed_bytes / compressed_bytes` (1.0 for an empty body).
    pub fn compression_ratio(&self) -> f64 {
        if self.compressed_bytes == 0 {
            return 1.0;
        }
        self.uncompressed_bytes as f64 / self.compressed_bytes as f64
    }
}

/// Size of the header that `meta` encodes to, or an error if it exceeds
/// [`MAX_HEADER_BYTES`].
pub(crate) fn header_bytes(meta: &SnapshotMeta) -> Result<usize> {
    let n = FIXED_BYTES + meta.membership.encoded_bytes() + 4;
    if n > MAX_HEADER_BYTES {
        return Err(Error::InvalidArgument(format!(
            "membership needs a {n}-byte header; the limit is {MAX_HEADER_BYTES}"
        )));
    }
    Ok(n)
}

/// Encodes a header.
pub(crate) fn encode_header(
    meta: &SnapshotMeta,
    uncompressed_bytes: u64,
    compressed_bytes: u64,
    body_crc: u32,
) -> Result<Vec<u8>> {
    let len = header_bytes(meta)?;
    let mut h = Vec::with_capacity(len);
    h.extend_from_slice(&MAGIC);
    h.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    h.extend_from_slice(&(len as u32).to_le_bytes());
    h.extend_from_slice(&meta.index.to_le_bytes());
    h.extend_from_slice(&meta.term.to_le_bytes());
    h.extend_from_slice(&uncompressed_bytes.to_le_bytes());
    h.extend_from_slice(&compressed_bytes.to_le_bytes());
    h.extend_from_slice(&body_crc.to_le_bytes());
    h.extend_from_slice(&CODEC_ZSTD.to_le_bytes());
    for list in meta.membership.lists() {
        h.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for id in list {
            h.extend_from_slice(&id.to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(h.len(), len);
    Ok(h)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Checks the first [`PREFIX_BYTES`] of a snapshot and returns the header length.
pub(crate) fn decode_prefix(p: &[u8]) -> Result<usize> {
    debug_assert!(p.len() >= PREFIX_BYTES);
    if p[0..8] != MAGIC {
        return Err(Error::corrupt(CorruptionKind::BadMagic {
            found: p[0..8].try_into().expect("8 bytes"),
        }));
    }
    let version = u32_at(p, 8);
    if version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            path: None,
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let len = u32_at(p, 12) as usize;
    if !(FIXED_BYTES + 16 + 4..=MAX_HEADER_BYTES).contains(&len) {
        return Err(Error::corrupt(CorruptionKind::BadHeader(format!(
            "header length {len} outside [{}, {MAX_HEADER_BYTES}]",
            FIXED_BYTES + 20
        ))));
    }
    Ok(len)
}

/// Decodes and verifies a whole header (`h` is exactly the header's bytes).
pub(crate) fn decode_header(h: &[u8]) -> Result<SnapshotHeader> {
    let len = decode_prefix(h)?;
    debug_assert_eq!(h.len(), len);
    let stored = u32_at(h, len - 4);
    let computed = crc32fast::hash(&h[..len - 4]);
    if stored != computed {
        return Err(Error::corrupt(CorruptionKind::HeaderChecksum {
            stored,
            computed,
        }));
    }
    let bad = |msg: String| Error::corrupt(CorruptionKind::BadHeader(msg));
    let codec = u32_at(h, 52);
    if codec != CODEC_ZSTD {
        return Err(bad(format!("unknown codec {codec}")));
    }
    let mut lists: [BTreeSet<u64>; 4] = Default::default();
    let mut at = FIXED_BYTES;
    for list in &mut lists {
        if at + 4 > len - 4 {
            return Err(bad("membership runs past the header".into()));
        }
        let n = u32_at(h, at) as usize;
        at += 4;
        if n > (len - 4 - at) / 8 {
            return Err(bad(format!(
                "membership list of {n} ids runs past the header"
            )));
        }
        for _ in 0..n {
            if !list.insert(u64_at(h, at)) {
                return Err(bad("duplicate id in membership".into()));
            }
            at += 8;
        }
    }
    if at != len - 4 {
        return Err(bad(format!("{} unused header bytes", len - 4 - at)));
    }
    let [voters, voters_outgoing, learners, learners_next] = lists;
    Ok(SnapshotHeader {
        meta: SnapshotMeta {
            index: u64_at(h, 16),
            term: u64_at(h, 24),
            membership: Membership {
                voters,
                voters_outgoing,
                learners,
                learners_next,
            },
        },
        uncompressed_bytes: u64_at(h, 32),
        compressed_bytes: u64_at(h, 40),
        body_crc: u32_at(h, 48),
        header_bytes: len as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            index: 42,
            term: 7,
            membership: Membership {
                voters: [1, 2, 3].into(),
                voters_outgoing: [1, 2, 4].into(),
                learners: [9].into(),
                learners_next: [4].into(),
            },
        }
    }

    #[test]
    fn header_round_trips() {
        let h = encode_header(&meta(), 1000, 300, 0xdead_beef).unwrap();
        let d = decode_header(&h).unwrap();
        assert_eq!(d.meta, meta());
        assert_eq!(
            (d.uncompressed_bytes, d.compressed_bytes, d.body_crc),
            (1000, 300, 0xdead_beef)
        );
        assert_eq!(d.header_bytes as usize, h.len());
    }

    #[test]
    fn every_bit_flip_in_the_header_is_detected() {
        let h = encode_header(&meta(), 1000, 300, 1).unwrap();
        for bit in 0..h.len() * 8 {
            let mut b = h.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let res = if b.len() == decode_prefix(&b).unwrap_or(0) {
                decode_header(&b).map(|_| ())
            } else {
                Err(Error::InvalidArgument(String::new()))
            };
            assert!(res.is_err(), "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn oversized_membership_is_refused() {
        let mut m = meta();
        m.membership.learners = (0..200_000).collect();
        assert!(matches!(header_bytes(&m), Err(Error::InvalidArgument(_))));
    }
}
