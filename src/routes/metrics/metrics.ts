// GET /metrics: Prometheus text exposition of every dqserve_* metric (docs/metrics.md), the process and
// Node defaults, and with --triton-metrics Triton's nv_inference_* counters.
import type { FastifyInstance } from 'fastify';
import type { RouteContext } from '../../app.js';
import { DqError } from '../../errors.js';

export async function metricsRoutes(app: FastifyInstance, ctx: RouteContext): Promise<void> {
  app.get('/metrics', { schema: { tags: ['metrics'], summary: 'Prometheus metrics', hide: false } }, async (_request, reply) => {
    if (!ctx.recorder) throw new DqError('DQ_ERR_ROUTE_NOT_FOUND', 'metrics are not enabled');
    const { contentType, body } = await ctx.recorder.scrape();
    return reply.type(contentType).send(body);
  });
}
