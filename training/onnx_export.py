"""Write an int8.Net as ONNX (bundle format 2, docs/model-bundle.md): NHWC uint8 tensors between layers,
com.microsoft QLinearConv (channels_last) and QLinearAdd, each op the one int8.py emulates.

A static net is one graph, image -> logits. A dynamic net is two: `stem` (image -> the last fixed block's add
operands + controller logits) and `body` (those operands + index tensors -> logits), because the server picks
each sample's bits from the controller logits between the two. In the body, each dynamic block runs per group
of samples that chose the same (conv1, conv2) bits: Gather(rows) -> levels -> conv1 requantized to conv2's bits;
conv2 per conv2 bit-width on the concatenated groups; one Gather puts the batch back in order.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from . import int8
from .int8 import Z_ZERO, Block, Dense, Net, QConv

OPSET = 13
MS = "com.microsoft"
U8, F32, I64 = TensorProto.UINT8, TensorProto.FLOAT, TensorProto.INT64


class Graph:
    def __init__(self, name: str):
        self.name, self.nodes, self.inits, self.n = name, [], [], 0
        self.inputs: List = []
        self.consts: Dict[Tuple, str] = {}

    def fresh(self, hint: str) -> str:
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, arr: np.ndarray, hint: str) -> str:
        arr = np.array(arr, order="C")  # (ascontiguousarray would turn a scalar into shape (1,))
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self.consts:  # scalars repeat a lot (scales, zero points, clamps)
            name = self.fresh(hint)
            self.inits.append(numpy_helper.from_array(arr, name))
            self.consts[key] = name
        return self.consts[key]

    def scalar(self, value: float) -> str:
        return self.const(np.array(value, np.float32), "s")

    def u8(self, value: int) -> str:
        return self.const(np.array(value, np.uint8), "u8")

    def op(self, op_type: str, inputs: List[str], hint: Optional[str] = None, out: Optional[str] = None,
           domain: Optional[str] = None, **attrs) -> str:
        out = out or self.fresh(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], domain=domain, **attrs))
        return out

    def rename(self, old: str, new: str) -> str:
        """Give a tensor its public name (an output): cheaper than an Identity, which copies."""
        for n in self.nodes:
            n.input[:] = [new if i == old else i for i in n.input]
            n.output[:] = [new if o == old else o for o in n.output]
        return new

    def input(self, name: str, dtype, shape) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, dtype, shape))
        return name

    def model(self, outputs: Dict[str, Tuple[int, list]]) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, self.name, self.inputs,
                              [helper.make_tensor_value_info(k, t, s) for k, (t, s) in outputs.items()], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS, 1)],
                              producer_name="dqserve-training")
        m.ir_version = 7  # readable by onnxruntime 1.x and by the onnx 1.12 checker
        onnx.checker.check_model(m)
        return m

    # -- the integer ops (int8.py's arithmetic, op for op) --------------------------------------------
    def qconv(self, a: str, q: QConv, out_scale: float, zero: int) -> str:
        """int8.qconv: x and y scales 1, the per-channel multiplier M as the weight scale."""
        k = q.m.shape[2]
        return self.op("QLinearConv", [
            a, self.scalar(1.0), self.u8(0),
            self.const(q.m.numpy().astype(np.int8), "w"), self.const(q.multiplier(out_scale).numpy(), "m"),
            self.const(np.zeros(q.m.shape[0], np.int8), "wz"),
            self.scalar(1.0), self.u8(zero), self.const(q.int_bias().numpy(), "b")],
            hint="conv", domain=MS, channels_last=1, kernel_shape=[k, k], strides=[q.stride] * 2, pads=[q.pad] * 4)

    def qadd(self, a: str, sa: float, za: int, b: str, sb: float, zb: int, sc: float) -> str:
        return self.op("QLinearAdd", [a, self.scalar(sa), self.u8(za), b, self.scalar(sb), self.u8(zb),
                                      self.scalar(sc), self.u8(0)], hint="add", domain=MS)

    def clamp(self, y: str, bits: int) -> str:
        return self.op("Min", [y, self.u8(int8.levels(bits))], hint="levels")

    def levels(self, z: str, sc: str, prev: "Operands", q: QConv) -> str:
        """The next conv's input levels straight from the residual add's operands (int8._levels_from_add)."""
        return self.clamp(self.qadd(z, prev.s_z, Z_ZERO, sc, prev.s_sc, prev.z_sc, float(q.step)), q.bits)

    def dense(self, x: str, d: Dense, out: Optional[str] = None, double: bool = False) -> str:
        """int8.Dense: fake-quantized input for an 8-bit layer; `double` sums in float64 (Dense.__call__)."""
        if d.bits is not None:
            rate = self.const(int8.f32(int8.levels(d.bits) / d.clip).numpy(), "rate")
            x = self.op("Clip", [x, self.scalar(0.0), self.const(int8.f32(d.clip).numpy(), "clip")])
            x = self.op("Div", [self.op("Round", [self.op("Mul", [x, rate])]), rate])
        if not double:
            return self.op("Gemm", [x, self.const(d.weight.numpy(), "w"), self.const(d.bias.numpy(), "b")], out=out, transB=1)
        w, b = (self.const(v.double().numpy(), hint) for v, hint in ((d.weight, "w"), (d.bias, "b")))
        y = self.op("Gemm", [self.op("Cast", [x], to=TensorProto.DOUBLE), w, b], transB=1)
        return self.op("Cast", [y], to=F32, out=out)


class Operands:
    """A residual add's two operands (NHWC uint8) and their quantization: z (zero point Z_ZERO) and sc."""

    def __init__(self, z: str, sc: str, s_z: float, s_sc: float, z_sc: int):
        self.z, self.sc, self.s_z, self.s_sc, self.z_sc = z, sc, s_z, s_sc, z_sc

    def output(self, g: Graph, s_out: float) -> str:
        return g.qadd(self.z, self.s_z, Z_ZERO, self.sc, self.s_sc, self.z_sc, s_out)


def _stem(g: Graph, net: Net, image: str) -> Tuple[str, str, Optional[str], float]:
    """uint8 NHWC image -> normalised float NCHW -> float stem conv -> the first block's inputs (NHWC uint8):
    residual (scale s_stem), conv1 levels, shortcut levels (or None)."""
    # NCHW first: onnxruntime broadcasts a per-channel constant over a last axis of 3 slowly (measured 4x)
    x = g.op("Cast", [g.op("Transpose", [image], perm=[0, 3, 1, 2])], to=F32)
    chan = lambda v, hint: g.const(np.array(v, np.float32).reshape(1, -1, 1, 1), hint)  # noqa: E731
    x = g.op("Div", [g.op("Sub", [g.op("Div", [x, g.scalar(255.0)]), chan(net.mean, "mean")]), chan(net.std, "std")])
    k = net.stem_weight.shape[2]
    x = g.op("Conv", [x, g.const(net.stem_weight.numpy(), "w"), g.const(net.stem_bias.numpy(), "b")],
             kernel_shape=[k, k], strides=[net.stem_stride] * 2, pads=[net.stem_pad] * 4)
    x = g.op("Relu", [x])
    if net.maxpool:
        x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])

    def q(scale: float, bits: Optional[int]) -> str:
        y = g.op("QuantizeLinear", [x, g.scalar(scale), g.u8(0)])
        if bits is not None:
            y = g.clamp(y, bits)
        return g.op("Transpose", [y], perm=[0, 2, 3, 1])

    first = net.blocks[0]
    c1 = first.conv1.only
    a_sc = None
    if first.shortcut is not None:
        a_sc = q(float(first.shortcut.only.step), first.shortcut.only.bits)
    return q(net.s_stem, None), q(float(c1.step), c1.bits), a_sc, net.s_stem


def _fixed_blocks(g: Graph, net: Net, blocks: Sequence[Block], r: str, s_r: float, a1: str, a_sc: Optional[str]) -> Operands:
    """Blocks whose bits never vary, on the whole batch. Returns the last block's add operands."""
    for i, blk in enumerate(blocks):
        c1, c2 = blk.conv1.only, blk.conv2.only
        h = g.clamp(g.qconv(a1, c1, float(c2.step), 0), c2.bits)
        z = g.qconv(h, c2, blk.s_z, Z_ZERO)
        if blk.shortcut is None:
            ops = Operands(z, r, blk.s_z, s_r, 0)
        else:
            ops = Operands(z, g.qconv(a_sc, blk.shortcut.only, blk.s_sc, Z_ZERO), blk.s_z, blk.s_sc, Z_ZERO)
        if i + 1 < len(blocks):
            nxt = blocks[i + 1]
            r, s_r = ops.output(g, blk.s_out), blk.s_out
            a1 = g.levels(ops.z, ops.sc, ops, nxt.conv1.only)
            a_sc = g.levels(ops.z, ops.sc, ops, nxt.shortcut.only) if nxt.shortcut is not None else None
    return ops


def _controller(g: Graph, net: Net, features: str, scale: float, size: int) -> str:
    """Average the integer features over pool x pool cells (exact: sums of integers, divided once), scale,
    then the float MLP. NCHW for AveragePool (a reduction over NHWC measured 3x slower)."""
    c = net.controller
    k = size // c.pool
    x = g.op("Cast", [g.op("Transpose", [features], perm=[0, 3, 1, 2])], to=F32)
    x = g.op("Flatten", [g.op("AveragePool", [x], kernel_shape=[k, k], strides=[k, k])], axis=1)
    x = g.op("Mul", [x, g.scalar(float(int8.f32(scale)))])
    h = g.op("Relu", [g.dense(x, c.fc1)])
    y = g.dense(h, c.fc2)
    return g.op("Reshape", [y, g.const(np.array([-1, c.num_layers, c.num_candidates], np.int64), "shape")],
                out="controller_logits")


def _head(g: Graph, net: Net, r: str, scale: float, size: int) -> str:
    x = g.op("ReduceSum", [g.op("Cast", [r], to=F32), g.const(np.array([1, 2], np.int64), "axes")], keepdims=0)
    x = g.op("Mul", [x, g.scalar(float(int8.f32(scale / (size * size))))])
    return g.dense(x, net.fc, out="logits", double=True)


def _sizes(net: Net, input_size: int) -> List[int]:
    """Spatial size after the stem and after each block."""
    s = (input_size + 2 * net.stem_pad - net.stem_weight.shape[2]) // net.stem_stride + 1
    if net.maxpool:
        s = (s + 2 - 3) // 2 + 1
    out = [s]
    for blk in net.blocks:
        q = blk.conv1.only
        s = (s + 2 * q.pad - q.m.shape[2]) // q.stride + 1
        out.append(s)
    return out


def _image_input(g: Graph, size: Sequence[int]) -> str:
    return g.input("image", U8, ["N", size[0], size[1], 3])


@torch.no_grad()
def static_graph(net: Net, size: Sequence[int]) -> onnx.ModelProto:
    """One graph, image (uint8 NHWC) -> logits, every layer at its one bit-width."""
    g = Graph("dqserve_static")
    r, a1, a_sc, s_r = _stem(g, net, _image_input(g, size))
    ops = _fixed_blocks(g, net, net.blocks, r, s_r, a1, a_sc)
    last = net.blocks[-1]
    _head(g, net, ops.output(g, last.s_out), last.s_out, _sizes(net, size[0])[-1])
    return g.model({"logits": (F32, ["N", net.fc.weight.shape[0]])})


@torch.no_grad()
def stem_graph(net: Net, size: Sequence[int]) -> onnx.ModelProto:
    """image -> z, sc (the last fixed block's add operands) and controller_logits (unless the net has no
    controller: a gated bundle whose pass 1 has fixed bits)."""
    g = Graph("dqserve_stem")
    r, a1, a_sc, s_r = _stem(g, net, _image_input(g, size))
    fixed = net.blocks[:net.fixed_blocks]
    ops = _fixed_blocks(g, net, fixed, r, s_r, a1, a_sc)
    last = fixed[-1]
    outputs = {"z": (U8, ["N", None, None, None]), "sc": (U8, ["N", None, None, None])}
    c = net.controller
    if c is not None:
        _controller(g, net, ops.output(g, last.s_out), last.s_out, _sizes(net, size[0])[net.fixed_blocks])
        outputs["controller_logits"] = (F32, ["N", c.num_layers, c.num_candidates])
    g.rename(ops.z, "z")
    g.rename(ops.sc, "sc")
    return g.model(outputs)


def rows_input(block: int, b1: int) -> str:
    return f"rows.{block}.{b1}"


def split_input(block: int, b1: int) -> str:
    return f"split.{block}.{b1}"


def order_input(block: int) -> str:
    return f"order.{block}"


@torch.no_grad()
def body_graph(net: Net, size: Sequence[int]) -> onnx.ModelProto:
    """z, sc + per dynamic block j and conv1 bit-width b1: `rows.j.b1` (the batch rows whose conv1 chose b1, ordered
    by their conv2 bits, then by row), `split.j.b1` (how many of them chose each conv2 bit-width), and `order.j`
    (each batch row's position in the concatenation for b2 in candidates, for b1 in candidates) -> logits.
    Per block: levels per b1 group, conv1 per (b1, b2) requantized to b2's levels, conv2 per b2 group, one Gather
    back to batch order (fewer, larger nodes: onnxruntime spends ~5 us per node, empty or not)."""
    g = Graph("dqserve_body")
    last = net.blocks[net.fixed_blocks - 1]
    s_last_sc, z_last_sc = int8._sc_quant(net, net.fixed_blocks - 1)
    ops = Operands(g.input("z", U8, ["N", None, None, None]), g.input("sc", U8, ["N", None, None, None]),
                   last.s_z, s_last_sc, z_last_sc)
    s_prev_out = last.s_out
    cands = net.candidates
    for j, blk in enumerate(net.blocks[net.fixed_blocks:]):
        a_sc = g.levels(ops.z, ops.sc, ops, blk.shortcut.only) if blk.shortcut is not None else None
        h_parts: Dict[int, List[str]] = {b2: [] for b2 in cands}
        for b1 in cands:
            rows = g.input(rows_input(j, b1), I64, [None])
            q1 = blk.conv1.convs[b1]
            a1 = g.levels(g.op("Gather", [ops.z, rows], axis=0), g.op("Gather", [ops.sc, rows], axis=0), ops, q1)
            parts = [g.fresh("a1") for _ in cands]
            g.nodes.append(helper.make_node("Split", [a1, g.input(split_input(j, b1), I64, [len(cands)])], parts, axis=0))
            for b2, part in zip(cands, parts):
                h_parts[b2].append(g.qconv(part, q1, float(blk.conv2.convs[b2].step), 0))
        z_parts = [g.qconv(g.clamp(g.op("Concat", h_parts[b2], axis=0), b2), blk.conv2.convs[b2], blk.s_z, Z_ZERO)
                   for b2 in cands]
        z = g.op("Gather", [g.op("Concat", z_parts, axis=0), g.input(order_input(j), I64, ["N"])], axis=0)
        if blk.shortcut is None:
            new = Operands(z, ops.output(g, s_prev_out), blk.s_z, s_prev_out, 0)
        else:
            new = Operands(z, g.qconv(a_sc, blk.shortcut.only, blk.s_sc, Z_ZERO), blk.s_z, blk.s_sc, Z_ZERO)
        ops, s_prev_out = new, blk.s_out
    _head(g, net, ops.output(g, s_prev_out), s_prev_out, _sizes(net, size[0])[-1])
    return g.model({"logits": (F32, ["N", net.fc.weight.shape[0]])})
