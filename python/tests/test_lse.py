"""The log-sum-exp output (Plan(lse=True), attention(return_lse=True)) against float64 numpy, and
baatt.merge: two attentions over disjoint key halves merge into the one over all keys."""
import numpy as np
import pytest

import baatt
from conftest import TOL, lse_reference, qkv, rel_l2, softmax_attention, token_mask

# LSE tolerance, absolute: fp32 row statistics over exact products (test_lse.c); the NVIDIA
# cooperative-matrix-2 kernel sums probabilities rounded to fp16 (2^-11 relative).
LSE_TOL = {np.float32: 2e-5, np.float16: 6e-4}


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("h,hk,d", [(2, 2, 64), (4, 1, 128)])
def test_dense_lse(rng, dtype, h, hk, d):
    q, k, v = qkv(rng, b=2, h=h, hk=hk, n=130, nk=201, d=d, dtype=dtype)
    o, lse = baatt.attention(q, k, v, dense=True, return_lse=True)
    assert lse.shape == (2, h, 130) and lse.dtype == np.float32
    assert np.abs(lse - lse_reference(q, k)).max() <= LSE_TOL[dtype]
    assert rel_l2(o, softmax_attention(q, k, v)) <= TOL[dtype]


@pytest.mark.parametrize("dtype,sort,block", [(np.float32, "norm", 64), (np.float16, "off", 32),
                                              (np.float16, "auto", 64), (np.float32, "norm", 128)])
def test_sparse_lse(rng, dtype, sort, block):
    q, k, v = qkv(rng, b=1, h=4, hk=2, n=300, nk=280, dtype=dtype)
    o, lse, sel = baatt.attention(q, k, v, keep=0.4, block=block, sort=sort, return_lse=True, return_selection=True)
    ref = lse_reference(q, k, token_mask=token_mask(sel, block, 300, 280))
    assert np.abs(lse - ref).max() <= LSE_TOL[dtype]
    assert (lse < lse_reference(q, k)).all()  # a strict subset of the keys of every row


def test_layout_and_scale(rng):
    q, k, v = qkv(rng, b=1, h=4, hk=2, n=96)
    nhd = [np.ascontiguousarray(np.swapaxes(x, 1, 2)) for x in (q, k, v)]
    _, lse = baatt.attention(*nhd, dense=True, layout="bnhd", scale=0.3, return_lse=True)
    assert lse.shape == (1, 4, 96)  # [B, H, N] whatever the layout
    assert np.abs(lse - lse_reference(q, k, scale=0.3)).max() <= LSE_TOL[np.float32]


@pytest.mark.parametrize("dtype,layout", [(np.float32, "bhnd"), (np.float16, "bnhd")])
def test_merge_key_halves(rng, dtype, layout):
    q, k, v = qkv(rng, b=1, h=4, hk=2, n=120, nk=250, dtype=dtype)
    cut = 90  # unequal parts
    if layout == "bnhd":
        q, k, v = (np.ascontiguousarray(np.swapaxes(x, 1, 2)) for x in (q, k, v))
        parts = [(k[:, :cut], v[:, :cut]), (k[:, cut:], v[:, cut:])]
    else:
        parts = [(k[:, :, :cut], v[:, :, :cut]), (k[:, :, cut:], v[:, :, cut:])]
    (o1, l1), (o2, l2) = (baatt.attention(q, kp, vp, dense=True, layout=layout, return_lse=True) for kp, vp in parts)
    o, lse = baatt.merge(o1, l1, o2, l2, layout=layout)
    o_all, lse_all = baatt.attention(q, k, v, dense=True, layout=layout, return_lse=True)
    assert o.dtype == dtype and o.shape == o_all.shape and lse.dtype == np.float32
    assert np.abs(lse - lse_all).max() <= 2 * LSE_TOL[dtype]
    bhnd = (lambda x: x) if layout == "bhnd" else (lambda x: np.swapaxes(x, 1, 2))
    ref = softmax_attention(bhnd(q), bhnd(k), bhnd(v))
    assert rel_l2(bhnd(o), ref) <= 2 * TOL[dtype]  # two roundings to dtype: each part's, then the merge's
    assert np.abs(lse - lse_reference(bhnd(q), bhnd(k))).max() <= 2 * LSE_TOL[dtype]


def test_merge_empty_parts():
    o1, o2 = np.ones((1, 1, 2, 4), np.float32), np.full((1, 1, 2, 4), 3, np.float32)
    l1 = np.array([[[-np.inf, -np.inf]]], np.float32)
    l2 = np.array([[[0.5, -np.inf]]], np.float32)
    o, lse = baatt.merge(o1, l1, o2, l2)
    assert (o[0, 0, 0] == 3).all() and lse[0, 0, 0] == 0.5  # an empty part contributes nothing
    assert (o[0, 0, 1] == 0).all() and np.isneginf(lse[0, 0, 1])  # no keys at all


def test_lse_errors(rng):
    q, k, v = qkv(rng, h=2, hk=2, n=64)
    with baatt.Plan(q.shape, k.shape, np.float32, dense=True) as plan:
        plan(q, k, v)
        with pytest.raises(baatt.Error) as e:
            plan.lse()
        assert e.value.status == baatt.Status.NO_LSE and "cfg.lse" in e.value.message
    with baatt.Plan(q.shape, k.shape, np.float32, dense=True, lse=True) as plan:
        with pytest.raises(baatt.Error) as e:
            plan.lse()
        assert e.value.status == baatt.Status.NOT_READY
    o = np.zeros((1, 2, 64, 64), np.float32)
    with pytest.raises(baatt.Error) as e:
        baatt.merge(o, np.zeros((1, 2, 63), np.float32), o, np.zeros((1, 2, 64), np.float32))
    assert e.value.status == baatt.Status.BAD_SHAPE
