#!/usr/bin/env bash
# Regenerates the selection-reuse study (issue 17): bench/results/accuracy_reuse.json, the plot
# accuracy_reuse.png and the "Selection reuse across steps" section of accuracy.md.
#
#   bash bench/accuracy_reuse.sh      # ~10 minutes on 2 cores (CPU only)
#
# For every workload, drift level e and keep ratio, `baatt eval --drift --reuse-steps` makes step 0,
# drifts Q/K/V step by step (src/eval/workloads.c: x <- sqrt(1 - e^2) x + e rms(x) z), and measures
# at every step 0..8 the mass recall of a fresh selection and of the one made at step 0. Needs what
# bench/accuracy.sh needs (a built `baatt`, python3 with numpy and matplotlib, bench/data/real).
# ACC_TMP=dir keeps the raw JSON; ACC_REPORT_ONLY=1 re-renders from an ACC_TMP of an earlier run.
set -euo pipefail
source "$(dirname "$0")/accuracy_setup.sh"

common=(--methods baatt,baatt_auto,meanpool,oracle_best --keep 0.5,0.25,0.1 --drift 0.05,0.1,0.2,0.4
        --reuse-steps 1,2,4,8 --block 64 --no-outputs --quiet)
if [ -z "${ACC_REPORT_ONLY:-}" ]; then
# the structured synthetic workloads (iid has no structure to keep) at the report's defaults
"$BAATT" eval --workload clustered,needles,rotary,sinks,shift,mixture --n 2048 --heads 8 --seed 1 "${common[@]}" \
  --json "$tmp/reuse_synthetic.json" >/dev/null
# real Q/K/V (all-MiniLM-L6-v2, 72 heads x 512 tokens) as step 0, drifted by the same model
"$BAATT" eval --q "$real/q.npy" --k "$real/k.npy" --v "$real/v.npy" --name real --seed 1 "${common[@]}" \
  --json "$tmp/reuse_real.json" >/dev/null
fi

python3 "$root/bench/plot_accuracy_reuse.py" --tmp "$tmp" --out "$out" --command "bash bench/accuracy_reuse.sh"
