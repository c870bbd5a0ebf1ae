// GET /v2: server metadata, listing the protocol extensions we implement.
import type { FastifyInstance } from 'fastify';
import type { RouteContext } from '../../app.js';
import { ServerMetadata } from '../../protocol/oip-schemas.js';
import { SERVER_VERSION } from '../../version.js';

export const EXTENSIONS = ['binary_tensor_data', 'classification', 'parameters', 'statistics', 'dqserve_cost'];

export async function serverRoutes(app: FastifyInstance, _ctx: RouteContext): Promise<void> {
  app.get('/v2', { schema: { tags: ['oip'], response: { 200: ServerMetadata } } }, async () => ({
    name: 'dqserve',
    version: SERVER_VERSION,
    extensions: EXTENSIONS,
  }));
}
