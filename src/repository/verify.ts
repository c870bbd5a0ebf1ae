// Parity of a bundle with training's own evaluation of the same arithmetic (reference.json): same bits and top-1,
// at knob 0 and at the reference knobs, and logits compared on every image. For a gated bundle "same bits" also
// means the same images took the second pass.
// `dqserve verify` runs it; training's end-to-end test calls that command on a freshly exported bundle.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { SampleResult } from '../engine/engine.js';
import { GraphEngine } from '../engine/graph-engine.js';
import { openRuntime, type Runtime } from '../engine/runtime.js';
import { fitToInput, preprocess } from '../preprocess/preprocess.js';
import { loadBundle } from './bundle.js';
import { readTestSet } from './test-set.js';

/** reference.json as `training export` writes it (docs/model-bundle.md). */
/** verify's default runtime: the CPU engine, one thread. */
export const ONNXRUNTIME: Runtime = { kind: 'onnxruntime', intraOpNumThreads: 1, interOpNumThreads: 1 };

export interface Reference {
  images: number;
  order: string[];
  top1: number[];
  bits: string[];
  logits: number[][];
  /** Gated bundles: 1 where the second pass ran. */
  second?: number[];
  knobs: { knob: number; top1: number[]; bits: string[]; second?: number[] }[];
}

export interface ParityReport {
  images: number;
  bits_agree: number;
  top1_agree: number;
  /** Share of images whose logits are identical to training's float32 values. */
  logits_identical: number;
  /** Share of images whose logits all lie within 1e-4 of training's. */
  logits_within_1e4: number;
  logits_max_abs_diff: number;
  /** Per reference knob: the share of images with the same bits and the same top-1. */
  knobs: { knob: number; bits_agree: number; top1_agree: number }[];
  accuracy_engine: number | null;
  accuracy_reference: number | null;
}

/** The contract's tolerance (docs/model-bundle.md, "Parity"). */
export function parityHolds(r: ParityReport): boolean {
  const agree = (x: { bits_agree: number; top1_agree: number }) => x.bits_agree >= 0.999 && x.top1_agree >= 0.999;
  return agree(r) && r.knobs.every(agree) && r.logits_identical >= 0.95;
}

/** Runs the bundle on `runtime` (onnxruntime-node by default) over every image reference.json lists. */
export async function verifyBundle(dir: string, dataDir: string, runtime: Runtime = ONNXRUNTIME, batch = 64): Promise<ParityReport> {
  const { manifest } = await loadBundle(dir, { verifyChecksums: true });
  const ref = JSON.parse(await readFile(join(dir, 'reference.json'), 'utf8')) as Reference;
  const byKey = new Map((await readTestSet(dataDir)).map((i) => [i.key, i]));
  const engine = await GraphEngine.load(dir, manifest, await openRuntime(runtime));
  const cands = manifest.bits.candidates;
  const decode = (s: string) => [...s].map((c) => cands[Number(c)]).join();
  // pass-1 bits, and whether pass 2 ran: what the engine chose for one image
  const choice = (bits: string | undefined, second: number | undefined) => `${decode(bits ?? '')}${second ? '+' : ''}`;
  const chosen = (s: SampleResult) => `${s.bits.join()}${s.secondBits ? '+' : ''}`;
  const argmax = (v: Float32Array) => v.indexOf(Math.max(...v));
  let bits = 0, top1 = 0, identical = 0, within = 0, maxDiff = 0, correct = 0, correctRef = 0, labelled = 0;
  const knobs = ref.knobs.map((k) => ({ knob: k.knob, bits: 0, top1: 0 }));
  try {
    for (let start = 0; start < ref.order.length; start += batch) {
      const keys = ref.order.slice(start, start + batch);
      const input = new Uint8Array(keys.length * engine.sampleSize);
      for (const [i, key] of keys.entries()) {
        const img = byKey.get(key);
        if (!img) throw new Error(`reference image ${key} is not in ${dataDir}`);
        const x = img.rgb ? (await fitToInput(img.rgb, manifest.input, { maxInputPixels: 1e8 })).data
          : await preprocess(img.bytes as Buffer, manifest.input, { maxInputPixels: 1e8 });
        input.set(x, i * engine.sampleSize);
      }
      const labels = keys.map((k) => byKey.get(k)?.label ?? manifest.classes.indexOf(k.split('/')[0] ?? ''));
      const out = await engine.infer(input, keys.length, keys.map(() => ({ knob: 0, precision: null })));
      out.samples.forEach((s, i) => {
        const n = start + i;
        const arg = argmax(s.logits);
        if (choice(ref.bits[n], ref.second?.[n]) === chosen(s)) bits++;
        if (arg === ref.top1[n]) top1++;
        const label = labels[i] as number;
        if (label >= 0) {
          labelled++;
          if (arg === label) correct++;
          if (ref.top1[n] === label) correctRef++;
        }
        const want = ref.logits[n] ?? [];
        const d = Math.max(...want.map((v, c) => Math.abs(Math.fround(v) - (s.logits[c] as number))));
        maxDiff = Math.max(maxDiff, d);
        if (d === 0) identical++;
        if (d <= 1e-4) within++;
      });
      for (const [k, r] of ref.knobs.entries()) {
        const o = await engine.infer(input, keys.length, keys.map(() => ({ knob: r.knob, precision: null })));
        o.samples.forEach((s, i) => {
          const n = start + i;
          if (choice(r.bits[n], r.second?.[n]) === chosen(s)) (knobs[k] as { bits: number }).bits++;
          if (argmax(s.logits) === r.top1[n]) (knobs[k] as { top1: number }).top1++;
        });
      }
    }
  } finally {
    await engine.close();
  }
  const n = ref.order.length;
  return {
    images: n,
    bits_agree: bits / n,
    top1_agree: top1 / n,
    logits_identical: identical / n,
    logits_within_1e4: within / n,
    logits_max_abs_diff: maxDiff,
    knobs: knobs.map((k) => ({ knob: k.knob, bits_agree: k.bits / n, top1_agree: k.top1 / n })),
    accuracy_engine: labelled ? correct / labelled : null,
    accuracy_reference: labelled ? correctRef / labelled : null,
  };
}
