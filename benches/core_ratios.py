#!/usr/bin/env python3
"""The raft-core / raft-rs table of the core bench (issue 17).

    cargo bench -p raft-benches --bench core -- --warm-up-time 1 --measurement-time 3
    python3 benches/core_ratios.py [CRITERION_DIR]

CRITERION_DIR defaults to $CARGO_TARGET_DIR/criterion (or target/criterion). For each
batch size it prints entries/s of every mode (from criterion's median), raft-core's best
mode and raft-rs's best mode, and their ratio; then the closed loop.
"""

import json
import os
import sys

BATCHES = [1, 16, 256, 4096]
# Results written this long before the newest one belong to an earlier run.
STALE_SECS = 10 * 60


def criterion_dir():
    if len(sys.argv) > 1:
        return sys.argv[1]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "target")
    return os.path.join(target, "criterion")


def load_group(root, group):
    """{function name: entries per second} for one criterion group."""
    out = {}
    gdir = os.path.join(root, group)
    if not os.path.isdir(gdir):
        return out
    for fn in sorted(os.listdir(gdir)):
        if fn == "report":
            continue
        for param in sorted(os.listdir(os.path.join(gdir, fn))):
            new = os.path.join(gdir, fn, param, "new")
            if not os.path.isfile(os.path.join(new, "estimates.json")):
                continue
            with open(os.path.join(new, "estimates.json")) as f:
                est = json.load(f)
            with open(os.path.join(new, "benchmark.json")) as f:
                bench = json.load(f)
            elements = (bench.get("throughput") or {}).get("Elements") or 1
            median_ns = est["median"]["point_estimate"]
            mtime = os.path.getmtime(os.path.join(new, "estimates.json"))
            out[bench.get("function_id") or fn] = (mtime, elements / (median_ns * 1e-9))
    return out


def latest_run(groups):
    """Drops results older than the last run (functions renamed or not run since)."""
    newest = max((m for g in groups.values() for m, _ in g.values()), default=0)
    return {name: {fn: rate for fn, (m, rate) in g.items() if m >= newest - STALE_SECS}
            for name, g in groups.items()}


def fmt(rate):
    return f"{rate / 1e3:,.0f} k/s" if rate >= 1e3 else f"{rate:,.0f} /s"


def main():
    root = criterion_dir()
    names = [f"batch_{n}" for n in BATCHES] + ["closed_loop"]
    groups = latest_run({name: load_group(root, name) for name in names})
    rows = []
    for n in BATCHES:
        g = groups[f"batch_{n}"]
        if not g:
            continue
        core = {k: v for k, v in g.items() if k.startswith("raft-core")}
        rs = {k: v for k, v in g.items() if k.startswith("raft-rs")}
        if not core or not rs:
            continue
        ck, cv = max(core.items(), key=lambda kv: kv[1])
        rk, rv = max(rs.items(), key=lambda kv: kv[1])
        modes = ", ".join(f"{k} {fmt(v)}" for k, v in sorted(g.items()))
        rows.append((f"batch {n}", fmt(cv), ck, fmt(rv), rk, cv / rv, modes))
    g = groups["closed_loop"]
    if "raft-core" in g and "raft-rs" in g:
        rows.append(("closed loop", fmt(g["raft-core"]), "raft-core", fmt(g["raft-rs"]),
                     "raft-rs", g["raft-core"] / g["raft-rs"], ""))
    print("| run | raft-core (best mode) | raft-rs (best mode) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, cv, ck, rv, rk, ratio, _ in rows:
        print(f"| {name} | {cv} ({ck}) | {rv} ({rk}) | {ratio:.2f}x |")
    print()
    for name, *_, modes in rows:
        if modes:
            print(f"{name}: {modes}")


if __name__ == "__main__":
    main()
