// What every engine derives from a manifest: which layers are dynamic, in which order, with which candidates,
// and (dynamic bundles) which pair of dynamic layers each block of the body graph dispatches.
import { costModel } from '../cost/bitflops.js';
import { DqError } from '../errors.js';
import type { Manifest } from '../repository/manifest.js';
import { chooseBits, staticBits, type ControllerSpec } from './bit-plan.js';
import type { SampleOptions } from './engine.js';
import { secondPassRows, type GateCost, type GatePolicy } from './gate.js';

export interface EngineLayout {
  readonly dynamicLayers: readonly string[];
  readonly candidates: readonly (readonly number[])[];
  /**
   * Layers × candidates and the knob's costs; null for a static bundle. A gated bundle whose pass 1 has fixed
   * bits may have no controller: then the costs are zeros and `plan` needs no logits.
   */
  readonly controller: ControllerSpec | null;
  /** For each body block: the indices (in dynamicLayers) of its conv1 and conv2 layers. Empty when static. */
  readonly blocks: readonly (readonly [number, number])[];
  /** Bytes per sample: height × width × 3 (uint8 RGB, NHWC). */
  readonly sampleSize: number;
  /** The bundle's gated second pass; null when it has none (every static bundle). */
  readonly policy: GatePolicy | null;
  /** Bits per sample per dynamic layer; `controllerLogits` is required when `controller` is set. */
  plan(controllerLogits: Float32Array | null, batchSize: number, options: readonly SampleOptions[], lowered?: boolean[]): number[][];
  /** The rows that run pass 2, given pass 1's class logits [N, C] (gate.ts); always empty without a policy. */
  secondPass(logits: Float32Array, batchSize: number, options: readonly SampleOptions[], plans: readonly (readonly number[])[], lowered?: boolean[]): number[];
}

export function engineLayout(manifest: Manifest): EngineLayout {
  const [h, w] = manifest.input.size;
  const sampleSize = manifest.input.channels * h * w;
  const graph = manifest.graph;

  if (manifest.kind === 'dynamic') {
    if (!('body' in graph)) throw new DqError('DQ_ERR_BUNDLE_INVALID', 'a dynamic bundle needs graph.stem and graph.body');
    const c = manifest.controller ?? withoutController(manifest, graph.body.blocks.flat());
    if (c.cost.length !== c.layers.length || c.cost.some((row) => row.length !== c.candidates.length)) {
      throw new DqError('DQ_ERR_BUNDLE_INVALID', 'controller.cost is not [L][K]');
    }
    if (c.candidates.some((b, i) => i > 0 && b <= (c.candidates[i - 1] as number))) {
      // the budget rule lowers a choice by stepping to the next lower index
      throw new DqError('DQ_ERR_BUNDLE_INVALID', `controller.candidates ${JSON.stringify(c.candidates)} are not ascending`);
    }
    const blockLayers = graph.body.blocks.flat();
    if (blockLayers.join() !== c.layers.join()) {
      throw new DqError('DQ_ERR_BUNDLE_INVALID', 'graph.body.blocks and controller.layers name different layers');
    }
    const dynamic = new Set(manifest.layers.filter((l) => l.kind === 'dynamic').map((l) => l.name));
    for (const name of c.layers) if (!dynamic.has(name)) throw new DqError('DQ_ERR_BUNDLE_INVALID', `controller layer ${name} is not a dynamic layer`);
    const cost = costModel(manifest.layers, c.layers, manifest.bits.reference);
    const spec: ControllerSpec = {
      layers: c.layers,
      candidates: c.candidates,
      cost: c.cost,
      bitflops: c.layers.map((_, l) => c.candidates.map((b) => cost.layer(l, b))),
    };
    const policy = gatePolicy(manifest, c.candidates);
    const gateCost: GateCost = { dynamic: cost.dynamic, second: policy ? cost.dynamic(c.layers.map(() => policy.secondBits)) : 0 };
    return {
      dynamicLayers: c.layers,
      candidates: c.layers.map(() => c.candidates),
      controller: spec,
      blocks: graph.body.blocks.map((_, j) => [2 * j, 2 * j + 1] as const),
      sampleSize,
      policy,
      plan(logits, n, options, lowered) {
        if (!logits && manifest.controller) throw new DqError('DQ_ERR_ENGINE_FAILED', 'stem gave no controller_logits');
        // without a controller every score is 0: the budget rule then lowers layers in order (docs/api.md "Budgets")
        const scores = logits ?? new Float32Array(n * c.layers.length * c.candidates.length);
        return chooseBits(scores, n, spec, options, lowered, policy?.firstBits ?? null);
      },
      secondPass(logits, n, options, plans, lowered) {
        return policy ? secondPassRows(logits, n, options, plans, policy, gateCost, lowered) : [];
      },
    };
  }

  if (!('model' in graph)) throw new DqError('DQ_ERR_BUNDLE_INVALID', 'a static bundle is one graph (graph.model)');
  if (manifest.policy) throw new DqError('DQ_ERR_BUNDLE_INVALID', 'a gated second pass (policy) needs a dynamic bundle');
  if (manifest.bits.candidates.length !== 1) {
    throw new DqError('DQ_ERR_BUNDLE_INVALID', `a static bundle has one bit-width, not ${JSON.stringify(manifest.bits.candidates)}`);
  }
  const bits = manifest.bits.candidates[0] as number;
  const layers = manifest.layers.filter((l) => l.kind === 'dynamic').map((l) => l.name);
  const fixed = layers.map(() => bits);
  return {
    dynamicLayers: layers,
    candidates: layers.map(() => [bits]),
    controller: null,
    blocks: [],
    sampleSize,
    policy: null,
    plan(_logits, n) {
      return staticBits(fixed, n);
    },
    secondPass() {
      return [];
    },
  };
}

/**
 * A dynamic bundle without a controller: allowed only where nothing is chosen, a gate whose pass 1 runs at fixed
 * bits (docs/model-bundle.md "Gated second pass"). Its layers are the body's, its candidates `bits.candidates`.
 */
function withoutController(manifest: Manifest, layers: string[]): NonNullable<Manifest['controller']> {
  if (manifest.policy?.first_bits == null) {
    throw new DqError('DQ_ERR_BUNDLE_INVALID', 'dynamic bundle without a controller (only a gated bundle with fixed policy.first_bits may leave it out)');
  }
  const candidates = manifest.bits.candidates;
  return { layers, candidates, cost: layers.map(() => candidates.map(() => 0)) };
}

/** The manifest's policy, its bits checked against the candidates. */
function gatePolicy(manifest: Manifest, candidates: readonly number[]): GatePolicy | null {
  const p = manifest.policy;
  if (!p) return null;
  for (const [key, b] of [['first_bits', p.first_bits], ['second_bits', p.second_bits]] as const) {
    if (b !== null && !candidates.includes(b)) {
      throw new DqError('DQ_ERR_BUNDLE_INVALID', `policy.${key} ${b} is not a candidate (${candidates.join(', ')})`);
    }
  }
  return { firstBits: p.first_bits, secondBits: p.second_bits, threshold: p.threshold };
}
