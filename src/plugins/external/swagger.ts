// OpenAPI document (from the routes' TypeBox schemas) and the docs page at /docs (JSON at /docs/json).
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';

export async function registerSwagger(app: FastifyInstance, version: string): Promise<void> {
  await app.register(swagger, {
    openapi: {
      info: {
        title: 'dqserve',
        description: 'Adaptive-precision (DQNet) image classification with per-request Bit-FLOPs. See docs/api.md.',
        version,
      },
      tags: [
        { name: 'classify', description: 'Convenience upload route' },
        { name: 'oip', description: 'Open Inference Protocol v2 (KServe / Triton)' },
        { name: 'health', description: 'Liveness and readiness' },
      ],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
}
