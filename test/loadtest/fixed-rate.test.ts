// The open-loop generator against a plain HTTP server whose behaviour we control: it keeps to the schedule,
// and a server stall shows in the latencies of every request that arrived during it (no coordinated omission).
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { runConnectionsStep } from '../../loadtest/fixed-connections.js';
import { runRateStep } from '../../loadtest/fixed-rate.js';
import { stability } from '../../loadtest/recorder.js';

const body = () => ({ headers: { 'content-type': 'image/jpeg' }, body: Buffer.from('not really an image') });
const goodput = { maxLatencyMs: null, maxBitflops: null };

let server: Server | null = null;
afterEach(() => new Promise<void>((r) => (server ? server.close(() => r()) : r())));

/** A plain HTTP server on 127.0.0.1 that reads each request, then calls `answer` with ms since the first one. */
async function serve(answer: (res: ServerResponse, t: number) => void): Promise<string> {
  let t0 = 0;
  server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      t0 ||= performance.now();
      answer(res, performance.now() - t0);
    });
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server!.address() as AddressInfo).port}`;
}

/** Answers at once with a cost, except that between `stallFrom` and `stallTo` ms it holds every answer until `stallTo`. */
const stallingServer = (stallFrom: number, stallTo: number) =>
  serve((res, t) => {
    const answer = () => res.end(JSON.stringify({ bitflops: 100, bitflops_reference: 200 }));
    if (t >= stallFrom && t < stallTo) setTimeout(answer, stallTo - t);
    else answer();
  });

describe('open-loop request-rate step', () => {
  it('sends on schedule and measures from the intended send time, so a 1 s stall shows in a quarter of 4 s of requests', async () => {
    const url = await stallingServer(1000, 2000);
    const r = await runRateStep({ url, path: '/', durationS: 4, maxRequests: 10_000, timeoutS: 5, body, goodput, rateRps: 50, maxConnections: 1 });
    expect(r.offeredRps).toBe(50);
    expect(r.requests).toBe(200);
    expect(r.ok).toBe(200);
    expect(r.throughputRps).toBeCloseTo(50, 0); // 200 answers over the 4 s schedule
    expect(r.bitflops).toMatchObject({ total: 200 * 100, mean: 100 });
    expect(r.savings).toBeCloseTo(0.5, 9);
    // ~50 requests were due during the stall, waiting 1000 … 0 ms: p90 falls among them, p50 does not.
    expect(r.latencyMs.p50).toBeLessThan(100);
    expect(r.latencyMs.p90).toBeGreaterThan(400);
    expect(r.latencyMs.max).toBeGreaterThan(900);
    // Only one socket: the requests due during the stall waited on the client, and that wait is counted.
    expect(r.generator!.peakInFlight).toBeGreaterThan(30);
    expect(r.generator!.lagP99Ms).toBeLessThan(250);
    // Hardly an answer in the second quarter (only those sent just before the stall began): not stable.
    expect(r.fullWindows).toBe(4);
    expect(r.windows[1]?.okPerS ?? 0).toBeLessThan(5);
    expect(stability(r.windows, r.fullWindows, 0.1).stable).toBe(false);
  }, 15_000);

  it('a closed-loop step on the same stall hides it (why the rate mode exists)', async () => {
    const url = await stallingServer(1000, 2000);
    const r = await runConnectionsStep({ url, path: '/', durationS: 3, maxRequests: 1_000_000, timeoutS: 5, body, goodput, connections: 1 });
    expect(r.offeredRps).toBeNull();
    expect(r.latencyMs.max).toBeGreaterThan(900); // the one request that waited
    expect(r.latencyMs.p90).toBeLessThan(50); // and nothing else shows it
  }, 15_000);

  it('counts non-2xx answers as failures without latency or cost', async () => {
    const url = await serve((res) => {
      res.statusCode = 415;
      res.end('{"error":"not an image"}');
    });
    const r = await runRateStep({ url, path: '/', durationS: 1, maxRequests: 10_000, timeoutS: 5, body, goodput, rateRps: 20, maxConnections: 4 });
    expect(r).toMatchObject({ requests: 20, ok: 0, failed: 20, errorRate: 1, statusCodes: { '415': 20 }, bitflopsSamples: [] });
  }, 10_000);

  it('times out a request from its intended send time and stops at the request bound', async () => {
    const url = await stallingServer(0, 60_000);
    const r = await runRateStep({ url, path: '/', durationS: 10, maxRequests: 5, timeoutS: 1, body, goodput, rateRps: 20, maxConnections: 4 });
    expect(r.requests).toBe(5);
    expect(r.timeouts).toBe(5);
    expect(r.failed).toBe(5);
    expect(r.errorRate).toBe(1);
    expect(r.durationS).toBeLessThan(2);
  }, 10_000);
});

describe('stability', () => {
  it("judges the step's last three quarters, not its start-up or what completes after it", () => {
    const w = (okPerS: number, meanMs: number) => ({ okPerS, meanMs, p99Ms: meanMs * 2 });
    expect(stability([w(10, 5), w(100, 5), w(100, 5.2), w(104, 5), w(3, 90)], 4, 0.1)).toMatchObject({ stable: true });
    expect(stability([w(10, 5), w(100, 5), w(100, 6), w(104, 5), w(3, 90)], 4, 0.1)).toMatchObject({ stable: false });
    expect(stability([w(10, 5), w(100, 5), w(100, 6), w(104, 5), w(3, 90)], 4, 0.2)).toMatchObject({ stable: true });
    expect(stability([w(100, 5), w(100, 10), w(100, 20), w(100, 40), w(3, 90)], 4, 0.1).stable).toBe(false);
    expect(stability([w(100, 5), w(100, 5), w(100, 5), w(100, 5), w(50, 500), w(50, 900)], 4, 0.1).stable).toBe(true);
    expect(stability([w(100, 5), w(100, 5)], 4, 0.1).stable).toBe(false); // no answers in the last two quarters
    expect(stability([w(100, 5), w(100, 5), w(100, 5)], 3, 0.1).stable).toBeNull();
  });
});
