// GET /v2/models[/{m}[/versions/{v}]]/stats: Triton's statistics extension (docs/protocol/extension_statistics.md)
// plus our Bit-FLOPs sums under `dqserve`. Durations are cumulative nanoseconds with a count, as Triton's.
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { RouteContext } from '../../app.js';
import { DqError } from '../../errors.js';
import type { Duration, PrometheusRecorder } from '../../metrics/prometheus-recorder.js';
import type { ModelPipeline } from '../../pipeline/model-pipeline.js';
import { ErrorResponse } from '../../protocol/oip-schemas.js';

const Dur = Type.Object({ count: Type.Integer(), ns: Type.Integer() });
const ModelStat = Type.Object({
  name: Type.String(),
  version: Type.String(),
  last_inference: Type.Integer({ description: 'ms since the epoch of the last image classified (0: none yet)' }),
  inference_count: Type.Integer({ description: 'images classified' }),
  execution_count: Type.Integer({ description: 'batches run' }),
  inference_stats: Type.Object({
    success: Dur,
    fail: Dur,
    queue: Dur,
    compute_input: Dur,
    compute_infer: Dur,
    compute_output: Dur,
    cache_hit: Dur,
    cache_miss: Dur,
  }),
  batch_stats: Type.Array(Type.Object({ batch_size: Type.Integer(), compute_input: Dur, compute_infer: Dur, compute_output: Dur })),
  memory_usage: Type.Array(Type.Object({ type: Type.String(), id: Type.Integer(), byte_size: Type.Integer() })),
  dqserve: Type.Object({
    bitflops: Type.Number({ description: 'Bit-FLOPs executed, summed over images' }),
    bitflops_reference: Type.Number({ description: 'the same images at the reference bit-width' }),
    savings: Type.Number({ description: '1 − bitflops / bitflops_reference (0 before any image)' }),
    mean_bitflops: Type.Number({ description: 'bitflops / inference_count (0 before any image)' }),
    budget_lowered: Type.Integer({ description: 'images whose bits a per-request Bit-FLOPs cap lowered' }),
    budget_below_minimum: Type.Integer({ description: 'requests refused: cap below the cheapest configuration' }),
    target: Type.Union([Type.Null(), Type.Object({ target: Type.Number(), knob: Type.Number(), running_mean: Type.Number() })]),
  }),
});
const StatsResponse = Type.Object({ model_stats: Type.Array(ModelStat) });
type Params = { name?: string; version?: string };
const NameParams = Type.Object({ name: Type.String() });
const VersionParams = Type.Object({ name: Type.String(), version: Type.String() });

export async function statsRoutes(app: FastifyInstance, ctx: RouteContext): Promise<void> {
  const schema = { tags: ['oip'], summary: 'Statistics extension (Triton) with Bit-FLOPs sums', response: { 200: StatsResponse, 400: ErrorResponse, 404: ErrorResponse } };
  const handler = async (request: { params: unknown }) => {
    const recorder = ctx.recorder;
    if (!recorder) throw new DqError('DQ_ERR_ROUTE_NOT_FOUND', 'statistics are not enabled');
    const p = request.params as Params;
    let pipelines: ModelPipeline[];
    if (p.name === undefined) pipelines = ctx.registry.all();
    else if (p.version === undefined) {
      ctx.registry.get(p.name); // 404 for an unknown model
      pipelines = ctx.registry.versions(p.name).map((v) => ctx.registry.get(p.name, v));
    } else pipelines = [ctx.registry.get(p.name, p.version)];
    return { model_stats: pipelines.map((pl) => modelStat(recorder, pl)) };
  };
  app.get('/v2/models/stats', { schema }, handler);
  app.get('/v2/models/:name/stats', { schema: { ...schema, params: NameParams } }, handler);
  app.get('/v2/models/:name/versions/:version/stats', { schema: { ...schema, params: VersionParams } }, handler);
}

function modelStat(recorder: PrometheusRecorder, p: ModelPipeline): Static<typeof ModelStat> {
  const s = recorder.statsOf(p.name, p.version);
  const none = (): Duration => ({ count: 0, ns: 0 });
  const t = p.targetState;
  return {
    name: p.name,
    version: String(p.version),
    last_inference: s.last_inference,
    inference_count: s.inference_count,
    execution_count: s.execution_count,
    inference_stats: {
      success: s.success,
      fail: s.fail,
      queue: s.queue,
      compute_input: s.compute_input,
      compute_infer: s.compute_infer,
      compute_output: s.compute_output,
      cache_hit: none(),
      cache_miss: none(),
    },
    // Preprocessing and postprocessing run per request, outside batches: a batch's input/output time is 0.
    batch_stats: [...s.batches.entries()]
      .sort(([a], [b]) => a - b)
      .map(([size, b]) => ({ batch_size: size, compute_input: { count: b.compute_infer.count, ns: 0 }, compute_infer: b.compute_infer, compute_output: { count: b.compute_infer.count, ns: 0 } })),
    memory_usage: [],
    dqserve: {
      bitflops: s.bitflops,
      bitflops_reference: s.bitflops_reference,
      savings: s.bitflops_reference > 0 ? 1 - s.bitflops / s.bitflops_reference : 0,
      mean_bitflops: s.inference_count > 0 ? s.bitflops / s.inference_count : 0,
      budget_lowered: s.budget.lowered,
      budget_below_minimum: s.budget.below_minimum,
      target: t ? { target: t.target, knob: t.knob, running_mean: t.runningMean } : null,
    },
  };
}
