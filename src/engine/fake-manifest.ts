// A synthetic dynamic-bundle manifest for the fake engine: a tiny ResNet-shaped layer list whose
// Bit-FLOPs fields are computed by the same cost functions the server uses. It names no files.
import { bitflops, referenceBitflops, uniformPlan } from '../cost/bitflops.js';
import type { Manifest, ManifestLayer } from '../repository/manifest.js';

const CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];

export function fakeManifest(): Manifest {
  const conv = (name: string, kind: ManifestLayer['kind'], cin: number, cout: number, hw: number, bits: number | null): ManifestLayer => ({
    name,
    kind,
    op: 'conv',
    in_shape: [cin, hw, hw],
    out_shape: [cout, hw, hw],
    bits,
    macs: hw * hw * cout * cin * 9,
  });
  const layers: ManifestLayer[] = [
    conv('stem', 'fp', 3, 16, 32, null),
    conv('layer1.0.conv1', 'fixed', 16, 16, 32, 4),
    { name: 'controller.fc1', kind: 'controller', op: 'linear', bits: null, macs: 1024 * 64 },
    { name: 'controller.fc2', kind: 'controller', op: 'linear', bits: null, macs: 64 * 12 },
    conv('layer2.0.conv1', 'dynamic', 16, 32, 16, null),
    conv('layer2.0.conv2', 'dynamic', 32, 32, 16, null),
    conv('layer3.0.conv1', 'dynamic', 32, 64, 8, null),
    conv('layer3.0.conv2', 'dynamic', 64, 64, 8, null),
    { name: 'fc', kind: 'fp', op: 'linear', bits: null, macs: 64 * 10 },
  ];
  const dynamic = layers.filter((l) => l.kind === 'dynamic');
  const candidates = [3, 4, 5];
  const meanMacs = dynamic.reduce((s, l) => s + l.macs, 0) / dynamic.length;
  const fixedCost = bitflops(
    layers.filter((l) => l.kind !== 'dynamic'),
    {},
  );
  return {
    format: 'dqserve-bundle',
    format_version: 2,
    name: 'fake_dq',
    version: 1,
    kind: 'dynamic',
    classes: CLASSES,
    input: {
      channels: 3,
      color: 'RGB',
      layout: 'NHWC',
      dtype: 'uint8',
      size: [32, 32],
      scale: 255,
      mean: [0.5, 0.5, 0.5],
      std: [0.25, 0.25, 0.25],
      resize: { shorter_side: 32, interpolation: 'bilinear' },
      crop: { size: [32, 32], position: 'center' },
    },
    bits: { candidates, reference: 4, fixed: 4, first_last: 32 },
    layers,
    controller: {
      layers: dynamic.map((l) => l.name),
      candidates,
      cost: dynamic.map((l) => candidates.map((c) => (l.macs * c * c) / (meanMacs * 16))),
    },
    graph: {
      stem: { file: 'stem.onnx' },
      body: { file: 'body.onnx', blocks: [0, 2].map((i) => [dynamic[i]?.name as string, dynamic[i + 1]?.name as string] as [string, string]) },
    },
    bitflops: {
      definition: 'docs/bitflops.md',
      fixed: fixedCost,
      reference: referenceBitflops(layers, 4),
      min: bitflops(layers, uniformPlan(layers, 3)),
      max: bitflops(layers, uniformPlan(layers, 5)),
    },
    // Synthetic, not measured: a plausible knob -> mean Bit-FLOPs table (max at λ = −2, min at λ = 2; the fake
    // controller's logits lie in [−1, 1] and its cost steps are ~1), so --target-bitflops can be exercised.
    calibration: [-2, -1, 0, 1, 2].map((knob) => {
      const lo = bitflops(layers, uniformPlan(layers, 3));
      const hi = bitflops(layers, uniformPlan(layers, 5));
      return { knob, accuracy: 0.1, mean_bitflops: hi - ((knob + 2) / 4) * (hi - lo), mean_bits: 5 - (knob + 2) / 2 };
    }),
    metrics: {},
    files: {},
  };
}
