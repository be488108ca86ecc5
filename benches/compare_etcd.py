#!/usr/bin/env python3
"""raft-node against etcd 3.4, side by side on this machine, in one run.

Starts a 3-node etcd cluster and a 3-node raft-node cluster on 127.0.0.1 with
equivalent settings (fsync on for both: etcd always fdatasyncs its WAL,
raft-node fdatasyncs every batch; 50 ms heartbeats, 500 ms election timeouts;
data for both under the same directory, so on the same filesystem), then
drives both with the same closed-loop workload through each system's native
client protocol: `raft-node bench` over raft-node's HTTP API, and
`etcd-load` (benches/etcd-load) over etcd's gRPC API. Each row runs raft-node
then etcd back to back, so both see the same machine conditions.

Writes a Markdown table and a PNG plot (throughput and p99 against clients)
into benches/results/, and measures the single-client floor (one fdatasync of
a 256-byte append + one loopback TCP round trip) for comparison.

Usage:  python3 benches/compare_etcd.py [--quick] [--soak-secs N]
  --quick        fewer requests per row (a smoke run, a minute or two)
  --soak-secs N  afterwards, write to raft-node for N seconds with snapshots
                 on and report the leader's RSS at start and end
Needs root (or sudo-less apt) only to install etcd-server, protobuf-compiler
and matplotlib when they are missing.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benches" / "results"
CLIENT_COUNTS = [1, 16, 64, 256]
VALUE_SIZE = 256
KEYS = 10_000


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("$ " + " ".join(str(c) for c in cmd))
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools():
    missing = [p for p, b in (("etcd-server", "etcd"), ("protobuf-compiler", "protoc")) if not shutil.which(b)]
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "install", "-y", *missing], env=env, stdout=subprocess.DEVNULL)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        run([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"])
    version = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    log(f"using {version}")
    return version


def build():
    run(["cargo", "build", "--release", "-p", "raft-node"], cwd=ROOT)
    run(["cargo", "build", "--release", "--manifest-path", "benches/etcd-load/Cargo.toml",
         "--target-dir", "target/etcd-load"], cwd=ROOT)
    return ROOT / "target/release/raft-node", ROOT / "target/etcd-load/release/etcd-load"


class Cluster:
    def __init__(self):
        self.procs = []

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []


def start_etcd(work: Path, base=23000):
    c = Cluster()
    peers = ",".join(f"e{i}=http://127.0.0.1:{base + 100 + i}" for i in (1, 2, 3))
    for i in (1, 2, 3):
        cmd = [
            "etcd", "--name", f"e{i}", "--data-dir", str(work / f"etcd-{i}"),
            "--listen-client-urls", f"http://127.0.0.1:{base + i}",
            "--advertise-client-urls", f"http://127.0.0.1:{base + i}",
            "--listen-peer-urls", f"http://127.0.0.1:{base + 100 + i}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{base + 100 + i}",
            "--initial-cluster", peers, "--initial-cluster-state", "new",
            "--heartbeat-interval", "50", "--election-timeout", "500",
            "--logger", "zap", "--log-level", "error",
        ]
        log_file = open(work / f"etcd-{i}.log", "w")
        c.procs.append(subprocess.Popen(cmd, stdout=log_file, stderr=log_file))
    return c, ",".join(f"http://127.0.0.1:{base + i}" for i in (1, 2, 3))


def start_raft(binary: Path, work: Path, base=24000):
    certs = work / "certs"
    run([binary, "certs", "--out", certs, "--ids", "1,2,3"], stdout=subprocess.DEVNULL)
    members = "".join(
        f'[[members]]\nid = {i}\npeer_addr = "127.0.0.1:{base + 100 + i}"\nclient_addr = "127.0.0.1:{base + i}"\n\n'
        for i in (1, 2, 3))
    c = Cluster()
    for i in (1, 2, 3):
        cfg = work / f"raft-{i}.toml"
        cfg.write_text(
            f'id = {i}\ndata_dir = "{work / f"raft-{i}"}"\npeer_addr = "127.0.0.1:{base + 100 + i}"\n'
            f'client_addr = "127.0.0.1:{base + i}"\ntls_dir = "{certs}"\n'
            f"heartbeat_interval_ms = 50\nelection_timeout_ms = 500\n\n{members}")
        log_file = open(work / f"raft-{i}.log", "w")
        c.procs.append(subprocess.Popen([binary, "serve", "--config", cfg], stdout=log_file, stderr=log_file,
                                        env=dict(os.environ, RUST_LOG="warn")))
    return c, ",".join(f"http://127.0.0.1:{base + i}" for i in (1, 2, 3))


def bench(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def fsync_floor(work: Path, n=300):
    """Median latency of one 256-byte append + fdatasync on the data filesystem."""
    path = work / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    lat = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, b"x" * VALUE_SIZE)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
    lat.sort()
    return lat[len(lat) // 2] * 1000


def rtt_floor(n=2000):
    """Median loopback TCP round trip of a 256-byte request and a small answer."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = conn.recv(4096)
            if not data:
                os._exit(0)
            conn.sendall(b"ok")
    cli = socket.create_connection(("127.0.0.1", port))
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        cli.sendall(b"x" * VALUE_SIZE)
        cli.recv(16)
        lat.append(time.perf_counter() - t)
    cli.close()
    os.waitpid(pid, 0)
    srv.close()
    lat.sort()
    return lat[len(lat) // 2] * 1000


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def plot(rows, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for mix, style in (("write", "-"), ("90% read", "--")):
        sel = [r for r in rows if r["mix"] == mix]
        xs = [r["clients"] for r in sel]
        for system, key in (("raft-node", "raft"), ("etcd 3.4", "etcd")):
            axes[0].plot(xs, [r[key]["throughput_ops"] for r in sel], style, marker="o", label=f"{system}, {mix}")
            axes[1].plot(xs, [r[key]["p99_ms"] for r in sel], style, marker="o", label=f"{system}, {mix}")
    for ax, title, unit in ((axes[0], "throughput", "ops/s"), (axes[1], "p99 latency", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(CLIENT_COUNTS, [str(c) for c in CLIENT_COUNTS])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summarize(report):
    kind = "writes" if report["read_ratio"] == 0 else None
    merged = report["writes"] if kind else (report["reads"] if report["reads"]["count"] else report["writes"])
    return {
        "throughput_ops": report["throughput_ops"],
        "p50_ms": (report["writes"] if kind else merged)["p50_ms"],
        "p99_ms": (report["writes"] if kind else merged)["p99_ms"],
        "errors": sum(report["errors"].values()),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--soak-secs", type=int, default=0)
    args = ap.parse_args()

    etcd_version = ensure_tools()
    raft_bin, etcd_load = build()
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="compare-etcd-", dir=ROOT / "target"))
    etcd = raft = None
    rows = []
    try:
        floor_fsync, floor_rtt = fsync_floor(work), rtt_floor()
        etcd, etcd_eps = start_etcd(work)
        raft, raft_eps = start_raft(raft_bin, work)
        time.sleep(3)
        per_client = 60 if args.quick else 300
        for mix, ratio in (("write", 0.0), ("90% read", 0.9)):
            for clients in CLIENT_COUNTS:
                n = max(1000 if args.quick else 4000, clients * per_client)
                common = ["--clients", str(clients), "--requests", str(n), "--value-size", str(VALUE_SIZE),
                          "--keys", str(KEYS), "--read-ratio", str(ratio)]
                r = bench([raft_bin, "bench", "--quiet", "--json", "--endpoints", raft_eps, *common])
                e = bench([etcd_load, "--endpoints", etcd_eps, *common])
                row = {"mix": mix, "clients": clients, "requests": n, "raft": summarize(r), "etcd": summarize(e),
                       "raft_raw": r, "etcd_raw": e}
                rows.append(row)
                log(f"{mix:>8} {clients:>3} clients: raft {row['raft']['throughput_ops']:8.0f} ops/s "
                    f"p99 {row['raft']['p99_ms']:6.2f} ms | etcd {row['etcd']['throughput_ops']:8.0f} ops/s "
                    f"p99 {row['etcd']['p99_ms']:6.2f} ms")
        soak = None
        if args.soak_secs > 0:
            soak = run_soak(raft_bin, raft_eps, args.soak_secs, raft)
    finally:
        for c in (raft, etcd):
            if c:
                c.stop()

    single = next(r for r in rows if r["mix"] == "write" and r["clients"] == 1)
    floor = floor_fsync + floor_rtt
    lines = [
        "# raft-node vs etcd, same machine, same run",
        "",
        f"{etcd_version}; raft-node {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip()}; "
        f"3 nodes each on 127.0.0.1, fsync on, {VALUE_SIZE}-byte values, {KEYS} keys, closed-loop clients "
        f"sending to the leader. Command: `python3 benches/compare_etcd.py{' --quick' if args.quick else ''}`.",
        "",
        "| mix | clients | raft-node ops/s | etcd ops/s | ratio | raft-node p50 ms | etcd p50 ms | raft-node p99 ms | etcd p99 ms | p99 ratio | errors (raft/etcd) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        a, b = r["raft"], r["etcd"]
        lines.append(
            f"| {r['mix']} | {r['clients']} | {a['throughput_ops']:.0f} | {b['throughput_ops']:.0f} | "
            f"{a['throughput_ops'] / max(b['throughput_ops'], 1e-9):.2f} | {a['p50_ms']:.2f} | {b['p50_ms']:.2f} | "
            f"{a['p99_ms']:.2f} | {b['p99_ms']:.2f} | {a['p99_ms'] / max(b['p99_ms'], 1e-9):.2f} | "
            f"{a['errors']}/{b['errors']} |")
    lines += [
        "",
        f"Single-client floor on this machine: one {VALUE_SIZE}-byte append + fdatasync {floor_fsync:.3f} ms "
        f"+ one loopback TCP round trip {floor_rtt:.3f} ms = {floor:.3f} ms. "
        f"raft-node single-client write p50 {single['raft']['p50_ms']:.3f} ms = "
        f"{single['raft']['p50_ms'] / floor:.2f}x the floor.",
    ]
    if soak:
        lines += ["", soak]
    md = "\n".join(lines) + "\n"
    (RESULTS / "etcd-comparison.md").write_text(md)
    (RESULTS / "etcd-comparison.json").write_text(json.dumps(rows, indent=1))
    plot(rows, RESULTS / "etcd-comparison.png")
    print(md)
    shutil.rmtree(work, ignore_errors=True)


def run_soak(raft_bin, eps, secs, cluster):
    """Writes for `secs` seconds (snapshots on) and reports the leader's RSS."""
    status = subprocess.run([raft_bin, "status", "--endpoints", eps], capture_output=True, text=True).stdout
    leader_pid = None
    for line, proc in zip(status.splitlines(), cluster.procs):
        if '"role":"leader"' in line:
            leader_pid = proc.pid
    if leader_pid is None:
        return "Soak: no leader found; skipped."
    start_rss = rss_kib(leader_pid)
    t0, written, samples = time.time(), 0, []
    while time.time() - t0 < secs:
        r = bench([raft_bin, "bench", "--quiet", "--json", "--endpoints", eps, "--clients", "64",
                   "--requests", "50000", "--value-size", str(VALUE_SIZE), "--keys", "100000"])
        written += r["ok"]
        samples.append(rss_kib(leader_pid))
        log(f"soak: {time.time() - t0:.0f}s, {written} writes, leader RSS {samples[-1] / 1024:.1f} MiB")
    return (f"Soak: {written} writes in {time.time() - t0:.0f} s at 64 clients with snapshots every 10000 "
            f"entries; leader RSS {start_rss / 1024:.1f} MiB at start, "
            f"{samples[len(samples) // 2] / 1024:.1f} MiB midway, {samples[-1] / 1024:.1f} MiB at the end.")


if __name__ == "__main__":
    main()
