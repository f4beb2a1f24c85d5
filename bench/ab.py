#!/usr/bin/env python3
"""Tables from run_gpu.sh's opt-in `ab` and `defaults` steps (raw JSON of `baatt bench`).

  ab:       ab_<build>_<round>.json for a base build and this one, alternating rounds; per
            configuration the best of each build's mean times over the rounds, and new/base.
  defaults: defaults_<sort>_<covariance>_b<block>.json; per N and keep, the time and stages of
            every (sort, covariance, block), and its time over norm sort, lambda 1, same block.
Standard library only.
"""
import argparse
import glob
import json
import os
import re
from collections import defaultdict


def load(path):
    with open(path) as f:
        return json.load(f)


def key(r):
    return (r["dtype"], r["n"], r["method"], r.get("keep"))


def ab_table(raw, base, new):
    best = defaultdict(dict)  # config -> build -> best mean ms over rounds
    for path in glob.glob(os.path.join(raw, "ab_*_*.json")):
        m = re.match(r"ab_(.+)_(\d+)\.json$", os.path.basename(path))
        for r in load(path):
            b = best[key(r)]
            b[m.group(1)] = min(b.get(m.group(1), float("inf")), r["ms"])
    lines = [f"| dtype | N | method | keep | {base} ms | {new} ms | {new}/{base} |", "|---|---|---|---|---|---|---|"]
    for k in sorted(best, key=lambda k: (k[0], k[1], k[2], -(k[3] or 1))):
        b = best[k]
        if base in b and new in b:
            lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3] if k[3] is not None else ''} | "
                         f"{b[base]:.3f} | {b[new]:.3f} | {b[new] / b[base]:.3f} |")
    return "\n".join(lines)


def defaults_table(raw):
    rec = {}
    for path in glob.glob(os.path.join(raw, "defaults_*_*_b*.json")):
        m = re.match(r"defaults_([a-z]+)_([a-z]+)_b(\d+)\.json$", os.path.basename(path))
        for r in load(path):
            rec[(r["n"], r["keep"], m.group(1), m.group(2), int(m.group(3)))] = r
    lines = ["| N | keep | sort | covariance | block | ms | sort+stats+score+select ms | attend ms | vs norm, on, same block |",
             "|---|---|---|---|---|---|---|---|---|"]
    for k in sorted(rec, key=lambda k: (k[0], -k[1], k[4], k[2] != "norm", k[3] != "on")):
        r, st = rec[k], rec[k]["stages_ms"]
        est = sum(st[s] for s in ("sort", "stats", "score", "select"))
        norm = rec.get((k[0], k[1], "norm", "on", k[4]))
        rel = f"{r['ms'] / norm['ms']:.3f}" if norm else ""
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[4]} | {r['ms']:.3f} | {est:.3f} | {st['attend']:.3f} | {rel} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("raw", help="the unpacked raw folder (NAME_raw.tar.gz)")
    ap.add_argument("--base", default="build_base", help="the base build's directory name")
    ap.add_argument("--new", default="build", help="this build's directory name")
    a = ap.parse_args()
    if glob.glob(os.path.join(a.raw, "ab_*.json")):
        print(ab_table(a.raw, a.base, a.new), end="\n\n")
    if glob.glob(os.path.join(a.raw, "defaults_*.json")):
        print(defaults_table(a.raw))


if __name__ == "__main__":
    main()
