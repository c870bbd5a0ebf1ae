// Finding, validating and checksumming model bundles: models/<name>/<version>/manifest.json.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { Value } from '@sinclair/typebox/value';
import { bitflops, referenceBitflops, secondPassBitflops, uniformPlan } from '../cost/bitflops.js';
import { DqError } from '../errors.js';
import { FORMAT_VERSION, graphFiles, ManifestSchema, type Manifest } from './manifest.js';

export interface Bundle {
  readonly dir: string;
  readonly manifest: Manifest;
}

export interface BundleRef {
  readonly name: string;
  readonly version: number;
  readonly dir: string;
}

/** Every <name>/<version>/manifest.json under `root`, sorted by name then version; `onSkip` hears of a version
 * folder without a manifest (an export that did not finish, a copy gone wrong). */
export async function findBundles(root: string, onSkip?: (dir: string) => void): Promise<BundleRef[]> {
  const refs: BundleRef[] = [];
  const names = await readdir(root, { withFileTypes: true }).catch(() => []);
  for (const n of names) {
    if (!n.isDirectory()) continue;
    const versions = await readdir(join(root, n.name), { withFileTypes: true }).catch(() => []);
    for (const v of versions) {
      if (!v.isDirectory() || !/^[1-9][0-9]*$/.test(v.name)) continue;
      const dir = join(root, n.name, v.name);
      if (await isFile(join(dir, 'manifest.json'))) refs.push({ name: n.name, version: Number(v.name), dir });
      else onSkip?.(dir);
    }
  }
  return refs.sort((a, b) => (a.name === b.name ? a.version - b.version : a.name < b.name ? -1 : 1));
}

export async function loadBundle(dir: string, options: { verifyChecksums: boolean }): Promise<Bundle> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));
  } catch (err) {
    throw new DqError('DQ_ERR_BUNDLE_INVALID', `${dir}/manifest.json: ${(err as Error).message}`, { cause: err });
  }
  const version = (parsed as { format_version?: unknown } | null)?.format_version;
  if (typeof version === 'number' && version !== FORMAT_VERSION) {
    throw new DqError('DQ_ERR_BUNDLE_INVALID', `${dir}: bundle format ${version} is not served by this server (format ${FORMAT_VERSION})` +
      (version === 1 ? `; re-export it: python3 -m training export --from-bundle ${dir} --name <name> --version <n>` : ''));
  }
  if (!Value.Check(ManifestSchema, parsed)) {
    const problems = [...Value.Errors(ManifestSchema, parsed)].slice(0, 5).map((e) => `${e.path || '/'}: ${e.message}`);
    throw new DqError('DQ_ERR_BUNDLE_INVALID', `${dir}/manifest.json: ${problems.join('; ')}`);
  }
  const manifest = parsed;
  for (const file of graphFiles(manifest.graph)) {
    if (!(file in manifest.files)) throw new DqError('DQ_ERR_BUNDLE_INVALID', `${file} is used by graph but has no sha256 in files`);
  }
  for (const file of Object.keys(manifest.files)) {
    const abs = resolve(dir, file);
    if (!abs.startsWith(resolve(dir) + sep)) throw new DqError('DQ_ERR_BUNDLE_INVALID', `${file} lies outside the bundle`);
  }
  if (options.verifyChecksums) await verifyChecksums(dir, manifest.files);
  return { dir, manifest };
}

/**
 * Recomputes what the manifest claims about Bit-FLOPs from its layers (docs/bitflops.md): a mismatch means
 * training and the server disagree on the contract, so every cost the server would report is suspect.
 */
export function checkBitflopsClaims(m: Manifest): void {
  const c = m.bits.candidates;
  const fixed = bitflops(m.layers.filter((l) => l.kind !== 'dynamic'), {});
  // a gated bundle's costliest image pays the costliest plan and then the dynamic layers again at second_bits
  const second = m.policy ? secondPassBitflops(m.layers, m.policy.second_bits) : 0;
  const computed = {
    fixed,
    reference: referenceBitflops(m.layers, m.bits.reference),
    min: bitflops(m.layers, uniformPlan(m.layers, Math.min(...c))),
    max: bitflops(m.layers, uniformPlan(m.layers, Math.max(...c))) + second,
  };
  const wrong = (Object.keys(computed) as (keyof typeof computed)[]).filter(
    (k) => Math.abs(computed[k] - m.bitflops[k]) > 1e-9 * Math.max(1, Math.abs(computed[k])),
  );
  if (wrong.length) {
    throw new DqError('DQ_ERR_BUNDLE_INVALID', `${m.name}/${m.version}: manifest bitflops ${wrong.map((k) => `${k} ${m.bitflops[k]} (layers give ${computed[k]})`).join(', ')}`);
  }
}

export async function verifyChecksums(dir: string, files: Readonly<Record<string, string>>): Promise<void> {
  await Promise.all(
    Object.entries(files).map(async ([file, expected]) => {
      let actual: string;
      try {
        actual = await sha256File(join(dir, file));
      } catch (err) {
        throw new DqError('DQ_ERR_BUNDLE_CHECKSUM', `${file}: ${(err as Error).message}`, { cause: err });
      }
      if (actual !== expected) throw new DqError('DQ_ERR_BUNDLE_CHECKSUM', `${file}: expected ${expected}, got ${actual}`);
    }),
  );
}

export function sha256File(path: string): Promise<string> {
  return new Promise((res, rej) => {
    const hash = createHash('sha256');
    createReadStream(path)
      .on('error', rej)
      .on('data', (chunk) => hash.update(chunk))
      .on('end', () => res(hash.digest('hex')));
  });
}

async function isFile(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isFile(),
    () => false,
  );
}
