"""The ctypes structures of baatt._lib against include/baatt.h: sizes and field offsets, from a
small C program compiled here. Skipped (visibly) where there is no C compiler or no header."""
import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from baatt import _lib

HEADER_DIR = Path(__file__).resolve().parents[2] / "include"
STRUCTS = {"baatt_device_info": _lib.DeviceInfoC, "baatt_context_options": _lib.ContextOptionsC,
           "baatt_config": _lib.ConfigC, "baatt_run_stats": _lib.RunStatsC}


def test_struct_layouts(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc or not (HEADER_DIR / "baatt.h").is_file():
        pytest.skip("needs a C compiler and the checkout's include/baatt.h")
    lines = []
    for c_name, py in STRUCTS.items():
        lines.append(f'printf("{c_name} size %zu\\n", sizeof({c_name}));')
        for f, _ in py._fields_:
            lines.append(f'printf("{c_name} {f} %zu\\n", offsetof({c_name}, {f}));')
    src = tmp_path / "abi.c"
    src.write_text("#include <stddef.h>\n#include <stdio.h>\n#include <baatt.h>\nint main(void) {\n" +
                   "\n".join(lines) + "\nreturn 0;\n}\n")
    exe = tmp_path / "abi"
    subprocess.run([cc, "-I", str(HEADER_DIR), str(src), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.split("\n")
    for line in filter(None, out):
        c_name, what, value = line.split()
        py = STRUCTS[c_name]
        got = ctypes.sizeof(py) if what == "size" else getattr(py, what).offset
        assert got == int(value), f"{c_name}.{what}: ctypes {got}, C {value}"
