//! The generated etcd v3 API types (see `build.rs` and `proto/`).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// etcd's `mvccpb` package: key-value records and watch events.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}

/// etcd's `authpb` package: users, roles and permissions.
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}

/// etcd's `etcdserverpb` package: requests, responses and services.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}

/// raft-node's log entry format for state-machine commands.
pub mod raftnodepb {
    tonic::include_proto!("raftnodepb");
}
