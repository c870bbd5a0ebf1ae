// The interpreter's reference backend: every operator a bundle's graphs use (docs/model-bundle.md "Graphs"),
// in plain TypeScript on host arrays, with onnxruntime's CPU arithmetic where it is defined to the bit
// (QLinearConv, QLinearAdd, QuantizeLinear: rounding half to even, one float32 rounding where MLAS has one). It is
// the oracle the GPU kernels are held to and is tested against onnxruntime on real images; it is not fast.
import { opKey, type Backend } from './interpreter.js';
import { newArray, type DataType, type HostTensor, type OnnxNode, type TypedData } from './onnx.js';
import {
  around, attr, broadcastShape, castTarget, convGeometry, fail, flattenDims, gemmBias, gemmShape, need, qlinearAddConstants, qlinearConvConstants, poolGeometry, reducePlan, reshapeDims,
  size, splitSizes, transposeShape, withAxis,
} from './shapes.js';

type Op = (node: OnnxNode, inputs: readonly (HostTensor | null)[]) => HostTensor[];

const f32 = Math.fround;

/** Round half to even, as nearbyint in the default rounding mode. */
export function rne(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}


const numbers = (t: HostTensor): number[] => Array.from(t.data as ArrayLike<number | bigint>, Number);
const scalar = (t: HostTensor): number => Number(t.data[0]);

/** Visits every index of `dims` in row-major order with the offsets the strides give. */
function strided(dims: readonly number[], sa: readonly number[], sb: readonly number[], f: (k: number, ia: number, ib: number) => void): void {
  const rank = dims.length;
  const n = size(dims);
  const idx = new Array<number>(rank).fill(0);
  for (let k = 0; k < n; k++) {
    let ia = 0, ib = 0;
    for (let i = 0; i < rank; i++) {
      ia += (idx[i] as number) * (sa[i] as number);
      ib += (idx[i] as number) * (sb[i] as number);
    }
    f(k, ia, ib);
    for (let i = rank - 1; i >= 0; i--) {
      if (++(idx[i] as number) < (dims[i] as number)) break;
      idx[i] = 0;
    }
  }
}

/** numpy-style broadcasting of a binary elementwise op; the result has `a`'s type. */
function broadcast(a: HostTensor, b: HostTensor, f: (x: number, y: number) => number): HostTensor {
  const { dims, sa, sb } = broadcastShape(a.dims, b.dims);
  const out = newArray(a.type, size(dims)) as Float64Array;
  const x = a.data as Float64Array, y = b.data as Float64Array;
  strided(dims, sa, sb, (k, ia, ib) => { out[k] = f(x[ia] as number, y[ib] as number); });
  return { type: a.type, data: out, dims };
}

function elementwise(node: OnnxNode, inputs: readonly (HostTensor | null)[], f: (x: number, y: number) => number): HostTensor[] {
  const a = need(node, inputs, 0), b = need(node, inputs, 1);
  if (a.type !== b.type) fail(node, `mixes ${a.type} and ${b.type}`);
  const round = a.type === 'float32' ? f32 : (v: number) => v;
  return [broadcast(a, b, (x, y) => round(f(x, y)))];
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
    const x = need(n, i, 0), to = castTarget(n);
    const out = newArray(to, x.data.length) as Float64Array;
    out.set(Array.from(x.data as ArrayLike<number | bigint>, Number));
    return [{ type: to, data: out, dims: x.dims }];
  },

  Transpose: (n, i) => {
    const x = need(n, i, 0);
    const { dims, strides } = transposeShape(n, x.dims);
    const out = newArray(x.type, x.data.length) as Float64Array;
    const src = x.data as Float64Array;
    strided(dims, strides, strides, (k, from) => { out[k] = src[from] as number; });
    return [{ type: x.type, data: out, dims }];
  },
  Reshape: (n, i) => {
    const x = need(n, i, 0);
    return [{ ...x, dims: reshapeDims(n, x.dims, numbers(need(n, i, 1))) }];
  },
  Flatten: (n, i) => {
    const x = need(n, i, 0);
    return [{ ...x, dims: flattenDims(n, x.dims) }];
  },

  Gather: (n, i) => {
    const x = need(n, i, 0), idx = numbers(need(n, i, 1));
    const [outer, len, inner] = around(x.dims, attr(n, 'axis', 0));
    const out = newArray(x.type, outer * idx.length * inner) as Float64Array;
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
    let at = 0;
    return splitSizes(n, x.dims, i[1] ? numbers(i[1]) : null).map((p) => {
      const out = newArray(x.type, outer * p * inner) as Float64Array;
      const src = x.data as Float64Array;
      for (let o = 0; o < outer; o++) out.set(src.subarray((o * len + at) * inner, (o * len + at + p) * inner), o * p * inner);
      at += p;
      return { type: x.type, data: out, dims: withAxis(x.dims, axis, p) };
    });
  },
  Concat: (n, i) => {
    const xs = i.map((_, k) => need(n, i, k));
    const first = xs[0] as HostTensor;
    const axis = attr(n, 'axis', 0);
    const a = axis < 0 ? axis + first.dims.length : axis;
    const total = xs.reduce((s, x) => s + (x.dims[a] as number), 0);
    const [outer, , inner] = around(first.dims, a);
    const out = newArray(first.type, outer * total * inner) as Float64Array;
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
    const plan = reducePlan(n, x.dims, i[1] ? numbers(i[1]) : null);
    const src = x.data as Float32Array;
    const kept = plan.kept.map((k) => k.dim), reduced = plan.reduced.map((k) => k.dim);
    const out = new Float64Array(size(kept));
    // sums in float64, rounded once (the features summed are integers: exact in any order)
    strided(kept, plan.kept.map((k) => k.stride), [], (o, base) => {
      let s = 0;
      strided(reduced, plan.reduced.map((k) => k.stride), [], (_, off) => { s += src[base + off] as number; });
      out[o] = s;
    });
    return [{ type: x.type, data: x.type === 'float32' ? Float32Array.from(out) : out, dims: plan.dims }];
  },
  AveragePool: (n, i) => {
    const x = need(n, i, 0);
    const g = poolGeometry(n, x.dims);
    const out = new Float32Array(g.N * g.C * g.oh * g.ow);
    const src = x.data as Float32Array;
    for (let p = 0; p < g.N * g.C; p++) {
      for (let y = 0; y < g.oh; y++) {
        for (let xo = 0; xo < g.ow; xo++) {
          let s = 0;
          for (let dy = 0; dy < g.kh; dy++) for (let dx = 0; dx < g.kw; dx++) s += src[(p * g.H + y * g.sh + dy) * g.W + xo * g.sw + dx] as number;
          out[(p * g.oh + y) * g.ow + xo] = f32(f32(s) / (g.kh * g.kw));
        }
      }
    }
    return [{ type: 'float32', data: out, dims: [g.N, g.C, g.oh, g.ow] }];
  },

  Gemm: (n, i) => {
    const a = need(n, i, 0), b = need(n, i, 1), c = i[2];
    const { M, N, K, ta, tb, alpha, beta } = gemmShape(n, a.dims, b.dims);
    const A = a.data as Float64Array, B = b.data as Float64Array;
    const out = newArray(a.type, M * N) as Float64Array;
    const mode = c ? gemmBias(n, c.dims, M, N) : 0;
    const cIndex = (m: number, j: number) => [0, j, m * N + j, 0, m][mode] as number;
    // products summed in float64 and rounded once: exact for the float64 classifier (docs/model-bundle.md)
    for (let m = 0; m < M; m++) {
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += (A[ta ? k * M + m : m * K + k] as number) * (B[tb ? j * K + k : k * N + j] as number);
        let v = alpha * s;
        if (c) v += beta * (c.data[cIndex(m, j)] as number);
        out[m * N + j] = v;
      }
    }
    return [{ type: a.type, data: a.type === 'float32' ? Float32Array.from(out) : out, dims: [M, N] }];
  },

  Conv: (n, i) => {
    const x = need(n, i, 0), w = need(n, i, 1), bias = i[2];
    const g = convGeometry(n, x.dims, w.dims);
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
    // MLAS's AVX2 kernel: two fused multiply-adds, one rounding (a float64 product of a uint8 and a float32 is exact,
    // and so is the sum here: training/int8.py `qadd`)
    const { ra, rb, fixed } = qlinearAddConstants(sa, za, sb, zb, sc);
    return [broadcast(a, b, (x, y) => Math.min(255, Math.max(0, rne(f32(x * ra + f32(y * rb + fixed))) + zc)))];
  },
  'com.microsoft.QLinearConv': (n, i) => {
    const x = need(n, i, 0), w = need(n, i, 3);
    if (attr(n, 'channels_last', 0) !== 1) fail(n, 'only channels_last QLinearConv is used by bundles');
    const xs = scalar(need(n, i, 1)), xz = scalar(need(n, i, 2));
    const ys = scalar(need(n, i, 6)), yz = scalar(need(n, i, 7));
    const bias = i[8]?.data as Int32Array | undefined;
    const [N, H, W, C] = x.dims as [number, number, number, number];
    const g = convGeometry(n, [N, C, H, W], w.dims);
    const X = x.data as Uint8Array, Wt = w.data as Int8Array;
    const out = new Uint8Array(g.N * g.OH * g.OW * g.M);
    // MLAS: the int32 accumulator (+ bias) to float32, scaled, rounded half to even
    const { mult, wz } = qlinearConvConstants(xs, need(n, i, 4).data as Float32Array, need(n, i, 5).data as Int8Array, ys, g.M);
    for (let b = 0; b < N; b++) {
      for (let y = 0; y < g.OH; y++) {
        for (let xo = 0; xo < g.OW; xo++) {
          for (let m = 0; m < g.M; m++) {
            let acc = bias ? (bias[m] as number) : 0;
            const wzm = wz[m] as number;
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
            const v = rne(f32(f32(acc) * (mult[m] as number))) + yz;
            out[((b * g.OH + y) * g.OW + xo) * g.M + m] = Math.min(255, Math.max(0, v));
          }
        }
      }
    }
    return [{ type: 'uint8', data: out, dims: [g.N, g.OH, g.OW, g.M] }];
  },
};

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
