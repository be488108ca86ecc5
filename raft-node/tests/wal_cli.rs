//! `raft-node wal dump|verify`, run as a process against WALs built with raft-wal.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use raft_wal::{HardState, Options, Wal};

const LAST: u64 = 300;

/// Serialises the tests. The WAL's directory lock is a `flock`; a child
/// spawned by one test thread briefly holds copies of every open descriptor
/// (between fork and exec), so it can keep another test's lock alive after
/// that test dropped its `Wal`, and the other test's next open fails with
/// `Locked`.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
const TRUNCATE_FROM: u64 = 291;

fn raft_node(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raft-node"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run raft-node")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf-8 stderr")
}

fn data(i: u64) -> Vec<u8> {
    format!("entry-{i:05}|").repeat(3).into_bytes()
}

/// A WAL over several 8 KiB segments: entries 1..=300 in term 1, a truncation
/// of 291.., entries 291..=300 again in term 2, and a hard state.
fn build_wal(dir: &Path) -> HardState {
    let mut wal = Wal::open(
        dir,
        Options {
            segment_size_bytes: 8192,
            ..Options::default()
        },
    )
    .unwrap();
    for i in 1..=LAST {
        wal.append(i, 1, &data(i)).unwrap();
        if i % 20 == 0 {
            wal.sync().unwrap();
        }
    }
    wal.sync().unwrap();
    wal.truncate_suffix(TRUNCATE_FROM).unwrap();
    for i in TRUNCATE_FROM..=LAST {
        wal.append(i, 2, &data(i)).unwrap();
    }
    let hs = HardState {
        term: 2,
        vote: Some(3),
        commit: 250,
    };
    wal.set_hard_state(hs).unwrap();
    wal.sync().unwrap();
    hs
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

fn path_arg(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn verify_clean_wal_prints_summary_and_exits_0() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    build_wal(dir.path());
    let segs = segments(dir.path());
    assert!(segs.len() >= 3, "want several segments, got {}", segs.len());

    let o = raft_node(&["wal", "verify", path_arg(dir.path())]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    assert!(
        out.contains(&format!("segments:    {}\n", segs.len())),
        "{out}"
    );
    assert!(out.contains("first index: 1\n"), "{out}");
    assert!(out.contains(&format!("last index:  {LAST}\n")), "{out}");
    assert!(
        out.contains("hard state:  term=2 vote=3 commit=250\n"),
        "{out}"
    );
    let truncated = LAST - TRUNCATE_FROM + 1;
    assert!(
        out.contains(&format!(
            "records:     {} entries ({} data bytes), ",
            LAST + truncated,
            (LAST + truncated) * data(1).len() as u64
        )),
        "{out}"
    );
    assert!(out.contains(" 1 truncations, "), "{out}");
    assert!(
        out.contains(&format!(" {} seals\n", segs.len() - 1)),
        "{out}"
    );
    assert!(out.contains("torn tail:   none\n"), "{out}");
    let bytes_line = out.lines().find(|l| l.starts_with("bytes:")).unwrap();
    let on_disk: u64 = segs.iter().map(|p| p.metadata().unwrap().len()).sum();
    assert!(
        bytes_line.contains(&format!(", {on_disk} on disk")),
        "{bytes_line}"
    );
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}

/// Parses a dump line into (file, offset, kind, rest).
fn parse_line(line: &str) -> (&str, u64, &str, &str) {
    let mut parts = line.split_whitespace();
    let file = parts.next().unwrap();
    let offset = parts.next().unwrap().parse().unwrap();
    let kind = parts.next().unwrap();
    let rest = line.split_once(kind).unwrap().1.trim();
    (file, offset, kind, rest)
}

#[test]
fn dump_prints_every_record_in_order() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    build_wal(dir.path());
    let segs = segments(dir.path());
    let o = raft_node(&["wal", "dump", path_arg(dir.path()), "--data", "utf8"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));

    let records: Vec<_> = out
        .lines()
        .take_while(|l| !l.starts_with("directory:"))
        .map(parse_line)
        .collect();
    // Every segment starts with a header at offset 0, in file order.
    let headers: Vec<_> = records.iter().filter(|r| r.2 == "header").collect();
    assert_eq!(headers.len(), segs.len());
    for (h, seg) in headers.iter().zip(&segs) {
        assert_eq!(h.0, seg.file_name().unwrap().to_str().unwrap());
        assert_eq!(h.1, 0);
    }
    // Offsets grow within a file.
    for w in records.windows(2) {
        if w[0].0 == w[1].0 {
            assert!(w[0].1 < w[1].1, "{:?} then {:?}", w[0], w[1]);
        }
    }
    let entries: Vec<_> = records.iter().filter(|r| r.2 == "entry").collect();
    assert_eq!(entries.len() as u64, LAST + (LAST - TRUNCATE_FROM + 1));
    let d = data(5);
    let want5 = format!(
        "index=5 term=1 len={} data=\"{}\"",
        d.len(),
        std::str::from_utf8(&d).unwrap()
    );
    assert_eq!(entries[4].3, want5);
    let last = entries.last().unwrap();
    assert!(
        last.3.starts_with(&format!("index={LAST} term=2 ")),
        "{last:?}"
    );
    let truncates: Vec<_> = records.iter().filter(|r| r.2 == "truncate").collect();
    assert_eq!(truncates.len(), 1);
    assert_eq!(truncates[0].3, format!("from={TRUNCATE_FROM}"));
    assert_eq!(
        records.iter().filter(|r| r.2 == "seal").count(),
        segs.len() - 1
    );
    assert!(records
        .iter()
        .any(|r| r.2 == "hard_state" && r.3 == "term=2 vote=3 commit=250"));
    // The summary follows the records.
    assert!(out.contains(&format!("last index:  {LAST}\n")), "{out}");

    let hex = stdout(&raft_node(&[
        "wal",
        "dump",
        path_arg(dir.path()),
        "--data",
        "hex",
    ]));
    let hex5: String = d.iter().map(|b| format!("{b:02x}")).collect();
    assert!(hex.contains(&format!("index=5 term=1 len={} data={hex5}\n", d.len())));
    let len = stdout(&raft_node(&["wal", "dump", path_arg(dir.path())]));
    assert!(len.contains(&format!("index=5 term=1 len={}\n", d.len())));
    assert!(!len.contains("data="));
}

#[test]
fn corruption_in_a_sealed_segment_exits_1_naming_file_and_offset() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    build_wal(dir.path());
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    let victim = &segs[1];
    let victim_name = victim.file_name().unwrap().to_str().unwrap();

    // Find the first entry of the second (sealed) segment in a clean dump.
    let dump = stdout(&raft_node(&["wal", "dump", path_arg(dir.path())]));
    let (_, offset, _, fields) = dump
        .lines()
        .map(parse_line)
        .find(|r| r.0 == victim_name && r.2 == "entry")
        .expect("an entry in the second segment");
    let index: u64 = fields
        .strip_prefix("index=")
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();

    // Flip one byte of that entry's data (after the 8-byte record header and
    // 16-byte index/term prefix).
    let mut bytes = std::fs::read(victim).unwrap();
    let at = offset as usize + 8 + 16 + 3;
    assert_eq!(bytes[at], data(index)[3]);
    bytes[at] ^= 0x20;
    std::fs::write(victim, &bytes).unwrap();

    let o = raft_node(&["wal", "verify", path_arg(dir.path())]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{}\n{err}", stdout(&o));
    let want = format!(
        "error: WAL corruption in {} at offset {offset}: checksum mismatch",
        victim.display()
    );
    assert!(err.contains(&want), "stderr: {err}\nwanted: {want}");
    assert!(
        !stdout(&o).contains("status:"),
        "no summary after a failure"
    );

    // dump shows every record up to the damage, then fails the same way.
    let o = raft_node(&["wal", "dump", path_arg(dir.path())]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(&want));
    let out = stdout(&o);
    let last = parse_line(out.lines().last().expect("records before the damage"));
    assert_eq!(last.0, victim_name);
    assert!(last.1 < offset, "{last:?}");
    assert!(out.contains(&format!("index={} ", index - 1)));
    assert!(!out.contains(&format!("index={index} ")));
}

#[test]
fn torn_tail_is_reported_and_fails_only_under_strict() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    build_wal(dir.path());
    let segs = segments(dir.path());
    let tail = segs.last().unwrap();
    // The last segment is preallocated with zeros after its records; every
    // record here ends with a non-zero byte, so the last one marks the end.
    let mut bytes = std::fs::read(tail).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    // Half of a record: a header claiming a long payload that never arrived.
    let torn = [0xde, 0xad, 0xbe, 0xef, 0x40, 0x00, 0x00, 0x20, b'x', b'y'];
    bytes[end..end + torn.len()].copy_from_slice(&torn);
    std::fs::write(tail, &bytes).unwrap();

    let o = raft_node(&["wal", "verify", path_arg(dir.path())]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    assert!(
        out.contains(&format!(
            "torn tail:   {} at offset {end} ({} bytes)",
            tail.display(),
            torn.len()
        )),
        "{out}"
    );
    assert!(out.contains(&format!("last index:  {LAST}\n")), "{out}");

    let o = raft_node(&["wal", "verify", "--strict", path_arg(dir.path())]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!(
            "error: torn record in {} at offset {end}",
            tail.display()
        )),
        "{}",
        stderr(&o)
    );
    // Read-only: the torn bytes are still there.
    assert_eq!(std::fs::read(tail).unwrap(), bytes);
}

#[test]
fn missing_or_wrong_directory_is_a_clear_error() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let o = raft_node(&["wal", "verify", path_arg(&missing)]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        format!(
            "error: not a WAL directory: {}: no such directory\n",
            missing.display()
        )
    );

    let file = dir.path().join("file");
    std::fs::write(&file, b"hello").unwrap();
    let o = raft_node(&["wal", "dump", path_arg(&file)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a directory"), "{}", stderr(&o));

    // An existing directory with nothing of a WAL in it.
    let o = raft_node(&["wal", "verify", path_arg(dir.path())]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no segment, meta or LOCK file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn empty_wal_verifies() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    drop(Wal::open(dir.path(), Options::default()).unwrap());
    let o = raft_node(&["wal", "verify", path_arg(dir.path())]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    assert!(out.contains("segments:    0\n"), "{out}");
    assert!(out.contains("last index:  0\n"), "{out}");
    assert!(out.contains("entries:     0 live\n"), "{out}");
}

#[test]
fn refuses_while_a_writer_holds_the_wal() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    build_wal(dir.path());
    let wal = Wal::open(dir.path(), Options::default()).unwrap();
    let o = raft_node(&["wal", "verify", path_arg(dir.path())]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is locked"), "{}", stderr(&o));
    drop(wal);
    let o = raft_node(&["wal", "verify", path_arg(dir.path())]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn usage_errors_exit_2() {
    let _serial = serial();
    for args in [
        &["wal"][..],
        &["wal", "verify"],
        &["wal", "dump", "/tmp", "--data", "base64"],
        &["wal", "frobnicate", "/tmp"],
    ] {
        let o = raft_node(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn damage_before_valid_records_in_the_last_segment_is_corruption_not_a_torn_tail() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    build_wal(dir.path());
    let segs = segments(dir.path());
    let tail = segs.last().unwrap();
    let tail_name = tail.file_name().unwrap().to_str().unwrap();
    let dump = stdout(&raft_node(&["wal", "dump", path_arg(dir.path())]));
    // The first entry of the last segment has more records after it.
    let (_, offset, _, _) = dump
        .lines()
        .map(parse_line)
        .find(|r| r.0 == tail_name && r.2 == "entry")
        .expect("an entry in the last segment");
    let mut bytes = std::fs::read(tail).unwrap();
    // Corrupt the stored CRC itself.
    bytes[offset as usize] ^= 0x01;
    std::fs::write(tail, &bytes).unwrap();

    let o = raft_node(&["wal", "verify", path_arg(dir.path())]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let want = format!(
        "error: WAL corruption in {} at offset {offset}: checksum mismatch",
        tail.display()
    );
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
}

#[test]
fn verify_reports_the_first_index_after_compaction() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    build_wal(dir.path());
    let before = segments(dir.path()).len();
    let mut wal = Wal::open(dir.path(), Options::default()).unwrap();
    wal.compact_prefix(150).unwrap();
    drop(wal);
    let after = segments(dir.path()).len();
    assert!(after < before, "compaction deleted no segment");

    let o = raft_node(&["wal", "verify", path_arg(dir.path())]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{}", stderr(&o));
    assert!(out.contains("first index: 151\n"), "{out}");
    assert!(out.contains(&format!("last index:  {LAST}\n")), "{out}");
    assert!(
        out.contains(&format!("entries:     {} live\n", LAST - 150)),
        "{out}"
    );
    assert!(out.contains(&format!("segments:    {after}\n")), "{out}");
}
