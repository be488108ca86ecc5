//! Applying auth changes and requests made with auth enabled (`auth/`).
//!
//! An [`AuthorizedRequest`] carries the user the receiving member checked
//! it for; apply checks again against the auth state of this point of the
//! log, so a permission revoked after the check but before apply refuses
//! the request (nothing changes, no revision is used), as etcd does.

use super::{Command, MvccError, Response, Store};
use crate::api::pb::raftnodepb::internal_request::Request;
use crate::api::pb::raftnodepb::{AuthorizedRequest, InternalRequest};
use crate::auth::{AuthError, AuthInfo, AuthState};

impl Store {
    /// The auth state (users, roles, permissions).
    pub fn auth(&self) -> &AuthState {
        &self.auth
    }

    /// Replaces the auth state (restoring a snapshot).
    pub(super) fn set_auth(&mut self, auth: AuthState) {
        self.auth = auth;
    }

    /// The keys attached to lease `id`, now.
    pub fn lease_keys(&self, id: i64) -> Vec<Vec<u8>> {
        self.lease(id)
            .map(|l| l.keys.iter().map(|k| k.to_vec()).collect())
            .unwrap_or_default()
    }

    /// `cmd` as `caller` may propose it from this view: refused unless
    /// auth is off or the caller may make it; with auth on, wrapped in an
    /// [`AuthorizedRequest`] naming the caller, so that apply checks again.
    pub fn authorize(&self, caller: Option<&AuthInfo>, cmd: Command) -> Result<Command, AuthError> {
        let auth = &self.auth;
        auth.check_request(caller, &cmd.0, &|id| self.lease_keys(id))?;
        Ok(match caller {
            Some(c) if auth.enabled() => {
                Command(Request::Authorized(Box::new(AuthorizedRequest {
                    user: c.user.clone(),
                    auth_revision: c.revision,
                    // The request id and time stamp travel in the outer
                    // InternalRequest (see `Command::encode_once`).
                    request: Some(Box::new(InternalRequest {
                        request: Some(cmd.0),
                        ..Default::default()
                    })),
                })))
            }
            _ => cmd,
        })
    }

    pub(super) fn run_authorized(
        &mut self,
        a: AuthorizedRequest,
        term: u64,
    ) -> Result<Response, MvccError> {
        let inner = a
            .request
            .and_then(|r| r.request)
            .ok_or_else(|| MvccError::Malformed("authorized request holds no request".into()))?;
        if matches!(inner, Request::Authorized(_)) {
            return Err(MvccError::Malformed("nested authorized request".into()));
        }
        let caller = AuthInfo {
            user: a.user,
            revision: a.auth_revision,
        };
        if self.auth.enabled() {
            // The user's password changed (or the user was re-created)
            // after the request was authenticated: its token is stale.
            if self
                .auth
                .user(&caller.user)
                .is_some_and(|u| u.tokens_from > caller.revision)
            {
                return Err(MvccError::Auth(AuthError::InvalidToken));
            }
            let store = &*self;
            let keys = |id| store.lease_keys(id);
            if let Err(e) = self.auth.check_request(Some(&caller), &inner, &keys) {
                tracing::debug!(user = %caller.user, checked_at = caller.revision, now = self.auth.revision(), error = %e, "refused at apply");
                return Err(MvccError::Auth(e));
            }
        }
        self.run(inner, term)
    }

    pub(super) fn run_auth_change(
        &mut self,
        req: &Request,
        term: u64,
    ) -> Result<Response, MvccError> {
        match self.auth.apply(req) {
            Some(Ok(())) => Ok(Response::Auth(self.header(term))),
            Some(Err(e)) => Err(MvccError::Auth(e)),
            None => Err(MvccError::Malformed("not an auth change".into())),
        }
    }
}
