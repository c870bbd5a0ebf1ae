"""Write the trained network as ONNX pieces (docs/model-bundle.md): stem (+ controller), one graph per
(dynamic layer, candidate bits), head. Graphs are built node by node from deploy.py's arithmetic: quantized
convs on DoReFa's exact integer levels (float Conv or ConvInteger), BN folded into a per-channel scale and bias."""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from .layers import FP_BITS
from . import deploy
from .quant import dorefa_weight

OPSET = 13
F32 = TensorProto.FLOAT


class Graph:
    def __init__(self, name: str):
        self.name, self.nodes, self.inits, self.n = name, [], [], 0

    def fresh(self, hint: str) -> str:
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, arr: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def op(self, op_type: str, inputs: List[str], hint: Optional[str] = None, out: Optional[str] = None, **attrs) -> str:
        out = out or self.fresh(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def model(self, inputs: Dict[str, list], outputs: Dict[str, list]) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, self.name,
                              [helper.make_tensor_value_info(k, F32, v) for k, v in inputs.items()],
                              [helper.make_tensor_value_info(k, F32, v) for k, v in outputs.items()],
                              self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dqserve-training")
        m.ir_version = 7  # readable by onnxruntime 1.x and by the onnx 1.12 checker
        onnx.checker.check_model(m)
        return m


KERNELS = ("float", "integer")


def conv_bn(g: Graph, x: str, conv, bn, bits: int, kernel: str = "float") -> str:
    """bn(conv(Q_b(x), Q_b(W))) with the deployment arithmetic of deploy.py, op for op. Returns the output
    name (no activation). kernel 'integer' runs exact layers as ConvInteger (uint8 x int8 -> int32);
    'float' as a float Conv on the same integer values, which is exact too and much faster in onnxruntime
    (docs/performance.md)."""
    f = deploy.fold(conv, bn, bits)
    attrs = dict(kernel_shape=list(conv.kernel_size), strides=list(conv.stride), pads=[conv.padding[0], conv.padding[1]] * 2)
    cout = conv.out_channels
    if f.clip is not None:
        x = g.op("Clip", [x, g.const(np.array(0, np.float32), "zero"), g.const(f.clip.numpy(), "clip")])
        x = g.op("Round", [g.op("Mul", [x, g.const(f.rate.numpy(), "rate")])])
    if f.mul is None:
        return g.op("Conv", [x, g.const(f.weight.numpy(), "w"), g.const(f.bias.numpy(), "b")], **attrs)
    if kernel == "integer":
        q = g.op("Cast", [x], to=TensorProto.UINT8)
        acc = g.op("Cast", [g.op("ConvInteger", [q, g.const(f.weight.numpy().astype(np.int8), "wq")], **attrs)], to=F32)
    else:
        # Round is a no-op on the exact integer sums; it stops onnxruntime's Conv+Mul fusion from folding the
        # float scale into the integer weights, which would make the accumulation inexact.
        acc = g.op("Round", [g.op("Conv", [x, g.const(f.weight.numpy(), "wq")], **attrs)])
    y = g.op("Mul", [acc, g.const(f.mul.numpy().reshape(1, cout, 1, 1), "mul")])
    return g.op("Add", [y, g.const(f.bias.numpy().reshape(1, cout, 1, 1), "bias")])


def linear(g: Graph, x: str, fc, out: Optional[str] = None) -> str:
    """A QLinear (classifier or controller layer) as QLinear's evaluation computes it: a quantized one's input
    through deploy.fake_quant op for op, its weights DoReFa's levels."""
    bits = fc.static_bits()
    w = fc.weight.detach()
    if bits < FP_BITS:
        clip, rate = deploy.clip_rate(fc.act.clip_value(), bits)
        rate = g.const(rate.numpy(), "rate")
        x = g.op("Clip", [x, g.const(np.array(0, np.float32), "zero"), g.const(clip.numpy(), "clip")])
        x = g.op("Div", [g.op("Round", [g.op("Mul", [x, rate])]), rate])
        w = dorefa_weight(w, bits)
    return g.op("Gemm", [x, g.const(w.numpy(), "w"), g.const(fc.bias.detach().numpy(), "b")], out=out, transB=1)


def block_fixed(g: Graph, x: str, block, kernel: str) -> str:
    h = g.op("Relu", [conv_bn(g, x, block.conv1, block.bn1, block.conv1.static_bits(), kernel)])
    return block_tail(g, h, x, block, block.conv2.static_bits(), kernel)


def block_tail(g: Graph, h: str, residual: str, block, bits: int, kernel: str, out: Optional[str] = None) -> str:
    y = conv_bn(g, h, block.conv2, block.bn2, bits, kernel)
    if block.shortcut is not None:
        sc_conv, sc_bn = block.shortcut[0], block.shortcut[1]
        residual = conv_bn(g, residual, sc_conv, sc_bn, sc_conv.static_bits(), kernel)
    return g.op("Relu", [g.op("Add", [y, residual])], out=out)


@torch.no_grad()
def stem_graph(model, input_size, kernel: str = "float") -> onnx.ModelProto:
    g = Graph("stem")
    x = conv_bn(g, "image", model.stem, model.stem_bn, model.stem.static_bits(), kernel)
    x = g.op("Relu", [x])
    if model.maxpool is not None:
        x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    for block in model.stages[0]:
        x = block_fixed(g, x, block, kernel)
    g.op("Identity", [x], out="features")
    outputs = {"features": ["N", None, None, None]}
    c = model.controller
    if c is not None and model.precision.mode == "dynamic":
        size = model.stem_forward(torch.zeros((1,) + tuple(input_size))).shape[-1]
        k = size // c.pool
        p = g.op("AveragePool", ["features"], kernel_shape=[k, k], strides=[k, k])
        h = g.op("Flatten", [p], axis=1)
        h = linear(g, g.op("Relu", [linear(g, h, c.fc1)]), c.fc2)
        g.op("Reshape", [h, g.const(np.array([-1, c.num_layers, c.num_candidates], np.int64), "shape")],
             out="controller_logits")
        outputs["controller_logits"] = ["N", c.num_layers, c.num_candidates]
    return g.model({"image": ["N"] + list(input_size)}, outputs)


@torch.no_grad()
def step_graph(model, block, which: str, bits: int, kernel: str = "float") -> onnx.ModelProto:
    g = Graph(f"step_{which}_b{bits}")
    if which == "conv1":
        g.op("Relu", [conv_bn(g, "x", block.conv1, block.bn1, bits, kernel)], out="y")
        return g.model({"x": ["N", None, None, None]}, {"y": ["N", None, None, None]})
    block_tail(g, "x", "residual", block, bits, kernel, out="y")
    return g.model({"x": ["N", None, None, None], "residual": ["N", None, None, None]}, {"y": ["N", None, None, None]})


@torch.no_grad()
def head_graph(model) -> onnx.ModelProto:
    g = Graph("head")
    h = g.op("Flatten", [g.op("GlobalAveragePool", ["x"])], axis=1)
    linear(g, h, model.fc, out="logits")
    return g.model({"x": ["N", None, None, None]}, {"logits": ["N", model.fc.out_features]})
