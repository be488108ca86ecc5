//! etcd's v3 gRPC services on the client port (h2c beside HTTP/1.1).

pub mod auth;
pub mod cluster;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod status;
pub mod watch;

use std::sync::Arc;

use axum::Router;

use super::etcd::EtcdApi;
use super::pb::etcdserverpb::auth_server::AuthServer;
use super::pb::etcdserverpb::cluster_server::ClusterServer;
use super::pb::etcdserverpb::kv_server::KvServer;
use super::pb::etcdserverpb::lease_server::LeaseServer;
use super::pb::etcdserverpb::maintenance_server::MaintenanceServer;
use super::pb::etcdserverpb::watch_server::WatchServer;

/// gRPC framing and metadata on top of a request's encoded size (etcd
/// allows the same margin over `--max-request-bytes`).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// Routes for the KV, Watch, Lease, Cluster, Maintenance and Auth services.
pub fn router(api: Arc<EtcdApi>) -> Router {
    let max = api.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let kv = KvServer::new(kv::KvService(api.clone())).max_decoding_message_size(max);
    let cluster =
        ClusterServer::new(cluster::ClusterService(api.clone())).max_decoding_message_size(max);
    let lease = LeaseServer::new(lease::LeaseService(api.clone())).max_decoding_message_size(max);
    let auth = AuthServer::new(auth::AuthService(api.clone())).max_decoding_message_size(max);
    let watch = WatchServer::new(watch::WatchService(api.clone())).max_decoding_message_size(max);
    let maintenance = MaintenanceServer::new(maintenance::MaintenanceService(api))
        .max_decoding_message_size(max)
        .max_encoding_message_size(usize::MAX);
    Router::new()
        .route_service("/etcdserverpb.KV/{*method}", kv)
        .route_service("/etcdserverpb.Watch/{*method}", watch)
        .route_service("/etcdserverpb.Lease/{*method}", lease)
        .route_service("/etcdserverpb.Cluster/{*method}", cluster)
        .route_service("/etcdserverpb.Maintenance/{*method}", maintenance)
        .route_service("/etcdserverpb.Auth/{*method}", auth)
}
