// SIGTERM under load (docs/reliability.md): a real `dqserve serve --drain-timeout-ms <ms>` (the bundled model)
// under closed-loop CIFAR load plus a few 25 Mpx uploads whose decodes are still queued at the signal; reports
// how long the process took to end after SIGTERM and what every request got.
//   npm run build && npx tsx bench/drain.ts [--drain-ms 1000] [--connections 64] [--out <file>.json]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { spawnServer } from '../loadtest/server-process.js';
import { cifarSample } from '../test/helpers/cifar.js';

const { values } = parseArgs({ options: { 'drain-ms': { type: 'string', default: '1000' }, connections: { type: 'string', default: '64' }, out: { type: 'string' } } });
const drainMs = Number(values['drain-ms']);
const connections = Number(values.connections);

const images = (await cifarSample(50)).map((s) => s.bytes);
const bomb = await sharp({ create: { width: 4990, height: 4990, channels: 3, background: '#3a6' } }).webp({ lossless: true }).toBuffer();
const server = await spawnServer(['--drain-timeout-ms', String(drainMs)]);
// Outcomes by when the request was sent: before SIGTERM (accepted, or in the socket's backlog) or after it.
const outcomes = { before: new Map<string, number>(), after: new Map<string, number>() };
let signalledAt = Infinity;
const count = (sentAt: number, k: string) => {
  const m = sentAt < signalledAt ? outcomes.before : outcomes.after;
  m.set(k, (m.get(k) ?? 0) + 1);
};

let stop = false;
const send = async (body: Buffer): Promise<void> => {
  const sentAt = performance.now();
  try {
    const res = await fetch(`${server.url}/v1/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body });
    const json = (await res.json()) as { code?: string };
    count(sentAt, res.status === 200 ? '200' : `${res.status} ${json.code}`);
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause;
    count(sentAt, `no answer: ${cause?.code ?? String(err)}`);
  }
};
const loops = Array.from({ length: connections }, async (_, i) => {
  for (let n = i; !stop; n += connections) await send(images[n % images.length]!);
});
await new Promise((r) => setTimeout(r, 3000));
const bombs = Array.from({ length: 8 }, () => send(bomb)); // queued large decodes at the signal
await new Promise((r) => setTimeout(r, 300));
const t0 = performance.now();
signalledAt = t0;
const ended = new Promise<{ code: number | null; signal: string | null }>((r) => server.child.once('exit', (code, signal) => r({ code, signal })));
server.child.kill('SIGTERM');
const exit = await ended;
const exitMs = performance.now() - t0;
await new Promise((r) => setTimeout(r, 200));
stop = true;
await Promise.all([...loops, ...bombs]);
const result = {
  date: new Date().toISOString(),
  command: `npx tsx bench/drain.ts --drain-ms ${drainMs} --connections ${connections}`,
  drain_timeout_ms: drainMs,
  exit,
  exit_ms_after_sigterm: Math.round(exitMs),
  sent_before_sigterm: Object.fromEntries(outcomes.before),
  sent_after_sigterm: Object.fromEntries(outcomes.after),
};
console.log(JSON.stringify(result, null, 1));
if (values.out) writeFileSync(values.out, JSON.stringify(result, null, 1) + '\n');
