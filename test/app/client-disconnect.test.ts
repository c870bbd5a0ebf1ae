// Clients that give up (a timeout, a closed tab): their images still queued are dropped rather than computed
// for nobody, the request counts as DQ_ERR_CLIENT_DISCONNECTED, and the server goes on serving.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.js';
import { PHOTOS_DIR } from '../helpers/paths.js';
import { postImage, startTestServer } from '../helpers/server.js';
import { scrape, value } from '../metrics/scrape.js';

const rocket = readFileSync(join(PHOTOS_DIR, 'rocket.jpg'));
let server: RunningServer;
let url: string;

beforeAll(async () => {
  // one image per batch, 2 s each: the first is still running when the clients give up
  server = await startTestServer({ fakeEngineDelayMs: 2000, maxBatchSize: 1, instanceCount: 1 });
  url = server.url;
});
afterAll(async () => server.close());

it('drops the queued images of clients that left, and counts them', async () => {
  const clients = Array.from({ length: 5 }, () => new AbortController());
  const sent = clients.map((c) => fetch(`${url}/v1/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: rocket, signal: c.signal }));
  // once one image runs and four wait in the queue, every client gives up
  let s = await scrape(url);
  for (let i = 0; i < 500 && value(s, 'dqserve_pending_requests') < 4; i++) {
    await new Promise((r) => setTimeout(r, 20));
    s = await scrape(url);
  }
  expect(value(s, 'dqserve_pending_requests')).toBe(4);
  for (const c of clients) c.abort();
  const gaveUp = await Promise.allSettled(sent);
  expect(gaveUp.every((r) => r.status === 'rejected')).toBe(true);

  // the first image was already running when its client left; the other four never reach the engine
  for (let i = 0; i < 50 && value(s, 'dqserve_requests_total', { reason: 'DQ_ERR_CLIENT_DISCONNECTED' }) < 5; i++) {
    await new Promise((r) => setTimeout(r, 20));
    s = await scrape(url);
  }
  expect(value(s, 'dqserve_requests_total', { outcome: 'failure', reason: 'DQ_ERR_CLIENT_DISCONNECTED' })).toBe(5);
  expect(value(s, 'dqserve_pending_requests')).toBe(0);
  expect(value(s, 'dqserve_queue_duration_seconds_count')).toBe(5);
  expect((await postImage(url, rocket)).status).toBe(200); // waits behind the first batch at most
  s = await scrape(url);
  expect(value(s, 'dqserve_batch_size_count')).toBe(2);
  expect(value(s, 'dqserve_inferences_total')).toBe(1);
});
