// Choosing bits per sample and dynamic layer, exactly as docs/model-bundle.md "Choosing bits" says:
//   bits[n][l] = candidates[argmax_k(controller_logits[n][l][k] − λ·cost[l][k])], ties to the lower index;
// a forced precision b (a candidate) skips the argmax; a gated bundle's first-pass bits (gate.ts) replace it.
import type { SampleOptions } from './engine.js';

export interface ControllerSpec {
  /** Axis L: dynamic layer names. */
  readonly layers: readonly string[];
  /** Axis K: candidate bit-widths. */
  readonly candidates: readonly number[];
  /** cost[l][k], the knob's penalty. */
  readonly cost: readonly (readonly number[])[];
  /** bitflops[l][k] = MACs(l) × candidates[k]²: layer l's Bit-FLOPs at candidate k (needed for budgets). */
  readonly bitflops?: readonly (readonly number[])[];
}

/**
 * `logits` is the stem's `controller_logits` tensor, [N, L, K] row-major.
 * Returns bits[n][l]; `lowered[n]` is set true where a budget lowered sample n's choice.
 * `start` (a candidate) replaces the argmax for samples without a forced precision; a budget still lowers it.
 */
export function chooseBits(
  logits: Float32Array,
  batchSize: number,
  spec: ControllerSpec,
  options: readonly SampleOptions[],
  lowered?: boolean[],
  start: number | null = null,
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
    const chosen = new Array<number>(L);
    for (let l = 0; l < L; l++) {
      if (opt.precision !== null) {
        plan[l] = opt.precision;
        continue;
      }
      if (start !== null) {
        plan[l] = start;
        chosen[l] = spec.candidates.indexOf(start);
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
      chosen[l] = best;
    }
    const cap = opt.maxDynamicBitflops;
    if (opt.precision === null && cap !== undefined && cap !== null) {
      const changed = fitBudget(logits.subarray(n * L * K, (n + 1) * L * K), spec, opt.knob, chosen, cap);
      if (changed) for (let l = 0; l < L; l++) plan[l] = spec.candidates[chosen[l] as number] as number;
      if (lowered) lowered[n] = changed;
    }
    plans.push(plan);
  }
  return plans;
}

/**
 * The budget rule (docs/api.md "Budgets"): while the dynamic layers' Bit-FLOPs exceed `cap`, lower by one
 * candidate the layer whose step down loses the least controller score per Bit-FLOP saved,
 *   (score[l][k] − score[l][k−1]) / (bitflops[l][k] − bitflops[l][k−1]),  score = logit − λ·cost,
 * ties to the lower layer index. Greedy by marginal score per saved Bit-FLOP, like the knapsack heuristic:
 * each step keeps as much of the controller's preference as a unit of budget allows. If every layer is at
 * its lowest candidate it stops (the pipeline refuses caps below that minimum before queueing).
 * `chosen` holds candidate indices and is updated in place; returns whether anything changed.
 */
export function fitBudget(scoresRaw: Float32Array, spec: ControllerSpec, knob: number, chosen: number[], cap: number): boolean {
  const table = spec.bitflops;
  if (!table) throw new RangeError('a Bit-FLOPs budget needs ControllerSpec.bitflops');
  const K = spec.candidates.length;
  const score = (l: number, k: number) => (scoresRaw[l * K + k] as number) - (knob === 0 ? 0 : knob * (spec.cost[l]?.[k] ?? 0));
  let total = 0;
  chosen.forEach((k, l) => (total += table[l]?.[k] as number));
  let changed = false;
  while (total > cap) {
    let bestL = -1;
    let bestRatio = Infinity;
    for (let l = 0; l < chosen.length; l++) {
      const k = chosen[l] as number;
      if (k === 0) continue;
      const saved = (table[l]?.[k] as number) - (table[l]?.[k - 1] as number);
      const ratio = (score(l, k) - score(l, k - 1)) / saved;
      // NaN (an extreme knob overflows both scores to Infinity) ranks last, but still lowers: the cap must hold.
      if (bestL < 0 || ratio < bestRatio) {
        bestRatio = Number.isNaN(ratio) ? Infinity : ratio;
        bestL = l;
      }
    }
    if (bestL < 0) break;
    const k = chosen[bestL] as number;
    total -= (table[bestL]?.[k] as number) - (table[bestL]?.[k - 1] as number);
    chosen[bestL] = k - 1;
    changed = true;
  }
  return changed;
}

/** A static bundle: each dynamic layer has exactly one bit-width; a forced precision must equal it. */
export function staticBits(fixed: readonly number[], batchSize: number): number[][] {
  return Array.from({ length: batchSize }, () => [...fixed]);
}
