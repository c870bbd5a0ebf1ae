// Seeded fuzzing of the HTTP surface with fast-check: mutated real images (truncations, bit flips, splices,
// wrong magic, header size lies with valid CRCs, inserted junk) in every decoded format, through /v1/classify
// (raw and multipart, with hostile query strings) and /v2 infer (JSON and binary, with shape, type, length and
// header lies, and arbitrary JSON). Every answer must be a JSON 2xx/4xx; afterwards the server still answers a
// normal request and its memory has not run away. CI runs FUZZ_RUNS (1,000 by default); `npm run fuzz` 10,000.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.js';
import { cifarSample } from '../helpers/cifar.js';
import { FIXTURES, PHOTOS_DIR } from '../helpers/paths.js';
import { startTestServer } from '../helpers/server.js';

const RUNS = Number(process.env['FUZZ_RUNS'] ?? 1000);
const SEED = Number(process.env['FUZZ_SEED'] ?? 20261201);
const M = 'fake_dq';

let server: RunningServer;
let pool: Buffer[] = [];

beforeAll(async () => {
  server = await startTestServer();
  const cifar = (await cifarSample(1)).map((s) => s.bytes);
  const base = sharp(cifar[0]!).resize(64, 48);
  pool = [
    ...cifar.slice(0, 3),
    readFileSync(join(PHOTOS_DIR, 'grace_hopper.jpg')),
    readFileSync(join(FIXTURES, 'preprocess', 'rgba-64x48.png')),
    readFileSync(join(FIXTURES, 'preprocess', 'grey16-50x38.png')),
    readFileSync(join(FIXTURES, 'preprocess', 'palette-alpha-56x40.gif')),
    readFileSync(join(FIXTURES, 'preprocess', 'exif-6.jpg')),
    readFileSync(join(FIXTURES, 'preprocess', 'progressive-70x45.jpg')),
    await base.clone().png().toBuffer(),
    await base.clone().webp().toBuffer(),
    await base.clone().webp({ lossless: true }).toBuffer(),
    await base.clone().tiff().toBuffer(),
    await base.clone().avif({ effort: 0 }).toBuffer(),
    await base.clone().gif().toBuffer(),
  ];
}, 60_000);
afterAll(async () => server?.close());

// ---- image mutations ------------------------------------------------------------------------------------
const image = () => fc.integer({ min: 0, max: 1000 }).map((i) => pool[i % pool.length]!);

/** Width and height rewritten in a PNG's IHDR (CRC fixed) or a JPEG's SOF: the header lies, consistently. */
function sizeLie(img: Buffer, w: number, h: number): Buffer {
  const out = Buffer.from(img);
  if (out.readUInt32BE(0) === 0x89504e47) {
    out.writeUInt32BE(w, 16);
    out.writeUInt32BE(h, 20);
    out.writeUInt32BE(crc32(out.subarray(12, 29)), 29);
    return out;
  }
  for (let i = 2; i + 9 < out.length; i++) {
    if (out[i] === 0xff && out[i + 1]! >= 0xc0 && out[i + 1]! <= 0xc2) {
      out.writeUInt16BE(h & 0xffff, i + 5);
      out.writeUInt16BE(w & 0xffff, i + 7);
      return out;
    }
  }
  return out;
}

const MAGICS = ['\x89PNG\r\n\x1a\n', '\xff\xd8\xff', 'RIFF\0\0\0\0WEBP', 'GIF89a', 'II*\0', '\0\0\0\x1cftypavif', '<svg', '%PDF-', 'BM'].map((m) => Buffer.from(m, 'latin1'));

/** Mostly honest, sometimes hostile: each field of a case is valid often enough that the next check is reached. */
const usually = <T,>(honest: fc.Arbitrary<T>, hostile: fc.Arbitrary<T>): fc.Arbitrary<T> => fc.oneof({ arbitrary: honest, weight: 3 }, { arbitrary: hostile, weight: 1 });

const mutatedImage: fc.Arbitrary<Buffer> = fc.oneof(
  { arbitrary: image(), weight: 8 },
  fc.tuple(image(), fc.double({ min: 0, max: 1, noNaN: true })).map(([b, f]) => b.subarray(0, Math.floor(b.length * f))),
  fc.tuple(image(), fc.array(fc.tuple(fc.double({ min: 0, max: 1, noNaN: true }), fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 16 })).map(([b, flips]) => {
    const out = Buffer.from(b);
    for (const [pos, bit] of flips) out[Math.floor(pos * (out.length - 1))]! ^= 1 << bit;
    return out;
  }),
  fc.tuple(image(), image(), fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true })).map(([a, b, i, j]) =>
    Buffer.concat([a.subarray(0, Math.floor(a.length * i)), b.subarray(Math.floor(b.length * j))]),
  ),
  fc.tuple(image(), fc.constantFrom(...MAGICS)).map(([b, magic]) => Buffer.concat([magic, b.subarray(magic.length)])),
  fc.tuple(image(), fc.integer({ min: 0, max: 70_000 }), fc.integer({ min: 0, max: 70_000 })).map(([b, w, h]) => sizeLie(b, w, h)),
  fc.tuple(image(), fc.double({ min: 0, max: 1, noNaN: true }), fc.uint8Array({ maxLength: 64 })).map(([b, f, junk]) => {
    const at = Math.floor(b.length * f);
    return Buffer.concat([b.subarray(0, at), Buffer.from(junk), b.subarray(at)]);
  }),
  fc.uint8Array({ maxLength: 2048 }).map((u) => Buffer.from(u)),
);

// ---- requests ---------------------------------------------------------------------------------------------
interface Req {
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: Buffer | string;
}

const queryValue = fc.oneof(fc.constantFrom('', '0', '-1', '3', '4', '1e9', 'NaN', 'Infinity', '1.5', '0x10', ' 2', '99999999999999999999'), fc.string({ maxLength: 8 }));
const query = usually(fc.constant(''), fc
  .array(fc.tuple(fc.constantFrom('top_k', 'knob', 'precision', 'max_bitflops', 'model', 'version', 'x'), queryValue), { maxLength: 3 })
  .map((kv) => (kv.length ? `?${kv.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&')}` : '')));

const rawClassify: fc.Arbitrary<Req> = fc
  .tuple(mutatedImage, query, usually(fc.constantFrom('image/jpeg', 'application/octet-stream'), fc.constantFrom('image/png', 'text/plain', 'image/*', 'application/json', '')))
  .map(([body, q, type]) => ({ path: `/v1/classify${q}`, headers: { 'content-type': type }, body }));

const multipartClassify: fc.Arbitrary<Req> = fc
  .tuple(
    usually(fc.tuple(fc.constant('image'), mutatedImage).map((p) => [p]), fc.array(fc.tuple(fc.constantFrom('image', 'file', 'image[]', ''), mutatedImage), { maxLength: 3 })),
    usually(fc.constant(true), fc.boolean()), // the declared boundary is the one used
    usually(fc.constant(true), fc.boolean()), // the closing boundary is present
  )
  .map(([parts, honest, closed]) => {
    const b = 'fuzzBoundary7d2';
    const body = Buffer.concat([
      ...parts.flatMap(([name, img]) => [Buffer.from(`--${b}\r\nContent-Disposition: form-data; name="${name}"; filename="x"\r\nContent-Type: image/jpeg\r\n\r\n`), img, Buffer.from('\r\n')]),
      Buffer.from(closed ? `--${b}--\r\n` : ''),
    ]);
    return { path: '/v1/classify', headers: { 'content-type': `multipart/form-data; boundary=${honest ? b : 'other'}` }, body };
  });

const oipJson: fc.Arbitrary<Req> = fc
  .tuple(
    fc.array(mutatedImage, { minLength: 0, maxLength: 3 }),
    usually(fc.constant(null), fc.array(fc.integer({ min: -2, max: 5 }), { maxLength: 3 })), // null: the honest [n]
    usually(fc.constant('BYTES'), fc.constantFrom('UINT8', 'FP32', 'bytes', '')),
    usually(fc.constant('image'), fc.constantFrom('input', '')),
    usually(fc.constant(undefined), fc.array(fc.record({ name: fc.constantFrom('logits', 'probabilities', 'bits', 'x'), parameters: fc.option(fc.record({ classification: fc.integer({ min: -1, max: 20 }) })) }), { maxLength: 3 })),
    usually(fc.constantFrom('b64', 'object'), fc.constantFrom('nested', 'number')),
  )
  .map(([imgs, lie, datatype, name, outputs, form]) => {
    const shp = lie ?? [imgs.length];
    const b64 = imgs.map((i) => i.toString('base64'));
    const data = form === 'b64' ? b64 : form === 'object' ? b64.map((b) => ({ b64: b })) : form === 'nested' ? [b64] : imgs.map((i) => i.length);
    return { path: `/v2/models/${M}/infer`, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ inputs: [{ name, shape: shp, datatype, data }], ...(outputs ? { outputs } : {}) }) };
  });

const oipBinary: fc.Arbitrary<Req> = fc
  .tuple(mutatedImage, usually(fc.constant(0), fc.integer({ min: -5, max: 5 })), usually(fc.constant(0), fc.integer({ min: -5, max: 5 })), usually(fc.constant(true), fc.constant(false)))
  .map(([img, sizeLieBy, headerLieBy, withHeader]) => {
    const header = JSON.stringify({ inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', parameters: { binary_data_size: img.length + 4 + sizeLieBy } }] });
    const len = Buffer.alloc(4);
    len.writeUInt32LE(img.length);
    return {
      path: `/v2/models/${M}/infer`,
      headers: { 'content-type': 'application/octet-stream', ...(withHeader ? { 'inference-header-content-length': String(Buffer.byteLength(header) + headerLieBy) } : {}) },
      body: Buffer.concat([Buffer.from(header), len, img]),
    };
  });

const deepData = fc.integer({ min: 1, max: 20_000 }).map((n) => `{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES","data":${'['.repeat(n)}"x"${']'.repeat(n)}}]}`);
const oipArbitrary: fc.Arbitrary<Req> = fc
  .tuple(fc.oneof(fc.json({ maxDepth: 4 }), fc.string({ maxLength: 200 }), deepData), usually(fc.constant(M), fc.constantFrom('nope', '..%2f', M + '/versions/0')))
  .map(([body, model]) => ({ path: `/v2/models/${model}/infer`, headers: { 'content-type': 'application/json' }, body }));

const request = fc.oneof(rawClassify, multipartClassify, oipJson, oipBinary, oipArbitrary);

describe(`HTTP fuzzing (${RUNS} seeded cases, seed ${SEED})`, () => {
  it('answers every case with JSON and a status below 500, and keeps serving', async () => {
    const rss0 = process.memoryUsage().rss;
    const seen = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(request, async (req) => {
        const res = await fetch(server.url + req.path, { method: 'POST', headers: req.headers, body: req.body });
        const text = await res.text();
        seen.set(res.status, (seen.get(res.status) ?? 0) + 1);
        expect(res.status, text).toBeLessThan(500);
        if (res.status >= 400) expect(JSON.parse(text)).toMatchObject({ error: expect.any(String), code: expect.stringMatching(/^DQ_ERR_/) });
      }),
      { numRuns: RUNS, seed: SEED, endOnFailure: true },
    );
    // both kinds of answer occurred: the generator reaches the engine, not only the validators
    expect(seen.get(200) ?? 0).toBeGreaterThan(RUNS / 50);
    expect([...seen.keys()].filter((s) => s >= 400).length).toBeGreaterThanOrEqual(3);
    const ok = await fetch(`${server.url}/v1/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: pool[0] });
    expect(ok.status).toBe(200);
    expect(process.memoryUsage().rss - rss0).toBeLessThan(1024 ** 3);
    console.log(`status counts: ${JSON.stringify(Object.fromEntries([...seen].sort((a, b) => a[0] - b[0])))}`);
  }, 30 * 60_000);
});
