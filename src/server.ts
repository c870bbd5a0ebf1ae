// The only module that listens: logger, model loading, warm-up, and a bounded drain on SIGTERM/SIGINT.
import type { FastifyInstance } from 'fastify';
import closeWithGrace from 'close-with-grace';
import { pino, type Logger } from 'pino';
import { buildApp, type AppState } from './app.js';
import { DqError } from './errors.js';
import { sendError } from './plugins/app/error-handler.js';
import type { Config } from './config.js';
import { PrometheusRecorder } from './metrics/prometheus-recorder.js';
import { loadRegistry, type ModelRegistry } from './pipeline/model-registry.js';

export interface RunningServer {
  readonly app: FastifyInstance;
  readonly registry: ModelRegistry;
  readonly url: string;
  /** Resolves when every model has finished warming up (the server reports ready). */
  readonly warm: Promise<void>;
  close(): Promise<void>;
  /** Answers every request still pending with 503 DQ_ERR_SERVER_SHUTTING_DOWN: how many, and when they are out. */
  failPending(): { count: number; flushed: Promise<unknown> };
}

export function createLogger(config: Config): Logger {
  return pino({ level: config.logLevel, base: { service: 'dqserve' } });
}

/** Loads models, listens, then warms up; readiness is 503 until warm-up is done. */
export async function startServer(config: Config, logger: Logger = createLogger(config)): Promise<RunningServer> {
  const recorder = new PrometheusRecorder({ triton: config.tritonMetrics });
  const registry = await loadRegistry(config, logger, recorder);
  recorder.watch(registry.all());
  const state: AppState = { closing: false, inFlight: new Set() };
  const app = await buildApp(config, { registry, state, recorder }, logger);
  const url = await app.listen({ host: config.host, port: config.port });
  const warm = (async () => {
    const started = Date.now();
    for (const p of registry.all()) await p.warmup(config.warmup);
    logger.info({ ms: Date.now() - started, models: registry.all().map((p) => `${p.name}/${p.version}`) }, 'ready');
  })();
  warm.catch((err: unknown) => logger.error({ err }, 'warm-up failed'));
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      state.closing = true;
      await app.close(); // stops accepting, waits for accepted requests
      await registry.close();
    })());
  const failPending = () => {
    const written: Promise<unknown>[] = [];
    for (const reply of state.inFlight ?? []) {
      if (reply.sent) continue;
      written.push(new Promise((r) => reply.raw.once('close', r))); // 'close' follows 'finish', or a reset
      sendError(reply, new DqError('DQ_ERR_SERVER_SHUTTING_DOWN', 'the drain deadline passed before this request finished', { retryAfterS: config.retryAfterSeconds }));
    }
    return { count: written.length, flushed: Promise.all(written) };
  };
  return { app, registry, url, warm, close, failPending };
}

/**
 * When the drain gives up: the deadline bounds the exit, so the pending requests' 503s (written within 50 ms)
 * and the process's teardown (a few tens of ms with large decodes in memory) must fit before it: 100 ms
 * early, or a tenth of a shorter deadline (measured: failing at the deadline itself exited 76-103 ms late).
 */
export function failAt(drainTimeoutMs: number): number {
  return drainTimeoutMs - Math.min(100, drainTimeoutMs / 10);
}

/**
 * `dqserve serve`: start, and drain on SIGTERM/SIGINT. Shortly before config.drainTimeoutMs (failAt) the
 * requests still pending are answered 503 and, once those are written (50 ms at most), the process ends by the
 * signal it got (its default action): process.exit() would first wait for the decodes already running in
 * libvips's threads, which cannot be cancelled.
 */
export async function serve(config: Config): Promise<void> {
  const logger = createLogger(config);
  let server: RunningServer;
  try {
    server = await startServer(config, logger);
  } catch (err) {
    logger.fatal({ err }, 'start-up failed');
    await new Promise((r) => setTimeout(r, 50));
    process.exit(1);
  }
  logger.info({ url: server.url, default_model: server.registry.defaultModel }, 'listening');
  const die = (signal: NodeJS.Signals) => {
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
  };
  closeWithGrace({ delay: false, logger, onSecondSignal: (signal) => die(signal as NodeJS.Signals) }, async ({ signal, err }) => {
    if (err) logger.error({ err }, 'closing after an error');
    logger.info({ signal }, 'draining');
    let late = false;
    const deadline = setTimeout(() => {
      late = true;
      const failed = server.failPending();
      logger.error({ drain_timeout_ms: config.drainTimeoutMs, failed: failed.count }, 'drain deadline passed: pending requests answered 503, exiting');
      // once the 503s are written (a few ms), or 50 ms at most
      void Promise.race([failed.flushed, new Promise((r) => setTimeout(r, 50))]).then(() => die((signal as NodeJS.Signals | undefined) ?? 'SIGTERM'));
    }, failAt(config.drainTimeoutMs));
    await server.close();
    clearTimeout(deadline);
    // Returning would let close-with-grace call process.exit(), which waits for running decodes: wait for die().
    if (late) await new Promise(() => {});
    logger.info('closed');
  });
}
