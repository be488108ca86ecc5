//! The fault suite's watch checker: one watch stream per node on the
//! workload's keys (prefix `k`) from revision 1, through etcd's gRPC API
//! with the real `etcd-client` crate. A stream whose node goes away (killed,
//! paused, partitioned, removed) is re-created on the same node from its
//! next revision, as etcd clients do. At the end each stream's events must
//! be exactly the final history's events on those keys from revision 1 up
//! to the last revision the stream confirmed (by an event or a progress
//! answer): in order, without a gap or a duplicate.
//!
//! With client TLS (`https://` URLs) every connection takes the cluster's
//! [`TlsOptions`] (its CA and client certificate, see
//! [`crate::cluster::ClientTls::etcd_options`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, TlsOptions, WatchOptions};
use tokio::task::JoinHandle;

/// One event as a stream delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its revision.
    pub rev: i64,
    /// The key.
    pub key: Vec<u8>,
    /// Put (or delete).
    pub put: bool,
    /// The value (empty for a delete).
    pub value: Vec<u8>,
}

/// What one stream delivered.
#[derive(Debug, Default)]
pub struct Stream {
    /// The node's client URL.
    pub url: String,
    /// Events in delivery order.
    pub events: Vec<Seen>,
    /// Every revision up to this one was delivered (events or progress).
    pub confirmed: i64,
    /// Times the stream was re-created.
    pub reconnects: u64,
}

/// The running watchers.
pub struct Watchers {
    tasks: Vec<JoinHandle<Stream>>,
    stop: Arc<AtomicBool>,
    until: Arc<AtomicI64>,
}

const PREFIX: &str = "k";
const PREFIX_END: &str = "l";

async fn connect(url: &str, tls: Option<&TlsOptions>) -> Option<Client> {
    let options =
        crate::grpc_client::connect_options(Duration::from_secs(1), Duration::from_secs(2), tls);
    let connect = Client::connect([url], Some(options));
    tokio::time::timeout(Duration::from_secs(2), connect)
        .await
        .ok()?
        .ok()
}

fn seen(e: &etcd_client::Event) -> Option<Seen> {
    let kv = e.kv()?;
    Some(Seen {
        rev: kv.mod_revision(),
        key: kv.key().to_vec(),
        put: e.event_type() == EventType::Put,
        value: kv.value().to_vec(),
    })
}

async fn watch_loop(
    url: String,
    tls: Option<TlsOptions>,
    stop: Arc<AtomicBool>,
    until: Arc<AtomicI64>,
) -> Stream {
    let mut out = Stream {
        url: url.clone(),
        ..Stream::default()
    };
    let mut first = true;
    'reconnect: while !stop.load(Ordering::Relaxed) {
        if !first {
            out.reconnects += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        first = false;
        let Some(mut client) = connect(&url, tls.as_ref()).await else {
            continue;
        };
        let opts = WatchOptions::new()
            .with_range(PREFIX_END)
            .with_start_revision(out.confirmed + 1);
        let created =
            tokio::time::timeout(Duration::from_secs(3), client.watch(PREFIX, Some(opts)));
        let Ok(Ok(mut stream)) = created.await else {
            continue;
        };
        while !stop.load(Ordering::Relaxed) {
            let target = until.load(Ordering::Relaxed);
            if target > 0 && stream.request_progress().await.is_err() {
                continue 'reconnect;
            }
            let resp = match tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
                Err(_) if target > 0 => continue 'reconnect,
                Err(_) => continue,
                Ok(Ok(Some(resp))) => resp,
                Ok(_) => continue 'reconnect,
            };
            if resp.canceled() {
                tracing::warn!(
                    url,
                    reason = resp.cancel_reason(),
                    "watch cancelled; re-creating"
                );
                continue 'reconnect;
            }
            for e in resp.events() {
                if let Some(s) = seen(e) {
                    out.confirmed = out.confirmed.max(s.rev);
                    out.events.push(s);
                }
            }
            let at = resp.header().map_or(0, |h| h.revision());
            if resp.events().is_empty() && !resp.created() {
                // A progress answer: everything up to `at` was delivered.
                out.confirmed = out.confirmed.max(at);
                if target > 0 && at >= target {
                    return out;
                }
            }
        }
    }
    out
}

impl Watchers {
    /// Starts one watcher per URL, connecting with `tls` if given.
    pub fn start(urls: &[String], tls: Option<&TlsOptions>) -> Watchers {
        let stop = Arc::new(AtomicBool::new(false));
        let until = Arc::new(AtomicI64::new(0));
        let tasks = urls
            .iter()
            .map(|u| {
                tokio::spawn(watch_loop(
                    u.clone(),
                    tls.cloned(),
                    stop.clone(),
                    until.clone(),
                ))
            })
            .collect();
        Watchers { tasks, stop, until }
    }

    /// Asks every stream to confirm revision `final_rev`, waits up to
    /// `patience` for them, and returns what each delivered.
    pub async fn finish(self, final_rev: i64, patience: Duration) -> Vec<Stream> {
        self.until.store(final_rev, Ordering::Relaxed);
        let deadline = Instant::now() + patience;
        let mut out = Vec::new();
        for mut t in self.tasks {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, &mut t).await {
                Ok(Ok(s)) => out.push(s),
                _ => {
                    // Out of time: stop it and take what it has.
                    self.stop.store(true, Ordering::Relaxed);
                    if let Ok(s) = t.await {
                        out.push(s);
                    }
                }
            }
        }
        out
    }
}

/// The store's revision as the first of `urls` that answers reports it.
pub async fn current_revision(urls: &[String], tls: Option<&TlsOptions>) -> Result<i64, String> {
    for url in urls {
        let Some(mut client) = connect(url, tls).await else {
            continue;
        };
        if let Ok(Ok(r)) =
            tokio::time::timeout(Duration::from_secs(5), client.get(PREFIX, None)).await
        {
            if let Some(h) = r.header() {
                return Ok(h.revision());
            }
        }
    }
    Err("no node answered a read of the revision".into())
}

/// The final history of the watched keys: every event from revision 1 to
/// `final_rev`, replayed by the node at `url`.
pub async fn history(
    url: &str,
    final_rev: i64,
    tls: Option<&TlsOptions>,
) -> Result<BTreeMap<i64, Vec<Seen>>, String> {
    let mut client = connect(url, tls)
        .await
        .ok_or_else(|| format!("cannot connect to {url}"))?;
    let opts = WatchOptions::new()
        .with_range(PREFIX_END)
        .with_start_revision(1);
    let mut stream = client
        .watch(PREFIX, Some(opts))
        .await
        .map_err(|e| format!("history watch on {url}: {e}"))?;
    let mut out: BTreeMap<i64, Vec<Seen>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        stream.request_progress().await.map_err(|e| e.to_string())?;
        let left = deadline.saturating_duration_since(Instant::now());
        let resp = tokio::time::timeout(left, stream.message())
            .await
            .map_err(|_| "history replay timed out".to_string())?
            .map_err(|e| e.to_string())?
            .ok_or("history replay ended")?;
        if resp.canceled() {
            return Err(format!(
                "history replay cancelled: {}",
                resp.cancel_reason()
            ));
        }
        for e in resp.events() {
            if let Some(s) = seen(e) {
                out.entry(s.rev).or_default().push(s);
            }
        }
        let at = resp.header().map_or(0, |h| h.revision());
        if resp.events().is_empty() && !resp.created() && at >= final_rev {
            return Ok(out);
        }
    }
}

/// Checks every stream against the history; a one-line summary per stream,
/// or the first discrepancy.
pub fn check(
    streams: &[Stream],
    history: &BTreeMap<i64, Vec<Seen>>,
) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    for s in streams {
        let want: Vec<&Seen> = history
            .range(..=s.confirmed)
            .flat_map(|(_, events)| events)
            .collect();
        let got: Vec<&Seen> = s.events.iter().collect();
        if got != want {
            let at = got
                .iter()
                .zip(&want)
                .position(|(g, w)| g != w)
                .unwrap_or(got.len().min(want.len()));
            return Err(format!(
                "watch stream on {} differs from the history at event {at} of {} (want {}): got {:?}, want {:?}",
                s.url,
                got.len(),
                want.len(),
                got.get(at),
                want.get(at)
            ));
        }
        lines.push(format!(
            "watch on {}: {} events up to revision {}, {} re-creations",
            s.url,
            s.events.len(),
            s.confirmed,
            s.reconnects
        ));
    }
    Ok(lines)
}
