#!/usr/bin/env python3
"""Renders the accuracy report from the raw `baatt eval` JSON files that bench/accuracy.sh writes:
bench/results/accuracy.json (every record), accuracy.md (tables, target check, reading) and the
accuracy_*.png plots. Run bench/accuracy.sh rather than this directly.

Needs numpy and matplotlib. The real set's token-level bounds (what a selection of single keys,
per query row, could recall at most) are computed here from bench/data/real with numpy.
"""
import argparse
import json
import os

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STD = ["baatt", "baatt_sort", "baatt_cov", "meanpool", "antidiag8", "antidiag16", "probe", "oracle",
       "oracle_unsorted"]
VAR = ["baatt_auto", "oracle_best"]
SYN = ["iid", "clustered", "needles", "rotary", "rotary_needle", "sinks", "mixture", "shift"]
ABOUT = {
    "baatt": "BA-Att as docs/ALGORITHM.md defines it: norm sort, covariance-corrected pooled logits, top-k",
    "baatt_sort": "ablation: norm sort, plain mean-pooled logits (lambda = 0)",
    "baatt_cov": "ablation: no sort, covariance-corrected logits",
    "meanpool": "mean pooling, no sort (SpargeAttn / FlexPrefill / PBS-style pooled estimate)",
    "antidiag8": "XAttention-style antidiagonal scoring, stride 8",
    "antidiag16": "XAttention-style antidiagonal scoring, stride 16",
    "probe": "last query block's exact attention -> vertical + slash scores (FlexPrefill / MInference-style)",
    "oracle": "top-k of the true pooled map Mhat on the norm-sorted blocking (BA-Att's ceiling)",
    "oracle_unsorted": "top-k of the true pooled map on the original order (ceiling of the unsorted methods)",
    "baatt_auto": "variant (option `--methods baatt_auto`): BA-Att choosing, per head and sparsity, the "
                  "sorted or the original blocking by the recall of 64 sampled exact rows",
    "oracle_best": "variant: per head, the better of oracle and oracle_unsorted (baatt_auto's ceiling)",
}
STYLE = {"baatt": ("C3", "-", 2.4), "baatt_sort": ("C1", "--", 1.2), "baatt_cov": ("C5", "--", 1.2),
         "meanpool": ("C0", "-", 1.6), "antidiag8": ("C2", "-.", 1.2), "antidiag16": ("C8", "-.", 1.2),
         "probe": ("C4", ":", 1.6), "oracle": ("k", "-", 1.0), "oracle_unsorted": ("0.5", "-", 1.0),
         "baatt_auto": ("C6", "-", 1.8), "oracle_best": ("k", ":", 1.0)}


# ---------------------------------------------------------------------------------------------
# Records.
# ---------------------------------------------------------------------------------------------
def load_all(tmp):
    groups = [("synthetic.json", ""), ("nojitter.json", "_nojitter"), ("real.json", "")]
    groups += [("real_layer%d.json" % l, "") for l in range(6)] + [("real_block32.json", "")]
    groups += [("length%d.json" % n, "_n%d" % n) for n in (1024, 4096, 16384)]
    recs = []
    for name, suffix in groups:
        for r in json.load(open(os.path.join(tmp, name))):
            r["workload"] += suffix
            recs.append(r)
    return recs


class Index:
    def __init__(self, recs):
        self.recs = recs
        self.by = {(r["workload"], r["method"], r["mode"], round(r["target"], 6)): r for r in recs}

    def get(self, w, m, s=0.5, mode="sparsity"):
        return self.by.get((w, m, mode, round(s, 6)))

    def val(self, w, m, s=0.5, key="mass_recall", mode="sparsity"):
        r = self.get(w, m, s, mode)
        return None if r is None else r[key]

    def curve(self, w, m, key="mass_recall"):
        rs = sorted((r for r in self.recs if r["workload"] == w and r["method"] == m and r["mode"] == "sparsity"),
                    key=lambda r: r["sparsity"])
        return [r["sparsity"] for r in rs], [r[key] for r in rs]

    def thresholds(self, w):
        return sorted({r["target"] for r in self.recs if r["workload"] == w and r["mode"] == "threshold"})


def fmt(x, nd=3):
    return "-" if x is None else ("%.*f" % (nd, x))


# ---------------------------------------------------------------------------------------------
# Token-level bounds on the real set (no blocking at all).
# ---------------------------------------------------------------------------------------------
def real_bounds(real, sparsities=(0.5, 0.75, 0.9)):
    """Per layer and overall: mean over query rows of the mass of the top (1 - s) N keys of the row
    (the best any key selection of that size can do), and of the top blocks chosen per row rather
    than per query block (original-order blocks of 64)."""
    q = np.load(os.path.join(real, "q.npy")).astype(np.float64)
    k = np.load(os.path.join(real, "k.npy")).astype(np.float64)
    heads, n, d = q.shape
    tok = np.zeros((heads, len(sparsities)))
    row = np.zeros((heads, len(sparsities)))
    local, cols, perp = np.zeros(heads), np.zeros(heads), np.zeros(heads)
    dist = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])
    for h in range(heads):
        s = q[h] @ k[h].T / np.sqrt(d)
        a = np.exp(s - s.max(1, keepdims=True))
        a /= a.sum(1, keepdims=True)
        local[h] = a[dist <= 2].sum() / n                       # mass within two tokens of the query
        cols[h] = np.sort(a.mean(0))[-5:].sum()                 # mass on the head's five busiest keys
        perp[h] = np.exp(-(a * np.log(a + 1e-300)).sum(1)).mean()  # attention perplexity (keys)
        srt = -np.sort(-a, 1)
        blocks = -np.sort(-a.reshape(n, n // 64, 64).sum(2), 1)
        for i, sp in enumerate(sparsities):
            tok[h, i] = srt[:, :int(round((1 - sp) * n))].sum(1).mean()
            row[h, i] = blocks[:, :max(1, int(round((1 - sp) * (n // 64))))].sum(1).mean()
    return {"token": tok, "row": row, "sparsities": sparsities, "local": local.mean(), "cols": cols.mean(),
            "perplexity": perp.mean(), "n": n}


# ---------------------------------------------------------------------------------------------
# Plots.
# ---------------------------------------------------------------------------------------------
def plot_grid(ix, workloads, titles, key, ylabel, path, methods):
    cols = 4 if len(workloads) > 3 else len(workloads)
    rows = (len(workloads) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, w, title in zip(axes.flat, workloads, titles):
        for m in methods:
            x, y = ix.curve(w, m, key)
            if not x or any(v is None for v in y):
                continue
            c, ls, lw = STYLE[m]
            ax.plot(x, y, color=c, ls=ls, lw=lw, label=m)
        for t in ix.thresholds(w):  # BA-Att's threshold mode at its achieved sparsity
            r = ix.get(w, "baatt", t, "threshold")
            if r and r[key] is not None:
                ax.plot([r["sparsity"]], [r[key]], marker="*", ms=10, color="C3", ls="none")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("sparsity")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if key == "rel_l1":
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(workloads):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=9, bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Markdown.
# ---------------------------------------------------------------------------------------------
def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def target_check(ix, workloads):
    rows, fails = [], []
    for w in workloads:
        b, o, mp = ix.val(w, "baatt"), ix.val(w, "oracle"), ix.val(w, "meanpool")
        a, ob = ix.val(w, "baatt_auto"), ix.val(w, "oracle_best")
        ok1, ok2 = o - b <= 0.03, b >= mp
        ok3 = "" if w != "real" else ("PASS" if b >= 0.95 else "FAIL")
        if not (ok1 and ok2) or ok3 == "FAIL":
            fails.append(w)
        rows.append([w, fmt(b), fmt(o), fmt(o - b), "PASS" if ok1 else "FAIL", fmt(mp), "PASS" if ok2 else "FAIL",
                     ok3 or "n/a", fmt(a), fmt(ob - a), "PASS" if ob - a <= 0.03 else "FAIL",
                     "PASS" if a >= mp else "FAIL"])
    hdr = ["workload", "baatt", "oracle (sorted)", "gap", "gap <= 0.03", "meanpool", "baatt >= meanpool",
           "real >= 0.95", "baatt_auto", "gap to oracle_best", "<= 0.03", "auto >= meanpool"]
    return table(hdr, rows), fails


def workload_table(ix, w, methods):
    sps = (0.5, 0.75, 0.9)
    hdr = ["method"]
    for s in sps:
        got = ix.get(w, "baatt", s)
        lab = "%d%%" % round(100 * s)
        if got and abs(got["sparsity"] - s) > 0.005:
            lab += " (achieved %.1f%%)" % (100 * got["sparsity"])
        hdr += ["recall " + lab, "rel L1 " + lab]
    rows = []
    for m in methods:
        row = [m]
        for s in sps:
            row += [fmt(ix.val(w, m, s)), fmt(ix.val(w, m, s, "rel_l1"))]
        rows.append(row)
    return table(hdr, rows)


def threshold_table(ix, workloads, theta):
    rows = []
    for w in workloads:
        r = ix.get(w, "baatt", theta, "threshold")
        if not r:
            continue
        x, y = ix.curve(w, "baatt")
        topk = float(np.interp(r["sparsity"], x, y)) if x[0] <= r["sparsity"] <= x[-1] else None
        row = [w, fmt(r["sparsity"]), fmt(r["mass_recall"]), fmt(topk), fmt(r["rel_l1"])]
        for m in ("oracle", "baatt_auto", "meanpool", "antidiag8", "probe"):
            row.append(fmt(ix.val(w, m, theta, mode="threshold")))
        rows.append(row)
    hdr = ["workload", "achieved sparsity", "baatt (threshold) recall", "baatt top-k, same sparsity (interp.)",
           "baatt rel L1", "oracle", "baatt_auto", "meanpool", "antidiag8", "probe"]
    return table(hdr, rows)


def length_table(ix):
    rows = []
    for w in ("mixture", "clustered"):
        for n in (1024, 4096, 16384):
            wn = "%s_n%d" % (w, n)
            row = [w, n]
            for s in (0.5, 0.9):
                row += [fmt(ix.val(wn, m, s)) for m in ("baatt", "oracle", "meanpool", "oracle_unsorted")]
            rows.append(row)
    hdr = ["workload", "N"] + ["%s @%d%%" % (m, p) for p in (50, 90) for m in ("baatt", "oracle", "meanpool",
                                                                             "oracle_unsorted")]
    return table(hdr, rows)


def real_layer_table(ix, bounds):
    rows = []
    ms = ["baatt", "baatt_sort", "baatt_cov", "meanpool", "antidiag8", "probe", "baatt_auto", "oracle",
          "oracle_unsorted"]
    for l in range(6):
        w = "real_layer%d" % l
        rows.append(["%d" % l] + [fmt(ix.val(w, m)) for m in ms] +
                    [fmt(bounds["row"][l * 12:(l + 1) * 12, 0].mean()), fmt(bounds["token"][l * 12:(l + 1) * 12, 0].mean())])
    rows.append(["all"] + [fmt(ix.val("real", m)) for m in ms] +
                [fmt(bounds["row"][:, 0].mean()), fmt(bounds["token"][:, 0].mean())])
    return table(["layer"] + ms + ["per-row blocks bound", "per-token bound"], rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--real", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", default="bash bench/accuracy.sh")
    ap.add_argument("--baatt", default="baatt")
    a = ap.parse_args()
    recs = load_all(a.tmp)
    ix = Index(recs)
    bounds = real_bounds(a.real)
    keys = ["workload", "method", "keep", "sparsity", "mass_recall", "rel_l1", "rel_l2", "cosine"]
    with open(os.path.join(a.out, "accuracy.json"), "w") as f:
        f.write("[\n" + ",\n".join(json.dumps({**{k: r[k] for k in keys}, **{k: v for k, v in r.items() if k not in keys}})
                                   for r in recs) + "\n]\n")
    methods = STD + VAR
    plot_grid(ix, SYN, SYN, "mass_recall", "mass recall", os.path.join(a.out, "accuracy_recall_synthetic.png"), methods)
    plot_grid(ix, [w + "_nojitter" for w in SYN], [w + " (no norm jitter)" for w in SYN], "mass_recall",
              "mass recall", os.path.join(a.out, "accuracy_recall_nojitter.png"), methods)
    plot_grid(ix, SYN, SYN, "rel_l1", "output relative L1", os.path.join(a.out, "accuracy_l1_synthetic.png"), methods)
    fig_real(ix, os.path.join(a.out, "accuracy_recall_real.png"), methods)
    md = render(ix, bounds, a)
    md_path = os.path.join(a.out, "accuracy.md")
    keep = ""  # the hand-written sections (issue 17, items 4 and 5) survive a regeneration
    old = open(md_path).read() if os.path.exists(md_path) else ""
    for title in KEPT_TITLES:
        at = old.find(title)
        if at >= 0:
            end = old.find("\n## ", at + len(title))
            keep += old[at:end if end >= 0 else len(old)].rstrip("\n") + "\n\n"
    if keep:
        at = md.find("## Plots")
        md = md[:at] + keep + md[at:] if at >= 0 else md.rstrip("\n") + "\n\n" + keep
    with open(md_path, "w") as f:
        f.write(md)
    import plot_accuracy_reuse  # noqa: E402 (bench/accuracy_reuse.sh's section survives a regeneration)
    plot_accuracy_reuse.splice_file(a.out)
    print("wrote %s/accuracy.md, accuracy.json (%d records) and 4 plots" % (a.out, len(recs)))


def fig_real(ix, path, methods):
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = [("real", "mass_recall", "real (MiniLM-L6, 512 tokens, block 64): mass recall"),
              ("real", "rel_l1", "real: output relative L1"),
              ("real_block32", "mass_recall", "real, block 32: mass recall")]
    for ax, (w, key, title) in zip(axes, panels):
        for m in methods:
            x, y = ix.curve(w, m, key)
            if x and all(v is not None for v in y):
                c, ls, lw = STYLE[m]
                ax.plot(x, y, color=c, ls=ls, lw=lw, label=m)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("sparsity")
        ax.grid(alpha=0.3)
        if key == "rel_l1":
            ax.set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=9)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(ix, bounds, a):
    check, fails = target_check(ix, SYN + ["real"])
    check_nj, fails_nj = target_check(ix, [w + "_nojitter" for w in SYN])
    parts = [HEAD.format(command=a.command)]
    parts.append("## Target check (issue 5, at 50% sparsity)\n\nBA-Att as specified (`baatt`) against the "
                 "oracle on the same sorted blocking and against mean pooling; then the per-head-blocking "
                 "variant `baatt_auto` against its own ceiling `oracle_best`.\n\n" + check +
                 "\n\nSame check with the token norm jitter of the synthetic workloads switched off "
                 "(`--jitter 0`):\n\n" + check_nj)
    parts.append(reading(ix, bounds, fails, fails_nj))  # noqa: F821 (defined below)
    parts.append("## Per-workload tables (mass recall and output relative L1)\n\nDefault workloads: N = 2048, "
                 "8 heads, head_dim 64, block 64, seed 1. Sparsity targets give every method the same number of "
                 "blocks per row (the mean is exact when it is fractional).")
    for w in SYN + ["real"]:
        parts.append("### %s\n\n%s" % (w, workload_table(ix, w, STD + VAR)))
    parts.append("### without norm jitter (`--jitter 0`): mass recall\n\n" + table(
        ["workload"] + ["%s @%d%%" % (m, p) for p in (50, 90) for m in ("baatt", "oracle", "meanpool",
                                                                        "oracle_unsorted", "baatt_auto")],
        [[w] + [fmt(ix.val(w + "_nojitter", m, s)) for s in (0.5, 0.9) for m in
                ("baatt", "oracle", "meanpool", "oracle_unsorted", "baatt_auto")] for w in SYN]))
    parts.append("## Threshold mode at matched sparsity\n\nBA-Att selects by block-map mass >= theta; every other "
                 "method then keeps, on average, as many blocks as BA-Att did over all heads. The fourth column "
                 "is BA-Att's own top-k rule at that sparsity (interpolated on its sparsity sweep): threshold vs "
                 "top-k, the selection rule itself.")
    for t in (0.9, 0.95):
        parts.append("### theta = %g\n\n%s" % (t, threshold_table(ix, SYN + ["real"], t)))
    parts.append("## Real attention per layer (50% sparsity)\n\nall-MiniLM-L6-v2 on 512 tokens of the GPL-3 text "
                 "(bench/make_real_qkv.py). The last two columns are upper bounds no block method can beat: the "
                 "best blocks chosen per query row instead of per query block, and the best single keys per row "
                 "(no blocks at all).\n\n" + real_layer_table(ix, bounds))
    parts.append("## Length (1K to 16K tokens, 2 heads, seed 2)\n\nThe `mixture` heads here are rotary and "
                 "clustered (heads 0 and 1 of the mixture). Output metrics are skipped above 4K (recall only).\n\n"
                 + length_table(ix))
    parts.append(GPU_NOTE)
    parts.append(PLOTS)
    parts.append("## Methods\n\n" + "\n".join("- `%s`: %s" % (m, ABOUT[m]) for m in STD + VAR))
    return "\n\n".join(parts) + "\n"


HEAD = """# Accuracy: block selection against the oracle and the published alternatives

Generated by `{command}` (about 2 minutes on 2 cores; every number is deterministic). Raw records:
[accuracy.json](accuracy.json) (`workload, method, keep, sparsity, mass_recall, rel_l1, rel_l2, cosine`, plus
`mode`/`target` and the sizes). Everything is measured on the CPU in fp64 against exact dense attention by
`baatt eval` (src/eval/eval.c): **mass recall** is the mean over query rows of the dense attention mass on the
selected keys, **rel L1/L2** and **cosine** compare the block-sparse output (ALGORITHM.md step 5, no mass
redistribution) with the dense one, **sparsity** is ALGORITHM.md's (1 - selected key tokens / (query blocks x N)).
BA-Att's selection is the library's own CPU reference (stages 1-4); `--gpu` takes it from the GPU plan
instead (on lavapipe it gave the same recall to six digits on three workloads). Synthetic workloads are in
`baatt eval --help` (src/eval/workloads.c); the real set is Q/K/V of all-MiniLM-L6-v2 (6 layers x 12 heads)
on 512 real tokens, captured by a numpy forward pass (bench/make_real_qkv.py) that matches transformers'
BertModel to 3e-15 relative on every layer's Q/K/V (its `--check`, run on the GPU machine)."""

GPU_NOTE = """## Longer on the GPU (one run, not regenerated by accuracy.sh)

`baatt eval --workload mixture --n 32768 --heads 8 --keep 0.5,0.25,0.1 --threshold 0.9 --gpu --no-outputs`
on the H100 machine (BA-Att's selection from the GPU plan, the dense reference on its 16 CPU cores, 88 s):
at 50% sparsity BA-Att recalled 0.888 (oracle 0.889, baatt_auto 0.890, oracle_unsorted 0.835, probe 0.766,
antidiag8 0.742, mean pooling 0.722); at 75% 0.796 (oracle 0.798, mean pooling 0.514); at 90% 0.697
(oracle 0.702, mean pooling 0.347). Threshold 0.9 reached 55% sparsity with recall 0.773, where BA-Att's
top-k at the same budget (baatt_auto, which sorted every head here) recalled 0.873: the same
miscalibration as at 2K."""

STUDY_TITLE = "## Selection on real attention"
DEFAULTS_TITLE = "## Defaults"  # bench/accuracy_defaults.sh
KEPT_TITLES = (DEFAULTS_TITLE, STUDY_TITLE)
PLOTS = """## Plots

Recall against sparsity per method (stars: BA-Att in threshold mode at theta = 0.8, 0.9, 0.95):

![synthetic](accuracy_recall_synthetic.png)

Without the token norm jitter:

![no jitter](accuracy_recall_nojitter.png)

Real attention (MiniLM-L6-v2):

![real](accuracy_recall_real.png)

Output relative L1 (log scale):

![rel L1](accuracy_l1_synthetic.png)"""

def reading(ix, bounds, fails, fails_nj):
    v = lambda w, m, s=0.5: ix.val(w, m, s)  # noqa: E731
    gap = max(v(w, "oracle") - v(w, "baatt") for w in SYN)
    wins = {w: v(w, "baatt") - v(w, "meanpool") for w in SYN}
    nj = {w: v(w + "_nojitter", "baatt") - v(w + "_nojitter", "meanpool") for w in SYN}
    lost_nj = [w for w in SYN if nj[w] < 0]
    rl = lambda m, s=0.5: v("real", m, s)  # noqa: E731
    layers_lost = sum(v("real_layer%d" % l, "baatt") < v("real_layer%d" % l, "meanpool") for l in range(6))
    tok50, row50 = bounds["token"][:, 0].mean(), bounds["row"][:, 0].mean()
    thr = ix.get("real", "baatt", 0.9, "threshold")
    out = ["## Reading"]
    out.append(
        "**Where BA-Att wins.** On every synthetic workload with the default token norm jitter, BA-Att as "
        "specified lands within %.3f of the oracle on its own sorted blocking at 50%% sparsity, and far above "
        "every positional or unsorted method where attention follows content: clustered %+.2f, needles %+.2f, "
        "mixture %+.2f, rotary %+.2f recall over mean pooling. The ablations reproduce the numpy prototype's "
        "story: on needles neither part alone is enough (sort only %.3f, covariance only %.3f, both %.3f), and "
        "sorting raises the ceiling itself (oracle %.3f sorted vs %.3f unsorted on needles). The gap to the "
        "oracle stays under 0.01 from 1K to 16K tokens (length table), and the lead grows with sparsity: at 90%% "
        "BA-Att keeps %.2f-%.2f of the mass on the structured workloads where mean pooling keeps %.2f-%.2f."
        % (gap, wins["clustered"], wins["needles"], wins["mixture"], wins["rotary"], v("needles", "baatt_sort"),
           v("needles", "baatt_cov"), v("needles", "baatt"), v("needles", "oracle"), v("needles", "oracle_unsorted"),
           min(v(w, "baatt", 0.9) for w in SYN[1:]), max(v(w, "baatt", 0.9) for w in SYN[1:]),
           min(v(w, "meanpool", 0.9) for w in SYN[1:]), max(v(w, "meanpool", 0.9) for w in SYN[1:])))
    out.append(
        "**Where it loses, and why.** The sorted blocking only pays when token norms predict attention. The "
        "default workloads give every token a norm jitter exp(0.25 z), and that alone makes high-norm keys "
        "collect most of the mass, which is exactly what norm sorting groups. Switch the jitter off and BA-Att "
        "falls below mean pooling on %s (rotary: %.3f vs %.3f): the norm order scatters the positional (slash) "
        "structure over all blocks, and the sorted oracle drops with it (%.3f vs %.3f unsorted), so no scorer "
        "on that blocking can recover it. On `shift` (segments with their own statistics) BA-Att is %.3f "
        "against mean pooling's %.3f even with jitter at 50%%, though it wins at 75%% and 90%%."
        % (", ".join(lost_nj), v("rotary_nojitter", "baatt"), v("rotary_nojitter", "meanpool"),
           v("rotary_nojitter", "oracle"), v("rotary_nojitter", "oracle_unsorted"), v("shift", "baatt"),
           v("shift", "meanpool")))
    out.append(
        "**Real attention is where it matters, and there norm sorting is wrong.** On all-MiniLM-L6-v2 BA-Att "
        "recalls %.3f at 50%% sparsity against %.3f for mean pooling and %.3f for XAttention-style antidiagonal "
        "scoring (output rel L1 %.3f vs %.3f); it is below mean pooling in %d of 6 layers. The cause is the "
        "blocking, not the estimate: the oracle on the norm-sorted blocking reaches only %.3f while the oracle "
        "on the original order reaches %.3f. Much of MiniLM's attention is positional: on average %.0f%% of a "
        "row's mass lies within two tokens of the query and %.0f%% on the five most-attended keys of the head, "
        "and sorting by norm scatters both over all blocks. A one-off numpy "
        "check of other sort keys on the same heads (not kept in the tool) put the sorted-blocking oracle at "
        "0.767 for keys sorted by their logit against the mean query, 0.762 for the first principal "
        "component and 0.766 for norm sorting inside windows of 256 tokens: none beats keeping the original "
        "order (%.3f)."
        % (rl("baatt"), rl("meanpool"), rl("antidiag8"), ix.val("real", "baatt", 0.5, "rel_l1"),
           ix.val("real", "meanpool", 0.5, "rel_l1"), layers_lost, rl("oracle"), rl("oracle_unsorted"),
           100 * bounds["local"], 100 * bounds["cols"], rl("oracle_unsorted")))
    out.append(
        "**The better variant (`--methods baatt_auto`).** Sorting cannot be dropped either: it is what wins on "
        "content-addressed heads. `baatt_auto` computes the corrected block logits on both blockings and keeps, "
        "per head and per sparsity, the one whose selection recalls more of 64 evenly spaced query rows of exact "
        "attention (about 64/N of the dense work per head, plus a second estimate). It matches BA-Att wherever "
        "sorting wins, matches the unsorted estimate where it does not, is never below mean pooling at 50%% on "
        "any workload here (real: %.3f vs %.3f; rotary without jitter: %.3f vs %.3f), and beats both fixed "
        "blockings on mixed heads (mixture without jitter: %.3f vs %.3f sorted, %.3f unsorted). It sorted %.0f%% "
        "of the real heads at 50%%. Choosing from the estimated maps alone does not work: a sorted blocking's "
        "estimate looks more concentrated than its true map, and that rule kept sorting on real heads where it "
        "loses. The library's GPU plan makes the same choice with `norm_sort = BAATT_SORT_AUTO` "
        "(`baatt attention --sort auto`): the same 64 sampled rows, decided per kv head (the query heads of "
        "a GQA group decide together; ties keep sorting); on the H100 it adds about 3 ms at 32K x 32 heads "
        "(bench/NOTES.md)."
        % (rl("baatt_auto"), rl("meanpool"), v("rotary_nojitter", "baatt_auto"), v("rotary_nojitter", "meanpool"),
           v("mixture_nojitter", "baatt_auto"), v("mixture_nojitter", "baatt"), v("mixture_nojitter", "baatt_cov"),
           100 * ix.get("real", "baatt_auto")["sorted_heads"]))
    out.append(
        "**The real-set target (>= 0.95 at 50%%) cannot be met by any method on this data.** Choosing the best "
        "half of the keys for every query row separately, with no blocks at all, recalls %.3f on average; the "
        "best half of the blocks per row recalls %.3f, and the oracle per query block %.3f. Short-context "
        "attention of this small encoder is diffuse (mean attention perplexity %.0f of %d keys). Block 32 "
        "instead of 64 changes recall at 50%% by %+.3f to %+.3f across the methods (real_block32 in "
        "accuracy.json). The target belongs to long contexts, which no bidirectional model reachable offline "
        "here provides (MiniLM stops at 512 positions)."
        % (tok50, row50, rl("oracle_unsorted"), bounds["perplexity"], bounds["n"],
           min(v("real_block32", m) - rl(m) for m in STD), max(v("real_block32", m) - rl(m) for m in STD)))
    out.append(
        "**Covariance correction (ALGORITHM.md step 3).** It is the right form where blocks mix tokens of different "
        "spread: without sorting it lifts clustered from %.3f to %.3f and mixture from %.3f to %.3f. On real "
        "attention it costs a little (%.4f vs mean pooling's %.4f at 50%%). A one-off sweep of lambda (0.25, "
        "0.5, 1.5, not kept in the tool) found no value better across the board: 0.5 or 1.5 win on some "
        "workloads by up to 0.02 and lose on others, and lambda moves the real set by less than 0.01. The form "
        "stays as specified."
        % (v("clustered", "meanpool"), v("clustered", "baatt_cov"), v("mixture", "meanpool"),
           v("mixture", "baatt_cov"), rl("baatt_cov"), rl("meanpool")))
    out.append(
        "**Selection rule (ALGORITHM.md step 4).** The mass-threshold rule spends blocks where the estimated map is "
        "flat; that helps when the estimate is calibrated (needles, sinks: the threshold beats even the "
        "fixed-budget oracle at the same sparsity, because it moves budget between rows) and hurts when it is "
        "not: on rotary and mixture it recalls less than BA-Att's own top-k at the same sparsity, and on the real "
        "set theta = 0.9 keeps %.0f%% of the blocks for a recall of %.3f where mean pooling at the same budget "
        "recalls %.3f. Top-k stays the better default; theta is not a calibrated recall target."
        % (100 * (1 - thr["sparsity"]), thr["mass_recall"], ix.val("real", "meanpool", 0.9, mode="threshold")))
    comp = ("**The published alternatives.** Antidiagonal scoring is the best unsorted estimator on real "
            "attention (%.3f at 50%%, stride 8 slightly ahead of 16); the last-block probe "
            "is strong on sinks/stripes (%.3f) and weak wherever the last block's view does not generalise "
            "(clustered %.3f, shift %.3f). Neither sees content scattered over positions, which is the case BA-Att "
            "was built for."
            % (rl("antidiag8"), v("sinks", "probe"), v("clustered", "probe"), v("shift", "probe")))
    out.append(comp)
    out.append("**Target summary.** Default workloads: %s. Without jitter: %s. Output relative L1 is reported for "
               "every method and target in the tables and in accuracy.json."
               % ("fails on " + ", ".join(fails) if fails else "all pass",
                  "fails on " + ", ".join(fails_nj) if fails_nj else "all pass"))
    return "\n\n".join(out)


if __name__ == "__main__":
    main()
