//! Counters of the client API and the rendering of `/metrics` (Prometheus text format).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::driver::{ClientError, NodeStatus, WriteOutcome};

/// Outcome classes counted per request kind.
const OUTCOMES: [&str; 7] = [
    "ok",
    "not_leader",
    "timeout",
    "not_applied",
    "busy",
    "invalid",
    "failed",
];

fn class(e: &ClientError) -> usize {
    match e {
        ClientError::NotLeader { .. } => 1,
        ClientError::Timeout => 2,
        ClientError::Overwritten => 3,
        ClientError::Busy(_) => 4,
        ClientError::Invalid(_) => 5,
        ClientError::DiskFull | ClientError::Stopped(_) => 6,
    }
}

/// Extra metric lines appended by other parts of the node (e.g. the transport).
pub type ExtraMetrics = Arc<dyn Fn(&mut String) + Send + Sync>;

/// Request counters of one node.
#[derive(Default)]
pub struct Metrics {
    writes: [AtomicU64; OUTCOMES.len()],
    reads: [AtomicU64; OUTCOMES.len()],
    extra: Option<ExtraMetrics>,
}

impl Metrics {
    /// Counters that also render `extra` lines.
    pub fn with_extra(extra: ExtraMetrics) -> Self {
        Metrics {
            extra: Some(extra),
            ..Metrics::default()
        }
    }

    /// Counts a write's outcome.
    pub fn count_write(&self, r: &Result<WriteOutcome, ClientError>) {
        let i = r.as_ref().err().map_or(0, class);
        self.writes[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a read's outcome.
    pub fn count_read<T>(&self, r: &Result<T, ClientError>) {
        let i = r.as_ref().err().map_or(0, class);
        self.reads[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition for `status` and these counters.
    pub fn render(&self, s: &NodeStatus) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(&mut out, "raft_term", "Current term.", s.term);
        gauge(&mut out, "raft_commit_index", "Commit index.", s.commit);
        gauge(&mut out, "raft_applied_index", "Applied index.", s.applied);
        gauge(&mut out, "raft_last_index", "Last log index.", s.last_index);
        gauge(
            &mut out,
            "raft_snapshot_index",
            "Index of the latest snapshot.",
            s.snapshot_index,
        );
        let leader = u64::from(s.role == Some(raft_core::Role::Leader));
        gauge(&mut out, "raft_is_leader", "1 if this node leads.", leader);
        gauge(
            &mut out,
            "raft_voters",
            "Voters in the configuration.",
            s.voters.len() as u64,
        );
        gauge(
            &mut out,
            "kv_keys",
            "Keys in the state machine.",
            s.keys as u64,
        );
        for (name, counters) in [
            ("kv_writes_total", &self.writes),
            ("kv_reads_total", &self.reads),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} Client requests by outcome.\n# TYPE {name} counter"
            );
            for (outcome, c) in OUTCOMES.iter().zip(counters.iter()) {
                let _ = writeln!(
                    out,
                    "{name}{{outcome=\"{outcome}\"}} {}",
                    c.load(Ordering::Relaxed)
                );
            }
        }
        if let Some(extra) = &self.extra {
            extra(&mut out);
        }
        out
    }
}
