//! Auth on the `/v1` API (see [`crate::auth`]): the same users, tokens and
//! permissions as etcd's API. A request names its user with the token from
//! etcd's `Authenticate` in the `Authorization` header (as etcd's gateway
//! takes it) or with a TLS client certificate (its common name).
//!
//! [`authenticate`] runs before every route: a token that does not verify
//! gets 401; membership, leadership transfer and snapshots need the `root`
//! role; `/metrics` needs a user only with `metrics_require_auth`. The key
//! routes check the key themselves ([`Caller`]): 403 `permission_denied`,
//! or 401 `user_empty` for a request naming nobody.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};
use crate::auth::{AuthError, AuthInfo, Credentials};
use crate::client_port::ClientIdentity;

/// The user a `/v1` request was made as (`None`: nobody named), and the
/// credentials it presented (reads resolve them again on the view they
/// are served from).
#[derive(Debug, Clone, Default)]
pub struct Caller(pub Option<AuthInfo>, pub Credentials);

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let (status, code) = e.http();
        ApiError::new(status, code, e.message())
    }
}

/// Whether a route needs the `root` role.
fn admin_only(method: &Method, path: &str) -> bool {
    match path {
        "/v1/leader/transfer" | "/v1/snapshot" => true,
        "/v1/members" => method != Method::GET,
        p => p.starts_with("/v1/members/"),
    }
}

/// Resolves the caller and enforces the route-level rules (see the module doc).
pub async fn authenticate(
    State(state): State<Arc<ApiState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let view = state.driver.store();
    let auth = view.auth();
    let creds = Credentials {
        token: req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        common_name: req
            .extensions()
            .get::<ClientIdentity>()
            .map(|i| i.common_name.clone()),
    };
    let caller = match creds.resolve(auth) {
        Ok(c) => c,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let path = req.uri().path();
    let refused = if admin_only(req.method(), path) {
        auth.check_admin(caller.as_ref()).err()
    } else if path == "/metrics" && state.metrics_require_auth {
        auth.check_user(caller.as_ref()).err()
    } else {
        None
    };
    if let Some(e) = refused {
        return ApiError::from(e).into_response();
    }
    drop(view);
    req.extensions_mut().insert(Caller(caller, creds));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_routes() {
        assert!(admin_only(&Method::POST, "/v1/members"));
        assert!(admin_only(&Method::DELETE, "/v1/members/3"));
        assert!(admin_only(&Method::POST, "/v1/leader/transfer"));
        assert!(admin_only(&Method::POST, "/v1/snapshot"));
        assert!(!admin_only(&Method::GET, "/v1/members"));
        assert!(!admin_only(&Method::GET, "/v1/status"));
        assert!(!admin_only(&Method::GET, "/v1/kv/members"));
    }
}
