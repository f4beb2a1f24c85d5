#!/usr/bin/env python3
"""Disassemble what the NVIDIA Vulkan driver compiled for one of our pipelines.

    BAATT_PROFILE=cache=DIR baatt bench ...     # writes DIR/<shader variant>.bin
    python3 bench/sass.py DIR/attention_cm2_f16.bin [--nvdisasm PATH] [--arch SM90] [--summary]

The driver's pipeline-cache data (580.x) holds a zstd-compressed container with the machine
code as a raw instruction stream, not an ELF file. This finds the stream by its end (the last
EXIT) and walks its start back to the first offset nvdisasm still decodes (binary search), then
prints the SASS, or with --summary the instruction mix of the whole program. Needs the `zstd`
command (or the Python `zstandard` module) and nvdisasm (the CUDA toolkit's; on the GPU machine
/usr/local/cuda-13.0/bin/nvdisasm; elsewhere PyPI's nvidia-cuda-nvdisasm wheel has it). This is
a developer diagnostic of one driver's private format: it may stop working with another driver.
"""
import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile

ZSTD_MAGIC = bytes.fromhex("28b52ffd")
EXIT_LOW = bytes.fromhex("4d79000000000000")   # low 64 bits of an sm_90 EXIT instruction


def decompress(blob):
    i = blob.find(ZSTD_MAGIC)
    if i < 0:
        sys.exit("sass.py: no zstd stream in the cache data (another driver's format?)")
    try:
        import zstandard
        return zstandard.ZstdDecompressor().decompressobj().decompress(blob[i:])
    except ImportError:
        pass
    if not shutil.which("zstd"):
        sys.exit("sass.py: needs the zstd command or the Python zstandard module")
    r = subprocess.run(["zstd", "-d", "-c", "-q"], input=blob[i:], capture_output=True)
    if not r.stdout:
        sys.exit("sass.py: zstd failed: " + r.stderr.decode(errors="replace"))
    return r.stdout


def disassemble(nvdisasm, arch, code):
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(code)
        f.flush()
        r = subprocess.run([nvdisasm, "-b", arch, f.name], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def find_code(nvdisasm, arch, raw):
    exits = [m.start() for m in re.finditer(re.escape(EXIT_LOW), raw)]
    if not exits:
        sys.exit("sass.py: no EXIT instruction found")
    end = exits[-1] + 16 * 2   # the EXIT and the branch-to-self after it
    lo, hi = 1, exits[-1] // 16   # instructions before the last EXIT that still decode
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if disassemble(nvdisasm, arch, raw[exits[-1] - 16 * mid:end]) is not None:
            lo = mid
        else:
            hi = mid - 1
    return disassemble(nvdisasm, arch, raw[exits[-1] - 16 * lo:end])


def summary(sass):
    ops = collections.Counter()
    for line in sass.splitlines():
        m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9]*)", line)
        if m:
            ops[m.group(2)] += 1
    return "\n".join(f"{n:6d} {op}" for op, n in ops.most_common())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache", help="a .bin file written under BAATT_PROFILE=cache=DIR")
    ap.add_argument("--nvdisasm", default=shutil.which("nvdisasm") or "/usr/local/cuda-13.0/bin/nvdisasm")
    ap.add_argument("--arch", default="SM90", help="nvdisasm architecture (default SM90: H100)")
    ap.add_argument("--summary", action="store_true", help="print the instruction mix instead")
    a = ap.parse_args()
    if not shutil.which(a.nvdisasm):
        sys.exit(f"sass.py: nvdisasm not found at {a.nvdisasm} (--nvdisasm PATH)")
    sass = find_code(a.nvdisasm, a.arch, decompress(open(a.cache, "rb").read()))
    if sass is None:
        sys.exit("sass.py: nvdisasm decoded nothing before the last EXIT")
    try:
        sys.stdout.write(summary(sass) + "\n" if a.summary else sass)
    except BrokenPipeError:
        pass


if __name__ == "__main__":
    main()
