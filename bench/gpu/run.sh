#!/usr/bin/env bash
# One GPU run for issue #17, prepared by bench/gpu/pack.sh (run from the repository root there, with .device and dist
# sent along): build the CUDA operators, check parity against reference.json on the whole CIFAR-10 test set for
# every shipped bundle, time the engine against batch size, and time PyTorch's fp16 ResNet-20 in the same run.
# Results go to $OUT (the run tool's output folder).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/dq-gpu}; mkdir -p "$OUT"
export PATH="/usr/local/cuda/bin:$PATH"
xz -dc .device/node.xz > .device/node && chmod +x .device/node
tar -xJf .device/node_modules.tar.xz
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nvcc --version | tail -1; .device/node --version; } 2>&1 | tee "$OUT/machine.txt"
{ time bash native/dq/build.sh cuda; } 2>&1 | tee "$OUT/build.txt"
for b in resnet20_dq/7 resnet20_w4/5 resnet20_dq/6; do
  echo "== verify $b" | tee -a "$OUT/parity.txt"
  { time timeout 150 .device/node dist/cli.js verify "models/$b" --device cuda --data .device/cifar10; } 2>&1 | tee -a "$OUT/parity.txt"
done
DQ_NATIVE_DIR="$PWD/native/dq/build" timeout 200 .device/node .device/bench/engine.mjs --out "$OUT/engine.json" 2>&1 | tail -30 | tee "$OUT/engine.txt"
timeout 120 python3 bench/gpu/baselines.py --out "$OUT/baselines.json" 2>&1 | tail -10 | tee "$OUT/baselines.txt"
