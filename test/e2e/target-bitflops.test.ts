// --target-bitflops: the feedback controller holds the mean Bit-FLOPs per image at the target while the input
// mix changes (the CIFAR sample arrives class by class). Fake engine always; the real bundle when present,
// over 2,000 CIFAR-10 test images, with the accuracy compared to the calibration table's prediction.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server.js';
import { loadBundle } from '../../src/repository/bundle.js';
import { TargetController } from '../../src/pipeline/target-controller.js';
import { cifarSample } from '../helpers/cifar.js';
import { CONTROLLER_BUNDLE, CONTROLLER_VERSION, hasControllerBundle, MODELS_DIR } from '../helpers/paths.js';
import { mapConcurrent, postImage, startTestServer } from '../helpers/server.js';
import { scrape, value } from '../metrics/scrape.js';

describe('--target-bitflops (fake engine)', () => {
  let server: RunningServer;
  let target: number;

  beforeAll(async () => {
    const { fakeManifest } = await import('../../src/engine/fake-manifest.js');
    const m = fakeManifest();
    target = Math.round(0.4 * m.bitflops.min + 0.6 * m.bitflops.max);
    server = await startTestServer({ targetBitflops: target, targetWindowImages: 64 });
  });
  afterAll(async () => server?.close());

  it('holds the mean within 5% over 600 CIFAR images arriving class by class, and exports the gauges', async () => {
    const images = await cifarSample(60);
    const answers = await mapConcurrent(images, 8, (img) => postImage(server.url, img.bytes));
    expect(answers.every((a) => a.status === 200)).toBe(true);
    const mean = answers.reduce((s, a) => s + a.json.bitflops, 0) / answers.length;
    expect(Math.abs(mean / target - 1)).toBeLessThan(0.05);
    const s = await scrape(server.url);
    const model = { model: 'fake_dq', version: '1' };
    expect(value(s, 'dqserve_target_bitflops', model)).toBe(target);
    expect(value(s, 'dqserve_target_running_mean_bitflops', model)).toBeGreaterThan(0);
    expect(s.some((x) => x.name === 'dqserve_target_knob')).toBe(true);
    const stats = (await (await fetch(`${server.url}/v2/models/fake_dq/stats`)).json()) as any;
    expect(stats.model_stats[0].dqserve.target).toMatchObject({ target, knob: value(s, 'dqserve_target_knob', model) });
  });

  it('leaves requests with their own knob or precision alone (and out of the running mean)', async () => {
    const [img] = await cifarSample(1);
    const before = server.registry.get().targetState;
    const forced = await postImage(server.url, img!.bytes, 'image/jpeg', '?precision=5');
    expect(forced.json.bitflops).toBe(server.registry.get().manifest.bitflops.max);
    const own = await postImage(server.url, img!.bytes, 'image/jpeg', '?knob=0');
    expect(own.status).toBe(200);
    expect(server.registry.get().targetState).toEqual(before);
  });
});

describe.skipIf(!hasControllerBundle)('--target-bitflops (real bundle, 2,000 CIFAR-10 test images)', () => {
  let server: RunningServer;
  let calib: Array<{ knob: number; accuracy: number; mean_bitflops: number }>;
  let target: number;

  beforeAll(async () => {
    const { manifest } = await loadBundle(CONTROLLER_BUNDLE, { verifyChecksums: false });
    calib = [...(manifest.calibration ?? [])].sort((a, b) => a.knob - b.knob);
    const means = calib.map((c) => c.mean_bitflops);
    // Inside the calibrated range: 40% of the way from the cheapest calibrated mean to the costliest.
    target = Math.min(...means) + 0.4 * (Math.max(...means) - Math.min(...means));
    server = await startTestServer({ engine: 'ort', modelRepository: MODELS_DIR, model: 'resnet20_dq', targetBitflops: target });
  }, 300_000);
  afterAll(async () => server?.close());

  it('lands within 5% of a target inside the calibrated range; accuracy close to the table\'s prediction', async () => {
    expect(calib.length).toBeGreaterThanOrEqual(2);
    const images = await cifarSample(200); // class by class: the mix changes every 200 images
    const answers = await mapConcurrent(images, 16, (img) => postImage(server.url, img.bytes, 'image/jpeg', `?version=${CONTROLLER_VERSION}`));
    expect(answers.every((a) => a.status === 200)).toBe(true);
    const mean = answers.reduce((s, a) => s + a.json.bitflops, 0) / answers.length;
    const accuracy = answers.filter((a, i) => a.json.label === images[i]!.label).length / answers.length;
    // The table's prediction at the knob that, by the table, gives the target mean.
    const k = new TargetController(target, calib).inverse(target);
    const j = Math.max(1, calib.findIndex((p) => p.knob >= k));
    const [a, b] = [calib[j - 1]!, calib[j]!];
    const predicted = a.accuracy + ((k - a.knob) / (b.knob - a.knob || 1)) * (b.accuracy - a.accuracy);
    console.log(
      `target ${target.toExponential(4)}: mean ${mean.toExponential(4)} (${((mean / target - 1) * 100).toFixed(2)}%), ` +
        `accuracy ${accuracy.toFixed(4)} vs calibration ${predicted.toFixed(4)} at λ=${k.toFixed(3)} (Δ ${((accuracy - predicted) * 100).toFixed(2)} points), final λ ${server.registry.get('resnet20_dq', CONTROLLER_VERSION).targetState?.knob.toFixed(3)}`,
    );
    expect(Math.abs(mean / target - 1)).toBeLessThan(0.05);
    // 2,000 images: one standard error of an accuracy near 0.9 is ~0.7 points; allow 3 points.
    expect(Math.abs(accuracy - predicted)).toBeLessThan(0.03);
  }, 600_000);
});
