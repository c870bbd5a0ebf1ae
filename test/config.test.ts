import { describe, expect, it } from 'vitest';
import { envName, flagName, loadConfig } from '../src/config.js';

describe('config', () => {
  it('has defaults, frozen', () => {
    const c = loadConfig();
    expect(c.host).toBe('127.0.0.1');
    expect(c.port).toBe(8080);
    expect(c.maxBatchSize).toBe(32);
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('environment overrides defaults and flags override the environment', () => {
    const env = { DQSERVE_PORT: '9000', DQSERVE_MAX_QUEUE_DELAY_MICROSECONDS: '500', DQSERVE_WARMUP: 'false' };
    expect(loadConfig({}, env)).toMatchObject({ port: 9000, maxQueueDelayMicroseconds: 500, warmup: false });
    expect(loadConfig({ port: '9001' }, env).port).toBe(9001);
  });

  it('refuses the fake engine (made-up answers) outside NODE_ENV=test, by flag or by environment', () => {
    for (const [flags, env] of [[{ engine: 'fake' }, {}], [{}, { DQSERVE_ENGINE: 'fake' }], [{ fakeEngineDelayMs: 5 }, { NODE_ENV: 'production' }]] as const) {
      expect(() => loadConfig(flags, env)).toThrow(expect.objectContaining({ code: 'DQ_ERR_CONFIG_INVALID', detail: expect.stringMatching(/test double/) }));
    }
    expect(loadConfig({ engine: 'fake' }, { NODE_ENV: 'test' }).engine).toBe('fake');
  });

  it('names settings consistently', () => {
    expect(envName('maxQueueDelayMicroseconds')).toBe('DQSERVE_MAX_QUEUE_DELAY_MICROSECONDS');
    expect(flagName('maxBatchSize')).toBe('--max-batch-size');
  });

  it('takes the Bit-FLOPs target and the Triton metrics switch from flags and environment', () => {
    expect(loadConfig().targetBitflops).toBeUndefined();
    expect(loadConfig({ targetBitflops: '1.2e9' }).targetBitflops).toBe(1.2e9);
    expect(loadConfig({}, { DQSERVE_TARGET_BITFLOPS: '5e8', DQSERVE_TRITON_METRICS: 'true' })).toMatchObject({ targetBitflops: 5e8, tritonMetrics: true });
    for (const bad of ['-1', '0', 'abc']) expect(() => loadConfig({ targetBitflops: bad })).toThrow(expect.objectContaining({ code: 'DQ_ERR_CONFIG_INVALID' }));
  });

  it('rejects invalid values with DQ_ERR_CONFIG_INVALID', () => {
    expect(() => loadConfig({ port: '99999' })).toThrow(expect.objectContaining({ code: 'DQ_ERR_CONFIG_INVALID' }));
    expect(() => loadConfig({}, { DQSERVE_MAX_BATCH_SIZE: 'lots' })).toThrow(expect.objectContaining({ code: 'DQ_ERR_CONFIG_INVALID' }));
    expect(() => loadConfig({ engine: 'gpu' })).toThrow(expect.objectContaining({ code: 'DQ_ERR_CONFIG_INVALID' }));
  });
});
