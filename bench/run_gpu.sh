#!/usr/bin/env bash
# The whole GPU benchmark in one device run, from the repository root, after
#   source scripts/gpu-env.sh   (or ../shared/gpu/setup.sh where shared/ is present)
# with ./build carried (built on the dev machine; nothing is compiled here):
#   1 nvidia-smi and `build/baatt info`        4 `baatt bench` sweep (+ block masks for flex)
#   2 the GPU tests (build/tests/test_*)        5 fa_baseline.py: FLASH, CUDNN, flex on those masks
#   3 fa_baseline.py --check-baatt build/baatt  6 report.py: h100.md, h100.json, speedup.png
# Every step has a time budget (the defaults add up to under 9 minutes) and a failed step is
# recorded and the run goes on. Outputs in OUTDIR (argument 1, else $OUT, else
# bench/results/raw): h100.md, h100.json, speedup.png and h100_raw.tar.gz (every log and raw JSON),
# few files because the device tool returns at most 8. The summary is printed last.
#
# Settings (environment): BENCH_N BENCH_KEEP BENCH_DTYPE BENCH_HEADS BENCH_DIM BENCH_BLOCK BENCH_SORT BENCH_COV BENCH_REPS
# BENCH_WARMUP BENCH_MAX_SECONDS BENCH_DENSE_MAX_N BENCH_CHECK(1/0) FA_REPS FA_MAX_SECONDS FA_DEVICE
# CHECK_ARGS (extra fa_baseline.py --check-* options), T_INFO T_TESTS T_CHECK T_BENCH T_FA T_REPORT
# (seconds per step), T_TEST_EACH (seconds per test executable), REQUIRE_KHR_BF16 (1: test_khr's bf16
# run fails rather than skips without a bf16 KHR kernel; default 1), BAATT_BUILD (build directory,
# default build), PYTHON, BAATT_COMMIT (the commit to report when .git is absent), BENCH_STEPS
# (the steps to run, default "info tests check bench fa"), REPORT_NAME (the report's file names,
# default h100: NAME.md, NAME.json, NAME_raw.tar.gz, and speedup.png or NAME_speedup.png).
# Opt-in steps (add them to BENCH_STEPS; each writes into the raw tarball):
#   paths     `baatt bench` once per attention kernel in PATHS (default "khr-coopmat portable"), with
#             the block logits on the scalar kernel, as a GPU without cooperative matrix 2 runs them;
#             with fa's FLASH: NAME_paths.md and NAME_paths.png (bench/paths.py). PATHS_N, PATHS_KEEP.
#   ab        `baatt bench` of the build in BAATT_BASE (another build directory, carried) against
#             BAATT_BUILD, alternating AB_ROUNDS times, at AB_N / AB_KEEP, norm sort (no-regression A/B).
#   interop   tests/test_external, python/tests/test_cuda.py (pytest from ./wheels),
#             bench/cuda_interop.py (CUDA tensors).
#   diffusers bench/diffusers_bench.py (diffusers from ./wheels: bench/fetch_wheels.sh), WAN_ARGS.
#   reuse     `baatt attention --steps` on random fp16 tensors at REUSE_N, keep REUSE_KEEP, each
#             sort:covariance in REUSE_CASES: the time of an estimating step and of a reusing one (issue 17 item 1).
#   defaults  `baatt bench` (no dense) for every sort:covariance:block in DEF_CASES at DEF_N: the
#             cost of auto sort, of the lambda choice and of the block size (issue 17 items 4-6).
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
START=$(date +%s)

OUTDIR=${1:-${OUT:-bench/results/raw}}
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)
RAW=$(mktemp -d "${TMPDIR:-/tmp}/baatt-raw.XXXXXX")
MASKS=$(mktemp -d "${TMPDIR:-/tmp}/baatt-masks.XXXXXX") # large: kept out of the tarball
BUILD=${BAATT_BUILD:-build}
BIN=$BUILD/baatt
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export BAATT_TIMEOUT_S=${BAATT_TIMEOUT_S:-120} # a hung GPU wait fails one step, not the whole run

BENCH_N=${BENCH_N:-4096,16384,32768}
BENCH_KEEP=${BENCH_KEEP:-0.5,0.25,0.1}
BENCH_DTYPE=${BENCH_DTYPE:-f16}
BENCH_HEADS=${BENCH_HEADS:-32}
BENCH_DIM=${BENCH_DIM:-128}
BENCH_BLOCK=${BENCH_BLOCK:-64}
BENCH_SORT=${BENCH_SORT:-auto} # the library default since issue 17; reports before it timed norm
BENCH_COV=${BENCH_COV:-auto}   # the library default since issue 17 item 5; reports before it timed on
BENCH_REPS=${BENCH_REPS:-10}
BENCH_WARMUP=${BENCH_WARMUP:-2}
BENCH_MAX_SECONDS=${BENCH_MAX_SECONDS:-15}
BENCH_DENSE_MAX_N=${BENCH_DENSE_MAX_N:-32768}
BENCH_CHECK=${BENCH_CHECK:-1}
FA_REPS=${FA_REPS:-20}
FA_MAX_SECONDS=${FA_MAX_SECONDS:-5}
FA_DEVICE=${FA_DEVICE:-cuda}
CHECK_ARGS=${CHECK_ARGS:-}
T_INFO=${T_INFO:-20} T_TESTS=${T_TESTS:-90} T_CHECK=${T_CHECK:-60}
T_BENCH=${T_BENCH:-170} T_FA=${T_FA:-140} T_REPORT=${T_REPORT:-30}
BENCH_STEPS=${BENCH_STEPS:-info tests check bench fa}
REPORT_NAME=${REPORT_NAME:-h100}
PATHS=${PATHS:-khr-coopmat portable} PATHS_N=${PATHS_N:-16384,32768} PATHS_KEEP=${PATHS_KEEP:-0.5,0.25,0.1}
AB_N=${AB_N:-32768,131072} AB_KEEP=${AB_KEEP:-0.5,0.1} AB_ROUNDS=${AB_ROUNDS:-2}
WAN_ARGS=${WAN_ARGS:---layers 10 --steps 4 --keeps 0.5,0.25,0.1 --reuse 1,3}
REUSE_N=${REUSE_N:-32768,131072} REUSE_KEEP=${REUSE_KEEP:-0.1} REUSE_CASES=${REUSE_CASES:-auto:auto norm:on}
DEF_N=${DEF_N:-32768,131072} DEF_CASES=${DEF_CASES:-norm:on:64 auto:on:64 auto:auto:64 norm:on:128 auto:auto:128}
T_REUSE=${T_REUSE:-150} T_DEFAULTS=${T_DEFAULTS:-200}
T_PATHS=${T_PATHS:-150} T_AB=${T_AB:-200} T_INTEROP=${T_INTEROP:-150} T_DIFFUSERS=${T_DIFFUSERS:-240}

if [ -n "${BAATT_COMMIT:-}" ]; then COMMIT=$BAATT_COMMIT
elif git rev-parse HEAD >/dev/null 2>&1; then
  COMMIT=$(git rev-parse HEAD)
  git diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT (+ uncommitted changes)"
elif [ -f COMMIT ]; then COMMIT=$(head -n1 COMMIT)
else COMMIT=unknown; fi
COMMAND="bash bench/run_gpu.sh $* [BENCH_N=$BENCH_N BENCH_KEEP=$BENCH_KEEP BENCH_DTYPE=$BENCH_DTYPE \
BENCH_HEADS=$BENCH_HEADS BENCH_DIM=$BENCH_DIM BENCH_BLOCK=$BENCH_BLOCK BENCH_SORT=$BENCH_SORT BENCH_COV=$BENCH_COV BENCH_REPS=$BENCH_REPS BENCH_MAX_SECONDS=$BENCH_MAX_SECONDS \
BENCH_DENSE_MAX_N=$BENCH_DENSE_MAX_N FA_REPS=$FA_REPS]"

say() { echo "[run_gpu $(($(date +%s) - START))s] $*"; }

# step NAME BUDGET_S NOTE CMD...: runs CMD under a time limit, output to $RAW/NAME.log, and
# records "name<TAB>exit status<TAB>seconds<TAB>note" in steps.tsv (124: out of time).
step() {
  local name=$1 budget=$2 note=$3 t0 rc
  shift 3
  case " $BENCH_STEPS " in *" $name "*) ;; *) say "$name: skipped (BENCH_STEPS)"; return 0 ;; esac
  t0=$(date +%s)
  say "$name (budget ${budget}s): $*"
  if declare -F "$1" >/dev/null; then # a function of this script: timeout needs a program
    timeout -k 10 "$budget" bash -c "$1" >"$RAW/$name.log" 2>&1
  else
    timeout -k 10 "$budget" "$@" >"$RAW/$name.log" 2>&1
  fi
  rc=$?
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && note="out of time (${budget}s); $note"
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" "$note" >>"$RAW/steps.tsv"
  if [ $rc -ne 0 ]; then
    say "$name FAILED (exit $rc); last lines of its log:"
    tail -n 15 "$RAW/$name.log" | sed 's/^/    /'
  fi
  return 0
}

# ---- 1: the machine ----
machine_info() {
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader \
      | head -n1 >"$RAW/smi.txt"
  else
    echo "nvidia-smi not found" | tee "$RAW/smi.txt"
  fi
  uname -a
  "$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' || true
  "$BIN" info | tee "$RAW/info.txt"
}

# ---- 2: the GPU tests ----
# One extra test invocation (label, log file, then the command; BAATT_TUNE etc. through env):
# its result line in tests.txt; nonzero where it failed (77 is a skip).
one_test() {
  local label=$1 log=$2 t0 rc res
  shift 2
  t0=$(date +%s)
  BAATT_VALIDATION=$layer BAATT_CLI="$ROOT/$BIN" BAATT_TEST_TMP="$RAW/testtmp" timeout -k 5 "$T_TEST_EACH" "$@" >"$log" 2>&1
  rc=$?
  case $rc in 0) res=PASS ;; 77) res=SKIP ;; 124 | 137) res="TIMEOUT" ;; *) res="FAIL (exit $rc)" ;; esac
  echo "$label: $res ($(($(date +%s) - t0)) s)" | tee -a "$RAW/tests.txt"
  [ $rc -ne 0 ] && [ $rc -ne 77 ] && tail -n 30 "$log" && return 1
  return 0
}

# The test executables are run directly, not through ctest: the carried CTestTestfile.cmake holds
# the build machine's absolute paths, and it forces BAATT_VALIDATION=1 while the device has no
# validation layer unless one was carried. Same environment otherwise; exit 77 = skipped.
gpu_tests() {
  local layer=0 t rc res t0 fails=0
  ls /usr/share/vulkan/explicit_layer.d/*khronos_validation* >/dev/null 2>&1 && layer=1
  echo "validation layer: $([ $layer = 1 ] && echo on || echo 'not installed: off')"
  mkdir -p "$RAW/testtmp"
  for t in "$BUILD"/tests/test_*; do
    if [ ! -f "$t" ] || [ ! -x "$t" ]; then continue; fi
    t0=$(date +%s)
    BAATT_VALIDATION=$layer BAATT_CLI="$ROOT/$BIN" BAATT_TEST_TMP="$RAW/testtmp" \
      timeout -k 5 "$T_TEST_EACH" "$t" >"$RAW/$(basename "$t").log" 2>&1
    rc=$?
    case $rc in 0) res=PASS ;; 77) res=SKIP ;; 124 | 137) res="TIMEOUT" ;; *) res="FAIL (exit $rc)" ;; esac
    [ $rc -ne 0 ] && [ $rc -ne 77 ] && fails=$((fails + 1))
    echo "$(basename "$t"): $res ($(($(date +%s) - t0)) s)" | tee -a "$RAW/tests.txt"
    [ $rc -ne 0 ] && [ $rc -ne 77 ] && tail -n 30 "$RAW/$(basename "$t").log"
  done
  [ -s "$RAW/tests.txt" ] || echo "no test executables under $BUILD/tests" | tee "$RAW/tests.txt"
  # other paths of test_baatt through the operator's tuning string: the radix sort at the tests'
  # short lengths, the KHR kernel, and the portable kernels (no effect on devices without those
  # paths)
  t="$BUILD/tests/test_baatt"
  local v
  for v in "sort=radix" "attend=khr-coopmat" "attend=portable,score=scalar,select=shared"; do
    [ -x "$t" ] || break
    BAATT_TUNE=$v one_test "test_baatt (BAATT_TUNE=$v)" "$RAW/test_baatt_$(echo "$v" | tr -c 'a-z0-9\n' '_').log" "$t" ||
      fails=$((fails + 1))
  done
  # the KHR kernel's bf16 variant (test_khr runs fp16 without arguments); the H100 lists bf16
  # 16x16x16 and VK_KHR_shader_bfloat16, so it is required there (REQUIRE_KHR_BF16=0: may skip)
  t="$BUILD/tests/test_khr"
  local req=require
  [ "${REQUIRE_KHR_BF16:-1}" = 1 ] || req=
  [ -x "$t" ] && { one_test "test_khr bf16${req:+ require}" "$RAW/test_khr_bf16.log" "$t" bf16 $req || fails=$((fails + 1)); }
  return $fails
}

# The H100 lists KHR cooperative matrices: test_khr must run there, not skip.
export BAATT_TEST_REQUIRE_KHR=${BAATT_TEST_REQUIRE_KHR:-1}
export RAW BUILD BIN PY ROOT T_TEST_EACH="${T_TEST_EACH:-75}"
export -f machine_info gpu_tests one_test
step info "$T_INFO" "" machine_info
step tests "$T_TESTS" "build/tests/test_* run directly (see run_gpu.sh)" gpu_tests
# shellcheck disable=SC2086 # CHECK_ARGS is a list of options
step check "$T_CHECK" "baatt vs torch, small size" \
  "$PY" bench/fa_baseline.py --device "$FA_DEVICE" --check-baatt "$BIN" --check-out "$RAW/check.json" $CHECK_ARGS
BENCH_ARGS=(--n "$BENCH_N" --keep "$BENCH_KEEP" --dtype "$BENCH_DTYPE" --heads "$BENCH_HEADS" --dim "$BENCH_DIM"
  --block "$BENCH_BLOCK" --sort "$BENCH_SORT" --covariance "$BENCH_COV" --reps "$BENCH_REPS" --warmup "$BENCH_WARMUP" --max-seconds "$BENCH_MAX_SECONDS" --dense-max-n "$BENCH_DENSE_MAX_N"
  --json "$RAW/bench.json" --mask-dir "$MASKS")
[ "$BENCH_CHECK" = 1 ] && BENCH_ARGS+=(--check)
step bench "$T_BENCH" "" "$BIN" bench "${BENCH_ARGS[@]}"
step fa "$T_FA" "flex on baatt's masks" "$PY" bench/fa_baseline.py --device "$FA_DEVICE" --n "$BENCH_N" \
  --heads "$BENCH_HEADS" --dim "$BENCH_DIM" --dtype "$BENCH_DTYPE" --block "$BENCH_BLOCK" --reps "$FA_REPS" \
  --max-seconds "$FA_MAX_SECONDS" --budget $((T_FA > 40 ? T_FA - 25 : T_FA / 2)) --mask-dir "$MASKS" \
  --out "$RAW/fa.json"

# ---- opt-in: the other kernels, the A/B against a base build, CUDA interop, diffusers ----
# the shape of the main bench, fewer repetitions (a function: arrays do not cross `bash -c`)
small() { echo --dtype "$BENCH_DTYPE" --heads "$BENCH_HEADS" --dim "$BENCH_DIM" --reps 5 --warmup 1 --max-seconds 3; }
other_paths() {
  local k
  for k in $PATHS; do
    BAATT_TUNE=attend=$k,score=scalar "$BIN" bench --sort norm --covariance on --n "$PATHS_N" --keep "$PATHS_KEEP" \
      --dense-max-n 32768 $(small) --json "$RAW/paths_$k.json" || return 1
  done
}
ab_base() {
  local r b
  [ -x "${BAATT_BASE:-}/baatt" ] || { echo "BAATT_BASE is not a build directory with baatt"; return 1; }
  for r in $(seq "$AB_ROUNDS"); do
    for b in "$BAATT_BASE" "$BUILD"; do
      # norm sort, lambda 1: a base build older than an option ran its value by default
      local sort=() help
      help=$("$b/baatt" bench --help)
      grep -q -- --sort <<<"$help" && sort+=(--sort norm)
      grep -q -- --covariance <<<"$help" && sort+=(--covariance on)
      "$b/baatt" bench "${sort[@]}" --n "$AB_N" --keep "$AB_KEEP" --dense-max-n 32768 $(small) \
        --json "$RAW/ab_$(basename "$b")_$r.json" || return 1
    done
  done
}
interop() {
  [ -d wheels ] && "$PY" -m pip install -q --no-index --find-links wheels pytest
  "$BUILD/tests/test_external" &&
    PYTHONPATH=python BAATT_LIBRARY="$BUILD" "$PY" -m pytest -q -rs -p no:cacheprovider python/tests/test_cuda.py &&
    PYTHONPATH=python BAATT_LIBRARY="$BUILD" "$PY" bench/cuda_interop.py --out "$RAW/cuda_interop.json"
}
wan() {
  [ -d wheels ] && "$PY" -m pip install -q --no-index --find-links wheels diffusers
  # shellcheck disable=SC2086 # WAN_ARGS is a list of options
  PYTHONPATH=python BAATT_LIBRARY="$BUILD" "$PY" bench/diffusers_bench.py --device cuda $WAN_ARGS \
    --out "$RAW/wan.json" --plot "$OUTDIR/${REPORT_NAME}_wan.png"
}
reuse_steps() {
  local n c s v dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/baatt-reuse.XXXXXX")
  trap 'rm -rf "$dir"' RETURN # up to 3 GiB of inputs, on failure too
  for n in ${REUSE_N//,/ }; do
    "$PY" -c 'import numpy as np, sys; n = int(sys.argv[1]); r = np.random.default_rng(n)
for x in "qkv": np.save(f"{sys.argv[2]}/{x}.npy", r.standard_normal((1, int(sys.argv[3]), n, int(sys.argv[4])), dtype=np.float32).astype(np.float16))' \
      "$n" "$dir" "$BENCH_HEADS" "$BENCH_DIM" || return 1
    for c in $REUSE_CASES; do
      IFS=: read -r s v <<<"$c"
      echo "n=$n sort=$s covariance=$v keep=$REUSE_KEEP"
      "$BIN" attention --q "$dir/q.npy" --k "$dir/k.npy" --v "$dir/v.npy" --out "$dir/o.npy" --keep "$REUSE_KEEP" \
        --sort "$s" --covariance "$v" --steps 10 --refresh 2 --json >"$RAW/reuse_n${n}_${s}_$v.json" || return 1
      cat "$RAW/reuse_n${n}_${s}_$v.json"
    done
  done
}
defaults_sweep() {
  local c s v b
  for c in $DEF_CASES; do
    IFS=: read -r s v b <<<"$c"
    "$BIN" bench --sort "$s" --covariance "$v" --block "$b" --n "$DEF_N" --keep "$BENCH_KEEP" --no-dense $(small) \
      --json "$RAW/defaults_${s}_${v}_b$b.json" || return 1
  done
}
export REUSE_N REUSE_KEEP REUSE_CASES DEF_N DEF_CASES BENCH_KEEP
export PATHS PATHS_N PATHS_KEEP AB_N AB_KEEP AB_ROUNDS WAN_ARGS OUTDIR REPORT_NAME BENCH_DTYPE BENCH_HEADS BENCH_DIM
export BAATT_BASE="${BAATT_BASE:-}"
export -f small other_paths ab_base interop wan reuse_steps defaults_sweep
step paths "$T_PATHS" "attend=<kernel>,score=scalar" other_paths
step ab "$T_AB" "base ${BAATT_BASE:-unset} vs $BUILD" ab_base
step interop "$T_INTEROP" "device-resident CUDA tensors" interop
step diffusers "$T_DIFFUSERS" "$WAN_ARGS" wan
step reuse "$T_REUSE" "estimate vs reuse per step" reuse_steps
step defaults "$T_DEFAULTS" "sort x covariance x block" defaults_sweep
if [ -n "$(ls "$RAW"/paths_*.json 2>/dev/null)" ]; then
  "$PY" bench/paths.py --bench "$RAW"/paths_*.json --fa "$RAW/fa.json" --out-md "$OUTDIR/${REPORT_NAME}_paths.md" \
    --out-json "$RAW/paths.json" --out-png "$OUTDIR/${REPORT_NAME}_paths.png" --command "$COMMAND" \
    >"$RAW/paths_report.log" 2>&1 || say "paths report FAILED: $(tail -n 3 "$RAW/paths_report.log")"
fi

# ---- 6: the report (its own failure can only be printed) ----
SPEEDUP_PNG=speedup.png
[ "$REPORT_NAME" = h100 ] || SPEEDUP_PNG=${REPORT_NAME}_speedup.png
RPY=$PY # report.py needs only the standard library; the first python with matplotlib also plots
for c in "$PY" python3 /usr/bin/python3; do
  if command -v "$c" >/dev/null && "$c" -c 'import matplotlib' 2>/dev/null; then RPY=$c && break; fi
done
say "report ($RPY)"
timeout -k 5 "$T_REPORT" "$RPY" bench/report.py --bench "$RAW/bench.json" --fa "$RAW/fa.json" \
  --check "$RAW/check.json" --smi "$RAW/smi.txt" --info "$RAW/info.txt" --steps "$RAW/steps.tsv" \
  --tests "$RAW/tests.txt" --commit "$COMMIT" --command "$COMMAND" \
  --out-md "$OUTDIR/$REPORT_NAME.md" --out-json "$OUTDIR/$REPORT_NAME.json" --out-png "$OUTDIR/$SPEEDUP_PNG" \
  >"$RAW/report.log" 2>&1 || say "report FAILED: $(tail -n 5 "$RAW/report.log")"
tar -C "$RAW" -czf "$OUTDIR/${REPORT_NAME}_raw.tar.gz" . 2>/dev/null || say "could not write ${REPORT_NAME}_raw.tar.gz"
rm -rf "$MASKS"

# ---- summary, last so that it ends the device tool's output tail ----
echo
echo "================ summary ($(($(date +%s) - START)) s) ================"
echo "card: $(cat "$RAW/smi.txt" 2>/dev/null)   commit: $COMMIT"
echo "steps (name, exit status, seconds, note):"
sed 's/^/  /' "$RAW/steps.tsv"
echo "GPU tests:"
sed 's/^/  /' "$RAW/tests.txt" 2>/dev/null
grep -h '^check:' "$RAW/check.log" 2>/dev/null | tail -n 1
echo "baatt bench (stdout):"
grep -E '^ *[0-9]+ (f16|f32|bf16) |^ +N dtype' "$RAW/bench.log" 2>/dev/null | sed 's/^/  /'
cat "$RAW/report.log" 2>/dev/null
echo "outputs: $(cd "$OUTDIR" && echo *)"
