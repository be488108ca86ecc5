//! Counters the driver keeps for `/metrics`: proposals, the latency of each
//! persist (one WAL write + fdatasync), snapshots taken and their duration, snapshots
//! installed from a leader.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the persist-latency histogram buckets.
const FSYNC_BUCKETS_S: [f64; 11] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
];

/// Upper bounds (seconds) of the driver-stall histogram buckets.
const STALL_BUCKETS_S: [f64; 9] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Shared, lock-free counters of one driver.
#[derive(Default, Debug)]
pub struct DriverCounters {
    proposals: AtomicU64,
    persist_buckets: [AtomicU64; FSYNC_BUCKETS_S.len()],
    persist_count: AtomicU64,
    persist_sum_ns: AtomicU64,
    snapshots: AtomicU64,
    snapshot_sum_ns: AtomicU64,
    snapshot_last_ns: AtomicU64,
    snapshots_installed: AtomicU64,
    disk_full_waits: AtomicU64,
    stall_buckets: [AtomicU64; STALL_BUCKETS_S.len()],
    stall_count: AtomicU64,
    stall_sum_ns: AtomicU64,
    stall_max_ns: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl DriverCounters {
    pub(super) fn proposal(&self) {
        add(&self.proposals, 1);
    }

    pub(super) fn persisted(&self, took: Duration) {
        let s = took.as_secs_f64();
        for (bound, bucket) in FSYNC_BUCKETS_S.iter().zip(&self.persist_buckets) {
            if s <= *bound {
                add(bucket, 1);
            }
        }
        add(&self.persist_count, 1);
        add(&self.persist_sum_ns, took.as_nanos() as u64);
    }

    pub(super) fn snapshot(&self, took: Duration) {
        add(&self.snapshots, 1);
        add(&self.snapshot_sum_ns, took.as_nanos() as u64);
        self.snapshot_last_ns
            .store(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// One round of the driver's loop (a batch of inputs, its Readies, its
    /// fsync and apply) took `took`: how long the driver could not answer
    /// anything else.
    pub(super) fn busy(&self, took: Duration) {
        let s = took.as_secs_f64();
        for (bound, bucket) in STALL_BUCKETS_S.iter().zip(&self.stall_buckets) {
            if s <= *bound {
                add(bucket, 1);
            }
        }
        let ns = took.as_nanos() as u64;
        add(&self.stall_count, 1);
        add(&self.stall_sum_ns, ns);
        self.stall_max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// The longest round of the driver's loop so far.
    pub fn longest_stall(&self) -> Duration {
        Duration::from_nanos(self.stall_max_ns.load(Ordering::Relaxed))
    }

    pub(super) fn installed(&self) {
        add(&self.snapshots_installed, 1);
    }

    /// Snapshots received from a leader and installed since the driver started.
    pub fn snapshots_installed(&self) -> u64 {
        self.snapshots_installed.load(Ordering::Relaxed)
    }

    pub(super) fn disk_full(&self) {
        add(&self.disk_full_waits, 1);
    }

    /// Appends the counters in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let secs = |ns: u64| ns as f64 / 1e9;
        let _ = writeln!(
            out,
            "# HELP raft_proposals_total Entries proposed by clients on this node.\n\
             # TYPE raft_proposals_total counter\nraft_proposals_total {}",
            get(&self.proposals)
        );
        let name = "raft_persist_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} One Ready made durable: WAL write + fdatasync.\n# TYPE {name} histogram"
        );
        for (bound, bucket) in FSYNC_BUCKETS_S.iter().zip(&self.persist_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", get(bucket));
        }
        let count = get(&self.persist_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", secs(get(&self.persist_sum_ns)));
        let _ = writeln!(out, "{name}_count {count}");
        let name = "raft_driver_round_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} One round of the driver loop (inputs, Readies, fsync, apply): \
             while it runs the node answers nothing else.\n# TYPE {name} histogram"
        );
        for (bound, bucket) in STALL_BUCKETS_S.iter().zip(&self.stall_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", get(bucket));
        }
        let count = get(&self.stall_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", secs(get(&self.stall_sum_ns)));
        let _ = writeln!(out, "{name}_count {count}");
        let _ = writeln!(
            out,
            "# HELP raft_driver_longest_round_seconds The longest driver round since start.\n\
             # TYPE raft_driver_longest_round_seconds gauge\nraft_driver_longest_round_seconds {}",
            secs(get(&self.stall_max_ns))
        );
        let _ = writeln!(
            out,
            "# HELP raft_snapshots_total Snapshots taken by this node.\n\
             # TYPE raft_snapshots_total counter\nraft_snapshots_total {}\n\
             # HELP raft_snapshot_duration_seconds_total Time spent taking snapshots.\n\
             # TYPE raft_snapshot_duration_seconds_total counter\n\
             raft_snapshot_duration_seconds_total {}\n\
             # HELP raft_snapshot_last_duration_seconds Duration of the latest snapshot.\n\
             # TYPE raft_snapshot_last_duration_seconds gauge\n\
             raft_snapshot_last_duration_seconds {}\n\
             # HELP raft_snapshots_installed_total Snapshots received from a leader and installed.\n\
             # TYPE raft_snapshots_installed_total counter\nraft_snapshots_installed_total {}\n\
             # HELP raft_disk_full_total Times a persist found the disk full.\n\
             # TYPE raft_disk_full_total counter\nraft_disk_full_total {}",
            get(&self.snapshots),
            secs(get(&self.snapshot_sum_ns)),
            secs(get(&self.snapshot_last_ns)),
            get(&self.snapshots_installed),
            get(&self.disk_full_waits)
        );
    }
}
