"""Quantized conv / linear layers whose bit-width is fixed, full precision, or chosen per sample.

`kind` is what the layer is in the deployed network: 'fp' (full precision), 'fixed' (one bit-width),
'dynamic' (bits picked per sample by the controller from `candidates`). The network-wide `Precision`
decides how a layer runs right now: during full-precision pretraining every layer runs in float.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .quant import ActQuant, dorefa_weight

FP_BITS = 32


@dataclass
class Precision:
    """How the whole network runs: 'fp' (pretraining), 'static' (every dynamic layer at `static_bits`),
    or 'dynamic' (the controller picks)."""

    mode: str = "fp"
    static_bits: Optional[int] = None


class _Quantized:
    """Shared state of QConv2d and QLinear."""

    kind: str
    bits: Optional[int]
    candidates: Sequence[int]
    quantize_input: bool
    precision: Precision

    def _setup(self, kind, bits, candidates, act, pact_init, quantize_input):
        if kind not in ("fp", "fixed", "dynamic"):
            raise ValueError(f"unknown layer kind {kind!r}")
        self.kind = kind
        self.bits = FP_BITS if kind == "fp" else (bits if kind == "fixed" else None)
        self.candidates = list(candidates) if kind == "dynamic" else []
        self.quantize_input = quantize_input
        self.act = ActQuant(act, pact_init) if (kind != "fp" and quantize_input) else None
        self.precision = Precision()

    def static_bits(self) -> int:
        """Bits of a run without a per-sample choice: full precision in 'fp' mode, else the fixed bits
        (or, for a dynamic layer under a static precision, the static bits)."""
        if self.precision.mode == "fp" or self.kind == "fp":
            return FP_BITS
        if self.kind == "dynamic":
            b = self.precision.static_bits
            if b is None:
                raise RuntimeError("dynamic layer run without a bit choice")
            return b
        return self.bits

    def quantized_operands(self, x, bits):
        if bits >= FP_BITS:
            return x, self.weight
        xq = self.act(x, bits) if self.act is not None else x
        return xq, dorefa_weight(self.weight, bits)


class SwitchableBN(nn.Module):
    """One BatchNorm per candidate bit-width (switchable BN, as in any-precision and multi-precision training): a
    layer's output statistics differ with its bits, and one shared BN fits none of them exactly. Deployment folds
    each candidate's own BN into that candidate's conv (deploy.fold), so the bundle arithmetic is unchanged."""

    def __init__(self, channels: int, candidates: Sequence[int]):
        super().__init__()
        self.candidates = list(candidates)
        self.bns = nn.ModuleList(nn.BatchNorm2d(channels) for _ in self.candidates)

    def for_bits(self, bits: int) -> nn.BatchNorm2d:
        if bits >= FP_BITS:  # a full-precision pass (MAC counting, clip calibration): the widest candidate's is closest
            bits = max(self.candidates)
        if bits not in self.candidates:
            raise ValueError(f"no BatchNorm for {bits} bits (switchable BN holds {self.candidates})")
        return self.bns[self.candidates.index(bits)]

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):
        # a plain BN's state (an fp or single-BN checkpoint): every candidate starts from it
        plain = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and "." not in k[len(prefix):]}
        if plain:
            for k, v in plain.items():
                del state[prefix + k]
                for i in range(len(self.bns)):
                    state[f"{prefix}bns.{i}.{k}"] = v.clone()
        super()._load_from_state_dict(state, prefix, *args, **kwargs)


class QConv2d(nn.Conv2d, _Quantized):
    def __init__(self, cin, cout, kernel, stride=1, padding=0, *, kind="fixed", bits=4, candidates=(),
                 act="dorefa", pact_init=6.0, quantize_input=True):
        super().__init__(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self._setup(kind, bits, candidates, act, pact_init, quantize_input)

    def run(self, x, bits: int):
        xq, wq = self.quantized_operands(x, bits)
        return F.conv2d(xq, wq, None, self.stride, self.padding)

    def forward(self, x, choice: Optional[torch.Tensor] = None, bn: Optional[nn.BatchNorm2d] = None):
        """choice: None (fixed/static), a float one-hot (N, K) in training (every candidate computed and
        mixed so the controller gets a gradient), or candidate indices (N,) at evaluation (only each
        sample's chosen bit-width is computed). bn: at evaluation, the following BatchNorm, folded in
        with the deployment arithmetic (deploy.py) so that evaluation is what the bundle computes; in training,
        a SwitchableBN, applied to each candidate's output before they are mixed."""
        if bn is not None and not self.training:
            from . import deploy

            run = lambda x, b: deploy.run(deploy.fold(self, bn, b), self, x)  # noqa: E731
        elif bn is not None:  # a switchable BN in training: each candidate's output through its own BN
            run = lambda x, b: bn.for_bits(b)(self.run(x, b))  # noqa: E731
        else:
            run = self.run
        if self.kind != "dynamic" or self.precision.mode != "dynamic":
            return run(x, self.static_bits())
        if choice is None:
            raise RuntimeError("dynamic layer needs a choice in dynamic mode")
        if choice.dtype.is_floating_point:
            out = 0
            for k, b in enumerate(self.candidates):
                out = out + choice[:, k, None, None, None] * run(x, b)
            return out
        out = None
        for k in torch.unique(choice).tolist():
            idx = (choice == k).nonzero(as_tuple=True)[0]
            y = run(x[idx], self.candidates[k])
            if out is None:
                out = y.new_empty((x.shape[0],) + y.shape[1:])
            out[idx] = y
        return out


class QLinear(nn.Linear, _Quantized):
    def __init__(self, fin, fout, *, kind="fp", bits=8, act="dorefa", pact_init=6.0):
        super().__init__(fin, fout)
        self._setup(kind, bits, (), act, pact_init, True)

    def forward(self, x):
        bits = self.static_bits()
        if not self.training and bits < FP_BITS:
            from . import deploy  # evaluation: the exported head's arithmetic

            return F.linear(deploy.fake_quant(x, self.act.clip_value(), bits), dorefa_weight(self.weight, bits), self.bias)
        xq, wq = self.quantized_operands(x, bits)
        return F.linear(xq, wq, self.bias)
