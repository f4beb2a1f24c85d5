#!/usr/bin/env bash
# Installs everything baatt needs to build and test on Debian 12 (bookworm), including Mesa 25
# from bookworm-backports: bookworm's Mesa 22.3.6 lavapipe returns NaN for fp32 attention at
# head_dim 128 (measured; see shared PLATFORM notes), 25.x is correct.
# Idempotent; needs root (uses sudo when not root).
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

# The backports suite on the mirror already configured (no host named here).
if [ ! -e /etc/apt/sources.list.d/bpo.sources ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
  if [ -e /etc/apt/sources.list.d/debian.sources ]; then
    sed -n '1,/^$/p' /etc/apt/sources.list.d/debian.sources | sed 's/^Suites:.*/Suites: bookworm-backports/' \
      | $SUDO tee /etc/apt/sources.list.d/bpo.sources >/dev/null
  else
    grep -m1 '^deb .* bookworm ' /etc/apt/sources.list | sed 's/ bookworm / bookworm-backports /' \
      | $SUDO tee /etc/apt/sources.list.d/bpo.list >/dev/null
  fi
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  cmake make gcc libc6-dev libvulkan-dev libvulkan1 glslc glslang-tools spirv-tools \
  vulkan-tools vulkan-validationlayers libcmocka-dev ca-certificates >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends -t bookworm-backports mesa-vulkan-drivers >/dev/null
# Newer glslc builds (nothing installed system-wide) for the optional tensor-core shader variants
# that Debian 12's glslang cannot compile; CMake picks them up from there: Debian trixie's
# (glslang 15: cooperative matrix 2) into .glslc/ and Debian testing's (glslang >= 16: bf16
# cooperative matrices) into .glslc-next/. Not fatal: without them those variants are skipped.
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/fetch-glslc.sh" "$here/.glslc" >/dev/null 2>&1 \
  || echo "setup-debian: could not fetch trixie's glslc; the cooperative-matrix-2 variants will be skipped"
SUITE=forky bash "$here/scripts/fetch-glslc.sh" "$here/.glslc-next" >/dev/null 2>&1 \
  || echo "setup-debian: could not fetch testing's glslc; the bf16 cooperative-matrix variants will be skipped"
echo "setup-debian: $(dpkg-query -W -f='mesa-vulkan-drivers ${Version}, ' mesa-vulkan-drivers)$(glslc --version | head -1)"
