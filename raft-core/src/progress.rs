//! What the leader knows about one follower's log.

use crate::inflights::Inflights;

/// How the leader is sending to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Looking for the match point: one append at a time, waiting for its answer.
    Probe,
    /// Match found: appends are pipelined, up to the in-flight window.
    Replicate,
    /// Waiting for a snapshot to be installed.
    Snapshot,
}

/// Replication state of one peer, kept by the leader.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Highest index known to be replicated (and persisted) on the peer.
    pub match_index: u64,
    /// Next index to send.
    pub next_index: u64,
    /// Sending mode.
    pub state: ProgressState,
    /// In `Snapshot` state: the index of the snapshot being sent.
    pub pending_snapshot: u64,
    /// Leader ticks spent in `Snapshot` state; the leader re-probes after a timeout.
    pub snapshot_ticks: u32,
    /// In `Probe` state: an append is out and unanswered.
    pub probe_sent: bool,
    /// Heard from the peer since the last CheckQuorum round.
    pub recent_active: bool,
    /// Appends in flight.
    pub inflights: Inflights,
    /// Tag echoed by the peer; responses with another tag belong to an older incarnation
    /// of this progress (e.g. before the peer was removed and added back) and are ignored.
    pub tag: u64,
    /// Highest ReadIndex round the peer has confirmed.
    pub read_round_acked: u64,
    /// Highest commit index the peer is known to have learned: it answered a heartbeat
    /// that carried it.
    pub commit_acked: u64,
    /// A heartbeat round that carried `commit` to the peer and is not yet answered:
    /// `(round, commit)`. An answer to this round or a later one (later rounds carry no
    /// smaller commit) proves the peer learned `commit`.
    pub commit_probe: Option<(u64, u64)>,
}

impl Progress {
    /// A fresh progress probing from `next_index`.
    pub fn new(
        next_index: u64,
        tag: u64,
        max_inflight_msgs: usize,
        max_inflight_bytes: u64,
    ) -> Self {
        Progress {
            match_index: 0,
            next_index: next_index.max(1),
            state: ProgressState::Probe,
            pending_snapshot: 0,
            snapshot_ticks: 0,
            probe_sent: false,
            recent_active: false,
            inflights: Inflights::new(max_inflight_msgs, max_inflight_bytes),
            tag,
            read_round_acked: 0,
            commit_acked: 0,
            commit_probe: None,
        }
    }

    /// True when the leader must not send another append now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.is_full(),
            ProgressState::Snapshot => true,
        }
    }

    /// Switches to probing from `match_index + 1`.
    pub fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            // Resume after the snapshot if it was installed, else from the match point.
            self.next_index = (self.match_index + 1).max(self.pending_snapshot + 1);
            if self.match_index < self.pending_snapshot {
                self.next_index = self.match_index + 1;
            }
        } else {
            self.next_index = self.match_index + 1;
        }
        self.state = ProgressState::Probe;
        self.pending_snapshot = 0;
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// Switches to pipelining from `match_index + 1`.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.pending_snapshot = 0;
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// Switches to waiting for the snapshot at `snapshot_index`.
    pub fn become_snapshot(&mut self, snapshot_index: u64) {
        self.state = ProgressState::Snapshot;
        self.pending_snapshot = snapshot_index;
        self.snapshot_ticks = 0;
        self.probe_sent = false;
        self.inflights.reset();
    }

    /// Records that the peer holds entries up to `index`. Returns true if it is news.
    pub fn maybe_update(&mut self, index: u64) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        updated
    }

    /// Records an append covering `(next_index..=last_index)` just sent.
    pub fn sent_entries(&mut self, last_index: u64, bytes: u64) {
        match self.state {
            ProgressState::Replicate => {
                if last_index >= self.next_index {
                    self.inflights.add(last_index, bytes);
                    self.next_index = last_index + 1;
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => debug_assert!(false, "no appends while sending a snapshot"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_pauses_after_one_send() {
        let mut p = Progress::new(5, 1, 4, 1 << 20);
        assert!(!p.is_paused());
        p.sent_entries(6, 10);
        assert!(p.is_paused());
        assert_eq!(
            p.next_index, 5,
            "probe does not advance next optimistically"
        );
        assert!(p.maybe_update(6));
        assert!(!p.is_paused());
    }

    #[test]
    fn replicate_pipelines_until_window_full() {
        let mut p = Progress::new(1, 1, 2, 1 << 20);
        p.maybe_update(3);
        p.become_replicate();
        assert_eq!(p.next_index, 4);
        p.sent_entries(5, 10);
        p.sent_entries(7, 10);
        assert_eq!(p.next_index, 8);
        assert!(p.is_paused());
        p.maybe_update(5);
        p.inflights.free_to(5);
        assert!(!p.is_paused());
    }

    #[test]
    fn snapshot_then_probe_resumes_after_snapshot() {
        let mut p = Progress::new(1, 1, 2, 1 << 20);
        p.become_snapshot(50);
        assert!(p.is_paused());
        p.maybe_update(50);
        p.become_probe();
        assert_eq!(p.next_index, 51);
        let mut q = Progress::new(1, 1, 2, 1 << 20);
        q.maybe_update(3);
        q.become_snapshot(50);
        q.become_probe();
        assert_eq!(q.next_index, 4, "snapshot not confirmed: resume from match");
    }
}
