import { describe, expect, it } from 'vitest';
import { TargetController } from '../../src/pipeline/target-controller.js';

// A simulated model: an image of difficulty u costs lo + (hi − lo)·clamp(u − 0.25·λ) Bit-FLOPs at knob λ.
const lo = 6e8;
const hi = 1.4e9;
const cost = (u: number, knob: number) => lo + (hi - lo) * Math.min(1, Math.max(0, u - 0.25 * knob));
/** Deterministic pseudo-random numbers (mulberry32). */
function rng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
// The calibration table, measured like training's: mean cost over a uniform mix at each knob.
const calib = [-2, -1, -0.5, 0, 0.5, 1, 2, 3].map((knob) => {
  const r = rng(1);
  let s = 0;
  for (let i = 0; i < 5000; i++) s += cost(r(), knob);
  return { knob, accuracy: 0.9, mean_bitflops: s / 5000, mean_bits: 4 };
});

describe('TargetController', () => {
  it('inverts the calibration table and clamps outside it', () => {
    const c = new TargetController(1e9, calib);
    for (const p of calib) expect(c.inverse(p.mean_bitflops)).toBeCloseTo(p.knob, 9);
    expect(c.predict(c.inverse(9.5e8))).toBeCloseTo(9.5e8, -1);
    expect(c.inverse(1e12)).toBe(-2);
    expect(c.inverse(1)).toBe(3);
    expect(() => new TargetController(1e9, calib.slice(0, 1))).toThrow();
    expect(() => new TargetController(-1, calib)).toThrow();
  });

  it('holds the mean within 2% over 2,000 images while the input mix shifts every 200 images', () => {
    const r = rng(7);
    for (const target of [8e8, 1e9, 1.2e9]) {
      const c = new TargetController(target, calib);
      let sum = 0;
      for (let i = 0; i < 2000; i++) {
        // Ten phases: alternately much easier and much harder than the calibration mix.
        const shift = (Math.floor(i / 200) % 2 === 0 ? -0.25 : 0.25) * (1 + (Math.floor(i / 400) % 3) / 2);
        const x = cost(Math.min(1, Math.max(0, r() + shift)), c.knob);
        c.observe(x, c.knob);
        sum += x;
      }
      expect(Math.abs(sum / 2000 / target - 1)).toBeLessThan(0.02);
      expect(c.state.target).toBe(target);
      // The recent window (256 images) still holds part of the transient after the last shift, at image 1800.
      expect(Math.abs(c.state.runningMean / target - 1)).toBeLessThan(0.15);
    }
  });

  it('does not wind up while the target is out of reach: back on target as soon as the mix allows', () => {
    const r = rng(5);
    const c = new TargetController(7e8, calib);
    // 20,000 images so hard that even the largest knob costs 8e8 each: the target is unreachable meanwhile.
    for (let i = 0; i < 20_000; i++) c.observe(cost(1, c.knob), c.knob);
    expect(c.knob).toBe(3);
    // Back to the calibration mix: the mean of the next 1,000 images is on target (a wound-up integral would
    // pin λ at 3, about 6.25e8 per image, for some 27,000 images).
    let sum = 0;
    for (let i = 0; i < 1000; i++) {
      const x = cost(r(), c.knob);
      c.observe(x, c.knob);
      sum += x;
    }
    expect(Math.abs(sum / 1000 / 7e8 - 1)).toBeLessThan(0.03);
  });

  it('observing with a lag (a batch of 32 in flight at the old λ) still converges', () => {
    const r = rng(3);
    const c = new TargetController(9e8, calib);
    let sum = 0;
    for (let b = 0; b < 2000 / 32; b++) {
      const k = c.knob;
      const xs = Array.from({ length: 32 }, () => cost(Math.min(1, r() + 0.2), k));
      for (const x of xs) {
        c.observe(x, k);
        sum += x;
      }
    }
    expect(Math.abs(sum / (32 * 62) / 9e8 - 1)).toBeLessThan(0.03);
  });
});
