"""Per-call cost of keeping a layer's selection on the host against a device snapshot
(baatt.diffusers selection_store "host" vs "device"): Plan.set_selection against Plan.load, and
Plan.selection() against Plan.snapshot(), at a Wan 2.1-sized shape (default 12 heads x 32760
tokens x 128, block 64) with a synthetic selection (random mask, random permutations).

    PYTHONPATH=python python bench/selection_store.py [--heads 12] [--tokens 32760] [--reps 10]

Prints the median and min ms of each over --reps calls, and the snapshot's device bytes."""
import argparse
import time

import numpy as np

import baatt


def timed(fn, reps):
    ms = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ms.append(1e3 * (time.perf_counter() - t0))
    return float(np.median(ms)), float(np.min(ms))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=32760)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--keep", type=float, default=0.1, help="density of the synthetic mask")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--device", default=None)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    h, n, d = a.heads, a.tokens, a.dim
    shape = (1, h, n, d)
    with baatt.Plan(shape, shape, "float16", block=a.block, keep=a.keep, device=a.device) as plan:
        nb = plan.q_blocks
        mask = rng.random((1, h, nb, plan.k_blocks)) < a.keep
        mask[..., 0] = True  # every query block selects one
        perm = np.stack([rng.permutation(n).astype(np.int32) for _ in range(h)])[None]
        # one cheap run (one key block a row) so that the read functions are allowed
        thin = np.zeros_like(mask)
        thin[..., 0] = True
        plan.set_selection(thin, perm, perm)
        x = (rng.standard_normal(shape) * 0.1).astype(np.float16)
        plan(x, x, x)
        plan.set_selection(mask, perm, perm)
        sel = plan.selection()
        held = (sel.mask, sel.perm_q, sel.perm_k)
        snap = plan.snapshot()
        rows = [("set_selection (host store, before a reusing call)", lambda: plan.set_selection(*held)),
                ("load(snapshot) (device store, before a reusing call)", lambda: plan.load(snap)),
                ("selection() (host store, after an estimate)", plan.selection),
                ("snapshot() (device store, after an estimate)", lambda: plan.snapshot().close())]
        print(f"{h} heads x {n} tokens x {d}, block {a.block}, mask density {mask.mean():.3f}, "
              f"device {plan.device.name}, {a.reps} reps")
        for name, fn in rows:
            med, best = timed(fn, a.reps)
            print(f"  {name:55s} median {med:8.2f} ms  min {best:8.2f} ms")
        g = plan.q_blocks
        words = -(-plan.k_blocks // 32)
        nbytes = 4 * (h * g * words + h * g + 2 * h * n + h)  # mask bits, counts, perms, choice
        print(f"  snapshot device bytes (mask bits, counts, perm_q, perm_k, choice): {nbytes} "
              f"({nbytes / 2**20:.2f} MiB); host store: {sel.mask.nbytes + sel.perm_q.nbytes + sel.perm_k.nbytes} "
              f"bytes on the host")


if __name__ == "__main__":
    main()
