// The body graph's index inputs for one batch (docs/model-bundle.md, "body.onnx"): for dynamic block j,
// `rows.j.b1.b2` lists the batch rows whose conv1 chose b1 and conv2 chose b2, and `order.j` gives each row's
// position in the concatenation the graph builds (for b2 in candidates, for b1 in candidates, rows ascending),
// so that one Gather restores batch order. Empty groups are fed as empty tensors: onnxruntime runs them as no-ops.

export interface IndexTensor {
  readonly data: BigInt64Array;
  readonly dims: readonly number[];
}

export function rowsInput(block: number, b1: number, b2: number): string {
  return `rows.${block}.${b1}.${b2}`;
}

export function orderInput(block: number): string {
  return `order.${block}`;
}

/** plans[n][l]: bits of sample n at dynamic layer l; blocks[j]: the layer indices of block j's two convs. */
export function bodyIndices(plans: readonly (readonly number[])[], blocks: readonly (readonly [number, number])[],
  candidates: readonly number[]): Map<string, IndexTensor> {
  const n = plans.length;
  const out = new Map<string, IndexTensor>();
  blocks.forEach(([l1, l2], j) => {
    const order = new BigInt64Array(n);
    let at = 0;
    for (const b2 of candidates) {
      for (const b1 of candidates) {
        const rows: bigint[] = [];
        for (let r = 0; r < n; r++) {
          const p = plans[r] as readonly number[];
          if (p[l1] === b1 && p[l2] === b2) {
            rows.push(BigInt(r));
            order[r] = BigInt(at++);
          }
        }
        out.set(rowsInput(j, b1, b2), { data: BigInt64Array.from(rows), dims: [rows.length] });
      }
    }
    if (at !== n) throw new Error(`block ${j}: ${n - at} samples chose bits outside ${candidates.join(',')}`);
    out.set(orderInput(j), { data: order, dims: [n] });
  });
  return out;
}
