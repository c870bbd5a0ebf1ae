// Worker-thread host for one GraphEngine. onnxruntime-node's session.run() is synchronous on the calling thread (its
// backend only defers it with setImmediate), and so are the native operators' waits for the GPU, so running either
// on the main thread would stall HTTP and sharp for a whole batch. Messages: load, warmup, infer, close (see worker-engine.ts).
import { parentPort } from 'node:worker_threads';
import { isDqError } from '../errors.js';
import type { Manifest } from '../repository/manifest.js';
import type { SampleOptions } from './engine.js';
import { GraphEngine } from './graph-engine.js';
import { openRuntime, type Runtime } from './runtime.js';

export type WorkerRequest =
  | { id: number; type: 'load'; dir: string; manifest: Manifest; runtime: Runtime }
  | { id: number; type: 'warmup' }
  | { id: number; type: 'infer'; input: Uint8Array; batchSize: number; options: SampleOptions[] }
  | { id: number; type: 'close' };

/** A failure crosses the thread as data: a DqError's code and detail (the main thread rebuilds it), else a message. */
export type WorkerReply = { id: number; ok: true; value?: unknown } | { id: number; ok: false; error: { message: string; code?: string; detail?: string } };

let engine: GraphEngine | undefined;
const port = parentPort;
if (!port) throw new Error('engine-worker must run in a worker thread');

// One message at a time: a batch awaits between its graphs, and a 'close' handled in such a gap released the
// sessions under it (onnxruntime-node then aborted the process: seen in CI when a batch's caller had given up on it).
let turn: Promise<void> = Promise.resolve();
port.on('message', (msg: WorkerRequest) => {
  turn = turn.then(() =>
    handle(msg).then(
      ([value, transfer]) => port.postMessage({ id: msg.id, ok: true, value } satisfies WorkerReply, transfer),
      (err: unknown) => {
        const error = isDqError(err)
          ? { message: err.message, code: err.code, ...(err.detail !== undefined ? { detail: err.detail } : {}) }
          : { message: err instanceof Error ? err.message : String(err) };
        port.postMessage({ id: msg.id, ok: false, error } satisfies WorkerReply);
      },
    ),
  );
});

async function handle(msg: WorkerRequest): Promise<[unknown, ArrayBuffer[]]> {
  switch (msg.type) {
    case 'load':
      engine = await GraphEngine.load(msg.dir, msg.manifest, await openRuntime(msg.runtime));
      return [undefined, []];
    case 'warmup':
      await need().warmup();
      return [undefined, []];
    case 'infer': {
      const out = await need().infer(msg.input, msg.batchSize, msg.options);
      return [out, out.samples.map((s) => s.logits.buffer as ArrayBuffer)];
    }
    case 'close':
      await engine?.close();
      engine = undefined;
      return [undefined, []];
  }
}

function need(): GraphEngine {
  if (!engine) throw new Error('engine not loaded');
  return engine;
}
