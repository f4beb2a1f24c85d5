"""baatt's Python API over the C library (ctypes, no compiler needed at import)."""
from __future__ import annotations

import ctypes
import enum
import math
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import numpy as np

from ._lib import DeviceInfoC, RunStatsC, STAGE_COUNT, lib, text

Device = Union[int, str, None]
Layout = Literal["bhnd", "bnhd"]
SortMode = Literal["norm", "off", "auto"]
CovarianceMode = Union[bool, Literal["on", "off", "auto"]]


class Status(enum.IntEnum):
    """baatt_status (include/baatt.h)."""
    OK = 0
    INVALID_ARGUMENT = 100
    BAD_SHAPE = 101
    GQA_MISMATCH = 102
    UNSUPPORTED_HEAD_DIM = 103
    UNSUPPORTED_DTYPE = 104
    UNSUPPORTED_BLOCK_SIZE = 105
    BAD_KEEP_RATIO = 106
    BAD_THRESHOLD = 107
    BAD_BLOCK_LIMITS = 108
    BAD_SCALE = 109
    TOO_LARGE = 110
    NOT_READY = 111
    NONFINITE_INPUT = 112
    NO_SELECTION = 113
    BAD_SELECTION = 114
    NO_LSE = 115
    NO_VULKAN = 200
    NO_DEVICE = 201
    MISSING_FEATURE = 202
    VALIDATION_LAYER = 203
    OUT_OF_HOST_MEMORY = 204
    VULKAN = 300
    OUT_OF_DEVICE_MEMORY = 301
    DEVICE_LOST = 302
    TIMEOUT = 303
    IO = 400
    FILE_FORMAT = 401


class Error(Exception):
    """A failure reported by baatt: `status` (a Status, or the raw int for one this module does
    not know) and `message` (what failed, from the library or from the argument checks here)."""

    def __init__(self, status: int, message: str):
        try:
            self.status: Union[Status, int] = Status(status)
        except ValueError:
            self.status = status
        self.message = message
        super().__init__(f"{text(lib.baatt_status_string(int(status)))}: {message}")


_DTYPE_F32, _DTYPE_F16, _DTYPE_BF16 = 0, 1, 2
_SORT = {"off": 0, "norm": 1, "auto": 2}
_COVARIANCE = {"off": 0, "on": 1, "auto": 2}


def _covariance_code(covariance: Any) -> int:
    """baatt_covariance_mode of "off" / "on" / "auto" (True / False: "on" / "off", as before auto)."""
    if isinstance(covariance, bool):
        return int(covariance)
    if isinstance(covariance, str) and covariance in _COVARIANCE:
        return _COVARIANCE[covariance]
    raise Error(Status.INVALID_ARGUMENT, f"covariance {covariance!r}: expected 'auto', 'on' or 'off' (or a bool)")
_DEVICE_TYPES = {0: "other", 1: "discrete", 2: "integrated", 3: "virtual", 4: "cpu"}
STAGES: Tuple[str, ...] = tuple(text(lib.baatt_stage_name(i)) for i in range(STAGE_COUNT))


# ------------------------------------------------------------------------------------------------
# devices and contexts

@dataclass(frozen=True)
class DeviceInfo:
    """One Vulkan device, as baatt_devices_list describes it."""
    index: int
    name: str
    type: str                  # "discrete", "integrated", "virtual", "cpu" or "other"
    driver: str
    api_version: str
    subgroup_size: int
    device_local_bytes: int
    fp16: bool                 # fp16 storage and arithmetic
    bf16_coopmat: bool         # bf16 tensor cores (VK_KHR_shader_bfloat16)
    coopmat2: bool             # NVIDIA cooperative matrix 2 (the fastest fp16/bf16 kernels)
    picked: bool               # the device a default choice (device=None) uses
    uuid: bytes = b""          # VkPhysicalDeviceIDProperties::deviceUUID (= CUDA's for the same GPU)
    external_memory: bool = False  # VK_KHR_external_memory_fd: device-resident CUDA tensors (baatt.cuda)


def _device_info(d: DeviceInfoC) -> DeviceInfo:
    v = d.api_version
    return DeviceInfo(index=d.index, name=text(d.name), type=_DEVICE_TYPES.get(d.type, "other"),
                      driver=" ".join(x for x in (text(d.driver_name), text(d.driver_info)) if x),
                      api_version=f"{(v >> 22) & 0x7F}.{(v >> 12) & 0x3FF}.{v & 0xFFF}",
                      subgroup_size=d.subgroup_size, device_local_bytes=d.device_local_bytes,
                      fp16=bool(d.fp16_storage and d.fp16_arithmetic), bf16_coopmat=bool(d.bf16),
                      coopmat2=bool(d.coopmat2_nv), picked=bool(d.picked), uuid=bytes(d.uuid),
                      external_memory=bool(d.external_memory_fd))


def devices() -> List[DeviceInfo]:
    """The Vulkan devices baatt can use; `picked` marks the default choice (BAATT_DEVICE honoured)."""
    n = ctypes.c_uint32(0)
    _check(lib.baatt_devices_list(None, ctypes.byref(n)), "listing the Vulkan devices")
    infos = (DeviceInfoC * max(n.value, 1))()
    _check(lib.baatt_devices_list(infos, ctypes.byref(n)), "listing the Vulkan devices")
    return [_device_info(infos[i]) for i in range(n.value)]


def _check(status: int, message: str) -> None:
    if status:
        raise Error(status, message)


class _Context:
    """Owns one baatt_context (a Vulkan instance and device)."""

    def __init__(self, device: Device):
        opts = lib.baatt_context_options_default()
        if isinstance(device, bool) or not isinstance(device, (int, str, type(None))):
            raise TypeError(f"device must be an index, a name substring or None, not {type(device).__name__}")
        if isinstance(device, int):
            opts.device_index = device
        elif isinstance(device, str):
            opts.device_name = device.encode()
        handle = ctypes.c_void_p()
        status = lib.baatt_context_create(ctypes.byref(opts), ctypes.byref(handle))
        if status:
            message = text(lib.baatt_context_error(handle))
            lib.baatt_context_destroy(handle)
            raise Error(status, message or "creating the Vulkan context")
        self.handle = handle
        info = DeviceInfoC()
        lib.baatt_context_device_info(handle, ctypes.byref(info))
        self.device = _device_info(info)

    def error(self) -> str:
        return text(lib.baatt_context_error(self.handle))

    def __del__(self) -> None:
        if getattr(self, "handle", None):
            lib.baatt_context_destroy(self.handle)
            self.handle = None


_contexts: Dict[Device, _Context] = {}
_contexts_lock = threading.Lock()


def _context(device: Device) -> _Context:
    """One context per device choice, made on first use and kept: creating a Vulkan device and
    its pipelines is the slow part, and plans of the same device share them."""
    with _contexts_lock:
        if device not in _contexts:
            _contexts[device] = _Context(device)
        return _contexts[device]


# ------------------------------------------------------------------------------------------------
# tensors: numpy arrays and torch tensors to C-contiguous host memory and back

def _torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


_NP_DTYPES = {np.dtype(np.float32): _DTYPE_F32, np.dtype(np.float16): _DTYPE_F16}


def _dtype_of(x: Any, name: str) -> int:
    if _is_torch(x):
        torch = _torch()
        table = {torch.float32: _DTYPE_F32, torch.float16: _DTYPE_F16, torch.bfloat16: _DTYPE_BF16}
        dt = table.get(x.dtype)
    else:
        dt = _NP_DTYPES.get(np.asarray(x).dtype)
    if dt is None:
        raise Error(Status.UNSUPPORTED_DTYPE, f"{name} is {x.dtype}; baatt takes float32, float16 or "
                    "bfloat16 (bfloat16 as a torch tensor); convert it first")
    return dt


class _Host:
    """A C-contiguous CPU copy (or view) of a numpy array or torch tensor; keeps it alive."""

    def __init__(self, x: Any):
        if _is_torch(x):
            self.obj = x.detach().to("cpu").contiguous()
            self.ptr = self.obj.data_ptr()
        else:
            self.obj = np.ascontiguousarray(x)
            self.ptr = self.obj.ctypes.data


def _run_host(handle: ctypes.c_void_p, q: int, k: int, v: int, o: int) -> int:
    """baatt_plan_run_host (one place, so that tests can check the CUDA path never takes it)."""
    return lib.baatt_plan_run_host(handle, q, k, v, o)


def _is_cuda(x: Any) -> bool:
    return _is_torch(x) and x.device.type == "cuda"


def _to_layout(x: Any, layout: Layout) -> Any:
    """[B, N, H, d] -> [B, H, N, d] (a view; made contiguous by _Host)."""
    if layout == "bhnd":
        return x
    return x.transpose(1, 2) if _is_torch(x) else np.swapaxes(x, 1, 2)


# ------------------------------------------------------------------------------------------------
# results

@dataclass
class Selection:
    """The block selection of a run, in the coordinates of the sorted blocks.

    mask: bool [B, H, q_blocks, k_blocks], True where key block J was kept for query block I
    perm_q: int32 [B, H, q_len], the original token index at each sorted position
    perm_k: int32 [B, kv_heads, kv_len]
    sorted_heads: bool [B, kv_heads], True where the kv head got the norm-sorted blocking
    cov_heads: bool [B, kv_heads], True where the kv head's selection used the covariance term
        (lambda 1); None where not read (a Selection built by hand)
    """
    mask: np.ndarray
    perm_q: np.ndarray
    perm_k: np.ndarray
    sorted_heads: np.ndarray
    cov_heads: Optional[np.ndarray] = None


@dataclass
class Stats:
    """GPU times (milliseconds) per stage (keys: STAGES) and in all, and the run's sparsity.
    `timed` is False where the device has no timestamps (the times are then 0)."""
    stage_ms: Dict[str, float] = field(default_factory=dict)
    gpu_ms: float = 0.0
    sparsity: float = 0.0
    selected_blocks: int = 0
    timed: bool = False


# ------------------------------------------------------------------------------------------------
# plans

def _shape4(x: Any, name: str) -> Tuple[int, int, int, int]:
    shape = tuple(int(s) for s in x.shape)
    if len(shape) != 4:
        raise Error(Status.BAD_SHAPE, f"{name} has shape {shape}; expected 4 dimensions")
    return shape  # type: ignore[return-value]


def _selection_array(x: Any, name: str, shape: Tuple[int, ...], broadcast: bool) -> np.ndarray:
    """A mask (uint8 0/1) or a permutation (int32) as the C library takes it; broadcast: size-1
    batch and head dimensions of a mask are repeated."""
    if _is_torch(x):
        x = x.detach().to("cpu").numpy()
    a = np.asarray(x)
    if a.dtype != bool and not np.issubdtype(a.dtype, np.integer):
        raise Error(Status.BAD_SELECTION, f"{name} has dtype {a.dtype}; expected "
                    f"{'booleans or 0/1 integers' if broadcast else 'integers (int32)'}")
    if a.ndim != len(shape) or (a.shape[2:] if broadcast else a.shape) != shape[2 if broadcast else 0:]:
        raise Error(Status.BAD_SHAPE, f"{name} has shape {a.shape}; the plan needs {shape}")
    if broadcast:
        try:
            a = np.broadcast_to(a, shape)
        except ValueError:
            raise Error(Status.BAD_SHAPE, f"{name} has shape {a.shape}; the plan needs {shape}") from None
        if a.dtype != bool and ((a != 0) & (a != 1)).any():
            raise Error(Status.BAD_SELECTION, f"{name} entries must be 0 or 1 (or booleans)")
        return np.ascontiguousarray(a, np.uint8)
    if a.size and (a.min() < -2**31 or a.max() >= 2**31):
        raise Error(Status.BAD_SELECTION, f"{name} holds values outside int32")
    return np.ascontiguousarray(a, np.int32)


class Snapshot:
    """A copy of a plan's held selection on the device (Plan.snapshot()), loaded back with
    Plan.load() into that plan or any plan of the same shapes and options: one plan can then serve
    many call sites (a model's layers), each with its own selection, without host round trips.
    Owns device memory (the mask, counts and permutations: a few MiB): freed by close(), with the
    plan that made it, or when garbage-collected."""

    def __init__(self, ctx: "_Context", handle: ctypes.c_void_p):
        self._ctx = ctx  # the context outlives its snapshots
        self._handle = handle

    @property
    def closed(self) -> bool:
        return not self._handle

    def close(self) -> None:
        if getattr(self, "_handle", None):
            lib.baatt_snapshot_destroy(self._handle)
            self._handle = ctypes.c_void_p()

    __del__ = close


class Plan:
    """A baatt plan for one shape, dtype and set of options: create once, call many times.

    Scratch memory is sized at creation; each call uploads Q/K/V, runs every stage on the GPU and
    returns O. A call with reuse=True skips the sort, statistics, scoring and selection and attends
    on the selection the plan holds (its last estimating call's, or set_selection's): diffusion
    models run the same shapes at every denoising step and can refresh the selection every few. q_shape is Q's shape and kv_shape K's (= V's), both in `layout`: "bhnd" is
    [batch, heads, tokens, head_dim], "bnhd" is [batch, tokens, heads, head_dim]. dtype is
    "float32", "float16" or "bfloat16" (also numpy/torch dtypes). lse=True makes the kernel also
    write each row's log-sum-exp, read with lse() after a call. The other arguments are those of
    attention(). Not thread-safe: use one plan per thread.
    """

    def __init__(self, q_shape: Sequence[int], kv_shape: Sequence[int], dtype: Any = "float32", *,
                 scale: Optional[float] = None, dense: bool = False, keep: float = 0.5,
                 threshold: Optional[float] = None, block: int = 64, sort: SortMode = "auto",
                 covariance: CovarianceMode = "auto", layout: Layout = "bhnd", device: Device = None,
                 lse: bool = False):
        self._handle = ctypes.c_void_p()
        if layout not in ("bhnd", "bnhd"):
            raise Error(Status.INVALID_ARGUMENT, f"layout {layout!r}: expected 'bhnd' or 'bnhd'")
        if sort not in _SORT:
            raise Error(Status.INVALID_ARGUMENT, f"sort {sort!r}: expected 'auto', 'norm' or 'off'")
        cov = _covariance_code(covariance)
        q_shape, kv_shape = tuple(int(s) for s in q_shape), tuple(int(s) for s in kv_shape)
        if len(q_shape) != 4 or len(kv_shape) != 4:
            raise Error(Status.BAD_SHAPE, f"q_shape {q_shape} and kv_shape {kv_shape} must have 4 dimensions")
        if any(not 0 <= s < 2**32 for s in q_shape + kv_shape):  # the C config holds uint32 sizes
            raise Error(Status.BAD_SHAPE, f"q_shape {q_shape} / kv_shape {kv_shape}: sizes must be in [0, 2^32)")
        self.layout = layout
        self.q_shape, self.kv_shape = q_shape, kv_shape
        b, h, n, d = _bhnd(q_shape, layout)
        bk, hk, nk, dk = _bhnd(kv_shape, layout)
        if b != bk or d != dk:
            raise Error(Status.BAD_SHAPE, f"Q {q_shape} and K/V {kv_shape} ({layout}) differ in batch or head_dim")
        self.dtype = _dtype_code(dtype)
        cfg = lib.baatt_config_default()
        cfg.batch, cfg.heads, cfg.kv_heads, cfg.q_len, cfg.kv_len, cfg.head_dim = b, h, hk, n, nk, d
        cfg.dtype, cfg.dense, cfg.block_size = self.dtype, int(dense), int(block)
        cfg.scale = 0.0 if scale is None else float(scale)
        cfg.norm_sort, cfg.covariance, cfg.keep_ratio = _SORT[sort], cov, float(keep)
        cfg.lse = int(bool(lse))
        if threshold is not None:
            cfg.select_mode, cfg.mass_threshold = 1, float(threshold)
        if scale is not None and (not math.isfinite(scale) or scale <= 0):
            raise Error(Status.BAD_SCALE, f"scale {scale}: must be positive and finite")
        msg = ctypes.create_string_buffer(512)
        _check(lib.baatt_config_check(ctypes.byref(cfg), msg, len(msg)), text(msg.value))
        self.config = cfg
        self._ctx = _context(device)
        status = lib.baatt_plan_create(self._ctx.handle, ctypes.byref(cfg), ctypes.byref(self._handle))
        if status:
            raise Error(status, self._ctx.error())
        self.q_blocks = lib.baatt_config_q_blocks(ctypes.byref(cfg))
        self.k_blocks = lib.baatt_config_k_blocks(ctypes.byref(cfg))
        self._reuse = False
        self._cuda: Any = None  # baatt.cuda.PlanBuffers of the last device-resident call
        self._cuda_lse: Any = None  # its LSE (a CUDA tensor), what lse() returns after it
        self._cuda_failed: Dict[Any, str] = {}  # torch device -> why its shared buffers failed
        self._snapshots: "weakref.WeakSet[Snapshot]" = weakref.WeakSet()  # freed with the plan

    @property
    def device(self) -> DeviceInfo:
        """The device the plan runs on."""
        return self._ctx.device

    @property
    def scratch_bytes(self) -> int:
        """Device memory the plan owns besides the tensors."""
        return int(lib.baatt_plan_scratch_bytes(self._live()))

    def _live(self) -> ctypes.c_void_p:
        if not self._handle:
            raise Error(Status.INVALID_ARGUMENT, "the plan was closed")
        return self._handle

    @property
    def reuse(self) -> bool:
        """Whether calls attend on the held selection (baatt_plan_set_reuse): False for a new plan,
        True after set_selection; a call's reuse= argument sets it."""
        return self._reuse

    @reuse.setter
    def reuse(self, value: bool) -> None:
        self._call(lib.baatt_plan_set_reuse(self._live(), int(bool(value))))
        self._reuse = bool(value)

    def set_selection(self, mask: Any, perm_q: Any = None, perm_k: Any = None) -> None:
        """Attend on this selection from now on (reuse turns on; plan.reuse = False estimates again).

        mask: booleans (or 0/1 integers) [B, H, q_blocks, k_blocks], size-1 B or H broadcast; True
        where query block I attends to key block J, blocks of the original token order unless perm_q
        [B, H, q_len] / perm_k [B, kv_heads, kv_len] (the original index at each position, as
        Selection.perm_q / perm_k) give another. Every query block needs a key block. baatt.masks
        converts flex_attention's and block-sparse-row layouts. Raises Error BAD_SELECTION (a
        non-0/1 entry, an empty row, a perm that is not a permutation) or BAD_SHAPE; the arrays
        passed are not modified."""
        c = self.config
        m = _selection_array(mask, "mask", (c.batch, c.heads, self.q_blocks, self.k_blocks), True)
        pq = None if perm_q is None else _selection_array(perm_q, "perm_q", (c.batch, c.heads, c.q_len), False)
        pk = None if perm_k is None else _selection_array(perm_k, "perm_k", (c.batch, c.kv_heads, c.kv_len), False)
        self._call(lib.baatt_plan_set_selection(self._live(), m.ctypes.data, None if pq is None else pq.ctypes.data,
                                                None if pk is None else pk.ctypes.data))
        self._reuse = True

    def snapshot(self) -> Snapshot:
        """The selection the plan holds, copied on the device (GPU to GPU, no host round trip).
        Error NO_SELECTION before the plan holds one (no estimating call or set_selection yet)."""
        handle = ctypes.c_void_p()
        self._call(lib.baatt_plan_snapshot_save(self._live(), ctypes.byref(handle)))
        snap = Snapshot(self._ctx, handle)
        self._snapshots.add(snap)
        return snap

    def load(self, snapshot: Snapshot) -> None:
        """Attend on a snapshot's selection from now on (reuse turns on, as set_selection), with no
        host checks or uploads: GPU-to-GPU copies. selection() then returns the snapshot's. Error
        INVALID_ARGUMENT for a closed snapshot, or one of a plan of other shapes or options."""
        if not isinstance(snapshot, Snapshot):
            raise TypeError(f"load() takes a Snapshot (Plan.snapshot()), not {type(snapshot).__name__}")
        if snapshot.closed:
            raise Error(Status.INVALID_ARGUMENT, "the snapshot was closed")
        self._call(lib.baatt_plan_snapshot_load(self._live(), snapshot._handle))
        self._reuse = True

    def __call__(self, q: Any, k: Any, v: Any, *, reuse: Optional[bool] = None) -> Any:
        """Attention of q over k, v (numpy arrays or torch tensors of the plan's shapes and dtype).
        Returns O like q: a numpy array, or a torch tensor on q's device. reuse: True attends on the
        held selection (Error NO_SELECTION before there is one), False estimates a new one, None
        keeps the plan's setting (the `reuse` property).

        CUDA tensors stay on the GPU (baatt.cuda): the plan keeps Q, K, V, O (and LSE) buffers that
        Vulkan and CUDA share, imported once on the first CUDA call; a call copies q, k, v into them
        on the GPU, synchronises the current CUDA stream, runs, and returns a copy of O (a new
        tensor). It falls back to the host path, with one warning, where that interop is
        unavailable: no libcuda.so.1, a Vulkan device without VK_KHR_external_memory_fd, or a plan
        whose Vulkan device is not q's GPU (UUIDs differ; see baatt.cuda.vulkan_device)."""
        handle = self._live()
        if reuse is not None:
            self.reuse = reuse
        for x, name, want in ((q, "q", self.q_shape), (k, "k", self.kv_shape), (v, "v", self.kv_shape)):
            if _shape4(x, name) != want:
                raise Error(Status.BAD_SHAPE, f"{name} has shape {tuple(x.shape)}; the plan was made for {want}")
            if _dtype_of(x, name) != self.dtype:
                raise Error(Status.UNSUPPORTED_DTYPE, f"{name} is {x.dtype}; the plan was made for "
                            f"{_DTYPE_NAMES[self.dtype]}")
        if len({_is_torch(q), _is_torch(k), _is_torch(v)}) != 1:
            raise Error(Status.INVALID_ARGUMENT, "q, k and v must all be numpy arrays or all torch tensors")
        self._cuda_lse = None
        if _is_cuda(q) and self._device_resident(q):
            return self._run_cuda(handle, q, k, v)
        hq, hk, hv = (_Host(_to_layout(x, self.layout)) for x in (q, k, v))
        out = _empty_like(q, _bhnd(self.q_shape, self.layout))
        ho = _Host(out)
        status = _run_host(handle, hq.ptr, hk.ptr, hv.ptr, ho.ptr)
        if status:
            raise Error(status, self._ctx.error())
        return _from_bhnd(ho.obj, q, self.layout)

    def _device_resident(self, q: Any) -> bool:
        """Whether a call on CUDA tensors can stay on the GPU (else warn once: the host path)."""
        if self._cuda is not None and self._cuda.device == q.device:
            return True
        from . import cuda
        reason = self._cuda_failed.get(q.device) or cuda.reason_unavailable(self._ctx.device, q.device)
        if not reason:
            self._cuda = None  # another GPU's buffers go first
            torch = _torch()
            dtype = {_DTYPE_F32: torch.float32, _DTYPE_F16: torch.float16, _DTYPE_BF16: torch.bfloat16}[self.dtype]
            try:
                self._cuda = cuda.PlanBuffers(self._ctx, q.device, _bhnd(self.q_shape, self.layout),
                                              _bhnd(self.kv_shape, self.layout), dtype, bool(self.config.lse))
                return True
            except cuda.InteropError as e:  # e.g. the driver refused the import: not retried per call
                reason = self._cuda_failed[q.device] = str(e)
        cuda.warn_once(reason)
        return False

    def _run_cuda(self, handle: ctypes.c_void_p, q: Any, k: Any, v: Any) -> Any:
        def fail(status: int) -> None:
            raise Error(status, self._ctx.error())
        o, self._cuda_lse = self._cuda.run(handle, *(_to_layout(x, self.layout) for x in (q, k, v)), fail,
                                           bnhd=self.layout == "bnhd")
        return o

    run = __call__

    def stats(self) -> Stats:
        """Per-stage GPU times and sparsity of the last call."""
        st = RunStatsC()
        self._call(lib.baatt_plan_stats(self._live(), ctypes.byref(st)))
        return Stats(stage_ms={STAGES[i]: st.stage_ms[i] for i in range(STAGE_COUNT)}, gpu_ms=st.gpu_ms,
                     sparsity=st.sparsity, selected_blocks=int(st.selected_blocks), timed=bool(st.timed))

    def selection(self) -> Selection:
        """The block mask, permutations and per-kv-head blocking and lambda of the last call."""
        c = self.config
        mask = np.empty((c.batch, c.heads, self.q_blocks, self.k_blocks), np.uint8)
        perm_q = np.empty((c.batch, c.heads, c.q_len), np.int32)
        perm_k = np.empty((c.batch, c.kv_heads, c.kv_len), np.int32)
        heads = np.empty((c.batch, c.kv_heads), np.uint8)
        h = self._live()
        self._call(lib.baatt_plan_read_mask(h, mask.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))))
        self._call(lib.baatt_plan_read_perms(h, perm_q.ctypes.data, perm_k.ctypes.data))
        self._call(lib.baatt_plan_read_head_sorted(h, heads.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))))
        cov = np.empty((c.batch, c.kv_heads), np.uint8)
        self._call(lib.baatt_plan_read_head_covariance(h, cov.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))))
        return Selection(mask=mask.astype(bool), perm_q=perm_q, perm_k=perm_k, sorted_heads=heads.astype(bool),
                         cov_heads=cov.astype(bool))

    def lse(self) -> Any:
        """The log-sum-exp of the last call, float32 [B, H, q_len] whatever the layout (as
        flash-attn's softmax_lse): ln sum_j exp(scale * q_i . k_j) over the keys row i attended to.
        With O it merges attentions over disjoint keys (merge()). Needs a plan made with lse=True
        (Error NO_LSE otherwise) and a call first (Error NOT_READY). A numpy array, or a CUDA
        tensor after a device-resident call on CUDA tensors."""
        if self._cuda_lse is not None:
            return self._cuda_lse
        c = self.config
        out = np.empty((c.batch, c.heads, c.q_len), np.float32)
        self._call(lib.baatt_plan_read_lse(self._live(), out.ctypes.data))
        return out

    def validation_messages(self) -> int:
        """Validation-layer messages seen by this plan's context (BAATT_VALIDATION=1); 0 if off."""
        return int(lib.baatt_context_validation_messages(self._ctx.handle))

    def _call(self, status: int) -> None:
        if status:
            raise Error(status, self._ctx.error())

    def close(self) -> None:
        """Frees the plan's device memory now (also done when the plan is garbage-collected)."""
        self._cuda = self._cuda_lse = None  # the shared buffers go with the plan
        for snap in list(getattr(self, "_snapshots", ())):
            snap.close()
        if getattr(self, "_handle", None):
            lib.baatt_plan_destroy(self._handle)
            self._handle = ctypes.c_void_p()

    def __enter__(self) -> "Plan":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    __del__ = close


_DTYPE_NAMES = {_DTYPE_F32: "float32", _DTYPE_F16: "float16", _DTYPE_BF16: "bfloat16"}


def _dtype_code(dtype: Any) -> int:
    name = str(dtype).replace("torch.", "")
    try:
        name = np.dtype(dtype).name
    except TypeError:
        pass
    codes = {v: k for k, v in _DTYPE_NAMES.items()}
    if name not in codes:
        raise Error(Status.UNSUPPORTED_DTYPE, f"dtype {dtype}: expected float32, float16 or bfloat16")
    return codes[name]


def _bhnd(shape: Tuple[int, ...], layout: Layout) -> Tuple[int, int, int, int]:
    b, x, y, d = shape
    return (b, x, y, d) if layout == "bhnd" else (b, y, x, d)


def _empty_like(q: Any, bhnd: Tuple[int, int, int, int]) -> Any:
    if _is_torch(q):
        return _torch().empty(bhnd, dtype=q.dtype, device="cpu")
    return np.empty(bhnd, dtype=np.asarray(q).dtype)


def _from_bhnd(o: Any, q: Any, layout: Layout) -> Any:
    """O back in q's layout, and on q's device for torch."""
    if layout == "bnhd":
        o = o.transpose(1, 2).contiguous() if _is_torch(o) else np.ascontiguousarray(np.swapaxes(o, 1, 2))
    return o.to(q.device) if _is_torch(q) else o


# ------------------------------------------------------------------------------------------------
# one-shot attention

def attention(q: Any, k: Any, v: Any, *, scale: Optional[float] = None, dense: bool = False,
              keep: float = 0.5, threshold: Optional[float] = None, block: int = 64,
              sort: SortMode = "auto", covariance: CovarianceMode = "auto", layout: Layout = "bhnd",
              device: Device = None, return_selection: bool = False, return_stats: bool = False,
              mask: Any = None, perm_q: Any = None, perm_k: Any = None, return_lse: bool = False) -> Any:
    """Block Approximate Sparse Attention (or exact attention with dense=True) of q over k, v.

    q: [B, H, Nq, d], k and v: [B, H_kv, Nk, d] (layout="bhnd"; "bnhd" takes [B, N, H, d] as
    flash-attn does), numpy arrays or torch tensors, all float32, all float16, or all bfloat16
    (torch only); d is 64 or 128; H % H_kv == 0 (GQA/MQA). Nothing passed in is modified.
    CUDA tensors stay on the GPU (see Plan.__call__ and baatt.cuda): with device=None the Vulkan
    device is the one with q's GPU's UUID; where CUDA/Vulkan interop is unavailable they go
    through the host, with a one-time warning. A Plan reused across calls also reuses the
    shared buffers (attention() makes new ones each call).

    scale: softmax scale, default 1/sqrt(d). keep: fraction of key blocks kept per query block;
    threshold: instead, keep the fewest blocks whose estimated attention mass reaches it.
    block: 32, 64 or 128 tokens. sort: "auto" (default) picks per kv head whichever of the two
    blockings recalls more on 64 sampled exact rows, "norm" blocks the norm-sorted tokens, "off" the
    original order (why auto: bench/results/accuracy.md, "Defaults"). covariance: "auto" (default)
    picks per kv head, on the same sampled rows and together with the blocking, whether the block
    logit keeps its covariance term (lambda 1) or not (lambda 0): it lifts recall on real attention
    (bench/results/accuracy.md, "Selection on real attention") for two more score and select
    passes; "on" / True or "off" / False fix it. device: an index or name substring
    from devices(), default the best device (BAATT_DEVICE honoured).

    mask (with perm_q, perm_k): attend on this block selection instead of estimating one (see
    Plan.set_selection and baatt.masks); `block` must be the mask's block size.

    Returns O (same type, dtype, layout and device as q); with return_lse, return_selection
    and/or return_stats, a tuple in that order: (O, lse, Selection, Stats) with those asked for.
    lse is float32 [B, H, Nq] (any layout; like q: numpy, or torch on q's device), the natural
    log-sum-exp of each row's scaled scores over the keys it attended to: see merge().
    Raises Error (with .status and .message) on bad input or a device failure.
    """
    for x, name in ((q, "q"), (k, "k"), (v, "v")):
        _shape4(x, name)
    if tuple(k.shape) != tuple(v.shape):
        raise Error(Status.BAD_SHAPE, f"k {tuple(k.shape)} and v {tuple(v.shape)} must have the same shape")
    dt = _dtype_of(q, "q")
    if _dtype_of(k, "k") != dt or _dtype_of(v, "v") != dt:
        raise Error(Status.UNSUPPORTED_DTYPE, f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if device is None and _is_cuda(q):
        device = _cuda_device(q)
    with Plan(q.shape, k.shape, _DTYPE_NAMES[dt], scale=scale, dense=dense, keep=keep, threshold=threshold,
              block=block, sort=sort, covariance=covariance, layout=layout, device=device, lse=return_lse) as plan:
        if mask is not None:
            plan.set_selection(mask, perm_q, perm_k)
        elif perm_q is not None or perm_k is not None:
            raise Error(Status.INVALID_ARGUMENT, "perm_q and perm_k need a mask")
        o = plan(q, k, v)
        extra = ([_like(plan.lse(), q)] if return_lse else []) + ([plan.selection()] if return_selection else []) + \
            ([plan.stats()] if return_stats else [])
    return (o, *extra) if extra else o


def _like(a: Any, q: Any) -> Any:
    """a as q's kind: the numpy array, or a torch tensor on q's device."""
    if _is_torch(a):
        return a.to(q.device)
    return _torch().from_numpy(a).to(q.device) if _is_torch(q) else a


def _cuda_device(q: Any) -> Device:
    """The Vulkan device index with q's GPU's UUID; None (the default choice) where there is none
    (the call then warns and takes the host path)."""
    from . import cuda
    try:
        return cuda.vulkan_device(q.device)
    except Exception:
        return None


# ------------------------------------------------------------------------------------------------
# merging partial attentions

def merge(o1: Any, lse1: Any, o2: Any, lse2: Any, *, layout: Layout = "bhnd") -> Tuple[Any, Any]:
    """The attention over the union of two disjoint key sets from the attentions over each:
    lse = logaddexp(lse1, lse2), o = exp(lse1 - lse) o1 + exp(lse2 - lse) o2, per query row.

    o1, o2: [B, H, N, d] ("bhnd"; "bnhd": [B, N, H, d]) outputs of the same queries over two
    disjoint key sets (sequence shards in ring / Ulysses attention, the text and video keys of a
    joint attention); lse1, lse2: their float32 [B, H, N] log-sum-exps (attention(...,
    return_lse=True), Plan.lse()). A part with lse -inf (no keys) contributes nothing; rows with
    both -inf come out 0 with lse -inf. numpy arrays or torch tensors (all the same kind).
    Returns (o in o1's dtype, lse float32); nothing passed in is modified. Weights and sums are
    computed in float32 (float64 for float64 outputs). Error BAD_SHAPE on mismatched shapes.
    """
    if layout not in ("bhnd", "bnhd"):
        raise Error(Status.INVALID_ARGUMENT, f"layout {layout!r}: expected 'bhnd' or 'bnhd'")
    if tuple(o1.shape) != tuple(o2.shape) or len(o1.shape) != 4:
        raise Error(Status.BAD_SHAPE, f"o1 {tuple(o1.shape)} and o2 {tuple(o2.shape)} must be the same 4-d shape")
    b, h, n, _ = _bhnd(tuple(int(s) for s in o1.shape), layout)
    for x, name in ((lse1, "lse1"), (lse2, "lse2")):
        if tuple(x.shape) != (b, h, n):
            raise Error(Status.BAD_SHAPE, f"{name} has shape {tuple(x.shape)}; o1 ({layout}) needs {(b, h, n)}")
    if _is_torch(o1):  # the same arithmetic on either kind: ns is the array module
        ns = torch = _torch()
        acc = torch.float64 if o1.dtype == torch.float64 else torch.float32
        l1, l2 = (x.to(o1.device, torch.float32) for x in (lse1, lse2))
        cast, swap = (lambda x, dt: x.to(dt)), (lambda x: x.transpose(1, 2))
    else:
        ns, o1, o2 = np, np.asarray(o1), np.asarray(o2)
        acc = np.float64 if o1.dtype == np.float64 else np.float32
        l1, l2 = (np.asarray(x, np.float32) for x in (lse1, lse2))
        cast, swap = (lambda x, dt: x.astype(dt)), (lambda x: np.swapaxes(x, 1, 2))
    lse = ns.logaddexp(l1, l2)
    safe = ns.where(ns.isneginf(lse), ns.zeros_like(lse), lse)  # both empty: weights exp(-inf) = 0
    w1, w2 = cast(ns.exp(l1 - safe), acc), cast(ns.exp(l2 - safe), acc)
    if layout == "bnhd":
        w1, w2 = swap(w1), swap(w2)
    o = w1[..., None] * cast(o1, acc) + w2[..., None] * cast(o2, acc)
    return cast(o, o1.dtype), lse
