//! etcd's `KV` service: Range, Put, DeleteRange, Txn, Compact.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::status::from_mvcc;
use crate::api::etcd::EtcdApi;
use crate::api::pb::etcdserverpb::kv_server::Kv;
use crate::api::pb::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use crate::api::pb::raftnodepb::internal_request::Request as Internal;
use crate::auth::{Access, AuthInfo, Credentials};
use crate::mvcc::{
    check_txn, txn_is_read_only, Command, MvccError, RequestId, Response as Applied,
    REQUEST_ID_HEADER,
};

/// The `KV` service.
pub struct KvService(pub Arc<EtcdApi>);

fn unexpected(what: &str) -> Status {
    Status::internal(format!("etcdserver: applied entry was not a {what}"))
}

impl KvService {
    /// Serves a range for `caller` (also used by the JSON gateway).
    pub async fn range(
        &self,
        creds: &Credentials,
        req: RangeRequest,
    ) -> Result<RangeResponse, Status> {
        if req.key.is_empty() {
            return Err(from_mvcc(&MvccError::EmptyKey));
        }
        let view = if req.serializable {
            self.0.driver.store()
        } else {
            self.0.read_barrier().await?
        };
        // Checked on the view served: a token invalidated or a permission
        // revoked before the read barrier is honoured on every member.
        let auth = view.auth();
        let caller = creds.resolve(auth).map_err(|e| e.status())?;
        auth.check_range(caller.as_ref(), &req.key, &req.range_end, Access::Read)
            .map_err(|e| e.status())?;
        let mut resp = view.range(&req).map_err(|e| from_mvcc(&e))?;
        resp.header = self.0.header(resp.header.take().map(|mut h| {
            h.raft_term = 0;
            h
        }));
        Ok(resp)
    }

    /// Serves a put (at most once per request id `id`).
    pub async fn put(
        &self,
        caller: Option<&AuthInfo>,
        req: PutRequest,
        id: Option<RequestId>,
    ) -> Result<PutResponse, Status> {
        if req.key.is_empty() {
            return Err(from_mvcc(&MvccError::EmptyKey));
        }
        match self
            .0
            .write_as(caller, Command(Internal::Put(req)), id)
            .await?
        {
            Applied::Put(mut r) => {
                r.header = self.0.header(r.header);
                Ok(r)
            }
            _ => Err(unexpected("put")),
        }
    }

    /// Serves a delete (at most once per request id `id`).
    pub async fn delete_range(
        &self,
        caller: Option<&AuthInfo>,
        req: DeleteRangeRequest,
        id: Option<RequestId>,
    ) -> Result<DeleteRangeResponse, Status> {
        if req.key.is_empty() {
            return Err(from_mvcc(&MvccError::EmptyKey));
        }
        match self
            .0
            .write_as(caller, Command(Internal::DeleteRange(req)), id)
            .await?
        {
            Applied::DeleteRange(mut r) => {
                r.header = self.0.header(r.header);
                Ok(r)
            }
            _ => Err(unexpected("delete")),
        }
    }

    /// Serves a transaction. One that only reads is served like a range
    /// (linearizable, without a log entry), as etcd does; one that writes is
    /// applied at most once per request id `id`.
    pub async fn txn(
        &self,
        creds: &Credentials,
        req: TxnRequest,
        id: Option<RequestId>,
    ) -> Result<TxnResponse, Status> {
        check_txn(&req).map_err(|e| from_mvcc(&e))?;
        if txn_is_read_only(&req) {
            let view = self.0.read_barrier().await?;
            let auth = view.auth();
            let caller = creds.resolve(auth).map_err(|e| e.status())?;
            auth.check_txn(caller.as_ref(), &req)
                .map_err(|e| e.status())?;
            let mut resp = view.read_only_txn(&req).map_err(|e| from_mvcc(&e))?;
            resp.header = self.0.header(resp.header.map(|mut h| {
                h.raft_term = 0;
                h
            }));
            fill_headers(&self.0, &mut resp);
            return Ok(resp);
        }
        let caller = creds
            .resolve(self.0.driver.store().auth())
            .map_err(|e| e.status())?;
        let mut resp = match self
            .0
            .write_as(caller.as_ref(), Command(Internal::Txn(req)), id)
            .await?
        {
            Applied::Txn(r) => r,
            _ => return Err(unexpected("txn")),
        };
        resp.header = self.0.header(resp.header);
        fill_headers(&self.0, &mut resp);
        Ok(resp)
    }

    /// Serves a compaction.
    pub async fn compact(
        &self,
        caller: Option<&AuthInfo>,
        req: CompactionRequest,
    ) -> Result<CompactionResponse, Status> {
        match self
            .0
            .write_as(caller, Command(Internal::Compaction(req)), None)
            .await?
        {
            Applied::Compaction(mut r) => {
                r.header = self.0.header(r.header);
                Ok(r)
            }
            _ => Err(unexpected("compaction")),
        }
    }
}

/// Sets the cluster and member ids in the headers of a txn's responses.
fn fill_headers(api: &EtcdApi, t: &mut TxnResponse) {
    use crate::api::pb::etcdserverpb::response_op::Response as R;
    for op in &mut t.responses {
        match &mut op.response {
            Some(R::ResponseRange(r)) => r.header = api.header(r.header.take()),
            Some(R::ResponsePut(r)) => r.header = api.header(r.header.take()),
            Some(R::ResponseDeleteRange(r)) => r.header = api.header(r.header.take()),
            Some(R::ResponseTxn(r)) => {
                r.header = api.header(r.header.take());
                fill_headers(api, r);
            }
            None => {}
        }
    }
}

/// The request id in a call's `request-id` metadata (`CLIENT/SEQ`), which
/// etcd's clients leave unset.
fn request_id<T>(r: &Request<T>) -> Result<Option<RequestId>, Status> {
    let Some(v) = r.metadata().get(REQUEST_ID_HEADER) else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| Status::invalid_argument("etcdserver: request-id must be CLIENT/SEQ"))?;
    text.parse()
        .map(Some)
        .map_err(|e| Status::invalid_argument(format!("etcdserver: {e}")))
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, r: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let creds = self.0.credentials_of(&r);
        KvService::range(self, &creds, r.into_inner())
            .await
            .map(Response::new)
    }

    async fn put(&self, r: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let id = request_id(&r)?;
        let caller = self.0.caller_of(&r)?;
        KvService::put(self, caller.as_ref(), r.into_inner(), id)
            .await
            .map(Response::new)
    }

    async fn delete_range(
        &self,
        r: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let id = request_id(&r)?;
        let caller = self.0.caller_of(&r)?;
        KvService::delete_range(self, caller.as_ref(), r.into_inner(), id)
            .await
            .map(Response::new)
    }

    async fn txn(&self, r: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let id = request_id(&r)?;
        let creds = self.0.credentials_of(&r);
        KvService::txn(self, &creds, r.into_inner(), id)
            .await
            .map(Response::new)
    }

    async fn compact(
        &self,
        r: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let caller = self.0.caller_of(&r)?;
        KvService::compact(self, caller.as_ref(), r.into_inner())
            .await
            .map(Response::new)
    }
}
