#!/usr/bin/env bash
# Prepares .device/ (ignored by git) for bench/gpu/run.sh on the GPU machine, which has no Node and no network
# (../shared/reference/device.md): Node itself, the production node_modules without onnxruntime-node (the CUDA
# engine does not load it) pruned to linux-x64, the CIFAR-10 test set, dist/ and the engine benchmark bundled.
# Send `.device` and `dist` along (the run tool's carry); the working tree plus both must stay under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .device && mkdir -p .device/cifar10
xz -T2 -6 -c "$(command -v node)" > .device/node.xz
cp ../shared/data/cifar10/test.tar.gz ../shared/data/cifar10/batches.meta.txt .device/cifar10/
tmp=$(mktemp -d)
cp package.json package-lock.json .npmrc "$tmp"/
(cd "$tmp" && ONNXRUNTIME_NODE_INSTALL=skip npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
rm -rf "$tmp/node_modules/onnxruntime-node" "$tmp/node_modules/onnxruntime-common"
find "$tmp/node_modules/koffi/build/koffi" -mindepth 1 -maxdepth 1 ! -name linux_x64 -exec rm -rf {} +
tar -C "$tmp" -cf - node_modules | xz -T2 -6 > .device/node_modules.tar.xz
rm -rf "$tmp"
npm run build --silent
# split, so that the runtime the engine does not choose (onnxruntime-node) stays an unloaded chunk
npx esbuild bench/gpu/engine.ts bench/gpu/conv-check.ts bench/gpu/kernels.ts --bundle --splitting --platform=node --format=esm --packages=external --log-level=warning \
  --outdir=.device/bench --out-extension:.js=.mjs
# the server benchmark carries autocannon (a dev dependency, so not in the production node_modules) inside
npx esbuild bench/gpu/server.ts --bundle --platform=node --format=esm --log-level=warning \
  --external:sharp --external:koffi --external:onnxruntime-node --outfile=.device/bench/server.mjs \
  --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
du -sh .device/* dist
echo "tracked files: $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) bytes"
