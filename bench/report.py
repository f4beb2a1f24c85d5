#!/usr/bin/env python3
"""Merges the raw outputs of bench/run_gpu.sh into one report.

  bench/report.py --bench bench.json --fa fa.json [--check check.json] [--smi smi.txt]
                  [--info info.txt] [--steps steps.tsv] [--tests tests.txt] [--commit C]
                  [--command CMD] --out-md h100.md --out-json h100.json [--out-png speedup.png]

Inputs: `baatt bench --json` records (method "baatt" / "baatt_dense") and fa_baseline.py records
("flash" / "cudnn" / "flex"), all {"n", "heads", "head_dim", "dtype", "method", "keep", "ms", ...}.
Outputs: the merged list (each record gains "speedup_vs_flash" and "speedup_vs_cudnn": the
baseline's median time over this one's, above 1 = faster), a Markdown report, and a plot of the
speed-up over FLASH against N per keep ratio. Standard library only; the plot needs matplotlib
and is skipped (with a note in the report) when it is missing.
"""
import argparse
import datetime
import json
import math
import os
import sys

STAGES = ("sort", "stats", "score", "select", "attend")
METHOD_ORDER = {"flash": 0, "cudnn": 1, "baatt_dense": 2, "baatt": 3, "flex": 4}


def load_json(path, what, notes):
    if not path:
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        notes.append(f"{what} ({path}) could not be read: {e}")
        return None


def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, TypeError):
        return ""


def num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def shape_key(r):
    return (r.get("dtype"), r.get("heads"), r.get("kv_heads") or r.get("heads"), r.get("head_dim"))


def add_ratios(records):
    """speedup_vs_flash / _cudnn on every record with a time, from the same shape's baseline."""
    base = {}
    for r in records:
        if r.get("method") in ("flash", "cudnn") and num(r.get("ms")):
            base[(r["method"],) + shape_key(r) + (r["n"],)] = r["ms"]
    for r in records:
        for m in ("flash", "cudnn"):
            t = base.get((m,) + shape_key(r) + (r.get("n"),))
            r[f"speedup_vs_{m}"] = t / r["ms"] if t and num(r.get("ms")) and r["ms"] > 0 else None
    return records


def sort_key(r):
    keep = r.get("keep")
    return (r.get("n") or 0, METHOD_ORDER.get(r.get("method"), 9), -(keep if num(keep) else 2))


def fmt(x, spec, none="-"):
    return format(x, spec) if num(x) else none


def method_label(r):
    m = r.get("method")
    if m == "baatt":
        return f"BA-Att keep={r.get('keep')}"
    if m == "baatt_dense":
        return "baatt dense"
    if m == "flex":
        return f"flex keep={r.get('keep')} (B{r.get('block_size', '?')})"
    return m.upper() if m in ("flash", "cudnn") else str(m)


def useful_tflops(r):
    if num(r.get("tflops_useful")):
        return r["tflops_useful"]
    if num(r.get("tflops")):
        return r["tflops"] * (1 - r["sparsity"]) if num(r.get("sparsity")) else r["tflops"]
    return None


def result_row(r):
    if not num(r.get("ms")):
        return f"| {r.get('n')} | {method_label(r)} | failed: {str(r.get('error', 'no time'))[:160]} |" + " |" * 7
    st = r.get("stages_ms") or {}
    stages = " / ".join(fmt(st.get(s), ".3f") for s in stage_names([r])) if r.get("method") == "baatt" else ""
    return "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
        r["n"], method_label(r), fmt(r.get("sparsity"), ".3f"), fmt(r["ms"], ".3f"), fmt(r.get("min_ms"), ".3f"),
        fmt(r.get("tflops"), ".1f"), fmt(useful_tflops(r), ".1f"), fmt(r.get("speedup_vs_flash"), ".2f"),
        fmt(r.get("speedup_vs_cudnn"), ".2f"), stages)


def stage_names(records):
    """The stage names of the first BA-Att record that has them (the library's order), else STAGES."""
    st = next((r["stages_ms"] for r in records if r.get("method") == "baatt" and isinstance(r.get("stages_ms"), dict)),
              None)
    return list(st) if st else list(STAGES)


def results_tables(records):
    out = []
    for key in sorted({shape_key(r) for r in records}, key=str):
        dt, h, hkv, d = key
        rows = sorted((r for r in records if shape_key(r) == key), key=sort_key)
        out += [f"### {dt}, batch 1, {h} heads (kv {hkv}), head_dim {d}", "",
                "| N | method | sparsity | median ms | min ms | TFLOP/s (dense-eq.) | useful TFLOP/s | "
                f"vs FLASH | vs CUDNN | stages ms ({' / '.join(stage_names(rows))}) |",
                "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        out += [result_row(r) for r in rows] + [""]
    return out


def summary_columns(records):
    cols = []
    for m in ("baatt", "flex"):
        keeps = sorted({r["keep"] for r in records if r.get("method") == m and num(r.get("keep"))}, reverse=True)
        cols += [(m, k) for k in keeps]
    return cols + [("baatt_dense", None), ("cudnn", None)]


def summary_table(records):
    """Speed-up over FLASH, N down, method across: the headline, printed last by run_gpu.sh."""
    lines = []
    for key in sorted({shape_key(r) for r in records}, key=str):
        rs = [r for r in records if shape_key(r) == key]
        cols = summary_columns(rs)
        lines += [f"speed-up over FLASH ({key[0]}, H={key[1]}, d={key[3]}): FLASH time / method time",
                  "| N | FLASH ms | " + " | ".join(method_label({"method": m, "keep": k, "block_size": 64})
                                                    .replace(" (B64)", "") for m, k in cols) + " |",
                  "|---:|---:|" + "---:|" * len(cols)]
        for n in sorted({r["n"] for r in rs}):
            flash = next((r["ms"] for r in rs if r["n"] == n and r["method"] == "flash" and num(r.get("ms"))), None)
            cells = []
            for m, k in cols:
                r = next((r for r in rs if r["n"] == n and r["method"] == m and r.get("keep") == k), None)
                cells.append(fmt(r.get("speedup_vs_flash") if r else None, ".2f") + ("x" if r and num(
                    r.get("speedup_vs_flash")) else ""))
            lines.append(f"| {n} | {fmt(flash, '.3f')} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def plot(records, path, notes):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError as e:
        notes.append(f"no plot: matplotlib is not importable ({e})")
        return False
    keys = sorted({shape_key(r) for r in records}, key=str)
    fig, axes = plt.subplots(1, len(keys), figsize=(7 * len(keys), 5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        rs = [r for r in records if shape_key(r) == key and num(r.get("speedup_vs_flash"))]
        cols = summary_columns(rs)
        colors = {}
        for m, k in cols:
            pts = sorted((r["n"], r["speedup_vs_flash"]) for r in rs if r["method"] == m and r.get("keep") == k)
            if not pts:
                continue
            if m in ("baatt", "flex"):
                color = colors.setdefault(k, f"C{len(colors)}")
                style = dict(color=color, marker="o" if m == "baatt" else "s", linestyle="-" if m == "baatt" else "--")
                label = f"BA-Att keep={k}" if m == "baatt" else f"flex keep={k} (same masks)"
            elif m == "baatt_dense":
                style, label = dict(color="black", marker="^", linestyle="-"), "baatt dense"
            else:
                style, label = dict(color="gray", marker="x", linestyle=":"), "cuDNN dense"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **style)
        ax.axhline(1.0, color="red", linewidth=0.8, label="FLASH (FA2 in torch)")
        ns = sorted({r["n"] for r in rs})
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        if ns:
            ax.set_xticks(ns, [str(n) for n in ns])
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.set_xlabel("sequence length N")
        ax.set_ylabel("speed-up over FLASH (FLASH ms / method ms)")
        ax.set_title(f"{key[0]}, B=1, H={key[1]}, d={key[3]}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def steps_lines(path):
    text = read_text(path)
    if not text:
        return []
    out = ["| step | exit status | seconds | note |", "|---|---:|---:|---|"]
    for line in text.splitlines():
        f = (line.split("\t") + ["", "", "", ""])[:4]
        flag = "" if f[1] == "0" else " **FAILED**" if f[1] not in ("", "skipped") else ""
        out.append(f"| {f[0]} | {f[1]}{flag} | {f[2]} | {f[3]} |")
    return out + [""]


def check_lines(check):
    if not check:
        return ["- check of baatt against torch: not run or no result"]
    out = [f"- check of baatt against torch (bench/fa_baseline.py --check-baatt): "
           f"**{'PASS' if check.get('pass') else 'FAIL'}**"]
    for c in check.get("cases", []):
        if "error" in c:
            out.append(f"  - H{c.get('heads')} KV{c.get('kv_heads')}: error: {c['error']}")
            continue
        parts = [f"{x['name']}: rel L2 {x['rel_l2']:.2e}, max/max|ref| {x['max_rel']:.2e}"
                 for x in c.get("checks", []) if "rel_l2" in x]
        out.append(f"  - B1 H{c['heads']} KV{c['kv_heads']} N{c['n']} d{c['head_dim']} {c['dtype']} keep {c['keep']}"
                   f" (sparsity {c.get('baatt_sparsity')}): " + "; ".join(parts))
    return out


def header(args, records, check, notes):
    smi = read_text(args.smi) or "unknown (no nvidia-smi output)"
    info = read_text(args.info)
    vk = next((ln.strip() for ln in info.splitlines() if "*" in ln or "picked" in ln.lower()), "")
    torch_env = next((r.get("driver") for r in records if r.get("method") in ("flash", "cudnn", "flex")), "")
    vk_dev = next((f"{r['device']} ({r.get('driver', '')})" for r in records
                   if str(r.get("method", "")).startswith("baatt") and r.get("device")), "")
    out = [f"# {args.title}", "",
           f"- card (nvidia-smi: name, driver, memory, max SM clock): {smi}",
           f"- Vulkan device used by baatt: {vk_dev or vk or 'unknown'}",
           f"- torch: {torch_env or 'unknown'}",
           f"- commit: {args.commit or 'unknown'}",
           f"- command: `{args.command or 'unknown'}`",
           f"- date: {args.date or datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"]
    tests = read_text(args.tests)
    if tests:
        out.append("- GPU tests:")
        out += [f"  - {ln}" for ln in tests.splitlines()]
    out += check_lines(check)
    out += [f"- note: {n}" for n in notes]
    return out + [""]


DEFINITIONS = [
    "## How to read this", "",
    "- ms: median GPU time over the repetitions (min beside it). baatt: the plan's own Vulkan timestamps around "
    "all stages, one recorded command buffer per repetition; torch: CUDA events around each call. Inputs rotate "
    "between several sets so the L2 cache does not flatter small sizes.",
    "- TFLOP/s (dense-eq.) = 4 N^2 d H / time, for every method; useful TFLOP/s multiplies by (1 - sparsity), the "
    "work actually needed for the kept blocks.",
    "- vs FLASH / vs CUDNN = baseline median ms / this method's median ms: above 1 is faster than the baseline.",
    "- BA-Att times include every stage (norm sort, block statistics, scoring, selection, sparse attention); "
    "stages are medians of each stage on its own, so they need not add up to the total exactly.",
    "- flex: torch.compile'd flex_attention with a BlockMask made from the selection baatt exported for the first "
    "input set at the same N and keep ratio; its inputs are taken as already sorted, so the permutation (and "
    "baatt's estimation stages) are not in its time. B64 = baatt's 64x64 blocks, B128 = the mask OR-ed to 128x128 "
    "(fallback when flex rejected 64), or baatt's own blocks in a run with 128-token blocks (BENCH_BLOCK=128).",
    "",
]


def default_title(args, records):
    card = read_text(args.smi).split(",")[0].strip()
    if not card or "not found" in card:
        card = next((r["device"] for r in records if str(r.get("method", "")).startswith("baatt") and r.get("device")),
                    "an unknown device")
    blocks = sorted({r["block"] for r in records if r.get("method") == "baatt" and r.get("block")})
    return f"BA-Att on {card}: benchmark" + (f" ({', '.join(map(str, blocks))}-token blocks)" if blocks != [64] and blocks
                                              else "")


def write_md(args, records, check, notes, summary, plotted):
    args.title = args.title or default_title(args, records)
    md = header(args, records, check, notes)
    md += ["## Run steps", ""] + steps_lines(args.steps)
    md += ["## Speed-up over FLASH", ""] + summary
    if plotted or args.out_png:
        md += [f"![speed-up over FLASH]({os.path.basename(args.out_png)})", ""]
    md += DEFINITIONS + ["## All results", ""] + (results_tables(records) or ["(no records)"])
    with open(args.out_md, "w") as f:
        f.write("\n".join(md) + "\n")


def main():
    ap = argparse.ArgumentParser(description="merge bench/run_gpu.sh outputs into a report")
    ap.add_argument("--bench")
    ap.add_argument("--fa")
    ap.add_argument("--check")
    ap.add_argument("--smi")
    ap.add_argument("--info")
    ap.add_argument("--steps")
    ap.add_argument("--tests")
    ap.add_argument("--commit")
    ap.add_argument("--command")
    ap.add_argument("--date")
    ap.add_argument("--records", help="an already merged list (e.g. h100.json), e.g. to plot it elsewhere")
    ap.add_argument("--title", help="default: from the nvidia-smi line")
    ap.add_argument("--out-md")
    ap.add_argument("--out-json")
    ap.add_argument("--out-png")
    args = ap.parse_args()
    notes = []
    records = []
    for path, what in ((args.records, "records JSON"), (args.bench, "baatt bench JSON"), (args.fa, "fa_baseline JSON")):
        data = load_json(path, what, notes)
        if isinstance(data, list):
            records += [r for r in data if isinstance(r, dict)]
        elif path and data is not None:
            notes.append(f"{what} ({path}) is not a list")
    records = add_ratios(records)
    check = load_json(args.check, "check JSON", notes)
    if args.out_json:
        with open(args.out_json, "w") as f:
            json.dump(records, f, indent=1)
            f.write("\n")
    plotted = bool(args.out_png) and bool(records) and plot(records, args.out_png, notes)
    if args.out_png and not plotted:
        notes.append("make the plot where matplotlib is installed: python3 bench/report.py --records h100.json "
                     "--out-png speedup.png")
    summary = summary_table(records)
    if args.out_md:
        write_md(args, records, check, notes, summary, plotted)
    print("\n".join(summary) if records else "report: no records")
    for n in notes:
        print(f"report: note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
