// GET /v2/models[/{m}[/versions/{v}]]/stats: Triton's statistics-extension shape plus Bit-FLOPs sums.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.js';
import { cifarSample } from '../helpers/cifar.js';
import { postImage, startTestServer } from '../helpers/server.js';

let server: RunningServer;
let url: string;

beforeAll(async () => {
  server = await startTestServer();
  url = server.url;
});
afterAll(async () => server.close());

const get = async (path: string) => {
  const res = await fetch(`${url}${path}`);
  return { status: res.status, json: (await res.json()) as any };
};

describe('statistics extension', () => {
  it('starts at zero, in Triton\'s shape', async () => {
    const r = await get('/v2/models/fake_dq/stats');
    expect(r.status).toBe(200);
    expect(r.json.model_stats).toHaveLength(1);
    const s = r.json.model_stats[0];
    expect(s).toMatchObject({ name: 'fake_dq', version: '1', inference_count: 0, execution_count: 0, last_inference: 0, batch_stats: [] });
    for (const k of ['success', 'fail', 'queue', 'compute_input', 'compute_infer', 'compute_output', 'cache_hit', 'cache_miss']) {
      expect(s.inference_stats[k]).toEqual({ count: 0, ns: 0 });
    }
    expect(s.dqserve).toEqual({ bitflops: 0, bitflops_reference: 0, savings: 0, mean_bitflops: 0, budget_lowered: 0, budget_below_minimum: 0, target: null });
  });

  it('counts requests, images, batches and sums Bit-FLOPs as the responses report them', async () => {
    const images = (await cifarSample(1)).map((i) => i.bytes);
    const before = Date.now();
    const answers = [];
    for (const img of images) answers.push((await postImage(url, img)).json);
    expect((await postImage(url, Buffer.from('nope'))).status).toBe(415);
    const r = await get('/v2/models/fake_dq/versions/1/stats');
    expect(r.status).toBe(200);
    const s = r.json.model_stats[0];
    expect(s.inference_count).toBe(10);
    expect(s.execution_count).toBe(10); // sequential requests: one image per batch
    expect(s.last_inference).toBeGreaterThanOrEqual(before);
    expect(s.inference_stats.success.count).toBe(10);
    expect(s.inference_stats.fail.count).toBe(1);
    for (const k of ['success', 'queue', 'compute_input', 'compute_infer', 'compute_output']) expect(s.inference_stats[k].count).toBe(10);
    expect(s.inference_stats.success.ns).toBeGreaterThan(0);
    // A request's parts never exceed its total.
    const parts = ['queue', 'compute_input', 'compute_infer', 'compute_output'].reduce((a, k) => a + s.inference_stats[k].ns, 0);
    expect(parts).toBeLessThanOrEqual(s.inference_stats.success.ns + 4 * 10);
    expect(s.batch_stats).toEqual([{ batch_size: 1, compute_input: { count: 10, ns: 0 }, compute_infer: s.batch_stats[0].compute_infer, compute_output: { count: 10, ns: 0 } }]);
    expect(s.batch_stats[0].compute_infer.count).toBe(10);
    const sum = answers.reduce((a, j) => a + j.bitflops, 0);
    const ref = answers.reduce((a, j) => a + j.bitflops_reference, 0);
    expect(s.dqserve.bitflops).toBe(sum);
    expect(s.dqserve.bitflops_reference).toBe(ref);
    expect(s.dqserve.savings).toBeCloseTo(1 - sum / ref, 12);
    expect(s.dqserve.mean_bitflops).toBeCloseTo(sum / 10, 3);
  });

  it('lists every model at /v2/models/stats; 404s for unknown models and versions', async () => {
    const all = await get('/v2/models/stats');
    expect(all.status).toBe(200);
    expect(all.json.model_stats.map((s: { name: string }) => s.name)).toEqual(['fake_dq']);
    expect((await get('/v2/models/nope/stats')).json.code).toBe('DQ_ERR_MODEL_NOT_FOUND');
    expect((await get('/v2/models/fake_dq/versions/9/stats')).json.code).toBe('DQ_ERR_MODEL_VERSION_NOT_FOUND');
    expect((await get('/v2')).json.extensions).toContain('statistics');
    const paths = (await get('/docs/json')).json.paths;
    expect(paths['/v2/models/stats'].get.parameters).toBeUndefined();
    expect(paths['/v2/models/{name}/versions/{version}/stats'].get.parameters.map((p: { name: string }) => p.name)).toEqual(['name', 'version']);
  });
});
