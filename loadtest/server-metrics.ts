// Server-side truth: /metrics scraped before and after a step; the report shows these deltas beside the
// client's own figures (docs/metrics.md for what each counter means).
import { scrape, value, type Sample } from './prometheus-text.js';

export interface ServerDelta {
  readonly requestsOk: number;
  readonly requestsFailed: number;
  /** Failures by DQ_ERR_* reason. */
  readonly failuresByReason: Record<string, number>;
  readonly inferences: number;
  readonly bitflops: number;
  readonly bitflopsReference: number;
  readonly meanBitflops: number | null;
  readonly savings: number | null;
  /** Mean queue wait per image, ms. */
  readonly meanQueueMs: number | null;
  /** Mean pipeline time per successful request (decode, queue, model, cost), ms. */
  readonly meanRequestMs: number | null;
  /** Mean per phase (preprocess per request; controller and layers per batch), ms. */
  readonly meanPhaseMs: Record<string, number | null>;
  readonly batches: number;
  readonly meanBatchSize: number | null;
  /** HTTP responses with status 503 (queue full, queue timeout, draining), from http_request_duration_seconds. */
  readonly http503: number;
}

/** Requests the server has finished (pipeline outcomes) and HTTP responses it has sent, leaving out its own /metrics scrapes. */
const finished = (samples: readonly Sample[]) =>
  `${value(samples, 'dqserve_requests_total')}/${value(samples, 'http_request_duration_seconds_count') - value(samples, 'http_request_duration_seconds_count', { route: '/metrics' })}`;

/**
 * /metrics once the server has gone quiet: nothing queued and nothing finished across two scrapes `quietMs`
 * apart (longer than a batch takes here), or `maxWaitMs` passed. A closed-loop step abandons its in-flight
 * requests when it stops; scraping only after they have finished keeps them out of the next step's deltas.
 * Null when /metrics cannot be read.
 */
export async function scrapeSettled(url: string, maxWaitMs: number, quietMs = 250): Promise<Sample[] | null> {
  const deadline = performance.now() + maxWaitMs;
  const timeout = () => Math.max(1000, Math.round(deadline - performance.now())); // AbortSignal.timeout takes an integer
  try {
    let last = await scrape(url, timeout());
    for (;;) {
      await new Promise((r) => setTimeout(r, quietMs));
      const now = await scrape(url, timeout());
      if ((finished(now) === finished(last) && value(now, 'dqserve_pending_requests') === 0) || performance.now() > deadline) return now;
      last = now;
    }
  } catch {
    return null;
  }
}

export function serverDelta(before: readonly Sample[], after: readonly Sample[]): ServerDelta {
  const d = (name: string, labels: Record<string, string> = {}) => value(after, name, labels) - value(before, name, labels);
  const mean = (sum: number, count: number, scale = 1) => (count > 0 ? (sum / count) * scale : null);
  const failuresByReason: Record<string, number> = {};
  for (const s of after) {
    if (s.name !== 'dqserve_requests_total' || s.labels['outcome'] !== 'failure') continue;
    const reason = s.labels['reason'] ?? '?';
    const n = d('dqserve_requests_total', { outcome: 'failure', reason });
    if (n > 0) failuresByReason[reason] = n;
  }
  const bitflops = d('dqserve_bitflops_total');
  const reference = d('dqserve_bitflops_reference_total');
  const inferences = d('dqserve_inferences_total');
  const phases: Record<string, number | null> = {};
  for (const phase of ['preprocess', 'controller', 'layers']) {
    phases[phase] = mean(d('dqserve_phase_duration_seconds_sum', { phase }), d('dqserve_phase_duration_seconds_count', { phase }), 1000);
  }
  const batches = d('dqserve_batch_size_count');
  return {
    requestsOk: d('dqserve_requests_total', { outcome: 'success' }),
    requestsFailed: d('dqserve_requests_total', { outcome: 'failure' }),
    failuresByReason,
    inferences,
    bitflops,
    bitflopsReference: reference,
    meanBitflops: mean(bitflops, inferences),
    savings: reference > 0 ? 1 - bitflops / reference : null,
    meanQueueMs: mean(d('dqserve_queue_duration_seconds_sum'), d('dqserve_queue_duration_seconds_count'), 1000),
    meanRequestMs: mean(d('dqserve_request_duration_seconds_sum'), d('dqserve_request_duration_seconds_count'), 1000),
    meanPhaseMs: phases,
    batches,
    meanBatchSize: mean(d('dqserve_batch_size_sum'), batches),
    http503: d('http_request_duration_seconds_count', { status_code: '503' }),
  };
}
