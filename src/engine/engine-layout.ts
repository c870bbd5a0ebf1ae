// What every engine derives from a manifest: which layers are dynamic, in which order, with which candidates.
import { DqError } from '../errors.js';
import type { Manifest } from '../repository/manifest.js';
import { chooseBits, staticBits, type ControllerSpec } from './bit-plan.js';
import type { SampleOptions } from './engine.js';

export interface EngineLayout {
  readonly dynamicLayers: readonly string[];
  readonly candidates: readonly (readonly number[])[];
  /** null for a static bundle. */
  readonly controller: ControllerSpec | null;
  readonly sampleSize: number;
  /** Bits per sample per dynamic layer; `controllerLogits` is required when `controller` is set. */
  plan(controllerLogits: Float32Array | null, batchSize: number, options: readonly SampleOptions[], lowered?: boolean[]): number[][];
}

export function engineLayout(manifest: Manifest): EngineLayout {
  const [h, w] = manifest.input.size;
  const sampleSize = manifest.input.channels * h * w;
  const steps = manifest.graph.steps;
  const stepLayers = steps.map((s) => s.layer);

  if (manifest.kind === 'dynamic') {
    const c = manifest.controller;
    if (!c) throw new DqError('DQ_ERR_BUNDLE_INVALID', 'dynamic bundle without a controller');
    if (c.cost.length !== c.layers.length || c.cost.some((row) => row.length !== c.candidates.length)) {
      throw new DqError('DQ_ERR_BUNDLE_INVALID', 'controller.cost is not [L][K]');
    }
    for (const step of steps) {
      if (!c.layers.includes(step.layer)) throw new DqError('DQ_ERR_BUNDLE_INVALID', `step ${step.layer} is not a controller layer`);
      for (const b of c.candidates) {
        if (!step.files[String(b)]) throw new DqError('DQ_ERR_BUNDLE_INVALID', `step ${step.layer} has no file for ${b} bits`);
      }
    }
    if (new Set(stepLayers).size !== c.layers.length) {
      throw new DqError('DQ_ERR_BUNDLE_INVALID', 'graph.steps and controller.layers differ');
    }
    const macs = new Map(manifest.layers.filter((l) => l.kind === 'dynamic').map((l) => [l.name, l.macs]));
    const spec: ControllerSpec = {
      layers: c.layers,
      candidates: c.candidates,
      cost: c.cost,
      // Layer l at candidate b costs MACs × b × b (docs/bitflops.md): weights and activations share b.
      bitflops: c.layers.map((name) => c.candidates.map((b) => (macs.get(name) ?? 0) * b * b)),
    };
    return {
      dynamicLayers: c.layers,
      candidates: c.layers.map(() => c.candidates),
      controller: spec,
      sampleSize,
      plan(logits, n, options, lowered) {
        if (!logits) throw new DqError('DQ_ERR_ENGINE_FAILED', 'stem gave no controller_logits');
        return chooseBits(logits, n, spec, options, lowered);
      },
    };
  }

  const fixed = steps.map((s) => {
    const keys = Object.keys(s.files);
    if (keys.length !== 1) throw new DqError('DQ_ERR_BUNDLE_INVALID', `static step ${s.layer} must have exactly one file`);
    return Number(keys[0]);
  });
  return {
    dynamicLayers: stepLayers,
    candidates: fixed.map((b) => [b]),
    controller: null,
    sampleSize,
    plan(_logits, n) {
      return staticBits(fixed, n);
    },
  };
}
