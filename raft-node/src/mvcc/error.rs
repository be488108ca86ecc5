//! Why an MVCC request failed, with etcd's error messages.

use std::fmt;

/// A request the store refused. Nothing changed; no revision was used.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MvccError {
    /// The revision asked for was compacted away.
    Compacted,
    /// The revision asked for is newer than the store's.
    FutureRevision,
    /// `ignore_value` / `ignore_lease` on a key that does not exist.
    KeyNotFound,
    /// The lease does not exist.
    LeaseNotFound,
    /// A lease with that id exists already.
    LeaseExists,
    /// The NOSPACE alarm is raised: writes are refused until it is disarmed.
    NoSpace,
    /// An empty key.
    EmptyKey,
    /// A key is written twice in one transaction.
    DuplicateKey,
    /// More operations in a transaction than allowed.
    TooManyOps,
    /// A request the store cannot decode or interpret.
    Malformed(String),
    /// A retried request whose first result is no longer kept: it may or
    /// may not have been applied (see `mvcc/dedupe.rs`).
    RequestIdTooOld,
    /// A request id already applied with a different request.
    RequestIdReused,
    /// Refused by auth (`auth/`): a permission, user or role problem.
    Auth(crate::auth::AuthError),
    /// This member is rebuilding its state from a snapshot of the leader's
    /// (seconds for a large state): its keys cannot be read until then.
    Restoring,
}

impl MvccError {
    /// etcd's message for this error (what etcd clients match on).
    pub fn message(&self) -> String {
        match self {
            MvccError::Compacted => "etcdserver: mvcc: required revision has been compacted".into(),
            MvccError::FutureRevision => {
                "etcdserver: mvcc: required revision is a future revision".into()
            }
            MvccError::KeyNotFound => "etcdserver: key not found".into(),
            MvccError::LeaseNotFound => "etcdserver: requested lease not found".into(),
            MvccError::LeaseExists => "etcdserver: lease already exists".into(),
            MvccError::NoSpace => "etcdserver: mvcc: database space exceeded".into(),
            MvccError::EmptyKey => "etcdserver: key is not provided".into(),
            MvccError::DuplicateKey => "etcdserver: duplicate key given in txn request".into(),
            MvccError::TooManyOps => "etcdserver: too many operations in txn request".into(),
            MvccError::Malformed(why) => format!("etcdserver: malformed request: {why}"),
            MvccError::RequestIdTooOld => "etcdserver: request id too old; the outcome of its \
                                           first attempt is unknown"
                .into(),
            MvccError::RequestIdReused => {
                "etcdserver: request id already used for a different request".into()
            }
            MvccError::Auth(e) => e.message().to_string(),
            MvccError::Restoring => "etcdserver: this member is restoring a snapshot from the \
                                     leader; retry, or ask another member"
                .into(),
        }
    }
}

impl fmt::Display for MvccError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for MvccError {}
