//! The auth state through the store's apply path, as the log drives it.

use super::*;
use crate::api::pb::authpb::permission::Type as PermType;
use crate::api::pb::authpb::Permission;
use crate::api::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::api::pb::etcdserverpb::{
    AuthDisableRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest, AuthUserDeleteRequest, AuthUserGrantRoleRequest,
    AuthUserRevokeRoleRequest, Compare, LeaseGrantRequest, LeaseRevokeRequest, PutRequest,
    RangeRequest,
};
use crate::api::pb::raftnodepb::{
    AuthEnable, AuthUserAdd, AuthUserChangePassword, AuthorizedRequest, InternalRequest,
    PasswordHash,
};
use crate::mvcc::{Applied, Command, MvccError, Store};

struct Log {
    store: Store,
    index: u64,
}

fn pw(p: &str) -> Option<PasswordHash> {
    let h = password::Hashed::new(p);
    Some(PasswordHash {
        salt: h.salt,
        hash: h.hash,
    })
}

impl Log {
    fn new() -> Log {
        Log {
            store: Store::default(),
            index: 0,
        }
    }

    fn apply(&mut self, req: Request) -> Result<(), MvccError> {
        self.index += 1;
        match self.store.apply(self.index, 1, &Command(req).encode()) {
            Applied::Command(r) => r.map(|_| ()),
            Applied::Nothing => panic!("no command"),
        }
    }

    fn as_user(&mut self, user: &str, req: Request) -> Result<(), MvccError> {
        let rev = self.store.auth().revision();
        self.apply(Request::Authorized(Box::new(AuthorizedRequest {
            user: user.into(),
            auth_revision: rev,
            request: Some(Box::new(InternalRequest {
                request: Some(req),
                ..Default::default()
            })),
        })))
    }

    fn user(&mut self, name: &str, password: &str) {
        self.apply(Request::AuthUserAdd(AuthUserAdd {
            name: name.into(),
            password: pw(password),
            no_password: false,
        }))
        .unwrap();
    }

    fn grant_role(&mut self, user: &str, role: &str) -> Result<(), MvccError> {
        self.apply(Request::AuthUserGrantRole(AuthUserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
        }))
    }

    fn grant(&mut self, role: &str, t: PermType, key: &str, end: &str) {
        self.apply(Request::AuthRoleGrantPermission(
            AuthRoleGrantPermissionRequest {
                name: role.into(),
                perm: Some(Permission {
                    perm_type: t as i32,
                    key: key.into(),
                    range_end: end.into(),
                }),
            },
        ))
        .unwrap();
    }

    fn enable(&mut self) -> Result<(), MvccError> {
        self.apply(Request::AuthEnable(AuthEnable {
            token_key: tokens::new_key(),
        }))
    }

    /// root (root role), and reader with READ on prefix "pub/".
    fn with_root_and_reader() -> Log {
        let mut l = Log::new();
        l.user("root", "rootpw");
        l.grant_role("root", "root").unwrap();
        l.apply(Request::AuthRoleAdd(AuthRoleAddRequest {
            name: "ro".into(),
        }))
        .unwrap();
        l.grant("ro", PermType::Read, "pub/", "pub0");
        l.user("reader", "readpw");
        l.grant_role("reader", "ro").unwrap();
        l.enable().unwrap();
        l
    }
}

fn put(key: &str) -> Request {
    Request::Put(PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    })
}

fn info(user: &str) -> AuthInfo {
    AuthInfo {
        user: user.into(),
        revision: 0,
    }
}

const DENIED: Result<(), MvccError> = Err(MvccError::Auth(AuthError::PermissionDenied));

#[test]
fn enable_needs_root_with_the_root_role() {
    let mut l = Log::new();
    assert_eq!(
        l.enable(),
        Err(MvccError::Auth(AuthError::RootUserNotExist))
    );
    l.user("root", "pw");
    assert_eq!(
        l.enable(),
        Err(MvccError::Auth(AuthError::RootRoleNotExist))
    );
    assert_eq!(
        l.grant_role("root", "nope"),
        Err(MvccError::Auth(AuthError::RoleNotFound))
    );
    // The root role need not be added to be granted (as etcd).
    l.grant_role("root", "root").unwrap();
    let rev = l.store.auth().revision();
    l.enable().unwrap();
    assert!(l.store.auth().enabled());
    assert_eq!(l.store.auth().revision(), rev + 1);
    // root cannot be deleted or lose its role while auth is on.
    assert_eq!(
        l.apply(Request::AuthUserDelete(AuthUserDeleteRequest {
            name: "root".into()
        })),
        Err(MvccError::Auth(AuthError::InvalidAuthMgmt))
    );
    assert_eq!(
        l.apply(Request::AuthUserRevokeRole(AuthUserRevokeRoleRequest {
            name: "root".into(),
            role: "root".into()
        })),
        Err(MvccError::Auth(AuthError::InvalidAuthMgmt))
    );
}

#[test]
fn user_and_role_errors_are_etcds() {
    let mut l = Log::new();
    l.user("a", "pw");
    let dup = l.apply(Request::AuthUserAdd(AuthUserAdd {
        name: "a".into(),
        password: pw("x"),
        no_password: false,
    }));
    assert_eq!(dup, Err(MvccError::Auth(AuthError::UserAlreadyExists)));
    let empty = l.apply(Request::AuthUserAdd(AuthUserAdd::default()));
    assert_eq!(empty, Err(MvccError::Auth(AuthError::UserEmpty)));
    assert_eq!(
        empty.unwrap_err().message(),
        "etcdserver: user name is empty"
    );
    assert_eq!(
        l.apply(Request::AuthUserRevokeRole(AuthUserRevokeRoleRequest {
            name: "a".into(),
            role: "r".into()
        })),
        Err(MvccError::Auth(AuthError::RoleNotGranted))
    );
    assert_eq!(
        l.apply(Request::AuthRoleRevokePermission(
            AuthRoleRevokePermissionRequest {
                role: "r".into(),
                ..Default::default()
            }
        )),
        Err(MvccError::Auth(AuthError::RoleNotFound))
    );
    // A refused change does not move the revision.
    let rev = l.store.auth().revision();
    let _ = l.grant_role("ghost", "root");
    assert_eq!(l.store.auth().revision(), rev);
}

#[test]
fn read_only_prefix_user() {
    let l = Log::with_root_and_reader();
    let a = l.store.auth();
    let reader = Some(info("reader"));
    assert!(a
        .check_range(reader.as_ref(), b"pub/x", b"", Access::Read)
        .is_ok());
    assert!(a
        .check_range(reader.as_ref(), b"pub/", b"pub0", Access::Read)
        .is_ok());
    assert_eq!(
        a.check_range(reader.as_ref(), b"pub/x", b"", Access::Write),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        a.check_range(reader.as_ref(), b"secret", b"", Access::Read),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(
        a.check_range(None, b"pub/x", b"", Access::Read),
        Err(AuthError::UserEmpty)
    );
    // An unknown user (a certificate's CN with no account) has nothing.
    assert_eq!(
        a.check_range(Some(&info("ghost")), b"pub/x", b"", Access::Read),
        Err(AuthError::PermissionDenied)
    );
    // root may do everything, including admin requests.
    let root = Some(info("root"));
    assert!(a
        .check_range(root.as_ref(), b"\0", b"\0", Access::Write)
        .is_ok());
    assert!(a.check_admin(root.as_ref()).is_ok());
    assert_eq!(
        a.check_admin(reader.as_ref()),
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn txn_needs_every_compare_and_op_permitted() {
    let l = Log::with_root_and_reader();
    let a = l.store.auth();
    let reader = Some(info("reader"));
    let cmp = |key: &str| Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Version as i32,
        key: key.into(),
        target_union: Some(TargetUnion::Version(0)),
        range_end: Vec::new(),
    };
    let range = |key: &str| crate::api::pb::etcdserverpb::RequestOp {
        request: Some(
            crate::api::pb::etcdserverpb::request_op::Request::RequestRange(RangeRequest {
                key: key.into(),
                ..Default::default()
            }),
        ),
    };
    let ok = crate::api::pb::etcdserverpb::TxnRequest {
        compare: vec![cmp("pub/a")],
        success: vec![range("pub/b")],
        failure: vec![range("pub/c")],
    };
    assert!(a.check_txn(reader.as_ref(), &ok).is_ok());
    let mut bad_compare = ok.clone();
    bad_compare.compare.push(cmp("secret"));
    assert_eq!(
        a.check_txn(reader.as_ref(), &bad_compare),
        Err(AuthError::PermissionDenied)
    );
    let mut bad_failure_branch = ok.clone();
    bad_failure_branch.failure.push(range("secret"));
    assert_eq!(
        a.check_txn(reader.as_ref(), &bad_failure_branch),
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn apply_rechecks_and_a_denied_write_changes_nothing() {
    let mut l = Log::with_root_and_reader();
    l.grant("ro", PermType::Readwrite, "pub/", "pub0");
    l.as_user("reader", put("pub/a")).unwrap();
    let rev = l.store.revision();
    assert_eq!(l.as_user("reader", put("secret")), DENIED);
    // Revoked between the member's check and apply: refused at apply.
    l.apply(Request::AuthRoleRevokePermission(
        AuthRoleRevokePermissionRequest {
            role: "ro".into(),
            key: b"pub/".to_vec(),
            range_end: b"pub0".to_vec(),
        },
    ))
    .unwrap();
    assert_eq!(l.as_user("reader", put("pub/b")), DENIED);
    assert_eq!(l.store.revision(), rev, "nothing changed");
    assert_eq!(l.store.get(b"pub/b"), Ok(None));
    // Auth changes and compaction need root.
    assert_eq!(
        l.as_user(
            "reader",
            Request::AuthRoleAdd(AuthRoleAddRequest { name: "x".into() })
        ),
        DENIED
    );
    l.as_user(
        "root",
        Request::AuthRoleAdd(AuthRoleAddRequest { name: "x".into() }),
    )
    .unwrap();
    // Once auth is disabled, wrapped requests pass.
    l.as_user("root", Request::AuthDisable(AuthDisableRequest {}))
        .unwrap();
    l.as_user("reader", put("secret")).unwrap();
}

#[test]
fn revoking_a_lease_needs_write_on_its_keys() {
    let mut l = Log::with_root_and_reader();
    l.as_user(
        "root",
        Request::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 7 }),
    )
    .unwrap();
    l.as_user(
        "root",
        Request::Put(PutRequest {
            key: b"secret".to_vec(),
            value: b"v".to_vec(),
            lease: 7,
            ..Default::default()
        }),
    )
    .unwrap();
    let revoke = Request::LeaseRevoke(LeaseRevokeRequest { id: 7 });
    assert_eq!(l.as_user("reader", revoke.clone()), DENIED);
    assert!(l.store.lease(7).is_some());
    l.as_user("root", revoke).unwrap();
    assert!(l.store.lease(7).is_none());
}

#[test]
fn tokens_expire_and_are_invalidated() {
    let mut l = Log::with_root_and_reader();
    let now = 1_000_000;
    let a = l.store.auth().clone();
    assert!(a.verify_password("reader", "readpw").is_ok());
    assert_eq!(
        a.verify_password("reader", "nope"),
        Err(AuthError::AuthFailed)
    );
    assert_eq!(
        a.verify_password("ghost", "readpw"),
        Err(AuthError::AuthFailed)
    );
    let t = a.issue_token("reader", now, 300);
    // Any member with the same state accepts it.
    let elsewhere = l.store.clone();
    assert_eq!(
        elsewhere.auth().check_token(&t, now + 1).unwrap().user,
        "reader"
    );
    assert_eq!(
        a.check_token(&t, now + 300),
        Err(AuthError::InvalidToken),
        "expired"
    );
    // Other auth changes keep it valid (permissions are checked live).
    l.apply(Request::AuthRoleAdd(AuthRoleAddRequest {
        name: "z".into(),
    }))
    .unwrap();
    assert!(l.store.auth().check_token(&t, now + 1).is_ok());
    // A password change ends it; a token issued after works.
    l.apply(Request::AuthUserChangePassword(AuthUserChangePassword {
        name: "reader".into(),
        password: pw("new"),
    }))
    .unwrap();
    let a = l.store.auth().clone();
    assert_eq!(a.check_token(&t, now + 1), Err(AuthError::InvalidToken));
    assert_eq!(
        a.verify_password("reader", "readpw"),
        Err(AuthError::AuthFailed)
    );
    a.verify_password("reader", "new").unwrap();
    let t2 = a.issue_token("reader", now, 300);
    assert!(a.check_token(&t2, now + 1).is_ok());
    // Disabling auth ends every token, and so does enabling it again.
    l.apply(Request::AuthDisable(AuthDisableRequest {}))
        .unwrap();
    assert_eq!(
        l.store.auth().check_token(&t2, now + 1),
        Err(AuthError::InvalidToken)
    );
    assert_eq!(
        l.store.auth().caller(Some(&t2), None, now + 1),
        Err(AuthError::InvalidToken)
    );
    assert_eq!(
        l.store.auth().verify_password("reader", "new"),
        Err(AuthError::AuthNotEnabled)
    );
    l.enable().unwrap();
    assert_eq!(
        l.store.auth().check_token(&t2, now + 1),
        Err(AuthError::InvalidToken)
    );
    // Deleting the user ends its tokens; re-adding it does not revive them.
    let t3 = l.store.auth().issue_token("reader", now, 300);
    l.apply(Request::AuthUserDelete(AuthUserDeleteRequest {
        name: "reader".into(),
    }))
    .unwrap();
    l.user("reader", "again");
    assert_eq!(
        l.store.auth().check_token(&t3, now + 1),
        Err(AuthError::InvalidToken)
    );
}

#[test]
fn certificate_common_name_is_the_user_when_enabled() {
    // Auth off: a certificate names nobody (everything is allowed anyway).
    assert_eq!(
        Log::new().store.auth().caller(None, Some("alice"), 0),
        Ok(None)
    );
    let l = Log::with_root_and_reader();
    let c = l.store.auth().caller(None, Some("reader"), 0).unwrap();
    assert_eq!(c.map(|c| c.user).as_deref(), Some("reader"));
    assert_eq!(l.store.auth().caller(None, None, 0), Ok(None));
}

#[test]
fn snapshot_round_trip_and_version_1_snapshots() {
    let mut l = Log::with_root_and_reader();
    l.as_user("root", put("k")).unwrap();
    let mut bytes = Vec::new();
    l.store.write_snapshot(&mut bytes).unwrap();
    let mut restored = Store::default();
    restored.restore_snapshot(l.index, &mut &bytes[..]).unwrap();
    assert_eq!(restored.auth(), l.store.auth());
    assert!(restored.auth().enabled());
    let t = l.store.auth().issue_token("reader", 10, 300);
    assert!(restored.auth().check_token(&t, 11).is_ok());
    restored.auth().verify_password("reader", "readpw").unwrap();

    // The same store in format version 1 (no auth section) loads with
    // auth empty and disabled.
    let auth_record = postcard::to_stdvec(l.store.auth().data()).unwrap();
    let mut v1 = bytes[..bytes.len() - 8 - 4 - auth_record.len()].to_vec();
    v1[6..8].copy_from_slice(&1u16.to_le_bytes());
    let mut old = Store::default();
    old.restore_snapshot(l.index, &mut &v1[..]).unwrap();
    assert!(!old.auth().enabled());
    assert_eq!(old.auth().users().count(), 0);
    assert_eq!(old.get(b"k"), Ok(Some(&b"v"[..])));
    // A damaged auth section is refused, the store left as it was.
    let mut torn = bytes.clone();
    torn.truncate(bytes.len() - 3);
    let mut s = Store::default();
    assert!(s.restore_snapshot(1, &mut &torn[..]).is_err());
    assert_eq!(s.applied_index(), 0);
}
