//! `etcd-load`: the workload of `raft-node bench`, against etcd over gRPC.
//!
//! `--clients` tasks, each with its own gRPC connection to the leader and one
//! request in flight, send `--requests` requests in total: puts of
//! `--value-size` bytes, or linearizable ranges (etcd's default) with
//! probability `--read-ratio`, on keys drawn uniformly from `--keys`. Prints
//! the same JSON summary as `raft-node bench --json`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use etcd_client::{Client, ConnectOptions};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde_json::json;

#[derive(Debug, Clone, Parser)]
struct Args {
    /// Comma-separated client URLs of the etcd members.
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    #[arg(long, default_value_t = 10_000)]
    requests: u64,
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    #[arg(long, default_value_t = 1_000)]
    keys: u64,
    #[arg(long, default_value_t = 0.0)]
    read_ratio: f64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static bounds are valid")
}

/// The endpoint of the current leader.
async fn find_leader(endpoints: &[String]) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        for ep in endpoints {
            let Ok(mut c) = Client::connect([ep.as_str()], None).await else {
                continue;
            };
            let Ok(s) = c.status().await else { continue };
            let me = s.header().map(|h| h.member_id());
            if me == Some(s.leader()) {
                return Ok(ep.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("no etcd member reported itself leader".into())
}

struct Out {
    writes: Histogram<u64>,
    reads: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

async fn client_task(mut c: Client, args: Args, next: Arc<AtomicU64>, seed: u64) -> Out {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut out = Out {
        writes: histogram(),
        reads: histogram(),
        errors: BTreeMap::new(),
    };
    let value = vec![b'v'; args.value_size];
    while next.fetch_add(1, Ordering::Relaxed) < args.requests {
        let key = format!("bench-{:08}", rng.gen_range(0..args.keys.max(1)));
        let read = rng.gen_bool(args.read_ratio.clamp(0.0, 1.0));
        let start = Instant::now();
        let r = if read {
            c.get(key, None).await.map(|_| ())
        } else {
            c.put(key, value.clone(), None).await.map(|_| ())
        };
        let us = start.elapsed().as_micros().clamp(1, 60_000_000) as u64;
        match r {
            Ok(()) => {
                let h = if read { &mut out.reads } else { &mut out.writes };
                h.saturating_record(us);
            }
            Err(e) => {
                let kind = match e {
                    etcd_client::Error::GRpcStatus(s) => format!("grpc_{:?}", s.code()),
                    _ => "transport".into(),
                };
                *out.errors.entry(kind).or_default() += 1;
            }
        }
    }
    out
}

fn summary(h: &Histogram<u64>) -> serde_json::Value {
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

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    let leader = find_leader(&args.endpoints).await?;
    let mut conns = Vec::new();
    for _ in 0..args.clients {
        let opts = ConnectOptions::new().with_timeout(Duration::from_secs(30));
        conns.push(
            Client::connect([leader.as_str()], Some(opts))
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(client_task(c, args.clone(), next.clone(), 0x5EED ^ i as u64)))
        .collect();
    let (mut writes, mut reads) = (histogram(), histogram());
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        let o = t.await.map_err(|e| e.to_string())?;
        writes.add(&o.writes).map_err(|e| e.to_string())?;
        reads.add(&o.reads).map_err(|e| e.to_string())?;
        for (k, v) in o.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
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
    println!("{report}");
    Ok(())
}
