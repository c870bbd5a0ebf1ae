// CIFAR-10 test JPEGs straight out of ../shared/data/cifar10/test.tar.gz, through the server's own reader.
import { dirname } from 'node:path';
import { readTestSet } from '../../src/repository/test-set.js';
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
  cache ??= readTestSet(dirname(CIFAR_TEST_TAR)).then((all) =>
    all.map((i) => ({ key: i.key, label: i.key.split('/')[0] as string, bytes: i.bytes as Buffer })),
  );
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
