// buildApp(config, deps): plugins, then routes. No env, no listen: server.ts listens, tests use it too.
import { randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyServerOptions } from 'fastify';
import type { Config } from './config.js';
import { DqError } from './errors.js';
import type { ModelRegistry } from './pipeline/model-registry.js';
import { clientErrorHandler, installErrorHandlers, sendError } from './plugins/app/error-handler.js';
import { registerSwagger } from './plugins/external/swagger.js';
import { registerUnderPressure } from './plugins/external/under-pressure.js';
import type { PrometheusRecorder } from './metrics/prometheus-recorder.js';
import { metricsRoutes } from './routes/metrics/metrics.js';
import { classifyRoutes } from './routes/v1/classify.js';
import { healthRoutes } from './routes/v2/health.js';
import { modelRoutes } from './routes/v2/models.js';
import { statsRoutes } from './routes/v2/stats.js';
import { serverRoutes } from './routes/v2/server-metadata.js';
import { uiRoutes } from './routes/ui/ui.js';
import { SERVER_VERSION } from './version.js';

export interface AppState {
  /** Set when shutdown begins: readiness fails and new requests get DQ_ERR_SERVER_SHUTTING_DOWN. */
  closing: boolean;
  /** Requests not yet answered (so that a drain deadline can answer them before the process ends). */
  readonly inFlight?: Set<FastifyReply>;
}

export interface AppDeps {
  readonly registry: ModelRegistry;
  readonly state?: AppState;
  /** Serves GET /metrics and the stats routes; without it both answer 404 DQ_ERR_ROUTE_NOT_FOUND. */
  readonly recorder?: PrometheusRecorder;
}

export interface RouteContext {
  readonly config: Config;
  readonly registry: ModelRegistry;
  readonly state: AppState;
  readonly recorder: PrometheusRecorder | null;
}

export async function buildApp(config: Config, deps: AppDeps, logger: FastifyServerOptions['loggerInstance'] | boolean = false): Promise<FastifyInstance> {
  const loggerOptions = typeof logger === 'boolean' ? { logger } : { loggerInstance: logger };
  const app = Fastify({
    ...loggerOptions,
    // Two JSON lines per request cost a tenth of the event loop at full load (measured); off unless asked for.
    logController: new LogController({ disableRequestLogging: !config.logRequests }),
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    // We answer 503 ourselves during shutdown, in the {error, code} shape (onRequest hook below).
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    bodyLimit: 1024 * 1024,
    connectionTimeout: 120_000,
    requestTimeout: 60_000,
    keepAliveTimeout: 10_000,
    ajv: { customOptions: { coerceTypes: 'array', removeAdditional: false, allErrors: false } },
    clientErrorHandler,
  }) as unknown as FastifyInstance;

  const ctx: RouteContext = { config, registry: deps.registry, state: deps.state ?? { closing: false }, recorder: deps.recorder ?? null };

  installErrorHandlers(app);
  const inFlight = ctx.state.inFlight;
  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
    if (inFlight) {
      inFlight.add(reply);
      reply.raw.once('close', () => inFlight.delete(reply));
    }
    if (ctx.state.closing && request.url !== '/v2/health/live') {
      return sendError(reply, new DqError('DQ_ERR_SERVER_SHUTTING_DOWN', undefined, { retryAfterS: config.retryAfterSeconds }));
    }
  });
  // Requests accepted before shutdown finish normally, but their keep-alive sockets must not outlive them,
  // or close() would wait for the keep-alive timeout.
  app.addHook('onSend', async (_request, reply) => {
    if (ctx.state.closing) reply.header('connection', 'close');
    // Every 503 says when to come back, whichever path produced it (probes and engine restarts included).
    if (reply.statusCode === 503 && !reply.hasHeader('retry-after')) reply.header('retry-after', String(config.retryAfterSeconds));
  });
  if (ctx.recorder) {
    const recorder = ctx.recorder;
    app.addHook('onResponse', async (request, reply) => {
      recorder.onHttpResponse(request.method, request.routeOptions.url, reply.statusCode, reply.elapsedTime / 1000);
    });
  }
  app.addHook('preClose', async () => {
    ctx.state.closing = true;
  });

  await registerUnderPressure(app, config);
  await registerSwagger(app, SERVER_VERSION);
  await app.register(healthRoutes, ctx);
  await app.register(serverRoutes, ctx);
  await app.register(modelRoutes, ctx);
  await app.register(classifyRoutes, ctx);
  await app.register(metricsRoutes, ctx);
  await app.register(statsRoutes, ctx);
  await app.register(uiRoutes);
  return app;
}
