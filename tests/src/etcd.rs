//! A real etcd 3.4 cluster (`etcd` from Debian's `etcd-server`) on
//! 127.0.0.1, so that the same end-to-end tests that drive raft-node's etcd
//! API with `etcdctl` can be run against etcd itself
//! (`RAFT_TESTS_AGAINST_ETCD=1`, see `tests/etcdctl.rs`).
//!
//! [`EtcdCluster::start`] picks free ports, starts one `etcd` per member
//! (`--initial-cluster-state new`, data dir and log under the run directory)
//! and [`EtcdCluster::wait_healthy`] waits until every member answers
//! `etcdctl endpoint health`. [`EtcdCluster::start_restored`] first runs
//! `etcdctl snapshot restore` for every member, as etcd's restore procedure
//! says. Processes are killed when the cluster is dropped (also during a
//! panic), and registered with the suite's interrupt cleanup meanwhile.

use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use crate::cluster::LIVE_PIDS;

/// The first `name` on `PATH` that is an executable file.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// One etcd member.
#[derive(Debug, Clone)]
pub struct EtcdMember {
    /// `--name` (`e1`, `e2`, ...).
    pub name: String,
    /// Client address (`--listen-client-urls http://<this>`).
    pub client_addr: SocketAddr,
    /// Peer URL (`http://127.0.0.1:<port>`).
    pub peer_url: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// stdout and stderr of the process.
    pub log: PathBuf,
}

impl EtcdMember {
    /// `host:port` of the client address, as `etcdctl --endpoints` takes it.
    pub fn endpoint(&self) -> String {
        self.client_addr.to_string()
    }
}

/// Running `etcd` processes forming one cluster.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdMember>,
    children: Vec<Child>,
}

/// Ports handed out by this process (below the usual ephemeral range
/// 32768-60999, so an outgoing connection cannot take one between the check
/// here and etcd's bind).
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// `n` distinct ports free for TCP on 127.0.0.1.
fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    const LOW: u16 = 20_000;
    const HIGH: u16 = 32_000;
    if NEXT_PORT.load(Ordering::Relaxed) == 0 {
        let base = LOW + (std::process::id() % 200) as u16 * 50;
        let _ = NEXT_PORT.compare_exchange(0, base, Ordering::Relaxed, Ordering::Relaxed);
    }
    let mut ports = Vec::with_capacity(n);
    for _ in 0..4000 {
        if ports.len() == n {
            break;
        }
        let mut port = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        if !(LOW..HIGH).contains(&port) {
            NEXT_PORT.store(LOW + 1, Ordering::Relaxed);
            port = LOW;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    if ports.len() == n {
        Ok(ports)
    } else {
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "no free ports for etcd on 127.0.0.1",
        ))
    }
}

fn layout(dir: &Path, n: usize) -> io::Result<Vec<EtcdMember>> {
    std::fs::create_dir_all(dir)?;
    let ports = free_ports(2 * n)?;
    Ok((0..n)
        .map(|i| EtcdMember {
            name: format!("e{}", i + 1),
            client_addr: SocketAddr::from(([127, 0, 0, 1], ports[2 * i])),
            peer_url: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
            data_dir: dir.join(format!("etcd-data-{}", i + 1)),
            log: dir.join(format!("etcd-{}.log", i + 1)),
        })
        .collect())
}

fn initial_cluster(members: &[EtcdMember]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect::<Vec<_>>()
        .join(",")
}

impl EtcdCluster {
    /// Starts an `n`-member cluster with data and logs under `dir`.
    pub fn start(etcd: &Path, dir: &Path, n: usize) -> io::Result<EtcdCluster> {
        let members = layout(dir, n)?;
        Self::spawn_all(etcd, members, true)
    }

    /// Starts an `n`-member cluster from `snapshot` (a file written by
    /// `etcdctl snapshot save`): `etcdctl snapshot restore` into a fresh data
    /// dir per member, then `etcd` on those data dirs.
    pub fn start_restored(
        etcd: &Path,
        etcdctl: &Path,
        dir: &Path,
        n: usize,
        snapshot: &Path,
    ) -> io::Result<EtcdCluster> {
        let members = layout(dir, n)?;
        let cluster = initial_cluster(&members);
        for m in &members {
            let out = Command::new(etcdctl)
                .env("ETCDCTL_API", "3")
                .arg("snapshot")
                .arg("restore")
                .arg(snapshot)
                .args(["--name", &m.name])
                .arg("--data-dir")
                .arg(&m.data_dir)
                .args(["--initial-cluster", &cluster])
                .args(["--initial-cluster-token", "raft-tests-restored"])
                .args(["--initial-advertise-peer-urls", &m.peer_url])
                .output()?;
            if !out.status.success() {
                return Err(io::Error::other(format!(
                    "etcdctl snapshot restore for {} failed ({}): {}",
                    m.name,
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        Self::spawn_all(etcd, members, false)
    }

    fn spawn_all(etcd: &Path, members: Vec<EtcdMember>, new: bool) -> io::Result<EtcdCluster> {
        let cluster = initial_cluster(&members);
        let mut this = EtcdCluster {
            members: Vec::new(),
            children: Vec::new(),
        };
        for m in &members {
            let mut log = OpenOptions::new().create(true).append(true).open(&m.log)?;
            writeln!(
                log,
                "===== raft-tests: starting etcd member {} =====",
                m.name
            )?;
            let client_url = format!("http://{}", m.client_addr);
            let mut cmd = Command::new(etcd);
            cmd.args(["--name", &m.name])
                .arg("--data-dir")
                .arg(&m.data_dir)
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &m.peer_url])
                .args(["--initial-advertise-peer-urls", &m.peer_url])
                .args(["--initial-cluster", &cluster])
                // Closer to the raft-node clusters' timing than etcd's
                // defaults (100 ms / 1 s), still safe on a loaded machine.
                .args(["--heartbeat-interval", "50", "--election-timeout", "600"])
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log));
            if new {
                cmd.args(["--initial-cluster-state", "new"])
                    .args(["--initial-cluster-token", "raft-tests"]);
            }
            let child = cmd.spawn()?;
            LIVE_PIDS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(child.id() as i32);
            this.children.push(child);
        }
        this.members = members;
        Ok(this)
    }

    /// Every member.
    pub fn members(&self) -> &[EtcdMember] {
        &self.members
    }

    /// Every member's `host:port` client endpoint.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdMember::endpoint).collect()
    }

    /// Waits until `etcdctl endpoint health` succeeds on every member (and
    /// no process has exited).
    pub fn wait_healthy(&mut self, etcdctl: &Path, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let endpoints = self.endpoints().join(",");
        loop {
            for (m, c) in self.members.iter().zip(self.children.iter_mut()) {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!(
                        "etcd member {} exited ({status}); see {}",
                        m.name,
                        m.log.display()
                    ));
                }
            }
            let out = Command::new(etcdctl)
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &endpoints, "--dial-timeout", "1s"])
                .args(["--command-timeout", "2s", "endpoint", "health"])
                .output()
                .map_err(|e| format!("cannot run {}: {e}", etcdctl.display()))?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "etcd cluster not healthy within {timeout:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
            LIVE_PIDS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&(c.id() as i32));
        }
    }
}
