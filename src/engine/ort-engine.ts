// The onnxruntime-node Engine: stem -> per-sample bit plan -> per dynamic layer, only the chosen bits'
// session on the samples that chose it -> head. See docs/model-bundle.md "Why the network is cut into pieces".
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import ort from 'onnxruntime-node';
import { DqError } from '../errors.js';
import type { Manifest, ManifestStep } from '../repository/manifest.js';
import type { BatchOutput, Engine, SampleOptions, SampleResult } from './engine.js';
import { engineLayout, type EngineLayout } from './engine-layout.js';
import { gatherRows, scatterRows, type HostTensor } from './host-tensor.js';

type Session = ort.InferenceSession;

export interface OrtEngineOptions {
  readonly intraOpNumThreads: number;
  readonly interOpNumThreads: number;
}

interface StepSessions {
  readonly step: ManifestStep;
  /** Index of this step's layer in `dynamicLayers`. */
  readonly layerIndex: number;
  readonly byBits: ReadonlyMap<number, Session>;
}

export class OrtEngine implements Engine {
  readonly manifest: Manifest;
  readonly dynamicLayers: readonly string[];
  readonly candidates: readonly (readonly number[])[];
  readonly sampleSize: number;
  /** In-process: it lives and dies with its thread (WorkerEngine watches the threads). */
  readonly healthy = true;
  private readonly layout: EngineLayout;
  private readonly stem: Session;
  private readonly steps: readonly StepSessions[];
  private readonly head: Session;

  private constructor(manifest: Manifest, layout: EngineLayout, stem: Session, steps: StepSessions[], head: Session) {
    this.manifest = manifest;
    this.layout = layout;
    this.dynamicLayers = layout.dynamicLayers;
    this.candidates = layout.candidates;
    this.sampleSize = layout.sampleSize;
    this.stem = stem;
    this.steps = steps;
    this.head = head;
  }

  static async load(dir: string, manifest: Manifest, options: OrtEngineOptions): Promise<OrtEngine> {
    const layout = engineLayout(manifest);
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      executionMode: 'sequential',
      intraOpNumThreads: options.intraOpNumThreads,
      interOpNumThreads: options.interOpNumThreads,
      // Every session owns its thread pool; with spinning on, the pools of the ~40 sessions of a bundle spin
      // against each other and against sharp (measured: 2 intra-op threads fell from 85 to 5 images/s).
      extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
    };
    const open = async (file: string): Promise<Session> => {
      try {
        return await ort.InferenceSession.create(join(dir, file), sessionOptions);
      } catch (err) {
        throw new DqError('DQ_ERR_BUNDLE_INVALID', `cannot load ${file}: ${(err as Error).message}`, { cause: err });
      }
    };
    const stem = await open(manifest.graph.stem.file);
    const steps: StepSessions[] = [];
    for (const step of manifest.graph.steps) {
      const byBits = new Map<number, Session>();
      for (const [bits, file] of Object.entries(step.files)) byBits.set(Number(bits), await open(file));
      steps.push({ step, layerIndex: layout.dynamicLayers.indexOf(step.layer), byBits });
    }
    const head = await open(manifest.graph.head.file);
    return new OrtEngine(manifest, layout, stem, steps, head);
  }

  async infer(input: Float32Array, batchSize: number, options: readonly SampleOptions[]): Promise<BatchOutput> {
    const [h, w] = this.manifest.input.size;
    const t0 = performance.now();
    const stemOut = await this.stem.run({
      [this.stem.inputNames[0] as string]: new ort.Tensor('float32', input, [batchSize, this.manifest.input.channels, h, w]),
    });
    const tensors = new Map<string, HostTensor>();
    for (const [name, value] of Object.entries(stemOut)) tensors.set(name, toHost(value as ort.Tensor));
    const logits = tensors.get('controller_logits')?.data ?? null;
    const lowered = new Array<boolean>(batchSize).fill(false);
    const plans = this.layout.plan(logits, batchSize, options, lowered);
    const t1 = performance.now();

    for (const s of this.steps) tensors.set(s.step.output, await this.runStep(s, tensors, plans, batchSize));
    const t2 = performance.now();

    const headIn = tensors.get(this.manifest.graph.head.input);
    if (!headIn) throw new DqError('DQ_ERR_ENGINE_FAILED', `head input ${this.manifest.graph.head.input} was never produced`);
    const headOut = await this.head.run({ [this.head.inputNames[0] as string]: toOrt(headIn) });
    const out = toHost((headOut['logits'] ?? headOut[this.head.outputNames[0] as string]) as ort.Tensor);
    const t3 = performance.now();

    const classes = out.data.length / batchSize;
    const samples: SampleResult[] = [];
    for (let n = 0; n < batchSize; n++) {
      samples.push({ logits: out.data.slice(n * classes, (n + 1) * classes), bits: plans[n] as number[], budgetLowered: lowered[n] as boolean });
    }
    return { samples, timing: { controllerMs: t1 - t0, layersMs: t2 - t1, headMs: t3 - t2 } };
  }

  /** Group the batch by this layer's chosen bits, run each group through its session, scatter back. */
  private async runStep(s: StepSessions, tensors: Map<string, HostTensor>, plans: number[][], batchSize: number): Promise<HostTensor> {
    const x = tensors.get(s.step.inputs.x);
    const residual = s.step.inputs.residual === undefined ? undefined : tensors.get(s.step.inputs.residual);
    if (!x || (s.step.inputs.residual !== undefined && !residual)) {
      throw new DqError('DQ_ERR_ENGINE_FAILED', `inputs of step ${s.step.layer} were never produced`);
    }
    const groups = new Map<number, number[]>();
    for (let n = 0; n < batchSize; n++) {
      const b = (plans[n] as number[])[s.layerIndex] as number;
      let g = groups.get(b);
      if (!g) groups.set(b, (g = []));
      g.push(n);
    }
    if (groups.size === 1) {
      const bits = groups.keys().next().value as number;
      return this.runSession(s, bits, x, residual);
    }
    let out: HostTensor | undefined;
    for (const [bits, rows] of groups) {
      const y = await this.runSession(s, bits, gatherRows(x, rows), residual && gatherRows(residual, rows));
      if (!out) out = { data: new Float32Array((y.data.length / rows.length) * batchSize), dims: [batchSize, ...y.dims.slice(1)] };
      scatterRows(y, rows, out);
    }
    return out as HostTensor;
  }

  private async runSession(s: StepSessions, bits: number, x: HostTensor, residual: HostTensor | undefined): Promise<HostTensor> {
    const session = s.byBits.get(bits);
    if (!session) throw new DqError('DQ_ERR_ENGINE_FAILED', `layer ${s.step.layer} has no ${bits}-bit session`);
    const feeds: Record<string, ort.Tensor> = {};
    const names = session.inputNames;
    feeds[names.includes('x') ? 'x' : (names[0] as string)] = toOrt(x);
    if (residual) feeds[names.includes('residual') ? 'residual' : (names[1] as string)] = toOrt(residual);
    const result = await session.run(feeds);
    return toHost((result['y'] ?? result[session.outputNames[0] as string]) as ort.Tensor);
  }

  async warmup(): Promise<void> {
    const zeros = new Float32Array(this.sampleSize * 2);
    const bitsSet = new Set(this.candidates.flat());
    if (this.layout.controller === null) {
      await this.infer(zeros, 2, [{ knob: 0, precision: null }, { knob: 0, precision: null }]);
      return;
    }
    // Every candidate on every layer, at batch 1 and 2, then one mixed batch (gather/scatter path).
    for (const b of bitsSet) {
      await this.infer(zeros.subarray(0, this.sampleSize), 1, [{ knob: 0, precision: b }]);
      await this.infer(zeros, 2, [{ knob: 0, precision: b }, { knob: 0, precision: b }]);
    }
    const [lo, hi] = [Math.min(...bitsSet), Math.max(...bitsSet)];
    await this.infer(zeros, 2, [{ knob: 0, precision: lo }, { knob: 0, precision: hi }]);
  }

  async close(): Promise<void> {
    const all = [this.stem, this.head, ...this.steps.flatMap((s) => [...s.byBits.values()])];
    await Promise.allSettled(all.map((s) => s.release()));
  }
}

function toHost(t: ort.Tensor): HostTensor {
  if (t.type !== 'float32') throw new DqError('DQ_ERR_ENGINE_FAILED', `expected a float32 tensor, got ${t.type}`);
  return { data: t.data as Float32Array, dims: t.dims };
}

function toOrt(t: HostTensor): ort.Tensor {
  return new ort.Tensor('float32', t.data, t.dims);
}
