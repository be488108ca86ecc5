//! ReadIndex bookkeeping (thesis 6.4) and the leader lease (thesis 6.4.1).
//!
//! Every heartbeat broadcast is a numbered round. A read registered now waits for the
//! next round; once a quorum has echoed that round, the leader was still leader when
//! the read arrived and the read is released. The send time of the newest confirmed
//! round (its tick, and the driver's clock reading then) also starts the leader lease:
//! followers that echoed it refuse to vote for anyone else for an election timeout
//! after receiving it.

use std::collections::VecDeque;

use crate::ready::ReadState;

/// Rounds remembered for the lease; older unconfirmed rounds are forgotten.
const MAX_TRACKED_ROUNDS: usize = 64;

/// A read registered at `index`, confirmed once a quorum acknowledges `round`.
#[derive(Clone, Debug)]
struct PendingRead {
    round: u64,
    index: u64,
    ctx: Vec<u8>,
}

/// The leader's pending linearizable reads and heartbeat rounds.
#[derive(Clone, Debug, Default)]
pub struct ReadOnly {
    /// Last round sent (rounds only grow during a node's life).
    sent_round: u64,
    /// Reads wait for a round that has not been sent yet.
    round_wanted: bool,
    pending: VecDeque<PendingRead>,
    /// Reads received before the leader committed an entry of its term.
    parked: Vec<Vec<u8>>,
    /// Rounds sent and not yet confirmed, oldest first.
    sent_at: VecDeque<SentRound>,
    /// Highest round a quorum confirmed.
    confirmed: Option<SentRound>,
}

/// A heartbeat round and when it was sent.
#[derive(Clone, Copy, Debug)]
struct SentRound {
    round: u64,
    tick: u64,
    /// The driver's clock when the round was built (`None`: no reading yet). The
    /// messages leave later, so this is never after the real send time.
    clock_nanos: Option<u64>,
}

impl ReadOnly {
    /// Last round sent; this node's own acknowledgement.
    pub fn round(&self) -> u64 {
        self.sent_round
    }

    /// Registers a read at commit index `index`; it waits for the next round.
    pub fn register(&mut self, index: u64, ctx: Vec<u8>) {
        self.round_wanted = true;
        self.pending.push_back(PendingRead {
            round: self.sent_round + 1,
            index,
            ctx,
        });
    }

    /// True if a heartbeat should go out now to confirm waiting reads.
    pub fn round_wanted(&self) -> bool {
        self.round_wanted
    }

    /// Starts a new round sent at `now_tick` and clock reading `now_clock_nanos`;
    /// returns its number.
    pub fn next_round(&mut self, now_tick: u64, now_clock_nanos: Option<u64>) -> u64 {
        self.sent_round += 1;
        self.round_wanted = false;
        if self.sent_at.len() == MAX_TRACKED_ROUNDS {
            self.sent_at.pop_front();
        }
        self.sent_at.push_back(SentRound {
            round: self.sent_round,
            tick: now_tick,
            clock_nanos: now_clock_nanos,
        });
        self.sent_round
    }

    /// Parks a read until the leader commits an entry in its term.
    pub fn park(&mut self, ctx: Vec<u8>) {
        self.parked.push(ctx);
    }

    /// Takes the parked reads.
    pub fn take_parked(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.parked)
    }

    /// A quorum has echoed `round`: release the reads it covers and extend the lease.
    pub fn confirm(&mut self, round: u64, out: &mut Vec<ReadState>) {
        while let Some(&sent) = self.sent_at.front() {
            if sent.round > round {
                break;
            }
            self.sent_at.pop_front();
            self.confirmed = Some(sent);
        }
        while self.pending.front().is_some_and(|r| r.round <= round) {
            if let Some(r) = self.pending.pop_front() {
                out.push(ReadState {
                    index: r.index,
                    ctx: r.ctx,
                });
            }
        }
    }

    /// Tick at which the newest quorum-confirmed round was sent.
    pub fn lease_start_tick(&self) -> Option<u64> {
        self.confirmed.map(|s| s.tick)
    }

    /// The driver's clock reading when the newest quorum-confirmed round was sent.
    pub fn lease_start_clock_nanos(&self) -> Option<u64> {
        self.confirmed.and_then(|s| s.clock_nanos)
    }

    /// Drops every pending read and the lease (leadership lost).
    pub fn reset(&mut self) {
        self.pending.clear();
        self.parked.clear();
        self.sent_at.clear();
        self.confirmed = None;
        self.round_wanted = false;
    }

    /// Number of reads not yet confirmed.
    pub fn pending_count(&self) -> usize {
        self.pending.len() + self.parked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wait_for_the_next_round() {
        let mut ro = ReadOnly::default();
        ro.register(5, b"a".to_vec());
        ro.register(5, b"b".to_vec());
        assert!(ro.round_wanted());
        let mut out = Vec::new();
        ro.confirm(ro.round(), &mut out);
        assert!(
            out.is_empty(),
            "the current round was sent before the reads arrived"
        );
        let r1 = ro.next_round(10, Some(1_000));
        ro.register(7, b"c".to_vec());
        let r2 = ro.next_round(11, None);
        ro.confirm(r1, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(ro.lease_start_tick(), Some(10));
        assert_eq!(ro.lease_start_clock_nanos(), Some(1_000));
        ro.confirm(r2, &mut out);
        assert_eq!(
            out[2],
            ReadState {
                index: 7,
                ctx: b"c".to_vec()
            }
        );
        assert_eq!(ro.lease_start_tick(), Some(11));
        assert_eq!(ro.lease_start_clock_nanos(), None, "no clock, no lease");
        ro.reset();
        assert_eq!(ro.lease_start_tick(), None);
    }
}
