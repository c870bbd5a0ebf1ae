// SIGTERM against the real `dqserve serve` process: stop accepting, finish accepted requests, exit in bounded time.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { failAt } from '../../src/server.js';
import { PHOTOS_DIR, REPO_ROOT } from '../helpers/paths.js';

const rocket = readFileSync(join(PHOTOS_DIR, 'rocket.jpg'));

function startProcess(args: string[]): Promise<{ child: ChildProcess; url: string; logs: string[] }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--port', '0', '--engine', 'fake', ...args], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${logs.join('\n')}`)), 30_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      logs.push(line);
      const m = /"url":"(http:[^"]+)"/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1]!, logs });
      }
    });
    child.stderr!.on('data', (d: Buffer) => logs.push(d.toString()));
    child.on('exit', (code) => reject(new Error(`exited ${code}:\n${logs.join('\n')}`)));
  });
}

function ended(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
}

const classify = (url: string, body: Buffer) =>
  fetch(`${url}/v1/classify`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body }).then(
    async (r) => ({ status: r.status, code: ((await r.json()) as { code?: string }).code }),
    () => ({ status: 0, code: 'reset' }),
  );

describe('SIGTERM', () => {
  it('finishes every accepted request, refuses new ones, and exits 0 within the drain bound', async () => {
    // Each batch takes 700 ms and holds 2 images: 6 requests need ~2.1 s after SIGTERM.
    const { child, url, logs } = await startProcess(['--fake-engine-delay-ms', '700', '--max-batch-size', '2', '--drain-timeout-ms', '8000']);
    const accepted = Array.from({ length: 6 }, () =>
      fetch(`${url}/v1/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: rocket }).then(async (r) => ({ status: r.status, body: await r.text() })),
    );
    await new Promise((r) => setTimeout(r, 300));
    const exit = ended(child);
    const t0 = Date.now();
    child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 100));

    // New connections are refused (the listener is closed) or told 503 while draining.
    const late = await fetch(`${url}/v1/classify`, { method: 'POST', headers: { 'content-type': 'image/jpeg', connection: 'close' }, body: rocket }).then(
      async (r) => ({ status: r.status, json: (await r.json()) as { code: string } }),
      (err: Error) => ({ status: 0, error: String((err.cause as Error)?.message ?? err) }),
    );
    if (late.status !== 0) expect(late).toMatchObject({ status: 503, json: { code: 'DQ_ERR_SERVER_SHUTTING_DOWN' } });

    const results = await Promise.all(accepted);
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
    const { code } = await exit;
    if (code !== 0) console.error(logs.join('\n'));
    expect(code).toBe(0);
    expect(Date.now() - t0).toBeLessThan(8000);
    expect(logs.join('\n')).toMatch(/"msg":"closed"/);
  }, 60_000);

  it('past the drain deadline, answers what is pending with 503 and ends by the signal it got', async () => {
    const { child, url, logs } = await startProcess(['--fake-engine-delay-ms', '5000', '--drain-timeout-ms', '500']);
    const pending = classify(url, rocket);
    await new Promise((r) => setTimeout(r, 300));
    const end = ended(child);
    const t0 = Date.now();
    child.kill('SIGTERM');
    expect(await end).toEqual({ code: null, signal: 'SIGTERM' });
    expect(Date.now() - t0).toBeLessThan(2000);
    expect(await pending).toEqual({ status: 503, code: 'DQ_ERR_SERVER_SHUTTING_DOWN' });
    expect(logs.join('\n')).toMatch(/drain deadline passed.*"failed":1|"failed":1.*drain deadline passed/);
  }, 60_000);

  it('holds the deadline with large decodes running and queued (libvips cannot cancel them)', async () => {
    // 12 lossless WebPs of 1 KB that decode to 25 Mpx each: ~0.3 s apiece, one at a time (--max-decoding-pixels)
    const bomb = await sharp({ create: { width: 5000, height: 5000, channels: 3, background: '#345' } }).webp({ lossless: true }).toBuffer();
    const { child, url } = await startProcess(['--drain-timeout-ms', '1000']);
    const pending = Array.from({ length: 12 }, () => classify(url, bomb));
    await new Promise((r) => setTimeout(r, 300));
    const end = ended(child);
    const t0 = Date.now();
    child.kill('SIGTERM');
    expect(await end).toEqual({ code: null, signal: 'SIGTERM' });
    const ms = Date.now() - t0;
    const statuses = (await Promise.all(pending)).map((r) => r.status);
    expect(ms).toBeLessThan(1000 + 600); // the deadline, the 50 ms flush, and this machine's noise
    expect(statuses.every((s) => s === 200 || s === 503)).toBe(true); // answered or failed cleanly: none reset
    expect(statuses).toContain(503);
  }, 60_000);
});

describe('drain deadline', () => {
  it('gives up early enough for the 503s and the teardown to end within it: 100 ms, or a tenth of a short one', () => {
    expect([failAt(10_000), failAt(1000), failAt(500), failAt(0)]).toEqual([9900, 900, 450, 0]);
  });
});

describe('npm start', () => {
  it('stops the server when npm itself gets SIGTERM (what a shell, a process manager or an IDE sends): no orphan', async () => {
    const npm = spawn('npm', ['start', '--silent', '--', '--engine', 'fake'], {
      cwd: REPO_ROOT,
      env: { ...process.env, DQSERVE_PORT: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('npm start did not report listening')), 30_000);
      createInterface({ input: npm.stdout! }).on('line', (line) => {
        const m = /"url":"(http:[^"]+)"/.exec(line);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      });
    });
    expect((await fetch(`${url}/v2/health/live`)).status).toBe(200);
    const gone = ended(npm);
    npm.kill('SIGTERM');
    await gone;
    // the server drains and exits with npm: nothing answers on its port any more
    let answered = true;
    for (let i = 0; i < 50 && answered; i++) {
      answered = await fetch(`${url}/v2/health/live`).then(() => true, () => false);
      if (answered) await new Promise((r) => setTimeout(r, 100));
    }
    expect(answered).toBe(false);
  }, 60_000);
});
