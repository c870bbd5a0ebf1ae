import { describe, expect, it } from 'vitest';
import { DynamicBatcher } from '../../src/batching/dynamic-batcher.js';
import { FakeEngine } from '../../src/engine/fake-engine.js';
import type { SampleOptions } from '../../src/engine/engine.js';
import { DqError } from '../../src/errors.js';

const opts = { maxBatchSize: 8, maxQueueDelayMicroseconds: 5000, maxQueueSize: 64, instanceCount: 1, retryAfterSeconds: 2 };
const dyn = { knob: 0, precision: null };

/** One single-image request. */
const one = (b: DynamicBatcher, x: Uint8Array, o: SampleOptions, timeoutMs: number, signal?: AbortSignal) =>
  b.submit([x], o, timeoutMs, signal).then(([r]) => r!);

/** An engine whose first batch fails with a plain Error, then works. */
function failingOnce(engine: FakeEngine): FakeEngine {
  let fail = true;
  return Object.assign(Object.create(engine) as FakeEngine, {
    infer: (...a: Parameters<FakeEngine['infer']>) => (fail ? ((fail = false), Promise.reject(new Error('boom'))) : engine.infer(...a)),
  });
}

function samples(engine: FakeEngine, n: number): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => Uint8Array.from({ length: engine.sampleSize }, (_, j) => 128 + Math.round(127 * Math.sin(i * 31 + j))));
}

describe('DynamicBatcher', () => {
  it('forms batches up to maxBatchSize and gives each sample its own result', async () => {
    const engine = new FakeEngine();
    const b = new DynamicBatcher(engine, opts);
    const xs = samples(engine, 20);
    const results = await Promise.all(xs.map((x) => one(b, x, dyn, 10_000)));
    expect(engine.batches).toEqual([8, 8, 4]);
    expect(results.map((r) => r.batchSize)).toEqual([...Array(16).fill(8), 4, 4, 4, 4]);
  });

  it('batched results equal unbatched ones', async () => {
    const engine = new FakeEngine();
    const xs = samples(engine, 12);
    const batched = await Promise.all(xs.map((x) => one(new DynamicBatcher(engine, opts), x, dyn, 10_000)));
    const single = new DynamicBatcher(engine, { ...opts, maxBatchSize: 1 });
    for (const [i, x] of xs.entries()) {
      const r = await one(single, x, dyn, 10_000);
      expect(Array.from(r.sample.logits)).toEqual(Array.from(batched[i]!.sample.logits));
      expect(r.sample.bits).toEqual(batched[i]!.sample.bits);
    }
  });

  it('runs up to instanceCount batches at once', async () => {
    const engine = new FakeEngine(undefined, { batchDelayMs: 100 });
    const b = new DynamicBatcher(engine, { ...opts, maxBatchSize: 2, instanceCount: 2 });
    await Promise.all(samples(engine, 4).map((x) => one(b, x, dyn, 10_000)));
    expect(engine.batches).toEqual([2, 2]);
    expect(engine.maxConcurrent).toBe(2); // both batches ran at once (no wall-clock assertion: CI is noisy)
  });

  it('a backlog fills every free instance at once, also while draining', async () => {
    const engine = new FakeEngine(undefined, { batchDelayMs: 50 });
    const b = new DynamicBatcher(engine, { ...opts, maxBatchSize: 2, instanceCount: 3 });
    const request = b.submit(samples(engine, 6), dyn, 10_000); // one request, three full batches
    await b.drain();
    await request;
    expect(engine.batches).toEqual([2, 2, 2]);
    expect(engine.maxConcurrent).toBe(3);
  });

  it('a partial batch left after full ones starts at once on a free instance', async () => {
    const engine = new FakeEngine(undefined, { batchDelayMs: 300 });
    const b = new DynamicBatcher(engine, { ...opts, maxBatchSize: 4, instanceCount: 3 });
    const results = await b.submit(samples(engine, 6), dyn, 10_000);
    expect(engine.batches).toEqual([4, 2]);
    expect(engine.maxConcurrent).toBe(2); // the 2 did not wait for the 4 to finish
    expect(Math.max(...results.map((r) => r.queueMs))).toBeLessThan(200);
  });

  it('mixes per-sample options in one batch', async () => {
    const engine = new FakeEngine();
    const b = new DynamicBatcher(engine, opts);
    const [x] = samples(engine, 1);
    const [r3, r5] = await Promise.all([one(b, x!, { knob: 0, precision: 3 }, 1000), one(b, x!, { knob: 0, precision: 5 }, 1000)]);
    expect(r3.batchSize).toBe(2);
    expect(r3.sample.bits.every((v) => v === 3)).toBe(true);
    expect(r5.sample.bits.every((v) => v === 5)).toBe(true);
  });

  it('rejects with DQ_ERR_QUEUE_FULL and a Retry-After when the queue is full', async () => {
    const engine = new FakeEngine(undefined, { batchDelayMs: 50 });
    const b = new DynamicBatcher(engine, { ...opts, maxBatchSize: 1, maxQueueSize: 2 });
    const xs = samples(engine, 5);
    const settled = await Promise.allSettled(xs.map((x) => one(b, x, dyn, 10_000)));
    const rejected = settled.filter((s) => s.status === 'rejected').map((s) => (s as PromiseRejectedResult).reason as DqError);
    expect(rejected.length).toBeGreaterThan(0);
    expect(rejected.every((e) => e.code === 'DQ_ERR_QUEUE_FULL' && e.retryAfterS === 2)).toBe(true);
  });

  it('times out a request that waits too long in the queue, and the batcher keeps working', async () => {
    const engine = new FakeEngine(undefined, { batchDelayMs: 100 });
    const b = new DynamicBatcher(engine, { ...opts, maxBatchSize: 1 });
    const xs = samples(engine, 3);
    const first = one(b, xs[0]!, dyn, 1000);
    const late = one(b, xs[1]!, dyn, 20);
    await expect(late).rejects.toMatchObject({ code: 'DQ_ERR_QUEUE_TIMEOUT' });
    // the others get their own answers: the same logits and bits as each image run alone
    const alone = async (x: Uint8Array) => (await engine.infer(x, 1, [dyn])).samples[0]!;
    for (const [r, x] of [[await first, xs[0]!], [await one(b, xs[2]!, dyn, 1000), xs[2]!]] as const) {
      const a = await alone(x);
      expect([Array.from(r.sample.logits), r.sample.bits]).toEqual([Array.from(a.logits), a.bits]);
    }
  });

  it('admit holds queue room during decoding: a request that will not fit is refused before it is decoded', async () => {
    const engine = new FakeEngine();
    const b = new DynamicBatcher(engine, { ...opts, maxQueueSize: 4 });
    const decoding = b.admit(3);
    expect(() => b.admit(2)).toThrow(expect.objectContaining({ code: 'DQ_ERR_QUEUE_FULL', retryAfterS: 2, detail: expect.stringContaining('3 being decoded') }));
    const small = b.admit(1);
    small.cancel();
    small.cancel(); // releasing twice frees the room once
    const xs = samples(engine, 3);
    const answers = await decoding.submit(xs, dyn, 1000);
    expect(answers).toHaveLength(3);
    b.admit(4).cancel(); // all the room is back
    await b.drain();
    expect(() => b.admit(1)).toThrow(expect.objectContaining({ code: 'DQ_ERR_SERVER_SHUTTING_DOWN' }));
  });

  it('drain finishes accepted work, then refuses new samples', async () => {
    const engine = new FakeEngine(undefined, { batchDelayMs: 30 });
    const b = new DynamicBatcher(engine, { ...opts, maxBatchSize: 2 });
    const xs = samples(engine, 5);
    const pending = xs.map((x) => one(b, x, dyn, 10_000));
    await b.drain();
    const settled = await Promise.allSettled(pending);
    expect(settled.every((s) => s.status === 'fulfilled')).toBe(true);
    await expect(one(b, xs[0]!, dyn, 1000)).rejects.toMatchObject({ code: 'DQ_ERR_SERVER_SHUTTING_DOWN' });
  });

  it("admits a request's images all or none", async () => {
    const engine = new FakeEngine(undefined, { batchDelayMs: 50 });
    const waits: number[] = [];
    const b = new DynamicBatcher(engine, { ...opts, maxBatchSize: 1, maxQueueSize: 5, onQueueWait: (ms) => waits.push(ms) });
    const first = b.submit(samples(engine, 4), dyn, 10_000); // 1 runs at once, 3 wait
    await expect(b.submit(samples(engine, 3), dyn, 10_000)).rejects.toMatchObject({ code: 'DQ_ERR_QUEUE_FULL' });
    expect(b.pending).toBe(3); // nothing of the refused request was queued
    await expect(b.submit(samples(engine, 2), dyn, 10_000)).resolves.toHaveLength(2);
    expect((await first).map((r) => r.batchSize)).toEqual([1, 1, 1, 1]);
    expect(engine.batches).toEqual([1, 1, 1, 1, 1, 1]);
    expect(waits).toHaveLength(6); // every image reported its wait once
  });

  it('a timeout withdraws the rest of the request, and its queue waits are reported', async () => {
    const engine = new FakeEngine(undefined, { batchDelayMs: 100 });
    const waits: number[] = [];
    const b = new DynamicBatcher(engine, { ...opts, maxBatchSize: 2, onQueueWait: (ms) => waits.push(ms) });
    const busy = one(b, samples(engine, 1)[0]!, dyn, 10_000);
    await new Promise((r) => setTimeout(r, 10)); // the first batch is running
    const late = b.submit(samples(engine, 4), dyn, 30);
    await expect(late).rejects.toMatchObject({ code: 'DQ_ERR_QUEUE_TIMEOUT' });
    expect(b.pending).toBe(0); // none of its 4 images is left to run for nobody
    await busy;
    expect(engine.batches).toEqual([1]);
    expect(waits).toHaveLength(5);
    expect(Math.min(...waits.slice(1))).toBeGreaterThanOrEqual(25); // the timed-out ones waited ~30 ms
  });

  it('a client that leaves withdraws its queued images with DQ_ERR_CLIENT_DISCONNECTED', async () => {
    const engine = new FakeEngine(undefined, { batchDelayMs: 100 });
    const b = new DynamicBatcher(engine, { ...opts, maxBatchSize: 1 });
    const xs = samples(engine, 3);
    const running = new AbortController();
    const queued = new AbortController();
    const a = one(b, xs[0]!, dyn, 10_000, running.signal);
    const c = b.submit([xs[1]!, xs[2]!], dyn, 10_000, queued.signal);
    await new Promise((r) => setTimeout(r, 10));
    queued.abort();
    running.abort(); // already running: the engine finishes the batch, the answer is dropped
    await expect(c).rejects.toMatchObject({ code: 'DQ_ERR_CLIENT_DISCONNECTED' });
    await expect(a).rejects.toMatchObject({ code: 'DQ_ERR_CLIENT_DISCONNECTED' });
    await b.drain();
    expect(engine.batches).toEqual([1]);
    await expect(one(new DynamicBatcher(engine, opts), xs[0]!, dyn, 1000, AbortSignal.abort())).rejects.toMatchObject({ code: 'DQ_ERR_CLIENT_DISCONNECTED' });
  });

  it('an engine failure fails the whole request: its images still queued do not run', async () => {
    const engine = new FakeEngine();
    const flaky = failingOnce(engine);
    const b = new DynamicBatcher(flaky, { ...opts, maxBatchSize: 1 });
    await expect(b.submit(samples(engine, 4), dyn, 1000)).rejects.toMatchObject({ code: 'DQ_ERR_ENGINE_FAILED' });
    await b.drain();
    expect(engine.batches).toEqual([]); // the three others never reached the engine
  });

  it('a 503 from the engine (no worker left) carries the Retry-After', async () => {
    const engine = new FakeEngine();
    const down = Object.assign(Object.create(engine) as FakeEngine, { infer: () => Promise.reject(new DqError('DQ_ERR_MODEL_NOT_READY', 'restarting')) });
    const b = new DynamicBatcher(down, opts);
    await expect(one(b, samples(engine, 1)[0]!, dyn, 1000)).rejects.toMatchObject({ code: 'DQ_ERR_MODEL_NOT_READY', retryAfterS: 2 });
  });

  it('an engine failure rejects the batch with DQ_ERR_ENGINE_FAILED and does not stop the queue', async () => {
    const engine = new FakeEngine();
    const flaky = failingOnce(engine);
    const b = new DynamicBatcher(flaky, { ...opts, maxBatchSize: 1 });
    const xs = samples(engine, 2);
    const [a, c] = await Promise.allSettled(xs.map((x) => one(b, x, dyn, 1000)));
    expect(a?.status === 'rejected' && (a.reason as DqError).code).toBe('DQ_ERR_ENGINE_FAILED');
    expect(c?.status).toBe('fulfilled');
  });
});
