"""Shared fixtures: a random generator per test, float64 references, and a visible skip where no
Vulkan device exists (never a silent pass)."""
import os
from pathlib import Path

import numpy as np
import pytest

import baatt


@pytest.fixture(scope="session", autouse=True)
def vulkan_device():
    try:
        devs = baatt.devices()
    except baatt.Error as e:
        pytest.skip(f"no Vulkan: {e}")
    if not devs:
        pytest.skip("no Vulkan device")
    return next(d for d in devs if d.picked)


@pytest.fixture
def rng(request):
    # a fresh seed per test, printed on failure so a failure can be replayed (BAATT_SEED=...)
    seed = int(os.environ.get("BAATT_SEED", np.random.SeedSequence().entropy % 2**32))
    request.node.user_properties.append(("seed", seed))
    print(f"seed {seed}")
    return np.random.default_rng(seed)


def qkv(rng, b=1, h=4, hk=2, n=256, nk=None, d=64, dtype=np.float32):
    nk = n if nk is None else nk
    q = rng.standard_normal((b, h, n, d)).astype(dtype)
    k = rng.standard_normal((b, hk, nk, d)).astype(dtype)
    v = rng.standard_normal((b, hk, nk, d)).astype(dtype)
    return q, k, v


def softmax_attention(q, k, v, scale=None, token_mask=None):
    """float64 attention [B, H, Nq, d] over [B, H_kv, Nk, d] (GQA by repetition)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    rep = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
    s = q @ np.swapaxes(k, -1, -2) * (scale if scale else 1.0 / np.sqrt(q.shape[-1]))
    if token_mask is not None:
        s = np.where(token_mask, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


def lse_reference(q, k, scale=None, token_mask=None):
    """float64 log-sum-exp [B, H, Nq] of the scaled scores (GQA by repetition) over the keys
    token_mask (original order) allows."""
    q, k = np.asarray(q, np.float64), np.repeat(np.asarray(k, np.float64), q.shape[1] // k.shape[1], axis=1)
    s = q @ np.swapaxes(k, -1, -2) * (scale if scale else 1.0 / np.sqrt(q.shape[-1]))
    if token_mask is not None:
        s = np.where(token_mask, s, -np.inf)
    m = s.max(-1)
    return m + np.log(np.exp(s - m[..., None]).sum(-1))


def token_mask(sel, block, n, nk):
    """The selection as a boolean [B, H, Nq, Nk] mask in the original token order."""
    b, h = sel.mask.shape[:2]
    pk = np.repeat(sel.perm_k, h // sel.perm_k.shape[1], axis=1)
    tm = np.repeat(np.repeat(sel.mask, block, 2), block, 3)[:, :, :n, :nk]
    out = np.zeros_like(tm)
    for i in range(b):
        for j in range(h):
            out[i, j][np.ix_(sel.perm_q[i, j], pk[i, j])] = tm[i, j]
    return out


def sparse_reference(q, k, v, sel, block, scale=None):
    """BA-Att's output for a given selection, in float64: gather Q/K/V into the sorted order,
    attend within the selected blocks, scatter rows back to their original positions."""
    b_, h_, n, _ = q.shape
    rep = h_ // k.shape[1]
    nk = k.shape[2]
    idx_q = sel.perm_q[..., None]
    idx_k = np.repeat(sel.perm_k, rep, axis=1)[..., None]
    qs = np.take_along_axis(np.asarray(q, np.float64), idx_q, 2)
    kr, vr = (np.repeat(np.asarray(x, np.float64), rep, axis=1) for x in (k, v))
    ks, vs = np.take_along_axis(kr, idx_k, 2), np.take_along_axis(vr, idx_k, 2)
    tm = np.repeat(np.repeat(sel.mask, block, 2), block, 3)[:, :, :n, :nk]
    o_sorted = softmax_attention(qs, ks, vs, scale, tm)
    out = np.empty_like(o_sorted)
    np.put_along_axis(out, idx_q, o_sorted, 2)
    return out


def rel_l2(a, ref):
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


TOL = {np.float32: 1e-5, np.float16: 5e-3}  # fa_baseline.py's rel L2 tolerances


def cli_path():
    """The CLI to compare with: $BAATT_CLI, the wheel's copy, or the checkout's build/baatt."""
    env = os.environ.get("BAATT_CLI")
    pkg = Path(baatt.__file__).parent
    for p in ([Path(env)] if env else []) + [pkg / "bin" / "baatt", pkg.parent.parent / "build" / "baatt"]:
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None
