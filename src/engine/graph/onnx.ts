// Reads an ONNX model file into plain typed objects, for the engines that run a bundle's graphs themselves
// (interpreter.ts) rather than through onnxruntime. Only what those engines use is decoded: the graph's nodes,
// initializers, inputs and outputs. The field numbers are onnx.proto's (ONNX IR version 8); protobufjs decodes
// the wire format.
import protobuf from 'protobufjs';
import { DqError } from '../../errors.js';

export type DataType = 'float32' | 'float64' | 'uint8' | 'int8' | 'int32' | 'int64';
export type TypedData = Float32Array | Float64Array | Uint8Array | Int8Array | Int32Array | BigInt64Array;

export interface HostTensor {
  readonly type: DataType;
  readonly data: TypedData;
  readonly dims: readonly number[];
}

export type AttributeValue = number | string | readonly number[] | HostTensor;

export interface OnnxNode {
  readonly opType: string;
  readonly domain: string;
  readonly name: string;
  /** Input names; '' marks an omitted optional input. */
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  readonly attributes: ReadonlyMap<string, AttributeValue>;
}

export interface OnnxGraph {
  readonly nodes: readonly OnnxNode[];
  readonly initializers: ReadonlyMap<string, HostTensor>;
  /** Graph inputs that are not initializers: what a caller feeds. */
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
}

// TensorProto.DataType
const DATA_TYPES: Readonly<Record<number, DataType>> = { 1: 'float32', 2: 'uint8', 3: 'int8', 6: 'int32', 7: 'int64', 11: 'float64' };

const root = protobuf.Root.fromJSON({
  nested: {
    ModelProto: { fields: { graph: { type: 'GraphProto', id: 7 } } },
    GraphProto: {
      fields: {
        node: { rule: 'repeated', type: 'NodeProto', id: 1 },
        initializer: { rule: 'repeated', type: 'TensorProto', id: 5 },
        input: { rule: 'repeated', type: 'ValueInfoProto', id: 11 },
        output: { rule: 'repeated', type: 'ValueInfoProto', id: 12 },
      },
    },
    NodeProto: {
      fields: {
        input: { rule: 'repeated', type: 'string', id: 1 },
        output: { rule: 'repeated', type: 'string', id: 2 },
        name: { type: 'string', id: 3 },
        opType: { type: 'string', id: 4 },
        attribute: { rule: 'repeated', type: 'AttributeProto', id: 5 },
        domain: { type: 'string', id: 7 },
      },
    },
    AttributeProto: {
      fields: {
        name: { type: 'string', id: 1 },
        f: { type: 'float', id: 2 },
        i: { type: 'int64', id: 3 },
        s: { type: 'bytes', id: 4 },
        t: { type: 'TensorProto', id: 5 },
        floats: { rule: 'repeated', type: 'float', id: 7 },
        ints: { rule: 'repeated', type: 'int64', id: 8 },
        type: { type: 'int32', id: 20 },
      },
    },
    TensorProto: {
      fields: {
        dims: { rule: 'repeated', type: 'int64', id: 1 },
        dataType: { type: 'int32', id: 2 },
        floatData: { rule: 'repeated', type: 'float', id: 4 },
        int32Data: { rule: 'repeated', type: 'int32', id: 5 },
        int64Data: { rule: 'repeated', type: 'int64', id: 7 },
        name: { type: 'string', id: 8 },
        rawData: { type: 'bytes', id: 9 },
        doubleData: { rule: 'repeated', type: 'double', id: 10 },
      },
    },
    ValueInfoProto: { fields: { name: { type: 'string', id: 1 } } },
  },
});
const Model = root.lookupType('ModelProto');

type Long = number | { toNumber(): number };
interface TensorMessage { dims: Long[]; dataType: number; floatData: number[]; int32Data: number[]; int64Data: Long[]; name: string; rawData: Uint8Array; doubleData: number[] }
interface AttributeMessage { name: string; f: number; i: Long; s: Uint8Array; t?: TensorMessage; floats: number[]; ints: Long[]; type: number }
interface NodeMessage { input: string[]; output: string[]; name: string; opType: string; attribute: AttributeMessage[]; domain: string }
interface GraphMessage { node: NodeMessage[]; initializer: TensorMessage[]; input: { name: string }[]; output: { name: string }[] }

const num = (v: Long): number => (typeof v === 'number' ? v : v.toNumber());

/** Decodes ONNX bytes; a file that is not an ONNX model with a graph is a DQ_ERR_BUNDLE_INVALID. */
export function decodeOnnx(bytes: Uint8Array, file = 'model'): OnnxGraph {
  let graph: GraphMessage | undefined;
  try {
    graph = (Model.toObject(Model.decode(bytes), { defaults: true, arrays: true }) as { graph?: GraphMessage }).graph;
  } catch (err) {
    throw new DqError('DQ_ERR_BUNDLE_INVALID', `${file} is not an ONNX model: ${(err as Error).message}`, { cause: err });
  }
  if (!graph) throw new DqError('DQ_ERR_BUNDLE_INVALID', `${file} has no graph`);
  const initializers = new Map(graph.initializer.map((t) => [t.name, tensorOf(t, file)]));
  return {
    nodes: graph.node.map((n) => ({
      opType: n.opType,
      domain: n.domain,
      name: n.name,
      inputs: n.input,
      outputs: n.output,
      attributes: new Map(n.attribute.map((a) => [a.name, attributeOf(a, file)])),
    })),
    initializers,
    inputs: graph.input.map((i) => i.name).filter((name) => !initializers.has(name)),
    outputs: graph.output.map((o) => o.name),
  };
}

function tensorOf(t: TensorMessage, file: string): HostTensor {
  const type = DATA_TYPES[t.dataType];
  if (!type) throw new DqError('DQ_ERR_BUNDLE_INVALID', `${file}: tensor ${t.name} has ONNX data type ${t.dataType}, which no engine here reads`);
  const dims = t.dims.map(num);
  const count = dims.reduce((a, b) => a * b, 1);
  const data = t.rawData.length > 0 ? fromRaw(type, t.rawData, t.name, file) : fromFields(type, t);
  if (data.length !== count) throw new DqError('DQ_ERR_BUNDLE_INVALID', `${file}: tensor ${t.name} holds ${data.length} values for dims [${dims.join(', ')}]`);
  return { type, data, dims };
}

const ARRAYS = {
  float32: Float32Array, float64: Float64Array, uint8: Uint8Array, int8: Int8Array, int32: Int32Array, int64: BigInt64Array,
} as const;

/** A zeroed array of `n` values of `type`, or a view of `buffer` as that type. */
export function newArray(type: DataType, n: number | ArrayBuffer): TypedData {
  return new ARRAYS[type](n as ArrayBuffer);
}

export const bytesPerElement = (type: DataType): number => ARRAYS[type].BYTES_PER_ELEMENT;

/** raw_data is little-endian; copied (a Buffer's slice would share its pool) so that every array is aligned. */
function fromRaw(type: DataType, raw: Uint8Array, name: string, file: string): TypedData {
  if (raw.length % bytesPerElement(type) !== 0) throw new DqError('DQ_ERR_BUNDLE_INVALID', `${file}: tensor ${name} has ${raw.length} bytes of ${type}`);
  return newArray(type, new Uint8Array(raw).buffer);
}

function fromFields(type: DataType, t: TensorMessage): TypedData {
  switch (type) {
    case 'float32': return Float32Array.from(t.floatData);
    case 'float64': return Float64Array.from(t.doubleData);
    // onnx.proto keeps 8-bit and 32-bit integers in int32_data
    case 'uint8': return Uint8Array.from(t.int32Data);
    case 'int8': return Int8Array.from(t.int32Data);
    case 'int32': return Int32Array.from(t.int32Data);
    case 'int64': return BigInt64Array.from(t.int64Data, (v) => BigInt(num(v)));
  }
}

// AttributeProto.AttributeType
function attributeOf(a: AttributeMessage, file: string): AttributeValue {
  switch (a.type) {
    case 1: return a.f;
    case 2: return num(a.i);
    case 3: return new TextDecoder().decode(a.s);
    case 4: if (a.t) return tensorOf(a.t, file); break;
    case 6: return a.floats;
    case 7: return a.ints.map(num);
  }
  throw new DqError('DQ_ERR_BUNDLE_INVALID', `${file}: attribute ${a.name} has ONNX attribute type ${a.type}, which no engine here reads`);
}
