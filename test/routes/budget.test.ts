// Per-request Bit-FLOPs caps over HTTP: query max_bitflops, header x-dqserve-max-bitflops, OIP parameter
// dqserve_max_bitflops. The controller's choice is lowered until it fits; below the minimum is a 400 that says it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.js';
import { cifarSample } from '../helpers/cifar.js';
import { postImage, startTestServer, TEST_ENGINES } from '../helpers/server.js';
import { scrape, value } from '../metrics/scrape.js';

describe.each(TEST_ENGINES)('per-request Bit-FLOPs cap (%s engine)', (_engine, overrides) => {
  let server: RunningServer;
  let url: string;
  let name: string;
  let version: string;
  let images: Buffer[];
  let min: number;
  let max: number;

  beforeAll(async () => {
    server = await startTestServer(overrides);
    url = server.url;
    images = (await cifarSample(3)).map((i) => i.bytes);
    const p = server.registry.get();
    name = p.name;
    version = String(p.version);
    min = p.minBitflops;
    max = p.cost.bitflops(p.dynamicLayers.map(() => 5));
    expect(min).toBe(p.cost.bitflops(p.dynamicLayers.map(() => 3)));
  });
  afterAll(async () => server?.close());

  it('leaves answers alone when the cap is above the choice; lowers them to fit otherwise', async () => {
    let lowered = 0;
    for (const img of images) {
      const free = (await postImage(url, img)).json;
      const same = await postImage(url, img, 'image/jpeg', `?max_bitflops=${free.bitflops}`);
      expect(same.status).toBe(200);
      expect(same.json.bits).toEqual(free.bits);
      expect(same.json.budget_lowered).toBe(false);
      const cap = Math.floor((min + free.bitflops) / 2);
      const r = await postImage(url, img, 'image/jpeg', `?max_bitflops=${cap}`);
      expect(r.status).toBe(200);
      expect(r.json.bitflops).toBeLessThanOrEqual(cap);
      if (free.bitflops > cap) {
        lowered++;
        expect(r.json.budget_lowered).toBe(true);
        // Only lowered, never raised, layer by layer.
        for (const [layer, b] of Object.entries(r.json.bits)) expect(b).toBeLessThanOrEqual(free.bits[layer]);
      }
      const floor = await postImage(url, img, 'image/jpeg', `?max_bitflops=${min}`);
      expect(floor.json.bitflops).toBe(min);
      expect(new Set(Object.values(floor.json.bits))).toEqual(new Set([3]));
    }
    expect(lowered).toBeGreaterThan(0);
  });

  it('refuses a cap below the cheapest configuration with a 400 that states the minimum', async () => {
    const r = await postImage(url, images[0] as Buffer, 'image/jpeg', `?max_bitflops=${min - 1}`);
    expect(r.status).toBe(400);
    expect(r.json.code).toBe('DQ_ERR_BUDGET_BELOW_MINIMUM');
    expect(r.json.error).toContain(String(min));
    const forced = await postImage(url, images[0] as Buffer, 'image/jpeg', `?precision=5&max_bitflops=${max - 1}`);
    expect(forced.status).toBe(400);
    expect(forced.json.code).toBe('DQ_ERR_BUDGET_BELOW_MINIMUM');
    expect(forced.json.error).toContain(String(max));
    expect((await postImage(url, images[0] as Buffer, 'image/jpeg', `?precision=5&max_bitflops=${max}`)).status).toBe(200);
  });

  it.each(['abc', '-5', '0', '', 'Infinity', '1e400', '0x10', '1e9abc'])('refuses max_bitflops=%j with DQ_ERR_REQUEST_INVALID_PARAMETER', async (v) => {
    const r = await postImage(url, images[0] as Buffer, 'image/jpeg', `?max_bitflops=${encodeURIComponent(v)}`);
    expect(r.status).toBe(400);
    expect(r.json.code).toBe('DQ_ERR_REQUEST_INVALID_PARAMETER');
  });

  it('takes the header, accepts exponent notation, and applies the smallest of several caps', async () => {
    const img = images[1] as Buffer;
    const res = await fetch(`${url}/v1/classify?max_bitflops=${max}`, { method: 'POST', headers: { 'content-type': 'image/jpeg', 'x-dqserve-max-bitflops': min.toExponential(12) }, body: img });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { bitflops: number }).bitflops).toBe(min);
    const bad = await fetch(`${url}/v1/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg', 'x-dqserve-max-bitflops': 'lots' }, body: img });
    expect(bad.status).toBe(400);
  });

  it('takes the OIP request parameter dqserve_max_bitflops, per image', async () => {
    const infer = (parameters: Record<string, unknown>) =>
      fetch(`${url}/v2/models/${name}/infer`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ inputs: [{ name: 'image', shape: [3], datatype: 'BYTES', data: images.slice(0, 3).map((b) => b.toString('base64')) }], outputs: [{ name: 'bits' }], parameters }),
      });
    const r = await infer({ dqserve_max_bitflops: min });
    expect(r.status).toBe(200);
    const j = (await r.json()) as { parameters: Record<string, number | string>; outputs: Array<{ data: number[] }> };
    expect(j.parameters['dqserve_bitflops']).toBe(3 * min);
    expect(j.outputs[0]?.data.every((b) => b === 3)).toBe(true);
    const below = await infer({ dqserve_max_bitflops: min / 2 });
    expect(below.status).toBe(400);
    expect(((await below.json()) as { code: string }).code).toBe('DQ_ERR_BUDGET_BELOW_MINIMUM');
    for (const v of ['abc', -1, true, null]) expect((await infer({ dqserve_max_bitflops: v })).status).toBe(400);
  });

  it('counts budget events in /metrics and the stats', async () => {
    const s = await scrape(url);
    const model = { model: name, version };
    const belowReqs = value(s, 'dqserve_requests_total', { ...model, reason: 'DQ_ERR_BUDGET_BELOW_MINIMUM' });
    expect(belowReqs).toBe(3);
    expect(value(s, 'dqserve_budget_events_total', { ...model, event: 'below_minimum' })).toBe(3);
    expect(value(s, 'dqserve_budget_events_total', { ...model, event: 'lowered' })).toBeGreaterThan(0);
    const stats = (await (await fetch(`${url}/v2/models/${name}/stats`)).json()) as any;
    const mine = stats.model_stats.find((m: { version: string }) => m.version === version); // the served version's
    expect(mine.dqserve.budget_below_minimum).toBe(3);
    expect(mine.dqserve.budget_lowered).toBe(value(s, 'dqserve_budget_events_total', { ...model, event: 'lowered' }));
  });
});
