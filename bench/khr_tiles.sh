#!/usr/bin/env bash
# The KHR attention kernel's tiles on one device, dense and sparse, from the repository root
# (GPU machine: after `source scripts/gpu-env.sh`, ./build carried). Each tuning is an
# operator's BAATT_TUNE (khr_tile=BRxBC, khr_mf=fragments of M rows per subgroup); a tile that
# does not fit the device runs another kernel, which the JSON's "kernel" shows.
#   bash bench/khr_tiles.sh OUTDIR [N] [DTYPES]
set -u
out=${1:?usage: khr_tiles.sh OUTDIR [N] [DTYPES]} n=${2:-16384} dtypes=${3:-f16,bf16}
mkdir -p "$out"
for tile in default 64x32:1 64x32:2 32x32:1 32x32:2 16x32:1 32x16:1; do
  tune=attend=khr-coopmat,score=scalar
  [ "$tile" = default ] || tune="$tune,khr_tile=${tile%:*},khr_mf=${tile#*:}"
  echo "== $tune"
  BAATT_TUNE=$tune build/baatt bench --sort norm --covariance on --n "$n" --keep 0.5,0.1 --dtype "$dtypes" \
    --heads 32 --dim 128 --reps 5 --warmup 1 --max-seconds 3 --json "$out/khr_${tile/:/_mf}.json" | grep -v '^ *$'
done
