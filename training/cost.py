"""Bit-FLOPs, by the one definition in docs/bitflops.md.

BitFLOPs(image) = sum over conv/linear layers of MACs x b_w x b_a; full-precision layers (and the
controller unless trained quantized) count at 32 x 32, fixed layers at their bits, dynamic layers at the bits chosen for the image.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

from .layers import FP_BITS

DEFINITION = ("sum over conv and linear layers of MACs x b_w x b_a (b_w = b_a = b); full-precision layers (and a "
              "full-precision controller) at 32x32; BN, ReLU, adds and pooling not counted")


def _public_name(module_path: str) -> str:
    """stages.1.0.shortcut.0 -> layer2.0.shortcut: the names torchvision and the paper use."""
    parts = module_path.split(".")
    if parts[0] == "stages" and len(parts) > 1:
        parts = [f"layer{int(parts[1]) + 1}"] + parts[2:]
    if parts[-2:-1] == ["shortcut"]:
        parts = parts[:-1]
    return ".".join(parts)


@torch.no_grad()
def layer_table(model, input_size: Sequence[int]) -> List[Dict]:
    """Every conv/linear layer in execution order with its kind, shapes and per-image MACs, measured by
    running one image through the model (in float, so every layer is visited once)."""
    rows, hooks = [], []
    names = {m: _public_name(n) for n, m in model.named_modules()}
    dynamic = {m: n for n, m in model.dynamic_layers}
    controller = set(model.controller.modules()) if model.controller is not None else set()

    def hook(mod, inp, out):
        x = inp[0]
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            macs = out.shape[2] * out.shape[3] * mod.out_channels * (mod.in_channels // mod.groups) * kh * kw
            op, kernel, stride = "conv", [kh, kw], list(mod.stride)
        else:
            macs = mod.in_features * mod.out_features
            op, kernel, stride = "linear", None, None
        if mod in dynamic:
            kind, bits = "dynamic", None
        elif mod in controller:
            kind, bits = "controller", mod.bits
        else:
            kind, bits = mod.kind, (FP_BITS if mod.kind == "fp" or fp_model else mod.bits)
        rows.append(dict(name=dynamic.get(mod, names[mod]), kind=kind, op=op, in_shape=list(x.shape[1:]),
                         out_shape=list(out.shape[1:]), kernel=kernel, stride=stride, bits=bits, macs=int(macs)))

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(hook))
    saved = (model.precision.mode, model.precision.static_bits, model.training)
    fp_model = saved[0] == "fp"  # a full-precision (pretraining) model runs every layer at 32 bits
    try:
        model.eval()
        model.set_precision("fp")
        x = torch.zeros((1,) + tuple(input_size), device=next(model.parameters()).device)
        feats = model.stem_forward(x)
        if model.controller is not None and saved[0] == "dynamic":  # a static export does not run it
            model.controller(feats)
        model.forward(x)
    finally:
        for h in hooks:
            h.remove()
        model.precision.mode, model.precision.static_bits = saved[0], saved[1]
        model.train(saved[2])
    # The controller ran before the main forward; the main forward re-visits the stem: drop repeats,
    # keeping execution order stem, stage 1, controller, later stages, classifier.
    seen, table = set(), []
    for r in rows:
        if r["name"] not in seen:
            seen.add(r["name"])
            table.append(r)
    return table


def attach_macs(model, input_size: Sequence[int]) -> List[Dict]:
    """Measure the layer table and store the dynamic layers' MACs on the model (for the cost loss)."""
    table = layer_table(model, input_size)
    by_name = {r["name"]: r["macs"] for r in table}
    macs = torch.tensor([float(by_name[n]) for n, _ in model.dynamic_layers])
    model.layer_macs = macs.to(model.layer_macs.device)
    # for the whole-network cost term: what this model spends besides its dynamic layers, controller included,
    # and what its static twin (no controller) spends there
    model.fixed_bitflops = float(fixed_bitflops(table))
    model.twin_fixed_bitflops = float(fixed_bitflops([r for r in table if r["kind"] != "controller"]))
    return table


def deployed_bits(model) -> List[int]:
    """The bit-widths a dynamic layer can run at as deployed: the controller's candidates, or the one static
    width (32 for a full-precision model)."""
    if model.precision.mode == "dynamic":
        return list(model.cfg.candidates)
    return [model.precision.static_bits or FP_BITS]


def reference_bits(model) -> int:
    """The bit-width savings are measured against: the target (fixed layers' bits) of a dynamic model."""
    return model.cfg.fixed_bits if model.precision.mode == "dynamic" else deployed_bits(model)[0]


def without_controller(table: List[Dict]) -> List[Dict]:
    """The table of a network that does not run its controller (a gate whose pass 1 has fixed bits)."""
    return [r for r in table if r["kind"] != "controller"]


def fixed_bitflops(table: List[Dict]) -> int:
    """Bit-FLOPs of everything that is not dynamic (a constant per image)."""
    total = 0
    for r in table:
        if r["kind"] == "dynamic":
            continue
        total += r["macs"] * r["bits"] * r["bits"]
    return total


def bitflops(table: List[Dict], plan: Sequence[int]) -> int:
    """Bit-FLOPs of one image given the bits of each dynamic layer, in table order."""
    dyn = [r for r in table if r["kind"] == "dynamic"]
    if len(plan) != len(dyn):
        raise ValueError(f"plan has {len(plan)} bit-widths for {len(dyn)} dynamic layers")
    return fixed_bitflops(table) + sum(r["macs"] * b * b for r, b in zip(dyn, plan))


def bitflops_batch(table: List[Dict], bits: torch.Tensor) -> torch.Tensor:
    """Per-image Bit-FLOPs for a (N, L) tensor of chosen bits (float64 to stay exact)."""
    dyn = torch.tensor([r["macs"] for r in table if r["kind"] == "dynamic"], dtype=torch.float64)
    return fixed_bitflops(table) + (bits.to(torch.float64) ** 2 * dyn).sum(1)


def image_cost_ratio(model, weights: torch.Tensor, target_bits: float) -> torch.Tensor:
    """Per image (N,): the dynamic layers' Bit-FLOPs divided by their Bit-FLOPs at the target bits, for choice
    weights (N, L, K): a hard Gumbel one-hot (differentiable through it) or softmax probabilities (expected cost)."""
    macs = model.layer_macs.to(weights)
    bsq = (weights * model.candidates_tensor.to(weights) ** 2).sum(-1)  # (N, L)
    return (bsq * macs).sum(1) / (macs.sum() * target_bits ** 2)


def total_cost_ratio(model, weights: torch.Tensor, target_bits: float) -> torch.Tensor:
    """Per image (N,): the whole network's Bit-FLOPs (stem, fixed layers, controller, classifier and the dynamic
    layers' chosen bits) divided by its static twin's at the target bits (no controller): 1 is the static
    model's cost, so a model held at or under it is never dearer than the static model it is compared with."""
    macs = model.layer_macs.to(weights).double()
    bsq = (weights.double() * model.candidates_tensor.to(weights).double() ** 2).sum(-1)
    twin = model.twin_fixed_bitflops + float(macs.sum()) * target_bits ** 2
    return ((model.fixed_bitflops + (bsq * macs).sum(1)) / twin).to(weights.dtype)


def dynamic_cost_ratio(model, onehot: torch.Tensor, target_bits: float, scope: str = "dynamic") -> torch.Tensor:
    """The batch mean of the cost ratio the cost term holds to 1: over the dynamic layers (image_cost_ratio) or
    over the whole network against the static twin (total_cost_ratio)."""
    if scope == "total":
        return total_cost_ratio(model, onehot, target_bits).mean()
    if scope != "dynamic":
        raise ValueError(f"unknown cost scope {scope!r} (dynamic or total)")
    return image_cost_ratio(model, onehot, target_bits).mean()


def mean_bits(model, onehot: torch.Tensor) -> torch.Tensor:
    """The official code's cost signal: mean chosen bit-width over batch and layers (FLOPs-unweighted)."""
    return (onehot * model.candidates_tensor.to(onehot)).sum(-1).mean()
