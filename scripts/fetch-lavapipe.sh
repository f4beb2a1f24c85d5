#!/usr/bin/env bash
# Fetches Debian testing's Mesa lavapipe (26.x: VK_KHR_cooperative_matrix, 8x8x8 on hosts with
# 256-bit vectors), its Vulkan loader and validation layer from Debian's own registry into PREFIX
# (default .lavapipe) without installing anything system-wide, and writes PREFIX/run, which runs
# a program built here against that driver through testing's own dynamic loader:
#   bash scripts/fetch-lavapipe.sh [PREFIX]; .lavapipe/run build/baatt info
# The validation layer there knows the KHR cooperative-matrix structs (bookworm's predates them).
set -euo pipefail
P=$(realpath -m "${1:-.lavapipe}")
SUITE=${SUITE:-forky}
if [ -x "$P/run" ] && "$P/run" /bin/true 2>/dev/null; then echo "$P/run"; exit 0; fi
mkdir -p "$P/sp" "$P/lists/partial" "$P/debs" "$P/root" "$P/icd" "$P/layers"
if [ -e /etc/apt/sources.list.d/debian.sources ]; then
  sed -n '1,/^$/p' /etc/apt/sources.list.d/debian.sources | sed "s/^Suites:.*/Suites: $SUITE/" > "$P/sp/new.sources"
else
  grep -m1 '^deb .* bookworm ' /etc/apt/sources.list | sed "s/ bookworm / $SUITE /" > "$P/sp/new.list"
fi
o="-oDir::Etc::SourceParts=$P/sp -oDir::Etc::SourceList=/dev/null -oDir::State::Lists=$P/lists"
o="$o -oDir::State::status=/dev/null -oAPT::Sandbox::User=root -oDebug::NoLocking=1"
apt-get $o update >/dev/null
# the dependency closure against testing's lists alone (nothing of the host's counts as installed)
pkgs=$(apt-cache $o depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
  --no-enhances mesa-vulkan-drivers libvulkan1 vulkan-validationlayers 2>/dev/null | grep '^[a-z0-9]' | sort -u)
(cd "$P/debs" && apt-get $o download $pkgs >/dev/null 2>&1 || apt-get $o download $pkgs)
for f in "$P"/debs/*.deb; do dpkg -x "$f" "$P/root"; done
L="$P/root/usr/lib/x86_64-linux-gnu"
sed "s|\"library_path\": *\"[^\"]*\"|\"library_path\": \"$L/libvulkan_lvp.so\"|" \
  "$P/root/usr/share/vulkan/icd.d/lvp_icd.json" > "$P/icd/lvp.json"
layer=$(ls "$P"/root/usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json)
sed "s|\"library_path\": *\"[^\"]*\"|\"library_path\": \"$L/libVkLayer_khronos_validation.so\"|" "$layer" \
  > "$P/layers/VkLayer_khronos_validation.json"
cat > "$P/run" <<WRAP
#!/bin/sh
# Runs a program on Debian testing's lavapipe (scripts/fetch-lavapipe.sh).
export VK_DRIVER_FILES="$P/icd/lvp.json" VK_ICD_FILENAMES="$P/icd/lvp.json" VK_LAYER_PATH="$P/layers"
exec "$L/ld-linux-x86-64.so.2" --library-path "$L" "\$@"
WRAP
chmod +x "$P/run"
dpkg-deb -f "$(ls "$P"/debs/mesa-vulkan-drivers_*.deb)" Version > "$P/version.txt"
echo "lavapipe $(cat "$P/version.txt")" >&2
echo "$P/run"
