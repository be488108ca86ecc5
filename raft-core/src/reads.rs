//! Linearizable reads: ReadIndex (thesis 6.4) and, optionally, the leader lease (6.4.1).

use crate::error::{Error, Result};
use crate::raw_node::RawNode;
use crate::ready::{ReadState, Role};
use crate::storage::Storage;

/// Ticks of margin subtracted from the lease for the phase of tick clocks.
const LEASE_MARGIN_TICKS: u64 = 2;

impl<S: Storage> RawNode<S> {
    /// Requests a linearizable read. When confirmed, a [`ReadState`] with `ctx` appears in
    /// a Ready; the read may be served once the state machine has applied its index.
    /// Reads wait until the leader has committed an entry of its own term. Reads pending
    /// when leadership is lost are dropped (the driver times them out and retries).
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<()> {
        self.debug_check_not_in_ready();
        self.check_failure()?;
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: self.leader_id,
            });
        }
        if self.log.term(self.log.committed) != Ok(self.term) {
            self.read_only.park(ctx);
            return Ok(());
        }
        self.register_read(ctx);
        Ok(())
    }

    fn register_read(&mut self, ctx: Vec<u8>) {
        let index = self.log.committed;
        if self.lease_valid() {
            self.read_states.push(ReadState { index, ctx });
            return;
        }
        self.read_only.register(index, ctx);
    }

    /// With `lease_reads`: a quorum echoed a heartbeat sent less than an election timeout
    /// (minus a margin) ago, so no other leader can exist yet. Never during a transfer.
    /// Measured on the driver's clock (see [`RawNode::set_clock`] for the bound) and, as
    /// a second check, in ticks; without a clock reading there is no lease.
    fn lease_valid(&self) -> bool {
        if !self.cfg.lease_reads || self.lease_revoked || self.lead_transferee.is_some() {
            return false;
        }
        let Some(start) = self.read_only.lease_start_tick() else {
            return false;
        };
        let timeout = self.cfg.election_timeout_ticks as u64;
        if self.ticks + LEASE_MARGIN_TICKS >= start + timeout {
            return false;
        }
        let (Some(sent), Some(now)) = (self.read_only.lease_start_clock_nanos(), self.clock_nanos)
        else {
            return false;
        };
        now < sent.saturating_add(self.lease_nanos())
    }

    /// Length of the lease on the driver's clock.
    fn lease_nanos(&self) -> u64 {
        let ticks = (self.cfg.election_timeout_ticks as u64).saturating_sub(1 + LEASE_MARGIN_TICKS);
        let nanos = ticks as u128 * self.cfg.tick_interval_nanos as u128;
        let factor = 1_000_000 - 2 * crate::config::MAX_CLOCK_DRIFT_PPM as u128;
        (nanos * factor / 1_000_000).min(u64::MAX as u128) as u64
    }

    /// Called on the first commit of the leader's term.
    pub(crate) fn release_parked_reads(&mut self) {
        for ctx in self.read_only.take_parked() {
            self.register_read(ctx);
        }
    }

    /// Releases reads whose round a quorum of voters has acknowledged.
    pub(crate) fn confirm_reads(&mut self) {
        let me = self.id;
        let own_round = self.read_only.round();
        let confirmed = self.quorum_index(|id| {
            if id == me {
                Some(own_round)
            } else {
                self.progress.get(&id).map(|p| p.read_round_acked)
            }
        });
        self.read_only.confirm(confirmed, &mut self.read_states);
    }
}
