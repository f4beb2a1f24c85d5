#!/usr/bin/env python3
"""baatt.diffusers on a Wan 2.1-sized transformer: per-step time, output error and selection recall.

Builds diffusers' WanTransformer3DModel with Wan 2.1 1.3B's dimensions (30 layers, 12 heads of 128,
d_model 1536, ffn 8960, text 4096; --layers to cut depth) and seeded random weights, then runs S
"denoising steps" (transformer forwards at decreasing timesteps on a fixed, slowly drifting latent
sequence, the same for every method) with:
  sdpa                       diffusers' own processor; on CUDA the FLASH backend is forced
  baatt keep K [reuse R]     baatt.diffusers.install(..., Config(keep=K, reuse_every=R))
and reports per step wall time (synchronized), the final step's output relative L2 error and cosine
against SDPA, and, per layer, the attention mass that the selection the layer attended on (fresh, or
held under reuse) recalls on --rows sampled query rows per head (exact softmax over all keys, torch
float32) at step --recall-step (that step's time is left out of mean_step_s, as is step 0's).

    # the GPU machine (480p-class: 21x60x104 latents, patch 1x2x2 -> 32760 tokens)
    python3 bench/diffusers_bench.py --device cuda --dtype bfloat16 --steps 6 --out wan.json --plot wan.png
    # here, on CPU (lavapipe) with tiny sizes
    python3 bench/diffusers_bench.py --device cpu --dtype float32 --layers 2 --heads 2 --head-dim 64 \\
        --ffn-dim 128 --text-dim 32 --text-len 16 --frames 2 --height 16 --width 32 --steps 3 --out /tmp/w.json
"""
import argparse
import json
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
import baatt  # noqa: E402
import baatt.diffusers as bd  # noqa: E402


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--device", default="cuda"), a("--dtype", default="bfloat16", choices=["float16", "bfloat16", "float32"])
    a("--layers", type=int, default=30), a("--heads", type=int, default=12), a("--head-dim", type=int, default=128)
    a("--ffn-dim", type=int, default=8960), a("--text-dim", type=int, default=4096)
    a("--text-len", type=int, default=512)
    a("--frames", type=int, default=21, help="latent frames"), a("--height", type=int, default=60, help="latent height")
    a("--width", type=int, default=104, help="latent width")
    a("--steps", type=int, default=6), a("--keeps", default="0.5,0.25,0.1")
    a("--reuse", default="1,3", help="reuse_every values")
    a("--block", type=int, default=64), a("--sort", default="auto", help="auto (the library default), norm or off")
    a("--store", default="device", choices=["device", "host", "plan"])
    a("--dense-steps", type=int, default=0), a("--min-tokens", type=int, default=None)
    a("--rows", type=int, default=64, help="sampled query rows per head for the recall")
    a("--recall-step", type=int, default=-1, help="the step whose q/k the recall uses (-1: the last)")
    a("--qk-gain", type=float, default=1.0, help="scales attn1's q/k RMS-norm weights: random weights give "
      "diffuse attention (recall ~ keep); a gain > 1 sharpens the logits like trained q/k gains do")
    a("--no-recall", action="store_true"), a("--seed", type=int, default=0)
    a("--out", default=None), a("--plot", default=None)
    return p.parse_args()


def build(args, device, dtype):
    from diffusers import WanTransformer3DModel
    torch.manual_seed(args.seed)
    with torch.device(device):
        m = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=args.heads,
                                  attention_head_dim=args.head_dim, in_channels=16, out_channels=16,
                                  text_dim=args.text_dim, freq_dim=256, ffn_dim=args.ffn_dim, num_layers=args.layers,
                                  cross_attn_norm=True,
                                  qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
    # as from_pretrained(torch_dtype=...) does: the listed modules stay float32, rope's tables float64
    rope = (m.rope.freqs_cos, m.rope.freqs_sin)
    m.to(dtype)
    m.rope.freqs_cos, m.rope.freqs_sin = rope
    keep32 = set(m._keep_in_fp32_modules)
    for name, prm in m.named_parameters():
        if keep32 & set(name.split(".")):
            prm.data = prm.data.float()
    with torch.no_grad():
        for block in m.blocks:
            block.attn1.norm_q.weight.mul_(args.qk_gain)
            block.attn1.norm_k.weight.mul_(args.qk_gain)
    return m.eval()


def latents(args, device, dtype):
    """The fixed inputs of every step: latents drifting slowly (like a sampler's), one text embedding."""
    g = torch.Generator(device="cpu").manual_seed(args.seed + 1)
    shape = (1, 16, args.frames, args.height, args.width)
    x = torch.randn(shape, generator=g)
    xs = []
    for _ in range(args.steps):
        xs.append(x.to(device, dtype))
        x = 0.97 * x + 0.243 * torch.randn(shape, generator=g)   # unit variance kept
    text = torch.randn(1, args.text_len, args.text_dim, generator=g).to(device, dtype)
    ts = [int(t) for t in np.linspace(999, 999 // max(args.steps, 1), args.steps)]
    return xs, text, ts


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def sdpa_context(device):
    if device.type != "cuda":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel(SDPBackend.FLASH_ATTENTION)


def run_steps(m, xs, text, ts, device):
    outs, times = [], []
    with torch.no_grad(), sdpa_context(device):
        for s, (x, t) in enumerate(zip(xs, ts)):
            sync(device)
            t0 = time.perf_counter()
            o = m(x, torch.tensor([t], device=device), text).sample
            sync(device)
            times.append(time.perf_counter() - t0)
            outs.append(o.float())
    return outs, times


def mass_recall(q, k, sel, block, rows, gen):
    """Mean and min over heads of the exact attention mass (fp32 softmax over all keys) that the
    selection sel = (mask, perm_q, perm_k) keeps, on `rows` random query rows per head.
    q, k: [1, N, H, d] (Wan's layout)."""
    dev = q.device
    n, h, d = q.shape[1], q.shape[2], q.shape[3]
    mask = torch.from_numpy(np.asarray(sel[0][0], bool)).to(dev)             # [H, qb, kb] sorted blocks
    inv_q = torch.from_numpy(np.argsort(sel[1][0], axis=-1)).to(dev)        # original -> sorted position
    inv_k = torch.from_numpy(np.argsort(sel[2][0], axis=-1)).to(dev)
    rep = h // k.shape[2]
    per_head = []
    for j in range(h):
        idx = torch.randperm(n, generator=gen)[:rows].to(dev)
        qs, ks = q[0, idx, j].float(), k[0, :, j // rep].float()
        p = torch.softmax(qs @ ks.T / math.sqrt(d), dim=-1)                   # [rows, N]
        kept = mask[j][inv_q[j, idx] // block][:, inv_k[j // rep] // block]   # [rows, N]
        per_head.append(float((p * kept).sum(-1).mean()))
    return float(np.mean(per_head)), float(np.min(per_head))


def selection_in_use(engine, key, q, k, layout):
    """The selection the engine's last baatt call for this layer attended on: the held one (host
    store with reuse), else the one its plan holds (shared plan: its last call, which for the
    device store loaded the layer's snapshot before a reuse)."""
    cfg, kb = engine.config, (key, engine.branch)
    if cfg.reuse_every > 1 and cfg.selection_store == "host":
        held = engine._held.get(kb)
        return held[1] if held else None
    shape = (tuple(q.shape), tuple(k.shape), str(q.dtype), layout)
    plan = engine._plans.get((kb if cfg.selection_store == "plan" else None, shape))
    if plan is None:
        return None
    s = plan.selection()
    return s.mask, s.perm_q, s.perm_k


def add_probe(handle, step, rows, seed, per_layer):
    """At `step` (branch 0), after each layer's baatt call, the attention mass that the selection it
    used (fresh or reused) recalls: per_layer[layer] = (mean, min over heads)."""
    engine, gen = handle._engine, torch.Generator().manual_seed(seed)
    inner = engine.attend

    def attend(key, layer, q, k, v, layout):
        before = engine.counts["baatt"]
        o = inner(key, layer, q, k, v, layout)
        if engine.step == step and engine.branch == 0 and engine.counts["baatt"] > before:
            sel = selection_in_use(engine, key, q, k, layout)
            if sel is not None:
                per_layer[layer] = mass_recall(q, k, sel, engine.config.block, rows, gen)
        return o

    engine.attend = attend


def compare(o, ref):
    o, ref = o.double().flatten(), ref.double().flatten()
    return float((o - ref).norm() / ref.norm()), float(torch.nn.functional.cosine_similarity(o, ref, dim=0))


def main():
    args = parse()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    m = build(args, device, dtype)
    xs, text, ts = latents(args, device, dtype)
    tokens = args.frames * (args.height // 2) * (args.width // 2)
    print(f"Wan: {args.layers} layers, {args.heads}x{args.head_dim}, {tokens} tokens, {args.dtype} on {device}, "
          f"{args.steps} steps", flush=True)
    result = {"args": vars(args), "tokens": tokens, "torch": torch.__version__, "baatt": baatt.library_version(),
              "baatt_device": next((d.name for d in baatt.devices() if d.picked), None), "methods": []}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(device)
    ref, ref_times = run_steps(m, xs, text, ts, device)
    result["methods"].append({"name": "sdpa", "step_s": ref_times})
    print(f"sdpa: {mean_step(result['methods'][0]):.3f} s/step", flush=True)
    save(result, args)
    min_tokens = args.min_tokens if args.min_tokens is not None else min(2048, tokens)
    for keep in [float(k) for k in args.keeps.split(",")]:
        for reuse in [int(r) for r in args.reuse.split(",")]:
            cfg = bd.Config(keep=keep, block=args.block, sort=args.sort, reuse_every=reuse, selection_store=args.store,
                            dense_steps=args.dense_steps, min_tokens=min_tokens)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            recall, probe_step = {}, args.recall_step % args.steps
            with bd.install(m, cfg) as h:
                if not args.no_recall:
                    add_probe(h, probe_step, args.rows, args.seed + 2, recall)
                outs, times = run_steps(m, xs, text, ts, device)
                report = h.report()
            err = [compare(o, r) for o, r in zip(outs, ref)]
            entry = {"name": f"baatt keep {keep}" + (f" reuse {reuse}" if reuse > 1 else ""), "keep": keep,
                     "reuse_every": reuse, "step_s": times, "rel_err": [e[0] for e in err],
                     "cosine": [e[1] for e in err], "final_rel_err": err[-1][0], "final_cosine": err[-1][1],
                     "report": report, "probe_step": probe_step if recall else None}
            if device.type == "cuda":
                entry["peak_bytes"] = torch.cuda.max_memory_allocated()
            result["methods"].append(entry)
            print(f"{entry['name']}: {mean_step(entry):.3f} s/step, final rel err {err[-1][0]:.4f} "
                  f"cos {err[-1][1]:.5f}; baatt {report['baatt']} (estimates {report['estimates']}, reuse "
                  f"{report['reuse']}), fallbacks {report['fallbacks']}, plan scratch "
                  f"{report['plan_scratch_bytes'] / 2**20:.2f} MiB, host selections "
                  f"{report['host_selection_bytes'] / 2**20:.2f} MiB", flush=True)
            if recall:
                entry["recall"] = {"step": probe_step, "mean": [recall[i][0] for i in sorted(recall)],
                                   "min_head": [recall[i][1] for i in sorted(recall)]}
                print(f"  recall at step {probe_step}: per layer "
                      f"{' '.join(f'{r:.3f}' for r in entry['recall']['mean'])}", flush=True)
            save(result, args)
    save(result, args)
    if args.out:
        print(f"wrote {args.out}")
    if args.plot:
        plot(result, args.plot)


def mean_step(e):
    """Mean step time without step 0 (plan creation, pipeline setup) and the probe step."""
    t = [x for i, x in enumerate(e["step_s"]) if i > 0 and i != e.get("probe_step")]
    return float(np.mean(t or e["step_s"]))


def save(result, args):
    """The JSON so far (after every method: a run cut short keeps what it measured)."""
    for e in result["methods"]:
        e["mean_step_s"] = mean_step(e)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


def plot(result, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    ms = result["methods"]
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(16, 4.5))
    names = [e["name"] for e in ms]
    a1.barh(names, [e["mean_step_s"] for e in ms])
    a1.set_xlabel("s per step (mean, first step excluded)")
    sparse = [e for e in ms if "final_rel_err" in e]
    a2.barh([e["name"] for e in sparse], [e["final_rel_err"] for e in sparse])
    a2.set_xlabel("final output rel. L2 error vs SDPA")
    for e in sparse:
        if "recall" in e:
            a3.plot(e["recall"]["mean"], marker="o", label=e["name"])
    a3.set_xlabel("layer"), a3.set_ylabel("attention mass recalled"), a3.legend(fontsize=8)
    fig.suptitle(f"Wan {result['args']['layers']} layers, {result['tokens']} tokens, {result['args']['dtype']}, "
                 f"{result.get('gpu', result['args']['device'])}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
