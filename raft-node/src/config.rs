//! The node's TOML configuration (`raft-node serve --config FILE`).
//!
//! ```toml
//! id = 1
//! data_dir = "data/node-1"
//! peer_addr = "127.0.0.1:7001"
//! client_addr = "127.0.0.1:8001"
//! tls_dir = "certs"
//!
//! [[members]]
//! id = 1
//! peer_addr = "127.0.0.1:7001"
//! client_addr = "127.0.0.1:8001"
//! # ... one [[members]] table per founding member
//! ```
//!
//! Optional keys and their defaults: `election_timeout_ms = 500`,
//! `heartbeat_interval_ms = 50`, `snapshot_threshold_entries = 100000`,
//! `snapshot_threshold_bytes = 67108864`,
//! `snapshot_keep = 2`, `trailing_entries = 1000`, `max_value_bytes = 1048576`,
//! `request_timeout_ms = 5000`, `lease_reads = false`, `join = false`, `max_request_bytes = 1572864`,
//! `quota_backend_bytes = 2147483648`, `watch_progress_notify_interval_ms = 600000`,
//! `auto_compaction_retention_revisions = 100000`. Unknown keys are an error that names them.
//!
//! The client port (see `client_port`): `client_cert` + `client_key` turn TLS
//! on; `client_trusted_ca` checks client certificates and `client_cert_auth =
//! true` requires them. Without TLS, a `client_addr` that is not a loopback
//! address is refused unless `insecure_client = true`. Limits and their
//! defaults: `max_client_connections = 4096`, `max_client_streams = 1000`
//! (per connection), `max_header_bytes = 65536`, `client_request_rate =
//! 0` (per connection per second; 0: none, as in etcd), `client_handshake_timeout_ms
//! = 10000`, `client_header_timeout_ms = 10000`, `client_keepalive_ms = 30000`.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One member of the cluster as the configuration names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Node id (non-zero).
    pub id: u64,
    /// QUIC address peers reach it on.
    pub peer_addr: SocketAddr,
    /// HTTP address clients reach it on.
    pub client_addr: SocketAddr,
}

/// A node's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id; must be one of `members`.
    pub id: u64,
    /// Where the WAL and snapshots live (created if missing).
    pub data_dir: PathBuf,
    /// QUIC address to bind for peers.
    pub peer_addr: SocketAddr,
    /// HTTP address to bind for clients.
    pub client_addr: SocketAddr,
    /// Directory with `ca.crt`, `node-<id>.crt` and `node-<id>.key`.
    pub tls_dir: PathBuf,
    /// The members this node knows at start (this node included). Without
    /// `join`, these are the founding voters the cluster bootstraps with.
    pub members: Vec<Member>,
    /// Join an existing cluster instead of bootstrapping one: the node starts
    /// with an empty log and waits for the leader's snapshot (add it first
    /// with `POST /v1/members`).
    #[serde(default)]
    pub join: bool,
    /// Base election timeout (randomized up to twice this).
    #[serde(default = "defaults::election_timeout_ms")]
    pub election_timeout_ms: u64,
    /// Leader heartbeat period; also the core's tick.
    #[serde(default = "defaults::heartbeat_interval_ms")]
    pub heartbeat_interval_ms: u64,
    /// Take a snapshot after this many applied entries (default 100,000,
    /// etcd's default snapshot count).
    #[serde(default = "defaults::snapshot_threshold_entries")]
    pub snapshot_threshold_entries: u64,
    /// Take a snapshot after this many bytes of applied entries (0: only
    /// by entries). Either threshold starts one; it is written on its own
    /// thread while the node goes on. A state larger than this also waits
    /// for half its own size in bytes of log, so that snapshots cost at
    /// most twice the log they replace.
    #[serde(default = "defaults::snapshot_threshold_bytes")]
    pub snapshot_threshold_bytes: u64,
    /// Snapshots kept on disk.
    #[serde(default = "defaults::snapshot_keep")]
    pub snapshot_keep: usize,
    /// Entries kept in the WAL below a snapshot, for slightly slow followers.
    #[serde(default = "defaults::trailing_entries")]
    pub trailing_entries: u64,
    /// Largest value a client may write.
    #[serde(default = "defaults::max_value_bytes")]
    pub max_value_bytes: usize,
    /// How long a client request may wait for commit before 504.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Serve linearizable reads on the leader from its lease (no heartbeat
    /// round per read) while a quorum acknowledged a heartbeat recently
    /// enough that no other leader can have been elected (Raft thesis
    /// 6.4.1). The lease is measured on the monotonic clock with a 1% drift
    /// bound, so it is safe as long as no clock in the cluster runs more
    /// than 1% fast or slow. Off by default, as in etcd.
    #[serde(default)]
    pub lease_reads: bool,
    /// Largest etcd API request accepted, encoded (etcd's `--max-request-bytes`).
    #[serde(default = "defaults::max_request_bytes")]
    pub max_request_bytes: usize,
    /// Store size above which writes raise the NOSPACE alarm and are refused
    /// (etcd's `--quota-backend-bytes`).
    #[serde(default = "defaults::quota_backend_bytes")]
    pub quota_backend_bytes: u64,
    /// How often an idle watch that asked for progress notifications hears
    /// the current revision (etcd's default: 10 minutes).
    #[serde(default = "defaults::watch_progress_notify_interval_ms")]
    pub watch_progress_notify_interval_ms: u64,
    /// The leader compacts the MVCC history to keep this many revisions
    /// (0: never compact automatically, etcd's default).
    #[serde(default = "defaults::auto_compaction_retention_revisions")]
    pub auto_compaction_retention_revisions: i64,
    /// PEM certificate (chain) the client port presents; with `client_key`,
    /// the client port speaks TLS only (`raft-node certs` writes
    /// `server-<id>.crt` for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// PEM CA certificate that client certificates are checked against
    /// (etcd's `--trusted-ca-file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_trusted_ca: Option<PathBuf>,
    /// Only clients with a certificate from `client_trusted_ca` connect; its
    /// common name is the user (etcd's `--client-cert-auth`).
    #[serde(default)]
    pub client_cert_auth: bool,
    /// Serve plain HTTP on a `client_addr` that is not a loopback address
    /// (refused otherwise: anyone on the network could read and write).
    #[serde(default)]
    pub insecure_client: bool,
    /// How long a token from etcd's `Authenticate` is valid, in seconds
    /// (etcd's `--auth-token-ttl`).
    #[serde(default = "defaults::auth_token_ttl_secs")]
    pub auth_token_ttl_secs: u64,
    /// With auth enabled, `/metrics` answers only requests naming a user
    /// (a token or a client certificate); by default it stays open.
    #[serde(default)]
    pub metrics_require_auth: bool,
    /// Client connections open at once; more are closed at accept.
    #[serde(default = "defaults::max_client_connections")]
    pub max_client_connections: usize,
    /// Concurrent HTTP/2 streams (gRPC calls, watches) per client connection.
    #[serde(default = "defaults::max_client_streams")]
    pub max_client_streams: u32,
    /// Largest request header block a client may send, in bytes (at least 8192).
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// Requests per second one client connection may make, in bursts of as
    /// many (0, the default: no limit). Beyond it: HTTP 429 / gRPC
    /// `RESOURCE_EXHAUSTED`. Off by default because etcd's clients send all
    /// of an application's calls over one connection, so any fixed figure
    /// below the node's own capacity refuses legitimate load; what one
    /// connection can hold in flight is bounded by `max_client_streams`.
    #[serde(default = "defaults::client_request_rate")]
    pub client_request_rate: u32,
    /// Time a client has for the TLS handshake.
    #[serde(default = "defaults::client_timeout_ms")]
    pub client_handshake_timeout_ms: u64,
    /// Time a client has for its first request on a connection, and for each
    /// HTTP/1 request's headers.
    #[serde(default = "defaults::client_timeout_ms")]
    pub client_header_timeout_ms: u64,
    /// HTTP/2 keep-alive: a ping this often, and the connection is closed if
    /// it is not answered within as long.
    #[serde(default = "defaults::client_keepalive_ms")]
    pub client_keepalive_ms: u64,
}

mod defaults {
    pub fn auth_token_ttl_secs() -> u64 {
        crate::auth::tokens::DEFAULT_TTL_SECS
    }
    pub fn election_timeout_ms() -> u64 {
        500
    }
    pub fn heartbeat_interval_ms() -> u64 {
        50
    }
    /// etcd's default `--snapshot-count` (since 3.2): a snapshot serializes
    /// the whole state, so one every 10,000 writes cost a node about a tenth
    /// of its CPU at 10k writes/s on a 2-core machine.
    pub fn snapshot_threshold_entries() -> u64 {
        100_000
    }
    pub fn snapshot_threshold_bytes() -> u64 {
        64 << 20
    }
    pub fn snapshot_keep() -> usize {
        2
    }
    pub fn trailing_entries() -> u64 {
        1_000
    }
    pub fn max_value_bytes() -> usize {
        1 << 20
    }
    pub fn request_timeout_ms() -> u64 {
        5_000
    }
    pub fn max_request_bytes() -> usize {
        crate::api::etcd::DEFAULT_MAX_REQUEST_BYTES
    }
    pub fn quota_backend_bytes() -> u64 {
        crate::api::etcd::DEFAULT_QUOTA_BYTES
    }
    pub fn watch_progress_notify_interval_ms() -> u64 {
        600_000
    }
    pub fn auto_compaction_retention_revisions() -> i64 {
        100_000
    }
    pub fn max_client_connections() -> usize {
        4_096
    }
    pub fn max_client_streams() -> u32 {
        1_000
    }
    pub fn max_header_bytes() -> usize {
        64 << 10
    }
    pub fn client_request_rate() -> u32 {
        0
    }
    pub fn client_timeout_ms() -> u64 {
        10_000
    }
    pub fn client_keepalive_ms() -> u64 {
        30_000
    }
}

/// Why a configuration was refused; `Display` is one line naming the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl NodeConfig {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| ConfigError(format!("{}: {e}", path.display())))
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        let cfg: NodeConfig = toml::from_str(text).map_err(|e| {
            // toml's message spans several lines (with a source excerpt); keep the gist.
            let msg = e.message().trim().to_string();
            match e.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].lines().count().max(1);
                    ConfigError(format!("line {line}: {msg}"))
                }
                None => ConfigError(msg),
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the values against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if self.id == 0 {
            return err("id must be non-zero".into());
        }
        if self.members.is_empty() {
            return err("members is empty: list every founding member in [[members]]".into());
        }
        let mut seen = BTreeSet::new();
        for m in &self.members {
            if m.id == 0 {
                return err("members: id 0 is not a valid node id".into());
            }
            if !seen.insert(m.id) {
                return err(format!("members: duplicate member id {}", m.id));
            }
        }
        let Some(me) = self.members.iter().find(|m| m.id == self.id) else {
            return err(format!("id {} is not among members {seen:?}", self.id));
        };
        if me.peer_addr != self.peer_addr {
            return err(format!(
                "peer_addr {} differs from members entry for id {} ({})",
                self.peer_addr, self.id, me.peer_addr
            ));
        }
        if self.heartbeat_interval_ms == 0 {
            return err("heartbeat_interval_ms must be positive".into());
        }
        if self.election_timeout_ms < 2 * self.heartbeat_interval_ms {
            return err(format!(
                "election_timeout_ms ({}) must be at least twice heartbeat_interval_ms ({})",
                self.election_timeout_ms, self.heartbeat_interval_ms
            ));
        }
        if self.lease_reads && self.election_ticks() < 5 {
            // The lease lasts (election ticks - 3) heartbeat intervals from
            // the heartbeat a quorum acknowledged: shorter than two
            // intervals, most reads would find it expired.
            return err(format!(
                "lease_reads needs election_timeout_ms ({}) of at least 5 heartbeat intervals ({} ms)",
                self.election_timeout_ms,
                5 * self.heartbeat_interval_ms
            ));
        }
        if self.snapshot_keep == 0 {
            return err("snapshot_keep must be at least 1".into());
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > 64 << 20 {
            return err("max_value_bytes must be between 1 and 67108864".into());
        }
        if self.request_timeout_ms == 0 {
            return err("request_timeout_ms must be positive".into());
        }
        if self.auto_compaction_retention_revisions < 0 {
            return err("auto_compaction_retention_revisions must be 0 (off) or positive".into());
        }
        if self.watch_progress_notify_interval_ms == 0 {
            return err("watch_progress_notify_interval_ms must be positive".into());
        }
        self.validate_client_port()
    }

    /// Checks the client port's TLS and limits.
    fn validate_client_port(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => return err("client_cert is set but client_key is not".into()),
            (None, Some(_)) => return err("client_key is set but client_cert is not".into()),
            _ => {}
        }
        let tls = self.client_cert.is_some();
        if self.auth_token_ttl_secs == 0 {
            return err("auth_token_ttl_secs must be positive".into());
        }
        if self.client_cert_auth && self.client_trusted_ca.is_none() {
            return err("client_cert_auth needs client_trusted_ca (the CA whose client certificates are accepted)".into());
        }
        if self.client_trusted_ca.is_some() && !tls {
            return err("client_trusted_ca needs client_cert and client_key (client certificates come with TLS)".into());
        }
        if !tls && !self.client_addr.ip().is_loopback() && !self.insecure_client {
            return err(format!(
                "client_addr {} is reachable from the network but client TLS is off: set client_cert and \
                 client_key (`raft-node certs` writes server-<id>.crt and .key), or insecure_client = true \
                 to serve plain HTTP anyway",
                self.client_addr
            ));
        }
        if self.max_client_connections == 0 {
            return err("max_client_connections must be positive".into());
        }
        if self.max_client_streams == 0 {
            return err("max_client_streams must be positive".into());
        }
        if self.max_header_bytes < 8192 {
            return err("max_header_bytes must be at least 8192".into());
        }
        for (key, ms) in [
            (
                "client_handshake_timeout_ms",
                self.client_handshake_timeout_ms,
            ),
            ("client_header_timeout_ms", self.client_header_timeout_ms),
            ("client_keepalive_ms", self.client_keepalive_ms),
        ] {
            if ms == 0 {
                return err(format!("{key} must be positive"));
            }
        }
        Ok(())
    }

    /// The client port's TLS files, if client TLS is on.
    pub fn client_tls(&self) -> Option<crate::client_port::TlsFiles> {
        Some(crate::client_port::TlsFiles {
            cert: self.client_cert.clone()?,
            key: self.client_key.clone()?,
            trusted_ca: self.client_trusted_ca.clone(),
            client_cert_auth: self.client_cert_auth,
        })
    }

    /// The client port's limits.
    pub fn client_limits(&self) -> crate::client_port::Limits {
        crate::client_port::Limits {
            max_connections: self.max_client_connections,
            max_streams: self.max_client_streams,
            max_header_bytes: self.max_header_bytes,
            request_rate: self.client_request_rate,
            handshake_timeout: Duration::from_millis(self.client_handshake_timeout_ms),
            header_timeout: Duration::from_millis(self.client_header_timeout_ms),
            keepalive: Duration::from_millis(self.client_keepalive_ms),
        }
    }

    /// The core's tick: one heartbeat interval.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// Election timeout in ticks.
    pub fn election_ticks(&self) -> u32 {
        (self.election_timeout_ms / self.heartbeat_interval_ms).clamp(2, u32::MAX as u64) as u32
    }

    /// Ids of the founding members.
    pub fn member_ids(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// The cluster id etcd clients see: a hash (FNV-1a) of the sorted ids
    /// of the members in the configuration, the same on every member whose
    /// configuration lists the same founding members.
    pub fn cluster_id(&self) -> u64 {
        let mut ids = self.member_ids();
        ids.sort_unstable();
        ids.iter()
            .flat_map(|id| id.to_le_bytes())
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = 2
data_dir = "d"
peer_addr = "127.0.0.2:7000"
client_addr = "127.0.0.2:8000"
tls_dir = "certs"
election_timeout_ms = 300

[[members]]
id = 1
peer_addr = "127.0.0.1:7000"
client_addr = "127.0.0.1:8000"

[[members]]
id = 2
peer_addr = "127.0.0.2:7000"
client_addr = "127.0.0.2:8000"
"#;

    #[test]
    fn parses_with_defaults() {
        let c = NodeConfig::parse(GOOD).unwrap();
        assert_eq!(c.id, 2);
        assert_eq!(c.member_ids(), vec![1, 2]);
        assert_eq!((c.election_timeout_ms, c.heartbeat_interval_ms), (300, 50));
        assert_eq!(c.election_ticks(), 6);
        assert_eq!(c.max_value_bytes, 1 << 20);
        assert!(!c.lease_reads);
        // No per-connection request rate unless asked for: etcd's clients
        // multiplex a whole application over one connection.
        assert_eq!(c.client_request_rate, 0);
        let c = NodeConfig::parse(&GOOD.replace("election_timeout_ms = 300", "lease_reads = true"))
            .unwrap();
        assert!(c.lease_reads);
    }

    fn refused(text: &str) -> String {
        let e = NodeConfig::parse(text).unwrap_err().to_string();
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }

    #[test]
    fn each_problem_is_one_clear_line() {
        let e = refused(&GOOD.replace("tls_dir", "tls_dri"));
        assert!(e.contains("tls_dri"), "{e}");
        let e = refused(&GOOD.replace("tls_dir = \"certs\"\n", ""));
        assert!(e.contains("missing field `tls_dir`"), "{e}");
        let e = refused(&GOOD.replace(
            "election_timeout_ms = 300",
            "election_timeout_ms = 200\nlease_reads = true",
        ));
        assert!(
            e.contains("lease_reads needs election_timeout_ms (200)"),
            "{e}"
        );
        let e = refused(&GOOD.replace("id = 1\n", "id = 2\n"));
        assert!(e.contains("duplicate member id 2"), "{e}");
        let e = refused(&GOOD.replace("id = 2\ndata_dir", "id = 3\ndata_dir"));
        assert!(e.contains("id 3 is not among members"), "{e}");
        let e = refused(&GOOD.replacen(
            "\"127.0.0.2:7000\"\nclient",
            "\"127.0.0.2:7009\"\nclient",
            1,
        ));
        assert!(e.contains("peer_addr"), "{e}");
        let e = refused(&GOOD.replace("peer_addr = \"127.0.0.1:7000\"", "peer_addr = \"nowhere\""));
        assert!(e.contains("line"), "{e}");
        let e = refused(&GOOD.replace("election_timeout_ms = 300", "election_timeout_ms = 60"));
        assert!(e.contains("election_timeout_ms"), "{e}");
    }

    /// GOOD with its client address moved and `extra` top-level keys.
    fn with_client(addr: &str, extra: &str) -> String {
        GOOD.replace(
            "client_addr = \"127.0.0.2:8000\"\ntls_dir",
            &format!("client_addr = \"{addr}\"\n{extra}\ntls_dir"),
        )
    }

    #[test]
    fn plain_http_only_on_loopback_unless_insecure_client() {
        let c = NodeConfig::parse(GOOD).unwrap();
        assert!(c.client_tls().is_none());
        let e = refused(&with_client("10.1.2.3:2379", ""));
        assert!(
            e.contains("client_addr 10.1.2.3:2379") && e.contains("insecure_client"),
            "{e}"
        );
        let e = refused(&with_client("0.0.0.0:2379", ""));
        assert!(e.contains("client TLS is off"), "{e}");
        assert!(NodeConfig::parse(&with_client("10.1.2.3:2379", "insecure_client = true")).is_ok());
        assert!(NodeConfig::parse(&with_client("[::1]:2379", "")).is_ok());
        let tls = "client_cert = \"s.crt\"\nclient_key = \"s.key\"";
        let c = NodeConfig::parse(&with_client("10.1.2.3:2379", tls)).unwrap();
        let files = c.client_tls().unwrap();
        assert_eq!(
            (files.cert.to_str(), files.client_cert_auth),
            (Some("s.crt"), false)
        );
    }

    #[test]
    fn client_tls_keys_must_fit_together() {
        let e = refused(&with_client("127.0.0.2:8000", "client_cert = \"s.crt\""));
        assert!(e.contains("client_key is not"), "{e}");
        let e = refused(&with_client("127.0.0.2:8000", "client_key = \"s.key\""));
        assert!(e.contains("client_cert is not"), "{e}");
        let tls = "client_cert = \"s.crt\"\nclient_key = \"s.key\"";
        let e = refused(&with_client(
            "127.0.0.2:8000",
            &format!("{tls}\nclient_cert_auth = true"),
        ));
        assert!(
            e.contains("client_cert_auth needs client_trusted_ca"),
            "{e}"
        );
        let e = refused(&with_client(
            "127.0.0.2:8000",
            "client_trusted_ca = \"ca.crt\"",
        ));
        assert!(e.contains("client_trusted_ca needs client_cert"), "{e}");
        let all = format!("{tls}\nclient_trusted_ca = \"ca.crt\"\nclient_cert_auth = true");
        let c = NodeConfig::parse(&with_client("127.0.0.2:8000", &all)).unwrap();
        assert!(c.client_tls().unwrap().client_cert_auth);
        let e = refused(&with_client("127.0.0.2:8000", "max_header_bytes = 100"));
        assert!(e.contains("max_header_bytes"), "{e}");
        let e = refused(&with_client("127.0.0.2:8000", "client_keepalive_ms = 0"));
        assert!(e.contains("client_keepalive_ms"), "{e}");
        let e = refused(&with_client("127.0.0.2:8000", "client_tls = true"));
        assert!(e.contains("client_tls"), "{e}");
    }
}
