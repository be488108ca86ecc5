//! Error responses: a status code and a JSON body `{"error": .., "code": ..}`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ApiState;
use crate::driver::ClientError;

/// An error answer of the API.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    location: Option<String>,
}

impl ApiError {
    /// An error with `status`, machine-readable `code` and a message.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            location: None,
        }
    }

    /// 400 with code `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Maps a driver error; `path_and_query` is used for the redirect to the leader.
    pub(crate) fn from_client(state: &ApiState, e: ClientError, path_and_query: &str) -> Self {
        match e {
            ClientError::NotLeader { leader: Some(l) } => match state.client_addr(l) {
                Some(addr) => ApiError {
                    location: Some(format!("{}://{addr}{path_and_query}", state.client_scheme)),
                    ..Self::new(307, "not_leader", format!("node {l} is the leader"))
                },
                None => Self::new(503, "no_leader", format!("leader {l} has no known address")),
            },
            ClientError::NotLeader { leader: None } => {
                Self::new(503, "no_leader", "no leader is known; retry shortly")
            }
            ClientError::Timeout => Self::new(
                504,
                "timeout",
                "not committed in time; the write may or may not take effect",
            ),
            ClientError::Overwritten => Self::new(
                503,
                "not_applied",
                "a new leader replaced the entry; it was not applied",
            ),
            ClientError::Busy(why) => Self::new(503, "busy", why),
            ClientError::Invalid(why) => Self::bad_request(why),
            ClientError::DiskFull => Self::new(507, "disk_full", "the node's disk is full"),
            ClientError::Stopped(why) => Self::new(
                504,
                "stopped",
                format!("node stopped ({why}); the outcome is unknown"),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "code": self.code });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(loc) = self.location {
            if let Ok(v) = loc.parse() {
                resp.headers_mut().insert(header::LOCATION, v);
            }
        }
        resp
    }
}
