//! The process-level fault suite: real `raft-node serve` processes on
//! 127.0.0.1..N, iptables partitions and packet loss, SIGKILL, SIGSTOP,
//! leadership transfers and membership changes, with concurrent clients whose
//! history is checked for linearizability (see `raft_tests::suite`).
//!
//! - `fault_suite_short` (part of `cargo test --workspace`): a 3-node and a
//!   5-node run cycling through several nemeses, about two minutes.
//! - `fault_suite_long`: only with `RAFT_FAULTS_LONG=1`; each nemesis alone for
//!   `RAFT_FAULTS_SECS` (default 120) per seed and cluster size. See
//!   `tests/README.md` for every variable.
//!
//! Both run with client TLS on: the nodes' client ports speak TLS only and
//! require a client certificate (`client_cert_auth = true`), from the
//! cluster CA that `raft-node certs` makes, and every client of the suite
//! (`/v1` HTTPS and etcd gRPC clients, status pollers, nemeses, probes,
//! final reads, the watch checker) presents one. `RAFT_FAULTS_CLIENT_TLS=0`
//! runs them over plain HTTP instead.
//!
//! Network nemeses need root and iptables; without them they are skipped with
//! a printed reason and the others still run.

use std::io::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use raft_tests::cluster::{node_binary, target_dir};
use raft_tests::nemesis::{firewall, install_interrupt_cleanup, Firewall, Nemesis};
use raft_tests::suite::{run, ExclusiveRun, RunConfig, RunOutcome};

/// Runs share the 127.0.0.N addresses and the iptables chain: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// Client TLS on the client ports: on unless `RAFT_FAULTS_CLIENT_TLS=0`.
fn client_tls() -> bool {
    match std::env::var("RAFT_FAULTS_CLIENT_TLS") {
        Err(_) => true,
        Ok(v) => match v.trim() {
            "0" | "false" | "off" => false,
            "1" | "true" | "on" | "" => true,
            other => panic!("RAFT_FAULTS_CLIENT_TLS={other:?}: 1 (default) or 0"),
        },
    }
}

/// Lease reads in the long runs: only with `RAFT_FAULTS_LEASE_READS=1`.
fn lease_reads() -> bool {
    match std::env::var("RAFT_FAULTS_LEASE_READS") {
        Err(_) => false,
        Ok(v) => match v.trim() {
            "0" | "false" | "off" | "" => false,
            "1" | "true" | "on" => true,
            other => panic!("RAFT_FAULTS_LEASE_READS={other:?}: 0 (default) or 1"),
        },
    }
}

/// The lock comes first so that it is released last (after the firewall).
fn setup() -> (ExclusiveRun, std::path::PathBuf, Option<Firewall>) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RAFT_FAULTS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_test_writer()
        .try_init();
    install_interrupt_cleanup();
    let exclusive = ExclusiveRun::acquire().unwrap_or_else(|e| panic!("fault-suite lock: {e}"));
    let bin = node_binary().unwrap_or_else(|e| panic!("no raft-node binary: {e}"));
    let fw = match firewall::unavailable_reason() {
        None => Some(Firewall::install().unwrap_or_else(|e| panic!("iptables: {e}"))),
        Some(reason) => {
            eprintln!(
                "fault suite: SKIPPING the network nemeses (partitions, packet loss): {reason}"
            );
            None
        }
    };
    (exclusive, bin, fw)
}

fn usable(nemeses: &[Nemesis], fw: &Option<Firewall>, nodes: usize) -> Vec<Nemesis> {
    nemeses
        .iter()
        .copied()
        .filter(|n| n.supports(nodes) && (fw.is_some() || !n.needs_iptables()))
        .collect()
}

fn verdict(outcomes: &[(String, RunOutcome)]) {
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|(_, o)| !o.passed())
        .map(|(name, o)| {
            format!(
                "{name}: {}\n  artifacts (history.jsonl, node-*.log, events.log, failure.txt): {}\n  {}",
                o.summary(),
                o.dir.display(),
                o.errors.join("\n  ")
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} fault runs failed:\n{}",
        failed.len(),
        outcomes.len(),
        failed.join("\n")
    );
}

#[test]
fn fault_suite_short() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let (_exclusive, bin, fw) = setup();
    let seed = env_u64("RAFT_FAULTS_SEED").unwrap_or(7);
    let secs = env_u64("RAFT_FAULTS_SHORT_SECS").unwrap_or(30);
    // The 3-node run serves linearizable reads from the leader lease (its
    // nemeses stall, isolate and replace leaders: what a lease must survive);
    // the 5-node run confirms every read with a heartbeat round.
    let plans = [
        (
            "short3",
            3,
            true,
            vec![
                Nemesis::PartitionHalves,
                Nemesis::KillOne,
                Nemesis::IsolateLeader,
                Nemesis::StopLeader,
                Nemesis::PacketLoss,
                Nemesis::KillAll,
                Nemesis::Membership,
                Nemesis::TransferLeader,
            ],
        ),
        (
            "short5",
            5,
            false,
            vec![
                Nemesis::MajoritiesRing,
                Nemesis::Bridge,
                Nemesis::OneWayLoss,
                Nemesis::KillOne,
                Nemesis::Membership,
            ],
        ),
    ];
    let mut outcomes = Vec::new();
    for (name, nodes, lease_reads, nemeses) in plans {
        let nemeses = usable(&nemeses, &fw, nodes);
        let mut config = RunConfig::new(name, nodes, nemeses, seed + nodes as u64);
        config.cluster.client_tls = client_tls();
        config.cluster.lease_reads = lease_reads;
        config.duration = Duration::from_secs(secs);
        config.every_nemesis_once = true;
        config.quiet = (Duration::from_millis(1000), Duration::from_millis(2000));
        config.hold = (Duration::from_millis(1500), Duration::from_millis(3500));
        let outcome = run(&config, &bin, fw.as_ref());
        eprintln!("fault suite {name}: {}", outcome.summary());
        outcomes.push((name.to_string(), outcome));
    }
    eprintln!("fault suite (short): {:.1?} in total", started.elapsed());
    verdict(&outcomes);
}

#[test]
fn fault_suite_long() {
    if std::env::var("RAFT_FAULTS_LONG").as_deref() != Ok("1") {
        eprintln!(
            "fault_suite_long: skipped (set RAFT_FAULTS_LONG=1 to run it; see tests/README.md)"
        );
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (_exclusive, bin, fw) = setup();
    let secs = env_u64("RAFT_FAULTS_SECS").unwrap_or(120);
    let seeds = env_u64("RAFT_FAULTS_SEEDS").unwrap_or(2);
    let first_seed = env_u64("RAFT_FAULTS_SEED").unwrap_or(1);
    let nemeses: Vec<Nemesis> = match std::env::var("RAFT_FAULTS_NEMESES") {
        Ok(list) => list
            .split(',')
            .map(|n| Nemesis::parse(n).unwrap_or_else(|| panic!("unknown nemesis {n:?}")))
            .collect(),
        Err(_) => Nemesis::ALL.to_vec(),
    };
    let sizes: Vec<usize> = std::env::var("RAFT_FAULTS_NODES")
        .unwrap_or_else(|_| "3,5".into())
        .split(',')
        .map(|s| s.trim().parse().expect("RAFT_FAULTS_NODES: sizes like 3,5"))
        .collect();
    let summary_path = target_dir().join("fault-suite").join("summary.txt");
    let _ = std::fs::create_dir_all(summary_path.parent().expect("has a parent"));
    let mut outcomes = Vec::new();
    for nemesis in nemeses {
        for &nodes in &sizes {
            if usable(&[nemesis], &fw, nodes).is_empty() {
                eprintln!(
                    "fault suite: {} skipped on {nodes} nodes ({})",
                    nemesis.name(),
                    if nemesis.supports(nodes) {
                        "needs iptables"
                    } else {
                        "unsupported size"
                    }
                );
                continue;
            }
            for seed in first_seed..first_seed + seeds {
                let mut config = RunConfig::new(nemesis.name(), nodes, vec![nemesis], seed);
                config.cluster.client_tls = client_tls();
                config.cluster.lease_reads = lease_reads();
                config.duration = Duration::from_secs(secs);
                config.keep = std::env::var_os("RAFT_FAULTS_KEEP").is_some();
                let outcome = run(&config, &bin, fw.as_ref());
                let line = format!(
                    "{} {nodes}n seed {seed}: {}",
                    nemesis.name(),
                    outcome.summary()
                );
                eprintln!("fault suite: {line}");
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&summary_path)
                {
                    let _ = writeln!(f, "{line}");
                }
                outcomes.push((format!("{} {nodes}n seed {seed}", nemesis.name()), outcome));
            }
        }
    }
    verdict(&outcomes);
}
