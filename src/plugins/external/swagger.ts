// OpenAPI document (from the routes' TypeBox schemas) and the docs page at /docs (JSON at /docs/json).
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import type { OpenAPIV3 } from 'openapi-types';
import { RAW_UPLOAD_TYPES } from '../../routes/v1/classify.js';

const BINARY: OpenAPIV3.MediaTypeObject = { schema: { type: 'string', format: 'binary' } };

/**
 * The request bodies the routes' schemas cannot say (they are parsed as buffers, not validated): the
 * upload route's image or multipart file, and the infer routes' binary tensor extension, so that the docs
 * page can send them.
 */
function documentBodies(doc: OpenAPIV3.Document): OpenAPIV3.Document {
  const classify = doc.paths['/v1/classify']?.post;
  if (classify) {
    classify.requestBody = {
      required: true,
      description: 'the encoded image as the body, or as the only part of a multipart body, the file field "image"',
      content: {
        ...Object.fromEntries(RAW_UPLOAD_TYPES.map((t) => [t, BINARY])),
        'multipart/form-data': { schema: { type: 'object', required: ['image'], properties: { image: { type: 'string', format: 'binary' } } } },
      },
    };
  }
  for (const [path, item] of Object.entries(doc.paths)) {
    const body = path.endsWith('/infer') ? (item?.post?.requestBody as OpenAPIV3.RequestBodyObject | undefined) : undefined;
    if (!body) continue;
    body.description = 'JSON, or with the header Inference-Header-Content-Length: the JSON header followed by binary tensor data (docs/api.md)';
    body.content['application/octet-stream'] = BINARY;
  }
  return doc;
}

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
    transformObject: (d) => ('openapiObject' in d ? documentBodies(d.openapiObject as OpenAPIV3.Document) : d.swaggerObject),
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
}
