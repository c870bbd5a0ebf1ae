// What resizing a camera photo costs (docs/api.md, Memory): libvips' decode, then our Pillow-exact resize of the
// crop window (main thread, in slices), beside sharp's own decode + resize (shrink-on-load, libvips' filter:
// faster, but not training's pixels). Median of 5 runs each, in one run.
//   npm run build && npx tsx bench/resize.ts
import { readFileSync } from 'node:fs';
import sharp from 'sharp';
import { fakeManifest } from '../src/engine/fake-manifest.js';
import { decodeRgb, fitToInput } from '../src/preprocess/preprocess.js';
import { PHOTOS_DIR } from '../test/helpers/paths.js';

const spec = fakeManifest().input;
const limits = { maxInputPixels: 25_000_000 };
const rocket = readFileSync(`${PHOTOS_DIR}/rocket.jpg`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const time = async (fn: () => Promise<unknown>) => {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
};

for (const [w, h] of [[640, 427], [4000, 3000]] as const) {
  const jpeg = await sharp(rocket).resize(w, h, { fit: 'fill' }).jpeg({ quality: 90 }).toBuffer();
  const decode: number[] = [], ours: number[] = [], libvips: number[] = [];
  for (let i = 0; i < 5; i++) {
    let img!: Awaited<ReturnType<typeof decodeRgb>>;
    decode.push(await time(async () => (img = await decodeRgb(jpeg, limits, spec))));
    ours.push(await time(() => fitToInput(img, spec, limits)));
    libvips.push(await time(() => sharp(jpeg).resize(32, 32).raw().toBuffer()));
  }
  console.log(`${w}x${h} JPEG: decode ${median(decode).toFixed(1)} ms + our resize ${median(ours).toFixed(1)} ms; sharp decode+resize ${median(libvips).toFixed(1)} ms`);
}
