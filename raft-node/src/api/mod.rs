//! etcd's v3 API on the client port (DESIGN.md §10): the gRPC services
//! ([`grpc`]) and etcd's JSON gateway ([`gateway`]), beside the `/v1` HTTP
//! API, all on one port as etcd's 2379.

pub mod authority;
pub mod etcd;
pub mod gateway;
pub mod grpc;
pub mod pb;

pub use etcd::EtcdApi;
