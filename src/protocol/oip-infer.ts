// OIP v2 infer: request decoding and response encoding, with Triton's binary tensor data and
// classification extensions, and our cost parameters (prefix dqserve_). Wire format <-> pipeline types.
import { MAX_REQUEST_TIMEOUT_MS } from '../config.js';
import { DqError } from '../errors.js';
import { parseMaxBitflops } from './budget.js';
import type { ClassifyResult } from '../pipeline/model-pipeline.js';
import type { InferInput, InferRequest, InferResponse, OutputTensor } from './oip-schemas.js';

export const INPUT_NAME = 'image';
export const OUTPUT_NAMES = ['logits', 'probabilities', 'bits'] as const;
type OutputName = (typeof OUTPUT_NAMES)[number];

export interface OutputRequest {
  readonly name: OutputName;
  /** Classification extension: top-k strings instead of the tensor. */
  readonly classification: number | null;
  readonly binary: boolean;
}

export interface DecodedInfer {
  readonly id: string | undefined;
  readonly images: Buffer[];
  /** null: not given (the server's λ: the target controller's, or 0). */
  readonly knob: number | null;
  readonly precision: number | null;
  /** `dqserve_max_bitflops`: per-image Bit-FLOPs cap, or null. */
  readonly maxBitflops: number | null;
  /** From Triton's `timeout` parameter (µs), converted to ms; null = server default. */
  readonly timeoutMs: number | null;
  readonly outputs: readonly OutputRequest[];
}

export interface EncodedInfer {
  readonly json: InferResponse;
  /** Binary output chunks in output order (binary tensor data extension); empty when all outputs are JSON. */
  readonly binary: Buffer[];
}

export interface ModelView {
  readonly name: string;
  readonly version: number;
  readonly classes: readonly string[];
  readonly dynamicLayers: readonly string[];
}

/** Splits a binary-extension body: the first `Inference-Header-Content-Length` bytes are JSON. */
export function splitBinaryBody(body: Buffer, headerLength: number): { json: Buffer; binary: Buffer } {
  if (!Number.isInteger(headerLength) || headerLength < 0 || headerLength > body.length) {
    throw new DqError('DQ_ERR_OIP_BINARY_INVALID', `Inference-Header-Content-Length ${headerLength} does not fit a ${body.length}-byte body`);
  }
  return { json: body.subarray(0, headerLength), binary: body.subarray(headerLength) };
}

/** BYTES tensor elements in binary form: each is a 4-byte little-endian length then the bytes. */
export function parseBytesElements(buf: Buffer): Buffer[] | null {
  const out: Buffer[] = [];
  let at = 0;
  while (at < buf.length) {
    if (at + 4 > buf.length) return null;
    const len = buf.readUInt32LE(at);
    at += 4;
    if (at + len > buf.length) return null;
    out.push(buf.subarray(at, at + len));
    at += len;
  }
  return out;
}

export function serializeBytesElements(items: readonly Buffer[]): Buffer {
  const parts: Buffer[] = [];
  for (const item of items) {
    const len = Buffer.alloc(4);
    len.writeUInt32LE(item.length);
    parts.push(len, item);
  }
  return Buffer.concat(parts);
}

/**
 * A raw body sent with `Inference-Header-Content-Length: 0` is the binary data of the single input:
 * length-prefixed BYTES elements when it parses as exactly that, otherwise one encoded image
 * (no image format starts with a length prefix that fits the body).
 */
export function rawBodyRequest(body: Buffer): { request: InferRequest; binary: Buffer } {
  const elements = parseBytesElements(body);
  const binary = elements && elements.length > 0 ? body : serializeBytesElements([body]);
  const n = elements && elements.length > 0 ? elements.length : 1;
  return {
    request: { inputs: [{ name: INPUT_NAME, shape: [n], datatype: 'BYTES', parameters: { binary_data_size: binary.length } }] },
    binary,
  };
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

export function decodeInferRequest(req: InferRequest, binary: Buffer, maxImages: number): DecodedInfer {
  if (req.inputs.length !== 1) throw new DqError('DQ_ERR_OIP_INVALID_INPUT', `expected exactly one input "${INPUT_NAME}", got ${req.inputs.length}`);
  const input = req.inputs[0] as InferInput;
  if (input.name !== INPUT_NAME) throw new DqError('DQ_ERR_OIP_INVALID_INPUT', `unknown input "${input.name}" (the model takes "${INPUT_NAME}")`);
  if (input.datatype !== 'BYTES') throw new DqError('DQ_ERR_OIP_INVALID_INPUT', `input "${INPUT_NAME}" is BYTES (encoded images), not ${input.datatype}`);
  const count = input.shape.reduce((a, b) => a * b, 1);
  if (input.shape.length === 0 || input.shape.some((d) => d < 1) || (input.shape.length > 1 && input.shape.slice(1).some((d) => d !== 1))) {
    throw new DqError('DQ_ERR_OIP_INVALID_INPUT', `shape ${JSON.stringify(input.shape)} must be [N] (or [N,1])`);
  }
  if (count > maxImages) throw new DqError('DQ_ERR_OIP_INVALID_INPUT', `${count} images exceed the limit of ${maxImages} per request`);

  let images: Buffer[];
  const binarySize = input.parameters?.['binary_data_size'];
  if (binarySize !== undefined) {
    if (typeof binarySize !== 'number' || !Number.isInteger(binarySize) || binarySize < 0 || binarySize !== binary.length) {
      throw new DqError('DQ_ERR_OIP_BINARY_INVALID', `binary_data_size ${String(binarySize)} but ${binary.length} bytes follow the JSON header`);
    }
    if (input.data !== undefined) throw new DqError('DQ_ERR_OIP_INVALID_INPUT', 'an input has either data or binary_data_size, not both');
    const parsed = parseBytesElements(binary);
    if (!parsed) throw new DqError('DQ_ERR_OIP_BINARY_INVALID', 'BYTES elements must be 4-byte little-endian lengths followed by the bytes');
    images = parsed;
  } else {
    if (binary.length > 0) throw new DqError('DQ_ERR_OIP_BINARY_INVALID', `${binary.length} bytes follow the JSON header but no input has binary_data_size`);
    if (input.data === undefined) throw new DqError('DQ_ERR_OIP_INVALID_INPUT', 'input has no data');
    const base64 = input.parameters?.['dqserve_base64'] ?? true;
    if (typeof base64 !== 'boolean') throw new DqError('DQ_ERR_REQUEST_INVALID_PARAMETER', 'dqserve_base64 must be a boolean');
    images = flatten(input.data, input.shape.length).map((el, i) => jsonElement(el, i, base64));
  }
  if (images.length !== count) {
    throw new DqError('DQ_ERR_OIP_INVALID_INPUT', `shape ${JSON.stringify(input.shape)} says ${count} images, data holds ${images.length}`);
  }
  const empty = images.findIndex((b) => b.length === 0);
  if (empty >= 0) throw new DqError('DQ_ERR_OIP_INVALID_INPUT', `image ${empty} is empty`);

  const p = req.parameters ?? {};
  const knob = p['dqserve_knob'] ?? null;
  if (knob !== null && (typeof knob !== 'number' || !Number.isFinite(knob))) throw new DqError('DQ_ERR_REQUEST_INVALID_PARAMETER', 'dqserve_knob must be a number');
  const precision = p['dqserve_precision'];
  if (precision !== undefined && (typeof precision !== 'number' || !Number.isInteger(precision))) {
    throw new DqError('DQ_ERR_REQUEST_INVALID_PARAMETER', 'dqserve_precision must be an integer bit-width');
  }
  const timeout = p['timeout'];
  if (timeout !== undefined && (typeof timeout !== 'number' || !Number.isInteger(timeout) || timeout <= 0)) {
    throw new DqError('DQ_ERR_REQUEST_INVALID_PARAMETER', 'timeout must be a positive integer (microseconds)');
  }
  const binaryDefault = p['binary_data_output'] ?? false;
  if (typeof binaryDefault !== 'boolean') throw new DqError('DQ_ERR_REQUEST_INVALID_PARAMETER', 'binary_data_output must be a boolean');

  return {
    id: req.id,
    images,
    knob: knob as number | null,
    precision: precision ?? null,
    maxBitflops: parseMaxBitflops(p['dqserve_max_bitflops'], 'dqserve_max_bitflops'),
    // at most the ceiling of --request-timeout-ms (an hour): 1e15 µs once overflowed the timer to 1 ms
    timeoutMs: timeout === undefined ? null : Math.min(MAX_REQUEST_TIMEOUT_MS, Math.max(1, Math.ceil(timeout / 1000))),
    outputs: decodeOutputs(req, binaryDefault),
  };
}

function decodeOutputs(req: InferRequest, binaryDefault: boolean): OutputRequest[] {
  if (!req.outputs || req.outputs.length === 0) return OUTPUT_NAMES.map((name) => ({ name, classification: null, binary: binaryDefault }));
  const seen = new Set<string>();
  return req.outputs.map((o) => {
    if (!(OUTPUT_NAMES as readonly string[]).includes(o.name)) {
      throw new DqError('DQ_ERR_OIP_INVALID_OUTPUT', `unknown output "${o.name}" (have ${OUTPUT_NAMES.join(', ')})`);
    }
    if (seen.has(o.name)) throw new DqError('DQ_ERR_OIP_INVALID_OUTPUT', `output "${o.name}" is requested twice`);
    seen.add(o.name);
    const k = o.parameters?.['classification'];
    if (k !== undefined && (typeof k !== 'number' || !Number.isInteger(k) || k < 1)) {
      throw new DqError('DQ_ERR_OIP_INVALID_OUTPUT', 'classification must be a positive integer');
    }
    if (k !== undefined && o.name === 'bits') throw new DqError('DQ_ERR_OIP_INVALID_OUTPUT', 'classification applies to logits or probabilities');
    const binary = o.parameters?.['binary_data'] ?? binaryDefault;
    if (typeof binary !== 'boolean') throw new DqError('DQ_ERR_OIP_INVALID_OUTPUT', 'binary_data must be a boolean');
    return { name: o.name as OutputName, classification: k ?? null, binary };
  });
}

/** The elements of `data`, nested at most `depth` levels as its shape says ([N] or [N,1]): deeper is a 400, not a
 * recursion through whatever nesting a body sends (thousands of `[` overflowed the stack). */
function flatten(data: unknown, depth: number): unknown[] {
  let level: unknown[] = [data];
  for (let d = 0; d < depth; d++) {
    const next: unknown[] = [];
    for (const x of level) {
      if (Array.isArray(x)) next.push(...x);
      else next.push(x);
    }
    level = next;
  }
  if (level.some((x) => Array.isArray(x))) throw new DqError('DQ_ERR_OIP_INVALID_INPUT', `data nests deeper than a shape of ${depth} dimension${depth === 1 ? '' : 's'}`);
  return level;
}

/** A JSON BYTES element: a base64 string (default), `{"b64": "..."}`, or a UTF-8 string when dqserve_base64 is false. */
function jsonElement(el: unknown, i: number, base64: boolean): Buffer {
  if (el !== null && typeof el === 'object' && typeof (el as { b64?: unknown }).b64 === 'string') return fromBase64((el as { b64: string }).b64, i);
  if (typeof el !== 'string') throw new DqError('DQ_ERR_OIP_INVALID_INPUT', `data[${i}] must be a string (base64) or {"b64": string}`);
  return base64 ? fromBase64(el, i) : Buffer.from(el, 'utf8');
}

function fromBase64(s: string, i: number): Buffer {
  const compact = s.replace(/\s+/g, '');
  if (!BASE64.test(compact)) throw new DqError('DQ_ERR_OIP_INVALID_INPUT', `data[${i}] is not valid base64`);
  return Buffer.from(compact, 'base64');
}

export function encodeInferResponse(model: ModelView, decoded: DecodedInfer, results: readonly ClassifyResult[]): EncodedInfer {
  const n = results.length;
  const C = model.classes.length;
  const L = model.dynamicLayers.length;
  const outputs: OutputTensor[] = [];
  const binary: Buffer[] = [];
  for (const o of decoded.outputs) {
    let tensor: { shape: number[]; datatype: string; values: number[] | string[]; raw: Buffer };
    if (o.classification !== null) {
      const k = Math.min(o.classification, C);
      const strings = results.flatMap((r) => topStrings(r, o.name === 'logits', k, model.classes));
      tensor = { shape: [n, k], datatype: 'BYTES', values: strings, raw: serializeBytesElements(strings.map((s) => Buffer.from(s))) };
    } else if (o.name === 'bits') {
      const values = results.flatMap((r) => [...r.bits]);
      tensor = { shape: [n, L], datatype: 'INT32', values, raw: Buffer.from(Int32Array.from(values).buffer) };
    } else {
      const f = new Float32Array(n * C);
      results.forEach((r, i) => f.set(o.name === 'logits' ? r.logits : probabilities(r.logits), i * C));
      tensor = { shape: [n, C], datatype: 'FP32', values: Array.from(f), raw: Buffer.from(f.buffer) };
    }
    if (o.binary) {
      outputs.push({ name: o.name, shape: tensor.shape, datatype: tensor.datatype, parameters: { binary_data_size: tensor.raw.length } });
      binary.push(tensor.raw);
    } else {
      outputs.push({ name: o.name, shape: tensor.shape, datatype: tensor.datatype, data: tensor.values });
    }
  }
  const bitflops = results.reduce((s, r) => s + r.bitflops, 0);
  const reference = results.reduce((s, r) => s + r.bitflopsReference, 0);
  const json: InferResponse = {
    model_name: model.name,
    model_version: String(model.version),
    ...(decoded.id !== undefined ? { id: decoded.id } : {}),
    parameters: {
      dqserve_bitflops: bitflops,
      dqserve_bitflops_reference: reference,
      dqserve_savings: reference > 0 ? 1 - bitflops / reference : 0,
      dqserve_mean_bits: n ? results.reduce((s, r) => s + r.meanBits, 0) / n : 0,
      dqserve_budget_lowered: results.filter((r) => r.budgetLowered).length,
      dqserve_second_passes: results.filter((r) => r.secondBits !== null).length,
      dqserve_bits: results.map((r) => r.bits.join('')).join(','),
      dqserve_dynamic_layers: model.dynamicLayers.join(','),
    },
    outputs,
  };
  return { json, binary };
}

function probabilities(logits: Float32Array): Float32Array {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  const out = logits.map((v) => Math.exp(v - max));
  const sum = out.reduce((a, b) => a + b, 0);
  return out.map((v) => v / sum);
}

/** Triton's classification strings "value:index:label", value being the output's own value (logit or probability). */
function topStrings(r: ClassifyResult, useLogits: boolean, k: number, classes: readonly string[]): string[] {
  const values = useLogits ? r.logits : probabilities(r.logits);
  const order = Array.from(values, (_, i) => i).sort((a, b) => (values[b] as number) - (values[a] as number) || a - b);
  return order.slice(0, k).map((i) => `${(values[i] as number).toFixed(6)}:${i}:${classes[i] ?? i}`);
}
