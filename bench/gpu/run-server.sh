#!/usr/bin/env bash
# A second, shorter GPU call for issue #17 (after bench/gpu/run.sh, on the same warm machine or a fresh one): the
# server with --device cuda under load against the machine's preprocessing ceiling (bench/gpu/server.ts).
# Results go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/dq-gpu}; mkdir -p "$OUT"
export PATH="/usr/local/cuda/bin:$PATH"
source bench/gpu/unpack.sh
[ -f native/dq/build/libdq-cuda.so ] || timeout 90 bash native/dq/build.sh cuda 2>&1 | tee "$OUT/build.txt"
timeout 240 .device/node .device/bench/server.mjs --device cuda --connections 64,256,1024 --seconds 10 --out "$OUT/server.json" 2>&1 | tail -20 | tee "$OUT/server.txt"
