#!/usr/bin/env python3
"""Summarise the WAL criterion results: medians, throughput and WAL/raw ratios.

    python3 benches/summarize.py                 # table for the last bench run
    python3 benches/summarize.py --save runs.jsonl   # ...and append it to runs.jsonl
    python3 benches/summarize.py --aggregate runs.jsonl  # median over saved runs

Reads target/criterion/<group>/<function>/new/{estimates,benchmark}.json. The
median of criterion's samples is used rather than the mean: the disk is shared,
and a burst of someone else's fsyncs inflates the mean far more than the median.
"""

import argparse
import json
import os
import statistics
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "criterion")
STALE_SECS = 10 * 60
GROUPS = [
    "batched_append_1000x256B",
    "append_sync_256B",
    "read_range_10000x256B",
    "recovery_1GiB",
]


def load_run():
    """{(group, function): {"median_ns": .., "bytes": ..}} for the last run."""
    run = {}
    for group in GROUPS:
        gdir = os.path.join(ROOT, group)
        if not os.path.isdir(gdir):
            continue
        for fn in sorted(os.listdir(gdir)):
            new = os.path.join(gdir, fn, "new")
            if not os.path.isfile(os.path.join(new, "estimates.json")):
                continue
            with open(os.path.join(new, "estimates.json")) as f:
                est = json.load(f)
            with open(os.path.join(new, "benchmark.json")) as f:
                bench = json.load(f)
            run[f"{group}/{fn}"] = {
                "mtime": os.path.getmtime(os.path.join(new, "estimates.json")),
                "median_ns": est["median"]["point_estimate"],
                "mean_ns": est["mean"]["point_estimate"],
                "bytes": (bench.get("throughput") or {}).get("Bytes"),
            }
    # Criterion keeps results of benchmarks that were not part of the last
    # invocation (e.g. the gated recovery one); leave out anything much older.
    if run:
        newest = max(r["mtime"] for r in run.values())
        for key in [k for k, r in run.items() if newest - r["mtime"] > STALE_SECS]:
            print(f"note: leaving out {key}: its results predate this run", file=sys.stderr)
            del run[key]
    return run


def fmt_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def fmt_rate(bytes_, ns):
    if not bytes_:
        return "-"
    mbps = bytes_ / ns * 1e3  # bytes/ns * 1e9 / 1e6
    return f"{mbps / 1e3:.2f} GB/s" if mbps >= 1000 else f"{mbps:.1f} MB/s"


def table(run, note=""):
    lines = [f"| benchmark | median time{note} | throughput (user data) | WAL / raw_fallocated | WAL / raw_prewritten |",
             "|---|---|---|---|---|"]
    for key, r in run.items():
        group, fn = key.split("/")
        ratio = ["", ""]
        if fn == "wal":
            for i, base in enumerate(("raw_fallocated", "raw_prewritten")):
                b = run.get(f"{group}/{base}")
                if b:
                    if group.startswith("batched"):
                        # Throughput ratio: ours / raw bytes per second.
                        ratio[i] = f"{b['median_ns'] / r['median_ns']:.2f}x throughput"
                    else:
                        ratio[i] = f"{r['median_ns'] / b['median_ns']:.2f}x latency"
        lines.append(f"| {key} | {fmt_time(r['median_ns'])} | {fmt_rate(r['bytes'], r['median_ns'])} | {ratio[0]} | {ratio[1]} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--save", help="append this run to a JSON-lines file")
    ap.add_argument("--aggregate", help="print the median over the runs in a JSON-lines file")
    args = ap.parse_args()
    if args.aggregate:
        with open(args.aggregate) as f:
            runs = [json.loads(line) for line in f if line.strip()]
        keys = [k for k in runs[-1]]
        agg = {}
        for k in keys:
            vals = [r[k]["median_ns"] for r in runs if k in r]
            agg[k] = {"median_ns": statistics.median(vals), "bytes": runs[-1][k]["bytes"], "n": len(vals),
                      "all": vals}
        print(table(agg, note=f" (median of {len(runs)} runs)"))
        print()
        for k, v in agg.items():
            print(f"{k}: per-run medians " + ", ".join(fmt_time(x) for x in v["all"]))
        return
    run = load_run()
    if not run:
        sys.exit(f"no criterion results under {ROOT}; run the bench first")
    print(table(run))
    if args.save:
        with open(args.save, "a") as f:
            f.write(json.dumps(run) + "\n")


if __name__ == "__main__":
    main()
