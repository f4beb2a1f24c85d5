"""Device-resident torch CUDA tensors (baatt.cuda): results against torch SDPA and the host path,
GQA, the LSE, no host copy, buffer reuse across calls, layouts and strides. Skipped (visibly)
without a CUDA device or without Vulkan/CUDA interop on it; the fallback decision itself is
tested without a GPU."""
import ctypes
import math
import mmap
import os
import warnings

import numpy as np
import pytest

import baatt
from baatt import _api, cuda

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _interop_device():
    """cuda:0 when it and its Vulkan device can share memory; else skip with the reason."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    dev = torch.device("cuda", 0)
    try:
        index = cuda.vulkan_device(dev)
    except Exception as e:
        pytest.skip(f"no Vulkan device for {dev}: {e}")
    info = baatt.devices()[index]
    reason = cuda.reason_unavailable(info, dev)
    if reason:
        pytest.skip(f"CUDA/Vulkan interop unavailable: {reason}")
    return dev, index


@pytest.fixture
def gpu():
    return _interop_device()


@pytest.fixture
def no_host(monkeypatch):
    """Any host round trip fails the test: the CUDA path must not take one."""
    def boom(*a, **k):
        raise AssertionError("the host path ran")
    monkeypatch.setattr(_api, "_run_host", boom)
    monkeypatch.setattr(_api, "_Host", boom)


def _qkv(gen, dev, b=1, h=8, hk=2, n=512, nk=None, d=128, dtype=torch.float16):
    nk = n if nk is None else nk
    mk = lambda *s: torch.randn(*s, generator=gen, device=dev, dtype=torch.float32).to(dtype)  # noqa: E731
    return mk(b, h, n, d), mk(b, hk, nk, d), mk(b, hk, nk, d)


def _sdpa(q, k, v):
    """float32 attention, GQA by repetition."""
    rep = q.shape[1] // k.shape[1]
    q, k, v = (x.float() for x in (q, k, v))
    return F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1))


def _rel_l2(a, ref):
    a, ref = a.double(), ref.double()
    return float((a - ref).norm() / ref.norm())


@pytest.fixture
def gen(rng):
    g = torch.Generator(device="cuda") if torch.cuda.is_available() else torch.Generator()
    g.manual_seed(int(rng.integers(2**31)))
    return g


def test_full_keep_matches_sdpa_gqa(gpu, gen, no_host):
    dev, index = gpu
    q, k, v = _qkv(gen, dev, h=8, hk=2, n=512, nk=384)
    before = [x.clone() for x in (q, k, v)]
    o = baatt.attention(q, k, v, keep=1.0)
    assert o.device == dev and o.dtype == torch.float16 and o.shape == q.shape
    assert _rel_l2(o, _sdpa(q, k, v)) < 5e-3
    assert all(torch.equal(x, y) for x, y in zip((q, k, v), before))  # inputs untouched


def test_dense_lse(gpu, gen, no_host):
    dev, index = gpu
    q, k, v = _qkv(gen, dev, h=4, hk=4, n=256)
    o, lse = baatt.attention(q, k, v, dense=True, return_lse=True)
    assert lse.device == dev and lse.dtype == torch.float32 and lse.shape == q.shape[:3]
    s = q.float() @ k.float().transpose(-1, -2) / math.sqrt(q.shape[-1])
    torch.testing.assert_close(lse, torch.logsumexp(s, -1), atol=2e-3, rtol=1e-4)
    assert _rel_l2(o, _sdpa(q, k, v)) < 5e-3


def test_matches_host_path_sparse(gpu, gen, monkeypatch):
    """The same plan settings on the same inputs: the device-resident and the host path run the
    same kernels on the same bits (baatt_plan_run_buffers vs run_host)."""
    dev, index = gpu
    q, k, v = _qkv(gen, dev, h=8, hk=2, n=1024)
    with baatt.Plan(q.shape, k.shape, "float16", keep=0.5, device=index) as plan:
        o_dev = plan(q, k, v)
        assert plan._cuda is not None
    monkeypatch.setattr(cuda, "reason_unavailable", lambda *a: "forced by the test")
    with pytest.warns(RuntimeWarning, match="forced by the test"):
        with baatt.Plan(q.shape, k.shape, "float16", keep=0.5, device=index) as plan:
            o_host = plan(q, k, v)
            assert plan._cuda is None
    assert o_host.device == dev
    assert torch.equal(o_dev, o_host)


def test_reuse_across_calls(gpu, gen, no_host):
    dev, index = gpu
    with baatt.Plan((1, 4, 256, 64), (1, 2, 256, 64), "float16", keep=1.0, device=index, lse=True) as plan:
        q1, k1, v1 = _qkv(gen, dev, h=4, hk=2, n=256, d=64)
        o1 = plan(q1, k1, v1)
        bufs = plan._cuda
        l1 = plan.lse().clone()
        q2, k2, v2 = _qkv(gen, dev, h=4, hk=2, n=256, d=64)
        o2 = plan(q2, k2, v2)
        assert plan._cuda is bufs  # imported once, reused
        assert o1.data_ptr() != o2.data_ptr()  # each call returns its own tensor ...
        assert _rel_l2(o1, _sdpa(q1, k1, v1)) < 5e-3  # ... which the next call did not overwrite
        assert _rel_l2(o2, _sdpa(q2, k2, v2)) < 5e-3
        assert not torch.equal(l1, plan.lse())
        assert plan.selection().mask.all()  # keep 1.0: every block


def test_snapshot_device_resident(gpu, gen, no_host):
    """Selection snapshots with CUDA tensors (baatt_plan_snapshot_save / _load between device-resident
    calls): plan A estimates on X (snapshot), then on Y, loads the snapshot and runs Z; plan B
    estimated on X and reuses on Z: the same bits, and A reports X's selection."""
    dev, index = gpu
    shapes = ((1, 8, 1024, 128), (1, 2, 1024, 128))
    with baatt.Plan(*shapes, "float16", keep=0.25, device=index) as a, \
            baatt.Plan(*shapes, "float16", keep=0.25, device=index) as b:
        x, y, z = (_qkv(gen, dev, h=8, hk=2, n=1024) for _ in range(3))
        a(*x)
        snap = a.snapshot()
        sel = a.selection()
        b(*x)
        a(*y, reuse=False)
        a.load(snap)
        oa = a(*z)
        after = a.selection()
        assert all(np.array_equal(getattr(sel, f), getattr(after, f))
                   for f in ("mask", "perm_q", "perm_k", "sorted_heads", "cov_heads"))
        assert torch.equal(oa, b(*z, reuse=True))


def test_layout_and_strides(gpu, gen, no_host):
    """bnhd tensors, non-contiguous ones and bf16: copy_ takes any strides."""
    dev, index = gpu
    q, k, v = _qkv(gen, dev, h=4, hk=2, n=256, d=64)
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # [B, N, H, d] views, not contiguous
    o = baatt.attention(qt, kt, vt, keep=1.0, layout="bnhd")
    assert o.shape == qt.shape and o.is_contiguous()
    assert _rel_l2(o.transpose(1, 2), _sdpa(q, k, v)) < 5e-3
    qb, kb, vb = (x.to(torch.bfloat16) for x in (q, k, v))
    ob = baatt.attention(qb, kb, vb, keep=1.0)
    assert ob.dtype == torch.bfloat16
    assert _rel_l2(ob, _sdpa(qb, kb, vb)) < 2e-2


def test_buffers_freed_with_plan(gpu, gen):
    dev, index = gpu
    plan = baatt.Plan((1, 2, 128, 64), (1, 2, 128, 64), "float16", dense=True, device=index)
    q, k, v = _qkv(gen, dev, h=2, hk=2, n=128, d=64)
    o = plan(q, k, v)
    owners = [b.owner for b in (plan._cuda.q, plan._cuda.k, plan._cuda.v, plan._cuda.o)]
    assert all(w() is not None for w in owners)
    plan.close()
    torch.cuda.synchronize()
    assert all(w() is None for w in owners)  # released at once (no reference cycle): CUDA and baatt memory
    assert _rel_l2(o, _sdpa(q, k, v)) < 5e-3  # the returned tensor is the caller's own


# --- no GPU needed: the fallback decision ------------------------------------------------------

def test_reason_unavailable_without_external_memory():
    info = baatt.devices()[0]
    no_ext = _api.DeviceInfo(**{**info.__dict__, "external_memory": False})
    reason = cuda.reason_unavailable(no_ext, "cuda:0")
    assert "VK_KHR_external_memory_fd" in reason


def test_reason_unavailable_without_libcuda(monkeypatch):
    monkeypatch.setitem(cuda._driver_state, "driver", cuda.InteropError("libcuda.so.1 could not be loaded: test"))
    info = baatt.devices()[0]
    with_ext = _api.DeviceInfo(**{**info.__dict__, "external_memory": True})
    assert "libcuda.so.1" in cuda.reason_unavailable(with_ext, "cuda:0")


def test_warn_once(monkeypatch):
    monkeypatch.setattr(cuda, "_warned", set())
    with pytest.warns(RuntimeWarning, match="through the host"):
        cuda.warn_once("reason A")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cuda.warn_once("reason A")  # the same reason: silent


def test_device_info_uuid():
    d = baatt.devices()[0]
    assert isinstance(d.uuid, bytes) and len(d.uuid) == 16 and any(d.uuid)
    assert isinstance(d.external_memory, bool)


def _value(x):
    """A ctypes scalar's value (the real driver's argtypes convert; the fake gets the objects)."""
    return getattr(x, "value", x)


class FakeDriver:
    """libcuda as SharedBuffer calls it, recorded. The 'import' maps the fd with mmap where it can:
    lavapipe's opaque fds are memfds, so the mapping shows the baatt buffer's own bytes; NVIDIA's
    are not mappable (mm stays None; there the real-CUDA tests above check the bytes)."""

    def __init__(self, fail_import=False):
        self.calls, self.fail_import, self.mm = [], fail_import, None

    def check(self, result, what):
        if result:
            raise cuda.InteropError(f"{what} failed ({result})")

    def device_with_uuid(self, uuid):
        self.uuid = uuid
        return 3

    def cuDevicePrimaryCtxRetain(self, pctx, dev):
        self.calls.append(("retain", dev))
        pctx._obj.value = 0x1234
        return 0

    def cuDevicePrimaryCtxRelease(self, dev):
        self.calls.append(("release", dev))
        return 0

    def cuCtxPushCurrent(self, ctx):
        self.calls.append(("push", ctx))
        return 0

    def cuCtxPopCurrent(self, pctx):
        self.calls.append(("pop",))
        return 0

    def cuImportExternalMemory(self, pext, pdesc):
        d = pdesc._obj
        self.desc = dict(type=d.type, fd=d.handle.fd, size=d.size, flags=d.flags)
        os.fstat(d.handle.fd)  # a live descriptor
        self.calls.append(("import",))
        if self.fail_import:
            return 999
        pext._obj.value = 0x5678
        return 0

    def cuExternalMemoryGetMappedBuffer(self, pptr, ext, pbuf):
        b = pbuf._obj
        self.buffer_desc = dict(offset=b.offset, size=b.size, flags=b.flags, ext=_value(ext))
        try:
            self.mm = mmap.mmap(self.desc["fd"], 0)  # the whole file (lavapipe puts a header first)
        except OSError:
            self.mm = None
        pptr._obj.value = 0xD0000000
        self.calls.append(("map",))
        return 0

    def cuCtxSynchronize(self):
        self.calls.append(("sync",))
        return 0

    def cuMemFree(self, ptr):
        self.calls.append(("free", _value(ptr)))
        return 0

    def cuDestroyExternalMemory(self, ext):
        self.calls.append(("destroy", ext))
        os.close(self.desc["fd"])  # the driver owned it
        return 0


def test_shared_buffer_with_fake_driver(monkeypatch, rng):
    """SharedBuffer's import (descriptor fields, fd ownership, context push/pop, release order)
    against a recording fake of libcuda, on the real exported fd of a baatt buffer."""
    ctx = _api._context(None)
    if not ctx.device.external_memory:
        pytest.skip(f"{ctx.device.name} has no VK_KHR_external_memory_fd")
    fake = FakeDriver()
    monkeypatch.setitem(cuda._driver_state, "driver", fake)
    nbytes = 5000
    sb = cuda.SharedBuffer(ctx, b"u" * 16, nbytes)
    assert fake.uuid == b"u" * 16
    d = fake.desc
    assert d["type"] == cuda.CU_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD and d["size"] >= nbytes
    assert d["flags"] in (0, cuda.CUDA_EXTERNAL_MEMORY_DEDICATED)
    assert fake.buffer_desc == dict(offset=0, size=nbytes, flags=0, ext=0x5678)
    cai = sb.__cuda_array_interface__
    assert cai["data"] == (0xD0000000, False) and cai["shape"] == (nbytes,) and cai["typestr"] == "|u1"
    # the fd is the buffer's memory: bytes baatt writes show through the mapping (where it maps)
    assert fake.mm is not None or not ctx.device.name.startswith("llvmpipe"), "lavapipe's fd did not map"
    if fake.mm is not None:
        data = rng.integers(0, 256, nbytes, dtype=np.uint8)
        write = _api.lib.baatt_device_buffer_write
        write.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64]
        write.restype = ctypes.c_int
        assert write(sb._buf, 0, data.ctypes.data, nbytes) == 0
        # (lavapipe's fd starts with a header of its own: the payload sits at an offset)
        at = bytes(fake.mm).find(data.tobytes())
        print(f"payload at offset {at} of the {len(fake.mm)}-byte fd")
        assert at >= 0, "the exported fd's mapping does not hold the buffer's bytes"
        fake.mm.close()
    sb.close()
    assert [c[0] for c in fake.calls] == ["retain", "push", "import", "map", "pop", "push", "sync", "free", "destroy",
                                          "pop", "release"]
    assert ("free", 0xD0000000) in fake.calls
    assert not sb._buf
    sb.close()  # twice: nothing


def test_shared_buffer_import_failure_closes_fd(monkeypatch):
    ctx = _api._context(None)
    if not ctx.device.external_memory:
        pytest.skip(f"{ctx.device.name} has no VK_KHR_external_memory_fd")
    fake = FakeDriver(fail_import=True)
    monkeypatch.setitem(cuda._driver_state, "driver", fake)
    with pytest.raises(cuda.InteropError, match="cuImportExternalMemory"):
        cuda.SharedBuffer(ctx, b"u" * 16, 4096)
    with pytest.raises(OSError):
        os.fstat(fake.desc["fd"])  # not taken by the failed import: closed by SharedBuffer
    assert [c[0] for c in fake.calls][-2:] == ["pop", "release"]  # the retained context released


def test_plan_falls_back_with_one_warning(monkeypatch):
    """The Plan's decision for a CUDA tensor when libcuda is missing: host path, one warning,
    no shared buffers (the tensor itself is not touched by the decision, so a stand-in does)."""
    monkeypatch.setitem(cuda._driver_state, "driver", cuda.InteropError("libcuda.so.1 could not be loaded: test"))
    monkeypatch.setattr(cuda, "_warned", set())

    class CudaStandIn:
        device = torch.device("cuda", 0)

    with baatt.Plan((1, 2, 64, 64), (1, 2, 64, 64), "float16", dense=True) as plan:
        if not plan.device.external_memory:
            pytest.skip(f"{plan.device.name} has no VK_KHR_external_memory_fd")
        with pytest.warns(RuntimeWarning, match="libcuda.so.1"):
            assert plan._device_resident(CudaStandIn()) is False
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert plan._device_resident(CudaStandIn()) is False  # again: silent
        assert plan._cuda is None
