// GET /metrics against a real server: a known set of requests, then the scrape must show exactly their
// counts, and dqserve_bitflops_total must equal the sum of the responses' bitflops.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.js';
import { cifarSample } from '../helpers/cifar.js';
import { PHOTOS_DIR } from '../helpers/paths.js';
import { mapConcurrent, postImage, startTestServer, TEST_ENGINES } from '../helpers/server.js';
import { scrape, value } from './scrape.js';

describe.each(TEST_ENGINES)('GET /metrics (%s engine)', (_engine, overrides) => {
  let server: RunningServer;
  let url: string;
  let model: { model: string; version: string };
  const responses: Array<{ bitflops: number; bitflops_reference: number; bits: Record<string, number> }> = [];
  let oipBitflops = 0;
  let oipReference = 0;

  beforeAll(async () => {
    server = await startTestServer({ ...overrides, tritonMetrics: true });
    url = server.url;
    const p = server.registry.get();
    model = { model: p.name, version: String(p.version) };
    // Known traffic: 20 CIFAR JPEGs + 2 photos on /v1, one OIP request of 3 images, and 3 failures.
    const cifar = (await cifarSample(2)).map((i) => i.bytes);
    const photos = ['rocket.jpg', 'chelsea.png'].map((f) => readFileSync(join(PHOTOS_DIR, f)));
    const ok = await mapConcurrent([...cifar, ...photos], 4, (img) => postImage(url, img, 'image/jpeg'));
    for (const r of ok) {
      expect(r.status).toBe(200);
      responses.push(r.json);
    }
    const oip = await fetch(`${url}/v2/models/${model.model}/infer`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ inputs: [{ name: 'image', shape: [3], datatype: 'BYTES', data: cifar.slice(0, 3).map((b) => b.toString('base64')) }], outputs: [{ name: 'bits' }] }),
    });
    expect(oip.status).toBe(200);
    const oj = (await oip.json()) as { parameters: { dqserve_bitflops: number; dqserve_bitflops_reference: number } };
    oipBitflops = oj.parameters.dqserve_bitflops;
    oipReference = oj.parameters.dqserve_bitflops_reference;
    expect((await postImage(url, cifar[0] as Buffer, 'image/jpeg', '?precision=7')).status).toBe(400);
    expect((await postImage(url, Buffer.from('not an image at all'), 'image/jpeg')).status).toBe(415);
    expect((await postImage(url, (cifar[1] as Buffer).subarray(0, 200), 'image/jpeg')).status).toBe(400);
  });
  afterAll(async () => server?.close());

  it('serves the Prometheus text format with process and Node defaults', async () => {
    const res = await fetch(`${url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) {
      expect(text).toContain(`\n${name} `);
    }
    // Labels: model and version only, plus the bounded ones.
    const allowed = new Set(['model', 'version', 'outcome', 'reason', 'phase', 'layer', 'bits', 'event', 'le']);
    expect(text).toContain('http_request_duration_seconds_bucket{');
    const samples = await scrape(url);
    for (const s of samples.filter((s) => s.name.startsWith('dqserve_') || s.name.startsWith('nv_'))) {
      for (const k of Object.keys(s.labels)) expect(allowed.has(k), `${s.name} has label ${k}`).toBe(true);
    }
  });

  it('counts requests by outcome and reason, and images', async () => {
    const s = await scrape(url);
    expect(value(s, 'dqserve_requests_total', { ...model, outcome: 'success' })).toBe(23);
    expect(value(s, 'dqserve_requests_total', { ...model, outcome: 'failure' })).toBe(3);
    expect(value(s, 'dqserve_requests_total', { ...model, reason: 'DQ_ERR_REQUEST_INVALID_PARAMETER' })).toBe(1);
    expect(value(s, 'dqserve_requests_total', { ...model, reason: 'DQ_ERR_PREPROCESS_UNSUPPORTED_FORMAT' })).toBe(1);
    expect(value(s, 'dqserve_requests_total', { ...model, reason: 'DQ_ERR_PREPROCESS_DECODE_FAILED' })).toBe(1);
    expect(value(s, 'dqserve_inferences_total', model)).toBe(25);
    expect(value(s, 'dqserve_request_duration_seconds_count', model)).toBe(23);
    expect(value(s, 'dqserve_queue_duration_seconds_count', model)).toBe(25);
    expect(value(s, 'dqserve_phase_duration_seconds_count', { ...model, phase: 'preprocess' })).toBe(23);
    // Every image ran in exactly one batch.
    expect(value(s, 'dqserve_batch_size_sum', model)).toBe(25);
    expect(value(s, 'dqserve_batch_size_count', model)).toBe(value(s, 'dqserve_phase_duration_seconds_count', { ...model, phase: 'layers' }));
    expect(value(s, 'dqserve_pending_requests', model)).toBe(0);
    // present at 0 from the start, so that alerting on its increase sees the first restart
    expect(s.some((x) => x.name === 'dqserve_engine_restarts_total' && x.labels['model'] === model.model && x.value === 0)).toBe(true);
    // HTTP: by route pattern, never the URL.
    expect(value(s, 'http_request_duration_seconds_count', { method: 'POST', route: '/v1/classify', status_code: '200' })).toBe(22);
    expect(value(s, 'http_request_duration_seconds_count', { method: 'POST', route: '/v2/models/:name/infer', status_code: '200' })).toBe(1);
    expect(value(s, 'http_request_duration_seconds_count', { route: '/v1/classify', status_code: '415' })).toBe(1);
    // Triton-compatible names (--triton-metrics).
    expect(value(s, 'nv_inference_request_success', model)).toBe(23);
    expect(value(s, 'nv_inference_request_failure', model)).toBe(3);
    expect(value(s, 'nv_inference_count', model)).toBe(25);
    expect(value(s, 'nv_inference_exec_count', model)).toBe(value(s, 'dqserve_batch_size_count', model));
  });

  it('sums Bit-FLOPs exactly as the responses report them', async () => {
    const s = await scrape(url);
    const sum = responses.reduce((a, r) => a + r.bitflops, 0) + oipBitflops;
    const ref = responses.reduce((a, r) => a + r.bitflops_reference, 0) + oipReference;
    expect(value(s, 'dqserve_bitflops_total', model)).toBeCloseTo(sum, -1);
    expect(value(s, 'dqserve_bitflops_total', model) / sum).toBeCloseTo(1, 12);
    expect(value(s, 'dqserve_bitflops_reference_total', model) / ref).toBeCloseTo(1, 12);
    expect(value(s, 'dqserve_image_bitflops_count', model)).toBe(25);
    expect(value(s, 'dqserve_image_bitflops_sum', model) / sum).toBeCloseTo(1, 12);
    expect(value(s, 'dqserve_image_mean_bits_count', model)).toBe(25);
    expect(value(s, 'dqserve_bitflops_savings_ratio', model)).toBeCloseTo(1 - sum / ref, 9);
  });

  it('counts chosen bits per layer (layer × bits), one per image and layer', async () => {
    const s = await scrape(url);
    const layers = server.registry.get().dynamicLayers;
    expect(value(s, 'dqserve_layer_bits_total', model)).toBe(25 * layers.length);
    const layer = layers[0] as string;
    for (const b of [3, 4, 5]) {
      const fromResponses = responses.filter((r) => r.bits[layer] === b).length;
      expect(value(s, 'dqserve_layer_bits_total', { ...model, layer, bits: String(b) })).toBeGreaterThanOrEqual(fromResponses);
    }
    const labelled = new Set(s.filter((x) => x.name === 'dqserve_layer_bits_total').map((x) => x.labels['layer']));
    expect([...labelled].every((l) => layers.includes(l as string))).toBe(true);
  });
});
