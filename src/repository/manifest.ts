// The parts of manifest.json (docs/model-bundle.md) the server relies on, as a TypeBox schema.
// Unknown keys are allowed: training may add provenance without a server release.
import { Type, type Static } from '@sinclair/typebox';

/** The bundle format this server reads: 2 = int8 graphs on uint8 NHWC images (1 = float steps, no longer served). */
export const FORMAT_VERSION = 2;

const Shape = Type.Array(Type.Integer({ minimum: 0 }));
const Num = Type.Number();

export const LayerSchema = Type.Object({
  name: Type.String({ minLength: 1 }),
  kind: Type.Union([Type.Literal('fp'), Type.Literal('fixed'), Type.Literal('dynamic'), Type.Literal('controller')]),
  op: Type.String(),
  in_shape: Type.Optional(Shape),
  out_shape: Type.Optional(Shape),
  bits: Type.Union([Type.Integer({ minimum: 1, maximum: 32 }), Type.Null()]),
  macs: Type.Number({ minimum: 0 }),
});

const File = Type.Object({ file: Type.String({ minLength: 1 }) });

/** A static bundle is one graph; a dynamic one a stem (with the controller) and a body fed the bit plan. */
export const GraphSchema = Type.Union([
  Type.Object({ model: File }),
  Type.Object({
    stem: File,
    body: Type.Object({
      file: Type.String({ minLength: 1 }),
      /** The body's dynamic blocks in order: [conv1 layer, conv2 layer] (docs/model-bundle.md, "body.onnx"). */
      blocks: Type.Array(Type.Tuple([Type.String({ minLength: 1 }), Type.String({ minLength: 1 })]), { minItems: 1 }),
    }),
  }),
]);

export const ManifestSchema = Type.Object({
  format: Type.Literal('dqserve-bundle'),
  format_version: Type.Literal(FORMAT_VERSION),
  name: Type.String({ minLength: 1 }),
  version: Type.Integer({ minimum: 1 }),
  created: Type.Optional(Type.String()),
  kind: Type.Union([Type.Literal('dynamic'), Type.Literal('static')]),
  classes: Type.Array(Type.String(), { minItems: 1 }),
  input: Type.Object({
    channels: Type.Literal(3),
    color: Type.Literal('RGB'),
    layout: Type.Literal('NHWC'),
    dtype: Type.Literal('uint8'),
    size: Type.Tuple([Type.Integer({ minimum: 1 }), Type.Integer({ minimum: 1 })]),
    scale: Type.Number({ exclusiveMinimum: 0 }),
    mean: Type.Tuple([Num, Num, Num]),
    std: Type.Tuple([Num, Num, Num]),
    resize: Type.Union([
      // Pillow's BILINEAR is the one filter the server reproduces exactly (src/preprocess/resample.ts)
      Type.Object({ shorter_side: Type.Integer({ minimum: 1 }), interpolation: Type.Literal('bilinear') }),
      Type.Null(),
    ]),
    crop: Type.Union([
      Type.Object({
        size: Type.Tuple([Type.Integer({ minimum: 1 }), Type.Integer({ minimum: 1 })]),
        position: Type.Literal('center'),
      }),
      Type.Null(),
    ]),
  }),
  bits: Type.Object({
    candidates: Type.Array(Type.Integer({ minimum: 1, maximum: 32 }), { minItems: 1 }),
    reference: Type.Integer({ minimum: 1, maximum: 32 }),
    fixed: Type.Optional(Type.Union([Type.Integer(), Type.Null()])),
    first_last: Type.Optional(Type.Integer()),
    controller: Type.Optional(Type.Union([Type.Integer(), Type.Null()])),
  }),
  layers: Type.Array(LayerSchema, { minItems: 1 }),
  controller: Type.Optional(
    Type.Union([
      Type.Object({
        layers: Type.Array(Type.String()),
        candidates: Type.Array(Type.Integer()),
        cost: Type.Array(Type.Array(Num)),
      }),
      Type.Null(),
    ]),
  ),
  /**
   * A second instance-aware policy beside the controller (dynamic bundles; docs/model-bundle.md "Gated second
   * pass"): pass 1 at `first_bits` (null: the controller's plan); images whose top-1 softmax is under `threshold`
   * run the body again at `second_bits` from the same stem outputs, and pass 2's logits answer.
   */
  policy: Type.Optional(
    Type.Union([
      Type.Object({
        kind: Type.Literal('gated'),
        first_bits: Type.Union([Type.Integer({ minimum: 1, maximum: 32 }), Type.Null()]),
        second_bits: Type.Integer({ minimum: 1, maximum: 32 }),
        threshold: Type.Number({ exclusiveMinimum: 0, maximum: 1 }),
      }),
      Type.Null(),
    ]),
  ),
  graph: GraphSchema,
  bitflops: Type.Object({
    definition: Type.Optional(Type.String()),
    fixed: Num,
    reference: Num,
    min: Num,
    max: Num,
  }),
  calibration: Type.Optional(
    Type.Array(
      Type.Object({ knob: Num, accuracy: Num, mean_bitflops: Num, mean_bits: Num }, { additionalProperties: true }),
    ),
  ),
  metrics: Type.Optional(Type.Object({ top1: Type.Optional(Num) }, { additionalProperties: true })),
  files: Type.Record(Type.String(), Type.String({ pattern: '^[0-9a-f]{64}$' })),
});

export type Manifest = Static<typeof ManifestSchema>;
export type ManifestLayer = Static<typeof LayerSchema>;
export type ManifestGraph = Static<typeof GraphSchema>;
export type ManifestPolicy = NonNullable<Manifest['policy']>;

/** The ONNX files a manifest's graph names. */
export function graphFiles(graph: ManifestGraph): string[] {
  return 'model' in graph ? [graph.model.file] : [graph.stem.file, graph.body.file];
}
