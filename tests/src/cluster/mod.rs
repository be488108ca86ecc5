//! Real `raft-node serve` processes on 127.0.0.1..127.0.0.N.
//!
//! [`Cluster::start`] generates certificates (`raft-node certs`), writes one
//! TOML configuration and a fresh data directory per node, and spawns the
//! processes with `RUST_LOG=info` and stderr appended to `node-<id>.log` in the
//! run directory. Node `i` binds both its QUIC peer address and its HTTP
//! client address on its own loopback address `127.0.0.i`, so faults can be
//! targeted by source/destination address (see [`crate::nemesis`]).
//!
//! With [`ClusterOptions::client_tls`] the client ports speak TLS only and
//! require a client certificate: `raft-node certs` also writes a server
//! certificate per node (naming `127.0.0.<id>`) and a client certificate,
//! every node's config gets `client_cert`, `client_key`, `client_trusted_ca`
//! and `client_cert_auth = true`, [`NodeSpec::url`] is `https://...`, and
//! [`Cluster::client_tls`] hands clients the CA and the client certificate.
//!
//! Processes are killed (`SIGKILL`, after `SIGCONT` for stopped ones) when the
//! [`Cluster`] is dropped, also during a panic; [`Cluster::shutdown`] stops them
//! cleanly with `SIGTERM` and reports any that did not exit 0.

mod binary;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use binary::{node_binary, target_dir};

/// Every child pid the suite started and has not reaped yet; the interrupt
/// handler ([`crate::nemesis::install_interrupt_cleanup`]) kills them.
pub(crate) static LIVE_PIDS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn live_pids() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    LIVE_PIDS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Timing and size knobs of the nodes.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of nodes (1..=9; node `i` lives on 127.0.0.`i`).
    pub nodes: usize,
    /// `election_timeout_ms` of every node.
    pub election_timeout_ms: u64,
    /// `heartbeat_interval_ms` of every node.
    pub heartbeat_interval_ms: u64,
    /// `request_timeout_ms` of every node.
    pub request_timeout_ms: u64,
    /// `snapshot_threshold_entries` of every node (small, so snapshots and
    /// snapshot transfers happen during a run).
    pub snapshot_threshold_entries: u64,
    /// `trailing_entries` of every node.
    pub trailing_entries: u64,
    /// TLS on the client ports, with client certificates required
    /// (`client_cert_auth = true`); see [`Cluster::client_tls`].
    pub client_tls: bool,
    /// `lease_reads` of every node: linearizable reads served from the
    /// leader lease.
    pub lease_reads: bool,
}

impl ClusterOptions {
    /// Short timeouts suited to tests on a loaded machine.
    pub fn for_tests(nodes: usize) -> Self {
        ClusterOptions {
            nodes,
            election_timeout_ms: 300,
            heartbeat_interval_ms: 40,
            request_timeout_ms: 2000,
            snapshot_threshold_entries: 200,
            trailing_entries: 50,
            client_tls: false,
            lease_reads: false,
        }
    }
}

/// Where one node lives.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node id (1-based).
    pub id: u64,
    /// Its loopback address, 127.0.0.`id`.
    pub ip: Ipv4Addr,
    /// QUIC (UDP) address for peers.
    pub peer_addr: SocketAddr,
    /// HTTP (TCP) address for clients.
    pub client_addr: SocketAddr,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its stderr (all incarnations, appended).
    pub log: PathBuf,
    /// Whether its client port speaks TLS ([`ClusterOptions::client_tls`]).
    pub client_tls: bool,
}

impl NodeSpec {
    /// `https://<client_addr>` with client TLS, else `http://<client_addr>`.
    pub fn url(&self) -> String {
        let scheme = if self.client_tls { "https" } else { "http" };
        format!("{scheme}://{}", self.client_addr)
    }
}

/// Common name of the client certificate a cluster with client TLS makes
/// for its clients (`client-root.crt`): with etcd's auth enabled the common
/// name is the user, and `root` may do everything, admin calls included.
pub const CLIENT_CERT_NAME: &str = "root";

/// What a client needs to reach a cluster whose client ports speak TLS and
/// require client certificates: the CA that signed the nodes' server
/// certificates (and the client certificate), and a client certificate with
/// its key, as files and as loaded PEM.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The cluster CA (`ca.crt`), which the clients trust.
    pub ca: PathBuf,
    /// The client certificate ([`CLIENT_CERT_NAME`]).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// `ca` as PEM.
    pub ca_pem: Vec<u8>,
    /// `cert` as PEM.
    pub cert_pem: Vec<u8>,
    /// `key` as PEM.
    pub key_pem: Vec<u8>,
}

impl ClientTls {
    /// Loads the files; they must be PEM that the clients (reqwest and
    /// etcd-client, both with rustls) accept.
    pub fn load(ca: PathBuf, cert: PathBuf, key: PathBuf) -> io::Result<ClientTls> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
        };
        let tls = ClientTls {
            ca_pem: read(&ca)?,
            cert_pem: read(&cert)?,
            key_pem: read(&key)?,
            ca,
            cert,
            key,
        };
        tls.reqwest_root().map_err(io::Error::other)?;
        tls.reqwest_identity().map_err(io::Error::other)?;
        Ok(tls)
    }

    /// The CA as a reqwest root certificate.
    pub fn reqwest_root(&self) -> Result<reqwest::Certificate, String> {
        reqwest::Certificate::from_pem(&self.ca_pem)
            .map_err(|e| format!("{}: {e}", self.ca.display()))
    }

    /// The client certificate and key as a reqwest identity.
    pub fn reqwest_identity(&self) -> Result<reqwest::Identity, String> {
        let mut pem = self.cert_pem.clone();
        pem.push(b'\n');
        pem.extend_from_slice(&self.key_pem);
        reqwest::Identity::from_pem(&pem).map_err(|e| format!("{}: {e}", self.cert.display()))
    }

    /// etcd-client's TLS options: trust the CA, present the client
    /// certificate (the server name checked is the endpoint's host).
    pub fn etcd_options(&self) -> etcd_client::TlsOptions {
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&self.ca_pem))
            .identity(etcd_client::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
    }
}

#[derive(Debug, Default)]
struct Proc {
    child: Option<Child>,
    stopped: bool,
    starts: u32,
}

/// A running cluster of `raft-node serve` processes.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    options: ClusterOptions,
    nodes: Vec<NodeSpec>,
    procs: Mutex<Vec<Proc>>,
    /// Boxed: a `Cluster` without client TLS stays small.
    client_tls: Option<Box<ClientTls>>,
}

/// Ports handed out by this process, so concurrent clusters never collide.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// Finds a port free for TCP and UDP on every given address.
fn free_port(ips: &[Ipv4Addr]) -> io::Result<u16> {
    if NEXT_PORT.load(Ordering::Relaxed) == 0 {
        let base = 30_000 + (std::process::id() % 500) as u16 * 40;
        let _ = NEXT_PORT.compare_exchange(0, base, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..2000 {
        let mut port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        if !(20_000..=59_000).contains(&port) {
            NEXT_PORT.store(20_000, Ordering::Relaxed);
            port = 20_000;
        }
        let free = ips.iter().all(|ip| {
            TcpListener::bind((*ip, port)).is_ok() && UdpSocket::bind((*ip, port)).is_ok()
        });
        if free {
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free port on the cluster's addresses",
    ))
}

fn run_ok(cmd: &mut Command) -> io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Cluster {
    /// Generates certificates and configurations under `dir` (created if
    /// missing) and starts every node with binary `bin`.
    pub fn start(bin: &Path, dir: &Path, options: ClusterOptions) -> io::Result<Cluster> {
        Self::start_with_setup(bin, dir, options, |_| Ok(()))
    }

    /// Like [`Cluster::start`], but the new cluster's founding members are
    /// first prepared from `snapshot` (a file written by `etcdctl snapshot
    /// save` against raft-node): `raft-node restore --snapshot <snapshot>
    /// --config node-<id>.toml` runs for every node on its fresh data
    /// directory before any node is spawned.
    pub fn start_restored(
        bin: &Path,
        dir: &Path,
        options: ClusterOptions,
        snapshot: &Path,
    ) -> io::Result<Cluster> {
        Self::start_with_setup(bin, dir, options, |node| {
            run_ok(
                Command::new(bin)
                    .arg("restore")
                    .arg("--snapshot")
                    .arg(snapshot)
                    .arg("--config")
                    .arg(&node.config),
            )
        })
    }

    /// Like [`Cluster::start`], but `setup` runs for every node once its
    /// certificates and configuration are written and before any node is
    /// spawned (an error stops the start).
    pub fn start_with_setup(
        bin: &Path,
        dir: &Path,
        options: ClusterOptions,
        setup: impl Fn(&NodeSpec) -> io::Result<()>,
    ) -> io::Result<Cluster> {
        assert!(
            (1..=9).contains(&options.nodes),
            "1 to 9 nodes (127.0.0.1..9)"
        );
        std::fs::create_dir_all(dir)?;
        let n = options.nodes as u64;
        let ids: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        let certs = dir.join("certs");
        let ips: Vec<Ipv4Addr> = (1..=n).map(|i| Ipv4Addr::new(127, 0, 0, i as u8)).collect();
        let mut certs_cmd = Command::new(bin);
        certs_cmd.args(["certs", "--ids", &ids.join(",")]);
        if options.client_tls {
            // Server certificates naming each node's own address, and a
            // client certificate from the same CA.
            let hosts: Vec<String> = ips
                .iter()
                .zip(&ids)
                .map(|(ip, id)| format!("{id}={ip}"))
                .collect();
            certs_cmd
                .arg("--client-hosts")
                .arg(hosts.join(","))
                .args(["--client", CLIENT_CERT_NAME]);
        }
        run_ok(certs_cmd.arg("--out").arg(&certs))?;
        let client_tls = if options.client_tls {
            Some(Box::new(ClientTls::load(
                certs.join("ca.crt"),
                certs.join(format!("client-{CLIENT_CERT_NAME}.crt")),
                certs.join(format!("client-{CLIENT_CERT_NAME}.key")),
            )?))
        } else {
            None
        };
        let peer_port = free_port(&ips)?;
        let client_port = free_port(&ips)?;
        let nodes: Vec<NodeSpec> = ips
            .iter()
            .zip(1..=n)
            .map(|(ip, id)| NodeSpec {
                id,
                ip: *ip,
                peer_addr: SocketAddr::from((*ip, peer_port)),
                client_addr: SocketAddr::from((*ip, client_port)),
                config: dir.join(format!("node-{id}.toml")),
                data_dir: dir.join(format!("data-{id}")),
                log: dir.join(format!("node-{id}.log")),
                client_tls: options.client_tls,
            })
            .collect();
        let mut members = String::new();
        for m in &nodes {
            let _ = write!(
                members,
                "[[members]]\nid = {}\npeer_addr = \"{}\"\nclient_addr = \"{}\"\n\n",
                m.id, m.peer_addr, m.client_addr
            );
        }
        for node in &nodes {
            let tls = if options.client_tls {
                format!(
                    "client_cert = \"{}\"\nclient_key = \"{}\"\nclient_trusted_ca = \"{}\"\n\
                     client_cert_auth = true\n",
                    certs.join(format!("server-{}.crt", node.id)).display(),
                    certs.join(format!("server-{}.key", node.id)).display(),
                    certs.join("ca.crt").display(),
                )
            } else {
                String::new()
            };
            let text = format!(
                "id = {}\ndata_dir = \"{}\"\npeer_addr = \"{}\"\nclient_addr = \"{}\"\ntls_dir = \"{}\"\n\
                 election_timeout_ms = {}\nheartbeat_interval_ms = {}\nrequest_timeout_ms = {}\n\
                 snapshot_threshold_entries = {}\ntrailing_entries = {}\nlease_reads = {}\n{tls}\n{members}",
                node.id,
                node.data_dir.display(),
                node.peer_addr,
                node.client_addr,
                certs.display(),
                options.election_timeout_ms,
                options.heartbeat_interval_ms,
                options.request_timeout_ms,
                options.snapshot_threshold_entries,
                options.trailing_entries,
                options.lease_reads,
            );
            std::fs::write(&node.config, text)?;
        }
        for node in &nodes {
            setup(node)?;
        }
        let cluster = Cluster {
            dir: dir.to_path_buf(),
            bin: bin.to_path_buf(),
            procs: Mutex::new((0..nodes.len()).map(|_| Proc::default()).collect()),
            options,
            nodes,
            client_tls,
        };
        for id in cluster.ids() {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the nodes run with.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// The CA and client certificate clients need, when the client ports
    /// speak TLS ([`ClusterOptions::client_tls`]).
    pub fn client_tls(&self) -> Option<&ClientTls> {
        self.client_tls.as_deref()
    }

    /// Every node.
    pub fn nodes(&self) -> &[NodeSpec] {
        &self.nodes
    }

    /// Every node id, ascending.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The node with id `id`.
    pub fn node(&self, id: u64) -> &NodeSpec {
        &self.nodes[Self::index(id)]
    }

    fn index(id: u64) -> usize {
        usize::try_from(id - 1).expect("node ids are small")
    }

    fn procs(&self) -> std::sync::MutexGuard<'_, Vec<Proc>> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts node `id` on its data directory (which it keeps across restarts);
    /// a no-op if it is running.
    pub fn spawn(&self, id: u64) -> io::Result<()> {
        let mut procs = self.procs();
        let p = &mut procs[Self::index(id)];
        if let Some(child) = p.child.as_mut() {
            if child.try_wait()?.is_none() {
                return Ok(());
            }
            live_pids().remove(&(child.id() as i32));
        }
        let node = &self.nodes[Self::index(id)];
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        p.starts += 1;
        writeln!(
            log,
            "===== fault suite: start #{} of node {id} =====",
            p.starts
        )?;
        let child = Command::new(&self.bin)
            .arg("serve")
            .arg("--config")
            .arg(&node.config)
            .env(
                "RUST_LOG",
                std::env::var("RAFT_FAULTS_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?;
        live_pids().insert(child.id() as i32);
        p.child = Some(child);
        p.stopped = false;
        Ok(())
    }

    fn signal(&self, id: u64, sig: i32) -> bool {
        let procs = self.procs();
        match procs[Self::index(id)].child.as_ref() {
            Some(child) => {
                // SAFETY: kill(2) on a child we spawned and have not reaped
                // (its pid cannot have been reused).
                unsafe { libc::kill(child.id() as i32, sig) == 0 }
            }
            None => false,
        }
    }

    /// `SIGKILL`s node `id` and reaps it; its data directory stays.
    pub fn kill(&self, id: u64) -> io::Result<()> {
        let mut procs = self.procs();
        let p = &mut procs[Self::index(id)];
        if let Some(mut child) = p.child.take() {
            child.kill()?;
            child.wait()?;
            live_pids().remove(&(child.id() as i32));
        }
        p.stopped = false;
        Ok(())
    }

    /// `SIGSTOP`s node `id` (it keeps its sockets but answers nothing).
    pub fn pause(&self, id: u64) -> bool {
        let ok = self.signal(id, libc::SIGSTOP);
        if ok {
            self.procs()[Self::index(id)].stopped = true;
        }
        ok
    }

    /// `SIGCONT`s node `id`.
    pub fn resume(&self, id: u64) -> bool {
        let ok = self.signal(id, libc::SIGCONT);
        self.procs()[Self::index(id)].stopped = false;
        ok
    }

    /// The process id of node `id`, while it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.procs()[Self::index(id)].child.as_ref().map(|c| c.id())
    }

    /// Whether node `id` has a process that has not exited.
    pub fn is_running(&self, id: u64) -> bool {
        let mut procs = self.procs();
        match procs[Self::index(id)].child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Nodes whose process exited on its own (not killed by the suite), with
    /// their exit status.
    pub fn crashed(&self) -> Vec<(u64, String)> {
        let mut procs = self.procs();
        let mut out = Vec::new();
        for (i, p) in procs.iter_mut().enumerate() {
            if let Some(child) = p.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    out.push((i as u64 + 1, status.to_string()));
                }
            }
        }
        out
    }

    /// Continues stopped nodes and starts any that are not running.
    pub fn revive_all(&self) -> io::Result<()> {
        for id in self.ids() {
            self.resume(id);
            if !self.is_running(id) {
                self.spawn(id)?;
            }
        }
        Ok(())
    }

    /// Stops every node with `SIGTERM` (after `SIGCONT`), waiting up to
    /// `grace` for each; stragglers are killed. Returns the nodes that did not
    /// exit 0 in time, with what happened.
    pub fn shutdown(&self, grace: Duration) -> Vec<(u64, String)> {
        let mut procs = self.procs();
        for p in procs.iter_mut() {
            if let Some(child) = p.child.as_ref() {
                // SAFETY: kill(2) on our own unreaped child.
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGCONT);
                    libc::kill(child.id() as i32, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + grace;
        let mut bad = Vec::new();
        for (i, p) in procs.iter_mut().enumerate() {
            let Some(mut child) = p.child.take() else {
                continue;
            };
            let id = i as u64 + 1;
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        if !status.success() {
                            bad.push((id, format!("exited with {status} on SIGTERM")));
                        }
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        bad.push((id, format!("did not exit within {grace:?} of SIGTERM")));
                        break;
                    }
                    Err(e) => {
                        bad.push((id, format!("wait failed: {e}")));
                        break;
                    }
                }
            }
            live_pids().remove(&(child.id() as i32));
        }
        bad
    }

    /// Appends a line to `events.log` in the run directory.
    pub fn note(&self, line: &str) {
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("events.log"))
        {
            let _ = writeln!(f, "{line}");
        }
    }

    /// Opens (truncating) a file in the run directory.
    pub fn create_file(&self, name: &str) -> io::Result<File> {
        File::create(self.dir.join(name))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut procs = self.procs();
        for p in procs.iter_mut() {
            if let Some(mut child) = p.child.take() {
                // SAFETY: kill(2) on our own unreaped child.
                unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
                let _ = child.kill();
                let _ = child.wait();
                live_pids().remove(&(child.id() as i32));
            }
        }
    }
}
