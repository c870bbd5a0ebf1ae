// The InferenceRecorder behind GET /metrics and GET /v2/models/{m}/stats: feeds the metrics of metrics.ts
// and keeps Triton statistics-extension sums per model version (docs/metrics.md).
import type { StageTiming } from '../engine/engine.js';
import type { ClassifyResult } from '../pipeline/model-pipeline.js';
import { defineMetrics, type Metrics, type MetricsOptions } from './metrics.js';
import type { BudgetEvent, InferenceRecorder } from './recorder.js';

/** Something whose state is read at scrape time (a model pipeline). */
export interface ScrapeSource {
  readonly name: string;
  readonly version: number;
  readonly pending: number;
  readonly dynamicLayers: readonly string[];
  readonly targetState: { readonly target: number; readonly knob: number; readonly runningMean: number } | null;
}

/** Triton's StatisticDuration: a count and a total in nanoseconds. */
export interface Duration {
  count: number;
  ns: number;
}

export interface ModelStats {
  last_inference: number;
  inference_count: number;
  execution_count: number;
  success: Duration;
  fail: Duration;
  queue: Duration;
  compute_input: Duration;
  compute_infer: Duration;
  compute_output: Duration;
  batches: Map<number, { compute_infer: Duration }>;
  bitflops: number;
  bitflops_reference: number;
  budget: Record<BudgetEvent, number>;
}

const ns = (ms: number) => Math.max(0, Math.round(ms * 1e6));
const add = (d: Duration, ms: number) => {
  d.count++;
  d.ns += ns(ms);
};
const zero = (): Duration => ({ count: 0, ns: 0 });

export class PrometheusRecorder implements InferenceRecorder {
  readonly metrics: Metrics;
  private readonly stats = new Map<string, ModelStats>();
  private sources: readonly ScrapeSource[] = [];
  private readonly children = new Map<object, Map<string, unknown>>();

  constructor(options: MetricsOptions) {
    this.metrics = defineMetrics(options);
  }

  /** The pipelines whose queue and target state the gauges show; their zero-valued series exist from the start. */
  watch(sources: readonly ScrapeSource[]): void {
    this.sources = sources;
    const m = this.metrics;
    for (const s of sources) {
      const l = labels(s.name, s.version);
      this.at(m.requests, { ...l, outcome: 'success', reason: 'ok' }).inc(0);
      this.at(m.inferences, l).inc(0);
      this.at(m.bitflops, l).inc(0);
      this.at(m.bitflopsReference, l).inc(0);
      this.at(m.engineRestarts, l).inc(0); // present at 0, so that an alert on increase() sees the first restart
      this.entry(s.name, s.version);
    }
  }

  /** Prometheus text exposition, gauges refreshed from the sources first. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    const m = this.metrics;
    for (const s of this.sources) {
      const l = labels(s.name, s.version);
      this.at(m.pending, l).set(s.pending);
      m.triton?.pending.labels(l).set(s.pending);
      const st = this.stats.get(key(s.name, s.version));
      if (st && st.bitflops_reference > 0) this.at(m.savingsRatio, l).set(1 - st.bitflops / st.bitflops_reference);
      const t = s.targetState;
      if (t) {
        this.at(m.targetBitflops, l).set(t.target);
        this.at(m.targetKnob, l).set(t.knob);
        this.at(m.targetMean, l).set(t.runningMean);
      }
    }
    return { contentType: m.registry.contentType, body: await m.registry.metrics() };
  }

  /** Triton statistics-extension sums for one model version (a copy). */
  statsOf(model: string, version: number): ModelStats {
    const s = this.entry(model, version);
    return { ...s, batches: new Map(s.batches), budget: { ...s.budget } };
  }

  /** One HTTP response sent (any route, metrics included). */
  onHttpResponse(method: string, route: string | undefined, statusCode: number, seconds: number): void {
    this.at(this.metrics.http, { method, route: route ?? 'unmatched', status_code: String(statusCode) }).observe(seconds);
  }

  onResult(model: string, version: number, r: ClassifyResult): void {
    const m = this.metrics;
    const l = labels(model, version);
    this.at(m.inferences, l).inc();
    this.at(m.bitflops, l).inc(r.bitflops);
    this.at(m.bitflopsReference, l).inc(r.bitflopsReference);
    this.at(m.imageBitflops, l).observe(r.bitflops);
    this.at(m.imageMeanBits, l).observe(r.meanBits);
    const layers = this.sources.find((s) => s.name === model && s.version === version)?.dynamicLayers;
    const perModel = key(model, version);
    for (let i = 0; i < r.bits.length; i++) {
      const b = r.bits[i] as number;
      this.at(m.layerBits, `${perModel}\u0000${i}\u0000${b}`, () => ({ ...l, layer: layers?.[i] ?? String(i), bits: String(b) })).inc();
    }
    if (r.secondBits) this.at(m.secondPasses, l).inc();
    if (r.budgetLowered) this.onBudget(model, version, 'lowered');
    if (m.triton) this.at(m.triton.count, l).inc();
    const s = this.entry(model, version);
    s.inference_count++;
    s.bitflops += r.bitflops;
    s.bitflops_reference += r.bitflopsReference;
    s.last_inference = Date.now();
  }

  onSuccess(model: string, version: number, results: readonly ClassifyResult[], durationMs: number): void {
    const m = this.metrics;
    const l = labels(model, version);
    this.at(m.requests, { ...l, outcome: 'success', reason: 'ok' }).inc();
    this.at(m.requestDuration, l).observe(durationMs / 1000);
    // Triton's per-request split: queue and compute_infer of the request's slowest image; input = preprocess.
    const preprocess = results[0]?.timing.preprocessMs ?? 0;
    const queue = Math.max(0, ...results.map((r) => r.timing.queueMs));
    const infer = Math.max(0, ...results.map((r) => r.timing.controllerMs + r.timing.layersMs));
    const output = Math.max(0, durationMs - preprocess - queue - infer);
    this.at(m.phaseDuration, { ...l, phase: 'preprocess' }).observe(preprocess / 1000);
    const s = this.entry(model, version);
    add(s.success, durationMs);
    add(s.queue, queue);
    add(s.compute_input, preprocess);
    add(s.compute_infer, infer);
    add(s.compute_output, output);
    const t = m.triton;
    if (t) {
      this.at(t.success, l).inc();
      this.at(t.requestUs, l).inc(durationMs * 1000);
      this.at(t.queueUs, l).inc(queue * 1000);
      this.at(t.inputUs, l).inc(preprocess * 1000);
      this.at(t.inferUs, l).inc(infer * 1000);
      this.at(t.outputUs, l).inc(output * 1000);
    }
  }

  onFailure(model: string, version: number, code: string, durationMs: number): void {
    const l = labels(model, version);
    this.at(this.metrics.requests, { ...l, outcome: 'failure', reason: code }).inc();
    if (this.metrics.triton) this.at(this.metrics.triton.failure, { ...l, reason: code }).inc();
    add(this.entry(model, version).fail, durationMs);
  }

  onBatch(model: string, version: number, batchSize: number, timing: StageTiming): void {
    const m = this.metrics;
    const l = labels(model, version);
    this.at(m.batchSize, l).observe(batchSize);
    this.at(m.phaseDuration, { ...l, phase: 'controller' }).observe(timing.controllerMs / 1000);
    this.at(m.phaseDuration, { ...l, phase: 'layers' }).observe(timing.layersMs / 1000);
    if (m.triton) this.at(m.triton.execCount, l).inc();
    const s = this.entry(model, version);
    s.execution_count++;
    let b = s.batches.get(batchSize);
    if (!b) s.batches.set(batchSize, (b = { compute_infer: zero() }));
    add(b.compute_infer, timing.controllerMs + timing.layersMs);
  }

  onBudget(model: string, version: number, event: BudgetEvent): void {
    this.at(this.metrics.budget, { ...labels(model, version), event }).inc();
    this.entry(model, version).budget[event]++;
  }

  onQueueWait(model: string, version: number, waitMs: number): void {
    this.at(this.metrics.queueDuration, labels(model, version)).observe(waitMs / 1000);
  }

  onEngineRestart(model: string, version: number): void {
    this.at(this.metrics.engineRestarts, labels(model, version)).inc();
  }

  /**
   * metric.labels(values), remembered: prom-client validates, sorts and hashes the labels on every call, which
   * was most of this recorder's cost at a thousand requests a second (a dozen calls per image).
   */
  private at<C>(metric: { labels(values: Record<string, string>): C }, values: Record<string, string> | string,
    make?: () => Record<string, string>): C {
    let children = this.children.get(metric);
    if (!children) this.children.set(metric, (children = new Map()));
    const k = typeof values === 'string' ? values : Object.values(values).join('\u0000');
    let c = children.get(k) as C | undefined;
    if (!c) children.set(k, (c = metric.labels(typeof values === 'string' ? (make as () => Record<string, string>)() : values)));
    return c;
  }

  private entry(model: string, version: number): ModelStats {
    const k = key(model, version);
    let s = this.stats.get(k);
    if (!s) {
      s = {
        last_inference: 0,
        inference_count: 0,
        execution_count: 0,
        success: zero(),
        fail: zero(),
        queue: zero(),
        compute_input: zero(),
        compute_infer: zero(),
        compute_output: zero(),
        batches: new Map(),
        bitflops: 0,
        bitflops_reference: 0,
        budget: { lowered: 0, below_minimum: 0 },
      };
      this.stats.set(k, s);
    }
    return s;
  }
}

const key = (model: string, version: number) => `${model}\u0000${version}`;
const labels = (model: string, version: number) => ({ model, version: String(version) });
