#!/usr/bin/env bash
# Downloads diffusers and the dependencies torch does not bring into a folder (default wheels/,
# git-ignored) to carry to the GPU machine, which has torch 2.11 but no network and no diffusers:
#   bash bench/fetch_wheels.sh [DEST] [PYTHON_VERSION...]      (default: wheels 3.12)
# then, there:
#   python3 -m pip install --no-index --find-links wheels diffusers pytest
# diffusers 0.42.1 needs Python >= 3.11; the GPU machine's python3 was 3.12.3 (its torch venv).
# Pure-Python wheels are fetched once; the binary ones (Pillow, regex, PyYAML, charset-normalizer:
# one wheel per CPython version; safetensors and hf-xet: one abi3 wheel) as manylinux x86_64 wheels
# for each version asked. torch's own dependencies (filelock, fsspec, typing-extensions, sympy,
# networkx, jinja2) and numpy (baatt's) are already there and are not fetched. Versions are pinned
# to the set baatt.diffusers was developed and tested with (python/tests/test_diffusers.py).
# About 23 MiB for one Python version (Pillow 7, diffusers 6.4, hf-xet 4.3, the rest ~5).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-wheels}
shift || true
PYVERS=("$@")
[ ${#PYVERS[@]} -gt 0 ] || PYVERS=(3.12)
PIP=(python3 -m pip)
[ -x /tmp/venv/bin/python ] && PIP=(/tmp/venv/bin/python -m pip)

PURE=(diffusers==0.42.1 huggingface-hub==2.4.0 httpx2==2.17.0 httpcore2==2.17.0 anyio==4.16.0 h11==0.16.0
      idna==3.21 certifi==2026.10.19.post1 truststore==0.10.5 lazy-importer==0.1.0 click==8.5.1 tqdm==4.70.1
      packaging==26.4 requests==2.34.2 urllib3==2.8.0 importlib-metadata==10.2.0 zipp==4.1.2
      pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pygments==2.21.0)   # pytest: the GPU machine has none
BINARY=(pillow==13.0.0 regex==2026.12.2 pyyaml==6.0.4 charset-normalizer==3.5.3 safetensors==0.8.0 hf-xet==1.8.0)
PLATFORMS=(--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64
           --platform manylinux_2_27_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64)

mkdir -p "$DEST"
"${PIP[@]}" download -q --no-deps --only-binary=:all: -d "$DEST" "${PURE[@]}"
for v in "${PYVERS[@]}"; do
  for p in "${BINARY[@]}"; do
    "${PIP[@]}" download -q --no-deps --only-binary=:all: --python-version "$v" --implementation cp \
      "${PLATFORMS[@]}" -d "$DEST" "$p"
  done
done
echo "fetch_wheels: $(ls "$DEST" | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST (Python ${PYVERS[*]})"
echo "on the GPU machine: python3 -m pip install --no-index --find-links $DEST diffusers pytest"
