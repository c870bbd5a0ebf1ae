// npm run loadtest end to end (issue #5): real servers on 127.0.0.1, the CLI run as a child process so the
// exit status is the one a deployment gate sees. Each run is a few seconds of load.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.js';
import type { Report } from '../../loadtest/report.js';
import { startTestServer } from '../helpers/server.js';
import { REPO_ROOT } from '../helpers/paths.js';

function loadtest(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'loadtest', 'run.ts'), ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve) => child.on('exit', (code) => resolve({ code, stderr })));
}

const dir = mkdtempSync(join(tmpdir(), 'dq-loadtest-'));
function file(name: string, text: string): string {
  writeFileSync(join(dir, name), text);
  return join(dir, name);
}
const QUICK = ['--duration', '2', '--warmup', '0.5', '--test-set-limit', '200', '--connections', '4'];

describe('npm run loadtest', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server.close();
  });

  it('starts its own server, meets a lenient budget, exits 0 and writes a report that says so', async () => {
    const budget = file('lenient.json', JSON.stringify({ latencyMs: { p50: 5000, p95: 10000, p99: 20000 }, minThroughputRps: 1, maxErrorRate: 0.01, maxMeanBitflops: 1e13, minSavings: -1, minGoodputRps: 1 }));
    const out = join(dir, 'lenient');
    const { code, stderr } = await loadtest([...QUICK, '--server-args', '--engine fake', '--multipart-ratio', '0.5', '--budget', budget, '--out', out]);
    expect(code, stderr).toBe(0);
    expect(stderr).toMatch(/\[loadtest\] 4 connections: \d+\/2 s/); // progress
    expect(stderr).toContain('budget met');
    const r = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as Report;
    expect(r.met).toBe(true);
    expect(r.target.startedByLoadtest).toBe(true);
    expect(r.target.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(r.payloads.count).toBeGreaterThanOrEqual(200);
    expect(r.steps).toHaveLength(1);
    const [step] = r.steps;
    const c = step!.client;
    expect(c.ok).toBeGreaterThan(0);
    expect(c.failed).toBe(0);
    expect(c.statusCodes).toEqual({ '200': c.ok });
    expect(c.latencyMs.p50).toBeGreaterThan(0);
    expect(c.latencyMs.p50).toBeLessThanOrEqual(c.latencyMs.p95);
    expect(c.latencyMs.p95).toBeLessThanOrEqual(c.latencyMs.p99);
    expect(c.bitflops.mean).toBeGreaterThan(0);
    expect(c.goodputRps).toBeCloseTo(c.throughputRps, 6); // every request within the lenient limits
    expect(step!.checks.map((x) => x.name)).toEqual(['latency p50', 'latency p95', 'latency p99', 'throughput', 'error rate', 'mean Bit-FLOPs', 'savings', 'goodput']);
    expect(step!.checks.every((x) => x.ok)).toBe(true);
    // Server-side truth: the server saw at least what the client counted, plus at most one request per
    // connection left in flight when the step stopped (the warm-up's have settled before the first scrape),
    // counted as a success or, when its connection closed first, as DQ_ERR_CLIENT_DISCONNECTED; its Bit-FLOPs
    // sum covers the client's.
    const s = step!.server!;
    const gone = s.failuresByReason['DQ_ERR_CLIENT_DISCONNECTED'] ?? 0;
    expect(s.requestsOk).toBeGreaterThanOrEqual(c.ok);
    expect(s.requestsOk + gone - c.ok).toBeLessThanOrEqual(4);
    expect(s.requestsFailed).toBe(gone);
    expect(s.http503).toBe(0);
    expect(s.bitflops).toBeGreaterThanOrEqual(c.bitflops.total);
    expect(s.meanQueueMs).not.toBeNull();
    const md = readFileSync(join(out, 'report.md'), 'utf8');
    expect(md).toContain('**Budget met** by every step.');
    expect(md).toContain('have throughput and mean latency within ±10% of their mean');
    expect(md).toContain('| Concurrency | Inferences/Second | Goodput/s | p50 ms | p90 ms | p95 ms | p99 ms');
    expect(md).toMatch(/\| 4 \| 200: \d+ \| 0 \| 0 \|/);
    for (const svg of ['latency-vs-load.svg', 'bitflops-distribution.svg']) expect(readFileSync(join(out, svg), 'utf8')).toMatch(/^<svg [^>]*>[\s\S]*<\/svg>\n$/);
  }, 30_000);

  it('exits 1 with a table of what failed by how much when the budget cannot be met', async () => {
    const budget = file('strict.json', JSON.stringify({ latencyMs: { p99: 0.001 }, minThroughputRps: 1e9, maxErrorRate: 0 }));
    const out = join(dir, 'strict');
    const { code, stderr } = await loadtest([...QUICK, '--url', server.url, '--budget', budget, '--out', out, '--no-progress']);
    expect(code, stderr).toBe(1);
    // --no-progress drops the ticker only: the step's summary and the verdict remain
    expect(stderr).not.toMatch(/4 connections: \d+\/\d+ s,/);
    expect(stderr).toMatch(/\[loadtest\] 4 connections: [\d.]+ req\/s, .*: budget missed/);
    expect(stderr).toContain('budget missed at 4 connections:');
    expect(stderr).toContain('| limit | budget | measured | missed by |');
    expect(stderr).toMatch(/\| latency p99 \| ≤ 0\.001 ms \| [\d.]+ ms \| \+[\d.]+ ms \(\+\d+\.\d%\) \|/);
    expect(stderr).toMatch(/\| throughput \| ≥ 1\.000e\+9 req\/s \| [\d.]+ req\/s \| -[\d.e+]+ req\/s \(-\d+\.\d%\) \|/);
    expect(stderr).not.toMatch(/\| error rate \|/); // met, so not in the failure table
    const r = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as Report;
    expect(r.met).toBe(false);
    expect(r.target.startedByLoadtest).toBe(false);
    expect(r.bestLoad).toBeNull();
    expect(readFileSync(join(out, 'report.md'), 'utf8')).toContain('**Budget missed.**');
  }, 30_000);

  it('counts 503s on both sides when the queue overflows', async () => {
    // One image at a time, 40 ms each, a queue of 1: most of 8 connections' requests are refused with 503.
    const out = join(dir, 'overflow');
    const { code, stderr } = await loadtest([
      ...QUICK.slice(0, 6), '--connections', '8', '--out', out,
      '--server-args', '--engine fake --fake-engine-delay-ms 40 --max-batch-size 1 --instance-count 1 --max-queue-size 1',
    ]);
    expect(code, stderr).toBe(0); // no budget: figures only
    const r = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as Report;
    const { client: c, server: s } = r.steps[0]!;
    const refused = c.statusCodes['503'] ?? 0;
    expect(refused).toBeGreaterThan(0);
    expect(c.ok).toBeGreaterThan(0);
    expect(c.failed).toBe(refused);
    expect(c.errorRate).toBeCloseTo(refused / c.requests, 9);
    expect(s!.http503).toBeGreaterThanOrEqual(refused);
    expect(s!.http503 - refused).toBeLessThanOrEqual(8);
    expect(s!.failuresByReason['DQ_ERR_QUEUE_FULL']).toBe(s!.requestsFailed - (s!.failuresByReason['DQ_ERR_CLIENT_DISCONNECTED'] ?? 0));
  }, 30_000);

  it('--search finds the highest connection count that meets a latency budget', async () => {
    // A 25 ms fake engine that runs one image at a time: latency grows with connections (≈ 25 ms × n), so a
    // 90 ms p50 is met at 1 connection and missed at 8.
    const budget = file('search.json', JSON.stringify({ latencyMs: { p50: 90 } }));
    const out = join(dir, 'search');
    const { code, stderr } = await loadtest([
      ...QUICK.slice(0, 6), '--connections', '1,8', '--search', '--budget', budget, '--out', out,
      '--server-args', '--engine fake --fake-engine-delay-ms 25 --max-batch-size 1 --instance-count 1',
    ]);
    expect(code, stderr).toBe(0);
    const r = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as Report;
    expect(r.load).toMatchObject({ mode: 'concurrency', search: true, maxConnections: null });
    const tried = r.steps.map((s) => s.load);
    expect(r.steps.map((s) => s.client.connections)).toEqual(tried);
    expect(tried).toEqual([...tried].sort((a, b) => a - b));
    expect(tried[0]).toBe(1);
    expect(tried).toContain(8);
    expect(tried.length).toBeLessThanOrEqual(5);
    expect(r.bestLoad).toBeGreaterThanOrEqual(1);
    expect(r.bestLoad).toBeLessThan(8);
    // Every probe at or below the answer met the budget, every one above missed it.
    for (const s of r.steps) expect(s.met).toBe(s.load <= r.bestLoad!);
    expect(stderr).toContain(`highest load that met the budget: ${r.bestLoad} connections`);
    expect(readFileSync(join(out, 'report.md'), 'utf8')).toContain(`**Highest load that met the budget: ${r.bestLoad} connections** (binary search).`);
  }, 45_000);

  it('--rate runs an open-loop sweep: each step offered its rate, latency from intended send times, server deltas beside', async () => {
    const budget = file('rate.json', JSON.stringify({ latencyMs: { p99: 5000 }, maxErrorRate: 0.01 }));
    const out = join(dir, 'rate');
    const { code, stderr } = await loadtest([...QUICK.slice(0, 6), '--rate', '40,20', '--server-args', '--engine fake', '--budget', budget, '--out', out]);
    expect(code, stderr).toBe(0);
    expect(stderr).toMatch(/\[loadtest\] 20 req\/s: [\d.]+ req\/s, goodput/);
    const r = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as Report;
    expect(r.load).toMatchObject({ mode: 'request-rate', search: false, maxConnections: 128 });
    expect(r.steps.map((s) => s.load)).toEqual([20, 40]);
    for (const { load, client: c, server: s } of r.steps) {
      expect(c.offeredRps).toBe(load);
      expect(c.requests).toBe(load * 2); // rate × duration, every one answered: nothing abandoned
      expect(c.ok).toBe(c.requests);
      expect(c.throughputRps).toBeGreaterThan(load * 0.8);
      expect(c.throughputRps).toBeLessThanOrEqual(load * 1.01);
      expect(c.generator!.peakInFlight).toBeGreaterThanOrEqual(1);
      expect(s!.requestsOk).toBe(c.ok);
      expect(s!.bitflops).toBeCloseTo(c.bitflops.total, -3);
    }
    const md = readFileSync(join(out, 'report.md'), 'utf8');
    expect(md).toContain('open loop: requests sent on schedule at a fixed rate (at most 128 sockets)');
    expect(md).toContain('| Request Rate | Inferences/Second | Goodput/s |');
    expect(md).toContain('| Request Rate | sent late by, p99 ms | max ms | peak in flight |');
    expect(readFileSync(join(out, 'latency-vs-load.svg'), 'utf8')).toContain('offered request rate (req/s)');
  }, 30_000);

  it('--search --rate finds the highest request rate that meets a latency budget', async () => {
    // One image at a time, 25 ms each: about 40 req/s. Below that latency stays near 25 ms; above, open-loop
    // arrivals queue without bound and the p95 climbs past the budget.
    const budget = file('rate-search.json', JSON.stringify({ latencyMs: { p95: 150 } }));
    const out = join(dir, 'rate-search');
    const { code, stderr } = await loadtest([
      '--duration', '2', '--warmup', '0.5', '--test-set-limit', '200', '--rate', '8,72', '--search', '--budget', budget, '--out', out,
      '--server-args', '--engine fake --fake-engine-delay-ms 25 --max-batch-size 1 --instance-count 1',
    ]);
    expect(code, stderr).toBe(0);
    const r = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as Report;
    expect(r.load).toMatchObject({ mode: 'request-rate', search: true });
    const tried = r.steps.map((s) => s.load);
    expect(tried.slice(0, 1)).toEqual([8]);
    expect(tried).toContain(72);
    expect(tried.length).toBeLessThanOrEqual(7);
    expect(r.bestLoad).toBeGreaterThanOrEqual(16);
    expect(r.bestLoad).toBeLessThanOrEqual(48);
    for (const s of r.steps) expect(s.met).toBe(s.load <= r.bestLoad!);
    expect(stderr).toContain(`highest load that met the budget: ${r.bestLoad} req/s`);
  }, 60_000);

  it('--protocol oip loads the OIP infer route with JSON and binary bodies and reads their Bit-FLOPs', async () => {
    const out = join(dir, 'oip');
    const { code, stderr } = await loadtest([...QUICK, '--url', server.url, '--protocol', 'oip', '--model', 'fake_dq', '--binary-ratio', '0.5', '--out', out]);
    expect(code, stderr).toBe(0);
    const r = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as Report;
    expect(r.load.path).toBe('/v2/models/fake_dq/infer');
    expect(r.load.bodies).toBe('OIP infer, JSON with base64 BYTES; 50.00% binary tensor extension');
    const c = r.steps[0]!.client;
    expect(c.ok).toBeGreaterThan(0);
    expect(c.statusCodes).toEqual({ '200': c.ok });
    expect(c.bitflops.mean).toBeGreaterThan(0); // from the responses' dqserve_bitflops
    expect(r.steps[0]!.server!.bitflops).toBeGreaterThanOrEqual(c.bitflops.total);
  }, 30_000);

  it.each([
    [['--binary-ratio', '0.5'], '--binary-ratio is for --protocol oip (v1 takes --multipart-ratio)'],
    [['--protocol', 'oip', '--multipart-ratio', '0.5'], '--multipart-ratio is for --protocol v1 (oip takes --binary-ratio)'],
    [['--protocol', 'oip', '--model', 'no_such_model'], '--model no_such_model: the server does not serve it (GET /v2/models/no_such_model: 404)'],
    [['--protocol', 'oip', '--model', 'fake_dq', '--path', '/v2/models/fake_dq/infer'], 'give --model or --path, not both (--path is the whole request path)'],
  ])('%j is a usage error', async (args, message) => {
    const { code, stderr } = await loadtest(['--url', server.url, ...args, '--out', join(dir, 'never')]);
    expect(code).toBe(2);
    expect(stderr.split('\n').filter((l) => l.startsWith('loadtest:'))).toEqual([`loadtest: ${message}`]); // one line, besides progress
  });

  it('--rate with a connection list is a usage error', async () => {
    const { code, stderr } = await loadtest(['--url', server.url, '--rate', '10', '--connections', '1,2', '--out', join(dir, 'never')]);
    expect(code).toBe(2);
    expect(stderr).toBe('loadtest: with --rate, --connections takes one value: the most sockets the generator opens\n');
  });

  it.each([
    ['not JSON', '{"latencyMs": ', /^loadtest: .*bad-0\.json: not valid JSON \(.+\)\n$/],
    ['a wrong type', '{"latencyMs": {"p95": "fast"}}', /^loadtest: .*bad-1\.json: \/latencyMs\/p95: Expected number\n$/],
    ['an unknown limit', '{"maxLatency": 10}', /^loadtest: .*bad-2\.json: .*maxLatency.*\n$/],
    ['a negative limit', '{"minThroughputRps": -5}', /^loadtest: .*bad-3\.json: \/minThroughputRps: Expected number to be greater than 0\n$/],
  ])('refuses a malformed budget file (%s) with one clear line and exit 2, before any load', async (_what, text, message) => {
    const i = ['not JSON', 'a wrong type', 'an unknown limit', 'a negative limit'].indexOf(_what);
    const budget = file(`bad-${i}.json`, text);
    const { code, stderr } = await loadtest(['--url', server.url, '--budget', budget, '--out', join(dir, 'never')]);
    expect(code).toBe(2);
    expect(stderr).toMatch(message);
  });

  it('targets only loopback unless --allow-remote is given', async () => {
    const { code, stderr } = await loadtest(['--url', 'http://192.0.2.1:8080', '--out', join(dir, 'never')]);
    expect(code).toBe(2);
    expect(stderr).toBe('loadtest: --url http://192.0.2.1:8080: 192.0.2.1 is not loopback; pass --allow-remote to load another host\n');
  });
});
