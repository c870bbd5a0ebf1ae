"""Checkpoints: model weights + the config that built them (+ optimizer and epoch for resuming)."""
from __future__ import annotations

from pathlib import Path

import torch

from .resnet import ModelConfig, build_model


def save_checkpoint(path: Path, model, optimizer, epoch: int, cfg) -> None:
    tmp = Path(str(path) + ".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer else None,
                "epoch": epoch, "config": cfg.as_dict()}, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a broken checkpoint


def _read(path, device="cpu"):
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(p, map_location=device, weights_only=False)  # our own files; torch 1.13 cannot read plain dicts with True
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise ValueError(f"{path} is not a dqserve checkpoint ({e})") from e


def load_weights(model, path, device="cpu") -> None:
    """Start from another phase's weights: the controller (absent in fp/static checkpoints) keeps its init, and
    learned activation clips absent from the checkpoint (an fp or DoReFa run) keep theirs (train calibrates them)."""
    state = _read(path, device)["model"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    optional = lambda k: k.startswith("controller.") or k.endswith("act.alpha")  # noqa: E731
    bad = [k for k in missing + unexpected if not optional(k)]
    if bad:
        raise ValueError(f"{path} does not match this architecture: {bad[:5]}")


def load_model(path, device="cpu"):
    """Rebuild a trained model from its checkpoint, in the precision it was trained in."""
    ck = _read(path, device)
    tc = ck["config"]
    mc = ModelConfig(**tc["model"])
    if tc["precision"] != "dynamic":
        mc.controller = False
    model = build_model(mc)
    model.load_state_dict(ck["model"])
    if tc["precision"] == "multi":  # weights for every candidate: evaluated, by default, at the widest
        model.set_precision("static", max(mc.candidates))
    else:
        model.set_precision(tc["precision"], tc.get("bits"))
    return model.to(device).eval(), tc
