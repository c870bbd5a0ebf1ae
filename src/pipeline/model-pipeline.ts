// classify(images, options): preprocess -> dynamic batcher -> engine -> cost, for one loaded model version.
// Knows no HTTP: routes and protocol adapters call it and encode its results.
import { performance } from 'node:perf_hooks';
import { DynamicBatcher, type BatcherOptions } from '../batching/dynamic-batcher.js';
import { costModel, meanBits, savings, type CostModel } from '../cost/bitflops.js';
import type { Engine } from '../engine/engine.js';
import { DqError } from '../errors.js';
import { DecodeLimiter } from '../preprocess/decode-limiter.js';
import { headerPixels, preprocess, type PreprocessLimits } from '../preprocess/preprocess.js';
import type { Manifest } from '../repository/manifest.js';
import { TargetController, type TargetState } from './target-controller.js';
import { noopRecorder, type InferenceRecorder } from '../metrics/recorder.js';

export interface ClassifyOptions {
  /** λ, the controller's cost knob (0 = the trained argmax); null = the server's: the target controller's λ, or 0. */
  readonly knob: number | null;
  /** Force every dynamic layer to this many bits (a candidate), or null for the controller's choice. */
  readonly precision: number | null;
  readonly topK: number;
  /** Longest wait in the batching queue (ms). */
  readonly timeoutMs: number;
  /** Per-image Bit-FLOPs cap (docs/api.md "Budgets"): the controller's choice is lowered until it fits. */
  readonly maxBitflops?: number | null;
  /** Aborts when the client has gone: its images still queued are dropped (DQ_ERR_CLIENT_DISCONNECTED). */
  readonly signal?: AbortSignal;
}

export interface ClassEntry {
  readonly index: number;
  readonly label: string;
  readonly score: number;
}

export interface Timing {
  readonly preprocessMs: number;
  readonly queueMs: number;
  readonly controllerMs: number;
  readonly layersMs: number;
  readonly totalMs: number;
}

export interface ClassifyResult extends ClassEntry {
  readonly topK: readonly ClassEntry[];
  readonly logits: Float32Array;
  /** Bits per dynamic layer, in `ModelPipeline.dynamicLayers` order (pass 1's, for a gated bundle). */
  readonly bits: readonly number[];
  /** A gated bundle's second pass ran at these bits (and answered); null = one pass. */
  readonly secondBits: readonly number[] | null;
  readonly meanBits: number;
  readonly bitflops: number;
  readonly bitflopsReference: number;
  readonly savings: number;
  readonly batchSize: number;
  readonly timing: Timing;
  /** A per-request Bit-FLOPs cap lowered this image's bits below the controller's choice, or left out a second pass. */
  readonly budgetLowered: boolean;
}

export interface PipelineOptions extends BatcherOptions, PreprocessLimits {
  readonly recorder?: InferenceRecorder;
  /** --target-bitflops: hold the mean Bit-FLOPs per image there by moving λ (needs manifest.calibration). */
  readonly targetBitflops?: number;
  readonly targetWindowImages?: number;
  /** Pixels one request's images may declare in total (413 beyond). */
  readonly maxRequestPixels?: number;
  /** Bounds the pixels decoded at once; share one across the process's pipelines. */
  readonly decodeLimiter?: DecodeLimiter;
}

export class ModelPipeline {
  readonly name: string;
  readonly version: number;
  readonly manifest: Manifest;
  readonly engine: Engine;
  readonly cost: CostModel;
  private readonly batcher: DynamicBatcher;
  private readonly limits: PreprocessLimits;
  private readonly maxRequestPixels: number;
  private readonly decodes: DecodeLimiter;
  private readonly recorder: InferenceRecorder;
  private warm = false;
  private readonly retryAfterS: number;
  /** The server-wide target's controller; null without --target-bitflops or without a calibration table. */
  readonly target: TargetController | null;

  constructor(engine: Engine, options: PipelineOptions) {
    this.engine = engine;
    this.manifest = engine.manifest;
    this.name = engine.manifest.name;
    this.version = engine.manifest.version;
    this.cost = costModel(engine.manifest.layers, engine.dynamicLayers, engine.manifest.bits.reference);
    this.recorder = options.recorder ?? noopRecorder;
    const recorder = this.recorder;
    this.batcher = new DynamicBatcher(engine, {
      ...options,
      onBatchDone: (size, timing) => recorder.onBatch(this.name, this.version, size, timing),
      onQueueWait: (ms) => recorder.onQueueWait(this.name, this.version, ms),
    });
    this.limits = { maxInputPixels: options.maxInputPixels };
    this.maxRequestPixels = options.maxRequestPixels ?? Infinity;
    this.decodes = options.decodeLimiter ?? new DecodeLimiter(options.maxInputPixels);
    this.retryAfterS = options.retryAfterSeconds;
    const calibration = this.manifest.calibration ?? [];
    this.target =
      options.targetBitflops !== undefined && this.manifest.kind === 'dynamic' && calibration.length >= 2
        ? new TargetController(options.targetBitflops, calibration, options.targetWindowImages)
        : null;
  }

  get dynamicLayers(): readonly string[] {
    return this.engine.dynamicLayers;
  }

  /** Warmed up, and the engine can run a batch (not while every worker is being restarted after a crash). */
  get ready(): boolean {
    return this.warm && this.engine.healthy && this.engine.lost === null;
  }

  /** Why this model's device is unusable for the rest of the process (liveness fails), else null. */
  get lost(): string | null {
    return this.engine.lost;
  }

  get pending(): number {
    return this.batcher.pending;
  }

  /**
   * Refuses with DQ_ERR_QUEUE_FULL (counted like any failure) when the queue has no room for even one more image:
   * the routes call it before the body is read, so that under overload the excess costs no body parsing.
   */
  refuseWhenFull(): void {
    try {
      this.batcher.checkRoom(1);
    } catch (err) {
      this.recorder.onFailure(this.name, this.version, (err as DqError).code, 0);
      throw err;
    }
  }

  /** The server-wide target controller's state (null without --target-bitflops). */
  get targetState(): TargetState | null {
    return this.target?.state ?? null;
  }

  async warmup(enabled: boolean): Promise<void> {
    if (enabled) await this.engine.warmup();
    this.warm = true;
  }

  /** Throws DQ_ERR_REQUEST_INVALID_PARAMETER for a knob, precision or cap this model cannot take, DQ_ERR_BUDGET_BELOW_MINIMUM for a cap below the cheapest configuration. */
  checkOptions(options: ClassifyOptions): void {
    if (options.knob !== null && !Number.isFinite(options.knob)) throw new DqError('DQ_ERR_REQUEST_INVALID_PARAMETER', 'knob must be a finite number');
    if (options.precision !== null && !this.engine.candidates.every((c) => c.includes(options.precision as number))) {
      const all = [...new Set(this.engine.candidates.flat())].sort((a, b) => a - b).join(', ');
      throw new DqError('DQ_ERR_REQUEST_INVALID_PARAMETER', `precision ${options.precision} is not a candidate (${all})`);
    }
    if (!Number.isInteger(options.topK) || options.topK < 1) throw new DqError('DQ_ERR_REQUEST_INVALID_PARAMETER', 'top_k must be a positive integer');
    const cap = options.maxBitflops;
    if (cap !== undefined && cap !== null) {
      if (!Number.isFinite(cap) || cap <= 0) throw new DqError('DQ_ERR_REQUEST_INVALID_PARAMETER', 'max_bitflops must be a positive number');
      if (options.precision !== null) {
        const forced = this.cost.bitflops(this.dynamicLayers.map(() => options.precision as number));
        if (forced > cap) throw new DqError('DQ_ERR_BUDGET_BELOW_MINIMUM', `precision ${options.precision} costs ${forced} Bit-FLOPs per image, above max_bitflops ${cap}`);
      } else if (cap < this.minBitflops) {
        throw new DqError('DQ_ERR_BUDGET_BELOW_MINIMUM', `max_bitflops ${cap} is below this model's minimum of ${this.minBitflops} Bit-FLOPs per image (every dynamic layer at its lowest candidate)`);
      }
    }
  }

  /** The cheapest configuration: every dynamic layer at its lowest candidate. */
  get minBitflops(): number {
    return this.cost.bitflops(this.engine.candidates.map((c) => Math.min(...c)));
  }

  /** Decodes every image first (all or nothing), then queues them; results in input order. */
  async classify(images: readonly Buffer[], options: ClassifyOptions): Promise<ClassifyResult[]> {
    const start = performance.now();
    try {
      const results = await this.run(images, options);
      for (const r of results) this.recorder.onResult(this.name, this.version, r);
      this.recorder.onSuccess(this.name, this.version, results, performance.now() - start);
      return results;
    } catch (err) {
      if (err instanceof DqError && err.code === 'DQ_ERR_BUDGET_BELOW_MINIMUM') this.recorder.onBudget(this.name, this.version, 'below_minimum');
      this.recorder.onFailure(this.name, this.version, err instanceof DqError ? err.code : 'DQ_ERR_SERVER_INTERNAL', performance.now() - start);
      throw err;
    }
  }

  private async run(images: readonly Buffer[], options: ClassifyOptions): Promise<ClassifyResult[]> {
    if (!this.ready) {
      const why = this.engine.lost !== null ? 'the GPU is lost to this server, which must be restarted' : this.warm ? 'engine restarting after a worker exited' : undefined;
      throw new DqError('DQ_ERR_MODEL_NOT_READY', why, { retryAfterS: this.retryAfterS });
    }
    this.checkOptions(options);
    const start = performance.now();
    // What the headers declare, before any decoding (an unreadable header is charged as the largest image).
    const declared = images.map((img) => headerPixels(img));
    const total = declared.reduce<number>((a, p) => a + (p ?? 0), 0);
    if (total > this.maxRequestPixels) {
      throw new DqError('DQ_ERR_PREPROCESS_TOO_MANY_PIXELS', `the request's ${images.length} images declare ${total} pixels, over the limit of ${this.maxRequestPixels} per request`);
    }
    // Room in the queue first: under overload a request that will be refused is refused before its decode.
    const admission = this.batcher.admit(images.length);
    let tensors: Uint8Array[];
    try {
      tensors = await Promise.all(
        images.map(async (img, i) => {
          try {
            const pixels = declared[i] ?? this.limits.maxInputPixels;
            return await this.decodes.run(pixels, () => preprocess(img, this.manifest.input, this.limits), options.signal);
          } catch (err) {
            if (images.length > 1 && err instanceof DqError) throw new DqError(err.code, `image ${i}${err.detail ? `: ${err.detail}` : ''}`, { cause: err });
            throw err;
          }
        }),
      );
    } catch (err) {
      admission.cancel();
      throw err;
    }
    const preprocessed = performance.now();
    const cap = options.maxBitflops ?? null;
    // Images without their own knob or precision run at the target controller's λ, and feed it back.
    const controlled = this.target !== null && options.knob === null && options.precision === null;
    const knob = options.knob ?? this.target?.knob ?? 0;
    const sampleOptions = { knob, precision: options.precision, maxDynamicBitflops: cap === null ? null : cap - this.cost.fixed };
    const batched = await admission.submit(tensors, sampleOptions, options.timeoutMs, options.signal);
    const end = performance.now();
    return batched.map((b) => {
      const second = b.sample.secondBits ?? null;
      const bf = this.cost.bitflops(b.sample.bits, second);
      if (controlled) this.target?.observe(bf, knob);
      const ranked = rank(b.sample.logits, this.manifest.classes, options.topK);
      const best = ranked[0] as ClassEntry;
      return {
        ...best,
        topK: ranked,
        logits: b.sample.logits,
        bits: b.sample.bits,
        secondBits: second,
        meanBits: meanBits(b.sample.bits),
        bitflops: bf,
        bitflopsReference: this.cost.reference,
        savings: savings(bf, this.cost.reference),
        batchSize: b.batchSize,
        budgetLowered: b.sample.budgetLowered ?? false,
        timing: {
          preprocessMs: preprocessed - start,
          queueMs: b.queueMs,
          controllerMs: b.timing.controllerMs,
          layersMs: b.timing.layersMs,
          totalMs: end - start,
        },
      };
    });
  }

  async close(): Promise<void> {
    await this.batcher.drain();
    await this.engine.close();
  }
}

/** Softmax scores of the top k classes, best first; equal scores keep the lower index first. */
export function rank(logits: Float32Array, classes: readonly string[], k: number): ClassEntry[] {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  let sum = 0;
  const exp = Array.from(logits, (v) => {
    const e = Math.exp(v - max);
    sum += e;
    return e;
  });
  const order = exp.map((_, i) => i).sort((a, b) => (logits[b] as number) - (logits[a] as number) || a - b);
  return order.slice(0, Math.min(k, logits.length)).map((i) => ({ index: i, label: classes[i] ?? String(i), score: (exp[i] as number) / sum }));
}
