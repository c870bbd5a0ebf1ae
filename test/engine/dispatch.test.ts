import { beforeEach, describe, expect, it } from 'vitest';
import { bodyIndices, orderInput, rowsInput, splitInput } from '../../src/engine/dispatch.js';

const cands = [3, 4, 5];
const values = (m: ReturnType<typeof bodyIndices>, name: string) => Array.from(m.get(name)?.data ?? [], Number);

describe('bodyIndices (the body graph index inputs)', () => {
  // Sample n, layers [block0.conv1, block0.conv2, block1.conv1, block1.conv2].
  const plans = [
    [3, 4, 5, 4],
    [5, 4, 3, 3],
    [3, 3, 3, 3],
    [4, 5, 5, 4],
    [5, 4, 4, 5],
  ];
  const blocks = [[0, 1], [2, 3]] as const;
  let m: ReturnType<typeof bodyIndices>;
  beforeEach(() => {
    m = bodyIndices(plans, blocks, cands); // inside the tests, so that coverage (and mutation testing) sees it
  });

  it('lists each conv1 group ordered by conv2 bits, with the split sizes per conv2 bit-width', () => {
    expect(m.size).toBe(2 * (2 * 3 + 1));
    expect(values(m, rowsInput(0, 3))).toEqual([2, 0]); // sample 2 chose (3,3), sample 0 (3,4)
    expect(values(m, splitInput(0, 3))).toEqual([1, 1, 0]);
    expect(values(m, rowsInput(0, 5))).toEqual([1, 4]);
    expect(values(m, splitInput(0, 5))).toEqual([0, 2, 0]);
    expect(values(m, rowsInput(0, 4))).toEqual([3]);
    expect(values(m, rowsInput(1, 5))).toEqual([0, 3]);
    expect(m.get(rowsInput(1, 4))?.dims).toEqual([1]);
    expect(m.get(splitInput(1, 4))?.dims).toEqual([3]);
  });

  it("order.j puts every sample back at its batch row after the graph's concatenation", () => {
    for (const j of [0, 1]) {
      // the graph splits each conv1 group by conv2 bits and concatenates for b2 in candidates, for b1 in candidates
      const part = (b1: number, k2: number) => {
        const rows = values(m, rowsInput(j, b1));
        const sizes = values(m, splitInput(j, b1));
        const start = sizes.slice(0, k2).reduce((a, b) => a + b, 0);
        return rows.slice(start, start + (sizes[k2] as number));
      };
      const concat = cands.flatMap((_, k2) => cands.flatMap((b1) => part(b1, k2)));
      const order = values(m, orderInput(j));
      expect(order.map((pos) => concat[pos])).toEqual([0, 1, 2, 3, 4]);
      expect(m.get(orderInput(j))?.dims).toEqual([5]);
    }
  });

  it('refuses a plan with bits outside the candidates, in either conv', () => {
    expect(() => bodyIndices([[3, 6, 3, 3]], blocks, cands)).toThrow(/block 0: sample 0 chose bits outside 3,4,5/);
    expect(() => bodyIndices([[3, 3, 3, 3], [3, 3, 2, 3]], blocks, cands)).toThrow(/block 1: sample 1 chose bits outside/);
  });

  it('an empty batch gives empty groups and orders', () => {
    const e = bodyIndices([], blocks, cands);
    expect(values(e, rowsInput(0, 3))).toEqual([]);
    expect(values(e, splitInput(1, 5))).toEqual([0, 0, 0]);
    expect(e.get(orderInput(1))?.dims).toEqual([0]);
  });
});
