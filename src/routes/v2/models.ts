// OIP v2 model routes: metadata, readiness and infer, each with and without /versions/{version}.
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { promisify } from 'node:util';
import { gunzip, inflate, inflateRaw } from 'node:zlib';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { RouteContext } from '../../app.js';
import { fullPrecisionBitflops } from '../../cost/bitflops.js';
import { DqError } from '../../errors.js';
import { decodeInferRequest, encodeInferResponse, INPUT_NAME, rawBodyRequest, splitBinaryBody } from '../../protocol/oip-infer.js';
import { combineCaps, MAX_BITFLOPS_HEADER, parseMaxBitflops } from '../../protocol/budget.js';
import { ErrorResponse, InferRequest, InferResponse, ModelMetadata } from '../../protocol/oip-schemas.js';
import type { ModelPipeline } from '../../pipeline/model-pipeline.js';
import { clientGone } from '../client-gone.js';
import { serverTiming } from '../server-timing.js';
import { shedWhenFull } from '../shed-early.js';

const Params = Type.Object({ name: Type.String(), version: Type.Optional(Type.String()) });
type Params = Static<typeof Params>;

const HEADER_LENGTH = 'inference-header-content-length';
const binaryTails = new WeakMap<FastifyRequest, Buffer>();

export async function modelRoutes(app: FastifyInstance, ctx: RouteContext): Promise<void> {
  const resolve = (p: Params): ModelPipeline => ctx.registry.get(p.name, p.version);
  const errors = { 400: ErrorResponse, 404: ErrorResponse, 503: ErrorResponse };

  for (const prefix of ['/v2/models/:name', '/v2/models/:name/versions/:version']) {
    app.get(prefix, { schema: { tags: ['oip'], params: Params, response: { 200: ModelMetadata, ...errors } } }, async (request) => {
      const p = resolve(request.params as Params);
      return metadata(p, ctx);
    });
    app.get(
      `${prefix}/ready`,
      { schema: { tags: ['oip'], params: Params, response: { 200: Type.Object({ name: Type.String(), ready: Type.Boolean() }), ...errors } } },
      async (request) => {
        const p = resolve(request.params as Params);
        if (!p.ready || ctx.state.closing) throw new DqError('DQ_ERR_MODEL_NOT_READY', p.name);
        return { name: p.name, ready: true };
      },
    );
  }

  // Infer lives in its own scope: every Content-Type is read as bytes here, because Triton's binary
  // extension sends JSON followed by raw tensor data (Inference-Header-Content-Length says where JSON ends).
  await app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    // No type coercion here: Ajv's would turn `"classification": 3` into "3" (parameters are string|number|bool).
    scope.setValidatorCompiler(({ schema }) => {
      const check = TypeCompiler.Compile(schema as TSchema);
      return (data: unknown) => {
        if (check.Check(data)) return { value: data };
        const first = check.Errors(data).First();
        const error = Object.assign(new Error(`${first?.path || '/'}: ${first?.message ?? 'invalid'}`), { validation: [first] });
        return { error };
      };
    });
    scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: ctx.config.maxRequestBytes }, (request, body, done) => {
      decodeContent(request, body as Buffer, ctx.config.maxRequestBytes).then(
        (plain) => done(null, parseInferBody(request, plain)),
      ).catch((err: unknown) => done(err as Error, undefined));
    });
    scope.addHook('preValidation', async (request) => {
      if (request.body === undefined) throw new DqError('DQ_ERR_REQUEST_EMPTY_BODY');
      if (request.body === null) throw new DqError('DQ_ERR_REQUEST_INVALID', 'the body is JSON null, not an inference request');
    });
    for (const prefix of ['/v2/models/:name', '/v2/models/:name/versions/:version']) {
      scope.post(
        `${prefix}/infer`,
        {
          bodyLimit: ctx.config.maxRequestBytes,
          onRequest: shedWhenFull((request) => resolve(request.params as Params)),
          schema: { tags: ['oip'], params: Params, body: InferRequest, response: { 200: InferResponse, ...errors, 413: ErrorResponse, 415: ErrorResponse } },
        },
        async (request, reply) => infer(request, reply, resolve(request.params as Params), ctx),
      );
    }
  });
}

const unzip = { gzip: promisify(gunzip), 'x-gzip': promisify(gunzip), deflate: promisify(inflate) } as const;
const inflateRawAsync = promisify(inflateRaw);

/**
 * The body as sent, or decompressed per Content-Encoding (Triton's clients compress requests with gzip or
 * deflate); the decompressed size counts against the same byte limit, so a small bomb is a 413.
 */
async function decodeContent(request: FastifyRequest, body: Buffer, limit: number): Promise<Buffer> {
  const header = request.headers['content-encoding'];
  const coding = (Array.isArray(header) ? header.join(',') : (header ?? '')).trim().toLowerCase();
  if (coding === '' || coding === 'identity') return body;
  if (!(coding in unzip)) throw new DqError('DQ_ERR_REQUEST_UNSUPPORTED_ENCODING', `Content-Encoding: ${coding.slice(0, 40)}`);
  const opts = { maxOutputLength: limit };
  const refuse = (err: unknown): never => {
    if ((err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new DqError('DQ_ERR_REQUEST_TOO_LARGE', `the ${coding} body inflates beyond ${limit} bytes`);
    }
    throw new DqError('DQ_ERR_REQUEST_INVALID', `the body is not valid ${coding} data`);
  };
  try {
    return await unzip[coding as keyof typeof unzip](body, opts);
  } catch (err) {
    // "deflate" in HTTP means zlib-wrapped, but some clients send raw deflate
    if (coding !== 'deflate' || (err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') return refuse(err);
    return inflateRawAsync(body, opts).catch(refuse);
  }
}

function parseInferBody(request: FastifyRequest, body: Buffer): unknown {
  const header = request.headers[HEADER_LENGTH];
  if (header === undefined) {
    if (body.length === 0) throw new DqError('DQ_ERR_REQUEST_EMPTY_BODY');
    return parseJson(body);
  }
  const text = Array.isArray(header) ? header.join(',') : header;
  // digits only: Number() would also take '', ' 10', '0x10' and '1e3'
  if (!/^[0-9]{1,15}$/.test(text)) throw new DqError('DQ_ERR_OIP_BINARY_INVALID', `Inference-Header-Content-Length ${JSON.stringify(text.slice(0, 20))} is not a byte count`);
  const length = Number(text);
  if (body.length === 0) throw new DqError('DQ_ERR_REQUEST_EMPTY_BODY');
  if (length === 0) {
    const { request: synthetic, binary } = rawBodyRequest(body);
    binaryTails.set(request, binary);
    return synthetic;
  }
  const { json, binary } = splitBinaryBody(body, length);
  binaryTails.set(request, binary);
  return parseJson(json);
}

function parseJson(buf: Buffer): unknown {
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch {
    throw new DqError('DQ_ERR_REQUEST_MALFORMED_JSON');
  }
}

async function infer(request: FastifyRequest, reply: FastifyReply, pipeline: ModelPipeline, ctx: RouteContext): Promise<unknown> {
  const decoded = decodeInferRequest(request.body as InferRequest, binaryTails.get(request) ?? Buffer.alloc(0), ctx.config.maxImagesPerRequest);
  const results = await pipeline.classify(decoded.images, {
    knob: decoded.knob,
    precision: decoded.precision,
    topK: 1,
    timeoutMs: decoded.timeoutMs ?? ctx.config.requestTimeoutMs,
    maxBitflops: combineCaps(decoded.maxBitflops, parseMaxBitflops(request.headers[MAX_BITFLOPS_HEADER], MAX_BITFLOPS_HEADER)),
    signal: clientGone(reply),
  });
  const { json, binary } = encodeInferResponse(
    { name: pipeline.name, version: pipeline.version, classes: pipeline.manifest.classes, dynamicLayers: pipeline.dynamicLayers },
    decoded,
    results,
  );
  if (results.length === 1 && results[0]) reply.header('server-timing', serverTiming(results[0].timing));
  if (binary.length === 0) return json;
  const head = Buffer.from(JSON.stringify(json));
  return reply
    .header(HEADER_LENGTH, String(head.length))
    .type('application/octet-stream')
    .send(Buffer.concat([head, ...binary]));
}

function metadata(p: ModelPipeline, ctx: RouteContext): Static<typeof ModelMetadata> {
  const m = p.manifest;
  return {
    name: p.name,
    versions: ctx.registry.versions(p.name).map(String),
    platform: 'dqserve_onnx',
    inputs: [{ name: INPUT_NAME, datatype: 'BYTES', shape: [-1] }],
    outputs: [
      { name: 'logits', datatype: 'FP32', shape: [-1, m.classes.length] },
      { name: 'probabilities', datatype: 'FP32', shape: [-1, m.classes.length] },
      { name: 'bits', datatype: 'INT32', shape: [-1, p.dynamicLayers.length] },
    ],
    parameters: {
      version: p.version,
      kind: m.kind,
      classes: m.classes,
      input: m.input,
      dynamic_layers: p.dynamicLayers,
      candidates: m.bits.candidates,
      bits_reference: m.bits.reference,
      bitflops: m.bitflops,
      bitflops_full_precision: fullPrecisionBitflops(m.layers),
      calibration: m.calibration ?? [],
      // whether the knob can move anything (a gated bundle with fixed first bits has no controller), and its gate
      controller: m.controller != null,
      policy: m.policy ?? null,
      metrics: m.metrics ?? {},
      max_batch_size: ctx.config.maxBatchSize,
    },
  };
}
