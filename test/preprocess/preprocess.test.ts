import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { fakeManifest } from '../../src/engine/fake-manifest.js';
import { centerCropOffset, decodeRgb, fitToInput, preprocess, resizedSize } from '../../src/preprocess/preprocess.js';
import { resizeBilinear } from '../../src/preprocess/resample.js';
import { cifarSample } from '../helpers/cifar.js';
import { PHOTOS_DIR } from '../helpers/paths.js';

const spec = fakeManifest().input;
const limits = { maxInputPixels: 25_000_000 };
const rocket = readFileSync(join(PHOTOS_DIR, 'rocket.jpg'));

describe('geometry (torchvision Resize(int) + CenterCrop)', () => {
  it('resizes the shorter side and truncates the longer', () => {
    expect(resizedSize(640, 427, 32)).toEqual([47, 32]);
    expect(resizedSize(512, 600, 256)).toEqual([256, 300]);
    expect(resizedSize(32, 32, 32)).toEqual([32, 32]);
  });
  it('rounds crop offsets half to even, like Python round()', () => {
    expect(centerCropOffset(47, 32)).toBe(8); // 7.5 -> 8
    expect(centerCropOffset(45, 32)).toBe(6); // 6.5 -> 6
    expect(centerCropOffset(32, 32)).toBe(0);
  });
});

describe('preprocess', () => {
  it('leaves a 32×32 CIFAR JPEG untouched: same pixels as a plain decode', async () => {
    const [img] = await cifarSample(1);
    const plain = await sharp(img!.bytes).raw().toBuffer();
    const rgb = await fitToInput(await decodeRgb(img!.bytes, limits), spec, limits);
    expect(rgb.width).toBe(32);
    expect(Buffer.compare(rgb.data, plain)).toBe(0);
  });

  it('hands the model the decoded RGB bytes, row by row (HWC): the graph normalises them', async () => {
    const [img] = await cifarSample(1);
    const plain = await sharp(img!.bytes).raw().toBuffer();
    const x = await preprocess(img!.bytes, spec, limits);
    expect(x.length).toBe(32 * 32 * 3);
    expect(Buffer.compare(Buffer.from(x.buffer, x.byteOffset, x.length), plain)).toBe(0);
  });

  it.each(['jpeg', 'png', 'webp', 'gif', 'tiff', 'avif'] as const)('decodes %s to the input size', async (fmt) => {
    const buf = await sharp(rocket).resize(96, 64)[fmt]().toBuffer();
    const t = await preprocess(buf, spec, limits);
    expect(t.length).toBe(3 * 32 * 32);
    expect(new Set(t).size).toBeGreaterThan(16); // real pixels, not a constant fill
  });

  it('decodes the camera photos (PNG and JPEG, ICC profiles)', async () => {
    for (const f of ['chelsea.png', 'coffee.png', 'astronaut.png', 'rocket.jpg', 'grace_hopper.jpg']) {
      const t = await preprocess(readFileSync(join(PHOTOS_DIR, f)), spec, limits);
      expect(t.length).toBe(3 * 32 * 32);
    }
  });

  it('applies EXIF orientation', async () => {
    // A 40×20 image, left half red, tagged "rotate 90° clockwise" (orientation 6): upright it is 20×40.
    const raw = Buffer.alloc(40 * 20 * 3);
    for (let y = 0; y < 20; y++) for (let x = 0; x < 20; x++) raw[(y * 40 + x) * 3] = 255;
    const tagged = await sharp(raw, { raw: { width: 40, height: 20, channels: 3 } }).jpeg().withMetadata({ orientation: 6 }).toBuffer();
    const rgb = await decodeRgb(tagged, limits);
    expect([rgb.width, rgb.height]).toEqual([20, 40]);
    // After rotating clockwise, the red (former left) half is on top.
    expect(rgb.data[(2 * 20 + 10) * 3]).toBeGreaterThan(200);
    expect(rgb.data[(37 * 20 + 10) * 3]).toBeLessThan(50);
  });

  it('flattens alpha on white and turns greyscale into 3 channels', async () => {
    const clear = await sharp({ create: { width: 8, height: 8, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } }).png().toBuffer();
    const rgb = await decodeRgb(clear, limits);
    expect([...rgb.data.subarray(0, 3)]).toEqual([255, 255, 255]);
    const grey = await sharp(rocket).greyscale().png().toBuffer();
    expect((await decodeRgb(grey, limits)).data.length).toBe(640 * 427 * 3);
  });

  it.each([[3, 6000], [6000, 3], [641, 427], [20, 13]])('computes only the crop of a %i×%i resize, with the full resize\'s pixels', async (w, h) => {
    const noise = Buffer.from(Array.from({ length: w * h * 3 }, (_, i) => (i * 2654435761) % 251));
    const [rw, rh] = resizedSize(w, h, 32);
    const full = await resizeBilinear(noise, w, h, rw, rh, { left: 0, top: 0, width: rw, height: rh });
    const left = centerCropOffset(rw, 32);
    const top = centerCropOffset(rh, 32);
    const crop = Buffer.concat(Array.from({ length: 32 }, (_, y) => full.subarray(((top + y) * rw + left) * 3, ((top + y) * rw + left + 32) * 3)));
    const rgb = await fitToInput({ data: noise, width: w, height: h }, spec, limits);
    expect([rgb.width, rgb.height]).toEqual([32, 32]);
    expect(Buffer.compare(rgb.data, crop)).toBe(0);
  });

  it('passes a dimension that keeps its size through unchanged (Pillow skips that pass; ours is exact)', async () => {
    const noise = Buffer.from(Array.from({ length: 40 * 30 * 3 }, (_, i) => (i * 2654435761) % 251));
    const same = await resizeBilinear(noise, 40, 30, 40, 30, { left: 3, top: 2, width: 32, height: 20 });
    const expected = Buffer.concat(Array.from({ length: 20 }, (_, y) => noise.subarray(((2 + y) * 40 + 3) * 3, ((2 + y) * 40 + 35) * 3)));
    expect(Buffer.compare(same, expected)).toBe(0);
  });

  it('yields to the event loop during a large resize', async () => {
    const big = Buffer.alloc(2000 * 1500 * 3, 7); // ~14 M multiply-adds: several turns of the loop
    let turns = 0;
    const tick = setInterval(() => turns++, 0);
    const out = await resizeBilinear(big, 2000, 1500, 42, 32, { left: 5, top: 0, width: 32, height: 32 });
    clearInterval(tick);
    expect(out.every((v) => v === 7)).toBe(true);
    expect(turns).toBeGreaterThan(2);
  });

  it('refuses an image whose resize would exceed the pixel limit, decoded or by its header', async () => {
    const strip = { data: Buffer.alloc(3 * 100_000 * 3), width: 3, height: 100_000 }; // -> 32×1066666
    await expect(fitToInput(strip, spec, { maxInputPixels: 1_000_000 })).rejects.toMatchObject({ code: 'DQ_ERR_PREPROCESS_TOO_MANY_PIXELS' });
    const png = await sharp({ create: { width: 2, height: 3_000_000, channels: 3, background: '#000' } }).png().toBuffer();
    await expect(preprocess(png, spec, limits)).rejects.toMatchObject({
      code: 'DQ_ERR_PREPROCESS_TOO_MANY_PIXELS',
      message: expect.stringContaining('a 2x3000000 image resizes to 32x48000000'),
    });
  });

  it('maps bad inputs to catalogue codes', async () => {
    await expect(preprocess(Buffer.alloc(0), spec, limits)).rejects.toMatchObject({ code: 'DQ_ERR_REQUEST_EMPTY_BODY' });
    await expect(preprocess(Buffer.from('hello, world'), spec, limits)).rejects.toMatchObject({ code: 'DQ_ERR_PREPROCESS_UNSUPPORTED_FORMAT' });
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>');
    await expect(preprocess(svg, spec, limits)).rejects.toMatchObject({ code: 'DQ_ERR_PREPROCESS_UNSUPPORTED_FORMAT' });
    // a blocked format is refused as such even when its header claims a size the resize could not take
    const strip = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1000000"/>');
    await expect(preprocess(strip, spec, limits)).rejects.toMatchObject({ code: 'DQ_ERR_PREPROCESS_UNSUPPORTED_FORMAT' });
    await expect(preprocess(rocket.subarray(0, rocket.length / 2), spec, limits)).rejects.toMatchObject({ code: 'DQ_ERR_PREPROCESS_DECODE_FAILED' });
    await expect(preprocess(rocket, spec, { maxInputPixels: 1000 })).rejects.toMatchObject({ code: 'DQ_ERR_PREPROCESS_TOO_MANY_PIXELS' });
  });
});
