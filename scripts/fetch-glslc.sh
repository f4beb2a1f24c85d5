#!/usr/bin/env bash
# Fetches a newer glslc (Debian trixie's shaderc/glslang, or testing's with SUITE=forky) from Debian's
# own registry into PREFIX (default .glslc) without installing anything system-wide, and writes
# PREFIX/glslc, a wrapper that runs it through trixie's own dynamic loader on Debian 12.
# Needed for the optional shader variants (e.g. NV cooperative matrix 2) that Debian 12's
# glslang 12 rejects. Usage: bash scripts/fetch-glslc.sh [PREFIX]; then
#   cmake -DBAATT_GLSLC_NEW=$PWD/.glslc/glslc ...
set -euo pipefail
P=$(realpath -m "${1:-.glslc}")
SUITE=${SUITE:-trixie}
if [ -x "$P/glslc" ] && [ -x "$P/spirv-val" ] && "$P/glslc" --version >/dev/null 2>&1; then echo "$P/glslc"; exit 0; fi
mkdir -p "$P/sp" "$P/lists/partial" "$P/debs" "$P/root"
if [ -e /etc/apt/sources.list.d/debian.sources ]; then
  sed -n '1,/^$/p' /etc/apt/sources.list.d/debian.sources | sed "s/^Suites:.*/Suites: $SUITE/" > "$P/sp/new.sources"
else
  grep -m1 '^deb .* bookworm ' /etc/apt/sources.list | sed "s/ bookworm / $SUITE /" > "$P/sp/new.list"
fi
o="-oDir::Etc::SourceParts=$P/sp -oDir::Etc::SourceList=/dev/null -oDir::State::Lists=$P/lists -oAPT::Sandbox::User=root -oDebug::NoLocking=1"
apt-get $o update >/dev/null
(cd "$P/debs" && apt-get $o download glslc libshaderc1 glslang-tools spirv-tools libc6 libstdc++6 libgcc-s1 >/dev/null)
for f in "$P"/debs/*.deb; do dpkg -x "$f" "$P/root"; done
L="$P/root/usr/lib/x86_64-linux-gnu"
for tool in glslc spirv-val; do   # spirv-val too: Debian 12's rejects the newer capabilities
  cat > "$P/$tool" <<WRAP
#!/bin/sh
exec "$L/ld-linux-x86-64.so.2" --library-path "$L" "$P/root/usr/bin/$tool" "\$@"
WRAP
  chmod +x "$P/$tool"
done
"$P/glslc" --version > "$P/version.txt"
sed -n 1p "$P/version.txt" >&2
echo "$P/glslc"
