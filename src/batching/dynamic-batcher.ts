// Dynamic batching in front of an Engine (Triton's names): a request waits at most
// maxQueueDelayMicroseconds for others to join, a batch holds at most maxBatchSize samples, and at most
// maxQueueSize samples wait. While a batch runs, new requests queue and leave together as the next batch.
// Each sample carries its own options (knob, precision): bits are chosen per sample, so any samples mix.
import { performance } from 'node:perf_hooks';
import { DqError } from '../errors.js';
import type { Engine, SampleOptions, SampleResult, StageTiming } from '../engine/engine.js';

/** Room held in the queue for one request's samples while they are decoded (DynamicBatcher.admit). */
export interface Admission {
  submit(inputs: readonly Uint8Array[], options: SampleOptions, timeoutMs: number, signal?: AbortSignal): Promise<BatchedResult[]>;
  cancel(): void;
}

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
  /** Called for every sample leaving the queue, whether into a batch, timed out or cancelled (metrics). */
  readonly onQueueWait?: (waitMs: number) => void;
}

export interface BatchedResult {
  readonly sample: SampleResult;
  readonly timing: StageTiming;
  /** Time from submit until its batch started (ms). */
  readonly queueMs: number;
  readonly batchSize: number;
}

/** One request's samples: admitted together, and when one cannot finish, the rest still queued leave too. */
class Request {
  private readonly results: (BatchedResult | undefined)[];
  private left: number;
  private done = false;
  timer: NodeJS.Timeout | undefined;

  constructor(
    n: number,
    private readonly resolve: (r: BatchedResult[]) => void,
    private readonly reject: (e: unknown) => void,
  ) {
    this.results = new Array<BatchedResult | undefined>(n);
    this.left = n;
  }

  deliver(i: number, r: BatchedResult): void {
    if (this.done) return; // the request already failed: the result of a sibling in flight is dropped
    this.results[i] = r;
    if (--this.left === 0) this.settle(() => this.resolve(this.results as BatchedResult[]));
  }

  fail(err: unknown): void {
    if (!this.done) this.settle(() => this.reject(err));
  }

  private settle(f: () => void): void {
    this.done = true;
    clearTimeout(this.timer);
    f();
  }
}

interface Pending {
  readonly input: Uint8Array;
  readonly options: SampleOptions;
  readonly enqueuedAt: number;
  readonly request: Request;
  readonly index: number;
}

export class DynamicBatcher {
  private readonly engine: Engine;
  private readonly opts: BatcherOptions;
  private readonly queue: Pending[] = [];
  private running = 0;
  private closed = false;
  /** Samples admitted (admit) and still being decoded: they count against maxQueueSize. */
  private reserved = 0;
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

  /**
   * Holds room in the queue for `n` samples while they are decoded, so that a request that will not fit is
   * refused (DQ_ERR_QUEUE_FULL, or SHUTTING_DOWN) before it costs a decode. Submit through the admission, or
   * cancel it when the request fails before that.
   */
  admit(n: number): Admission {
    if (this.closed) throw new DqError('DQ_ERR_SERVER_SHUTTING_DOWN', undefined, { retryAfterS: this.opts.retryAfterSeconds });
    this.checkRoom(n);
    this.reserved += n;
    let held = true;
    const release = () => {
      if (held) this.reserved -= n;
      held = false;
    };
    return {
      submit: (inputs, options, timeoutMs, signal) => {
        release();
        return this.submit(inputs, options, timeoutMs, signal);
      },
      cancel: release,
    };
  }

  /** Throws DQ_ERR_QUEUE_FULL when `n` more samples would not fit (waiting and being decoded count). */
  checkRoom(n: number): void {
    if (this.queue.length + this.reserved + n > this.opts.maxQueueSize) {
      const detail = `${this.queue.length} waiting, ${this.reserved} being decoded, ${n} more asked, room for ${this.opts.maxQueueSize}`;
      throw new DqError('DQ_ERR_QUEUE_FULL', detail, { retryAfterS: this.opts.retryAfterSeconds });
    }
  }

  /**
   * Queue one request's samples (results in input order). All are admitted or none: DQ_ERR_QUEUE_FULL at once.
   * After `timeoutMs` with any of them still queued, DQ_ERR_QUEUE_TIMEOUT; when `signal` aborts (the client
   * left), DQ_ERR_CLIENT_DISCONNECTED. Either way its samples still queued leave the queue; samples already in
   * a running batch finish there, and their results are dropped.
   */
  submit(inputs: readonly Uint8Array[], options: SampleOptions, timeoutMs: number, signal?: AbortSignal): Promise<BatchedResult[]> {
    if (this.closed) return Promise.reject(new DqError('DQ_ERR_SERVER_SHUTTING_DOWN', undefined, { retryAfterS: this.opts.retryAfterSeconds }));
    const wrong = inputs.find((x) => x.length !== this.engine.sampleSize);
    if (wrong) return Promise.reject(new DqError('DQ_ERR_SERVER_INTERNAL', `sample has ${wrong.length} bytes, engine expects ${this.engine.sampleSize}`));
    try {
      this.checkRoom(inputs.length);
    } catch (err) {
      return Promise.reject(err);
    }
    if (signal?.aborted) return Promise.reject(new DqError('DQ_ERR_CLIENT_DISCONNECTED'));
    if (inputs.length === 0) return Promise.resolve([]);
    return new Promise<BatchedResult[]>((resolve, reject) => {
      const onAbort = () => this.withdraw(request, new DqError('DQ_ERR_CLIENT_DISCONNECTED'));
      const request = new Request(
        inputs.length,
        (r) => (signal?.removeEventListener('abort', onAbort), resolve(r)),
        (e) => (signal?.removeEventListener('abort', onAbort), reject(e)),
      );
      signal?.addEventListener('abort', onAbort, { once: true });
      request.timer = setTimeout(
        () => this.withdraw(request, new DqError('DQ_ERR_QUEUE_TIMEOUT', `waited ${timeoutMs} ms`, { retryAfterS: this.opts.retryAfterSeconds }), true),
        timeoutMs,
      );
      const enqueuedAt = performance.now();
      inputs.forEach((input, index) => this.queue.push({ input, options, enqueuedAt, request, index }));
      this.schedule();
    });
  }

  /** Stop taking new samples; resolves when every queued and running sample has finished. */
  async drain(): Promise<void> {
    this.closed = true;
    if (this.running === 0 && this.queue.length === 0) return;
    await new Promise<void>((r) => this.idleWaiters.push(r));
  }

  /** Takes a request's samples out of the queue and fails it; a timeout only counts while some still wait. */
  private withdraw(request: Request, err: DqError, onlyIfQueued = false): void {
    const now = performance.now();
    const mine = this.queue.filter((p) => p.request === request);
    if (onlyIfQueued && mine.length === 0) return; // all in batches: they will finish
    for (const p of mine) {
      this.queue.splice(this.queue.indexOf(p), 1);
      this.opts.onQueueWait?.(now - p.enqueuedAt);
    }
    request.fail(err);
    this.notifyIdle();
  }

  private schedule(): void {
    // as many full batches as there are free instances (a backlog, or draining), not one per call
    while (this.running < this.opts.instanceCount && this.queue.length > 0 && (this.queue.length >= this.opts.maxBatchSize || this.closed)) this.flush();
    if (this.running >= this.opts.instanceCount || this.queue.length === 0 || this.flushTimer) return;
    // a partial batch with an instance free: leave when the oldest image has waited maxQueueDelay
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
    const input = new Uint8Array(size * batch.length);
    batch.forEach((p, i) => {
      this.opts.onQueueWait?.(started - p.enqueuedAt);
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
        p.request.deliver(p.index, { sample: out.samples[i] as SampleResult, timing: out.timing, queueMs: started - p.enqueuedAt, batchSize: batch.length }),
      );
    } catch (err) {
      let e = err instanceof DqError ? err : new DqError('DQ_ERR_ENGINE_FAILED', (err as Error)?.message, { cause: err });
      if (e.statusCode === 503 && e.retryAfterS === undefined) e = new DqError(e.code, e.detail, { retryAfterS: this.opts.retryAfterSeconds, cause: err });
      for (const p of batch) this.withdraw(p.request, e); // the rest of each request leaves the queue too
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
