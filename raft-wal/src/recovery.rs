//! Replay of a WAL directory on open: rebuild the index and metadata, then
//! deal with damage as the [`RecoveryMode`] says: refuse it, cut a torn tail,
//! or cut everything from the first damaged record on.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::error::{CorruptionKind, Error, Result};
use crate::format::{self, Decoded, Record, SnapshotMarker, MAX_KIND, RECORD_HEADER_BYTES};
use crate::fs::{Fs, OpenMode};
use crate::index::{Loc, LogIndex};
use crate::raft::HardState;
use crate::segment::Segment;

/// Name of the file holding the durable first index.
pub(crate) const META_FILE: &str = "meta";
/// Temporary name the meta file is written under before its rename.
pub(crate) const META_TMP_FILE: &str = "meta.tmp";
/// Name of the preallocated next segment.
pub(crate) const PREALLOC_FILE: &str = "prealloc.tmp";

/// Upper bound on bytes checksummed while deciding whether a damaged tail
/// hides valid records; past it the damage is reported as corruption.
const TAIL_SCAN_BUDGET_BYTES: u64 = 256 << 20;

/// What [`Log::open`](crate::Log::open) does with damaged data.
///
/// A crash can leave a partly written record at the very end of the log (a
/// *torn tail*); that record was never acknowledged as synced, so cutting it
/// loses nothing. Damage anywhere else may be data that was acknowledged.
///
/// ```
/// use raft_wal::{LogOptions, RecoveryMode};
/// let opts = LogOptions::default().recovery_mode(RecoveryMode::Strict);
/// assert_eq!(opts.recovery_mode, RecoveryMode::Strict);
/// assert_eq!(RecoveryMode::default(), RecoveryMode::TolerateTornTail);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecoveryMode {
    /// Refuse any damage, even a torn tail: the open fails with
    /// [`Error::Corruption`] and nothing is changed. For tools and for
    /// deployments that want a person to look at every crash.
    Strict,
    /// Cut a torn record at the very tail of the last segment (nothing valid
    /// after it) and report it in [`RecoveryReport::torn_tail`]; refuse any
    /// other damage. The default: it never drops data that may have been
    /// acknowledged.
    #[default]
    TolerateTornTail,
    /// Keep everything before the first damaged record and cut the rest: the
    /// remainder of that segment and every later segment. Reported in
    /// [`RecoveryReport::dropped`]. Entries after the damage are lost even if
    /// they were acknowledged; use it when availability matters more than
    /// the tail of the log (or run [`repair`](crate::repair), which keeps
    /// copies of what it cuts).
    TruncateCorruptTail,
}

/// Damage cut off by [`RecoveryMode::TruncateCorruptTail`] or
/// [`repair`](crate::repair).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DroppedTail {
    /// The segment holding the first damaged record.
    pub file: PathBuf,
    /// Offset of the first damaged record; the log now ends there.
    pub offset: u64,
    /// What was wrong at `offset`.
    pub kind: CorruptionKind,
    /// The last index kept (`first_index - 1` if none).
    pub last_index_kept: u64,
    /// Later segments removed whole (or, by `repair`, renamed to `*.broken`).
    pub removed_segments: Vec<PathBuf>,
}

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

/// What [`Log::open`](crate::Log::open) found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Segment files replayed.
    pub segments: usize,
    /// Record bytes replayed.
    pub bytes_replayed: u64,
    /// First index after recovery.
    pub first_index: u64,
    /// Last index after recovery (`first_index - 1` if empty).
    pub last_index: u64,
    /// Newest hard state found: the metadata value decoded as a Raft
    /// [`HardState`] (the default if the value is not one).
    pub hard_state: HardState,
    /// Newest metadata value found (empty if none was ever set).
    pub metadata: Vec<u8>,
    /// Damage cut off under [`RecoveryMode::TruncateCorruptTail`].
    pub dropped: Option<DroppedTail>,
    /// A torn record at the end of the last segment, if one was cut off.
    pub torn_tail: Option<TornTail>,
    /// The newest snapshot marker `(index, term)` found, if any (see
    /// [`RaftWal::mark_snapshot`](crate::raft::RaftWal::mark_snapshot)).
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
    pub metadata: Vec<u8>,
    pub snapshot_marker: Option<SnapshotMarker>,
    pub report: RecoveryReport,
}

/// How [`recover`] may change the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Change nothing (an inspection, under a shared lock).
    ReadOnly,
    /// Change nothing, and expect a live writer to change the files meanwhile
    /// (a read-only open, which takes no lock): read files with ordinary
    /// reads, never through a memory map.
    ReadOnlyUnlocked,
    /// Cut damage and remove leftovers.
    Write,
    /// Like `Write`, but keep a `*.broken` copy of every file cut or removed.
    Repair,
}

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> Error + 'p {
    move |e| Error::io(op, path, e)
}

/// Suffix of the copy `repair` keeps of a file it cuts or removes.
pub(crate) const BROKEN_SUFFIX: &str = ".broken";

/// Keeps a copy of `path` as `path.broken` (replacing an older copy).
fn backup(fs: &dyn Fs, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut name = path.as_os_str().to_owned();
    name.push(BROKEN_SUFFIX);
    let dst = PathBuf::from(name);
    let _ = fs.remove_file(&dst);
    let f = fs
        .open(&dst, OpenMode::CreateNew)
        .map_err(io_err("create", &dst))?;
    f.write_at(bytes, 0).map_err(io_err("write", &dst))?;
    f.sync_data().map_err(io_err("fdatasync", &dst))
}

/// Replays `dir`. Damage is handled as `mode` says; with
/// [`Access::ReadOnly`] nothing on disk is changed (what would be cut is only
/// reported).
pub(crate) fn recover(
    fs: &dyn Fs,
    dir: &Path,
    mode: RecoveryMode,
    access: Access,
    mut visit: Option<Visitor<'_>>,
) -> Result<Recovered> {
    let writable = matches!(access, Access::Write | Access::Repair);
    // Without the lock a live writer may shrink a file under a mapping.
    let copy_reads = access == Access::ReadOnlyUnlocked;
    let mut report = RecoveryReport::default();
    let mut seg_names: Vec<(u64, String)> = Vec::new();
    let mut has_meta = false;
    for name in fs.list_dir(dir).map_err(io_err("list", dir))? {
        if name == PREALLOC_FILE || name == META_TMP_FILE {
            if writable {
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
    // A missing segment in the middle: everything from the gap on is damage.
    let mut gap: Option<(PathBuf, u64)> = None;
    if let Some(pos) = seg_names.windows(2).position(|p| p[1].0 != p[0].0 + 1) {
        let missing = seg_names[pos].0 + 1;
        let after = dir.join(&seg_names[pos + 1].1);
        if mode != RecoveryMode::TruncateCorruptTail {
            return Err(Error::corruption(
                after,
                0,
                CorruptionKind::MissingSegment { seq: missing },
            ));
        }
        gap = Some((after, missing));
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
        metadata: Vec::new(),
        hole_at: None,
        marker: meta_marker,
    };
    let mut segments = VecDeque::new();
    let count = seg_names.len();
    let mut names = seg_names.into_iter().enumerate();
    let mut dropped: Option<DroppedTail> = None;
    for (i, (seq, name)) in names.by_ref() {
        let path = dir.join(&name);
        if gap.as_ref().is_some_and(|(after, _)| *after == path) {
            let (after, missing) = gap.take().expect("checked");
            dropped = Some(DroppedTail {
                file: after,
                offset: 0,
                kind: CorruptionKind::MissingSegment { seq: missing },
                last_index_kept: replay.index.last_index(),
                removed_segments: vec![path],
            });
            break;
        }
        let is_last = i + 1 == count;
        let open_mode = if writable {
            OpenMode::ReadWrite
        } else {
            OpenMode::Read
        };
        let file = fs.open(&path, open_mode).map_err(io_err("open", &path))?;
        let seg = Segment::new(seq, path, file.into()).with_copy_reads(copy_reads);
        let map = seg.map(None).map_err(io_err("map", &seg.path))?;
        let buf = map.bytes();
        seg.set_file_len(buf.len() as u64);
        let (end, outcome) = replay_segment(&seg, buf, is_last, &mut replay, &mut visit);
        let damage = match outcome {
            Outcome::Clean => None,
            Outcome::Torn { kind } => match mode {
                RecoveryMode::Strict => {
                    return Err(Error::corruption(&seg.path, end as u64, kind));
                }
                _ => {
                    let garbage_end = buf.iter().rposition(|&b| b != 0).map_or(end, |p| p + 1);
                    tracing::warn!(
                        file = %seg.path.display(),
                        offset = end,
                        discarded_bytes = garbage_end - end,
                        "cutting torn record at the tail of the WAL"
                    );
                    report.torn_tail = Some(TornTail {
                        file: seg.path.clone(),
                        offset: end as u64,
                        discarded_bytes: (garbage_end - end) as u64,
                    });
                    Some(garbage_end)
                }
            },
            Outcome::Damaged { kind } => {
                if mode != RecoveryMode::TruncateCorruptTail {
                    return Err(Error::corruption(&seg.path, end as u64, kind));
                }
                let garbage_end = buf.iter().rposition(|&b| b != 0).map_or(end, |p| p + 1);
                tracing::warn!(
                    file = %seg.path.display(),
                    offset = end,
                    error = %kind,
                    "cutting the WAL at a damaged record"
                );
                dropped = Some(DroppedTail {
                    file: seg.path.clone(),
                    offset: end as u64,
                    kind,
                    last_index_kept: replay.index.last_index(),
                    removed_segments: Vec::new(),
                });
                Some(garbage_end)
            }
        };
        if let Some(garbage_end) = damage {
            if writable && garbage_end > end {
                if access == Access::Repair {
                    backup(fs, &seg.path, buf)?;
                }
                // Zero the garbage so a later, shorter write cannot leave
                // stale bytes that look like records after it.
                let zeros = vec![0u8; garbage_end - end];
                seg.file
                    .write_at(&zeros, end as u64)
                    .map_err(io_err("write", &seg.path))?;
                seg.file
                    .sync_data()
                    .map_err(io_err("fdatasync", &seg.path))?;
                seg.invalidate_view();
            }
        }
        drop(map);
        seg.set_written(end as u64);
        report.bytes_replayed += end as u64;
        let cut_here = dropped.is_some();
        if end == 0 && (is_last || cut_here) {
            // A rotation died before the header was durable, or the header
            // itself is what was cut: nothing in here.
            if writable {
                fs.remove_file(&seg.path)
                    .map_err(io_err("remove", &seg.path))?;
                fs.sync_dir(dir).map_err(io_err("sync_dir", dir))?;
                report.removed_files.push(seg.path.clone());
            }
        } else {
            segments.push_back(seg);
        }
        if cut_here {
            break;
        }
    }
    if let Some(d) = dropped.as_mut() {
        for (_, (_, name)) in names {
            d.removed_segments.push(dir.join(name));
        }
        if writable {
            for path in &d.removed_segments {
                if access == Access::Repair {
                    let mut to = path.as_os_str().to_owned();
                    to.push(BROKEN_SUFFIX);
                    fs.rename(path, Path::new(&to))
                        .map_err(io_err("rename", path))?;
                } else {
                    fs.remove_file(path).map_err(io_err("remove", path))?;
                }
            }
            fs.sync_dir(dir).map_err(io_err("sync_dir", dir))?;
        }
        report
            .removed_files
            .extend(d.removed_segments.iter().cloned());
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
    report.hard_state = format::decode_hard_state(&replay.metadata).unwrap_or_default();
    report.metadata = replay.metadata.clone();
    report.snapshot_marker = replay.marker;
    if let Some(d) = dropped.as_mut() {
        d.last_index_kept = replay.index.last_index();
    }
    report.dropped = dropped;
    Ok(Recovered {
        segments,
        index: replay.index,
        metadata: replay.metadata,
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
    metadata: Vec<u8>,
    /// Where the current hole was first seen (segment seq and offset).
    hole_at: Option<(u64, u64)>,
    /// Newest snapshot marker (highest index) from the meta file or records.
    marker: Option<SnapshotMarker>,
}

impl Replay {
    /// Applies one record; on error nothing was changed.
    fn apply(&mut self, seg: u64, offset: u64, record: &Record<'_>) -> Result<(), CorruptionKind> {
        match *record {
            Record::Header { .. } => return Err(CorruptionKind::BadSegmentHeader),
            Record::Entry { index, term, .. } => {
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
                });
            }
            Record::HardState(hs) => {
                self.metadata.clear();
                self.metadata
                    .extend_from_slice(&format::hard_state_bytes(&hs));
            }
            Record::Metadata(value) => {
                self.metadata.clear();
                self.metadata.extend_from_slice(value);
            }
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

/// How the replay of one segment ended.
enum Outcome {
    /// At the end of written data (or a seal).
    Clean,
    /// At a damaged record in the last segment with nothing valid after it.
    Torn { kind: CorruptionKind },
    /// At damage that is not a torn tail.
    Damaged { kind: CorruptionKind },
}

/// Replays the records of `seg` (whose bytes are `buf`) into `replay`.
/// Returns the offset where valid data ends and why it ends there.
fn replay_segment(
    seg: &Segment,
    buf: &[u8],
    is_last: bool,
    replay: &mut Replay,
    visit: &mut Option<Visitor<'_>>,
) -> (usize, Outcome) {
    let mut off = 0usize;
    let mut sealed = false;
    let outcome = loop {
        match format::decode(buf, off, seg.seq) {
            Decoded::Record(record, next) => {
                let first = off == 0;
                let res = match (&record, first) {
                    (Record::Header { .. }, true) => Ok(()),
                    (_, true) => Err(CorruptionKind::BadSegmentHeader),
                    _ => replay.apply(seg.seq, off as u64, &record),
                };
                if let Err(kind) = res {
                    break Outcome::Damaged { kind };
                }
                if let Some(v) = visit.as_mut() {
                    v(&seg.path, off as u64, &record);
                }
                off = next;
                if record == Record::Seal {
                    sealed = true;
                    break Outcome::Clean;
                }
            }
            Decoded::Marker(marker, next) => {
                if off == 0 {
                    break Outcome::Damaged {
                        kind: CorruptionKind::BadSegmentHeader,
                    };
                }
                if replay.marker.is_none_or(|m| marker.0 >= m.0) {
                    replay.marker = Some(marker);
                }
                off = next;
            }
            Decoded::End => {
                if off == 0 && !is_last {
                    break Outcome::Damaged {
                        kind: CorruptionKind::BadSegmentHeader,
                    };
                }
                break Outcome::Clean;
            }
            Decoded::Invalid(kind) => {
                if !is_last || valid_record_after(buf, off + 1, seg.seq) {
                    break Outcome::Damaged { kind };
                }
                break Outcome::Torn { kind };
            }
        }
    };
    if sealed {
        seg.set_sealed();
    }
    if matches!(outcome, Outcome::Clean) && !is_last && !sealed {
        return (
            off,
            Outcome::Damaged {
                kind: CorruptionKind::Unsealed,
            },
        );
    }
    (off, outcome)
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
