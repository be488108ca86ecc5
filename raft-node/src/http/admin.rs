//! Status, metrics, membership and leadership transfer.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, Uri};
use axum::response::IntoResponse;
use axum::Json;
use raft_core::{ConfChange, ConfChangeSingle, Role};
use serde::Deserialize;

use super::{ApiError, ApiState};
use crate::config::Member;
use crate::driver::{ClientError, Request};

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

/// How long a member added through `POST /v1/members` as a voter may take to
/// catch up as a learner before its automatic promotion is abandoned.
const PROMOTE_WITHIN: Duration = Duration::from_secs(600);

/// Pause between two promotion attempts.
const PROMOTE_RETRY: Duration = Duration::from_millis(250);

/// `POST /v1/members` `{"id","peer_addr","client_addr","learner"?}`: add or
/// promote a member; answered once the change is applied.
///
/// A new member asked for as a voter is added as a learner first (the answer
/// says `"learner": true`) and promoted by this node once it has caught up:
/// an empty voter would count toward every quorum at once while it can help
/// none, so one more failure could stall the cluster. If this node stops
/// leading meanwhile, or the learner does not catch up within ten minutes,
/// the promotion is abandoned (logged); posting again promotes a learner
/// that has caught up.
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
    let status = state.driver.status();
    let is_member = [&status.voters, &status.voters_outgoing, &status.learners]
        .iter()
        .any(|ids| ids.contains(&m.id));
    if !m.learner && !is_member {
        let learner = ConfChange {
            changes: vec![ConfChangeSingle::AddLearner(m.id)],
        };
        let Json(added) = change(&state, learner, context.clone(), &uri).await?;
        promote_when_caught_up(state.clone(), m.id, context);
        return Ok(Json(serde_json::json!({
            "index": added["index"],
            "learner": true,
            "promotion": "automatic once it has caught up",
        })));
    }
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

/// Promotes learner `id` once the driver accepts it (it refuses while the
/// learner lags: `ClientError::Busy`).
fn promote_when_caught_up(state: Arc<ApiState>, id: u64, context: Vec<u8>) {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + PROMOTE_WITHIN;
        loop {
            tokio::time::sleep(PROMOTE_RETRY).await;
            if !state.driver.status().learners.contains(&id) {
                tracing::info!(
                    member = id,
                    "no longer a learner here; automatic promotion ends"
                );
                return;
            }
            let (reply, rx) = tokio::sync::oneshot::channel();
            state.driver.submit(Request::ChangeMembers {
                change: ConfChange {
                    changes: vec![ConfChangeSingle::AddVoter(id)],
                },
                context: context.clone(),
                reply,
            });
            match rx.await.map_err(ClientError::from).and_then(|r| r) {
                Ok(index) => {
                    tracing::info!(member = id, index, "learner caught up; promoted to voter");
                    return;
                }
                // Still catching up, or another change is in progress.
                Err(ClientError::Busy(_) | ClientError::Timeout) => {}
                Err(e) => {
                    tracing::warn!(member = id, error = %e, "automatic promotion abandoned; POST /v1/members again to promote");
                    return;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    member = id,
                    "learner did not catch up in time; automatic promotion abandoned"
                );
                return;
            }
        }
    });
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
