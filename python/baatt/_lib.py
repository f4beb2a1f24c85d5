"""ctypes declarations of include/baatt.h (the public C API only) and the loading of libbaatt.so.

The structures below mirror baatt.h field for field; tests/test_abi.py (python/tests) compiles a
small C program, where a compiler exists, to check their sizes and offsets against the header.
"""
from __future__ import annotations

import ctypes
import os
from ctypes import (POINTER, Structure, c_char, c_char_p, c_double, c_float, c_int, c_size_t, c_uint8,
                    c_uint32, c_uint64, c_void_p)
from pathlib import Path

SONAME = "libbaatt.so.0"
STAGE_COUNT = 5


class DeviceInfoC(Structure):
    _fields_ = [
        ("index", c_uint32),
        ("name", c_char * 256),
        ("driver_name", c_char * 256),
        ("driver_info", c_char * 256),
        ("type", c_int),
        ("vendor_id", c_uint32),
        ("device_id", c_uint32),
        ("api_version", c_uint32),
        ("subgroup_size", c_uint32),
        ("max_shared_memory", c_uint32),
        ("max_workgroup_invocations", c_uint32),
        ("max_storage_buffer_range", c_uint64),
        ("device_local_bytes", c_uint64),
        ("timestamp_period_ns", c_float),
        ("fp16_storage", c_int),
        ("fp16_arithmetic", c_int),
        ("coopmat_nv", c_int),
        ("coopmat_khr", c_int),
        ("coopmat2_nv", c_int),
        ("bf16", c_int),
        ("picked", c_int),
        ("uuid", c_uint8 * 16),
        ("external_memory_fd", c_int),
    ]


class ContextOptionsC(Structure):
    _fields_ = [("device_index", c_int), ("device_name", c_char_p), ("validation", c_int)]


class ConfigC(Structure):
    _fields_ = [
        ("batch", c_uint32),
        ("heads", c_uint32),
        ("kv_heads", c_uint32),
        ("q_len", c_uint32),
        ("kv_len", c_uint32),
        ("head_dim", c_uint32),
        ("dtype", c_int),
        ("scale", c_float),
        ("dense", c_int),
        ("block_size", c_uint32),
        ("norm_sort", c_int),
        ("covariance", c_int),
        ("select_mode", c_int),
        ("keep_ratio", c_float),
        ("mass_threshold", c_float),
        ("min_blocks", c_uint32),
        ("max_blocks", c_uint32),
        ("lse", c_int),
    ]


class RunStatsC(Structure):
    _fields_ = [
        ("stage_ms", c_double * STAGE_COUNT),
        ("gpu_ms", c_double),
        ("sparsity", c_double),
        ("selected_blocks", c_uint64),
        ("timed", c_int),
    ]


_PROTOTYPES = {
    # name: (restype, argtypes)
    "baatt_version": (c_char_p, []),
    "baatt_status_string": (c_char_p, [c_int]),
    "baatt_devices_list": (c_int, [POINTER(DeviceInfoC), POINTER(c_uint32)]),
    "baatt_context_options_default": (ContextOptionsC, []),
    "baatt_context_create": (c_int, [POINTER(ContextOptionsC), POINTER(c_void_p)]),
    "baatt_context_destroy": (None, [c_void_p]),
    "baatt_context_error": (c_char_p, [c_void_p]),
    "baatt_context_device_info": (c_int, [c_void_p, POINTER(DeviceInfoC)]),
    "baatt_context_validation_messages": (c_uint32, [c_void_p]),
    "baatt_config_default": (ConfigC, []),
    "baatt_config_check": (c_int, [POINTER(ConfigC), c_char_p, c_size_t]),
    "baatt_config_q_blocks": (c_uint32, [POINTER(ConfigC)]),
    "baatt_config_k_blocks": (c_uint32, [POINTER(ConfigC)]),
    "baatt_config_scale": (c_float, [POINTER(ConfigC)]),
    "baatt_plan_create": (c_int, [c_void_p, POINTER(ConfigC), POINTER(c_void_p)]),
    "baatt_plan_destroy": (None, [c_void_p]),
    "baatt_plan_scratch_bytes": (c_uint64, [c_void_p]),
    "baatt_plan_run_host": (c_int, [c_void_p, c_void_p, c_void_p, c_void_p, c_void_p]),
    "baatt_plan_set_reuse": (c_int, [c_void_p, c_int]),
    "baatt_plan_set_selection": (c_int, [c_void_p, c_void_p, c_void_p, c_void_p]),
    "baatt_plan_snapshot_save": (c_int, [c_void_p, POINTER(c_void_p)]),
    "baatt_plan_snapshot_load": (c_int, [c_void_p, c_void_p]),
    "baatt_snapshot_destroy": (None, [c_void_p]),
    "baatt_plan_stats": (c_int, [c_void_p, POINTER(RunStatsC)]),
    "baatt_plan_read_mask": (c_int, [c_void_p, POINTER(c_uint8)]),
    "baatt_plan_read_perms": (c_int, [c_void_p, c_void_p, c_void_p]),
    "baatt_plan_read_head_sorted": (c_int, [c_void_p, POINTER(c_uint8)]),
    "baatt_plan_read_head_covariance": (c_int, [c_void_p, POINTER(c_uint8)]),
    "baatt_plan_read_lse": (c_int, [c_void_p, c_void_p]),
    "baatt_stage_name": (c_char_p, [c_int]),
    "baatt_device_buffer_create_exportable": (c_int, [c_void_p, c_uint64, POINTER(c_void_p)]),
    "baatt_device_buffer_export_fd": (c_int, [c_void_p, POINTER(c_int), POINTER(c_uint64), POINTER(c_int)]),
    "baatt_device_buffer_destroy": (None, [c_void_p]),
    "baatt_plan_run_buffers_lse": (c_int, [c_void_p, c_void_p, c_void_p, c_void_p, c_void_p, c_void_p]),
}


def _candidates() -> list[Path]:
    """Where libbaatt.so.0 may be, in order: $BAATT_LIBRARY (a file, or a directory holding it),
    next to this package (the wheel), the repository's build tree (PYTHONPATH=python from a
    checkout built with CMake: build/), then the system's library search path."""
    out = []
    env = os.environ.get("BAATT_LIBRARY")
    if env:
        p = Path(env)
        out.append(p / SONAME if p.is_dir() else p)
    here = Path(__file__).resolve().parent
    out.append(here / SONAME)
    out.append(here.parent.parent / "build" / SONAME)
    return out


def _load() -> ctypes.CDLL:
    tried = []
    for path in _candidates():
        if path.is_file():
            return ctypes.CDLL(str(path))
        tried.append(str(path))
    try:
        return ctypes.CDLL(SONAME)
    except OSError as e:
        tried.append(f"{SONAME} on the library search path ({e})")
    raise ImportError("baatt: libbaatt.so.0 not found; tried " + ", ".join(tried) +
                      ". Set BAATT_LIBRARY to the library (e.g. build/libbaatt.so.0) or pip install the package.")


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    for name, (restype, argtypes) in _PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


lib = _declare(_load())


def text(b: bytes | None) -> str:
    return b.decode("utf-8", "replace") if b else ""
