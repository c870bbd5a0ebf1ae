// Open Inference Protocol v2 (KServe / Triton) wire shapes as TypeBox schemas: validation, serialization
// and OpenAPI come from these. Parameter values are scalars only, as the spec says.
import { Type, type Static } from '@sinclair/typebox';

export const Parameters = Type.Record(Type.String(), Type.Union([Type.String(), Type.Number(), Type.Boolean()]));

export const InferInput = Type.Object({
  name: Type.String({ minLength: 1 }),
  shape: Type.Array(Type.Integer({ minimum: -1 }), { maxItems: 8 }),
  datatype: Type.String({ minLength: 1 }),
  parameters: Type.Optional(Parameters),
  data: Type.Optional(Type.Unknown()),
});

export const RequestedOutput = Type.Object({
  name: Type.String({ minLength: 1 }),
  parameters: Type.Optional(Parameters),
});

export const InferRequest = Type.Object({
  id: Type.Optional(Type.String()),
  parameters: Type.Optional(Parameters),
  inputs: Type.Array(InferInput, { minItems: 1, maxItems: 16 }),
  outputs: Type.Optional(Type.Array(RequestedOutput, { maxItems: 16 })),
});
export type InferRequest = Static<typeof InferRequest>;
export type InferInput = Static<typeof InferInput>;

export const OutputTensor = Type.Object({
  name: Type.String(),
  shape: Type.Array(Type.Integer()),
  datatype: Type.String(),
  parameters: Type.Optional(Parameters),
  data: Type.Optional(Type.Array(Type.Union([Type.Number(), Type.String()]))),
});
export type OutputTensor = Static<typeof OutputTensor>;

export const InferResponse = Type.Object({
  model_name: Type.String(),
  model_version: Type.Optional(Type.String()),
  id: Type.Optional(Type.String()),
  parameters: Type.Optional(Parameters),
  outputs: Type.Array(OutputTensor),
});
export type InferResponse = Static<typeof InferResponse>;

export const TensorMetadata = Type.Object({
  name: Type.String(),
  datatype: Type.String(),
  shape: Type.Array(Type.Integer()),
});

export const ModelMetadata = Type.Object({
  name: Type.String(),
  versions: Type.Array(Type.String()),
  platform: Type.String(),
  inputs: Type.Array(TensorMetadata),
  outputs: Type.Array(TensorMetadata),
  parameters: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
});

export const ServerMetadata = Type.Object({
  name: Type.String(),
  version: Type.String(),
  extensions: Type.Array(Type.String()),
});

export const ErrorResponse = Type.Object({ error: Type.String(), code: Type.String() });
