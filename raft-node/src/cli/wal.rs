//! `raft-node wal dump|verify DIR`: offline, read-only inspection of a WAL.
//!
//! Both commands replay the directory with [`raft_wal::inspect`], which takes a
//! shared lock (so they refuse to run while a node has the WAL open), checks
//! every record's checksum and the log's structure, and changes nothing on
//! disk. `dump` prints one line per record before the summary; `verify` prints
//! only the summary.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use raft_wal::fs::StdFs;
use raft_wal::{HardState, Record, RecoveryReport, TornTail};

/// The `wal` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum WalCommand {
    /// Print every record (file, offset, kind, fields), then the summary.
    Dump {
        /// The WAL directory.
        dir: PathBuf,
        /// How to show entry payloads.
        #[arg(long, value_enum, default_value_t = DataFormat::Len)]
        data: DataFormat,
    },
    /// Check every checksum and the log's structure, then print the summary.
    /// Exits 0 if the WAL is sound, 1 on corruption or any error.
    Verify {
        /// The WAL directory.
        dir: PathBuf,
        /// Also fail (exit 1) on a torn record at the tail, which the next
        /// open would cut off.
        #[arg(long)]
        strict: bool,
    },
}

/// How `dump` shows entry payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DataFormat {
    /// Only the length.
    Len,
    /// Length and the bytes in hex.
    Hex,
    /// Length and the bytes as (lossy, escaped) UTF-8 text.
    Utf8,
}

/// Why a `wal` command failed.
#[derive(Debug)]
pub enum WalCliError {
    /// The path does not name a WAL directory.
    NotAWal {
        /// The path given.
        dir: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Replay failed: corruption, an I/O error, or the WAL is locked by a writer.
    Wal(raft_wal::Error),
    /// `verify --strict` found a torn tail.
    TornTail(TornTail),
    /// Writing the report to stdout failed.
    Output(io::Error),
}

impl fmt::Display for WalCliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalCliError::NotAWal { dir, reason } => {
                write!(f, "not a WAL directory: {}: {reason}", dir.display())
            }
            WalCliError::Wal(e) => write!(f, "{e}"),
            WalCliError::TornTail(t) => write!(
                f,
                "torn record in {} at offset {} ({} bytes); the next open will cut it",
                t.file.display(),
                t.offset,
                t.discarded_bytes
            ),
            WalCliError::Output(e) => write!(f, "cannot write output: {e}"),
        }
    }
}

impl std::error::Error for WalCliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalCliError::Wal(e) => Some(e),
            WalCliError::Output(e) => Some(e),
            _ => None,
        }
    }
}

/// Runs `cmd`, writing its report to `out` (flushed before returning, also on
/// error, so a dump shows every record read before the damage).
///
/// If `out` goes away (a closed pipe, as in `dump | head`), printing stops but
/// the replay still runs to the end and the result reflects the WAL's state.
pub fn run(cmd: &WalCommand, out: &mut dyn Write) -> Result<(), WalCliError> {
    let (dir, dump, strict) = match cmd {
        WalCommand::Dump { dir, data } => (dir, Some(*data), false),
        WalCommand::Verify { dir, strict } => (dir, None, *strict),
    };
    let mut out = Out { w: out, err: None };
    let res = inspect(dir, dump, strict, &mut out);
    out.flush();
    res?;
    match out.err {
        Some(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(WalCliError::Output(e)),
        _ => Ok(()),
    }
}

fn inspect(
    dir: &Path,
    dump: Option<DataFormat>,
    strict: bool,
    out: &mut Out<'_>,
) -> Result<(), WalCliError> {
    check_dir(dir)?;
    tracing::info!(dir = %dir.display(), "inspecting WAL");
    let mut stats = Stats::default();
    let report = raft_wal::inspect(&StdFs, dir, &mut |file, offset, record| {
        stats.count(file, record);
        if let Some(format) = dump {
            out.line(format_args!(
                "{} {offset:>10} {}",
                file_name(file),
                RecordLine { record, format }
            ));
        }
    })
    .map_err(WalCliError::Wal)?;
    if report.segments == 0 && !dir.join("LOCK").exists() && !dir.join("meta").exists() {
        return Err(WalCliError::NotAWal {
            dir: dir.to_path_buf(),
            reason: "it holds no segment, meta or LOCK file".into(),
        });
    }
    print_summary(out, dir, &report, &stats);
    match report.torn_tail {
        Some(t) if strict => Err(WalCliError::TornTail(t)),
        _ => Ok(()),
    }
}

fn check_dir(dir: &Path) -> Result<(), WalCliError> {
    let not_a_wal = |reason: String| WalCliError::NotAWal {
        dir: dir.to_path_buf(),
        reason,
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(not_a_wal("not a directory".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(not_a_wal("no such directory".into())),
        Err(e) => Err(not_a_wal(format!("cannot access: {e}"))),
    }
}

/// Stdout that remembers its first error instead of failing the replay.
struct Out<'a> {
    w: &'a mut dyn Write,
    err: Option<io::Error>,
}

impl Out<'_> {
    fn line(&mut self, args: fmt::Arguments<'_>) {
        if self.err.is_none() {
            if let Err(e) = self
                .w
                .write_fmt(args)
                .and_then(|()| self.w.write_all(b"\n"))
            {
                self.err = Some(e);
            }
        }
    }

    fn flush(&mut self) {
        if self.err.is_none() {
            if let Err(e) = self.w.flush() {
                self.err = Some(e);
            }
        }
    }
}

/// Counts of the records replayed, for the summary.
#[derive(Debug, Default)]
struct Stats {
    entries: u64,
    entry_data_bytes: u64,
    hard_states: u64,
    truncations: u64,
    seals: u64,
    /// Records of kinds this tool does not know.
    other: u64,
    /// Segment files, in replay order (each starts with a header record).
    files: Vec<PathBuf>,
}

impl Stats {
    fn count(&mut self, file: &Path, record: &Record<'_>) {
        match record {
            Record::Header { .. } => self.files.push(file.to_path_buf()),
            Record::Entry { data, .. } => {
                self.entries += 1;
                self.entry_data_bytes += data.len() as u64;
            }
            // The Raft layer keeps its hard state in the metadata slot.
            Record::HardState(_) | Record::Metadata(_) => self.hard_states += 1,
            Record::Truncate { .. } => self.truncations += 1,
            Record::Seal => self.seals += 1,
            _ => self.other += 1,
        }
    }
}

fn file_name(path: &Path) -> std::borrow::Cow<'_, str> {
    path.file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy()
}

/// One record of a dump, without its file and offset.
struct RecordLine<'r, 'a> {
    record: &'r Record<'a>,
    format: DataFormat,
}

impl fmt::Display for RecordLine<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self.record {
            Record::Header { seq, first_index } => {
                write!(f, "header     seq={seq} first_index={first_index}")
            }
            Record::Entry { index, term, data } => {
                write!(f, "entry      index={index} term={term} len={}", data.len())?;
                match self.format {
                    DataFormat::Len => Ok(()),
                    DataFormat::Hex => {
                        f.write_str(" data=")?;
                        data.iter().try_for_each(|b| write!(f, "{b:02x}"))
                    }
                    DataFormat::Utf8 => write!(
                        f,
                        " data=\"{}\"",
                        String::from_utf8_lossy(data).escape_debug()
                    ),
                }
            }
            Record::HardState(hs) => write!(f, "hard_state {}", HardStateFmt(hs)),
            Record::Metadata(value) => match HardState::from_metadata(value) {
                Some(hs) => write!(f, "hard_state {}", HardStateFmt(hs)),
                None => write!(f, "metadata   len={} (not a hard state)", value.len()),
            },
            Record::Truncate { from } => write!(f, "truncate   from={from}"),
            Record::Seal => f.write_str("seal"),
            ref other => write!(f, "other      {other:?}"),
        }
    }
}

struct HardStateFmt(HardState);

impl fmt::Display for HardStateFmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let HardState { term, vote, commit } = self.0;
        write!(f, "term={term} vote=")?;
        match vote {
            Some(v) => write!(f, "{v}")?,
            None => f.write_str("none")?,
        }
        write!(f, " commit={commit}")
    }
}

fn print_summary(out: &mut Out<'_>, dir: &Path, report: &RecoveryReport, stats: &Stats) {
    let disk_bytes: u64 = stats
        .files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    out.line(format_args!("directory:   {}", dir.display()));
    out.line(format_args!("segments:    {}", report.segments));
    if let (Some(first), Some(last)) = (stats.files.first(), stats.files.last()) {
        out.line(format_args!(
            "files:       {} .. {}",
            file_name(first),
            file_name(last)
        ));
    }
    out.line(format_args!(
        "bytes:       {} of records, {disk_bytes} on disk (segments are preallocated)",
        report.bytes_replayed
    ));
    out.line(format_args!("first index: {}", report.first_index));
    out.line(format_args!("last index:  {}", report.last_index));
    out.line(format_args!(
        "entries:     {} live",
        (report.last_index + 1).saturating_sub(report.first_index)
    ));
    out.line(format_args!(
        "records:     {} entries ({} data bytes), {} hard states, {} truncations, {} seals",
        stats.entries, stats.entry_data_bytes, stats.hard_states, stats.truncations, stats.seals
    ));
    if stats.other > 0 {
        out.line(format_args!(
            "other:       {} records of other kinds",
            stats.other
        ));
    }
    out.line(format_args!(
        "hard state:  {}",
        HardStateFmt(report.hard_state)
    ));
    match &report.torn_tail {
        None => {
            out.line(format_args!("torn tail:   none"));
            out.line(format_args!("status:      OK, every checksum verified"));
        }
        Some(t) => {
            out.line(format_args!(
                "torn tail:   {} at offset {} ({} bytes)",
                t.file.display(),
                t.offset,
                t.discarded_bytes
            ));
            out.line(format_args!(
                "status:      OK up to a torn tail record, which the next open will cut"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_lines_in_each_data_format() {
        let record = Record::Entry {
            index: 7,
            term: 2,
            data: b"a\n\xff",
        };
        let line = |format| {
            RecordLine {
                record: &record,
                format,
            }
            .to_string()
        };
        assert_eq!(line(DataFormat::Len), "entry      index=7 term=2 len=3");
        assert_eq!(
            line(DataFormat::Hex),
            "entry      index=7 term=2 len=3 data=610aff"
        );
        assert_eq!(
            line(DataFormat::Utf8),
            "entry      index=7 term=2 len=3 data=\"a\\n\u{fffd}\""
        );
    }

    #[test]
    fn hard_state_without_vote() {
        let hs = HardState {
            term: 3,
            vote: None,
            commit: 9,
        };
        assert_eq!(HardStateFmt(hs).to_string(), "term=3 vote=none commit=9");
    }

    /// A writer that fails every write with the given error kind.
    struct Failing(io::ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(self.0))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn wal_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = raft_wal::Wal::open(dir.path(), raft_wal::Options::default()).unwrap();
        wal.append(1, 1, b"x").unwrap();
        wal.sync().unwrap();
        dir
    }

    #[test]
    fn closed_pipe_is_not_an_error_but_other_output_errors_are() {
        let dir = wal_dir();
        let cmd = WalCommand::Dump {
            dir: dir.path().to_path_buf(),
            data: DataFormat::Len,
        };
        run(&cmd, &mut Failing(io::ErrorKind::BrokenPipe)).unwrap();
        let err = run(&cmd, &mut Failing(io::ErrorKind::StorageFull)).unwrap_err();
        assert!(matches!(err, WalCliError::Output(_)), "{err:?}");
    }

    #[test]
    fn verify_output_names_indexes() {
        let dir = wal_dir();
        let mut out = Vec::new();
        let cmd = WalCommand::Verify {
            dir: dir.path().to_path_buf(),
            strict: true,
        };
        run(&cmd, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("first index: 1\n"), "{text}");
        assert!(text.contains("last index:  1\n"), "{text}");
    }
}
