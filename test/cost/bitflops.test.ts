import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bitflops, costModel, meanBits, referenceBitflops, savings, secondPassBitflops, type CostLayer } from '../../src/cost/bitflops.js';
import { FIXTURES } from '../helpers/paths.js';

const layers: CostLayer[] = [
  { name: 'stem', kind: 'fp', bits: null, macs: 100 },
  { name: 'l1', kind: 'fixed', bits: 4, macs: 50 },
  { name: 'ctrl', kind: 'controller', bits: null, macs: 10 },
  { name: 'd1', kind: 'dynamic', bits: null, macs: 1000 },
  { name: 'd2', kind: 'dynamic', bits: null, macs: 2000 },
  { name: 'fc', kind: 'fp', bits: 8, macs: 20 },
];

describe('bitflops', () => {
  it('sums MACs × b² with fp/controller at 32 bits unless given', () => {
    const fixed = 100 * 1024 + 50 * 16 + 10 * 1024 + 20 * 64;
    expect(bitflops(layers, { d1: 3, d2: 5 })).toBe(fixed + 1000 * 9 + 2000 * 25);
    expect(referenceBitflops(layers, 4)).toBe(fixed + 3000 * 16);
  });

  it('rejects a plan that misses a dynamic layer', () => {
    expect(() => bitflops(layers, { d1: 3 })).toThrow(RangeError);
  });

  it('savings and mean bits', () => {
    expect(savings(75, 100)).toBeCloseTo(0.25);
    expect(savings(1, 0)).toBe(0);
    expect(meanBits([3, 4, 5, 4])).toBe(4);
    expect(meanBits([])).toBe(0);
  });

  it('the precomputed cost model agrees with the plain sums', () => {
    const m = costModel(layers, ['d2', 'd1'], 4);
    expect(m.reference).toBe(referenceBitflops(layers, 4));
    expect(m.bitflops([5, 3])).toBe(bitflops(layers, { d1: 3, d2: 5 }));
    // a gated request pays the fixed part once and the dynamic layers once per pass
    expect(m.bitflops([5, 3], [4, 4])).toBe(bitflops(layers, { d1: 3, d2: 5 }) + secondPassBitflops(layers, 4));
    expect(m.dynamic([4, 4])).toBe(secondPassBitflops(layers, 4));
    expect(secondPassBitflops(layers, 4)).toBe(referenceBitflops(layers, 4) - m.fixed);
    expect(() => costModel(layers, ['d1'], 4)).toThrow(RangeError);
  });
});

const VECTORS = join(FIXTURES, 'bitflops-vectors.json');

describe.skipIf(!existsSync(VECTORS))('bitflops-vectors.json (shared with pytest)', () => {
  type Vector = { manifest_layers: CostLayer[]; bits_reference: number; plan: Record<string, number> | number[]; expected_bitflops: number; [k: string]: unknown };
  const vectors = existsSync(VECTORS) ? (JSON.parse(readFileSync(VECTORS, 'utf8')) as Vector[] | { vectors: Vector[] }) : [];
  const list = Array.isArray(vectors) ? vectors : vectors.vectors;

  it('has vectors', () => expect(list.length).toBeGreaterThan(0));

  it.each(list.map((v, i) => [i, v] as const))('vector %i', (_i, v) => {
    const dynamic = v.manifest_layers.filter((l) => l.kind === 'dynamic').map((l) => l.name);
    const plan = Array.isArray(v.plan) ? Object.fromEntries(dynamic.map((n, j) => [n, (v.plan as number[])[j] as number])) : v.plan;
    expect(bitflops(v.manifest_layers, plan)).toBe(v.expected_bitflops);
    const model = costModel(v.manifest_layers, dynamic, v.bits_reference);
    expect(model.bitflops(dynamic.map((n) => plan[n] as number))).toBe(v.expected_bitflops);
    if (typeof v['expected_reference'] === 'number') expect(model.reference).toBe(v['expected_reference']);
  });
});
