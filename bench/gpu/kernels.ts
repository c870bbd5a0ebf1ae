// Per-layer kernel time against bits (issue #17): ResNet-20's three 3×3 convolution shapes at several batch sizes,
// through QLinearConv's int8 tensor-core path, its direct kernel, and the bit-serial kernel at 1×1 and 2×2 bits
// (1-bit tensor cores, AND + popcount). Each figure is the median of timed rounds, each round as many launches as
// fit in --seconds / 5, then one wait; operands are random levels of the kernel's width (the time does not depend
// on the values). Prints a table and, with --out, writes JSON.
//   tsx bench/gpu/kernels.ts [--library cuda|host] [--batches 1,64,1024,4096] [--seconds 0.2] [--out file]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { bitPlanes, weightSums } from '../../src/engine/graph/native-backend.js';
import { loadNative, uploaded, type NativeKind, type NativeLib } from '../../src/engine/graph/native-lib.js';
import { geometryArray, withOutputSize } from '../../src/engine/graph/shapes.js';

const LAYERS = [
  { name: 'stage 1: 16→16 ch, 32×32', C: 16, H: 32, M: 16 },
  { name: 'stage 2: 32→32 ch, 16×16', C: 32, H: 16, M: 32 },
  { name: 'stage 3: 64→64 ch, 8×8', C: 64, H: 8, M: 64 },
];
const KERNELS = ['int8 tensor cores', 'int8 direct', 'bit-serial 1×1 bits', 'bit-serial 2×2 bits'] as const;

function timeIt(lib: NativeLib, seconds: number, launch: () => void): number {
  launch();
  lib.sync();
  const rounds: number[] = [];
  const until = performance.now() + seconds * 1000;
  while (rounds.length < 3 || (performance.now() < until && rounds.length < 50)) {
    const t0 = performance.now();
    let n = 0;
    do {
      launch();
      n++;
    } while (performance.now() - t0 < (seconds * 1000) / 5 / 10 && n < 1000);
    lib.sync();
    rounds.push((performance.now() - t0) / n);
  }
  rounds.sort((a, b) => a - b);
  return rounds[Math.floor(rounds.length / 2)] as number;
}

export function kernelTimes(lib: NativeLib, batches: readonly number[], seconds: number) {
  const rows: Array<{ layer: string; batch: number; kernel: string; ms: number; gmacPerS: number }> = [];
  for (const L of LAYERS) {
    for (const N of batches) {
      const g = withOutputSize({ N, C: L.C, H: L.H, W: L.H, M: L.M, KH: 3, KW: 3, SH: 1, SW: 1, PT: 1, PL: 1, PB: 1, PR: 1 });
      const geom = geometryArray(g);
      const depth = 9 * L.C, macs = N * g.OH * g.OW * L.M * depth;
      const x = lib.alloc(N * L.H * L.H * L.C), y = lib.alloc(N * g.OH * g.OW * L.M);
      const w8 = Int8Array.from({ length: L.M * depth }, (_, i) => ((i * 37) % 15) - 7);
      const w2 = Int8Array.from({ length: L.M * depth }, (_, i) => -3 + 2 * ((i * 7) % 4)), w1 = Int8Array.from({ length: L.M * depth }, (_, i) => (i % 3 ? 1 : -1));
      const put = (a: ArrayBufferView) => uploaded(lib, a);
      lib.upload(x, Uint8Array.from({ length: N * L.H * L.H * L.C }, (_, i) => i % 4)); // levels below 4: every kernel's input
      const pw8 = put(w8), pwz = put(new Int8Array(L.M)), psum = put(weightSums(w8, new Int8Array(L.M), L.M) as Int32Array);
      const pmult = put(new Float32Array(L.M).fill(0.01)), pbias = put(new Int32Array(L.M));
      const planes1 = put(bitPlanes(w1, L.M, 1, -1, 2)), planes2 = put(bitPlanes(w2, L.M, 2, -3, 2));
      const scratch = lib.alloc(lib.bitserialScratchBytes(geom, 2));
      const launches: Record<(typeof KERNELS)[number], () => void> = {
        'int8 tensor cores': () => lib.qlinearConv(x, 0, pw8, pwz, psum, pmult, pbias, 0, y, geom),
        'int8 direct': () => lib.qlinearConv(x, 0, pw8, pwz, 0, pmult, pbias, 0, y, geom),
        'bit-serial 1×1 bits': () => lib.qconvBitserial(x, 1, planes1, 1, -1, 2, pmult, pbias, 0, y, scratch, geom),
        'bit-serial 2×2 bits': () => lib.qconvBitserial(x, 2, planes2, 2, -3, 2, pmult, pbias, 0, y, scratch, geom),
      };
      for (const kernel of KERNELS) {
        const ms = timeIt(lib, seconds, launches[kernel]);
        rows.push({ layer: L.name, batch: N, kernel, ms, gmacPerS: macs / ms / 1e6 });
      }
      [x, y, pw8, pwz, psum, pmult, pbias, planes1, planes2, scratch].forEach((p) => lib.free(p));
    }
  }
  return rows;
}

if (process.argv[1]?.endsWith('kernels.ts') || process.argv[1]?.endsWith('kernels.mjs')) {
  const { values } = parseArgs({
    options: { library: { type: 'string', default: 'cuda' }, batches: { type: 'string', default: '1,64,1024,4096' }, seconds: { type: 'string', default: '0.2' }, out: { type: 'string' } },
  });
  const lib = loadNative(values.library as NativeKind);
  const rows = kernelTimes(lib, values.batches.split(',').map(Number), Number(values.seconds));
  console.log(`kernels on ${lib.device}: ms per launch (GMAC/s), and each kernel against the int8 tensor cores`);
  for (const r of rows) {
    const base = rows.find((b) => b.layer === r.layer && b.batch === r.batch && b.kernel === 'int8 tensor cores') as (typeof rows)[number];
    console.log(`kernels | ${r.layer} | batch ${r.batch} | ${r.kernel} | ${r.ms.toFixed(4)} ms | ${r.gmacPerS.toFixed(0)} GMAC/s | ${(base.ms / r.ms).toFixed(2)}× |`);
  }
  if (values.out) writeFileSync(values.out, JSON.stringify({ device: lib.device, rows }, null, 2) + '\n');
}
