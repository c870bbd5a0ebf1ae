// What every backend of the interpreter derives alike from a node and its inputs: attributes, output shapes,
// broadcast strides, convolution geometry, and MLAS's requantisation constants. The loops are each backend's.
import { DqError } from '../../errors.js';
import type { AttributeValue, DataType, OnnxNode } from './onnx.js';

export const size = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

export function fail(node: OnnxNode, why: string): never {
  throw new DqError('DQ_ERR_ENGINE_FAILED', `${node.opType} ${node.name}: ${why}`);
}

export function need<T>(node: OnnxNode, inputs: readonly (T | null)[], i: number): T {
  const t = inputs[i];
  if (t === null || t === undefined) fail(node, `input ${i} is missing`);
  return t;
}

export function attr(node: OnnxNode, name: string, fallback: number): number;
export function attr(node: OnnxNode, name: string, fallback: readonly number[]): readonly number[];
export function attr(node: OnnxNode, name: string, fallback: AttributeValue): AttributeValue {
  return node.attributes.get(name) ?? fallback;
}

const positive = (axis: number, rank: number): number => (axis < 0 ? axis + rank : axis);

/** numpy-style broadcast: the output dims and each input's strides over them (0 where it repeats). */
export function broadcastShape(a: readonly number[], b: readonly number[]): { dims: number[]; sa: number[]; sb: number[] } {
  const rank = Math.max(a.length, b.length);
  const pad = (d: readonly number[]) => [...new Array<number>(rank - d.length).fill(1), ...d];
  const da = pad(a), db = pad(b);
  // a dimension of 1 takes the other's size, 0 included (an empty group of the body graph)
  const dims = da.map((x, i) => (x === 1 ? (db[i] as number) : x));
  if (dims.some((d, i) => d !== db[i] && db[i] !== 1)) throw new DqError('DQ_ERR_ENGINE_FAILED', `cannot broadcast [${a.join(', ')}] with [${b.join(', ')}]`);
  const strides = (d: number[]) => {
    const s = new Array<number>(rank).fill(0);
    let acc = 1;
    for (let i = rank - 1; i >= 0; i--) {
      s[i] = d[i] === 1 ? 0 : acc;
      acc *= d[i] as number;
    }
    return s;
  };
  return { dims, sa: strides(da), sb: strides(db) };
}

/** Sizes before, along and after `axis`: [outer, len, inner]. */
export function around(dims: readonly number[], axis: number): [number, number, number] {
  const a = positive(axis, dims.length);
  return [size(dims.slice(0, a)), dims[a] as number, size(dims.slice(a + 1))];
}

/** `dims` with axis `axis` set to `n`. */
export function withAxis(dims: readonly number[], axis: number, n: number): number[] {
  const out = [...dims];
  out[positive(axis, dims.length)] = n;
  return out;
}

/** Transpose: the output dims, and for each output axis the input's stride (in elements). */
export function transposeShape(node: OnnxNode, dims: readonly number[]): { dims: number[]; strides: number[] } {
  const perm = attr(node, 'perm', [...dims.keys()].reverse());
  const inStrides = dims.map((_, k) => size(dims.slice(k + 1)));
  return { dims: perm.map((p) => dims[p] as number), strides: perm.map((p) => inStrides[p] as number) };
}

export function reshapeDims(node: OnnxNode, dims: readonly number[], shape: readonly number[]): number[] {
  const total = size(dims);
  const s = shape.map((d, k) => (d === 0 ? (dims[k] as number) : d));
  const known = s.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  const out = s.map((d) => (d === -1 ? total / known : d));
  if (size(out) !== total) fail(node, `cannot reshape [${dims.join(', ')}] to [${shape.join(', ')}]`);
  return out;
}

export function flattenDims(node: OnnxNode, dims: readonly number[]): number[] {
  const axis = positive(attr(node, 'axis', 1), dims.length);
  return [size(dims.slice(0, axis)), size(dims.slice(axis))];
}

/** Split sizes along the node's axis: the `split` input, or equal parts. */
export function splitSizes(node: OnnxNode, dims: readonly number[], split: readonly number[] | null): number[] {
  const [, len] = around(dims, attr(node, 'axis', 0));
  const parts = split ? [...split] : new Array<number>(node.outputs.length).fill(len / node.outputs.length);
  if (parts.reduce((a, b) => a + b, 0) !== len || parts.some((p) => p < 0)) fail(node, `split ${parts.join(', ')} does not add up to ${len}`);
  return parts;
}

/** ReduceSum: the output dims, the kept and reduced axes (with the input's strides). */
export function reducePlan(node: OnnxNode, dims: readonly number[], axesInput: readonly number[] | null) {
  const rank = dims.length;
  const axes = new Set((axesInput ?? [...dims.keys()]).map((a) => positive(a, rank)));
  const strides = dims.map((_, k) => size(dims.slice(k + 1)));
  const keep = attr(node, 'keepdims', 1) === 1;
  const kept = [...dims.keys()].filter((k) => !axes.has(k));
  const reduced = [...dims.keys()].filter((k) => axes.has(k));
  return {
    dims: keep ? dims.map((d, k) => (axes.has(k) ? 1 : d)) : kept.map((k) => dims[k] as number),
    kept: kept.map((k) => ({ dim: dims[k] as number, stride: strides[k] as number })),
    reduced: reduced.map((k) => ({ dim: dims[k] as number, stride: strides[k] as number })),
  };
}

export interface ConvGeometry { N: number; C: number; H: number; W: number; M: number; KH: number; KW: number; SH: number; SW: number; PT: number; PL: number; OH: number; OW: number }

/** Geometry of a 2-D convolution from NCHW input dims (N, C, H, W) and OIHW weight dims. */
export function convGeometry(n: OnnxNode, x: readonly number[], w: readonly number[]): ConvGeometry {
  if (attr(n, 'group', 1) !== 1) fail(n, 'grouped convolutions are not used by bundles');
  if (attr(n, 'dilations', [1, 1]).some((d) => d !== 1)) fail(n, 'dilated convolutions are not used by bundles');
  const [N, C, H, W] = x as [number, number, number, number];
  const [M, WC, KH, KW] = w as [number, number, number, number];
  if (WC !== C) fail(n, `weights expect ${WC} channels, the input has ${C}`);
  const [SH, SW] = attr(n, 'strides', [1, 1]) as [number, number];
  const [PT, PL, PB, PR] = attr(n, 'pads', [0, 0, 0, 0]) as [number, number, number, number];
  return withOutputSize({ N, C, H, W, M, KH, KW, SH, SW, PT, PL, PB, PR });
}

/** The geometry with its output height and width, from the input, kernel, strides and pads on all four sides. */
export function withOutputSize(g: Omit<ConvGeometry, 'OH' | 'OW'> & { readonly PB: number; readonly PR: number }): ConvGeometry {
  const { N, C, H, W, M, KH, KW, SH, SW, PT, PL, PB, PR } = g;
  return { N, C, H, W, M, KH, KW, SH, SW, PT, PL, OH: Math.floor((H + PT + PB - KH) / SH) + 1, OW: Math.floor((W + PL + PR - KW) / SW) + 1 };
}

/** The geometry as dq.h's int32 array. */
export const geometryArray = (g: ConvGeometry): Int32Array =>
  Int32Array.from([g.N, g.C, g.H, g.W, g.M, g.KH, g.KW, g.SH, g.SW, g.PT, g.PL, g.OH, g.OW]);

export function poolGeometry(n: OnnxNode, dims: readonly number[]) {
  const [kh, kw] = attr(n, 'kernel_shape', [1, 1]) as [number, number];
  const [sh, sw] = attr(n, 'strides', [1, 1]) as [number, number];
  if (attr(n, 'pads', [0, 0, 0, 0]).some((p) => p !== 0)) fail(n, 'padded pooling is not used by bundles');
  const [N, C, H, W] = dims as [number, number, number, number];
  return { N, C, H, W, kh, kw, sh, sw, oh: Math.floor((H - kh) / sh) + 1, ow: Math.floor((W - kw) / sw) + 1 };
}

export function gemmShape(n: OnnxNode, a: readonly number[], b: readonly number[]) {
  const ta = attr(n, 'transA', 0) === 1, tb = attr(n, 'transB', 0) === 1;
  const [M, K] = (ta ? [a[1], a[0]] : a) as [number, number];
  const [KB, N] = (tb ? [b[1], b[0]] : b) as [number, number];
  if (KB !== K) fail(n, `cannot multiply [${a.join(', ')}] by [${b.join(', ')}]`);
  return { M, N, K, ta, tb, alpha: attr(n, 'alpha', 1), beta: attr(n, 'beta', 1) };
}

/** How Gemm's C broadcasts over its M×N output (dq.h's c_mode): 1 per column, 2 full, 3 one value, 4 per row. */
export function gemmBias(n: OnnxNode, dims: readonly number[], M: number, N: number): 1 | 2 | 3 | 4 {
  const c = size(dims);
  if (c === 1) return 3;
  if (c === M * N && (dims.length === 2 || M === 1 || N === 1) && dims.at(-1) === N) return 2;
  if (c === N && dims.at(-1) === N) return 1;
  if (c === M && dims.length === 2 && dims[1] === 1) return 4;
  fail(n, `cannot broadcast C [${dims.join(', ')}] to [${M}, ${N}]`);
}

/** QLinearAdd as MLAS's AVX2 kernel sets it up: the two ratios and the fixed term, each rounded to float32. */
export function qlinearAddConstants(sa: number, za: number, sb: number, zb: number, sc: number): { ra: number; rb: number; fixed: number } {
  const ra = Math.fround(sa / sc), rb = Math.fround(sb / sc);
  return { ra, rb, fixed: Math.fround(-(ra * za + rb * zb)) };
}

/**
 * QLinearConv's per-output-channel constants, per-tensor values repeated: MLAS's multiplier X_scale · W_scale / Y_scale
 * in float32, and the weight zero point.
 */
export function qlinearConvConstants(xs: number, ws: ArrayLike<number>, wz: ArrayLike<number>, ys: number, M: number): { mult: Float32Array; wz: Int8Array } {
  const per = (v: ArrayLike<number>, m: number) => v[v.length === 1 ? 0 : m] as number;
  return {
    mult: Float32Array.from({ length: M }, (_, m) => Math.fround(Math.fround(xs * per(ws, m)) / ys)),
    wz: Int8Array.from({ length: M }, (_, m) => per(wz, m)),
  };
}

const CAST_TYPES: Readonly<Record<number, DataType>> = { 1: 'float32', 2: 'uint8', 3: 'int8', 6: 'int32', 7: 'int64', 11: 'float64' };

/** Cast's target type; bundles cast integers and floats to floats only. */
export function castTarget(n: OnnxNode): DataType {
  const to = CAST_TYPES[attr(n, 'to', 0)];
  if (to !== 'float32' && to !== 'float64') fail(n, `cast to ONNX type ${attr(n, 'to', 0)} is not used by bundles`);
  return to;
}
