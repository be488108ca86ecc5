//! One fault-suite run: start a cluster, run concurrent recording clients
//! against random nodes while a nemesis injects and heals faults, then heal
//! everything and check.
//!
//! Checks of a run (any failure is listed in [`RunOutcome::errors`]):
//!
//! 1. The history (every client operation, the probe writes and the final
//!    reads of every key) is linearizable per key
//!    ([`crate::linearizability`]); an undecided key counts as a failure.
//!    The final linearizable reads after healing make a lost acknowledged
//!    write a linearizability violation.
//! 2. At most one node claims leadership per term (`/v1/status` of every node
//!    is polled every ~50 ms during the whole run).
//! 3. After every heal the cluster accepts a write within
//!    [`RunConfig::write_within`] (15 s).
//! 4. After the final heal every node reports the same applied index and
//!    digest, no node reports `failed`, every node is a voter again.
//! 5. No node exits on its own, and every node exits 0 on `SIGTERM` at the end.
//! 6. With client TLS ([`ClusterOptions::client_tls`], on by default here):
//!    every client URL is `https://`, and once the cluster is up a node
//!    refuses plain HTTP and a TLS client without a certificate (so the
//!    workload, which gets through, really speaks TLS with a client
//!    certificate).
//!
//! Every client of the run (the `/v1` clients, the gRPC clients, the
//! status pollers, the nemeses' admin requests, the probes, the final reads
//! and the watch checker) uses the cluster's CA and client certificate when
//! client TLS is on.
//!
//! On failure the run directory keeps `history.jsonl`, `node-<id>.log`
//! (stderr of every incarnation, `RUST_LOG=info`), `events.log` (the
//! nemesis's actions), `leaders.txt` and `failure.txt` (every error and the
//! shrunk failing history of every non-linearizable key).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::client::{Api, Counts, NodeStatus, Outcome, Recording};
use crate::cluster::{ClientTls, Cluster, ClusterOptions};
use crate::grpc_client::GrpcClients;
use crate::linearizability::{check_history, CheckConfig, Input, Output, Value, Verdict};
use crate::nemesis::{statuses, Ctx, Firewall, Nemesis};

/// What to run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Names the run directory.
    pub name: String,
    /// Cluster size, node timing and client TLS.
    pub cluster: ClusterOptions,
    /// Nemeses, applied in a seeded shuffled order, cycling.
    pub nemeses: Vec<Nemesis>,
    /// How long clients run (faults are injected only within it).
    pub duration: Duration,
    /// Seed of every random choice of the run.
    pub seed: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys in use at a time.
    pub keys: usize,
    /// Operations on one key before its slot moves to a fresh key (bounds
    /// the checker's work per key).
    pub ops_per_key: u64,
    /// Healthy time before each fault (random within).
    pub quiet: (Duration, Duration),
    /// How long each fault is held (random within).
    pub hold: (Duration, Duration),
    /// A write must succeed within this long after every heal.
    pub write_within: Duration,
    /// Limit for convergence after the final heal.
    pub settle_timeout: Duration,
    /// Keep injecting faults past `duration` until every nemesis of the list
    /// was applied once.
    pub every_nemesis_once: bool,
    /// Where run directories are created.
    pub base_dir: PathBuf,
    /// Keep the run directory even when the run passes.
    pub keep: bool,
}

impl RunConfig {
    /// Defaults for a run of `nemeses` on `nodes` nodes, with client TLS
    /// and client certificates on.
    pub fn new(name: &str, nodes: usize, nemeses: Vec<Nemesis>, seed: u64) -> Self {
        RunConfig {
            name: name.to_string(),
            cluster: ClusterOptions {
                client_tls: true,
                ..ClusterOptions::for_tests(nodes)
            },
            nemeses,
            duration: Duration::from_secs(30),
            seed,
            clients: if nodes >= 5 { 6 } else { 5 },
            keys: 6,
            ops_per_key: 150,
            quiet: (Duration::from_millis(1500), Duration::from_millis(3000)),
            hold: (Duration::from_millis(2000), Duration::from_millis(5000)),
            write_within: Duration::from_secs(15),
            settle_timeout: Duration::from_secs(90),
            every_nemesis_once: false,
            base_dir: crate::cluster::target_dir().join("fault-suite"),
            keep: false,
        }
    }
}

/// Per-nemesis record of one application.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    /// Which nemesis.
    pub nemesis: Nemesis,
    /// What it did, or why it failed.
    pub result: Result<String, String>,
    /// Time from heal to the first acknowledged write.
    pub recovery: Option<Duration>,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run directory (removed when the run passed, unless kept).
    pub dir: PathBuf,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Whether the client ports spoke TLS with client certificates.
    pub client_tls: bool,
    /// Whether the leader served linearizable reads from its lease.
    pub lease_reads: bool,
    /// The seed.
    pub seed: u64,
    /// Outcome counts of client operations (probes and final reads included).
    pub counts: Counts,
    /// Writes with a request id that took more than one try (each is one
    /// operation in the history).
    pub retried_writes: u64,
    /// Operations in the checked history (definite failures excluded).
    pub checked_ops: usize,
    /// Keys in the history.
    pub keys: usize,
    /// The checker's verdict, if it ran.
    pub verdict: Option<Verdict>,
    /// Every fault applied.
    pub faults: Vec<FaultRecord>,
    /// Terms in which a leader was seen.
    pub leader_terms: usize,
    /// The watch checker's line per stream (when it ran and passed).
    pub watches: Vec<String>,
    /// Everything that went wrong; empty when the run passed.
    pub errors: Vec<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl RunOutcome {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.errors.is_empty()
    }

    /// One line per fault and a summary line.
    pub fn summary(&self) -> String {
        let mut per: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &self.faults {
            *per.entry(f.nemesis.name()).or_default() += 1;
        }
        let worst = self.faults.iter().filter_map(|f| f.recovery).max();
        format!(
            "{} nodes, client TLS {}, {} reads, seed {}, {:.0?}: ops ok {} / unknown {} / failed {}; {} writes retried with their request id; \
             checked {} ops on {} keys: {:?}; \
             {} leader terms; faults {:?}; slowest recovery {:?}; watches checked: [{}]; {}",
            self.nodes,
            if self.client_tls { "on" } else { "off" },
            if self.lease_reads { "lease" } else { "read-index" },
            self.seed,
            self.elapsed,
            self.counts.ok,
            self.counts.unknown,
            self.counts.failed,
            self.retried_writes,
            self.checked_ops,
            self.keys,
            self.verdict,
            self.leader_terms,
            per,
            worst,
            self.watches.join("; "),
            if self.passed() {
                "PASSED".to_string()
            } else {
                format!("FAILED ({} problems, see {})", self.errors.len(), self.dir.display())
            }
        )
    }
}

/// Hands out keys: `slots` keys in use at a time; a slot moves to a fresh key
/// after `ops_per_key` operations.
#[derive(Debug)]
struct KeySpace {
    counters: Vec<AtomicU64>,
    ops_per_key: u64,
}

impl KeySpace {
    fn key(&self, slot: usize) -> String {
        let n = self.counters[slot].fetch_add(1, Ordering::Relaxed);
        format!("k{slot}.{}", n / self.ops_per_key.max(1))
    }
}

struct Shared {
    rec: Recording,
    api: Api,
    /// The cluster's CA and client certificate, with client TLS.
    tls: Option<ClientTls>,
    /// The same for etcd-client.
    grpc_tls: Option<etcd_client::TlsOptions>,
    /// How long a gRPC client waits for an answer.
    client_timeout: Duration,
    urls: Vec<String>,
    keys: KeySpace,
    /// The last value seen per key, to make compare-and-swaps succeed often.
    last_seen: Mutex<HashMap<String, Option<Value>>>,
    stop_clients: AtomicBool,
    /// Writes with a request id that took more than one try.
    retried: AtomicU64,
    stop_polling: AtomicBool,
    /// term -> nodes that claimed to lead it.
    claims: Mutex<BTreeMap<u64, BTreeSet<u64>>>,
}

/// Most tries of a write with a request id (through different nodes).
const RETRIES_PER_WRITE: usize = 3;

async fn client_loop(shared: Arc<Shared>, index: u64, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    // Half of the clients go through etcd's v3 gRPC API (Txn for CAS), the
    // others through the /v1 HTTP API; one history holds both.
    let mut grpc = (index % 2 == 1).then(|| GrpcClients::new(shared.grpc_tls.clone()));
    let mut process = index * 1_000_000;
    let mut seq = 0u64;
    // This client's id for its writes with a request id (half of the /v1
    // clients' writes), numbered by `seq`.
    let request_client: u64 = rng.gen();
    while !shared.stop_clients.load(Ordering::Relaxed) {
        let slot = rng.gen_range(0..shared.keys.counters.len());
        let key = shared.keys.key(slot);
        let url = &shared.urls[rng.gen_range(0..shared.urls.len())];
        seq += 1;
        let fresh = || Value::from(format!("c{index}-{seq}"));
        let input = match rng.gen_range(0..100) {
            0..=39 => Input::Get,
            40..=69 => Input::Put { value: fresh() },
            70..=79 => Input::Delete,
            _ => {
                let expected = shared
                    .last_seen
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&key)
                    .cloned()
                    .unwrap_or(None);
                let new = if rng.gen_bool(0.9) {
                    Some(fresh())
                } else {
                    None
                };
                Input::Cas { expected, new }
            }
        };
        let (outcome, output) = match &mut grpc {
            Some(grpc) => {
                grpc.run(
                    &shared.rec,
                    url,
                    shared.client_timeout,
                    process,
                    &key,
                    input.clone(),
                )
                .await
            }
            None if input.is_write() && rng.gen_bool(0.5) => {
                // Retried through other nodes while the outcome is unknown,
                // always with this id: applied at most once, recorded as
                // one operation.
                let mut bases: Vec<&str> = shared.urls.iter().map(String::as_str).collect();
                bases.shuffle(&mut rng);
                let request_id = format!("{request_client}/{seq}");
                let (outcome, output, tries) = shared
                    .rec
                    .run_once(
                        &shared.api,
                        &bases,
                        RETRIES_PER_WRITE,
                        process,
                        &key,
                        input.clone(),
                        &request_id,
                    )
                    .await;
                if tries > 1 {
                    shared.retried.fetch_add(1, Ordering::Relaxed);
                }
                (outcome, output)
            }
            None => {
                let (outcome, output, _) = shared
                    .rec
                    .run(&shared.api, url, process, &key, input.clone())
                    .await;
                (outcome, output)
            }
        };
        match (outcome, output) {
            (Outcome::Ok, Some(out)) => {
                let seen = match (&input, out) {
                    (_, Output::Get { value }) => Some(value),
                    (Input::Put { value }, Output::Put) => Some(Some(value.clone())),
                    (_, Output::Delete { .. }) => Some(None),
                    (_, Output::Cas { current, .. }) => current,
                    _ => None,
                };
                if let Some(v) = seen {
                    shared
                        .last_seen
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, v);
                }
            }
            (Outcome::Unknown, _) => {
                // The old process may still be in flight: continue as a new one.
                process += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(2..15))).await;
    }
}

async fn poll_leaders(shared: Arc<Shared>, url: String) {
    let api = Api::with_tls(Duration::from_millis(500), shared.tls.as_ref());
    while !shared.stop_polling.load(Ordering::Relaxed) {
        if let Some(s) = api.status(&url).await {
            if s.role == "leader" {
                shared
                    .claims
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(s.term)
                    .or_default()
                    .insert(s.id);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes a unique value to `key` through random nodes until one is
/// acknowledged or `limit` passes; returns how long it took.
async fn probe_write(
    shared: &Shared,
    rng: &mut SmallRng,
    key: &str,
    process: u64,
    limit: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < limit {
        n += 1;
        let url = &shared.urls[rng.gen_range(0..shared.urls.len())];
        let value = Value::from(format!("probe-{process}-{n}"));
        let (outcome, _, _) = shared
            .rec
            .run(&shared.api, url, process + n, key, Input::Put { value })
            .await;
        if outcome == Outcome::Ok {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Waits until every node answers with the same applied index and digest,
/// is a voter of the full cluster and reports no failure.
async fn converge(cluster: &Cluster, api: &Api, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let all: Vec<u64> = cluster.ids();
    let mut last: Vec<NodeStatus> = Vec::new();
    while start.elapsed() < timeout {
        last = statuses(api, cluster).await;
        if let Some(s) = last.iter().find(|s| s.failed.is_some()) {
            return Err(format!("node {} reports failed: {:?}", s.id, s.failed));
        }
        let same = last.len() == all.len()
            && last.iter().all(|s| {
                s.applied_index == last[0].applied_index
                    && s.digest == last[0].digest
                    && s.voters == all
                    && s.voters_outgoing.is_empty()
            })
            && last.iter().any(|s| s.role == "leader");
        if same {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!(
        "nodes did not converge within {timeout:?}: {}",
        last.iter()
            .map(|s| format!(
                "node {} {} term {} applied {} digest {} voters {:?}",
                s.id, s.role, s.term, s.applied_index, s.digest, s.voters
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ))
}

/// With client TLS: a node of the (running) cluster refuses plain HTTP and
/// a TLS client without a certificate, while the suite's client (CA and
/// client certificate) gets its status. Tries every node, as some may be
/// down; an error names what was not refused.
async fn check_tls_required(cluster: &Cluster, tls: &ClientTls) -> Result<(), String> {
    let timeout = Duration::from_secs(3);
    let with_cert = Api::with_tls(timeout, Some(tls));
    let no_cert = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(tls.reqwest_root()?)
        .timeout(timeout)
        .build()
        .map_err(|e| format!("building a reqwest client: {e}"))?;
    let plain = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| format!("building a reqwest client: {e}"))?;
    for node in cluster.nodes() {
        if with_cert.status(&node.url()).await.is_none() {
            continue;
        }
        let https = format!("{}/v1/status", node.url());
        let http = format!("http://{}/v1/status", node.client_addr);
        // The node answers plain HTTP with a 400 naming the mistake (as
        // etcd does) or closes the connection; never with a status.
        if let Ok(r) = plain.get(&http).send().await {
            if r.status() != reqwest::StatusCode::BAD_REQUEST {
                return Err(format!(
                    "client TLS is on but node {} answered plain HTTP with {}",
                    node.id,
                    r.status()
                ));
            }
        }
        return match no_cert.get(&https).send().await {
            Ok(r) => Err(format!(
                "client TLS is on but node {} answered a client without a certificate with {}",
                node.id,
                r.status()
            )),
            Err(_) => Ok(()),
        };
    }
    Err("no node answered the suite's TLS client (CA and client certificate)".into())
}

/// Runs one configuration. `firewall` is needed by the network nemeses
/// (they fail the run without it; leave them out instead).
pub fn run(config: &RunConfig, bin: &Path, firewall: Option<&Firewall>) -> RunOutcome {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a tokio runtime");
    rt.block_on(run_async(config, bin, firewall))
}

async fn run_async(config: &RunConfig, bin: &Path, firewall: Option<&Firewall>) -> RunOutcome {
    let started = Instant::now();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let dir = config.base_dir.join(format!(
        "{}-n{}-seed{}-{stamp}",
        config.name, config.cluster.nodes, config.seed
    ));
    let mut outcome = RunOutcome {
        dir: dir.clone(),
        nodes: config.cluster.nodes,
        client_tls: config.cluster.client_tls,
        lease_reads: config.cluster.lease_reads,
        seed: config.seed,
        counts: Counts::default(),
        retried_writes: 0,
        checked_ops: 0,
        keys: 0,
        verdict: None,
        faults: Vec::new(),
        leader_terms: 0,
        watches: Vec::new(),
        errors: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let cluster = match Cluster::start(bin, &dir, config.cluster.clone()) {
        Ok(c) => c,
        Err(e) => {
            outcome
                .errors
                .push(format!("cannot start the cluster: {e}"));
            return outcome;
        }
    };
    tracing::info!(dir = %dir.display(), nodes = config.cluster.nodes, seed = config.seed, "fault run started");
    cluster.note(&format!(
        "run {} seed {} nemeses {:?}",
        config.name,
        config.seed,
        config.nemeses.iter().map(|n| n.name()).collect::<Vec<_>>()
    ));
    let client_timeout = Duration::from_millis(config.cluster.request_timeout_ms + 1500);
    let tls = cluster.client_tls().cloned();
    let urls: Vec<String> = cluster.nodes().iter().map(|n| n.url()).collect();
    let scheme = if config.cluster.client_tls {
        "https://"
    } else {
        "http://"
    };
    if tls.is_some() != config.cluster.client_tls || !urls.iter().all(|u| u.starts_with(scheme)) {
        outcome.errors.push(format!(
            "client TLS is {} but the cluster's client URLs are {urls:?} (client certificate: {})",
            if config.cluster.client_tls {
                "on"
            } else {
                "off"
            },
            tls.is_some()
        ));
    }
    let shared = Arc::new(Shared {
        rec: Recording::new(),
        api: Api::with_tls(client_timeout, tls.as_ref()),
        grpc_tls: tls.as_ref().map(ClientTls::etcd_options),
        tls,
        client_timeout,
        urls,
        keys: KeySpace {
            counters: (0..config.keys).map(|_| AtomicU64::new(0)).collect(),
            ops_per_key: config.ops_per_key,
        },
        last_seen: Mutex::new(HashMap::new()),
        stop_clients: AtomicBool::new(false),
        retried: AtomicU64::new(0),
        stop_polling: AtomicBool::new(false),
        claims: Mutex::new(BTreeMap::new()),
    });
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let pollers: Vec<_> = shared
        .urls
        .iter()
        .map(|u| tokio::spawn(poll_leaders(shared.clone(), u.clone())))
        .collect();

    // The cluster must come up before the clock of the run starts.
    let admin = Api::with_tls(client_timeout, shared.tls.as_ref());
    if probe_write(
        &shared,
        &mut rng,
        "probe",
        7_000_000,
        Duration::from_secs(60),
    )
    .await
    .is_none()
    {
        outcome
            .errors
            .push("the fresh cluster did not accept a write within 60 s".into());
    }
    if let Some(tls) = &shared.tls {
        if let Err(e) = check_tls_required(&cluster, tls).await {
            outcome.errors.push(e);
        }
    }
    let clients: Vec<_> = (0..config.clients as u64)
        .map(|i| {
            tokio::spawn(client_loop(
                shared.clone(),
                i + 1,
                config.seed.wrapping_mul(1000).wrapping_add(i),
            ))
        })
        .collect();

    let watchers = crate::watch_check::Watchers::start(&shared.urls, shared.grpc_tls.as_ref());
    let run_start = Instant::now();
    let mut order = config.nemeses.clone();
    order.shuffle(&mut rng);
    let mut next = 0usize;
    let mut probe_process = 8_000_000u64;
    while outcome.errors.is_empty() && !order.is_empty() {
        let quiet = rng.gen_range(config.quiet.0..=config.quiet.1);
        let hold = rng.gen_range(config.hold.0..=config.hold.1);
        let owed = config.every_nemesis_once && next < order.len();
        if !owed && run_start.elapsed() + quiet + hold + Duration::from_secs(1) > config.duration {
            break;
        }
        tokio::time::sleep(quiet).await;
        let nemesis = order[next % order.len()];
        next += 1;
        cluster.note(&format!(
            "{:>8.1?} {} start",
            run_start.elapsed(),
            nemesis.name()
        ));
        let mut ctx = Ctx {
            cluster: &cluster,
            api: &admin,
            firewall,
            rng: &mut rng,
        };
        let result = nemesis.apply(&mut ctx, hold).await;
        cluster.note(&format!(
            "{:>8.1?} {} healed: {result:?}",
            run_start.elapsed(),
            nemesis.name()
        ));
        if let Err(e) = &result {
            outcome.errors.push(format!("{}: {e}", nemesis.name()));
        }
        probe_process += 10_000;
        let recovery = probe_write(
            &shared,
            &mut rng,
            "probe",
            probe_process,
            config.write_within,
        )
        .await;
        cluster.note(&format!(
            "{:>8.1?} first write after heal: {recovery:?}",
            run_start.elapsed()
        ));
        if recovery.is_none() {
            outcome.errors.push(format!(
                "no write was acknowledged within {:?} of healing {}",
                config.write_within,
                nemesis.name()
            ));
        }
        for (id, status) in cluster.crashed() {
            outcome
                .errors
                .push(format!("node {id} exited on its own ({status})"));
            let _ = cluster.spawn(id);
        }
        outcome.faults.push(FaultRecord {
            nemesis,
            result,
            recovery,
        });
    }
    let remaining = config.duration.saturating_sub(run_start.elapsed());
    if outcome.errors.is_empty() {
        tokio::time::sleep(remaining).await;
    }
    shared.stop_clients.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    cluster.note(&format!("{:>8.1?} clients stopped", run_start.elapsed()));

    // Final heal and checks.
    if let Some(fw) = firewall {
        if let Err(e) = fw.heal() {
            outcome.errors.push(format!("final heal: {e}"));
        }
    }
    if let Err(e) = cluster.revive_all() {
        outcome.errors.push(format!("restarting nodes: {e}"));
    }
    let recovery = probe_write(&shared, &mut rng, "probe", 9_000_000, config.write_within).await;
    if recovery.is_none() {
        outcome.errors.push(format!(
            "no write was acknowledged within {:?} of the final heal",
            config.write_within
        ));
    }
    match converge(&cluster, &admin, config.settle_timeout).await {
        Ok(t) => cluster.note(&format!("converged {t:?} after the final write")),
        Err(e) => outcome.errors.push(e),
    }
    // Final linearizable reads of every key.
    let read_deadline = Instant::now() + Duration::from_secs(60);
    for (i, key) in shared.rec.keys().into_iter().enumerate() {
        loop {
            let url = &shared.urls[rng.gen_range(0..shared.urls.len())];
            let (o, _, answer) = shared
                .rec
                .run(&shared.api, url, 9_500_000 + i as u64, &key, Input::Get)
                .await;
            if o == Outcome::Ok {
                break;
            }
            if Instant::now() > read_deadline {
                outcome.errors.push(format!(
                    "final read of {key:?} never succeeded after healing: {}",
                    answer.describe()
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Every watch stream against the final history.
    let grpc_tls = shared.grpc_tls.as_ref();
    match crate::watch_check::current_revision(&shared.urls, grpc_tls).await {
        Ok(final_rev) => {
            let streams = watchers.finish(final_rev, Duration::from_secs(30)).await;
            let checked =
                match crate::watch_check::history(&shared.urls[0], final_rev, grpc_tls).await {
                    Ok(history) => crate::watch_check::check(&streams, &history),
                    Err(e) => Err(format!("cannot replay the history: {e}")),
                };
            match checked {
                Ok(lines) => {
                    for l in &lines {
                        cluster.note(l);
                    }
                    outcome.watches = lines;
                }
                Err(e) => outcome.errors.push(e),
            }
        }
        Err(e) => outcome.errors.push(format!("watch check: {e}")),
    }
    shared.stop_polling.store(true, Ordering::Relaxed);
    for p in pollers {
        let _ = p.await;
    }
    for (id, status) in cluster.crashed() {
        outcome
            .errors
            .push(format!("node {id} exited on its own ({status})"));
    }
    for (id, what) in cluster.shutdown(Duration::from_secs(15)) {
        outcome.errors.push(format!("node {id} {what}"));
    }

    // At most one leader per term.
    let claims = shared
        .claims
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    outcome.leader_terms = claims.len();
    let mut leaders_txt = String::new();
    for (term, ids) in &claims {
        let _ = writeln!(leaders_txt, "term {term}: {ids:?}");
        if ids.len() > 1 {
            outcome
                .errors
                .push(format!("term {term} had several leaders: {ids:?}"));
        }
    }

    // Linearizability.
    let history = shared.rec.history();
    outcome.counts = shared.rec.counts();
    outcome.retried_writes = shared.retried.load(Ordering::Relaxed);
    outcome.checked_ops = history.ops.len();
    outcome.keys = history.by_key().len();
    // A key with many operations of unknown outcome can need more than the
    // default search budget; an undecided key fails the run, so search
    // further rather than give up (10x the default; memory stays bounded
    // by the per-key history).
    let check = CheckConfig {
        threads: 2,
        max_states_per_key: 20_000_000,
        ..CheckConfig::default()
    };
    let mut failure_txt = String::new();
    match check_history(&history, &check) {
        Ok(report) => {
            outcome.verdict = Some(report.verdict());
            if report.verdict() != Verdict::Linearizable {
                outcome.errors.push(format!(
                    "history is {:?} (see failure.txt)",
                    report.verdict()
                ));
                failure_txt.push_str(&report.render());
            }
        }
        Err(e) => outcome.errors.push(format!("history is invalid: {e}")),
    }
    outcome.elapsed = started.elapsed();
    let failed = !outcome.errors.is_empty();
    if failed || config.keep {
        let _ = history.save(dir.join("history.jsonl"));
        let _ = std::fs::write(dir.join("leaders.txt"), &leaders_txt);
        let mut text = String::new();
        for e in &outcome.errors {
            let _ = writeln!(text, "ERROR: {e}");
        }
        let _ = writeln!(text, "\n{}\n", outcome.summary());
        text.push_str(&failure_txt);
        let _ = std::fs::write(dir.join("failure.txt"), text);
    }
    drop(cluster);
    if !failed && !config.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    tracing::info!(summary = %outcome.summary(), "fault run finished");
    outcome
}

/// Holds an exclusive `flock` on `<target>/fault-suite/.lock` while alive:
/// fault-suite processes share the 127.0.0.N addresses and the iptables
/// chain, so a second one (e.g. another `cargo test`) waits for the first.
#[derive(Debug)]
pub struct ExclusiveRun {
    _file: std::fs::File,
}

impl ExclusiveRun {
    /// Blocks until no other process runs the suite.
    pub fn acquire() -> std::io::Result<ExclusiveRun> {
        use std::os::fd::AsRawFd;
        let dir = crate::cluster::target_dir().join("fault-suite");
        std::fs::create_dir_all(&dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))?;
        // SAFETY: flock on a descriptor we own; released when the file closes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(ExclusiveRun { _file: file })
    }
}
