// Dynamic batching in front of an Engine (Triton's names): a request waits at most
// maxQueueDelayMicroseconds for others to join, a batch holds at most maxBatchSize samples, and at most
// maxQueueSize samples wait. While a batch runs, new requests queue and leave together as the next batch.
// Each sample carries its own options (knob, precision): bits are chosen per sample, so any samples mix.
import { performance } from 'node:perf_hooks';
import { DqError } from '../errors.js';
import type { Engine, SampleOptions, SampleResult, StageTiming } from '../engine/engine.js';

export interface BatcherOptions {
  readonly maxBatchSize: number;
  readonly maxQueueDelayMicroseconds: number;
  readonly maxQueueSize: number;
  /** Batches that may run at once (Triton's instance_group count); each ORT run takes one libuv thread. */
  readonly instanceCount: number;
  /** Retry-After (s) sent with queue-full and timeout errors. */
  readonly retryAfterSeconds: number;
  /** Called after each batch the engine completed (metrics: batch size, Triton's execution count). */
  readonly onBatchDone?: (batchSize: number, timing: StageTiming) => void;
}

export interface BatchedResult {
  readonly sample: SampleResult;
  readonly timing: StageTiming;
  /** Time from submit until its batch started (ms). */
  readonly queueMs: number;
  readonly batchSize: number;
}

interface Pending {
  readonly input: Float32Array;
  readonly options: SampleOptions;
  readonly enqueuedAt: number;
  readonly resolve: (r: BatchedResult) => void;
  readonly reject: (e: unknown) => void;
  timer: NodeJS.Timeout | undefined;
}

export class DynamicBatcher {
  private readonly engine: Engine;
  private readonly opts: BatcherOptions;
  private readonly queue: Pending[] = [];
  private running = 0;
  private closed = false;
  private flushTimer: NodeJS.Timeout | undefined;
  private idleWaiters: Array<() => void> = [];

  constructor(engine: Engine, options: BatcherOptions) {
    this.engine = engine;
    this.opts = options;
  }

  /** Samples waiting, not yet in a batch. */
  get pending(): number {
    return this.queue.length;
  }

  /** Queue one sample; rejects with DQ_ERR_QUEUE_FULL at once, or DQ_ERR_QUEUE_TIMEOUT after `timeoutMs` in the queue. */
  submit(input: Float32Array, options: SampleOptions, timeoutMs: number): Promise<BatchedResult> {
    if (this.closed) return Promise.reject(new DqError('DQ_ERR_SERVER_SHUTTING_DOWN', undefined, { retryAfterS: this.opts.retryAfterSeconds }));
    if (input.length !== this.engine.sampleSize) {
      return Promise.reject(new DqError('DQ_ERR_SERVER_INTERNAL', `sample has ${input.length} values, engine expects ${this.engine.sampleSize}`));
    }
    if (this.queue.length >= this.opts.maxQueueSize) {
      return Promise.reject(new DqError('DQ_ERR_QUEUE_FULL', `${this.queue.length} waiting`, { retryAfterS: this.opts.retryAfterSeconds }));
    }
    return new Promise<BatchedResult>((resolve, reject) => {
      const item: Pending = { input, options, enqueuedAt: performance.now(), resolve, reject, timer: undefined };
      item.timer = setTimeout(() => this.expire(item, timeoutMs), timeoutMs);
      this.queue.push(item);
      this.schedule();
    });
  }

  /** Stop taking new samples; resolves when every queued and running sample has finished. */
  async drain(): Promise<void> {
    this.closed = true;
    if (this.running === 0 && this.queue.length === 0) return;
    await new Promise<void>((r) => this.idleWaiters.push(r));
  }

  private expire(item: Pending, timeoutMs: number): void {
    const i = this.queue.indexOf(item);
    if (i < 0) return; // already in a batch: it will finish
    this.queue.splice(i, 1);
    item.reject(new DqError('DQ_ERR_QUEUE_TIMEOUT', `waited ${timeoutMs} ms`, { retryAfterS: this.opts.retryAfterSeconds }));
    this.notifyIdle();
  }

  private schedule(): void {
    if (this.running >= this.opts.instanceCount || this.queue.length === 0) return;
    if (this.queue.length >= this.opts.maxBatchSize || this.closed) {
      this.flush();
      return;
    }
    if (this.flushTimer) return;
    const oldest = (this.queue[0] as Pending).enqueuedAt;
    const waitMs = Math.max(0, oldest + this.opts.maxQueueDelayMicroseconds / 1000 - performance.now());
    // setTimeout(0) still lets requests that arrive in this tick join; Node timers have 1 ms resolution.
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      this.flush();
    }, waitMs);
  }

  private flush(): void {
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = undefined;
    }
    if (this.running >= this.opts.instanceCount || this.queue.length === 0) return;
    const batch = this.queue.splice(0, this.opts.maxBatchSize);
    this.running++;
    void this.run(batch);
  }

  private async run(batch: Pending[]): Promise<void> {
    const started = performance.now();
    const size = this.engine.sampleSize;
    const input = new Float32Array(size * batch.length);
    batch.forEach((p, i) => {
      clearTimeout(p.timer);
      input.set(p.input, i * size);
    });
    try {
      const out = await this.engine.infer(
        input,
        batch.length,
        batch.map((p) => p.options),
      );
      this.opts.onBatchDone?.(batch.length, out.timing);
      batch.forEach((p, i) =>
        p.resolve({ sample: out.samples[i] as SampleResult, timing: out.timing, queueMs: started - p.enqueuedAt, batchSize: batch.length }),
      );
    } catch (err) {
      const e = err instanceof DqError ? err : new DqError('DQ_ERR_ENGINE_FAILED', (err as Error)?.message, { cause: err });
      for (const p of batch) p.reject(e);
    } finally {
      this.running--;
      this.notifyIdle();
      this.schedule();
    }
  }

  private notifyIdle(): void {
    if (this.running > 0 || this.queue.length > 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
