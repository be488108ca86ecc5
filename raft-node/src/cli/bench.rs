//! `raft-node bench`: a closed-loop load generator against the HTTP API.
//!
//! `--clients` tasks each keep one request in flight; together they send
//! `--requests` requests (PUTs of `--value-size` bytes, or linearizable GETs
//! with probability `--read-ratio`) on keys drawn uniformly from `--keys`.
//! Requests go straight to the leader (found through `/v1/status`), following
//! redirects if leadership moves. Latencies go into an HDR histogram.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::client::Endpoints;

/// Options of `bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Concurrent clients (each with one request in flight).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Total requests.
    #[arg(long, default_value_t = 10_000)]
    pub requests: u64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 1_000)]
    pub keys: u64,
    /// Fraction of requests that are reads, 0.0..=1.0.
    #[arg(long, default_value_t = 0.0)]
    pub read_ratio: f64,
    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Shared tallies of one run.
struct Tally {
    done: AtomicU64,
    next: AtomicU64,
}

/// What one client task measured.
struct ClientResult {
    writes: Histogram<u64>,
    reads: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds are valid")
}

/// Finds the leader's base URL through `/v1/status` of any endpoint.
async fn find_leader(client: &reqwest::Client, endpoints: &[String]) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        for ep in endpoints {
            let ep = ep.trim_end_matches('/');
            let Ok(r) = client.get(format!("{ep}/v1/status")).send().await else {
                continue;
            };
            let Ok(s) = r.json::<Value>().await else {
                continue;
            };
            if s["role"] == "leader" {
                return Ok(ep.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("no endpoint reported itself leader within 20 s".into())
}

fn error_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

async fn run_client(
    client: reqwest::Client,
    base: String,
    args: BenchArgs,
    tally: Arc<Tally>,
    seed: u64,
) -> ClientResult {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut out = ClientResult {
        writes: histogram(),
        reads: histogram(),
        errors: BTreeMap::new(),
    };
    let value = vec![b'v'; args.value_size];
    while tally.next.fetch_add(1, Ordering::Relaxed) < args.requests {
        let key = rng.gen_range(0..args.keys.max(1));
        let url = format!("{base}/v1/kv/bench-{key:08}");
        let read = rng.gen_bool(args.read_ratio.clamp(0.0, 1.0));
        let req = if read {
            client.get(&url)
        } else {
            client.put(&url).body(value.clone())
        };
        let start = Instant::now();
        let outcome = match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                // Drain the body so the connection is reused.
                let _ = r.bytes().await;
                match status {
                    200 => Ok(()),
                    404 if read => Ok(()),
                    s => Err(format!("http_{s}")),
                }
            }
            Err(e) => Err(error_kind(&e)),
        };
        let micros = start.elapsed().as_micros().clamp(1, 60_000_000) as u64;
        match outcome {
            Ok(()) => {
                let h = if read {
                    &mut out.reads
                } else {
                    &mut out.writes
                };
                h.saturating_record(micros);
            }
            Err(kind) => *out.errors.entry(kind).or_default() += 1,
        }
        tally.done.fetch_add(1, Ordering::Relaxed);
    }
    out
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

/// Runs the benchmark; returns the summary as text or JSON.
pub fn run(args: &BenchArgs, endpoints: &Endpoints) -> Result<String, String> {
    if args.clients == 0 || args.requests == 0 || args.keys == 0 {
        return Err("--clients, --requests and --keys must be positive".into());
    }
    if !(0.0..=1.0).contains(&args.read_ratio) {
        return Err("--read-ratio must be between 0 and 1".into());
    }
    let rt = super::serve::runtime()?;
    rt.block_on(async {
        let client = endpoints
            .http_client()?
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(args.clients)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| e.to_string())?;
        let leader = find_leader(&client, &endpoints.endpoints).await?;
        let tally = Arc::new(Tally {
            done: AtomicU64::new(0),
            next: AtomicU64::new(0),
        });
        let bar = if args.quiet {
            indicatif::ProgressBar::hidden()
        } else {
            let bar = indicatif::ProgressBar::new(args.requests);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:40}] {pos}/{len} {per_sec} eta {eta}",
                )
                .map_err(|e| e.to_string())?
                .progress_chars("=> "),
            );
            bar
        };
        let start = Instant::now();
        let tasks: Vec<_> = (0..args.clients)
            .map(|i| {
                tokio::spawn(run_client(
                    client.clone(),
                    leader.clone(),
                    args.clone(),
                    tally.clone(),
                    0x5EED ^ i as u64,
                ))
            })
            .collect();
        let progress = {
            let (tally, bar) = (tally.clone(), bar.clone());
            tokio::spawn(async move {
                loop {
                    bar.set_position(tally.done.load(Ordering::Relaxed));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let mut writes = histogram();
        let mut reads = histogram();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        for t in tasks {
            let r = t.await.map_err(|e| format!("client task failed: {e}"))?;
            writes.add(&r.writes).map_err(|e| e.to_string())?;
            reads.add(&r.reads).map_err(|e| e.to_string())?;
            for (k, v) in r.errors {
                *errors.entry(k).or_default() += v;
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        progress.abort();
        bar.finish_and_clear();
        let ok = writes.len() + reads.len();
        let report = json!({
            "leader": leader,
            "clients": args.clients,
            "requests": args.requests,
            "value_size": args.value_size,
            "read_ratio": args.read_ratio,
            "elapsed_s": elapsed,
            "throughput_ops": ok as f64 / elapsed,
            "ok": ok,
            "errors": errors,
            "writes": summary(&writes),
            "reads": summary(&reads),
        });
        if args.json {
            return Ok(report.to_string());
        }
        let mut text = format!(
            "{ok} ok of {} requests in {elapsed:.2} s with {} clients: {:.0} ops/s\n",
            args.requests, args.clients, report["throughput_ops"].as_f64().unwrap_or(0.0)
        );
        for (name, h) in [("writes", &writes), ("reads", &reads)] {
            if h.is_empty() {
                continue;
            }
            let s = summary(h);
            text.push_str(&format!(
                "{name:<6}  n={:<8} p50={:.2}ms p90={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms\n",
                s["count"], s["p50_ms"].as_f64().unwrap_or(0.0), s["p90_ms"].as_f64().unwrap_or(0.0),
                s["p99_ms"].as_f64().unwrap_or(0.0), s["p999_ms"].as_f64().unwrap_or(0.0),
                s["max_ms"].as_f64().unwrap_or(0.0)
            ));
        }
        if errors.is_empty() {
            text.push_str("errors: none");
        } else {
            let list: Vec<String> = errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
            text.push_str(&format!("errors: {}", list.join(" ")));
        }
        Ok(text)
    })
}
