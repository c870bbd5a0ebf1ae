// Choosing bits per sample and dynamic layer, exactly as docs/model-bundle.md "Choosing bits" says:
//   bits[n][l] = candidates[argmax_k(controller_logits[n][l][k] − λ·cost[l][k])], ties to the lower index;
// a forced precision b (a candidate) skips the argmax.
import type { SampleOptions } from './engine.js';

export interface ControllerSpec {
  /** Axis L: dynamic layer names. */
  readonly layers: readonly string[];
  /** Axis K: candidate bit-widths. */
  readonly candidates: readonly number[];
  /** cost[l][k], the knob's penalty. */
  readonly cost: readonly (readonly number[])[];
}

/**
 * `logits` is the stem's `controller_logits` tensor, [N, L, K] row-major.
 * Returns bits[n][l].
 */
export function chooseBits(
  logits: Float32Array,
  batchSize: number,
  spec: ControllerSpec,
  options: readonly SampleOptions[],
): number[][] {
  const L = spec.layers.length;
  const K = spec.candidates.length;
  if (logits.length !== batchSize * L * K) {
    throw new RangeError(`controller_logits has ${logits.length} values, expected ${batchSize}×${L}×${K}`);
  }
  const plans: number[][] = [];
  for (let n = 0; n < batchSize; n++) {
    const opt = options[n] ?? { knob: 0, precision: null };
    const plan = new Array<number>(L);
    for (let l = 0; l < L; l++) {
      if (opt.precision !== null) {
        plan[l] = opt.precision;
        continue;
      }
      const base = (n * L + l) * K;
      const costRow = spec.cost[l];
      let best = 0;
      let bestScore = -Infinity;
      for (let k = 0; k < K; k++) {
        const score = (logits[base + k] as number) - (opt.knob === 0 ? 0 : opt.knob * (costRow?.[k] ?? 0));
        // Strictly greater: ties keep the lower index.
        if (score > bestScore) {
          bestScore = score;
          best = k;
        }
      }
      plan[l] = spec.candidates[best] as number;
    }
    plans.push(plan);
  }
  return plans;
}

/** A static bundle: each dynamic layer has exactly one bit-width; a forced precision must equal it. */
export function staticBits(fixed: readonly number[], batchSize: number): number[][] {
  return Array.from({ length: batchSize }, () => [...fixed]);
}
