// Parity of a bundle with PyTorch's own evaluation (reference.json): same bits, same top-1, logits close.
// `dqserve verify` runs it; training's end-to-end test calls that command on a freshly exported bundle.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OrtEngine } from '../engine/ort-engine.js';
import { fitToInput, normalise, preprocess } from '../preprocess/preprocess.js';
import { loadBundle } from './bundle.js';
import { readTestSet } from './test-set.js';

/** reference.json as `training export` writes it (docs/model-bundle.md). */
export interface Reference {
  images: number;
  order: string[];
  top1: number[];
  bits: string[];
  logits_first: number[][];
}

export interface ParityReport {
  images: number;
  bits_agree: number;
  top1_agree: number;
  logits_compared: number;
  logits_max_abs_diff: number;
  /** Share of the compared images whose logits all lie within 1e-4 of PyTorch's. */
  logits_within_1e4: number;
  accuracy_engine: number | null;
  accuracy_reference: number | null;
}

export async function verifyBundle(dir: string, dataDir: string, batch = 64): Promise<ParityReport> {
  const { manifest } = await loadBundle(dir, { verifyChecksums: true });
  const ref = JSON.parse(await readFile(join(dir, 'reference.json'), 'utf8')) as Reference;
  const byKey = new Map((await readTestSet(dataDir)).map((i) => [i.key, i]));
  const engine = await OrtEngine.load(dir, manifest, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  const cands = manifest.bits.candidates;
  let bits = 0, top1 = 0, within = 0, maxDiff = 0, correct = 0, correctRef = 0, labelled = 0;
  try {
    for (let start = 0; start < ref.order.length; start += batch) {
      const keys = ref.order.slice(start, start + batch);
      const input = new Float32Array(keys.length * engine.sampleSize);
      for (const [i, key] of keys.entries()) {
        const img = byKey.get(key);
        if (!img) throw new Error(`reference image ${key} is not in ${dataDir}`);
        const x = img.rgb ? normalise(await fitToInput(img.rgb, manifest.input, { maxInputPixels: 1e8 }), manifest.input)
          : await preprocess(img.bytes as Buffer, manifest.input, { maxInputPixels: 1e8 });
        input.set(x, i * engine.sampleSize);
      }
      const labels = keys.map((k) => byKey.get(k)?.label ?? manifest.classes.indexOf(k.split('/')[0] ?? ''));
      const out = await engine.infer(input, keys.length, keys.map(() => ({ knob: 0, precision: null })));
      out.samples.forEach((s, i) => {
        const n = start + i;
        const arg = s.logits.indexOf(Math.max(...s.logits));
        const refBits = [...(ref.bits[n] ?? '')].map((c) => cands[Number(c)]);
        if (refBits.join() === s.bits.join()) bits++;
        if (arg === ref.top1[n]) top1++;
        const label = labels[i] as number;
        if (label >= 0) {
          labelled++;
          if (arg === label) correct++;
          if (ref.top1[n] === label) correctRef++;
        }
        const first = ref.logits_first[n];
        if (first) {
          const d = Math.max(...first.map((v, c) => Math.abs(v - (s.logits[c] as number))));
          maxDiff = Math.max(maxDiff, d);
          if (d <= 1e-4) within++;
        }
      });
    }
  } finally {
    await engine.close();
  }
  const n = ref.order.length;
  const compared = Math.min(ref.logits_first.length, n);
  return {
    images: n,
    bits_agree: bits / n,
    top1_agree: top1 / n,
    logits_compared: compared,
    logits_max_abs_diff: maxDiff,
    logits_within_1e4: compared ? within / compared : 1,
    accuracy_engine: labelled ? correct / labelled : null,
    accuracy_reference: labelled ? correctRef / labelled : null,
  };
}
