//! etcd's `Watch` service: one task per stream (see [`crate::watch`]).

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::api::etcd::EtcdApi;
use crate::api::pb::etcdserverpb::watch_server::Watch;
use crate::api::pb::etcdserverpb::{ResponseHeader, WatchRequest, WatchResponse};
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

type Responses = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = Responses;

    async fn watch(
        &self,
        r: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let stream = WatchStream::new(
            self.0.driver.shared_store().clone(),
            self.0.clone(),
            tx,
            self.0.watch_progress_interval,
            self.0.watch_metrics.clone(),
        );
        tokio::spawn(stream.run(r.into_inner()));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
