#!/usr/bin/env node
// dqserve: serve | classify <files…> | inspect <bundle>. Flags mirror the DQSERVE_* settings in config.ts.
import { constants } from 'node:fs';
import { access, readFile, stat } from 'node:fs/promises';
import { Command, InvalidArgumentError, Option } from 'commander';
import { loadConfig, settingEntries, envName, flagName, type Config, type ConfigKey } from './config.js';
import { isDqError } from './errors.js';
import { SERVER_VERSION } from './version.js';

function addSettings(cmd: Command, keys?: readonly ConfigKey[]): Command {
  for (const { key, schema } of settingEntries()) {
    if (keys && !keys.includes(key)) continue;
    const flag = flagName(key);
    const desc = `${String(schema['description'] ?? '')} [env ${envName(key)}${schema['default'] !== undefined ? `, default ${JSON.stringify(schema['default'])}` : ''}]`;
    if (schema['type'] === 'boolean') {
      cmd.addOption(new Option(flag, desc));
      cmd.addOption(new Option(`--no-${flag.slice(2)}`, `turn off ${flag.slice(2)}`).hideHelp());
    } else {
      cmd.addOption(new Option(`${flag} <value>`, desc));
    }
  }
  return cmd;
}

function configFrom(opts: Record<string, unknown>, overrides: Partial<Record<ConfigKey, unknown>> = {}): Config {
  const flags: Partial<Record<ConfigKey, unknown>> = {};
  for (const { key } of settingEntries()) if (opts[key] !== undefined) flags[key] = opts[key];
  return loadConfig({ ...flags, ...overrides }, process.env);
}

const program = new Command()
  .name('dqserve')
  .description('Adaptive-precision (DQNet) image classification server with per-request Bit-FLOPs')
  .version(SERVER_VERSION);

addSettings(program.command('serve').description('serve the model repository over HTTP (OIP v2 + /v1/classify)')).action(async (opts) => {
  const { serve } = await import('./server.js');
  await serve(configFrom(opts));
});

const OFFLINE_KEYS: ConfigKey[] = ['modelRepository', 'model', 'engine', 'intraOpNumThreads', 'maxInputPixels', 'verifyChecksums', 'maxBatchSize'];
addSettings(
  program
    .command('classify')
    .description('classify image files offline and print JSON (one object per file)')
    .argument('<files...>', 'image files')
    .option('--version-number <n>', 'model version (default: latest)')
    .option('--top-k <k>', 'classes to show', '5')
    .option('--knob <lambda>', 'controller cost knob λ', '0')
    .option('--precision <bits>', 'force every dynamic layer to this bit-width'),
  OFFLINE_KEYS,
).action(async (files: string[], opts: Record<string, string | undefined>) => {
  for (const file of files) {
    // a path that is not a readable file is a usage error, said in one line before any model loads
    if (!(await readableFile(file))) throw new Error(`classify: ${file} is not a readable file`);
  }
  const { loadRegistry } = await import('./pipeline/model-registry.js');
  const config = configFrom(opts, { logLevel: 'silent', warmup: false });
  const stderr = (o: object, m: string) => console.error(m, JSON.stringify(o));
  const quiet = { info: () => {}, warn: stderr, error: stderr, fatal: stderr };
  const registry = await loadRegistry(config, quiet);
  const pipeline = registry.get(config.model, opts['versionNumber']);
  await pipeline.warmup(false);
  for (const file of files) {
    try {
      const [r] = await pipeline.classify([await readFile(file)], {
        knob: Number(opts['knob']),
        precision: opts['precision'] === undefined ? null : Number(opts['precision']),
        topK: Number(opts['topK']),
        timeoutMs: 60_000,
      });
      if (!r) continue;
      const bits = Object.fromEntries(pipeline.dynamicLayers.map((l, i) => [l, r.bits[i]]));
      console.log(
        JSON.stringify({ file, model: pipeline.name, version: pipeline.version, label: r.label, index: r.index, score: r.score, top_k: r.topK, bits, mean_bits: r.meanBits, bitflops: r.bitflops, bitflops_reference: r.bitflopsReference, savings: r.savings }),
      );
    } catch (err) {
      console.log(JSON.stringify({ file, error: (err as Error).message, code: isDqError(err) ? err.code : 'DQ_ERR_SERVER_INTERNAL' }));
      process.exitCode = 1;
    }
  }
  await registry.close();
});

program
  .command('inspect')
  .description('show a bundle: layers, bits, MACs, Bit-FLOPs, accuracy, calibration table')
  .argument('<bundle>', 'bundle folder (models/<name>/<version>)')
  .option('--json', 'print the summary as JSON')
  .option('--no-verify-checksums', 'skip the sha256 check')
  .action(async (dir: string, opts: { json?: boolean; verifyChecksums: boolean }) => {
    const { inspectBundle } = await import('./repository/inspect.js');
    console.log(await inspectBundle(dir, { json: opts.json ?? false, verifyChecksums: opts.verifyChecksums }));
  });

program
  .command('verify')
  .description("check a bundle against training's evaluation (reference.json): same bits and top-1 on >= 99.9% of images at every reference knob, identical logits on >= 95%")
  .argument('<bundle>', 'bundle folder (models/<name>/<version>)')
  .option('--data <dir>', 'data set folder holding the test split (test.tar.gz, test/ or test_batch.bin)', '../shared/data/cifar10')
  .addOption(new Option('--device <device>', 'what runs the bundle: cpu (onnxruntime-node) or cuda (the native CUDA operators)').choices(['cpu', 'cuda']).default('cpu'))
  .addOption(new Option('--cuda-device <index>', 'which GPU --device cuda uses').argParser(deviceIndex).default(0))
  .action(async (dir: string, opts: { data: string; device: 'cpu' | 'cuda'; cudaDevice: number }) => {
    const { verifyBundle, parityHolds, ONNXRUNTIME } = await import('./repository/verify.js');
    const runtime = opts.device === 'cuda' ? ({ kind: 'native', library: 'cuda', device: opts.cudaDevice } as const) : ONNXRUNTIME;
    const report = await verifyBundle(dir, opts.data, runtime);
    console.log(JSON.stringify(report));
    if (!parityHolds(report)) process.exitCode = 1;
  });

function deviceIndex(value: string): number {
  if (!/^[0-9]{1,2}$/.test(value)) throw new InvalidArgumentError('a CUDA device index: 0, 1, …');
  return Number(value);
}

async function readableFile(path: string): Promise<boolean> {
  try {
    await access(path, constants.R_OK);
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

program.parseAsync(process.argv).catch((err: unknown) => {
  console.error(isDqError(err) ? `${err.code}: ${err.message}` : `error: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
