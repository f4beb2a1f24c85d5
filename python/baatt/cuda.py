"""Device-resident torch CUDA tensors: baatt's Vulkan memory imported into CUDA, no host copies.

baatt allocates exportable device buffers (baatt_device_buffer_create_exportable, an opaque POSIX
fd through VK_KHR_external_memory_fd); this module imports them into the CUDA context torch uses,
through the CUDA driver API on libcuda.so.1 (ctypes: cuImportExternalMemory and
cuExternalMemoryGetMappedBuffer; no cuda-python needed), and wraps the mapped pointers as torch
tensors (__cuda_array_interface__). Plan.__call__ and attention() use it for CUDA tensors: a call
copies Q, K, V into the shared buffers on the GPU, runs baatt on them and clones O out, so it
costs the GPU time plus device-to-device copies.

The Vulkan device is matched to the torch device by UUID (VkPhysicalDeviceIDProperties against
torch.cuda.get_device_properties(i).uuid). Where interop is unavailable (no libcuda.so.1, a Vulkan
device without VK_KHR_external_memory_fd, no Vulkan device with the tensor's UUID) callers fall
back to the host path with a one-time warning (see `reason_unavailable`).

AMD: HIP offers the same import (hipImportExternalMemory with hipExternalMemoryHandleTypeOpaqueFd,
hipExternalMemoryGetMappedBuffer); not wired up or tested here.

Imported on demand (baatt itself does not import torch or libcuda).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading
import warnings
import weakref
from ctypes import POINTER, Structure, Union, byref, c_char_p, c_int, c_uint, c_ulonglong, c_void_p
from typing import Any, Dict, Iterator, NamedTuple, Optional, Tuple

from ._lib import lib

# cuda.h (CUDA 11-13; the layouts are checked against the installed header by
# python/tests/test_cuda_abi.py where a toolkit exists)
CU_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD = 1
CUDA_EXTERNAL_MEMORY_DEDICATED = 0x1
CUDA_SUCCESS = 0

CUdeviceptr = c_ulonglong  # 64-bit builds
CUresult = c_int


class _Win32Handle(Structure):
    _fields_ = [("handle", c_void_p), ("name", c_void_p)]


class _MemoryHandle(Union):
    _fields_ = [("fd", c_int), ("win32", _Win32Handle), ("nvSciBufObject", c_void_p)]


class ExternalMemoryHandleDesc(Structure):
    """CUDA_EXTERNAL_MEMORY_HANDLE_DESC (cuda.h)."""
    _fields_ = [("type", c_int), ("handle", _MemoryHandle), ("size", c_ulonglong), ("flags", c_uint),
                ("reserved", c_uint * 16)]


class ExternalMemoryBufferDesc(Structure):
    """CUDA_EXTERNAL_MEMORY_BUFFER_DESC (cuda.h)."""
    _fields_ = [("offset", c_ulonglong), ("size", c_ulonglong), ("flags", c_uint), ("reserved", c_uint * 16)]


class CUuuid(Structure):
    # unsigned bytes: a c_char array field would read as bytes cut at the first NUL
    _fields_ = [("bytes", ctypes.c_ubyte * 16)]


# The exported symbol of each function: cuda.h #defines some names to versioned entry points
# (cuMemFree -> cuMemFree_v2, ...); test_cuda_abi.py checks these against the header's macros.
SYMBOLS = {
    "cuInit": ("cuInit", [c_uint]),
    "cuDeviceGetCount": ("cuDeviceGetCount", [POINTER(c_int)]),
    "cuDeviceGet": ("cuDeviceGet", [POINTER(c_int), c_int]),
    "cuDeviceGetUuid": ("cuDeviceGetUuid_v2", [POINTER(CUuuid), c_int]),
    "cuDevicePrimaryCtxRetain": ("cuDevicePrimaryCtxRetain", [POINTER(c_void_p), c_int]),
    "cuDevicePrimaryCtxRelease": ("cuDevicePrimaryCtxRelease_v2", [c_int]),
    "cuCtxPushCurrent": ("cuCtxPushCurrent_v2", [c_void_p]),
    "cuCtxPopCurrent": ("cuCtxPopCurrent_v2", [POINTER(c_void_p)]),
    "cuImportExternalMemory": ("cuImportExternalMemory", [POINTER(c_void_p), POINTER(ExternalMemoryHandleDesc)]),
    "cuExternalMemoryGetMappedBuffer": ("cuExternalMemoryGetMappedBuffer",
                                        [POINTER(CUdeviceptr), c_void_p, POINTER(ExternalMemoryBufferDesc)]),
    "cuCtxSynchronize": ("cuCtxSynchronize", []),
    "cuMemFree": ("cuMemFree_v2", [CUdeviceptr]),
    "cuDestroyExternalMemory": ("cuDestroyExternalMemory", [c_void_p]),
    "cuGetErrorName": ("cuGetErrorName", [CUresult, POINTER(c_char_p)]),
}


class InteropError(RuntimeError):
    """CUDA / Vulkan interop is unavailable or failed (the message says which call and why)."""


class _Driver:
    """libcuda.so.1's functions (the driver API), loaded once."""

    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL("libcuda.so.1")
        except OSError as e:
            raise InteropError(f"libcuda.so.1 (the NVIDIA driver's CUDA library) could not be loaded: {e}") from None
        for name, (symbol, argtypes) in SYMBOLS.items():
            try:
                fn = getattr(self.lib, symbol)
            except AttributeError:
                raise InteropError(f"libcuda.so.1 has no {symbol} (a driver older than CUDA 11.4's)") from None
            fn.restype, fn.argtypes = CUresult, argtypes
            setattr(self, name, fn)
        self.check(self.cuInit(0), "cuInit")

    def check(self, result: int, what: str) -> None:
        if result != CUDA_SUCCESS:
            name = c_char_p()
            self.cuGetErrorName(result, byref(name))
            raise InteropError(f"{what} failed: {(name.value or b'CUDA error').decode()} ({result})")

    def device_with_uuid(self, uuid: bytes) -> int:
        """The CUdevice (driver ordinal) whose UUID is uuid."""
        n = c_int(0)
        self.check(self.cuDeviceGetCount(byref(n)), "cuDeviceGetCount")
        for i in range(n.value):
            dev, u = c_int(), CUuuid()
            self.check(self.cuDeviceGet(byref(dev), i), "cuDeviceGet")
            self.check(self.cuDeviceGetUuid(byref(u), dev), "cuDeviceGetUuid")
            if bytes(u.bytes) == uuid:
                return dev.value
        raise InteropError(f"no CUDA device has UUID {uuid.hex()}")


_driver_lock = threading.Lock()
_driver_state: Dict[str, Any] = {}


def _driver() -> _Driver:
    with _driver_lock:
        if "driver" not in _driver_state:
            try:
                _driver_state["driver"] = _Driver()
            except InteropError as e:
                _driver_state["driver"] = e
        d = _driver_state["driver"]
    if isinstance(d, InteropError):
        raise d
    return d


def _torch():
    import torch
    return torch


def torch_uuid(device: Any) -> bytes:
    """The 16-byte UUID of a torch CUDA device (torch.cuda.get_device_properties(i).uuid)."""
    torch = _torch()
    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    u = torch.cuda.get_device_properties(index).uuid
    raw = getattr(u, "bytes", None)
    if raw is not None:
        return bytes(b & 0xFF for b in raw)
    return bytes.fromhex(str(u).replace("GPU-", "").replace("-", ""))


@functools.lru_cache(maxsize=None)
def _vulkan_uuids() -> Tuple[Tuple[int, bytes], ...]:
    """(index, UUID) of every Vulkan device, listed once (listing creates a Vulkan instance)."""
    from ._api import devices
    return tuple((d.index, d.uuid) for d in devices())


def vulkan_device(device: Any) -> int:
    """The index (as baatt.devices() lists it) of the Vulkan device that is torch CUDA `device`
    (a torch.device, "cuda:1", or an index), matched by UUID: pass it as Plan(..., device=...).
    Raises InteropError when no Vulkan device has that UUID."""
    torch = _torch()
    dev = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    uuid = torch_uuid(dev)
    for index, u in _vulkan_uuids():
        if u == uuid:
            return index
    raise InteropError(f"no Vulkan device has the UUID of {dev} ({uuid.hex()}): is the NVIDIA Vulkan driver "
                       "(libnvidia-gl / nvidia_icd.json) installed?")


class SharedBuffer:
    """One exportable baatt buffer of nbytes imported into CUDA, exposed through
    __cuda_array_interface__. It keeps the baatt context alive; the CUDA mapping, the imported
    memory and the baatt buffer are released, in that order, when the last reference goes. It
    holds no tensor of its own: the tensors torch makes from it hold it (a reference cycle through
    torch's storage deleter would never be collected)."""

    def __init__(self, ctx: Any, uuid: bytes, nbytes: int):
        """ctx: a _api._Context; uuid: the CUDA device's (the same GPU as ctx's)."""
        self._drv = _driver()
        self._ctx = ctx  # the baatt context (_api._Context): outlives the buffer
        self._buf = c_void_p()
        self._ext = c_void_p()
        self._ptr = CUdeviceptr(0)
        self._cuctx = None
        self.nbytes = nbytes
        status = lib.baatt_device_buffer_create_exportable(ctx.handle, nbytes, byref(self._buf))
        if status:
            raise InteropError(f"baatt_device_buffer_create_exportable: {ctx.error()}")
        fd, alloc, dedicated = c_int(-1), ctypes.c_uint64(0), c_int(0)
        status = lib.baatt_device_buffer_export_fd(self._buf, byref(fd), byref(alloc), byref(dedicated))
        if status:
            raise InteropError(f"baatt_device_buffer_export_fd: {ctx.error()}")
        self._import(fd.value, alloc.value, bool(dedicated.value), uuid)
        self.__cuda_array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (self._ptr.value, False),
                                         "version": 3, "strides": None}

    def _import(self, fd: int, alloc: int, dedicated: bool, uuid: bytes) -> None:
        """Imports fd into the primary context of the CUDA device with `uuid` (the context torch
        uses) and maps the buffer. CUDA owns fd once the import succeeds; until then it is ours."""
        drv, taken = self._drv, False
        try:
            dev = drv.device_with_uuid(uuid)
            cuctx = c_void_p()
            drv.check(drv.cuDevicePrimaryCtxRetain(byref(cuctx), dev), "cuDevicePrimaryCtxRetain")
            self._cuctx = (cuctx, dev)
            with self._current():
                desc = ExternalMemoryHandleDesc(type=CU_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD, size=alloc,
                                                flags=CUDA_EXTERNAL_MEMORY_DEDICATED if dedicated else 0)
                desc.handle.fd = fd
                drv.check(drv.cuImportExternalMemory(byref(self._ext), byref(desc)),
                          "cuImportExternalMemory (opaque fd)")
                taken = True
                buf = ExternalMemoryBufferDesc(offset=0, size=self.nbytes, flags=0)
                drv.check(drv.cuExternalMemoryGetMappedBuffer(byref(self._ptr), self._ext, byref(buf)),
                          "cuExternalMemoryGetMappedBuffer")
        finally:
            if not taken:
                os.close(fd)

    @contextlib.contextmanager
    def _current(self) -> Iterator[None]:
        """The retained primary context, current on this thread for the block."""
        drv = self._drv
        drv.check(drv.cuCtxPushCurrent(self._cuctx[0]), "cuCtxPushCurrent")
        try:
            yield
        finally:
            drv.cuCtxPopCurrent(byref(c_void_p()))

    def close(self) -> None:
        drv = getattr(self, "_drv", None)
        if drv is None:
            return
        if self._cuctx is not None:
            with self._current():
                drv.cuCtxSynchronize()  # no CUDA work may still use the memory (rare: at teardown)
                if self._ptr.value:
                    drv.cuMemFree(self._ptr)
                if self._ext:
                    drv.cuDestroyExternalMemory(self._ext)
            drv.cuDevicePrimaryCtxRelease(self._cuctx[1])
        if self._buf:
            lib.baatt_device_buffer_destroy(self._buf)
        self._ptr, self._ext, self._buf, self._cuctx, self._drv = CUdeviceptr(0), c_void_p(), c_void_p(), None, None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the driver may be gone already
            pass


class Shared(NamedTuple):
    """A torch tensor over a SharedBuffer: `handle` (the baatt_device_buffer) is valid while
    `tensor` lives; `owner` is a weak reference to the SharedBuffer (tests check its release)."""
    tensor: Any
    handle: int
    owner: Any


def shared_tensor(ctx: Any, torch_device: Any, shape: Tuple[int, ...], dtype: Any) -> Shared:
    """A torch tensor of shape and dtype on torch_device whose memory is an exportable buffer of
    baatt context ctx (a _api._Context on the same GPU)."""
    torch = _torch()
    count, esize = int(torch.Size(shape).numel()), torch.empty((), dtype=dtype).element_size()
    owner = SharedBuffer(ctx, torch_uuid(torch_device), count * esize)
    # torch keeps the exporter alive as long as the storage (its deleter drops the reference)
    tensor = torch.as_tensor(owner, device=torch_device).view(dtype).view(shape)
    return Shared(tensor, owner._buf.value, weakref.ref(owner))


class PlanBuffers:
    """A plan's shared Q, K, V, O (and LSE) buffers on one CUDA device, reused across calls."""

    def __init__(self, ctx: Any, torch_device: Any, q_bhnd: Tuple[int, ...], kv_bhnd: Tuple[int, ...], dtype: Any,
                 lse: bool):
        torch = _torch()
        self.device = torch.device(torch_device)
        make = lambda shape, dt: shared_tensor(ctx, self.device, shape, dt)  # noqa: E731
        self.q, self.k, self.v, self.o = (make(s, dtype) for s in (q_bhnd, kv_bhnd, kv_bhnd, q_bhnd))
        self.lse = make(q_bhnd[:3], torch.float32) if lse else None
        self.done: Optional[Any] = None  # an event after the last reads of O / LSE

    def run(self, plan_handle: c_void_p, q: Any, k: Any, v: Any, error: Any,
            bnhd: bool = False) -> Tuple[Any, Optional[Any]]:
        """Copies q, k, v ([B, H, N, d] views of any strides, on any device) into the shared
        buffers, runs the plan on them and returns copies of O (contiguous [B, H, N, d], or [B, N,
        H, d] with bnhd: one copy either way) and of the LSE."""
        torch = _torch()
        with torch.cuda.device(self.device):
            for dst, src in ((self.q, q), (self.k, k), (self.v, v)):
                dst.tensor.copy_(src)  # strides, layout and device handled by torch, on the GPU
            # Vulkan reads the buffers next: the copies (and the last call's clones of O on
            # whatever stream made them, self.done) must be finished. baatt's queue and CUDA share
            # no semaphore, so the host waits here.
            if self.done is not None:
                self.done.synchronize()
            torch.cuda.current_stream(self.device).synchronize()
            status = lib.baatt_plan_run_buffers_lse(plan_handle, self.q.handle, self.k.handle, self.v.handle,
                                                    self.o.handle, self.lse.handle if self.lse else None)
            if status:
                error(status)
            # baatt_plan_run_buffers_lse returned after its fence: the GPU finished writing O and
            # the LSE, so CUDA work queued from now on reads the results.
            o = self.o.tensor.transpose(1, 2).contiguous() if bnhd else self.o.tensor.clone()
            lse = self.lse.tensor.clone() if self.lse else None
            self.done = torch.cuda.Event()
            self.done.record()
        return o, lse


def reason_unavailable(ctx_device: Any, tensor_device: Any) -> Optional[str]:
    """None where a plan on Vulkan device `ctx_device` (a baatt DeviceInfo) can run device-resident
    on torch CUDA device `tensor_device`; else why not (the host path is then used)."""
    if not ctx_device.external_memory:
        return f"the Vulkan device {ctx_device.name} has no VK_KHR_external_memory_fd"
    try:
        _driver()
    except InteropError as e:
        return str(e)
    try:
        uuid = torch_uuid(tensor_device)
    except Exception as e:  # an old torch without .uuid
        return f"no UUID for {tensor_device}: {e}"
    if ctx_device.uuid != uuid:
        if all(u != uuid for _, u in _vulkan_uuids()):
            return (f"no Vulkan device has the UUID of {tensor_device} ({uuid.hex()}): is the NVIDIA Vulkan driver "
                    "installed?")
        return (f"the plan's Vulkan device {ctx_device.name} ({ctx_device.uuid.hex()}) is not {tensor_device} "
                f"({uuid.hex()}); create the plan with device=baatt.cuda.vulkan_device({str(tensor_device)!r})")
    return None


_warned: set = set()


def warn_once(reason: str) -> None:
    """One warning per distinct reason that a CUDA call took the host path."""
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"baatt: CUDA tensors go through the host (slow): {reason}", RuntimeWarning, stacklevel=3)
