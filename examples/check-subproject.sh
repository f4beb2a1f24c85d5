#!/usr/bin/env bash
# Builds baatt inside a parent CMake project, through add_subdirectory and through FetchContent,
# and runs the consumer example linked to baatt::baatt. Checks that the parent's build type is
# kept and that baatt's tests are not built there. Usage: examples/check-subproject.sh [WORK_DIR]
# (extra CMake arguments, e.g. -DBAATT_GLSLC_NEW=..., through BAATT_CMAKE_ARGS).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work/parent"
cat > "$work/parent/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.20)
project(parent C)
set(CMAKE_BUILD_TYPE Debug)
if(USE_FETCH)
  include(FetchContent)
  FetchContent_Declare(baatt SOURCE_DIR "$repo")
  FetchContent_MakeAvailable(baatt)
else()
  add_subdirectory("$repo" baatt)
endif()
add_executable(app "$repo/examples/consumer/consumer.c")
target_link_libraries(app PRIVATE baatt::baatt m)
if(NOT CMAKE_BUILD_TYPE STREQUAL "Debug" OR BAATT_BUILD_TESTS OR TARGET test_baatt)
  message(FATAL_ERROR "baatt changed the parent's build type or built its tests")
endif()
CMAKE
for fetch in OFF ON; do
  b="$work/build-fetch-$fetch"
  # shellcheck disable=SC2086
  cmake -S "$work/parent" -B "$b" -DUSE_FETCH=$fetch ${BAATT_CMAKE_ARGS:-} >/dev/null
  cmake --build "$b" -j"$(nproc)" >/dev/null
  rc=0; "$b/app" || rc=$?
  if [ $rc -eq 77 ]; then echo "check-subproject: SKIPPED app (no Vulkan device)"; elif [ $rc -ne 0 ]; then exit $rc; fi
done
echo "check-subproject: baatt builds and links as a subproject (add_subdirectory and FetchContent)"
