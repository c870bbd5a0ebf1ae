// Request bodies: real encoded images, sent as the raw body or as the multipart field `image`.
// Bodies are Buffers handed to autocannon's API (its CLI reads a body file as text and corrupts binary data).
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { readTestSet } from '../src/repository/test-set.js';

const TYPES: Record<string, string> = {
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.png': 'image/png',
  '.webp': 'image/webp',
  '.gif': 'image/gif',
  '.tif': 'image/tiff',
  '.tiff': 'image/tiff',
  '.avif': 'image/avif',
};

export interface Payload {
  readonly name: string;
  readonly contentType: string;
  readonly bytes: Buffer;
}

/** Every image file directly in `dir` (by extension), sorted by name. */
export async function folderPayloads(dir: string): Promise<Payload[]> {
  const out: Payload[] = [];
  for (const f of (await readdir(dir)).sort()) {
    const type = TYPES[extname(f).toLowerCase()];
    if (type) out.push({ name: f, contentType: type, bytes: await readFile(join(dir, f)) });
  }
  return out;
}

/** The first `limit` images (in key order) of the test split under `dataDir` (readTestSet's layouts with encoded files). */
export async function testSetPayloads(dataDir: string, limit: number): Promise<Payload[]> {
  const all = await readTestSet(dataDir);
  return all
    .filter((i) => i.bytes !== undefined)
    .slice(0, limit)
    .map((i) => ({ name: i.key, contentType: TYPES[extname(i.key).toLowerCase()] ?? 'application/octet-stream', bytes: i.bytes as Buffer }));
}

export interface PayloadSources {
  /** Folder with the test split (test.tar.gz, test/ or test_batch.bin); null to skip. */
  readonly testSetDir: string | null;
  readonly testSetLimit: number;
  /** Folders of images, each read when it exists (photos) or required (user folders). */
  readonly optionalFolders: readonly string[];
  readonly folders: readonly string[];
}

export async function loadPayloads(src: PayloadSources): Promise<Payload[]> {
  const out: Payload[] = [];
  if (src.testSetDir !== null) out.push(...(await testSetPayloads(src.testSetDir, src.testSetLimit)));
  for (const dir of src.optionalFolders) if (existsSync(dir)) out.push(...(await folderPayloads(dir)));
  for (const dir of src.folders) {
    const found = await folderPayloads(dir);
    if (found.length === 0) throw new Error(`--payloads ${dir}: no image files (${Object.keys(TYPES).join(' ')})`);
    out.push(...found);
  }
  if (out.length === 0) throw new Error('no payloads: give --payloads <folder>');
  return out;
}

export interface Body {
  readonly headers: Record<string, string>;
  readonly body: Buffer;
}

const BOUNDARY = 'dqserve-loadtest-7c3e1f';

/** The multipart/form-data body with the image in the field `image` (docs/api.md). */
export function multipartBody(p: Payload): Body {
  const head = Buffer.from(
    `--${BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="${p.name.replace(/[^\w.-]/g, '_')}"\r\nContent-Type: ${p.contentType}\r\n\r\n`,
  );
  return { headers: { 'content-type': `multipart/form-data; boundary=${BOUNDARY}` }, body: Buffer.concat([head, p.bytes, Buffer.from(`\r\n--${BOUNDARY}--\r\n`)]) };
}

export function rawBody(p: Payload): Body {
  return { headers: { 'content-type': p.contentType }, body: p.bytes };
}

/**
 * Request i's body: payloads in turn; multipart for a `ratio` share of requests, spread evenly
 * (request i is multipart when ⌊(i+1)·ratio⌋ > ⌊i·ratio⌋), so any window of requests has the mix.
 * Both forms are built once per payload.
 */
export function bodySequence(payloads: readonly Payload[], ratio: number): (i: number) => Body {
  const raw = payloads.map(rawBody);
  const multi = ratio > 0 ? payloads.map(multipartBody) : [];
  return (i) => {
    const k = i % payloads.length;
    const isMulti = Math.floor((i + 1) * ratio) > Math.floor(i * ratio);
    return (isMulti ? multi[k] : raw[k]) as Body;
  };
}
