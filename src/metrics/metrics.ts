// Every Prometheus metric dqserve exports, defined here and nowhere else (docs/metrics.md lists them).
// Names follow docs/serving-conventions (Prometheus practice): prefix dqserve_, base units (seconds),
// `_total` on counters, histograms rather than summaries so that replicas aggregate. Labels are `model`
// and `version` only, plus bounded ones: `outcome`/`reason` (catalogue codes), `phase`, `layer`/`bits`
// (dynamic layers × candidates), `event`. Never a per-request value.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, exponentialBuckets } from 'prom-client';

const MV = ['model', 'version'] as const;

/** Seconds: 0.5 ms … 30 s. */
const SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Bit-FLOPs per image: 1e7 … ~2e11 in steps of √2 (CIFAR ResNet-20 at 3–5 bits is ~1e9, ResNet-18 on ImageNet ~1e11). */
const BITFLOPS = exponentialBuckets(1e7, Math.SQRT2, 30);
const MEAN_BITS = [1, 2, 2.5, 3, 3.25, 3.5, 3.75, 4, 4.25, 4.5, 4.75, 5, 5.5, 6, 7, 8, 16, 32];
const BATCH = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

export interface MetricsOptions {
  /** Also export Triton's nv_inference_* counters (config.tritonMetrics). */
  readonly triton: boolean;
}

export type Metrics = ReturnType<typeof defineMetrics>;

/** Defines every metric on a fresh registry (one per server, so tests can run several in one process). */
export function defineMetrics(options: MetricsOptions) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const r = { registers: [registry] };
  const native = {
    // Per HTTP route (conventions: fastify-metrics' name and labels); `route` is the route pattern, never the URL.
    http: new Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP requests by method, route pattern (unmatched for 404s) and status code',
      labelNames: ['method', 'route', 'status_code'],
      buckets: SECONDS,
      ...r,
    }),
    requests: new Counter({
      name: 'dqserve_requests_total',
      help: 'Inference requests that reached a model, by outcome (success|failure) and reason (ok or a DQ_ERR_* code)',
      labelNames: [...MV, 'outcome', 'reason'],
      ...r,
    }),
    inferences: new Counter({ name: 'dqserve_inferences_total', help: 'Images classified (a /v2 request may carry several)', labelNames: MV, ...r }),
    requestDuration: new Histogram({
      name: 'dqserve_request_duration_seconds',
      help: 'Time from a request reaching the model pipeline until its answer is ready, successful requests',
      labelNames: MV,
      buckets: SECONDS,
      ...r,
    }),
    queueDuration: new Histogram({
      name: 'dqserve_queue_duration_seconds',
      help: 'Time an image waited in the dynamic batcher before its batch started',
      labelNames: MV,
      buckets: SECONDS,
      ...r,
    }),
    phaseDuration: new Histogram({
      name: 'dqserve_phase_duration_seconds',
      help: 'Time per phase: preprocess (per request: decode, resize), controller (per batch: the stem graph, fixed layers + bit-controller; 0 for a static model), layers (per batch: the body graph, dynamic layers + head; the whole graph for a static model)',
      labelNames: [...MV, 'phase'],
      buckets: SECONDS,
      ...r,
    }),
    batchSize: new Histogram({ name: 'dqserve_batch_size', help: 'Images per batch run on the engine', labelNames: MV, buckets: BATCH, ...r }),
    pending: new Gauge({ name: 'dqserve_pending_requests', help: 'Images waiting in the batching queue, not yet in a batch', labelNames: MV, ...r }),
    bitflops: new Counter({ name: 'dqserve_bitflops_total', help: 'Bit-FLOPs executed (docs/bitflops.md), summed over classified images', labelNames: MV, ...r }),
    bitflopsReference: new Counter({
      name: 'dqserve_bitflops_reference_total',
      help: 'Bit-FLOPs the same images would have cost with every dynamic layer at the reference bit-width',
      labelNames: MV,
      ...r,
    }),
    savingsRatio: new Gauge({
      name: 'dqserve_bitflops_savings_ratio',
      help: 'Convenience: 1 - dqserve_bitflops_total / dqserve_bitflops_reference_total since start (use rates in PromQL)',
      labelNames: MV,
      ...r,
    }),
    imageBitflops: new Histogram({ name: 'dqserve_image_bitflops', help: 'Bit-FLOPs per classified image', labelNames: MV, buckets: BITFLOPS, ...r }),
    imageMeanBits: new Histogram({
      name: 'dqserve_image_mean_bits',
      help: 'Unweighted mean bit-width over the dynamic layers, per classified image',
      labelNames: MV,
      buckets: MEAN_BITS,
      ...r,
    }),
    layerBits: new Counter({
      name: 'dqserve_layer_bits_total',
      help: 'Images that ran a dynamic layer at a bit-width (layer × candidate: bounded)',
      labelNames: [...MV, 'layer', 'bits'],
      ...r,
    }),
    secondPasses: new Counter({
      name: 'dqserve_second_passes_total',
      help: 'Images a gated model ran twice: unconfident after pass 1, answered by the second pass (both counted in dqserve_bitflops_total)',
      labelNames: MV,
      ...r,
    }),
    budget: new Counter({
      name: 'dqserve_budget_events_total',
      help: 'Per-request Bit-FLOPs caps: event=lowered (an image\'s bits were lowered to fit), below_minimum (request refused, 400)',
      labelNames: [...MV, 'event'],
      ...r,
    }),
    engineRestarts: new Counter({
      name: 'dqserve_engine_restarts_total',
      help: 'Engine worker threads that exited while serving and were replaced (their in-flight batches failed)',
      labelNames: MV,
      ...r,
    }),
    targetBitflops: new Gauge({ name: 'dqserve_target_bitflops', help: 'Server-wide target mean Bit-FLOPs per image (--target-bitflops; absent when unset)', labelNames: MV, ...r }),
    targetKnob: new Gauge({ name: 'dqserve_target_knob', help: 'The knob λ the target controller currently applies', labelNames: MV, ...r }),
    targetMean: new Gauge({
      name: 'dqserve_target_running_mean_bitflops',
      help: 'Mean Bit-FLOPs per image over the target controller\'s recent window (the value it holds at the target)',
      labelNames: MV,
      ...r,
    }),
  };
  const triton = options.triton
    ? {
        success: new Counter({ name: 'nv_inference_request_success', help: 'Triton-compatible: successful requests', labelNames: MV, ...r }),
        failure: new Counter({ name: 'nv_inference_request_failure', help: 'Triton-compatible: failed requests', labelNames: [...MV, 'reason'], ...r }),
        count: new Counter({ name: 'nv_inference_count', help: 'Triton-compatible: inferences performed (images)', labelNames: MV, ...r }),
        execCount: new Counter({ name: 'nv_inference_exec_count', help: 'Triton-compatible: batches executed', labelNames: MV, ...r }),
        pending: new Gauge({ name: 'nv_inference_pending_request_count', help: 'Triton-compatible: images waiting in the queue', labelNames: MV, ...r }),
        requestUs: new Counter({ name: 'nv_inference_request_duration_us', help: 'Triton-compatible: cumulative request duration (µs)', labelNames: MV, ...r }),
        queueUs: new Counter({ name: 'nv_inference_queue_duration_us', help: 'Triton-compatible: cumulative queue duration (µs)', labelNames: MV, ...r }),
        inputUs: new Counter({ name: 'nv_inference_compute_input_duration_us', help: 'Triton-compatible: cumulative preprocess duration (µs)', labelNames: MV, ...r }),
        inferUs: new Counter({ name: 'nv_inference_compute_infer_duration_us', help: 'Triton-compatible: cumulative model run duration (µs)', labelNames: MV, ...r }),
        outputUs: new Counter({ name: 'nv_inference_compute_output_duration_us', help: 'Triton-compatible: cumulative postprocess duration (µs)', labelNames: MV, ...r }),
      }
    : null;
  return { registry, ...native, triton };
}
