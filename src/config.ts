// Every DQSERVE_* setting: one schema, defaults with units, validated once and frozen.
// Precedence: built-in default < environment (DQSERVE_<NAME>) < command-line flag (--<name>).
// This is the only module that reads process.env (through loadConfig's `env` argument).
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { DqError } from './errors.js';

const Int = (min: number, max: number, def: number, description: string) =>
  Type.Integer({ minimum: min, maximum: max, default: def, description });

/** The longest queue wait anyone may ask for: the setting's ceiling, and the cap on an OIP request's own timeout. */
export const MAX_REQUEST_TIMEOUT_MS = 3_600_000;

export const ConfigSchema = Type.Object({
  host: Type.String({ default: '127.0.0.1', minLength: 1, description: 'address to listen on' }),
  port: Int(0, 65535, 8080, 'TCP port (0 = ephemeral)'),
  modelRepository: Type.String({ default: 'models', minLength: 1, description: 'folder of <model>/<version>/ bundles' }),
  model: Type.Optional(Type.String({ minLength: 1, description: 'serve only this model (default: every model found; the first by name is the default)' })),
  engine: Type.Union([Type.Literal('ort'), Type.Literal('fake')], { default: 'ort', description: 'ort = onnxruntime-node; fake = a deterministic stand-in with made-up answers, for tests: only with NODE_ENV=test' }),
  device: Type.Union([Type.Literal('cpu'), Type.Literal('cuda')], {
    default: 'cpu',
    description: 'cpu = onnxruntime-node; cuda = the native CUDA operators on an NVIDIA GPU (native/dq: build them with `npm run build:cuda`)',
  }),
  cudaDevice: Int(0, 63, 0, 'which GPU --device cuda uses (CUDA device index)'),
  maxBatchSize: Int(1, 1024, 32, 'largest batch the dynamic batcher forms (images)'),
  maxQueueDelayMicroseconds: Int(0, 10_000_000, 2000, 'longest a request waits for a batch to fill (µs)'),
  maxQueueSize: Int(1, 1_000_000, 512, 'images waiting in the queue before new requests get 503'),
  instanceCount: Int(1, 16, 2, 'batches that may run at once (Triton instance_group count), one worker thread each'),
  requestTimeoutMs: Int(1, MAX_REQUEST_TIMEOUT_MS, 30_000, 'longest a request may wait in the queue (ms)'),
  intraOpNumThreads: Int(1, 64, 1, 'onnxruntime intra-op threads per session'),
  interOpNumThreads: Int(1, 64, 1, 'onnxruntime inter-op threads per session'),
  maxImageBytes: Int(1, 1 << 30, 10 * 1024 * 1024, 'largest image upload (bytes)'),
  maxRequestBytes: Int(1, 1 << 30, 64 * 1024 * 1024, 'largest /v2 infer body (bytes)'),
  maxInputPixels: Int(1, 2 ** 31 - 1, 25_000_000, "largest decoded image (width × height pixels), and largest image after the model's resize"),
  maxDecodingPixels: Int(1, 2 ** 31 - 1, 25_000_000, 'pixels of images of ≥ 1 Mpx decoded at once, summed over requests (memory bound; smaller images have their own 8 Mpx)'),
  maxRequestPixels: Int(1, 2 ** 40, 100_000_000, "pixels one request's images may declare in total"),
  maxImagesPerRequest: Int(1, 4096, 256, 'most images in one /v2 infer request'),
  drainTimeoutMs: Int(0, 600_000, 10_000, 'on SIGTERM, longest wait for accepted requests (ms)'),
  maxEventLoopDelayMs: Int(0, 60_000, 1000, 'mean event-loop delay above which inference requests get 503 at once (ms; 0 = off)'),
  retryAfterSeconds: Int(0, 3600, 1, 'Retry-After sent with 503 responses (s)'),
  defaultTopK: Int(1, 1000, 5, 'top_k when a request gives none'),
  fakeEngineDelayMs: Int(0, 600_000, 0, 'extra ms per batch of the fake engine (tests: only with NODE_ENV=test)'),
  warmup: Type.Boolean({ default: true, description: 'run every bit-width path before reporting ready' }),
  verifyChecksums: Type.Boolean({ default: true, description: 'verify manifest.files sha256 at load' }),
  tritonMetrics: Type.Boolean({ default: false, description: 'also export Triton-compatible nv_inference_* counters at /metrics' }),
  targetBitflops: Type.Optional(
    Type.Number({ exclusiveMinimum: 0, description: 'server-wide target mean Bit-FLOPs per image: a feedback controller moves the knob λ (needs the bundle\'s calibration table)' }),
  ),
  targetWindowImages: Int(8, 100_000, 256, 'the target controller\'s time constant and running-mean window (images)'),
  logRequests: Type.Boolean({
    default: false,
    description: "log every request and response (fastify's access log) at info level; failures are logged either way",
  }),
  logLevel: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), {
    default: 'info',
    description: 'pino log level',
  }),
});

export type Config = Readonly<Static<typeof ConfigSchema>>;
export type ConfigKey = keyof Static<typeof ConfigSchema>;

/** DQSERVE_MAX_BATCH_SIZE for maxBatchSize. */
export function envName(key: string): string {
  return 'DQSERVE_' + key.replace(/([A-Z])/g, '_$1').toUpperCase();
}

/** --max-batch-size for maxBatchSize. */
export function flagName(key: string): string {
  return '--' + key.replace(/([A-Z])/g, '-$1').toLowerCase();
}

export function settingEntries(): Array<{ key: ConfigKey; schema: TSchema }> {
  return Object.entries(ConfigSchema.properties).map(([key, schema]) => ({ key: key as ConfigKey, schema: schema as TSchema }));
}

/**
 * Merge defaults, environment and flags, convert strings, validate, freeze.
 * `flags` holds already-parsed command-line values (strings or typed), keyed like Config.
 */
export function loadConfig(flags: Partial<Record<ConfigKey, unknown>> = {}, env: NodeJS.ProcessEnv = {}): Config {
  const raw: Record<string, unknown> = {};
  for (const { key } of settingEntries()) {
    const fromEnv = env[envName(key)];
    if (fromEnv !== undefined && fromEnv !== '') raw[key] = fromEnv;
    const fromFlag = flags[key];
    if (fromFlag !== undefined) raw[key] = fromFlag;
  }
  const withDefaults = Value.Default(ConfigSchema, raw);
  const converted = Value.Convert(ConfigSchema, withDefaults);
  if (!Value.Check(ConfigSchema, converted)) {
    const problems = [...Value.Errors(ConfigSchema, converted)]
      .slice(0, 5)
      .map((e) => `${e.path.slice(1) || '(root)'}: ${e.message} (got ${JSON.stringify(e.value)})`);
    throw new DqError('DQ_ERR_CONFIG_INVALID', problems.join('; '));
  }
  // The fake engine answers 200 with made-up logits: a test double must never serve by mistake.
  if ((converted.engine === 'fake' || converted.fakeEngineDelayMs > 0) && env['NODE_ENV'] !== 'test') {
    throw new DqError('DQ_ERR_CONFIG_INVALID', 'the fake engine (--engine fake, --fake-engine-delay-ms) is a test double with made-up answers: it runs only with NODE_ENV=test');
  }
  return Object.freeze(converted);
}
