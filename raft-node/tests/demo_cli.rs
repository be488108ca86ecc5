//! `raft-node demo` as a user runs it: three nodes over QUIC + mutual TLS with
//! HTTP clients. In its own test binary: a child process briefly holds copies
//! of the parent's file descriptors (and so its WAL locks) between fork and
//! exec, which would disturb tests that reopen WALs.

fn demo(dir: &std::path::Path, base_port: u16) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raft-node"))
        .args([
            "demo",
            "--no-wait",
            "--base-port",
            &base_port.to_string(),
            "--dir",
        ])
        .arg(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn demo_runs_a_real_cluster_and_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A port range unlikely to clash with a demo a developer left running.
    // Below the kernel's ephemeral range (32768+), so no client socket holds it.
    let base = 20_000 + (std::process::id() % 12_000) as u16;
    let first = demo(&data, base);
    assert!(
        first.contains("linearizable read via the leader"),
        "{first}"
    );
    assert!(first.contains("All nodes stopped cleanly"), "{first}");
    for id in 1..=3 {
        assert!(data.join(format!("node-{id}.toml")).exists());
    }
    // Same data: the nodes restart from their WALs, in a later term.
    let second = demo(&data, base);
    assert!(second.contains("All nodes stopped cleanly"), "{second}");
}
