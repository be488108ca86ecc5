//! Deterministic simulation of a raft-core cluster. See the crate README.
//!
//! * `cargo test -p raft-core --test sim` runs the default seed sweep.
//! * `RAFT_SIM_SEED=1234 cargo test -p raft-core --test sim -- replay --nocapture` replays one seed
//!   with a trace (`RAFT_SIM_TRACE=0` to silence it).
//! * `RAFT_SIM_SEEDS=100000 cargo test --release -p raft-core --test sim -- sweep` soaks.

mod checker;
mod cluster;
mod network;
mod rng;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cluster::Sim;

const DEFAULT_SEEDS: u64 = 8_000;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn replay_command(seed: u64) -> String {
    format!("RAFT_SIM_SEED={seed} cargo test -p raft-core --test sim -- replay --nocapture")
}

#[test]
fn sweep() {
    let seeds = env_u64("RAFT_SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let first = env_u64("RAFT_SIM_FIRST_SEED").unwrap_or(0);
    let threads = env_u64("RAFT_SIM_THREADS")
        .map(|n| n.max(1) as usize)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .min(8)
        });
    let next = Arc::new(AtomicU64::new(first));
    let failures = Arc::new(Mutex::new(Vec::<(u64, String)>::new()));
    let totals = Arc::new(Mutex::new((0u64, 0u64, 0u64, 0u64, 0u64, 0u64)));
    let started = std::time::Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (next, failures, totals) = (next.clone(), failures.clone(), totals.clone());
            std::thread::spawn(move || loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= first + seeds {
                    return;
                }
                let outcome = std::panic::catch_unwind(|| Sim::new(seed, false).run())
                    .unwrap_or_else(|_| Err("panicked".to_string()));
                match outcome {
                    Ok(stats) => {
                        let mut t = totals.lock().unwrap();
                        t.0 += stats.acked_writes;
                        t.1 += stats.reads_served;
                        t.2 += stats.snapshots_sent;
                        t.3 += stats.conf_changes;
                        t.4 += stats.crashes;
                        t.5 += stats.trailing_appends;
                    }
                    Err(e) => failures.lock().unwrap().push((seed, e)),
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let t = *totals.lock().unwrap();
    eprintln!(
        "sim sweep: {seeds} seeds in {:.1}s; acked writes {}, reads {}, snapshots {}, appends from trailing entries {}, conf changes {}, crashes {}",
        started.elapsed().as_secs_f64(),
        t.0,
        t.1,
        t.2,
        t.5,
        t.3,
        t.4
    );
    if seeds >= 500 {
        // The sweep must reach the paths it is there for.
        assert!(t.2 > 0, "no snapshot was ever sent");
        assert!(t.5 > 0, "no append was ever served from trailing entries");
    }
    let mut failures = failures.lock().unwrap().clone();
    failures.sort();
    if let Some((seed, err)) = failures.first() {
        for (s, e) in failures.iter().take(10) {
            eprintln!("seed {s} failed: {e}");
        }
        panic!(
            "{} of {seeds} seeds failed; first: seed {seed}: {err}\nreplay with: {}",
            failures.len(),
            replay_command(*seed)
        );
    }
}

#[test]
fn replay() {
    let Some(seed) = env_u64("RAFT_SIM_SEED") else {
        return;
    };
    let trace = std::env::var("RAFT_SIM_TRACE")
        .map(|v| v != "0")
        .unwrap_or(true);
    let sim = Sim::new(seed, trace);
    eprintln!("seed {seed}: {:?}", sim.params());
    match sim.run() {
        Ok(stats) => eprintln!(
            "seed {seed} ok: {} acked writes, {} reads, {} elections, converged at {}ms",
            stats.acked_writes, stats.reads_served, stats.elections, stats.sim_ms
        ),
        Err(e) => panic!(
            "seed {seed} failed: {e}\nreplay with: {}",
            replay_command(seed)
        ),
    }
}

/// The simulation must be able to fail: a cluster whose leader forgets its durable vote
/// is caught. (Guards against a checker that silently accepts everything.)
#[test]
fn checker_catches_two_leaders_in_one_term() {
    let mut c = checker::Checker::default();
    c.leader_elected(5, 1).unwrap();
    assert!(c.leader_elected(5, 2).is_err());
    assert!(c.persisted_entry(1, 3, 2, 10).is_ok());
    assert!(c.persisted_entry(2, 3, 2, 11).is_err());
    assert!(c.applied(1, 4, 7).is_ok());
    assert!(c.applied(2, 4, 8).is_err());
}
