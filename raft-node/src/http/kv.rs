//! `/v1/kv/{key}` and `/v1/cas/{key}`.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::{ApiError, ApiState, MAX_KEY_BYTES};
use crate::driver::{Request, WriteOutcome};
use crate::kv::{Applied, Command};

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

async fn write(state: &ApiState, cmd: Command, uri: &Uri) -> Result<WriteOutcome, ApiError> {
    let (req, rx) = Request::write(cmd);
    state.driver.submit(req);
    let outcome = rx.await.map_err(Into::into).and_then(|r| r);
    state.metrics.count_write(&outcome);
    outcome.map_err(|e| ApiError::from_client(state, e, path_and_query(uri)))
}

/// `PUT /v1/kv/{key}`: body = value; 200 `{"index":N}` once applied.
pub(super) async fn put_key(
    State(state): State<Arc<ApiState>>,
    Path(key): Path<String>,
    uri: Uri,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_key(&key)?;
    let value = read_body(&state, body).await?.to_vec();
    let done = write(&state, Command::Put { key, value }, &uri).await?;
    Ok(Json(serde_json::json!({ "index": done.index })))
}

/// `DELETE /v1/kv/{key}`: 200 `{"index":N,"deleted":bool}`.
pub(super) async fn delete_key(
    State(state): State<Arc<ApiState>>,
    Path(key): Path<String>,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_key(&key)?;
    let done = write(&state, Command::Delete { key }, &uri).await?;
    let deleted = matches!(done.applied, Applied::Delete { deleted: true });
    Ok(Json(
        serde_json::json!({ "index": done.index, "deleted": deleted }),
    ))
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
    Path(key): Path<String>,
    uri: Uri,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_key(&key)?;
    let bytes = read_body(&state, body).await?;
    let cas: CasBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "body must be {{\"expected\":string|null,\"value\":string|null}}: {e}"
        ))
    })?;
    let cmd = Command::Cas {
        key,
        expected: cas.expected.map(String::into_bytes),
        value: cas.value.map(String::into_bytes),
    };
    let done = write(&state, cmd, &uri).await?;
    let Applied::Cas { succeeded, current } = done.applied else {
        return Err(ApiError::new(
            500,
            "internal",
            "applied entry was not a compare-and-swap",
        ));
    };
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
    let (req, rx) = Request::read(key, stale);
    state.driver.submit(req);
    let outcome = rx.await.map_err(Into::into).and_then(|r| r);
    state.metrics.count_read(&outcome);
    match outcome {
        Ok(Some(v)) => Ok((StatusCode::OK, v).into_response()),
        Ok(None) => Err(ApiError::new(404, "not_found", "key not found")),
        Err(e) => Err(ApiError::from_client(&state, e, path_and_query(&uri))),
    }
}
