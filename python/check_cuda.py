#!/usr/bin/env python3
"""The device-resident CUDA path (baatt.cuda) checked without pytest, for a GPU machine that has
torch and numpy only: python/tests/test_cuda.py's GPU checks as plain asserts.

    PYTHONPATH=python python3 python/check_cuda.py [--n 1024]

Checks, each printed PASS/FAIL (exit status 1 on any FAIL; 77 when there is no CUDA device or no
interop, with the reason): keep 1.0 and dense against torch SDPA (fp16, GQA), the LSE against
torch.logsumexp, bit-equality with the host path on a sparse plan, no host round trip (the host
run function replaced by one that raises), buffer reuse across calls of one Plan, the bnhd layout
on non-contiguous views and bf16, and the release of the shared memory when the plan closes.
"""
import argparse
import math
import sys
import traceback
import warnings

import torch

import baatt
from baatt import _api, cuda

F = torch.nn.functional


def sdpa(q, k, v):
    rep = q.shape[1] // k.shape[1]
    q, k, v = (x.float() for x in (q, k, v))
    return F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1))


def rel_l2(a, ref):
    a, ref = a.double(), ref.double()
    return float((a - ref).norm() / ref.norm())


class NoHost:
    """Within the block, a host round trip raises."""

    def __enter__(self):
        self.saved = _api._run_host, _api._Host

        def boom(*a, **k):
            raise AssertionError("the host path ran")
        _api._run_host = _api._Host = boom

    def __exit__(self, *exc):
        _api._run_host, _api._Host = self.saved


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device")
        sys.exit(77)
    dev = torch.device("cuda", 0)
    try:
        index = cuda.vulkan_device(dev)
    except cuda.InteropError as e:
        print(f"SKIP: {e}")
        sys.exit(77)
    info = baatt.devices()[index]
    reason = cuda.reason_unavailable(info, dev)
    if reason:
        print(f"SKIP: interop unavailable: {reason}")
        sys.exit(77)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(dev)} = Vulkan device {index} ({info.name})")
    g = torch.Generator(device=dev).manual_seed(1234)
    n = a.n

    def qkv(h=8, hk=2, n=n, nk=None, d=128, dtype=torch.float16):
        nk = n if nk is None else nk
        mk = lambda *s: torch.randn(*s, generator=g, device=dev).to(dtype)  # noqa: E731
        return mk(1, h, n, d), mk(1, hk, nk, d), mk(1, hk, nk, d)

    def full_keep_gqa():
        q, k, v = qkv(nk=n // 2 + 64)
        before = [x.clone() for x in (q, k, v)]
        with NoHost():
            o = baatt.attention(q, k, v, keep=1.0)
        err = rel_l2(o, sdpa(q, k, v))
        assert o.device == dev and o.dtype == torch.float16 and err < 5e-3, err
        assert all(torch.equal(x, y) for x, y in zip((q, k, v), before)), "inputs modified"
        return f"rel L2 {err:.2e}"

    def dense_lse():
        q, k, v = qkv(h=4, hk=4)
        with NoHost():
            o, lse = baatt.attention(q, k, v, dense=True, return_lse=True)
        s = q.float() @ k.float().transpose(-1, -2) / math.sqrt(q.shape[-1])
        lerr = float((lse - torch.logsumexp(s, -1)).abs().max())
        err = rel_l2(o, sdpa(q, k, v))
        assert lse.device == dev and lerr < 2e-3 and err < 5e-3, (lerr, err)
        return f"LSE max abs err {lerr:.2e}, O rel L2 {err:.2e}"

    def host_equality():
        q, k, v = qkv()
        with baatt.Plan(q.shape, k.shape, "float16", keep=0.5, device=index) as plan:
            o_dev = plan(q, k, v)
            assert plan._cuda is not None
        real = cuda.reason_unavailable
        cuda.reason_unavailable = lambda *x: "forced"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                with baatt.Plan(q.shape, k.shape, "float16", keep=0.5, device=index) as plan:
                    o_host = plan(q, k, v)
                    assert plan._cuda is None
        finally:
            cuda.reason_unavailable = real
        assert torch.equal(o_dev, o_host), rel_l2(o_dev, o_host)
        return "bit-identical"

    def reuse():
        with baatt.Plan((1, 4, n, 64), (1, 2, n, 64), "float16", keep=1.0, device=index, lse=True) as plan, NoHost():
            q1, k1, v1 = qkv(h=4, d=64)
            o1 = plan(q1, k1, v1)
            bufs, l1 = plan._cuda, plan.lse().clone()
            q2, k2, v2 = qkv(h=4, d=64)
            o2 = plan(q2, k2, v2)
            assert plan._cuda is bufs, "buffers re-imported"
            e1, e2 = rel_l2(o1, sdpa(q1, k1, v1)), rel_l2(o2, sdpa(q2, k2, v2))
            assert e1 < 5e-3 and e2 < 5e-3, (e1, e2)
            assert not torch.equal(l1, plan.lse())
        return f"rel L2 {e1:.2e}, {e2:.2e}"

    def layouts():
        q, k, v = qkv(h=4, d=64)
        with NoHost():
            o = baatt.attention(*(x.transpose(1, 2) for x in (q, k, v)), keep=1.0, layout="bnhd")
            e = rel_l2(o.transpose(1, 2), sdpa(q, k, v))
            qb, kb, vb = (x.to(torch.bfloat16) for x in (q, k, v))
            ob = baatt.attention(qb, kb, vb, keep=1.0)
            eb = rel_l2(ob, sdpa(qb, kb, vb))
        assert e < 5e-3 and eb < 2e-2 and ob.dtype == torch.bfloat16, (e, eb)
        return f"bnhd {e:.2e}, bf16 {eb:.2e}"

    def release():
        plan = baatt.Plan((1, 2, 128, 64), (1, 2, 128, 64), "float16", dense=True, device=index)
        q, k, v = qkv(h=2, hk=2, n=128, d=64)
        o = plan(q, k, v)
        owners = [b.owner for b in (plan._cuda.q, plan._cuda.k, plan._cuda.v, plan._cuda.o)]
        plan.close()
        torch.cuda.synchronize()
        assert all(w() is None for w in owners), "shared buffers not released"
        assert rel_l2(o, sdpa(q, k, v)) < 5e-3
        return "released"

    failed = 0
    for check in (full_keep_gqa, dense_lse, host_equality, reuse, layouts, release):
        try:
            print(f"PASS {check.__name__}: {check()}", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {check.__name__}:\n{traceback.format_exc()}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
