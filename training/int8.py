"""The serving arithmetic (bundle format 2): the network on onnxruntime's integer kernels, and its exact emulation
in PyTorch, so that `training evaluate` computes what the server computes (docs/model-bundle.md, "Arithmetic").

Every tensor between layers is uint8 with one scale per tensor; every quantized conv is a QLinearConv on b-bit
input levels and DoReFa's integer weight numerators, its BN folded into a per-channel multiplier and an int32
bias; residual sums are QLinearAdds. A conv's output is requantized straight to the next conv's input levels:

    conv:   y = clamp(rne(f32(acc + B[c]) * M[c]) + zp, 0, 255)       QLinearConv, x/y scales 1, w scale M
    add:    y = clamp(rne(fma(a, rA, fma(b, rB, F))), 0, 255)           QLinearAdd (MLAS's AVX2 kernel)
            rA = f32(sA / sC), rB = f32(sB / sC), F = zC - (rA zA + rB zB)
    levels: min(y, 2^b - 1)                                             Min on uint8: the input clip

The stem conv, the controller and the classifier stay in float, as trained (full precision, or fake-quantized
inputs for 8-bit ones); the pooled features they read are sums of integers (exact in any order).
8-bit convs cannot run here: DoReFa's 8-bit numerators reach +-255, beyond int8.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .deploy import f32, fake_quant
from .quant import levels

Z_ZERO = 128  # zero point of signed tensors (conv outputs before a residual add): a power of two keeps F exact
MAX_BITS = 7  # numerators |m| <= 2^b - 1 must fit int8


@dataclass
class QConv:
    """One quantized conv at one bit-width, BN folded: y = conv(levels, m) * mul + bias (float semantics)."""

    bits: int
    m: torch.Tensor  # int32 (Cout, Cin, k, k): DoReFa's integer numerators
    mul: torch.Tensor  # float32 (Cout,): accumulator unit -> value
    bias: torch.Tensor  # float32 (Cout,)
    clip: float  # the input quantizer's clip (DoReFa 1.0, PACT alpha), a float32 value
    stride: int
    pad: int

    @property
    def levels(self) -> int:
        return levels(self.bits)

    @property
    def step(self) -> torch.Tensor:
        """The value of one input level: the output scale a producer requantizes to for this conv."""
        return f32(self.clip / self.levels)

    def int_bias(self) -> torch.Tensor:
        """The bias in accumulator units, rounded (half to even) to the int32 that QLinearConv adds."""
        return torch.round(self.bias.double() / self.mul.double()).to(torch.int32)

    def multiplier(self, out_scale: float) -> torch.Tensor:
        """M[c] = mul[c] / out_scale, rounded once to float32: accumulator -> output levels."""
        return f32(self.mul.double() / float(out_scale))


@dataclass
class Layer:
    name: str
    kind: str  # 'fixed' or 'dynamic'
    convs: Dict[int, QConv]  # by bits; one entry unless dynamic

    @property
    def only(self) -> QConv:
        """The conv of a layer that runs at one bit-width (fixed, or in a static net)."""
        return next(iter(self.convs.values()))


@dataclass
class Block:
    conv1: Layer
    conv2: Layer
    shortcut: Optional[Layer]  # a fixed-bit 1x1 conv + BN, or None for the identity
    s_z: float = 0.0  # conv2's output scale (zero point Z_ZERO)
    s_sc: float = 0.0  # the shortcut conv's output scale (zero point Z_ZERO); unused for the identity
    s_out: float = 0.0  # the block output's scale (zero point 0: after ReLU)


@dataclass
class Dense:
    """A float linear layer; an 8-bit one fake-quantizes its input (clip, bits) as QLinear's evaluation does."""

    weight: torch.Tensor  # float32 (out, in)
    bias: torch.Tensor  # float32 (out,)
    clip: Optional[float] = None
    bits: Optional[int] = None

    def __call__(self, x: torch.Tensor, double: bool = False) -> torch.Tensor:
        """`double`: the products summed in float64, then rounded once to float32 (the classifier: its logits then
        do not depend on the summation order of one BLAS kernel or another)."""
        if self.bits is not None:
            x = fake_quant(x, self.clip, self.bits)
        if double:
            return F.linear(x.double(), self.weight.double(), self.bias.double()).float()
        return F.linear(x, self.weight, self.bias)


@dataclass
class Controller:
    pool: int  # features pooled to pool x pool cells
    fc1: Dense
    fc2: Dense
    num_layers: int
    num_candidates: int


@dataclass
class Net:
    """A trained network in the serving arithmetic (before calibration, scales are 0)."""

    stem_weight: torch.Tensor  # float32, BN folded
    stem_bias: torch.Tensor
    stem_stride: int
    stem_pad: int
    maxpool: bool
    blocks: List[Block]
    fixed_blocks: int  # blocks before the controller (the first stage)
    controller: Optional[Controller]
    fc: Dense
    candidates: List[int]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    s_stem: float = 0.0  # the stem output's scale (zero point 0)
    calibration: Dict = field(default_factory=dict)

    @property
    def dynamic_layers(self) -> List[Layer]:
        return [lay for b in self.blocks for lay in (b.conv1, b.conv2) if lay.kind == "dynamic"]

    def check(self) -> None:
        for b in self.blocks:
            for lay in (b.conv1, b.conv2, b.shortcut):
                for q in (lay.convs.values() if lay else ()):
                    if q.bits > MAX_BITS:
                        raise ValueError(f"{lay.name} runs at {q.bits} bits: int8 kernels hold DoReFa numerators of "
                                         f"at most {MAX_BITS} bits (|m| <= 127)")


# ---- building a Net -----------------------------------------------------------------------------------
def from_model(model) -> Net:
    """Fold a trained DQResNet (deploy.fold: the same BN folding as its evaluation)."""
    from . import deploy
    from .data import CIFAR_MEAN, CIFAR_STD
    from .layers import FP_BITS

    model.eval()
    dynamic = model.precision.mode == "dynamic"
    cands = list(model.cfg.candidates) if dynamic else [model.dynamic_layers[0][1].static_bits()]

    def qconv(conv, bn, bits) -> QConv:
        f = deploy.fold(conv, bn, bits)
        if f.mul is None:
            raise ValueError(f"a {bits}-bit conv has no integer form for int8 kernels (8-bit or full-precision layers)")
        return QConv(bits, f.weight.round().to(torch.int32), f.mul, f.bias, float(f.clip), conv.stride[0], conv.padding[0])

    def layer(name, conv, bn, bits_list, kind) -> Layer:
        return Layer(name, kind, {b: qconv(conv, bn, b) for b in bits_list})

    blocks = []
    for s, stage in enumerate(model.stages):
        for i, blk in enumerate(stage):
            kind = "fixed" if s == 0 else "dynamic"
            bits = [blk.conv1.static_bits()] if kind == "fixed" else cands
            sc = None
            if blk.shortcut is not None:
                sc = layer(f"layer{s + 1}.{i}.shortcut", blk.shortcut[0], blk.shortcut[1], [blk.shortcut[0].static_bits()], "fixed")
            blocks.append(Block(layer(f"layer{s + 1}.{i}.conv1", blk.conv1, blk.bn1, bits, kind),
                                layer(f"layer{s + 1}.{i}.conv2", blk.conv2, blk.bn2, bits, kind), sc))
    stem = deploy.fold(model.stem, model.stem_bn, model.stem.static_bits())
    if stem.clip is not None or stem.mul is not None:
        raise ValueError("the stem must be a float conv (full precision or 8-bit weights)")

    def dense(fc) -> Dense:
        bits = fc.static_bits()
        if bits >= FP_BITS:
            return Dense(fc.weight.detach().float(), fc.bias.detach().float())
        from .quant import dorefa_weight

        return Dense(dorefa_weight(fc.weight.detach(), bits).float(), fc.bias.detach().float(), fc.act.clip_value(), bits)

    ctl = None
    if dynamic:
        c = model.controller
        ctl = Controller(c.pool, dense(c.fc1), dense(c.fc2), c.num_layers, c.num_candidates)
    net = Net(stem.weight, stem.bias, model.stem.stride[0], model.stem.padding[0], model.maxpool is not None, blocks,
              len(model.stages[0]), ctl, dense(model.fc), cands, CIFAR_MEAN, CIFAR_STD)
    net.check()
    return net


def from_bundle_v1(directory) -> Net:
    """Read a format-1 bundle (float-on-levels steps, docs/model-bundle.md history) back into a Net, so that bundles
    whose checkpoints are gone can be re-exported in this arithmetic. Its layers are read op for op."""
    import json
    from pathlib import Path

    import onnx
    from onnx import numpy_helper

    d = Path(directory)
    man = json.loads((d / "manifest.json").read_text())
    if man.get("format_version") != 1:
        raise ValueError(f"{d} is not a format-1 bundle")

    class Graph:
        def __init__(self, path):
            g = onnx.load(str(d / path)).graph
            self.nodes = list(g.node)
            self.const = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in g.initializer}
            self.producer = {o: n for n in self.nodes for o in n.output}

        def convs(self) -> List[QConv]:
            out = []
            for n in self.nodes:
                if n.op_type != "Conv" or n.input[0] == "image":
                    continue
                rnd = self.producer[n.input[0]]
                mul_rate = self.producer[rnd.input[0]]
                clip = self.producer[mul_rate.input[0]]
                after = [m for m in self.nodes if n.output[0] in m.input][0]  # Round
                mul = [m for m in self.nodes if after.output[0] in m.input][0]
                add = [m for m in self.nodes if mul.output[0] in m.input][0]
                clip_v = float(self.const[clip.input[2]])
                rate = float(self.const[mul_rate.input[1]])
                bits = int(round(np.log2(round(rate * clip_v) + 1)))
                attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
                out.append(QConv(bits, self.const[n.input[1]].round().to(torch.int32),
                                 self.const[mul.input[1]].flatten().float(), self.const[add.input[1]].flatten().float(),
                                 clip_v, attrs["strides"][0], attrs["pads"][0]))
            return out

        def gemms(self) -> List[Dense]:
            out = []
            for n in self.nodes:
                if n.op_type != "Gemm":
                    continue
                clip = bits = None
                src = self.producer.get(n.input[0])
                if src is not None and src.op_type == "Div":  # fake-quantized input: Clip -> Mul -> Round -> Div
                    rate = float(self.const[src.input[1]])
                    c = self.producer[self.producer[self.producer[src.input[0]].input[0]].input[0]]
                    clip = float(self.const[c.input[2]])
                    bits = int(round(np.log2(round(rate * clip) + 1)))
                out.append(Dense(self.const[n.input[1]].float(), self.const[n.input[2]].float(), clip, bits))
            return out

    stem = Graph(man["graph"]["stem"]["file"])
    sconv = next(n for n in stem.nodes if n.op_type == "Conv" and n.input[0] == "image")
    sattrs = {a.name: onnx.helper.get_attribute_value(a) for a in sconv.attribute}
    stage1 = stem.convs()
    names = [lay["name"] for lay in man["layers"] if lay["kind"] == "fixed" and lay["name"].startswith("layer1.")]
    blocks = []
    for k in range(0, len(stage1), 2):
        blocks.append(Block(Layer(names[k], "fixed", {stage1[k].bits: stage1[k]}),
                            Layer(names[k + 1], "fixed", {stage1[k + 1].bits: stage1[k + 1]}), None))
    dynamic = man["kind"] == "dynamic"
    steps = man["graph"]["steps"]
    for k in range(0, len(steps), 2):
        c1, c2 = steps[k], steps[k + 1]
        conv1, conv2, sc = {}, {}, None
        for b, f in c1["files"].items():
            conv1[int(b)] = Graph(f).convs()[0]
        for b, f in c2["files"].items():
            found = Graph(f).convs()
            conv2[int(b)] = found[0]
            if len(found) > 1:
                sc = Layer(c2["layer"].replace(".conv2", ".shortcut"), "fixed", {found[1].bits: found[1]})
        kind = "dynamic"
        blocks.append(Block(Layer(c1["layer"], kind, conv1), Layer(c2["layer"], kind, conv2), sc))
    ctl = None
    if dynamic:
        pool_node = next(n for n in stem.nodes if n.op_type == "AveragePool")
        k = onnx.helper.get_attribute_value(pool_node.attribute[0])[0]
        fc1, fc2 = stem.gemms()
        size = man["input"]["size"][0] // (2 if man.get("arch") == "resnet18" else 1)
        ctl = Controller(size // k, fc1, fc2, len(man["controller"]["layers"]), len(man["controller"]["candidates"]))
    head = Graph(man["graph"]["head"]["file"])
    cands = man["bits"]["candidates"]
    net = Net(stem.const[sconv.input[1]].float(), stem.const[sconv.input[2]].float(), sattrs["strides"][0],
              sattrs["pads"][0], any(n.op_type == "MaxPool" for n in stem.nodes), blocks, len(stage1) // 2, ctl,
              head.gemms()[0], cands, tuple(man["input"]["mean"]), tuple(man["input"]["std"]))
    net.check()
    return net


# ---- the arithmetic -----------------------------------------------------------------------------------
def normalize(net: Net, images_u8: torch.Tensor) -> torch.Tensor:
    """The graph's first ops on the NHWC uint8 image: (x / 255 - mean) / std in float32 (data.normalize)."""
    m = torch.tensor(net.mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(net.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images_u8.float() / 255.0 - m) / s


def stem_float(net: Net, x: torch.Tensor) -> torch.Tensor:
    y = F.relu(F.conv2d(x, net.stem_weight, net.stem_bias, net.stem_stride, net.stem_pad))
    return F.max_pool2d(y, 3, 2, 1) if net.maxpool else y


def quantize(x: torch.Tensor, scale) -> torch.Tensor:
    """QuantizeLinear to uint8, zero point 0: clamp(rne(x / scale), 0, 255)."""
    return torch.clamp(torch.round(x / f32(scale)), 0, 255)


def qconv(a: torch.Tensor, q: QConv, out_scale: float, zero: int) -> torch.Tensor:
    """QLinearConv on integer levels `a` (float tensor of integers): clamp(rne(f32(acc + B) * M) + zero, 0, 255)."""
    acc = F.conv2d(a, q.m.float(), None, q.stride, q.pad)  # integer sums below 2^24: exact in float32
    v = (acc + q.int_bias().float().view(1, -1, 1, 1)) * q.multiplier(out_scale).view(1, -1, 1, 1)
    return torch.clamp(torch.round(v) + zero, 0, 255)


def _fma(x: torch.Tensor, r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float32 fused multiply-add: the float64 product of two float32 values is exact, so is (here) the sum."""
    return (x.double() * r.double() + c.double()).float()


def qadd(a: torch.Tensor, sa: float, za: int, b: torch.Tensor, sb: float, zb: int, sc: float) -> torch.Tensor:
    """QLinearAdd (uint8, output zero point 0) as MLAS's AVX2 kernel computes it."""
    ra, rb = f32(sa) / f32(sc), f32(sb) / f32(sc)
    fixed = -(ra * za + rb * zb)  # both products are exact (za, zb are 0 or a power of two): one rounding
    return torch.clamp(torch.round(_fma(a, ra, _fma(b, rb, fixed))), 0, 255)


def clamp_levels(y: torch.Tensor, bits: int) -> torch.Tensor:
    return torch.clamp(y, max=levels(bits))


@dataclass
class StemState:
    """What the stem graph hands to the body: the last fixed block's add operands, and the features."""

    z: torch.Tensor  # uint8 values, zero point Z_ZERO (scale: that block's s_z)
    sc: torch.Tensor  # its shortcut operand: the block input (zero point 0) or a shortcut conv's output (Z_ZERO)
    features: torch.Tensor  # the block output (zero point 0, scale s_out)


def _block(blk: Block, a1: torch.Tensor, r_in: torch.Tensor, s_in: float, a_sc: Optional[torch.Tensor],
           b1: int, b2: int) -> Tuple[torch.Tensor, torch.Tensor, float, int]:
    """One block for samples that all chose (b1, b2): returns z, the shortcut operand, its scale and zero point."""
    c1, c2 = blk.conv1.convs[b1], blk.conv2.convs[b2]
    h = clamp_levels(qconv(a1, c1, c2.step, 0), b2)
    z = qconv(h, c2, blk.s_z, Z_ZERO)
    if blk.shortcut is None:
        return z, r_in, s_in, 0
    return z, qconv(a_sc, blk.shortcut.only, blk.s_sc, Z_ZERO), blk.s_sc, Z_ZERO


def _levels_from_add(blk: Block, z, sc, s_sc, z_sc, q: QConv) -> torch.Tensor:
    return clamp_levels(qadd(z, blk.s_z, Z_ZERO, sc, s_sc, z_sc, q.step), q.bits)


def forward_stem(net: Net, images_u8: torch.Tensor) -> Tuple[StemState, Optional[torch.Tensor]]:
    """Stem and fixed blocks (their bits never vary) and the controller logits (None for a static net)."""
    x = stem_float(net, normalize(net, images_u8))
    r, s_r = quantize(x, net.s_stem), net.s_stem
    first = net.blocks[0]
    a1 = clamp_levels(quantize(x, first.conv1.only.step), first.conv1.only.bits)
    a_sc = None
    if first.shortcut is not None:
        q = first.shortcut.only
        a_sc = clamp_levels(quantize(x, q.step), q.bits)
    for i in range(net.fixed_blocks):
        blk = net.blocks[i]
        z, sc, s_sc, z_sc = _block(blk, a1, r, s_r, a_sc, blk.conv1.only.bits, blk.conv2.only.bits)
        if i + 1 < net.fixed_blocks:  # the next fixed block's inputs, from this block's add operands
            nxt = net.blocks[i + 1]
            a1 = _levels_from_add(blk, z, sc, s_sc, z_sc, nxt.conv1.only)
            a_sc = _levels_from_add(blk, z, sc, s_sc, z_sc, nxt.shortcut.only) if nxt.shortcut is not None else None
        r, s_r = qadd(z, blk.s_z, Z_ZERO, sc, s_sc, z_sc, blk.s_out), blk.s_out
    state = StemState(z, sc, r)
    return state, controller_logits(net, r, s_r) if net.controller else None


def pooled_mean(features: torch.Tensor, pool: int) -> torch.Tensor:
    """Mean of integer features over each of pool x pool cells: the sum is exact in any order, then one division
    (AveragePool), flattened in NCHW order."""
    n, c, h, w = features.shape
    k = h // pool
    return (features.view(n, c, pool, k, pool, k).sum(dim=(3, 5)) / float(k * k)).flatten(1)


def controller_logits(net: Net, features: torch.Tensor, scale: float) -> torch.Tensor:
    c = net.controller
    x = pooled_mean(features, c.pool) * f32(scale)
    return c.fc2(F.relu(c.fc1(x))).view(-1, c.num_layers, c.num_candidates)


def forward_body(net: Net, state: StemState, bits: torch.Tensor) -> torch.Tensor:
    """Dynamic blocks and classifier; bits (N, L) per sample per dynamic layer. Each group of samples that
    share a layer's (and the next conv's) bits runs as one unit, as the body graph's gathers arrange it."""
    blocks = net.blocks[net.fixed_blocks:]
    last = net.blocks[net.fixed_blocks - 1]
    z, sc = state.z, state.sc
    prev = last
    prev_sc_scale, prev_sc_zero = _sc_quant(net, net.fixed_blocks - 1)
    r, s_r = state.features, last.s_out
    for j, blk in enumerate(blocks):
        b1s, b2s = bits[:, 2 * j], bits[:, 2 * j + 1]
        a_sc = None
        if blk.shortcut is not None:
            a_sc = _levels_from_add(prev, z, sc, prev_sc_scale, prev_sc_zero, blk.shortcut.only)
        z_new = torch.empty((len(bits),) + _out_shape(blk, z))
        sc_new = torch.empty_like(z_new)
        for b1 in torch.unique(b1s).tolist():
            for b2 in torch.unique(b2s).tolist():
                idx = ((b1s == b1) & (b2s == b2)).nonzero(as_tuple=True)[0]
                if len(idx) == 0:
                    continue
                a1 = _levels_from_add(prev, z[idx], sc[idx], prev_sc_scale, prev_sc_zero, blk.conv1.convs[int(b1)])
                zg, scg, s_sc, z_sc = _block(blk, a1, r[idx], s_r, a_sc[idx] if a_sc is not None else None, int(b1), int(b2))
                z_new[idx], sc_new[idx] = zg, scg
        s_sc, z_sc = (blk.s_sc, Z_ZERO) if blk.shortcut is not None else (s_r, 0)
        r = qadd(z_new, blk.s_z, Z_ZERO, sc_new, s_sc, z_sc, blk.s_out)
        z, sc, prev, prev_sc_scale, prev_sc_zero, s_r = z_new, sc_new, blk, s_sc, z_sc, blk.s_out
    return head_logits(net, r, s_r)


def _sc_quant(net: Net, i: int) -> Tuple[float, int]:
    blk = net.blocks[i]
    if blk.shortcut is not None:
        return blk.s_sc, Z_ZERO
    return (net.s_stem, 0) if i == 0 else (net.blocks[i - 1].s_out, 0)


def _out_shape(blk: Block, z: torch.Tensor) -> Tuple[int, ...]:
    q = blk.conv1.only
    c, h, w = z.shape[1:]
    return (q.m.shape[0], (h + 2 * q.pad - q.m.shape[2]) // q.stride + 1, (w + 2 * q.pad - q.m.shape[3]) // q.stride + 1)


def head_logits(net: Net, r: torch.Tensor, scale: float) -> torch.Tensor:
    n, c, h, w = r.shape
    x = r.sum(dim=(2, 3)) * f32(scale / (h * w))
    return net.fc(x, double=True)


def forward(net: Net, images_u8: torch.Tensor, choose: Callable[[Optional[torch.Tensor]], torch.Tensor]):
    """Logits, bits (N, L) and controller logits. `choose` maps controller logits (None when static) to bits."""
    state, ctl = forward_stem(net, images_u8)
    bits = choose(ctl)
    return forward_body(net, state, bits), bits, ctl


# ---- the float-on-levels arithmetic (bundle format 1), for calibration ---------------------------------
def _float_conv(x: torch.Tensor, q: QConv) -> torch.Tensor:
    a = torch.round(torch.clamp(x, min=0.0, max=float(f32(q.clip))) * f32(q.levels / q.clip))
    acc = F.conv2d(a, q.m.float(), None, q.stride, q.pad)
    return acc * q.mul.view(1, -1, 1, 1) + q.bias.view(1, -1, 1, 1)


def forward_float(net: Net, images_u8: torch.Tensor, bits: torch.Tensor, record: Optional[Dict] = None) -> torch.Tensor:
    """The float-on-integer-levels arithmetic of format 1 (deploy.run), every block on the given bits. `record`
    collects each tensor that the int8 arithmetic quantizes, for calibration."""
    x = stem_float(net, normalize(net, images_u8))
    rec = record if record is not None else {}
    rec.setdefault("stem", []).append(x)
    li = 0
    for i, blk in enumerate(net.blocks):
        out = torch.empty((len(x),) + _out_shape(blk, x))
        zs, scs = torch.empty_like(out), torch.empty_like(out)
        if blk.conv1.kind == "dynamic":
            b1s, b2s = bits[:, li], bits[:, li + 1]
            li += 2
        else:
            b1s = torch.full((len(x),), blk.conv1.only.bits)
            b2s = torch.full((len(x),), blk.conv2.only.bits)
        for b1 in torch.unique(b1s).tolist():
            for b2 in torch.unique(b2s).tolist():
                idx = ((b1s == b1) & (b2s == b2)).nonzero(as_tuple=True)[0]
                if len(idx) == 0:
                    continue
                h = F.relu(_float_conv(x[idx], blk.conv1.convs[int(b1)]))
                z = _float_conv(h, blk.conv2.convs[int(b2)])
                sc = x[idx] if blk.shortcut is None else _float_conv(x[idx], blk.shortcut.only)
                zs[idx], scs[idx] = z, sc
        x = F.relu(zs + scs)
        rec.setdefault(f"z{i}", []).append(zs)
        if blk.shortcut is not None:
            rec.setdefault(f"sc{i}", []).append(scs)
        rec.setdefault(f"out{i}", []).append(x)
    return net.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def calibrate(net: Net, images_u8: torch.Tensor, bits: Sequence[torch.Tensor], batch: int = 250) -> None:
    """Per-tensor scales from the float arithmetic on calibration images (training images, never the test set):
    each tensor's largest magnitude over every plan in `bits` (each (N, L)) maps to the end of its uint8 range."""
    rec: Dict[str, List[torch.Tensor]] = {}
    with torch.no_grad():
        for plan in bits:
            for i in range(0, len(images_u8), batch):
                forward_float(net, images_u8[i:i + batch], plan[i:i + batch], rec)

    def top(key):
        return max(float(t.abs().max()) for t in rec[key])

    net.s_stem = float(f32(top("stem") / 255))
    for i, blk in enumerate(net.blocks):
        blk.s_z = float(f32(top(f"z{i}") / 127))
        blk.s_out = float(f32(top(f"out{i}") / 255))
        if blk.shortcut is not None:
            blk.s_sc = float(f32(top(f"sc{i}") / 127))
    net.calibration = {"images": int(len(images_u8)), "plans": len(bits), "rule": "largest magnitude -> 255 (127 "
                       "either side of zero point 128 for a conv output before an add)"}
