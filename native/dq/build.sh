#!/usr/bin/env bash
# Builds the native operators (dq.h) into native/dq/build (or $DQ_NATIVE_DIR):
#   build.sh host   libdq-host.so with g++: the same per-element code on host memory, for tests on any machine
#   build.sh cuda   libdq-cuda.so with nvcc (CUDA 12.x/13.x, Hopper sm_90 code + PTX for later GPUs)
# Both turn off floating-point contraction: the arithmetic must equal onnxruntime's to the bit.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="${DQ_NATIVE_DIR:-$here/build}"
mkdir -p "$out"
case "${1:-host}" in
  host)
    "${CXX:-g++}" -std=c++17 -O2 -fPIC -shared -ffp-contract=off -Wall -Wextra -Werror \
      -o "$out/libdq-host.so" "$here/dq.cpp" ;;
  cuda)
    nvcc -std=c++17 -O3 -shared -Xcompiler -fPIC,-ffp-contract=off -fmad=false --extended-lambda \
      -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 \
      -o "$out/libdq-cuda.so" "$here/dq.cu" ;;
  *) echo "usage: build.sh host|cuda" >&2; exit 2 ;;
esac
echo "built $out/libdq-${1:-host}.so"
