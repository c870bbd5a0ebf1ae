// The preprocessing contract: the server's tensors equal those training/preprocess.py makes of the same files
// (test/fixtures/preprocess/expected.json, written by `python -m training.preprocess_vectors`), for odd sizes,
// portrait, upscaling, every EXIF orientation, alpha, palettes, grey, 16-bit, each format and real photos.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fakeManifest } from '../../src/engine/fake-manifest.js';
import { preprocess } from '../../src/preprocess/preprocess.js';
import { DATA_DIR, FIXTURES } from '../helpers/paths.js';

interface Vector {
  file: string;
  size: [number, number];
  hwc_base64: string;
}

const dir = join(FIXTURES, 'preprocess');
const { vectors } = JSON.parse(readFileSync(join(dir, 'expected.json'), 'utf8')) as { vectors: Vector[] };
const spec = fakeManifest().input;

describe('preprocessing contract (vectors from training/preprocess.py)', () => {
  it('covers the cases the contract names', () => {
    const files = vectors.map((v) => v.file);
    for (const kind of ['exif-8', 'rgba', 'la-', 'palette-alpha', 'grey16', '75x100', '20x13', '.webp', '.gif', '.tiff', 'photos/']) {
      expect(files.some((f) => f.includes(kind)), kind).toBe(true);
    }
  });

  it.each(vectors.map((v) => [v.file, v] as const))('%s', async (file, v) => {
    const path = file.startsWith('photos/') ? join(DATA_DIR, file) : join(dir, file);
    const x = await preprocess(readFileSync(path), spec, { maxInputPixels: 25_000_000 });
    const expected = Buffer.from(v.hwc_base64, 'base64');
    const got = Buffer.from(x.buffer, x.byteOffset, x.length);
    const diff = got.findIndex((b, i) => b !== expected[i]);
    expect(diff < 0 ? 'identical' : `first difference at byte ${diff}: ${got[diff]} vs ${expected[diff]}`).toBe('identical');
  });
});
