// One graph of a bundle, ready to run: what an Engine needs of onnxruntime's InferenceSession, so that the same
// engine runs a bundle through onnxruntime (CPU) or through the graph interpreter (graph/interpreter.ts).
import type { HostTensor } from './graph/onnx.js';

export interface GraphSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(feeds: Readonly<Record<string, HostTensor>>): Promise<Record<string, HostTensor>>;
  release(): Promise<void>;
}

/** Opens one graph file of a bundle (a path inside the bundle's folder). */
export type OpenGraph = (path: string, file: string) => Promise<GraphSession>;
