// The body graph's index inputs for one batch (docs/model-bundle.md, "body.onnx"). For dynamic block j and
// conv1 bit-width b1: `rows.j.b1` lists the batch rows whose conv1 chose b1, ordered by their conv2 bits (then
// by row), and `split.j.b1` how many of those chose each conv2 bit-width; `order.j` gives each batch row's
// position in the concatenation the graph builds (for b2 in candidates, for b1 in candidates), so that one
// Gather restores batch order. Empty groups are fed as empty tensors: onnxruntime runs them as no-ops.

export interface IndexTensor {
  readonly data: BigInt64Array;
  readonly dims: readonly number[];
}

export const rowsInput = (block: number, b1: number) => `rows.${block}.${b1}`;
export const splitInput = (block: number, b1: number) => `split.${block}.${b1}`;
export const orderInput = (block: number) => `order.${block}`;

/** plans[n][l]: bits of sample n at dynamic layer l; blocks[j]: the layer indices of block j's two convs. */
export function bodyIndices(plans: readonly (readonly number[])[], blocks: readonly (readonly [number, number])[],
  candidates: readonly number[]): Map<string, IndexTensor> {
  const n = plans.length;
  const out = new Map<string, IndexTensor>();
  blocks.forEach(([l1, l2], j) => {
    // groups[b1 index][b2 index]: rows, ascending
    const groups = candidates.map(() => candidates.map((): number[] => []));
    for (let r = 0; r < n; r++) {
      const p = plans[r] as readonly number[];
      const k1 = candidates.indexOf(p[l1] as number), k2 = candidates.indexOf(p[l2] as number);
      if (k1 < 0 || k2 < 0) throw new Error(`block ${j}: sample ${r} chose bits outside ${candidates.join(',')}`);
      (groups[k1]?.[k2] as number[]).push(r);
    }
    candidates.forEach((b1, k1) => {
      const byB2 = groups[k1] as number[][];
      out.set(rowsInput(j, b1), { data: BigInt64Array.from(byB2.flat(), BigInt), dims: [byB2.flat().length] });
      out.set(splitInput(j, b1), { data: BigInt64Array.from(byB2, (g) => BigInt(g.length)), dims: [candidates.length] });
    });
    const order = new BigInt64Array(n);
    let at = 0;
    for (let k2 = 0; k2 < candidates.length; k2++) {
      for (let k1 = 0; k1 < candidates.length; k1++) for (const r of groups[k1]?.[k2] as number[]) order[r] = BigInt(at++);
    }
    out.set(orderInput(j), { data: order, dims: [n] });
  });
  return out;
}
