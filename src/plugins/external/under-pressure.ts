// Event-loop protection (@fastify/under-pressure): while the main thread's mean event-loop delay is above
// --max-event-loop-delay-ms, inference requests (every POST) are answered 503 DQ_ERR_SERVER_OVERLOADED with
// Retry-After at once instead of queueing behind a stalled loop. Health, metrics and metadata keep answering,
// so that probes and scrapes see the truth. Admission by queue size (src/batching) is the first line; this is
// the backstop for main-thread work it does not count (JSON parsing, multipart, resizing).
import underPressure from '@fastify/under-pressure';
import type { FastifyInstance } from 'fastify';
import type { Config } from '../../config.js';
import { DqError } from '../../errors.js';
import { sendError } from '../app/error-handler.js';

/** How often the event-loop delay is sampled (ms): the shedding reacts within about this long. */
const SAMPLE_INTERVAL_MS = 500;

export async function registerUnderPressure(app: FastifyInstance, config: Config): Promise<void> {
  if (config.maxEventLoopDelayMs === 0) return;
  await app.register(underPressure, {
    maxEventLoopDelay: config.maxEventLoopDelayMs,
    sampleInterval: SAMPLE_INTERVAL_MS,
    // Sending here refuses the request; returning without a reply lets it through (documented behaviour).
    pressureHandler: (request, reply, _type, value) => {
      if (request.method !== 'POST') return;
      sendError(reply, new DqError('DQ_ERR_SERVER_OVERLOADED', `event-loop delay ${Math.round(Number(value))} ms`, { retryAfterS: config.retryAfterSeconds }));
    },
  });
}
