// The confidence-gated second pass (docs/model-bundle.md "Gated second pass"): which samples of a batch run the
// body again at the policy's second bits. Pure and shared by every engine, so they all gate alike, and computed
// as training computes it (training/evaluate.py `confidence`) so that `dqserve verify` can hold them to it.
import type { SampleOptions } from './engine.js';

export interface GatePolicy {
  /** Pass 1's bits at every dynamic layer; null = the controller's plan. */
  readonly firstBits: number | null;
  /** Pass 2's bits at every dynamic layer. */
  readonly secondBits: number;
  /** A sample whose top-1 softmax probability is below this runs pass 2. */
  readonly threshold: number;
}

/** Top-1 softmax probability of one sample's float32 logits, in float64: 1 / Σ_c exp(l_c − max l). */
export function confidence(logits: Float32Array): number {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  return 1 / sum;
}

/** Dynamic-layer Bit-FLOPs: of a plan, and of pass 2 (every dynamic layer at `secondBits`). */
export interface GateCost {
  dynamic(plan: readonly number[]): number;
  readonly second: number;
}

/**
 * Rows that run pass 2: no forced precision, confidence under the threshold, and room for a second pass in the
 * sample's dynamic-layer cap (its pass-1 plan plus pass 2 must fit). A pass 2 skipped for the cap sets
 * `lowered[n]`. `logits` holds pass 1's [N, C].
 */
export function secondPassRows(
  logits: Float32Array,
  batchSize: number,
  options: readonly SampleOptions[],
  plans: readonly (readonly number[])[],
  policy: GatePolicy,
  cost: GateCost,
  lowered?: boolean[],
): number[] {
  const classes = logits.length / batchSize;
  const rows: number[] = [];
  for (let n = 0; n < batchSize; n++) {
    const opt = options[n];
    if (opt?.precision !== null && opt?.precision !== undefined) continue;
    if (confidence(logits.subarray(n * classes, (n + 1) * classes)) >= policy.threshold) continue;
    const cap = opt?.maxDynamicBitflops;
    if (cap !== undefined && cap !== null && cost.dynamic(plans[n] as readonly number[]) + cost.second > cap) {
      if (lowered) lowered[n] = true;
      continue;
    }
    rows.push(n);
  }
  return rows;
}
