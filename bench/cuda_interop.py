#!/usr/bin/env python3
"""Wall time per call of baatt on torch CUDA tensors: the host path (copy to host,
baatt_plan_run_host, copy back) against the device-resident one (baatt.cuda: Vulkan memory
imported into CUDA, device-to-device copies in and out), and the GPU time baatt reports for the
same calls (baatt_plan_stats).

  PYTHONPATH=python BAATT_LIBRARY=build python3 bench/cuda_interop.py --out interop.json

For each mode (--keeps, "dense" for exact attention): one Plan per path on B=1, --heads heads,
--n tokens, --head-dim, fp16; a first call (timed separately: the device-resident one imports
the shared buffers), then --reps calls timed with time.perf_counter around plan(q, k, v) and
torch.cuda.synchronize(). Prints one line per record and writes the list as JSON to --out:
  {"path": "host"|"device", "keep": float|null, "n", "heads", "head_dim", "dtype",
   "first_call_s", "wall_ms" (median), "wall_ms_all", "gpu_ms" (median of plan.stats().gpu_ms)}
The host path is forced by making baatt.cuda report interop unavailable (its one-time warning is
silenced here). Needs torch with CUDA, the NVIDIA driver (libcuda.so.1) and its Vulkan driver.
"""
import argparse
import json
import statistics
import sys
import time
import warnings

import torch

import baatt
from baatt import cuda


def run(plan, q, k, v, reps):
    t0 = time.perf_counter()
    plan(q, k, v)
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    walls, gpus = [], []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        plan(q, k, v)
        torch.cuda.synchronize()
        walls.append((time.perf_counter() - t0) * 1e3)
        gpus.append(plan.stats().gpu_ms)
    return first, walls, gpus


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=32768)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--keeps", default="0.5,dense", help="comma-separated keep ratios and/or 'dense'")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", required=True, help="JSON file for the records")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA device")
    dev = torch.device("cuda", 0)
    index = cuda.vulkan_device(dev)
    info = baatt.devices()[index]
    reason = cuda.reason_unavailable(info, dev)
    if reason:
        sys.exit(f"device-resident path unavailable: {reason}")
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(dev)}; Vulkan device {index}: {info.name}",
          flush=True)
    g = torch.Generator(device=dev).manual_seed(0)
    shape = (1, a.heads, a.n, a.head_dim)
    q, k, v = (torch.randn(shape, generator=g, device=dev, dtype=torch.float16) for _ in range(3))
    records = []
    real_reason = cuda.reason_unavailable
    for mode in a.keeps.split(","):
        dense = mode == "dense"
        keep = None if dense else float(mode)
        for path in ("host", "device"):
            cuda.reason_unavailable = real_reason if path == "device" else (lambda *x: "benchmark: host path")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                with baatt.Plan(shape, shape, "float16", dense=dense, keep=keep or 0.5, device=index) as plan:
                    first, walls, gpus = run(plan, q, k, v, a.reps)
                    assert (plan._cuda is not None) == (path == "device")
            rec = {"path": path, "keep": keep, "n": a.n, "heads": a.heads, "head_dim": a.head_dim, "dtype": "f16",
                   "first_call_s": first, "wall_ms": statistics.median(walls), "wall_ms_all": walls,
                   "gpu_ms": statistics.median(gpus), "device": torch.cuda.get_device_name(dev)}
            records.append(rec)
            print(f"{path:6s} keep={mode:5s} wall {rec['wall_ms']:9.2f} ms/call  gpu {rec['gpu_ms']:8.2f} ms  "
                  f"first call {first:.2f} s", flush=True)
            with open(a.out, "w") as f:
                json.dump(records, f, indent=1)
    cuda.reason_unavailable = real_reason


if __name__ == "__main__":
    main()
