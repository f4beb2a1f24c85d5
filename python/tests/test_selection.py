"""Selections across calls and from other selectors: Plan(reuse=...), Plan.set_selection,
attention(mask=...), and the conversions of baatt.masks, against float64 references on fresh random
inputs (the torch BlockMask parts skipped, visibly, where torch is not installed)."""
import numpy as np
import pytest

import baatt
from baatt import masks
from conftest import TOL, qkv, rel_l2, sparse_reference

try:
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed: the BlockMask tests are skipped")


def identity_selection(mask, b, h, hk, n, nk, perm_q=None, perm_k=None):
    return baatt.Selection(mask=np.asarray(mask, bool),
                           perm_q=np.broadcast_to(np.arange(n, dtype=np.int32), (b, h, n)) if perm_q is None else perm_q,
                           perm_k=np.broadcast_to(np.arange(nk, dtype=np.int32), (b, hk, nk)) if perm_k is None
                           else perm_k, sorted_heads=np.zeros((b, hk), bool))


def random_mask(rng, shape, density=0.3):
    m = rng.random(shape) < density
    empty = ~m.any(-1)
    m[empty, rng.integers(0, shape[-1], empty.sum())] = True
    return m


# ------------------------------------------------------------------------------------------------
# reuse

@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("sort", ["norm", "auto"])
def test_reuse(rng, dtype, sort):
    b, h, hk, n, nk, block = 1, 4, 2, 256, 200, 32
    with baatt.Plan((b, h, n, 64), (b, hk, nk, 64), dtype, keep=0.3, block=block, sort=sort) as plan:
        q, k, v = qkv(rng, b, h, hk, n, nk, dtype=dtype)
        o1 = plan(q, k, v)
        sel = plan.selection()
        o2 = plan(q, k, v, reuse=True)        # the same inputs: the same bits
        assert np.array_equal(o1, o2) and plan.reuse
        st = plan.stats()
        assert all(st.stage_ms[s] == 0 for s in ("sort", "stats", "score", "select"))
        for _ in range(2):                    # new inputs (reuse kept): the old selection
            q, k, v = qkv(rng, b, h, hk, n, nk, dtype=dtype)
            o = plan(q, k, v)
            assert rel_l2(o, sparse_reference(q, k, v, sel, block)) <= TOL[dtype]
        again = plan.selection()
        assert (again.mask == sel.mask).all() and (again.perm_q == sel.perm_q).all()
        assert (again.sorted_heads == sel.sorted_heads).all()
        o = plan(q, k, v, reuse=False)        # refreshed: its own selection
        assert not plan.reuse
        assert rel_l2(o, sparse_reference(q, k, v, plan.selection(), block)) <= TOL[dtype]


def test_reuse_before_selection(rng):
    q, k, v = qkv(rng, n=128)
    with baatt.Plan(q.shape, k.shape) as plan:
        with pytest.raises(baatt.Error) as e:
            plan(q, k, v, reuse=True)
        assert e.value.status == baatt.Status.NO_SELECTION and "no selection" in e.value.message
        plan(q, k, v, reuse=False)


# ------------------------------------------------------------------------------------------------
# snapshots

def same_selection(a, b):
    return all(np.array_equal(getattr(a, f), getattr(b, f))
               for f in ("mask", "perm_q", "perm_k", "sorted_heads", "cov_heads"))


@pytest.mark.parametrize("dtype,sort", [(np.float32, "norm"), (np.float16, "auto")])
def test_snapshot(rng, dtype, sort):
    """Plan A estimates on X (snapshot), then on Y, then loads the snapshot and runs Z: the output
    of plan B that estimated on X and reused on Z, and A reports X's selection."""
    b, h, hk, n, nk, block = 1, 4, 2, 256, 200, 32
    shapes = ((b, h, n, 64), (b, hk, nk, 64))
    with baatt.Plan(*shapes, dtype, keep=0.3, block=block, sort=sort) as a, \
            baatt.Plan(*shapes, dtype, keep=0.3, block=block, sort=sort) as bp:
        x = qkv(rng, b, h, hk, n, nk, dtype=dtype)
        a(*x)
        snap = a.snapshot()
        sel_x = a.selection()
        bp(*x)
        y = qkv(rng, b, h, hk, n, nk, dtype=dtype)
        a(*y, reuse=False)
        assert not same_selection(a.selection(), sel_x)
        z = qkv(rng, b, h, hk, n, nk, dtype=dtype)
        a.load(snap)
        assert a.reuse
        oa = a(*z)
        assert same_selection(a.selection(), sel_x)
        assert np.array_equal(oa, bp(*z, reuse=True))
        assert rel_l2(oa, sparse_reference(*z, sel_x, block)) <= TOL[dtype]
        a.load(snap)  # loads again; the snapshot is not consumed
        assert np.array_equal(a(*z), oa)
    assert snap.closed  # freed with the plan that made it


def test_snapshot_errors(rng):
    q, k, v = qkv(rng, n=128)
    with baatt.Plan(q.shape, k.shape, block=32) as plan:
        with pytest.raises(baatt.Error) as e:
            plan.snapshot()
        assert e.value.status == baatt.Status.NO_SELECTION and "no selection" in e.value.message
        plan(q, k, v)
        snap = plan.snapshot()
        with baatt.Plan(q.shape, (1, 2, 160, 64), block=32) as other:
            with pytest.raises(baatt.Error) as e:
                other.load(snap)
            assert e.value.status == baatt.Status.INVALID_ARGUMENT and "kv_len" in e.value.message
        with baatt.Plan(q.shape, k.shape, block=64) as other:
            with pytest.raises(baatt.Error) as e:
                other.load(snap)
            assert "block_size" in e.value.message
        with pytest.raises(TypeError):
            plan.load(plan.selection())
        snap.close()
        snap.close()  # idempotent
        with pytest.raises(baatt.Error) as e:
            plan.load(snap)
        assert e.value.status == baatt.Status.INVALID_ARGUMENT and "closed" in e.value.message


# ------------------------------------------------------------------------------------------------
# given selections

@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("d,block", [(64, 32), (128, 64)])
@pytest.mark.parametrize("order", ["original", "permuted"])
def test_given_mask(rng, dtype, d, block, order):
    b, h, hk, n, nk = 2, 4, 2, 200, 264
    q, k, v = qkv(rng, b, h, hk, n, nk, d=d, dtype=dtype)
    shape = (b, h, -(-n // block), -(-nk // block))
    m = random_mask(rng, shape)
    pq = pk = None
    if order == "permuted":
        pq = np.argsort(rng.random((b, h, n)), -1).astype(np.int32)
        pk = np.argsort(rng.random((b, hk, nk)), -1).astype(np.int32)
    copies = [None if x is None else x.copy() for x in (q, k, v, m, pq, pk)]
    o = baatt.attention(q, k, v, block=block, mask=m, perm_q=pq, perm_k=pk)
    ref = sparse_reference(q, k, v, identity_selection(m, b, h, hk, n, nk, pq, pk), block)
    assert rel_l2(o, ref) <= TOL[dtype]
    for x, c in zip((q, k, v, m, pq, pk), copies):
        assert x is None or np.array_equal(x, c), "an argument was modified"


def test_given_mask_plan(rng):
    """A plan keeps the given selection over calls; a [1, 1, ...] mask is broadcast; reuse=False
    then estimates again; Plan.selection() returns what was given."""
    b, h, hk, n = 1, 4, 2, 256
    with baatt.Plan((b, h, n, 64), (b, hk, n, 64), keep=0.25) as plan:
        m = random_mask(rng, (1, 1, 4, 4), 0.5)
        plan.set_selection(m.astype(np.uint8))
        assert plan.reuse
        for _ in range(2):
            q, k, v = qkv(rng, b, h, hk, n)
            o = plan(q, k, v)
            full = np.broadcast_to(m, (b, h, 4, 4))
            assert rel_l2(o, sparse_reference(q, k, v, identity_selection(full, b, h, hk, n, n), 64)) <= 1e-5
        sel = plan.selection()
        assert (sel.mask == full).all() and not sel.sorted_heads.any()
        plan(q, k, v, reuse=False)
        assert (plan.selection().mask.sum(-1) == 1).all()   # keep 0.25 of 4 blocks


@pytest.mark.parametrize("case,status,fragment", [
    ("byte", baatt.Status.BAD_SELECTION, "0 or 1"),
    ("empty", baatt.Status.BAD_SELECTION, "selects no key block"),
    ("shape", baatt.Status.BAD_SHAPE, "the plan needs"),
    ("float", baatt.Status.BAD_SELECTION, "dtype float32"),
    ("perm", baatt.Status.BAD_SELECTION, "perm_k is not a permutation"),
    ("perm_shape", baatt.Status.BAD_SHAPE, "perm_q has shape"),
    ("perm_alone", baatt.Status.INVALID_ARGUMENT, "need a mask"),
])
def test_given_mask_errors(rng, case, status, fragment):
    q, k, v = qkv(rng, h=2, hk=1, n=128)
    m = np.ones((1, 2, 2, 2), np.uint8)
    pq = np.broadcast_to(np.arange(128, dtype=np.int32), (1, 2, 128)).copy()
    pk = np.arange(128, dtype=np.int32)[None, None].copy()
    kwargs = dict(mask=m)
    if case == "byte":
        m[0, 1, 0, 1] = 2
    elif case == "empty":
        m[0, 0, 1] = 0
    elif case == "shape":
        kwargs["mask"] = m[:, :, :1]
    elif case == "float":
        kwargs["mask"] = m.astype(np.float32)
    elif case == "perm":
        pk[0, 0, 3] = 4
        kwargs.update(perm_q=pq, perm_k=pk)
    elif case == "perm_shape":
        kwargs.update(perm_q=pq[:, :1])
    else:
        kwargs = dict(perm_q=pq)
    with pytest.raises(baatt.Error) as e:
        baatt.attention(q, k, v, **kwargs)
    assert e.value.status == status and fragment in e.value.message, e.value


# ------------------------------------------------------------------------------------------------
# conversions

def test_flex_round_trip(rng):
    m = random_mask(rng, (2, 3, 5, 7))
    num, idx = masks.to_flex(m)
    assert num.dtype == np.int32 and idx.dtype == np.int32 and num.shape == (2, 3, 5) and idx.shape == (2, 3, 5, 7)
    assert (num == m.sum(-1)).all()
    for row, (n_, ix) in zip(m.reshape(-1, 7), zip(num.reshape(-1), idx.reshape(-1, 7))):
        assert list(ix[:n_]) == list(np.nonzero(row)[0]) and sorted(ix) == list(range(7))
    assert (masks.from_flex(num, idx) == m).all()
    # flex's partial + full blocks are united; k_blocks widens a narrower index array
    full_num, full_idx = masks.to_flex(np.zeros_like(m))
    assert (masks.from_flex(full_num, full_idx, num, idx) == m).all()
    assert masks.from_flex(np.minimum(num, 3), idx[..., :3], k_blocks=7).shape == (2, 3, 5, 7)


def test_bsr_round_trip(rng):
    m = random_mask(rng, (2, 2, 6, 9))
    indptr, indices = masks.to_bsr(m)
    assert indptr.shape == (2 * 2 * 6 + 1,) and indptr[-1] == m.sum() and indices.dtype == np.int32
    assert (masks.from_bsr(indptr, indices, m.shape) == m).all()
    scipy = pytest.importorskip("scipy.sparse", reason="scipy is not installed: the CSR comparison is skipped")
    assert (scipy.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(24, 9)).toarray() == m.reshape(24, 9)).all()


def test_conversion_errors():
    m = np.ones((1, 1, 2, 3), bool)
    num, idx = masks.to_flex(m)
    for call, status in [
        (lambda: masks.from_flex(num, idx + 3), baatt.Status.BAD_SELECTION),
        (lambda: masks.from_flex(num + 4, idx), baatt.Status.BAD_SELECTION),
        (lambda: masks.from_flex(num[..., :1], idx), baatt.Status.BAD_SHAPE),
        (lambda: masks.from_flex(num, None), baatt.Status.INVALID_ARGUMENT),
        (lambda: masks.from_bsr([0, 1], [0], (1, 1, 2, 3)), baatt.Status.BAD_SHAPE),
        (lambda: masks.from_bsr([0, 2, 1], [0, 1], (1, 1, 2, 3)), baatt.Status.BAD_SELECTION),
        (lambda: masks.from_bsr([0, 1, 2], [0, 3], (1, 1, 2, 3)), baatt.Status.BAD_SELECTION),
        (lambda: masks.to_bsr(m[0]), baatt.Status.BAD_SHAPE),
        (lambda: masks.to_flex(m * 2), baatt.Status.BAD_SELECTION),
    ]:
        with pytest.raises(baatt.Error) as e:
            call()
        assert e.value.status == status, e.value


@needs_torch
def test_block_mask_from_flex_attention(rng):
    """A sliding-tile mask built by flex_attention (full and partial blocks), run on baatt and on
    flex_attention over the same blocks; to_block_mask gives back the same dense block layout."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    n, block = 512, 64
    bm = create_block_mask(lambda b, h, qi, ki: (qi // block - ki // block).abs() <= 1, 1, 1, n, n, device="cpu",
                           BLOCK_SIZE=block)
    m = masks.from_block_mask(bm)
    assert (m == bm.to_dense().numpy().astype(bool)).all()
    back = masks.to_block_mask(m, block)
    assert (back.to_dense().numpy().astype(bool) == m).all()
    q, k, v = qkv(rng, h=2, hk=2, n=n)
    o = baatt.attention(q, k, v, block=block, mask=m)
    ref = sparse_reference(q, k, v, identity_selection(np.broadcast_to(m, (1, 2, 8, 8)), 1, 2, 2, n, n), block)
    assert rel_l2(o, ref) <= TOL[np.float32]
    tq, tk, tv = (torch.from_numpy(x).double() for x in (q, k, v))
    flex = flex_attention(tq, tk, tv, block_mask=masks.to_block_mask(m, block)).numpy()
    assert rel_l2(o, flex) <= TOL[np.float32]


@needs_torch
def test_torch_tensors_as_masks(rng):
    m = torch.from_numpy(random_mask(rng, (1, 2, 3, 4)))
    num, idx = masks.to_flex(m)
    assert (masks.from_flex(torch.from_numpy(num), torch.from_numpy(idx)) == m.numpy()).all()
    q, k, v = (torch.from_numpy(x) for x in qkv(rng, h=2, hk=1, n=150, nk=256))
    o = baatt.attention(q, k, v, mask=m)
    ref = sparse_reference(q.numpy(), k.numpy(), v.numpy(), identity_selection(m.numpy(), 1, 2, 1, 150, 256), 64)
    assert rel_l2(o.numpy(), ref) <= TOL[np.float32]
