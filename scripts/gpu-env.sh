# Source on the GPU machine from the repo root: unpacks the Vulkan loader that
# ../shared/gpu/prepare.sh downloaded into ./.gl (carried with the run) and points the loader
# at the NVIDIA driver. The machine has the driver but no loader and no network.
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
if ! ldconfig -p | grep -q 'libvulkan.so.1 '; then
  echo "gpu-env.sh: no libvulkan.so.1 after unpacking .gl (run ../shared/gpu/prepare.sh here first)" >&2
  return 1 2>/dev/null || exit 1
fi
[ -e /usr/share/vulkan/icd.d/nvidia_icd.json ] || export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader
