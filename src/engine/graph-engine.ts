// The Engine for bundle format 2 (docs/model-bundle.md): int8 graphs on uint8 NHWC images, run by a graph runtime
// (runtime.ts: onnxruntime-node on the CPU, or the graph interpreter on the native CUDA operators). A static bundle
// is one session. A dynamic one is two: the stem (fixed layers + controller) runs, the bit plan is chosen from its
// controller logits (bit-plan.ts), and the body runs every dynamic layer of every sample at the plan's bits, fed the
// plan as index tensors (dispatch.ts): two session runs per batch, whatever the plan. A gated bundle (gate.ts) runs
// the body once more on the unconfident rows' stem outputs, at its second bits.
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { DqError } from '../errors.js';
import type { Manifest } from '../repository/manifest.js';
import { bodyIndices } from './dispatch.js';
import type { BatchOutput, Engine, SampleOptions, SampleResult } from './engine.js';
import { engineLayout, type EngineLayout } from './engine-layout.js';
import type { GraphSession as Session, OpenGraph } from './graph-session.js';
import type { HostTensor } from './graph/onnx.js';

/** One graph (static), or stem + body (dynamic). */
type Sessions = { readonly model: Session } | { readonly stem: Session; readonly body: Session };

export class GraphEngine implements Engine {
  readonly manifest: Manifest;
  readonly dynamicLayers: readonly string[];
  readonly candidates: readonly (readonly number[])[];
  readonly sampleSize: number;
  /** In-process: it lives and dies with its thread (WorkerEngine watches the threads). */
  readonly healthy = true;
  /** Its operators throw DQ_ERR_ENGINE_LOST; WorkerEngine, which hosts it, records the loss. */
  readonly lost = null;
  private readonly layout: EngineLayout;
  private readonly sessions: Sessions;

  private constructor(manifest: Manifest, layout: EngineLayout, sessions: Sessions) {
    this.manifest = manifest;
    this.layout = layout;
    this.dynamicLayers = layout.dynamicLayers;
    this.candidates = layout.candidates;
    this.sampleSize = layout.sampleSize;
    this.sessions = sessions;
  }

  static async load(dir: string, manifest: Manifest, openGraph: OpenGraph): Promise<GraphEngine> {
    const layout = engineLayout(manifest);
    const open = (file: string) => openGraph(join(dir, file), file);
    const g = manifest.graph;
    const sessions: Sessions = 'model' in g ? { model: await open(g.model.file) } : { stem: await open(g.stem.file), body: await open(g.body.file) };
    // The stem has controller logits exactly when the manifest has a controller: a mismatch would fail (or be
    // misread) on every request, so it fails the load instead.
    if ('stem' in sessions && sessions.stem.outputNames.includes('controller_logits') !== (manifest.controller != null)) {
      throw new DqError('DQ_ERR_BUNDLE_INVALID', manifest.controller
        ? 'the stem graph has no controller_logits output, but the manifest has a controller'
        : 'the stem graph outputs controller_logits, but the manifest has no controller');
    }
    return new GraphEngine(manifest, layout, sessions);
  }

  infer(input: Uint8Array, batchSize: number, options: readonly SampleOptions[]): Promise<BatchOutput> {
    return this.run(input, batchSize, (logits, lowered) => this.layout.plan(logits, batchSize, options, lowered),
      (logits, plans, lowered) => this.layout.secondPass(logits, batchSize, options, plans, lowered));
  }

  /**
   * Runs the batch with the plan `choose` makes from the controller logits (null when static), then pass 2 on
   * the rows `secondRows` picks from pass 1's class logits.
   */
  private async run(input: Uint8Array, batchSize: number,
    choose: (controllerLogits: Float32Array | null, lowered: boolean[]) => number[][],
    secondRows?: (logits: Float32Array, plans: readonly number[][], lowered: boolean[]) => number[]): Promise<BatchOutput> {
    const [h, w] = this.manifest.input.size;
    const image: HostTensor = { type: 'uint8', data: input, dims: [batchSize, h, w, 3] };
    const lowered = new Array<boolean>(batchSize).fill(false);
    const t0 = performance.now();
    let logits: Float32Array, plans: number[][], t1: number;
    let second: number[] = [], secondPlan: number[] = [];
    if ('model' in this.sessions) {
      t1 = t0;
      plans = choose(null, lowered);
      logits = floats(await this.sessions.model.run({ image }), 'logits');
    } else {
      const stem = await this.sessions.stem.run({ image });
      plans = choose('controller_logits' in stem ? floats(stem, 'controller_logits') : null, lowered);
      t1 = performance.now();
      const z = tensor(stem, 'z'), sc = tensor(stem, 'sc');
      logits = await this.body(z, sc, plans);
      second = secondRows?.(logits, plans, lowered) ?? [];
      if (second.length > 0) {
        secondPlan = plans[0]?.map(() => this.layout.policy?.secondBits as number) ?? [];
        const again = await this.body(rowsOf(z, second, batchSize), rowsOf(sc, second, batchSize), second.map(() => secondPlan));
        const classes = logits.length / batchSize;
        second.forEach((r, i) => logits.set(again.subarray(i * classes, (i + 1) * classes), r * classes));
      }
    }
    const t2 = performance.now();
    const classes = logits.length / batchSize;
    const twice = new Set(second);
    const samples: SampleResult[] = [];
    for (let n = 0; n < batchSize; n++) {
      samples.push({
        logits: logits.slice(n * classes, (n + 1) * classes),
        bits: plans[n] as number[],
        ...(twice.has(n) ? { secondBits: secondPlan } : {}),
        budgetLowered: lowered[n] as boolean,
      });
    }
    return { samples, timing: { controllerMs: t1 - t0, layersMs: t2 - t1 } };
  }

  /** The body graph on stem outputs `z`, `sc` with bits `plans` per row; a copy of its logits. */
  private async body(z: HostTensor, sc: HostTensor, plans: readonly (readonly number[])[]): Promise<Float32Array> {
    const sessions = this.sessions as { readonly body: Session };
    const feeds: Record<string, HostTensor> = { z, sc };
    for (const [name, t] of bodyIndices(plans, this.layout.blocks, this.layout.candidates[0] as number[])) {
      feeds[name] = { type: 'int64', data: t.data, dims: t.dims };
    }
    return floats(await sessions.body.run(feeds), 'logits').slice();
  }

  /** Runs every node once: every (conv1, conv2) pair of candidates in every block, at batch 1 and in one mixed batch. */
  async warmup(): Promise<void> {
    const cands = this.layout.candidates[0] as number[];
    const pairs = cands.flatMap((b2) => cands.map((b1) => [b1, b2] as const));
    const plan = (k: number) => this.dynamicLayers.map((_, l) => (pairs[k % pairs.length] as readonly number[])[l % 2] as number);
    const zeros = new Uint8Array(this.sampleSize * pairs.length);
    await this.run(zeros.subarray(0, this.sampleSize), 1, () => [plan(0)]);
    await this.run(zeros, pairs.length, () => pairs.map((_, k) => plan(k)));
  }

  async close(): Promise<void> {
    await Promise.allSettled(Object.values(this.sessions).map((s: Session) => s.release()));
  }
}

/** Rows `rows` of a tensor whose first axis is the batch. */
function rowsOf(t: HostTensor, rows: readonly number[], batchSize: number): HostTensor {
  const data = t.data as Uint8Array;
  const size = data.length / batchSize;
  const out = new (data.constructor as Uint8ArrayConstructor)(rows.length * size);
  rows.forEach((r, i) => out.set(data.subarray(r * size, (r + 1) * size), i * size));
  return { type: t.type, data: out, dims: [rows.length, ...t.dims.slice(1)] };
}

function tensor(out: Record<string, HostTensor>, name: string): HostTensor {
  const t = out[name];
  if (!t) throw new DqError('DQ_ERR_ENGINE_FAILED', `the graph gave no ${name}`);
  return t;
}

function floats(out: Record<string, HostTensor>, name: string): Float32Array {
  const t = tensor(out, name);
  if (t.type !== 'float32') throw new DqError('DQ_ERR_ENGINE_FAILED', `${name} is ${t.type}, expected float32`);
  return t.data as Float32Array;
}
