"""DoReFa weights; DoReFa / PACT / LSQ activations; straight-through rounding (dqnet-official.md §3).

Weights: DoReFa (tanh, max-normalise to [0, 1], 2^b levels, mapped back to [-1, 1]).
Activations: 2^b levels on [0, clip]. DoReFa's clip is 1; PACT and LSQ learn it per layer (`alpha`) and differ
only in its gradient. Every kind is the same arithmetic once trained (a clip per layer), so bundles, engines and
`dqserve verify` need nothing kind-specific (docs/model-bundle.md).
A quantized layer's weights and activations share one bit-width b.
"""
from __future__ import annotations

import math

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


class _LsqQuant(torch.autograd.Function):
    """LSQ (Esser et al., ICLR 2020) with the clip alpha = s * n as the parameter (n = 2^b - 1, s the step).

    Forward: alpha / n * round(clamp(x, 0, alpha) * n / alpha). Backward: x gets the straight-through gradient
    inside [0, alpha]; alpha gets LSQ's, d/d alpha = (round(u) - u) / n inside (u = x n / alpha) and 1 above,
    times `scale`. LSQ scales the step's gradient by g = 1 / sqrt(features * n); the same update expressed on
    alpha = s n needs g * n^2 (d/ds = n d/d alpha, and alpha moves n times as far as s)."""

    @staticmethod
    def forward(ctx, x, alpha, bits: int, scale: float):
        n = levels(bits)
        u = torch.clamp(x, min=0.0) * (n / alpha)
        inside = u < n
        q = torch.round(torch.clamp(u, max=float(n)))
        ctx.save_for_backward(u, q, inside)
        ctx.n, ctx.scale = n, scale
        return q * (alpha / n)

    @staticmethod
    def backward(ctx, grad):
        u, q, inside = ctx.saved_tensors
        n = ctx.n
        positive = u > 0
        gx = grad * (inside & positive)
        per_value = torch.where(inside, (q - u) / n, torch.ones_like(u))
        galpha = (grad * per_value).sum() * ctx.scale
        return gx, galpha.reshape(()), None, None


ACT_KINDS = ("dorefa", "pact", "lsq")


class ActQuant(nn.Module):
    """Activation quantizer shared by every candidate bit-width of one layer.

    kind 'dorefa': clamp to [0, 1]. kind 'pact': clamp to [0, alpha], alpha learned, one per layer; the whole
    rounding step is straight-through, so alpha's gradient is 1 where x >= alpha and 0 elsewhere, exactly
    PACT's. kind 'lsq': the same clip with LSQ's gradient (the rounding error counts too) and gradient scale.
    """

    def __init__(self, kind: str = "dorefa", pact_init: float = 6.0):
        super().__init__()
        if kind not in ACT_KINDS:
            raise ValueError(f"unknown activation quantizer {kind!r} ({', '.join(ACT_KINDS)})")
        self.kind = kind
        self.alpha = nn.Parameter(torch.tensor(float(pact_init))) if kind != "dorefa" else None

    def clip_value(self) -> float:
        return float(self.alpha.detach()) if self.alpha is not None else 1.0

    def forward(self, x: torch.Tensor, bits: int) -> torch.Tensor:
        # In float32 even under bf16 autocast: bf16's 8-bit significand cannot hold x * (2^b - 1) finely enough
        # to round it to the right level once b reaches 8 (the convs still run in bf16).
        x = x.float()
        if self.alpha is None:
            return quantize_unit(torch.clamp(x, 0, 1), bits)
        a = self.alpha
        if self.kind == "lsq":
            n = levels(bits)
            features = x[0].numel() if x.dim() > 1 else x.numel()
            return _LsqQuant.apply(x, a, bits, n * n / math.sqrt(features * n))
        clipped = 0.5 * (x.abs() - (x - a).abs() + a)
        c, ad = clipped.detach(), a.detach()
        return clipped + (ad * quantize_unit(c / ad, bits) - c)
