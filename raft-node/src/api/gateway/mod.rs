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
use super::grpc::auth::AuthService;
use super::grpc::cluster::ClusterService;
use super::grpc::kv::KvService;
use super::grpc::lease::LeaseService;
use super::grpc::maintenance::MaintenanceService;
use super::pb::etcdserverpb::auth_server::Auth;
use super::pb::etcdserverpb::cluster_server::Cluster;
use super::pb::etcdserverpb::kv_server::Kv;
use super::pb::etcdserverpb::lease_server::Lease;
use super::pb::etcdserverpb::maintenance_server::Maintenance;
use super::pb::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthStatusRequest, AuthenticateRequest,
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseLeasesRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, MemberListRequest, PutRequest, RangeRequest,
    StatusRequest, TxnRequest,
};
use crate::auth::AuthInfo;
use crate::client_port::ClientIdentity;

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
        .route("/v3/auth/authenticate", post(authenticate))
        .route("/v3/auth/enable", post(auth_enable))
        .route("/v3/auth/disable", post(auth_disable))
        .route("/v3/auth/status", post(auth_status))
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

/// Who makes a gateway request: the token in its `Authorization` header
/// (as etcd's gateway takes it) and its client certificate's common name.
pub struct Caller {
    token: Option<String>,
    identity: Option<ClientIdentity>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Caller {
            token: parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            identity: parts.extensions.get::<ClientIdentity>().cloned(),
        })
    }
}

impl Caller {
    /// The user, as the gRPC services would find it.
    fn resolve(&self, api: &EtcdApi) -> Result<Option<AuthInfo>, Status> {
        api.caller(
            self.token.as_deref(),
            self.identity.as_ref().map(|i| i.common_name.as_str()),
        )
    }

    /// `msg` as a gRPC request carrying the same credentials.
    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = self.token.as_deref().and_then(|t| t.parse().ok()) {
            r.metadata_mut().insert("token", t);
        }
        if let Some(id) = &self.identity {
            r.extensions_mut().insert(id.clone());
        }
        r
    }
}

macro_rules! gateway_call {
    ($name:ident, $req:ty, |$api:ident, $caller:ident, $r:ident| $call:expr) => {
        async fn $name(State($api): State<Arc<EtcdApi>>, $caller: Caller, body: Bytes) -> Response {
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

/// A unary call of a tonic service with the caller's credentials,
/// answered with its message.
macro_rules! unary {
    ($trait:ident, $svc:expr, $method:ident, $caller:ident, $r:expr) => {
        async move {
            $trait::$method(&$svc, $caller.request($r))
                .await
                .map(tonic::Response::into_inner)
        }
    };
}

gateway_call!(range, RangeRequest, |api, c, r| unary!(
    Kv,
    KvService(api),
    range,
    c,
    r
));
gateway_call!(put, PutRequest, |api, c, r| unary!(
    Kv,
    KvService(api),
    put,
    c,
    r
));
gateway_call!(delete_range, DeleteRangeRequest, |api, c, r| unary!(
    Kv,
    KvService(api),
    delete_range,
    c,
    r
));
gateway_call!(txn, TxnRequest, |api, c, r| unary!(
    Kv,
    KvService(api),
    txn,
    c,
    r
));
gateway_call!(compaction, CompactionRequest, |api, c, r| unary!(
    Kv,
    KvService(api),
    compact,
    c,
    r
));
gateway_call!(status, StatusRequest, |api, c, r| unary!(
    Maintenance,
    MaintenanceService(api),
    status,
    c,
    r
));
gateway_call!(member_list, MemberListRequest, |api, c, r| unary!(
    Cluster,
    ClusterService(api),
    member_list,
    c,
    r
));
gateway_call!(lease_grant, LeaseGrantRequest, |api, c, r| unary!(
    Lease,
    LeaseService(api),
    lease_grant,
    c,
    r
));
gateway_call!(lease_revoke, LeaseRevokeRequest, |api, c, r| unary!(
    Lease,
    LeaseService(api),
    lease_revoke,
    c,
    r
));
gateway_call!(
    lease_time_to_live,
    LeaseTimeToLiveRequest,
    |api, c, r| unary!(Lease, LeaseService(api), lease_time_to_live, c, r)
);
gateway_call!(lease_leases, LeaseLeasesRequest, |api, c, r| unary!(
    Lease,
    LeaseService(api),
    lease_leases,
    c,
    r
));
gateway_call!(authenticate, AuthenticateRequest, |api, c, r| unary!(
    Auth,
    AuthService(api),
    authenticate,
    c,
    r
));
gateway_call!(auth_enable, AuthEnableRequest, |api, c, r| unary!(
    Auth,
    AuthService(api),
    auth_enable,
    c,
    r
));
gateway_call!(auth_disable, AuthDisableRequest, |api, c, r| unary!(
    Auth,
    AuthService(api),
    auth_disable,
    c,
    r
));
gateway_call!(auth_status, AuthStatusRequest, |api, c, r| unary!(
    Auth,
    AuthService(api),
    auth_status,
    c,
    r
));
