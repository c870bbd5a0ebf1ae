// Generated payloads for bad-input tests.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { REPO_ROOT } from './paths.js';

/** A real 20000×20000 PNG (≈1.1 MB, 400 M pixels): a decompression bomb. Cached in .cache/ (generation takes ~7 s). */
export async function bombPng(): Promise<Buffer> {
  const dir = join(REPO_ROOT, '.cache');
  const file = join(dir, 'bomb-20000x20000.png');
  if (existsSync(file)) return readFileSync(file);
  const buf = await sharp({ limitInputPixels: false, create: { width: 20000, height: 20000, channels: 3, background: '#000' } })
    .png({ compressionLevel: 9 })
    .toBuffer();
  mkdirSync(dir, { recursive: true });
  writeFileSync(file, buf);
  return buf;
}
