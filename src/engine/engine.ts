// The Engine interface: one in front of every backend (onnxruntime-node today, CUDA later),
// so the batcher, pipeline and tests never know which one runs.
import type { Manifest } from '../repository/manifest.js';

/** Per-sample choices: the knob λ moves the controller's argmax; `precision` forces every dynamic layer to b. */
export interface SampleOptions {
  readonly knob: number;
  readonly precision: number | null;
  /**
   * A cap on this sample's dynamic layers' Bit-FLOPs (the request's max_bitflops minus the fixed part):
   * the controller's choice is lowered until it fits (bit-plan.ts, docs/api.md "Budgets"). Absent = none.
   */
  readonly maxDynamicBitflops?: number | null;
}

export interface SampleResult {
  /** Pre-softmax class logits, length = classes. */
  readonly logits: Float32Array;
  /** Chosen bits per dynamic layer, in `Engine.dynamicLayers` order (pass 1's, when a gated bundle ran two). */
  readonly bits: readonly number[];
  /** A gated bundle's pass 2 ran (its bits per dynamic layer), and `logits` are pass 2's. Absent = one pass. */
  readonly secondBits?: readonly number[];
  /** maxDynamicBitflops lowered the controller's choice, or left out a second pass. */
  readonly budgetLowered?: boolean;
}

/** Wall time of one batch's stages, in ms (shared by every sample of the batch). */
export interface StageTiming {
  /** Stem, fixed layers and controller (0 for a static bundle, whose one graph counts as layers). */
  readonly controllerMs: number;
  /** Dynamic layers and classifier. */
  readonly layersMs: number;
}

export interface BatchOutput {
  readonly samples: readonly SampleResult[];
  readonly timing: StageTiming;
}

export interface Engine {
  readonly manifest: Manifest;
  /** Dynamic layer names: the controller's axis L (dynamic bundles) or the step order (static ones). */
  readonly dynamicLayers: readonly string[];
  /** Candidate bit-widths per dynamic layer, ascending. */
  readonly candidates: readonly (readonly number[])[];
  /** Bytes per sample: H × W × 3 of the network input. */
  readonly sampleSize: number;
  /** `input` holds `batchSize` images, uint8 RGB, NHWC, at the model's size (the graph normalises them). */
  infer(input: Uint8Array, batchSize: number, options: readonly SampleOptions[]): Promise<BatchOutput>;
  /** False while no instance can run a batch (every worker thread crashed and is being restarted), or once lost. */
  readonly healthy: boolean;
  /** Why the device is unusable for the rest of the process (DQ_ERR_ENGINE_LOST), else null: liveness fails. */
  readonly lost: string | null;
  /** Runs every bit-width path once; the model is not ready before this resolves. */
  warmup(): Promise<void>;
  close(): Promise<void>;
}
