// One load step: a fixed number of connections for a bounded time (and request count), driven through
// autocannon's API. Per request we record, ourselves, the latency (HDR histogram: autocannon's own result
// has no p95) and the response's `bitflops` / `bitflops_reference`, and count status codes.
import autocannon from 'autocannon';
import * as hdr from 'hdr-histogram-js';
import type { Body } from './payloads.js';

export interface StepOptions {
  readonly url: string;
  readonly path: string;
  readonly connections: number;
  readonly durationS: number;
  /** Stop after this many responses even if the duration has not passed. */
  readonly maxRequests: number;
  /** Per-request socket timeout (s). */
  readonly timeoutS: number;
  readonly body: (i: number) => Body;
  /** Per-request limits that make a response count towards goodput (null: no limit). */
  readonly goodput: { readonly maxLatencyMs: number | null; readonly maxBitflops: number | null };
  /** Called about once a second while the step runs. */
  readonly onProgress?: (p: { elapsedS: number; responses: number; ok: number; failed: number }) => void;
}

export interface StepResult {
  readonly connections: number;
  readonly durationS: number;
  /** Responses received (any status) + requests that failed without one (socket error, timeout). */
  readonly requests: number;
  readonly ok: number;
  readonly failed: number;
  readonly socketErrors: number;
  readonly timeouts: number;
  readonly statusCodes: Record<string, number>;
  readonly throughputRps: number;
  readonly errorRate: number;
  /** Latency of successful (2xx) requests, ms. */
  readonly latencyMs: { readonly mean: number; readonly p50: number; readonly p90: number; readonly p95: number; readonly p99: number; readonly max: number };
  readonly bitflops: { readonly total: number; readonly referenceTotal: number; readonly mean: number | null; readonly p50: number | null; readonly p90: number | null; readonly p99: number | null; readonly max: number | null };
  readonly savings: number | null;
  readonly good: number;
  readonly goodputRps: number;
  /** Per successful request's Bit-FLOPs, for the distribution plot. */
  readonly bitflopsSamples: number[];
}

function quantile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
}

export function runStep(o: StepOptions): Promise<StepResult> {
  // 1 µs .. 1 h, 3 significant digits.
  const latency = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 });
  const statusCodes: Record<string, number> = {};
  const samples: number[] = [];
  let bitflopsTotal = 0;
  let referenceTotal = 0;
  let next = 0;
  let responses = 0;
  let ok = 0;
  let good = 0;
  let socketErrors = 0;
  // onResponse (body) runs synchronously just before the 'response' event (latency) of the same request,
  // on the same client: this slot carries the parsed body from one to the other.
  let parsed: { bitflops: number; reference: number } | null = null;
  const t0 = performance.now();

  return new Promise((resolve, reject) => {
    let stopped = false;
    const instance = autocannon(
      {
        url: o.url,
        connections: o.connections,
        duration: o.durationS,
        timeout: o.timeoutS,
        requests: [
          {
            method: 'POST',
            path: o.path,
            setupRequest: (req) => {
              const b = o.body(next++);
              return { ...req, headers: { ...req.headers, ...b.headers }, body: b.body };
            },
            onResponse: (status, body) => {
              parsed = null;
              if (status < 200 || status >= 300) return;
              try {
                const j = JSON.parse(body) as { bitflops?: unknown; bitflops_reference?: unknown };
                if (typeof j.bitflops === 'number') parsed = { bitflops: j.bitflops, reference: typeof j.bitflops_reference === 'number' ? j.bitflops_reference : 0 };
              } catch {
                // not JSON: counted as a success without Bit-FLOPs
              }
            },
          },
        ],
      },
      (err, result) => {
        clearInterval(progress);
        clearTimeout(watchdog);
        if (err) return reject(err as Error);
        const elapsedS = (performance.now() - t0) / 1000;
        const timeouts = result.timeouts;
        const requests = responses + socketErrors;
        const failed = requests - ok;
        const sorted = [...samples].sort((a, b) => a - b);
        const ms = (q: number) => latency.getValueAtPercentile(q) / 1000;
        resolve({
          connections: o.connections,
          durationS: elapsedS,
          requests,
          ok,
          failed,
          socketErrors,
          timeouts,
          statusCodes,
          throughputRps: ok / elapsedS,
          errorRate: requests === 0 ? 1 : failed / requests,
          latencyMs: { mean: latency.mean / 1000, p50: ms(50), p90: ms(90), p95: ms(95), p99: ms(99), max: latency.maxValue / 1000 },
          bitflops: {
            total: bitflopsTotal,
            referenceTotal,
            mean: samples.length ? bitflopsTotal / samples.length : null,
            p50: quantile(sorted, 0.5),
            p90: quantile(sorted, 0.9),
            p99: quantile(sorted, 0.99),
            max: sorted.length ? (sorted[sorted.length - 1] as number) : null,
          },
          savings: referenceTotal > 0 ? 1 - bitflopsTotal / referenceTotal : null,
          good,
          goodputRps: good / elapsedS,
          bitflopsSamples: samples,
        });
        latency.destroy();
      },
    );
    const stop = () => {
      if (!stopped) {
        stopped = true;
        instance.stop();
      }
    };
    instance.on('response', (_client: unknown, status: number, _bytes: number, responseTime: number) => {
      responses++;
      statusCodes[status] = (statusCodes[status] ?? 0) + 1;
      const p = parsed;
      parsed = null;
      if (status >= 200 && status < 300) {
        ok++;
        latency.recordValue(Math.max(1, Math.round(responseTime * 1000)));
        if (p) {
          samples.push(p.bitflops);
          bitflopsTotal += p.bitflops;
          referenceTotal += p.reference;
        }
        const latOk = o.goodput.maxLatencyMs === null || responseTime <= o.goodput.maxLatencyMs;
        const costOk = o.goodput.maxBitflops === null || (p !== null && p.bitflops <= o.goodput.maxBitflops);
        if (latOk && costOk) good++;
      }
      if (responses + socketErrors >= o.maxRequests) stop();
    });
    instance.on('reqError', () => {
      socketErrors++;
      if (responses + socketErrors >= o.maxRequests) stop();
    });
    const progress = setInterval(() => {
      o.onProgress?.({ elapsedS: (performance.now() - t0) / 1000, responses, ok, failed: responses + socketErrors - ok });
    }, 1000);
    // Belt and braces: autocannon stops at the duration; this bounds a step whose sockets hang.
    const watchdog = setTimeout(stop, (o.durationS + o.timeoutS + 5) * 1000);
  });
}
