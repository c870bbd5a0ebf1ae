// npm run bench: dqserve against what a user would run instead, on this machine, in one run
// (docs/performance.md). Every comparison takes turns (round-robin), so the machine's drift hits all sides alike:
//  1. preprocessing of a 32×32 CIFAR JPEG: ours against sharp's bare decode to raw RGB;
//  2. engines, batch 64 and 1, one intra-op thread: the dynamic default, its static twin, the same network as a
//     plain int8 model in one session, and bundle format 1's arithmetic in one session (bench/baselines.py);
//  3. servers at 32 connections: `npm start` with its defaults, and bench/naive-server.ts (fastify + sharp + one
//     onnxruntime-node session, batch 1 per request) running each of those static models;
//  4. stage ceilings: an empty fastify route, and the combined ceiling of sharp + engine + HTTP on 2 cores.
// Not a test: numbers depend on the machine. Writes bench/results/<date>-<host>.json and prints Markdown.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, hostname, loadavg } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import autocannon from 'autocannon';
import Fastify from 'fastify';
import ort from 'onnxruntime-node';
import sharp from 'sharp';
import { GraphEngine } from '../src/engine/graph-engine.js';
import { openOrt } from '../src/engine/ort-session.js';
import { preprocess } from '../src/preprocess/preprocess.js';
import { findBundles, loadBundle } from '../src/repository/bundle.js';
import type { Manifest } from '../src/repository/manifest.js';
import { spawnServer } from '../loadtest/server-process.js';
import { cifarTest } from '../test/helpers/cifar.js';
import { MODELS_DIR, REPO_ROOT } from '../test/helpers/paths.js';

const DURATION_S = Number(process.env['BENCH_DURATION_S'] ?? 5);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 3);
const CONNECTIONS = Number(process.env['BENCH_CONNECTIONS'] ?? 32);
const BASELINES = join(REPO_ROOT, 'bench', 'models');

interface Row {
  readonly scenario: string;
  readonly setting: string;
  /** Median over rounds (images/s or req/s), then the range. */
  readonly perS: number;
  readonly range: [number, number];
  readonly p99Ms?: number;
  readonly errors?: number;
}
const rows: Row[] = [];
const log = (...a: unknown[]) => console.error(...a);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

/** Each subject runs for `seconds` per round, round-robin over ROUNDS rounds; returns per-second rates. */
async function turns(subjects: Record<string, () => Promise<number>>, seconds: number): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = Object.fromEntries(Object.keys(subjects).map((k) => [k, []]));
  for (const f of Object.values(subjects)) await f(); // warm
  for (let r = 0; r < ROUNDS; r++) {
    for (const [k, f] of Object.entries(subjects)) {
      let n = 0;
      const t0 = performance.now();
      while (performance.now() - t0 < seconds * 1000) n += await f();
      out[k]!.push(n / ((performance.now() - t0) / 1000));
    }
  }
  return out;
}

function record(scenario: string, setting: string, rates: number[], extra: Partial<Row> = {}): Row {
  const row: Row = { scenario, setting, perS: median(rates), range: [Math.min(...rates), Math.max(...rates)], ...extra };
  rows.push(row);
  log(row);
  return row;
}

async function preprocessing(images: Buffer[], manifest: Manifest): Promise<void> {
  for (const inflight of [1, 4]) {
    let i = 0;
    const run = (f: (b: Buffer) => Promise<unknown>) => async () => {
      await Promise.all(Array.from({ length: inflight }, () => f(images[i++ % images.length] as Buffer)));
      return inflight;
    };
    const r = await turns({
      ours: run((b) => preprocess(b, manifest.input, { maxInputPixels: 25_000_000 })),
      bare: run((b) => sharp(b).raw().toBuffer()),
    }, 1);
    record('preprocess: dqserve (EXIF, sRGB, alpha, size checks)', `${inflight} in flight`, r['ours']!);
    record("preprocess: sharp's bare decode to raw RGB", `${inflight} in flight`, r['bare']!);
  }
}

/** What the baselines take: what a user's own code would feed them, normalised float32 NCHW (32×32 RGB bytes in). */
function normalised(u8: Uint8Array, n: number, spec: Manifest['input']): Float32Array {
  const f32 = new Float32Array(n * 3 * 1024);
  for (let s = 0; s < n; s++) for (let p = 0; p < 1024; p++) for (let c = 0; c < 3; c++) {
    f32[s * 3072 + c * 1024 + p] = ((u8[s * 3072 + p * 3 + c] as number) / 255 - (spec.mean[c] as number)) / (spec.std[c] as number);
  }
  return f32;
}

/** The baselines' top-1 on the whole CIFAR-10 test set, through onnxruntime-node: they are real models too. */
async function baselineAccuracy(spec: Manifest['input'], classes: readonly string[]): Promise<Record<string, number>> {
  const test = await cifarTest();
  const pixels = await Promise.all(test.map((i) => preprocess(i.bytes, spec, { maxInputPixels: 1e7 })));
  const out: Record<string, number> = {};
  for (const m of ['int8', 'float-levels']) {
    const s = await ort.InferenceSession.create(join(BASELINES, `${m}.onnx`));
    let correct = 0;
    for (let at = 0; at < test.length; at += 100) {
      const n = Math.min(100, test.length - at);
      const u8 = new Uint8Array(n * 3072);
      pixels.slice(at, at + n).forEach((x, i) => u8.set(x, i * 3072));
      const logits = (await s.run({ image: new ort.Tensor('float32', normalised(u8, n, spec), [n, 3, 32, 32]) }))['logits']?.data as Float32Array;
      for (let i = 0; i < n; i++) {
        const row = logits.subarray(i * 10, (i + 1) * 10);
        if (row.indexOf(Math.max(...row)) === classes.indexOf((test[at + i] as { label: string }).label)) correct++;
      }
    }
    await s.release();
    out[m] = correct / test.length;
    log({ baseline: m, top1: out[m] });
  }
  return out;
}

async function engines(images: Buffer[], dq: string, twin: string): Promise<void> {
  const load = async (dir: string) => {
    const { manifest } = await loadBundle(dir, { verifyChecksums: false });
    const e = await GraphEngine.load(dir, manifest, openOrt({ intraOpNumThreads: 1, interOpNumThreads: 1 }));
    await e.warmup();
    return e;
  };
  const [dyn, stat] = [await load(dq), await load(twin)];
  const pixels = await Promise.all(images.slice(0, 64).map((b) => preprocess(b, dyn.manifest.input, { maxInputPixels: 1e7 })));
  const spec = dyn.manifest.input;
  const sessions = Object.fromEntries(await Promise.all(['int8', 'float-levels'].map(async (m) => [m, await ort.InferenceSession.create(join(BASELINES, `${m}.onnx`), {
    intraOpNumThreads: 1, interOpNumThreads: 1, extra: { session: { intra_op: { allow_spinning: '0' } } },
  })] as const)));
  for (const B of [64, 1]) {
    const u8 = new Uint8Array(B * dyn.sampleSize);
    pixels.slice(0, B).forEach((x, i) => u8.set(x, i * dyn.sampleSize));
    const f32 = normalised(u8, B, spec);
    const opts = Array.from({ length: B }, () => ({ knob: 0, precision: null }));
    const session = (s: ort.InferenceSession) => async () => {
      await s.run({ image: new ort.Tensor('float32', f32, [B, 3, 32, 32]) });
      return B;
    };
    const r = await turns({
      dynamic: async () => (await dyn.infer(u8.slice(), B, opts)).samples.length,
      twin: async () => (await stat.infer(u8.slice(), B, opts)).samples.length,
      int8: session(sessions['int8'] as ort.InferenceSession),
      levels: session(sessions['float-levels'] as ort.InferenceSession),
    }, 1.5);
    record(`engine: ${dyn.manifest.name} v${dyn.manifest.version} (dynamic default)`, `batch ${B}`, r['dynamic']!);
    record(`engine: ${stat.manifest.name} v${stat.manifest.version} (its static twin)`, `batch ${B}`, r['twin']!);
    record('engine: the same network as a plain int8 model, one session', `batch ${B}`, r['int8']!);
    record("engine: the static twin in format 1's arithmetic, one session", `batch ${B}`, r['levels']!);
  }
  await Promise.all([dyn.close(), stat.close(), ...Object.values(sessions).map((s) => s.release())]);
}

async function emptyRoute(body: Buffer): Promise<void> {
  const app = Fastify();
  app.addContentTypeParser('image/jpeg', { parseAs: 'buffer' }, (_r, b, done) => done(null, b));
  app.post('/v1/classify', async (req) => ({ ok: true, bytes: (req.body as Buffer).length }));
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  const rates: number[] = [];
  for (let r = 0; r < ROUNDS; r++) rates.push((await load(url, [body], 2)).rps);
  record('HTTP: empty fastify route (same process as the load)', `${CONNECTIONS} connections`, rates);
  await app.close();
}

interface Server {
  readonly url: string;
  stop(): Promise<void>;
}

async function naiveServer(model: string): Promise<Server> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'bench', 'naive-server.ts'), model], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`naive server exited with ${code}`)));
    createInterface({ input: child.stdout! }).on('line', (l) => l.startsWith('listening ') && resolve(l.slice(10)));
  });
  return { url, stop: async () => void child.kill('SIGTERM') };
}

async function load(url: string, images: Buffer[], duration: number) {
  let i = 0;
  const r = await autocannon({
    url,
    connections: CONNECTIONS,
    duration,
    requests: [{ method: 'POST', path: '/v1/classify', headers: { 'content-type': 'image/jpeg' }, setupRequest: (req) => ({ ...req, body: images[i++ % images.length] }) }],
  });
  return { rps: r.requests.average, p99: r.latency.p99, errors: r.errors + r.non2xx + r.timeouts };
}

async function servers(images: Buffer[], twin: string): Promise<void> {
  const starts: Record<string, () => Promise<Server>> = {
    'dqserve: `npm start` (its defaults, the dynamic default model)': () => spawnServer([]),
    'naive server: the static twin (format 2, one session)': () => naiveServer(join(twin, 'model.onnx')),
    'naive server: the plain int8 model': () => naiveServer(join(BASELINES, 'int8.onnx')),
    "naive server: the static twin in format 1's arithmetic": () => naiveServer(join(BASELINES, 'float-levels.onnx')),
  };
  const got: Record<string, { rps: number; p99: number; errors: number }[]> = Object.fromEntries(Object.keys(starts).map((k) => [k, []]));
  for (let r = 0; r < ROUNDS; r++) {
    for (const [name, start] of Object.entries(starts)) {
      const s = await start();
      try {
        await load(s.url, images, 1); // warm-up
        got[name]!.push(await load(s.url, images, DURATION_S));
      } finally {
        await s.stop();
      }
    }
  }
  for (const [name, rs] of Object.entries(got)) {
    record(name, `${CONNECTIONS} connections`, rs.map((x) => x.rps), { p99Ms: median(rs.map((x) => x.p99)), errors: rs.reduce((s, x) => s + x.errors, 0) });
  }
}

/** BENCH_SETTINGS=1: dqserve's thread, instance and batching settings at 32 connections, taking turns. */
async function settings(images: Buffer[]): Promise<void> {
  const variants: Record<string, string[]> = {
    'defaults': [],
    '--instance-count 2': ['--instance-count', '2'],
    '--intra-op-num-threads 2': ['--intra-op-num-threads', '2'],
    '--max-batch-size 64': ['--max-batch-size', '64'],
    '--max-queue-delay-microseconds 500': ['--max-queue-delay-microseconds', '500'],
    '--max-queue-delay-microseconds 0': ['--max-queue-delay-microseconds', '0'],
  };
  const got: Record<string, { rps: number; p99: number; errors: number }[]> = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  for (let r = 0; r < ROUNDS; r++) {
    for (const [name, flags] of Object.entries(variants)) {
      const s = await spawnServer(flags);
      try {
        await load(s.url, images, 1);
        got[name]!.push(await load(s.url, images, DURATION_S));
      } finally {
        await s.stop();
      }
    }
  }
  for (const [name, rs] of Object.entries(got)) {
    record(`dqserve settings: ${name}`, `${CONNECTIONS} connections`, rs.map((x) => x.rps), { p99Ms: median(rs.map((x) => x.p99)), errors: rs.reduce((s, x) => s + x.errors, 0) });
  }
}

async function main(): Promise<void> {
  if (!existsSync(join(BASELINES, 'int8.onnx')) || !existsSync(join(BASELINES, 'float-levels.onnx'))) {
    throw new Error('bench/models is missing the baselines: run /usr/bin/python3 bench/baselines.py');
  }
  const images = (await cifarTest()).slice(0, 2000).map((i) => i.bytes);
  const bundles = await findBundles(MODELS_DIR);
  const newest = (name: string) => bundles.filter((b) => b.name === name).at(-1)?.dir;
  const dq = newest('resnet20_dq'), twin = newest('resnet20_w4');
  if (!dq || !twin) throw new Error('models/ needs resnet20_dq and resnet20_w4');
  const { manifest } = await loadBundle(dq, { verifyChecksums: false });

  if (process.env['BENCH_SETTINGS'] === '1') {
    await settings(images);
    for (const r of rows) console.log(`| ${r.scenario} | ${r.perS.toFixed(0)} | ${r.range.map((x) => x.toFixed(0)).join('–')} | ${r.p99Ms} |`);
    return;
  }
  const top1 = await baselineAccuracy(manifest.input, manifest.classes);
  await preprocessing(images, manifest);
  await engines(images, dq, twin);
  await emptyRoute(images[0] as Buffer);
  await servers(images, twin);

  const get = (prefix: string, setting?: string) => rows.find((r) => r.scenario.startsWith(prefix) && (setting === undefined || r.setting === setting))?.perS ?? NaN;
  const server = get('dqserve: `npm start`');
  const engine64 = get('engine: resnet20_dq', 'batch 64');
  // Combined ceiling on 2 cores: core-ms per image of decode (1 in flight), engine (batch 64, 1 thread) and
  // HTTP (the empty route's rate was reached on 2 cores shared with the load generator).
  const coreMs = 1000 / get('preprocess: dqserve', '1 in flight') + 1000 / engine64 + 2000 / get('HTTP: empty');
  const ceiling = (2 * 1000) / coreMs;
  const ratios = [
    ['dqserve ÷ naive server, format-1 static twin', server / get("naive server: the static twin in format 1's")],
    ['dqserve ÷ naive server, format-2 static twin', server / get('naive server: the static twin (format 2')],
    ['dqserve ÷ naive server, plain int8 model', server / get('naive server: the plain int8')],
    ['dynamic engine ÷ plain int8 model (batch 64, 1 thread)', engine64 / get('engine: the same network as a plain int8', 'batch 64')],
    ['dynamic engine ÷ its static twin (batch 64, 1 thread)', engine64 / get('engine: resnet20_w4', 'batch 64')],
    ['dynamic engine ÷ format-1 arithmetic (batch 64, 1 thread)', engine64 / get("engine: the static twin in format 1's", 'batch 64')],
    ["our preprocessing ÷ sharp's bare decode (1 in flight; time ratio)", get("preprocess: sharp's", '1 in flight') / get('preprocess: dqserve', '1 in flight')],
    ['dqserve ÷ combined stage ceiling', server / ceiling],
  ] as const;

  const meta = { date: new Date().toISOString(), host: hostname(), cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version, durationS: DURATION_S, rounds: ROUNDS, connections: CONNECTIONS, loadavgAtEnd: loadavg() };
  const dir = join(REPO_ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${meta.date.slice(0, 10)}-${meta.host}.json`), JSON.stringify({ meta, baselineTop1: top1, rows, ceiling, ratios }, null, 2) + '\n');
  console.log(`Machine: ${meta.cpus} × ${meta.cpu}, Node ${meta.node}; ${ROUNDS} rounds, taking turns; load average at the end ${meta.loadavgAtEnd.map((x) => x.toFixed(2)).join(' ')}.\n`);
  console.log('| ratio | value |\n|---|---|');
  for (const [k, v] of ratios) console.log(`| ${k} | ${v.toFixed(2)} |`);
  console.log(`\nBaselines' top-1 on the CIFAR-10 test set: plain int8 ${(100 * (top1['int8'] as number)).toFixed(2)}%, format-1 arithmetic ${(100 * (top1['float-levels'] as number)).toFixed(2)}%.`);
  console.log(`\nCombined stage ceiling: ${coreMs.toFixed(3)} core-ms per image → ${ceiling.toFixed(0)} images/s on 2 cores.\n`);
  console.log('| scenario | setting | per s (median) | range | p99 ms | errors |\n|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.scenario} | ${r.setting} | ${r.perS.toFixed(0)} | ${r.range.map((x) => x.toFixed(0)).join('–')} | ${r.p99Ms ?? '–'} | ${r.errors ?? '–'} |`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
