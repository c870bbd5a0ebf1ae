// Request bodies: real encoded images, sent to /v1/classify as the raw body or the multipart field `image`, or
// to /v2/models/<model>/infer as Open Inference Protocol requests (JSON with a base64 BYTES element, or the
// binary tensor extension).
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

/** An OIP infer request for one image as JSON: input `image`, shape [1], BYTES, the file base64-encoded (docs/api.md). */
export function oipJsonBody(p: Payload): Body {
  const request = { inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', data: [p.bytes.toString('base64')] }] };
  return { headers: { 'content-type': 'application/json' }, body: Buffer.from(JSON.stringify(request)) };
}

/** The same request with the binary tensor extension: JSON header, then the element as a 4-byte little-endian length and the bytes. */
export function oipBinaryBody(p: Payload): Body {
  const element = Buffer.alloc(4 + p.bytes.length);
  element.writeUInt32LE(p.bytes.length);
  p.bytes.copy(element, 4);
  const header = Buffer.from(JSON.stringify({ inputs: [{ name: 'image', shape: [1], datatype: 'BYTES', parameters: { binary_data_size: element.length } }] }));
  return {
    headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(header.length) },
    body: Buffer.concat([header, element]),
  };
}

export type Protocol = 'v1' | 'oip';

/** Each protocol's two body forms: the plain one, and the one sent for a `ratio` share of requests. */
export const BODY_FORMS: Record<Protocol, { readonly plain: (p: Payload) => Body; readonly alt: (p: Payload) => Body }> = {
  v1: { plain: rawBody, alt: multipartBody },
  oip: { plain: oipJsonBody, alt: oipBinaryBody },
};

/**
 * Request i's body: payloads in turn; the alternative form (multipart for v1, the binary extension for OIP)
 * for a `ratio` share of requests, spread evenly (request i takes it when ⌊(i+1)·ratio⌋ > ⌊i·ratio⌋), so any
 * window of requests has the mix. Both forms are built once per payload.
 */
export function bodySequence(payloads: readonly Payload[], ratio: number, protocol: Protocol = 'v1'): (i: number) => Body {
  const forms = BODY_FORMS[protocol];
  const plain = payloads.map(forms.plain);
  const alt = ratio > 0 ? payloads.map(forms.alt) : [];
  return (i) => {
    const k = i % payloads.length;
    const isAlt = Math.floor((i + 1) * ratio) > Math.floor(i * ratio);
    return (isAlt ? alt[k] : plain[k]) as Body;
  };
}
