"""Initial clip values for learned activation quantizers (PACT, LSQ), from the full-precision model's statistics.

A fixed initial clip (PACT's paper starts at 10, this project used 6) is far from what a layer needs: the inputs of
each block's first conv and shortcut are the un-normalised residual stream (p99 3.5-5 in our ResNet-20), those of
its second conv come straight from BN + ReLU (p99 about 1.5). Each layer instead starts at the clip that minimises
the mean squared quantization error of its own inputs at the bits it will run at, measured on training images with
the network in full precision (the usual MSE calibration of post-training quantization).
"""
from __future__ import annotations

from typing import Dict

import torch

from .quant import levels


def mse_clip(values: torch.Tensor, bits: int, grid: int = 100) -> float:
    """The clip c in (0, max] minimising mean((clamp(v, 0, c) quantized to 2^b levels - v)^2) over `values`."""
    v = values.flatten().float().clamp_min(0)
    top = float(v.max())
    if top <= 0:
        return 1.0  # a layer whose inputs are all zero: any clip is as good; keep DoReFa's
    n = levels(bits)
    best, best_err = top, float("inf")
    for c in torch.linspace(top / grid, top, grid).tolist():
        q = torch.round(v.clamp(max=c) * (n / c)) * (c / n)
        err = float(((q - v) ** 2).mean())
        if err < best_err:
            best, best_err = c, err
    return best


@torch.no_grad()
def calibrate_clips(model, images: torch.Tensor, bits_of, batch_size: int = 250,
                    samples_per_layer: int = 200_000, seed: int = 0) -> Dict[str, float]:
    """Set every learned clip (`act.alpha`) of `model` from its full-precision inputs on `images` (normalised).

    bits_of(layer) gives the bits the layer will be trained at. Only layers that see input in a full-precision
    forward pass are calibrated (the controller, absent from fp and static runs, keeps its initial clip).
    Returns {layer name: clip}."""
    targets = {name: m for name, m in model.named_modules()
               if getattr(m, "act", None) is not None and m.act.alpha is not None}
    seen: Dict[str, list] = {name: [] for name in targets}
    g = torch.Generator().manual_seed(seed)
    per_batch = max(1, samples_per_layer * batch_size // max(len(images), 1))

    def hook(name):
        def grab(_module, inputs):
            x = inputs[0].detach().flatten()
            idx = torch.randint(len(x), (min(per_batch, len(x)),), generator=g).to(x.device)
            seen[name].append(x[idx].float().cpu())
        return grab

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in targets.items()]
    mode, static_bits = model.precision.mode, model.precision.static_bits
    was_training = model.training
    try:
        model.set_precision("fp")
        model.eval()
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size])
    finally:
        for h in handles:
            h.remove()
        model.precision.mode, model.precision.static_bits = mode, static_bits
        model.train(was_training)
    clips = {}
    for name, m in targets.items():
        if seen[name]:
            clips[name] = mse_clip(torch.cat(seen[name]), bits_of(m))
            m.act.alpha.fill_(clips[name])
    return clips
