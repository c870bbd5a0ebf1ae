// A dqserve child process on an ephemeral 127.0.0.1 port, shared by bench/run.ts and loadtest/run.ts.
// The server runs in its own process so the load generator does not share its event loop.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export interface ServerProcess {
  readonly child: ChildProcess;
  readonly url: string;
  stop(): Promise<void>;
}

export interface SpawnOptions {
  /** `dist` runs dist/cli.js (build first); `source` runs src/cli.ts through tsx (no build, never stale). */
  readonly entry?: 'dist' | 'source';
  /** Give up when the server has not reported ready after this long. */
  readonly readyTimeoutMs?: number;
}

/** Starts `dqserve serve --host 127.0.0.1 --port 0 <flags>` and resolves once /v2/health/ready answers 200. */
export async function spawnServer(flags: readonly string[], opts: SpawnOptions = {}): Promise<ServerProcess> {
  const entry = opts.entry ?? 'dist';
  const args =
    entry === 'dist'
      ? [join(REPO_ROOT, 'dist', 'cli.js')]
      : ['--import', 'tsx', join(REPO_ROOT, 'src', 'cli.ts')];
  if (entry === 'dist' && !existsSync(args[0] as string)) throw new Error('dist/cli.js is missing: run `npm run build` first');
  // stdout (pino JSON) is read for the listening line and otherwise dropped; stderr is kept for diagnostics.
  const child = spawn(process.execPath, [...args, 'serve', '--host', '127.0.0.1', '--port', '0', ...flags], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-4000);
  });
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(t);
  };
  const url = await new Promise<string>((resolveUrl, reject) => {
    const onExit = (code: number | null) => reject(new Error(`server exited (${code}) before it was ready${stderr ? `: ${stderr.trim()}` : ''}`));
    child.once('exit', onExit);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const m = /"url":"(http:[^"]+)"/.exec(line);
      if (m) {
        waitReady(m[1]!, opts.readyTimeoutMs ?? 120_000).then(
          () => {
            child.off('exit', onExit);
            resolveUrl(m[1]!);
          },
          (err: unknown) => {
            child.off('exit', onExit);
            void stop();
            reject(err as Error);
          },
        );
      }
    });
  });
  return { child, url, stop };
}

/** Polls GET /v2/health/ready until 200, every 100 ms. */
export async function waitReady(url: string, timeoutMs = 60_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const ok = await fetch(`${url}/v2/health/ready`).then((r) => r.ok, () => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`server at ${url} not ready after ${timeoutMs} ms`);
}
