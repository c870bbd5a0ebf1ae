// The only module that listens: logger, model loading, warm-up, and a bounded drain on SIGTERM/SIGINT.
import type { FastifyInstance } from 'fastify';
import closeWithGrace from 'close-with-grace';
import { pino, type Logger } from 'pino';
import { buildApp, type AppState } from './app.js';
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
}

export function createLogger(config: Config): Logger {
  return pino({ level: config.logLevel, base: { service: 'dqserve' } });
}

/** Loads models, listens, then warms up; readiness is 503 until warm-up is done. */
export async function startServer(config: Config, logger: Logger = createLogger(config)): Promise<RunningServer> {
  const recorder = new PrometheusRecorder({ triton: config.tritonMetrics });
  const registry = await loadRegistry(config, logger, recorder);
  recorder.watch(registry.all());
  const state: AppState = { closing: false };
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
  return { app, registry, url, warm, close };
}

/** `dqserve serve`: start, and drain on SIGTERM/SIGINT within config.drainTimeoutMs (then exit 1). */
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
  closeWithGrace({ delay: config.drainTimeoutMs, logger }, async ({ signal, err }) => {
    if (err) logger.error({ err }, 'closing after an error');
    logger.info({ signal }, 'draining');
    await server.close();
    logger.info('closed');
  });
}
