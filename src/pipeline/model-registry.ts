// Loaded models by name and version; resolves a request's (model, version) to one pipeline.
import { resolve } from 'node:path';
import type { Config } from '../config.js';
import type { Engine } from '../engine/engine.js';
import { FakeEngine } from '../engine/fake-engine.js';
import type { Runtime } from '../engine/runtime.js';
import { WorkerEngine } from '../engine/worker-engine.js';
import { DqError } from '../errors.js';
import { DecodeLimiter } from '../preprocess/decode-limiter.js';
import { checkBitflopsClaims, findBundles, loadBundle } from '../repository/bundle.js';
import type { InferenceRecorder } from '../metrics/recorder.js';
import { ModelPipeline } from './model-pipeline.js';

export interface RegistryLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  fatal(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export class ModelRegistry {
  private readonly models = new Map<string, Map<number, ModelPipeline>>();
  readonly defaultModel: string;

  constructor(pipelines: readonly ModelPipeline[], defaultModel?: string) {
    for (const p of pipelines) {
      let versions = this.models.get(p.name);
      if (!versions) this.models.set(p.name, (versions = new Map()));
      versions.set(p.version, p);
    }
    const first = [...this.models.keys()][0];
    if (first === undefined) throw new DqError('DQ_ERR_BUNDLE_INVALID', 'no model to serve');
    if (defaultModel !== undefined && !this.models.has(defaultModel)) {
      throw new DqError('DQ_ERR_MODEL_NOT_FOUND', `${defaultModel} (have: ${[...this.models.keys()].join(', ')})`);
    }
    this.defaultModel = defaultModel ?? first;
  }

  names(): string[] {
    return [...this.models.keys()];
  }

  all(): ModelPipeline[] {
    return [...this.models.values()].flatMap((v) => [...v.values()]);
  }

  versions(name: string): number[] {
    return [...(this.models.get(name)?.keys() ?? [])].sort((a, b) => a - b);
  }

  /** The highest version when `version` is omitted (Triton's default "latest" policy). */
  get(name: string = this.defaultModel, version?: string | number): ModelPipeline {
    const versions = this.models.get(name);
    if (!versions) throw new DqError('DQ_ERR_MODEL_NOT_FOUND', name);
    if (version === undefined || version === '') return versions.get(Math.max(...versions.keys())) as ModelPipeline;
    const v = typeof version === 'number' ? version : /^[1-9][0-9]*$/.test(version) ? Number(version) : NaN;
    const p = versions.get(v);
    if (!p) throw new DqError('DQ_ERR_MODEL_VERSION_NOT_FOUND', `${name} version ${String(version)}`);
    return p;
  }

  get ready(): boolean {
    return this.all().every((p) => p.ready);
  }

  /** The first model whose device is lost for the rest of the process (liveness fails), else null. */
  get lost(): { model: string; why: string } | null {
    const p = this.all().find((m) => m.lost !== null);
    return p ? { model: `${p.name}/${p.version}`, why: p.lost as string } : null;
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.all().map((p) => p.close()));
  }
}

/** Loads the engines (not yet warm). With `config.model`, only that model's versions. */
export async function loadRegistry(config: Config, log: RegistryLogger, recorder?: InferenceRecorder): Promise<ModelRegistry> {
  const pipelineOptions = {
    ...(recorder ? { recorder } : {}),
    maxBatchSize: config.maxBatchSize,
    maxQueueDelayMicroseconds: config.maxQueueDelayMicroseconds,
    maxQueueSize: config.maxQueueSize,
    instanceCount: config.instanceCount,
    retryAfterSeconds: config.retryAfterSeconds,
    maxInputPixels: config.maxInputPixels,
    maxRequestPixels: config.maxRequestPixels,
    decodeLimiter: new DecodeLimiter(config.maxDecodingPixels), // one per process: memory is
    ...(config.targetBitflops !== undefined ? { targetBitflops: config.targetBitflops } : {}),
    targetWindowImages: config.targetWindowImages,
  };
  if (config.engine === 'fake') {
    const engine = new FakeEngine(undefined, { batchDelayMs: config.fakeEngineDelayMs });
    log.info({ model: engine.manifest.name }, 'using the fake engine');
    const p = new ModelPipeline(engine, pipelineOptions);
    reportTarget(p, config, log);
    return new ModelRegistry([p]);
  }
  const root = resolve(config.modelRepository);
  const skip = (dir: string) => log.warn({ dir }, 'version folder without manifest.json: not served');
  const refs = (await findBundles(root, skip)).filter((r) => config.model === undefined || r.name === config.model);
  if (refs.length === 0) {
    throw new DqError('DQ_ERR_MODEL_NOT_FOUND', `no bundle${config.model ? ` for ${config.model}` : ''} under ${root}`);
  }
  const runtime: Runtime = config.device === 'cuda'
    ? { kind: 'native', library: 'cuda', device: config.cudaDevice }
    : { kind: 'onnxruntime', intraOpNumThreads: config.intraOpNumThreads, interOpNumThreads: config.interOpNumThreads };
  // a machine that cannot run CUDA is refused here, in one line, before any bundle is read
  if (runtime.kind === 'native') {
    const { loadNative } = await import('../engine/graph/native-lib.js');
    log.info({ device: loadNative(runtime.library, runtime.device).device }, 'CUDA engine');
  }
  const pipelines: ModelPipeline[] = [];
  for (const ref of refs) {
    const started = Date.now();
    const bundle = await loadBundle(ref.dir, { verifyChecksums: config.verifyChecksums });
    const m = bundle.manifest;
    if (m.name !== ref.name || m.version !== ref.version) {
      throw new DqError('DQ_ERR_BUNDLE_INVALID', `${ref.dir} holds ${m.name} version ${m.version}`);
    }
    checkBitflopsClaims(m);
    const where = { model: m.name, version: m.version };
    const engine: Engine = await WorkerEngine.load(
      bundle.dir,
      m,
      runtime,
      // one stream on one GPU: a second instance would only queue behind the first
      config.device === 'cuda' ? 1 : config.instanceCount,
      {
        onWorkerExit: (code) => {
          log.error({ ...where, code }, 'engine worker exited: its batches failed; starting a new one');
          recorder?.onEngineRestart(m.name, m.version);
        },
        onRestartFailed: (err, retryInMs) => log.error({ ...where, err, retryInMs }, 'engine worker failed to start'),
        onLost: (why) => log.fatal({ ...where, why }, 'GPU lost to this process: readiness and liveness now fail, so that the orchestrator restarts the server'),
      },
    );
    const p = new ModelPipeline(engine, pipelineOptions);
    reportTarget(p, config, log);
    pipelines.push(p);
    log.info({ model: m.name, version: m.version, kind: m.kind, ms: Date.now() - started }, 'model loaded');
  }
  return new ModelRegistry(pipelines, config.model);
}

/** Logs whether --target-bitflops applies to this model, and warns when the calibration table cannot reach it. */
function reportTarget(p: ModelPipeline, config: Config, log: RegistryLogger): void {
  if (config.targetBitflops === undefined) return;
  const where = { model: p.name, version: p.version, target: config.targetBitflops };
  if (!p.target) {
    log.warn(where, '--target-bitflops ignored: the bundle has no calibration table (or is static)');
    return;
  }
  const means = (p.manifest.calibration ?? []).map((c) => c.mean_bitflops);
  const [lo, hi] = [Math.min(...means), Math.max(...means)];
  if (config.targetBitflops < lo || config.targetBitflops > hi) {
    log.warn({ ...where, calibrated: [lo, hi] }, 'target outside the calibration table: the knob will sit at the end of its range');
  }
  log.info({ ...where, knob: p.target.knob }, 'Bit-FLOPs target set');
}
