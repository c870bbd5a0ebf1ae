import { describe, expect, it } from 'vitest';
import { engineLayout } from '../../src/engine/engine-layout.js';
import { FakeEngine } from '../../src/engine/fake-engine.js';
import { fakeManifest } from '../../src/engine/fake-manifest.js';
import { ModelPipeline } from '../../src/pipeline/model-pipeline.js';
import type { Manifest } from '../../src/repository/manifest.js';

/** The fake manifest as a static bundle: no controller, one graph, every dynamic layer at 4 bits. */
function staticManifest(): Manifest {
  const m = fakeManifest();
  return { ...m, kind: 'static', controller: null, bits: { ...m.bits, candidates: [4] }, graph: { model: { file: 'model.onnx' } } };
}

describe('engine layout', () => {
  it('a dynamic bundle: controller order, all candidates per layer, body blocks as layer index pairs', () => {
    const l = engineLayout(fakeManifest());
    expect(l.candidates.every((c) => c.join() === '3,4,5')).toBe(true);
    expect(l.controller).not.toBeNull();
    expect(l.blocks).toEqual([
      [0, 1],
      [2, 3],
    ]);
  });

  it('a static bundle: its one bit-width on every dynamic layer, no controller needed', () => {
    const l = engineLayout(staticManifest());
    expect(l.controller).toBeNull();
    expect(l.plan(null, 2, [])).toEqual([
      [4, 4, 4, 4],
      [4, 4, 4, 4],
    ]);
  });

  it('refuses a dynamic bundle whose body blocks name other layers than its controller', () => {
    const m = fakeManifest();
    const body = { file: 'body.onnx', blocks: [['layer2.0.conv2', 'layer2.0.conv1'], ['layer3.0.conv1', 'layer3.0.conv2']] as [string, string][] };
    expect(() => engineLayout({ ...m, graph: { stem: { file: 'stem.onnx' }, body } })).toThrow(
      expect.objectContaining({ code: 'DQ_ERR_BUNDLE_INVALID', detail: expect.stringMatching(/body.blocks/) }),
    );
  });

  it('refuses candidates out of ascending order (the budget rule steps down by index)', () => {
    const m = fakeManifest();
    const broken = { ...m, controller: { ...m.controller!, candidates: [4, 3, 5] } };
    expect(() => engineLayout(broken)).toThrow(expect.objectContaining({ code: 'DQ_ERR_BUNDLE_INVALID', detail: expect.stringMatching(/ascending/) }));
  });

  it('refuses a dynamic bundle laid out as one graph', () => {
    const m = fakeManifest();
    expect(() => engineLayout({ ...m, graph: { model: { file: 'model.onnx' } } })).toThrow(expect.objectContaining({ code: 'DQ_ERR_BUNDLE_INVALID' }));
  });

  it('a static model accepts only its own precision', async () => {
    const p = new ModelPipeline(new FakeEngine(staticManifest()), {
      maxBatchSize: 4,
      maxQueueDelayMicroseconds: 0,
      maxQueueSize: 8,
      instanceCount: 1,
      retryAfterSeconds: 1,
      maxInputPixels: 1e6,
    });
    expect(() => p.checkOptions({ knob: 0, precision: 4, topK: 1, timeoutMs: 10 })).not.toThrow();
    expect(() => p.checkOptions({ knob: 0, precision: 3, topK: 1, timeoutMs: 10 })).toThrow(expect.objectContaining({ code: 'DQ_ERR_REQUEST_INVALID_PARAMETER' }));
  });
});
