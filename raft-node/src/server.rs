//! A networked node: the driver, the QUIC peer transport and the HTTP API,
//! wired together (`raft-node serve`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use raft_core::{ConfChange, Message};
use raft_net::{Inbound, TlsConfig, TransportConfig};
use tokio::task::JoinHandle;

use crate::api::EtcdApi;
use crate::config::{Member, NodeConfig};
use crate::driver::{Driver, DriverHandle, DriverOptions, Transport};
use crate::forward::{ForwardServer, Forwarder, PeerBulk};
use crate::http::{router, AddressBook, ApiState};
use crate::identity::{Identity, PeerGate, PeerMessage};
use crate::metrics::Metrics;
use crate::snapshot_transfer::{snapshot_of, Intake, Shipper};
use crate::storage::{SnapshotPolicy, WalStorage};

pub use crate::snapshot_transfer::PeerNet;

/// Why a node could not start; `Display` is one line.
#[derive(Debug)]
pub struct StartError(pub String);

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// Sends the driver's messages over QUIC and learns new members' addresses
/// from applied membership changes.
struct NetSender {
    net: PeerNet,
    book: AddressBook,
    me: u64,
    shipper: Shipper,
    /// Set right after the driver starts; used to report snapshot transfers.
    driver: Arc<std::sync::OnceLock<DriverHandle>>,
    /// Stamps outgoing messages with this node's identity; forgets removed members.
    gate: Arc<PeerGate>,
}

impl Transport for NetSender {
    fn send(&self, msg: Message) {
        if let Some(id) = snapshot_of(&msg) {
            let driver = self.driver.clone();
            self.shipper.ship(msg, id, move |to, delivered| {
                if let Some(d) = driver.get() {
                    d.report_snapshot(to, delivered);
                }
            });
            return;
        }
        // A full queue or unknown peer drops the message (counted by raft-net); Raft retries.
        let _ = self.net.send(msg.to, self.gate.wrap(msg));
    }

    fn conf_change_applied(&self, cc: &ConfChange, context: &[u8]) {
        for step in &cc.changes {
            if let raft_core::ConfChangeSingle::Remove(id) = *step {
                self.gate.forget(id);
            }
        }
        self.learn(context);
    }

    fn members_restored(&self, members: &[(u64, Vec<u8>)]) {
        for (_, context) in members {
            self.learn(context);
        }
    }
}

impl NetSender {
    /// Adds the member a membership-change context describes to the address
    /// book and the transport.
    fn learn(&self, context: &[u8]) {
        let Ok(m) = postcard::from_bytes::<Member>(context) else {
            return;
        };
        tracing::info!(node = self.me, member = m.id, peer_addr = %m.peer_addr, "learned member address");
        if m.id != self.me {
            self.net.add_peer(m.id, m.peer_addr);
        }
        self.book
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(m.id, m);
    }
}

/// A running node.
pub struct Server {
    driver: Driver,
    net: PeerNet,
    http: JoinHandle<()>,
    inbound: JoinHandle<()>,
    lessor: JoinHandle<()>,
    compactor: JoinHandle<()>,
    shutdown_http: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    /// Starts the node described by `cfg` inside the current Tokio runtime.
    pub async fn start(cfg: &NodeConfig) -> Result<Server, StartError> {
        let tls = TlsConfig::load(&cfg.tls_dir, cfg.id)
            .map_err(|e| StartError(format!("TLS files in {}: {e}", cfg.tls_dir.display())))?;
        let data_dir = cfg.data_dir.clone();
        // A joining node starts empty and waits for the leader's snapshot.
        let voters = if cfg.join {
            Vec::new()
        } else {
            cfg.member_ids()
        };
        let policy = SnapshotPolicy {
            keep: cfg.snapshot_keep,
            trailing_entries: cfg.trailing_entries,
        };
        let storage =
            tokio::task::spawn_blocking(move || WalStorage::open_with(&data_dir, &voters, policy))
                .await
                .map_err(|e| StartError(format!("storage open task failed: {e}")))?
                .map_err(|e| StartError(format!("data_dir {}: {e}", cfg.data_dir.display())))?;
        // Who this member is to its peers (written on first start; see identity.rs).
        let founding = (!cfg.join).then(|| cfg.member_ids());
        let gate = Identity::load_or_create(&cfg.data_dir, founding.as_deref())
            .and_then(|me| PeerGate::load(&cfg.data_dir, me))
            .map(Arc::new)
            .map_err(|e| StartError(format!("data_dir {}: {e}", cfg.data_dir.display())))?;

        let mut tcfg = TransportConfig::new(cfg.id, cfg.peer_addr);
        for m in cfg.members.iter().filter(|m| m.id != cfg.id) {
            tcfg.peers.insert(m.id, m.peer_addr);
        }
        tcfg.max_frame_bytes = (cfg.max_value_bytes * 2 + (1 << 20)).max(16 << 20);
        let (net, inbox) = PeerNet::start(tcfg, &tls)
            .map_err(|e| StartError(format!("peer_addr {}: {e}", cfg.peer_addr)))?;

        let book: AddressBook = Arc::new(RwLock::new(
            cfg.members
                .iter()
                .map(|m| (m.id, m.clone()))
                .collect::<BTreeMap<_, _>>(),
        ));
        let mut opts = DriverOptions::new(cfg.id);
        opts.tick = cfg.tick();
        opts.election_ticks = cfg.election_ticks();
        opts.heartbeat_ticks = 1;
        opts.request_timeout = Duration::from_millis(cfg.request_timeout_ms);
        opts.snapshot_threshold_entries = cfg.snapshot_threshold_entries;
        opts.snapshot_threshold_bytes = cfg.snapshot_threshold_bytes;
        opts.lease_reads = cfg.lease_reads;
        let store = storage.store().clone();
        let driver_cell = Arc::new(std::sync::OnceLock::new());
        let sender = NetSender {
            net: net.clone(),
            book: book.clone(),
            me: cfg.id,
            shipper: Shipper::new(
                net.clone(),
                store.clone(),
                tokio::runtime::Handle::current(),
            ),
            driver: driver_cell.clone(),
            gate: gate.clone(),
        };
        let driver = Driver::spawn(opts, storage, sender)
            .map_err(|e| StartError(format!("cannot start the driver thread: {e}")))?;
        let handle = driver.handle();
        let _ = driver_cell.set(handle.clone());
        let request_timeout = Duration::from_millis(cfg.request_timeout_ms);
        let forwarder = Arc::new(Forwarder::new(cfg.id, net.clone(), request_timeout));
        let lessor = Arc::new(crate::lease::Lessor::new(cfg.id, handle.clone()));
        let forward_server =
            ForwardServer::new(cfg.id, net.clone(), handle.clone(), lessor.clone());
        let inbound = tokio::spawn(pump_inbound(
            handle.clone(),
            gate.clone(),
            inbox,
            Intake::new(store),
            forwarder.clone(),
            forward_server,
        ));
        let client_scheme = if cfg.client_tls().is_some() {
            "https"
        } else {
            "http"
        };
        let etcd = Arc::new(EtcdApi {
            member_id: cfg.id,
            cluster_id: cfg.cluster_id(),
            driver: handle.clone(),
            forwarder,
            members: book.clone(),
            max_request_bytes: cfg.max_request_bytes,
            quota_bytes: cfg.quota_backend_bytes,
            request_timeout,
            watch_progress_interval: Duration::from_millis(cfg.watch_progress_notify_interval_ms),
            lessor: lessor.clone(),
            // etcd's minimum: 1.5 election timeouts, in whole seconds.
            min_lease_ttl: (cfg.election_timeout_ms * 3).div_ceil(2000).max(1) as i64,
            watch_metrics: Arc::default(),
            client_scheme,
            token_ttl_secs: cfg.auth_token_ttl_secs,
        });

        let client_port =
            crate::client_port::ClientPort::new(cfg.client_tls().as_ref(), cfg.client_limits())
                .map_err(|e| StartError(format!("client port: {e}")))?;
        let listener = tokio::net::TcpListener::bind(cfg.client_addr)
            .await
            .map_err(|e| StartError(format!("client_addr {}: {e}", cfg.client_addr)))?;
        let metrics_net = net.clone();
        let metrics_driver = handle.clone();
        let watch_metrics = etcd.watch_metrics.clone();
        let state = Arc::new(ApiState {
            driver: handle,
            members: book,
            max_value_bytes: cfg.max_value_bytes,
            metrics: Arc::new(Metrics::with_extra(Arc::new(move |out: &mut String| {
                metrics_driver.counters().render(out);
                watch_metrics.render(metrics_driver.store().leases().count(), out);
                render_net_metrics(&metrics_net, out)
            }))),
            client_scheme,
            metrics_require_auth: cfg.metrics_require_auth,
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let lessor_task = tokio::spawn(crate::lease::run(lessor, etcd.clone()));
        let compactor = tokio::spawn(crate::auto_compact::run(
            etcd.clone(),
            cfg.auto_compaction_retention_revisions,
        ));
        let app = router(state)
            .merge(crate::api::grpc::router(etcd.clone()))
            .merge(crate::api::gateway::router(etcd));
        let client_tls = client_port.is_tls();
        let http = tokio::spawn(client_port.serve(listener, app, stop_rx));
        tracing::info!(
            node = cfg.id,
            peer_addr = %cfg.peer_addr,
            client_addr = %cfg.client_addr,
            client_tls,
            client_cert_auth = cfg.client_cert_auth,
            "node started"
        );
        Ok(Server {
            driver,
            net,
            http,
            inbound,
            lessor: lessor_task,
            compactor,
            shutdown_http: Some(stop_tx),
        })
    }

    /// Resolves if the driver stops on its own (a storage failure, or a
    /// panic on a broken invariant), with the reason. The process should then
    /// exit: a node whose core is gone must not keep answering.
    pub async fn failed(&self) -> String {
        loop {
            if !self.driver.is_running() {
                return self
                    .driver
                    .handle()
                    .status()
                    .failed
                    .unwrap_or_else(|| "the driver thread ended unexpectedly".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A handle to the node's driver.
    pub fn handle(&self) -> DriverHandle {
        self.driver.handle()
    }

    /// Stops accepting client requests, finishes the driver's current batch
    /// (its fsync included), closes the WAL and the peer endpoint.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown_http.take() {
            let _ = tx.send(());
        }
        // In-flight requests get their answers (or a stop error) from the driver.
        let mut driver = self.driver;
        let stopped = tokio::task::spawn_blocking(move || driver.stop()).await;
        if stopped.is_err() {
            tracing::error!("driver stop task failed");
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.http).await;
        self.inbound.abort();
        self.lessor.abort();
        self.compactor.abort();
        self.net.shutdown().await;
    }
}

/// Feeds peer messages to the driver, and snapshot pieces to the intake
/// (the `InstallSnapshot` message goes to the driver once the snapshot is
/// verified and durable). raft-net has already checked that every `from` is
/// the peer's verified certificate id.
async fn pump_inbound(
    handle: DriverHandle,
    gate: Arc<PeerGate>,
    mut inbox: raft_net::Inbox<PeerMessage, PeerBulk>,
    mut intake: Intake,
    forwarder: Arc<Forwarder>,
    forward_server: ForwardServer,
) {
    while let Some((from, inbound)) = inbox.recv().await {
        if !matches!(inbound, Inbound::Message(_)) && gate.refuses(from) {
            continue;
        }
        match inbound {
            Inbound::Message(m) => {
                if let Some(m) = gate.admit(from, m) {
                    handle.deliver(m);
                }
            }
            Inbound::Bulk(PeerBulk::Snapshot(piece)) => {
                if let Some(install) = intake.accept(from, piece) {
                    crate::snapshot_transfer::deliver_install(&handle, intake.store(), install);
                }
            }
            Inbound::Bulk(PeerBulk::Forward(f)) => forward_server.handle(&forwarder, f),
        }
    }
}

fn render_net_metrics(net: &PeerNet, out: &mut String) {
    use std::fmt::Write as _;
    let stats = net.stats();
    let _ = writeln!(out, "# TYPE raft_net_peer_connected gauge");
    for p in &stats.peers {
        let _ = writeln!(
            out,
            "raft_net_peer_connected{{peer=\"{}\"}} {}",
            p.id,
            u8::from(p.connected)
        );
    }
    for (name, get) in [
        (
            "raft_net_bytes_sent_total",
            (|p: &raft_net::PeerStats| p.bytes_sent) as fn(&raft_net::PeerStats) -> u64,
        ),
        ("raft_net_bytes_received_total", |p| p.bytes_received),
        ("raft_net_messages_sent_total", |p| p.messages_sent),
        ("raft_net_messages_received_total", |p| p.messages_received),
        ("raft_net_dropped_total", |p| p.dropped),
        ("raft_net_reconnects_total", |p| p.reconnects),
    ] {
        let _ = writeln!(out, "# TYPE {name} counter");
        for p in &stats.peers {
            let _ = writeln!(out, "{name}{{peer=\"{}\"}} {}", p.id, get(p));
        }
    }
}
