#!/usr/bin/env python3
"""Folds `perf script` output into stacks and draws a flame graph (SVG).

Usage:  perf script -i perf.data | python3 benches/flamegraph.py OUT_PREFIX [--title T]

Writes OUT_PREFIX.folded (one `frame;frame;... count` line per stack, the
format inferno and FlameGraph read), OUT_PREFIX.svg (a flame graph: width is
the share of samples, hover a frame for its name and share) and
OUT_PREFIX.top.txt (the functions with the most samples, inclusive and self),
and with --png the flame graph as OUT_PREFIX.png (matplotlib).
Standard library only, so it runs wherever perf does.
"""

import argparse
import html
import re
import sys
from collections import Counter, defaultdict

FRAME = re.compile(r"^\s*[0-9a-f]+\s+(.+?)\s+\((.*)\)\s*$")


def simplify(sym: str) -> str:
    sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
    sym = re.sub(r"::h[0-9a-f]{16}$", "", sym)
    return sym


def fold(lines):
    stacks = Counter()
    comm, frames = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if comm is not None and frames:
                stacks[";".join([comm] + frames[::-1])] += 1
            comm, frames = None, []
            continue
        if comm is None and not line.startswith((" ", "\t")):
            comm = line.split()[0]
            continue
        m = FRAME.match(line)
        if m:
            sym = m.group(1)
            if sym == "[unknown]":
                sym = f"[{m.group(2).rsplit('/', 1)[-1]}]"
            frames.append(simplify(sym))
    if comm is not None and frames:
        stacks[";".join([comm] + frames[::-1])] += 1
    return stacks


def tree(stacks):
    root = {"name": "all", "value": 0, "children": {}}
    for stack, n in stacks.items():
        root["value"] += n
        node = root
        for f in stack.split(";"):
            node = node["children"].setdefault(f, {"name": f, "value": 0, "children": {}})
            node["value"] += n
    return root


def color(name):
    h = sum(map(ord, name)) % 60
    if "kernel" in name or name.startswith(("[k", "__", "do_", "sys_", "tcp_", "ext4", "entry_")):
        return f"rgb({200 + h // 2},{120 + h},{60})"
    return f"rgb({225 + h // 3},{90 + h * 2},{40 + h // 2})"


def svg(root, title, width=1600, row=16):
    total = max(root["value"], 1)
    rects, depth_max = [], 0

    def walk(node, x, depth):
        nonlocal depth_max
        depth_max = max(depth_max, depth)
        w = node["value"] / total * width
        if w >= 0.3:
            rects.append((x, depth, w, node["name"], node["value"]))
        cx = x
        for child in sorted(node["children"].values(), key=lambda c: c["name"]):
            walk(child, cx, depth + 1)
            cx += child["value"] / total * width

    walk(root, 0.0, 0)
    height = (depth_max + 3) * row + 30
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="monospace" font-size="11">',
           f'<rect width="100%" height="100%" fill="#fdfdf6"/>',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">{html.escape(title)}</text>']
    for x, depth, w, name, value in rects:
        y = height - (depth + 1) * row - 4
        label = html.escape(name)
        pct = 100.0 * value / total
        out.append(f'<g><title>{label} ({value} samples, {pct:.2f}%)</title>'
                   f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{row - 1}" fill="{color(name)}" rx="1"/>')
        chars = int(w / 7)
        if chars >= 3:
            text = name if len(name) <= chars else name[: chars - 2] + ".."
            out.append(f'<text x="{x + 2:.2f}" y="{y + row - 4}">{html.escape(text)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def png(root, title, path, width=1600):
    """The same flame graph as a PNG (needs matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    total = max(root["value"], 1)
    rects = []

    def walk(node, x, depth):
        w = node["value"] / total
        if w * width >= 1:
            rects.append((x, depth, w, node["name"]))
        cx = x
        for child in sorted(node["children"].values(), key=lambda c: c["name"]):
            walk(child, cx, depth + 1)
            cx += child["value"] / total

    walk(root, 0.0, 0)
    depth = max(d for _, d, _, _ in rects) + 1
    fig, ax = plt.subplots(figsize=(width / 100, max(4, depth * 0.2)))
    for x, d, w, name in rects:
        ax.add_patch(plt.Rectangle((x, d), w, 0.95, facecolor=[c / 255 for c in map(int, color(name)[4:-1].split(","))],
                                   edgecolor="white", linewidth=0.3))
        chars = int(w * width / 6.5)
        if chars >= 4:
            ax.text(x + 0.001, d + 0.45, name if len(name) <= chars else name[: chars - 2] + "..", fontsize=6,
                    va="center", family="monospace", clip_on=True)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, depth)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def top(stacks, n=40):
    total = sum(stacks.values()) or 1
    incl, self_ = defaultdict(int), Counter()
    for stack, c in stacks.items():
        frames = stack.split(";")[1:]
        for f in set(frames):
            incl[f] += c
        if frames:
            self_[frames[-1]] += c
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"{100 * v / total:6.2f}%  {k}" for k, v in sorted(incl.items(), key=lambda kv: -kv[1])[:n]]
    lines += ["", "self:"]
    lines += [f"{100 * v / total:6.2f}%  {k}" for k, v in self_.most_common(n)]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_prefix")
    ap.add_argument("--title", default="flame graph")
    ap.add_argument("--png", action="store_true", help="also write OUT_PREFIX.png (needs matplotlib)")
    args = ap.parse_args()
    stacks = fold(sys.stdin)
    if not stacks:
        sys.exit("no stacks in the input (was perf recorded with -g or --call-graph?)")
    with open(args.out_prefix + ".folded", "w") as f:
        for stack, n in sorted(stacks.items()):
            f.write(f"{stack} {n}\n")
    with open(args.out_prefix + ".svg", "w") as f:
        f.write(svg(tree(stacks), args.title))
    with open(args.out_prefix + ".top.txt", "w") as f:
        f.write(top(stacks))
    if args.png:
        png(tree(stacks), args.title, args.out_prefix + ".png")


if __name__ == "__main__":
    main()
