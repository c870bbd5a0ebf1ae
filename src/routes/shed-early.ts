// Admission before the body: an inference request for a model whose queue is already full is answered 503
// DQ_ERR_QUEUE_FULL (with Retry-After) from onRequest, before its body is read, parsed or decoded. Under 2.5×
// overload this lets the main thread spend its time on the requests it accepts (docs/reliability.md). The
// exact check, for all of a request's images, still happens at admission in the pipeline.
import type { FastifyRequest, onRequestAsyncHookHandler } from 'fastify';
import type { ModelPipeline } from '../pipeline/model-pipeline.js';

/** `target` names the request's model from its URL; a name that does not resolve passes, to fail as usual later. */
export function shedWhenFull(target: (request: FastifyRequest) => ModelPipeline): onRequestAsyncHookHandler {
  return async (request) => {
    let pipeline: ModelPipeline;
    try {
      pipeline = target(request);
    } catch {
      return;
    }
    pipeline.refuseWhenFull();
  };
}
