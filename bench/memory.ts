// Memory under hostile-but-legal uploads (docs/reliability.md): peak RSS growth of a real `dqserve serve`
// (default flags, the bundled model) per scenario, and how long a normal CIFAR request takes meanwhile.
//   npm run build && npx tsx bench/memory.ts [--out bench/results/<file>.json]
// Peaks are the kernel's VmHWM, reset before each scenario (/proc/<pid>/clear_refs), minus VmRSS before it.
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { spawnServer } from '../loadtest/server-process.js';
import { cifarSample } from '../test/helpers/cifar.js';

const { values } = parseArgs({ options: { out: { type: 'string' } } });

const status = (pid: number, key: 'VmRSS' | 'VmHWM') => {
  const m = new RegExp(`${key}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) / 1024;
};

async function main(): Promise<void> {
  const side = 4990; // 24.9 Mpx: inside the default 25 Mpx limit
  const webp = await sharp({ create: { width: side, height: side, channels: 3, background: '#3a6' } }).webp({ lossless: true }).toBuffer();
  const avif = await sharp({ create: { width: side, height: side, channels: 3, background: '#3a6' } }).avif({ effort: 0 }).toBuffer();
  const cifar = (await cifarSample(1))[0]?.bytes;
  const server = await spawnServer([]);
  const pid = server.child.pid!;
  const post = async (body: Buffer | string, path = '/v1/classify', type = 'application/octet-stream') => {
    const t0 = performance.now();
    const res = await fetch(server.url + path, { method: 'POST', headers: { 'content-type': type }, body });
    await res.arrayBuffer();
    return { status: res.status, ms: performance.now() - t0 };
  };
  const oip = (images: Buffer[]) =>
    post(JSON.stringify({ inputs: [{ name: 'image', shape: [images.length], datatype: 'BYTES', data: images.map((b) => b.toString('base64')) }] }), '/v2/models/resnet20_dq/infer', 'application/json');
  for (let i = 0; i < 50; i++) await post(cifar!);

  const rows: Record<string, unknown>[] = [];
  const scenario = async (name: string, run: () => Promise<{ statuses: number[]; normalMs?: number; ms: number }>) => {
    await new Promise((r) => setTimeout(r, 1000));
    const before = status(pid, 'VmRSS');
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    const r = await run();
    const peak = status(pid, 'VmHWM');
    const counts = Object.entries(r.statuses.reduce<Record<number, number>>((a, s) => ({ ...a, [s]: (a[s] ?? 0) + 1 }), {}))
      .map(([s, n]) => `${n}×${s}`)
      .join(' ');
    const row = { scenario: name, rss_before_mb: Math.round(before), peak_growth_mb: Math.round(peak - before), answers: counts, wall_ms: Math.round(r.ms), ...(r.normalMs !== undefined ? { normal_request_ms: Math.round(r.normalMs) } : {}) };
    rows.push(row);
    console.log(JSON.stringify(row));
  };
  const timed = async (fn: () => Promise<number[]>) => {
    const t0 = performance.now();
    const statuses = await fn();
    return { statuses, ms: performance.now() - t0 };
  };

  await scenario(`one ${webp.length} B lossless WebP, ${side}×${side}`, () => timed(async () => [(await post(webp)).status]));
  await scenario(`one ${avif.length} B AVIF, ${side}×${side}`, () => timed(async () => [(await post(avif)).status]));
  await scenario('OIP request of 4 such WebPs (100 Mpx: the per-request limit)', () => timed(async () => [(await oip([webp, webp, webp, webp])).status]));
  await scenario('OIP request of 64 such WebPs (a 65 KB body)', () => timed(async () => [(await oip(Array(64).fill(webp))).status]));
  await scenario('32 concurrent uploads of the WebP, and a CIFAR request 200 ms in', async () => {
    const t0 = performance.now();
    const all = Array.from({ length: 32 }, () => post(webp));
    await new Promise((r) => setTimeout(r, 200));
    const normal = await post(cifar!);
    const statuses = (await Promise.all(all)).map((r) => r.status);
    return { statuses: [...statuses, normal.status], normalMs: normal.ms, ms: performance.now() - t0 };
  });
  await scenario('32 concurrent uploads of the AVIF', () => timed(async () => (await Promise.all(Array.from({ length: 32 }, () => post(avif)))).map((r) => r.status)));
  await server.stop();
  if (values.out) writeFileSync(values.out, JSON.stringify({ date: new Date().toISOString(), command: 'npx tsx bench/memory.ts', rows }, null, 1) + '\n');
}

await main();
