//! `raft-snapshot` write and read throughput on a large key-value-like state.
//!
//! Groups (figures and commands in `raft-snapshot/README.md`):
//!
//! - `snapshot_write`: `store_commit` writes the whole state through
//!   `SnapshotStore::create` + `commit` (compress, write, fsync, rename,
//!   directory fsync) at the default level; `compress_only` streams it
//!   through `SnapshotWriter` into a discarding sink, isolating the codec;
//!   `compress_only_2_workers` does the same with two zstd worker threads and
//!   `compress_only_level_3` at level 3 (its ratio is printed too).
//! - `snapshot_read`: `store_open_restore` is `open_snapshot` (which first
//!   verifies the body CRC in one pass over the file) plus `restore_into` a
//!   discarding sink, warm page cache; `restore_unverified` skips the up-front
//!   pass (the reader still checks everything by the end).
//!
//! Throughput is counted in bytes of *uncompressed* state. The state is
//! `SNAPSHOT_BENCH_BYTES` bytes (default 1 GiB) of `key<TAB>value` records
//! streamed from a 48 MiB pool generated once, so the state is never held in
//! memory; the pool is far larger than zstd's window at these levels, so the
//! repetition does not flatter the compression ratio. The ratio is printed.
//!
//! Files go under `target/snapshot-bench` (or `$SNAPSHOT_BENCH_DIR`).

use std::hint::black_box;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use raft_snapshot::{
    Membership, SnapshotMeta, SnapshotStore, SnapshotWriter, StoreOptions, DEFAULT_LEVEL,
};

const POOL_BYTES: usize = 48 << 20;

fn state_bytes() -> u64 {
    std::env::var("SNAPSHOT_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30)
}

fn bench_dir() -> PathBuf {
    std::env::var_os("SNAPSHOT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/snapshot-bench"))
}

/// xorshift64*: cheap, reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Records like a key-value store's serialized map: structured keys, and
/// values that are names, e-mail addresses, decimals, timestamps and short
/// random tokens (incompressible), in proportions typical of user records.
fn pool() -> &'static [u8] {
    static POOL: OnceLock<Vec<u8>> = OnceLock::new();
    POOL.get_or_init(|| {
        const NAMES: [&str; 16] = [
            "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
            "mallory", "niaj", "olivia", "peggy", "rupert", "sybil",
        ];
        const DOMAINS: [&str; 4] = ["example.com", "mail.test", "corp.example", "users.invalid"];
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let mut out = Vec::with_capacity(POOL_BYTES + 256);
        let mut user = 0u64;
        while out.len() < POOL_BYTES {
            user += 1 + rng.next() % 3;
            let r = rng.next();
            let name = NAMES[(r % 16) as usize];
            let _ = writeln!(
                out,
                "users/{user:010}/name\t{name} {}",
                NAMES[(r >> 8) as usize % 16]
            );
            let _ = writeln!(
                out,
                "users/{user:010}/email\t{name}.{}@{}",
                r >> 40,
                DOMAINS[(r >> 4) as usize % 4]
            );
            let _ = writeln!(
                out,
                "users/{user:010}/balance\t{}.{:02}",
                (r >> 20) % 100_000,
                r % 100
            );
            let _ = writeln!(
                out,
                "users/{user:010}/updated_at\t2024-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                1 + r % 12,
                1 + (r >> 5) % 28,
                (r >> 10) % 24,
                (r >> 16) % 60,
                (r >> 22) % 60
            );
            let _ = write!(out, "users/{user:010}/session\t");
            for _ in 0..2 {
                let _ = write!(out, "{:016x}", rng.next());
            }
            out.push(b'\n');
        }
        out
    })
}

/// Streams `total` bytes of state from the pool into `w`, 1 MiB at a time.
fn write_state(w: &mut impl Write, total: u64) -> io::Result<()> {
    let pool = pool();
    let mut left = total;
    let mut at = 0usize;
    while left > 0 {
        let n = (1usize << 20).min(left as usize).min(pool.len() - at);
        w.write_all(&pool[at..at + n])?;
        at = (at + n) % pool.len();
        left -= n as u64;
    }
    Ok(())
}

/// A `Write + Seek` that keeps nothing.
struct Discard(u64);
impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
impl Seek for Discard {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        if let SeekFrom::Start(p) = to {
            self.0 = p;
        }
        Ok(self.0)
    }
}

fn meta(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        index,
        term: 1,
        membership: Membership::voters([1, 2, 3]),
    }
}

fn open_store() -> SnapshotStore {
    let dir = bench_dir();
    let _ = std::fs::remove_dir_all(&dir);
    SnapshotStore::open(&dir, StoreOptions::default()).expect("open bench store")
}

fn snapshot_bench(c: &mut Criterion) {
    let total = state_bytes();
    let store = open_store();
    let _ = pool();

    let mut g = c.benchmark_group("snapshot_write");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.throughput(Throughput::Bytes(total));
    let mut index = 0;
    g.bench_function("store_commit", |b| {
        b.iter(|| {
            index += 1;
            let mut w = store.create(meta(index)).unwrap();
            write_state(&mut w, total).unwrap();
            black_box(w.commit().unwrap())
        })
    });
    g.bench_function("compress_only", |b| {
        b.iter(|| {
            let mut w = SnapshotWriter::new(Discard(0), meta(1), DEFAULT_LEVEL).unwrap();
            write_state(&mut w, total).unwrap();
            black_box(w.finish().unwrap().1)
        })
    });
    g.bench_function("compress_only_2_workers", |b| {
        b.iter(|| {
            let mut w =
                SnapshotWriter::with_workers(Discard(0), meta(1), DEFAULT_LEVEL, 2).unwrap();
            write_state(&mut w, total).unwrap();
            black_box(w.finish().unwrap().1)
        })
    });
    {
        let level = 3;
        let mut ratio = None;
        g.bench_function(format!("compress_only_level_{level}"), |b| {
            b.iter(|| {
                let mut w = SnapshotWriter::new(Discard(0), meta(1), level).unwrap();
                write_state(&mut w, total).unwrap();
                let h = w.finish().unwrap().1;
                ratio = Some(h.compression_ratio());
                black_box(h)
            })
        });
        if let Some(r) = ratio {
            eprintln!("snapshot bench: level {level}: compression ratio {r:.2}");
        }
    }
    g.finish();

    // Criterion runs this function even when a filter skips the write group.
    if store.list().unwrap().is_empty() {
        let mut w = store.create(meta(1)).unwrap();
        write_state(&mut w, total).unwrap();
        w.commit().unwrap();
    }
    let newest = store.list().unwrap().pop().expect("a snapshot was written");
    let header = store.verify(newest).unwrap();
    eprintln!(
        "snapshot bench: level {DEFAULT_LEVEL}, state {} B, file {} B, compression ratio {:.2}",
        header.uncompressed_bytes,
        header.file_bytes(),
        header.compression_ratio()
    );

    let mut g = c.benchmark_group("snapshot_read");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.throughput(Throughput::Bytes(total));
    g.bench_function("store_open_restore", |b| {
        b.iter(|| {
            let mut r = store.open_snapshot(newest).unwrap();
            black_box(r.restore_into(&mut io::sink()).unwrap())
        })
    });
    g.bench_function("restore_unverified", |b| {
        b.iter(|| {
            let mut r = store.open_unverified(newest).unwrap();
            black_box(r.restore_into(&mut io::sink()).unwrap())
        })
    });
    g.finish();
    drop(store);
    let _ = std::fs::remove_dir_all(bench_dir());
}

criterion_group!(benches, snapshot_bench);
criterion_main!(benches);
