//! A simple in-memory model of the WAL, shared by the fault and property tests.
#![allow(dead_code)]

use raft_wal::{HardState, Wal};

/// One change a test makes to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Append { term: u64, data: Vec<u8> },
    HardState(HardState),
    Truncate { from: u64 },
    Compact { upto: u64 },
}

/// The whole observable state of a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Model {
    pub first: u64,
    pub entries: Vec<(u64, Vec<u8>)>,
    pub hard_state: HardState,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let terms: Vec<String> = self
            .entries
            .iter()
            .map(|(t, d)| format!("t{t}/{}b", d.len()))
            .collect();
        write!(
            f,
            "Model {{ first: {}, last: {}, hs: {:?}, entries: [{}] }}",
            self.first,
            self.last(),
            self.hard_state,
            terms.join(" ")
        )
    }
}

impl Default for Model {
    fn default() -> Model {
        Model {
            first: 1,
            entries: Vec::new(),
            hard_state: HardState::default(),
        }
    }
}

impl Model {
    pub fn last(&self) -> u64 {
        self.first + self.entries.len() as u64 - 1
    }

    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Append { term, data } => self.entries.push((*term, data.clone())),
            Op::HardState(hs) => self.hard_state = *hs,
            Op::Truncate { from } => {
                let keep = (from - self.first) as usize;
                self.entries.truncate(keep);
            }
            Op::Compact { upto } => {
                if *upto >= self.first {
                    let drop = ((upto + 1 - self.first) as usize).min(self.entries.len());
                    self.entries.drain(..drop);
                    self.first = upto + 1;
                }
            }
        }
    }

    /// Reads the model back out of a WAL.
    pub fn of(wal: &Wal) -> Model {
        let (first, last) = (wal.first_index(), wal.last_index());
        let mut entries = Vec::new();
        let mut next = first;
        while next <= last {
            let batch = wal
                .entries(next, last + 1, 1 << 20)
                .unwrap_or_else(|e| panic!("read back {next}..={last} of {wal:?}: {e}"));
            for e in batch {
                assert_eq!(e.index, next);
                entries.push((e.term, e.data));
                next += 1;
            }
        }
        Model {
            first,
            entries,
            hard_state: wal.hard_state(),
        }
    }
}

/// Performs `op` on the WAL (compaction syncs; the rest is buffered).
pub fn apply_to_wal(wal: &mut Wal, op: &Op) -> raft_wal::Result<()> {
    match op {
        Op::Append { term, data } => wal.append(wal.last_index() + 1, *term, data),
        Op::HardState(hs) => wal.set_hard_state(*hs),
        Op::Truncate { from } => wal.truncate_suffix(*from),
        Op::Compact { upto } => wal.compact_prefix(*upto),
    }
}

/// True if `got` is `durable` with some prefix of `inflight` applied: what a
/// crash may leave of a batch that was being written.
pub fn is_prefix_outcome(got: &Model, durable: &Model, inflight: &[Op]) -> bool {
    let mut m = durable.clone();
    if *got == m {
        return true;
    }
    for op in inflight {
        m.apply(op);
        if *got == m {
            return true;
        }
    }
    false
}
