//! `raft-wal` against raw `pwrite` + `fdatasync` on the same file system.
//!
//! Groups (see `benches/README.md` for figures and how to run):
//!
//! - `batched_append_1000x256B`: 1,000 appends of 256 B then one `sync()`,
//!   versus one 256,000-byte `pwrite` + `fdatasync` on a plain file. `log`
//!   calls `Log::append` 1,000 times, `log_batch` calls `Log::append_batch`
//!   once.
//! - `append_sync_256B`: one 256 B append + `sync()`, versus one 256 B `pwrite`
//!   + `fdatasync`.
//! - `read_range_10000x256B`: `entries(lo, hi, u64::MAX)` over 10,000 entries
//!   from a warm page cache.
//! - `recovery_1GiB` (only with `WAL_BENCH_RECOVERY=1`): `Wal::open` of a WAL
//!   holding 1 GiB of records, warm cache.
//! - `append_cpu_1000x256B`: the CPU side of a batch: 1,000 appends of 256 B
//!   without the sync (the sync after each iteration is not timed), through
//!   `Log::append`, `Log::append_batch` and the Raft layer.
//! - `group_commit_256B`: for N = 1, 4, 16 and 64, N threads each repeatedly
//!   making one 256 B entry durable with `Log::append_sync` on one shared
//!   handle (group commit), versus one thread appending N entries then
//!   calling `sync()` once, repeated: the best one thread can do for the same
//!   batch size (see [`group_commit`] for why). The paired mode runs these
//!   interleaved in rounds and prints each thread count's throughput relative
//!   to its batched thread, and to 1,000-entry batches for context.
//!
//! `wal` is the Raft layer (`raft_wal::Wal`, what raft-node uses); `log` is
//! the general `raft_wal::Log` API. Both use the production preset.
//!
//! The raw baselines come in two flavours:
//!
//! - `raw_prewritten` overwrites a 64 MiB file that was filled with zeros and
//!   fsynced beforehand, cycling through it. Its `fdatasync` never has to
//!   commit extent or size metadata. The WAL's production segments are
//!   zero-filled and fsynced before use in the same way, so this is the
//!   like-for-like baseline, and the one issue 16's targets name ("a raw
//!   `pwrite` + `fdatasync` of the same bytes into a pre-zeroed file").
//! - `raw_fallocated` reserves space in 64 MiB chunks with `fallocate(2)`
//!   (mode 0) and appends into the reserved, still unwritten extents, so each
//!   `fdatasync` also converts extents. It is slower than `raw_prewritten`
//!   and reported for context (it was the WAL's own behaviour before its
//!   segments were zero-filled).
//!
//! Files live under `target/wal-bench` (or `$WAL_BENCH_DIR`), which must not
//! be a tmpfs: the bench refuses to run on one.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use raft_wal::{Log, LogOptions, Options, Wal};
use tempfile::TempDir;

/// User data per entry.
const ENTRY_BYTES: usize = 256;
/// Entries per batch in the batched-append group.
const BATCH_ENTRIES: usize = 1_000;
/// Entries read per iteration in the range-read group.
const READ_ENTRIES: u64 = 10_000;
/// Segment size of the WAL and preallocation chunk of the raw baseline.
const CHUNK_BYTES: u64 = 64 << 20;
/// Record bytes the recovery WAL holds.
const RECOVERY_BYTES: u64 = 1 << 30;
/// Entries per `sync()` while building the recovery WAL.
const RECOVERY_SYNC_EVERY: u64 = 64 * 1024;

const TMPFS_MAGIC: i64 = 0x0102_1994;

/// The directory all bench files go in, created and checked once.
fn bench_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::var_os("WAL_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wal-bench"));
        std::fs::create_dir_all(&root).expect("create bench directory");
        let fs_type = fs_type(&root);
        assert_ne!(
            fs_type,
            TMPFS_MAGIC,
            "{} is on tmpfs; fsync numbers would be meaningless (set WAL_BENCH_DIR)",
            root.display()
        );
        eprintln!(
            "wal bench: files under {} (statfs f_type {fs_type:#x})",
            root.display()
        );
        root
    })
    .clone()
}

fn fs_type(path: &Path) -> i64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL in path");
    // SAFETY: statfs writes into a zeroed struct we own; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statfs {}", path.display());
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    let t = st.f_type as i64;
    t
}

fn tempdir(root: &Path) -> TempDir {
    tempfile::Builder::new()
        .prefix("wal-bench-")
        .tempdir_in(root)
        .expect("create temp dir")
}

fn payload() -> Vec<u8> {
    (0..ENTRY_BYTES).map(|i| (i * 31 % 251) as u8).collect()
}

/// A WAL with the production defaults (64 MiB segments, 4 MiB flush threshold).
struct WalWriter {
    wal: Wal,
    next: u64,
}

impl WalWriter {
    fn open(dir: &Path) -> WalWriter {
        let wal = Wal::open(dir, Options::default()).expect("open WAL");
        let next = wal.last_index() + 1;
        WalWriter { wal, next }
    }

    fn append(&mut self, data: &[u8]) {
        self.wal.append(self.next, 1, data).expect("append");
        self.next += 1;
    }

    fn sync(&mut self) {
        self.wal.sync().expect("sync");
    }
}

/// The general API with the production preset.
fn open_log(dir: &Path) -> Log {
    Log::open(dir, LogOptions::production()).expect("open log")
}

/// Plain file, appended to with one `pwrite` + one `fdatasync` per call.
struct RawLog {
    file: File,
    head: u64,
    reserved: u64,
    /// `Some(len)`: the file was pre-written to `len` bytes and is overwritten
    /// cyclically; `None`: space is reserved with `fallocate` as the log grows.
    wrap_at: Option<u64>,
}

impl RawLog {
    fn fallocated(path: &Path) -> RawLog {
        RawLog {
            file: create(path),
            head: 0,
            reserved: 0,
            wrap_at: None,
        }
    }

    fn prewritten(path: &Path) -> RawLog {
        let file = create(path);
        let zeros = vec![0u8; 1 << 20];
        for i in 0..CHUNK_BYTES / zeros.len() as u64 {
            file.write_all_at(&zeros, i * zeros.len() as u64)
                .expect("prewrite");
        }
        file.sync_all().expect("fsync");
        sync_parent(path);
        RawLog {
            file,
            head: 0,
            reserved: CHUNK_BYTES,
            wrap_at: Some(CHUNK_BYTES),
        }
    }

    fn append_sync(&mut self, buf: &[u8]) {
        let len = buf.len() as u64;
        match self.wrap_at {
            Some(end) if self.head + len > end => self.head = 0,
            Some(_) => {}
            None => {
                while self.head + len > self.reserved {
                    // SAFETY: plain syscall on a descriptor we own.
                    let rc = unsafe {
                        libc::fallocate(
                            self.file.as_raw_fd(),
                            0,
                            self.reserved as libc::off_t,
                            CHUNK_BYTES as libc::off_t,
                        )
                    };
                    assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
                    self.reserved += CHUNK_BYTES;
                }
            }
        }
        self.file.write_all_at(buf, self.head).expect("pwrite");
        self.file.sync_data().expect("fdatasync");
        self.head += len;
    }
}

fn create(path: &Path) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .expect("create raw file");
    sync_parent(path);
    file
}

fn sync_parent(path: &Path) {
    File::open(path.parent().expect("file has a parent"))
        .and_then(|d| d.sync_all())
        .expect("fsync directory");
}

/// State built the first time a bench function actually runs: criterion calls
/// every group function even when a name filter skips its benchmarks.
struct Lazy<T> {
    value: Option<(T, TempDir)>,
}

impl<T> Lazy<T> {
    fn new() -> Lazy<T> {
        Lazy { value: None }
    }

    fn get(&mut self, make: impl FnOnce(&Path) -> T) -> &mut T {
        let (value, _dir) = self.value.get_or_insert_with(|| {
            let dir = tempdir(&bench_root());
            (make(dir.path()), dir)
        });
        value
    }
}

fn batched_append(c: &mut Criterion) {
    let data = payload();
    let batch: Vec<u8> = data
        .iter()
        .copied()
        .cycle()
        .take(ENTRY_BYTES * BATCH_ENTRIES)
        .collect();

    let mut g = c.benchmark_group("batched_append_1000x256B");
    g.throughput(Throughput::Bytes(batch.len() as u64));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(20);
    // Each iteration writes ~256 KB; criterion's default 3 s + 1 s per
    // function would write over 1 GB per function to a disk other people
    // share. A few hundred MB per function is plenty (overrides the CLI times).
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(1));

    let mut wal = Lazy::new();
    g.bench_function("wal", |b| {
        let w = wal.get(WalWriter::open);
        b.iter(|| {
            for _ in 0..BATCH_ENTRIES {
                w.append(&data);
            }
            w.sync();
        })
    });
    drop(wal);

    let mut log = Lazy::new();
    g.bench_function("log", |b| {
        let l = log.get(open_log);
        b.iter(|| {
            for _ in 0..BATCH_ENTRIES {
                l.append(&data).expect("append");
            }
            l.sync().expect("sync");
        })
    });
    drop(log);

    let entries: Vec<&[u8]> = vec![&data[..]; BATCH_ENTRIES];
    let mut log = Lazy::new();
    g.bench_function("log_batch", |b| {
        let l = log.get(open_log);
        b.iter(|| {
            l.append_batch(&entries).expect("append_batch");
            l.sync().expect("sync");
        })
    });
    drop(log);

    let mut raw = Lazy::new();
    g.bench_function("raw_fallocated", |b| {
        let r = raw.get(|d| RawLog::fallocated(&d.join("raw")));
        b.iter(|| r.append_sync(&batch))
    });
    drop(raw);

    let mut raw = Lazy::new();
    g.bench_function("raw_prewritten", |b| {
        let r = raw.get(|d| RawLog::prewritten(&d.join("raw")));
        b.iter(|| r.append_sync(&batch))
    });
    g.finish();
}

/// The CPU side of a batch: 1,000 appends, timed without the `sync()` that
/// follows each iteration (the sync keeps the buffered batch, and the page
/// cache, from growing across iterations).
fn append_cpu(c: &mut Criterion) {
    let data = payload();
    let entries: Vec<&[u8]> = vec![&data[..]; BATCH_ENTRIES];
    let mut g = c.benchmark_group("append_cpu_1000x256B");
    g.throughput(Throughput::Bytes((ENTRY_BYTES * BATCH_ENTRIES) as u64));
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(1));

    fn timed(iters: u64, mut appends: impl FnMut(), mut sync: impl FnMut()) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let t = Instant::now();
            appends();
            total += t.elapsed();
            sync();
        }
        total
    }

    let mut log = Lazy::new();
    g.bench_function("log_append", |b| {
        let l = log.get(open_log);
        b.iter_custom(|iters| {
            timed(
                iters,
                || {
                    for _ in 0..BATCH_ENTRIES {
                        black_box(l.append(&data).expect("append"));
                    }
                },
                || l.sync().expect("sync"),
            )
        })
    });
    drop(log);

    let mut log = Lazy::new();
    g.bench_function("log_append_batch", |b| {
        let l = log.get(open_log);
        b.iter_custom(|iters| {
            timed(
                iters,
                || {
                    black_box(l.append_batch(&entries).expect("append_batch"));
                },
                || l.sync().expect("sync"),
            )
        })
    });
    drop(log);

    let mut wal = Lazy::new();
    g.bench_function("wal", |b| {
        let w: &mut WalWriter = wal.get(WalWriter::open);
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                for _ in 0..BATCH_ENTRIES {
                    w.append(&data);
                }
                total += t.elapsed();
                w.sync();
            }
            total
        })
    });
    g.finish();
}

fn append_sync(c: &mut Criterion) {
    let data = payload();

    let mut g = c.benchmark_group("append_sync_256B");
    g.throughput(Throughput::Bytes(ENTRY_BYTES as u64));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(50);

    let mut wal = Lazy::new();
    g.bench_function("wal", |b| {
        let w = wal.get(WalWriter::open);
        b.iter(|| {
            w.append(&data);
            w.sync();
        })
    });
    drop(wal);

    let mut log = Lazy::new();
    g.bench_function("log", |b| {
        let l = log.get(open_log);
        b.iter(|| l.append_sync(&data).expect("append_sync"))
    });
    drop(log);

    let mut raw = Lazy::new();
    g.bench_function("raw_fallocated", |b| {
        let r = raw.get(|d| RawLog::fallocated(&d.join("raw")));
        b.iter(|| r.append_sync(&data))
    });
    drop(raw);

    let mut raw = Lazy::new();
    g.bench_function("raw_prewritten", |b| {
        let r = raw.get(|d| RawLog::prewritten(&d.join("raw")));
        b.iter(|| r.append_sync(&data))
    });
    drop(raw);

    // Diagnostic, not a baseline: `raw_fallocated` plus the one extra syscall
    // the WAL makes per batch (a `statx` of the segment in `begin_batch`). On
    // this kernel a stat between writes makes every following fdatasync also
    // write the inode (see benches/README.md), and this isolates that cost.
    let mut raw = Lazy::new();
    g.bench_function("raw_fallocated_statx", |b| {
        let r = raw.get(|d| RawLog::fallocated(&d.join("raw")));
        b.iter(|| {
            black_box(r.file.metadata().expect("statx"));
            r.append_sync(&data)
        })
    });
    g.finish();
}

fn read_range(c: &mut Criterion) {
    let data = payload();
    // Read from the middle of a longer log so the range is not special.
    let (lo, hi) = (READ_ENTRIES + 1, 2 * READ_ENTRIES + 1);
    let mut wal = Lazy::new();

    let mut g = c.benchmark_group("read_range_10000x256B");
    g.throughput(Throughput::Bytes(READ_ENTRIES * ENTRY_BYTES as u64));
    g.bench_function("wal", |b| {
        let w = wal.get(|d| {
            let mut w = WalWriter::open(d);
            for _ in 0..3 * READ_ENTRIES {
                w.append(&data);
            }
            w.sync();
            let first = w.wal.entries(lo, hi, u64::MAX).expect("read");
            assert_eq!(first.len() as u64, READ_ENTRIES);
            assert!(first.iter().all(|e| e.data == data));
            w
        });
        b.iter(|| black_box(w.wal.entries(lo, hi, u64::MAX).expect("read")))
    });
    g.finish();
}

/// Thread counts of the group-commit groups.
const GROUP_THREADS: [usize; 4] = [1, 4, 16, 64];
/// Entries each thread makes durable per paired group-commit measurement
/// (and syncs of the matching one-thread batches).
const GROUP_SYNCS: usize = 32;
/// 1,000-entry batches per paired measurement of the context figure.
const GROUP_BIG_BATCHES: usize = 4;

/// Group commit against one-thread batching of the same batch size.
///
/// With `N` threads, each thread repeatedly makes one 256 B entry durable
/// with `Log::append_sync` (every entry individually acknowledged as
/// durable, the callers sharing `fdatasync`s through group commit):
/// `threads_N/append_sync`. The baseline, `threads_N/one_thread_batched`, is
/// the best one thread can do for the same batch size: append `N` entries,
/// then `sync()` once, repeated. Both count entries.
///
/// Why this shape: `N` callers that each wait for their own entry to be
/// durable have at most `N` entries in flight, so no sync can cover more
/// than `N` of them; the fair yardstick is one thread batching `N` entries
/// per sync. (An earlier shape had 64 threads each call `append_sync` 16
/// times in sequence against one thread syncing all 1,024 entries at once;
/// each thread must wait for a sync before its next append, so that
/// comparison was capped near 1/16 whatever the implementation did.) The
/// paired mode also reports each thread count against one thread batching
/// 1,000 entries, for context.
fn group_commit(c: &mut Criterion) {
    let data = payload();
    let mut g = c.benchmark_group("group_commit_256B");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));

    for threads in GROUP_THREADS {
        g.throughput(Throughput::Elements(threads as u64));
        let mut log = Lazy::new();
        g.bench_function(format!("threads_{threads}/one_thread_batched"), |b| {
            let l = log.get(open_log);
            b.iter(|| {
                for _ in 0..threads {
                    l.append(&data).expect("append");
                }
                l.sync().expect("sync");
            })
        });
        drop(log);

        let mut log = Lazy::new();
        g.bench_function(format!("threads_{threads}/append_sync"), |b| {
            let l = log.get(open_log).clone();
            // One iteration: every thread makes one entry durable.
            b.iter_custom(|iters| append_sync_threads(&l, &data, threads, iters as usize))
        });
    }
    g.finish();
}

/// `threads` threads each call `log.append_sync(data)` `per_thread` times;
/// returns the time from their common start until the last one is done
/// (thread start-up and joining are left out).
fn append_sync_threads(log: &Log, data: &[u8], threads: usize, per_thread: usize) -> Duration {
    let start = std::sync::Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    for _ in 0..per_thread {
                        log.append_sync(data).expect("append_sync");
                    }
                    Instant::now()
                })
            })
            .collect();
        start.wait();
        let t = Instant::now();
        let end = handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .max()
            .expect("at least one thread");
        end.saturating_duration_since(t)
    })
}

fn recovery(c: &mut Criterion) {
    if std::env::var_os("WAL_BENCH_RECOVERY").is_none_or(|v| v != "1") {
        eprintln!("wal bench: skipping recovery_1GiB (set WAL_BENCH_RECOVERY=1 to run it)");
        return;
    }
    let root = bench_root();
    let dir = tempdir(&root);
    let data = payload();

    let started = Instant::now();
    let mut w = WalWriter::open(dir.path());
    let record_bytes = 8 + 16 + ENTRY_BYTES as u64;
    let entries = RECOVERY_BYTES.div_ceil(record_bytes);
    for i in 1..=entries {
        w.append(&data);
        if i % RECOVERY_SYNC_EVERY == 0 {
            w.sync();
        }
    }
    w.sync();
    drop(w);
    eprintln!(
        "wal bench: built {entries} entries in {:.1?}",
        started.elapsed()
    );

    // The first open also removes the leftover preallocated segment; keep it
    // out of the measurement.
    let wal = Wal::open(dir.path(), Options::default()).expect("open WAL");
    let report = wal.recovery_report().clone();
    drop(wal);
    assert_eq!(report.last_index, entries);
    assert!(report.bytes_replayed >= RECOVERY_BYTES);
    eprintln!(
        "wal bench: recovery WAL has {} segments, {} record bytes",
        report.segments, report.bytes_replayed
    );

    let mut g = c.benchmark_group("recovery_1GiB");
    g.throughput(Throughput::Bytes(report.bytes_replayed));
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.bench_function("wal_open", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let wal = Wal::open(dir.path(), Options::default()).expect("open WAL");
                total += t.elapsed();
                assert_eq!(wal.last_index(), entries);
                // Dropping (unmapping, freeing the index) is not recovery, and
                // the next open needs the directory lock back.
                drop(wal);
            }
            total
        })
    });
    g.finish();
}

/// Interleaved WAL / raw rounds, only with `WAL_BENCH_PAIRED=1`.
///
/// The disk is shared, and background fsync traffic shifts `fdatasync` latency
/// by several times between one criterion window and the next, so ratios of
/// separately measured medians are noisy. Here every round runs the Raft
/// layer (`wal`), the general API (`log`: one `append` call per entry;
/// `log_batch`: one `append_batch` call) and both raw baselines back to back
/// (in a fresh random order each round), so all five see the same background; the ratio of
/// their medians is the robust figure. Results go to stderr.
/// `WAL_BENCH_PAIRED_ONLY=batched,group,single` (any subset) runs only those
/// parts.
fn paired(_: &mut Criterion) {
    if std::env::var_os("WAL_BENCH_PAIRED").is_none_or(|v| v != "1") {
        eprintln!("wal bench: skipping paired rounds (set WAL_BENCH_PAIRED=1 to run them)");
        return;
    }
    let data = payload();
    let batch: Vec<u8> = data
        .iter()
        .copied()
        .cycle()
        .take(ENTRY_BYTES * BATCH_ENTRIES)
        .collect();
    // With both CPUs busy (PREEMPT_NONE, HZ=250), the task woken when its
    // fdatasync completes waits for the next 4 ms tick; see benches/README.md.
    const STALL: Duration = Duration::from_micros(3_500);
    const LABELS: [&str; 5] = [
        "wal",
        "log",
        "log_batch",
        "raw_fallocated",
        "raw_prewritten",
    ];
    const N: usize = LABELS.len();
    let root = bench_root();
    let run = |name: &str,
               rounds: usize,
               wal_op: &dyn Fn(&mut WalWriter),
               log_op: &dyn Fn(&Log),
               log_batch_op: &dyn Fn(&Log),
               raw_buf: &[u8]| {
        let dirs: Vec<TempDir> = (0..N).map(|_| tempdir(&root)).collect();
        let mut w = WalWriter::open(dirs[0].path());
        let l = open_log(dirs[1].path());
        let lb = open_log(dirs[2].path());
        let mut fa = RawLog::fallocated(&dirs[3].path().join("raw"));
        let mut pw = RawLog::prewritten(&dirs[4].path().join("raw"));
        let mut times: [Vec<Duration>; N] = Default::default();
        let mut op = |which: usize| match which {
            0 => wal_op(&mut w),
            1 => log_op(&l),
            2 => log_batch_op(&lb),
            3 => fa.append_sync(raw_buf),
            _ => pw.append_sync(raw_buf),
        };
        // Warm-up rounds, not recorded: first segment, first chunk, page cache.
        for _ in 0..rounds / 10 {
            for which in 0..N {
                op(which);
            }
        }
        let mut order = Shuffle::new(N);
        for _ in 0..rounds {
            for &which in order.next_round() {
                let t = Instant::now();
                op(which);
                times[which].push(t.elapsed());
            }
        }
        let q = |v: &mut Vec<Duration>, p: f64| {
            v.sort();
            v[((v.len() - 1) as f64 * p).round() as usize]
        };
        let mut med = [Duration::ZERO; N];
        for (i, label) in LABELS.iter().enumerate() {
            let v = &mut times[i];
            med[i] = q(v, 0.5);
            let stalled = v.iter().filter(|t| **t >= STALL).count();
            eprintln!(
                "paired {name}/{label}: median {:.1?} p10 {:.1?} p90 {:.1?} over {rounds} rounds, \
                 {stalled} at >= {STALL:?} (wake-up stalls)",
                med[i],
                q(v, 0.1),
                q(v, 0.9)
            );
        }
        let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        for (i, label) in LABELS.iter().enumerate().take(3) {
            eprintln!(
                "paired {name}: {label}/raw_prewritten time {:.2}x (throughput {:.2} of raw_prewritten), \
                 {label}/raw_fallocated time {:.2}x (throughput {:.2} of raw_fallocated)",
                r(med[i], med[4]),
                r(med[4], med[i]),
                r(med[i], med[3]),
                r(med[3], med[i]),
            );
        }
    };
    let entries: Vec<&[u8]> = vec![&data[..]; BATCH_ENTRIES];
    let batch_appends = std::cell::RefCell::new(Vec::new());
    let only = std::env::var("WAL_BENCH_PAIRED_ONLY").ok();
    let wanted = |part: &str| {
        only.as_ref()
            .is_none_or(|o| o.split(',').any(|p| p == part))
    };
    if wanted("batched") {
        run(
            "batched_append_1000x256B",
            300,
            &|w| {
                for _ in 0..BATCH_ENTRIES {
                    w.append(&data);
                }
                w.sync();
            },
            &|l| {
                for _ in 0..BATCH_ENTRIES {
                    l.append(&data).expect("append");
                }
                l.sync().expect("sync");
            },
            &|l| {
                let t = Instant::now();
                l.append_batch(&entries).expect("append_batch");
                batch_appends.borrow_mut().push(t.elapsed());
                l.sync().expect("sync");
            },
            &batch,
        );
        let mut a = batch_appends.take();
        a.sort();
        eprintln!(
            "paired batched_append_1000x256B/log_batch: of which append_batch median {:.1?} \
             (the rest is the sync)",
            a[a.len() / 2]
        );
    }
    if wanted("group") {
        group_commit_paired(&data);
    }
    if wanted("single") {
        run(
            "append_sync_256B",
            2000,
            &|w| {
                w.append(&data);
                w.sync();
            },
            &|l| {
                l.append_sync(&data).expect("append_sync");
            },
            &|l| {
                l.append_batch([&data]).expect("append_batch");
                l.sync().expect("sync");
            },
            &data,
        );
    }
}

/// Group commit against one-thread batching, interleaved (part of the
/// paired mode; see [`group_commit`] for why it has this shape).
///
/// Each round runs, in a fresh random order, for every thread count `N`:
/// `N` threads each making [`GROUP_SYNCS`] entries durable one at a time with
/// `Log::append_sync` (one shared handle), and one thread appending `N`
/// entries then calling `sync()`, [`GROUP_SYNCS`] times; plus one thread
/// appending 1,000 entries then syncing, [`GROUP_BIG_BATCHES`] times. Prints
/// the median time of each and, per thread count, the group-commit
/// throughput relative to batching the same number of entries per sync (the
/// figure the target is about) and relative to 1,000-entry batches.
fn group_commit_paired(data: &[u8]) {
    const ROUNDS: usize = 31;
    let root = bench_root();
    // One log for the single-thread configurations and one for the threaded
    // ones (fewer 64 MiB segments to zero-fill while the rounds run).
    let dirs = [tempdir(&root), tempdir(&root)];
    let (batched_log, shared_log) = (open_log(dirs[0].path()), open_log(dirs[1].path()));
    // Configurations: 0..4 batched N, 4..8 threads N, 8 the 1,000-entry batch.
    let n_threads = GROUP_THREADS.len();
    let configs = 2 * n_threads + 1;
    let one_round = |k: usize| -> Duration {
        if k < n_threads {
            let per_sync = GROUP_THREADS[k];
            let t = Instant::now();
            for _ in 0..GROUP_SYNCS {
                for _ in 0..per_sync {
                    batched_log.append(data).expect("append");
                }
                batched_log.sync().expect("sync");
            }
            t.elapsed()
        } else if k < 2 * n_threads {
            append_sync_threads(&shared_log, data, GROUP_THREADS[k - n_threads], GROUP_SYNCS)
        } else {
            let t = Instant::now();
            for _ in 0..GROUP_BIG_BATCHES {
                for _ in 0..BATCH_ENTRIES {
                    batched_log.append(data).expect("append");
                }
                batched_log.sync().expect("sync");
            }
            t.elapsed()
        }
    };
    // One warm-up round (first segment, page cache, thread stacks), not recorded.
    for k in 0..configs {
        one_round(k);
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); configs];
    let mut order = Shuffle::new(configs);
    for _ in 0..ROUNDS {
        for &k in order.next_round() {
            times[k].push(one_round(k));
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let big = median(&mut times[2 * n_threads]);
    let big_rate = (GROUP_BIG_BATCHES * BATCH_ENTRIES) as f64 / big.as_secs_f64();
    eprintln!(
        "paired group_commit_256B/one_thread_batched_1000: median {big:.1?} for {} entries \
         ({big_rate:.0} entries/s) over {ROUNDS} rounds",
        GROUP_BIG_BATCHES * BATCH_ENTRIES
    );
    for (i, threads) in GROUP_THREADS.iter().enumerate() {
        let b = median(&mut times[i]);
        let m = median(&mut times[n_threads + i]);
        let entries = (threads * GROUP_SYNCS) as f64;
        eprintln!(
            "paired group_commit_256B/threads_{threads}: append_sync median {m:.1?}, \
             one_thread_batched ({threads} per sync) median {b:.1?}, for {entries} entries each: \
             throughput {:.3} of one_thread_batched, {:.3} of one_thread_batched_1000",
            b.as_secs_f64() / m.as_secs_f64(),
            entries / m.as_secs_f64() / big_rate
        );
    }
}

/// A fresh random order of `0..n` for each paired round. A rotating start
/// alone keeps every operation behind the same neighbour in every round (so
/// whatever one operation leaves behind, such as writeback in flight or a
/// converted extent, always lands on the same next one); shuffling gives
/// each operation every predecessor.
struct Shuffle {
    order: Vec<usize>,
    state: u64,
}

impl Shuffle {
    fn new(n: usize) -> Shuffle {
        Shuffle {
            order: (0..n).collect(),
            state: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn next_round(&mut self) -> &[usize] {
        // Fisher-Yates with xorshift64*: fixed seed, reproducible orders.
        for i in (1..self.order.len()).rev() {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let r = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            self.order.swap(i, (r % (i as u64 + 1)) as usize);
        }
        &self.order
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = batched_append, append_cpu, append_sync, read_range, group_commit, paired, recovery
}
criterion_main!(benches);
