//! ReadIndex bookkeeping (thesis 6.4): reads wait for a heartbeat round acknowledged by
//! a quorum, which proves the leader was still leader when the read arrived.

use std::collections::VecDeque;

use crate::ready::ReadState;

/// A read registered at `index`, confirmed once a quorum acknowledges `round`.
#[derive(Clone, Debug)]
struct PendingRead {
    round: u64,
    index: u64,
    ctx: Vec<u8>,
}

/// The leader's pending linearizable reads.
#[derive(Clone, Debug, Default)]
pub struct ReadOnly {
    /// Latest round number handed out (rounds only grow during a node's life).
    round: u64,
    /// True if reads were registered under `round` and no heartbeat carried it yet.
    round_unsent: bool,
    pending: VecDeque<PendingRead>,
    /// Reads received before the leader committed an entry of its term.
    waiting_for_commit: Vec<Vec<u8>>,
}

impl ReadOnly {
    /// Latest round; heartbeats carry it.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Registers a read at commit index `index`. Returns its round.
    pub fn register(&mut self, index: u64, ctx: Vec<u8>) -> u64 {
        if !self.round_unsent {
            self.round += 1;
            self.round_unsent = true;
        }
        self.pending.push_back(PendingRead {
            round: self.round,
            index,
            ctx,
        });
        self.round
    }

    /// True if a heartbeat must go out to confirm new reads; clears the flag.
    pub fn take_round_to_send(&mut self) -> bool {
        std::mem::take(&mut self.round_unsent)
    }

    /// Parks a read until the leader commits an entry in its term.
    pub fn park(&mut self, ctx: Vec<u8>) {
        self.waiting_for_commit.push(ctx);
    }

    /// Takes the parked reads.
    pub fn take_parked(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.waiting_for_commit)
    }

    /// Releases every read whose round a quorum has confirmed.
    pub fn confirm(&mut self, confirmed_round: u64, out: &mut Vec<ReadState>) {
        while self
            .pending
            .front()
            .is_some_and(|r| r.round <= confirmed_round)
        {
            if let Some(r) = self.pending.pop_front() {
                out.push(ReadState {
                    index: r.index,
                    ctx: r.ctx,
                });
            }
        }
    }

    /// Drops every pending read (leadership lost). Returns how many were dropped.
    pub fn reset(&mut self) -> usize {
        let dropped = self.pending.len() + self.waiting_for_commit.len();
        self.pending.clear();
        self.waiting_for_commit.clear();
        self.round_unsent = false;
        dropped
    }

    /// Number of reads not yet confirmed.
    pub fn pending_count(&self) -> usize {
        self.pending.len() + self.waiting_for_commit.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_released_in_round_order() {
        let mut ro = ReadOnly::default();
        let r1 = ro.register(5, b"a".to_vec());
        let r1b = ro.register(5, b"b".to_vec());
        assert_eq!(r1, r1b, "reads between two heartbeats share a round");
        assert!(ro.take_round_to_send());
        let r2 = ro.register(7, b"c".to_vec());
        assert!(r2 > r1);
        let mut out = Vec::new();
        ro.confirm(r1, &mut out);
        assert_eq!(out.len(), 2);
        ro.confirm(r1, &mut out);
        assert_eq!(out.len(), 2);
        ro.confirm(r2, &mut out);
        assert_eq!(
            out[2],
            ReadState {
                index: 7,
                ctx: b"c".to_vec()
            }
        );
    }
}
