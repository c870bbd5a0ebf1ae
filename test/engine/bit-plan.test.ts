import { describe, expect, it } from 'vitest';
import { chooseBits, type ControllerSpec } from '../../src/engine/bit-plan.js';

const spec: ControllerSpec = { layers: ['a', 'b'], candidates: [3, 4, 5], cost: [[0.5, 1, 2], [0.5, 1, 2]] };
const dyn = { knob: 0, precision: null };

describe('chooseBits', () => {
  it('takes the argmax per sample and layer', () => {
    const logits = Float32Array.from([0, 1, 0, /* b */ 3, 2, 1, /* n=1 */ 0, 0, 9, 1, 5, 2]);
    expect(chooseBits(logits, 2, spec, [dyn, dyn])).toEqual([
      [4, 3],
      [5, 4],
    ]);
  });

  it('breaks ties toward the lower index', () => {
    expect(chooseBits(Float32Array.from([1, 1, 1, 0, 2, 2]), 1, spec, [dyn])).toEqual([[3, 4]]);
  });

  it('subtracts λ·cost: λ > 0 moves to cheaper candidates, λ < 0 to costlier', () => {
    const logits = Float32Array.from([0, 0.4, 0.6, 0, 0.4, 0.6]);
    expect(chooseBits(logits, 1, spec, [dyn])).toEqual([[5, 5]]);
    // scores at λ=1: -0.5, -0.6, -1.4 -> 3 bits
    expect(chooseBits(logits, 1, spec, [{ knob: 1, precision: null }])).toEqual([[3, 3]]);
    expect(chooseBits(Float32Array.from([1, 0, 0, 1, 0, 0]), 1, spec, [{ knob: -2, precision: null }])).toEqual([[5, 5]]);
  });

  it('a forced precision skips the argmax, per sample', () => {
    const logits = Float32Array.from([9, 0, 0, 9, 0, 0, 9, 0, 0, 9, 0, 0]);
    expect(chooseBits(logits, 2, spec, [{ knob: 0, precision: 5 }, dyn])).toEqual([
      [5, 5],
      [3, 3],
    ]);
  });

  it('rejects logits of the wrong size', () => {
    expect(() => chooseBits(new Float32Array(5), 1, spec, [dyn])).toThrow(RangeError);
  });
});

describe('budget rule (fitBudget via chooseBits)', () => {
  // Two layers, candidates 3/4/5; layer b has 4× the MACs of layer a.
  const budgeted: ControllerSpec = {
    layers: ['a', 'b'],
    candidates: [3, 4, 5],
    cost: [[0.5, 1, 2], [0.5, 1, 2]],
    bitflops: [
      [9, 16, 25],
      [36, 64, 100],
    ],
  };
  const capped = (cap: number) => ({ knob: 0, precision: null, maxDynamicBitflops: cap });

  it('keeps the controller choice when it fits, and says nothing was lowered', () => {
    const lowered = [true];
    expect(chooseBits(Float32Array.from([0, 0, 1, 0, 0, 1]), 1, budgeted, [capped(125)], lowered)).toEqual([[5, 5]]);
    expect(lowered).toEqual([false]);
  });

  it('lowers the layer with the smallest score loss per Bit-FLOP saved, one candidate at a time', () => {
    // Start [5,5] = 125. Step-down loss: a 5->4 costs 1.0 score for 9 saved (0.111/BF); b 5->4 costs 1.0 for 36 (0.028/BF): b first.
    const logits = Float32Array.from([0, 0, 1, 0, 0, 1]);
    const lowered = [false];
    expect(chooseBits(logits, 1, budgeted, [capped(100)], lowered)).toEqual([[5, 4]]);
    expect(lowered).toEqual([true]);
    // 89 left: b 4->3 loses 0 score for 28 saved (0/BF) before a 5->4 (1/9).
    expect(chooseBits(logits, 1, budgeted, [capped(88)], [false])).toEqual([[5, 3]]);
    // 61: then a (only a can still go down at ratio 1/9; b is at its lowest) -> [4,3] = 52.
    expect(chooseBits(logits, 1, budgeted, [capped(60)], [false])).toEqual([[4, 3]]);
    expect(chooseBits(logits, 1, budgeted, [capped(45)], [false])).toEqual([[3, 3]]);
  });

  it('prefers the layer the controller cares less about, even when it saves less', () => {
    // a: 5 barely preferred over 4 (0.01); b: 5 strongly preferred (5.0) -> lower a first although b saves more.
    const logits = Float32Array.from([0, 0.99, 1, 0, 0, 5]);
    expect(chooseBits(logits, 1, budgeted, [capped(120)], [false])).toEqual([[4, 5]]);
  });

  it('meets the cap even when an extreme knob makes every score infinite', () => {
    // λ = −1.5e308: scores overflow to ±Infinity and every step-down ratio is NaN; the cap must still hold.
    const logits = Float32Array.from([0, 0, 1, 0, 0, 1]);
    for (const knob of [-1.5e308, 1.5e308]) {
      const [plan] = chooseBits(logits, 1, budgeted, [{ knob, precision: null, maxDynamicBitflops: 60 }], [false]);
      const cost = budgeted.bitflops![0]![budgeted.candidates.indexOf(plan![0]!)]! + budgeted.bitflops![1]![budgeted.candidates.indexOf(plan![1]!)]!;
      expect(cost).toBeLessThanOrEqual(60);
    }
  });

  it('leaves forced precisions alone, stops at the lowest candidates, and needs the Bit-FLOPs table', () => {
    const logits = Float32Array.from([0, 0, 1, 0, 0, 1]);
    expect(chooseBits(logits, 1, budgeted, [{ knob: 0, precision: 5, maxDynamicBitflops: 1 }])).toEqual([[5, 5]]);
    expect(chooseBits(logits, 1, budgeted, [capped(1)])).toEqual([[3, 3]]);
    expect(() => chooseBits(logits, 1, spec, [capped(1)])).toThrow(/bitflops/);
  });
});
