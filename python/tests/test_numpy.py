"""baatt.attention and baatt.Plan on numpy arrays against float64 numpy references and the CLI."""
import subprocess

import numpy as np
import pytest

import baatt
from conftest import TOL, cli_path, qkv, rel_l2, softmax_attention, sparse_reference


def check_selection(sel, keep, b, h, hk, n, nk, block):
    nq_blocks, nk_blocks = -(-n // block), -(-nk // block)
    assert sel.mask.shape == (b, h, nq_blocks, nk_blocks) and sel.mask.dtype == bool
    assert sel.perm_q.shape == (b, h, n) and sel.perm_k.shape == (b, hk, nk)
    assert (np.sort(sel.perm_q, -1) == np.arange(n)).all(), "perm_q is not a permutation"
    assert (np.sort(sel.perm_k, -1) == np.arange(nk)).all(), "perm_k is not a permutation"
    want = max(1, int(np.ceil(np.float32(keep) * nk_blocks - 1e-6)))
    assert (sel.mask.sum(-1) == want).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("h,hk,d", [(2, 2, 64), (4, 1, 128)])
def test_dense_matches_float64(rng, dtype, h, hk, d):
    q, k, v = qkv(rng, b=2, h=h, hk=hk, n=200, nk=136, d=d, dtype=dtype)
    o = baatt.attention(q, k, v, dense=True)
    assert o.shape == q.shape and o.dtype == dtype
    assert rel_l2(o, softmax_attention(q, k, v)) <= TOL[dtype]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("block,sort", [(64, "norm"), (32, "off"), (128, "norm")])
def test_baatt_matches_its_selection(rng, dtype, block, sort):
    b, h, hk, n = 1, 4, 2, 320
    q, k, v = qkv(rng, b=b, h=h, hk=hk, n=n, dtype=dtype)
    o, sel, st = baatt.attention(q, k, v, keep=0.5, block=block, sort=sort, return_selection=True, return_stats=True)
    check_selection(sel, 0.5, b, h, hk, n, n, block)
    if sort == "off":
        assert (sel.perm_q == np.arange(n)).all() and not sel.sorted_heads.any()
    else:
        assert sel.sorted_heads.all()
    assert rel_l2(o, sparse_reference(q, k, v, sel, block)) <= TOL[dtype]
    assert set(st.stage_ms) == set(baatt.STAGES) and 0 < st.sparsity < 1
    if st.timed:
        assert st.gpu_ms > 0 and st.stage_ms["attend"] > 0


def test_threshold_scale_and_auto(rng):
    q, k, v = qkv(rng, h=2, hk=2, n=256)
    o, sel = baatt.attention(q, k, v, threshold=0.8, scale=0.05, sort="auto", return_selection=True)
    assert (sel.mask.sum(-1) >= 1).all()
    assert rel_l2(o, sparse_reference(q, k, v, sel, 64, scale=0.05)) <= TOL[np.float32]


def test_default_sort_is_auto(rng):
    # the default of issue 17 (bench/results/accuracy.md, "Defaults"): the same selection as sort="auto"
    import inspect
    import baatt.diffusers as bd
    for f in (baatt.attention, baatt.Plan.__init__):
        assert inspect.signature(f).parameters["sort"].default == "auto"
    assert bd.Config().sort == "auto"
    q, k, v = qkv(rng, h=2, hk=2, n=256)
    _, a = baatt.attention(q, k, v, keep=0.25, return_selection=True)
    _, b = baatt.attention(q, k, v, keep=0.25, sort="auto", return_selection=True)
    assert (a.mask == b.mask).all() and (a.perm_k == b.perm_k).all() and (a.sorted_heads == b.sorted_heads).all()


def planted_covariance(rng, b=1, h=4, hk=2, n=256, nk=512, d=64, block=64):
    # decoy key blocks (every other one) with mean 0 and a large variance on dims 0, 1: on even kv
    # heads the decoys are x (e0 + e1), so q.k = +-32 and the covariance term is right to pick them
    # (lambda 1); on odd ones x (e0 - e1), so q.k = 0 and the term is wrong (lambda 0)
    q = 0.1 * rng.standard_normal((b, h, n, d)).astype(np.float32)
    k = 0.1 * rng.standard_normal((b, hk, nk, d)).astype(np.float32)
    v = rng.standard_normal((b, hk, nk, d)).astype(np.float32)
    q[..., :2] += 2.0
    j = np.arange(nk)
    decoy = (j // block) % 2 == 0
    x = np.where(j % 2 == 1, 8.0, -8.0)
    for kh in range(hk):
        k[:, kh, :, 0] += np.where(decoy, x, 2.0)
        k[:, kh, :, 1] += np.where(decoy, -x if kh % 2 else x, 2.0)
    return q, k, v


@pytest.mark.parametrize("sort", ["auto", "norm", "off"])
def test_covariance_auto(rng, sort):
    q, k, v = planted_covariance(rng)
    o, sel = baatt.attention(q, k, v, sort=sort, covariance="auto", return_selection=True)
    assert sel.cov_heads.tolist() == [[True, False]]  # planted: the choice differs per kv head
    assert rel_l2(o, sparse_reference(q, k, v, sel, 64)) <= TOL[np.float32]
    for fixed, want in (("on", True), (True, True), ("off", False), (False, False)):
        _, s = baatt.attention(q, k, v, sort=sort, covariance=fixed, return_selection=True)
        assert (s.cov_heads == want).all()
        if fixed in ("on", "off") and sort != "auto":  # the auto run's head kh is this fixed run's head kh
            kh = 0 if want else 1
            assert (sel.mask[:, 2 * kh:2 * kh + 2] == s.mask[:, 2 * kh:2 * kh + 2]).all()


def test_default_covariance_is_auto(rng):
    import inspect
    import baatt.diffusers as bd
    for f in (baatt.attention, baatt.Plan.__init__):
        assert inspect.signature(f).parameters["covariance"].default == "auto"
    assert bd.Config().covariance == "auto"
    q, k, v = planted_covariance(rng)
    _, a = baatt.attention(q, k, v, return_selection=True)
    _, b = baatt.attention(q, k, v, covariance="auto", return_selection=True)
    assert (a.mask == b.mask).all() and (a.cov_heads == b.cov_heads).all()


def test_nhd_layout(rng):
    q, k, v = qkv(rng, b=2, h=4, hk=2, n=96)
    nhd = [np.ascontiguousarray(np.swapaxes(x, 1, 2)) for x in (q, k, v)]
    o = baatt.attention(*nhd, dense=True, layout="bnhd")
    assert o.shape == nhd[0].shape
    assert rel_l2(np.swapaxes(o, 1, 2), softmax_attention(q, k, v)) <= TOL[np.float32]


def test_plan_reuse_and_inputs_untouched(rng):
    with baatt.Plan((1, 4, 192, 64), (1, 2, 192, 64), "float32", keep=0.25) as plan:
        for _ in range(2):
            q, k, v = qkv(rng, n=192)
            copies = [x.copy() for x in (q, k, v)]
            o = plan(q, k, v)
            assert all((x == c).all() for x, c in zip((q, k, v), copies))
            assert rel_l2(o, sparse_reference(q, k, v, plan.selection(), 64)) <= TOL[np.float32]
        assert plan.scratch_bytes > 0 and plan.validation_messages() == 0
    with pytest.raises(baatt.Error) as e:
        plan(q, k, v)
    assert e.value.status == baatt.Status.INVALID_ARGUMENT


def test_non_contiguous_input(rng):
    q, k, v = qkv(rng, n=128, d=128)
    qs = q[:, :, :, ::2]   # a strided view, head_dim 64
    ks, vs = k[:, :, :, ::2], v[:, :, :, ::2]
    o = baatt.attention(qs, ks, vs, dense=True)
    assert rel_l2(o, softmax_attention(qs, ks, vs)) <= TOL[np.float32]


@pytest.mark.parametrize("kwargs,status", [
    (dict(keep=0.0), baatt.Status.BAD_KEEP_RATIO),
    (dict(keep=1.5), baatt.Status.BAD_KEEP_RATIO),
    (dict(threshold=2.0), baatt.Status.BAD_THRESHOLD),
    (dict(block=48), baatt.Status.UNSUPPORTED_BLOCK_SIZE),
    (dict(scale=-1.0), baatt.Status.BAD_SCALE),
    (dict(sort="random"), baatt.Status.INVALID_ARGUMENT),
    (dict(covariance="maybe"), baatt.Status.INVALID_ARGUMENT),
    (dict(covariance=2), baatt.Status.INVALID_ARGUMENT),
    (dict(layout="hnd"), baatt.Status.INVALID_ARGUMENT),
])
def test_bad_options(rng, kwargs, status):
    q, k, v = qkv(rng, n=64)
    with pytest.raises(baatt.Error) as e:
        baatt.attention(q, k, v, **kwargs)
    assert e.value.status == status and e.value.message


def test_bad_tensors(rng):
    q, k, v = qkv(rng, n=64)
    cases = [
        ((q.astype(np.float64), k, v), baatt.Status.UNSUPPORTED_DTYPE),
        ((q, k.astype(np.float16), v), baatt.Status.UNSUPPORTED_DTYPE),
        ((q[0], k, v), baatt.Status.BAD_SHAPE),
        ((q, k, v[:, :, :32]), baatt.Status.BAD_SHAPE),
        ((q[:, :3], k, v), baatt.Status.GQA_MISMATCH),
        ((q[..., :48], k[..., :48], v[..., :48]), baatt.Status.UNSUPPORTED_HEAD_DIM),
    ]
    for args, status in cases:
        with pytest.raises(baatt.Error) as e:
            baatt.attention(*args)
        assert e.value.status == status, e.value


def test_bad_device():
    with pytest.raises(baatt.Error) as e:
        baatt.Plan((1, 1, 64, 64), (1, 1, 64, 64), device="no such device anywhere")
    assert e.value.status == baatt.Status.NO_DEVICE and "no such device" in e.value.message


def test_devices(vulkan_device):
    devs = baatt.devices()
    assert sum(d.picked for d in devs) == 1 and vulkan_device.name
    plan = baatt.Plan((1, 1, 64, 64), (1, 1, 64, 64), device=vulkan_device.index)
    assert plan.device.name == vulkan_device.name
    assert baatt.library_version() == baatt.__version__


@pytest.mark.skipif(cli_path() is None, reason="the baatt CLI was not found (BAATT_CLI, the wheel, build/baatt)")
def test_same_as_cli(rng, tmp_path):
    q, k, v = qkv(rng, h=4, hk=2, n=256)
    files = {x: tmp_path / f"{x}.npy" for x in ("q", "k", "v", "o", "m", "pq", "pk")}
    for name, x in zip("qkv", (q, k, v)):
        np.save(files[name], x)
    cmd = [str(cli_path()), "attention", "--q", files["q"], "--k", files["k"], "--v", files["v"], "--out", files["o"],
           "--keep", "0.25", "--mask-out", files["m"], "--perm-q-out", files["pq"], "--perm-k-out", files["pk"]]
    subprocess.run([str(c) for c in cmd], check=True, capture_output=True, timeout=600)
    o, sel = baatt.attention(q, k, v, keep=0.25, return_selection=True)
    assert (sel.mask == np.load(files["m"]).astype(bool)).all()
    assert (sel.perm_q == np.load(files["pq"])).all() and (sel.perm_k == np.load(files["pk"])).all()
    np.testing.assert_allclose(o, np.load(files["o"]), rtol=1e-6, atol=1e-6)


def test_sizes_beyond_uint32():
    with pytest.raises(baatt.Error) as e:
        baatt.Plan((1, 1, 2**32 + 64, 64), (1, 1, 64, 64))
    assert e.value.status == baatt.Status.BAD_SHAPE
