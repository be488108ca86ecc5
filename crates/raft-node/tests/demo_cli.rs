//! `raft-node demo` as a user runs it. In its own test binary: a child process
//! briefly holds copies of the parent's file descriptors (and so its WAL
//! locks) between fork and exec, which would disturb tests that reopen WALs.

#[test]
fn demo_command_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_raft-node"))
        .args(["demo", "--writes", "20", "--dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("equal digests"), "{stdout}");
}
