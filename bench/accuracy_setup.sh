# Sourced by bench/accuracy.sh and bench/accuracy_reuse.sh: the baatt binary (built if missing),
# the output and real-data folders, and the raw-JSON folder (ACC_TMP keeps it, else a temporary one).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BAATT=${BAATT:-$root/build/baatt}
if [ ! -x "$BAATT" ]; then
  cmake -S "$root" -B "$root/build" >/dev/null
  make -C "$root/build" -j"$(nproc)" baatt_cli >/dev/null
fi
out=$root/bench/results
real=$root/bench/data/real
if [ -n "${ACC_TMP:-}" ]; then tmp=$ACC_TMP; mkdir -p "$tmp"; else tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT; fi
mkdir -p "$out"
