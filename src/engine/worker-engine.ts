// The production Engine: GraphEngines (onnxruntime on the CPU, the native operators on the GPU) in worker threads (one
// per instance, Triton's instance_group count), so inference never blocks the event loop and several batches can
// use several cores.
// Each infer() goes to an idle worker (or the least busy one); inputs are transferred, not copied.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { DqError, ERRORS, type ErrorCode } from '../errors.js';
import type { Manifest } from '../repository/manifest.js';
import type { BatchOutput, Engine, SampleOptions } from './engine.js';
import { engineLayout } from './engine-layout.js';
import type { WorkerReply, WorkerRequest } from './engine-worker.js';
import type { Runtime } from './runtime.js';

type Request = WorkerRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

class WorkerHandle {
  readonly worker: Worker;
  busy = 0;
  /** False once the thread has exited: calls are refused at once instead of waiting for an answer forever. */
  alive = true;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();

  constructor(onExit: (code: number) => void, onLost: (why: string) => void) {
    this.worker = import.meta.url.endsWith('.ts') ? tsWorker() : new Worker(new URL('./engine-worker.js', import.meta.url));
    this.worker.on('message', (reply: WorkerReply) => {
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      if (reply.ok) p.resolve(reply.value);
      else {
        const { code, detail, message } = reply.error;
        const err = code && code in ERRORS ? new DqError(code as ErrorCode, detail) : new DqError('DQ_ERR_ENGINE_FAILED', message);
        if (err.code === 'DQ_ERR_ENGINE_LOST') onLost(detail ?? message);
        p.reject(err);
      }
    });
    this.worker.on('error', (err) => this.failAll(err));
    this.worker.on('exit', (code) => {
      this.alive = false;
      this.failAll(new Error(`engine worker exited with code ${code}`));
      onExit(code);
    });
  }

  call<T>(req: Request, transfer: ArrayBuffer[] = []): Promise<T> {
    if (!this.alive) return Promise.reject(new DqError('DQ_ERR_ENGINE_FAILED', 'engine worker has exited'));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ ...req, id }, transfer);
    });
  }

  private failAll(err: unknown): void {
    for (const p of this.pending.values()) p.reject(new DqError('DQ_ERR_ENGINE_FAILED', (err as Error).message, { cause: err }));
    this.pending.clear();
  }
}

/**
 * Under vitest/tsx the sources are TypeScript, and a worker does not inherit the parent's loader:
 * register tsx's ESM hooks inside the worker, then import the .ts worker module.
 */
function tsWorker(): Worker {
  // tsx/esm/api resolves to its CommonJS build under require(); its ESM build sits beside it.
  const api = pathToFileURL(createRequire(import.meta.url).resolve('tsx/esm/api').replace(/\.cjs$/, '.mjs')).href;
  const target = new URL('./engine-worker.ts', import.meta.url).href;
  const code = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(target)}); });`;
  return new Worker(code, { eval: true });
}

export interface WorkerEngineEvents {
  /** A worker thread exited while serving (not at close); a fresh one is being started in its place. */
  onWorkerExit?(code: number): void;
  /** Starting the fresh worker failed; another try follows after `retryInMs`. */
  onRestartFailed?(err: unknown, retryInMs: number): void;
  /** The device was lost (DQ_ERR_ENGINE_LOST): no worker of this process can use it again. Once. */
  onLost?(why: string): void;
}

const RESTART_BACKOFF_MS = [500, 1000, 2000, 5000, 10_000, 30_000];

export class WorkerEngine implements Engine {
  readonly manifest: Manifest;
  readonly dynamicLayers: readonly string[];
  readonly candidates: readonly (readonly number[])[];
  readonly sampleSize: number;
  private readonly workers: WorkerHandle[] = [];
  private closing = false;
  private warmed = false;
  /** Set by the first DQ_ERR_ENGINE_LOST: restarting a worker cannot help, as the device is the process's. */
  private lostWhy: string | null = null;
  /** Replacements being started (close() waits for them). */
  private readonly starting = new Set<Promise<void>>();

  private constructor(
    manifest: Manifest,
    private readonly dir: string,
    private readonly runtime: Runtime,
    private readonly events: WorkerEngineEvents,
  ) {
    const layout = engineLayout(manifest);
    this.manifest = manifest;
    this.dynamicLayers = layout.dynamicLayers;
    this.candidates = layout.candidates;
    this.sampleSize = layout.sampleSize;
  }

  static async load(dir: string, manifest: Manifest, runtime: Runtime, instances: number, events: WorkerEngineEvents = {}): Promise<WorkerEngine> {
    const engine = new WorkerEngine(manifest, dir, runtime, events); // validates the layout before starting threads
    const started = await Promise.allSettled(Array.from({ length: instances }, () => engine.spawn()));
    const loaded = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      engine.closing = true;
      await Promise.allSettled(loaded.map(shutdown)); // the ones that did load must not outlive the failure
      const err: unknown = failed.reason;
      throw err instanceof DqError && err.code === 'DQ_ERR_ENGINE_FAILED' ? new DqError('DQ_ERR_BUNDLE_INVALID', err.message, { cause: err }) : err;
    }
    engine.workers.push(...loaded);
    return engine;
  }

  /** A worker with the bundle loaded; when it exits while serving, another takes its place. */
  private async spawn(): Promise<WorkerHandle> {
    const w: WorkerHandle = new WorkerHandle(
      (code) => this.replace(w, code),
      (why) => {
        if (this.lostWhy !== null) return;
        this.lostWhy = why;
        this.events.onLost?.(why);
      },
    );
    try {
      await w.call({ type: 'load', dir: this.dir, manifest: this.manifest, runtime: this.runtime });
      if (this.warmed) await w.call({ type: 'warmup' });
    } catch (err) {
      await w.worker.terminate();
      throw err;
    }
    return w;
  }

  /** Restarts a dead worker's slot, retrying with backoff; until then the other workers serve (or none: 503s). */
  private replace(dead: WorkerHandle, code: number, attempt = 0): void {
    if (this.closing || !this.workers.includes(dead)) return; // closing, or it died while loading: spawn() throws
    if (attempt === 0) this.events.onWorkerExit?.(code);
    const starting: Promise<void> = this.spawn().then(
      async (fresh) => {
        if (this.closing) await shutdown(fresh);
        else this.workers[this.workers.indexOf(dead)] = fresh;
      },
      (err: unknown) => {
        if (this.closing) return;
        const wait = RESTART_BACKOFF_MS[Math.min(attempt, RESTART_BACKOFF_MS.length - 1)] as number;
        this.events.onRestartFailed?.(err, wait);
        setTimeout(() => this.replace(dead, code, attempt + 1), wait).unref(); // a no-op once closing
      },
    );
    this.starting.add(starting);
    void starting.finally(() => this.starting.delete(starting));
  }

  /** At least one worker can run a batch (false while every worker is being restarted, and once lost). */
  get healthy(): boolean {
    return this.lostWhy === null && this.workers.some((w) => w.alive);
  }

  get lost(): string | null {
    return this.lostWhy;
  }

  async infer(input: Uint8Array, batchSize: number, options: readonly SampleOptions[]): Promise<BatchOutput> {
    const live = this.workers.filter((w) => w.alive);
    if (live.length === 0) throw new DqError('DQ_ERR_MODEL_NOT_READY', 'engine restarting after a worker exited');
    const w = live.reduce((a, b) => (b.busy < a.busy ? b : a));
    w.busy++;
    try {
      // Transfer the batch buffer when it is exactly ours (the batcher builds a fresh one per batch).
      const own = input.byteOffset === 0 && input.byteLength === input.buffer.byteLength;
      return await w.call<BatchOutput>({ type: 'infer', input, batchSize, options: [...options] }, own ? [input.buffer as ArrayBuffer] : []);
    } finally {
      w.busy--;
    }
  }

  async warmup(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.call({ type: 'warmup' })));
    this.warmed = true;
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.allSettled([...this.starting]); // a replacement still loading is shut down once it has loaded
    await Promise.allSettled(this.workers.map(shutdown));
  }
}

/**
 * Releases the sessions, then ends the thread: onnxruntime-node aborts the whole process when a thread is
 * terminated inside a native call, so a worker is only terminated between messages.
 */
async function shutdown(w: WorkerHandle): Promise<void> {
  await w.call({ type: 'close' }).catch(() => undefined);
  await w.worker.terminate();
}
