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

  it("a gated bundle's max counts the second pass: the costliest plan, then every dynamic layer at second_bits", async () => {
    const { manifest } = await loadBundle(DYNAMIC_BUNDLE, { verifyChecksums: false });
    const dyn5 = manifest.layers.filter((l) => l.kind === 'dynamic').reduce((s, l) => s + l.macs * 5 * 5, 0);
    const max = manifest.bitflops.fixed + dyn5 + dyn5; // candidates {3, 4, 5}: all at 5, then pass 2 at 5
    const gated = (second_bits: number, m: number): Manifest => ({
      ...manifest,
      policy: { kind: 'gated', first_bits: null, second_bits, threshold: 0.6 },
      bitflops: { ...manifest.bitflops, max: m },
    });
    expect(() => checkBitflopsClaims(gated(5, max))).not.toThrow();
    expect(() => checkBitflopsClaims(gated(4, max))).toThrow(/bitflops max/);
    expect(() => checkBitflopsClaims({ ...gated(5, max), policy: null })).toThrow(/bitflops max/);
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
