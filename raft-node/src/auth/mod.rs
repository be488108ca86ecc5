//! etcd's authentication and role-based access control (issue 18).
//!
//! - [`store`]: the replicated auth state (users, roles, permissions,
//!   enabled, auth revision, token key), changed only through the log;
//! - [`check`]: whether granted key ranges cover a request's range;
//! - [`password`]: salted Argon2id password hashes, computed by the member
//!   that takes the request, before proposing (apply stays deterministic);
//! - [`tokens`]: HMAC-signed tokens any member can verify.
//!
//! Who calls: with auth enabled, a request's user is the one its token
//! names (gRPC metadata `token`, HTTP header `Authorization`), else the
//! common name of its TLS client certificate, else nobody (refused with
//! `user name is empty`). The member that takes a request checks it; writes
//! are proposed wrapped in an `AuthorizedRequest` naming the user, and apply
//! checks them again against the auth state they apply on, so a permission
//! revoked in between is honoured and a denied request changes nothing.

pub mod check;
mod error;
pub mod password;
pub mod store;
pub mod tokens;

pub use check::Access;
pub use error::AuthError;
pub use store::{AuthData, AuthState, Perm, User, ROOT};

use crate::api::pb::etcdserverpb::request_op::Request as Op;
use crate::api::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp, TxnRequest};
use crate::api::pb::raftnodepb::internal_request::Request;

/// The user a request was made as, and the auth revision it was checked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthInfo {
    /// The user name.
    pub user: String,
    /// The auth revision when the request was authenticated.
    pub revision: u64,
}

/// What a request presents to name its user: a token and/or the common
/// name of its TLS client certificate. Resolved against the auth state of
/// the view a request is served from ([`Credentials::resolve`]), so a read
/// served after the read barrier honours every change before it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The token from `Authenticate`.
    pub token: Option<String>,
    /// The verified client certificate's common name.
    pub common_name: Option<String>,
}

impl Credentials {
    /// The user these credentials name in `auth`, now.
    pub fn resolve(&self, auth: &AuthState) -> Result<Option<AuthInfo>, AuthError> {
        auth.caller(
            self.token.as_deref(),
            self.common_name.as_deref(),
            tokens::unix_now(),
        )
    }
}

impl AuthState {
    /// Who makes a request with `token` and/or a client certificate naming
    /// `common_name`, at `now` (Unix seconds). `Ok(None)`: nobody (allowed
    /// only while auth is disabled). A token that does not verify is an
    /// error even while auth is disabled, as in etcd.
    pub fn caller(
        &self,
        token: Option<&str>,
        common_name: Option<&str>,
        now: u64,
    ) -> Result<Option<AuthInfo>, AuthError> {
        if let Some(t) = token {
            return self.check_token(t, now).map(Some);
        }
        match common_name {
            Some(cn) if self.enabled() && !cn.is_empty() => Ok(Some(AuthInfo {
                user: cn.to_string(),
                revision: self.revision(),
            })),
            _ => Ok(None),
        }
    }

    /// The user `token` was issued to, if it is still valid.
    pub fn check_token(&self, token: &str, now: u64) -> Result<AuthInfo, AuthError> {
        if !self.enabled() {
            return Err(AuthError::InvalidToken);
        }
        let claims = tokens::verify(&self.data().token_key, token, now)?;
        match self.user(&claims.user) {
            Some(u) if claims.revision >= u.tokens_from => Ok(AuthInfo {
                user: claims.user,
                revision: self.revision(),
            }),
            _ => Err(AuthError::InvalidToken),
        }
    }

    /// Checks `password` for `user` (slow: call off the async threads).
    pub fn verify_password(&self, user: &str, password: &str) -> Result<(), AuthError> {
        if !self.enabled() {
            return Err(AuthError::AuthNotEnabled);
        }
        match self.user(user).and_then(|u| u.password.as_ref()) {
            Some(h) if h.matches(password) => Ok(()),
            Some(_) => Err(AuthError::AuthFailed),
            None => {
                // Spend the same time as for a real user, so the answer's
                // timing does not tell which users exist.
                let _ = password::Hashed::new(password);
                Err(AuthError::AuthFailed)
            }
        }
    }

    /// A token for `user`, valid for `ttl_secs` from `now`.
    pub fn issue_token(&self, user: &str, now: u64, ttl_secs: u64) -> String {
        tokens::issue(
            &self.data().token_key,
            &tokens::Claims {
                user: user.to_string(),
                revision: self.revision(),
                expires: now.saturating_add(ttl_secs),
            },
        )
    }

    /// Whether `user` has the `root` role.
    pub fn is_admin(&self, user: &str) -> bool {
        self.user(user).is_some_and(|u| u.roles.contains(ROOT))
    }

    /// Whether `user` may `access` all of `key`..`range_end`.
    pub fn permitted(&self, user: &str, key: &[u8], range_end: &[u8], access: Access) -> bool {
        let Some(u) = self.user(user) else {
            return false;
        };
        if u.roles.contains(ROOT) {
            return true;
        }
        let granted = u
            .roles
            .iter()
            .filter_map(|r| self.role(r))
            .flatten()
            .filter(|p| match access {
                Access::Read => p.read,
                Access::Write => p.write,
            })
            .map(|p| (p.key.as_slice(), p.range_end.as_slice()));
        check::covers(granted, key, range_end)
    }

    /// Refuses unless auth is disabled or `caller` may `access` the range.
    pub fn check_range(
        &self,
        caller: Option<&AuthInfo>,
        key: &[u8],
        range_end: &[u8],
        access: Access,
    ) -> Result<(), AuthError> {
        if !self.enabled() {
            return Ok(());
        }
        let user = caller.ok_or(AuthError::UserEmpty)?;
        if self.permitted(&user.user, key, range_end, access) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Refuses unless auth is disabled or `caller` has the `root` role.
    pub fn check_admin(&self, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        if !self.enabled() {
            return Ok(());
        }
        let user = caller.ok_or(AuthError::UserEmpty)?;
        if self.is_admin(&user.user) {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Refuses unless auth is disabled or `caller` names a user.
    pub fn check_user(&self, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        if self.enabled() && caller.is_none() {
            return Err(AuthError::UserEmpty);
        }
        Ok(())
    }

    /// Whether `caller` may make the state-machine request `req`, as etcd
    /// decides: puts and deletes need write permission on their keys (and
    /// read permission with `prev_kv`), a transaction every permission its
    /// compares and operations need, revoking a lease write permission on
    /// every attached key (`lease_keys`), compaction, alarms and auth
    /// changes the `root` role.
    pub fn check_request(
        &self,
        caller: Option<&AuthInfo>,
        req: &Request,
        lease_keys: &dyn Fn(i64) -> Vec<Vec<u8>>,
    ) -> Result<(), AuthError> {
        if !self.enabled() {
            return Ok(());
        }
        match req {
            Request::Put(p) => self.check_put(caller, p),
            Request::DeleteRange(d) => self.check_delete(caller, d),
            Request::Txn(t) => self.check_txn(caller, t),
            Request::LeaseGrant(_) => self.check_user(caller),
            Request::LeaseRevoke(r) => {
                self.check_user(caller)?;
                for key in lease_keys(r.id) {
                    self.check_range(caller, &key, &[], Access::Write)?;
                }
                Ok(())
            }
            Request::Compaction(_)
            | Request::Alarm(_)
            | Request::AuthEnable(_)
            | Request::AuthDisable(_)
            | Request::AuthUserAdd(_)
            | Request::AuthUserDelete(_)
            | Request::AuthUserChangePassword(_)
            | Request::AuthUserGrantRole(_)
            | Request::AuthUserRevokeRole(_)
            | Request::AuthRoleAdd(_)
            | Request::AuthRoleDelete(_)
            | Request::AuthRoleGrantPermission(_)
            | Request::AuthRoleRevokePermission(_) => self.check_admin(caller),
            // One level of wrapping only.
            Request::Authorized(_) => Err(AuthError::PermissionDenied),
        }
    }

    /// Every permission a transaction needs (all branches, as etcd).
    pub fn check_txn(&self, caller: Option<&AuthInfo>, t: &TxnRequest) -> Result<(), AuthError> {
        for c in &t.compare {
            self.check_range(caller, &c.key, &c.range_end, Access::Read)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            self.check_op(caller, op)?;
        }
        Ok(())
    }

    fn check_put(&self, caller: Option<&AuthInfo>, p: &PutRequest) -> Result<(), AuthError> {
        self.check_range(caller, &p.key, &[], Access::Write)?;
        if p.prev_kv {
            self.check_range(caller, &p.key, &[], Access::Read)?;
        }
        Ok(())
    }

    fn check_delete(
        &self,
        caller: Option<&AuthInfo>,
        d: &DeleteRangeRequest,
    ) -> Result<(), AuthError> {
        self.check_range(caller, &d.key, &d.range_end, Access::Write)?;
        if d.prev_kv {
            self.check_range(caller, &d.key, &d.range_end, Access::Read)?;
        }
        Ok(())
    }

    fn check_op(&self, caller: Option<&AuthInfo>, op: &RequestOp) -> Result<(), AuthError> {
        match &op.request {
            Some(Op::RequestRange(r)) => {
                self.check_range(caller, &r.key, &r.range_end, Access::Read)
            }
            Some(Op::RequestPut(p)) => self.check_put(caller, p),
            Some(Op::RequestDeleteRange(d)) => self.check_delete(caller, d),
            Some(Op::RequestTxn(t)) => self.check_txn(caller, t),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
