//! The replicated auth state: users, roles, their permissions, whether auth
//! is enabled, the auth revision (+1 per change) and the token signing key.
//!
//! It lives inside the MVCC store, so it changes only by applying log
//! entries ([`AuthState::apply`], deterministic: password hashes and the
//! key come in the entry) and travels in snapshots. Cloning it is O(1).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::password::Hashed;
use super::AuthError;
use crate::api::pb::authpb::permission::Type as PermType;
use crate::api::pb::authpb::Permission;
use crate::api::pb::raftnodepb::internal_request::Request;
use crate::api::pb::raftnodepb::PasswordHash;

/// The user and role that may do everything, as etcd defines them.
pub const ROOT: &str = "root";

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Granted roles.
    pub roles: BTreeSet<String>,
    /// `None`: the user cannot authenticate with a password (etcd's
    /// `--no-password`; a client certificate names it).
    pub password: Option<Hashed>,
    /// Tokens issued before this auth revision (the user's creation or
    /// last password change) are refused.
    pub tokens_from: u64,
}

/// A key permission of a role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Perm {
    /// The key, or the start of the range.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// etcd's range end: empty (the key), `"\0"` (from the key on), or exclusive end.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// Allows reads.
    pub read: bool,
    /// Allows writes.
    pub write: bool,
}

impl Perm {
    /// As etcd's `authpb.Permission`.
    pub fn to_pb(&self) -> Permission {
        let t = match (self.read, self.write) {
            (true, true) => PermType::Readwrite,
            (false, true) => PermType::Write,
            _ => PermType::Read,
        };
        Permission {
            perm_type: t as i32,
            key: self.key.clone(),
            range_end: self.range_end.clone(),
        }
    }
}

/// Everything the auth state holds (its snapshot record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthData {
    /// Whether requests are checked.
    pub enabled: bool,
    /// +1 per applied change.
    pub revision: u64,
    /// Signs tokens; drawn at each enable, empty while disabled.
    #[serde(with = "serde_bytes")]
    pub token_key: Vec<u8>,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Roles by name, with their permissions sorted by key and range end.
    pub roles: BTreeMap<String, Vec<Perm>>,
}

/// The auth state (shared until changed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthState(Arc<AuthData>);

fn hashed(p: Option<&PasswordHash>) -> Option<Hashed> {
    p.map(|p| Hashed {
        salt: p.salt.clone(),
        hash: p.hash.clone(),
    })
}

impl AuthState {
    /// From a snapshot record.
    pub fn from_data(data: AuthData) -> AuthState {
        AuthState(Arc::new(data))
    }

    /// Everything it holds (for a snapshot).
    pub fn data(&self) -> &AuthData {
        &self.0
    }

    /// Whether requests are checked.
    pub fn enabled(&self) -> bool {
        self.0.enabled
    }

    /// The auth revision.
    pub fn revision(&self) -> u64 {
        self.0.revision
    }

    /// A user.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.0.users.get(name)
    }

    /// Every user name, sorted.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.0.users.keys().map(String::as_str)
    }

    /// A role's permissions.
    pub fn role(&self, name: &str) -> Option<&[Perm]> {
        self.0.roles.get(name).map(Vec::as_slice)
    }

    /// Every role name, sorted.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.0.roles.keys().map(String::as_str)
    }

    /// Applies an auth change. `None`: `req` is not one. On error nothing
    /// changed; on success the revision grew by one.
    pub fn apply(&mut self, req: &Request) -> Option<Result<(), AuthError>> {
        let mut next = (*self.0).clone();
        let result = match req {
            Request::AuthEnable(e) => next.enable(&e.token_key),
            Request::AuthDisable(_) => {
                next.enabled = false;
                next.token_key.clear();
                Ok(())
            }
            Request::AuthUserAdd(u) => {
                next.user_add(&u.name, hashed(u.password.as_ref()), u.no_password)
            }
            Request::AuthUserDelete(u) => next.user_delete(&u.name),
            Request::AuthUserChangePassword(u) => {
                next.change_password(&u.name, hashed(u.password.as_ref()))
            }
            Request::AuthUserGrantRole(g) => next.grant_role(&g.user, &g.role),
            Request::AuthUserRevokeRole(r) => next.revoke_role(&r.name, &r.role),
            Request::AuthRoleAdd(r) => next.role_add(&r.name),
            Request::AuthRoleDelete(r) => next.role_delete(&r.role),
            Request::AuthRoleGrantPermission(g) => next.grant_permission(&g.name, g.perm.as_ref()),
            Request::AuthRoleRevokePermission(r) => {
                next.revoke_permission(&r.role, &r.key, &r.range_end)
            }
            _ => return None,
        };
        if result.is_ok() {
            next.revision += 1;
            self.0 = Arc::new(next);
        }
        Some(result)
    }
}

impl AuthData {
    fn enable(&mut self, key: &[u8]) -> Result<(), AuthError> {
        if self.enabled {
            return Ok(());
        }
        let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
        if !root.roles.contains(ROOT) {
            return Err(AuthError::RootRoleNotExist);
        }
        if key.is_empty() {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.enabled = true;
        self.token_key = key.to_vec();
        Ok(())
    }

    fn user_add(
        &mut self,
        name: &str,
        password: Option<Hashed>,
        no_password: bool,
    ) -> Result<(), AuthError> {
        if name.is_empty() {
            return Err(AuthError::UserEmpty);
        }
        if self.users.contains_key(name) {
            return Err(AuthError::UserAlreadyExists);
        }
        let user = User {
            roles: BTreeSet::new(),
            password: if no_password { None } else { password },
            tokens_from: self.revision + 1,
        };
        self.users.insert(name.to_string(), user);
        Ok(())
    }

    fn user_delete(&mut self, name: &str) -> Result<(), AuthError> {
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.users
            .remove(name)
            .map(|_| ())
            .ok_or(AuthError::UserNotFound)
    }

    fn change_password(&mut self, name: &str, password: Option<Hashed>) -> Result<(), AuthError> {
        let from = self.revision + 1;
        let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
        user.password = password;
        user.tokens_from = from;
        Ok(())
    }

    fn grant_role(&mut self, name: &str, role: &str) -> Result<(), AuthError> {
        if role != ROOT && !self.roles.contains_key(role) {
            return Err(AuthError::RoleNotFound);
        }
        let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
        user.roles.insert(role.to_string());
        Ok(())
    }

    fn revoke_role(&mut self, name: &str, role: &str) -> Result<(), AuthError> {
        if self.enabled && name == ROOT && role == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
        if !user.roles.remove(role) {
            return Err(AuthError::RoleNotGranted);
        }
        Ok(())
    }

    fn role_add(&mut self, name: &str) -> Result<(), AuthError> {
        if name.is_empty() {
            return Err(AuthError::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(AuthError::RoleAlreadyExists);
        }
        self.roles.insert(name.to_string(), Vec::new());
        Ok(())
    }

    fn role_delete(&mut self, name: &str) -> Result<(), AuthError> {
        if self.enabled && name == ROOT {
            return Err(AuthError::InvalidAuthMgmt);
        }
        self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
        for user in self.users.values_mut() {
            user.roles.remove(name);
        }
        Ok(())
    }

    fn grant_permission(&mut self, role: &str, perm: Option<&Permission>) -> Result<(), AuthError> {
        let perms = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
        let perm = perm.ok_or(AuthError::PermissionNotGranted)?;
        let (read, write) = match PermType::try_from(perm.perm_type) {
            Ok(PermType::Read) => (true, false),
            Ok(PermType::Write) => (false, true),
            Ok(PermType::Readwrite) => (true, true),
            Err(_) => return Err(AuthError::PermissionNotGranted),
        };
        let new = Perm {
            key: perm.key.clone(),
            range_end: perm.range_end.clone(),
            read,
            write,
        };
        // As etcd: granting the same key or range again replaces its type.
        match perms
            .iter_mut()
            .find(|p| p.key == new.key && p.range_end == new.range_end)
        {
            Some(p) => *p = new,
            None => {
                perms.push(new);
                perms.sort();
            }
        }
        Ok(())
    }

    fn revoke_permission(&mut self, role: &str, key: &[u8], end: &[u8]) -> Result<(), AuthError> {
        let perms = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
        let before = perms.len();
        perms.retain(|p| !(p.key == key && p.range_end == end));
        if perms.len() == before {
            return Err(AuthError::PermissionNotGranted);
        }
        Ok(())
    }
}
