import { describe, expect, it } from 'vitest';
import { DynamicBatcher } from '../../src/batching/dynamic-batcher.js';
import { FakeEngine } from '../../src/engine/fake-engine.js';
import { DqError } from '../../src/errors.js';

const opts = { maxBatchSize: 8, maxQueueDelayMicroseconds: 5000, maxQueueSize: 64, instanceCount: 1, retryAfterSeconds: 2 };
const dyn = { knob: 0, precision: null };

function samples(engine: FakeEngine, n: number): Float32Array[] {
  return Array.from({ length: n }, (_, i) => Float32Array.from({ length: engine.sampleSize }, (_, j) => Math.sin(i * 31 + j) * 2));
}

describe('DynamicBatcher', () => {
  it('forms batches up to maxBatchSize and gives each sample its own result', async () => {
    const engine = new FakeEngine();
    const b = new DynamicBatcher(engine, opts);
    const xs = samples(engine, 20);
    const results = await Promise.all(xs.map((x) => b.submit(x, dyn, 10_000)));
    expect(engine.batches).toEqual([8, 8, 4]);
    expect(results.map((r) => r.batchSize)).toEqual([...Array(16).fill(8), 4, 4, 4, 4]);
  });

  it('batched results equal unbatched ones', async () => {
    const engine = new FakeEngine();
    const xs = samples(engine, 12);
    const batched = await Promise.all(xs.map((x) => new DynamicBatcher(engine, opts).submit(x, dyn, 10_000)));
    const one = new DynamicBatcher(engine, { ...opts, maxBatchSize: 1 });
    for (const [i, x] of xs.entries()) {
      const r = await one.submit(x, dyn, 10_000);
      expect(Array.from(r.sample.logits)).toEqual(Array.from(batched[i]!.sample.logits));
      expect(r.sample.bits).toEqual(batched[i]!.sample.bits);
    }
  });

  it('runs up to instanceCount batches at once', async () => {
    const engine = new FakeEngine(undefined, { batchDelayMs: 100 });
    const b = new DynamicBatcher(engine, { ...opts, maxBatchSize: 2, instanceCount: 2 });
    await Promise.all(samples(engine, 4).map((x) => b.submit(x, dyn, 10_000)));
    expect(engine.batches).toEqual([2, 2]);
    expect(engine.maxConcurrent).toBe(2); // both batches ran at once (no wall-clock assertion: CI is noisy)
  });

  it('mixes per-sample options in one batch', async () => {
    const engine = new FakeEngine();
    const b = new DynamicBatcher(engine, opts);
    const [x] = samples(engine, 1);
    const [r3, r5] = await Promise.all([b.submit(x!, { knob: 0, precision: 3 }, 1000), b.submit(x!, { knob: 0, precision: 5 }, 1000)]);
    expect(r3.batchSize).toBe(2);
    expect(r3.sample.bits.every((v) => v === 3)).toBe(true);
    expect(r5.sample.bits.every((v) => v === 5)).toBe(true);
  });

  it('rejects with DQ_ERR_QUEUE_FULL and a Retry-After when the queue is full', async () => {
    const engine = new FakeEngine(undefined, { batchDelayMs: 50 });
    const b = new DynamicBatcher(engine, { ...opts, maxBatchSize: 1, maxQueueSize: 2 });
    const xs = samples(engine, 5);
    const settled = await Promise.allSettled(xs.map((x) => b.submit(x, dyn, 10_000)));
    const rejected = settled.filter((s) => s.status === 'rejected').map((s) => (s as PromiseRejectedResult).reason as DqError);
    expect(rejected.length).toBeGreaterThan(0);
    expect(rejected.every((e) => e.code === 'DQ_ERR_QUEUE_FULL' && e.retryAfterS === 2)).toBe(true);
  });

  it('times out a request that waits too long in the queue, and the batcher keeps working', async () => {
    const engine = new FakeEngine(undefined, { batchDelayMs: 100 });
    const b = new DynamicBatcher(engine, { ...opts, maxBatchSize: 1 });
    const xs = samples(engine, 3);
    const first = b.submit(xs[0]!, dyn, 1000);
    const late = b.submit(xs[1]!, dyn, 20);
    await expect(late).rejects.toMatchObject({ code: 'DQ_ERR_QUEUE_TIMEOUT' });
    await expect(first).resolves.toBeDefined();
    await expect(b.submit(xs[2]!, dyn, 1000)).resolves.toBeDefined();
  });

  it('drain finishes accepted work, then refuses new samples', async () => {
    const engine = new FakeEngine(undefined, { batchDelayMs: 30 });
    const b = new DynamicBatcher(engine, { ...opts, maxBatchSize: 2 });
    const xs = samples(engine, 5);
    const pending = xs.map((x) => b.submit(x, dyn, 10_000));
    await b.drain();
    const settled = await Promise.allSettled(pending);
    expect(settled.every((s) => s.status === 'fulfilled')).toBe(true);
    await expect(b.submit(xs[0]!, dyn, 1000)).rejects.toMatchObject({ code: 'DQ_ERR_SERVER_SHUTTING_DOWN' });
  });

  it('an engine failure rejects the batch with DQ_ERR_ENGINE_FAILED and does not stop the queue', async () => {
    const engine = new FakeEngine();
    let fail = true;
    const flaky = Object.assign(Object.create(engine) as FakeEngine, {
      infer: (...a: Parameters<FakeEngine['infer']>) => (fail ? ((fail = false), Promise.reject(new Error('boom'))) : engine.infer(...a)),
    });
    const b = new DynamicBatcher(flaky, { ...opts, maxBatchSize: 1 });
    const xs = samples(engine, 2);
    const [a, c] = await Promise.allSettled(xs.map((x) => b.submit(x, dyn, 1000)));
    expect(a?.status === 'rejected' && (a.reason as DqError).code).toBe('DQ_ERR_ENGINE_FAILED');
    expect(c?.status).toBe('fulfilled');
  });
});
