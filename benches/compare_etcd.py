#!/usr/bin/env python3
"""raft-node against etcd 3.4, side by side on this machine, with one client.

Both systems are driven by the same load generator, `raft-node bench`, through
the same API: etcd's v3 gRPC API (KV.Put, and KV.Range without
`serializable`, i.e. linearizable), which raft-node serves on its client
port. Every request goes to the leader (found through Maintenance.Status),
over one HTTP/2 connection per 32 clients; the client runs on one thread
and reports its own CPU time.

For every point, every round and both systems a fresh 3-node cluster is
started on 127.0.0.1 (fsync on for both: etcd fdatasyncs its WAL, raft-node
fdatasyncs every batch; data for both in the same directory, so on the same
file system), loaded for a warm-up and a measured window, then stopped and
deleted. Which system goes first alternates from point to point and from
round to round. Medians over rounds are reported beside every round.

Timing settings:
  default  each system's own defaults: etcd heartbeat 100 ms / election
           1000 ms, raft-node heartbeat 50 ms / election 500 ms
  matched  both at heartbeat 100 ms / election 1000 ms (etcd's defaults)

The same run measures the floors the single-client targets refer to: one
4 KiB append + fdatasync in the data directory, and one loopback TCP round
trip (both before and after the load).

Writes benches/results/etcd-comparison.{md,json,png} and the table between
the markers in README.md.

Usage:  python3 benches/compare_etcd.py [--quick] [--rounds N] [--nice N] [--soak-secs N] [--profile]
                                        [--lease-reads] [--points MIX:CLIENTS,...] [--tag TAG]
                                        [--clients-per-conn N]
  --quick        1 round, default timings only, 2 s windows (a smoke run)
  --rounds N     rounds (default 2)
  --nice N       run both clusters and the client at niceness N (e.g. -10
                 when other jobs share the machine; the same for both systems)
  --soak-secs N  afterwards, write to raft-node for N seconds with snapshots
                 on and report the leader's RSS at start and end
  --profile      instead of the comparison: perf-profile each system's leader
                 at 256 writing clients; flame graphs (SVG), folded stacks and
                 the top functions go to benches/results/profile-*
  --lease-reads  raft-node serves linearizable reads from the leader lease
                 (`lease_reads = true`; etcd has no such mode)
  --points P     only the points listed, e.g. read:1,write:1
  --tag TAG      results go to benches/results/etcd-comparison-TAG.* and the
                 README is left alone (required with --lease-reads/--points/
                 --clients-per-conn)
  --clients-per-conn N
                 clients per HTTP/2 connection, the same for both systems
                 (default 32)
Honours CARGO_TARGET_DIR. Needs root (or sudo-less apt) only to install
etcd-server when it is missing, and pip for matplotlib.
"""

import argparse
import datetime
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benches" / "results"
README = ROOT / "README.md"
LOGS = ROOT / "target" / "compare-etcd-logs"
RUN_IDS = itertools.count(1)
VALUE_SIZE = 256
KEYS = 100_000
DEFAULT_CLIENTS_PER_CONN = 32
CLIENTS_PER_CONN = DEFAULT_CLIENTS_PER_CONN  # --clients-per-conn changes it
# (mix, read ratio, clients)
POINTS = [
    ("write", 0.0, 1),
    ("write", 0.0, 16),
    ("write", 0.0, 64),
    ("write", 0.0, 256),
    ("write", 0.0, 1024),
    ("read", 1.0, 1),
    ("90% read", 0.9, 64),
    ("90% read", 0.9, 256),
]
TIMINGS = {
    "default": {"etcd": None, "raft": None},
    "matched": {"etcd": (100, 1000), "raft": (100, 1000)},
}
SYSTEMS = {"raft": "raft-node", "etcd": "etcd 3.4"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
# `--nice N`: servers and client run at this niceness (other jobs on a shared machine stay at 0).
NICE = []
# `--lease-reads`: raft-node's configs get `lease_reads = true`.
RAFT_EXTRA = []
MARK_BEGIN = "<!-- etcd-comparison:begin (benches/compare_etcd.py writes this section) -->"
MARK_END = "<!-- etcd-comparison:end -->"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("$ " + " ".join(str(c) for c in cmd))
    return subprocess.run(cmd, check=True, **kw)


def ensure_tools():
    if not shutil.which("etcd"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "install", "-y", "etcd-server"], env=env, stdout=subprocess.DEVNULL)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        run([sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"])
    version = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    log(f"using {version}")
    return version


def build():
    run(["cargo", "build", "--release", "-p", "raft-node"], cwd=ROOT)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    return target / "release" / "raft-node"


class Cluster:
    def __init__(self, system, endpoints, procs, data):
        self.system, self.endpoints, self.procs, self.data = system, endpoints, procs, data

    def cpu_ticks(self):
        """utime + stime of each node, in clock ticks."""
        out = []
        for p in self.procs:
            try:
                fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
                out.append(int(fields[11]) + int(fields[12]))
            except (OSError, IndexError, ValueError):
                out.append(0)
        return out

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        # Keep the nodes' logs (a few KB) for a look at a slow or failed run.
        logs = LOGS / self.data.name
        logs.mkdir(parents=True, exist_ok=True)
        for f in self.data.glob("*.log"):
            shutil.copy(f, logs / f.name)
        shutil.rmtree(self.data, ignore_errors=True)


def start_etcd(work: Path, base: int, timing):
    data = work / f"{next(RUN_IDS):03}-etcd-{base}"
    data.mkdir()
    peers = ",".join(f"e{i}=http://127.0.0.1:{base + 10 + i}" for i in (1, 2, 3))
    procs = []
    for i in (1, 2, 3):
        cmd = [
            "etcd", "--name", f"e{i}", "--data-dir", str(data / f"e{i}"),
            "--listen-client-urls", f"http://127.0.0.1:{base + i}",
            "--advertise-client-urls", f"http://127.0.0.1:{base + i}",
            "--listen-peer-urls", f"http://127.0.0.1:{base + 10 + i}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{base + 10 + i}",
            "--initial-cluster", peers, "--initial-cluster-state", "new",
            "--logger", "zap", "--log-level", "error",
        ]
        if timing:
            cmd += ["--heartbeat-interval", str(timing[0]), "--election-timeout", str(timing[1])]
        log_file = open(data / f"e{i}.log", "w")
        procs.append(subprocess.Popen(NICE + cmd, stdout=log_file, stderr=log_file))
    eps = ",".join(f"http://127.0.0.1:{base + i}" for i in (1, 2, 3))
    return Cluster("etcd", eps, procs, data)


def start_raft(binary: Path, work: Path, base: int, timing, certs: Path):
    data = work / f"{next(RUN_IDS):03}-raft-{base}"
    data.mkdir()
    members = "".join(
        f'[[members]]\nid = {i}\npeer_addr = "127.0.0.1:{base + 10 + i}"\nclient_addr = "127.0.0.1:{base + i}"\n\n'
        for i in (1, 2, 3))
    timing_keys = f"heartbeat_interval_ms = {timing[0]}\nelection_timeout_ms = {timing[1]}\n" if timing else ""
    procs = []
    for i in (1, 2, 3):
        cfg = data / f"n{i}.toml"
        cfg.write_text(
            f'id = {i}\ndata_dir = "{data / f"n{i}"}"\npeer_addr = "127.0.0.1:{base + 10 + i}"\n'
            f'client_addr = "127.0.0.1:{base + i}"\ntls_dir = "{certs}"\n{timing_keys}{"".join(RAFT_EXTRA)}\n'
            f'{members}')
        log_file = open(data / f"n{i}.log", "w")
        procs.append(subprocess.Popen(NICE + [binary, "serve", "--config", cfg], stdout=log_file, stderr=log_file,
                                      env=dict(os.environ, RUST_LOG="warn")))
    eps = ",".join(f"http://127.0.0.1:{base + i}" for i in (1, 2, 3))
    return Cluster("raft", eps, procs, data)


def bench(binary, eps, clients, ratio, duration, warmup):
    cmd = [binary, "bench", "--quiet", "--json", "--protocol", "grpc", "--target", "leader",
           "--endpoints", eps, "--clients", str(clients), "--clients-per-conn", str(CLIENTS_PER_CONN),
           "--duration", str(duration), "--warmup", str(warmup), "--value-size", str(VALUE_SIZE),
           "--keys", str(KEYS), "--read-ratio", str(ratio)]
    p = subprocess.run(NICE + cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"bench failed ({p.returncode}): {p.stderr.strip()}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def fsync_floor(work: Path, n=500):
    """Latency of one 4 KiB append + fdatasync in the data directory (ms)."""
    path = work / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = b"x" * 4096
    lat = []
    try:
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    return quantiles_ms(lat)


def fsync_floor_fifo(work: Path):
    """The same probe under SCHED_FIFO: the disk's own floor, without waiting for a
    scheduler tick to be woken when both cores are busy (see benches/README.md)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
            out = fsync_floor(work)
        except OSError as e:
            out = {"error": str(e)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 4096):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


def rtt_floor(n=5000, cpus=(0, 1)):
    """Loopback TCP round trip of a 256-byte request and a 2-byte answer (ms),
    client pinned to the cpus[0]-th and server to the cpus[1]-th CPU this
    process may run on.

    Unpinned, the figure is bimodal: when the scheduler puts both processes on
    one CPU a round trip is two context switches (about 6 us here); across two
    CPUs it includes waking the other, idle, CPU (70-110 us on this VM, whose
    guest does not poll before halting). The targets use the cross-CPU figure,
    as the nodes of a cluster are processes on different cores; the one-CPU
    figure is reported beside it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    # Indexes into the CPUs this process may use (a container's cpuset need
    # not include CPUs 0 and 1).
    allowed = sorted(os.sched_getaffinity(0))
    client_cpu, server_cpu = (allowed[c % len(allowed)] for c in cpus)
    pid = os.fork()
    if pid == 0:
        # The child must never return into the caller's code, whatever fails.
        try:
            os.sched_setaffinity(0, {server_cpu})
            conn, _ = srv.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                conn.sendall(b"ok")
        finally:
            os._exit(0)
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {client_cpu})
    try:
        cli = socket.create_connection(("127.0.0.1", port))
        cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lat = []
        msg = b"x" * VALUE_SIZE
        for _ in range(n):
            t = time.perf_counter()
            cli.sendall(msg)
            cli.recv(16)
            lat.append(time.perf_counter() - t)
        cli.close()
    finally:
        os.sched_setaffinity(0, before)
    os.waitpid(pid, 0)
    srv.close()
    return quantiles_ms(lat)


def quantiles_ms(lat):
    lat = sorted(lat)
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] * 1000  # noqa: E731
    return {"p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "n": len(lat)}


def machine_busy():
    """CPU time (in cores) used by the whole machine over the last second."""
    def snap():
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(f) - f[3] - f[4], sum(f)
    a = snap()
    time.sleep(1)
    b = snap()
    return (b[0] - a[0]) / max(b[1] - a[1], 1) * os.cpu_count()


def one_run(system, binary, work, base, timing, certs, clients, ratio, duration, warmup):
    cluster = (start_raft(binary, work, base, timing, certs) if system == "raft"
               else start_etcd(work, base, timing))
    try:
        before, t0 = cluster.cpu_ticks(), time.monotonic()
        r = bench(binary, cluster.endpoints, clients, ratio, duration, warmup)
        after, wall = cluster.cpu_ticks(), time.monotonic() - t0
    finally:
        cluster.stop()
    cores = [(b - a) / CLK_TCK / wall for a, b in zip(before, after)]
    eps = cluster.endpoints.split(",")
    leader = eps.index(r["leader"]) if r.get("leader") in eps else None
    r["logs"] = str(LOGS / cluster.data.name)
    r["server_cpu"] = {"cores_per_node": cores, "leader_node": leader, "wall_s": wall,
                       "note": "whole bench process lifetime: connect, warm-up and window"}
    return r


def pick(r, mix):
    """The figures of one run for the table: reads for read mixes, else writes."""
    h = r["reads"] if mix != "write" else r["writes"]
    return {
        "ops": r["throughput_ops"],
        "p50": h["p50_ms"], "p90": h["p90_ms"], "p99": h["p99_ms"], "max": h["max_ms"],
        "write_p99": r["writes"]["p99_ms"],
        "errors": sum(r["errors"].values()),
        "error_kinds": r["errors"],
        "client_cpu": r["client_cpu"]["cores"],
        "leader_cpu": (r["server_cpu"]["cores_per_node"][r["server_cpu"]["leader_node"]]
                       if r["server_cpu"]["leader_node"] is not None else None),
    }


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def aggregate(runs):
    """Medians per (timing, mix, clients, system)."""
    out = {}
    for r in runs:
        out.setdefault((r["timing"], r["mix"], r["clients"]), {}).setdefault(r["system"], []).append(r["fig"])
    table = []
    for (timing, mix, clients), by in out.items():
        row = {"timing": timing, "mix": mix, "clients": clients}
        for s, figs in by.items():
            row[s] = {k: med([f[k] for f in figs]) for k in
                      ("ops", "p50", "p90", "p99", "max", "write_p99", "client_cpu", "leader_cpu")}
            row[s]["errors"] = sum(f["errors"] for f in figs)
            row[s]["rounds"] = len(figs)
        if "raft" in row and "etcd" in row:
            row["ratio"] = row["raft"]["ops"] / max(row["etcd"]["ops"], 1e-9)
            row["p99_ratio"] = row["raft"]["p99"] / max(row["etcd"]["p99"], 1e-9)
        table.append(row)
    return table


def targets(table, floors):
    """The issue's targets, evaluated on the medians of each timing setting."""
    fs, rtt = floors["fsync_4k"]["p50_ms"], floors["rtt"]["p50_ms"]
    fifo = floors.get("fsync_4k_fifo", {}).get("p50_ms")
    out = []
    for timing in dict.fromkeys(r["timing"] for r in table):
        rows = {(r["mix"], r["clients"]): r for r in table if r["timing"] == timing and "ratio" in r}

        def add(name, key, ok, figure):
            if key in rows:
                out.append({"timing": timing, "target": name, "met": ok(rows[key]), "figure": figure(rows[key])})

        for c, goal in ((16, 2), (64, 2), (256, 3), (1024, 3)):
            add(f"writes at {c} clients >= {goal}x etcd", ("write", c), lambda r, g=goal: r["ratio"] >= g,
                lambda r: f"{r['ratio']:.2f}x")
        for c in (64, 256):
            add(f"90% reads at {c} clients >= 3x etcd", ("90% read", c), lambda r: r["ratio"] >= 3,
                lambda r: f"{r['ratio']:.2f}x")
        for (mix, c), r in rows.items():
            p99 = f"{r['raft']['p99']:.2f} vs {r['etcd']['p99']:.2f} ms"
            if mix == "90% read":
                p99 += f" (writes {r['raft']['write_p99']:.2f} vs {r['etcd']['write_p99']:.2f} ms)"
            out.append({"timing": timing, "target": f"p99 below etcd's: {mix}, {c} clients",
                        "met": r["raft"]["p99"] < r["etcd"]["p99"]
                        and (mix != "90% read" or r["raft"]["write_p99"] < r["etcd"]["write_p99"]),
                        "figure": p99})
        errs = sum(r["raft"]["errors"] for r in rows.values())
        out.append({"timing": timing, "target": "no errors (raft-node, every round)", "met": errs == 0,
                    "figure": f"{errs} errors"})
        for name, f in (("the disk's floor, SCHED_FIFO probe", fifo), ("normal-priority probe", fs)):
            if f is None:
                continue
            add(f"single-client write p50 <= 1.5 x (fdatasync {f:.3f} ms, {name}, + RTT {rtt:.3f} ms)",
                ("write", 1), lambda r, f=f: r["raft"]["p50"] <= 1.5 * (f + rtt),
                lambda r, f=f: f"{r['raft']['p50']:.3f} ms = {r['raft']['p50'] / (f + rtt):.2f}x "
                f"(etcd {r['etcd']['p50']:.3f} ms)")
        add(f"single-client linearizable read p50 <= 2 x RTT {rtt:.3f} ms", ("read", 1),
            lambda r: r["raft"]["p50"] <= 2 * rtt,
            lambda r: f"{r['raft']['p50']:.3f} ms = {r['raft']['p50'] / rtt:.2f}x RTT (etcd {r['etcd']['p50']:.3f} ms)")
    return out


def same_cpu_rtt(floors):
    f = floors.get("rtt_same_cpu")
    return f"{f['p50_ms']:.3f}" if f else "n/a"


def fifo_p50(floors):
    f = floors.get("fsync_4k_fifo", {})
    return f"{f['p50_ms']:.3f}" if "p50_ms" in f else f"n/a ({f.get('error', 'not measured')})"


def fmt(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


def medians_table(table):
    lines = [
        "| timing | mix | clients | raft-node ops/s | etcd ops/s | ratio | raft-node p50 ms | etcd p50 ms "
        "| raft-node p99 ms | etcd p99 ms | p99 ratio | raft-node max ms | etcd max ms | errors (raft/etcd) "
        "| client CPU, cores (raft/etcd) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in table:
        a, b = r["raft"], r["etcd"]
        lines.append(
            f"| {r['timing']} | {r['mix']} | {r['clients']} | {a['ops']:.0f} | {b['ops']:.0f} | "
            f"**{r['ratio']:.2f}** | {fmt(a['p50'], 3)} | {fmt(b['p50'], 3)} | {fmt(a['p99'])} | {fmt(b['p99'])} | "
            f"{r['p99_ratio']:.2f} | {fmt(a['max'])} | {fmt(b['max'])} | {a['errors']}/{b['errors']} | "
            f"{fmt(a['client_cpu'])}/{fmt(b['client_cpu'])} |")
    return lines


def rounds_table(runs):
    lines = [
        "| timing | mix | clients | round | order | system | ops/s | p50 ms | p90 ms | p99 ms | max ms "
        "| errors | client CPU (cores) | leader CPU (cores) | machine busy before (cores) |",
        "|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in runs:
        f = r["fig"]
        errs = ", ".join(f"{k}={v}" for k, v in f["error_kinds"].items()) or "0"
        lines.append(
            f"| {r['timing']} | {r['mix']} | {r['clients']} | {r['round']} | {r['position']} of 2 | "
            f"{SYSTEMS[r['system']]} | {f['ops']:.0f} | {f['p50']:.3f} | {f['p90']:.3f} | {f['p99']:.2f} | "
            f"{f['max']:.2f} | {errs} | {f['client_cpu']:.2f} | {fmt(f['leader_cpu'])} | {r['machine_busy']:.2f} |")
    return lines


def plot(table, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"raft": "tab:blue", "etcd": "tab:orange"}
    for timing, style in (("default", "-"), ("matched", "--")):
        sel = sorted((r for r in table if r["timing"] == timing and r["mix"] == "write"), key=lambda r: r["clients"])
        if not sel:
            continue
        xs = [r["clients"] for r in sel]
        for s in ("raft", "etcd"):
            label = f"{SYSTEMS[s]}, writes, {timing} timing"
            axes[0].plot(xs, [r[s]["ops"] for r in sel], style, marker="o", color=colors[s], label=label)
            axes[1].plot(xs, [r[s]["p99"] for r in sel], style, marker="o", color=colors[s], label=label)
        for r in (r for r in table if r["timing"] == timing and r["mix"] == "90% read"):
            for s in ("raft", "etcd"):
                axes[0].plot([r["clients"]], [r[s]["ops"]], "^" if timing == "default" else "v", color=colors[s])
                axes[1].plot([r["clients"]], [r[s]["p99"]], "^" if timing == "default" else "v", color=colors[s])
    xt = [1, 16, 64, 256, 1024]
    for ax, title, unit in ((axes[0], "throughput (triangles: 90% reads)", "ops/s"),
                            (axes[1], "p99 latency (triangles: 90% reads, read p99)", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(xt, [str(c) for c in xt])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    axes[1].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def update_readme(section: str):
    text = README.read_text()
    block = f"{MARK_BEGIN}\n{section}{MARK_END}"
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        tail = rest.split(MARK_END, 1)[1]
        text = head + block + tail
    else:
        anchor = "## Crates"
        sec = f"## Performance against etcd\n\n{block}\n\n"
        text = text.replace(anchor, sec + anchor, 1) if anchor in text else text + "\n" + sec
    README.write_text(text)


def run_soak(binary, work, certs, secs):
    """Writes for `secs` seconds (snapshots on) and reports the leader's RSS."""
    cluster = start_raft(binary, work, 29000, None, certs)
    try:
        r = bench(binary, cluster.endpoints, 1, 0.0, 1, 1)
        leader_pid = cluster.procs[cluster.endpoints.split(",").index(r["leader"])].pid
        rss = lambda: next(int(l.split()[1]) for l in Path(f"/proc/{leader_pid}/status").read_text().splitlines()  # noqa: E731,E741
                           if l.startswith("VmRSS:"))
        start_rss, t0, written, samples = rss(), time.time(), 0, []
        while time.time() - t0 < secs:
            r = bench(binary, cluster.endpoints, 64, 0.0, 20, 0)
            written += r["ok"]
            samples.append(rss())
            log(f"soak: {time.time() - t0:.0f}s, {written} writes, leader RSS {samples[-1] / 1024:.1f} MiB")
    finally:
        cluster.stop()
    return (f"Soak: {written} writes in {time.time() - t0:.0f} s at 64 clients with default snapshots; "
            f"leader RSS {start_rss / 1024:.1f} MiB at start, {samples[len(samples) // 2] / 1024:.1f} MiB midway, "
            f"{samples[-1] / 1024:.1f} MiB at the end.")


def profile(binary, work, certs, system, clients, secs):
    """perf profile of one system's leader at `clients` writers, as a flame graph in results/."""
    cluster = (start_raft(binary, work, 29100, None, certs) if system == "raft" else start_etcd(work, 29100, None))
    prefix = RESULTS / f"profile-{system}-leader-{clients}-clients"
    data = work / f"perf-{system}.data"
    try:
        probe = bench(binary, cluster.endpoints, 1, 0.0, 1, 1)
        eps = cluster.endpoints.split(",")
        pid = cluster.procs[eps.index(probe["leader"])].pid
        cmd = [binary, "bench", "--quiet", "--json", "--endpoints", cluster.endpoints, "--clients", str(clients),
               "--clients-per-conn", str(CLIENTS_PER_CONN), "--duration", str(secs + 2), "--warmup", "2",
               "--value-size", str(VALUE_SIZE), "--keys", str(KEYS)]
        load = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        time.sleep(3)
        # Rust release builds keep no frame pointers: unwind with DWARF. Go keeps them.
        graph = ["--call-graph", "dwarf,32768"] if system == "raft" else ["-g"]
        run(["perf", "record", "-F", "199", *graph, "-p", str(pid), "-o", str(data), "--", "sleep", str(secs)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = json.loads(load.communicate()[0].strip().splitlines()[-1])
    finally:
        cluster.stop()
    script = subprocess.Popen(["perf", "script", "--no-inline", "-i", str(data)], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    run([sys.executable, str(ROOT / "benches" / "flamegraph.py"), str(prefix), "--png", "--title",
         f"{SYSTEMS[system]} leader, {clients} writing clients ({out['throughput_ops']:.0f} ops/s while profiled)"],
        stdin=script.stdout)
    script.wait()
    data.unlink(missing_ok=True)
    log(f"{SYSTEMS[system]}: {out['throughput_ops']:.0f} ops/s while profiled; {prefix}.svg")
    return out


def main():
    global CLIENTS_PER_CONN
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--soak-secs", type=int, default=0)
    ap.add_argument("--nice", type=int, default=0,
                    help="run both clusters and the client at this niceness (e.g. -10 on a machine shared with "
                         "other jobs)")
    ap.add_argument("--profile", action="store_true",
                    help="instead: perf-profile each system's leader at 256 writing clients (flame graphs in results/)")
    ap.add_argument("--lease-reads", action="store_true",
                    help="raft-node serves linearizable reads from the leader lease (lease_reads = true)")
    ap.add_argument("--points", default=None,
                    help="only these points, e.g. 'read:1,write:1' (MIX:CLIENTS, MIX as in the table)")
    ap.add_argument("--tag", default=None,
                    help="write results/etcd-comparison-TAG.{md,json,png} and leave the README alone")
    ap.add_argument("--clients-per-conn", type=int, default=DEFAULT_CLIENTS_PER_CONN,
                    help=f"clients sharing one HTTP/2 connection, for both systems (default {DEFAULT_CLIENTS_PER_CONN})")
    args = ap.parse_args()
    if args.clients_per_conn < 1:
        ap.error("--clients-per-conn must be at least 1")
    if args.clients_per_conn != DEFAULT_CLIENTS_PER_CONN and not args.tag:
        ap.error("--clients-per-conn runs need --tag (they must not replace the full results)")
    CLIENTS_PER_CONN = args.clients_per_conn
    if args.lease_reads:
        RAFT_EXTRA.append("lease_reads = true\n")
    points = POINTS
    if args.points:
        wanted = {tuple(p.rsplit(":", 1)) for p in args.points.split(",")}
        points = [p for p in POINTS if (p[0], str(p[2])) in wanted]
        if not points:
            ap.error(f"--points {args.points!r} matches none of {[(p[0], p[2]) for p in POINTS]}")
    if (args.points or args.lease_reads) and not args.tag:
        ap.error("--points and --lease-reads runs need --tag (they must not replace the full results)")
    stem = "etcd-comparison" + (f"-{args.tag}" if args.tag else "")
    if args.nice:
        NICE.extend(["nice", "-n", str(args.nice)])
    if args.profile:
        ensure_tools()
        binary = build()
        (ROOT / "target").mkdir(exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="profile-etcd-", dir=ROOT / "target"))
        certs = work / "certs"
        run([binary, "certs", "--out", certs, "--ids", "1,2,3"], stdout=subprocess.DEVNULL)
        try:
            for system in ("raft", "etcd"):
                profile(binary, work, certs, system, 256, 8)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    rounds = args.rounds or (1 if args.quick else 2)
    timings = ["default"] if args.quick else list(TIMINGS)
    duration, warmup = (2.0, 1.0) if args.quick else (8.0, 2.0)

    etcd_version = ensure_tools()
    binary = build()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (ROOT / "target").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="compare-etcd-", dir=ROOT / "target"))
    fstype = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(work)], capture_output=True,
                            text=True).stdout.strip()
    certs = work / "certs"
    run([binary, "certs", "--out", certs, "--ids", "1,2,3"], stdout=subprocess.DEVNULL)
    started = datetime.datetime.now(datetime.timezone.utc)
    floors = {"fsync_4k": fsync_floor(work), "fsync_4k_fifo": fsync_floor_fifo(work), "rtt": rtt_floor(),
              "rtt_same_cpu": rtt_floor(cpus=(0, 0)),
              "machine_busy_cores": machine_busy()}
    log(f"floors before: {json.dumps(floors)}")
    shutil.rmtree(LOGS, ignore_errors=True)
    runs, base, step = [], 23000, 0
    try:
        for rnd in range(1, rounds + 1):
            for timing in timings:
                for mix, ratio, clients in points:
                    order = ["raft", "etcd"] if step % 2 == 0 else ["etcd", "raft"]
                    step += 1
                    for pos, system in enumerate(order, 1):
                        busy = machine_busy()
                        base = 23000 + (step * 2 + pos) % 40 * 50
                        r = one_run(system, binary, work, base, TIMINGS[timing][system], certs, clients, ratio,
                                    duration, warmup)
                        fig = pick(r, mix)
                        runs.append({"round": rnd, "timing": timing, "mix": mix, "clients": clients,
                                     "read_ratio": ratio, "system": system, "position": pos, "machine_busy": busy,
                                     "fig": fig, "raw": r})
                        log(f"round {rnd} {timing:>7} {mix:>8} {clients:>4} clients {SYSTEMS[system]:>9}: "
                            f"{fig['ops']:8.0f} ops/s p50 {fig['p50']:7.3f} p99 {fig['p99']:7.2f} ms "
                            f"errors {fig['errors']} client CPU {fig['client_cpu']:.2f} (busy before {busy:.2f})")
        soak = run_soak(binary, work, certs, args.soak_secs) if args.soak_secs > 0 else None
    finally:
        floors_after = {"fsync_4k": fsync_floor(work), "fsync_4k_fifo": fsync_floor_fifo(work), "rtt": rtt_floor(),
                        "rtt_same_cpu": rtt_floor(cpus=(0, 0))}
    shutil.rmtree(work, ignore_errors=True)
    finished = datetime.datetime.now(datetime.timezone.utc)
    log(f"floors after: {json.dumps(floors_after)}")

    table = aggregate(runs)
    goals = targets(table, floors)
    cpu_max = max(r["fig"]["client_cpu"] for r in runs)
    fs, rtt = floors["fsync_4k"], floors["rtt"]
    command = "python3 benches/compare_etcd.py" + (" --quick" if args.quick else "") + \
        (f" --rounds {args.rounds}" if args.rounds else "") + (f" --nice {args.nice}" if args.nice else "") + \
        (" --lease-reads" if args.lease_reads else "") + (f" --points {args.points}" if args.points else "") + \
        (f" --tag {args.tag}" if args.tag else "") + \
        (f" --clients-per-conn {args.clients_per_conn}" if args.clients_per_conn != DEFAULT_CLIENTS_PER_CONN else "")
    kind = "QUICK RUN (smoke test: 1 round, 2 s windows, default timings only)" if args.quick else "full run"
    header = [
        f"{etcd_version} against raft-node {commit}, {kind}, "
        f"{started:%Y-%m-%d %H:%M}-{finished:%H:%M} UTC, on a {os.cpu_count()}-core machine; "
        f"command: `{command}`.",
        "",
        f"Same client for both: `raft-node bench --protocol grpc` (etcd's v3 KV API: Put, linearizable Range), "
        f"to the leader over one HTTP/2 connection per {CLIENTS_PER_CONN} clients, closed loop, one thread. "
        f"3 nodes on 127.0.0.1, fsync on, {VALUE_SIZE}-byte values, keys uniform over {KEYS:,}, a fresh "
        f"cluster for every run, {warmup:g} s warm-up then {duration:g} s measured, {rounds} round(s), "
        f"which system goes first alternating. Data on {fstype}. Timings: `default` = each system's defaults "
        f"(etcd 100/1000 ms heartbeat/election, raft-node 50/500 ms), `matched` = both 100/1000 ms. "
        f"Latency columns are of reads for the read mixes, of writes otherwise."
        + (" raft-node ran with `lease_reads = true` (linearizable reads served from the leader lease, "
           "no heartbeat round per read); etcd has no such mode." if args.lease_reads else ""),
        "",
        f"Floors measured in this run (before the load; after it in brackets): 4 KiB append + fdatasync "
        f"p50 {fs['p50_ms']:.3f} ms [{floors_after['fsync_4k']['p50_ms']:.3f}] (p90 {fs['p90_ms']:.3f}), "
        f"under SCHED_FIFO (no wait for a scheduler tick to wake up, the disk's own floor) "
        f"p50 {fifo_p50(floors)} ms [{fifo_p50(floors_after)}]; "
        f"loopback TCP round trip (Python ping-pong, 256 B, client and server pinned to different CPUs, "
        f"the figure the targets use) p50 {rtt['p50_ms']:.3f} ms [{floors_after['rtt']['p50_ms']:.3f}], "
        f"both on one CPU {same_cpu_rtt(floors)} ms [{same_cpu_rtt(floors_after)}]. Load generator CPU: at most {cpu_max:.2f} cores in any run "
        f"(limit 0.5, a quarter of this machine): {'met' if cpu_max < 0.5 else 'NOT met'}. Machine busy before "
        f"the run: {floors['machine_busy_cores']:.2f} cores (other jobs share this machine); both clusters and "
        f"the client ran at niceness {args.nice}.",
    ]
    goal_lines = ["| timing | target | met | figure |", "|---|---|---|---|"]
    goal_lines += [f"| {g['timing']} | {g['target']} | {'yes' if g['met'] else '**no**'} | {g['figure']} |"
                   for g in goals]
    md = ["# raft-node vs etcd, same client, same machine, same run", "", *header, "",
          "## Medians over rounds", "", *medians_table(table), "", "## Targets (issue 17)", "", *goal_lines, "",
          "## Every round", "", *rounds_table(runs), ""]
    if soak:
        md += [soak, ""]
    (RESULTS / f"{stem}.md").write_text("\n".join(md))
    (RESULTS / f"{stem}.json").write_text(json.dumps({
        "etcd_version": etcd_version, "raft_node_commit": commit, "quick": args.quick, "command": command,
        "started": started.isoformat(), "finished": finished.isoformat(), "rounds": rounds,
        "duration_s": duration, "warmup_s": warmup, "value_size": VALUE_SIZE, "keys": KEYS,
        "clients_per_conn": CLIENTS_PER_CONN, "timings": {t: TIMINGS[t] for t in timings},
        "floors_before": floors, "floors_after": floors_after, "client_cpu_max_cores": cpu_max,
        "medians": table, "targets": goals, "runs": runs, "soak": soak}, indent=1))
    plot(table, RESULTS / f"{stem}.png")
    print("\n".join(md))
    if args.tag:
        return
    readme = [*header, "", *medians_table(table), "", *goal_lines, "",
              "Every round, the raw JSON and a plot: [`benches/results/`](benches/results/etcd-comparison.md).", ""]
    update_readme("\n".join(readme))


if __name__ == "__main__":
    main()
