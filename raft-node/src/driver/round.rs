//! Where the time of one driver round went, so that a slow round leaves a
//! log line that names its cause (a long fsync, a large apply, an install,
//! freeing an old state...) rather than only a figure in `/metrics`.

use std::time::{Duration, Instant};

/// A round at least this long is logged with its breakdown.
const SLOW_ROUND: Duration = Duration::from_millis(250);

/// The parts of a round, in the order the loop runs them.
#[derive(Clone, Copy, Debug)]
pub(super) enum Phase {
    /// Stepping peer messages and client requests into the core, ticking.
    Inputs,
    /// Building Readies and sending their messages.
    Ready,
    /// Writing and syncing the WAL (and a received snapshot's marker).
    Persist,
    /// Swapping in a received snapshot's state.
    Install,
    /// Applying committed entries to the state machine.
    Apply,
    /// Publishing the new view to readers and answering reads.
    Publish,
    /// Snapshot bookkeeping and the node status.
    Snapshot,
}

const PHASES: usize = 7;

/// Time spent per [`Phase`] in the current round.
pub(super) struct RoundTimes {
    last: Instant,
    spent: [Duration; PHASES],
    /// Committed entries applied this round.
    pub(super) applied: usize,
}

impl RoundTimes {
    /// Starts timing a round that began at `started`.
    pub(super) fn start(started: Instant) -> RoundTimes {
        RoundTimes {
            last: started,
            spent: [Duration::ZERO; PHASES],
            applied: 0,
        }
    }

    /// Charges the time since the previous mark to `phase`.
    pub(super) fn mark(&mut self, phase: Phase) {
        let now = Instant::now();
        self.spent[phase as usize] += now - self.last;
        self.last = now;
    }

    /// Logs the breakdown if the round, `total` long, was slow.
    pub(super) fn report(&self, node: u64, total: Duration) {
        if total < SLOW_ROUND {
            return;
        }
        let ms = |p: Phase| self.spent[p as usize].as_millis() as u64;
        tracing::warn!(
            node,
            round_ms = total.as_millis() as u64,
            inputs_ms = ms(Phase::Inputs),
            ready_ms = ms(Phase::Ready),
            persist_ms = ms(Phase::Persist),
            install_ms = ms(Phase::Install),
            apply_ms = ms(Phase::Apply),
            applied = self.applied,
            publish_ms = ms(Phase::Publish),
            snapshot_ms = ms(Phase::Snapshot),
            "slow driver round: the node answered nothing else meanwhile"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_charged_to_the_phase_marked_after_it() {
        let started = Instant::now();
        let mut t = RoundTimes::start(started);
        std::thread::sleep(Duration::from_millis(20));
        t.mark(Phase::Apply);
        t.mark(Phase::Persist);
        assert!(t.spent[Phase::Apply as usize] >= Duration::from_millis(20));
        assert!(t.spent[Phase::Persist as usize] < Duration::from_millis(20));
        assert_eq!(t.spent[Phase::Install as usize], Duration::ZERO);
    }
}
