//! etcd's auth with the real `etcdctl` 3.4 against a 3-node cluster: users,
//! roles, `auth enable`, a user with a read-only prefix (allowed reads,
//! denied writes that change nothing), a revoked permission taking effect on
//! every member, tokens that stop working after a password change and after
//! `auth disable` (raw tokens through etcd's JSON gateway, `Authorization`
//! header), and, over client TLS, the certificate's common name as the user.
//!
//! The expected outputs are etcd's: with `RAFT_TESTS_AGAINST_ETCD=1` the
//! first test runs against a real etcd 3.4 cluster too (the TLS test is
//! raft-node's only). Without `etcdctl` on `PATH` the tests print why they
//! are skipped.
//!
//! ```sh
//! cargo test -p raft-tests --test etcdctl_auth
//! RAFT_TESTS_AGAINST_ETCD=1 cargo test -p raft-tests --test etcdctl_auth
//! ```

mod etcdctl_common;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use etcdctl_common::*;
use raft_tests::cluster::{node_binary, Cluster, ClusterOptions};
use raft_tests::etcd::find_on_path;
use serde_json::Value;

const DENIED: &str = "etcdserver: permission denied";

/// A JSON gateway call: `POST http://{ep}{path}` with `body`, and the token
/// in `Authorization` if any. The HTTP status and the parsed answer.
fn gateway(ep: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let Ok(mut tcp) = std::net::TcpStream::connect(ep) else {
        return (0, Value::Null);
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let auth = token.map_or(String::new(), |t| format!("Authorization: {t}\r\n"));
    let req = format!(
        "POST {path} HTTP/1.0\r\nHost: {ep}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if tcp.write_all(req.as_bytes()).is_err() {
        return (0, Value::Null);
    }
    let mut text = String::new();
    let _ = tcp.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A `/v1` call (raft-node's own API) with the token in `Authorization`:
/// the HTTP status and the body.
fn v1(ep: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let Ok(mut tcp) = std::net::TcpStream::connect(ep) else {
        return (0, String::new());
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let auth = token.map_or(String::new(), |t| format!("Authorization: {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: {ep}\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if tcp.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut text = String::new();
    let _ = tcp.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// A token for `user` from the gateway's `Authenticate`.
fn token(ck: &mut Checks, ep: &str, user: &str, password: &str) -> String {
    let body = serde_json::json!({ "name": user, "password": password }).to_string();
    let (status, v) = gateway(ep, "/v3/auth/authenticate", None, &body);
    match v["token"].as_str() {
        Some(t) if status == 200 => t.to_string(),
        _ => {
            ck.fail(format!("authenticate {user} on {ep}: {status} {v}"));
            String::new()
        }
    }
}

/// A gateway range of `key` with `token`: the value, or the error message.
fn range_with(ep: &str, token: Option<&str>, key: &str) -> Result<String, String> {
    let body = serde_json::json!({ "key": b64(key) }).to_string();
    let (status, v) = gateway(ep, "/v3/kv/range", token, &body);
    if status == 200 {
        Ok(v["kvs"][0]["value"]
            .as_str()
            .and_then(unb64)
            .unwrap_or_default())
    } else {
        Err(format!(
            "{status} {}",
            v["message"].as_str().or(v["error"].as_str()).unwrap_or("")
        ))
    }
}

/// The roles and permissions of the first test, made as etcd's guide does.
fn add_users_and_roles(ck: &mut Checks, c: &Ctl, ep: &str) {
    let out = c.ok(ck, &[ep], &["user", "add", "root:rootpw"]);
    ck.eq("user add root", out.stdout.trim(), "User root created");
    let out = c.ok(ck, &[ep], &["user", "grant-role", "root", "root"]);
    ck.eq(
        "grant-role root",
        out.stdout.trim(),
        "Role root is granted to user root",
    );
    let out = c.ok(ck, &[ep], &["role", "add", "reader"]);
    ck.eq("role add", out.stdout.trim(), "Role reader created");
    let out = c.ok(
        ck,
        &[ep],
        &[
            "role",
            "grant-permission",
            "reader",
            "read",
            "pub/",
            "--prefix=true",
        ],
    );
    ck.eq("grant-permission", out.stdout.trim(), "Role reader updated");
    let out = c.ok(ck, &[ep], &["user", "add", "alice:alicepw"]);
    ck.eq("user add alice", out.stdout.trim(), "User alice created");
    let out = c.ok(ck, &[ep], &["user", "grant-role", "alice", "reader"]);
    ck.eq(
        "grant-role alice",
        out.stdout.trim(),
        "Role reader is granted to user alice",
    );
    c.fails_with(
        ck,
        &[ep],
        &["user", "add", "alice:again"],
        "etcdserver: user name already exists",
    );
    c.fails_with(
        ck,
        &[ep],
        &["user", "grant-role", "alice", "nope"],
        "etcdserver: role name not found",
    );
}

/// `etcdctl user/role/auth` against a 3-node cluster: a read-only prefix
/// user is allowed reads and denied writes (which change nothing), on every
/// member; a revoked permission takes effect on every member; a token stops
/// working after a password change and after `auth disable`.
#[test]
fn etcdctl_users_roles_permissions_and_tokens() {
    let Some(env) = setup("auth", true) else {
        return;
    };
    let mut ck = Checks::new(system_name());
    let t = env.wait_leader(Duration::from_secs(30));
    let c = &env.ctl;
    let eps = env.endpoints();
    let lead = t.leader_ep().to_string();
    let root = ["--user", "root:rootpw"];
    let alice = ["--user", "alice:alicepw"];
    let with = |who: &[&'static str; 2], args: &[&'static str]| -> Vec<&'static str> {
        let mut v = who.to_vec();
        v.extend_from_slice(args);
        v
    };

    c.fails_with(
        &mut ck,
        &[&lead],
        &["auth", "enable"],
        "etcdserver: root user does not exist",
    );
    add_users_and_roles(&mut ck, c, &lead);
    c.ok(&mut ck, &[&lead], &["put", "pub/a", "1"]);
    c.ok(&mut ck, &[&lead], &["put", "secret", "s"]);
    let out = c.ok(&mut ck, &[&lead], &["auth", "enable"]);
    ck.eq("auth enable", out.stdout.trim(), "Authentication Enabled");

    // Allowed reads, denied writes and reads elsewhere, on every member.
    for ep in &eps {
        let out = c.ok(&mut ck, &[ep], &with(&alice, &["get", "pub/a"]));
        ck.eq(
            &format!("alice get pub/a on {ep}"),
            out.stdout.as_str(),
            "pub/a\n1\n",
        );
        c.fails_with(
            &mut ck,
            &[ep],
            &with(&alice, &["put", "pub/a", "2"]),
            DENIED,
        );
        c.fails_with(&mut ck, &[ep], &with(&alice, &["get", "secret"]), DENIED);
        c.fails_with(&mut ck, &[ep], &with(&alice, &["del", "pub/a"]), DENIED);
        // A range wider than the grant is denied as a whole.
        c.fails_with(
            &mut ck,
            &[ep],
            &with(&alice, &["get", "pub", "--prefix"]),
            DENIED,
        );
        c.fails_with(
            &mut ck,
            &[ep],
            &["get", "pub/a"],
            "etcdserver: user name is empty",
        );
    }
    let out = c.ok(
        &mut ck,
        &[&lead],
        &with(&alice, &["get", "pub/", "--prefix"]),
    );
    ck.eq("alice get --prefix pub/", out.stdout.as_str(), "pub/a\n1\n");
    c.fails_with(
        &mut ck,
        &[&lead],
        &["--user", "alice:wrong", "get", "pub/a"],
        "etcdserver: authentication failed, invalid user ID or password",
    );
    // A txn is checked as a whole: its compares and both branches.
    c.fails_with_in(
        &mut ck,
        &[&lead],
        &with(&alice, &["txn"]),
        Some("val(\"pub/a\") = \"1\"\n\nget pub/a\n\nget secret\n\n"),
        DENIED,
    );
    let out = c.ok_in(
        &mut ck,
        &[&lead],
        &with(&alice, &["txn"]),
        "val(\"pub/a\") = \"1\"\n\nget pub/a\n\n\n",
    );
    ck.eq(
        "alice's readable txn",
        out.lines(),
        vec!["SUCCESS", "pub/a", "1"],
    );
    // Denied writes changed nothing.
    let out = c.ok(
        &mut ck,
        &[&lead],
        &with(&root, &["get", "pub/a", "--print-value-only"]),
    );
    ck.eq("pub/a after denied writes", out.stdout.trim(), "1");
    // Admin calls are root's only.
    c.fails_with(&mut ck, &[&lead], &with(&alice, &["user", "list"]), DENIED);
    c.fails_with(
        &mut ck,
        &[&lead],
        &with(&alice, &["role", "add", "x"]),
        DENIED,
    );
    if !env.sys.is_etcd() {
        // etcd lets any user compact; raft-node keeps it to root.
        c.fails_with(
            &mut ck,
            &[&lead],
            &with(&alice, &["compaction", "2"]),
            DENIED,
        );
    }
    let out = c.ok(&mut ck, &[&lead], &with(&root, &["user", "list"]));
    ck.eq("user list", out.lines(), vec!["alice", "root"]);
    let out = c.ok(&mut ck, &[&lead], &with(&root, &["role", "get", "reader"]));
    ck.check(out.stdout.contains("[pub/, pub0)"), || {
        format!("role get reader: {}", out.describe())
    });
    let out = c.ok(&mut ck, &[&lead], &with(&root, &["user", "get", "alice"]));
    ck.check(out.stdout.contains("Roles: reader"), || {
        format!("user get alice: {}", out.describe())
    });

    // Watch: the whole range must be readable when the watch is created.
    let follower = t.follower_ep().to_string();
    let mut denied = c.spawn(
        &env.dir.0,
        "watch-secret",
        &[&follower],
        &with(&alice, &["watch", "secret"]),
    );
    let code = denied.wait_exit(Duration::from_secs(10));
    ck.check(
        code.is_some_and(|c| c != 0) && denied.stderr().contains(DENIED),
        || {
            format!(
                "a denied watch ends with {DENIED}: {code:?} {}",
                denied.describe()
            )
        },
    );
    let allowed = c.spawn(
        &env.dir.0,
        "watch-pub",
        &[&follower],
        &with(&alice, &["watch", "pub/", "--prefix"]),
    );
    std::thread::sleep(Duration::from_millis(500));
    c.ok(&mut ck, &[&lead], &with(&root, &["put", "pub/w", "seen"]));
    ck.check(
        allowed.wait_stdout(Duration::from_secs(10), |o| o.contains("pub/w\nseen")),
        || {
            format!(
                "alice's watch on pub/ sees root's put: {}",
                allowed.describe()
            )
        },
    );
    drop(allowed);

    // Revoked: takes effect on every member.
    let out = c.ok(
        &mut ck,
        &[&lead],
        &with(
            &root,
            &[
                "role",
                "revoke-permission",
                "reader",
                "pub/",
                "--prefix=true",
            ],
        ),
    );
    ck.eq(
        "revoke-permission",
        out.stdout.trim(),
        "Permission of range [pub/, pub0) is revoked from role reader",
    );
    for ep in &eps {
        c.fails_with(&mut ck, &[ep], &with(&alice, &["get", "pub/a"]), DENIED);
    }
    c.ok(
        &mut ck,
        &[&lead],
        &with(
            &root,
            &[
                "role",
                "grant-permission",
                "reader",
                "readwrite",
                "pub/",
                "--prefix=true",
            ],
        ),
    );
    for ep in &eps {
        let out = c.ok(&mut ck, &[ep], &with(&alice, &["put", "pub/b", "x"]));
        ck.eq(&format!("alice put on {ep}"), out.stdout.trim(), "OK");
    }

    // A raw token, through the gateway, from every member.
    let tok = token(&mut ck, &lead, "alice", "alicepw");
    for ep in &eps {
        ck.eq(
            &format!("gateway range with alice's token on {ep}"),
            range_with(ep, Some(&tok), "pub/a"),
            Ok("1".to_string()),
        );
        let denied = range_with(ep, Some(&tok), "secret");
        ck.check(denied.as_ref().is_err_and(|e| e.contains(DENIED)), || {
            format!("gateway range of secret on {ep}: {denied:?}")
        });
    }
    if !env.sys.is_etcd() {
        // raft-node's /v1 API takes the same tokens (on the leader: a
        // follower redirects writes and linearizable reads).
        let t = Some(tok.as_str());
        ck.eq(
            "/v1 get pub/a",
            v1(&lead, "GET", "/v1/kv/pub%2Fa", t, ""),
            (200, "1".into()),
        );
        let (status, _) = v1(&lead, "GET", "/v1/kv/secret", t, "");
        ck.eq("/v1 get secret", status, 403);
        let (status, _) = v1(&lead, "PUT", "/v1/kv/pub%2Fc", t, "x");
        ck.eq("/v1 put pub/c", status, 200);
        let (status, body) = v1(&lead, "PUT", "/v1/kv/secret", t, "x");
        ck.check(status == 403 && body.contains("permission_denied"), || {
            format!("/v1 put secret: {status} {body}")
        });
        let (status, _) = v1(&lead, "GET", "/v1/kv/pub%2Fa", None, "");
        ck.eq("/v1 get without a token", status, 401);
        let (status, _) = v1(&lead, "GET", "/v1/kv/pub%2Fa", Some("garbage"), "");
        ck.eq("/v1 get with a bad token", status, 401);
        let (status, _) = v1(&lead, "POST", "/v1/snapshot", t, "");
        ck.eq("/v1 snapshot by alice", status, 403);
        let (status, _) = v1(&lead, "GET", "/v1/status", None, "");
        ck.eq("/v1 status stays open", status, 200);
        let out = c.ok(
            &mut ck,
            &[&lead],
            &with(&root, &["get", "secret", "--print-value-only"]),
        );
        ck.eq("secret after denied /v1 writes", out.stdout.trim(), "s");
    }
    let bad = range_with(&lead, Some("garbage"), "pub/a");
    ck.check(
        bad.as_ref()
            .is_err_and(|e| e.contains("invalid auth token")),
        || format!("a garbage token: {bad:?}"),
    );
    // A password change ends alice's tokens.
    let out = c.ok_in(
        &mut ck,
        &[&lead],
        &with(&root, &["user", "passwd", "alice", "--interactive=false"]),
        "newpw\n",
    );
    ck.eq("passwd", out.stdout.trim(), "Password updated");
    for ep in &eps {
        let old = range_with(ep, Some(&tok), "pub/a");
        ck.check(
            old.as_ref()
                .is_err_and(|e| e.contains("invalid auth token")),
            || format!("alice's token after a password change, on {ep}: {old:?}"),
        );
    }
    c.fails_with(
        &mut ck,
        &[&lead],
        &with(&alice, &["get", "pub/a"]),
        "etcdserver: authentication failed, invalid user ID or password",
    );
    let out = c.ok(
        &mut ck,
        &[&lead],
        &["--user", "alice:newpw", "get", "pub/a"],
    );
    ck.eq(
        "alice with the new password",
        out.stdout.as_str(),
        "pub/a\n1\n",
    );

    // auth disable ends every token; requests without one then pass.
    let tok = token(&mut ck, &lead, "alice", "newpw");
    ck.eq(
        "new token",
        range_with(&lead, Some(&tok), "pub/a"),
        Ok("1".to_string()),
    );
    let out = c.ok(&mut ck, &[&lead], &with(&root, &["auth", "disable"]));
    ck.eq("auth disable", out.stdout.trim(), "Authentication Disabled");
    for ep in &eps {
        let old = range_with(ep, Some(&tok), "pub/a");
        ck.check(
            old.as_ref()
                .is_err_and(|e| e.contains("invalid auth token")),
            || format!("alice's token after auth disable, on {ep}: {old:?}"),
        );
        let out = c.ok(&mut ck, &[ep], &["get", "secret", "--print-value-only"]);
        ck.eq(
            &format!("get secret with auth off on {ep}"),
            out.stdout.trim(),
            "s",
        );
    }
    ck.finish();
}

// ------------------------------------------------------- client certificates

fn run_ok(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts 3 nodes whose client ports speak TLS and require client
/// certificates from `pki`'s CA.
fn start_tls_cluster(bin: &Path, dir: &Path, pki: &Path) -> Cluster {
    let pki = pki.to_path_buf();
    let options = ClusterOptions {
        election_timeout_ms: 1000,
        heartbeat_interval_ms: 100,
        request_timeout_ms: 10_000,
        ..ClusterOptions::for_tests(3)
    };
    Cluster::start_with_setup(bin, &dir.join("cluster"), options, move |node| {
        let text = std::fs::read_to_string(&node.config)?;
        let at = text.find("[[members]]").unwrap_or(text.len());
        let tls = format!(
            "client_cert = \"{}\"\nclient_key = \"{}\"\nclient_trusted_ca = \"{}\"\nclient_cert_auth = true\n",
            pki.join(format!("server-{}.crt", node.id)).display(),
            pki.join(format!("server-{}.key", node.id)).display(),
            pki.join("ca.crt").display(),
        );
        std::fs::write(
            &node.config,
            format!("{}{tls}\n{}", &text[..at], &text[at..]),
        )
    })
    .unwrap_or_else(|e| panic!("cluster start: {e}"))
}

/// With `client_cert_auth`, `etcdctl --cacert/--cert/--key` acts as the
/// user its certificate names: `root` sets up users and enables auth,
/// `alice` (a read-only prefix) reads and is denied writes, on every member.
#[test]
fn etcdctl_client_certificate_common_name_is_the_user() {
    if against_etcd() {
        eprintln!(
            "SKIPPED the client-certificate test against etcd: it runs against raft-node only"
        );
        return;
    }
    let Some(etcdctl) = find_on_path("etcdctl") else {
        eprintln!("SKIPPED etcdctl_client_certificate_common_name_is_the_user: `etcdctl` is not on PATH (scripts/install-test-deps installs it)");
        return;
    };
    let _lock = AddressLock::acquire();
    let run = RunDir::new("auth-tls");
    let bin = node_binary().unwrap_or_else(|e| panic!("no raft-node binary: {e}"));
    let pki: PathBuf = run.0.join("pki");
    run_ok(
        Command::new(&bin)
            .args(["certs", "--ids", "1,2,3", "--client-hosts"])
            .arg("1=127.0.0.1,2=127.0.0.2,3=127.0.0.3")
            .arg("--out")
            .arg(&pki),
    );
    for user in ["root", "alice"] {
        run_ok(
            Command::new(&bin)
                .args(["certs", "--client", user, "--out"])
                .arg(&pki),
        );
    }
    let cluster = start_tls_cluster(&bin, &run.0, &pki);
    let eps: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("https://{}:{}", n.ip, n.client_addr.port()))
        .collect();
    let mut ck = Checks::new("raft-node");
    let ctl = |ep: &str, who: &str, args: &[&str], stdin: Option<&str>| -> Out {
        let mut cmd = Command::new(&etcdctl);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", ep, "--dial-timeout", "3s"])
            .args(["--command-timeout", "10s", "--cacert"])
            .arg(pki.join("ca.crt"))
            .arg("--cert")
            .arg(pki.join(format!("client-{who}.crt")))
            .arg("--key")
            .arg(pki.join(format!("client-{who}.key")))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("run etcdctl");
        if let Some(input) = stdin {
            let _ = child
                .stdin
                .take()
                .expect("piped")
                .write_all(input.as_bytes());
        } else {
            drop(child.stdin.take());
        }
        let out = child.wait_with_output().expect("etcdctl output");
        Out {
            cmd: format!(
                "etcdctl --endpoints {ep} --cert client-{who}.crt {}",
                args.join(" ")
            ),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    // Wait until the cluster serves writes.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = ctl(&eps[0], "root", &["put", "pub/a", "1"], None);
        if out.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no write within 30 s: {}",
            out.describe()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    for args in [
        vec!["user", "add", "root:rootpw"],
        vec!["user", "grant-role", "root", "root"],
        vec!["role", "add", "reader"],
        vec![
            "role",
            "grant-permission",
            "reader",
            "read",
            "pub/",
            "--prefix=true",
        ],
        vec!["user", "add", "alice:alicepw"],
        vec!["user", "grant-role", "alice", "reader"],
        vec!["auth", "enable"],
    ] {
        let out = ctl(&eps[0], "root", &args, None);
        ck.check(out.success(), || {
            format!("expected success: {}", out.describe())
        });
    }
    for ep in &eps {
        let out = ctl(ep, "alice", &["get", "pub/a", "--print-value-only"], None);
        ck.check(out.success() && out.stdout.trim() == "1", || {
            format!(
                "alice's certificate reads pub/a on {ep}: {}",
                out.describe()
            )
        });
        let out = ctl(ep, "alice", &["put", "pub/a", "2"], None);
        ck.check(!out.success() && out.stderr.contains(DENIED), || {
            format!(
                "alice's certificate may not write on {ep}: {}",
                out.describe()
            )
        });
        let out = ctl(ep, "alice", &["user", "list"], None);
        ck.check(!out.success() && out.stderr.contains(DENIED), || {
            format!(
                "alice's certificate is not root on {ep}: {}",
                out.describe()
            )
        });
    }
    let out = ctl(&eps[1], "root", &["put", "pub/a", "3"], None);
    ck.check(out.success(), || {
        format!("root's certificate writes: {}", out.describe())
    });
    let out = ctl(
        &eps[2],
        "alice",
        &["get", "pub/a", "--print-value-only"],
        None,
    );
    ck.check(out.stdout.trim() == "3", || {
        format!("alice reads root's write: {}", out.describe())
    });
    // A token beats the certificate: alice's certificate with root's password.
    let out = ctl(
        &eps[0],
        "alice",
        &["--user", "root:rootpw", "put", "pub/a", "4"],
        None,
    );
    ck.check(out.success(), || {
        format!("alice's cert with --user root: {}", out.describe())
    });
    let bad = cluster.shutdown(Duration::from_secs(10));
    ck.check(bad.is_empty(), || format!("nodes failed: {bad:?}"));
    ck.finish();
}
