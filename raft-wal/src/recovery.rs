//! Replay of a WAL directory on open: rebuild the index and hard state, cut a
//! torn tail, refuse anything else that is damaged.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::error::{CorruptionKind, Error, Result};
use crate::format::{self, Decoded, Record, SnapshotMarker, MAX_KIND, RECORD_HEADER_BYTES};
use crate::fs::{Fs, OpenMode};
use crate::index::{Loc, LogIndex};
use crate::segment::Segment;
use crate::types::HardState;

/// Name of the file holding the durable first index.
pub(crate) const META_FILE: &str = "meta";
/// Temporary name the meta file is written under before its rename.
pub(crate) const META_TMP_FILE: &str = "meta.tmp";
/// Name of the preallocated next segment.
pub(crate) const PREALLOC_FILE: &str = "prealloc.tmp";

/// Upper bound on bytes checksummed while deciding whether a damaged tail
/// hides valid records; past it the damage is reported as corruption.
const TAIL_SCAN_BUDGET_BYTES: u64 = 256 << 20;

/// A torn record cut from the end of the last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub file: PathBuf,
    /// Where the torn record started; the log now ends here.
    pub offset: u64,
    /// How many non-zero bytes were discarded.
    pub discarded_bytes: u64,
}

/// What [`Wal::open`](crate::Wal::open) found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files replayed.
    pub segments: usize,
    /// Record bytes replayed.
    pub bytes_replayed: u64,
    /// First index after recovery.
    pub first_index: u64,
    /// Last index after recovery (`first_index - 1` if empty).
    pub last_index: u64,
    /// Newest hard state found.
    pub hard_state: HardState,
    /// A torn record at the end of the last segment, if one was cut off.
    pub torn_tail: Option<TornTail>,
    /// The newest snapshot marker `(index, term)` found, if any (see
    /// [`Wal::mark_snapshot`](crate::Wal::mark_snapshot)).
    pub snapshot_marker: Option<(u64, u64)>,
    /// Leftover files removed (an unused preallocated segment, a half-written
    /// meta file, an empty segment from an interrupted rotation).
    pub removed_files: Vec<PathBuf>,
}

/// Called for every valid record during replay: file, offset, record.
pub type Visitor<'v> = &'v mut dyn FnMut(&Path, u64, &Record<'_>);

pub(crate) struct Recovered {
    pub segments: VecDeque<Segment>,
    pub index: LogIndex,
    pub hard_state: HardState,
    pub snapshot_marker: Option<SnapshotMarker>,
    pub report: RecoveryReport,
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> Error + 'p {
    move |e| Error::io(op, path, e)
}

/// Replays `dir`. With `read_only`, nothing on disk is changed (a torn tail is
/// reported but not cut).
pub(crate) fn recover(
    fs: &dyn Fs,
    dir: &Path,
    read_only: bool,
    mut visit: Option<Visitor<'_>>,
) -> Result<Recovered> {
    let mut report = RecoveryReport::default();
    let mut seg_names: Vec<(u64, String)> = Vec::new();
    let mut has_meta = false;
    for name in fs.list_dir(dir).map_err(io_err("list", dir))? {
        if name == PREALLOC_FILE || name == META_TMP_FILE {
            if !read_only {
                let path = dir.join(&name);
                fs.remove_file(&path).map_err(io_err("remove", &path))?;
                report.removed_files.push(path);
            }
        } else if name == META_FILE {
            has_meta = true;
        } else if name.ends_with(".wal") {
            let (seq, _) = format::parse_segment_name(&name).ok_or_else(|| {
                Error::corruption(dir.join(&name), 0, CorruptionKind::BadFileName)
            })?;
            seg_names.push((seq, name));
        }
    }
    if !report.removed_files.is_empty() {
        fs.sync_dir(dir).map_err(io_err("sync_dir", dir))?;
    }
    seg_names.sort();
    for pair in seg_names.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            return Err(Error::corruption(
                dir.join(&pair[1].1),
                0,
                CorruptionKind::MissingSegment { seq: pair[0].0 + 1 },
            ));
        }
    }

    let (first_index, meta_marker) = if has_meta {
        let path = dir.join(META_FILE);
        let f = fs
            .open(&path, OpenMode::Read)
            .map_err(io_err("open", &path))?;
        let len = f.len().map_err(io_err("stat", &path))?;
        let mut buf = vec![0u8; (len as usize).min(format::META_BYTES + 1)];
        f.read_at(&mut buf, 0).map_err(io_err("read", &path))?;
        format::decode_meta(&buf)
            .ok_or_else(|| Error::corruption(&path, 0, CorruptionKind::BadMeta))?
    } else {
        (1, None)
    };

    let mut replay = Replay {
        meta_first: first_index,
        index: LogIndex::new(first_index),
        hard_state: HardState::default(),
        hole_at: None,
        marker: meta_marker,
    };
    let mut segments = VecDeque::new();
    let count = seg_names.len();
    for (i, (seq, name)) in seg_names.into_iter().enumerate() {
        let path = dir.join(&name);
        let is_last = i + 1 == count;
        let mode = if read_only {
            OpenMode::Read
        } else {
            OpenMode::ReadWrite
        };
        let file = fs.open(&path, mode).map_err(io_err("open", &path))?;
        let mut seg = Segment::new(seq, path, file);
        replay_segment(
            &mut seg,
            is_last,
            read_only,
            &mut replay,
            &mut report,
            &mut visit,
        )?;
        report.bytes_replayed += seg.written;
        if is_last && seg.written == 0 {
            // A rotation died before the header was durable: nothing in here.
            if !read_only {
                fs.remove_file(&seg.path)
                    .map_err(io_err("remove", &seg.path))?;
                fs.sync_dir(dir).map_err(io_err("sync_dir", dir))?;
                report.removed_files.push(seg.path.clone());
            }
            continue;
        }
        segments.push_back(seg);
    }
    if let Some((seq, offset)) = replay.hole_at {
        let file = segments
            .iter()
            .find(|s| s.seq == seq)
            .map_or_else(|| dir.to_path_buf(), |s| s.path.clone());
        return Err(Error::corruption(
            file,
            offset,
            CorruptionKind::IndexGap {
                expected: first_index,
                found: replay.index.first_index(),
            },
        ));
    }
    report.segments = segments.len();
    report.first_index = replay.index.first_index();
    report.last_index = replay.index.last_index();
    report.hard_state = replay.hard_state;
    report.snapshot_marker = replay.marker;
    Ok(Recovered {
        segments,
        index: replay.index,
        hard_state: replay.hard_state,
        snapshot_marker: replay.marker,
        report,
    })
}

/// Replay state. Entries `[meta_first, index.first_index())` are a "hole":
/// they were in segments that compaction deleted after a later truncation made
/// them dead. A hole is legal only if a later truncation record covers it; one
/// left at the end of replay means live entries are missing.
struct Replay {
    meta_first: u64,
    index: LogIndex,
    hard_state: HardState,
    /// Where the current hole was first seen (segment seq and offset).
    hole_at: Option<(u64, u64)>,
    /// Newest snapshot marker (highest index) from the meta file or records.
    marker: Option<SnapshotMarker>,
}

impl Replay {
    fn apply(&mut self, seg: u64, offset: u64, record: &Record<'_>) -> Result<(), CorruptionKind> {
        match *record {
            Record::Header { .. } => return Err(CorruptionKind::BadSegmentHeader),
            Record::Entry { index, term, data } => {
                let expected = self.index.last_index() + 1;
                if index < self.meta_first {
                    // Compacted away; its segment just has not been deleted yet.
                    return Ok(());
                }
                if index > expected && self.index.len() == 0 {
                    // The entries before this one lived in deleted segments.
                    self.index = LogIndex::new(index);
                    self.hole_at.get_or_insert((seg, offset));
                } else if index != expected {
                    return Err(CorruptionKind::IndexGap {
                        expected,
                        found: index,
                    });
                }
                self.index.push(Loc {
                    seq: seg,
                    offset,
                    term,
                    data_len: data.len() as u32,
                });
            }
            Record::HardState(hs) => self.hard_state = hs,
            Record::Truncate { from } => {
                if from <= self.index.first_index() {
                    let start = from.max(self.meta_first);
                    self.index = LogIndex::new(start);
                    if start == self.meta_first {
                        self.hole_at = None;
                    }
                } else {
                    self.index.truncate_from(from);
                }
            }
            Record::Seal => {}
        }
        Ok(())
    }
}

fn replay_segment(
    seg: &mut Segment,
    is_last: bool,
    read_only: bool,
    replay: &mut Replay,
    report: &mut RecoveryReport,
    visit: &mut Option<Visitor<'_>>,
) -> Result<()> {
    let map = seg.file.map().map_err(io_err("map", &seg.path))?;
    let buf = map.bytes();
    seg.file_len = buf.len() as u64;
    let mut off = 0usize;
    loop {
        match format::decode(buf, off, seg.seq) {
            Decoded::Record(record, next) => {
                if let Some(v) = visit.as_mut() {
                    v(&seg.path, off as u64, &record);
                }
                let first = off == 0;
                let res = match (&record, first) {
                    (Record::Header { .. }, true) => Ok(()),
                    (_, true) => Err(CorruptionKind::BadSegmentHeader),
                    _ => replay.apply(seg.seq, off as u64, &record),
                };
                res.map_err(|kind| Error::corruption(&seg.path, off as u64, kind))?;
                off = next;
                if record == Record::Seal {
                    seg.sealed = true;
                    break;
                }
            }
            Decoded::Marker(marker, next) => {
                if off == 0 {
                    return Err(Error::corruption(
                        &seg.path,
                        0,
                        CorruptionKind::BadSegmentHeader,
                    ));
                }
                if replay.marker.is_none_or(|m| marker.0 >= m.0) {
                    replay.marker = Some(marker);
                }
                off = next;
            }
            Decoded::End => {
                if off == 0 && !is_last {
                    return Err(Error::corruption(
                        &seg.path,
                        0,
                        CorruptionKind::BadSegmentHeader,
                    ));
                }
                break;
            }
            Decoded::Invalid(kind) => {
                if !is_last || valid_record_after(buf, off + 1, seg.seq) {
                    return Err(Error::corruption(&seg.path, off as u64, kind));
                }
                let end = buf.iter().rposition(|&b| b != 0).map_or(off, |p| p + 1);
                tracing::warn!(
                    file = %seg.path.display(),
                    offset = off,
                    discarded_bytes = end - off,
                    "cutting torn record at the tail of the WAL"
                );
                report.torn_tail = Some(TornTail {
                    file: seg.path.clone(),
                    offset: off as u64,
                    discarded_bytes: (end - off) as u64,
                });
                if !read_only {
                    // Zero the garbage so a later, shorter write cannot leave
                    // stale bytes that look like records after it.
                    let zeros = vec![0u8; end - off];
                    seg.file
                        .write_at(&zeros, off as u64)
                        .map_err(io_err("write", &seg.path))?;
                    seg.file.sync_data().map_err(io_err("sync", &seg.path))?;
                    seg.invalidate_view();
                }
                break;
            }
        }
    }
    if !is_last && !seg.sealed {
        return Err(Error::corruption(
            &seg.path,
            off as u64,
            CorruptionKind::Unsealed,
        ));
    }
    seg.written = off as u64;
    Ok(())
}

/// Whether any valid record of segment `seq` starts at or after `from`. Used to
/// tell a torn tail (nothing valid after the damage) from damage in the middle.
/// Scanning more than a fixed budget counts as "yes": refuse rather than guess.
fn valid_record_after(buf: &[u8], from: usize, seq: u64) -> bool {
    let mut budget = TAIL_SCAN_BUDGET_BYTES;
    let mut p = from;
    while p + RECORD_HEADER_BYTES <= buf.len() {
        let head = &buf[p..p + RECORD_HEADER_BYTES];
        if head.iter().all(|&b| b == 0) {
            // Jump over a run of zeros: the next candidate header is the first
            // one that includes the next non-zero byte.
            match buf[p + RECORD_HEADER_BYTES..].iter().position(|&b| b != 0) {
                Some(k) => p += k + 1,
                None => break,
            }
            continue;
        }
        let len_kind = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
        let len = (len_kind & ((1 << 28) - 1)) as u64;
        let kind = len_kind >> 28;
        if (1..=MAX_KIND).contains(&kind) && len <= (buf.len() - p - RECORD_HEADER_BYTES) as u64 {
            if len > budget {
                return true;
            }
            budget -= len;
            if let Decoded::Record(..) | Decoded::Marker(..) = format::decode(buf, p, seq) {
                return true;
            }
        }
        p += 1;
    }
    false
}
