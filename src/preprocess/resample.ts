// Pillow's BILINEAR resize of 8-bit RGB, reproduced bit for bit (the evaluation transform, training/preprocess.py,
// resizes with Pillow): a triangle filter widened by the scale when shrinking, coefficients in double then rounded
// to 22-bit fixed point, a horizontal pass into 8-bit rows, then a vertical pass. libvips' `linear` kernel is a
// different filter (it shrinks by boxes first), so it cannot match; this runs in O(taps) per output pixel.
//
// Only the pixels of `window` (the centre crop) are computed: each output pixel depends on its own row and
// column of coefficients alone, so the values equal those of the full resize. A 12 Mpx photo still costs ~55 M
// multiply-adds (~80 ms here: bench/resize.ts), so the horizontal pass yields to the event loop every ~1 ms of
// work. Pillow skips a pass whose size does not change; running it is exact too (its weights are 1 and 0), so
// both always run.

import { setImmediate as nextTurn } from 'node:timers/promises';

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 1 << PRECISION_BITS;
const ROUND = 1 << (PRECISION_BITS - 1);
/** Multiply-adds between yields to the event loop (about a millisecond). */
const WORK_PER_TURN = 1 << 20;

export interface Window {
  readonly left: number;
  readonly top: number;
  readonly width: number;
  readonly height: number;
}

/** For output positions [start, start + n): first input index, tap count, and `ksize` fixed-point weights. */
interface Coefficients {
  readonly first: Int32Array;
  readonly count: Int32Array;
  readonly ksize: number;
  readonly weights: Int32Array;
}

function coefficients(inSize: number, outSize: number, start: number, n: number): Coefficients {
  const scale = inSize / outSize;
  const filterScale = Math.max(1, scale);
  const support = filterScale; // the triangle's support is 1, widened by the scale
  const ss = 1 / filterScale; // Pillow multiplies by the reciprocal: dividing can differ in the last bit
  const ksize = Math.ceil(support) * 2 + 1;
  const first = new Int32Array(n);
  const count = new Int32Array(n);
  const weights = new Int32Array(n * ksize);
  const k = new Float64Array(ksize);
  for (let i = 0; i < n; i++) {
    const center = (start + i + 0.5) * scale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const taps = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let sum = 0;
    for (let x = 0; x < taps; x++) {
      k[x] = Math.max(0, 1 - Math.abs((x + xmin - center + 0.5) * ss));
      sum += k[x]!;
    }
    // The triangle is never negative and always covers a tap, so sum > 0 and Pillow's rounding is half up.
    for (let x = 0; x < taps; x++) weights[i * ksize + x] = Math.trunc(0.5 + (k[x]! / sum) * ONE);
    first[i] = xmin;
    count[i] = taps;
  }
  return { first, count, ksize, weights };
}

/** The accumulator back to 8 bits (never negative here: the weights are not). */
const clip8 = (v: number): number => Math.min(255, v >> PRECISION_BITS);

/**
 * `src` (width × height × 3 bytes, row-major RGB) resized to outWidth × outHeight, returning only `window`
 * (window.width × window.height × 3 bytes).
 */
export async function resizeBilinear(src: Uint8Array, width: number, height: number, outWidth: number, outHeight: number, window: Window): Promise<Buffer> {
  const h = coefficients(width, outWidth, window.left, window.width);
  const v = coefficients(height, outHeight, window.top, window.height);
  // Horizontal pass into 8-bit rows (Pillow rounds between passes), only the source rows the window reads.
  const rowFirst = v.first[0]!;
  const rowEnd = v.first[window.height - 1]! + v.count[window.height - 1]!;
  const stride = window.width * 3;
  const rows = new Uint8Array((rowEnd - rowFirst) * stride);
  let work = 0;
  for (let y = rowFirst; y < rowEnd; y++) {
    if ((work += stride * h.ksize) > WORK_PER_TURN) {
      work = 0;
      await nextTurn();
    }
    const inRow = y * width * 3;
    const outRow = (y - rowFirst) * stride;
    for (let i = 0; i < window.width; i++) {
      const x0 = h.first[i]!;
      const taps = h.count[i]!;
      const kOff = i * h.ksize;
      let r = ROUND, g = ROUND, b = ROUND;
      for (let x = 0; x < taps; x++) {
        const w = h.weights[kOff + x]!;
        const p = inRow + (x0 + x) * 3;
        r += src[p]! * w;
        g += src[p + 1]! * w;
        b += src[p + 2]! * w;
      }
      rows[outRow + i * 3] = clip8(r);
      rows[outRow + i * 3 + 1] = clip8(g);
      rows[outRow + i * 3 + 2] = clip8(b);
    }
  }
  // Vertical pass.
  const out = Buffer.alloc(window.height * stride);
  for (let j = 0; j < window.height; j++) {
    const y0 = v.first[j]! - rowFirst;
    const taps = v.count[j]!;
    const kOff = j * v.ksize;
    for (let i = 0; i < stride; i++) {
      let s = ROUND;
      for (let y = 0; y < taps; y++) s += rows[(y0 + y) * stride + i]! * v.weights[kOff + y]!;
      out[j * stride + i] = clip8(s);
    }
  }
  return out;
}
