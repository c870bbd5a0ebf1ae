// A data set's test split, read the way `training` reads it: test.tar.gz of class folders, a test/ folder of
// class folders, or CIFAR-10's test_batch.bin. Keys match reference.json's `order`.
import { createReadStream, existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createGunzip } from 'node:zlib';
import { extract } from 'tar-stream';
import type { Rgb8 } from '../preprocess/preprocess.js';

const IMAGE = /\.(jpe?g|png|bmp|webp)$/i;

export interface TestImage {
  /** `<class>/<file>` (image layouts) or `test_batch.bin#<index>` (CIFAR binary). */
  readonly key: string;
  /** The encoded file (image layouts) ... */
  readonly bytes?: Buffer;
  /** ... or the decoded pixels (CIFAR binary records are raw RGB planes). */
  readonly rgb?: Rgb8;
  /** The class index a binary record carries; image layouts name the class by folder instead. */
  readonly label?: number;
}

function tarImages(path: string): Promise<TestImage[]> {
  return new Promise((resolve, reject) => {
    const out: TestImage[] = [];
    const ex = extract();
    ex.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => chunks.push(c as Buffer));
      stream.on('end', () => {
        const parts = header.name.split('/').filter((p) => p && p !== '.');
        if (header.type === 'file' && IMAGE.test(header.name) && parts.length >= 2) {
          out.push({ key: parts.slice(-2).join('/'), bytes: Buffer.concat(chunks) });
        }
        next();
      });
      stream.resume();
    });
    ex.on('finish', () => resolve(out));
    ex.on('error', reject);
    createReadStream(path).on('error', reject).pipe(createGunzip()).on('error', reject).pipe(ex);
  });
}

async function folderImages(dir: string): Promise<TestImage[]> {
  const out: TestImage[] = [];
  for (const cls of await readdir(dir, { withFileTypes: true })) {
    if (!cls.isDirectory()) continue;
    for (const f of await readdir(join(dir, cls.name))) {
      if (IMAGE.test(f)) out.push({ key: `${cls.name}/${f}`, bytes: await readFile(join(dir, cls.name, f)) });
    }
  }
  return out;
}

async function binaryImages(path: string): Promise<TestImage[]> {
  const raw = await readFile(path);
  const rec = 1 + 3 * 32 * 32;
  if (raw.length % rec) throw new Error(`${path}: not CIFAR-10 binary records`);
  const out: TestImage[] = [];
  for (let i = 0; i < raw.length / rec; i++) {
    const planes = raw.subarray(i * rec + 1, (i + 1) * rec);
    const data = Buffer.alloc(3 * 1024);
    for (let p = 0; p < 1024; p++) for (let c = 0; c < 3; c++) data[p * 3 + c] = planes[c * 1024 + p] as number;
    out.push({ key: `test_batch.bin#${i}`, rgb: { data, width: 32, height: 32 }, label: raw[i * rec] as number });
  }
  return out;
}

/** Every test image under `root`, sorted by key. */
export async function readTestSet(root: string): Promise<TestImage[]> {
  let images: TestImage[];
  if (existsSync(join(root, 'test.tar.gz'))) images = await tarImages(join(root, 'test.tar.gz'));
  else if (existsSync(join(root, 'test'))) images = await folderImages(join(root, 'test'));
  else if (existsSync(join(root, 'test_batch.bin'))) images = await binaryImages(join(root, 'test_batch.bin'));
  else throw new Error(`no test split in ${root} (test.tar.gz, test/ or test_batch.bin)`);
  return images.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}
