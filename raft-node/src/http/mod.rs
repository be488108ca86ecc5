//! The client HTTP API (DESIGN.md §6), served with axum.
//!
//! Writes and linearizable reads must reach the leader: a follower answers
//! `307 Temporary Redirect` with `Location` on the leader's `client_addr`, or
//! `503 no_leader` when it knows no leader. Every error body is JSON with
//! `error` and `code`.

mod admin;
mod auth;
mod error;
mod kv;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::routing::{get, post};
use axum::Router;

pub use auth::Caller;
pub use error::ApiError;

use crate::config::Member;
use crate::driver::DriverHandle;
use crate::metrics::Metrics;

/// Addresses of every member this node knows of, by id.
pub type AddressBook = Arc<RwLock<BTreeMap<u64, Member>>>;

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;

/// What the handlers share.
pub struct ApiState {
    /// The node's driver.
    pub driver: DriverHandle,
    /// Where the members are (for redirects and `/v1/members`).
    pub members: AddressBook,
    /// Largest value accepted (413 above it).
    pub max_value_bytes: usize,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// `https` when the client port speaks TLS, else `http` (redirects).
    pub client_scheme: &'static str,
    /// With auth enabled, `/metrics` needs a user (`metrics_require_auth`).
    pub metrics_require_auth: bool,
}

impl ApiState {
    /// The client address of node `id`, if known.
    pub(crate) fn client_addr(&self, id: u64) -> Option<SocketAddr> {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(|m| m.client_addr)
    }
}

/// The API's routes.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route(
            "/v1/kv/{key}",
            get(kv::get_key).put(kv::put_key).delete(kv::delete_key),
        )
        .route("/v1/cas/{key}", post(kv::cas_key))
        // An empty key is a bad request, not an unknown route.
        .route("/v1/kv/", axum::routing::any(kv::empty_key))
        .route("/v1/cas/", axum::routing::any(kv::empty_key))
        .route("/v1/status", get(admin::status))
        .route("/v1/members", get(admin::members).post(admin::add_member))
        .route(
            "/v1/members/{id}",
            axum::routing::delete(admin::remove_member),
        )
        .route("/v1/leader/transfer", post(admin::transfer_leader))
        .route("/v1/snapshot", post(admin::snapshot))
        .route("/metrics", get(admin::metrics))
        .fallback(|| async { ApiError::new(404, "not_found", "no such route") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state)
}
