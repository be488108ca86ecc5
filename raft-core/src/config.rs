//! Tunables of one node.

use crate::entry::NodeId;
use crate::error::{Error, Result};

/// The largest relative rate difference between any node's clock and real time that
/// the leader lease tolerates, in parts per million (see
/// [`RawNode::set_clock`](crate::RawNode::set_clock)).
pub const MAX_CLOCK_DRIFT_PPM: u64 = 10_000;

/// Configuration of one node. Times are in ticks of the driver's clock.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// Base election timeout; the effective one is random in `[t, 2t)`.
    pub election_timeout_ticks: u32,
    /// Leader heartbeat period; must be below the election timeout.
    pub heartbeat_interval_ticks: u32,
    /// Upper bound of entry bytes per append message (one entry is always allowed).
    pub max_size_per_msg_bytes: u64,
    /// Max append messages in flight per follower in `Replicate` state.
    pub max_inflight_msgs: usize,
    /// Max entry bytes in flight per follower.
    pub max_inflight_bytes: u64,
    /// Leader refuses proposals once this many entry bytes are uncommitted
    /// (a single proposal is always accepted when nothing is uncommitted).
    pub max_uncommitted_entries_bytes: u64,
    /// Max bytes of committed entries handed out in one `Ready`.
    pub max_committed_bytes_per_ready: u64,
    /// Run a PreVote round before a real election (thesis 9.6).
    pub pre_vote: bool,
    /// Leader steps down if it has not heard from a quorum within an election timeout,
    /// and followers ignore vote requests while they hear from a leader.
    pub check_quorum: bool,
    /// Serve reads from the leader lease (thesis 6.4.1) instead of waiting for a heartbeat
    /// round: a read is answered at once if a quorum echoed a heartbeat sent recently
    /// enough, measured both in ticks and on the driver's monotonic clock (see
    /// [`RawNode::set_clock`](crate::RawNode::set_clock) for the exact bound and the
    /// clock-drift assumption). Ticks alone do not do: a driver that stalls drops the
    /// ticks it missed, so a stalled leader would undercount the time that passed.
    /// Needs `check_quorum` and `tick_interval_nanos`; off by default.
    pub lease_reads: bool,
    /// The real duration of one tick as the driver schedules it, in nanoseconds of the
    /// clock it passes to [`RawNode::set_clock`](crate::RawNode::set_clock). The driver
    /// must never deliver two ticks less than this apart on average (it may deliver
    /// fewer, e.g. drop ticks it missed). Only used to bound the leader lease; 0: not
    /// known (allowed only without `lease_reads`).
    pub tick_interval_nanos: u64,
    /// Index the state machine has applied (on restart).
    pub applied_index: u64,
    /// Seed of the election-timeout randomness.
    pub seed: u64,
}

impl Config {
    /// Defaults for node `id`: election 10 ticks, heartbeat 1 tick, PreVote and CheckQuorum on.
    pub fn new(id: NodeId) -> Self {
        Config {
            id,
            election_timeout_ticks: 10,
            heartbeat_interval_ticks: 1,
            max_size_per_msg_bytes: 1 << 20,
            max_inflight_msgs: 256,
            max_inflight_bytes: 32 << 20,
            max_uncommitted_entries_bytes: 64 << 20,
            max_committed_bytes_per_ready: 64 << 20,
            pre_vote: true,
            check_quorum: true,
            lease_reads: false,
            tick_interval_nanos: 0,
            applied_index: 0,
            seed: id,
        }
    }

    /// Checks the values against each other.
    pub fn validate(&self) -> Result<()> {
        if self.id == 0 {
            return Err(Error::InvalidConfig("id must be non-zero"));
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err(Error::InvalidConfig(
                "heartbeat_interval_ticks must be positive",
            ));
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return Err(Error::InvalidConfig(
                "election_timeout_ticks must exceed heartbeat_interval_ticks",
            ));
        }
        if self.max_inflight_msgs == 0 || self.max_inflight_bytes == 0 {
            return Err(Error::InvalidConfig("in-flight limits must be positive"));
        }
        if self.lease_reads && !self.check_quorum {
            return Err(Error::InvalidConfig("lease_reads needs check_quorum"));
        }
        if self.lease_reads && self.tick_interval_nanos == 0 {
            return Err(Error::InvalidConfig(
                "lease_reads needs tick_interval_nanos (the lease is measured on a clock)",
            ));
        }
        Ok(())
    }
}
