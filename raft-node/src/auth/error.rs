//! Why an auth request failed, with etcd's messages and gRPC codes (what
//! etcd clients and `etcdctl` match on and print).

use std::fmt;

/// An auth error. A refused request changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AuthError {
    /// The caller lacks the permission the request needs.
    PermissionDenied,
    /// Auth is enabled and the request names no user (no token, no certificate).
    UserEmpty,
    /// A user of that name exists already.
    UserAlreadyExists,
    /// No such user.
    UserNotFound,
    /// A role with an empty name.
    RoleEmpty,
    /// A role of that name exists already.
    RoleAlreadyExists,
    /// No such role.
    RoleNotFound,
    /// The user does not have that role.
    RoleNotGranted,
    /// The role has no permission on exactly that key or range.
    PermissionNotGranted,
    /// Wrong user name or password.
    AuthFailed,
    /// `Authenticate` while auth is disabled.
    AuthNotEnabled,
    /// A token that is malformed, forged, expired or no longer valid.
    InvalidToken,
    /// Enabling auth needs the `root` user.
    RootUserNotExist,
    /// Enabling auth needs the `root` user to have the `root` role.
    RootRoleNotExist,
    /// A change that would lock the administrator out (deleting `root`, ...).
    InvalidAuthMgmt,
}

impl AuthError {
    /// etcd's message.
    pub fn message(self) -> &'static str {
        match self {
            AuthError::PermissionDenied => "etcdserver: permission denied",
            AuthError::UserEmpty => "etcdserver: user name is empty",
            AuthError::UserAlreadyExists => "etcdserver: user name already exists",
            AuthError::UserNotFound => "etcdserver: user name not found",
            AuthError::RoleEmpty => "etcdserver: role name is empty",
            AuthError::RoleAlreadyExists => "etcdserver: role name already exists",
            AuthError::RoleNotFound => "etcdserver: role name not found",
            AuthError::RoleNotGranted => "etcdserver: role is not granted to the user",
            AuthError::PermissionNotGranted => "etcdserver: permission is not granted to the role",
            AuthError::AuthFailed => {
                "etcdserver: authentication failed, invalid user ID or password"
            }
            AuthError::AuthNotEnabled => "etcdserver: authentication is not enabled",
            AuthError::InvalidToken => "etcdserver: invalid auth token",
            AuthError::RootUserNotExist => "etcdserver: root user does not exist",
            AuthError::RootRoleNotExist => "etcdserver: root user does not have root role",
            AuthError::InvalidAuthMgmt => "etcdserver: invalid auth management",
        }
    }

    /// The gRPC status etcd answers with.
    pub fn status(self) -> tonic::Status {
        use tonic::Code;
        let code = match self {
            AuthError::PermissionDenied => Code::PermissionDenied,
            AuthError::InvalidToken => Code::Unauthenticated,
            AuthError::UserEmpty
            | AuthError::RoleEmpty
            | AuthError::AuthFailed
            | AuthError::InvalidAuthMgmt => Code::InvalidArgument,
            AuthError::UserAlreadyExists
            | AuthError::UserNotFound
            | AuthError::RoleAlreadyExists
            | AuthError::RoleNotFound
            | AuthError::RoleNotGranted
            | AuthError::PermissionNotGranted
            | AuthError::AuthNotEnabled
            | AuthError::RootUserNotExist
            | AuthError::RootRoleNotExist => Code::FailedPrecondition,
        };
        tonic::Status::new(code, self.message())
    }

    /// The HTTP status the `/v1` API answers with, and its error code.
    pub fn http(self) -> (u16, &'static str) {
        match self {
            AuthError::PermissionDenied => (403, "permission_denied"),
            AuthError::UserEmpty => (401, "user_empty"),
            AuthError::InvalidToken => (401, "invalid_token"),
            AuthError::AuthFailed => (401, "auth_failed"),
            _ => (400, "auth"),
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for AuthError {}
