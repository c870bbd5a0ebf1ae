import { readFileSync } from 'node:fs';
import { deflateRawSync, deflateSync, gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fakeManifest } from '../../src/engine/fake-manifest.js';
import { serializeBytesElements } from '../../src/protocol/oip-infer.js';
import type { RunningServer } from '../../src/server.js';
import { cifarSample } from '../helpers/cifar.js';
import { PHOTOS_DIR } from '../helpers/paths.js';
import { postImage, startTestServer } from '../helpers/server.js';

let server: RunningServer;
let url: string;
const rocket = readFileSync(join(PHOTOS_DIR, 'rocket.jpg'));
const chelsea = readFileSync(join(PHOTOS_DIR, 'chelsea.png'));
const M = 'fake_dq';

beforeAll(async () => {
  server = await startTestServer();
  url = server.url;
});
afterAll(async () => server.close());

async function infer(body: unknown, path = `/v2/models/${M}/infer`, headers: Record<string, string> = { 'content-type': 'application/json' }) {
  const res = await fetch(url + path, { method: 'POST', headers, body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body) });
  const buf = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, buf, json: res.headers.get('content-type')?.includes('json') ? JSON.parse(buf.toString()) : undefined };
}

const BINARY_HEADER = '{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":50}}]}';
const jsonInput = (imgs: Buffer[]) => ({ inputs: [{ name: 'image', shape: [imgs.length], datatype: 'BYTES', data: imgs.map((b) => b.toString('base64')) }] });

describe('OIP v2 metadata and health', () => {
  it('GET /v2 lists the extensions', async () => {
    const j = await (await fetch(`${url}/v2`)).json();
    expect(j).toMatchObject({ name: 'dqserve', extensions: expect.arrayContaining(['binary_tensor_data', 'classification']) });
  });

  it('health probes answer 200 with JSON', async () => {
    expect(await (await fetch(`${url}/v2/health/live`)).json()).toEqual({ live: true });
    expect(await (await fetch(`${url}/v2/health/ready`)).json()).toEqual({ ready: true });
  });

  it('model metadata states the full-precision cost: every layer at 32 × 32 bits', async () => {
    const j = (await (await fetch(`${url}/v2/models/${M}`)).json()) as any;
    const macs = fakeManifest().layers.reduce((a, l) => a + l.macs, 0);
    expect(j.parameters.bitflops_full_precision).toBe(macs * 1024);
  });

  it('model metadata and readiness, with and without a version', async () => {
    for (const p of [`/v2/models/${M}`, `/v2/models/${M}/versions/1`]) {
      const j = (await (await fetch(url + p)).json()) as any;
      expect(j.name).toBe(M);
      expect(j.inputs).toEqual([{ name: 'image', datatype: 'BYTES', shape: [-1] }]);
      expect(j.outputs.map((o: { name: string }) => o.name)).toEqual(['logits', 'probabilities', 'bits']);
      expect(await (await fetch(`${url}${p}/ready`)).json()).toEqual({ name: M, ready: true });
    }
  });

  it('unknown model or version: 404 with a code', async () => {
    for (const [p, code] of [
      ['/v2/models/nope', 'DQ_ERR_MODEL_NOT_FOUND'],
      [`/v2/models/${M}/versions/9`, 'DQ_ERR_MODEL_VERSION_NOT_FOUND'],
      [`/v2/models/${M}/versions/abc/ready`, 'DQ_ERR_MODEL_VERSION_NOT_FOUND'],
    ]) {
      const res = await fetch(url + p!);
      expect(res.status).toBe(404);
      expect(((await res.json()) as { code: string }).code).toBe(code);
    }
    const r = await infer(jsonInput([rocket]), '/v2/models/nope/versions/1/infer');
    expect(r.status).toBe(404);
  });
});

describe('POST /v2/models/{m}/infer', () => {
  it('takes base64 BYTES in JSON and returns logits, probabilities, bits and cost parameters', async () => {
    const r = await infer({ id: 'req-1', ...jsonInput([rocket, chelsea]) });
    expect(r.status).toBe(200);
    const j = r.json;
    expect(j).toMatchObject({ model_name: M, model_version: '1', id: 'req-1' });
    const [logits, probs, bits] = j.outputs;
    expect(logits).toMatchObject({ name: 'logits', datatype: 'FP32', shape: [2, 10] });
    expect(probs.data.slice(0, 10).reduce((a: number, b: number) => a + b, 0)).toBeCloseTo(1, 5);
    expect(bits).toMatchObject({ name: 'bits', datatype: 'INT32', shape: [2, 4] });
    expect(j.parameters.dqserve_bits).toMatch(/^[345]{4},[345]{4}$/);
    expect(j.parameters.dqserve_bitflops_reference).toBe(2 * server.registry.get().manifest.bitflops.reference);
    expect(j.parameters.dqserve_savings).toBeCloseTo(1 - j.parameters.dqserve_bitflops / j.parameters.dqserve_bitflops_reference, 12);

    // The same image through /v1/classify gives the same class and bits.
    const v1 = await postImage(url, rocket);
    const row = logits.data.slice(0, 10) as number[];
    expect(row.indexOf(Math.max(...row))).toBe(v1.json.index);
    expect(bits.data.slice(0, 4)).toEqual(Object.values(v1.json.bits));
  });

  it('accepts {"b64": ...} elements and [N,1] shapes', async () => {
    const r = await infer({ inputs: [{ name: 'image', shape: [1, 1], datatype: 'BYTES', data: [[{ b64: rocket.toString('base64') }]] }] });
    expect(r.status).toBe(200);
  });

  it('classification extension: top-k "value:index:label" strings', async () => {
    const r = await infer({ ...jsonInput([rocket]), outputs: [{ name: 'probabilities', parameters: { classification: 3 } }, { name: 'logits', parameters: { classification: 1 } }] });
    expect(r.status).toBe(200);
    const [p, l] = r.json.outputs;
    expect(p).toMatchObject({ name: 'probabilities', datatype: 'BYTES', shape: [1, 3] });
    expect(p.data[0]).toMatch(/^0\.\d{6}:\d:[a-z]+$/);
    expect(l.data[0].split(':')[1]).toBe(p.data[0].split(':')[1]);
  });

  it("binary tensor data extension: JSON header + length-prefixed BYTES, binary outputs", async () => {
    const imgs = (await cifarSample(1)).slice(0, 3).map((i) => i.bytes);
    const data = serializeBytesElements(imgs);
    const header = Buffer.from(
      JSON.stringify({
        inputs: [{ name: 'image', shape: [3], datatype: 'BYTES', parameters: { binary_data_size: data.length } }],
        outputs: [{ name: 'logits', parameters: { binary_data: true } }, { name: 'bits' }],
      }),
    );
    const r = await infer(Buffer.concat([header, data]), undefined, { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(header.length) });
    expect(r.status).toBe(200);
    const hlen = Number(r.headers.get('inference-header-content-length'));
    const head = JSON.parse(r.buf.subarray(0, hlen).toString());
    expect(head.outputs[0]).toMatchObject({ name: 'logits', shape: [3, 10], parameters: { binary_data_size: 120 } });
    const logits = new Float32Array(r.buf.buffer.slice(r.buf.byteOffset + hlen, r.buf.byteOffset + hlen + 120));
    const json = await infer(jsonInput(imgs));
    expect(Array.from(logits)).toEqual(json.json.outputs[0].data.map((v: number) => Math.fround(v)));
    expect(head.outputs[1].data).toEqual(json.json.outputs[2].data);
  });

  it('Inference-Header-Content-Length: 0 takes the whole body as the image', async () => {
    const r = await infer(rocket, undefined, { 'content-type': 'application/octet-stream', 'inference-header-content-length': '0' });
    expect(r.status).toBe(200);
    expect(r.json.outputs[0].shape).toEqual([1, 10]);
  });

  const bad: Array<[string, unknown, Record<string, string> | undefined, number, string]> = [
    ['malformed JSON', '{"inputs": [', undefined, 400, 'DQ_ERR_REQUEST_MALFORMED_JSON'],
    ['an empty body', '', undefined, 400, 'DQ_ERR_REQUEST_EMPTY_BODY'],
    ['no inputs', { inputs: [] }, undefined, 400, 'DQ_ERR_REQUEST_INVALID'],
    ['inputs not an array', { inputs: 'x' }, undefined, 400, 'DQ_ERR_REQUEST_INVALID'],
    ['a wrong input name', { inputs: [{ name: 'pixels', shape: [1], datatype: 'BYTES', data: ['AAAA'] }] }, undefined, 400, 'DQ_ERR_OIP_INVALID_INPUT'],
    ['a wrong datatype', { inputs: [{ name: 'image', shape: [1, 3], datatype: 'FP32', data: [1, 2, 3] }] }, undefined, 400, 'DQ_ERR_OIP_INVALID_INPUT'],
    ['a shape that disagrees with data', { inputs: [{ name: 'image', shape: [2], datatype: 'BYTES', data: [rocket.toString('base64')] }] }, undefined, 400, 'DQ_ERR_OIP_INVALID_INPUT'],
    ['invalid base64', { inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: ['!!not base64!!'] }] }, undefined, 400, 'DQ_ERR_OIP_INVALID_INPUT'],
    ['a number as BYTES element', { inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [42] }] }, undefined, 400, 'DQ_ERR_OIP_INVALID_INPUT'],
    ['base64 of a non-image', { inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [Buffer.from('hello').toString('base64')] }] }, undefined, 415, 'DQ_ERR_PREPROCESS_UNSUPPORTED_FORMAT'],
    ['an unknown output', { ...jsonInput([rocket]), outputs: [{ name: 'features' }] }, undefined, 400, 'DQ_ERR_OIP_INVALID_OUTPUT'],
    ['data nested deeper than its shape', { inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [[rocket.toString('base64')]] }] }, undefined, 400, 'DQ_ERR_OIP_INVALID_INPUT'],
    [
      'data nested 5,000 levels deep (10 KB)',
      `{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES","data":${'['.repeat(5000)}"AAAA"${']'.repeat(5000)}}]}`,
      undefined,
      400,
      'DQ_ERR_OIP_INVALID_INPUT',
    ],
    ['an output requested twice', { ...jsonInput([rocket]), outputs: [{ name: 'logits' }, { name: 'logits' }] }, undefined, 400, 'DQ_ERR_OIP_INVALID_OUTPUT'],
    ['a Content-Encoding we do not decode', JSON.stringify(jsonInput([rocket])), { 'content-type': 'application/json', 'content-encoding': 'br' }, 415, 'DQ_ERR_REQUEST_UNSUPPORTED_ENCODING'],
    ['a gzip body that is not gzip', JSON.stringify(jsonInput([rocket])), { 'content-type': 'application/json', 'content-encoding': 'gzip' }, 400, 'DQ_ERR_REQUEST_INVALID'],
    ['a bad classification count', { ...jsonInput([rocket]), outputs: [{ name: 'logits', parameters: { classification: 0 } }] }, undefined, 400, 'DQ_ERR_OIP_INVALID_OUTPUT'],
    ['a bad knob', { ...jsonInput([rocket]), parameters: { dqserve_knob: 'high' } }, undefined, 400, 'DQ_ERR_REQUEST_INVALID_PARAMETER'],
    ['a non-candidate precision', { ...jsonInput([rocket]), parameters: { dqserve_precision: 8 } }, undefined, 400, 'DQ_ERR_REQUEST_INVALID_PARAMETER'],
    ['a header length beyond the body', '{}', { 'content-type': 'application/octet-stream', 'inference-header-content-length': '999' }, 400, 'DQ_ERR_OIP_BINARY_INVALID'],
    // (HTTP itself trims spaces around a header value)
    ...['', '0x2', '2e0', '-0', '2.0'].map((h): [string, unknown, Record<string, string>, number, string] => [`a header length of ${JSON.stringify(h)}`, '{}', { 'content-type': 'application/octet-stream', 'inference-header-content-length': h }, 400, 'DQ_ERR_OIP_BINARY_INVALID']),
    [
      'binary_data_size that disagrees with the body',
      Buffer.concat([Buffer.from(BINARY_HEADER), Buffer.alloc(10)]),
      { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(BINARY_HEADER.length) },
      400,
      'DQ_ERR_OIP_BINARY_INVALID',
    ],
  ];

  it.each(bad)('rejects %s', async (_name, body, headers, status, code) => {
    const r = await infer(body, undefined, headers);
    expect(r.status).toBe(status);
    expect(r.json).toEqual({ error: expect.any(String), code });
    expect((await fetch(`${url}/v2/health/ready`)).status).toBe(200);
  });

  it('decompresses gzip and deflate bodies (as Triton\'s clients send them), JSON and binary alike', async () => {
    const json = Buffer.from(JSON.stringify(jsonInput([rocket])));
    const plain = await infer(json);
    for (const [coding, body] of [['gzip', gzipSync(json)], ['deflate', deflateSync(json)], ['deflate', deflateRawSync(json)], ['x-gzip', gzipSync(json)]] as const) {
      const r = await infer(body, undefined, { 'content-type': 'application/json', 'content-encoding': coding });
      expect([coding, r.status]).toEqual([coding, 200]);
      expect(r.json.outputs).toEqual(plain.json.outputs);
    }
    const header = Buffer.from(BINARY_HEADER.replace('50', String(rocket.length + 4)));
    const binary = Buffer.concat([header, serializeBytesElements([rocket])]);
    const r = await infer(gzipSync(binary), undefined, { 'content-type': 'application/octet-stream', 'content-encoding': 'gzip', 'inference-header-content-length': String(header.length) });
    expect(r.status).toBe(200);
  });

  it('a small compressed body that inflates beyond the byte limit is a 413, and the server goes on', async () => {
    const small = await startTestServer({ maxRequestBytes: 100_000 });
    try {
      const bomb = gzipSync(Buffer.alloc(50_000_000, 32)); // ~50 KB that inflates to 50 MB of spaces
      const res = await fetch(`${small.url}/v2/models/${M}/infer`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: bomb });
      expect(res.status).toBe(413);
      expect(((await res.json()) as { code: string }).code).toBe('DQ_ERR_REQUEST_TOO_LARGE');
      expect((await fetch(`${small.url}/v2/health/ready`)).status).toBe(200);
    } finally {
      await small.close();
    }
  });

  it('one bad image in a batch fails the request with its index and the decoder\'s reason', async () => {
    const r = await infer(jsonInput([rocket, Buffer.from('nope')]));
    expect(r.status).toBe(415);
    expect(r.json.error).toMatch(/image 1/);
    const truncated = await infer(jsonInput([rocket, rocket.subarray(0, 20_000)]));
    expect(truncated.status).toBe(400);
    expect(truncated.json.error).toMatch(/image 1: .+/);
    const empty = await infer(jsonInput([rocket, Buffer.alloc(0)]));
    expect(empty.json).toEqual({ code: 'DQ_ERR_OIP_INVALID_INPUT', error: expect.stringContaining('image 1 is empty') });
  });

  it('JSON null is an invalid request, and a huge timeout is capped, not overflowed into an instant timeout', async () => {
    const res = await fetch(`${url}/v2/models/${M}/infer`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'null' });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { code: string }).code).toBe('DQ_ERR_REQUEST_INVALID');
    const r = await infer({ ...jsonInput([rocket]), parameters: { timeout: 1e15 } });
    expect(r.status).toBe(200);
  });
});

describe('per-request pixel budget', () => {
  it("refuses a request whose images' headers declare more than --max-request-pixels, before decoding", async () => {
    const small = await startTestServer({ maxRequestPixels: 3000 });
    try {
      const imgs = (await cifarSample(3)).map((s) => s.bytes); // 1,024 pixels each
      const post = (n: number) =>
        fetch(`${small.url}/v2/models/${M}/infer`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(jsonInput(imgs.slice(0, n))) });
      expect((await post(2)).status).toBe(200);
      const res = await post(3);
      expect(res.status).toBe(413);
      expect(await res.json()).toMatchObject({ code: 'DQ_ERR_PREPROCESS_TOO_MANY_PIXELS', error: expect.stringContaining('declare 3072 pixels, over the limit of 3000 per request') });
    } finally {
      await small.close();
    }
  });
});
