// OIP v2 health probes. 200 with a small JSON body (both versions of the spec), 503 when not ready.
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { RouteContext } from '../../app.js';
import { DqError } from '../../errors.js';
import { ErrorResponse } from '../../protocol/oip-schemas.js';

export async function healthRoutes(app: FastifyInstance, ctx: RouteContext): Promise<void> {
  // Only what a restart cures fails liveness: a device lost for the rest of the process (readiness fails with it).
  const failIfLost = (): void => {
    const lost = ctx.registry.lost;
    if (lost) throw new DqError('DQ_ERR_ENGINE_LOST', `${lost.model}: ${lost.why}`);
  };
  app.get(
    '/v2/health/live',
    { schema: { tags: ['health'], response: { 200: Type.Object({ live: Type.Boolean() }), 500: ErrorResponse } } },
    async () => {
      failIfLost();
      return { live: true };
    },
  );
  app.get(
    '/v2/health/ready',
    { schema: { tags: ['health'], response: { 200: Type.Object({ ready: Type.Boolean() }), 500: ErrorResponse, 503: ErrorResponse } } },
    async () => {
      if (ctx.state.closing) throw new DqError('DQ_ERR_SERVER_SHUTTING_DOWN');
      failIfLost();
      if (!ctx.registry.ready) throw new DqError('DQ_ERR_MODEL_NOT_READY', 'warming up');
      return { ready: true };
    },
  );
}
