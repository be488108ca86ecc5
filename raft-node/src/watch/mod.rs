//! Watch streams (etcd's `Watch` service): many watches on one stream,
//! each delivering every event of its key range in revision order, exactly
//! once, with no gap.
//!
//! A stream's task follows the views the driver publishes after each batch
//! ([`SharedStore::subscribe`]). For every watcher it reads the events from
//! its next revision up to the view's revision out of the MVCC history
//! ([`Store::events`]) and sends them, then moves the watcher past them. So
//! a watcher on any member sees every committed revision of its range,
//! through leader changes and snapshot installs alike, and a watcher that
//! falls behind (a slow client: the stream's send buffer is bounded and its
//! task waits on it) catches up from the history without holding anything
//! back but its own stream. A watcher whose next revision was compacted
//! away is cancelled with `compact_revision`, as etcd does. A watcher far
//! behind reads the history a bounded number of revisions at a time, so its
//! catch-up never holds more than one response's worth of events.

mod metrics;

pub use metrics::WatchMetrics;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::Status;

use crate::api::pb::etcdserverpb::watch_create_request::FilterType;
use crate::api::pb::etcdserverpb::watch_request::RequestUnion;
use crate::api::pb::etcdserverpb::{
    ResponseHeader, WatchCreateRequest, WatchRequest, WatchResponse,
};
use crate::api::pb::mvccpb::event::EventType;
use crate::api::pb::mvccpb::Event;
use crate::mvcc::{KeyRange, MvccError, SharedStore, Store};

/// Most watchers on one stream.
pub const MAX_WATCHERS_PER_STREAM: usize = 10_000;

/// Above this many bytes of events, a response ends at the next revision
/// boundary (and a single revision larger than this is split into
/// fragments when the watcher asked for them).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Most revisions read from the history for one watcher at a time.
const MAX_REVISIONS_PER_READ: i64 = 1_000;

/// The watch id etcd answers progress requests with.
const PROGRESS_WATCH_ID: i64 = -1;

/// How a stream stamps its responses.
pub trait Headers: Send + Sync + 'static {
    /// A header at revision `revision`.
    fn header(&self, revision: i64) -> ResponseHeader;
}

struct Watcher {
    range: KeyRange,
    /// The first revision not delivered yet.
    next_rev: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    fragment: bool,
    /// Whether anything was sent since the last progress notification.
    active: bool,
}

/// One watch stream.
pub struct WatchStream<H: Headers> {
    store: SharedStore,
    headers: Arc<H>,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    progress_every: Duration,
    metrics: Arc<WatchMetrics>,
    permit: Option<Permit>,
}

/// Decides whether a stream may watch `key`..`range_end` (auth: read
/// permission on the whole range), on the view the watch is created at;
/// `Err` holds the reason the watch is cancelled with.
pub type Permit = Box<dyn Fn(&Store, &[u8], &[u8]) -> Result<(), String> + Send + Sync>;

impl<H: Headers> Drop for WatchStream<H> {
    fn drop(&mut self) {
        self.metrics.add_streams(-1);
        self.metrics.add_watchers(-(self.watchers.len() as i64));
    }
}

/// Counts a stream's watchers as slow while it waits for its client.
struct SlowGuard<'a> {
    metrics: &'a WatchMetrics,
    watchers: i64,
}

impl Drop for SlowGuard<'_> {
    fn drop(&mut self) {
        self.metrics.add_slow_watchers(-self.watchers);
    }
}

impl<H: Headers> WatchStream<H> {
    /// A stream over `store` that sends its responses to `out`.
    pub fn new(
        store: SharedStore,
        headers: Arc<H>,
        out: mpsc::Sender<Result<WatchResponse, Status>>,
        progress_every: Duration,
        metrics: Arc<WatchMetrics>,
    ) -> Self {
        metrics.add_streams(1);
        WatchStream {
            store,
            headers,
            out,
            watchers: BTreeMap::new(),
            next_id: 0,
            progress_every,
            metrics,
            permit: None,
        }
    }

    /// Refuses to create watches that `permit` refuses.
    pub fn with_permit(mut self, permit: Permit) -> Self {
        self.permit = Some(permit);
        self
    }

    /// Serves the stream until the client closes it or goes away.
    pub async fn run<S>(mut self, mut requests: S)
    where
        S: futures_util::Stream<Item = Result<WatchRequest, Status>> + Unpin + Send,
    {
        use futures_util::StreamExt;
        let mut views = self.store.subscribe();
        let mut progress = tokio::time::interval(self.progress_every);
        progress.tick().await;
        // As etcd: a client that closes its side still gets its events,
        // until it hangs up.
        let mut requests_open = true;
        loop {
            let out = self.out.clone();
            let sent = tokio::select! {
                req = requests.next(), if requests_open => match req {
                    Some(Ok(req)) => self.handle(req).await,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "watch stream ended by a bad request");
                        let _ = self.out.send(Err(e)).await;
                        return;
                    }
                    None => {
                        requests_open = false;
                        Ok(())
                    }
                },
                () = out.closed() => return,
                changed = views.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let view = views.borrow_and_update().clone();
                    self.deliver_all(&view).await
                }
                _ = progress.tick() => self.notify_progress().await,
            };
            if sent.is_err() {
                // The client is gone.
                return;
            }
        }
    }

    async fn send(&self, resp: WatchResponse) -> Result<(), ()> {
        use tokio::sync::mpsc::error::TrySendError;
        let events = resp.events.len() as u64;
        let resp = match self.out.try_send(Ok(resp)) {
            Ok(()) => {
                self.metrics.add_events_sent(events);
                return Ok(());
            }
            Err(TrySendError::Closed(_)) => return Err(()),
            Err(TrySendError::Full(resp)) => resp,
        };
        // The client is not reading: wait for it, counted as slow. Nothing
        // else waits on this stream; other streams and apply go on.
        let watchers = self.watchers.len() as i64;
        self.metrics.add_slow_watchers(watchers);
        let _slow = SlowGuard {
            metrics: &self.metrics,
            watchers,
        };
        self.out.send(resp).await.map_err(|_| ())?;
        self.metrics.add_events_sent(events);
        Ok(())
    }

    async fn handle(&mut self, req: WatchRequest) -> Result<(), ()> {
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                if self.watchers.remove(&c.watch_id).is_some() {
                    self.metrics.add_watchers(-1);
                    let view = self.store.get();
                    self.send(WatchResponse {
                        header: Some(self.headers.header(view.revision())),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    })
                    .await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Everything up to the current view is delivered first, so
                // the progress revision promises no older event will come.
                let view = self.store.get();
                self.deliver_all(&view).await?;
                self.send(WatchResponse {
                    header: Some(self.headers.header(view.revision())),
                    watch_id: PROGRESS_WATCH_ID,
                    ..Default::default()
                })
                .await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, c: WatchCreateRequest) -> Result<(), ()> {
        let view = self.store.get();
        let header = Some(self.headers.header(view.revision()));
        let refuse = |id: i64, why: &str| WatchResponse {
            header,
            watch_id: id,
            created: true,
            canceled: true,
            cancel_reason: why.to_string(),
            ..Default::default()
        };
        let id = if c.watch_id != 0 {
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        if self.watchers.contains_key(&id) {
            return self
                .send(refuse(
                    id,
                    "mvcc: duplicate watch ID provided on the WatchStream",
                ))
                .await;
        }
        if self.watchers.len() >= MAX_WATCHERS_PER_STREAM {
            return self
                .send(refuse(id, "etcdserver: too many watchers on this stream"))
                .await;
        }
        if c.key.is_empty() {
            return self
                .send(refuse(id, "etcdserver: key is not provided"))
                .await;
        }
        if let Some(Err(why)) = self.permit.as_ref().map(|p| p(&view, &c.key, &c.range_end)) {
            return self.send(refuse(id, &why)).await;
        }
        let next_rev = if c.start_revision > 0 {
            c.start_revision
        } else {
            view.revision() + 1
        };
        let filters: Vec<i32> = c.filters.clone();
        let watcher = Watcher {
            range: KeyRange::new(&c.key, &c.range_end),
            next_rev,
            prev_kv: c.prev_kv,
            no_put: filters.contains(&(FilterType::Noput as i32)),
            no_delete: filters.contains(&(FilterType::Nodelete as i32)),
            progress_notify: c.progress_notify,
            fragment: c.fragment,
            active: false,
        };
        self.watchers.insert(id, watcher);
        self.metrics.add_watchers(1);
        self.send(WatchResponse {
            header,
            watch_id: id,
            created: true,
            ..Default::default()
        })
        .await?;
        // Deliver history (a start revision in the past) at once.
        self.deliver(id, &view).await
    }

    async fn deliver_all(&mut self, view: &Store) -> Result<(), ()> {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            self.deliver(id, view).await?;
        }
        Ok(())
    }

    /// Sends watcher `id` every event up to `view`'s revision, reading the
    /// history [`MAX_REVISIONS_PER_READ`] revisions at a time.
    async fn deliver(&mut self, id: i64, view: &Store) -> Result<(), ()> {
        if view.is_restoring() {
            // No events to read until the restored state is published.
            return Ok(());
        }
        while let Some(w) = self.watchers.get(&id) {
            if w.next_rev > view.revision() {
                break;
            }
            let to = view
                .revision()
                .min(w.next_rev.saturating_add(MAX_REVISIONS_PER_READ - 1));
            self.deliver_upto(id, view, to).await?;
        }
        Ok(())
    }

    /// Sends watcher `id` its events from its next revision to `to`, and
    /// moves it past `to` (or cancels it if that history was compacted).
    async fn deliver_upto(&mut self, id: i64, view: &Store, to: i64) -> Result<(), ()> {
        let Some(w) = self.watchers.get(&id) else {
            return Ok(());
        };
        let events = match view.events(&w.range, w.next_rev, to, w.prev_kv) {
            Ok(events) => events,
            Err(e) => {
                // Compacted history cancels the watch as etcd does; any other
                // error is not reachable with a consistent view, and is
                // cancelled too rather than retried forever.
                let compact_revision = if e == MvccError::Compacted {
                    view.compact_revision()
                } else {
                    tracing::error!(watch = id, error = %e, "cannot read watch events; cancelling the watch");
                    0
                };
                self.watchers.remove(&id);
                self.metrics.add_watchers(-1);
                return self
                    .send(WatchResponse {
                        header: Some(self.headers.header(to)),
                        watch_id: id,
                        canceled: true,
                        compact_revision,
                        cancel_reason: e.message(),
                        ..Default::default()
                    })
                    .await;
            }
        };
        let (no_put, no_delete, fragment) = (w.no_put, w.no_delete, w.fragment);
        let events: Vec<Event> = events
            .into_iter()
            .filter(|e| {
                let put = e.r#type == EventType::Put as i32;
                !(put && no_put || !put && no_delete)
            })
            .collect();
        if let Some(w) = self.watchers.get_mut(&id) {
            w.next_rev = to + 1;
            w.active |= !events.is_empty();
        }
        for (batch, more) in batches(events, fragment) {
            self.send(WatchResponse {
                header: Some(self.headers.header(to)),
                watch_id: id,
                fragment: more,
                events: batch,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }

    async fn notify_progress(&mut self) -> Result<(), ()> {
        let view = self.store.get();
        self.deliver_all(&view).await?;
        let idle: Vec<i64> = self
            .watchers
            .iter_mut()
            .filter_map(|(&id, w)| {
                let idle = w.progress_notify && !w.active;
                w.active = false;
                idle.then_some(id)
            })
            .collect();
        for id in idle {
            self.send(WatchResponse {
                header: Some(self.headers.header(view.revision())),
                watch_id: id,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }
}

/// Splits events into responses of about [`MAX_RESPONSE_BYTES`], cutting
/// only between revisions; with `fragment`, a revision larger than that is
/// cut too, every piece but its last marked as a fragment. Returns each
/// batch with its fragment flag.
fn batches(events: Vec<Event>, fragment: bool) -> Vec<(Vec<Event>, bool)> {
    use prost::Message as _;
    let mut out = Vec::new();
    let mut batch: Vec<Event> = Vec::new();
    let mut bytes = 0;
    let rev_of = |e: &Event| e.kv.as_ref().map_or(0, |kv| kv.mod_revision);
    for e in events {
        let size = e.encoded_len();
        let boundary = batch.last().is_some_and(|last| rev_of(last) != rev_of(&e));
        if bytes + size > MAX_RESPONSE_BYTES && !batch.is_empty() && (boundary || fragment) {
            out.push((std::mem::take(&mut batch), !boundary));
            bytes = 0;
        }
        bytes += size;
        batch.push(e);
    }
    if !batch.is_empty() {
        out.push((batch, false));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pb::mvccpb::KeyValue;

    fn ev(rev: i64, size: usize) -> Event {
        Event {
            r#type: 0,
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                mod_revision: rev,
                value: vec![0; size],
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn batches_cut_between_revisions_and_fragment_only_when_asked() {
        let big = MAX_RESPONSE_BYTES / 2;
        let events = vec![ev(2, big), ev(2, big), ev(2, big), ev(3, 10)];
        let whole = batches(events.clone(), false);
        assert_eq!(whole.len(), 2, "revision 2 stays in one response");
        assert_eq!(whole[0].0.len(), 3);
        assert!(whole.iter().all(|(_, f)| !f));
        let pieces = batches(events, true);
        assert!(pieces.len() >= 3);
        assert!(pieces[0].1, "a cut inside revision 2 is a fragment");
        assert!(!pieces.last().unwrap().1);
    }
}
