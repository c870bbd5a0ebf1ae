#!/usr/bin/env bash
# One GPU run for issue #17, prepared by bench/gpu/pack.sh (run from the repository root there, with .device and dist
# sent along): build the CUDA operators, check parity against reference.json on the whole CIFAR-10 test set for
# every shipped bundle, time the engine against batch size, and time PyTorch's fp16 ResNet-20 in the same run.
# Results go to $OUT (the run tool's output folder).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/dq-gpu}; mkdir -p "$OUT"
export PATH="/usr/local/cuda/bin:$PATH"
source bench/gpu/unpack.sh
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nvcc --version | tail -1; .device/node --version; } 2>&1 | tee "$OUT/machine.txt"
# timeouts sum to about 545 s, inside the tool's 600 s per command
{ time timeout 90 bash native/dq/build.sh cuda; } 2>&1 | tee "$OUT/build.txt"
export DQ_NATIVE_DIR="$PWD/native/dq/build"
# QLinearConv on the int8 tensor cores (dq.cpp's qconv_tc) against the direct kernel, case by case; should they
# differ, the rest of the run keeps the direct kernel (DQ_CONV=direct) so that it still yields its figures
if ! DQ_SYNC=1 timeout 20 .device/node .device/bench/conv-check.mjs --library cuda --cases tensor 2>&1 | tee "$OUT/parity.txt"; then
  export DQ_CONV=direct
  echo "tensor-core QLinearConv differs: the rest of this run uses DQ_CONV=direct" | tee -a "$OUT/parity.txt"
fi
# the bit-serial ≤ 2-bit kernel (not used by the shipped bundles) against the direct kernel: reported only
DQ_SYNC=1 timeout 10 .device/node .device/bench/conv-check.mjs --library cuda --cases bitserial 2>&1 | tee -a "$OUT/parity.txt"
# DQ_SYNC=1: each kernel waited for, so that a fault names its operator (parity does not need speed)
for b in resnet20_dq/7 resnet20_w4/5 resnet20_dq/6; do
  echo "== verify $b" | tee -a "$OUT/parity.txt"
  { time DQ_SYNC=1 timeout 65 .device/node dist/cli.js verify "models/$b" --device cuda --data .device/cifar10; } 2>&1 | tee -a "$OUT/parity.txt"
done
timeout 90 .device/node .device/bench/engine.mjs --out "$OUT/engine.json" 2>&1 | tail -30 | tee "$OUT/engine.txt"
# where the time goes, per operator type (each operator waited for)
DQ_PROFILE=1 timeout 40 .device/node .device/bench/engine.mjs --seconds 0.2 --batches 1,256,4096 2>&1 | grep '^profile' | tee "$OUT/profile.txt"
# per-layer kernel time against bits (int8 tensor cores, int8 direct, bit-serial 1×1 and 2×2 bits), same file
timeout 40 .device/node .device/bench/kernels.mjs --batches 1,64,1024,4096 --seconds 0.2 2>&1 | tee -a "$OUT/profile.txt"
timeout 60 python3 bench/gpu/baselines.py --seconds 1 --out "$OUT/baselines.json" 2>&1 | tail -10 | tee "$OUT/baselines.txt"
