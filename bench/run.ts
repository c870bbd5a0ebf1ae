// npm run bench: throughput and latency of POST /v1/classify with CIFAR-10 JPEGs at a few concurrencies
// (autocannon's programmatic API: its CLI corrupts binary bodies), batched vs naive (no batching),
// the static bundle when present, and stage ceilings (engine tight loop, sharp alone, empty fastify route),
// with the bundles' engines also timed taking turns, for a drift-free ratio.
// Not a test: numbers depend on the machine. Writes bench/results/<date>-<host>.json and prints Markdown.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, hostname, loadavg } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import Fastify from 'fastify';
import { OrtEngine } from '../src/engine/ort-engine.js';
import { preprocess } from '../src/preprocess/preprocess.js';
import { findBundles, loadBundle } from '../src/repository/bundle.js';
import { cifarTest } from '../test/helpers/cifar.js';
import { spawnServer } from '../loadtest/server-process.js';
import { MODELS_DIR, REPO_ROOT } from '../test/helpers/paths.js';

const DURATION_S = Number(process.env['BENCH_DURATION_S'] ?? 6);
const CONCURRENCIES = (process.env['BENCH_CONCURRENCY'] ?? '1,16,64').split(',').map(Number);

interface Row {
  readonly scenario: string;
  readonly concurrency: number | string;
  readonly imagesPerS: number;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly errors: number;
}
const rows: Row[] = [];
const log = (...a: unknown[]) => console.error(...a);

async function main(): Promise<void> {
  const images = (await cifarTest()).slice(0, 2000).map((i) => i.bytes);
  const bundles = await findBundles(MODELS_DIR);
  if (bundles.length === 0) throw new Error('no bundle under models/');

  await sharpCeiling(images);
  for (const ref of bundles) await engineCeiling(ref.dir, images);
  if (bundles.length > 1) await enginesInterleaved(bundles.map((b) => b.dir), images);
  await emptyRouteCeiling(images[0] as Buffer);

  for (const ref of bundles) {
    for (const [mode, flags] of [
      ['batched (max 32, 2 ms)', ['--max-batch-size', '32', '--max-queue-delay-microseconds', '2000']],
      ['batched, 2 instances', ['--max-batch-size', '32', '--max-queue-delay-microseconds', '2000', '--instance-count', '2']],
      ['naive (batch 1)', ['--max-batch-size', '1', '--max-queue-delay-microseconds', '0']],
    ] as const) {
      const server = await spawnServer(['--model', ref.name, '--max-queue-size', '4096', ...flags]);
      try {
        for (const c of CONCURRENCIES) rows.push(await load(`${ref.name} v${ref.version}: ${mode}`, server.url, images, c));
      } finally {
        await server.stop();
      }
    }
  }

  const meta = { date: new Date().toISOString(), host: hostname(), cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version, durationS: DURATION_S, loadavgAtEnd: loadavg() };
  const dir = join(REPO_ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${meta.date.slice(0, 10)}-${meta.host}.json`), JSON.stringify({ meta, rows }, null, 2) + '\n');
  console.log(`Machine: ${meta.cpus} × ${meta.cpu}, Node ${meta.node}; ${DURATION_S} s per load point; load average at the end ${meta.loadavgAtEnd.map((x) => x.toFixed(2)).join(' ')}.\n`);
  console.log('| scenario | concurrency | images/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.scenario} | ${r.concurrency} | ${r.imagesPerS.toFixed(0)} | ${r.p50Ms ?? '–'} | ${r.p99Ms ?? '–'} | ${r.errors} |`);
}

async function sharpCeiling(images: Buffer[]): Promise<void> {
  const bundle = await loadBundle((await findBundles(MODELS_DIR))[0]!.dir, { verifyChecksums: false });
  for (const inflight of [1, 4]) {
    let i = 0;
    const t0 = performance.now();
    let done = 0;
    await Promise.all(
      Array.from({ length: inflight }, async () => {
        while (performance.now() - t0 < DURATION_S * 500) {
          await preprocess(images[i++ % images.length] as Buffer, bundle.manifest.input, { maxInputPixels: 1e7 });
          done++;
        }
      }),
    );
    rows.push({ scenario: 'stage: sharp decode + normalise (32×32 JPEG)', concurrency: `${inflight} in flight`, imagesPerS: done / ((performance.now() - t0) / 1000), p50Ms: null, p99Ms: null, errors: 0 });
    log(rows.at(-1));
  }
}

async function engineCeiling(dir: string, images: Buffer[]): Promise<void> {
  const { manifest } = await loadBundle(dir, { verifyChecksums: false });
  const inputs = await Promise.all(images.slice(0, 256).map((b) => preprocess(b, manifest.input, { maxInputPixels: 1e7 })));
  for (const threads of [1, 2]) {
    const engine = await OrtEngine.load(dir, manifest, { intraOpNumThreads: threads, interOpNumThreads: 1 });
    await engine.warmup();
    for (const B of [1, 64]) {
      const batch = new Uint8Array(B * engine.sampleSize);
      for (let i = 0; i < B; i++) batch.set(inputs[i % inputs.length] as Uint8Array, i * engine.sampleSize);
      const opts = Array.from({ length: B }, () => ({ knob: 0, precision: null }));
      await engine.infer(batch, B, opts);
      let n = 0;
      const t0 = performance.now();
      while (performance.now() - t0 < DURATION_S * 500) {
        await engine.infer(batch, B, opts);
        n += B;
      }
      rows.push({ scenario: `stage: engine ${manifest.name} (intra-op ${threads})`, concurrency: `batch ${B}`, imagesPerS: n / ((performance.now() - t0) / 1000), p50Ms: null, p99Ms: null, errors: 0 });
      log(rows.at(-1));
    }
    await engine.close();
  }
}

/**
 * The bundles' engines at batch 64, one thread, taking turns batch by batch in one process: the machine's
 * drift (a quarter between runs here) hits them alike, so their ratio is the models', not the minute's.
 */
async function enginesInterleaved(dirs: string[], images: Buffer[]): Promise<void> {
  const B = 64;
  const engines = await Promise.all(
    dirs.map(async (dir) => {
      const { manifest } = await loadBundle(dir, { verifyChecksums: false });
      const engine = await OrtEngine.load(dir, manifest, { intraOpNumThreads: 1, interOpNumThreads: 1 });
      await engine.warmup();
      const inputs = await Promise.all(images.slice(0, B).map((b) => preprocess(b, manifest.input, { maxInputPixels: 1e7 })));
      const batch = new Uint8Array(B * engine.sampleSize);
      inputs.forEach((x, i) => batch.set(x, i * engine.sampleSize));
      return { name: manifest.name, engine, batch, ms: 0, n: 0 };
    }),
  );
  const opts = Array.from({ length: B }, () => ({ knob: 0, precision: null }));
  const t0 = performance.now();
  while (performance.now() - t0 < DURATION_S * 1000) {
    for (const e of engines) {
      const t = performance.now();
      await e.engine.infer(e.batch.slice(), B, opts);
      e.ms += performance.now() - t;
      e.n += B;
    }
  }
  for (const e of engines) {
    rows.push({ scenario: `stage: engine ${e.name} (intra-op 1), interleaved with the other bundles`, concurrency: `batch ${B}`, imagesPerS: e.n / (e.ms / 1000), p50Ms: null, p99Ms: null, errors: 0 });
    log(rows.at(-1));
    await e.engine.close();
  }
}

async function emptyRouteCeiling(body: Buffer): Promise<void> {
  const app = Fastify();
  app.addContentTypeParser('image/jpeg', { parseAs: 'buffer' }, (_r, b, done) => done(null, b));
  app.post('/v1/classify', async (req) => ({ ok: true, bytes: (req.body as Buffer).length }));
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  rows.push({ ...(await load('stage: empty fastify route (same process as the load)', url, [body], 32)) });
  await app.close();
}

async function load(scenario: string, url: string, images: Buffer[], connections: number): Promise<Row> {
  let i = 0;
  const run = (duration: number) =>
    autocannon({
      url,
      connections,
      duration,
      requests: [
        {
          method: 'POST',
          path: '/v1/classify',
          headers: { 'content-type': 'image/jpeg' },
          setupRequest: (req) => ({ ...req, body: images[i++ % images.length] }),
        },
      ],
    });
  await run(1); // warm-up
  const r = await run(DURATION_S);
  const row: Row = {
    scenario,
    concurrency: connections,
    imagesPerS: r.requests.average,
    p50Ms: r.latency.p50,
    p99Ms: r.latency.p99,
    errors: r.errors + r.non2xx + r.timeouts,
  };
  log(row);
  return row;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
