// Bundle graphs through onnxruntime-node's CPU provider: the production CPU runtime.
import ort from 'onnxruntime-node';
import { DqError } from '../errors.js';
import type { GraphSession, OpenGraph } from './graph-session.js';
import type { HostTensor } from './graph/onnx.js';

export interface OrtOptions {
  readonly intraOpNumThreads: number;
  readonly interOpNumThreads: number;
}

export function openOrt(options: OrtOptions): OpenGraph {
  const sessionOptions: ort.InferenceSession.SessionOptions = {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    intraOpNumThreads: options.intraOpNumThreads,
    interOpNumThreads: options.interOpNumThreads,
    // Spinning threads would compete with sharp and HTTP for the same cores between batches.
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  };
  return async (path, file) => {
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(path, sessionOptions);
    } catch (err) {
      throw new DqError('DQ_ERR_BUNDLE_INVALID', `cannot load ${file}: ${(err as Error).message}`, { cause: err });
    }
    return ortSession(session);
  };
}

function ortSession(session: ort.InferenceSession): GraphSession {
  return {
    inputNames: session.inputNames,
    outputNames: session.outputNames,
    async run(feeds) {
      const ortFeeds: Record<string, ort.Tensor> = {};
      for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = new ort.Tensor(t.type as 'uint8', t.data as Uint8Array, t.dims);
      const out = await session.run(ortFeeds);
      const result: Record<string, HostTensor> = {};
      for (const [name, t] of Object.entries(out)) result[name] = { type: t.type as HostTensor['type'], data: t.data as HostTensor['data'], dims: t.dims };
      return result;
    },
    release: () => session.release(),
  };
}
