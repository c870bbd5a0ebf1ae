// The budget file's schema and the check's arithmetic (loadtest/budget.ts), the payload mix and OIP bodies
// (loadtest/payloads.ts, read back with the server's own OIP decoder), and cost parsing (loadtest/recorder.ts).
import { describe, expect, it } from 'vitest';
import { BudgetFileError, checkBudget, goodputLimits, parseBudget, type Measured } from '../../loadtest/budget.js';
import { bodySequence, multipartBody, oipBinaryBody, oipJsonBody } from '../../loadtest/payloads.js';
import { parseCost, StepRecorder } from '../../loadtest/recorder.js';
import { decodeInferRequest, splitBinaryBody } from '../../src/protocol/oip-infer.js';
import type { InferRequest } from '../../src/protocol/oip-schemas.js';
import { binarySearch, stabilityCheck } from '../../loadtest/run.js';
import { stability } from '../../loadtest/recorder.js';

const measured: Measured = { latencyMs: { p50: 10, p95: 40, p99: 80 }, throughputRps: 200, errorRate: 0.02, meanBitflops: 1.2e9, savings: 0.05, goodputRps: 150 };

/** A step's figures from a recorder fed `ok` answers at `okMs`, then the given failures (request timeout 10 s). */
function step(ok: number, okMs: number, failures: { status?: number; timeout?: boolean; ms?: number }[]): Measured {
  const rec = new StepRecorder({ maxLatencyMs: null, maxBitflops: null }, 10, 10_000);
  for (let i = 0; i < ok; i++) rec.response(200, null, okMs);
  for (const f of failures) {
    if (f.status !== undefined) rec.response(f.status, null, f.ms ?? 1);
    else rec.failure(f.timeout ?? false);
  }
  const r = rec.result({ connections: 1, offeredRps: null }, null);
  return { latencyMs: r.latencyMs, throughputRps: r.throughputRps, errorRate: r.errorRate, meanBitflops: r.bitflops.mean, savings: r.savings, goodputRps: r.goodputRps };
}

describe('a budget cannot pass while it is violated', () => {
  it('two timeouts in a hundred answers put p99 at the timeout', () => {
    const checks = checkBudget({ latencyMs: { p99: 50 }, maxErrorRate: 0.02 }, step(98, 10, [{ timeout: true }, { timeout: true }]));
    expect(checks.find((c) => c.name === 'latency p99')).toMatchObject({ ok: false });
    expect(checks.find((c) => c.name === 'error rate')).toMatchObject({ ok: true });
  });

  it('fast 503s count as failures at the timeout, not as quick answers', () => {
    const m = step(10, 10, Array.from({ length: 90 }, () => ({ status: 503, ms: 1 })));
    expect(m.latencyMs.p50).toBeGreaterThanOrEqual(10_000);
    expect(checkBudget({ latencyMs: { p50: 50 } }, m)[0]).toMatchObject({ ok: false });
  });

  it('--fail-unstable turns an unstable step into a missed budget (a step too short to judge passes)', () => {
    const w = (okPerS: number, meanMs: number | null) => ({ okPerS, meanMs, p99Ms: meanMs });
    const steady = stabilityCheck(stability([w(100, 10), w(100, 10), w(101, 10), w(99, 10)], 4, 0.1));
    const drifting = stabilityCheck(stability([w(100, 10), w(100, 10), w(60, 30), w(30, 80)], 4, 0.1));
    const silent = stabilityCheck(stability([w(100, 10), w(100, 10), w(0, null), w(100, 10)], 4, 0.1));
    expect([steady.ok, drifting.ok, silent.ok]).toEqual([true, false, false]);
    expect(drifting.by).toMatch(/points over/);
    expect(stabilityCheck(stability([w(100, 10)], 1, 0.1)).ok).toBe(true);
  });

  it('socket errors count too; a clean run keeps its own latencies', () => {
    expect(step(98, 10, [{ timeout: false }, { timeout: false }]).latencyMs.p99).toBeGreaterThanOrEqual(10_000);
    const clean = step(100, 10, []);
    expect(clean.latencyMs.p50).toBeCloseTo(10, 1); // the histogram's resolution
    expect(clean.latencyMs.p99).toBeCloseTo(10, 1);
  });
});

describe('budget', () => {
  it('accepts every documented limit', () => {
    const b = parseBudget('{"latencyMs":{"p50":20,"p95":50,"p99":100},"minThroughputRps":100,"maxErrorRate":0.01,"maxMeanBitflops":1.1e9,"minSavings":0.1,"minGoodputRps":120,"goodput":{"maxLatencyMs":60,"maxBitflops":1.3e9}}', 'b.json');
    expect(b.latencyMs?.p95).toBe(50);
  });

  it('refuses a budget that sets no limit: it would pass any run', () => {
    for (const text of ['{}', '{"description":"x"}', '{"latencyMs":{}}', '{"goodput":{"maxLatencyMs":10}}']) {
      expect(() => parseBudget(text, 'b.json')).toThrow(/^b\.json: sets no limit/);
    }
  });

  it('names the file, the path and the problem on one line', () => {
    expect(() => parseBudget('{"maxErrorRate": 2}', 'b.json')).toThrow(new BudgetFileError('b.json: /maxErrorRate: Expected number to be less or equal to 1'));
    expect(() => parseBudget('[]', 'b.json')).toThrow(/^b\.json: \/: Expected object$/);
  });

  it('reports each missed limit with the signed difference and its share of the limit', () => {
    const checks = checkBudget({ latencyMs: { p50: 20, p95: 50, p99: 40 }, minThroughputRps: 400, maxErrorRate: 0.01, maxMeanBitflops: 1e9, minSavings: 0.1, minGoodputRps: 100 }, measured);
    const failed = Object.fromEntries(checks.filter((c) => !c.ok).map((c) => [c.name, c.by]));
    expect(failed).toEqual({
      'latency p99': '+40.00 ms (+100.0%)',
      throughput: '-200 req/s (-50.0%)',
      'error rate': '+0.01 (+100.0%)',
      'mean Bit-FLOPs': '+2.000e+8 (+20.0%)',
      savings: '-0.05 (-50.0%)',
    });
    expect(checks.filter((c) => c.ok).map((c) => c.name)).toEqual(['latency p50', 'latency p95', 'goodput']);
  });

  it('fails a cost limit that could not be measured (no successful response)', () => {
    const [c] = checkBudget({ maxMeanBitflops: 1e9 }, { ...measured, meanBitflops: null });
    expect(c).toMatchObject({ ok: false, by: 'not measured' });
    const [l] = checkBudget({ latencyMs: { p99: 100 } }, { ...measured, latencyMs: { p50: null, p95: null, p99: null } });
    expect(l).toMatchObject({ name: 'latency p99', ok: false, by: 'not measured' });
  });

  it('defines goodput by the tightest latency limit and the mean Bit-FLOPs limit unless told otherwise', () => {
    expect(goodputLimits({ latencyMs: { p95: 50, p99: 100 }, maxMeanBitflops: 1e9 })).toEqual({ maxLatencyMs: 50, maxBitflops: 1e9 });
    expect(goodputLimits({ latencyMs: { p95: 50 }, goodput: { maxLatencyMs: 70, maxBitflops: 2e9 } })).toEqual({ maxLatencyMs: 70, maxBitflops: 2e9 });
    expect(goodputLimits({})).toEqual({ maxLatencyMs: null, maxBitflops: null });
  });
});

describe('payload mix', () => {
  const payloads = [{ name: 'a/1.jpg', contentType: 'image/jpeg', bytes: Buffer.from([0xff, 0xd8, 0x00, 0xff]) }, { name: 'b.png', contentType: 'image/png', bytes: Buffer.from([0x89, 0x50]) }];

  it('sends the multipart share evenly, cycling through the payloads', () => {
    const next = bodySequence(payloads, 0.25);
    const kinds = Array.from({ length: 8 }, (_, i) => next(i).headers['content-type']!.split(';')[0]);
    expect(kinds).toEqual(['image/jpeg', 'image/png', 'image/jpeg', 'multipart/form-data', 'image/jpeg', 'image/png', 'image/jpeg', 'multipart/form-data']);
    expect(bodySequence(payloads, 0)(5).body).toBe(payloads[1]!.bytes);
    expect(Array.from({ length: 4 }, (_, i) => bodySequence(payloads, 1)(i).headers['content-type']!.startsWith('multipart/'))).toEqual([true, true, true, true]);
  });

  it('builds OIP infer requests that the server decodes back to the same image, JSON and binary alike', () => {
    const img = payloads[0]!;
    const json = oipJsonBody(img);
    expect(json.headers['content-type']).toBe('application/json');
    expect(decodeInferRequest(JSON.parse(json.body.toString()) as InferRequest, Buffer.alloc(0), 1).images).toEqual([img.bytes]);
    const bin = oipBinaryBody(img);
    const split = splitBinaryBody(bin.body, Number(bin.headers['inference-header-content-length']));
    expect(decodeInferRequest(JSON.parse(split.json.toString()) as InferRequest, split.binary, 1).images).toEqual([img.bytes]);
    // the OIP mix: the binary share evenly spread, as multipart for v1
    const kinds = Array.from({ length: 4 }, (_, i) => bodySequence(payloads, 0.5, 'oip')(i).headers['content-type']);
    expect(kinds).toEqual(['application/json', 'application/octet-stream', 'application/json', 'application/octet-stream']);
  });

  it('reads the Bit-FLOPs of either protocol\'s answer, and none from a failure', () => {
    expect(parseCost(200, '{"label":"cat","bitflops":1.1e9,"bitflops_reference":1.2e9}')).toEqual({ bitflops: 1.1e9, reference: 1.2e9 });
    expect(parseCost(200, '{"model_name":"m","outputs":[],"parameters":{"dqserve_bitflops":9e8,"dqserve_bitflops_reference":1e9}}')).toEqual({ bitflops: 9e8, reference: 1e9 });
    expect(parseCost(400, '{"bitflops":1}')).toBeNull();
    expect(parseCost(200, 'not json')).toBeNull();
  });

  it('puts the binary image unchanged in the field `image`', () => {
    const { headers, body } = multipartBody(payloads[0]!);
    const boundary = /boundary=(.+)$/.exec(headers['content-type']!)![1]!;
    const text = body.toString('latin1');
    expect(text).toContain('Content-Disposition: form-data; name="image"; filename="a_1.jpg"\r\nContent-Type: image/jpeg\r\n\r\n');
    expect(body.indexOf(payloads[0]!.bytes)).toBeGreaterThan(0);
    expect(text.endsWith(`\r\n--${boundary}--\r\n`)).toBe(true);
  });
});

describe('binary search', () => {
  it('finds the highest load that meets a monotone budget in few steps', async () => {
    for (const [lo, hi, limit, expected] of [[1, 64, 37, 37], [1, 64, 64, 64], [1, 64, 0, null], [4, 4, 10, 4], [1, 1024, 1, 1]] as const) {
      const tried: number[] = [];
      const got = await binarySearch(lo, hi, async (n) => (tried.push(n), n <= limit));
      expect(got).toBe(expected);
      expect(tried.length).toBeLessThanOrEqual(2 + Math.ceil(Math.log2(hi - lo + 1)));
    }
  });

  it('bisects rates on 0.1 steps to 1/32 of the range in at most 7 steps, also between fractional bounds', async () => {
    for (const [lo, hi, limit] of [[50, 800, 50], [50, 800, 51], [50, 800, 494], [50, 800, 799], [10, 11.5, 10.7], [0.5, 2.5, 1.3], [0.2, 1.5, 0.2], [2.1, 3.2, 3]] as const) {
      const tried: number[] = [];
      const gap = (hi - lo) / 32;
      const got = await binarySearch(lo, hi, async (n) => (tried.push(n), n <= limit), gap, false);
      expect(got).toBeLessThanOrEqual(limit);
      expect(limit - got!).toBeLessThanOrEqual(gap + 0.1 + 1e-9);
      expect(tried.length).toBeLessThanOrEqual(7);
      expect(Math.min(...tried)).toBeGreaterThanOrEqual(lo);
    }
  });
});
