//! Runs the programs in `examples/` and checks what they computed.

#[allow(dead_code)]
#[path = "../examples/event_store.rs"]
mod event_store;

use std::collections::BTreeMap;

/// The balances `event_store::run` must reach, computed without a log.
fn expected(n: u64) -> BTreeMap<String, i64> {
    let accounts = ["alice", "bob", "carol"];
    let mut m = BTreeMap::new();
    for i in 1..=n {
        let amount = if i.is_multiple_of(4) {
            -(i as i64)
        } else {
            2 * i as i64
        };
        *m.entry(accounts[(i % 3) as usize].to_string()).or_default() += amount;
    }
    m
}

#[test]
fn event_store_checkpoints_compacts_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let b = event_store::run(dir.path(), 1_000).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.applied, 1_000);
    assert_eq!(b.by_account, expected(1_000));

    // Reopened: the checkpoint plus the events after it give the same state,
    // and the log holds fewer events than a checkpoint interval and a batch.
    let store = event_store::EventStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.balances(), &b);
    assert!(store.events_in_log() < 107, "{}", store.events_in_log());

    // A second run continues where the first stopped.
    drop(store);
    let b = event_store::run(dir.path(), 500).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.applied, 1_500);
    assert_eq!(b.by_account, expected(1_500));
}
