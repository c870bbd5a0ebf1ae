// The graph interpreter: the reference backend's operators on hand-made tensors, the graph checks, and the whole
// engine on both backends that run here (the TypeScript reference, and native/dq's operators built for the host:
// the CUDA kernels' own per-element code) against onnxruntime on real CIFAR-10 images for every shipped bundle.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SampleOptions } from '../../../src/engine/engine.js';
import { GraphEngine } from '../../../src/engine/graph-engine.js';
import { hostBackend, rne } from '../../../src/engine/graph/host-backend.js';
import { Interpreter } from '../../../src/engine/graph/interpreter.js';
import { nativeBackend } from '../../../src/engine/graph/native-backend.js';
import { loadNative } from '../../../src/engine/graph/native-lib.js';
import type { HostTensor, OnnxGraph, OnnxNode } from '../../../src/engine/graph/onnx.js';
import { openInterpreted } from '../../../src/engine/graph/open-interpreted.js';
import { openOrt } from '../../../src/engine/ort-session.js';
import { preprocess } from '../../../src/preprocess/preprocess.js';
import { loadBundle } from '../../../src/repository/bundle.js';
import { cifarSample } from '../../helpers/cifar.js';
import { CONTROLLER_BUNDLE, DYNAMIC_BUNDLE, MODELS_DIR } from '../../helpers/paths.js';

const node = (opType: string, inputs: string[], outputs: string[], attributes: [string, number | number[]][] = [], domain = ''): OnnxNode =>
  ({ opType, domain, name: opType.toLowerCase(), inputs, outputs, attributes: new Map(attributes) });
const u8 = (data: number[], dims: number[]): HostTensor => ({ type: 'uint8', data: Uint8Array.from(data), dims });
const f32 = (data: number[], dims: number[] = []): HostTensor => ({ type: 'float32', data: Float32Array.from(data), dims });
const run = (n: OnnxNode, inputs: (HostTensor | null)[]) => hostBackend().run(n, inputs);

describe('reference operators', () => {
  it('round half to even, as nearbyint', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, 2.5001].map(rne)).toEqual([0, 2, 2, -0, -2, -2, 2, 3]);
  });

  it("QLinearAdd: MLAS's ratios, two fused multiply-adds, one rounding, clamped", () => {
    const add = node('QLinearAdd', ['a', 'sa', 'za', 'b', 'sb', 'zb', 'sc', 'zc'], ['y'], [], 'com.microsoft');
    // a·(0.5/0.25) + (b − 128)·(1/0.25): 3·2 + (130 − 128)·4 = 14; 200·2 + … clamps to 255; 1·2 + (0 − 128)·4 < 0 clamps to 0
    const [y] = run(add, [u8([3, 200, 1], [3]), f32([0.5]), u8([0], []), u8([130, 130, 0], [3]), f32([1]), u8([128], []), f32([0.25]), u8([0], [])]);
    expect(Array.from(y!.data as Uint8Array)).toEqual([14, 255, 0]);
  });

  it('QLinearConv (channels last): int32 accumulator plus bias, times the float32 multiplier, rounded half to even', () => {
    const conv = node('QLinearConv', ['x', 'xs', 'xz', 'w', 'ws', 'wz', 'ys', 'yz', 'b'], ['y'], [['channels_last', 1], ['kernel_shape', [1, 1]]], 'com.microsoft');
    // one pixel, two channels (5, 7), two output channels: (5·2 + 7·−1 + 2)·0.5 = 2.5 → 2 (even); (5·1 + 7·1 − 1)·0.5 = 5.5 → 6
    const w: HostTensor = { type: 'int8', data: Int8Array.from([2, -1, 1, 1]), dims: [2, 2, 1, 1] };
    const [y] = run(conv, [u8([5, 7], [1, 1, 1, 2]), f32([1]), u8([0], []), w, f32([0.5, 0.5], [2]),
      { type: 'int8', data: Int8Array.from([0, 0]), dims: [2] }, f32([1]), u8([0], []), { type: 'int32', data: Int32Array.from([2, -1]), dims: [2] }]);
    expect(Array.from(y!.data as Uint8Array)).toEqual([2, 6]);
    expect(y!.dims).toEqual([1, 1, 1, 2]);
  });

  it('an empty group (a bit-width no sample chose) stays empty through Min, Split and Concat', () => {
    const empty = u8([], [0, 2, 2, 3]);
    const [m] = run(node('Min', ['x', 'c'], ['y']), [empty, u8([7], [])]);
    expect(m!.dims).toEqual([0, 2, 2, 3]);
    const parts = run(node('Split', ['x', 's'], ['a', 'b'], [['axis', 0]]), [empty, { type: 'int64', data: BigInt64Array.from([0n, 0n]), dims: [2] }]);
    expect(parts.map((p) => p.dims[0])).toEqual([0, 0]);
    const [c] = run(node('Concat', ['a', 'b'], ['y'], [['axis', 0]]), [parts[0]!, u8([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [1, 2, 2, 3])]);
    expect(c!.dims).toEqual([1, 2, 2, 3]);
  });

  it('refuses index and size lies with a clear error', () => {
    const x = u8([1, 2, 3, 4], [2, 2]);
    expect(() => run(node('Gather', ['x', 'i'], ['y']), [x, { type: 'int64', data: BigInt64Array.from([2n]), dims: [1] }])).toThrow(/index 2 outside 0\.\.1/);
    expect(() => run(node('Split', ['x', 's'], ['a', 'b']), [x, { type: 'int64', data: BigInt64Array.from([1n, 2n]), dims: [2] }])).toThrow(/does not add up to 2/);
    expect(() => run(node('Min', ['x', 'y'], ['z']), [x, u8([1, 2, 3], [3])])).toThrow(/cannot broadcast/);
  });
});

describe('the interpreter', () => {
  const graph = (nodes: OnnxNode[]): OnnxGraph => ({ nodes, initializers: new Map([['seven', u8([7], [])]]), inputs: ['x'], outputs: ['y'] });

  it('runs nodes in order with initializers and releases nothing it returns', async () => {
    const g = graph([node('Min', ['x', 'seven'], ['m']), node('Max', ['m', 'x'], ['y'])]);
    const out = await new Interpreter(g, hostBackend()).run({ x: u8([3, 9], [2]) });
    expect(Array.from(out['y']!.data as Uint8Array)).toEqual([3, 9]);
  });

  it('refuses a graph with an operator the backend does not run, or a tensor read before it is made', () => {
    expect(() => new Interpreter(graph([node('Softmax', ['x'], ['y'])]), hostBackend(), 'g.onnx')).toThrow(/g\.onnx uses operators this engine does not run: Softmax/);
    expect(() => new Interpreter(graph([node('Min', ['x', 'later'], ['y'])]), hostBackend(), 'g.onnx')).toThrow(/reads later before it is made/);
    expect(() => new Interpreter(graph([node('Min', ['x', 'seven'], ['m'])]), hostBackend(), 'g.onnx')).toThrow(/output y is not made by a node/);
    expect(() => new Interpreter(graph([node('Min', ['x', 'seven'], ['y']), node('Max', ['x', 'seven'], ['y'])]), hostBackend(), 'g.onnx')).toThrow(/y is made more than once/);
  });

  it('refuses a run without one of its inputs', async () => {
    const i = new Interpreter(graph([node('Min', ['x', 'seven'], ['y'])]), hostBackend());
    await expect(i.run({})).rejects.toThrow(/no input x/);
  });
});

describe('the native backend (host build) on hand-made graphs', () => {
  const i64 = (xs: bigint[]): HostTensor => ({ type: 'int64', data: BigInt64Array.from(xs), dims: [xs.length] });
  const both = async (g: OnnxGraph, feeds: Record<string, HostTensor>) => {
    const [a, b] = [new Interpreter(g, hostBackend()), new Interpreter(g, nativeBackend(loadNative('host')))];
    const out = [await a.run(feeds), await b.run(feeds)];
    await b.release();
    return out.map((o) => Object.fromEntries(Object.entries(o).map(([k, t]) => [k, { dims: t.dims, data: Array.from(t.data as Uint8Array) }])));
  };

  it("a part of a split index feed gathers that part's rows, not the whole feed's", async () => {
    // Split along the batch axis makes views; the first part starts where its input does
    const g: OnnxGraph = {
      nodes: [node('Split', ['idx', 'sizes'], ['p0', 'p1'], [['axis', 0]]), node('Gather', ['x', 'p0'], ['y'], [['axis', 0]])],
      initializers: new Map([['sizes', i64([2n, 2n])]]), inputs: ['x', 'idx'], outputs: ['y'],
    };
    const [ref, native] = await both(g, { x: u8([10, 11, 12, 13], [4, 1]), idx: i64([3n, 2n, 1n, 0n]) });
    expect(ref).toEqual({ y: { dims: [2, 1], data: [13, 12] } });
    expect(native).toEqual(ref);
  });

  it('rounds half to even in QLinearConv and QLinearAdd, as the reference (ties are too rare in real images to show it)', async () => {
    const conv = node('QLinearConv', ['x', 'xs', 'xz', 'w', 'ws', 'wz', 'ys', 'yz', 'b'], ['c'], [['channels_last', 1], ['kernel_shape', [1, 1]]], 'com.microsoft');
    // conv: (5·2 + 7·−1 + 2)·0.5 = 2.5 → 2; (5·1 + 7·1 − 1)·0.5 = 5.5 → 6. add: c·0.625 + c·0.625: 2.5 → 2, 7.5 → 8
    const add = node('QLinearAdd', ['c', 'one', 'zero', 'c', 'one', 'zero', 'two', 'zero'], ['y'], [], 'com.microsoft');
    const g: OnnxGraph = {
      nodes: [conv, add],
      initializers: new Map<string, HostTensor>([
        ['xs', f32([1])], ['xz', u8([0], [])], ['w', { type: 'int8', data: Int8Array.from([2, -1, 1, 1]), dims: [2, 2, 1, 1] }],
        ['ws', f32([0.5, 0.5], [2])], ['wz', { type: 'int8', data: Int8Array.from([0, 0]), dims: [2] }], ['ys', f32([1])], ['yz', u8([0], [])],
        ['b', { type: 'int32', data: Int32Array.from([2, -1]), dims: [2] }], ['one', f32([1.25])], ['two', f32([2])], ['zero', u8([0], [])],
      ]),
      inputs: ['x'], outputs: ['c', 'y'],
    };
    const [ref, native] = await both(g, { x: u8([5, 7], [1, 1, 1, 2]) });
    expect(ref).toEqual({ c: { dims: [1, 1, 1, 2], data: [2, 6] }, y: { dims: [1, 1, 1, 2], data: [2, 8] } });
    expect(native).toEqual(ref);
  });

  it('a run that fails before its first operator does not disturb the next one', async () => {
    const g: OnnxGraph = { nodes: [node('Min', ['x', 'y'], ['z'])], initializers: new Map(), inputs: ['x', 'y'], outputs: ['z'] };
    const native = new Interpreter(g, nativeBackend(loadNative('host')));
    await expect(native.run({ x: u8([1, 2], [2]) })).rejects.toThrow(/no input y/);
    const out = await native.run({ x: u8([1, 9], [2]), y: u8([5, 5], [2]) });
    expect(Array.from(out['z']!.data as Uint8Array)).toEqual([1, 5]);
  });

  it("Gemm's C broadcast alike: one value, per column, per row", async () => {
    const a: HostTensor = f32([1, 2, 3, 4], [2, 2]), b: HostTensor = f32([1, 0, 0, 1], [2, 2]);
    for (const c of [f32([5], [1]), f32([5, 6], [2]), f32([5, 6], [2, 1])]) {
      const g: OnnxGraph = { nodes: [node('Gemm', ['a', 'b', 'c'], ['y'])], initializers: new Map([['b', b], ['c', c]]), inputs: ['a'], outputs: ['y'] };
      const [ref, native] = await both(g, { a });
      expect(native).toEqual(ref);
    }
    const per = { nodes: [node('Gemm', ['a', 'b', 'c'], ['y'])], initializers: new Map([['b', b], ['c', f32([5, 6], [2, 1])]]), inputs: ['a'], outputs: ['y'] };
    expect((await both(per, { a }))[0]).toEqual({ y: { dims: [2, 2], data: [6, 7, 9, 10] } });
  });
});

// Every shipped bundle: the static twin, the default and the one with a controller.
const STATIC_BUNDLE = join(MODELS_DIR, 'resnet20_w4', '5');
const bundles = [...new Set([STATIC_BUNDLE, DYNAMIC_BUNDLE, CONTROLLER_BUNDLE])].filter((d) => existsSync(join(d, 'manifest.json')));
const backends = { reference: openInterpreted(hostBackend), 'native (host build)': openInterpreted(() => nativeBackend(loadNative('host'))) };
const cases = bundles.flatMap((dir) => Object.keys(backends).map((b) => [b, dir] as [keyof typeof backends, string]));

describe.each(cases)('the interpreter on the %s backend equals onnxruntime on %s', (backend, dir) => {
  let ort: GraphEngine, interpreted: GraphEngine;
  let batch: Uint8Array;
  let options: SampleOptions[];

  beforeAll(async () => {
    const { manifest } = await loadBundle(dir, { verifyChecksums: true });
    ort = await GraphEngine.load(dir, manifest, openOrt({ intraOpNumThreads: 1, interOpNumThreads: 1 }));
    interpreted = await GraphEngine.load(dir, manifest, backends[backend]);
    const images = await cifarSample(3);
    batch = new Uint8Array(images.length * ort.sampleSize);
    for (const [i, img] of images.entries()) batch.set(await preprocess(img.bytes, manifest.input, { maxInputPixels: 1e6 }), i * ort.sampleSize);
    // the controller's choice, a strong knob, and every forced precision, mixed in one batch
    const c = manifest.bits.candidates;
    options = images.map((_, i) => ({ knob: i % 5 === 1 ? 3 : 0, precision: i % 5 >= 2 ? (c[(i % 5) - 2] ?? null) : null }));
  }, 120_000);
  afterAll(async () => Promise.all([ort?.close(), interpreted?.close()]));

  it('the same bits, passes and top-1 for every image, and the same logits to the bit on >= 95%', async () => {
    const [a, b] = [await ort.infer(batch, options.length, options), await interpreted.infer(batch, options.length, options)];
    let identical = 0;
    for (const [i, x] of a.samples.entries()) {
      const y = b.samples[i]!;
      expect(y.bits).toEqual(x.bits);
      expect(y.secondBits).toEqual(x.secondBits);
      expect(y.logits.indexOf(Math.max(...y.logits))).toBe(x.logits.indexOf(Math.max(...x.logits)));
      if (x.logits.every((v, k) => v === y.logits[k])) identical++;
    }
    expect(identical / a.samples.length).toBeGreaterThanOrEqual(0.95);
    // the batch really exercised several plans
    expect(new Set(a.samples.map((s) => s.bits.join())).size).toBeGreaterThan(manifest(dir).kind === 'static' ? 0 : 2);
  }, 120_000);
});

function manifest(dir: string): { kind: string } {
  return JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { kind: string };
}
