// The CUDA engine's throughput and latency against batch size, per shipped bundle (issue #17; run by
// bench/gpu/run.sh on the GPU machine, where it is bundled to .device/bench/engine.mjs). Real CIFAR-10 test images,
// every sample at the controller's or the policy's own bits; the whole batch from uint8 pixels to logits.
// `--library host` runs the same script on the operators' host build, to try it on a machine without a GPU.
// With DQ_PROFILE=1 in the environment each batch size also runs once with every operator waited for and timed,
// and the time per operator type is printed (the waits distort that run's throughput: read its profile only).
//   tsx bench/gpu/engine.ts [--library cuda|host] [--batches 1,64,256,1024,4096] [--seconds 2] [--out file.json]
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { GraphEngine } from '../../src/engine/graph-engine.js';
import { opProfile } from '../../src/engine/graph/native-backend.js';
import { loadNative, type NativeKind } from '../../src/engine/graph/native-lib.js';
import { openRuntime } from '../../src/engine/runtime.js';
import { preprocess } from '../../src/preprocess/preprocess.js';
import { loadBundle } from '../../src/repository/bundle.js';
import { readTestSet } from '../../src/repository/test-set.js';

const { values } = parseArgs({
  options: {
    library: { type: 'string', default: 'cuda' },
    batches: { type: 'string', default: '1,64,256,1024,4096' },
    seconds: { type: 'string', default: '2' },
    models: { type: 'string', default: 'models' },
    data: { type: 'string', default: '.device/cifar10' },
    bundles: { type: 'string', default: 'resnet20_dq/7,resnet20_w4/5' },
    out: { type: 'string' },
  },
});
const profiling = process.env['DQ_PROFILE'] === '1';
const library = values.library as NativeKind;
const batches = values.batches.split(',').map(Number);
const seconds = Number(values.seconds);

interface Row { bundle: string; batch: number; imagesPerS: number; p50Ms: number; p99Ms: number; runs: number }
const rows: Row[] = [];
const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))] as number;

const device = loadNative(library).device;
console.error(`device: ${device}`);
const images = (await readTestSet(values.data)).slice(0, 4096);
for (const name of values.bundles.split(',')) {
  const dir = join(values.models, name);
  const { manifest } = await loadBundle(dir, { verifyChecksums: false });
  const engine = await GraphEngine.load(dir, manifest, await openRuntime({ kind: 'native', library, device: 0 }));
  await engine.warmup();
  const pixels: Uint8Array[] = [];
  for (const img of images) pixels.push(await preprocess(img.bytes as Buffer, manifest.input, { maxInputPixels: 1e6 }));
  for (const n of batches) {
    const input = new Uint8Array(n * engine.sampleSize);
    for (let i = 0; i < n; i++) input.set(pixels[i % pixels.length] as Uint8Array, i * engine.sampleSize);
    const options = Array.from({ length: n }, () => ({ knob: 0, precision: null }));
    await engine.infer(input, n, options); // warm this shape
    const times: number[] = [];
    const t0 = performance.now();
    while (performance.now() - t0 < seconds * 1000 || times.length < 3) {
      const t = performance.now();
      await engine.infer(input, n, options);
      times.push(performance.now() - t);
    }
    if (profiling) {
      opProfile.clear();
      await engine.infer(input, n, options);
      const ops = [...opProfile].sort((a, b) => b[1].ms - a[1].ms).map(([op, p]) => `${op} ${p.ms.toFixed(2)} ms/${p.calls}`);
      console.error(`profile ${name} batch ${n}: ${ops.join(', ')}`);
    }
    const total = times.reduce((a, b) => a + b, 0);
    const row = { bundle: name, batch: n, imagesPerS: (n * times.length) / (total / 1000), p50Ms: quantile(times, 0.5), p99Ms: quantile(times, 0.99), runs: times.length };
    rows.push(row);
    console.error(JSON.stringify(row));
  }
  await engine.close();
}

const result = { date: new Date().toISOString(), device, library, rows };
if (values.out) writeFileSync(values.out, JSON.stringify(result, null, 2) + '\n');
console.log('| bundle | batch | images/s | p50 ms | p99 ms |\n| --- | --- | --- | --- | --- |');
for (const r of rows) console.log(`| ${r.bundle} | ${r.batch} | ${r.imagesPerS.toFixed(0)} | ${r.p50Ms.toFixed(3)} | ${r.p99Ms.toFixed(3)} |`);
