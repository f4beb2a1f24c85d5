#!/usr/bin/env python3
"""The CUDA yardsticks for `baatt bench`, on the same shapes, plus an end-to-end check of baatt.

Timing (B=1, H heads, N tokens, head_dim d, non-causal):
  flash  torch SDPA with SDPBackend.FLASH_ATTENTION (FlashAttention-2 inside torch)
  cudnn  torch SDPA with SDPBackend.CUDNN_ATTENTION
  flex   torch.nn.attention.flex_attention (torch.compile'd) with a BlockMask built from the block
         selection that `baatt bench --mask-dir DIR` exported (DIR/mask_n{N}_k{keep}.npy).
         Its inputs are random and taken to be already in baatt's sorted order: the cost of
         permuting Q/K/V is excluded, the block pattern (and so the work) is baatt's own. Timing
         does not depend on the values, so the inputs need not be baatt's.
Each time is the median over repetitions measured with CUDA events, after warm-up, with the inputs
rotated between two sets so that a set held in L2 does not flatter the numbers. Records go to
--out as a JSON list (rewritten after each one), in the schema of `baatt bench --json`:
  {"n", "heads", "head_dim", "dtype", "method", "keep" (null for dense), "ms", ...}
A backend that fails (cuDNN unavailable for a dtype, a flex compile error) is recorded with
"ms": null and "error", and the run goes on.

--check-baatt BAATT: writes random q/k/v .npy files, runs `BAATT attention --dense` and a BA-Att
run (--mask-out/--perm-q-out/--perm-k-out), and compares the dense output with torch (float64
reference and SDPA) and the BA-Att output with a float64 masked attention built from baatt's own
permutations and block mask. Prints PASS/FAIL with the numbers; exit status 1 on FAIL.

Needs only python3 and torch (numpy is not required). Prints flush at once (no buffering).
"""
import argparse
import ast
import ctypes
import glob
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:  # pragma: no cover - reported, not hidden
    print(f"fa_baseline: torch is required: {e}", file=sys.stderr, flush=True)
    sys.exit(2)

DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32}


def log(*args):
    print(*args, flush=True)


# ------------------------------------------------------------------------------------------------
# .npy files (format 1.0-3.0, C order), without numpy

NPY_READ = {"<f4": torch.float32, "<f2": torch.float16, "<i4": torch.int32, "<i8": torch.int64,
            "|u1": torch.uint8, "<u1": torch.uint8, "|b1": torch.bool}
NPY_WRITE = {torch.float32: "<f4", torch.float16: "<f2", torch.int32: "<i4", torch.uint8: "|u1"}


def read_npy(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x93NUMPY":
        raise ValueError(f"{path}: not a .npy file")
    if data[6] == 1:
        hlen, off = struct.unpack("<H", data[8:10])[0], 10
    else:
        hlen, off = struct.unpack("<I", data[8:12])[0], 12
    hdr = ast.literal_eval(data[off:off + hlen].decode("latin1"))
    if hdr["fortran_order"] or hdr["descr"] not in NPY_READ:
        raise ValueError(f"{path}: unsupported layout {hdr}")
    shape = tuple(hdr["shape"])
    count = math.prod(shape)
    t = torch.frombuffer(bytearray(data[off + hlen:]), dtype=NPY_READ[hdr["descr"]], count=count)
    return t.reshape(shape)


def write_npy(path, t):
    t = t.detach().contiguous().cpu()
    hdr = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        NPY_WRITE[t.dtype], "".join(f"{s}, " for s in t.shape))
    pad = 64 - (10 + len(hdr) + 1) % 64
    hdr = hdr + " " * (pad % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr.encode("latin1"))
        f.write(ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()))


# ------------------------------------------------------------------------------------------------
# records

class Records:
    """The output list, rewritten (through a rename) after every record so it is always valid."""

    def __init__(self, path, device, driver):
        self.path, self.device, self.driver, self.items = path, device, driver, []

    def add(self, rec):
        rec.setdefault("device", self.device)
        rec.setdefault("driver", self.driver)
        self.items.append(rec)
        if self.path:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.items, f, indent=1)
                f.write("\n")
            os.replace(tmp, self.path)


def dense_flops(b, h, n, d):
    return 4.0 * b * h * n * n * d


def record(n, heads, kv_heads, d, dtype, method, keep=None, timing=None, error=None, **extra):
    rec = {"n": n, "heads": heads, "kv_heads": kv_heads, "head_dim": d, "dtype": dtype,
           "method": method, "keep": keep, "ms": None, "min_ms": None, "reps": 0, "tflops": None,
           "stages_ms": None}
    if timing:
        rec["ms"], rec["min_ms"], rec["reps"] = timing
        rec["tflops"] = dense_flops(1, heads, n, d) / (rec["ms"] * 1e9)
    if error:
        rec["error"] = error
    rec.update(extra)
    return rec


def short_error(e):
    msg = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
    return msg[:400]


# ------------------------------------------------------------------------------------------------
# timing

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, device, warmup, reps, max_seconds):
    """Median, min (ms) and count of fn(i) over repetitions; i selects the rotated input set.

    The repetitions are enqueued back to back between CUDA events, behind a GPU sleep, and
    synchronised once, so the events measure GPU time without host launch gaps. The count is cut so that the repetitions
    fit max_seconds (at least 3), judged from the warm-up."""
    for i in range(max(1, warmup) - 1):
        fn(i)
    sync(device)
    t0 = time.perf_counter()  # the last warm-up alone: the first ones may include compilation
    fn(max(1, warmup) - 1)
    sync(device)
    per_call = time.perf_counter() - t0
    reps = max(min(3, reps), min(reps, int(max_seconds / max(per_call, 1e-6))))
    if device.type == "cuda":
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(reps)]
        sleep = getattr(torch.cuda, "_sleep", None)
        if sleep:  # keep the GPU busy (~2 GHz cycles) while the host enqueues every repetition, so
            sleep(int(2e6 * max(20.0, 0.5 * reps)))  # host overhead between calls never shows
        for i, (s, e) in enumerate(ev):
            s.record()
            fn(i)
            e.record()
        torch.cuda.synchronize(device)
        ms = sorted(s.elapsed_time(e) for s, e in ev)
    else:  # CPU: only for testing this script without a GPU
        ms = []
        for i in range(reps):
            t = time.perf_counter()
            fn(i)
            ms.append((time.perf_counter() - t) * 1e3)
        ms.sort()
    mid = len(ms) // 2
    med = ms[mid] if len(ms) % 2 else 0.5 * (ms[mid - 1] + ms[mid])
    return med, ms[0], len(ms)


def random_sets(nsets, b, h, hkv, n, d, dtype, device, seed):
    g = torch.Generator(device=device).manual_seed(seed)
    sets = []
    for _ in range(nsets):
        q = torch.randn(b, h, n, d, generator=g, device=device, dtype=torch.float32).to(dtype)
        k = torch.randn(b, hkv, n, d, generator=g, device=device, dtype=torch.float32).to(dtype)
        v = torch.randn(b, hkv, n, d, generator=g, device=device, dtype=torch.float32).to(dtype)
        sets.append((q, k, v))
    return sets


def free_memory(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()


def time_sdpa(args, device, n, dtype_name, backend_name, out):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backend = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[backend_name]
    h, hkv, d = args.heads, args.kv_heads or args.heads, args.dim
    try:
        sets = random_sets(2, 1, h, hkv, n, d, DTYPES[dtype_name], device, seed=n)
        gqa = {"enable_gqa": True} if hkv != h else {}

        def call(i):
            q, k, v = sets[i % len(sets)]
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v, **gqa)

        t = time_calls(call, device, args.warmup, args.reps, args.max_seconds)
        rec = record(n, h, hkv, d, dtype_name, backend_name, timing=t)
        log(f"  {backend_name:5s} N={n:<7d} {dtype_name}: {t[0]:9.3f} ms  {rec['tflops']:7.1f} TFLOP/s ({t[2]} reps)")
    except Exception as e:  # noqa: BLE001 - any backend failure is a result, not a crash
        rec = record(n, h, hkv, d, dtype_name, backend_name, error=short_error(e))
        log(f"  {backend_name:5s} N={n:<7d} {dtype_name}: FAILED {rec['error']}")
    sets = None
    free_memory(device)
    out.add(rec)


# ------------------------------------------------------------------------------------------------
# flex_attention on baatt's block masks

def key_block_tokens(nk, n, block):
    t = torch.full((nk,), block, dtype=torch.float64)
    t[-1] = n - (nk - 1) * block
    return t


def selection_sparsity(mask, n, block):
    """1 - selected key tokens / (query blocks * N), over all heads: baatt's definition."""
    kb = key_block_tokens(mask.shape[-1], n, block).to(mask.device)
    sel = (mask.to(torch.float64) * kb).sum()
    return 1.0 - sel.item() / (mask.shape[0] * mask.shape[1] * mask.shape[2] * n)


def coarsen(mask):
    """OR pairs of blocks on both axes: e.g. a 64-block mask as a 128-block one (padding odd counts)."""
    b, h, nq, nk = mask.shape
    m = F.pad(mask.to(torch.uint8), (0, nk % 2, 0, nq % 2))
    return m.reshape(b, h, (nq + 1) // 2, 2, (nk + 1) // 2, 2).amax(dim=(3, 5)).bool()


def block_mask_from(mask, n, block):
    """A BlockMask whose selected blocks are all 'full' (no mask_mod evaluated inside them)."""
    from torch.nn.attention.flex_attention import BlockMask
    mask = mask.bool()
    b, h, nq, nk = mask.shape
    counts = mask.sum(dim=-1, dtype=torch.int32)
    # selected key blocks first, ascending; the rest of each row is ignored by flex
    order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    zeros_n = torch.zeros(b, h, nq, dtype=torch.int32, device=mask.device)
    zeros_i = torch.zeros(b, h, nq, nk, dtype=torch.int32, device=mask.device)
    return BlockMask.from_kv_blocks(zeros_n, zeros_i, counts.contiguous(), order.contiguous(),
                                    BLOCK_SIZE=block, seq_lengths=(n, n))


def masked_reference(q, k, v, token_mask, scale=None):
    """float64 attention restricted to token_mask [B,H,Nq,Nk] (K/V heads repeated for GQA)."""
    q, k, v = q.double(), k.double(), v.double()
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    s = (q @ k.transpose(-1, -2)) * (scale if scale else 1.0 / math.sqrt(q.shape[-1]))
    if token_mask is not None:
        s = s.masked_fill(~token_mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def token_mask_from_blocks(mask, nq_tokens, nk_tokens, block):
    m = mask.bool().repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)
    return m[:, :, :nq_tokens, :nk_tokens]


def rel_l2(a, ref):
    a, ref = a.double(), ref.double()
    return ((a - ref).norm() / ref.norm()).item()


FLEX_VARIANTS = [  # (sparse block, kernel options): the first that compiles and runs is used
    (64, {"BLOCK_M": 64, "BLOCK_N": 64}),  # baatt's own granularity; torch's H100 default is 128x64
    (64, None),
    (128, None),                            # fallback: the 64-block mask OR-ed in 2x2 groups
]


def compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 256)
    return torch.compile(flex_attention, dynamic=False)


def flex_once(flex, sets, bm, opts, gqa):
    def call(i):
        q, k, v = sets[i % len(sets)]
        kw = {"kernel_options": opts} if opts else {}
        return flex(q, k, v, block_mask=bm, enable_gqa=gqa, **kw)
    return call


def flex_sanity(call, sets, mask, n, block):
    """Head 0 of the flex output against a float64 masked reference (at small N only)."""
    q, k, v = (t[:, :1] for t in sets[0])
    tm = token_mask_from_blocks(mask[:, :1], n, n, block)
    return rel_l2(call(0)[:, :1], masked_reference(q, k, v, tm))


def time_flex_mask(args, device, flex, n, dtype_name, keep, path, out):
    h_arg, d = args.heads, args.dim
    mask_b = read_npy(path).to(device).bool()  # baatt's blocks of args.block tokens
    b, h, nq, nk = mask_b.shape
    hkv = args.kv_heads or h
    if h != h_arg:
        log(f"  note: {os.path.basename(path)} has {h} heads (--heads {h_arg}); using {h}")
    sets = random_sets(2, b, h, hkv, n, d, DTYPES[dtype_name], device, seed=7 * n)
    errors = []
    for block, opts in [v for v in FLEX_VARIANTS if v[0] >= max(args.flex_block, args.block)]:
        mask = mask_b
        for _ in range((block // args.block).bit_length() - 1):  # OR 2x2 groups up to flex's block
            mask = coarsen(mask)
        try:
            bm = block_mask_from(mask, n, block)
            call = flex_once(flex, sets, bm, opts, hkv != h)
            call(0)  # compiles (or fails) here
            sanity = flex_sanity(call, sets, mask, n, block) if n <= args.flex_check_max_n else None
            t = time_calls(call, device, args.warmup, args.reps, args.max_seconds)
        except Exception as e:  # noqa: BLE001 - try the next variant
            errors.append(f"block {block} {opts}: {short_error(e)}")
            log(f"  flex  N={n:<7d} {dtype_name} keep={keep}: block {block} {opts} failed: {errors[-1][:200]}")
            continue
        sp = selection_sparsity(mask, n, block)
        rec = record(n, h, hkv, d, dtype_name, "flex", keep=keep, timing=t, sparsity=sp, block_size=block,
                     kernel_options=opts, baatt_sparsity=selection_sparsity(mask_b, n, args.block),
                     flex_check_rel_l2=sanity, mask_file=os.path.basename(path),
                     note="inputs taken as already sorted: permutation cost excluded")
        rec["tflops_useful"] = rec["tflops"] * (1 - sp)
        if errors:
            rec["fallback_errors"] = errors
        chk = "" if sanity is None else f", head-0 rel L2 vs masked ref {sanity:.1e}"
        log(f"  flex  N={n:<7d} {dtype_name} keep={keep}: {t[0]:9.3f} ms  {rec['tflops']:7.1f} TFLOP/s dense-eq, "
            f"sparsity {sp:.3f}, block {block}{chk} ({t[2]} reps)")
        out.add(rec)
        break
    else:
        out.add(record(n, h, hkv, d, dtype_name, "flex", keep=keep, error=" | ".join(errors)[:1500],
                       mask_file=os.path.basename(path)))
    sets = None
    free_memory(device)


def masks_for(mask_dir, n):
    """[(keep, path)] of the masks `baatt bench --mask-dir` wrote for N, by keep descending."""
    found = []
    for path in glob.glob(os.path.join(mask_dir, f"mask_n{n}_k*.npy")):
        m = re.search(r"_k([0-9.eE+-]+)\.npy$", path)
        if m:
            found.append((float(m.group(1)), path))
    return sorted(found, reverse=True)


# ------------------------------------------------------------------------------------------------
# --check-baatt

def run_baatt(binary, args_list, timeout):
    cmd = [binary, "attention"] + args_list
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()[-600:]}")
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def compare(name, out, ref, dtype_name):
    out, ref = out.double(), ref.double()
    finite = bool(torch.isfinite(out).all())
    max_abs = (out - ref).abs().max().item() if finite else float("inf")
    max_rel = max_abs / max(ref.abs().max().item(), 1e-30)
    l2 = rel_l2(out, ref) if finite else float("inf")
    tol_l2, tol_max = (1e-5, 1e-4) if dtype_name == "f32" else (5e-3, 2e-2)
    ok = finite and l2 <= tol_l2 and max_rel <= tol_max
    log(f"    {name:38s} max abs {max_abs:.3e}  max/max|ref| {max_rel:.3e}  rel L2 {l2:.3e}  "
        f"{'PASS' if ok else 'FAIL'}")
    return {"name": name, "max_abs": max_abs, "max_rel": max_rel, "rel_l2": l2, "tol_rel_l2": tol_l2,
            "tol_max_rel": tol_max, "pass": ok}


def unsort_rows(o_sorted, perm_q):
    idx = perm_q.long().unsqueeze(-1).expand_as(o_sorted)
    return torch.empty_like(o_sorted).scatter_(2, idx, o_sorted)


def sparse_reference(q, k, v, mask, pq, pk, block):
    """BA-Att's output for baatt's own selection: gather Q/K/V into sorted order, attend within
    the selected blocks, write rows back to their original positions."""
    d = q.shape[-1]
    qs = torch.gather(q, 2, pq.long().unsqueeze(-1).expand(-1, -1, -1, d))
    ks = torch.gather(k, 2, pk.long().unsqueeze(-1).expand(-1, -1, -1, d))
    vs = torch.gather(v, 2, pk.long().unsqueeze(-1).expand(-1, -1, -1, d))
    tm = token_mask_from_blocks(mask, q.shape[2], k.shape[2], block)
    return unsort_rows(masked_reference(qs, ks, vs, tm), pq)


def check_selection(mask, pq, pk, keep, n, block):
    """The perms are permutations and every row keeps max(1, ceil(keep * nk)) blocks."""
    ar = torch.arange(n, device=pq.device)
    perms_ok = bool((pq.long().sort(dim=-1).values == ar).all() and (pk.long().sort(dim=-1).values == ar).all())
    nk = mask.shape[-1]
    want = max(1, math.ceil(float(torch.tensor(keep, dtype=torch.float32)) * nk - 1e-6))
    counts = mask.long().sum(-1)
    rows_ok = bool((counts == want).all())
    log(f"    perms are permutations: {perms_ok}; every row keeps {want} of {nk} blocks: {rows_ok} "
        f"(min {counts.min().item()}, max {counts.max().item()})")
    return {"name": "selection", "perms_ok": perms_ok, "rows_ok": rows_ok, "blocks_per_row": want,
            "pass": perms_ok and rows_ok}


def check_case(binary, device, tmp, h, hkv, n, d, dtype_name, keep, block):
    log(f"  case: B1 H{h} KV{hkv} N{n} d{d} {dtype_name}, keep {keep}, block {block}")
    dt = DTYPES[dtype_name]
    g = torch.Generator().manual_seed(1000 + 10 * h + hkv)
    q, k, v = (torch.randn(1, hh, n, d, generator=g).to(dt) for hh in (h, hkv, hkv))
    p = {name: os.path.join(tmp, f"{name}_{h}_{hkv}.npy") for name in ("q", "k", "v", "od", "os", "m", "pq", "pk")}
    for name, t in (("q", q), ("k", k), ("v", v)):
        write_npy(p[name], t)
    io = ["--q", p["q"], "--k", p["k"], "--v", p["v"]]
    jd = run_baatt(binary, io + ["--out", p["od"], "--dense", "--json"], 600)
    js = run_baatt(binary, io + ["--out", p["os"], "--keep", str(keep), "--block", str(block), "--mask-out", p["m"],
                                 "--perm-q-out", p["pq"], "--perm-k-out", p["pk"], "--json"], 600)
    log(f"    baatt GPU time: dense {jd.get('gpu_ms', float('nan')):.3f} ms, BA-Att {js.get('gpu_ms', float('nan')):.3f} ms "
        f"(sparsity {js.get('sparsity', float('nan')):.3f}) on {jd.get('device', '?')}")
    q, k, v = q.to(device), k.to(device), v.to(device)
    od, osp = read_npy(p["od"]).to(device), read_npy(p["os"]).to(device)
    mask, pq, pk = (read_npy(p[x]).to(device) for x in ("m", "pq", "pk"))
    ref = masked_reference(q, k, v, None)
    results = [compare("dense vs float64 reference", od, ref, dtype_name)]
    try:
        sdpa = F.scaled_dot_product_attention(q, k, v, enable_gqa=hkv != h) if hkv != h else \
            F.scaled_dot_product_attention(q, k, v)
        results.append(compare("dense vs torch SDPA (same dtype)", od, sdpa, dtype_name))
    except Exception as e:  # noqa: BLE001 - SDPA is a second opinion only
        log(f"    torch SDPA unavailable here: {short_error(e)}")
    results.append(check_selection(mask, pq, pk, keep, n, block))
    results.append(compare("BA-Att vs float64 masked reference", osp, sparse_reference(q, k, v, mask, pq, pk, block),
                           dtype_name))
    far = rel_l2(osp, ref)
    log(f"    (BA-Att vs dense, the approximation itself: rel L2 {far:.3f})")
    return {"heads": h, "kv_heads": hkv, "n": n, "head_dim": d, "dtype": dtype_name, "keep": keep,
            "baatt_sparsity": js.get("sparsity"), "baatt_vs_dense_rel_l2": far, "checks": results,
            "pass": all(r["pass"] for r in results)}


def check_baatt(args, device):
    binary = os.path.abspath(args.check_baatt)
    log(f"check: {binary} against torch on {device}")
    tmp = tempfile.mkdtemp(prefix="baatt-check-")
    cases, h = [], args.check_heads
    variants = [(h, h)] + ([(h, h // 2)] if h >= 2 and h % 2 == 0 else [])
    try:
        for hh, hkv in variants:
            try:
                cases.append(check_case(binary, device, tmp, hh, hkv, args.check_n, args.check_dim,
                                        args.check_dtype, args.check_keep, 64))
            except Exception as e:  # noqa: BLE001 - a crash of baatt is a FAIL with its message
                log(f"    FAIL: {short_error(e)}")
                cases.append({"heads": hh, "kv_heads": hkv, "error": short_error(e), "pass": False})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ok = bool(cases) and all(c["pass"] for c in cases)
    log(f"check: {'PASS' if ok else 'FAIL'}")
    if args.check_out:
        with open(args.check_out, "w") as f:
            json.dump({"pass": ok, "binary": binary, "torch": torch.__version__, "cases": cases}, f, indent=1)
    return ok


# ------------------------------------------------------------------------------------------------
# main

def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--n", default="4096,16384,32768", help="sequence lengths, comma separated")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=0, help="default: --heads")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--dtype", default="f16", help="f16,bf16,f32 (comma separated)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--max-seconds", type=float, default=10.0, help="per configuration")
    ap.add_argument("--budget", type=float, default=0, help="seconds for all timing; 0: no limit")
    ap.add_argument("--methods", default="flash,cudnn,flex")
    ap.add_argument("--mask-dir", help="where `baatt bench --mask-dir` wrote mask_n{N}_k{keep}.npy")
    ap.add_argument("--block", type=int, default=64, choices=[32, 64, 128],
                    help="the block size of baatt's masks (`baatt bench --block`)")
    ap.add_argument("--flex-block", type=int, default=64, choices=[64, 128],
                    help="64: baatt's blocks (falling back to 128 if flex rejects them); 128: OR-ed 2x2 "
                         "(with --block 128, the masks' own blocks; with 32, OR-ed up)")
    ap.add_argument("--flex-check-max-n", type=int, default=4096,
                    help="check flex's head 0 against a masked float64 reference up to this N")
    ap.add_argument("--out", help="JSON list of records")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (testing this script only)")
    ap.add_argument("--check-baatt", metavar="BAATT", help="the baatt binary to check against torch")
    ap.add_argument("--check-out", help="JSON file for the check's results")
    ap.add_argument("--check-n", type=int, default=2048)
    ap.add_argument("--check-heads", type=int, default=4)
    ap.add_argument("--check-dim", type=int, default=128)
    ap.add_argument("--check-dtype", default="f16", choices=["f16", "f32"])
    ap.add_argument("--check-keep", type=float, default=0.5)
    args = ap.parse_args()
    args.n_list = [int(x) for x in args.n.split(",") if x]
    args.dtypes = [x for x in args.dtype.split(",") if x]
    args.method_list = [x for x in args.methods.split(",") if x]
    bad = [x for x in args.dtypes if x not in DTYPES]
    if bad:
        ap.error(f"unknown dtype(s) {bad}")
    return args


def environment(device):
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        return name, f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {cudnn}"
    return "cpu", f"torch {torch.__version__} (CPU)"


def run_timing(args, device, out):
    start = time.perf_counter()

    def over_budget(what):
        if args.budget and time.perf_counter() - start > args.budget:
            log(f"  skipped {what}: the --budget of {args.budget:.0f} s is spent")
            return True
        return False

    for dt in args.dtypes:  # dense baselines first: fast, and what every ratio needs
        for n in args.n_list:
            for m in ("flash", "cudnn"):
                if m in args.method_list and not over_budget(f"{m} N={n} {dt}"):
                    time_sdpa(args, device, n, dt, m, out)
    if "flex" not in args.method_list:
        return
    if not args.mask_dir:
        log("  flex skipped: no --mask-dir")
        return
    flex = compiled_flex()
    for dt in args.dtypes:
        for n in args.n_list:
            masks = masks_for(args.mask_dir, n)
            if not masks:
                log(f"  flex N={n}: no masks in {args.mask_dir}")
            for keep, path in masks:
                if not over_budget(f"flex N={n} keep={keep} {dt}"):
                    time_flex_mask(args, device, flex, n, dt, keep, path, out)


def main():
    args = parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        log("fa_baseline: CUDA is not available (use --device cpu to test the script)")
        return 2
    name, driver = environment(device)
    log(f"fa_baseline: {name}; {driver}")
    rc = 0
    if args.check_baatt:
        rc = 0 if check_baatt(args, device) else 1
    if args.out:
        out = Records(args.out, name, driver)
        with open(args.out, "w") as f:  # valid (empty) even if the run is cut short before a record
            f.write("[]\n")
        log(f"timing: N {args.n_list}, H {args.heads}, d {args.dim}, dtypes {args.dtypes}, methods {args.method_list}")
        run_timing(args, device, out)
    return rc


if __name__ == "__main__":
    sys.exit(main())
