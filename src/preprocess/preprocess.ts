// Encoded image -> uint8 RGB HWC at the model's size, bit for bit the evaluation transform of
// training/preprocess.py (the contract in docs/model-bundle.md, checked by the vectors in test/fixtures/preprocess):
// first frame, EXIF orientation, ICC profiles ignored, 16-bit to its high byte, grey replicated, alpha flattened
// on white, Pillow's bilinear resize of the shorter side, torchvision's centre crop. libvips decodes; the
// flatten and the resize are ours, because libvips rounds the one and filters the other differently.
// The model's graph normalises the pixels itself (/scale, -mean, /std), so they travel as bytes.
import { setImmediate as nextTurn } from 'node:timers/promises';
import { imageSize } from 'image-size';
import sharp from 'sharp';
import { DqError } from '../errors.js';
import type { Manifest } from '../repository/manifest.js';
import { resizeBilinear } from './resample.js';

export type InputSpec = Manifest['input'];

export interface PreprocessLimits {
  /** width × height above which decoding is refused (decompression bombs). */
  readonly maxInputPixels: number;
}

// Only these six decoders may run on uploads; libvips would otherwise also open SVG, PDF, FITS, matrix...
// formats a classifier has no business parsing. The block list is process-wide (sharp.block).
const ALLOWED_LOADERS = [
  'VipsForeignLoadJpegBuffer',
  'VipsForeignLoadUhdrBuffer',
  'VipsForeignLoadPngBuffer',
  'VipsForeignLoadWebpBuffer',
  'VipsForeignLoadNsgifBuffer',
  'VipsForeignLoadGifBuffer',
  'VipsForeignLoadTiffBuffer',
  'VipsForeignLoadHeifBuffer',
];
sharp.cache(false);
sharp.block({ operation: ['VipsForeignLoad'] });
sharp.unblock({ operation: ALLOWED_LOADERS });

export interface Rgb8 {
  readonly data: Buffer;
  readonly width: number;
  readonly height: number;
}

/**
 * Decodes to 8-bit RGB, 3 channels, orientation applied, alpha flattened on white. With `spec`, the header's
 * size is checked against the resize first (workingSize): a 2×12000000 PNG of 0.5 MB would take seconds to decode.
 */
export async function decodeRgb(image: Buffer, limits: PreprocessLimits, spec?: InputSpec): Promise<Rgb8> {
  if (image.length === 0) throw new DqError('DQ_ERR_REQUEST_EMPTY_BODY');
  try {
    if (spec) {
      const size = headerSize(image);
      if (size) workingSize(size.width, size.height, spec, limits);
    }
    const { data, info } = await sharp(image, { limitInputPixels: limits.maxInputPixels, failOn: 'warning', pages: 1, ignoreIcc: true })
      .rotate()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels === 4) return { data: await flattenOnWhite(data), width: info.width, height: info.height };
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`);
    return { data, width: info.width, height: info.height };
  } catch (err) {
    throw decodeError(err);
  }
}

/** (c·a + 255·(255 − a) + 127) / 255 rounded down, for every alpha a (row) and channel value c (column). */
const OVER_WHITE = (() => {
  const t = new Uint8Array(256 * 256);
  for (let a = 0; a < 256; a++) for (let c = 0; c < 256; c++) t[a * 256 + c] = Math.floor((c * a + 255 * (255 - a) + 127) / 255);
  return t;
})();
/** Pixels flattened between yields to the event loop (about a millisecond). */
const PIXELS_PER_TURN = 1 << 18;

/**
 * RGBA -> RGB over white in exact integers, as training's numpy (libvips' flatten truncates instead: checked
 * over all 65,536 pairs of c and a). A 25 Mpx image yields to the event loop between slices.
 */
export async function flattenOnWhite(rgba: Buffer): Promise<Buffer> {
  const out = Buffer.allocUnsafe((rgba.length / 4) * 3);
  for (let i = 0, o = 0; i < rgba.length; ) {
    const end = Math.min(rgba.length, i + PIXELS_PER_TURN * 4);
    for (; i < end; i += 4, o += 3) {
      const row = rgba[i + 3]! * 256;
      out[o] = OVER_WHITE[row + rgba[i]!]!;
      out[o + 1] = OVER_WHITE[row + rgba[i + 1]!]!;
      out[o + 2] = OVER_WHITE[row + rgba[i + 2]!]!;
    }
    if (i < rgba.length) await nextTurn();
  }
  return out;
}

/**
 * Width and height from the header, parsed synchronously in µs (sharp's metadata() costs a thread-pool round
 * trip, a quarter of a CIFAR image's whole preprocessing); undefined when unreadable: the decoder says why.
 */
function headerSize(image: Buffer): { width: number; height: number } | undefined {
  try {
    const { width, height, type } = imageSize(image);
    // only formats we decode: a blocked one (SVG, BMP, ...) is refused as such by the decoder, whatever its size
    return type && DECODED.has(type) && width > 0 && height > 0 ? { width, height } : undefined;
  } catch {
    return undefined;
  }
}

/** width × height as the header declares it; undefined when unreadable or not a format we decode. */
export function headerPixels(image: Buffer): number | undefined {
  const size = headerSize(image);
  return size ? size.width * size.height : undefined;
}

/** image-size's names for the formats ALLOWED_LOADERS decode. */
const DECODED = new Set(['jpg', 'png', 'webp', 'gif', 'tiff', 'avif', 'heif']);

/** Maps a sharp/libvips failure to the catalogue (the messages are libvips', checked in test/preprocess). */
export function decodeError(err: unknown): DqError {
  if (err instanceof DqError) return err;
  const message = err instanceof Error ? err.message : String(err);
  if (/pixel limit/i.test(message)) return new DqError('DQ_ERR_PREPROCESS_TOO_MANY_PIXELS', undefined, { cause: err });
  if (/unsupported image format|is blocked|not a known/i.test(message)) {
    return new DqError('DQ_ERR_PREPROCESS_UNSUPPORTED_FORMAT', undefined, { cause: err });
  }
  return new DqError('DQ_ERR_PREPROCESS_DECODE_FAILED', message.slice(0, 200), { cause: err });
}

/** torchvision's Resize(int) output size: shorter side to `s`, longer side truncated like int(s·long/short). */
export function resizedSize(width: number, height: number, s: number): [number, number] {
  if (width <= height) return [s, Math.max(1, Math.floor((s * height) / width))];
  return [Math.max(1, Math.floor((s * width) / height)), s];
}

/** torchvision's CenterCrop offsets: int(round((size - crop) / 2)), Python rounding (half to even). */
export function centerCropOffset(size: number, crop: number): number {
  const x = (size - crop) / 2;
  const f = Math.floor(x);
  const r = x - f === 0.5 ? (f % 2 === 0 ? f : f + 1) : Math.round(x);
  return Math.max(0, r);
}

/**
 * Resize and crop per the manifest, computing only the pixels the crop keeps: a 1×500000 strip "resizes" to
 * 32×16000000 in a few ms instead of materialising half a gigabyte. The resized image counts against the pixel
 * limit like the decoded one (an aspect ratio beyond limit / side² is refused). An image that already has the
 * target geometry is left untouched.
 */
export async function fitToInput(img: Rgb8, spec: InputSpec, limits: PreprocessLimits): Promise<Rgb8> {
  const [ch, cw] = spec.crop ? spec.crop.size : spec.size;
  const [w, h] = workingSize(img.width, img.height, spec, limits);
  if (w === cw && h === ch && w === img.width && h === img.height) return checkSize(img, spec);
  const window = { left: centerCropOffset(w, cw), top: centerCropOffset(h, ch), width: cw, height: ch };
  return checkSize({ data: await resizeBilinear(img.data, img.width, img.height, w, h, window), width: cw, height: ch }, spec);
}

/** The size an image is resized to before the crop, refused over the pixel limit (symmetric in w and h, so
 * EXIF orientation does not change the verdict). */
function workingSize(width: number, height: number, spec: InputSpec, limits: PreprocessLimits): [number, number] {
  const [ch, cw] = spec.crop ? spec.crop.size : spec.size;
  const side = spec.resize?.shorter_side;
  // Smaller than the crop (only possible without a resize step): stretched, as nothing else is defined.
  const [w, h] = side !== undefined && Math.min(width, height) !== side ? resizedSize(width, height, side)
    : width < cw || height < ch ? [cw, ch] : [width, height];
  if (w * h > limits.maxInputPixels) {
    throw new DqError('DQ_ERR_PREPROCESS_TOO_MANY_PIXELS', `a ${width}x${height} image resizes to ${w}x${h} for this model, over the limit of ${limits.maxInputPixels} pixels`);
  }
  return [w, h];
}

function checkSize(img: Rgb8, spec: InputSpec): Rgb8 {
  const [h, w] = spec.size;
  if (img.width !== w || img.height !== h) throw new DqError('DQ_ERR_BUNDLE_INVALID', `crop ${img.width}x${img.height} differs from input.size`);
  return img;
}

/** The model's input for one image: height × width × 3 bytes, RGB, row-major (NHWC without the N). */
export async function preprocess(image: Buffer, spec: InputSpec, limits: PreprocessLimits): Promise<Uint8Array> {
  return (await fitToInput(await decodeRgb(image, limits, spec), spec, limits)).data;
}
