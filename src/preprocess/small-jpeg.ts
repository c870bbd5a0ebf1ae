// Small sequential JPEGs (uploads at the model's own scale, such as CIFAR-10's 32×32) decode in this thread through
// mozjpeg compiled to WebAssembly (@jsquash/jpeg): about 0.06 ms for 32×32 against libvips' 0.55 ms, which at this
// size is nearly all pipeline set-up (docs/performance.md). It is libjpeg-turbo's decoder, as in libvips (mozjpeg)
// and in training's Pillow, so the pixels are the same (checked on the preprocessing vectors and the CIFAR-10 test
// set). Only clean decodes are kept: an image the decoder says anything about (a warning such as "Premature end of
// JPEG file", or an error) goes to libvips, which decides for it as for every other image.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
// The Emscripten factory itself: the package's decode() wrapper would fetch the .wasm file as a browser does.
import factory from '@jsquash/jpeg/codec/dec/mozjpeg_dec.js';

/** Largest image taken (128×128): the decode blocks the event loop, about 0.5 ms at this size. */
export const SMALL_JPEG_PIXELS = 128 * 128;
/** Largest file taken: the file is copied into WebAssembly memory, which never shrinks. */
export const SMALL_JPEG_BYTES = 64 * 1024;

interface Decoded {
  readonly data: Uint8ClampedArray;
  readonly width: number;
  readonly height: number;
}
interface Decoder {
  decode(data: Uint8Array, preserveOrientation: boolean): Decoded | null;
}

/** What libjpeg printed during the current decode (its first warning, or the error that stopped it). */
let messages: string[] = [];
const require = createRequire(import.meta.url);
const decoder = await (factory as unknown as (options: object) => Promise<Decoder>)({
  noInitialRun: true,
  wasmBinary: readFileSync(require.resolve('@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm')),
  print: (m: string) => messages.push(m),
  printErr: (m: string) => messages.push(m),
});

/**
 * True for a file of at most SMALL_JPEG_BYTES holding a baseline or extended sequential JPEG (SOF0/SOF1) of at
 * most SMALL_JPEG_PIXELS, with 1 or 3 components and no Exif segment before
 * its frame header (so no orientation to apply): progressive files (whose scan count is unbounded), lossless,
 * arithmetic-coded and CMYK files go to libvips.
 */
export function isSmallSequentialJpeg(b: Buffer): boolean {
  if (b.length > SMALL_JPEG_BYTES || b.length < 4 || b[0] !== 0xff || b[1] !== 0xd8) return false;
  let i = 2;
  while (i + 4 <= b.length) {
    if (b[i] !== 0xff) return false;
    const marker = b[i + 1] as number;
    if (marker === 0xff) {
      i++; // fill byte
      continue;
    }
    if (marker === 0xc0 || marker === 0xc1) {
      if (i + 9 >= b.length) return false;
      const pixels = b.readUInt16BE(i + 5) * b.readUInt16BE(i + 7); // height × width
      return pixels > 0 && pixels <= SMALL_JPEG_PIXELS && (b[i + 9] === 1 || b[i + 9] === 3);
    }
    // any other frame type, or a scan or the end before a frame; 0xc4 (DHT), 0xc8 (JPG), 0xcc (DAC) are not frames
    if ((marker >= 0xc2 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) || marker === 0xda || marker === 0xd9) return false;
    if (marker === 0xe1 && b.toString('latin1', i + 4, i + 8) === 'Exif') return false;
    i += 2 + b.readUInt16BE(i + 2);
  }
  return false;
}

/** RGB pixels of a clean decode; null for anything libvips should decode instead (see isSmallSequentialJpeg). */
export function decodeSmallJpeg(image: Buffer): { data: Buffer; width: number; height: number } | null {
  if (!isSmallSequentialJpeg(image)) return null;
  messages = [];
  let rgba: Decoded | null;
  try {
    rgba = decoder.decode(image, false);
  } catch {
    return null; // libjpeg's error: libvips reports it in the catalogue's words
  }
  const n = rgba ? rgba.width * rgba.height : 0;
  if (!rgba || messages.length > 0 || n === 0 || n > SMALL_JPEG_PIXELS || rgba.data.length !== n * 4) return null;
  const out = Buffer.allocUnsafe(n * 3);
  for (let i = 0, o = 0; o < out.length; i += 4, o += 3) {
    out[o] = rgba.data[i] as number;
    out[o + 1] = rgba.data[i + 1] as number;
    out[o + 2] = rgba.data[i + 2] as number;
  }
  return { data: out, width: rgba.width, height: rgba.height };
}
