"""DoReFa / PACT quantizers with straight-through rounding (dqnet-official.md §3).

Weights: DoReFa (tanh, max-normalise to [0, 1], 2^b levels, mapped back to [-1, 1]).
Activations: DoReFa clamps to [0, 1]; PACT clamps to [0, alpha] with alpha learned.
A quantized layer's weights and activations share one bit-width b.
"""
from __future__ import annotations

import torch
from torch import nn


class _RoundSTE(torch.autograd.Function):
    """round() forward, identity backward (the straight-through estimator)."""

    @staticmethod
    def forward(ctx, x):  # noqa: D401
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def levels(bits: int) -> int:
    """Number of steps between the lowest and highest level: 2^b - 1."""
    return (1 << bits) - 1


def quantize_unit(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantize values already in [0, 1] to 2^b evenly spaced levels."""
    n = levels(bits)
    return _RoundSTE.apply(x * n) / n


def _weight_unit(w: torch.Tensor) -> torch.Tensor:
    t = torch.tanh(w)
    return t / (2 * t.abs().max()) + 0.5


def dorefa_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """DoReFa weights: 2^b levels in [-1, 1]. The tanh/max part is differentiated normally."""
    return 2 * quantize_unit(_weight_unit(w), bits) - 1


@torch.no_grad()
def dorefa_weight_int(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer numerators m of the DoReFa levels: w_q = m / (2^b - 1), m odd-stepped in [-(2^b-1), 2^b-1]."""
    n = levels(bits)
    return (2 * torch.round(_weight_unit(w) * n) - n).to(torch.int32)


class ActQuant(nn.Module):
    """Activation quantizer shared by every candidate bit-width of one layer.

    kind 'dorefa': clamp to [0, 1]. kind 'pact': clamp to [0, alpha], alpha learned (PACT), one per layer.
    The whole rounding step is straight-through, so alpha's gradient is 1 where x >= alpha and 0 elsewhere,
    exactly PACT's (no quantization-error term as in LSQ).
    """

    def __init__(self, kind: str = "dorefa", pact_init: float = 6.0):
        super().__init__()
        if kind not in ("dorefa", "pact"):
            raise ValueError(f"unknown activation quantizer {kind!r} (dorefa or pact)")
        self.kind = kind
        self.alpha = nn.Parameter(torch.tensor(float(pact_init))) if kind == "pact" else None

    def clip_value(self) -> float:
        return float(self.alpha.detach()) if self.alpha is not None else 1.0

    def forward(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        # In float32 even under bf16 autocast: bf16's 8-bit significand cannot hold x * (2^b - 1) finely enough
        # to round it to the right level once b reaches 8 (the convs still run in bf16).
        x = x.float()
        if self.alpha is None:
            return quantize_unit(torch.clamp(x, 0, 1), bits)
        a = self.alpha
        clipped = 0.5 * (x.abs() - (x - a).abs() + a)
        c, ad = clipped.detach(), a.detach()
        return clipped + (ad * quantize_unit(c / ad, bits) - c)
