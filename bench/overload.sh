#!/usr/bin/env bash
# Overload (docs/reliability.md): for each --max-queue-size, the server's capacity (closed loop, one connection
# per queue slot, so nothing is refused), then 200 req/s (unloaded) and 2.5× that capacity (open loop) for
# 60 s each; prints goodput against capacity and the answered requests' p99 against the unloaded p99.
#   npm run build && bash bench/overload.sh [queue sizes, default "8 16 32"]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OVERLOAD_OUT:-loadtest/results/overload}
for Q in ${1:-8 16 32}; do
  npm run -s loadtest -- --server-args "--max-queue-size $Q" -c "$Q" -d 30 --no-photos --no-progress --out "$OUT/q$Q-capacity" 2>&1 | grep '^\[loadtest\] [0-9]'
  CAP=$(node -p "Math.round(require('./$OUT/q$Q-capacity/report.json').steps[0].client.goodputRps)")
  RATE=$((CAP * 5 / 2))
  npm run -s loadtest -- --server-args "--max-queue-size $Q" --rate "200,$RATE" -c 512 -d 60 --no-photos --no-progress --out "$OUT/q$Q-overload" 2>&1 | grep '^\[loadtest\] [0-9]'
  node -e "
    const [idle, over] = require('./$OUT/q$Q-overload/report.json').steps.map((s) => s.client);
    const codes = Object.entries(over.statusCodes).map(([c, n]) => c + ' x ' + n).join(', ');
    console.log('queue $Q: capacity $CAP/s; at $RATE req/s goodput ' + over.goodputRps.toFixed(0) + '/s (' + (100 * over.goodputRps / $CAP).toFixed(0) +
      '% of capacity), answered p99 ' + over.okLatencyMs.p99.toFixed(1) + ' ms = ' + (over.okLatencyMs.p99 / idle.okLatencyMs.p99).toFixed(1) +
      'x the unloaded ' + idle.okLatencyMs.p99.toFixed(1) + ' ms; ' + codes + ', ' + over.timeouts + ' timeouts');"
done
