"""baatt: Block Approximate Sparse Attention on any GPU through Vulkan compute.

    import baatt, numpy as np
    q = np.random.randn(1, 8, 4096, 128).astype(np.float32)
    k = v = np.random.randn(1, 2, 4096, 128).astype(np.float32)
    o = baatt.attention(q, k, v, keep=0.25)               # BA-Att; dense=True for exact attention
    o, sel, st = baatt.attention(q, k, v, return_selection=True, return_stats=True)
    with baatt.Plan(q.shape, k.shape, q.dtype) as plan:   # diffusion steps: estimate every 4th
        for step, (q, k, v) in enumerate(steps):
            o = plan(q, k, v, reuse=step % 4 != 0)
    o = baatt.attention(q, k, v, block=128, mask=baatt.masks.from_block_mask(flex_block_mask))
    o1, l1 = baatt.attention(q, k1, v1, dense=True, return_lse=True)   # two key shards ...
    o2, l2 = baatt.attention(q, k2, v2, dense=True, return_lse=True)
    o, lse = baatt.merge(o1, l1, o2, l2)                   # ... = attention over both

torch CUDA tensors stay on the GPU (baatt.cuda: Vulkan memory imported into CUDA; a one-time
warning and the host path where that interop is unavailable).

A binding over libbaatt.so's C API (include/baatt.h) through ctypes. The library is looked up in
$BAATT_LIBRARY, next to this package (the wheel), in the checkout's build/ (PYTHONPATH=python),
then on the system's library path.
"""
from ._api import (STAGES, DeviceInfo, Error, Plan, Selection, Snapshot, Stats, Status, attention, devices,
                   merge)
from ._lib import lib as _cdll, text as _text
from . import masks

__version__ = "0.3.0"
__all__ = ["attention", "merge", "Plan", "Selection", "Stats", "Error", "Status", "DeviceInfo", "devices", "STAGES",
           "masks", "library_version", "__version__", "Snapshot"]


def library_version() -> str:
    """The loaded libbaatt's version (baatt_version())."""
    return _text(_cdll.baatt_version())


# A stale library (e.g. $BAATT_LIBRARY left pointing at an old build) would mismatch the structures.
if library_version().split(".")[:2] != __version__.split(".")[:2]:
    raise ImportError(f"baatt {__version__} found libbaatt {library_version()}: rebuild or point BAATT_LIBRARY "
                      "at the matching library")
