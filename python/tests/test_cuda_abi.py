"""baatt.cuda's ctypes view of the CUDA driver API against the installed cuda.h: struct sizes and
field offsets, the constants, and the exported symbol each function name #defines to (cuMemFree ->
cuMemFree_v2), from a small C program compiled here; and that libcuda's stub (the toolkit's
link-time libcuda.so) exports every symbol used. Runs without a GPU; skipped (visibly) where there
is no C compiler or no CUDA toolkit."""
import ctypes
import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from baatt import cuda


def _cuda_root():
    roots = [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"))
    for r in roots:
        if r and (Path(r) / "include" / "cuda.h").is_file():
            return Path(r)
    return None


STRUCTS = {
    "CUDA_EXTERNAL_MEMORY_HANDLE_DESC": (cuda.ExternalMemoryHandleDesc,
                                         ["type", "handle", "handle.fd", "handle.win32", "handle.nvSciBufObject",
                                          "size", "flags", "reserved"]),
    "CUDA_EXTERNAL_MEMORY_BUFFER_DESC": (cuda.ExternalMemoryBufferDesc, ["offset", "size", "flags", "reserved"]),
    "CUuuid": (cuda.CUuuid, ["bytes"]),
}


def _py_offset(py, path):
    off = 0
    for part in path.split("."):
        f = getattr(py, part)
        off += f.offset
        py = dict(py._fields_)[part]
    return off


def test_layouts_constants_and_symbols(tmp_path):
    cc, root = shutil.which("cc") or shutil.which("gcc"), _cuda_root()
    if not cc or not root:
        pytest.skip("needs a C compiler and a CUDA toolkit's cuda.h (CUDA_HOME or /usr/local/cuda*)")
    lines = []
    for c_name, (py, fields) in STRUCTS.items():
        lines.append(f'printf("size {c_name} %zu\\n", sizeof({c_name}));')
        for f in fields:
            lines.append(f'printf("offset {c_name} {f} %zu\\n", offsetof({c_name}, {f}));')
    lines.append('printf("const OPAQUE_FD %d\\n", (int)CU_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD);')
    lines.append('printf("const DEDICATED %d\\n", (int)CUDA_EXTERNAL_MEMORY_DEDICATED);')
    lines.append('printf("const SUCCESS %d\\n", (int)CUDA_SUCCESS);')
    lines.append('printf("size CUdeviceptr %zu\\n", sizeof(CUdeviceptr));')
    lines.append('printf("size CUresult %zu\\n", sizeof(CUresult));')
    lines.append('printf("size CUdevice %zu\\n", sizeof(CUdevice));')
    for name in cuda.SYMBOLS:
        lines.append(f'printf("symbol {name} %s\\n", XSTR({name}));')
    src = tmp_path / "cuda_abi.c"
    src.write_text("#include <stddef.h>\n#include <stdio.h>\n#include <cuda.h>\n#define STR(x) #x\n"
                   "#define XSTR(x) STR(x)\nint main(void) {\n" + "\n".join(lines) + "\nreturn 0;\n}\n")
    exe = tmp_path / "cuda_abi"
    subprocess.run([cc, "-I", str(root / "include"), str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split("\n")
    const = {"OPAQUE_FD": cuda.CU_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD,
             "DEDICATED": cuda.CUDA_EXTERNAL_MEMORY_DEDICATED, "SUCCESS": cuda.CUDA_SUCCESS}
    scalar = {"CUdeviceptr": cuda.CUdeviceptr, "CUresult": cuda.CUresult, "CUdevice": ctypes.c_int}
    checked = 0
    for line in filter(None, out):
        kind, *rest = line.split()
        if kind == "size":
            c_name, value = rest
            py = STRUCTS[c_name][0] if c_name in STRUCTS else scalar[c_name]
            assert ctypes.sizeof(py) == int(value), f"sizeof {c_name}: ctypes {ctypes.sizeof(py)}, C {value}"
        elif kind == "offset":
            c_name, f, value = rest
            got = _py_offset(STRUCTS[c_name][0], f)
            assert got == int(value), f"{c_name}.{f}: ctypes {got}, C {value}"
        elif kind == "const":
            assert const[rest[0]] == int(rest[1]), f"{rest[0]}: {const[rest[0]]}, cuda.h {rest[1]}"
        else:
            name, symbol = rest
            ours = cuda.SYMBOLS[name][0]
            assert ours == symbol, f"{name} is exported as {symbol} (cuda.h), not {ours}"
        checked += 1
    assert checked == len(lines)
    # the argument counts against the header's prototypes are not checked here; the symbols are:
    stubs = [p for p in (root / "lib64" / "stubs" / "libcuda.so", root / "targets" / "x86_64-linux" / "lib" /
                         "stubs" / "libcuda.so") if p.is_file()]
    if stubs:
        stub = ctypes.CDLL(str(stubs[0]))
        for name, (symbol, _) in cuda.SYMBOLS.items():
            assert hasattr(stub, symbol), f"{stubs[0]} exports no {symbol} ({name})"
