#!/usr/bin/env bash
# Times the portable attention kernel's variants (tuning key portable=, NOTES.md #62-#65) on one
# GPU, after checking each: test_baatt under the variant's tuning (a failure or a skipped test
# marks the variant's row CHECK-FAILED) and, once, test_portable (each variant is the one the
# plan runs, and its accuracy on outlier and overflowing inputs).
# From the repository root with build/ (or $BAATT_BUILD) built (Release, tests on):
#   bench/portable_variants.sh [variant ...]
# default variants: base qk16 pv16 qk16+pv16 qk16+pv16+long; a variant with '=' is a tuning suffix
# as it is (e.g. portable_tile=32x32,portable_f32=q+k). One line a variant: dense 16K
# (32 heads x 128, fp16) ms and TFLOP/s, then BA-Att keep 0.5 and 0.1 total and attention ms.
set -u
cd "$(dirname "$0")/.."
variants=("$@")
B=${BAATT_BUILD:-build}
[ ${#variants[@]} -gt 0 ] || variants=(base qk16 pv16 qk16+pv16 qk16+pv16+long)
tune() { case $1 in *=*) echo "attend=portable,score=scalar,$1" ;; *) echo "attend=portable,score=scalar,portable=$1" ;; esac; }
log=$(mktemp -d)

# 0 where the test binary passed with nothing skipped; else prints why (on stdout).
check() { # name tuning
    local out=$log/$1.$2.log
    BAATT_TUNE=$2 timeout 120 "$B/tests/$1" >"$out" 2>&1
    local rc=$? skipped
    skipped=$(grep -c '^\[  SKIPPED \] [a-z]' "$out")
    if [ $rc -ne 0 ] || [ "$skipped" -ne 0 ]; then
        echo "  $1 ($2): rc $rc, $skipped skipped ($out):"
        grep -E '^\[ *(FAILED|SKIPPED|SKIP) *\]|mismatch' "$out" | head -8
        return 1
    fi
}

# the checks first, side by side (their time is mostly the CPU reference), then the timings alone
check test_portable attend=portable >"$log/portable.why" 2>&1 &
for v in "${variants[@]}"; do check test_baatt "$(tune "$v")" >"$log/$v.why" 2>&1 & done
wait
echo "test_portable: $( [ -s "$log/portable.why" ] && echo FAILED || echo passed)"
cat "$log/portable.why"
printf '%-40s %9s %8s %10s %10s %10s %10s %s\n' variant dense_ms TFLOP/s k0.5_ms k0.5_att k0.1_ms k0.1_att check
for v in "${variants[@]}"; do
    ok=passed
    [ -s "$log/$v.why" ] && ok=CHECK-FAILED
    out=$log/bench.$v.txt
    BAATT_TUNE=$(tune "$v") timeout 150 "$B/baatt" bench --n 16384 --keep 0.5,0.1 --sort norm --covariance on \
        --reps 5 --dtype f16 --heads 32 --dim 128 --max-seconds 8 >"$out" 2>"$log/bench.$v.err" || ok="$ok,bench-rc-$?"
    # table rows: N dtype method... median_ms min_ms reps sparsity TFLOP/s useful vs_dense sort stats score select attend
    awk -v v="$v" -v ok="$ok" '
        $1 == 16384 && $3 == "dense" { dm = $4; tf = $8 }
        $1 == 16384 && $4 == "keep=0.5" { k5 = $5; a5 = $NF }
        $1 == 16384 && $4 == "keep=0.1" { k1 = $5; a1 = $NF }
        END { printf "%-40s %9s %8s %10s %10s %10s %10s %s\n", v, dm, tf, k5, a5, k1, a1, ok }' "$out"
done
for v in "${variants[@]}"; do cat "$log/$v.why"; done
echo "logs: $log"
