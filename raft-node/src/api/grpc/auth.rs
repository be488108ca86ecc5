//! etcd's `Auth` service: enabling auth, `Authenticate`, users and roles
//! (see [`crate::auth`]).
//!
//! Changes go through the log; the member that takes `UserAdd` or
//! `UserChangePassword` hashes the password (off the async threads) before
//! proposing, and the one that takes `AuthEnable` draws the token key.
//! With auth enabled every call but `Authenticate` and `AuthStatus` needs
//! the `root` role, except that a user may read itself and its own roles
//! (as etcd).

use std::sync::Arc;

use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::api::etcd::EtcdApi;
use crate::api::pb::etcdserverpb::auth_server::Auth;
use crate::api::pb::etcdserverpb::*;
use crate::api::pb::raftnodepb::internal_request::Request as Internal;
use crate::api::pb::raftnodepb::{AuthEnable, AuthUserAdd, AuthUserChangePassword, PasswordHash};
use crate::auth::password::Hashed;
use crate::auth::{tokens, AuthError, AuthInfo};
use crate::mvcc::{Command, Response as Applied};

/// Password hashes computed at once on one member (each takes a few MiB
/// and tens of milliseconds): more wait their turn.
static HASHING: Semaphore = Semaphore::const_new(4);

/// The `Auth` service.
pub struct AuthService(pub Arc<EtcdApi>);

/// Hashes `password` off the async threads.
async fn hash(password: String) -> Result<PasswordHash, Status> {
    let _turn = HASHING
        .acquire()
        .await
        .map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
    let h = tokio::task::spawn_blocking(move || Hashed::new(&password))
        .await
        .map_err(|e| Status::internal(format!("etcdserver: hashing failed: {e}")))?;
    Ok(PasswordHash {
        salt: h.salt,
        hash: h.hash,
    })
}

fn no_prehashed(hashed: &str) -> Result<(), Status> {
    if hashed.is_empty() {
        Ok(())
    } else {
        Err(Status::invalid_argument(
            "etcdserver: raft-node does not accept pre-hashed passwords; send the password",
        ))
    }
}

impl AuthService {
    /// Proposes an auth change on behalf of `caller`; returns the header.
    async fn change(
        &self,
        caller: Option<&AuthInfo>,
        what: &'static str,
        req: Internal,
    ) -> Result<Option<ResponseHeader>, Status> {
        match self.0.write_as(caller, Command(req), None).await? {
            Applied::Auth(h) => {
                tracing::info!(
                    change = what,
                    by = caller.map(|c| c.user.as_str()),
                    auth_revision = h.revision,
                    "auth change applied"
                );
                Ok(self.0.header(Some(h)))
            }
            _ => Err(Status::internal(
                "etcdserver: applied entry was not an auth change",
            )),
        }
    }

    /// Who calls, and a linearizable view of the auth state.
    async fn read<T>(
        &self,
        r: &Request<T>,
    ) -> Result<(Option<AuthInfo>, Arc<crate::mvcc::Store>), Status> {
        let caller = self.0.caller_of(r)?;
        let view = self.0.read_barrier().await?;
        Ok((caller, view))
    }
}

macro_rules! change {
    ($self:ident, $r:ident, $what:literal, $variant:ident, $resp:ident) => {{
        let caller = $self.0.caller_of(&$r)?;
        let header = $self
            .change(caller.as_ref(), $what, Internal::$variant($r.into_inner()))
            .await?;
        Ok(Response::new($resp { header }))
    }};
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        r: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let caller = self.0.caller_of(&r)?;
        let enable = Internal::AuthEnable(AuthEnable {
            token_key: tokens::new_key(),
        });
        let header = self.change(caller.as_ref(), "enable", enable).await?;
        Ok(Response::new(AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        r: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        change!(self, r, "disable", AuthDisable, AuthDisableResponse)
    }

    async fn auth_status(
        &self,
        r: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        let (_, view) = self.read(&r).await?;
        Ok(Response::new(AuthStatusResponse {
            header: self.0.header(None),
            enabled: view.auth().enabled(),
            auth_revision: view.auth().revision(),
        }))
    }

    async fn authenticate(
        &self,
        r: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let r = r.into_inner();
        let view = self.0.read_barrier().await?;
        let _turn = HASHING
            .acquire()
            .await
            .map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
        let (checked, name) = {
            let view = view.clone();
            let name = r.name.clone();
            let checked = tokio::task::spawn_blocking(move || {
                view.auth().verify_password(&name, &r.password)
            })
            .await
            .map_err(|e| Status::internal(format!("etcdserver: authentication failed: {e}")))?;
            (checked, r.name)
        };
        if let Err(e) = checked {
            tracing::info!(user = %name, error = %e, "authentication refused");
            return Err(e.status());
        }
        let token = view
            .auth()
            .issue_token(&name, tokens::unix_now(), self.0.token_ttl_secs);
        tracing::debug!(user = %name, "authenticated");
        Ok(Response::new(AuthenticateResponse {
            header: self.0.header(None),
            token,
        }))
    }

    async fn user_add(
        &self,
        r: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let caller = self.0.caller_of(&r)?;
        // Refuse early, before spending a hash on it.
        self.0.check_admin(caller.as_ref())?;
        let r = r.into_inner();
        if r.name.is_empty() {
            return Err(AuthError::UserEmpty.status());
        }
        no_prehashed(&r.hashed_password)?;
        let no_password = r.options.is_some_and(|o| o.no_password);
        let password = if no_password {
            None
        } else {
            Some(hash(r.password).await?)
        };
        let add = Internal::AuthUserAdd(AuthUserAdd {
            name: r.name,
            password,
            no_password,
        });
        let header = self.change(caller.as_ref(), "user add", add).await?;
        Ok(Response::new(AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        r: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let (caller, view) = self.read(&r).await?;
        let r = r.into_inner();
        let auth = view.auth();
        if caller.as_ref().is_none_or(|c| c.user != r.name) {
            auth.check_admin(caller.as_ref()).map_err(|e| e.status())?;
        }
        let user = auth
            .user(&r.name)
            .ok_or_else(|| AuthError::UserNotFound.status())?;
        Ok(Response::new(AuthUserGetResponse {
            header: self.0.header(None),
            roles: user.roles.iter().cloned().collect(),
        }))
    }

    async fn user_list(
        &self,
        r: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let (caller, view) = self.read(&r).await?;
        view.auth()
            .check_admin(caller.as_ref())
            .map_err(|e| e.status())?;
        Ok(Response::new(AuthUserListResponse {
            header: self.0.header(None),
            users: view.auth().users().map(str::to_string).collect(),
        }))
    }

    async fn user_delete(
        &self,
        r: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        change!(
            self,
            r,
            "user delete",
            AuthUserDelete,
            AuthUserDeleteResponse
        )
    }

    async fn user_change_password(
        &self,
        r: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let caller = self.0.caller_of(&r)?;
        self.0.check_admin(caller.as_ref())?;
        let r = r.into_inner();
        no_prehashed(&r.hashed_password)?;
        let change = Internal::AuthUserChangePassword(AuthUserChangePassword {
            name: r.name,
            password: Some(hash(r.password).await?),
        });
        let header = self
            .change(caller.as_ref(), "password change", change)
            .await?;
        Ok(Response::new(AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        r: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        change!(
            self,
            r,
            "user grant role",
            AuthUserGrantRole,
            AuthUserGrantRoleResponse
        )
    }

    async fn user_revoke_role(
        &self,
        r: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        change!(
            self,
            r,
            "user revoke role",
            AuthUserRevokeRole,
            AuthUserRevokeRoleResponse
        )
    }

    async fn role_add(
        &self,
        r: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        change!(self, r, "role add", AuthRoleAdd, AuthRoleAddResponse)
    }

    async fn role_get(
        &self,
        r: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let (caller, view) = self.read(&r).await?;
        let r = r.into_inner();
        let auth = view.auth();
        let own = caller
            .as_ref()
            .and_then(|c| auth.user(&c.user))
            .is_some_and(|u| u.roles.contains(&r.role));
        if !own {
            auth.check_admin(caller.as_ref()).map_err(|e| e.status())?;
        }
        let perms = auth
            .role(&r.role)
            .ok_or_else(|| AuthError::RoleNotFound.status())?;
        Ok(Response::new(AuthRoleGetResponse {
            header: self.0.header(None),
            perm: perms.iter().map(|p| p.to_pb()).collect(),
        }))
    }

    async fn role_list(
        &self,
        r: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let (caller, view) = self.read(&r).await?;
        view.auth()
            .check_admin(caller.as_ref())
            .map_err(|e| e.status())?;
        Ok(Response::new(AuthRoleListResponse {
            header: self.0.header(None),
            roles: view.auth().roles().map(str::to_string).collect(),
        }))
    }

    async fn role_delete(
        &self,
        r: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        change!(
            self,
            r,
            "role delete",
            AuthRoleDelete,
            AuthRoleDeleteResponse
        )
    }

    async fn role_grant_permission(
        &self,
        r: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        change!(
            self,
            r,
            "role grant permission",
            AuthRoleGrantPermission,
            AuthRoleGrantPermissionResponse
        )
    }

    async fn role_revoke_permission(
        &self,
        r: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        change!(
            self,
            r,
            "role revoke permission",
            AuthRoleRevokePermission,
            AuthRoleRevokePermissionResponse
        )
    }
}
