#!/usr/bin/env python3
"""TFLOP/s of each attention path (kernel) against FLASH, from one device call's outputs.

  bench/paths.py --bench khr.json portable.json --fa flash.json --out-md paths.md \
                 --out-json paths.json [--out-png paths.png] [--title T] [--command CMD]

Inputs: `baatt bench --json` records (each names its "kernel") and fa_baseline.py records. A
baatt record is matched to the FLASH record of the same N, heads, head_dim and dtype. Output: the
merged records (each baatt record gains "vs_flash": FLASH's time over its own, and "vs_dense":
its time over the same kernel's dense time times the keep ratio, 1.0 = work-proportional), a
Markdown table, and a plot of dense TFLOP/s per kernel (matplotlib, skipped when missing).
"""
import argparse
import json


def load(paths):
    out = []
    for p in paths:
        try:
            with open(p) as f:
                out += json.load(f)
        except (OSError, ValueError) as e:  # e.g. no FLASH run: the table goes without it
            print(f"paths.py: {p}: {e}")
    return out


def key(r):
    return (r["n"], r["heads"], r["head_dim"], r["dtype"])


def merge(bench, fa):
    flash = {key(r): r for r in fa if r.get("method") == "flash" and r.get("ms")}
    dense = {(r["kernel"],) + key(r): r for r in bench if r["method"] == "baatt_dense" and r.get("ms")}
    for r in bench:
        f = flash.get(key(r))
        r["vs_flash"] = round(f["ms"] / r["ms"], 4) if f and r.get("ms") else None
        d = dense.get((r["kernel"],) + key(r))
        keep = r.get("keep")
        r["vs_dense"] = round(r["ms"] / (d["ms"] * keep), 4) if d and keep and r.get("ms") else None
    return bench, flash


def table(bench, flash):
    rows = ["| kernel | N | keep | ms | TFLOP/s (dense-equivalent) | vs FLASH | time / (keep x dense) |",
            "|---|---|---|---|---|---|---|"]
    for k in sorted(flash):
        f = flash[k]
        rows.append(f"| FLASH (torch SDPA) | {f['n']} | dense | {f['ms']:.2f} | {f['tflops']:.1f} | 1.00 | |")
    for r in sorted(bench, key=lambda r: (r["kernel"], r["n"], -(r.get("keep") or 1.0))):
        keep = "dense" if r["method"] == "baatt_dense" else f"{r['keep']:g}"
        vs = f"{r['vs_flash']:.2f}" if r.get("vs_flash") else ""
        prop = f"{r['vs_dense']:.2f}" if r.get("vs_dense") else ""
        rows.append(f"| {r['kernel']} | {r['n']} | {keep} | {r['ms']:.2f} | {r['tflops']:.1f} | {vs} | {prop} |")
    return "\n".join(rows)


def plot(bench, flash, path, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    kernels = sorted({r["kernel"] for r in bench if r["method"] == "baatt_dense"})
    ns = sorted({r["n"] for r in bench if r["method"] == "baatt_dense"})
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / (len(kernels) + 1)
    series = [("FLASH", {k[0]: v["tflops"] for k, v in flash.items()})]
    series += [(k, {r["n"]: r["tflops"] for r in bench if r["kernel"] == k and r["method"] == "baatt_dense"})
               for k in kernels]
    for i, (name, vals) in enumerate(series):
        ax.bar([j + i * width for j in range(len(ns))], [vals.get(n, 0) for n in ns], width, label=name)
    ax.set_xticks([j + width * len(kernels) / 2 for j in range(len(ns))], [str(n) for n in ns])
    ax.set_xlabel("N (tokens)")
    ax.set_ylabel("dense TFLOP/s")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", nargs="+", required=True)
    ap.add_argument("--fa", nargs="+", required=True)
    ap.add_argument("--out-md", required=True)
    ap.add_argument("--out-json", required=True)
    ap.add_argument("--out-png")
    ap.add_argument("--title", help="default: the records' shape")
    ap.add_argument("--command", default="")
    a = ap.parse_args()
    bench, flash = merge(load(a.bench), load(a.fa))
    if not bench:
        raise SystemExit("paths.py: no baatt bench records")
    r0 = bench[0]
    a.title = a.title or f"attention kernels, {r0['dtype']}, {r0['heads']} heads, head_dim {r0['head_dim']}"
    dev = next((r.get("device") for r in bench if r.get("device")), "?")
    drv = next((r.get("driver") for r in bench if r.get("driver")), "?")
    md = [f"# {a.title}", "", f"Device: {dev}, driver {drv}. Command: `{a.command}`.", "", table(bench, flash), ""]
    if a.out_png and not plot(bench, flash, a.out_png, a.title):
        md.append("(no plot: matplotlib is missing)")
    with open(a.out_md, "w") as f:
        f.write("\n".join(md) + "\n")
    with open(a.out_json, "w") as f:
        json.dump(bench + list(flash.values()), f, indent=1)


if __name__ == "__main__":
    main()
