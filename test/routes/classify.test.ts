import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import sharp from 'sharp';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.js';
import { cifarSample } from '../helpers/cifar.js';
import { bombPng } from '../helpers/images.js';
import { PHOTOS_DIR } from '../helpers/paths.js';
import { postImage, startTestServer } from '../helpers/server.js';

let server: RunningServer;
let url: string;
const rocket = readFileSync(join(PHOTOS_DIR, 'rocket.jpg'));
const chelsea = readFileSync(join(PHOTOS_DIR, 'chelsea.png'));

beforeAll(async () => {
  server = await startTestServer({ maxImageBytes: 2 * 1024 * 1024 });
  url = server.url;
});
afterAll(async () => server.close());

async function expectAlive(): Promise<void> {
  const res = await fetch(`${url}/v2/health/ready`);
  expect(res.status).toBe(200);
}

describe('POST /v1/classify', () => {
  it('classifies a raw JPEG body with label, top-k, bits, Bit-FLOPs, timing and Server-Timing', async () => {
    const r = await postImage(url, rocket, 'image/jpeg', '?top_k=3');
    expect(r.status).toBe(200);
    const j = r.json;
    expect(j).toMatchObject({ model: 'fake_dq', version: 1 });
    expect(j.top_k).toHaveLength(3);
    expect(j.top_k[0]).toEqual({ index: j.index, label: j.label, score: j.score });
    expect(Object.keys(j.bits)).toEqual(server.registry.get().dynamicLayers);
    expect(Object.values(j.bits).every((b) => [3, 4, 5].includes(b as number))).toBe(true);
    expect(j.bitflops_reference).toBe(server.registry.get().manifest.bitflops.reference);
    expect(j.savings).toBeCloseTo(1 - j.bitflops / j.bitflops_reference, 12);
    expect(Object.keys(j.timing).sort()).toEqual(['controller', 'layers', 'preprocess', 'queue', 'total']);
    expect(r.headers.get('server-timing')).toMatch(/^queue;dur=[\d.]+, preprocess;dur=[\d.]+, controller;dur=[\d.]+, layers;dur=[\d.]+, total;dur=[\d.]+$/);
    expect(r.headers.get('x-request-id')).toMatch(/[0-9a-f-]{36}/);
  });

  it('accepts application/octet-stream and PNG, and echoes a given x-request-id', async () => {
    const res = await fetch(`${url}/v1/classify`, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'x-request-id': 'abc-123' }, body: chelsea });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe('abc-123');
  });

  it('accepts a multipart upload in the field "image", same answer as the raw body', async () => {
    const form = new FormData();
    form.append('image', new Blob([rocket], { type: 'image/jpeg' }), 'rocket.jpg');
    const res = await fetch(`${url}/v1/classify`, { method: 'POST', body: form });
    expect(res.status).toBe(200);
    const j = (await res.json()) as { index: number; bits: unknown };
    const raw = await postImage(url, rocket);
    expect(j.index).toBe(raw.json.index);
    expect(j.bits).toEqual(raw.json.bits);
  });

  it('forces a precision and moves bits with the knob', async () => {
    const forced = await postImage(url, rocket, 'image/jpeg', '?precision=5');
    expect(Object.values(forced.json.bits).every((b) => b === 5)).toBe(true);
    expect(forced.json.mean_bits).toBe(5);
    const cheap = await postImage(url, rocket, 'image/jpeg', '?knob=1000');
    expect(Object.values(cheap.json.bits).every((b) => b === 3)).toBe(true);
    expect(cheap.json.bitflops).toBe(server.registry.get().manifest.bitflops.min);
  });

  it('concurrent requests are batched and each gets its own answer', async () => {
    const imgs = await cifarSample(4);
    const one = await Promise.all(imgs.map((i) => postImage(url, i.bytes)));
    expect(one.every((r) => r.status === 200)).toBe(true);
    const seq: number[] = [];
    for (const i of imgs.slice(0, 8)) seq.push((await postImage(url, i.bytes)).json.index);
    expect(seq).toEqual(one.slice(0, 8).map((r) => r.json.index));
  });
});

describe('bad input never hurts the server', () => {
  const cases: Array<[string, () => Promise<{ status: number; json: any }>, number, string]> = [
    ['not an image', () => postImage(url, Buffer.from('definitely not an image')), 415, 'DQ_ERR_PREPROCESS_UNSUPPORTED_FORMAT'],
    ['a truncated JPEG', () => postImage(url, rocket.subarray(0, 20_000)), 400, 'DQ_ERR_PREPROCESS_DECODE_FAILED'],
    ['a corrupt PNG', () => postImage(url, Buffer.concat([chelsea.subarray(0, 100), Buffer.alloc(5000, 7)]), 'image/png'), 400, 'DQ_ERR_PREPROCESS_DECODE_FAILED'],
    ['an SVG', () => postImage(url, Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'), 'image/svg+xml'), 415, 'DQ_ERR_PREPROCESS_UNSUPPORTED_FORMAT'],
    ['an empty body', () => postImage(url, Buffer.alloc(0)), 400, 'DQ_ERR_REQUEST_EMPTY_BODY'],
    ['a JSON content type', () => postImage(url, Buffer.from('{"a":1}'), 'application/json'), 415, 'DQ_ERR_REQUEST_UNSUPPORTED_MEDIA_TYPE'],
    ['text/plain', () => postImage(url, Buffer.from('hi'), 'text/plain'), 415, 'DQ_ERR_REQUEST_UNSUPPORTED_MEDIA_TYPE'],
    ['too many bytes', () => postImage(url, Buffer.alloc(3 * 1024 * 1024, 1)), 413, 'DQ_ERR_REQUEST_TOO_LARGE'],
    ['an unknown model', () => postImage(url, rocket, 'image/jpeg', '?model=nope'), 404, 'DQ_ERR_MODEL_NOT_FOUND'],
    ['an unknown version', () => postImage(url, rocket, 'image/jpeg', '?version=7'), 404, 'DQ_ERR_MODEL_VERSION_NOT_FOUND'],
    ['a precision that is not a candidate', () => postImage(url, rocket, 'image/jpeg', '?precision=2'), 400, 'DQ_ERR_REQUEST_INVALID_PARAMETER'],
    ['a bad top_k', () => postImage(url, rocket, 'image/jpeg', '?top_k=zero'), 400, 'DQ_ERR_REQUEST_INVALID_PARAMETER'],
    ['top_k=0', () => postImage(url, rocket, 'image/jpeg', '?top_k=0'), 400, 'DQ_ERR_REQUEST_INVALID_PARAMETER'],
    ['a misspelled max_bitflops', () => postImage(url, rocket, 'image/jpeg', '?max_bitflop=1e9'), 400, 'DQ_ERR_REQUEST_INVALID_PARAMETER'],
  ];

  it.each(cases)('rejects %s with a 4xx JSON error', async (_name, send, status, code) => {
    const r = await send();
    expect(r.status).toBe(status);
    expect(r.json).toEqual({ error: expect.any(String), code });
    await expectAlive();
  });

  it('rejects a 20000×20000 PNG (decompression bomb) with DQ_ERR_PREPROCESS_TOO_MANY_PIXELS', async () => {
    const r = await postImage(url, await bombPng(), 'image/png');
    expect(r.status).toBe(413);
    expect(r.json.code).toBe('DQ_ERR_PREPROCESS_TOO_MANY_PIXELS');
    await expectAlive();
  }, 60_000);

  it('rejects a 1×1000000 PNG, which would resize to 32×32000000, by its header with a 413', async () => {
    const strip = await sharp({ create: { width: 1, height: 1_000_000, channels: 3, background: '#808080' } }).png().toBuffer();
    const r = await postImage(url, strip, 'image/png');
    expect(r.status).toBe(413);
    expect(r.json).toEqual({ code: 'DQ_ERR_PREPROCESS_TOO_MANY_PIXELS', error: expect.stringContaining('resizes to 32x32000000') });
    await expectAlive();
  }, 60_000);

  it('rejects multipart without an "image" file, with two files, and a broken multipart body', async () => {
    const wrong = new FormData();
    wrong.append('picture', new Blob([rocket]), 'r.jpg');
    let res = await fetch(`${url}/v1/classify`, { method: 'POST', body: wrong });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { code: string }).code).toBe('DQ_ERR_REQUEST_MULTIPART_INVALID');

    // a second part, file or text, is refused rather than skipped
    for (const [name, value] of [['image', new Blob([chelsea])], ['other', new Blob([chelsea])], ['note', 'hello']] as const) {
      const two = new FormData();
      two.append('image', new Blob([rocket]), 'r.jpg');
      if (typeof value === 'string') two.append(name, value);
      else two.append(name, value, 'c.png');
      res = await fetch(`${url}/v1/classify`, { method: 'POST', body: two });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { code: string }).code).toBe('DQ_ERR_REQUEST_MULTIPART_INVALID');
    }

    const big = new FormData();
    big.append('image', new Blob([Buffer.alloc(3 * 1024 * 1024, 1)]), 'big.jpg');
    res = await fetch(`${url}/v1/classify`, { method: 'POST', body: big });
    expect(res.status).toBe(413);
    expect(((await res.json()) as { code: string }).code).toBe('DQ_ERR_REQUEST_TOO_LARGE');

    res = await fetch(`${url}/v1/classify`, {
      method: 'POST',
      headers: { 'content-type': 'multipart/form-data; boundary=XYZ' },
      body: '--XYZ\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\nabc',
    });
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(res.status).toBeLessThan(500);
    await expectAlive();
  });

  it('names an unknown query parameter, and accepts media type parameters', async () => {
    const typo = await postImage(url, rocket, 'image/jpeg', '?max_bitflop=1e9');
    expect(typo.json.error).toContain('unknown querystring parameter "max_bitflop"');
    expect((await postImage(url, rocket, 'image/jpeg; charset=binary')).status).toBe(200);
  });

  it('answers malformed HTTP in the {error, code} shape too, with a request id', async () => {
    const raw = (text: string) =>
      new Promise<string>((resolve, reject) => {
        const { port } = new URL(url);
        const sock = connect(Number(port), '127.0.0.1', () => sock.end(text));
        let got = '';
        sock.on('data', (d) => (got += d.toString()));
        sock.on('close', () => resolve(got));
        sock.on('error', reject);
      });
    const cases: Array<[string, string, string]> = [
      ['GARBAGE\r\n\r\n', '400', 'DQ_ERR_HTTP_MALFORMED'],
      ['POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n', '400', 'DQ_ERR_HTTP_MALFORMED'],
      [`GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, '431', 'DQ_ERR_HTTP_HEADERS_TOO_LARGE'],
    ];
    for (const [request, status, code] of cases) {
      const res = await raw(request);
      expect(res.startsWith(`HTTP/1.1 ${status} `), res.slice(0, 80)).toBe(true);
      expect(res).toMatch(/\r\nx-request-id: [0-9a-f-]{36}\r\n/);
      expect(JSON.parse(res.slice(res.indexOf('\r\n\r\n') + 4))).toEqual({ error: expect.any(String), code });
    }
    await expectAlive();
  });

  it('answers an unknown route with DQ_ERR_ROUTE_NOT_FOUND', async () => {
    const res = await fetch(`${url}/v1/nothing`);
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: expect.any(String), code: 'DQ_ERR_ROUTE_NOT_FOUND' });
  });

  it('serves the OpenAPI document and the docs page', async () => {
    type Body = { requestBody?: { content: Record<string, unknown> } };
    const spec = (await (await fetch(`${url}/docs/json`)).json()) as { paths: Record<string, { post?: Body }> };
    expect(Object.keys(spec.paths)).toEqual(expect.arrayContaining(['/v1/classify', '/v2/models/{name}/infer', '/v2/health/ready']));
    // bodies the docs page can send: an image or a multipart file to /v1/classify, JSON or binary to infer
    expect(Object.keys(spec.paths['/v1/classify']!.post!.requestBody!.content)).toEqual(expect.arrayContaining(['image/jpeg', 'application/octet-stream', 'multipart/form-data']));
    expect(Object.keys(spec.paths['/v2/models/{name}/infer']!.post!.requestBody!.content)).toEqual(['application/json', 'application/octet-stream']);
    expect((await fetch(`${url}/docs`)).status).toBeLessThan(400);
  });
});

describe('admission before work', () => {
  it('with the queue full, a request is refused with 503 + Retry-After before its image is decoded', async () => {
    // one image at a time, 1.5 s each, one waiting: the third request finds no room (32×32 images decode in
    // about a millisecond, so the waits below leave a wide margin on a loaded machine)
    const lines: Array<{ level: number; msg: string; code?: string }> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const busy = await startTestServer({ fakeEngineDelayMs: 1500, maxBatchSize: 1, maxQueueSize: 1, instanceCount: 1, maxQueueDelayMicroseconds: 0 }, logger);
    const [a, b] = await cifarSample(2);
    try {
      const running = postImage(busy.url, a!.bytes);
      await new Promise((r) => setTimeout(r, 300));
      const waiting = postImage(busy.url, b!.bytes);
      await new Promise((r) => setTimeout(r, 300));
      // not an image at all: a decode would answer 415, admission answers first
      const refused = await postImage(busy.url, Buffer.from('not an image'));
      expect(refused.status).toBe(503);
      expect(refused.json.code).toBe('DQ_ERR_QUEUE_FULL');
      expect(refused.headers.get('retry-after')).toBe('1');
      // refused before the body is even read: a media type the route does not take (415 with room) and an OIP
      // body that is not JSON (400 with room) get the 503 too
      const early = [
        await postImage(busy.url, Buffer.from('hello'), 'text/plain'),
        await fetch(`${busy.url}/v2/models/fake_dq/infer`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{not json' }),
      ];
      expect(early.map((r) => r.status)).toEqual([503, 503]);
      expect(early.map((r) => r.headers.get('retry-after'))).toEqual(['1', '1']);
      // a model that does not exist is not the queue's business: 404 as ever
      expect((await postImage(busy.url, a!.bytes, 'image/jpeg', '?model=nope')).status).toBe(404);
      const metrics = await (await fetch(`${busy.url}/metrics`)).text();
      expect(metrics).toMatch(/dqserve_requests_total\{[^}]*reason="DQ_ERR_QUEUE_FULL"[^}]*\} 3/);
      expect([(await running).status, (await waiting).status]).toEqual([200, 200]);
      expect((await postImage(busy.url, Buffer.from('not an image'))).status).toBe(415); // with room again
      // shedding is counted, not logged: under overload a line per refused request cost a third of the
      // goodput (docs/reliability.md); a client's mistake is still logged at info
      const byCode = (code: string) => lines.filter((l) => l.code === code).map((l) => l.level);
      expect(byCode('DQ_ERR_QUEUE_FULL')).toEqual([]);
      expect(byCode('DQ_ERR_PREPROCESS_UNSUPPORTED_FORMAT')).toEqual([30]);
    } finally {
      await busy.close();
    }
  });
});

describe('event-loop protection', () => {
  it('answers inference 503 DQ_ERR_SERVER_OVERLOADED while the loop is stalled, keeps probes answering, and recovers', async () => {
    const s = await startTestServer({ maxEventLoopDelayMs: 10 });
    const [img] = await cifarSample(1);
    // until a calm sample: the server's own start-up (and a busy machine) can delay this thread's loop past 10 ms
    const calm = async () => {
      let status = 0;
      for (let i = 0; i < 50 && status !== 200; i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, 100));
        status = (await postImage(s.url, img!.bytes)).status;
      }
      return status;
    };
    try {
      expect(await calm()).toBe(200);
      // The server shares this thread: stall its loop for 0.6 s before each try, so that every 500 ms sample of
      // the delay histogram holds a stall and the pressure lasts until a request (slow on a busy machine) lands.
      let refused = { status: 0, json: undefined as any, headers: new Headers() };
      for (let i = 0; i < 15 && refused.status !== 503; i++) {
        const until = Date.now() + 600;
        while (Date.now() < until);
        refused = await postImage(s.url, img!.bytes);
      }
      expect(refused.status).toBe(503);
      expect(refused.json.code).toBe('DQ_ERR_SERVER_OVERLOADED');
      expect(refused.headers.get('retry-after')).toBe('1');
      expect((await fetch(`${s.url}/v2/health/live`)).status).toBe(200);
      expect(await calm()).toBe(200); // calm samples follow within a second or two
    } finally {
      await s.close();
    }
  });
});
