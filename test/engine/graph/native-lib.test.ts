// The native operators' C ABI through koffi (native/dq, host build): memory round trips, errors as one clear line,
// and the CUDA build refusing a machine without a GPU in one line that names CUDA.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checker, loadNative, nativeDir, STICKY } from '../../../src/engine/graph/native-lib.js';

describe('the host build of native/dq', () => {
  const lib = loadNative('host');

  it('names what runs it, and round-trips bytes through its memory', () => {
    expect(lib.device).toBe('host (reference build)');
    const src = Float32Array.from([1.5, -2, 3.25, 0]);
    const p = lib.alloc(src.byteLength);
    lib.upload(p, src);
    const back = new Float32Array(4);
    lib.download(back, p);
    expect(Array.from(back)).toEqual([1.5, -2, 3.25, 0]);
    lib.free(p);
  });

  it('copies strided rows (Concat and Split along an inner axis)', () => {
    const p = lib.alloc(6), q = lib.alloc(4);
    lib.upload(p, Uint8Array.from([1, 2, 3, 4, 5, 6]));
    lib.copy2d(q, 2, p + 1, 3, 2, 2); // rows of 3, take bytes 1..2 of each
    const out = new Uint8Array(4);
    lib.download(out, q);
    expect(Array.from(out)).toEqual([2, 3, 5, 6]);
    [p, q].forEach((a) => lib.free(a));
  });

  it('answers an unsupported request with an error naming the operator, not a crash', () => {
    const p = lib.alloc(8);
    expect(() => lib.transpose(3, p, p, BigInt64Array.from([1n]), BigInt64Array.from([1n]))).toThrow('Transpose: transpose of 3-byte elements');
    expect(() => lib.binary(0, 2, p, p, p, BigInt64Array.from([1n]), BigInt64Array.from([0n]), BigInt64Array.from([0n]))).toThrow(/uint8 arithmetic other than Min and Max/);
    expect(() => lib.cast(0, p, 2, p, 1)).toThrow('Cast: cast to type 2');
    lib.free(p);
  });
});

describe('QLinearConv: the tensor-core tiling equals the direct kernel to the bit', () => {
  const lib = loadNative('host');
  // a seeded generator, so that a failure reproduces
  let seed = 20261202;
  const rand = (lo: number, hi: number) => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return lo + (seed % (hi - lo + 1));
  };
  const put = (a: ArrayBufferView) => {
    const p = lib.alloc(a.byteLength);
    lib.upload(p, a);
    return p;
  };
  const cases = [
    // [N, C, H, W, M, K, stride, pad]: pixels not a multiple of the 64-row tile, padding on every side, strides,
    // 1×1 shortcuts, channel counts of ResNet-20 and others, and the extremes of both operands
    [3, 16, 7, 7, 16, 3, 1, 1], [2, 32, 9, 5, 64, 3, 2, 1], [1, 64, 8, 8, 32, 1, 2, 0], [5, 48, 3, 4, 48, 3, 1, 2], [1, 16, 1, 1, 16, 3, 1, 1],
  ] as const;
  it.each(cases)('N=%i C=%i %ix%i M=%i, %i-wide kernel, stride %i, pad %i', (N, C, H, W, M, K, S, P) => {
    const OH = Math.floor((H + 2 * P - K) / S) + 1, OW = Math.floor((W + 2 * P - K) / S) + 1;
    const extreme = C === 48;
    const x = Uint8Array.from({ length: N * H * W * C }, () => (extreme ? (rand(0, 1) ? 255 : 0) : rand(0, 255)));
    const w = Int8Array.from({ length: M * K * K * C }, () => (extreme ? (rand(0, 1) ? 127 : -128) : rand(-128, 127)));
    const wsum = Int32Array.from({ length: M }, (_, m) => w.subarray(m * K * K * C, (m + 1) * K * K * C).reduce((a, v) => a + v, 0));
    const bias = Int32Array.from({ length: M }, () => rand(-5000, 5000));
    const mult = Float32Array.from({ length: M }, () => Math.fround(rand(1, 1000) / 2 ** 20));
    const xz = extreme ? 255 : rand(0, 255), yz = rand(0, 255);
    const geom = Int32Array.from([N, C, H, W, M, K, K, S, S, P, P, OH, OW]);
    const [px, pw, pz, ps, pb, pm] = [x, w, new Int8Array(M), wsum, bias, mult].map(put) as [number, number, number, number, number, number];
    const run = (sums: number) => {
      const py = lib.alloc(N * OH * OW * M);
      lib.qlinearConv(px, xz, pw, pz, sums, pm, pb, yz, py, geom);
      const y = new Uint8Array(N * OH * OW * M);
      lib.download(y, py);
      lib.free(py);
      return y;
    };
    const direct = run(0), tiled = run(ps);
    expect(new Set(direct).size).toBeGreaterThan(extreme ? 1 : Math.min(20, direct.length / 2)); // not all clamped: the comparison means something
    expect(Buffer.from(tiled).equals(Buffer.from(direct))).toBe(true);
    [px, pw, pz, ps, pb, pm].forEach((p) => lib.free(p));
  });
});

describe('CUDA faults the context cannot survive', () => {
  it("are told apart by cudaGetErrorString's text", () => {
    for (const sticky of ['an illegal memory access was encountered', 'unspecified launch failure', 'misaligned address', 'device-side assert triggered']) {
      expect(STICKY.test(`kernel: ${sticky}`)).toBe(true);
    }
    for (const passing of ['out of memory', 'invalid argument', 'CUDA driver version is insufficient for CUDA runtime version']) {
      expect(STICKY.test(`cudaMalloc: ${passing}`)).toBe(false);
    }
  });

  it('a passing failure is DQ_ERR_ENGINE_FAILED and later calls work; a sticky one is DQ_ERR_ENGINE_LOST for every later call, naming the first cause', () => {
    let last = 'out of memory';
    const check = checker(() => last);
    expect(() => check('cudaMalloc', -1)).toThrow(expect.objectContaining({ code: 'DQ_ERR_ENGINE_FAILED', detail: 'cudaMalloc: out of memory' }));
    expect(() => check('Conv', 0)).not.toThrow();
    last = 'unspecified launch failure';
    expect(() => check('QLinearConv', -1)).toThrow(expect.objectContaining({ code: 'DQ_ERR_ENGINE_LOST', detail: 'QLinearConv: unspecified launch failure' }));
    last = 'invalid argument'; // what CUDA then says for everything
    expect(() => check('Gemm', 0)).toThrow(expect.objectContaining({ code: 'DQ_ERR_ENGINE_LOST', detail: 'QLinearConv: unspecified launch failure' }));
    expect(() => check('Gemm', -1)).toThrow(expect.objectContaining({ code: 'DQ_ERR_ENGINE_LOST', detail: 'QLinearConv: unspecified launch failure' }));
  });
});

// Built only where nvcc is (`npm run build:cuda`); on a machine without an NVIDIA driver it must refuse at once.
describe.skipIf(!existsSync(join(nativeDir(), 'libdq-cuda.so')) || existsSync('/dev/nvidiactl'))('the CUDA build on a machine without a GPU', () => {
  it('is refused in one line that names CUDA', () => {
    expect(() => loadNative('cuda')).toThrow(expect.objectContaining({ code: 'DQ_ERR_CONFIG_INVALID', message: expect.stringMatching(/^[^\n]*CUDA is not usable here[^\n]*--device cuda needs an NVIDIA GPU/) }));
  });
});
