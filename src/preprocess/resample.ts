// Pillow's BILINEAR resize of 8-bit RGB, reproduced bit for bit (the evaluation transform, training/preprocess.py,
// resizes with Pillow): a triangle filter widened by the scale when shrinking, coefficients in double then rounded
// to 22-bit fixed point, a horizontal pass into 8-bit rows, then a vertical pass. libvips' `linear` kernel is a
// different filter (it shrinks by boxes first), so it cannot match; this runs in O(taps) per output pixel.
//
// Only the pixels of `window` (the centre crop) are computed: each output pixel depends on its own row and
// column of coefficients alone, so the values equal those of the full resize. A 12 Mpx photo still costs ~55 M
// multiply-adds (~70 ms), so the horizontal pass yields to the event loop every ~1 ms of work.

import { setImmediate as nextTurn } from 'node:timers/promises';

const PRECISION_BITS = 32 - 8 - 2;
const ROUND = 1 << (PRECISION_BITS - 1);
const SATURATE = (1 << PRECISION_BITS) * 256;
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
    const xx = start + i;
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let sum = 0;
    for (let x = 0; x < xmax; x++) {
      const t = Math.abs((x + xmin - center + 0.5) * ss);
      k[x] = t < 1 ? 1 - t : 0;
      sum += k[x]!;
    }
    for (let x = 0; x < xmax; x++) {
      const w = sum !== 0 ? k[x]! / sum : k[x]!;
      weights[i * ksize + x] = Math.trunc(w < 0 ? -0.5 + w * (1 << PRECISION_BITS) : 0.5 + w * (1 << PRECISION_BITS));
    }
    first[i] = xmin;
    count[i] = xmax;
  }
  return { first, count, ksize, weights };
}

function clip8(v: number): number {
  if (v >= SATURATE) return 255;
  if (v <= 0) return 0;
  return v >> PRECISION_BITS;
}

/**
 * `src` (width × height × 3 bytes, row-major RGB) resized to outWidth × outHeight, returning only `window`
 * (window.width × window.height × 3 bytes).
 */
export async function resizeBilinear(src: Uint8Array, width: number, height: number, outWidth: number, outHeight: number, window: Window): Promise<Buffer> {
  const out = Buffer.alloc(window.width * window.height * 3);
  const h = outWidth !== width ? coefficients(width, outWidth, window.left, window.width) : null;
  const v = outHeight !== height ? coefficients(height, outHeight, window.top, window.height) : null;

  // Source rows the window's output rows read (all of them for an unchanged height).
  const rowFirst = v ? v.first[0]! : window.top;
  const rowEnd = v ? v.first[window.height - 1]! + v.count[window.height - 1]! : window.top + window.height;

  // Horizontal pass into 8-bit rows [rowFirst, rowEnd), window columns only (Pillow rounds between passes).
  let rows: Uint8Array = src;
  let rowStride = width * 3;
  let colOffset = window.left;
  let rowOffset = 0;
  if (h) {
    rowStride = window.width * 3;
    rows = new Uint8Array((rowEnd - rowFirst) * rowStride);
    const workPerRow = window.width * h.ksize * 3;
    let work = 0;
    for (let y = rowFirst; y < rowEnd; y++) {
      if ((work += workPerRow) > WORK_PER_TURN) {
        work = 0;
        await nextTurn();
      }
      const inRow = y * width * 3;
      const outRow = (y - rowFirst) * rowStride;
      for (let i = 0; i < window.width; i++) {
        const x0 = h.first[i]!;
        const n = h.count[i]!;
        const kOff = i * h.ksize;
        let r = ROUND, g = ROUND, b = ROUND;
        for (let x = 0; x < n; x++) {
          const w = h.weights[kOff + x]!;
          const p = inRow + (x0 + x) * 3;
          r += src[p]! * w;
          g += src[p + 1]! * w;
          b += src[p + 2]! * w;
        }
        const o = outRow + i * 3;
        rows[o] = clip8(r);
        rows[o + 1] = clip8(g);
        rows[o + 2] = clip8(b);
      }
    }
    colOffset = 0;
    rowOffset = rowFirst;
  }

  // Vertical pass (or a copy of the window's rows when the height is unchanged).
  for (let j = 0; j < window.height; j++) {
    const yy = window.top + j;
    const outRow = j * window.width * 3;
    if (!v) {
      const start = (yy - rowOffset) * rowStride + colOffset * 3;
      out.set(rows.subarray(start, start + window.width * 3), outRow);
      continue;
    }
    const y0 = v.first[j]!;
    const n = v.count[j]!;
    const kOff = j * v.ksize;
    for (let i = 0; i < window.width * 3; i++) {
      let s = ROUND;
      for (let y = 0; y < n; y++) s += rows[(y0 + y - rowOffset) * rowStride + colOffset * 3 + i]! * v.weights[kOff + y]!;
      out[outRow + i] = clip8(s);
    }
  }
  return out;
}
