"""baatt.attention and baatt.Plan on torch tensors (CPU, and CUDA where present): fp32, fp16 and
bf16 against float64 references and torch's scaled_dot_product_attention. Skipped, visibly,
where torch is not installed."""
import numpy as np
import pytest

import baatt
from conftest import lse_reference, rel_l2, softmax_attention, sparse_reference

torch = pytest.importorskip("torch", reason="torch is not installed: the torch tests are skipped")
F = torch.nn.functional

DTYPES = {"float32": (torch.float32, 1e-5), "float16": (torch.float16, 5e-3), "bfloat16": (torch.bfloat16, 2e-2)}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def make(rng, dtype, device, h=4, hk=2, n=192, d=64):
    # generated in float32 and rounded once: the float64 references see the exact tensor values
    t = [torch.from_numpy(rng.standard_normal((1, x, n, d)).astype(np.float32)).to(dtype).to(device)
         for x in (h, hk, hk)]
    return t, [x.float().cpu().numpy() for x in t]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(DTYPES))
def test_dense(rng, name, device):
    dtype, tol = DTYPES[name]
    (q, k, v), ref_in = make(rng, dtype, device)
    copies = [x.clone() for x in (q, k, v)]
    o = baatt.attention(q, k, v, dense=True)
    assert o.dtype == dtype and o.device == q.device and o.shape == q.shape
    assert all(torch.equal(x, c) for x, c in zip((q, k, v), copies)), "an input was modified"
    assert rel_l2(o.float().cpu().numpy(), softmax_attention(*ref_in)) <= tol
    sdpa = F.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1))
    assert rel_l2(o.float().cpu().numpy(), sdpa.float().cpu().numpy()) <= 2 * tol + 1e-4


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(DTYPES))
def test_baatt(rng, name, device):
    dtype, tol = DTYPES[name]
    (q, k, v), ref_in = make(rng, dtype, device, n=256)
    o, sel, st = baatt.attention(q, k, v, keep=0.5, return_selection=True, return_stats=True)
    assert o.dtype == dtype and o.device == q.device
    assert rel_l2(o.float().cpu().numpy(), sparse_reference(*ref_in, sel, 64)) <= tol
    assert st.sparsity > 0


def test_nhd_and_plan(rng):
    (q, k, v), ref_in = make(rng, torch.float16, "cpu", n=128)
    nhd = [x.transpose(1, 2) for x in (q, k, v)]      # non-contiguous views, [B, N, H, d]
    with baatt.Plan(nhd[0].shape, nhd[1].shape, torch.float16, dense=True, layout="bnhd") as plan:
        o = plan(*nhd)
    assert o.shape == nhd[0].shape
    assert rel_l2(o.transpose(1, 2).float().numpy(), softmax_attention(*ref_in)) <= DTYPES["float16"][1]


def test_errors(rng):
    (q, k, v), _ = make(rng, torch.float32, "cpu")
    with pytest.raises(baatt.Error) as e:
        baatt.attention(q.double(), k.double(), v.double())
    assert e.value.status == baatt.Status.UNSUPPORTED_DTYPE
    with pytest.raises(baatt.Error) as e:
        baatt.attention(q, k.half(), v)
    assert e.value.status == baatt.Status.UNSUPPORTED_DTYPE
    with pytest.raises(baatt.Error) as e:
        baatt.Plan(q.shape, k.shape, torch.float32)(q, k.numpy(), v)
    assert e.value.status == baatt.Status.INVALID_ARGUMENT


@pytest.mark.parametrize("device", DEVICES)
def test_lse_and_merge(rng, device):
    """return_lse gives a float32 torch tensor on q's device; merge of two key halves on torch
    tensors = attention over all keys (bf16: the portable kernel's fp32 statistics, or 2^-8 on
    the cooperative-matrix-2 kernel)."""
    (q, k, v), (qn, kn, vn) = make(rng, torch.bfloat16, device, n=160)
    o1, l1 = baatt.attention(q, k[:, :, :70], v[:, :, :70], dense=True, return_lse=True)
    o2, l2 = baatt.attention(q, k[:, :, 70:], v[:, :, 70:], dense=True, return_lse=True)
    assert l1.dtype == torch.float32 and l1.device == q.device and l1.shape == (1, 4, 160)
    o, lse = baatt.merge(o1, l1, o2, l2)
    assert o.dtype == torch.bfloat16 and o.device == q.device
    assert rel_l2(o.float().cpu().numpy(), softmax_attention(qn, kn, vn)) <= 2 * DTYPES["bfloat16"][1]
    assert np.abs(lse.cpu().numpy() - lse_reference(qn, kn)).max() <= 1e-2
