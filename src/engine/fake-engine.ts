// A deterministic Engine for route, batching and lifecycle tests: no ONNX, no bundle.
// Each sample's logits and controller logits are functions of that sample alone, so batched and unbatched
// runs agree exactly, and bits go through the real chooseBits (and a gated manifest's second pass through the
// real gate, with pass 2's logits another function of the sample).
import { setTimeout as sleep } from 'node:timers/promises';
import type { Manifest } from '../repository/manifest.js';
import type { BatchOutput, Engine, SampleOptions } from './engine.js';
import { engineLayout, type EngineLayout } from './engine-layout.js';
import { fakeManifest } from './fake-manifest.js';

export interface FakeEngineOptions {
  /** Extra wall time per batch (ms), to hold requests in flight in tests. */
  readonly batchDelayMs?: number;
}

export class FakeEngine implements Engine {
  readonly manifest: Manifest;
  readonly dynamicLayers: readonly string[];
  readonly candidates: readonly (readonly number[])[];
  readonly sampleSize: number;
  /** Batch sizes seen, in order (tests inspect it). */
  readonly batches: number[] = [];
  /** Most batches that were running at the same moment (tests of instanceCount inspect it). */
  maxConcurrent = 0;
  /** Tests set it false to act out an engine whose every worker crashed. */
  healthy = true;
  /** Tests set it to act out a lost GPU. */
  lost: string | null = null;
  private running = 0;
  private readonly layout: EngineLayout;
  private readonly delayMs: number;

  constructor(manifest: Manifest = fakeManifest(), options: FakeEngineOptions = {}) {
    this.manifest = manifest;
    this.layout = engineLayout(manifest);
    this.dynamicLayers = this.layout.dynamicLayers;
    this.candidates = this.layout.candidates;
    this.sampleSize = this.layout.sampleSize;
    this.delayMs = options.batchDelayMs ?? 0;
  }

  async infer(input: Uint8Array, batchSize: number, options: readonly SampleOptions[]): Promise<BatchOutput> {
    this.batches.push(batchSize);
    this.running++;
    this.maxConcurrent = Math.max(this.maxConcurrent, this.running);
    try {
      if (this.delayMs > 0) await sleep(this.delayMs);
    } finally {
      this.running--;
    }
    const classes = this.manifest.classes.length;
    const L = this.layout.controller?.layers.length ?? 0;
    const K = this.layout.controller?.candidates.length ?? 0;
    const ctrl = new Float32Array(batchSize * L * K);
    const logits: Float32Array[] = [];
    for (let n = 0; n < batchSize; n++) {
      const s = signature(input.subarray(n * this.sampleSize, (n + 1) * this.sampleSize));
      const row = new Float32Array(classes);
      for (let c = 0; c < classes; c++) row[c] = Math.sin((c + 1) * s);
      logits.push(row);
      for (let i = 0; i < L * K; i++) ctrl[n * L * K + i] = Math.cos((i + 1) * s);
    }
    const lowered = new Array<boolean>(batchSize).fill(false);
    // as the real stem: controller logits only where the manifest has a controller
    const plans = this.layout.plan(this.manifest.controller ? ctrl : null, batchSize, options, lowered);
    const second = new Set(this.layout.secondPass(concat(logits), batchSize, options, plans, lowered));
    const secondBits = this.dynamicLayers.map(() => this.layout.policy?.secondBits as number);
    return {
      samples: logits.map((l, n) => ({
        logits: second.has(n) ? l.map((v) => 2 * v) : l,
        bits: plans[n] as number[],
        ...(second.has(n) ? { secondBits } : {}),
        budgetLowered: lowered[n] as boolean,
      })),
      timing: { controllerMs: 0, layersMs: this.delayMs },
    };
  }

  async warmup(): Promise<void> {}
  async close(): Promise<void> {}
}

function concat(rows: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(rows.reduce((s, r) => s + r.length, 0));
  let at = 0;
  for (const r of rows) {
    out.set(r, at);
    at += r.length;
  }
  return out;
}

/** A scalar that depends on every value of the sample, in a fixed order (so it is batch-independent). */
function signature(x: Uint8Array): number {
  let a = 0;
  for (let i = 0; i < x.length; i += 7) a += ((x[i] as number) / 255 - 0.5) * ((i % 13) + 1);
  return (a / x.length) * 40 + 0.5;
}
