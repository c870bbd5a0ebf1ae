"""Deployment arithmetic: a quantized conv with its BatchNorm folded, exactly as the exported ONNX computes it.

Evaluation runs this same arithmetic (not conv-then-BN), so PyTorch's evaluation and onnxruntime agree to the
bit wherever the maths is exact:
  q = round(clamp(x, 0, clip) * rate)            integer levels 0..2^b-1 (rate = (2^b-1)/clip, float32)
  acc = conv(q, m)                                m = DoReFa's integer numerators; every partial sum is an
                                                  integer below 2^24, so a float32 conv is exact in any order
  y = acc * mul + bias                            BN folded into one float32 scale and bias per channel
Full-precision layers (and 8-bit ones, whose numerators reach +-255) stay float convs on folded weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .layers import FP_BITS
from .quant import dorefa_weight, dorefa_weight_int, levels


@dataclass
class Folded:
    weight: torch.Tensor  # float32: integer numerators (exact path) or folded float weights
    bias: torch.Tensor  # (C,) float32
    mul: Optional[torch.Tensor]  # (C,) float32, exact path only
    clip: Optional[torch.Tensor]  # float32 scalar: input clip; None = input not quantized
    rate: Optional[torch.Tensor]  # float32 scalar: levels / clip


def f32(x) -> torch.Tensor:
    """float64 arithmetic rounded once to float32: how every deployed constant is made."""
    return torch.as_tensor(x, dtype=torch.float64).to(torch.float32)


def clip_rate(clip: float, bits: int):
    """The input quantizer's float32 constants: clip, and rate = (2^b - 1) / clip."""
    return f32(clip), f32(levels(bits) / clip)


@torch.no_grad()
def fold(conv, bn, bits: int) -> Folded:
    if hasattr(bn, "for_bits"):  # a switchable BN: the candidate's own
        bn = bn.for_bits(bits)
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = f32(bn.bias.double() - bn.running_mean.double() * scale)
    w = conv.weight.detach()
    if bits >= FP_BITS:
        return Folded(f32(w.double() * scale[:, None, None, None]), bias, None, None, None)
    n = levels(bits)
    if conv.act is None:  # an 8-bit stem: the normalised 8-bit image is its input, weights quantized only
        return Folded(f32(dorefa_weight(w, bits).double() * scale[:, None, None, None]), bias, None, None, None)
    clip, rate = clip_rate(conv.act.clip_value(), bits)
    if bits >= 8:  # numerators up to +-255: products no longer sum exactly in float32
        wf = dorefa_weight(w, bits).double() * scale[:, None, None, None] / float(rate)
        return Folded(f32(wf), bias, None, clip, rate)
    mul = f32(scale / (float(rate) * n))
    return Folded(dorefa_weight_int(w, bits).to(torch.float32), bias, mul, clip, rate)


def quantize_levels(x: torch.Tensor, f: Folded) -> torch.Tensor:
    return torch.round(torch.clamp(x, min=0.0, max=f.clip.item()) * f.rate.to(x))


def run(f: Folded, conv, x: torch.Tensor) -> torch.Tensor:
    if f.clip is not None:
        x = quantize_levels(x, f)
    w = f.weight.to(x)
    if f.mul is None:
        return F.conv2d(x, w, f.bias.to(x), conv.stride, conv.padding)
    acc = F.conv2d(x, w, None, conv.stride, conv.padding)
    return acc * f.mul.to(x).view(1, -1, 1, 1) + f.bias.to(x).view(1, -1, 1, 1)


def fake_quant(x: torch.Tensor, clip: float, bits: int) -> torch.Tensor:
    """The classifier's quantized input (8-bit first/last option): levels, then back to floats."""
    c, rate = clip_rate(clip, bits)
    return torch.round(torch.clamp(x, min=0.0, max=c.item()) * rate.to(x)) / rate.to(x)
