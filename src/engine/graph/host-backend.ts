// The interpreter's reference backend: every operator a bundle's graphs use (docs/model-bundle.md "Graphs"),
// in plain TypeScript on host arrays, with onnxruntime's CPU arithmetic where it is defined to the bit
// (QLinearConv, QLinearAdd, QuantizeLinear: rounding half to even, one float32 rounding where MLAS has one). It is
// the oracle the GPU kernels are held to and is tested against onnxruntime on real images; it is not fast.
import { DqError } from '../../errors.js';
import type { Backend } from './interpreter.js';
import { opKey } from './interpreter.js';
import type { AttributeValue, DataType, HostTensor, OnnxNode, TypedData } from './onnx.js';

type Op = (node: OnnxNode, inputs: readonly (HostTensor | null)[]) => HostTensor[];

const f32 = Math.fround;

/** Round half to even, as nearbyint in the default rounding mode. */
export function rne(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

const size = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

function arrayOf(type: DataType, n: number): TypedData {
  switch (type) {
    case 'float32': return new Float32Array(n);
    case 'float64': return new Float64Array(n);
    case 'uint8': return new Uint8Array(n);
    case 'int8': return new Int8Array(n);
    case 'int32': return new Int32Array(n);
    case 'int64': return new BigInt64Array(n);
  }
}

function fail(node: OnnxNode, why: string): never {
  throw new DqError('DQ_ERR_ENGINE_FAILED', `${node.opType} ${node.name}: ${why}`);
}

function need(node: OnnxNode, inputs: readonly (HostTensor | null)[], i: number): HostTensor {
  const t = inputs[i];
  if (!t) fail(node, `input ${i} is missing`);
  return t;
}

function attr(node: OnnxNode, name: string, fallback: number): number;
function attr(node: OnnxNode, name: string, fallback: readonly number[]): readonly number[];
function attr(node: OnnxNode, name: string, fallback: AttributeValue): AttributeValue {
  return node.attributes.get(name) ?? fallback;
}

const numbers = (t: HostTensor): number[] => Array.from(t.data as ArrayLike<number | bigint>, Number);
const scalar = (t: HostTensor): number => Number(t.data[0]);

/** numpy-style broadcasting of a binary elementwise op; the result has `a`'s type. */
function broadcast(a: HostTensor, b: HostTensor, f: (x: number, y: number) => number): HostTensor {
  const rank = Math.max(a.dims.length, b.dims.length);
  const pad = (d: readonly number[]) => [...new Array<number>(rank - d.length).fill(1), ...d];
  const da = pad(a.dims), db = pad(b.dims);
  // a dimension of 1 takes the other's size, 0 included (an empty group of the body graph)
  const dims = da.map((x, i) => (x === 1 ? (db[i] as number) : x));
  if (dims.some((d, i) => d !== db[i] && db[i] !== 1)) throw new DqError('DQ_ERR_ENGINE_FAILED', `cannot broadcast [${a.dims.join(', ')}] with [${b.dims.join(', ')}]`);
  const strides = (d: number[]) => {
    const s = new Array<number>(rank).fill(0);
    let acc = 1;
    for (let i = rank - 1; i >= 0; i--) {
      s[i] = d[i] === 1 ? 0 : acc;
      acc *= d[i] as number;
    }
    return s;
  };
  const sa = strides(da), sb = strides(db);
  const n = size(dims);
  const out = arrayOf(a.type, n) as Float64Array;
  const x = a.data as Float64Array, y = b.data as Float64Array;
  const idx = new Array<number>(rank).fill(0);
  for (let k = 0; k < n; k++) {
    let ia = 0, ib = 0;
    for (let i = 0; i < rank; i++) {
      ia += (idx[i] as number) * (sa[i] as number);
      ib += (idx[i] as number) * (sb[i] as number);
    }
    out[k] = f(x[ia] as number, y[ib] as number);
    for (let i = rank - 1; i >= 0; i--) {
      if (++(idx[i] as number) < (dims[i] as number)) break;
      idx[i] = 0;
    }
  }
  return { type: a.type, data: out, dims };
}

function elementwise(node: OnnxNode, inputs: readonly (HostTensor | null)[], f: (x: number, y: number) => number): HostTensor[] {
  const a = need(node, inputs, 0), b = need(node, inputs, 1);
  if (a.type !== b.type) fail(node, `mixes ${a.type} and ${b.type}`);
  const round = a.type === 'float32' ? f32 : (v: number) => v;
  return [broadcast(a, b, (x, y) => round(f(x, y)))];
}

/** Moves axis `axis` of `t` to the front view: [outer, axis, inner] sizes. */
function around(dims: readonly number[], axis: number): [number, number, number] {
  const a = axis < 0 ? axis + dims.length : axis;
  return [size(dims.slice(0, a)), dims[a] as number, size(dims.slice(a + 1))];
}

const OPS: Readonly<Record<string, Op>> = {
  Add: (n, i) => elementwise(n, i, (x, y) => x + y),
  Sub: (n, i) => elementwise(n, i, (x, y) => x - y),
  Mul: (n, i) => elementwise(n, i, (x, y) => x * y),
  Div: (n, i) => elementwise(n, i, (x, y) => x / y),
  Min: (n, i) => elementwise(n, i, (x, y) => Math.min(x, y)),
  Max: (n, i) => elementwise(n, i, (x, y) => Math.max(x, y)),

  Relu: (n, i) => {
    const x = need(n, i, 0);
    return [{ ...x, data: (x.data as Float32Array).map((v) => (v > 0 ? v : 0)) }];
  },
  Round: (n, i) => {
    const x = need(n, i, 0);
    return [{ ...x, data: (x.data as Float32Array).map(rne) }];
  },
  Clip: (n, i) => {
    const x = need(n, i, 0);
    const lo = i[1] ? scalar(i[1]) : -Infinity, hi = i[2] ? scalar(i[2]) : Infinity;
    return [{ ...x, data: (x.data as Float32Array).map((v) => Math.min(Math.max(v, lo), hi)) }];
  },

  Cast: (n, i) => {
    const x = need(n, i, 0);
    const to = ({ 1: 'float32', 2: 'uint8', 3: 'int8', 6: 'int32', 7: 'int64', 11: 'float64' } as Record<number, DataType>)[attr(n, 'to', 0)];
    if (!to) fail(n, `cast to ONNX type ${attr(n, 'to', 0)}`);
    const isInt = (t: DataType) => t !== 'float32' && t !== 'float64';
    if (isInt(to) && !isInt(x.type)) fail(n, `float to ${to} casts are not used by bundles`);
    const out = arrayOf(to, x.data.length);
    if (to === 'int64') (out as BigInt64Array).set(Array.from(x.data as ArrayLike<number | bigint>, (v) => BigInt(v)));
    else (out as Float64Array).set(Array.from(x.data as ArrayLike<number | bigint>, Number));
    return [{ type: to, data: out, dims: x.dims }];
  },

  Transpose: (n, i) => {
    const x = need(n, i, 0);
    const rank = x.dims.length;
    const perm = attr(n, 'perm', [...Array(rank).keys()].reverse());
    const dims = perm.map((p) => x.dims[p] as number);
    const inStrides = x.dims.map((_, k) => size(x.dims.slice(k + 1)));
    const out = arrayOf(x.type, x.data.length) as Float64Array;
    const src = x.data as Float64Array;
    const idx = new Array<number>(rank).fill(0);
    for (let k = 0; k < out.length; k++) {
      let from = 0;
      for (let d = 0; d < rank; d++) from += (idx[d] as number) * (inStrides[perm[d] as number] as number);
      out[k] = src[from] as number;
      for (let d = rank - 1; d >= 0; d--) {
        if (++(idx[d] as number) < (dims[d] as number)) break;
        idx[d] = 0;
      }
    }
    return [{ type: x.type, data: out, dims }];
  },
  Reshape: (n, i) => {
    const x = need(n, i, 0);
    const shape = numbers(need(n, i, 1)).map((d, k) => (d === 0 ? (x.dims[k] as number) : d));
    const known = shape.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
    const dims = shape.map((d) => (d === -1 ? x.data.length / known : d));
    if (size(dims) !== x.data.length) fail(n, `cannot reshape [${x.dims.join(', ')}] to [${shape.join(', ')}]`);
    return [{ ...x, dims }];
  },
  Flatten: (n, i) => {
    const x = need(n, i, 0);
    const axis = attr(n, 'axis', 1);
    return [{ ...x, dims: [size(x.dims.slice(0, axis)), size(x.dims.slice(axis))] }];
  },

  Gather: (n, i) => {
    const x = need(n, i, 0), idx = numbers(need(n, i, 1));
    const [outer, len, inner] = around(x.dims, attr(n, 'axis', 0));
    const out = arrayOf(x.type, outer * idx.length * inner) as Float64Array;
    const src = x.data as Float64Array;
    for (let o = 0; o < outer; o++) {
      idx.forEach((r, k) => {
        const row = r < 0 ? r + len : r;
        if (row < 0 || row >= len) fail(n, `index ${r} outside 0..${len - 1}`);
        out.set(src.subarray((o * len + row) * inner, (o * len + row + 1) * inner), (o * idx.length + k) * inner);
      });
    }
    const dims = [...x.dims];
    const axis = attr(n, 'axis', 0);
    dims.splice(axis < 0 ? axis + dims.length : axis, 1, idx.length);
    return [{ type: x.type, data: out, dims }];
  },
  Split: (n, i) => {
    const x = need(n, i, 0);
    const axis = attr(n, 'axis', 0);
    const [outer, len, inner] = around(x.dims, axis);
    const parts = i[1] ? numbers(i[1]) : new Array<number>(n.outputs.length).fill(len / n.outputs.length);
    if (parts.reduce((a, b) => a + b, 0) !== len) fail(n, `split ${parts.join(', ')} does not add up to ${len}`);
    let at = 0;
    return parts.map((p) => {
      const out = arrayOf(x.type, outer * p * inner) as Float64Array;
      const src = x.data as Float64Array;
      for (let o = 0; o < outer; o++) out.set(src.subarray((o * len + at) * inner, (o * len + at + p) * inner), o * p * inner);
      at += p;
      const dims = [...x.dims];
      dims[axis < 0 ? axis + dims.length : axis] = p;
      return { type: x.type, data: out, dims };
    });
  },
  Concat: (n, i) => {
    const xs = i.map((_, k) => need(n, i, k));
    const first = xs[0] as HostTensor;
    const axis = attr(n, 'axis', 0);
    const a = axis < 0 ? axis + first.dims.length : axis;
    const total = xs.reduce((s, x) => s + (x.dims[a] as number), 0);
    const [outer, , inner] = around(first.dims, a);
    const out = arrayOf(first.type, outer * total * inner) as Float64Array;
    for (let o = 0; o < outer; o++) {
      let at = 0;
      for (const x of xs) {
        const len = x.dims[a] as number;
        out.set((x.data as Float64Array).subarray(o * len * inner, (o + 1) * len * inner), (o * total + at) * inner);
        at += len;
      }
    }
    const dims = [...first.dims];
    dims[a] = total;
    return [{ type: first.type, data: out, dims }];
  },

  ReduceSum: (n, i) => {
    const x = need(n, i, 0);
    const rank = x.dims.length;
    const axes = new Set((i[1] ? numbers(i[1]) : [...Array(rank).keys()]).map((a) => (a < 0 ? a + rank : a)));
    const keep = attr(n, 'keepdims', 1) === 1;
    const kept = x.dims.map((d, k) => (axes.has(k) ? 1 : d));
    const out = new Float64Array(size(kept));
    const src = x.data as Float32Array;
    const idx = new Array<number>(rank).fill(0);
    for (let k = 0; k < src.length; k++) {
      let to = 0;
      for (let d = 0; d < rank; d++) to = to * (kept[d] as number) + (axes.has(d) ? 0 : (idx[d] as number));
      out[to] = (out[to] as number) + (src[k] as number);
      for (let d = rank - 1; d >= 0; d--) {
        if (++(idx[d] as number) < (x.dims[d] as number)) break;
        idx[d] = 0;
      }
    }
    const data = x.type === 'float32' ? Float32Array.from(out) : out;
    return [{ type: x.type, data, dims: keep ? kept : x.dims.filter((_, k) => !axes.has(k)) }];
  },
  AveragePool: (n, i) => {
    const x = need(n, i, 0);
    const [kh, kw] = attr(n, 'kernel_shape', [1, 1]) as number[];
    const [sh, sw] = attr(n, 'strides', [1, 1]) as number[];
    if (attr(n, 'pads', [0, 0, 0, 0]).some((p) => p !== 0)) fail(n, 'padded pooling is not used by bundles');
    const [N, C, H, W] = x.dims as [number, number, number, number];
    const oh = Math.floor((H - (kh as number)) / (sh as number)) + 1, ow = Math.floor((W - (kw as number)) / (sw as number)) + 1;
    const out = new Float32Array(N * C * oh * ow);
    const src = x.data as Float32Array;
    for (let p = 0; p < N * C; p++) {
      for (let y = 0; y < oh; y++) {
        for (let xo = 0; xo < ow; xo++) {
          let s = 0;
          for (let dy = 0; dy < (kh as number); dy++) for (let dx = 0; dx < (kw as number); dx++) s += src[(p * H + y * (sh as number) + dy) * W + xo * (sw as number) + dx] as number;
          out[(p * oh + y) * ow + xo] = f32(f32(s) / ((kh as number) * (kw as number)));
        }
      }
    }
    return [{ type: 'float32', data: out, dims: [N, C, oh, ow] }];
  },

  Gemm: (n, i) => {
    const a = need(n, i, 0), b = need(n, i, 1), c = i[2];
    const ta = attr(n, 'transA', 0) === 1, tb = attr(n, 'transB', 0) === 1;
    const alpha = attr(n, 'alpha', 1), beta = attr(n, 'beta', 1);
    const [M, K] = (ta ? [a.dims[1], a.dims[0]] : a.dims) as [number, number];
    const N = (tb ? b.dims[0] : b.dims[1]) as number;
    const A = a.data as Float64Array, B = b.data as Float64Array;
    const out = arrayOf(a.type, M * N) as Float64Array;
    // products summed in float64 and rounded once: exact for the float64 classifier (docs/model-bundle.md)
    for (let m = 0; m < M; m++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += (A[ta ? k * M + m : m * K + k] as number) * (B[tb ? j * K + k : k * N + j] as number);
        let v = alpha * s;
        if (c) v += beta * (c.data[c.data.length === N ? j : m * N + j] as number);
        out[m * N + j] = v;
      }
    }
    return [{ type: a.type, data: a.type === 'float32' ? Float32Array.from(out) : out, dims: [M, N] }];
  },

  Conv: (n, i) => {
    const x = need(n, i, 0), w = need(n, i, 1), bias = i[2];
    const g = conv(n, x.dims, w.dims, false);
    const X = x.data as Float32Array, Wt = w.data as Float32Array;
    const out = new Float32Array(g.N * g.M * g.OH * g.OW);
    for (let b = 0; b < g.N; b++) {
      for (let m = 0; m < g.M; m++) {
        for (let y = 0; y < g.OH; y++) {
          for (let xo = 0; xo < g.OW; xo++) {
            let s = bias ? (bias.data[m] as number) : 0;
            for (let c = 0; c < g.C; c++) {
              for (let ky = 0; ky < g.KH; ky++) {
                const iy = y * g.SH - g.PT + ky;
                if (iy < 0 || iy >= g.H) continue;
                for (let kx = 0; kx < g.KW; kx++) {
                  const ix = xo * g.SW - g.PL + kx;
                  if (ix < 0 || ix >= g.W) continue;
                  s += (X[((b * g.C + c) * g.H + iy) * g.W + ix] as number) * (Wt[((m * g.C + c) * g.KH + ky) * g.KW + kx] as number);
                }
              }
            }
            out[((b * g.M + m) * g.OH + y) * g.OW + xo] = s;
          }
        }
      }
    }
    return [{ type: 'float32', data: out, dims: [g.N, g.M, g.OH, g.OW] }];
  },

  QuantizeLinear: (n, i) => {
    const x = need(n, i, 0), scale = scalar(need(n, i, 1)), zp = i[2] ? scalar(i[2]) : 0;
    if (need(n, i, 1).data.length !== 1) fail(n, 'per-axis quantization is not used by bundles');
    const out = new Uint8Array(x.data.length);
    const src = x.data as Float32Array;
    for (let k = 0; k < src.length; k++) out[k] = Math.min(255, Math.max(0, rne(f32((src[k] as number) / scale)) + zp));
    return [{ type: 'uint8', data: out, dims: x.dims }];
  },

  'com.microsoft.QLinearAdd': (n, i) => {
    const a = need(n, i, 0), b = need(n, i, 3);
    const [sa, za, sb, zb, sc, zc] = [1, 2, 4, 5, 6, 7].map((k) => (i[k] ? scalar(i[k] as HostTensor) : 0)) as [number, number, number, number, number, number];
    // MLAS's AVX2 kernel: ratios and the fixed term in float32, two fused multiply-adds, one rounding
    // (a float64 product of a uint8 and a float32 is exact, and so is the sum here: training/int8.py `qadd`)
    const ra = f32(sa / sc), rb = f32(sb / sc), fixed = f32(-(ra * za + rb * zb));
    return [broadcast(a, b, (x, y) => Math.min(255, Math.max(0, rne(f32(x * ra + f32(y * rb + fixed))) + zc)))];
  },
  'com.microsoft.QLinearConv': (n, i) => {
    const x = need(n, i, 0), w = need(n, i, 3);
    if (attr(n, 'channels_last', 0) !== 1) fail(n, 'only channels_last QLinearConv is used by bundles');
    const xs = scalar(need(n, i, 1)), xz = scalar(need(n, i, 2));
    const ws = need(n, i, 4).data as Float32Array, wz = need(n, i, 5).data as Int8Array;
    const ys = scalar(need(n, i, 6)), yz = scalar(need(n, i, 7));
    const bias = i[8]?.data as Int32Array | undefined;
    const [N, H, W, C] = x.dims as [number, number, number, number];
    const g = conv(n, [N, C, H, W], w.dims, true);
    const X = x.data as Uint8Array, Wt = w.data as Int8Array;
    const out = new Uint8Array(g.N * g.OH * g.OW * g.M);
    // MLAS: the output scale in float32, the int32 accumulator (+ bias) to float32, scaled, rounded half to even
    const mult = Array.from(ws, (s) => f32(f32(xs * s) / ys));
    for (let b = 0; b < N; b++) {
      for (let y = 0; y < g.OH; y++) {
        for (let xo = 0; xo < g.OW; xo++) {
          for (let m = 0; m < g.M; m++) {
            let acc = bias ? (bias[m] as number) : 0;
            const wzm = (wz.length === 1 ? wz[0] : wz[m]) as number;
            for (let ky = 0; ky < g.KH; ky++) {
              const iy = y * g.SH - g.PT + ky;
              if (iy < 0 || iy >= H) continue;
              for (let kx = 0; kx < g.KW; kx++) {
                const ix = xo * g.SW - g.PL + kx;
                if (ix < 0 || ix >= W) continue;
                const xrow = ((b * H + iy) * W + ix) * C;
                for (let c = 0; c < C; c++) acc += ((X[xrow + c] as number) - xz) * ((Wt[((m * C + c) * g.KH + ky) * g.KW + kx] as number) - wzm);
              }
            }
            const v = rne(f32(f32(acc) * (mult[mult.length === 1 ? 0 : m] as number))) + yz;
            out[((b * g.OH + y) * g.OW + xo) * g.M + m] = Math.min(255, Math.max(0, v));
          }
        }
      }
    }
    return [{ type: 'uint8', data: out, dims: [g.N, g.OH, g.OW, g.M] }];
  },
};

interface ConvGeometry { N: number; C: number; H: number; W: number; M: number; KH: number; KW: number; SH: number; SW: number; PT: number; PL: number; OH: number; OW: number }

/** Geometry of a 2-D convolution from NCHW input dims and OIHW weight dims. */
function conv(n: OnnxNode, x: readonly number[], w: readonly number[], quantized: boolean): ConvGeometry {
  if (attr(n, 'group', 1) !== 1) fail(n, 'grouped convolutions are not used by bundles');
  if (attr(n, 'dilations', [1, 1]).some((d) => d !== 1)) fail(n, 'dilated convolutions are not used by bundles');
  const [N, C, H, W] = x as [number, number, number, number];
  const [M, WC, KH, KW] = w as [number, number, number, number];
  if (WC !== C) fail(n, `${quantized ? 'QLinearConv' : 'Conv'} weights expect ${WC} channels, the input has ${C}`);
  const [SH, SW] = attr(n, 'strides', [1, 1]) as [number, number];
  const [PT, PL, PB, PR] = attr(n, 'pads', [0, 0, 0, 0]) as [number, number, number, number];
  return { N, C, H, W, M, KH, KW, SH, SW, PT, PL, OH: Math.floor((H + PT + PB - KH) / SH) + 1, OW: Math.floor((W + PL + PR - KW) / SW) + 1 };
}

/** The reference backend: host arrays in, host arrays out. */
export function hostBackend(): Backend<HostTensor> {
  return {
    ops: new Set(Object.keys(OPS)),
    constant: (t) => t,
    input: (t) => t,
    output: (t) => t,
    run(node, inputs) {
      const op = OPS[opKey(node)];
      if (!op) fail(node, 'not an operator of this backend');
      return op(node, inputs);
    },
    release() {},
  };
}
