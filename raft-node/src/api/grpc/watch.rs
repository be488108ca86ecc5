//! etcd's `Watch` service: one task per stream (see [`crate::watch`]).

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::api::etcd::EtcdApi;
use crate::api::pb::etcdserverpb::watch_server::Watch;
use crate::api::pb::etcdserverpb::{ResponseHeader, WatchRequest, WatchResponse};
use crate::auth::{Access, AuthInfo};
use crate::watch::{Headers, WatchStream};

/// Responses a stream buffers before its task waits for the client.
const STREAM_BUFFER: usize = 64;

/// The `Watch` service.
pub struct WatchService(pub Arc<EtcdApi>);

impl Headers for EtcdApi {
    fn header(&self, revision: i64) -> ResponseHeader {
        self.header(Some(ResponseHeader {
            revision,
            ..Default::default()
        }))
        .unwrap_or_default()
    }
}

/// A watch stream for `caller`: with auth on, each watch needs read
/// permission on its whole range when it is created (else it is cancelled
/// with `permission denied`, as etcd does).
pub fn watch_stream(
    api: &Arc<EtcdApi>,
    caller: Option<AuthInfo>,
    tx: tokio::sync::mpsc::Sender<Result<WatchResponse, Status>>,
) -> WatchStream<EtcdApi> {
    WatchStream::new(
        api.driver.shared_store().clone(),
        api.clone(),
        tx,
        api.watch_progress_interval,
        api.watch_metrics.clone(),
    )
    .with_permit(Box::new(move |view, key, end| {
        view.auth()
            .check_range(caller.as_ref(), key, end, Access::Read)
            .map_err(|e| e.message().to_string())
    }))
}

type Responses = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = Responses;

    async fn watch(
        &self,
        r: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.0.caller_of(&r)?;
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let stream = watch_stream(&self.0, caller, tx);
        tokio::spawn(stream.run(r.into_inner()));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
