//! `/v1/kv/{key}` and `/v1/cas/{key}`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde::Deserialize;

use super::{ApiError, ApiState, Caller, MAX_KEY_BYTES};
use crate::api::pb::etcdserverpb::response_op::Response as OpResponse;
use crate::api::pb::etcdserverpb::TxnResponse;
use crate::auth::AuthInfo;
use crate::driver::{Request, WriteOutcome};
use crate::mvcc::{
    Applied, Command, MvccError, RequestId, Response as MvccResponse, REQUEST_ID_HEADER,
};

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(format!(
            "key must be 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(())
}

/// `/v1/kv/` or `/v1/cas/` with no key.
pub(super) async fn empty_key() -> ApiError {
    ApiError::bad_request(format!("key must be 1 to {MAX_KEY_BYTES} bytes"))
}

fn path_and_query(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

async fn read_body(state: &ApiState, body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, state.max_value_bytes)
        .await
        .map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::new(
                    413,
                    "too_large",
                    format!("value exceeds {} bytes", state.max_value_bytes),
                )
            } else {
                ApiError::bad_request(format!("cannot read body: {e}"))
            }
        })
}

/// The `Request-Id: CLIENT/SEQ` header of a write, if it has one: the write
/// is then applied at most once, and a retry with the same id gets the
/// first reply (see `mvcc/dedupe.rs`).
fn request_id(headers: &HeaderMap) -> Result<Option<RequestId>, ApiError> {
    let Some(v) = headers.get(REQUEST_ID_HEADER) else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| ApiError::bad_request("Request-Id must be CLIENT/SEQ"))?;
    text.parse().map(Some).map_err(ApiError::bad_request)
}

/// The caller the auth layer found (nobody if it did not run).
fn caller_of(c: Option<Extension<Caller>>) -> Option<AuthInfo> {
    c.and_then(|Extension(Caller(c, _))| c)
}

/// Proposes `cmd` on behalf of `caller` (refused unless permitted, see
/// [`crate::auth`]), at most once per request id `id`, and waits for what
/// applying it did.
async fn write(
    state: &ApiState,
    caller: Option<&AuthInfo>,
    cmd: Command,
    id: Option<RequestId>,
    uri: &Uri,
) -> Result<(WriteOutcome, MvccResponse), ApiError> {
    let cmd = state.driver.store().authorize(caller, cmd)?;
    let (req, rx) = Request::write_once(cmd, id);
    state.driver.submit(req);
    let outcome = rx.await.map_err(Into::into).and_then(|r| r);
    state.metrics.count_write(&outcome);
    let done = outcome.map_err(|e| ApiError::from_client(state, e, path_and_query(uri)))?;
    match &done.applied {
        Applied::Command(Ok(resp)) => {
            let resp = resp.clone();
            Ok((done, resp))
        }
        Applied::Command(Err(MvccError::Auth(e))) => Err((*e).into()),
        Applied::Command(Err(e)) => Err(from_mvcc(e)),
        Applied::Nothing => Err(ApiError::new(
            500,
            "internal",
            "the applied entry held no command",
        )),
    }
}

fn from_mvcc(e: &MvccError) -> ApiError {
    match e {
        MvccError::NoSpace => ApiError::new(507, "no_space", e.message()),
        MvccError::RequestIdTooOld => ApiError::new(409, "request_id_too_old", e.message()),
        MvccError::RequestIdReused => ApiError::new(409, "request_id_reused", e.message()),
        MvccError::Restoring => ApiError::new(503, "restoring", e.message()),
        _ => ApiError::bad_request(e.message()),
    }
}

/// Whether a `/v1` compare-and-swap held, and the key's value afterwards
/// (see [`Command::cas`]: the last operation of either branch reads the key).
fn cas_outcome(t: &TxnResponse) -> (bool, Option<Vec<u8>>) {
    let current = match t.responses.last().and_then(|r| r.response.as_ref()) {
        Some(OpResponse::ResponseRange(r)) => r.kvs.first().map(|kv| kv.value.clone()),
        _ => None,
    };
    (t.succeeded, current)
}

/// `PUT /v1/kv/{key}`: body = value; 200 `{"index":N}` once applied.
pub(super) async fn put_key(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    Path(key): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_key(&key)?;
    let id = request_id(&headers)?;
    let value = read_body(&state, body).await?.to_vec();
    let caller = caller_of(caller);
    let (done, resp) = write(&state, caller.as_ref(), Command::put(key, value), id, &uri).await?;
    let revision = header_revision(&resp);
    Ok(Json(
        serde_json::json!({ "index": done.index, "revision": revision }),
    ))
}

/// `DELETE /v1/kv/{key}`: 200 `{"index":N,"deleted":bool}`.
pub(super) async fn delete_key(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    Path(key): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_key(&key)?;
    let id = request_id(&headers)?;
    let caller = caller_of(caller);
    let (done, resp) = write(&state, caller.as_ref(), Command::delete(key), id, &uri).await?;
    let deleted = matches!(&resp, MvccResponse::DeleteRange(d) if d.deleted > 0);
    Ok(Json(serde_json::json!({
        "index": done.index,
        "deleted": deleted,
        "revision": header_revision(&resp),
    })))
}

/// Body of `POST /v1/cas/{key}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CasBody {
    expected: Option<String>,
    value: Option<String>,
}

/// `POST /v1/cas/{key}` `{"expected":..,"value":..}` (null = absent).
pub(super) async fn cas_key(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    Path(key): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_key(&key)?;
    let id = request_id(&headers)?;
    let bytes = read_body(&state, body).await?;
    let cas: CasBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "body must be {{\"expected\":string|null,\"value\":string|null}}: {e}"
        ))
    })?;
    let cmd = Command::cas(
        key.into_bytes(),
        cas.expected.map(String::into_bytes),
        cas.value.map(String::into_bytes),
    );
    let caller = caller_of(caller);
    let (done, resp) = write(&state, caller.as_ref(), cmd, id, &uri).await?;
    let MvccResponse::Txn(txn) = &resp else {
        return Err(ApiError::new(
            500,
            "internal",
            "applied entry was not a compare-and-swap",
        ));
    };
    let (succeeded, current) = cas_outcome(txn);
    let current = current.map(|v| String::from_utf8_lossy(&v).into_owned());
    Ok(Json(serde_json::json!({
        "succeeded": succeeded,
        "current": current,
        "index": done.index,
    })))
}

/// Query of `GET /v1/kv/{key}`.
#[derive(Debug, Deserialize)]
pub(super) struct ReadQuery {
    consistency: Option<String>,
}

/// `GET /v1/kv/{key}[?consistency=stale]`: 200 value bytes, 404 if absent.
pub(super) async fn get_key(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    Path(key): Path<String>,
    Query(q): Query<ReadQuery>,
    uri: Uri,
) -> Result<Response, ApiError> {
    check_key(&key)?;
    let stale = match q.consistency.as_deref() {
        None | Some("linearizable") => false,
        Some("stale") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "consistency must be linearizable or stale, not {other:?}"
            )))
        }
    };
    let outcome = if stale {
        Ok(())
    } else {
        let (req, rx) = Request::read_index();
        state.driver.submit(req);
        rx.await.map_err(Into::into).and_then(|r| r).map(|_| ())
    };
    // Resolved again on the view served (after the read index): a token
    // invalidated or a permission revoked before it is honoured.
    let view = state.driver.store();
    let creds = caller
        .map(|Extension(Caller(_, creds))| creds)
        .unwrap_or_default();
    let reader = creds.resolve(view.auth())?;
    view.auth().check_range(
        reader.as_ref(),
        key.as_bytes(),
        &[],
        crate::auth::Access::Read,
    )?;
    let outcome = outcome.map(|()| view.get(key.as_bytes()).map(|v| v.map(<[u8]>::to_vec)));
    state.metrics.count_read(&outcome);
    match outcome {
        Ok(Ok(Some(v))) => Ok((StatusCode::OK, v).into_response()),
        Ok(Ok(None)) => Err(ApiError::new(404, "not_found", "key not found")),
        Ok(Err(e)) => Err(from_mvcc(&e)),
        Err(e) => Err(ApiError::from_client(&state, e, path_and_query(&uri))),
    }
}

/// The store revision in a write's response header.
fn header_revision(resp: &MvccResponse) -> i64 {
    let header = match resp {
        MvccResponse::Put(r) => r.header.as_ref(),
        MvccResponse::DeleteRange(r) => r.header.as_ref(),
        MvccResponse::Txn(r) => r.header.as_ref(),
        MvccResponse::Compaction(r) => r.header.as_ref(),
        MvccResponse::Alarm(r) => r.header.as_ref(),
        MvccResponse::LeaseGrant(r) => r.header.as_ref(),
        MvccResponse::LeaseRevoke(r) => r.header.as_ref(),
        MvccResponse::Auth(h) => Some(h),
    };
    header.map_or(0, |h| h.revision)
}
