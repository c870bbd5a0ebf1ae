// QLinearConv's tensor-core path against its direct kernel, in one library (the host build in the tests; the
// CUDA build on the GPU machine, where bench/gpu/run.sh runs this first and keeps the direct kernel if it fails):
// seeded cases that cover padding on every side, strides, 1×1 shortcuts, non-square geometry, pixels that do not
// fill the last tile, every channel count the tiles take, no bias, xz = 0, the operands' extremes, and shapes the
// tensor cores refuse (the direct kernel must answer them); then the bit-serial ≤ 2-bit kernel against the direct
// kernel on low-bit operands. Both paths must agree to the bit.
//   tsx bench/gpu/conv-check.ts [--library cuda|host] [--cases all|tensor|bitserial]   (exit 1 on a mismatch)
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { bitPlanes, weightSums } from '../../src/engine/graph/native-backend.js';
import { loadNative, uploaded, type NativeKind, type NativeLib } from '../../src/engine/graph/native-lib.js';
import { geometryArray, withOutputSize } from '../../src/engine/graph/shapes.js';

export interface ConvCase {
  readonly name: string;
  readonly N: number; readonly C: number; readonly H: number; readonly W: number; readonly M: number;
  readonly KH: number; readonly KW: number; readonly SH: number; readonly SW: number; readonly PT: number; readonly PL: number;
  readonly PB: number; readonly PR: number;
  readonly bias: boolean;
  /** 'random', 'extreme' (only 0/255 and −128/127), or 'xz0' (random, activation zero point 0). */
  readonly values: 'random' | 'extreme' | 'xz0';
  /**
   * Compare the bit-serial kernel (dq_qconv_bitserial) instead of the tensor-core tiling: activations are levels
   * below 2^xbits (zero point 0), weights DoReFa's wbits-bit numerators (odd, |m| ≤ 2^wbits − 1).
   */
  readonly bitserial?: { readonly xbits: number; readonly wbits: number };
}

const square = (N: number, C: number, H: number, W: number, M: number, K: number, S: number, P: number, more: Partial<ConvCase> = {}): ConvCase => ({
  name: `N=${N} C=${C} ${H}x${W} M=${M} ${K}x${K}/${S} pad ${P}`, N, C, H, W, M, KH: K, KW: K, SH: S, SW: S, PT: P, PL: P, PB: P, PR: P, bias: true, values: 'random', ...more,
});

export const CONV_CASES: readonly ConvCase[] = [
  square(3, 16, 7, 7, 16, 3, 1, 1),
  square(2, 32, 9, 5, 64, 3, 2, 1),
  square(1, 64, 8, 8, 32, 1, 2, 0),
  { ...square(5, 48, 3, 4, 48, 3, 1, 2, { values: 'extreme' }), name: 'extremes, C=M=48, pad 2' },
  square(1, 16, 1, 1, 16, 3, 1, 1),
  { ...square(2, 32, 6, 7, 32, 3, 1, 1, { bias: false, values: 'xz0' }), name: 'no bias, xz = 0' },
  { name: 'non-square: 3x1 kernel, strides 2x1, pads 1/0/2/1', N: 2, C: 16, H: 9, W: 6, M: 16, KH: 3, KW: 1, SH: 2, SW: 1, PT: 1, PL: 0, PB: 2, PR: 1, bias: true, values: 'random' },
  // refused by the tensor cores (C not a multiple of 16; M over 64; M not a multiple of 16): the direct kernel answers
  square(2, 8, 5, 5, 16, 3, 1, 1),
  square(1, 16, 4, 4, 80, 3, 1, 1),
  square(1, 16, 4, 4, 24, 3, 1, 1),
  // the bit-serial kernel (1-bit tensor cores): depths that do not fill the last 128 bits, pixels that do not fill
  // the last tile of 8, every pair of operand widths
  { ...square(3, 16, 7, 7, 16, 3, 1, 1, { bitserial: { xbits: 2, wbits: 2 } }), name: 'bit-serial 2x2 bits, N=3 C=16 7x7 M=16 3x3/1 pad 1' },
  { ...square(2, 32, 9, 5, 64, 3, 2, 1, { bitserial: { xbits: 2, wbits: 2 } }), name: 'bit-serial 2x2 bits, N=2 C=32 9x5 M=64 3x3/2 pad 1' },
  { ...square(2, 64, 8, 8, 64, 3, 1, 1, { bitserial: { xbits: 1, wbits: 1 } }), name: 'bit-serial 1x1 bits, N=2 C=64 8x8 M=64 3x3/1 pad 1' },
  { ...square(1, 16, 8, 8, 32, 1, 2, 0, { bitserial: { xbits: 1, wbits: 2 } }), name: 'bit-serial 1x2 bits, 1x1 shortcut C=16 M=32 /2' },
  { ...square(2, 16, 5, 6, 8, 3, 1, 1, { bitserial: { xbits: 2, wbits: 1 }, bias: false }), name: 'bit-serial 2x1 bits, M=8, no bias' },
];

export interface ConvOutcome {
  readonly name: string;
  readonly outputs: number;
  /** Distinct output values of the direct kernel: a comparison of all-clamped outputs would prove nothing. */
  readonly distinct: number;
  readonly unclamped: number;
  readonly equal: boolean;
}

/** Runs one case on `lib` through both paths (wsum absent: direct; given: tensor cores where they apply). */
export function checkConv(lib: NativeLib, c: ConvCase, seed = 20261202): ConvOutcome {
  let s = seed;
  const rand = (lo: number, hi: number) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return lo + ((s >>> 8) % (hi - lo + 1)); // high bits: an LCG's low bits repeat with a short period
  };
  const g = withOutputSize(c);
  const { OH, OW } = g;
  const depth = c.KH * c.KW * c.C;
  const extreme = c.values === 'extreme', bs = c.bitserial;
  const wmin = bs ? 1 - (1 << bs.wbits) : 0; // DoReFa's numerators: wmin + 2k
  const x = Uint8Array.from({ length: c.N * c.H * c.W * c.C }, () => (bs ? rand(0, (1 << bs.xbits) - 1) : extreme ? (rand(0, 1) ? 255 : 0) : rand(0, 255)));
  const w = Int8Array.from({ length: c.M * depth }, () => (bs ? wmin + 2 * rand(0, (1 << bs.wbits) - 1) : extreme ? (rand(0, 1) ? 127 : -128) : rand(-128, 127)));
  const wz = new Int8Array(c.M); // symmetric weights: the only case the tensor cores take
  const wsum = weightSums(w, wz, c.M) as Int32Array;
  // low-bit sums are small (about 4·√depth): a multiplier to match keeps the outputs spread between the clamps
  const spread = Math.round(4 * Math.sqrt(depth));
  const bias = Int32Array.from({ length: c.M }, () => (bs ? rand(-spread, spread) : rand(-5000, 5000)));
  const mult = Float32Array.from({ length: c.M }, () => Math.fround(bs ? rand(20, 60) / spread : rand(1, 1000) / 2 ** 20));
  const xz = bs ? 0 : extreme ? 255 : c.values === 'xz0' ? 0 : rand(1, 255), yz = rand(0, 255);
  const geom = geometryArray(g);
  const put = (a: ArrayBufferView) => uploaded(lib, a);
  const [px, pw, pz, ps, pb, pm] = [x, w, wz, wsum, bias, mult].map(put) as [number, number, number, number, number, number];
  const out = c.N * OH * OW * c.M;
  const run = (sums: number) => {
    const py = lib.alloc(out);
    lib.qlinearConv(px, xz, pw, pz, sums, pm, c.bias ? pb : 0, yz, py, geom);
    const y = new Uint8Array(out);
    lib.download(y, py);
    lib.free(py);
    return y;
  };
  // the bit-serial kernel on the same operands
  const runBitserial = (b: NonNullable<ConvCase['bitserial']>) => {
    const planes = put(bitPlanes(w, c.M, b.wbits, wmin, 2));
    const scratch = lib.alloc(lib.bitserialScratchBytes(geom, b.xbits));
    const py = lib.alloc(out);
    try {
      lib.qconvBitserial(px, b.xbits, planes, b.wbits, wmin, 2, pm, c.bias ? pb : 0, yz, py, scratch, geom);
      const y = new Uint8Array(out);
      lib.download(y, py);
      return y;
    } finally {
      [planes, scratch, py].forEach((p) => lib.free(p));
    }
  };
  try {
    const direct = run(0), tiled = bs ? runBitserial(bs) : run(ps);
    return {
      name: c.name,
      outputs: out,
      distinct: new Set(direct).size,
      unclamped: direct.filter((v) => v !== 0 && v !== 255).length,
      equal: Buffer.from(tiled).equals(Buffer.from(direct)),
    };
  } finally {
    [px, pw, pz, ps, pb, pm].forEach((p) => lib.free(p));
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseArgs({ options: { library: { type: 'string', default: 'cuda' }, cases: { type: 'string', default: 'all' } } });
  const lib = loadNative(values.library as NativeKind);
  const cases = CONV_CASES.filter((c) => values.cases === 'all' || (values.cases === 'bitserial') === (c.bitserial !== undefined));
  let failed = 0;
  for (const c of cases) {
    const r = checkConv(lib, c);
    if (!r.equal) failed++;
    console.log(`${r.equal ? 'ok  ' : 'FAIL'} ${r.name}: ${r.outputs} outputs, ${r.unclamped} unclamped, ${r.distinct} distinct values`);
  }
  console.log(`${lib.device}: ${failed ? `${failed} of ${cases.length} cases differ` : `all ${cases.length} cases equal the direct kernel`}`);
  process.exitCode = failed ? 1 : 0;
}
