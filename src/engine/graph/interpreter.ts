// Runs a decoded ONNX graph node by node on a Backend: the way a bundle's graphs run where onnxruntime does not
// (the GPU). The backend owns the tensors (host arrays, or device memory) and the operators; the interpreter
// owns the order, the lifetimes (a tensor is released after its last reader) and the checks on names.
import { DqError } from '../../errors.js';
import type { GraphSession } from '../graph-session.js';
import type { HostTensor, OnnxGraph, OnnxNode } from './onnx.js';

export interface Backend<T> {
  /** Operator types (with their domain, 'com.microsoft.QLinearConv') this backend runs. */
  readonly ops: ReadonlySet<string>;
  /** A tensor the backend may keep for the session's life (initializers). */
  constant(t: HostTensor): T;
  /** A per-run input. */
  input(t: HostTensor): T;
  /** Back to host memory (the graph's outputs). */
  output(t: T): HostTensor;
  /** Runs one node; `inputs` in the node's order, null where an optional input is omitted. */
  run(node: OnnxNode, inputs: readonly (T | null)[]): T[];
  release(t: T): void;
  /** Frees what the backend keeps for the session besides the constants. */
  dispose?(): void;
}

export const opKey = (node: Pick<OnnxNode, 'domain' | 'opType'>): string => (node.domain && node.domain !== 'ai.onnx' ? `${node.domain}.${node.opType}` : node.opType);

export class Interpreter<T> implements GraphSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  private readonly constants = new Map<string, T>();
  /** For each node, the tensors whose last reader it is (released after it runs). */
  private readonly dying: readonly (readonly string[])[];

  constructor(private readonly graph: OnnxGraph, private readonly backend: Backend<T>, file = 'graph') {
    const missing = [...new Set(graph.nodes.map(opKey).filter((k) => !backend.ops.has(k)))];
    if (missing.length) throw new DqError('DQ_ERR_BUNDLE_INVALID', `${file} uses operators this engine does not run: ${missing.join(', ')}`);
    // every input is produced before it is read (ONNX requires topological order)
    const known = new Set([...graph.inputs, ...graph.initializers.keys(), '']);
    for (const n of graph.nodes) {
      for (const i of n.inputs) if (!known.has(i)) throw new DqError('DQ_ERR_BUNDLE_INVALID', `${file}: node ${n.name || n.opType} reads ${i} before it is made`);
      for (const o of n.outputs) known.add(o);
    }
    const made = graph.nodes.flatMap((n) => n.outputs.filter((o) => o !== ''));
    const twice = made.find((o, k) => made.indexOf(o) !== k || graph.initializers.has(o) || graph.inputs.includes(o));
    if (twice !== undefined) throw new DqError('DQ_ERR_BUNDLE_INVALID', `${file}: ${twice} is made more than once`);
    for (const o of graph.outputs) if (!made.includes(o)) throw new DqError('DQ_ERR_BUNDLE_INVALID', `${file}: output ${o} is not made by a node`);
    for (const [name, t] of graph.initializers) this.constants.set(name, backend.constant(t));
    const last = new Map<string, number>();
    graph.nodes.forEach((n, k) => n.inputs.forEach((i) => last.set(i, k)));
    const kept = new Set([...graph.outputs, ...graph.initializers.keys(), '']);
    const dying = graph.nodes.map((): string[] => []);
    for (const [name, at] of last) if (!kept.has(name)) dying[at]?.push(name);
    this.dying = dying;
    this.inputNames = graph.inputs;
    this.outputNames = graph.outputs;
  }

  async run(feeds: Readonly<Record<string, HostTensor>>): Promise<Record<string, HostTensor>> {
    const live = new Map<string, T>();
    try {
      for (const name of this.inputNames) {
        const t = feeds[name];
        if (!t) throw new DqError('DQ_ERR_ENGINE_FAILED', `no input ${name}`);
        live.set(name, this.backend.input(t));
      }
      this.graph.nodes.forEach((node, k) => {
        const inputs = node.inputs.map((i) => (i === '' ? null : (live.get(i) ?? this.constants.get(i) ?? null)));
        const outputs = this.backend.run(node, inputs);
        node.outputs.forEach((o, j) => {
          const t = outputs[j];
          if (t === undefined) return;
          if (o === '') this.backend.release(t); // an optional output nobody reads
          else live.set(o, t);
        });
        for (const name of this.dying[k] as readonly string[]) {
          const t = live.get(name);
          if (t !== undefined) this.backend.release(t);
          live.delete(name);
        }
      });
      const out: Record<string, HostTensor> = {};
      for (const name of this.outputNames) out[name] = this.backend.output(live.get(name) as T);
      return out;
    } finally {
      // after a failure the backend may refuse to free too (a lost GPU context): the first error is the one to see
      for (const t of live.values()) {
        try {
          this.backend.release(t);
        } catch {
          /* reported by the failure that got us here, or by the next run */
        }
      }
    }
  }

  async release(): Promise<void> {
    for (const t of this.constants.values()) this.backend.release(t);
    this.constants.clear();
    this.backend.dispose?.();
  }
}
