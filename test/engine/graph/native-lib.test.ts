// The native operators' C ABI through koffi (native/dq, host build): memory round trips, errors as one clear line,
// and the CUDA build refusing a machine without a GPU in one line that names CUDA.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bitPlanes, channelsLast, weightSums } from '../../../src/engine/graph/native-backend.js';
import { ABI_VERSION, checker, loadNative, nativeDir, STICKY } from '../../../src/engine/graph/native-lib.js';
import { REPO_ROOT } from '../../helpers/paths.js';
import { CONV_CASES, checkConv } from '../../../bench/gpu/conv-check.js';

describe('the host build of native/dq', () => {
  const lib = loadNative('host');

  it('was built from these sources: its ABI version is the one the binding expects, and dq.h says so', () => {
    expect(readFileSync(join(REPO_ROOT, 'native', 'dq', 'dq.h'), 'utf8')).toContain(`#define DQ_ABI_VERSION ${ABI_VERSION}\n`);
    expect(() => loadNative('host')).not.toThrow();
  });

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

describe('QLinearConv: the tensor-core tiling equals the direct kernel to the bit (bench/gpu/conv-check.ts)', () => {
  const lib = loadNative('host');
  it.each(CONV_CASES.map((c) => [c.name, c] as const))('%s', (_, c) => {
    const r = checkConv(lib, c);
    // enough outputs between the clamps that the comparison means something
    expect(r.unclamped).toBeGreaterThan(r.outputs / 20);
    expect(r.distinct).toBeGreaterThan(Math.min(20, r.outputs / 2));
    expect(r.equal).toBe(true);
  });

  it('takes the tensor cores only for symmetric weights (weightSums), summing each channel over the packed layout', () => {
    const w = Int8Array.from([1, -2, 3, 4, 5, -6, 7, 8, -128, 127, 0, 1]); // M = 3 channels of 4
    expect(Array.from(weightSums(w, new Int8Array(3), 3) ?? [])).toEqual([6, 14, 0]);
    expect(weightSums(w, Int8Array.from([0, 1, 0]), 3)).toBeNull();
    // packing for the kernel keeps each channel's weights together, so the sums do not depend on it
    expect(Array.from(weightSums(channelsLast(w, 3, 2, 2), new Int8Array(3), 3) ?? [])).toEqual([6, 14, 0]);
  });

  it('packs ≤ 2-bit weights into the bit-serial kernel\'s planes: tiles of 8 channels × 128 depth bits', () => {
    // 16 channels of depth 130 (two 128-bit steps), DoReFa's 2-bit numerators −3, −1, 1, 3 (k = 0 … 3)
    const M = 16, depth = 130, k = (m: number, d: number) => (m * 7 + d * 3) % 4;
    const w = Int8Array.from({ length: M * depth }, (_, i) => -3 + 2 * k(Math.floor(i / depth), i % depth));
    const planes = bitPlanes(w, M, 2, -3, 2);
    expect(planes.length).toBe(2 * 2 * 2 * 8 * 4); // planes × channel tiles × steps × 8 rows × 4 words
    const bit = (j: number, m: number, d: number) => {
      const word = ((((j * 2 + (m >> 3)) * 2 + (d >> 7)) * 8 + (m & 7)) * 4) + ((d & 127) >> 5);
      return ((planes[word] as number) >>> (d & 31)) & 1;
    };
    for (const [m, d] of [[0, 0], [9, 31], [15, 129], [7, 128], [3, 64]] as const) {
      expect([bit(0, m, d), bit(1, m, d)]).toEqual([k(m, d) & 1, k(m, d) >> 1]);
    }
    expect(bit(0, 0, 130) + bit(1, 0, 130) + bit(0, 15, 255)).toBe(0); // past the depth: zero
    expect(() => bitPlanes(Int8Array.from([0, 1, 1, 1, 1, 1, 1, 1]), 8, 1, -1, 2)).toThrow(/not -1 \+ 2·k/);
    expect(() => bitPlanes(new Int8Array(12), 12, 1, 0, 1)).toThrow(/multiple of 8/);
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
