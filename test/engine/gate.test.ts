// The gated second pass (docs/model-bundle.md "Gated second pass"): the confidence, which rows take pass 2,
// and how a manifest's policy enters the engine layout.
import { describe, expect, it } from 'vitest';
import type { SampleOptions } from '../../src/engine/engine.js';
import { engineLayout } from '../../src/engine/engine-layout.js';
import { fakeManifest } from '../../src/engine/fake-manifest.js';
import { confidence, secondPassRows, type GatePolicy } from '../../src/engine/gate.js';
import type { Manifest } from '../../src/repository/manifest.js';

const gated = (policy: Manifest['policy'], m: Manifest = fakeManifest()): Manifest => ({ ...m, policy });
const dyn: SampleOptions = { knob: 0, precision: null };

describe('confidence', () => {
  it('is the top-1 softmax probability', () => {
    expect(confidence(new Float32Array([0, 0, 0, 0]))).toBe(0.25);
    expect(confidence(new Float32Array([Math.log(3), 0]))).toBeCloseTo(0.75, 6);
    expect(confidence(new Float32Array([100, -100, 0]))).toBeGreaterThan(0.999999);
  });

  it('does not overflow on large logits (shifted by the maximum)', () => {
    expect(confidence(new Float32Array([3e38, 3e38]))).toBe(0.5);
  });
});

describe('secondPassRows', () => {
  const policy: GatePolicy = { firstBits: 3, secondBits: 4, threshold: 0.7 };
  // rows: confident (≈0.88), unconfident (0.5), unconfident (0.5)
  const logits = new Float32Array([2, 0, 0, 0, 0, 0]);
  const plans = [[3, 3], [3, 3], [3, 3]];
  const dynamic = (plan: readonly number[]) => plan.reduce((s, b) => s + 100 * b * b, 0); // 2 layers of 100 MACs
  const cost = { dynamic, second: dynamic([4, 4]) };

  it('picks the rows under the threshold, strictly', () => {
    expect(secondPassRows(logits, 3, [dyn, dyn, dyn], plans, policy, cost)).toEqual([1, 2]);
    expect(secondPassRows(logits, 3, [dyn, dyn, dyn], plans, { ...policy, threshold: 0.5 }, cost)).toEqual([]);
    expect(secondPassRows(logits, 3, [dyn, dyn, dyn], plans, { ...policy, threshold: 1 }, cost)).toEqual([0, 1, 2]);
  });

  it('skips a row with a forced precision', () => {
    expect(secondPassRows(logits, 3, [dyn, { knob: 0, precision: 3 }, dyn], plans, policy, cost)).toEqual([2]);
  });

  it("runs pass 2 only where the cap leaves room for it, and marks the others' budget lowered", () => {
    const lowered = [false, false, false];
    // pass 1 costs 1,800, pass 2 3,200: a dynamic cap of 5,000 holds both, 4,999 does not
    const opts = [dyn, { ...dyn, maxDynamicBitflops: 5000 }, { ...dyn, maxDynamicBitflops: 4999 }];
    expect(secondPassRows(logits, 3, opts, plans, policy, cost, lowered)).toEqual([1]);
    expect(lowered).toEqual([false, false, true]);
  });
});

describe('a policy in the engine layout', () => {
  it('plans pass 1 at first_bits where no precision is forced, and a budget still lowers it', () => {
    const l = engineLayout(gated({ kind: 'gated', first_bits: 4, second_bits: 5, threshold: 0.6 }));
    expect(l.policy).toEqual({ firstBits: 4, secondBits: 5, threshold: 0.6 });
    const ctrl = new Float32Array(2 * 4 * 3).fill(0);
    const m = fakeManifest();
    const dynMacs = m.layers.filter((x) => x.kind === 'dynamic').map((x) => x.macs);
    const at4 = dynMacs.reduce((s, x) => s + x * 16, 0);
    const lowered = [false, false];
    const plans = l.plan(ctrl, 2, [{ knob: 0, precision: 5 }, { ...dyn, maxDynamicBitflops: at4 - 1 }], lowered);
    expect(plans[0]).toEqual([5, 5, 5, 5]);
    expect(plans[1]!.some((b) => b === 3)).toBe(true);
    expect(plans[1]!.every((b) => b <= 4)).toBe(true);
    expect(lowered).toEqual([false, true]);
    expect(l.plan(ctrl.subarray(0, 12), 1, [dyn])).toEqual([[4, 4, 4, 4]]);
  });

  it("with first_bits null pass 1 is the controller's plan", () => {
    const ctrl = Float32Array.from({ length: 4 * 3 }, (_, i) => (i % 3 === 2 ? 1 : 0)); // every layer prefers 5
    expect(engineLayout(gated({ kind: 'gated', first_bits: null, second_bits: 4, threshold: 0.6 })).plan(ctrl, 1, [dyn])).toEqual([[5, 5, 5, 5]]);
  });

  it('without a controller (pass 1 at fixed bits) plans with no logits; a budget lowers the layers in order', () => {
    const m = fakeManifest();
    const l = engineLayout({ ...gated({ kind: 'gated', first_bits: 4, second_bits: 5, threshold: 0.6 }), controller: null });
    expect(l.dynamicLayers).toEqual(m.controller!.layers);
    expect(l.plan(null, 2, [dyn, { knob: 2, precision: 3 }])).toEqual([[4, 4, 4, 4], [3, 3, 3, 3]]);
    const dynMacs = m.layers.filter((x) => x.kind === 'dynamic').map((x) => x.macs);
    const cap = dynMacs.reduce((s, x) => s + x * 16, 0) - 1; // one step down anywhere fits
    const lowered = [false];
    expect(l.plan(null, 1, [{ ...dyn, maxDynamicBitflops: cap }], lowered)).toEqual([[3, 4, 4, 4]]);
    expect(lowered).toEqual([true]);
  });

  it('refuses a dynamic bundle without a controller unless pass 1 has fixed bits', () => {
    for (const policy of [null, { kind: 'gated' as const, first_bits: null, second_bits: 5, threshold: 0.6 }]) {
      expect(() => engineLayout({ ...gated(policy), controller: null })).toThrow(
        expect.objectContaining({ code: 'DQ_ERR_BUNDLE_INVALID', detail: expect.stringMatching(/without a controller/) }),
      );
    }
  });

  it('refuses bits that are not candidates, and a policy on a static bundle', () => {
    expect(() => engineLayout(gated({ kind: 'gated', first_bits: 3, second_bits: 8, threshold: 0.7 }))).toThrow(
      expect.objectContaining({ code: 'DQ_ERR_BUNDLE_INVALID', detail: expect.stringMatching(/second_bits 8 is not a candidate/) }),
    );
    const m = fakeManifest();
    const st: Manifest = { ...m, kind: 'static', controller: null, bits: { ...m.bits, candidates: [4] }, graph: { model: { file: 'model.onnx' } } };
    expect(() => engineLayout(gated({ kind: 'gated', first_bits: null, second_bits: 4, threshold: 0.7 }, st))).toThrow(
      expect.objectContaining({ code: 'DQ_ERR_BUNDLE_INVALID', detail: expect.stringMatching(/needs a dynamic bundle/) }),
    );
  });
});
