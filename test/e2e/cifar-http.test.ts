// The whole CIFAR-10 test set through the real HTTP server and the real bundle: accuracy and mean Bit-FLOPs
// must match the bundle's own metrics (PyTorch's evaluation of the same JPEGs), and, for a gated default, the
// share of images that took a second pass.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.js';
import { cifarTest } from '../helpers/cifar.js';
import { hasDynamicBundle, MODELS_DIR } from '../helpers/paths.js';
import { mapConcurrent, postImage, startTestServer } from '../helpers/server.js';

describe.skipIf(!hasDynamicBundle)('CIFAR-10 test set over HTTP (resnet20_dq)', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startTestServer({
      engine: 'ort',
      modelRepository: MODELS_DIR,
      model: 'resnet20_dq',
      maxBatchSize: 64,
      maxQueueSize: 4096,
      maxQueueDelayMicroseconds: 2000,
      requestTimeoutMs: 120_000,
    });
  }, 120_000);
  afterAll(async () => server?.close());

  it('scores within 0.3 points of metrics.top1 at its mean Bit-FLOPs, with batching in play', async () => {
    const images = await cifarTest();
    const pipeline = server.registry.get('resnet20_dq');
    const classes = pipeline.manifest.classes;
    const results = await mapConcurrent(images, 96, async (img) => {
      const r = await postImage(server.url, img.bytes, 'image/jpeg', '?top_k=1');
      if (r.status !== 200) throw new Error(`${img.key}: ${r.status} ${JSON.stringify(r.json)}`);
      return {
        correct: r.json.index === classes.indexOf(img.label),
        batch: r.json.batch_size as number,
        bitflops: r.json.bitflops as number,
        passes: r.json.passes as number,
      };
    });
    const top1 = results.filter((r) => r.correct).length / results.length;
    const expected = pipeline.manifest.metrics?.top1 as number;
    const meanBatch = results.reduce((s, r) => s + r.batch, 0) / results.length;
    console.log(`HTTP top-1 ${(top1 * 100).toFixed(2)}% vs bundle ${(expected * 100).toFixed(2)}% over ${results.length} images; mean batch ${meanBatch.toFixed(1)}`);
    expect(results).toHaveLength(10_000);
    expect(Math.abs(top1 - expected)).toBeLessThanOrEqual(0.003);
    expect(meanBatch).toBeGreaterThan(1);
    const metrics = pipeline.manifest.metrics as { bitflops_mean: number; second_pass_rate?: number };
    const meanBitflops = results.reduce((s, r) => s + r.bitflops, 0) / results.length;
    const second = results.filter((r) => r.passes === 2).length / results.length;
    console.log(`mean Bit-FLOPs ${meanBitflops.toExponential(4)} vs ${metrics.bitflops_mean.toExponential(4)}; second passes ${second} vs ${metrics.second_pass_rate ?? 0}`);
    expect(Math.abs(meanBitflops / metrics.bitflops_mean - 1)).toBeLessThan(0.002);
    expect(Math.abs(second - (metrics.second_pass_rate ?? 0))).toBeLessThanOrEqual(0.002);
  }, 300_000);
});
