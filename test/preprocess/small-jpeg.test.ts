// The in-thread decoder for small sequential JPEGs (src/preprocess/small-jpeg.ts) must give libvips' pixels, take
// only the files it is meant for, and hand every file its decoder complains about back to libvips.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { decodeRgb } from '../../src/preprocess/preprocess.js';
import { decodeSmallJpeg, SMALL_JPEG_BYTES } from '../../src/preprocess/small-jpeg.js';
import { cifarTest } from '../helpers/cifar.js';
import { FIXTURES } from '../helpers/paths.js';

const fixture = (name: string) => readFileSync(join(FIXTURES, 'preprocess', name));
const limits = { maxInputPixels: 25_000_000 };

async function libvips(image: Buffer): Promise<Buffer> {
  return sharp(image, { failOn: 'warning', pages: 1, ignoreIcc: true }).rotate().toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer();
}

describe('small JPEGs decoded in this thread', () => {
  it('equal libvips to the bit on 2,000 CIFAR-10 test images, and are all taken', async () => {
    const images = (await cifarTest()).filter((_, i) => i % 5 === 0);
    let taken = 0;
    let differing = 0;
    for (const img of images) {
      const fast = decodeSmallJpeg(img.bytes);
      if (!fast) continue;
      taken++;
      if (fast.width !== 32 || fast.height !== 32 || !fast.data.equals(await libvips(img.bytes))) differing++;
    }
    expect({ taken, differing }).toEqual({ taken: images.length, differing: 0 });
  });

  it('equal libvips on grey and 4:2:0 files of odd sizes', async () => {
    for (const name of ['grey-61x40.jpg', 'q75-420-93x61.jpg']) {
      const fast = decodeSmallJpeg(fixture(name));
      expect(fast, name).not.toBeNull();
      expect(fast!.data.equals(await libvips(fixture(name))), name).toBe(true);
    }
  });

  it('leave to libvips what they are not for: progressive, Exif orientation, large, other formats', () => {
    const big = Buffer.concat([fixture('q75-420-93x61.jpg'), Buffer.alloc(SMALL_JPEG_BYTES)]);
    for (const [name, bytes] of [
      ['progressive', fixture('progressive-70x45.jpg')],
      ['exif orientation', fixture('exif-6.jpg')],
      ['more pixels than the limit', fixture('rgb-257x129.jpg')],
      ['more bytes than the limit', big],
      ['png', fixture('rgb-20x13.png')],
      ['empty', Buffer.alloc(0)],
    ] as const) {
      expect(decodeSmallJpeg(bytes), name).toBeNull();
    }
  });

  it('hand back every file the decoder warns or fails about, so that libvips refuses it as before', async () => {
    const [img] = await cifarTest();
    const bytes = img!.bytes;
    const flipped = Buffer.from(bytes);
    for (let i = 400; i < 420; i++) flipped[i]! ^= 0x55; // inside the entropy-coded data or a table
    const truncated = bytes.subarray(0, bytes.length - 200); // "Premature end of JPEG file": a warning
    const headerOnly = bytes.subarray(0, 300);
    for (const [name, broken] of [['truncated', truncated], ['bit flips', flipped], ['header only', headerOnly]] as const) {
      expect(decodeSmallJpeg(broken), name).toBeNull();
      await expect(decodeRgb(broken, limits), name).rejects.toMatchObject({ code: 'DQ_ERR_PREPROCESS_DECODE_FAILED' });
    }
    // and the decoder is still sound after its errors
    expect(decodeSmallJpeg(bytes)?.data.equals(await libvips(bytes))).toBe(true);
  });
});
