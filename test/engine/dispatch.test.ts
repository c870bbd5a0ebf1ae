import { describe, expect, it } from 'vitest';
import { bodyIndices, orderInput, rowsInput } from '../../src/engine/dispatch.js';

const cands = [3, 4, 5];
const rows = (m: ReturnType<typeof bodyIndices>, name: string) => Array.from(m.get(name)?.data ?? [], Number);

describe('bodyIndices (the body graph index inputs)', () => {
  // Sample n, layers [block0.conv1, block0.conv2, block1.conv1, block1.conv2].
  const plans = [
    [3, 3, 5, 4],
    [5, 4, 3, 3],
    [3, 3, 3, 3],
    [4, 5, 5, 4],
    [5, 4, 4, 5],
  ];
  const blocks = [[0, 1], [2, 3]] as const;
  const m = bodyIndices(plans, blocks, cands);

  it('has one rows input per (conv1, conv2) pair of each block and one order per block', () => {
    expect(m.size).toBe(2 * (9 + 1));
    expect(rows(m, rowsInput(0, 3, 3))).toEqual([0, 2]);
    expect(rows(m, rowsInput(0, 5, 4))).toEqual([1, 4]);
    expect(rows(m, rowsInput(0, 4, 5))).toEqual([3]);
    expect(rows(m, rowsInput(0, 3, 5))).toEqual([]);
    expect(m.get(rowsInput(0, 3, 5))?.dims).toEqual([0]);
    expect(rows(m, rowsInput(1, 5, 4))).toEqual([0, 3]);
  });

  it("order.j puts every sample back at its batch row after the graph's concatenation", () => {
    for (const j of [0, 1]) {
      // the graph concatenates for b2 in candidates, for b1 in candidates
      const concat = cands.flatMap((b2) => cands.flatMap((b1) => rows(m, rowsInput(j, b1, b2))));
      const order = rows(m, orderInput(j));
      expect(order.map((pos) => concat[pos])).toEqual([0, 1, 2, 3, 4]);
    }
  });

  it('refuses a plan with bits outside the candidates', () => {
    expect(() => bodyIndices([[3, 6, 3, 3]], blocks, cands)).toThrow(/outside/);
  });
});
