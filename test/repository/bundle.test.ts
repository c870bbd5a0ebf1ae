// Loading bundles: the manifest's claims are checked against the layers before any engine starts.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkBitflopsClaims, loadBundle } from '../../src/repository/bundle.js';
import type { Manifest } from '../../src/repository/manifest.js';
import { startTestServer } from '../helpers/server.js';
import { DYNAMIC_BUNDLE, hasDynamicBundle } from '../helpers/paths.js';

describe.skipIf(!hasDynamicBundle)('bundle claims', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'dqserve-bundle-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it("the shipped default's Bit-FLOPs claims match its layers", async () => {
    const { manifest } = await loadBundle(DYNAMIC_BUNDLE, { verifyChecksums: false });
    expect(() => checkBitflopsClaims(manifest)).not.toThrow();
  });

  it.each(['reference', 'fixed', 'min', 'max'] as const)('a server refuses a bundle whose bitflops.%s disagrees with its layers', async (key) => {
    const m = JSON.parse(readFileSync(join(DYNAMIC_BUNDLE, 'manifest.json'), 'utf8')) as Manifest;
    const dir = join(tmp, key, m.name, String(m.version));
    cpSync(DYNAMIC_BUNDLE, dir, { recursive: true });
    m.bitflops[key] *= 1.001;
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify(m));
    await expect(startTestServer({ engine: 'ort', modelRepository: join(tmp, key), warmup: false })).rejects.toMatchObject({
      code: 'DQ_ERR_BUNDLE_INVALID',
      message: expect.stringContaining(`bitflops ${key}`),
    });
  });
});
