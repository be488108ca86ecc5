//! Status, metrics, membership and leadership transfer.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, Uri};
use axum::response::IntoResponse;
use axum::Json;
use raft_core::{ConfChange, ConfChangeSingle, Role};
use serde::Deserialize;

use super::{ApiError, ApiState};
use crate::config::Member;
use crate::driver::Request;

fn role_name(r: Option<Role>) -> &'static str {
    match r {
        Some(Role::Leader) => "leader",
        Some(Role::Candidate) => "candidate",
        Some(Role::PreCandidate) => "pre_candidate",
        Some(Role::Follower) => "follower",
        None => "starting",
    }
}

/// `GET /v1/status`.
pub(super) async fn status(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    let s = state.driver.status();
    Json(serde_json::json!({
        "id": s.id,
        "role": role_name(s.role),
        "term": s.term,
        "leader": s.leader,
        "commit_index": s.commit,
        "applied_index": s.applied,
        "last_index": s.last_index,
        "snapshot_index": s.snapshot_index,
        "voters": s.voters,
        "voters_outgoing": s.voters_outgoing,
        "learners": s.learners,
        "keys": s.keys,
        "digest": s.digest,
        "failed": s.failed,
    }))
}

/// `GET /metrics` in Prometheus text format.
pub(super) async fn metrics(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    let body = state.metrics.render(&state.driver.status());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// `GET /v1/members`: the configuration and every known address.
pub(super) async fn members(State(state): State<Arc<ApiState>>) -> Json<serde_json::Value> {
    let s = state.driver.status();
    let book: Vec<Member> = state
        .members
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    Json(serde_json::json!({
        "voters": s.voters,
        "voters_outgoing": s.voters_outgoing,
        "learners": s.learners,
        "members": book,
    }))
}

/// Body of `POST /v1/members`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AddMember {
    id: u64,
    peer_addr: std::net::SocketAddr,
    client_addr: std::net::SocketAddr,
    /// Add as a learner (non-voting) instead of a voter.
    #[serde(default)]
    learner: bool,
}

async fn change(
    state: &ApiState,
    change: ConfChange,
    context: Vec<u8>,
    uri: &Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    state.driver.submit(Request::ChangeMembers {
        change,
        context,
        reply,
    });
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    match rx.await.map_err(Into::into).and_then(|r| r) {
        Ok(index) => Ok(Json(serde_json::json!({ "index": index }))),
        Err(e) => Err(ApiError::from_client(state, e, pq)),
    }
}

/// `POST /v1/members` `{"id","peer_addr","client_addr","learner"?}`: add or
/// promote a member; answered once the change is applied.
pub(super) async fn add_member(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let m: AddMember = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "body must be {{\"id\",\"peer_addr\",\"client_addr\",\"learner\"?}}: {e}"
        ))
    })?;
    if m.id == 0 {
        return Err(ApiError::bad_request("id 0 is not a valid node id"));
    }
    let step = if m.learner {
        ConfChangeSingle::AddLearner(m.id)
    } else {
        ConfChangeSingle::AddVoter(m.id)
    };
    let member = Member {
        id: m.id,
        peer_addr: m.peer_addr,
        client_addr: m.client_addr,
    };
    let context = postcard::to_stdvec(&member).expect("encoding into a Vec cannot fail");
    change(
        &state,
        ConfChange {
            changes: vec![step],
        },
        context,
        &uri,
    )
    .await
}

/// `DELETE /v1/members/{id}`: remove a member.
pub(super) async fn remove_member(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<u64>,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cc = ConfChange {
        changes: vec![ConfChangeSingle::Remove(id)],
    };
    change(&state, cc, Vec::new(), &uri).await
}

/// Body of `POST /v1/leader/transfer`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Transfer {
    to: u64,
}

/// `POST /v1/leader/transfer` `{"to":N}`: answered once the transfer started.
pub(super) async fn transfer_leader(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let t: Transfer = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("body must be {{\"to\":N}}: {e}")))?;
    let (reply, rx) = tokio::sync::oneshot::channel();
    state
        .driver
        .submit(Request::TransferLeader { to: t.to, reply });
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    match rx.await.map_err(Into::into).and_then(|r| r) {
        Ok(()) => Ok(Json(serde_json::json!({ "transferring_to": t.to }))),
        Err(e) => Err(ApiError::from_client(&state, e, pq)),
    }
}

/// `POST /v1/snapshot`: snapshot this node's applied state now (and compact
/// its WAL); answered with the snapshot's index. Any node, leader or not.
pub(super) async fn snapshot(
    State(state): State<Arc<ApiState>>,
    uri: Uri,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    state.driver.submit(Request::Snapshot { reply });
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    match rx.await.map_err(Into::into).and_then(|r| r) {
        Ok(index) => Ok(Json(serde_json::json!({ "snapshot_index": index }))),
        Err(e) => Err(ApiError::from_client(&state, e, pq)),
    }
}
