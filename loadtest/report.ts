// The report: report.json (everything), report.md (perf_analyzer-style columns, budget verdict) and two SVG
// plots (latency percentiles vs load; per-request Bit-FLOPs distribution).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fmt, type Budget, type Check } from './budget.js';
import type { ServerDelta } from './server-metrics.js';
import type { Stability, StepResult } from './recorder.js';
import { bitflopsHistogramSvg, latencyVsLoadSvg } from './plots.js';

export interface StepReport {
  /** The step's load: connections (concurrency mode) or offered requests/s (request-rate mode). */
  readonly load: number;
  readonly client: Omit<StepResult, 'bitflopsSamples'>;
  readonly server: ServerDelta | null;
  readonly stability: Stability;
  readonly checks: Check[];
  readonly met: boolean;
}

export interface Report {
  readonly tool: 'dqserve loadtest';
  readonly date: string;
  readonly machine: { readonly host: string; readonly cpus: number; readonly cpu: string | undefined; readonly node: string };
  readonly target: { readonly url: string; readonly startedByLoadtest: boolean; readonly serverArgs: readonly string[] };
  readonly load: {
    /** concurrency: closed loop, fixed connections; request-rate: open loop, fixed arrival rate (latency from intended send times). */
    readonly mode: 'concurrency' | 'request-rate';
    readonly search: boolean;
    /** request-rate: the most sockets the generator opens. */
    readonly maxConnections: number | null;
    readonly path: string; readonly durationS: number; readonly maxRequests: number; readonly warmupS: number;
    /** What the requests carry: protocol and body forms. */
    readonly bodies: string };
  readonly payloads: { readonly count: number; readonly bytes: number; readonly sources: readonly string[] };
  readonly budget: Budget | null;
  readonly goodputLimits: { readonly maxLatencyMs: number | null; readonly maxBitflops: number | null };
  readonly steps: StepReport[];
  /** Every step met every limit (true when no budget was given). */
  readonly met: boolean;
  /** The highest load (connections or req/s, by mode) whose step met the budget, or null. */
  readonly bestLoad: number | null;
}

const ms = (x: number | null | undefined) => (x === null || x === undefined ? '–' : x.toFixed(1));
const opt = (x: number | null | undefined) => (x === null || x === undefined ? '–' : fmt(x));
export const pct = (x: number | null | undefined) => (x === null || x === undefined ? '–' : `${(x * 100).toFixed(2)}%`);

export function failureTable(checks: readonly Check[]): string {
  const failed = checks.filter((c) => !c.ok);
  if (failed.length === 0) return '';
  return ['| limit | budget | measured | missed by |', '| --- | --- | --- | --- |', ...failed.map((c) => `| ${c.name} | ${c.limit} | ${opt(c.measured)}${c.measured === null ? '' : c.unit} | ${c.by} |`)].join('\n');
}

const loadName = (r: Report) => (r.load.mode === 'request-rate' ? 'Request Rate' : 'Concurrency');
const loadLabel = (r: Report, n: number) => (r.load.mode === 'request-rate' ? `${n} req/s` : `${n} connections`);
const stable = (s: StepReport) => {
  const { stable: ok, maxDeviation: dev } = s.stability;
  return ok === null ? '–' : ok ? 'yes' : dev === null ? 'no (a window without answers)' : `no (±${(100 * dev).toFixed(0)}%)`;
};

export function markdown(r: Report): string {
  const out: string[] = [];
  const L = loadName(r);
  out.push(`# dqserve load test, ${r.date}`, '');
  out.push(`Target ${r.target.url}${r.target.startedByLoadtest ? ` (started by loadtest${r.target.serverArgs.length ? `: \`${r.target.serverArgs.join(' ')}\`` : ''})` : ''}; machine ${r.machine.host}, ${r.machine.cpus} × ${r.machine.cpu ?? '?'}, Node ${r.machine.node}.`);
  const shape =
    r.load.mode === 'request-rate'
      ? `open loop: requests sent on schedule at a fixed rate (at most ${r.load.maxConnections} sockets), latency measured from each request's intended send time`
      : 'closed loop: a fixed number of connections, each sending when its last request is answered';
  out.push(`Load: POST ${r.load.path}, ${shape}; ${r.load.durationS} s per step (at most ${r.load.maxRequests} requests), ${r.load.warmupS} s warm-up not counted; ${r.payloads.count} payloads (${(r.payloads.bytes / 1e6).toFixed(1)} MB: ${r.payloads.sources.join(', ')}); ${r.load.bodies}.`);
  out.push('');
  if (r.budget === null) out.push('**No budget given**: figures only.');
  else if (r.load.search) out.push(r.bestLoad !== null ? `**Highest load that met the budget: ${loadLabel(r, r.bestLoad)}** (binary search).` : '**Budget missed** at the lowest load searched.');
  else out.push(r.met ? '**Budget met** by every step.' : '**Budget missed.**' + (r.bestLoad !== null ? ` Highest load that met it: ${loadLabel(r, r.bestLoad)}.` : ''));
  out.push('', `Goodput counts 2xx responses with latency ≤ ${r.goodputLimits.maxLatencyMs ?? '∞'} ms and Bit-FLOPs ≤ ${r.goodputLimits.maxBitflops !== null ? fmt(r.goodputLimits.maxBitflops) : '∞'}.`, '');
  out.push('## Client side', '');
  out.push(`| ${L} | Inferences/Second | Goodput/s | p50 ms | p90 ms | p95 ms | p99 ms | max ms | requests | errors | error rate | mean Bit-FLOPs | savings | stable |`);
  out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const s of r.steps) {
    const c = s.client;
    out.push(`| ${s.load} | ${c.throughputRps.toFixed(1)} | ${c.goodputRps.toFixed(1)} | ${ms(c.latencyMs.p50)} | ${ms(c.latencyMs.p90)} | ${ms(c.latencyMs.p95)} | ${ms(c.latencyMs.p99)} | ${ms(c.latencyMs.max)} | ${c.requests} | ${c.failed} | ${pct(c.errorRate)} | ${opt(c.bitflops.mean)} | ${pct(c.savings)} | ${stable(s)} |`);
  }
  out.push('', `"stable": the step's last three quarters (by completion time) have throughput and mean latency within ±${(100 * (r.steps[0]?.stability.tolerance ?? 0.1)).toFixed(0)}% of their mean (perf_analyzer's rule; – for steps under four seconds). An open-loop step above what the server sustains is never stable: its queue, and so its latency, grows.`);
  if (r.load.mode === 'request-rate') {
    out.push('', '### Generator', '', `| ${L} | sent late by, p99 ms | max ms | peak in flight |`, '| --- | --- | --- | --- |');
    for (const s of r.steps) out.push(`| ${s.load} | ${ms(s.client.generator?.lagP99Ms)} | ${ms(s.client.generator?.lagMaxMs)} | ${s.client.generator?.peakInFlight ?? '–'} |`);
    out.push('', 'Latencies include the generator\'s own lag; a p99 above a few ms means the client, not only the server, fell behind.');
  }
  out.push('', '### Status codes', '', `| ${L} | status codes | socket errors (incl. timeouts) | timeouts | 2xx only: p50 ms | 2xx only: p99 ms |`, '| --- | --- | --- | --- | --- | --- |');
  for (const s of r.steps) {
    const codes = Object.entries(s.client.statusCodes).map(([k, v]) => `${k}: ${v}`).join(', ') || '–';
    out.push(`| ${s.load} | ${codes} | ${s.client.socketErrors} | ${s.client.timeouts} | ${ms(s.client.okLatencyMs?.p50)} | ${ms(s.client.okLatencyMs?.p99)} |`);
  }
  out.push('', '## Server side (/metrics deltas over each step)', '');
  if (r.steps.every((s) => s.server === null)) out.push('/metrics could not be scraped.');
  else {
    out.push(`| ${L} | requests ok | failed | 503s | Server Queue ms (per image) | Server Compute Input ms | controller ms (per batch) | layers ms (per batch) | mean batch | request ms | Bit-FLOPs Σ | client Σ | reference Σ | savings |`);
    out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const s of r.steps) {
      const v = s.server;
      if (v === null) {
        out.push(`| ${s.load} | – | – | – | – | – | – | – | – | – | – | ${opt(s.client.bitflops.total)} | – | – |`);
        continue;
      }
      out.push(`| ${s.load} | ${v.requestsOk} | ${v.requestsFailed} | ${v.http503} | ${ms(v.meanQueueMs)} | ${ms(v.meanPhaseMs['preprocess'])} | ${ms(v.meanPhaseMs['controller'])} | ${ms(v.meanPhaseMs['layers'])} | ${opt(v.meanBatchSize)} | ${ms(v.meanRequestMs)} | ${opt(v.bitflops)} | ${opt(s.client.bitflops.total)} | ${opt(v.bitflopsReference)} | ${pct(v.savings)} |`);
    }
    const reasons = r.steps.flatMap((s) => Object.entries(s.server?.failuresByReason ?? {}).map(([k, n]) => `${loadLabel(r, s.load)}: ${k} × ${n}`));
    if (reasons.length) out.push('', `Failures by reason: ${reasons.join('; ')}.`);
    if (r.load.mode === 'concurrency') out.push('', 'The server counts Bit-FLOPs of every image it classified in the window, including requests still in flight when a step stopped (autocannon does not count those); the client sums the responses it received.');
  }
  if (r.budget !== null) {
    out.push('', '## Budget', '');
    for (const s of r.steps) {
      out.push(`### ${loadLabel(r, s.load)}: ${s.met ? 'met' : 'missed'}`, '', '| limit | budget | measured | ok | missed by |', '| --- | --- | --- | --- | --- |');
      for (const c of s.checks) out.push(`| ${c.name} | ${c.limit} | ${opt(c.measured)}${c.measured === null ? '' : c.unit} | ${c.ok ? 'yes' : '**no**'} | ${c.by} |`);
      out.push('');
    }
  }
  out.push('', '## Plots', '', `![latency percentiles vs ${r.load.mode === 'request-rate' ? 'request rate' : 'connections'}](latency-vs-load.svg)`, '', '![Bit-FLOPs per request](bitflops-distribution.svg)', '');
  return out.join('\n');
}

export async function writeReport(dir: string, r: Report, bitflopsSamples: readonly number[]): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const percentiles = Object.fromEntries((['p50', 'p90', 'p95', 'p99'] as const).map((q) => [q, r.steps.map((s) => s.client.latencyMs[q])]));
  const files: Array<[string, string]> = [
    ['report.json', JSON.stringify(r, null, 2) + '\n'],
    ['report.md', markdown(r)],
    ['latency-vs-load.svg', await latencyVsLoadSvg(r.steps.map((s) => s.load), percentiles, r.load.mode === 'request-rate' ? 'offered request rate (req/s)' : 'connections')],
    ['bitflops-distribution.svg', await bitflopsHistogramSvg(bitflopsSamples)],
  ];
  for (const [name, text] of files) writeFileSync(join(dir, name), text);
  return files.map(([name]) => join(dir, name));
}
