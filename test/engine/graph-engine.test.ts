// The onnxruntime-node engine against the real bundle: checksums, Bit-FLOPs claims, parity with training's
// reference.json on the whole CIFAR-10 test set (knob 0 and the reference knobs), and batch-independence of the
// per-sample dispatch.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bitflops, referenceBitflops, uniformPlan } from '../../src/cost/bitflops.js';
import type { SampleOptions } from '../../src/engine/engine.js';
import { confidence } from '../../src/engine/gate.js';
import { GraphEngine } from '../../src/engine/graph-engine.js';
import { openOrt } from '../../src/engine/ort-session.js';
import type { Runtime } from '../../src/engine/runtime.js';
import { WorkerEngine } from '../../src/engine/worker-engine.js';
import { preprocess } from '../../src/preprocess/preprocess.js';
import { loadBundle, verifyChecksums } from '../../src/repository/bundle.js';
import type { Manifest } from '../../src/repository/manifest.js';
import { parityHolds, verifyBundle, type ParityReport, type Reference } from '../../src/repository/verify.js';
import { cifarTest } from '../helpers/cifar.js';
import { CIFAR_TEST_TAR, CONTROLLER_BUNDLE, DYNAMIC_BUNDLE, hasDynamicBundle } from '../helpers/paths.js';

// The bundle is committed: a missing one must fail here rather than silently skip the tests that need it.
it(`the default bundle ${DYNAMIC_BUNDLE} is present`, () => expect(hasDynamicBundle).toBe(true));

// A stem graph with controller logits goes with a manifest that has a controller, and only with one.
describe.skipIf(!hasDynamicBundle || DYNAMIC_BUNDLE === CONTROLLER_BUNDLE)('a stem graph and a manifest that disagree on the controller', () => {
  const opts = openOrt({ intraOpNumThreads: 1, interOpNumThreads: 1 });
  it('are refused at load, both ways', async () => {
    const manifestOf = async (d: string) => (await loadBundle(d, { verifyChecksums: false })).manifest;
    const [withCtl, without] = [await manifestOf(CONTROLLER_BUNDLE), await manifestOf(DYNAMIC_BUNDLE)];
    expect(without.controller ?? null).toBeNull();
    await expect(GraphEngine.load(CONTROLLER_BUNDLE, { ...withCtl, controller: null, policy: without.policy }, opts)).rejects.toMatchObject({
      code: 'DQ_ERR_BUNDLE_INVALID', detail: expect.stringMatching(/outputs controller_logits/),
    });
    await expect(GraphEngine.load(DYNAMIC_BUNDLE, { ...without, controller: withCtl.controller }, opts)).rejects.toMatchObject({
      code: 'DQ_ERR_BUNDLE_INVALID', detail: expect.stringMatching(/no controller_logits output/),
    });
  });
});

// The default (newest) bundle, and the newest with a controller when the default has none (a gated bundle whose
// pass 1 has fixed bits): the knob's and the controller's tests run on that one.
const bundles = [...new Set([DYNAMIC_BUNDLE, CONTROLLER_BUNDLE])].filter((dir) => hasDynamicBundle && existsSync(join(dir, 'manifest.json')));

describe.each(bundles)('GraphEngine on onnxruntime on the shipped bundle %s', (BUNDLE) => {
  const hasController = (JSON.parse(readFileSync(join(BUNDLE, 'manifest.json'), 'utf8')) as Manifest).controller != null;
  let engine: GraphEngine;
  let manifest: Manifest;
  let inputs: Uint8Array[];
  let ref: Reference;
  const dyn: SampleOptions = { knob: 0, precision: null };

  beforeAll(async () => {
    const bundle = await loadBundle(BUNDLE, { verifyChecksums: true });
    manifest = bundle.manifest;
    engine = await GraphEngine.load(bundle.dir, manifest, openOrt({ intraOpNumThreads: 1, interOpNumThreads: 1 }));
    await engine.warmup();
    ref = JSON.parse(readFileSync(join(BUNDLE, 'reference.json'), 'utf8')) as Reference;
    const images = new Map((await cifarTest()).map((i) => [i.key, i.bytes]));
    inputs = [];
    // The batching tests below use the first 132 images; the parity check reads the whole set itself.
    for (const key of ref.order.slice(0, 132)) {
      const bytes = images.get(key);
      if (!bytes) throw new Error(`reference image ${key} is not in the test set`);
      inputs.push(await preprocess(bytes, manifest.input, { maxInputPixels: 1e6 }));
    }
  }, 180_000);
  afterAll(async () => engine?.close());

  it('refuses a file whose sha256 differs', async () => {
    const files = { ...manifest.files, 'body.onnx': '0'.repeat(64) };
    await expect(verifyChecksums(BUNDLE, files)).rejects.toMatchObject({ code: 'DQ_ERR_BUNDLE_CHECKSUM' });
  });

  it("recomputes the manifest's Bit-FLOPs claims", () => {
    const { layers, bits } = manifest;
    expect(referenceBitflops(layers, bits.reference)).toBe(manifest.bitflops.reference);
    expect(bitflops(layers, uniformPlan(layers, Math.min(...bits.candidates)))).toBe(manifest.bitflops.min);
    const fixed = bitflops(layers.filter((l) => l.kind !== 'dynamic'), {});
    expect(fixed).toBe(manifest.bitflops.fixed);
    // a gated bundle's costliest image also pays a second pass: every dynamic layer again at second_bits
    const second = manifest.policy ? bitflops(layers, uniformPlan(layers, manifest.policy.second_bits)) - fixed : 0;
    expect(bitflops(layers, uniformPlan(layers, Math.max(...bits.candidates))) + second).toBe(manifest.bitflops.max);
  });

  describe("parity with reference.json (training's evaluation of the same arithmetic) on the whole test set", () => {
    let report: ParityReport;
    beforeAll(async () => {
      report = await verifyBundle(BUNDLE, dirname(CIFAR_TEST_TAR));
      console.log('parity:', JSON.stringify(report));
    }, 300_000);

    it('covers every reference image', () => expect(report.images).toBe(ref.images));
    it('same bits on >= 99.9% of images', () => expect(report.bits_agree).toBeGreaterThanOrEqual(0.999));
    it('same top-1 on >= 99.9% of images', () => expect(report.top1_agree).toBeGreaterThanOrEqual(0.999));
    it('same bits and top-1 at every reference knob, negative ones included', () => {
      // without a controller the knob moves nothing, and the reference has no knobs
      expect(report.knobs.map((k) => k.knob)).toEqual(hasController ? expect.arrayContaining([-1, 0.5, 2]) : []);
      for (const k of report.knobs) expect(Math.min(k.bits_agree, k.top1_agree)).toBeGreaterThanOrEqual(0.999);
    });
    // The stated tolerance (docs/model-bundle.md): the integer layers are emulated exactly by training; only the
    // float stem conv differs in its last bits, which now and then moves a value across a rounding boundary.
    it('identical logits on >= 95% of images, and the verify command passes', () => {
      expect(report.logits_identical).toBeGreaterThanOrEqual(0.95);
      expect(parityHolds(report)).toBe(true);
    });
    it("the engine's accuracy equals the bundle's measured top-1 within 0.1 points", () =>
      expect(Math.abs((report.accuracy_engine as number) - (manifest.metrics?.top1 ?? Number.NaN))).toBeLessThan(0.001));
  });

  it('a batch gives the same bits and logits as the same images one by one', async () => {
    const chunk = inputs.slice(0, 48);
    const batch = new Uint8Array(chunk.length * engine.sampleSize);
    chunk.forEach((x, i) => batch.set(x, i * engine.sampleSize));
    // Every third image with a strong cost knob (or, without a controller, a forced precision), so the batch mixes
    // bit plans even if the controller gave most images the same plan.
    const mixer: SampleOptions = hasController ? { knob: 50, precision: null } : { knob: 0, precision: 5 };
    const opts = chunk.map((_, i): SampleOptions => (i % 3 === 2 ? mixer : dyn));
    const together = await engine.infer(batch, chunk.length, opts);
    const groups = new Set(together.samples.map((s) => s.bits.join('')));
    expect(groups.size).toBeGreaterThan(1); // the batch really mixes bit-widths
    for (const [i, x] of chunk.entries()) {
      const alone = (await engine.infer(x, 1, [opts[i]!])).samples[0]!;
      expect(alone.bits).toEqual(together.samples[i]!.bits);
      expect(Array.from(alone.logits)).toEqual(Array.from(together.samples[i]!.logits)); // integer layers: exact
    }
  });

  it('forced precisions mixed in one batch equal each precision run alone', async () => {
    const x = inputs[0]!;
    const batch = new Uint8Array(3 * engine.sampleSize);
    [0, 1, 2].forEach((i) => batch.set(x, i * engine.sampleSize));
    const mixed = await engine.infer(batch, 3, [3, 4, 5].map((b) => ({ knob: 0, precision: b })));
    for (const [i, b] of [3, 4, 5].entries()) {
      const alone = (await engine.infer(x, 1, [{ knob: 0, precision: b }])).samples[0]!;
      expect(mixed.samples[i]!.bits.every((v) => v === b)).toBe(true);
      expect(Array.from(alone.logits)).toEqual(Array.from(mixed.samples[i]!.logits));
    }
  });

  // The policy's arithmetic is the body graph's own: pass 2 on a subset of rows must equal those rows run at the
  // second bits in any batch, and pass 1 must equal the ungated run.
  describe.skipIf(!hasController)('a gated second pass on the same weights (a policy set on this manifest)', () => {
    const batchOf = (xs: readonly Uint8Array[]) => {
      const b = new Uint8Array(xs.length * engine.sampleSize);
      xs.forEach((x, i) => b.set(x, i * engine.sampleSize));
      return b;
    };
    const at = (precision: number | null) => inputs.map((): SampleOptions => ({ knob: 0, precision }));
    const gatedEngine = (policy: NonNullable<Manifest['policy']>, over: Partial<Manifest> = {}) =>
      GraphEngine.load(BUNDLE, { ...manifest, policy, ...over }, openOrt({ intraOpNumThreads: 1, interOpNumThreads: 1 }));

    it('answers from pass 1 (all 3 bits) where it is confident and from pass 2 (all 4 bits) elsewhere', async () => {
      const gated = await gatedEngine({ kind: 'gated', first_bits: 3, second_bits: 4, threshold: 0.7 });
      try {
        const out = await gated.infer(batchOf(inputs), inputs.length, at(null));
        const [p3, p4] = [await engine.infer(batchOf(inputs), inputs.length, at(3)), await engine.infer(batchOf(inputs), inputs.length, at(4))];
        let twice = 0;
        out.samples.forEach((s, i) => {
          expect(s.bits.every((b) => b === 3)).toBe(true);
          const unsure = confidence(p3.samples[i]!.logits) < 0.7;
          expect(s.secondBits !== undefined).toBe(unsure);
          expect(Array.from(s.logits)).toEqual(Array.from((unsure ? p4 : p3).samples[i]!.logits));
          if (unsure) twice++;
        });
        expect(twice).toBeGreaterThan(0);
        expect(twice).toBeLessThan(inputs.length);
        // a forced precision is one pass, whatever the confidence
        const forced = await gated.infer(batchOf(inputs.slice(0, 8)), 8, at(3).slice(0, 8));
        expect(forced.samples.every((s) => s.secondBits === undefined)).toBe(true);
      } finally {
        await gated.close();
      }
    });

    it("with first_bits null pass 1 is the controller's plan", async () => {
      const gated = await gatedEngine({ kind: 'gated', first_bits: null, second_bits: 5, threshold: 0.9 });
      try {
        const xs = inputs.slice(0, 32);
        const [g, plain] = [await gated.infer(batchOf(xs), xs.length, at(null).slice(0, 32)), await engine.infer(batchOf(xs), xs.length, at(null).slice(0, 32))];
        expect(g.samples.map((s) => s.bits)).toEqual(plain.samples.map((s) => s.bits));
        expect(g.samples.some((s) => s.secondBits?.every((b) => b === 5))).toBe(true);
      } finally {
        await gated.close();
      }
    });
  });

  // the native runtime in a worker is what --device cuda runs (here on the operators' host build)
  const runtimes: Runtime[] = [{ kind: 'onnxruntime', intraOpNumThreads: 1, interOpNumThreads: 1 }, { kind: 'native', library: 'host', device: 0 }];
  it.each(runtimes)('a worker-thread engine on $kind gives the same results as the in-thread one', async (runtime) => {
    const worker = await WorkerEngine.load(BUNDLE, manifest, runtime, 2);
    try {
      const chunk = inputs.slice(100, 132);
      const batch = () => {
        const b = new Uint8Array(chunk.length * engine.sampleSize);
        chunk.forEach((x, i) => b.set(x, i * engine.sampleSize));
        return b;
      };
      const opts = chunk.map(() => dyn);
      const [a, b] = [await engine.infer(batch(), chunk.length, opts), await worker.infer(batch(), chunk.length, opts)];
      expect(b.samples.map((s) => s.bits)).toEqual(a.samples.map((s) => s.bits));
      expect(b.samples.map((s) => Array.from(s.logits))).toEqual(a.samples.map((s) => Array.from(s.logits)));
    } finally {
      await worker.close();
    }
  });
});
