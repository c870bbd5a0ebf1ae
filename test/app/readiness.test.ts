// Readiness is 503 until every model is warm; classify answers DQ_ERR_MODEL_NOT_READY meanwhile.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { FakeEngine } from '../../src/engine/fake-engine.js';
import { ModelPipeline } from '../../src/pipeline/model-pipeline.js';
import { ModelRegistry } from '../../src/pipeline/model-registry.js';
import type { FastifyInstance } from 'fastify';

const config = loadConfig({ engine: 'fake', logLevel: 'silent' });
let app: FastifyInstance;
let pipeline: ModelPipeline;

beforeAll(async () => {
  pipeline = new ModelPipeline(new FakeEngine(), { ...config, maxInputPixels: config.maxInputPixels });
  app = await buildApp(config, { registry: new ModelRegistry([pipeline]) });
});
afterAll(async () => app.close());

describe('readiness', () => {
  it('is 503 before warm-up and 200 after', async () => {
    let res = await app.inject({ method: 'GET', url: '/v2/health/ready' });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toMatchObject({ code: 'DQ_ERR_MODEL_NOT_READY' });
    res = await app.inject({ method: 'GET', url: '/v2/models/fake_dq/ready' });
    expect(res.statusCode).toBe(503);
    res = await app.inject({ method: 'POST', url: '/v1/classify', headers: { 'content-type': 'image/png' }, payload: Buffer.from('x') });
    expect(res.json()).toMatchObject({ code: 'DQ_ERR_MODEL_NOT_READY' });
    expect((await app.inject({ method: 'GET', url: '/v2/health/live' })).statusCode).toBe(200);

    await pipeline.warmup(true);
    res = await app.inject({ method: 'GET', url: '/v2/health/ready' });
    expect(res.statusCode).toBe(200);
  });
});
