//! etcd's v3 JSON gateway: `POST /v3/...` with a JSON body in the proto3
//! JSON mapping (`bytes` as base64, 64-bit integers as strings, etcd's field
//! names), answered in the same mapping, so `curl` users of etcd keep working.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::de::DeserializeOwned;

mod streams;
use serde::Serialize;
use tonic::{Code, Status};

use super::etcd::EtcdApi;
use super::grpc::cluster::ClusterService;
use super::grpc::kv::KvService;
use super::grpc::lease::LeaseService;
use super::grpc::maintenance::MaintenanceService;
use super::pb::etcdserverpb::cluster_server::Cluster;
use super::pb::etcdserverpb::lease_server::Lease;
use super::pb::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseLeasesRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, MemberListRequest, PutRequest, RangeRequest,
    StatusRequest, TxnRequest,
};

/// The gateway's routes.
pub fn router(api: Arc<EtcdApi>) -> Router {
    Router::new()
        .route("/v3/kv/range", post(range))
        .route("/v3/kv/put", post(put))
        .route("/v3/kv/deleterange", post(delete_range))
        .route("/v3/kv/txn", post(txn))
        .route("/v3/kv/compaction", post(compaction))
        .route("/v3/maintenance/status", post(status))
        .route("/v3/cluster/member/list", post(member_list))
        .route("/v3/watch", post(streams::watch))
        .route("/v3/lease/grant", post(lease_grant))
        .route("/v3/lease/revoke", post(lease_revoke))
        .route("/v3/kv/lease/revoke", post(lease_revoke))
        .route("/v3/lease/keepalive", post(streams::lease_keep_alive))
        .route("/v3/lease/timetolive", post(lease_time_to_live))
        .route("/v3/kv/lease/timetolive", post(lease_time_to_live))
        .route("/v3/lease/leases", post(lease_leases))
        .route("/v3/kv/lease/leases", post(lease_leases))
        .with_state(api)
}

/// The HTTP status grpc-gateway gives a gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            StatusCode::BAD_REQUEST
        }
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// etcd's gateway error body.
fn error(s: &Status) -> Response {
    let body = serde_json::json!({
        "error": s.message(),
        "code": s.code() as i32,
        "message": s.message(),
    });
    json(http_status(s.code()), body.to_string().into_bytes())
}

fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| Status::invalid_argument(format!("bad JSON body: {e}")))
}

fn answer<T: Serialize>(r: Result<T, Status>) -> Response {
    match r {
        Ok(v) => match serde_json::to_vec(&v) {
            Ok(b) => json(StatusCode::OK, b),
            Err(e) => error(&Status::internal(e.to_string())),
        },
        Err(s) => error(&s),
    }
}

macro_rules! gateway_call {
    ($name:ident, $req:ty, |$api:ident, $r:ident| $call:expr) => {
        async fn $name(State($api): State<Arc<EtcdApi>>, body: Bytes) -> Response {
            if body.len() > $api.max_request_bytes {
                return error(&Status::invalid_argument(
                    "etcdserver: request is too large",
                ));
            }
            let $r: $req = match parse(&body) {
                Ok(r) => r,
                Err(s) => return error(&s),
            };
            answer($call.await)
        }
    };
}

gateway_call!(range, RangeRequest, |api, r| KvService(api).range(r));
gateway_call!(put, PutRequest, |api, r| KvService(api).put(r, None));
gateway_call!(delete_range, DeleteRangeRequest, |api, r| KvService(api)
    .delete_range(r, None));
gateway_call!(txn, TxnRequest, |api, r| KvService(api).txn(r, None));
gateway_call!(compaction, CompactionRequest, |api, r| KvService(api)
    .compact(r));
gateway_call!(status, StatusRequest, |api, _r| async move {
    Ok::<_, Status>(MaintenanceService(api).status())
});
gateway_call!(member_list, MemberListRequest, |api, r| async move {
    ClusterService(api)
        .member_list(tonic::Request::new(r))
        .await
        .map(tonic::Response::into_inner)
});

/// A unary call of a tonic service, answered with its message.
macro_rules! unary {
    ($svc:expr, $method:ident, $r:expr) => {
        async move {
            $svc.$method(tonic::Request::new($r))
                .await
                .map(tonic::Response::into_inner)
        }
    };
}

gateway_call!(lease_grant, LeaseGrantRequest, |api, r| unary!(
    LeaseService(api),
    lease_grant,
    r
));
gateway_call!(lease_revoke, LeaseRevokeRequest, |api, r| unary!(
    LeaseService(api),
    lease_revoke,
    r
));
gateway_call!(lease_time_to_live, LeaseTimeToLiveRequest, |api, r| unary!(
    LeaseService(api),
    lease_time_to_live,
    r
));
gateway_call!(lease_leases, LeaseLeasesRequest, |api, r| unary!(
    LeaseService(api),
    lease_leases,
    r
));
