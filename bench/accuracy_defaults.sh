#!/usr/bin/env bash
# Issue 17, item 4 (accuracy half): recall and output rel L1 of the library's selection choices
# (block 32/64/128 x sort norm / auto / off) on the synthetic workloads at N = 8192 (64 key blocks
# even at block 128), with and without token norm jitter, and on the real set (bench/data/real).
# Renders the "Defaults" tables of bench/results/accuracy.md from the raw records.
#
#   bash bench/accuracy_defaults.sh     # ~30 minutes on 2 shared cores (CPU only), deterministic
#
# Same needs as bench/accuracy.sh. ACC_TMP=dir keeps the raw per-run JSON; ACC_REPORT_ONLY=1 only
# re-renders from an earlier ACC_TMP. Raw records: bench/results/raw/accuracy_defaults.json.
set -euo pipefail
source "$(dirname "$0")/accuracy_setup.sh"

# baatt = --sort norm, baatt_auto = --sort auto, baatt_cov = --sort off (the library's three modes);
# meanpool and the oracles for reference.
METHODS=baatt,baatt_auto,baatt_cov,meanpool,oracle,oracle_unsorted,oracle_best
common=(--sparsity 0.5,0.75,0.9 --methods "$METHODS" --quiet --threads "${ACC_THREADS:-2}")

if [ -z "${ACC_REPORT_ONLY:-}" ]; then
for b in 32 64 128; do
  "$BAATT" eval --workload all --n 8192 --heads 4 --seed 1 --block "$b" "${common[@]}" \
    --json "$tmp/syn_b$b.json" >/dev/null
  "$BAATT" eval --workload all --n 8192 --heads 4 --seed 1 --jitter 0 --block "$b" "${common[@]}" \
    --json "$tmp/nojit_b$b.json" >/dev/null
  "$BAATT" eval --q "$real/q.npy" --k "$real/k.npy" --v "$real/v.npy" --name real --block "$b" \
    "${common[@]}" --json "$tmp/real_b$b.json" >/dev/null
done
# block 64 at the sparsities where it takes as long as block 128 at 50/75/90% on the H100
# (bench/defaults_report.py, ISO)
iso=(--sparsity 0.521,0.765,0.907 --methods baatt,baatt_auto,baatt_cov,meanpool,oracle_best --quiet
     --threads "${ACC_THREADS:-2}" --block 64)
"$BAATT" eval --workload all --n 8192 --heads 4 --seed 1 "${iso[@]}" --json "$tmp/iso_syn_b64.json" >/dev/null
"$BAATT" eval --workload all --n 8192 --heads 4 --seed 1 --jitter 0 "${iso[@]}" --json "$tmp/iso_nojit_b64.json" >/dev/null
"$BAATT" eval --q "$real/q.npy" --k "$real/k.npy" --v "$real/v.npy" --name real "${iso[@]}" \
  --json "$tmp/iso_real_b64.json" >/dev/null
fi

# prints the tables of accuracy.md's "Defaults" section (pasted there by hand, with the reading)
python3 "$root/bench/defaults_report.py" "$tmp" "$out/raw/accuracy_defaults.json"
