import { describe, expect, it } from 'vitest';
import { engineLayout } from '../../src/engine/engine-layout.js';
import { FakeEngine } from '../../src/engine/fake-engine.js';
import { fakeManifest } from '../../src/engine/fake-manifest.js';
import { ModelPipeline } from '../../src/pipeline/model-pipeline.js';
import type { Manifest } from '../../src/repository/manifest.js';

/** The fake manifest as a static bundle: no controller, one file per step (4 bits). */
function staticManifest(): Manifest {
  const m = fakeManifest();
  return {
    ...m,
    kind: 'static',
    controller: null,
    graph: { ...m.graph, steps: m.graph.steps.map((s) => ({ ...s, files: { '4': s.files['4'] as string } })) },
  };
}

describe('engine layout', () => {
  it('a dynamic bundle: controller order, all candidates per layer', () => {
    const l = engineLayout(fakeManifest());
    expect(l.candidates.every((c) => c.join() === '3,4,5')).toBe(true);
    expect(l.controller).not.toBeNull();
  });

  it('a static bundle: one bit-width per layer from its step file, no controller needed', () => {
    const l = engineLayout(staticManifest());
    expect(l.controller).toBeNull();
    expect(l.plan(null, 2, [])).toEqual([
      [4, 4, 4, 4],
      [4, 4, 4, 4],
    ]);
  });

  it('refuses a dynamic bundle whose step lacks a candidate file', () => {
    const m = fakeManifest();
    const broken = { ...m, graph: { ...m.graph, steps: [{ ...m.graph.steps[0]!, files: { '3': 'x.onnx' } }, ...m.graph.steps.slice(1)] } };
    expect(() => engineLayout(broken)).toThrow(expect.objectContaining({ code: 'DQ_ERR_BUNDLE_INVALID' }));
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
