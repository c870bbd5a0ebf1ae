// The report: report.json (everything), report.md (perf_analyzer-style columns, budget verdict) and two SVG
// plots (latency percentiles vs load; per-request Bit-FLOPs distribution).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fmt, type Budget, type Check } from './budget.js';
import type { ServerDelta } from './server-metrics.js';
import type { StepResult } from './step.js';
import { histogramSvg, lineSvg } from './svg-plot.js';

export interface StepReport {
  readonly client: Omit<StepResult, 'bitflopsSamples'>;
  readonly server: ServerDelta | null;
  readonly checks: Check[];
  readonly met: boolean;
}

export interface Report {
  readonly tool: 'dqserve loadtest';
  readonly date: string;
  readonly machine: { readonly host: string; readonly cpus: number; readonly cpu: string | undefined; readonly node: string };
  readonly target: { readonly url: string; readonly startedByLoadtest: boolean; readonly serverArgs: readonly string[] };
  readonly load: { readonly mode: 'concurrency' | 'binary-search'; readonly path: string; readonly durationS: number; readonly maxRequests: number; readonly warmupS: number; readonly multipartRatio: number };
  readonly payloads: { readonly count: number; readonly bytes: number; readonly sources: readonly string[] };
  readonly budget: Budget | null;
  readonly goodputLimits: { readonly maxLatencyMs: number | null; readonly maxBitflops: number | null };
  readonly steps: StepReport[];
  /** Every step met every limit (true when no budget was given). */
  readonly met: boolean;
  /** The highest connection count whose step met the budget, or null. */
  readonly bestConnections: number | null;
}

const ms = (x: number | null | undefined) => (x === null || x === undefined ? '–' : x.toFixed(1));
const opt = (x: number | null | undefined) => (x === null || x === undefined ? '–' : fmt(x));
const pct = (x: number | null | undefined) => (x === null || x === undefined ? '–' : `${(x * 100).toFixed(2)}%`);

export function failureTable(checks: readonly Check[]): string {
  const failed = checks.filter((c) => !c.ok);
  if (failed.length === 0) return '';
  return ['| limit | budget | measured | missed by |', '| --- | --- | --- | --- |', ...failed.map((c) => `| ${c.name} | ${c.limit} | ${opt(c.measured)}${c.measured === null ? '' : c.unit} | ${c.by} |`)].join('\n');
}

export function markdown(r: Report): string {
  const out: string[] = [];
  out.push(`# dqserve load test, ${r.date}`, '');
  out.push(`Target ${r.target.url}${r.target.startedByLoadtest ? ` (started by loadtest${r.target.serverArgs.length ? `: \`${r.target.serverArgs.join(' ')}\`` : ''})` : ''}; machine ${r.machine.host}, ${r.machine.cpus} × ${r.machine.cpu ?? '?'}, Node ${r.machine.node}.`);
  out.push(`Load: POST ${r.load.path}, fixed connections for ${r.load.durationS} s per step (at most ${r.load.maxRequests} requests), ${r.load.warmupS} s warm-up not counted; ${r.payloads.count} payloads (${(r.payloads.bytes / 1e6).toFixed(1)} MB: ${r.payloads.sources.join(', ')}), ${pct(r.load.multipartRatio)} multipart.`);
  out.push('');
  if (r.budget === null) out.push('**No budget given**: figures only.');
  else if (r.load.mode === 'binary-search') out.push(r.bestConnections !== null ? `**Highest load that met the budget: ${r.bestConnections} connections** (binary search).` : '**Budget missed** at the lowest load searched.');
  else out.push(r.met ? '**Budget met** by every step.' : '**Budget missed.**' + (r.bestConnections !== null ? ` Highest load that met it: ${r.bestConnections} connections.` : ''));
  out.push('', `Goodput counts 2xx responses with latency ≤ ${r.goodputLimits.maxLatencyMs ?? '∞'} ms and Bit-FLOPs ≤ ${r.goodputLimits.maxBitflops !== null ? fmt(r.goodputLimits.maxBitflops) : '∞'}.`, '');
  out.push('## Client side', '');
  out.push('| Concurrency | Inferences/Second | Goodput/s | p50 ms | p90 ms | p95 ms | p99 ms | max ms | requests | errors | error rate | mean Bit-FLOPs | savings |');
  out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const s of r.steps) {
    const c = s.client;
    out.push(`| ${c.connections} | ${c.throughputRps.toFixed(1)} | ${c.goodputRps.toFixed(1)} | ${ms(c.latencyMs.p50)} | ${ms(c.latencyMs.p90)} | ${ms(c.latencyMs.p95)} | ${ms(c.latencyMs.p99)} | ${ms(c.latencyMs.max)} | ${c.requests} | ${c.failed} | ${pct(c.errorRate)} | ${opt(c.bitflops.mean)} | ${pct(c.savings)} |`);
  }
  out.push('', '### Status codes', '', '| Concurrency | status codes | socket errors (incl. timeouts) | timeouts |', '| --- | --- | --- | --- |');
  for (const s of r.steps) {
    const codes = Object.entries(s.client.statusCodes).map(([k, v]) => `${k}: ${v}`).join(', ') || '–';
    out.push(`| ${s.client.connections} | ${codes} | ${s.client.socketErrors} | ${s.client.timeouts} |`);
  }
  out.push('', '## Server side (/metrics deltas over each step)', '');
  if (r.steps.every((s) => s.server === null)) out.push('/metrics could not be scraped.');
  else {
    out.push('| Concurrency | requests ok | failed | 503s | Server Queue ms (per image) | Server Compute Input ms | controller ms (per batch) | layers ms (per batch) | mean batch | request ms | Bit-FLOPs Σ | client Σ | reference Σ | savings |');
    out.push('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const s of r.steps) {
      const v = s.server;
      if (v === null) {
        out.push(`| ${s.client.connections} | – | – | – | – | – | – | – | – | – | – | ${opt(s.client.bitflops.total)} | – | – |`);
        continue;
      }
      out.push(`| ${s.client.connections} | ${v.requestsOk} | ${v.requestsFailed} | ${v.http503} | ${ms(v.meanQueueMs)} | ${ms(v.meanPhaseMs['preprocess'])} | ${ms(v.meanPhaseMs['controller'])} | ${ms(v.meanPhaseMs['layers'])} | ${opt(v.meanBatchSize)} | ${ms(v.meanRequestMs)} | ${opt(v.bitflops)} | ${opt(s.client.bitflops.total)} | ${opt(v.bitflopsReference)} | ${pct(v.savings)} |`);
    }
    const reasons = r.steps.flatMap((s) => Object.entries(s.server?.failuresByReason ?? {}).map(([k, n]) => `${s.client.connections} connections: ${k} × ${n}`));
    if (reasons.length) out.push('', `Failures by reason: ${reasons.join('; ')}.`);
    out.push('', 'The server counts Bit-FLOPs of every image it classified in the window, including requests still in flight when a step stopped (autocannon does not count those); the client sums the responses it received.');
  }
  if (r.budget !== null) {
    out.push('', '## Budget', '');
    for (const s of r.steps) {
      out.push(`### ${s.client.connections} connections: ${s.met ? 'met' : 'missed'}`, '', '| limit | budget | measured | ok | missed by |', '| --- | --- | --- | --- | --- |');
      for (const c of s.checks) out.push(`| ${c.name} | ${c.limit} | ${opt(c.measured)}${c.measured === null ? '' : c.unit} | ${c.ok ? 'yes' : '**no**'} | ${c.by} |`);
      out.push('');
    }
  }
  out.push('', '## Plots', '', '![latency percentiles vs connections](latency-vs-load.svg)', '', '![Bit-FLOPs per request](bitflops-distribution.svg)', '');
  return out.join('\n');
}

export function writeReport(dir: string, r: Report, bitflopsSamples: readonly number[]): string[] {
  mkdirSync(dir, { recursive: true });
  const xs = r.steps.map((s) => s.client.connections);
  const files: Array<[string, string]> = [
    ['report.json', JSON.stringify(r, null, 2) + '\n'],
    ['report.md', markdown(r)],
    [
      'latency-vs-load.svg',
      lineSvg(
        xs,
        (['p50', 'p90', 'p95', 'p99'] as const).map((q) => ({ name: q, ys: r.steps.map((s) => s.client.latencyMs[q]) })),
        'Latency percentiles vs load',
        'connections',
        'latency (ms)',
      ),
    ],
    ['bitflops-distribution.svg', histogramSvg(bitflopsSamples, 'Bit-FLOPs per request (all steps)', 'Bit-FLOPs')],
  ];
  for (const [name, text] of files) writeFileSync(join(dir, name), text);
  return files.map(([name]) => join(dir, name));
}
