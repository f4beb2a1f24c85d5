#!/usr/bin/env python3
"""End-to-end check of the baatt Python package against torch: bench/fa_baseline.py's
--check-baatt, through baatt.attention on torch tensors instead of the CLI and .npy files, so bf16
is covered too.

For each dtype and head layout (MHA, and GQA with half the kv heads): dense baatt against a float64
reference and against torch SDPA, the selection's sanity (permutations, blocks per row), and
BA-Att against a float64 attention restricted to baatt's own selection. Tensors live on --device
(default cuda where present); on CUDA baatt keeps them on the GPU (baatt.cuda: shared Vulkan/CUDA
memory) where interop is available, else copies them through the host, and returns O there.
Prints PASS/FAIL per check; exit status 1 on any FAIL. Needs torch and numpy.

    PYTHONPATH=python python3 python/check_torch.py --n 4096 --heads 8 --dim 128 --dtype f16,bf16,f32
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

import baatt

DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}


def log(*args):
    print(*args, flush=True)


def masked_reference(q, k, v, token_mask=None):
    """float64 attention, optionally restricted to token_mask [B, H, Nq, Nk] (GQA by repetition)."""
    q, k, v = q.double(), k.double(), v.double()
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if token_mask is not None:
        s = s.masked_fill(~token_mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def sparse_reference(q, k, v, sel, block):
    """BA-Att's output for its own selection: sorted gather, block-masked attention, scatter back."""
    dev, d, rep = q.device, q.shape[-1], q.shape[1] // k.shape[1]
    pq = torch.from_numpy(sel.perm_q).long().to(dev)
    pk = torch.from_numpy(sel.perm_k).long().to(dev)
    gather = lambda x, p: torch.gather(x, 2, p.unsqueeze(-1).expand(-1, -1, -1, d))  # noqa: E731
    qs, ks, vs = gather(q, pq), gather(k, pk), gather(v, pk)
    m = torch.from_numpy(sel.mask).to(dev)
    tm = m.repeat_interleave(block, 2).repeat_interleave(block, 3)[:, :, :q.shape[2], :k.shape[2]]
    o_sorted = masked_reference(qs, ks, vs, tm)
    out = torch.empty_like(o_sorted)
    return out.scatter_(2, pq.unsqueeze(-1).expand_as(o_sorted), o_sorted)


def compare(name, out, ref, dtype_name):
    out, ref = out.double(), ref.double()
    finite = bool(torch.isfinite(out).all())
    max_abs = (out - ref).abs().max().item() if finite else float("inf")
    max_rel = max_abs / max(ref.abs().max().item(), 1e-30)
    l2 = ((out - ref).norm() / ref.norm()).item() if finite else float("inf")
    tol_l2, tol_max = {"f32": (1e-5, 1e-4), "f16": (5e-3, 2e-2), "bf16": (2e-2, 8e-2)}[dtype_name]
    ok = finite and l2 <= tol_l2 and max_rel <= tol_max
    log(f"    {name:38s} max abs {max_abs:.3e}  max/max|ref| {max_rel:.3e}  rel L2 {l2:.3e}  {'PASS' if ok else 'FAIL'}")
    return {"name": name, "max_abs": max_abs, "max_rel": max_rel, "rel_l2": l2, "pass": ok}


def check_selection(sel, keep, n, block):
    nk = sel.mask.shape[-1]
    want = max(1, math.ceil(float(torch.tensor(keep, dtype=torch.float32)) * nk - 1e-6))
    perms_ok = bool((torch.from_numpy(sel.perm_q).sort(-1).values == torch.arange(n)).all()
                    and (torch.from_numpy(sel.perm_k).sort(-1).values == torch.arange(n)).all())
    counts = sel.mask.sum(-1)
    rows_ok = bool((counts == want).all())
    log(f"    perms are permutations: {perms_ok}; every row keeps {want} of {nk} blocks: {rows_ok}")
    return {"name": "selection", "perms_ok": perms_ok, "rows_ok": rows_ok, "pass": perms_ok and rows_ok}


def check_case(device, h, hkv, n, d, dtype_name, keep, block):
    log(f"  case: B1 H{h} KV{hkv} N{n} d{d} {dtype_name}, keep {keep}, block {block}")
    g = torch.Generator().manual_seed(1000 + 10 * h + hkv)
    q, k, v = (torch.randn(1, hh, n, d, generator=g).to(DTYPES[dtype_name]).to(device) for hh in (h, hkv, hkv))
    t0 = time.perf_counter()
    od, std = baatt.attention(q, k, v, dense=True, return_stats=True)
    osp, sel, sts = baatt.attention(q, k, v, keep=keep, block=block, return_selection=True, return_stats=True)
    log(f"    baatt GPU time: dense {std.gpu_ms:.3f} ms, BA-Att {sts.gpu_ms:.3f} ms (sparsity {sts.sparsity:.3f}); "
        f"{time.perf_counter() - t0:.1f} s in all with plan creation and host copies")
    assert od.device == q.device and od.dtype == q.dtype, "O must come back on q's device in q's dtype"
    ref = masked_reference(q, k, v)
    results = [compare("dense vs float64 reference", od, ref, dtype_name)]
    kr, vr = k.repeat_interleave(h // hkv, 1), v.repeat_interleave(h // hkv, 1)
    results.append(compare("dense vs torch SDPA (same dtype)", od, F.scaled_dot_product_attention(q, kr, vr),
                           dtype_name))
    results.append(check_selection(sel, keep, n, block))
    results.append(compare("BA-Att vs float64 masked reference", osp, sparse_reference(q, k, v, sel, block),
                           dtype_name))
    far = ((osp.double() - ref).norm() / ref.norm()).item()
    log(f"    (BA-Att vs dense, the approximation itself: rel L2 {far:.3f})")
    return {"heads": h, "kv_heads": hkv, "n": n, "head_dim": d, "dtype": dtype_name, "keep": keep,
            "sparsity": sts.sparsity, "baatt_vs_dense_rel_l2": far, "checks": results,
            "pass": all(r["pass"] for r in results)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--dtype", default="f16,bf16,f32", help="comma-separated: f16, bf16, f32")
    ap.add_argument("--keep", type=float, default=0.25)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()
    dev = next(d for d in baatt.devices() if d.picked)
    log(f"check: baatt {baatt.__version__} (library {baatt.library_version()}) on {dev.name} [{dev.driver}], "
        f"torch {torch.__version__} tensors on {args.device}")
    cases, h = [], args.heads
    for dtype_name in args.dtype.split(","):
        for hh, hkv in [(h, h)] + ([(h, h // 2)] if h >= 2 and h % 2 == 0 else []):
            try:
                cases.append(check_case(args.device, hh, hkv, args.n, args.dim, dtype_name, args.keep, args.block))
            except Exception as e:  # noqa: BLE001 - a failure of baatt is a FAIL with its message
                log(f"    FAIL: {type(e).__name__}: {e}")
                cases.append({"heads": hh, "kv_heads": hkv, "dtype": dtype_name, "error": str(e), "pass": False})
    ok = bool(cases) and all(c["pass"] for c in cases)
    log(f"check: {'PASS' if ok else 'FAIL'}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"pass": ok, "device": dev.name, "torch": torch.__version__, "cases": cases}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
