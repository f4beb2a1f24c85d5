#!/usr/bin/env bash
# Installs a configured baatt build into a fresh prefix, then builds and runs the examples against
# the installed package only: through find_package(baatt) (shared and static) and through
# pkg-config. Also checks what the libraries export. Usage: examples/check-install.sh BUILD_DIR [WORK_DIR]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$1" && pwd)
work=${2:-$(mktemp -d)}
prefix=$work/prefix
rm -rf "$prefix" "$work/cmake" "$work/pc"
cmake --install "$build" --prefix "$prefix" >/dev/null
lib=$(ls -d "$prefix"/lib*/ | head -1)

# libbaatt.so exports baatt_* only; libbaatt.a defines no global symbol outside baatt_*.
bad=$(nm -D --defined-only "$lib/libbaatt.so" | awk '$3 !~ /^baatt_/' || true)
[ -z "$bad" ] || { echo "check-install: libbaatt.so exports more than baatt_*:"; echo "$bad"; exit 1; }
bad=$(nm -g --defined-only "$lib/libbaatt.a" | awk 'NF == 3 && $3 !~ /^baatt_/' || true)
[ -z "$bad" ] || { echo "check-install: libbaatt.a defines global non-baatt_ symbols:"; echo "$bad" | head; exit 1; }
[ "$(readelf -d "$lib/libbaatt.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')" = libbaatt.so.0 ] \
  || { echo "check-install: SONAME is not libbaatt.so.0"; exit 1; }
echo "check-install: exports ok ($(nm -D --defined-only "$lib/libbaatt.so" | wc -l) baatt_* symbols, SONAME libbaatt.so.0)"

run() {  # a skip (77: no Vulkan device) is reported, not passed off as success
  local rc=0
  LD_LIBRARY_PATH="$lib" "$@" || rc=$?
  if [ $rc -eq 77 ]; then echo "check-install: SKIPPED $1 (no Vulkan device)"; elif [ $rc -ne 0 ]; then exit $rc; fi
}

cmake -S "$here" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/cmake" >/dev/null
for exe in baatt_example_consumer baatt_example_embed_baatt baatt_example_embed_baatt_static; do
  run "$work/cmake/$exe"
done

mkdir -p "$work/pc"
export PKG_CONFIG_PATH="$lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
cc -std=c11 -O2 "$here/consumer/consumer.c" -o "$work/pc/consumer" $(pkg-config --cflags --libs baatt) -lm
cc -std=c11 -O2 "$here/embed/embed.c" -o "$work/pc/embed" $(pkg-config --cflags --libs baatt vulkan) -lm
cc -std=c11 -O2 "$here/embed/embed.c" -o "$work/pc/embed_static" $(pkg-config --cflags baatt vulkan) \
  "$lib/libbaatt.a" $(pkg-config --static --libs-only-l baatt | sed 's/-lbaatt//') -lvulkan -lm
for exe in consumer embed embed_static; do run "$work/pc/$exe"; done
echo "check-install: the installed package works through find_package(baatt) and pkg-config"
