//! Counters of the watch streams and leases of one node, rendered on
//! `/metrics` beside the Raft and request counters.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Watch and lease counters, shared by every stream of a node.
#[derive(Debug, Default)]
pub struct WatchMetrics {
    streams: AtomicI64,
    watchers: AtomicI64,
    slow_watchers: AtomicI64,
    events_sent: AtomicU64,
    lease_expirations: AtomicU64,
}

impl WatchMetrics {
    /// A stream opened (`1`) or closed (`-1`).
    pub fn add_streams(&self, n: i64) {
        self.streams.fetch_add(n, Ordering::Relaxed);
    }

    /// Watchers created (positive) or removed (negative).
    pub fn add_watchers(&self, n: i64) {
        self.watchers.fetch_add(n, Ordering::Relaxed);
    }

    /// Watchers whose stream waits for a client that is not reading
    /// (positive when the wait starts, negative when it ends).
    pub fn add_slow_watchers(&self, n: i64) {
        self.slow_watchers.fetch_add(n, Ordering::Relaxed);
    }

    /// Events handed to a client.
    pub fn add_events_sent(&self, n: u64) {
        self.events_sent.fetch_add(n, Ordering::Relaxed);
    }

    /// A lease this node (as leader) revoked because it expired.
    pub fn count_lease_expiration(&self) {
        self.lease_expirations.fetch_add(1, Ordering::Relaxed);
    }

    /// Watchers open now.
    pub fn watchers(&self) -> i64 {
        self.watchers.load(Ordering::Relaxed)
    }

    /// The Prometheus text lines of these counters, with `leases`, the
    /// number of leases in the store.
    pub fn render(&self, leases: usize, out: &mut String) {
        let mut line = |name: &str, kind: &str, help: &str, v: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        let get = |a: &AtomicI64| a.load(Ordering::Relaxed);
        let count = |a: &AtomicU64| i64::try_from(a.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        line(
            "etcd_watch_streams",
            "gauge",
            "Open watch streams.",
            get(&self.streams),
        );
        line(
            "etcd_watchers",
            "gauge",
            "Open watchers.",
            get(&self.watchers),
        );
        line(
            "etcd_slow_watchers",
            "gauge",
            "Watchers whose client is not reading (their stream's buffer is full).",
            get(&self.slow_watchers),
        );
        line(
            "etcd_watch_events_sent_total",
            "counter",
            "Events sent to watchers.",
            count(&self.events_sent),
        );
        line(
            "etcd_leases",
            "gauge",
            "Leases in the store.",
            i64::try_from(leases).unwrap_or(i64::MAX),
        );
        line(
            "etcd_lease_expirations_total",
            "counter",
            "Leases this node revoked, as leader, because they expired.",
            count(&self.lease_expirations),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter() {
        let m = WatchMetrics::default();
        m.add_streams(2);
        m.add_streams(-1);
        m.add_watchers(5);
        m.add_slow_watchers(3);
        m.add_events_sent(7);
        m.count_lease_expiration();
        let mut out = String::new();
        m.render(4, &mut out);
        for want in [
            "etcd_watch_streams 1\n",
            "etcd_watchers 5\n",
            "etcd_slow_watchers 3\n",
            "etcd_watch_events_sent_total 7\n",
            "etcd_leases 4\n",
            "etcd_lease_expirations_total 1\n",
        ] {
            assert!(out.contains(want), "{want:?} missing from {out}");
        }
    }
}
