// The dqserve CLI as a user runs it (through tsx, so no build is needed).
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { CONTROLLER_BUNDLE, DYNAMIC_BUNDLE, hasControllerBundle, hasDynamicBundle, PHOTOS_DIR, REPO_ROOT } from './helpers/paths.js';

const run = (...args: string[]) => promisify(execFile)(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { cwd: REPO_ROOT });

describe('dqserve CLI', () => {
  it('--help lists the commands', async () => {
    const { stdout } = await run('--help');
    expect(stdout).toMatch(/serve/);
    expect(stdout).toMatch(/classify/);
    expect(stdout).toMatch(/inspect/);
  });

  it('classify prints one JSON object per file, and an error object for a bad file', async () => {
    const out = await run('classify', '--engine', 'fake', join(PHOTOS_DIR, 'rocket.jpg'), join(REPO_ROOT, 'package.json')).catch((e: { stdout: string }) => e);
    const lines = out.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines[0]).toMatchObject({ model: 'fake_dq', label: expect.any(String), bitflops: expect.any(Number) });
    expect(lines[1]).toMatchObject({ code: 'DQ_ERR_PREPROCESS_UNSUPPORTED_FORMAT' });
  });

  it('classify refuses a missing file in one line before loading a model', async () => {
    const err = (await run('classify', '--engine', 'fake', join(PHOTOS_DIR, 'rocket.jpg'), '/nope.jpg').catch((e: unknown) => e)) as { code: number; stdout: string; stderr: string };
    expect(err.code).toBe(1);
    expect(err.stdout).toBe('');
    expect(err.stderr.trim()).toBe('error: classify: /nope.jpg is not a readable file');
  });

  it('an invalid setting exits 1 with DQ_ERR_CONFIG_INVALID', async () => {
    const err = (await run('serve', '--port', 'nope').catch((e: unknown) => e)) as { code: number; stderr: string };
    expect(err.code).toBe(1);
    expect(err.stderr).toMatch(/DQ_ERR_CONFIG_INVALID/);
  });

  // Without a GPU (or without the CUDA build) --device cuda fails at once, in one line that names CUDA.
  it.skipIf(existsSync('/dev/nvidiactl'))('--device cuda on a machine without a GPU exits 1 in one line naming CUDA', async () => {
    for (const args of [['serve', '--device', 'cuda', '--port', '0'], ['verify', DYNAMIC_BUNDLE, '--device', 'cuda']]) {
      const err = (await run(...args).catch((e: unknown) => e)) as { code: number; stdout: string; stderr: string };
      expect(err.code).toBe(1);
      const lines = `${err.stdout}${err.stderr}`.trim().split('\n').filter((l) => !l.startsWith('npm warn'));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/CUDA is not usable here|npm run build:cuda/);
    }
  });

  it('a format-1 bundle is refused in one line that says how to re-export it', async () => {
    const old = join(REPO_ROOT, 'training', 'format1-bundles', 'resnet20_w4_4');
    const err = (await run('inspect', old).catch((e: unknown) => e)) as { code: number; stderr: string };
    expect(err.code).toBe(1);
    expect(err.stderr.trim().split('\n')).toHaveLength(1);
    expect(err.stderr).toMatch(/DQ_ERR_BUNDLE_INVALID: .*bundle format 1 is not served.*training export --from-bundle/);
  });

  it.skipIf(!hasDynamicBundle)("inspect shows the default's policy", async () => {
    const { stdout } = await run('inspect', DYNAMIC_BUNDLE);
    expect(stdout).toMatch(/resnet20_dq v\d+ \(dynamic\)/);
    expect(stdout).toMatch(/policy: gated, pass 1 .*, pass 2 at \d bits/);
  });

  it.skipIf(!hasControllerBundle)('inspect shows layers, Bit-FLOPs and the calibration table', async () => {
    const { stdout } = await run('inspect', CONTROLLER_BUNDLE);
    expect(stdout).toMatch(/resnet20_dq v\d+ \(dynamic\)/);
    expect(stdout).toMatch(/checksums verified/);
    expect(stdout).toMatch(/layer3\.2\.conv2\s+dynamic/);
    expect(stdout).toMatch(/knob\s+accuracy/);
    const { stdout: json } = await run('inspect', CONTROLLER_BUNDLE, '--json');
    const s = JSON.parse(json) as { bitflops: { manifest: { reference: number }; recomputed_reference: number } };
    expect(s.bitflops.recomputed_reference).toBe(s.bitflops.manifest.reference);
  });
});
