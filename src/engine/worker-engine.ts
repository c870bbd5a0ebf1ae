// The production Engine: OrtEngine instances in worker threads (one per instance, Triton's instance_group
// count), so inference never blocks the event loop and several batches can use several cores.
// Each infer() goes to an idle worker (or the least busy one); inputs are transferred, not copied.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { DqError, ERRORS, type ErrorCode } from '../errors.js';
import type { Manifest } from '../repository/manifest.js';
import type { BatchOutput, Engine, SampleOptions } from './engine.js';
import { engineLayout } from './engine-layout.js';
import type { OrtEngineOptions } from './ort-engine.js';
import type { WorkerReply, WorkerRequest } from './ort-worker.js';

type Request = WorkerRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;

class WorkerHandle {
  readonly worker: Worker;
  busy = 0;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();

  constructor() {
    this.worker = import.meta.url.endsWith('.ts') ? tsWorker() : new Worker(new URL('./ort-worker.js', import.meta.url));
    this.worker.on('message', (reply: WorkerReply) => {
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      if (reply.ok) p.resolve(reply.value);
      else {
        const code = reply.error.code && reply.error.code in ERRORS ? (reply.error.code as ErrorCode) : 'DQ_ERR_ENGINE_FAILED';
        p.reject(new DqError(code, reply.error.message));
      }
    });
    this.worker.on('error', (err) => this.failAll(err));
    this.worker.on('exit', (code) => this.failAll(new Error(`engine worker exited with code ${code}`)));
  }

  call<T>(req: Request, transfer: ArrayBuffer[] = []): Promise<T> {
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
  const target = new URL('./ort-worker.ts', import.meta.url).href;
  const code = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(target)}); });`;
  return new Worker(code, { eval: true });
}

export class WorkerEngine implements Engine {
  readonly manifest: Manifest;
  readonly dynamicLayers: readonly string[];
  readonly candidates: readonly (readonly number[])[];
  readonly sampleSize: number;
  private readonly workers: WorkerHandle[];

  private constructor(manifest: Manifest, workers: WorkerHandle[]) {
    const layout = engineLayout(manifest);
    this.manifest = manifest;
    this.dynamicLayers = layout.dynamicLayers;
    this.candidates = layout.candidates;
    this.sampleSize = layout.sampleSize;
    this.workers = workers;
  }

  static async load(dir: string, manifest: Manifest, options: OrtEngineOptions, instances: number): Promise<WorkerEngine> {
    engineLayout(manifest); // validate before starting threads
    const workers = Array.from({ length: instances }, () => new WorkerHandle());
    try {
      await Promise.all(workers.map((w) => w.call({ type: 'load', dir, manifest, options })));
    } catch (err) {
      await Promise.allSettled(workers.map((w) => w.worker.terminate()));
      throw err instanceof DqError && err.code === 'DQ_ERR_ENGINE_FAILED' ? new DqError('DQ_ERR_BUNDLE_INVALID', err.message, { cause: err }) : err;
    }
    return new WorkerEngine(manifest, workers);
  }

  async infer(input: Float32Array, batchSize: number, options: readonly SampleOptions[]): Promise<BatchOutput> {
    const w = this.workers.reduce((a, b) => (b.busy < a.busy ? b : a));
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
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.workers.map((w) => w.call({ type: 'close' })));
    await Promise.allSettled(this.workers.map((w) => w.worker.terminate()));
  }
}
