// A gated bundle through the pipeline (fake engine, real CIFAR JPEGs): both passes counted in Bit-FLOPs, a forced
// precision is one pass, and a Bit-FLOPs cap leaves out a second pass it cannot pay for.
import { beforeAll, describe, expect, it } from 'vitest';
import { FakeEngine } from '../../src/engine/fake-engine.js';
import { fakeManifest } from '../../src/engine/fake-manifest.js';
import { confidence } from '../../src/engine/gate.js';
import { ModelPipeline, type ClassifyOptions } from '../../src/pipeline/model-pipeline.js';
import type { Manifest } from '../../src/repository/manifest.js';
import { cifarSample } from '../helpers/cifar.js';

async function pipeline(m: Manifest): Promise<ModelPipeline> {
  const p = new ModelPipeline(new FakeEngine(m), { maxBatchSize: 8, maxQueueDelayMicroseconds: 0, maxQueueSize: 64, instanceCount: 1, retryAfterSeconds: 1, maxInputPixels: 1e6 });
  await p.warmup(true);
  return p;
}
const opts: ClassifyOptions = { knob: null, precision: null, topK: 1, timeoutMs: 10_000 };

describe('a gated bundle in the pipeline', () => {
  let images: Buffer[];
  let gated: ModelPipeline;
  beforeAll(async () => {
    images = (await cifarSample(2)).map((i) => i.bytes as Buffer);
    // the threshold at the median confidence of pass 1 (all 3 bits): about half the images take pass 2
    const plain = await (await pipeline(fakeManifest())).classify(images, { ...opts, precision: 3 });
    const conf = plain.map((r) => confidence(r.logits)).sort((a, b) => a - b);
    gated = await pipeline({ ...fakeManifest(), policy: { kind: 'gated', first_bits: 3, second_bits: 5, threshold: conf[conf.length >> 1] as number } });
  });

  it('counts the dynamic layers once per pass and the fixed part once', async () => {
    const out = await gated.classify(images, opts);
    const cost = gated.cost;
    const at = (b: number) => cost.bitflops(gated.dynamicLayers.map(() => b));
    const twice = out.filter((r) => r.secondBits !== null);
    expect(twice.length).toBeGreaterThan(0);
    expect(twice.length).toBeLessThan(out.length);
    for (const r of out) {
      expect(r.bits.every((b) => b === 3)).toBe(true);
      expect(r.bitflops).toBe(r.secondBits ? at(3) + at(5) - cost.fixed : at(3));
      if (r.secondBits) expect(r.secondBits.every((b) => b === 5)).toBe(true);
    }
  });

  it('a forced precision runs one pass', async () => {
    const out = await gated.classify(images, { ...opts, precision: 4 });
    expect(out.every((r) => r.secondBits === null && r.bits.every((b) => b === 4))).toBe(true);
  });

  it('a cap that pays for pass 1 only leaves pass 2 out and says so', async () => {
    const at3 = gated.cost.bitflops(gated.dynamicLayers.map(() => 3));
    const out = await gated.classify(images, { ...opts, maxBitflops: at3 });
    expect(out.every((r) => r.secondBits === null && r.bitflops <= at3)).toBe(true);
    expect(out.some((r) => r.budgetLowered)).toBe(true);
  });
});
