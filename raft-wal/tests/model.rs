//! Property test: random sequences of append / hard state / truncate / compact /
//! sync / crash-and-reopen against an in-memory model. After every reopen the
//! WAL must hold the model's last synced state (plus, if the crash kept
//! unsynced bytes, some prefix of the unsynced changes).

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::{apply_to_wal, is_prefix_outcome, Model, Op};
use proptest::prelude::*;
use raft_wal::fault::{CrashMode, FaultFs};
use raft_wal::{HardState, Options, Wal};

#[derive(Debug, Clone)]
enum Action {
    Append {
        count: usize,
        len: usize,
        new_term: bool,
    },
    HardState {
        vote: Option<u64>,
    },
    Truncate {
        back: u64,
    },
    Compact {
        keep: u64,
    },
    Sync,
    Crash {
        keep_data: bool,
        keep_names: bool,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        6 => (1usize..12, 0usize..700, any::<bool>())
            .prop_map(|(count, len, t)| Action::Append { count, len, new_term: t && len % 5 == 0 }),
        1 => proptest::option::of(0u64..5).prop_map(|vote| Action::HardState { vote }),
        1 => (0u64..25).prop_map(|back| Action::Truncate { back }),
        1 => (0u64..40).prop_map(|keep| Action::Compact { keep }),
        3 => Just(Action::Sync),
        1 => (any::<bool>(), any::<bool>())
            .prop_map(|(keep_data, keep_names)| Action::Crash { keep_data, keep_names }),
    ]
}

fn run(actions: Vec<Action>, flush_threshold_bytes: usize) {
    let fs = FaultFs::new();
    let dir = PathBuf::from("/model");
    let options = Options {
        segment_size_bytes: 4096,
        flush_threshold_bytes,
        ..Options::default()
    };
    let open = |fs: &FaultFs| {
        Wal::open_with_fs(Arc::new(fs.clone()), &dir, options.clone()).expect("open")
    };
    let mut wal = open(&fs);
    let mut durable = Model::default();
    let mut inflight: Vec<Op> = Vec::new();
    let mut term = 1u64;
    let mut counter = 0u64;
    for (step, action) in actions.into_iter().enumerate() {
        let mut current = durable.clone();
        inflight.iter().for_each(|op| current.apply(op));
        let ops: Vec<Op> = match action {
            Action::Append {
                count,
                len,
                new_term,
            } => {
                if new_term {
                    term += 1;
                }
                (0..count)
                    .map(|_| {
                        counter += 1;
                        let mut data = vec![(counter % 256) as u8; len];
                        data.extend_from_slice(&counter.to_le_bytes());
                        Op::Append { term, data }
                    })
                    .collect()
            }
            Action::HardState { vote } => vec![Op::HardState(HardState {
                term,
                vote,
                commit: current.last() / 2,
            })],
            Action::Truncate { back } => {
                let from = current.last().saturating_sub(back).max(current.first);
                vec![Op::Truncate { from }]
            }
            Action::Compact { keep } => vec![Op::Compact {
                upto: (current.last() + 3)
                    .saturating_sub(keep)
                    .max(current.first - 1),
            }],
            Action::Sync => {
                wal.sync().expect("sync");
                inflight.drain(..).for_each(|op| durable.apply(&op));
                vec![]
            }
            Action::Crash {
                keep_data,
                keep_names,
            } => {
                drop(wal);
                let mode = CrashMode {
                    keep_unsynced_data: keep_data,
                    keep_unsynced_names: keep_names,
                };
                fs.crash(mode);
                wal = open(&fs);
                let got = Model::of(&wal);
                if keep_data {
                    assert!(
                        is_prefix_outcome(&got, &durable, &inflight),
                        "step {step}: after {mode:?} the WAL is not the synced state \
                         plus a prefix of the unsynced changes"
                    );
                } else {
                    assert_eq!(got, durable, "step {step}: after {mode:?}");
                }
                durable = got;
                inflight.clear();
                vec![]
            }
        };
        for op in ops {
            apply_to_wal(&mut wal, &op).expect("op");
            if let Op::Compact { .. } = op {
                inflight.drain(..).for_each(|o| durable.apply(&o));
                durable.apply(&op);
            } else {
                inflight.push(op);
            }
        }
        let mut current = durable.clone();
        inflight.iter().for_each(|op| current.apply(op));
        assert_eq!(
            Model::of(&wal),
            current,
            "step {step}: reads must see every change"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn wal_matches_model(actions in proptest::collection::vec(action(), 1..80)) {
        run(actions, 4 << 20);
    }

    #[test]
    fn wal_matches_model_with_early_flushes(actions in proptest::collection::vec(action(), 1..80)) {
        run(actions, 600);
    }
}

/// Cases per property: 512 by default, `WAL_PROPTEST_CASES` for a long soak.
fn cases() -> u32 {
    std::env::var("WAL_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}
