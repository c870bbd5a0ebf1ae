// Reading ONNX files: the shipped graphs decode to what onnxruntime sees, and broken files are a bundle error.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { decodeOnnx } from '../../../src/engine/graph/onnx.js';
import { DYNAMIC_BUNDLE, MODELS_DIR } from '../../helpers/paths.js';

describe('decodeOnnx', () => {
  it("reads a shipped static graph: its feeds, outputs, operators and the classifier's float64 weights", () => {
    const g = decodeOnnx(readFileSync(join(MODELS_DIR, 'resnet20_w4', '5', 'model.onnx')));
    expect(g.inputs).toEqual(['image']);
    expect(g.outputs).toEqual(['logits']);
    expect(g.nodes.filter((n) => n.opType === 'QLinearConv' && n.domain === 'com.microsoft')).toHaveLength(20);
    const gemm = g.nodes.find((n) => n.opType === 'Gemm')!;
    const w = g.initializers.get(gemm.inputs[1]!)!;
    expect(w.type).toBe('float64');
    expect(w.dims).toEqual([10, 64]);
    expect(gemm.attributes.get('transB')).toBe(1);
  });

  it("reads a dynamic body's index feeds", () => {
    const g = decodeOnnx(readFileSync(join(DYNAMIC_BUNDLE, 'body.onnx')));
    expect(g.inputs.slice(0, 4)).toEqual(['z', 'sc', 'rows.0.3', 'split.0.3']);
    expect(g.inputs).toContain('order.0');
  });

  it('refuses bytes that are not an ONNX model, and a model without a graph', () => {
    expect(() => decodeOnnx(Buffer.from('this is not protobuf \xff\xff\xff'), 'x.onnx')).toThrow(/x\.onnx is not an ONNX model/);
    expect(() => decodeOnnx(new Uint8Array(0), 'x.onnx')).toThrow(/x\.onnx has no graph/);
    const truncated = readFileSync(join(MODELS_DIR, 'resnet20_w4', '5', 'model.onnx')).subarray(0, 5000);
    expect(() => decodeOnnx(truncated, 'x.onnx')).toThrow(expect.objectContaining({ code: 'DQ_ERR_BUNDLE_INVALID' }));
  });
});
