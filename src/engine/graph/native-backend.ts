// The interpreter's backend on the native operators (native-lib.ts): tensors live in the library's memory (the
// GPU's, for libdq-cuda.so) from the uploaded pixels to the logits; only shapes, scalars and the index feeds
// (which the host made) are read on the host. Reshapes and batch-axis splits are views of their input's buffer.
import { opKey, type Backend } from './interpreter.js';
import type { Address, NativeLib } from './native-lib.js';
import { bytesPerElement, newArray, type DataType, type HostTensor, type OnnxNode } from './onnx.js';
import {
  around, attr, broadcastShape, castTarget, convGeometry, fail, flattenDims, gemmBias, gemmShape, geometryArray, need, qlinearAddConstants, qlinearConvConstants, poolGeometry, reducePlan,
  reshapeDims, size, splitSizes, transposeShape, withAxis,
} from './shapes.js';

const CODE: Readonly<Record<DataType, number>> = { float32: 0, float64: 1, uint8: 2, int8: 3, int32: 4, int64: 5 };
const BINARY: Readonly<Record<string, number>> = { Add: 0, Sub: 1, Mul: 2, Div: 3, Min: 4, Max: 5 };
const UNARY: Readonly<Record<string, number>> = { Relu: 0, Round: 1, Clip: 2 };

/** A buffer in the library's memory, shared by the views of it; freed when the last is released. */
interface DeviceBuffer { ptr: Address; refs: number }

export interface DeviceTensor {
  readonly type: DataType;
  readonly dims: readonly number[];
  /** null for an empty tensor (no sample chose this group). */
  readonly buf: DeviceBuffer | null;
  /** Bytes from the buffer's start. */
  readonly offset: number;
  /** The same values on the host, where the host made them (initializers, feeds). */
  readonly host?: HostTensor;
}

/**
 * DQ_PROFILE=1: every operator is waited for and timed, by type (bench/gpu/engine.ts prints it). A diagnostic: the
 * waits themselves cost time, so throughput is measured without it.
 */
export const opProfile = new Map<string, { calls: number; ms: number }>();
const profiling = process.env['DQ_PROFILE'] === '1';

const i64 = (xs: readonly number[]): BigInt64Array => BigInt64Array.from(xs, (v) => BigInt(v));

/**
 * Σ of each output channel's weights, which dq.cpp's tensor-core QLinearConv needs to restore the activations'
 * zero point; null unless every weight zero point is 0 (the bundles' symmetric weights), the only case it takes.
 */
export function weightSums(w: Int8Array, wz: Int8Array, M: number): Int32Array | null {
  if (wz.some((z) => z !== 0)) return null;
  const per = w.length / M;
  return Int32Array.from({ length: M }, (_, m) => w.subarray(m * per, (m + 1) * per).reduce((a, v) => a + v, 0));
}

/**
 * Weights [M, depth] (channels last) as dq_qconv_bitserial's planes: k = (w − wmin) / wstep in wbits bits, bit j of every k
 * in plane j; within a plane, tiles of 8 channels × 128 depth bits (zero past the depth), each channel's 128 bits
 * as 4 words, bit b of word q holding depth 128·step + 32·q + b.
 */
export function bitPlanes(w: Int8Array, M: number, wbits: number, wmin: number, wstep: number): Uint32Array {
  if (M % 8 !== 0) throw new Error(`bit planes need a multiple of 8 channels, got ${M}`);
  const depth = w.length / M, steps = Math.ceil(depth / 128), tiles = M / 8;
  const out = new Uint32Array(wbits * tiles * steps * 8 * 4);
  for (let m = 0; m < M; m++)
    for (let d = 0; d < depth; d++) {
      const v = w[m * depth + d] as number, k = (v - wmin) / wstep;
      if (!Number.isInteger(k) || k < 0 || k >= 1 << wbits) throw new Error(`weight ${v} is not ${wmin} + ${wstep}·k with k in 0 … ${(1 << wbits) - 1}`);
      for (let j = 0; j < wbits; j++) {
        if (((k >> j) & 1) === 0) continue;
        const word = ((((j * tiles + (m >> 3)) * steps + (d >> 7)) * 8 + (m & 7)) * 4) + ((d & 127) >> 5);
        out[word] = ((out[word] as number) | (1 << (d & 31))) >>> 0;
      }
    }
  return out;
}

/**
 * Weights [M, C, taps] (ONNX's OIHW) as [M, taps, C]: the kernel then reads a tap's channels contiguously, as it reads
 * the activations (NHWC).
 */
export function channelsLast(w: Int8Array, M: number, C: number, taps: number): Int8Array {
  const out = new Int8Array(w.length);
  for (let m = 0; m < M; m++) for (let c = 0; c < C; c++) for (let t = 0; t < taps; t++) out[(m * taps + t) * C + c] = w[(m * C + c) * taps + t] as number;
  return out;
}

export function nativeBackend(lib: NativeLib): Backend<DeviceTensor> {
  const addr = (t: DeviceTensor | null | undefined): Address => (t?.buf ? t.buf.ptr + t.offset : 0);
  const alloc = (type: DataType, dims: readonly number[]): DeviceTensor => {
    const bytes = size(dims) * bytesPerElement(type);
    return { type, dims, buf: bytes > 0 ? { ptr: lib.alloc(bytes), refs: 1 } : null, offset: 0 };
  };
  // what the running operator has made so far: released if it fails half way
  let made: DeviceTensor[] = [];
  const make = (type: DataType, dims: readonly number[]): DeviceTensor => {
    const t = alloc(type, dims);
    made.push(t);
    return t;
  };
  /** `t`'s values from element `from` on, as `dims` (a reshape, or a part of a split along the first axis). */
  const view = (t: DeviceTensor, dims: readonly number[], from = 0): DeviceTensor => {
    if (t.buf) t.buf.refs++;
    const host = t.host && { type: t.type, data: t.host.data.subarray(from, from + size(dims)), dims };
    const v = { type: t.type, dims, buf: t.buf, offset: t.offset + from * bytesPerElement(t.type), ...(host ? { host } : {}) };
    made.push(v);
    return v;
  };
  /** A constant: kept for the session (initializers, per-node derived values), so never one of `made`. */
  const upload = (t: HostTensor): DeviceTensor => {
    const d = alloc(t.type, t.dims);
    if (d.buf) lib.upload(d.buf.ptr, t.data);
    return { ...d, host: t };
  };
  // A run's feeds are staged on the host and sent in one copy before its first operator: one wait for the device
  // instead of one per feed (a dynamic body has about 60 small index feeds). Each feed is a view of that copy.
  let staged: { buf: DeviceBuffer; parts: HostTensor[]; offsets: number[]; bytes: number } | null = null;
  const stage = (t: HostTensor): DeviceTensor => {
    if (t.data.byteLength === 0) return { type: t.type, dims: t.dims, buf: null, offset: 0, host: t };
    staged ??= { buf: { ptr: 0, refs: 0 }, parts: [], offsets: [], bytes: 0 };
    const offset = Math.ceil(staged.bytes / 8) * 8; // aligned for int64 and float64 feeds
    staged.parts.push(t);
    staged.offsets.push(offset);
    staged.bytes = offset + t.data.byteLength;
    staged.buf.refs++;
    return { type: t.type, dims: t.dims, buf: staged.buf, offset, host: t };
  };
  const flush = (): void => {
    if (!staged) return;
    const s = staged;
    staged = null;
    const bytes = new Uint8Array(s.bytes);
    s.parts.forEach((t, k) => bytes.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), s.offsets[k]));
    s.buf.ptr = lib.alloc(s.bytes);
    lib.upload(s.buf.ptr, bytes);
  };
  const hostOf = (node: OnnxNode, t: DeviceTensor, what: string): HostTensor => {
    if (!t.host) fail(node, `its ${what} must be known on the host (an initializer or a feed)`);
    return t.host;
  };
  const numbers = (node: OnnxNode, t: DeviceTensor, what: string): number[] => Array.from(hostOf(node, t, what).data as ArrayLike<number | bigint>, Number);
  const scalar = (node: OnnxNode, t: DeviceTensor | null | undefined, what: string, fallback = 0): number => (t ? (numbers(node, t, what)[0] ?? fallback) : fallback);
  // per-node constants derived on the host once (QLinearConv's per-channel multipliers and zero points)
  const derived = new Map<OnnxNode, DeviceTensor[]>();
  const once = (node: OnnxNode, build: () => HostTensor[]): DeviceTensor[] => {
    let d = derived.get(node);
    if (!d) derived.set(node, (d = build().map(upload)));
    return d;
  };
  const whenAny = (t: DeviceTensor, run: () => void): DeviceTensor => {
    if (t.buf) run();
    return t;
  };

  type Op = (n: OnnxNode, i: readonly (DeviceTensor | null)[]) => DeviceTensor[];
  const binary: Op = (n, i) => {
    const a = need(n, i, 0), b = need(n, i, 1);
    if (a.type !== b.type) fail(n, `mixes ${a.type} and ${b.type}`);
    const { dims, sa, sb } = broadcastShape(a.dims, b.dims);
    const y = make(a.type, dims);
    return [whenAny(y, () => lib.binary(BINARY[n.opType] as number, CODE[a.type], addr(a), addr(b), addr(y), i64(dims), i64(sa), i64(sb)))];
  };
  const unary: Op = (n, i) => {
    const x = need(n, i, 0);
    if (x.type !== 'float32') fail(n, `on ${x.type}`);
    const lo = scalar(n, i[1], 'min', -Infinity), hi = scalar(n, i[2], 'max', Infinity);
    const y = make('float32', x.dims);
    return [whenAny(y, () => lib.unary(UNARY[n.opType] as number, addr(x), addr(y), size(x.dims), lo, hi))];
  };

  const OPS: Readonly<Record<string, Op>> = {
    Add: binary, Sub: binary, Mul: binary, Div: binary, Min: binary, Max: binary,
    Relu: unary, Round: unary, Clip: unary,
    Cast: (n, i) => {
      const x = need(n, i, 0), to = castTarget(n);
      const y = make(to, x.dims);
      return [whenAny(y, () => lib.cast(CODE[x.type], addr(x), CODE[to], addr(y), size(x.dims)))];
    },
    Transpose: (n, i) => {
      const x = need(n, i, 0);
      const { dims, strides } = transposeShape(n, x.dims);
      const y = make(x.type, dims);
      return [whenAny(y, () => lib.transpose(bytesPerElement(x.type), addr(x), addr(y), i64(dims), i64(strides)))];
    },
    Reshape: (n, i) => {
      const x = need(n, i, 0);
      return [view(x, reshapeDims(n, x.dims, numbers(n, need(n, i, 1), 'shape')))];
    },
    Flatten: (n, i) => {
      const x = need(n, i, 0);
      return [view(x, flattenDims(n, x.dims))];
    },
    Gather: (n, i) => {
      const x = need(n, i, 0), idx = need(n, i, 1);
      const axis = attr(n, 'axis', 0);
      const [outer, len, inner] = around(x.dims, axis);
      const rows = numbers(n, idx, 'indices');
      const bad = rows.find((r) => r < 0 || r >= len);
      // the kernel trusts its indices: they are checked here (negative ones are not used by bundles)
      if (bad !== undefined) fail(n, `index ${bad} outside 0..${len - 1}`);
      if (idx.type !== 'int64') fail(n, `indices of type ${idx.type}`);
      const y = make(x.type, withAxis(x.dims, axis, rows.length));
      return [whenAny(y, () => lib.gather(bytesPerElement(x.type), addr(x), addr(idx), addr(y), outer, len, rows.length, inner))];
    },
    Split: (n, i) => {
      const x = need(n, i, 0);
      const axis = attr(n, 'axis', 0);
      const [outer, len, inner] = around(x.dims, axis);
      const e = bytesPerElement(x.type);
      let at = 0;
      return splitSizes(n, x.dims, i[1] ? numbers(n, i[1], 'split') : null).map((p) => {
        const dims = withAxis(x.dims, axis, p);
        const from = at;
        at += p;
        // along the outermost axis a part is a contiguous run of its input: a view, no copy
        if (outer === 1) return p > 0 ? view(x, dims, from * inner) : make(x.type, dims);
        const y = make(x.type, dims);
        return whenAny(y, () => lib.copy2d(addr(y), p * inner * e, addr(x) + from * inner * e, len * inner * e, p * inner * e, outer));
      });
    },
    Concat: (n, i) => {
      const xs = i.map((_, k) => need(n, i, k));
      const first = xs[0] as DeviceTensor;
      const axis = attr(n, 'axis', 0);
      const total = xs.reduce((s, x) => s + (around(x.dims, axis)[1]), 0);
      const [outer, , inner] = around(first.dims, axis);
      const e = bytesPerElement(first.type);
      const y = make(first.type, withAxis(first.dims, axis, total));
      let at = 0;
      for (const x of xs) {
        const len = around(x.dims, axis)[1];
        if (x.buf && len > 0) lib.copy2d(addr(y) + at * inner * e, total * inner * e, addr(x), len * inner * e, len * inner * e, outer);
        at += len;
      }
      return [y];
    },
    ReduceSum: (n, i) => {
      const x = need(n, i, 0);
      if (x.type !== 'float32' && x.type !== 'float64') fail(n, `on ${x.type}`);
      const plan = reducePlan(n, x.dims, i[1] ? numbers(n, i[1], 'axes') : null);
      const pad = (xs: number[]) => [...xs, ...new Array<number>(6 - xs.length).fill(0)];
      const packed = i64([plan.kept.length, plan.reduced.length, ...pad(plan.kept.map((k) => k.dim)), ...pad(plan.kept.map((k) => k.stride)),
        ...pad(plan.reduced.map((k) => k.dim)), ...pad(plan.reduced.map((k) => k.stride))]);
      const y = make(x.type, plan.dims);
      return [whenAny(y, () => lib.reduceSum(CODE[x.type], addr(x), addr(y), packed))];
    },
    AveragePool: (n, i) => {
      const x = need(n, i, 0);
      const g = poolGeometry(n, x.dims);
      const y = make('float32', [g.N, g.C, g.oh, g.ow]);
      return [whenAny(y, () => lib.avgpool(addr(x), addr(y), g.N * g.C, g.H, g.W, g.kh, g.kw, g.sh, g.sw, g.oh, g.ow))];
    },
    Gemm: (n, i) => {
      const a = need(n, i, 0), b = need(n, i, 1), c = i[2];
      const { M, N, K, ta, tb, alpha, beta } = gemmShape(n, a.dims, b.dims);
      const y = make(a.type, [M, N]);
      const cMode = c ? gemmBias(n, c.dims, M, N) : 0;
      return [whenAny(y, () => lib.gemm(CODE[a.type], addr(a), addr(b), addr(c), addr(y), M, N, K, ta ? 1 : 0, tb ? 1 : 0, alpha, beta, cMode))];
    },
    Conv: (n, i) => {
      const x = need(n, i, 0), w = need(n, i, 1);
      const g = convGeometry(n, x.dims, w.dims);
      const y = make('float32', [g.N, g.M, g.OH, g.OW]);
      return [whenAny(y, () => lib.conv2d(addr(x), addr(w), addr(i[2]), addr(y), geometryArray(g)))];
    },
    QuantizeLinear: (n, i) => {
      const x = need(n, i, 0);
      if (size(need(n, i, 1).dims) !== 1) fail(n, 'per-axis quantization is not used by bundles');
      const y = make('uint8', x.dims);
      return [whenAny(y, () => lib.quantize(addr(x), addr(y), size(x.dims), scalar(n, i[1], 'scale'), scalar(n, i[2], 'zero point')))];
    },
    'com.microsoft.QLinearAdd': (n, i) => {
      const a = need(n, i, 0), b = need(n, i, 3);
      const [sa, za, sb, zb, sc, zc] = [1, 2, 4, 5, 6, 7].map((k) => scalar(n, i[k], 'scale or zero point'));
      const { ra, rb, fixed } = qlinearAddConstants(sa as number, za as number, sb as number, zb as number, sc as number);
      const { dims, sa: stA, sb: stB } = broadcastShape(a.dims, b.dims);
      const y = make('uint8', dims);
      return [whenAny(y, () => lib.qlinearAdd(addr(a), addr(b), addr(y), i64(dims), i64(stA), i64(stB), ra, rb, fixed, zc as number))];
    },
    'com.microsoft.QLinearConv': (n, i) => {
      const x = need(n, i, 0), w = need(n, i, 3);
      const xz = scalar(n, i[2], 'zero point'), yz = scalar(n, i[7], 'zero point');
      if (attr(n, 'channels_last', 0) !== 1) fail(n, 'only channels_last QLinearConv is used by bundles');
      const [N, H, W, C] = x.dims as [number, number, number, number];
      const g = convGeometry(n, [N, C, H, W], w.dims);
      const [mult, wz, packed, wsum] = once(n, () => {
        const xs = scalar(n, i[1], 'scale'), ys = scalar(n, i[6], 'scale');
        const c = qlinearConvConstants(xs, numbers(n, need(n, i, 4), 'weight scales'), numbers(n, need(n, i, 5), 'weight zero points'), ys, g.M);
        const weights = channelsLast(hostOf(n, w, 'weights').data as Int8Array, g.M, g.C, g.KH * g.KW);
        const sums = weightSums(weights, c.wz, g.M);
        return [
          { type: 'float32', data: c.mult, dims: [g.M] },
          { type: 'int8', data: c.wz, dims: [g.M] },
          { type: 'int8', data: weights, dims: [g.M, g.KH, g.KW, g.C] },
          ...(sums ? [{ type: 'int32' as const, data: sums, dims: [g.M] }] : []),
        ];
      }) as [DeviceTensor, DeviceTensor, DeviceTensor, DeviceTensor | undefined];
      const y = make('uint8', [g.N, g.OH, g.OW, g.M]);
      return [whenAny(y, () => lib.qlinearConv(addr(x), xz, addr(packed), addr(wz), addr(wsum), addr(mult), addr(i[8]), yz, addr(y), geometryArray(g)))];
    },
  };

  const release = (t: DeviceTensor): void => {
    if (!t.buf || --t.buf.refs > 0) return;
    if (t.buf.ptr !== 0) lib.free(t.buf.ptr);
    else if (staged?.buf === t.buf) staged = null; // its run failed before sending it: nothing to free, nothing to send
  };
  return {
    ops: new Set(Object.keys(OPS)),
    constant: upload,
    input: stage,
    output(t) {
      flush();
      const data = newArray(t.type, size(t.dims));
      if (t.buf) lib.download(data, addr(t));
      return { type: t.type, data, dims: t.dims };
    },
    run(node, inputs) {
      const op = OPS[opKey(node)];
      if (!op) fail(node, 'not an operator of this backend');
      flush();
      made = [];
      const t0 = profiling ? performance.now() : 0;
      try {
        const out = op(node, inputs);
        if (profiling) {
          lib.sync();
          const p = opProfile.get(opKey(node)) ?? { calls: 0, ms: 0 };
          opProfile.set(opKey(node), { calls: p.calls + 1, ms: p.ms + performance.now() - t0 });
        }
        return out;
      } catch (err) {
        for (const t of made) release(t);
        throw err;
      } finally {
        made = [];
      }
    },
    release,
    dispose() {
      for (const ts of derived.values()) ts.forEach(release);
      derived.clear();
    },
  };
}
