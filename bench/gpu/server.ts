// The server end to end on the GPU machine (issue #17): `dqserve serve --device <d>` answering /v1/classify
// (CIFAR-10 test JPEGs, autocannon) at several connection counts, against the machine's preprocessing ceiling in the
// same run: the server's own preprocess() in one process per core. Run by bench/gpu/run-server.sh there (bundled to
// .device/bench/server.mjs), or here: npm run build && npx tsx bench/gpu/server.ts --device cpu --data ../shared/data/cifar10
import { fork, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { preprocess } from '../../src/preprocess/preprocess.js';
import { loadBundle } from '../../src/repository/bundle.js';
import { readTestSet } from '../../src/repository/test-set.js';

const { values } = parseArgs({
  options: {
    device: { type: 'string', default: 'cuda' },
    connections: { type: 'string', default: '64,256' },
    seconds: { type: 'string', default: '10' },
    data: { type: 'string', default: '.device/cifar10' },
    bundle: { type: 'string', default: 'models/resnet20_dq/7' },
    port: { type: 'string', default: '8099' },
    out: { type: 'string' },
    child: { type: 'boolean', default: false },
  },
});
const seconds = Number(values.seconds);
const images = (await readTestSet(values.data)).slice(0, 2000).map((i) => i.bytes as Buffer);
const { manifest } = await loadBundle(values.bundle, { verifyChecksums: false });

/** Images/s one process preprocesses for `seconds` (the child side of the ceiling). */
async function preprocessRate(): Promise<number> {
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) await preprocess(images[n++ % images.length] as Buffer, manifest.input, { maxInputPixels: 1e6 });
  return n / ((performance.now() - t0) / 1000);
}

if (values.child) {
  process.send?.(await preprocessRate());
  process.exit(0);
}

const cores = availableParallelism();
const ceiling = (await Promise.all(Array.from({ length: cores }, () => new Promise<number>((resolve, reject) => {
  const c = fork(process.argv[1] as string, [...process.argv.slice(2), '--child'], { execArgv: process.execArgv });
  c.once('message', (m) => resolve(m as number));
  c.once('error', reject);
})))).reduce((a, b) => a + b, 0);
console.error(`preprocessing ceiling: ${ceiling.toFixed(0)} images/s on ${cores} processes`);

const url = `http://127.0.0.1:${values.port}`;
const server = spawn(process.execPath, ['dist/cli.js', 'serve', '--port', values.port, '--device', values.device, '--max-batch-size', '256', '--model-repository', 'models'], {
  stdio: ['ignore', process.stderr, 'inherit'], // its log lines to our stderr: stdout is the result
  env: { ...process.env, UV_THREADPOOL_SIZE: String(cores) }, // sharp decodes in libuv's pool
});
try {
  const started = Date.now();
  for (;;) {
    if (server.exitCode !== null) throw new Error(`the server exited with code ${server.exitCode}`);
    if (Date.now() - started > 120_000) throw new Error('the server was not ready within 120 s');
    if ((await fetch(`${url}/v2/health/ready`).catch(() => null))?.ok) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  const rows = [];
  for (const connections of values.connections.split(',').map(Number)) {
    let i = 0;
    const r = await autocannon({
      url, connections, duration: seconds,
      requests: [{ method: 'POST', path: '/v1/classify', headers: { 'content-type': 'image/jpeg' }, setupRequest: (req) => ({ ...req, body: images[i++ % images.length] }) }],
    });
    const row = { connections, reqPerS: r.requests.average, p50Ms: r.latency.p50, p99Ms: r.latency.p99, errors: r.errors + r.non2xx + r.timeouts, ofCeiling: r.requests.average / ceiling };
    rows.push(row);
    console.error(JSON.stringify(row));
  }
  const result = { date: new Date().toISOString(), device: values.device, cores, preprocessingCeiling: ceiling, rows };
  if (values.out) writeFileSync(values.out, JSON.stringify(result, null, 2) + '\n');
  console.log(JSON.stringify(result));
} finally {
  server.kill('SIGTERM');
}
