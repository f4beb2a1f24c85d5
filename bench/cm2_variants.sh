#!/usr/bin/env bash
# Times tuning variants (BAATT_TUNE strings, src/choice.h: tiles, paths) side by side in one
# device run, each checked against the CPU reference first.
#   bash bench/cm2_variants.sh [OUTDIR] [VARIANT ...]
# A variant is NAME or NAME:TUNING (e.g. t64:tile=64x64, khr:attend=khr-coopmat). Settings
# (environment): VAR_N (default 32768), VAR_KEEP (default 0.5,0.1), VAR_REPS (default 5),
# VAR_CHECK_N (default 2048; 0 skips the check), BAATT_BUILD (default build).
# Writes OUTDIR/variants.tsv (variant, N, method, keep, ms, TFLOP/s useful, check error) and
# prints it; the driver's register/spill statistics for each variant go to OUTDIR/stats_NAME.txt.
set -u
cd "$(dirname "$0")/.." || exit 1
OUTDIR=${1:-${OUT:-/tmp/cm2_variants}}
shift || true
mkdir -p "$OUTDIR"
BIN=${BAATT_BUILD:-build}/baatt
N=${VAR_N:-32768} KEEP=${VAR_KEEP:-0.5,0.1} REPS=${VAR_REPS:-5} CHECK_N=${VAR_CHECK_N:-2048}
[ $# -gt 0 ] || set -- base t64:tile=64x64 t128x64:tile=128x64 khr:attend=khr-coopmat
TSV=$OUTDIR/variants.tsv
printf 'variant\tn\tmethod\tkeep\tms\ttflops_useful\tcheck_max_err\tkernel\n' >"$TSV"

for spec in "$@"; do
  name=${spec%%:*}
  envs=()
  [ "$spec" != "$name" ] && envs=("BAATT_TUNE=${spec#*:}")
  echo "== $name ${envs[*]:-}" >&2
  if [ "$CHECK_N" -gt 0 ]; then
    env "${envs[@]}" BAATT_PROFILE=pipelines "$BIN" bench --n "$CHECK_N" --keep 0.5 --reps 2 --warmup 1 --check \
      --json "$OUTDIR/check_$name.json" >/dev/null 2>"$OUTDIR/stats_$name.txt" ||
      echo "$name: check FAILED (see stats_$name.txt)" >&2
  fi
  env "${envs[@]}" "$BIN" bench --n "$N" --keep "$KEEP" --reps "$REPS" --warmup 2 \
    --json "$OUTDIR/bench_$name.json" >/dev/null 2>>"$OUTDIR/stats_$name.txt" || echo "$name: bench FAILED" >&2
  python3 - "$name" "$OUTDIR/bench_$name.json" "$OUTDIR/check_$name.json" >>"$TSV" <<'PY'
import json, os, sys
name, bench, check = sys.argv[1:4]
errs = {}
if os.path.exists(check):
    for r in json.load(open(check)):
        errs[r["method"], r["keep"]] = r.get("check_max_err")
if os.path.exists(bench):
    for r in json.load(open(bench)):
        e = errs.get((r["method"], r["keep"]))
        print(f'{name}\t{r["n"]}\t{r["method"]}\t{r["keep"]}\t{r["ms"]:.3f}\t{r["tflops_useful"]:.1f}\t'
              f'{"-" if e is None else f"{e:.2e}"}\t{r["kernel"]}')
PY
done
cat "$TSV"
