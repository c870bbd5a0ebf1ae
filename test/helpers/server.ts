// A real server on 127.0.0.1 with an ephemeral port, built by the same startServer as `dqserve serve`.
import { pino, type Logger } from 'pino';
import { loadConfig, type ConfigKey } from '../../src/config.js';
import { startServer, type RunningServer } from '../../src/server.js';
import { hasDynamicBundle, MODELS_DIR } from './paths.js';

// Event-loop shedding is off unless a test asks for it: the server shares this thread with the test's own
// synchronous work (building a 50 MB gzip bomb, encoding images), which it would rightly count as a stall.
export async function startTestServer(overrides: Partial<Record<ConfigKey, unknown>> = {}, logger: Logger = pino({ level: 'silent' })): Promise<RunningServer> {
  const config = loadConfig({ host: '127.0.0.1', port: 0, logLevel: 'silent', engine: 'fake', maxEventLoopDelayMs: 0, ...overrides }, { NODE_ENV: 'test' });
  const server = await startServer(config, logger);
  await server.warm;
  return server;
}

export async function postImage(url: string, body: Buffer, contentType = 'image/jpeg', query = ''): Promise<{ status: number; json: any; headers: Headers }> {
  const res = await fetch(`${url}/v1/classify${query}`, { method: 'POST', headers: { 'content-type': contentType }, body });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined, headers: res.headers };
}

/** Runs `fn` over `items` with at most `concurrency` in flight; results in input order. */
export async function mapConcurrent<T, R>(items: readonly T[], concurrency: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i] as T, i);
      }
    }),
  );
  return out;
}

/** The engines a route test runs against: the fake one always, the real bundle when it is present. */
export const TEST_ENGINES: Array<[string, Partial<Record<ConfigKey, unknown>>]> = [
  ['fake', {}],
  ...(hasDynamicBundle ? [['ort', { engine: 'ort', modelRepository: MODELS_DIR, model: 'resnet20_dq' }] as [string, Partial<Record<ConfigKey, unknown>>]] : []),
];
