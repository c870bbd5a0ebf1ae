"""The bit-controller: pooled first-stage features -> MLP -> one logit per (dynamic layer, candidate).

Like the official code it shares the stem and first stage with the main network (dqnet-official.md §1).
Unlike it, the MLP has a ReLU between its two layers (the official one is linear apart from dropout), and it can
run quantized (`bits` < 32): its inputs are unbounded pooled features, so its activations use PACT's learned
clip whatever the network's own activation quantizer is (DoReFa's [0, 1] clamp would cut them: 39% of the
pooled features of the CPU-trained dq_w4 exceed 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import FP_BITS, QLinear


class BitController(nn.Module):
    def __init__(self, channels: int, pool: int, hidden: int, num_layers: int, num_candidates: int,
                 dropout: float = 0.2, bits: int = FP_BITS, pact_init: float = 6.0):
        super().__init__()
        self.pool = pool
        self.num_layers = num_layers
        self.num_candidates = num_candidates
        q = dict(kind="fp") if bits >= FP_BITS else dict(kind="fixed", bits=bits, act="pact", pact_init=pact_init)
        self.fc1 = QLinear(channels * pool * pool, hidden, **q)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = QLinear(hidden, num_layers * num_candidates, **q)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        h = features.shape[-1]
        if h % self.pool:
            raise ValueError(f"controller pool {self.pool} does not divide feature size {h}")
        x = F.avg_pool2d(features, h // self.pool).flatten(1)
        x = self.dropout(F.relu(self.fc1(x)))
        return self.fc2(x).view(-1, self.num_layers, self.num_candidates)


def choose(logits: torch.Tensor, cost: torch.Tensor, knob: float = 0.0) -> torch.Tensor:
    """Deterministic choice used at evaluation, export and serving: argmax_k(logit - knob * cost[l, k]).
    torch.argmax returns the first maximum, i.e. ties go to the lower (cheaper) candidate."""
    return torch.argmax(logits - knob * cost.to(logits), dim=-1)


def sample(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Training-time choice: hard Gumbel-softmax (one-hot forward, soft gradient)."""
    return F.gumbel_softmax(logits, tau=tau, hard=True, dim=-1)
