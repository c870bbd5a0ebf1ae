#!/usr/bin/env bash
# Soak (docs/reliability.md): `npm start`'s defaults at ~70% of capacity (default 645 req/s for 10 minutes, open
# loop, CIFAR-10 test images), the server's resident memory sampled every 10 s.
#   npm run build && bash bench/soak.sh [rate] [seconds]
# The server inherits the environment, so allocators can be compared, e.g. MALLOC_ARENA_MAX=2 or
# LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 (Debian's libjemalloc2); SOAK_OUT names the results folder.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-645}
SECONDS_=${2:-600}
OUT=${SOAK_OUT:-loadtest/results/soak}
mkdir -p "$OUT"
node dist/cli.js serve --port 8360 > "$OUT/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
until curl -sf http://127.0.0.1:8360/v2/health/ready > /dev/null; do sleep 1; done
( while kill -0 $PID 2>/dev/null; do echo "$(date +%s) $(awk '/VmRSS/ {print $2}' /proc/$PID/status)"; sleep 10; done ) > "$OUT/rss-kb.txt" &
# --max-requests: the loadtest stops a step at 1,000,000 requests unless told otherwise (21 minutes at 800 req/s)
npm run loadtest -- --url http://127.0.0.1:8360 --rate "$RATE" -c 256 -d "$SECONDS_" --max-requests $((RATE * SECONDS_ + 1000)) --no-photos --no-progress --out "$OUT"
awk '{printf "%d ", $2 / 1024} END {print "MB"}' "$OUT/rss-kb.txt"
