// WorkerEngine when a worker thread dies: its in-flight batch fails, the model is not ready while no worker
// can run a batch (503s, never requests hanging on a dead thread), a fresh worker takes the slot, and close()
// still finishes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { WorkerEngine } from '../../src/engine/worker-engine.js';
import { loadBundle } from '../../src/repository/bundle.js';
import type { Manifest } from '../../src/repository/manifest.js';
import { DYNAMIC_BUNDLE, hasDynamicBundle, MODELS_DIR, PHOTOS_DIR } from '../helpers/paths.js';
import { postImage, startTestServer } from '../helpers/server.js';
import { scrape, value } from '../metrics/scrape.js';

const opts = { kind: 'onnxruntime', intraOpNumThreads: 1, interOpNumThreads: 1 } as const;
let engine: WorkerEngine | undefined;
afterEach(async () => engine?.close());

/** The engine's threads (private): the test acts out a crash by terminating one, as an uncaught error would. */
const threads = (e: WorkerEngine) => (e as unknown as { workers: { worker: Worker }[] }).workers.map((w) => w.worker);

async function until(cond: () => boolean, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe.skipIf(!hasDynamicBundle)('WorkerEngine restarts a worker that exited', () => {
  let manifest: Manifest;
  const sample = () => new Uint8Array(3 * 32 * 32).map((_, i) => 128 + 100 * Math.sin(i));
  const run = (e: WorkerEngine) => e.infer(sample(), 1, [{ knob: 0, precision: null }]);

  it('fails its batch, refuses work while no worker is left, then serves again from a fresh worker', async () => {
    manifest = (await loadBundle(DYNAMIC_BUNDLE, { verifyChecksums: false })).manifest;
    const exits: number[] = [];
    const e = (engine = await WorkerEngine.load(DYNAMIC_BUNDLE, manifest, opts, 1, { onWorkerExit: (code) => exits.push(code) }));
    await e.warmup();
    const before = await run(e);

    // Terminated while idle (onnxruntime-node aborts the process when a thread is terminated inside a run);
    // the batch posted right after never runs and fails when the thread exits.
    const [thread] = threads(e);
    const exited = thread!.terminate();
    const inFlight = run(e);
    await exited;
    await expect(inFlight).rejects.toMatchObject({ code: 'DQ_ERR_ENGINE_FAILED' });
    expect(exits).toEqual([1]);
    expect(e.healthy).toBe(false);
    await expect(run(e)).rejects.toMatchObject({ code: 'DQ_ERR_MODEL_NOT_READY' });

    await until(() => e.healthy);
    expect(threads(e)[0]).not.toBe(thread);
    const after = await run(e);
    expect(after.samples[0]!.bits).toEqual(before.samples[0]!.bits);
    expect(Array.from(after.samples[0]!.logits)).toEqual(Array.from(before.samples[0]!.logits));
  }, 120_000);

  it('a server logs and counts the restart, and serves again', async () => {
    const server = await startTestServer({ engine: 'ort', modelRepository: MODELS_DIR, model: 'resnet20_dq', instanceCount: 1 });
    try {
      const e = server.registry.get().engine as WorkerEngine;
      await threads(e)[0]!.terminate();
      await until(() => e.healthy);
      const s = await scrape(server.url);
      expect(value(s, 'dqserve_engine_restarts_total', { model: 'resnet20_dq' })).toBe(1);
      expect((await postImage(server.url, readFileSync(join(PHOTOS_DIR, 'rocket.jpg')))).status).toBe(200);
    } finally {
      await server.close();
    }
  }, 120_000);

  it('a lost GPU (DQ_ERR_ENGINE_LOST from a worker) makes the engine unhealthy for good: no restart can cure it', async () => {
    manifest ??= (await loadBundle(DYNAMIC_BUNDLE, { verifyChecksums: false })).manifest;
    const lost: string[] = [];
    const e = (engine = await WorkerEngine.load(DYNAMIC_BUNDLE, manifest, opts, 2, { onLost: (why) => lost.push(why) }));
    // The worker's reply to a batch, as engine-worker.ts sends it when the native operators report a sticky fault
    // (there is no GPU here to fault): code and detail cross the thread, and the main thread rebuilds the error.
    const handle = (e as unknown as { workers: { worker: Worker; pending: Map<number, unknown> }[] }).workers[0]!;
    const batch = run(e);
    const [id] = [...handle.pending.keys()];
    handle.worker.emit('message', { id, ok: false, error: { message: 'x', code: 'DQ_ERR_ENGINE_LOST', detail: 'QLinearConv: unspecified launch failure' } });
    await expect(batch).rejects.toMatchObject({ code: 'DQ_ERR_ENGINE_LOST', message: 'the GPU is lost to this process; the server must be restarted: QLinearConv: unspecified launch failure' });
    expect(lost).toEqual(['QLinearConv: unspecified launch failure']);
    expect(e.lost).toBe('QLinearConv: unspecified launch failure');
    expect(e.healthy).toBe(false); // although both threads still run
    // The real batch is still running in the thread: close() must wait for it, not release the sessions under it
    // (that aborted the whole process once, in CI).
    await e.close();
    engine = undefined;
  }, 120_000);

  it('keeps serving on the other instances meanwhile, and close() finishes', async () => {
    manifest ??= (await loadBundle(DYNAMIC_BUNDLE, { verifyChecksums: false })).manifest;
    const e = (engine = await WorkerEngine.load(DYNAMIC_BUNDLE, manifest, opts, 2));
    const [first] = threads(e);
    await first!.terminate();
    expect(e.healthy).toBe(true);
    for (let i = 0; i < 4; i++) await run(e); // all on the live worker, none on the dead one
    await e.close();
    engine = undefined;
  }, 120_000);
});
