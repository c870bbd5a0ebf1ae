// The budget file: what a load test must meet. JSON, validated with a TypeBox schema; every violation
// is reported on one line ("budget.json: /latencyMs/p95: Expected number").
import { readFileSync } from 'node:fs';
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';

const Positive = (description: string) => Type.Number({ exclusiveMinimum: 0, description });
const Ratio = (description: string) => Type.Number({ minimum: 0, maximum: 1, description });

export const BudgetSchema = Type.Object(
  {
    $schema: Type.Optional(Type.String()),
    description: Type.Optional(Type.String()),
    latencyMs: Type.Optional(
      Type.Object(
        { p50: Type.Optional(Positive('p50 latency limit, ms')), p95: Type.Optional(Positive('p95 latency limit, ms')), p99: Type.Optional(Positive('p99 latency limit, ms')) },
        { additionalProperties: false },
      ),
    ),
    minThroughputRps: Type.Optional(Positive('successful requests per second, at least')),
    maxErrorRate: Type.Optional(Ratio('failed requests (non-2xx, socket errors, timeouts) / all requests, at most')),
    maxMeanBitflops: Type.Optional(Positive('mean Bit-FLOPs per successful request, at most')),
    minSavings: Type.Optional(Type.Number({ maximum: 1, description: '1 − Σbitflops / Σbitflops_reference, at least' })),
    minGoodputRps: Type.Optional(Positive('goodput (requests/s within both per-request limits below), at least')),
    goodput: Type.Optional(
      Type.Object(
        {
          maxLatencyMs: Type.Optional(Positive('a request is good when its latency is at most this (default: the tightest latencyMs limit)')),
          maxBitflops: Type.Optional(Positive('... and its Bit-FLOPs at most this (default: maxMeanBitflops)')),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);
export type Budget = Static<typeof BudgetSchema>;

export class BudgetFileError extends Error {}

/** Parses and validates; throws BudgetFileError with a one-line message naming the file and the first problems. */
export function parseBudget(text: string, source: string): Budget {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new BudgetFileError(`${source}: not valid JSON (${(err as Error).message})`);
  }
  const errors = [...Value.Errors(BudgetSchema, json)].slice(0, 3);
  if (errors.length > 0) {
    throw new BudgetFileError(`${source}: ${errors.map((e) => `${e.path || '/'}: ${e.message}`).join('; ')}`);
  }
  const b = json as Budget;
  const limits = Object.keys(b).filter((k) => k !== '$schema' && k !== 'description' && k !== 'goodput' && k !== 'latencyMs');
  if (limits.length === 0 && Object.keys(b.latencyMs ?? {}).length === 0) {
    throw new BudgetFileError(`${source}: sets no limit (give latencyMs, minThroughputRps, maxErrorRate, maxMeanBitflops, minSavings or minGoodputRps): an empty budget would pass any run`);
  }
  return b;
}

export function readBudget(path: string): Budget {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new BudgetFileError(`${path}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  return parseBudget(text, path);
}

/** The per-request limits that define goodput. */
export function goodputLimits(b: Budget): { maxLatencyMs: number | null; maxBitflops: number | null } {
  const lat = [b.latencyMs?.p50, b.latencyMs?.p95, b.latencyMs?.p99].filter((x): x is number => x !== undefined);
  return {
    maxLatencyMs: b.goodput?.maxLatencyMs ?? (lat.length ? Math.min(...lat) : null),
    maxBitflops: b.goodput?.maxBitflops ?? b.maxMeanBitflops ?? null,
  };
}

/** What the check reads from a step's client figures. */
export interface Measured {
  /** null when no request succeeded. */
  readonly latencyMs: { readonly p50: number | null; readonly p95: number | null; readonly p99: number | null };
  readonly throughputRps: number;
  readonly errorRate: number;
  readonly meanBitflops: number | null;
  readonly savings: number | null;
  readonly goodputRps: number;
}

export interface Check {
  readonly name: string;
  readonly limit: string;
  readonly measured: number | null;
  readonly bound: number;
  readonly kind: 'max' | 'min';
  readonly unit: string;
  readonly ok: boolean;
  /** How far off, as `+12.3 ms (+24.6%)`; empty when met. */
  readonly by: string;
}

/**
 * Every limit the budget sets, checked against `m`. Latency percentiles count failed requests at the request
 * timeout (StepResult.latencyMs); a figure that could not be measured (no request at all, or no successful
 * response for Bit-FLOPs) fails.
 */
export function checkBudget(b: Budget, m: Measured): Check[] {
  const out: Check[] = [];
  const add = (name: string, kind: 'max' | 'min', bound: number | undefined, measured: number | null, unit: string) => {
    if (bound === undefined) return;
    const ok = measured !== null && Number.isFinite(measured) && (kind === 'max' ? measured <= bound : measured >= bound);
    const diff = measured === null ? NaN : measured - bound;
    const by = ok ? '' : measured === null ? 'not measured' : `${diff > 0 ? '+' : ''}${fmt(diff)}${unit}${bound !== 0 ? ` (${diff > 0 ? '+' : ''}${((diff / bound) * 100).toFixed(1)}%)` : ''}`;
    out.push({ name, limit: `${kind === 'max' ? '≤' : '≥'} ${fmt(bound)}${unit}`, measured, bound, kind, unit, ok, by });
  };
  add('latency p50', 'max', b.latencyMs?.p50, m.latencyMs.p50, ' ms');
  add('latency p95', 'max', b.latencyMs?.p95, m.latencyMs.p95, ' ms');
  add('latency p99', 'max', b.latencyMs?.p99, m.latencyMs.p99, ' ms');
  add('throughput', 'min', b.minThroughputRps, m.throughputRps, ' req/s');
  add('error rate', 'max', b.maxErrorRate, m.errorRate, '');
  add('mean Bit-FLOPs', 'max', b.maxMeanBitflops, m.meanBitflops, '');
  add('savings', 'min', b.minSavings, m.savings, '');
  add('goodput', 'min', b.minGoodputRps, m.goodputRps, ' req/s');
  return out;
}

export function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a >= 1e6) return x.toExponential(3);
  if (a >= 100) return x.toFixed(0);
  if (a >= 1) return x.toFixed(2);
  return String(Number(x.toPrecision(3)));
}
