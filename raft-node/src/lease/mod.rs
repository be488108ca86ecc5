//! The leader's lessor: when leases expire.
//!
//! Which leases exist is replicated state (the MVCC store); when one expires
//! is decided only by the leader, with its monotonic clock, and applied
//! through the log as a revoke, so every member deletes the same keys at the
//! same revision. A node that becomes leader gives every lease its full TTL
//! from then on (etcd's rule), so a leader change never expires a lease its
//! client kept alive: the client's keep-alives reach the new leader within
//! a TTL. After a restart or a snapshot install the same rule applies: a
//! lease's remaining time is not persisted, only its granted TTL, and the
//! next leader counts the full TTL again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft_core::Role;

use crate::driver::DriverHandle;

/// How often the leader looks for expired leases.
pub const CHECK_EVERY: Duration = Duration::from_millis(200);

#[derive(Default)]
struct State {
    /// The term this node leads in, while it leads.
    leading_term: Option<u64>,
    /// When each lease expires (leader only).
    expiry: HashMap<i64, Instant>,
    /// Leases whose revoke is in flight.
    revoking: HashSet<i64>,
}

/// Lease expiry on one node (active only while it leads).
pub struct Lessor {
    me: u64,
    driver: DriverHandle,
    state: Mutex<State>,
}

impl Lessor {
    /// The lessor of node `me`.
    pub fn new(me: u64, driver: DriverHandle) -> Self {
        Lessor {
            me,
            driver,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the expiry table up to date with the driver's status and
    /// view; returns whether this node leads.
    fn refresh(&self, state: &mut State, now: Instant) -> bool {
        let status = self.driver.status();
        if status.role != Some(Role::Leader) || status.leader != Some(self.me) {
            state.leading_term = None;
            state.expiry.clear();
            return false;
        }
        if state.leading_term != Some(status.term) {
            // A new leadership: every lease gets its full TTL from now.
            state.leading_term = Some(status.term);
            state.expiry.clear();
        }
        let view = self.driver.store();
        for (id, lease) in view.leases() {
            state
                .expiry
                .entry(id)
                .or_insert_with(|| now + ttl_duration(lease.ttl));
        }
        state.expiry.retain(|id, _| view.lease(*id).is_some());
        state.revoking.retain(|id| view.lease(*id).is_some());
        true
    }

    /// The leases to revoke now (each handed out once until [`Lessor::revoked`]).
    pub fn expired(&self) -> Vec<i64> {
        let now = Instant::now();
        let mut state = self.state();
        if !self.refresh(&mut state, now) {
            return Vec::new();
        }
        let due: Vec<i64> = state
            .expiry
            .iter()
            .filter(|(id, at)| **at <= now && !state.revoking.contains(id))
            .map(|(&id, _)| id)
            .collect();
        state.revoking.extend(&due);
        due
    }

    /// The revoke of `id` finished (or failed: it is retried if still due).
    pub fn revoked(&self, id: i64) {
        self.state().revoking.remove(&id);
    }

    /// Renews lease `id` for its full TTL. `None` if this node does not
    /// lead; `Some(0)` if the lease does not exist.
    pub fn keep_alive(&self, id: i64) -> Option<i64> {
        let now = Instant::now();
        let mut state = self.state();
        if !self.refresh(&mut state, now) {
            return None;
        }
        let Some(ttl) = self.driver.store().lease(id).map(|l| l.ttl) else {
            return Some(0);
        };
        state.expiry.insert(id, now + ttl_duration(ttl));
        Some(ttl)
    }

    /// Seconds until lease `id` expires. `None` if this node does not lead;
    /// `Some(-1)` if the lease does not exist.
    pub fn remaining(&self, id: i64) -> Option<i64> {
        let now = Instant::now();
        let mut state = self.state();
        if !self.refresh(&mut state, now) {
            return None;
        }
        Some(
            state
                .expiry
                .get(&id)
                .map_or(-1, |at| at.saturating_duration_since(now).as_secs() as i64),
        )
    }
}

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

/// Revokes expired leases while this node leads, until the process ends.
pub async fn run(lessor: Arc<Lessor>, api: Arc<crate::api::EtcdApi>) {
    use crate::api::pb::etcdserverpb::LeaseRevokeRequest;
    use crate::api::pb::raftnodepb::internal_request::Request as Internal;
    use crate::mvcc::Command;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        for id in lessor.expired() {
            let lessor = lessor.clone();
            let api = api.clone();
            tokio::spawn(async move {
                tracing::info!(lease = id, "lease expired: revoking");
                let revoke = Command(Internal::LeaseRevoke(LeaseRevokeRequest { id }));
                match api.write(revoke).await {
                    Ok(_) => api.watch_metrics.count_lease_expiration(),
                    Err(e) => {
                        tracing::warn!(lease = id, error = %e, "revoking an expired lease failed; will retry")
                    }
                }
                lessor.revoked(id);
            });
        }
    }
}
