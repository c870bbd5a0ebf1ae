// A float32 tensor in host memory, batch first, with the row gather/scatter the per-bit dispatch needs.

export interface HostTensor {
  readonly data: Float32Array;
  readonly dims: readonly number[];
}

/** The rows (samples) `rows` of `t`, in that order, as a new tensor. */
export function gatherRows(t: HostTensor, rows: readonly number[]): HostTensor {
  const batch = t.dims[0] as number;
  const per = t.data.length / batch;
  const data = new Float32Array(per * rows.length);
  rows.forEach((r, i) => data.set(t.data.subarray(r * per, (r + 1) * per), i * per));
  return { data, dims: [rows.length, ...t.dims.slice(1)] };
}

/** Writes row i of `part` to row rows[i] of `into`. */
export function scatterRows(part: HostTensor, rows: readonly number[], into: HostTensor): void {
  const per = part.data.length / rows.length;
  rows.forEach((r, i) => into.data.set(part.data.subarray(i * per, (i + 1) * per), r * per));
}
