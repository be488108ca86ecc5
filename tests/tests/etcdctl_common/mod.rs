//! Helpers shared by the `etcdctl` end-to-end test binaries: running the
//! real `etcdctl`, collecting failed checks, and starting the system under
//! test (a raft-node cluster, or a real etcd 3.4 cluster with
//! `RAFT_TESTS_AGAINST_ETCD=1`).

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use raft_tests::cluster::{node_binary, target_dir, Cluster, ClusterOptions};
use raft_tests::etcd::{find_on_path, EtcdCluster};
use serde_json::Value;

/// Set to `1` to run these tests against a real etcd 3.4 cluster.
pub const AGAINST_ETCD: &str = "RAFT_TESTS_AGAINST_ETCD";

pub fn against_etcd() -> bool {
    std::env::var(AGAINST_ETCD).is_ok_and(|v| v.trim() == "1")
}

// ---------------------------------------------------------------- helpers

/// Standard base64 (what etcd's JSON uses for `bytes`).
pub fn b64(data: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = data.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | (u32::from(c) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; `None` if it is not.
pub fn unb64(s: &str) -> Option<String> {
    let s = s.trim_end_matches('=');
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A JSON number or a JSON string holding one (the gateway's int64s).
pub fn num(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// Every failed check of a run; the test fails at the end with all of them.
pub struct Checks {
    pub system: &'static str,
    pub failures: Vec<String>,
}

impl Checks {
    pub fn new(system: &'static str) -> Self {
        Checks {
            system,
            failures: Vec::new(),
        }
    }

    pub fn fail(&mut self, what: String) {
        eprintln!("CHECK FAILED ({}): {what}", self.system);
        self.failures.push(what);
    }

    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(what());
        }
    }

    pub fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, want: T) {
        if got != want {
            self.fail(format!("{what}:\n     got: {got:?}\n    want: {want:?}"));
        }
    }

    pub fn finish(self) {
        if !self.failures.is_empty() {
            panic!(
                "{} check(s) failed against {}:\n- {}",
                self.failures.len(),
                self.system,
                self.failures.join("\n- ")
            );
        }
    }
}

/// One `etcdctl` invocation and what it printed.
pub struct Out {
    pub cmd: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn describe(&self) -> String {
        format!(
            "`{}` exited {:?}\n    stdout: {:?}\n    stderr: {:?}",
            self.cmd,
            self.code,
            self.stdout,
            self.stderr.trim()
        )
    }

    /// The non-empty lines of stdout.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// Runs `etcdctl` (v3 API, 3 s dial and 10 s command timeouts, none of the
/// caller's `ETCDCTL_*` variables).
pub struct Ctl {
    pub etcdctl: PathBuf,
}

impl Ctl {
    /// `etcdctl` with our flags and environment, and how to show it.
    fn command(&self, endpoints: &[&str], args: &[&str]) -> (Command, String) {
        let mut cmd = Command::new(&self.etcdctl);
        // Only our flags count, not an ETCDCTL_* of the caller's shell.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
        let eps = endpoints.join(",");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={eps}"))
            .args(["--dial-timeout=3s", "--command-timeout=10s"])
            .args(args);
        (cmd, format!("etcdctl --endpoints={eps} {}", args.join(" ")))
    }

    /// Starts a long-running `etcdctl` (watch, lock, elect) whose stdout and
    /// stderr go to files named after `name` in `dir`.
    pub fn spawn(&self, dir: &Path, name: &str, endpoints: &[&str], args: &[&str]) -> Bg {
        let (mut cmd, shown) = self.command(endpoints, args);
        let out = dir.join(format!("{name}.out"));
        let err = dir.join(format!("{name}.err"));
        let file =
            |p: &Path| std::fs::File::create(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        cmd.stdin(Stdio::null())
            .stdout(file(&out))
            .stderr(file(&err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.etcdctl.display()));
        Bg {
            child,
            out,
            err,
            cmd: shown,
        }
    }

    pub fn run(&self, endpoints: &[&str], args: &[&str], stdin: Option<&str>) -> Out {
        let (mut cmd, shown) = self.command(endpoints, args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.etcdctl.display()));
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            pipe.write_all(input.as_bytes())
                .unwrap_or_else(|e| panic!("writing stdin of `{shown}`: {e}"));
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for `{shown}`: {e}"));
        Out {
            cmd: shown,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs and records a failed check if `etcdctl` did not exit 0.
    pub fn ok(&self, ck: &mut Checks, endpoints: &[&str], args: &[&str]) -> Out {
        let out = self.run(endpoints, args, None);
        ck.check(out.success(), || {
            format!("expected success: {}", out.describe())
        });
        out
    }

    /// Like [`Ctl::ok`] with `stdin`.
    pub fn ok_in(&self, ck: &mut Checks, endpoints: &[&str], args: &[&str], stdin: &str) -> Out {
        let out = self.run(endpoints, args, Some(stdin));
        ck.check(out.success(), || {
            format!("expected success: {}", out.describe())
        });
        out
    }

    /// Runs a command that must fail with `message` in its stderr.
    pub fn fails_with(&self, ck: &mut Checks, endpoints: &[&str], args: &[&str], message: &str) {
        self.fails_with_in(ck, endpoints, args, None, message);
    }

    /// Like [`Ctl::fails_with`] with `stdin`.
    pub fn fails_with_in(
        &self,
        ck: &mut Checks,
        endpoints: &[&str],
        args: &[&str],
        stdin: Option<&str>,
        message: &str,
    ) {
        let out = self.run(endpoints, args, stdin);
        ck.check(!out.success() && out.stderr.contains(message), || {
            format!("expected a failure with {message:?}: {}", out.describe())
        });
    }

    /// Runs with `-w json` and parses stdout (`Null`, and a failed check,
    /// if it is not JSON).
    pub fn json(&self, ck: &mut Checks, endpoints: &[&str], args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-w", "json"]);
        let out = self.ok(ck, endpoints, &all);
        match serde_json::from_str(&out.stdout) {
            Ok(v) => v,
            Err(e) => {
                ck.fail(format!("not JSON ({e}): {}", out.describe()));
                Value::Null
            }
        }
    }
}

/// `args -w json` on `ep`, repeated for up to 5 s until `done` holds of
/// its output; the last output (a failed check if the command failed).
pub fn json_when(
    c: &Ctl,
    ck: &mut Checks,
    ep: &str,
    args: &[&str],
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut all = args.to_vec();
    all.extend(["-w", "json"]);
    loop {
        let out = c.run(&[ep], &all, None);
        if let Ok(v) = serde_json::from_str::<Value>(&out.stdout) {
            if out.success() && done(&v) {
                return v;
            }
        }
        if Instant::now() >= deadline {
            return c.json(ck, &[ep], args);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `(key, value, create_revision, mod_revision, version)` of every kv in a
/// parsed `get -w json` output.
pub fn kvs(v: &Value) -> Vec<(String, String, u64, u64, u64)> {
    v["kvs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|kv| {
                    (
                        kv["key"].as_str().and_then(unb64).unwrap_or_default(),
                        kv["value"].as_str().and_then(unb64).unwrap_or_default(),
                        num(&kv["create_revision"]).unwrap_or(0),
                        num(&kv["mod_revision"]).unwrap_or(0),
                        num(&kv["version"]).unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn kv(
    key: &str,
    value: &str,
    create: u64,
    modified: u64,
    version: u64,
) -> (String, String, u64, u64, u64) {
    (key.into(), value.into(), create, modified, version)
}

pub fn header_revision(v: &Value) -> u64 {
    num(&v["header"]["revision"]).unwrap_or(0)
}

/// The run directory (under `target/etcdctl-tests/`), removed when the test
/// passes and kept, with every node's log, when it fails.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn new(test: &str) -> RunDir {
        let dir = target_dir()
            .join("etcdctl-tests")
            .join(format!("{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        RunDir(dir)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("etcdctl tests: kept the run directory {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// raft-node clusters live on 127.0.0.1..3 like the fault suite's, whose
/// iptables nemeses drop UDP (QUIC peer traffic) between those addresses:
/// hold the fault suite's lock file while a raft-node cluster runs, so that
/// a concurrent fault-suite run cannot partition it. Waits at most 5 minutes
/// (then goes on with a warning rather than hang behind a long run).
pub struct AddressLock {
    pub _file: Option<std::fs::File>,
}

impl AddressLock {
    pub fn acquire() -> AddressLock {
        use std::os::fd::AsRawFd;
        let dir = target_dir().join("fault-suite");
        let _ = std::fs::create_dir_all(&dir);
        let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))
        else {
            return AddressLock { _file: None };
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            // SAFETY: flock on a descriptor we own; released when it closes.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return AddressLock { _file: Some(file) };
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "etcdctl tests: the fault suite's lock is still held after 5 minutes; going on without it"
                );
                return AddressLock { _file: None };
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The system under test.
pub enum System {
    Raft { cluster: Cluster, bin: PathBuf },
    Etcd { cluster: EtcdCluster, etcd: PathBuf },
}

impl System {
    pub fn is_etcd(&self) -> bool {
        matches!(self, System::Etcd { .. })
    }

    /// The client URL MemberList gives for the member at `endpoint`:
    /// `http://host:port` on both systems.
    pub fn client_url(&self, endpoint: &str) -> String {
        format!("http://{endpoint}")
    }

    pub fn endpoints(&self) -> Vec<String> {
        match self {
            System::Raft { cluster, .. } => cluster
                .nodes()
                .iter()
                .map(|n| n.client_addr.to_string())
                .collect(),
            System::Etcd { cluster, .. } => cluster.endpoints(),
        }
    }
}

/// One test's environment. Fields drop in order: processes first, then the
/// run directory, then the address lock.
pub struct Env {
    pub sys: System,
    pub ctl: Ctl,
    pub dir: RunDir,
    pub _lock: Option<AddressLock>,
}

/// Leader and followers, as `endpoint status` reports them.
#[derive(Debug, Clone)]
pub struct Topology {
    pub leader: (String, u64),
    pub followers: Vec<(String, u64)>,
}

impl Topology {
    pub fn leader_ep(&self) -> &str {
        &self.leader.0
    }

    pub fn follower_ep(&self) -> &str {
        &self.followers[0].0
    }

    /// The leader then a follower: where the read checks go.
    pub fn both(&self) -> [&str; 2] {
        [self.leader_ep(), self.follower_ep()]
    }
}

pub fn system_name() -> &'static str {
    if against_etcd() {
        "etcd 3.4"
    } else {
        "raft-node"
    }
}

/// Starts a 3-member system for `test`; `None` (after saying why) when
/// `etcdctl` is missing.
/// `needs_etcdctl: false` is for the gateway test, which talks HTTP only
/// (it still needs `etcdctl` against etcd, to wait until etcd is healthy).
pub fn setup(test: &str, needs_etcdctl: bool) -> Option<Env> {
    let etcdctl = find_on_path("etcdctl");
    if etcdctl.is_none() && (needs_etcdctl || against_etcd()) {
        eprintln!(
            "SKIPPED {test}: `etcdctl` is not on PATH (Debian package etcd-client; scripts/install-test-deps installs it)"
        );
        return None;
    }
    let dir = RunDir::new(test);
    let ctl = Ctl {
        etcdctl: etcdctl.unwrap_or_else(|| PathBuf::from("etcdctl")),
    };
    if against_etcd() {
        let etcd = find_on_path("etcd").unwrap_or_else(|| {
            panic!("{AGAINST_ETCD}=1 but `etcd` is not on PATH (Debian package etcd-server)")
        });
        let mut cluster = EtcdCluster::start(&etcd, &dir.0.join("etcd"), 3)
            .unwrap_or_else(|e| panic!("starting etcd: {e}"));
        cluster
            .wait_healthy(&ctl.etcdctl, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e}"));
        Some(Env {
            sys: System::Etcd { cluster, etcd },
            ctl,
            dir,
            _lock: None,
        })
    } else {
        let lock = AddressLock::acquire();
        let bin = node_binary().unwrap_or_else(|e| panic!("no raft-node binary: {e}"));
        let cluster = Cluster::start(&bin, &dir.0.join("raft"), ClusterOptions::for_tests(3))
            .unwrap_or_else(|e| panic!("starting raft-node: {e}"));
        Some(Env {
            sys: System::Raft { cluster, bin },
            ctl,
            dir,
            _lock: Some(lock),
        })
    }
}

impl Env {
    pub fn endpoints(&self) -> Vec<String> {
        self.sys.endpoints()
    }

    /// Polls `endpoint status -w json` on every member until all answer and
    /// agree on one leader that is one of them.
    pub fn wait_leader(&self, timeout: Duration) -> Topology {
        self.poll_status(timeout, "no agreed leader", parse_topology)
    }

    /// Polls `endpoint status -w json` until every member reports the same
    /// applied index: the writes made so far reached all of them (a member
    /// started last on a loaded machine may still be catching up).
    pub fn wait_caught_up(&self, timeout: Duration) {
        self.poll_status(timeout, "members still apart", |out, eps| {
            let applied: Vec<u64> = serde_json::from_str::<Value>(&out.stdout)
                .ok()?
                .as_array()?
                .iter()
                .map(|s| s["Status"]["raftAppliedIndex"].as_u64())
                .collect::<Option<_>>()?;
            (out.success()
                && applied.len() == eps.len()
                && applied.windows(2).all(|w| w[0] == w[1]))
            .then_some(())
        })
    }

    /// Runs `endpoint status -w json` against every member every 200 ms until
    /// `parse` accepts the output; panics with `what` and the last output
    /// after `timeout`.
    fn poll_status<T>(
        &self,
        timeout: Duration,
        what: &str,
        parse: impl Fn(&Out, &[&str]) -> Option<T>,
    ) -> T {
        let eps = self.endpoints();
        let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
        let deadline = Instant::now() + timeout;
        loop {
            let out = self
                .ctl
                .run(&eps, &["endpoint", "status", "-w", "json"], None);
            if let Some(t) = parse(&out, &eps) {
                return t;
            }
            if Instant::now() >= deadline {
                panic!("{what} within {timeout:?}; last: {}", out.describe());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The topology in `endpoint status -w json` output, if every endpoint
/// answered and all name the same leader, which is one of them.
pub fn parse_topology(out: &Out, eps: &[&str]) -> Option<Topology> {
    if !out.success() {
        return None;
    }
    let v: Value = serde_json::from_str(&out.stdout).ok()?;
    let mut members = Vec::new();
    let mut leaders = Vec::new();
    for s in v.as_array()? {
        let ep = s["Endpoint"].as_str()?.to_string();
        let id = s["Status"]["header"]["member_id"].as_u64()?;
        leaders.push(s["Status"]["leader"].as_u64().unwrap_or(0));
        members.push((ep, id));
    }
    if members.len() != eps.len() {
        return None;
    }
    let leader = leaders[0];
    if leader == 0 || leaders.iter().any(|&l| l != leader) {
        return None;
    }
    let lead = members.iter().find(|(_, id)| *id == leader)?.clone();
    let followers = members
        .into_iter()
        .filter(|(_, id)| *id != leader)
        .collect();
    Some(Topology {
        leader: lead,
        followers,
    })
}

/// A long-running `etcdctl`, killed when dropped.
pub struct Bg {
    child: std::process::Child,
    out: PathBuf,
    err: PathBuf,
    pub cmd: String,
}

impl Bg {
    /// What it printed so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits up to `timeout` until its stdout satisfies `done`; whether it did.
    pub fn wait_stdout(&self, timeout: Duration, done: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.stdout()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `timeout` for it to exit on its own: its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGINT, as Ctrl-C would (etcdctl then resigns or unlocks).
    pub fn interrupt(&self) {
        // SAFETY: signals a child process we started and have not reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "`{}`\n    stdout: {:?}\n    stderr: {:?}",
            self.cmd,
            self.stdout(),
            self.stderr().trim()
        )
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first value of a Prometheus metric among `names` on the client port
/// at `endpoint` (`host:port`), over plain HTTP.
pub fn metric(endpoint: &str, names: &[&str]) -> Option<f64> {
    raft_tests::etcd_api::metric_at(endpoint, names)
}
