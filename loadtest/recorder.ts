// What one load step saw, request by request: the figures both load shapes (fixed connections, fixed
// request rate) report. Latency into an HDR histogram (µs, 3 significant digits; autocannon's own result
// has no p95), each 2xx response's Bit-FLOPs, status codes, failures, goodput, and windows (a quarter of
// the step, at least a second, by completion time) for the stability verdict.
import * as hdr from 'hdr-histogram-js';

export interface Cost {
  readonly bitflops: number;
  readonly reference: number;
}

/** A 2xx response body's Bit-FLOPs and reference, from /v1/classify or OIP infer (null when absent or not JSON). */
export function parseCost(status: number, body: string): Cost | null {
  if (status < 200 || status >= 300) return null;
  try {
    const j = JSON.parse(body) as { bitflops?: unknown; bitflops_reference?: unknown; parameters?: { dqserve_bitflops?: unknown; dqserve_bitflops_reference?: unknown } };
    // /v1/classify answers with bitflops at the top; an OIP infer response in its parameters
    const [bitflops, reference] = j.parameters ? [j.parameters.dqserve_bitflops, j.parameters.dqserve_bitflops_reference] : [j.bitflops, j.bitflops_reference];
    return typeof bitflops === 'number' ? { bitflops, reference: typeof reference === 'number' ? reference : 0 } : null;
  } catch {
    return null;
  }
}

/** Latencies in µs, 1 µs … 1 h, 3 significant digits. */
export const microsecondHistogram = () => hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: 3 });

export type Progress = (p: { elapsedS: number; responses: number; ok: number; failed: number }) => void;

/** Calls `onProgress` with the recorder's counts once a second until the returned timer is cleared. */
export function reportProgress(rec: StepRecorder, onProgress: Progress | undefined): NodeJS.Timeout {
  return setInterval(() => onProgress?.({ elapsedS: rec.elapsedS, responses: rec.responses, ok: rec.ok, failed: rec.failed }), 1000);
}

export interface GoodputLimits {
  readonly maxLatencyMs: number | null;
  readonly maxBitflops: number | null;
}

/** A window of a step: its successful responses (per second) and their mean and p99 latency. */
export interface Window {
  readonly okPerS: number;
  readonly meanMs: number | null;
  readonly p99Ms: number | null;
}

export interface Stability {
  /** perf_analyzer's rule: the last three full windows' throughput and mean latency each within ±tolerance of their mean. */
  readonly stable: boolean | null;
  readonly tolerance: number;
  /** The largest relative deviation from the mean over those windows (throughput or mean latency). */
  readonly maxDeviation: number | null;
}

export interface StepResult {
  /** Connections: kept busy (closed loop), or the most the open-loop generator may open. */
  readonly connections: number;
  /** Open loop: the request rate offered (req/s); null for a fixed-connections step. */
  readonly offeredRps: number | null;
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
  /**
   * Latency of every request, ms, a failed one (non-2xx, socket error, timeout) counted as the request timeout:
   * a failure is as bad as an answer that never came, so it cannot flatter a percentile. Open loop: from each
   * request's intended send time.
   */
  readonly latencyMs: { readonly mean: number; readonly p50: number; readonly p90: number; readonly p95: number; readonly p99: number; readonly max: number };
  /** Latency of the 2xx answers alone (null without any): what an accepted request saw while others were shed. */
  readonly okLatencyMs: { readonly p50: number; readonly p99: number } | null;
  readonly bitflops: { readonly total: number; readonly referenceTotal: number; readonly mean: number | null; readonly p50: number | null; readonly p90: number | null; readonly p99: number | null; readonly max: number | null };
  readonly savings: number | null;
  readonly good: number;
  readonly goodputRps: number;
  /** Seconds per stability window, and how many windows the step's duration holds (later ones: after it). */
  readonly windowS: number;
  readonly fullWindows: number;
  readonly windows: Window[];
  /** Open loop: how late the generator sent requests (its own lag, part of every latency) and its peak in flight. */
  readonly generator: { readonly lagP99Ms: number; readonly lagMaxMs: number; readonly peakInFlight: number } | null;
  /** Per successful request's Bit-FLOPs, for the distribution plot. */
  readonly bitflopsSamples: number[];
}

function quantile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] as number;
}

/**
 * Judged on windows 1…3 of the step's four (the first holds the start-up; answers after the step's duration,
 * an open loop's drain, fall beyond them). `fullWindows` < 4 (a step under four seconds): not judged. A
 * judged window without a successful response is unstable.
 */
export function stability(windows: readonly Window[], fullWindows: number, tolerance: number): Stability {
  if (fullWindows < 4) return { stable: null, tolerance, maxDeviation: null };
  const last = Array.from({ length: 3 }, (_, i) => windows[fullWindows - 3 + i] ?? { okPerS: 0, meanMs: null, p99Ms: null });
  if (last.some((w) => w.meanMs === null)) return { stable: false, tolerance, maxDeviation: null };
  const dev = (xs: number[]) => {
    const m = xs.reduce((a, x) => a + x, 0) / xs.length;
    return m === 0 ? 0 : Math.max(...xs.map((x) => Math.abs(x - m) / m));
  };
  const maxDeviation = Math.max(dev(last.map((w) => w.okPerS)), dev(last.map((w) => w.meanMs as number)));
  return { stable: maxDeviation <= tolerance, tolerance, maxDeviation };
}

export class StepRecorder {
  private readonly latency = microsecondHistogram();
  private readonly okLatency = microsecondHistogram();
  private readonly statusCodes: Record<string, number> = {};
  private readonly samples: number[] = [];
  private readonly perWindow: number[][] = [];
  private bitflopsTotal = 0;
  private referenceTotal = 0;
  private good = 0;
  private lastOkS = 0;
  private readonly windowS: number;
  private readonly fullWindows: number;
  responses = 0;
  ok = 0;
  socketErrors = 0;
  timeouts = 0;

  /** `durationS`: the step's planned duration, cut into stability windows; `failureMs`: the request timeout. */
  constructor(
    private readonly goodput: GoodputLimits,
    durationS: number,
    private readonly failureMs: number,
    private readonly t0 = performance.now(),
  ) {
    this.windowS = Math.max(1, durationS / 4); // perf_analyzer measures in 5 s windows; four per step here
    this.fullWindows = Math.floor(durationS / this.windowS + 1e-9);
  }

  get failed(): number {
    return this.responses + this.socketErrors - this.ok;
  }

  get elapsedS(): number {
    return (performance.now() - this.t0) / 1000;
  }

  get settled(): number {
    return this.responses + this.socketErrors;
  }

  response(status: number, cost: Cost | null, latencyMs: number): void {
    this.responses++;
    this.statusCodes[status] = (this.statusCodes[status] ?? 0) + 1;
    if (status < 200 || status >= 300) {
      this.recordLatency(Math.max(latencyMs, this.failureMs));
      return;
    }
    this.ok++;
    this.lastOkS = this.elapsedS;
    this.recordLatency(latencyMs);
    this.okLatency.recordValue(Math.max(1, Math.round(latencyMs * 1000)));
    (this.perWindow[Math.floor(this.lastOkS / this.windowS)] ??= []).push(latencyMs);
    if (cost) {
      this.samples.push(cost.bitflops);
      this.bitflopsTotal += cost.bitflops;
      this.referenceTotal += cost.reference;
    }
    const latOk = this.goodput.maxLatencyMs === null || latencyMs <= this.goodput.maxLatencyMs;
    const costOk = this.goodput.maxBitflops === null || (cost !== null && cost.bitflops <= this.goodput.maxBitflops);
    if (latOk && costOk) this.good++;
  }

  /** A request that got no response: a socket error, or no answer within the timeout. */
  failure(timedOut: boolean): void {
    this.socketErrors++;
    if (timedOut) this.timeouts++;
    this.recordLatency(this.failureMs);
  }

  private recordLatency(ms: number): void {
    this.latency.recordValue(Math.max(1, Math.round(ms * 1000)));
  }

  /**
   * `scheduleS` (open loop: n requests at rate r, n/r s): throughput is over the schedule or up to the last
   * successful answer, whichever is longer, so a request left to time out does not stretch the step.
   */
  result(load: { connections: number; offeredRps: number | null }, generator: StepResult['generator'], scheduleS?: number): StepResult {
    const elapsedS = scheduleS === undefined ? this.elapsedS : Math.max(scheduleS, this.lastOkS);
    const requests = this.settled;
    const sorted = [...this.samples].sort((a, b) => a - b);
    const ms = (q: number) => this.latency.getValueAtPercentile(q) / 1000;
    const windows = Array.from(this.perWindow, (w = []) => ({ okPerS: w.length / this.windowS, meanMs: w.length ? w.reduce((a, x) => a + x, 0) / w.length : null, p99Ms: quantile([...w].sort((a, b) => a - b), 0.99) }));
    const out: StepResult = {
      ...load,
      durationS: elapsedS,
      requests,
      ok: this.ok,
      failed: this.failed,
      socketErrors: this.socketErrors,
      timeouts: this.timeouts,
      statusCodes: this.statusCodes,
      throughputRps: this.ok / elapsedS,
      errorRate: requests === 0 ? 1 : this.failed / requests,
      latencyMs: { mean: this.latency.mean / 1000, p50: ms(50), p90: ms(90), p95: ms(95), p99: ms(99), max: this.latency.maxValue / 1000 },
      okLatencyMs: this.ok ? { p50: this.okLatency.getValueAtPercentile(50) / 1000, p99: this.okLatency.getValueAtPercentile(99) / 1000 } : null,
      bitflops: {
        total: this.bitflopsTotal,
        referenceTotal: this.referenceTotal,
        mean: sorted.length ? this.bitflopsTotal / sorted.length : null,
        p50: quantile(sorted, 0.5),
        p90: quantile(sorted, 0.9),
        p99: quantile(sorted, 0.99),
        max: sorted.length ? (sorted[sorted.length - 1] as number) : null,
      },
      savings: this.referenceTotal > 0 ? 1 - this.bitflopsTotal / this.referenceTotal : null,
      good: this.good,
      goodputRps: this.good / elapsedS,
      windowS: this.windowS,
      fullWindows: this.fullWindows,
      windows,
      generator,
      bitflopsSamples: this.samples,
    };
    this.latency.destroy();
    this.okLatency.destroy();
    return out;
  }
}

