//! `raft-node bench`: a closed-loop load generator.
//!
//! `--clients` tasks each keep one request in flight: puts of `--value-size`
//! bytes, or linearizable reads with probability `--read-ratio`, on keys
//! drawn uniformly from `--keys`. The run is `--requests` requests in total,
//! or `--duration` seconds after `--warmup` seconds that are not counted.
//!
//! Two protocols, so the same binary drives raft-node and etcd:
//! - `grpc` (default): etcd's v3 API (`KV.Put`, `KV.Range` without
//!   `serializable`), which raft-node and etcd both serve. Clients share
//!   HTTP/2 connections, `--clients-per-conn` to a connection, opened to the
//!   leader (found through `Maintenance.Status`: `leader == header.member_id`)
//!   or spread over every endpoint (`--target all`). See [`super::bench_grpc`].
//! - `http`: raft-node's own HTTP/1.1 API (`/v1/kv`), one connection per
//!   client in flight, to the leader (found through `/v1/status`) or spread
//!   over every endpoint, following redirects. See [`super::bench_http`].
//!
//! Latencies go into HDR histograms. The report includes the load generator's
//! own CPU time (user + system, from `getrusage`) over the measured window,
//! so a run can show that the client was not the bottleneck.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::bench_grpc::GrpcConn;
use super::bench_http::HttpConn;
use super::client::Endpoints;

/// Wire protocol of the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// etcd's v3 gRPC API (raft-node and etcd).
    Grpc,
    /// raft-node's HTTP/1.1 API.
    Http,
}

/// Which endpoints the connections go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Every connection to the current leader.
    Leader,
    /// Connections spread round-robin over every endpoint.
    All,
}

/// Options of `bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Concurrent clients (each with one request in flight).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Total requests (ignored with --duration).
    #[arg(long, default_value_t = 10_000)]
    pub requests: u64,
    /// Measure for this many seconds instead of a request count.
    #[arg(long)]
    pub duration: Option<f64>,
    /// With --duration: seconds of load before the measured window.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 1_000)]
    pub keys: u64,
    /// Fraction of requests that are reads, 0.0..=1.0.
    #[arg(long, default_value_t = 0.0)]
    pub read_ratio: f64,
    /// Wire protocol.
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    pub protocol: Protocol,
    /// Send to the leader only, or spread connections over all endpoints.
    #[arg(long, value_enum, default_value_t = Target::Leader)]
    pub target: Target,
    /// gRPC: clients sharing one HTTP/2 connection.
    #[arg(long, default_value_t = 32)]
    pub clients_per_conn: usize,
    /// Runtime worker threads; 1 runs everything on the calling thread.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Latencies and errors of the measured window.
pub(crate) struct Stats {
    writes: Histogram<u64>,
    reads: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds are valid")
}

/// One client's connection: sends one request and waits for its answer.
pub(crate) enum Conn {
    Grpc(GrpcConn),
    Http(HttpConn),
}

impl Conn {
    async fn send(&mut self, read: bool, key: &[u8], value: &[u8]) -> Result<(), String> {
        match self {
            Conn::Grpc(c) => c.send(read, key, value).await,
            Conn::Http(c) => c.send(read, key, value).await,
        }
    }
}

/// When the clients stop, and which completions count.
#[derive(Clone, Copy)]
enum Plan {
    /// Stop after this many requests; every completion counts.
    Requests(u64),
    /// Stop at `end`; completions in `[start, end]` count.
    Window { start: Instant, end: Instant },
}

/// Shared state of one run.
struct Shared {
    plan: Plan,
    issued: AtomicU64,
    done: AtomicU64,
    stats: Mutex<Stats>,
    read_ratio: f64,
    keys: u64,
    value: Vec<u8>,
}

impl Shared {
    fn record(&self, read: bool, at: Instant, micros: u64, outcome: Result<(), String>) {
        if let Plan::Window { start, end } = self.plan {
            if at < start || at > end {
                return;
            }
        }
        let Ok(mut stats) = self.stats.lock() else {
            return;
        };
        match outcome {
            Ok(()) => {
                let h = if read {
                    &mut stats.reads
                } else {
                    &mut stats.writes
                };
                h.saturating_record(micros);
            }
            Err(kind) => *stats.errors.entry(kind).or_default() += 1,
        }
    }
}

async fn run_client(mut conn: Conn, shared: Arc<Shared>, seed: u64) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut key = Vec::with_capacity(16);
    loop {
        match shared.plan {
            Plan::Requests(n) => {
                if shared.issued.fetch_add(1, Ordering::Relaxed) >= n {
                    break;
                }
            }
            Plan::Window { end, .. } => {
                if Instant::now() >= end {
                    break;
                }
            }
        }
        key.clear();
        let k = rng.gen_range(0..shared.keys);
        // Writing into a Vec cannot fail.
        let _ = write!(key, "bench-{k:08}");
        let read = rng.gen_bool(shared.read_ratio);
        let start = Instant::now();
        let outcome = conn.send(read, &key, &shared.value).await;
        let now = Instant::now();
        let failed = outcome.is_err();
        let micros = now.duration_since(start).as_micros().clamp(1, 60_000_000) as u64;
        shared.record(read, now, micros, outcome);
        shared.done.fetch_add(1, Ordering::Relaxed);
        if failed {
            // Do not spin on a refused connection.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn summary(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
        "mean_ms": h.mean() / 1000.0,
    })
}

/// User and system CPU seconds this process has used so far.
fn cpu_times() -> Result<(f64, f64), String> {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct and RUSAGE_SELF.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(format!(
            "getrusage failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((secs(usage.ru_utime), secs(usage.ru_stime)))
}

fn check(args: &BenchArgs) -> Result<(), String> {
    if args.clients == 0 || args.requests == 0 || args.keys == 0 {
        return Err("--clients, --requests and --keys must be positive".into());
    }
    if args.clients_per_conn == 0 || args.threads == 0 {
        return Err("--clients-per-conn and --threads must be positive".into());
    }
    if !(0.0..=1.0).contains(&args.read_ratio) {
        return Err("--read-ratio must be between 0 and 1".into());
    }
    if let Some(d) = args.duration {
        if !(d.is_finite() && d > 0.0) {
            return Err("--duration must be a positive number of seconds".into());
        }
    }
    if !(args.warmup.is_finite() && args.warmup >= 0.0) {
        return Err("--warmup must be a non-negative number of seconds".into());
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err("--timeout must be a positive number of seconds".into());
    }
    Ok(())
}

/// Runs the benchmark; returns the summary as text or JSON.
pub fn run(args: &BenchArgs, endpoints: &Endpoints) -> Result<String, String> {
    check(args)?;
    if endpoints.endpoints.is_empty() {
        return Err("--endpoints is empty".into());
    }
    let rt = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let report = rt.block_on(bench(args, endpoints))?;
    if args.json {
        Ok(report.to_string())
    } else {
        Ok(text(&report))
    }
}

/// Opens the connections, one per client (each client gets its own handle;
/// gRPC handles share an HTTP/2 connection per `--clients-per-conn`).
async fn connect(args: &BenchArgs, endpoints: &Endpoints) -> Result<(Vec<Conn>, Value), String> {
    let timeout = Duration::from_secs_f64(args.timeout);
    let eps: Vec<String> = endpoints
        .endpoints
        .iter()
        .map(|e| e.trim_end_matches('/').to_string())
        .collect();
    match args.protocol {
        Protocol::Grpc => {
            let targets = match args.target {
                Target::Leader => vec![super::bench_grpc::find_leader(&eps, timeout).await?],
                Target::All => eps,
            };
            let conns = args.clients.div_ceil(args.clients_per_conn);
            let mut channels = Vec::with_capacity(conns);
            for i in 0..conns {
                channels.push(GrpcConn::connect(&targets[i % targets.len()], timeout).await?);
            }
            let clients = (0..args.clients)
                .map(|i| Conn::Grpc(channels[i % conns].clone()))
                .collect();
            Ok((clients, json!({ "targets": targets, "connections": conns })))
        }
        Protocol::Http => {
            let client =
                super::bench_http::client(endpoints.http_client()?, args.clients, timeout)?;
            let targets = match args.target {
                Target::Leader => vec![super::bench_http::find_leader(&client, &eps).await?],
                Target::All => eps,
            };
            let clients = (0..args.clients)
                .map(|i| {
                    Conn::Http(HttpConn::new(
                        client.clone(),
                        targets[i % targets.len()].clone(),
                    ))
                })
                .collect();
            Ok((
                clients,
                json!({ "targets": targets, "connections": args.clients }),
            ))
        }
    }
}

async fn bench(args: &BenchArgs, endpoints: &Endpoints) -> Result<Value, String> {
    let (conns, wiring) = connect(args, endpoints).await?;
    let t0 = Instant::now();
    let plan = match args.duration {
        Some(d) => {
            let start = t0 + Duration::from_secs_f64(args.warmup);
            Plan::Window {
                start,
                end: start + Duration::from_secs_f64(d),
            }
        }
        None => Plan::Requests(args.requests),
    };
    let shared = Arc::new(Shared {
        plan,
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        stats: Mutex::new(Stats {
            writes: histogram(),
            reads: histogram(),
            errors: BTreeMap::new(),
        }),
        read_ratio: args.read_ratio,
        keys: args.keys,
        value: vec![b'v'; args.value_size],
    });
    let bar = progress_bar(args, &plan)?;
    let stop_bar = Arc::new(AtomicBool::new(false));
    let progress = {
        let (shared, bar, stop) = (shared.clone(), bar.clone(), stop_bar.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match shared.plan {
                    Plan::Requests(_) => bar.set_position(shared.done.load(Ordering::Relaxed)),
                    Plan::Window { .. } => bar.set_position(t0.elapsed().as_secs()),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    // CPU is sampled at the edges of the measured window: a timer task for a
    // timed run, before and after the clients for a counted one.
    let cpu_window = match plan {
        Plan::Window { start, end } => Some(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let (a, at) = (cpu_times(), Instant::now());
            tokio::time::sleep_until(end.into()).await;
            let (b, bt) = (cpu_times(), Instant::now());
            (a, b, bt.duration_since(at))
        })),
        Plan::Requests(_) => None,
    };
    let cpu_start = cpu_times()?;
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| tokio::spawn(run_client(conn, shared.clone(), 0x5EED ^ i as u64)))
        .collect();
    for t in tasks {
        t.await.map_err(|e| format!("client task failed: {e}"))?;
    }
    let finished = Instant::now();
    let cpu_end = cpu_times()?;
    stop_bar.store(true, Ordering::Relaxed);
    let _ = progress.await;
    bar.finish_and_clear();
    let (cpu_a, cpu_b, cpu_wall, elapsed) = match (cpu_window, plan) {
        (Some(w), Plan::Window { start, end }) => {
            let (a, b, wall) = w.await.map_err(|e| format!("timer task failed: {e}"))?;
            (a?, b?, wall, end.duration_since(start))
        }
        _ => {
            let wall = finished.duration_since(t0);
            (cpu_start, cpu_end, wall, wall)
        }
    };
    let elapsed = elapsed.as_secs_f64();
    let cpu_wall = cpu_wall.as_secs_f64().max(1e-9);
    let (user, sys) = (cpu_b.0 - cpu_a.0, cpu_b.1 - cpu_a.1);
    let stats = shared
        .stats
        .lock()
        .map_err(|_| "a client task panicked while recording".to_string())?;
    let ok = stats.writes.len() + stats.reads.len();
    Ok(json!({
        "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "target": format!("{:?}", args.target).to_lowercase(),
        "leader": if args.target == Target::Leader { wiring["targets"][0].clone() } else { Value::Null },
        "targets": wiring["targets"],
        "connections": wiring["connections"],
        "runtime_threads": args.threads,
        "clients": args.clients,
        "requests": args.requests,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "value_size": args.value_size,
        "keys": args.keys,
        "read_ratio": args.read_ratio,
        "elapsed_s": elapsed,
        "throughput_ops": ok as f64 / elapsed.max(1e-9),
        "ok": ok,
        "errors": stats.errors,
        "writes": summary(&stats.writes),
        "reads": summary(&stats.reads),
        "client_cpu": {
            "user_s": user,
            "sys_s": sys,
            "wall_s": cpu_wall,
            "cores": (user + sys) / cpu_wall,
        },
    }))
}

fn progress_bar(args: &BenchArgs, plan: &Plan) -> Result<indicatif::ProgressBar, String> {
    if args.quiet {
        return Ok(indicatif::ProgressBar::hidden());
    }
    let (len, template) = match plan {
        Plan::Requests(n) => (*n, "{elapsed_precise} [{bar:40}] {pos}/{len} eta {eta}"),
        Plan::Window { .. } => (
            (args.warmup + args.duration.unwrap_or(0.0)).ceil() as u64,
            "{elapsed_precise} [{bar:40}] {pos}/{len} s",
        ),
    };
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    Ok(bar)
}

/// The human-readable summary.
fn text(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let mut out = format!(
        "{} ok in {:.2} s with {} clients over {} {} connection(s): {:.0} ops/s\n",
        r["ok"],
        f(&r["elapsed_s"]),
        r["clients"],
        r["connections"],
        r["protocol"].as_str().unwrap_or(""),
        f(&r["throughput_ops"]),
    );
    for name in ["writes", "reads"] {
        let s = &r[name];
        if s["count"].as_u64().unwrap_or(0) == 0 {
            continue;
        }
        out.push_str(&format!(
            "{name:<6}  n={:<8} p50={:.2}ms p90={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms\n",
            s["count"],
            f(&s["p50_ms"]),
            f(&s["p90_ms"]),
            f(&s["p99_ms"]),
            f(&s["p999_ms"]),
            f(&s["max_ms"]),
        ));
    }
    let cpu = &r["client_cpu"];
    out.push_str(&format!(
        "client CPU: {:.2} s user + {:.2} s sys over {:.2} s = {:.2} cores\n",
        f(&cpu["user_s"]),
        f(&cpu["sys_s"]),
        f(&cpu["wall_s"]),
        f(&cpu["cores"]),
    ));
    match r["errors"].as_object() {
        Some(errors) if !errors.is_empty() => {
            let list: Vec<String> = errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("errors: {}", list.join(" ")));
        }
        _ => out.push_str("errors: none"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(argv: &[&str]) -> BenchArgs {
        Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))
            .expect("valid arguments")
            .args
    }

    #[test]
    fn defaults_are_grpc_to_the_leader_on_one_thread() {
        let a = parse(&[]);
        assert_eq!(a.protocol, Protocol::Grpc);
        assert_eq!(a.target, Target::Leader);
        assert_eq!(a.threads, 1);
        assert!(check(&a).is_ok());
    }

    #[test]
    fn bad_options_are_refused() {
        for argv in [
            &["--read-ratio", "1.5"][..],
            &["--clients", "0"],
            &["--clients-per-conn", "0"],
            &["--duration", "0"],
            &["--warmup=-1"],
        ] {
            assert!(check(&parse(argv)).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn cpu_times_grow() {
        let (u0, s0) = cpu_times().expect("getrusage");
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let (u1, s1) = cpu_times().expect("getrusage");
        assert!(u1 + s1 >= u0 + s0);
    }
}
