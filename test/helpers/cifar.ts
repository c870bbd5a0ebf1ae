// CIFAR-10 test JPEGs read straight out of test.tar.gz with tar-stream (no unpacking).
import { createReadStream } from 'node:fs';
import { createGunzip } from 'node:zlib';
import { extract } from 'tar-stream';
import { CIFAR_TEST_TAR } from './paths.js';

export interface CifarImage {
  /** `<class>/<file>`, as reference.json's `order`. */
  readonly key: string;
  readonly label: string;
  readonly bytes: Buffer;
}

let cache: Promise<CifarImage[]> | undefined;

/** All 10,000 test images, sorted by key. */
export function cifarTest(): Promise<CifarImage[]> {
  cache ??= new Promise<CifarImage[]>((resolve, reject) => {
    const out: CifarImage[] = [];
    const ex = extract();
    ex.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => chunks.push(c as Buffer));
      stream.on('end', () => {
        const m = /^(?:\.\/)?test\/([^/]+)\/([^/]+\.jpe?g)$/.exec(header.name);
        if (header.type === 'file' && m) out.push({ key: `${m[1]}/${m[2]}`, label: m[1] as string, bytes: Buffer.concat(chunks) });
        next();
      });
      stream.resume();
    });
    ex.on('finish', () => resolve(out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))));
    ex.on('error', reject);
    createReadStream(CIFAR_TEST_TAR).on('error', reject).pipe(createGunzip()).on('error', reject).pipe(ex);
  });
  return cache;
}

/** `per` images of each class, in key order: a small, balanced sample. */
export async function cifarSample(per: number): Promise<CifarImage[]> {
  const all = await cifarTest();
  const seen = new Map<string, number>();
  return all.filter((img) => {
    const n = seen.get(img.label) ?? 0;
    seen.set(img.label, n + 1);
    return n < per;
  });
}
