//! `raft-node certs`, `serve` and the client commands as separate processes:
//! a 3-node cluster on 127.0.0.1 that survives SIGTERM and a restart of every
//! node, and configuration errors that name the problem in one line.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_raft-node"))
}

fn ok(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn write_configs(dir: &Path, base: u16) -> Vec<PathBuf> {
    write_configs_with(dir, base, "")
}

fn write_configs_with(dir: &Path, base: u16, extra: &str) -> Vec<PathBuf> {
    let members: String = (1..=3)
        .map(|i| {
            format!(
                "[[members]]\nid = {i}\npeer_addr = \"127.0.0.1:{}\"\nclient_addr = \"127.0.0.1:{}\"\n\n",
                base + 100 + i,
                base + i
            )
        })
        .collect();
    (1..=3u16)
        .map(|i| {
            let path = dir.join(format!("node-{i}.toml"));
            let text = format!(
                "id = {i}\ndata_dir = \"{}\"\npeer_addr = \"127.0.0.1:{}\"\nclient_addr = \"127.0.0.1:{}\"\ntls_dir = \"{}\"\nelection_timeout_ms = 300\n{extra}\n{members}",
                dir.join(format!("node-{i}")).display(),
                base + 100 + i,
                base + i,
                dir.join("certs").display(),
            );
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

/// A fresh directory holding a CA and certificates for `ids`, and a port
/// base (client ports base+id, peer ports base+100+id) that differs per test
/// (`salt`) and per process, so tests running side by side do not clash. The
/// ports stay below the kernel's ephemeral range (32768+): otherwise an
/// outgoing client connection can hold a node's port before it binds.
fn cluster_dir(salt: u32, ids: &str) -> (tempfile::TempDir, u16, String) {
    let dir = tempfile::tempdir().unwrap();
    let base = 20_000 + ((std::process::id() + salt) % 12_000) as u16;
    let out = ok(bin()
        .args(["certs", "--ids", ids, "--out"])
        .arg(dir.path().join("certs"))
        .output()
        .unwrap());
    (dir, base, out)
}

fn endpoints(base: u16) -> String {
    (1..=3)
        .map(|i| format!("http://127.0.0.1:{}", base + i))
        .collect::<Vec<_>>()
        .join(",")
}

/// Running `serve` processes; any still running when this is dropped (a
/// failed assertion) are killed, so a failing test leaves nothing behind.
struct Nodes(Vec<Child>);

impl std::ops::Deref for Nodes {
    type Target = Vec<Child>;
    fn deref(&self) -> &Vec<Child> {
        &self.0
    }
}

impl std::ops::DerefMut for Nodes {
    fn deref_mut(&mut self) -> &mut Vec<Child> {
        &mut self.0
    }
}

impl IntoIterator for Nodes {
    type Item = Child;
    type IntoIter = std::vec::IntoIter<Child>;
    fn into_iter(mut self) -> Self::IntoIter {
        std::mem::take(&mut self.0).into_iter()
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start(configs: &[PathBuf]) -> Nodes {
    Nodes(
        configs
            .iter()
            .map(|c| {
                bin()
                    .args(["serve", "--config"])
                    .arg(c)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    )
}

fn sigterm_all(mut nodes: Nodes) {
    let children = std::mem::take(&mut nodes.0);
    for c in &children {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "serve did not exit 0 on SIGTERM: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Retries a client command until it succeeds (the cluster may still be electing).
fn client_until_ok(args: &[&str], eps: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = bin()
            .args(args)
            .args(["--endpoints", eps])
            .output()
            .unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} kept failing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_processes_serve_survive_sigterm_and_resume() {
    let (dir, base, out) = cluster_dir(0, "1,2,3");
    assert!(out.contains("wrote"), "{out}");
    let configs = write_configs(dir.path(), base);
    let eps = endpoints(base);

    let nodes = start(&configs);
    let put = client_until_ok(&["put", "greeting", "hello"], &eps);
    assert!(put.contains("index"), "{put}");
    assert_eq!(client_until_ok(&["get", "greeting"], &eps).trim(), "hello");
    let status = client_until_ok(&["status"], &eps);
    assert_eq!(status.matches("\"voters\":[1,2,3]").count(), 3, "{status}");
    let bench = client_until_ok(
        &[
            "bench",
            "--quiet",
            "--json",
            "--clients",
            "4",
            "--requests",
            "200",
            "--keys",
            "10",
            "--read-ratio",
            "0.5",
        ],
        &eps,
    );
    let report: serde_json::Value = serde_json::from_str(&bench).unwrap();
    assert_eq!(report["ok"], 200, "{report}");
    let (w, r) = (
        report["writes"]["count"].as_u64().unwrap(),
        report["reads"]["count"].as_u64().unwrap(),
    );
    assert!(w > 50 && r > 50 && w + r == 200, "{report}");
    // A call the server refuses counts as an error with its gRPC status.
    let refused = client_until_ok(
        &[
            "bench",
            "--quiet",
            "--json",
            "--clients",
            "1",
            "--requests",
            "3",
            "--value-size",
            "2000000",
        ],
        &eps,
    );
    let refused: serde_json::Value = serde_json::from_str(&refused).unwrap();
    assert_eq!(refused["ok"], 0, "{refused}");
    assert_eq!(refused["errors"]["grpc_InvalidArgument"], 3, "{refused}");
    let url = |i: u16| format!("http://127.0.0.1:{}", base + i);
    // Let every node apply everything, then remember where each stood.
    let leader_applied = (1..=3)
        .filter_map(|i| status_of(&url(i)))
        .find(|s| s["role"] == "leader")
        .map(|s| s["applied_index"].clone())
        .expect("a leader");
    for i in 1..=3 {
        wait_status(&url(i), "node applies every write", |s| {
            s["applied_index"].as_u64() >= leader_applied.as_u64()
        });
    }
    let before: Vec<serde_json::Value> = (1..=3).map(|i| status_of(&url(i)).unwrap()).collect();
    sigterm_all(nodes);

    // Every node restarts from its data dir; the acknowledged write is there,
    // no term went backwards, and every node reaches the same applied state.
    let nodes = start(&configs);
    assert_eq!(client_until_ok(&["get", "greeting"], &eps).trim(), "hello");
    for (i, b) in (1..=3).zip(&before) {
        wait_status(&url(i), "restarted node catches up", |s| {
            s["term"].as_u64() >= b["term"].as_u64()
                && s["applied_index"].as_u64() >= b["applied_index"].as_u64()
                && s["keys"] == b["keys"]
                && s["digest"] == b["digest"]
        });
    }
    let del = client_until_ok(&["del", "greeting"], &eps);
    assert!(del.contains("\"deleted\":true"), "{del}");
    let out = bin()
        .args(["get", "greeting", "--endpoints", &eps])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    sigterm_all(nodes);
}

fn serve_error(config_text: &str, dir: &Path) -> String {
    let path = dir.join("bad.toml");
    std::fs::write(&path, config_text).unwrap();
    let out = bin()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn bad_configs_exit_nonzero_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let configs = write_configs(dir.path(), 20_000);
    let good = std::fs::read_to_string(&configs[0]).unwrap();

    let e = serve_error(
        &good.replace("election_timeout_ms", "election_timeout_msx"),
        dir.path(),
    );
    assert!(e.contains("election_timeout_msx"), "{e}");
    let e = serve_error(&good.replace("tls_dir", "# tls_dir"), dir.path());
    assert!(e.contains("tls_dir"), "{e}");
    let e = serve_error(&good.replacen("id = 2", "id = 1", 1), dir.path());
    assert!(e.contains("duplicate member id 1"), "{e}");
    let e = serve_error(&good.replacen("id = 1", "id = 7", 1), dir.path());
    assert!(e.contains("id 7 is not among members"), "{e}");
    // Valid config, but the certificate files do not exist.
    let e = serve_error(&good, dir.path());
    assert!(e.contains("TLS") && e.contains("certs"), "{e}");
    let missing = dir.path().join("nope.toml");
    let out = bin()
        .args(["serve", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));
}

fn status_of(url: &str) -> Option<serde_json::Value> {
    let out = bin().args(["status", "--endpoints", url]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = text.split_once("  ")?.1.trim();
    serde_json::from_str(json).ok()
}

#[test]
fn a_lagging_node_catches_up_by_snapshot_over_quic() {
    let (dir, base, _) = cluster_dir(7_777, "1,2,3");
    let configs = write_configs_with(
        dir.path(),
        base,
        "snapshot_threshold_entries = 50\ntrailing_entries = 5\n",
    );
    let eps = endpoints(base);
    let mut nodes = start(&configs);
    client_until_ok(&["put", "first", "1"], &eps);
    // Stop node 3; the others write far past several snapshots.
    let third = nodes.pop().unwrap();
    sigterm_all(Nodes(vec![third]));
    let two = endpoints(base).rsplit_once(',').unwrap().0.to_string();
    let bench = client_until_ok(
        &[
            "bench",
            "--quiet",
            "--json",
            "--clients",
            "8",
            "--requests",
            "400",
            "--keys",
            "100",
        ],
        &two,
    );
    assert!(bench.contains("\"ok\":400"), "{bench}");
    // Node 3 restarts behind the leader's snapshot and must receive it.
    nodes.extend(start(&configs[2..]));
    let url3 = format!("http://127.0.0.1:{}", base + 3);
    let deadline = Instant::now() + Duration::from_secs(30);
    let converged = loop {
        let s: Vec<_> = (1..=3)
            .map(|i| status_of(&format!("http://127.0.0.1:{}", base + i)))
            .collect();
        let done = s.iter().all(|x| x.is_some()) && {
            let s: Vec<_> = s.into_iter().flatten().collect();
            s.iter().all(|x| {
                x["applied_index"] == s[0]["applied_index"] && x["digest"] == s[0]["digest"]
            }) && s[2]["snapshot_index"].as_u64().unwrap_or(0) > 50
        };
        if done {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(converged, "node 3 did not catch up: {:?}", status_of(&url3));
    assert_eq!(
        client_until_ok(&["get", "first", "--stale"], &url3).trim(),
        "1"
    );
    sigterm_all(nodes);
}

/// Writes `node-4.toml`: node 1's config with id 4, `join = true`, its own
/// addresses and data dir, and node 4 added to the members.
fn write_joiner_config(dir: &Path, base: u16, template: &Path) -> PathBuf {
    let four = dir.join("node-4.toml");
    let text = std::fs::read_to_string(template).unwrap();
    let text = text
        .replacen("id = 1\n", "id = 4\njoin = true\n", 1)
        .replace("node-1\"", "node-4\"")
        .replacen(
            &format!("127.0.0.1:{}", base + 101),
            &format!("127.0.0.1:{}", base + 104),
            1,
        )
        .replacen(
            &format!("127.0.0.1:{}", base + 1),
            &format!("127.0.0.1:{}", base + 4),
            1,
        )
        + &format!(
            "[[members]]\nid = 4\npeer_addr = \"127.0.0.1:{}\"\nclient_addr = \"127.0.0.1:{}\"\n",
            base + 104,
            base + 4
        );
    std::fs::write(&four, text).unwrap();
    four
}

/// Sends `method url body` (following redirects) until it answers 2xx.
fn request_until_ok(method: &str, url: &str, body: &str) -> Result<(), String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = reqwest::Client::new();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = client
                .request(method.clone(), url)
                .body(body.to_string())
                .send()
                .await;
            let last = match r {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => format!("{}: {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Waits until `url`'s status satisfies `cond`.
fn wait_status(url: &str, what: &str, cond: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status_of(url);
        if s.as_ref().is_some_and(&cond) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {s:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn learner_added_promoted_and_an_original_removed_while_serving() {
    let (dir, base, _) = cluster_dir(15_555, "1,2,3,4");
    let configs = write_configs(dir.path(), base);
    let eps = endpoints(base);
    let url = |i: u16| format!("http://127.0.0.1:{}", base + i);
    let mut nodes = start(&configs);
    client_until_ok(&["put", "k0", "v"], &eps);

    // Writes keep flowing through every step.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, eps) = (stop.clone(), format!("{eps},{}", url(4)));
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client_until_ok(&["put", &format!("w{n}"), "v"], &eps);
                n += 1;
            }
            n
        })
    };

    let four = write_joiner_config(dir.path(), base, &configs[0]);
    let member = |learner: bool| {
        format!(
            "{{\"id\":4,\"peer_addr\":\"127.0.0.1:{}\",\"client_addr\":\"127.0.0.1:{}\",\"learner\":{learner}}}",
            base + 104,
            base + 4
        )
    };
    request_until_ok("POST", &format!("{}/v1/members", url(1)), &member(true)).unwrap();
    nodes.extend(start(&[four]));
    wait_status(&url(4), "node 4 catches up as a learner", |s| {
        s["learners"] == serde_json::json!([4]) && s["applied_index"].as_u64() > Some(2)
    });
    request_until_ok("POST", &format!("{}/v1/members", url(2)), &member(false)).unwrap();
    wait_status(&url(4), "node 4 is promoted", |s| {
        s["voters"] == serde_json::json!([1, 2, 3, 4]) && s["learners"] == serde_json::json!([])
    });
    request_until_ok("DELETE", &format!("{}/v1/members/1", url(3)), "").unwrap();
    wait_status(&url(4), "node 1 is removed", |s| {
        s["voters"] == serde_json::json!([2, 3, 4]) && s["leader"].as_u64().is_some_and(|l| l != 1)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 0, "writes flowed during the changes");
    // The three remaining voters serve writes and agree.
    let rest = format!("{},{},{}", url(2), url(3), url(4));
    client_until_ok(&["put", "after", "removal"], &rest);
    assert_eq!(client_until_ok(&["get", "after"], &rest).trim(), "removal");
    sigterm_all(nodes);
}

#[test]
fn a_new_node_joins_through_the_membership_api() {
    let (dir, base, _) = cluster_dir(3_333, "1,2,3,4");
    let configs = write_configs(dir.path(), base);
    let eps = endpoints(base);
    let mut nodes = start(&configs);
    client_until_ok(&["put", "before", "join"], &eps);

    let four = write_joiner_config(dir.path(), base, &configs[0]);
    // Add it as a voter through the leader (curl-like, via the CLI's HTTP client).
    let add = format!(
        "{{\"id\":4,\"peer_addr\":\"127.0.0.1:{}\",\"client_addr\":\"127.0.0.1:{}\"}}",
        base + 104,
        base + 4
    );
    if let Err(e) = request_until_ok(
        "POST",
        &format!("http://127.0.0.1:{}/v1/members", base + 1),
        &add,
    ) {
        panic!("adding node 4 failed: {e}");
    }
    nodes.extend(start(&[four]));
    let url4 = format!("http://127.0.0.1:{}", base + 4);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status_of(&url4);
        if s.as_ref()
            .is_some_and(|s| s["voters"] == serde_json::json!([1, 2, 3, 4]) && s["keys"] == 1)
        {
            break;
        }
        assert!(Instant::now() < deadline, "node 4 did not join: {s:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        client_until_ok(&["get", "before", "--stale"], &url4).trim(),
        "join"
    );
    // The four-node cluster keeps working.
    let four_eps = format!("{eps},{url4}");
    client_until_ok(&["put", "after", "join"], &four_eps);
    // Compact everything into snapshots, then restart all four: the founding
    // nodes' configs do not list node 4, so they must remember its address
    // from the replicated state.
    let rt2 = tokio::runtime::Runtime::new().unwrap();
    rt2.block_on(async {
        let client = reqwest::Client::new();
        for i in 1..=4 {
            let r = client
                .post(format!("http://127.0.0.1:{}/v1/snapshot", base + i))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
    });
    sigterm_all(nodes);
    let mut all = configs.clone();
    all.push(dir.path().join("node-4.toml"));
    let nodes = start(&all);
    client_until_ok(&["put", "after", "restart"], &four_eps);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status_of(&url4);
        if s.as_ref().is_some_and(|s| {
            s["keys"] == 2
                && s["applied_index"]
                    == status_of(&format!("http://127.0.0.1:{}", base + 1)).unwrap()
                        ["applied_index"]
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 4 lost contact after the restart: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    sigterm_all(nodes);
}

#[test]
fn a_damaged_wal_refuses_to_start_naming_the_file() {
    let (dir, base, _) = cluster_dir(11_111, "1,2,3");
    let configs = write_configs(dir.path(), base);
    let nodes = start(&configs);
    let eps = endpoints(base);
    for i in 0..20 {
        client_until_ok(&["put", &format!("k{i}"), "some value"], &eps);
    }
    sigterm_all(nodes);
    // Flip one byte in the middle of node 1's written records (not at the tail).
    let wal_dir = dir.path().join("node-1").join("wal");
    let segment = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .min()
        .expect("a segment");
    let mut bytes = std::fs::read(&segment).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).expect("records");
    bytes[end / 2] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let out = bin()
        .args(["serve", "--config"])
        .arg(&configs[0])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let name = segment.file_name().unwrap().to_string_lossy().into_owned();
    assert!(err.contains(&name), "names the damaged file: {err}");
}

/// Issue 15: a follower whose data directory was emptied must not silently
/// bootstrap again as a founding member at term 1 (it would forget its votes
/// and what it acknowledged); `--force-new-cluster` is the explicit way to
/// create a new cluster over an existing empty directory.
#[test]
fn a_founding_member_whose_data_dir_was_emptied_refuses_to_start() {
    let (dir, base, _) = cluster_dir(1_500, "1,2,3");
    let configs = write_configs(dir.path(), base);
    let eps = endpoints(base);
    let mut nodes = start(&configs);
    client_until_ok(&["put", "k", "v"], &eps);
    let three = nodes.0.remove(2);
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(three.id() as i32, libc::SIGTERM) };
    assert!(three.wait_with_output().unwrap().status.success());
    let data = dir.path().join("node-3");
    for entry in std::fs::read_dir(&data).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    let mut again = bin()
        .args(["serve", "--config"])
        .arg(&configs[2])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while again.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = again.kill();
            let _ = again.wait();
            panic!("node 3 started on its emptied data directory");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = again.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds no Raft state") && err.contains("--force-new-cluster"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        0,
        "nothing written"
    );
    // The rest of the cluster is unaffected.
    client_until_ok(&["put", "k2", "v"], &eps);
    sigterm_all(nodes);
    // The flag lets a founding member start on an existing empty directory
    // (here it gets as far as its missing certificates).
    let fresh = dir.path().join("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    let text = std::fs::read_to_string(&configs[0])
        .unwrap()
        .replace(
            &dir.path().join("node-1").display().to_string(),
            &fresh.display().to_string(),
        )
        .replace(
            &dir.path().join("certs").display().to_string(),
            "/nonexistent-certs",
        );
    let path = dir.path().join("fresh.toml");
    std::fs::write(&path, text).unwrap();
    let out = bin()
        .args(["serve", "--force-new-cluster", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS") && !err.contains("Raft state"), "{err}");
}

/// Issue 15: a member whose data directory was deleted as a whole starts as a
/// brand-new founding member (nothing local says otherwise), but it is a new
/// incarnation of its id: its peers drop its messages, so it can neither vote
/// again in a term it voted in nor pose as the follower it was.
#[test]
fn a_member_recreated_from_nothing_is_refused_by_its_peers() {
    let (dir, base, _) = cluster_dir(8_888, "1,2,3");
    let configs = write_configs(dir.path(), base);
    let eps = endpoints(base);
    // Node 3 starts once 1 and 2 have a leader, so it hears only from that
    // leader and writes only to it: the other survivor never hears from it.
    let mut nodes = start(&configs[..2]);
    client_until_ok(&["put", "k", "v"], &eps);
    nodes.extend(start(&configs[2..]));
    let url3 = format!("http://127.0.0.1:{}", base + 3);
    wait_status(&url3, "node 3 follows a leader", |s| {
        s["leader"].is_u64() && s["applied_index"].as_u64() >= Some(2)
    });
    let three = nodes.0.remove(2);
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(three.id() as i32, libc::SIGTERM) };
    assert!(three.wait_with_output().unwrap().status.success());
    std::fs::remove_dir_all(dir.path().join("node-3")).unwrap();
    // Leadership moves to the other survivor, which may never have heard
    // from node 3 itself (followers talk only to their leader): it knows
    // node 3's incarnation from the old leader's heartbeats.
    let url = |id: u64| format!("http://127.0.0.1:{}", base + id as u16);
    wait_status(&url(1), "a leader among nodes 1 and 2", |s| {
        s["leader"] == 1 || s["leader"] == 2
    });
    let old = status_of(&url(1)).and_then(|s| s["leader"].as_u64());
    let old = old.filter(|&l| l == 1 || l == 2).expect("a leader");
    let new = 3 - old;
    request_until_ok(
        "POST",
        &format!("{}/v1/leader/transfer", url(old)),
        &format!("{{\"to\":{new}}}"),
    )
    .unwrap();
    wait_status(&url(new), "leadership moved", |s| s["leader"] == new);
    nodes.extend(start(&configs[2..]));
    wait_status(&url3, "node 3 serves its status", |s| s["id"] == 3);
    client_until_ok(&["put", "k2", "v"], &eps);
    std::thread::sleep(Duration::from_secs(3));
    let s = status_of(&url3).unwrap();
    assert!(
        s["leader"].is_null() && s["applied_index"].as_u64() <= Some(1),
        "the re-created node 3 was taken for its old self: {s}"
    );
    client_until_ok(&["put", "k3", "v"], &eps);
    sigterm_all(nodes);
}

/// etcd's API takes a request id in the `request-id` gRPC metadata (etcd's
/// clients leave it unset): a put sent again with the same id, to any
/// member (followers forward it), is applied once and answered with the
/// first result.
#[test]
fn etcd_api_writes_with_a_request_id_apply_once() {
    use raft_node::api::pb::etcdserverpb::kv_client::KvClient;
    use raft_node::api::pb::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};

    let (dir, base, _) = cluster_dir(4_242, "1,2,3");
    let configs = write_configs(dir.path(), base);
    let eps = endpoints(base);
    let _nodes = start(&configs);
    client_until_ok(&["put", "warm", "up"], &eps);
    let urls: Vec<String> = eps.split(',').map(String::from).collect();
    let follower = urls
        .iter()
        .find(|u| status_of(u).is_some_and(|s| s["role"] == "follower"))
        .expect("a follower")
        .clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut clients = Vec::new();
        for u in &urls {
            clients.push(KvClient::connect(u.clone()).await.unwrap());
        }
        let mut to_follower = KvClient::connect(follower.clone()).await.unwrap();
        let with_id = |id: &str, value: &str| {
            let mut r = tonic::Request::new(PutRequest {
                key: b"g".to_vec(),
                value: value.as_bytes().to_vec(),
                prev_kv: true,
                ..Default::default()
            });
            r.metadata_mut().insert("request-id", id.parse().unwrap());
            r
        };
        // A request with an id may be sent again after any retryable error:
        // the id makes it apply at most once. The tests' short election
        // timeouts let spontaneous elections happen on a loaded machine.
        async fn retried<T, F, Fut>(mut send: F) -> Result<T, tonic::Status>
        where
            F: FnMut() -> Fut,
            Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
        {
            let mut tries = 0;
            loop {
                match send().await {
                    Ok(r) => return Ok(r.into_inner()),
                    Err(e)
                        if matches!(
                            e.code(),
                            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                        ) && tries < 100 =>
                    {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        // One put with an id on its own connection handle, for `retried`.
        let put_with_id = |c: &KvClient<tonic::transport::Channel>, id: &str, value: &str| {
            let mut c = c.clone();
            let r = with_id(id, value);
            async move { c.put(r).await }
        };
        let first = retried(|| put_with_id(&to_follower, "5/1", "a"))
            .await
            .unwrap();
        let rev = first.header.as_ref().unwrap().revision;
        // Another write in between, without an id. "no leader" means it was
        // not proposed (a spontaneous election under the tests' short
        // timeouts), so sending it again cannot apply it twice.
        let mut tries = 0;
        while let Err(e) = clients[0]
            .put(PutRequest {
                key: b"g".to_vec(),
                value: b"b".to_vec(),
                ..Default::default()
            })
            .await
        {
            tries += 1;
            assert!(
                e.message() == "etcdserver: no leader" && tries < 100,
                "put g: {e}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        for c in clients.iter_mut().chain([&mut to_follower]) {
            let again = retried(|| put_with_id(c, "5/1", "a")).await.unwrap();
            assert_eq!(again.header.unwrap().revision, rev, "the first result");
            assert_eq!(again.prev_kv, first.prev_kv);
        }
        let now = clients[1]
            .range(RangeRequest {
                key: b"g".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(now.kvs[0].value, b"b", "the retries changed nothing");
        assert_eq!(now.header.unwrap().revision, rev + 1);
        // A delete with an id reports its first result on a retry.
        for _ in 0..2 {
            let d = retried(|| {
                let mut r = tonic::Request::new(DeleteRangeRequest {
                    key: b"g".to_vec(),
                    ..Default::default()
                });
                r.metadata_mut()
                    .insert("request-id", "5/2".parse().unwrap());
                let mut c = to_follower.clone();
                async move { c.delete_range(r).await }
            })
            .await
            .unwrap();
            assert_eq!(d.deleted, 1);
        }
        // Reused for another request, or malformed: refused.
        let e = retried(|| put_with_id(&to_follower, "5/2", "c"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        let e = to_follower.put(with_id("five", "c")).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    });
}
