#!/usr/bin/env bash
# Regenerates the accuracy report: bench/results/accuracy.json, accuracy.md and accuracy_*.png.
#
#   bash bench/accuracy.sh            # ~3 minutes on 2 cores (CPU only)
#
# Needs: a built `baatt` (BAATT=path, else build/baatt, else it builds one into build/), python3
# with numpy and matplotlib (pip install numpy matplotlib), and bench/data/real/{q,k,v}.npy (in the
# repository; bench/make_real_qkv.py recreates them). Every run is deterministic: same binary, same
# numbers. For work on the report itself: ACC_TMP=dir keeps the raw per-run JSON there, and
# ACC_REPORT_ONLY=1 re-renders the report from an ACC_TMP of an earlier run without re-running.
set -euo pipefail
source "$(dirname "$0")/accuracy_setup.sh"

SPARSITY=0.05,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.75,0.8,0.85,0.9,0.95
THRESHOLD=0.8,0.9,0.95
METHODS=baatt,baatt_sort,baatt_cov,meanpool,antidiag8,antidiag16,probe,oracle,oracle_unsorted,baatt_auto,oracle_best
common=(--sparsity "$SPARSITY" --threshold "$THRESHOLD" --methods "$METHODS" --block 64)

if [ -z "${ACC_REPORT_ONLY:-}" ]; then
# 1. the synthetic workloads at the documented defaults (N = 2048, 8 heads, d = 64), and again
#    without token norm jitter (the assumption that favours norm sorting, switched off)
"$BAATT" eval --workload all --n 2048 --heads 8 --seed 1 "${common[@]}" --json "$tmp/synthetic.json" >/dev/null
"$BAATT" eval --workload all --n 2048 --heads 8 --seed 1 --jitter 0 "${common[@]}" --json "$tmp/nojitter.json" >/dev/null

# 2. real attention: all-MiniLM-L6-v2 on 512 tokens, 6 layers x 12 heads (head_dim 32, zero-padded)
"$BAATT" eval --q "$real/q.npy" --k "$real/k.npy" --v "$real/v.npy" --name real "${common[@]}" --json "$tmp/real.json" >/dev/null
# ... per layer (heads l*12 .. l*12+11), and at block 32 (16 key blocks instead of 8)
python3 - "$real" "$tmp" <<'EOF'
import sys, numpy as np
real, tmp = sys.argv[1], sys.argv[2]
for name in "qkv":
    a = np.load("%s/%s.npy" % (real, name))
    for l in range(a.shape[0] // 12):
        np.save("%s/%s%d.npy" % (tmp, name, l), a[l * 12:(l + 1) * 12])
EOF
for l in 0 1 2 3 4 5; do
  "$BAATT" eval --q "$tmp/q$l.npy" --k "$tmp/k$l.npy" --v "$tmp/v$l.npy" --name "real_layer$l" --quiet \
    --sparsity 0.5,0.75,0.9 --methods "$METHODS" --json "$tmp/real_layer$l.json" >/dev/null
done
"$BAATT" eval --q "$real/q.npy" --k "$real/k.npy" --v "$real/v.npy" --name real_block32 --quiet --block 32 \
  --sparsity 0.5,0.75,0.9 --methods "$METHODS" --json "$tmp/real_block32.json" >/dev/null

# 3. length: 1K to 16K tokens on two structured workloads (2 heads each, recall only above 4K)
for n in 1024 4096 16384; do
  extra=(); [ "$n" -gt 4096 ] && extra=(--no-outputs)
  "$BAATT" eval --workload mixture,clustered --n "$n" --heads 2 --seed 2 --sparsity 0.5,0.9 \
    --methods baatt,meanpool,baatt_auto,oracle,oracle_unsorted "${extra[@]}" --json "$tmp/length$n.json" >/dev/null
done

fi

python3 "$root/bench/plot_accuracy.py" --tmp "$tmp" --real "$real" --out "$out" \
  --command "bash bench/accuracy.sh" --baatt "$BAATT"
