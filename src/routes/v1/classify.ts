// POST /v1/classify: one image as the raw body (image/* or application/octet-stream) or as the
// multipart field "image"; JSON with the label, top-k, bits per dynamic layer, Bit-FLOPs and timings.
import multipart from '@fastify/multipart';
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { RouteContext } from '../../app.js';
import { DqError } from '../../errors.js';
import { combineCaps, MAX_BITFLOPS_HEADER, parseMaxBitflops } from '../../protocol/budget.js';
import { ErrorResponse } from '../../protocol/oip-schemas.js';
import type { ClassifyResult, ModelPipeline } from '../../pipeline/model-pipeline.js';
import { clientGone } from '../client-gone.js';
import { serverTiming } from '../server-timing.js';
import { shedWhenFull } from '../shed-early.js';

/** Raw-body media types the route documents (any image/* is accepted); multipart comes on top. */
export const RAW_UPLOAD_TYPES = ['image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/tiff', 'image/avif', 'application/octet-stream'];

const Query = Type.Object({
  top_k: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'classes to return (default: server setting)' })),
  model: Type.Optional(Type.String({ minLength: 1, description: 'model name (default: the default model)' })),
  version: Type.Optional(Type.String({ pattern: '^[1-9][0-9]*$', description: 'model version (default: latest)' })),
  knob: Type.Optional(Type.Number({ description: 'λ: > 0 moves the controller to cheaper bit-widths, < 0 to costlier ones' })),
  precision: Type.Optional(Type.Integer({ minimum: 1, maximum: 32, description: 'force every dynamic layer to this bit-width' })),
  max_bitflops: Type.Optional(Type.String({ description: 'cap on this image\'s Bit-FLOPs: the controller\'s choice is lowered until it fits (also header x-dqserve-max-bitflops)' })),
}, { additionalProperties: false });
type Query = Static<typeof Query>;

const Entry = Type.Object({ index: Type.Integer(), label: Type.String(), score: Type.Number() });
const ClassifyResponse = Type.Object({
  model: Type.String(),
  version: Type.Integer(),
  label: Type.String(),
  index: Type.Integer(),
  score: Type.Number(),
  top_k: Type.Array(Entry),
  bits: Type.Record(Type.String(), Type.Integer(), { description: 'bit-width chosen per dynamic layer (pass 1\'s for a gated model)' }),
  passes: Type.Integer({ minimum: 1, maximum: 2, description: 'body passes run: 2 when a gated model\'s second pass answered' }),
  second_pass_bits: Type.Union([Type.Record(Type.String(), Type.Integer()), Type.Null()], { description: 'bit-width per dynamic layer of the second pass, null without one' }),
  mean_bits: Type.Number(),
  bitflops: Type.Number(),
  bitflops_reference: Type.Number(),
  savings: Type.Number(),
  batch_size: Type.Integer({ description: 'size of the batch this image ran in' }),
  budget_lowered: Type.Boolean({ description: 'max_bitflops lowered the controller\'s choice or left out a second pass' }),
  timing: Type.Object(
    { queue: Type.Number(), preprocess: Type.Number(), controller: Type.Number(), layers: Type.Number(), total: Type.Number() },
    { description: 'milliseconds' },
  ),
});

export async function classifyRoutes(app: FastifyInstance, ctx: RouteContext): Promise<void> {
  const { config } = ctx;
  app.removeAllContentTypeParsers();
  // media type parameters (`image/jpeg; charset=binary`) are allowed and ignored
  for (const type of ['application/octet-stream', /^image\/[\w.+-]+\s*(;.*)?$/]) {
    app.addContentTypeParser(type as string, { parseAs: 'buffer', bodyLimit: config.maxImageBytes }, (_req, body, done) => done(null, body));
  }
  await app.register(multipart, {
    limits: { files: 1, fileSize: config.maxImageBytes, fields: 4, parts: 5, fieldSize: 1024, headerPairs: 100 },
  });

  app.post(
    '/v1/classify',
    {
      bodyLimit: config.maxImageBytes,
      onRequest: shedWhenFull((request) => {
        const q = request.query as Query;
        return ctx.registry.get(q.model, q.version);
      }),
      schema: {
        tags: ['classify'],
        summary: 'Classify one image',
        consumes: [...RAW_UPLOAD_TYPES, 'multipart/form-data'],
        querystring: Query,
        response: { 200: ClassifyResponse, 400: ErrorResponse, 404: ErrorResponse, 413: ErrorResponse, 415: ErrorResponse, 503: ErrorResponse },
      },
    },
    async (request, reply) => {
      const q = request.query as Query;
      const pipeline = ctx.registry.get(q.model, q.version);
      const maxBitflops = combineCaps(
        parseMaxBitflops(q.max_bitflops, 'max_bitflops'),
        parseMaxBitflops(request.headers[MAX_BITFLOPS_HEADER], MAX_BITFLOPS_HEADER),
      );
      const image = await readImage(request);
      const [r] = await pipeline.classify([image], {
        knob: q.knob ?? null,
        precision: q.precision ?? null,
        topK: q.top_k ?? config.defaultTopK,
        timeoutMs: config.requestTimeoutMs,
        maxBitflops,
        signal: clientGone(reply),
      });
      const result = r as ClassifyResult;
      reply.header('server-timing', serverTiming(result.timing));
      return toJson(pipeline, result);
    },
  );
}

async function readImage(request: FastifyRequest): Promise<Buffer> {
  if (request.isMultipart()) {
    // exactly one part, the file "image": another part is refused, not silently skipped (nor read to its end);
    // a second file trips the plugin's `files: 1` limit (FST_FILES_LIMIT) before it reaches this loop
    let image: Buffer | undefined;
    for await (const part of request.parts()) {
      if (part.type !== 'file' || part.fieldname !== 'image') throw new DqError('DQ_ERR_REQUEST_MULTIPART_INVALID', `got ${part.type === 'file' ? 'file' : 'text'} field "${part.fieldname}"`);
      image = await part.toBuffer();
    }
    if (!image) throw new DqError('DQ_ERR_REQUEST_MULTIPART_INVALID', 'no file');
    if (image.length === 0) throw new DqError('DQ_ERR_REQUEST_EMPTY_BODY');
    return image;
  }
  const body = request.body;
  if (body === undefined || body === null) {
    if (request.headers['content-type'] === undefined) throw new DqError('DQ_ERR_REQUEST_UNSUPPORTED_MEDIA_TYPE', 'send Content-Type image/* or application/octet-stream');
    throw new DqError('DQ_ERR_REQUEST_EMPTY_BODY');
  }
  if (!Buffer.isBuffer(body)) throw new DqError('DQ_ERR_REQUEST_UNSUPPORTED_MEDIA_TYPE');
  if (body.length === 0) throw new DqError('DQ_ERR_REQUEST_EMPTY_BODY');
  return body;
}

function toJson(p: ModelPipeline, r: ClassifyResult): Static<typeof ClassifyResponse> {
  const byLayer = (values: readonly number[]) => Object.fromEntries(p.dynamicLayers.map((name, i) => [name, values[i] as number]));
  return {
    model: p.name,
    version: p.version,
    label: r.label,
    index: r.index,
    score: r.score,
    top_k: r.topK.map((e) => ({ index: e.index, label: e.label, score: e.score })),
    bits: byLayer(r.bits),
    passes: r.secondBits ? 2 : 1,
    second_pass_bits: r.secondBits ? byLayer(r.secondBits) : null,
    mean_bits: r.meanBits,
    bitflops: r.bitflops,
    bitflops_reference: r.bitflopsReference,
    savings: r.savings,
    batch_size: r.batchSize,
    budget_lowered: r.budgetLowered,
    timing: {
      queue: r.timing.queueMs,
      preprocess: r.timing.preprocessMs,
      controller: r.timing.controllerMs,
      layers: r.timing.layersMs,
      total: r.timing.totalMs,
    },
  };
}
