// Readiness is 503 until every model is warm, and while its engine cannot run a batch (every worker
// restarting after a crash); classify answers DQ_ERR_MODEL_NOT_READY meanwhile. A lost GPU fails liveness too.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { FakeEngine } from '../../src/engine/fake-engine.js';
import { ModelPipeline } from '../../src/pipeline/model-pipeline.js';
import { ModelRegistry } from '../../src/pipeline/model-registry.js';
import type { FastifyInstance } from 'fastify';

const config = loadConfig({ engine: 'fake', logLevel: 'silent' }, { NODE_ENV: 'test' });
let app: FastifyInstance;
let pipeline: ModelPipeline;
const engine = new FakeEngine();

beforeAll(async () => {
  pipeline = new ModelPipeline(engine, { ...config, maxInputPixels: config.maxInputPixels });
  app = await buildApp(config, { registry: new ModelRegistry([pipeline]) });
});
afterAll(async () => app.close());

describe('readiness', () => {
  it('is 503 before warm-up and 200 after', async () => {
    let res = await app.inject({ method: 'GET', url: '/v2/health/ready' });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toMatchObject({ code: 'DQ_ERR_MODEL_NOT_READY' });
    expect(res.headers['retry-after']).toBe(String(config.retryAfterSeconds)); // every 503, probes included
    res = await app.inject({ method: 'GET', url: '/v2/models/fake_dq/ready' });
    expect(res.statusCode).toBe(503);
    expect(res.headers['retry-after']).toBe(String(config.retryAfterSeconds));
    res = await app.inject({ method: 'POST', url: '/v1/classify', headers: { 'content-type': 'image/png' }, payload: Buffer.from('x') });
    expect(res.json()).toMatchObject({ code: 'DQ_ERR_MODEL_NOT_READY' });
    expect((await app.inject({ method: 'GET', url: '/v2/health/live' })).statusCode).toBe(200);

    await pipeline.warmup(true);
    res = await app.inject({ method: 'GET', url: '/v2/health/ready' });
    expect(res.statusCode).toBe(200);
  });

  it('is 503 while the engine cannot run a batch, with Retry-After on classify', async () => {
    engine.healthy = false;
    try {
      expect((await app.inject({ method: 'GET', url: '/v2/health/ready' })).statusCode).toBe(503);
      const res = await app.inject({ method: 'POST', url: '/v1/classify', headers: { 'content-type': 'image/png' }, payload: Buffer.from('x') });
      expect(res.statusCode).toBe(503);
      expect(res.headers['retry-after']).toBe(String(config.retryAfterSeconds));
      expect(res.json()).toMatchObject({ code: 'DQ_ERR_MODEL_NOT_READY' });
    } finally {
      engine.healthy = true;
    }
    expect((await app.inject({ method: 'GET', url: '/v2/health/ready' })).statusCode).toBe(200);
  });

  it('a lost GPU fails liveness too (only a restart cures it), and inference gets a 503 to retry elsewhere', async () => {
    engine.lost = 'QLinearConv: unspecified launch failure';
    try {
      for (const url of ['/v2/health/live', '/v2/health/ready']) {
        const res = await app.inject({ method: 'GET', url });
        expect(res.statusCode).toBe(500);
        expect(res.json()).toEqual({ code: 'DQ_ERR_ENGINE_LOST', error: 'the GPU is lost to this process; the server must be restarted' });
      }
      const res = await app.inject({ method: 'POST', url: '/v1/classify', headers: { 'content-type': 'image/png' }, payload: Buffer.from('x') });
      expect(res.statusCode).toBe(503);
      expect(res.json()).toMatchObject({ code: 'DQ_ERR_MODEL_NOT_READY' });
      expect(res.headers['retry-after']).toBe(String(config.retryAfterSeconds));
    } finally {
      engine.lost = null;
    }
    expect((await app.inject({ method: 'GET', url: '/v2/health/live' })).statusCode).toBe(200);
  });
});
