//! etcd's gRPC status codes and messages for our errors, so that etcd's
//! client libraries retry or fail exactly as they do against etcd.

use tonic::Status;

use crate::driver::ClientError;
use crate::mvcc::MvccError;

/// The status etcd answers for a store error.
pub fn from_mvcc(e: &MvccError) -> Status {
    let msg = e.message();
    match e {
        MvccError::Compacted | MvccError::FutureRevision => Status::out_of_range(msg),
        MvccError::LeaseNotFound => Status::not_found(msg),
        MvccError::LeaseExists => Status::failed_precondition(msg),
        MvccError::NoSpace => Status::resource_exhausted(msg),
        // etcd's clients retry this on another endpoint.
        MvccError::Restoring => Status::unavailable(msg),
        // A retried request whose outcome the store can no longer tell, or
        // an id reused for another request: retrying cannot help.
        MvccError::RequestIdTooOld | MvccError::RequestIdReused => Status::failed_precondition(msg),
        MvccError::KeyNotFound
        | MvccError::EmptyKey
        | MvccError::DuplicateKey
        | MvccError::TooManyOps
        | MvccError::Malformed(_) => Status::invalid_argument(msg),
        MvccError::Auth(a) => a.status(),
    }
}

/// The status etcd answers when a request could not be served.
pub fn from_client(e: ClientError) -> Status {
    match e {
        ClientError::NotLeader { leader: None } => Status::unavailable("etcdserver: no leader"),
        ClientError::NotLeader { leader: Some(_) } => Status::unavailable("etcdserver: not leader"),
        ClientError::Timeout => Status::unavailable("etcdserver: request timed out"),
        ClientError::Overwritten => Status::unavailable("etcdserver: leader changed"),
        ClientError::Busy(why) => {
            if why.contains("learner") {
                Status::failed_precondition(
                    "etcdserver: can only promote a learner member which is in sync with leader",
                )
            } else {
                Status::unavailable(format!("etcdserver: too many requests ({why})"))
            }
        }
        ClientError::Invalid(why) => Status::invalid_argument(format!("etcdserver: {why}")),
        ClientError::DiskFull => {
            Status::resource_exhausted("etcdserver: mvcc: database space exceeded")
        }
        ClientError::Stopped(_) => Status::unavailable("etcdserver: server stopped"),
    }
}
