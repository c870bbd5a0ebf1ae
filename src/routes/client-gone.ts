// A signal that fires when the client closes its connection before its answer was sent, so that the pipeline
// drops the request's images still queued instead of computing answers nobody will read.
import type { FastifyReply } from 'fastify';

export function clientGone(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
  return controller.signal;
}
