"""DQNet ResNets: CIFAR ResNet-20/32/56 (He et al. 2016, option-B shortcuts) and ImageNet ResNet-18.

Precision plan (configurable), as in the official code: stem conv and classifier full precision (or 8-bit),
first stage and 1x1 shortcut convs fixed at `fixed_bits`, the main-path 3x3 convs of later stages dynamic.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import controller as ctl
from .layers import FP_BITS, Precision, QConv2d, QLinear, SwitchableBN

ARCHS = {"resnet20": ("cifar", 3), "resnet32": ("cifar", 5), "resnet56": ("cifar", 9), "resnet8": ("cifar", 1),
         "resnet18": ("imagenet", 2)}


@dataclass
class ModelConfig:
    arch: str = "resnet20"
    num_classes: int = 10
    candidates: List[int] = field(default_factory=lambda: [3, 4, 5])
    fixed_bits: int = 4
    first_last_bits: int = FP_BITS
    act: str = "dorefa"
    pact_init: float = 6.0
    switchable_bn: bool = False  # one BN per candidate bit-width in the dynamic layers
    controller: bool = True
    controller_pool: int = 8
    controller_hidden: int = 64
    controller_dropout: float = 0.2
    controller_bits: int = FP_BITS  # 32: full precision, as in the official code

    def as_dict(self):
        return asdict(self)


def conv_bn(conv: QConv2d, bn, x, choice=None):
    """Training: conv then BN (batch statistics; a switchable BN inside the conv, per candidate). Evaluation: BN
    folded into the conv, as exported."""
    if conv.training and not isinstance(bn, SwitchableBN):
        return bn(conv(x, choice))
    return conv(x, choice, bn=bn)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, main_kind, cfg: ModelConfig):
        super().__init__()
        q = dict(bits=cfg.fixed_bits, candidates=cfg.candidates, act=cfg.act, pact_init=cfg.pact_init)
        self.conv1 = QConv2d(cin, cout, 3, stride, 1, kind=main_kind, **q)
        switchable = cfg.switchable_bn and main_kind == "dynamic"
        norm = (lambda: SwitchableBN(cout, cfg.candidates)) if switchable else (lambda: nn.BatchNorm2d(cout))  # noqa: E731
        self.bn1 = norm()
        self.conv2 = QConv2d(cout, cout, 3, 1, 1, kind=main_kind, **q)
        self.bn2 = norm()
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(QConv2d(cin, cout, 1, stride, 0, kind="fixed", **q), nn.BatchNorm2d(cout))

    def forward(self, x, c1=None, c2=None):
        h = F.relu(conv_bn(self.conv1, self.bn1, x, c1))
        y = conv_bn(self.conv2, self.bn2, h, c2)
        sc = x if self.shortcut is None else conv_bn(self.shortcut[0], self.shortcut[1], x)
        return F.relu(y + sc)


class DQResNet(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.arch not in ARCHS:
            raise ValueError(f"unknown arch {cfg.arch!r}; choose from {', '.join(ARCHS)}")
        self.cfg = cfg
        family, nblocks = ARCHS[cfg.arch]
        self.family = family
        fl = dict(kind="fp") if cfg.first_last_bits >= FP_BITS else dict(kind="fixed", bits=cfg.first_last_bits)
        if family == "cifar":
            widths, strides = [16, 32, 64], [1, 2, 2]
            # The stem's input is the normalised 8-bit image itself, so an 8-bit stem quantizes weights only.
            self.stem = QConv2d(3, 16, 3, 1, 1, quantize_input=False, act=cfg.act, **fl)
            self.maxpool = None
        else:
            widths, strides = [64, 128, 256, 512], [1, 2, 2, 2]
            self.stem = QConv2d(3, 64, 7, 2, 3, quantize_input=False, act=cfg.act, **fl)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.stem_bn = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        self.stages = nn.ModuleList()
        for s, (w, st) in enumerate(zip(widths, strides)):
            kind = "fixed" if s == 0 else "dynamic"
            blocks = []
            for i in range(nblocks):
                blocks.append(BasicBlock(cin, w, st if i == 0 else 1, kind, cfg))
                cin = w
            self.stages.append(nn.Sequential(*blocks))
        self.fc = QLinear(cin, cfg.num_classes, act=cfg.act, pact_init=cfg.pact_init, **fl)
        self.dynamic_layers = [(f"layer{s + 1}.{i}.{c}", getattr(b, c))
                               for s, st in enumerate(self.stages) if s > 0 for i, b in enumerate(st)
                               for c in ("conv1", "conv2")]
        self.controller = None
        if cfg.controller and len(cfg.candidates) > 1:
            self.controller = ctl.BitController(widths[0], cfg.controller_pool, cfg.controller_hidden,
                                                len(self.dynamic_layers), len(cfg.candidates),
                                                cfg.controller_dropout, cfg.controller_bits, cfg.pact_init)
        self.precision = Precision("fp")
        for m in self.modules():
            if hasattr(m, "precision") and m is not self:
                m.precision = self.precision
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        self.register_buffer("layer_macs", torch.zeros(len(self.dynamic_layers)), persistent=False)
        # a buffer, so it lives on the model's device: a fresh CPU tensor per step cost a host-to-GPU copy each time
        self.register_buffer("candidates_tensor", torch.tensor(cfg.candidates, dtype=torch.float32), persistent=False)

    # -- precision -------------------------------------------------------------------------------
    def set_precision(self, mode: str, static_bits: Optional[int] = None):
        if mode not in ("fp", "static", "dynamic"):
            raise ValueError(f"unknown precision {mode!r}")
        if mode == "dynamic" and self.controller is None:
            raise ValueError("dynamic precision needs a controller (two or more candidates)")
        if mode == "static" and static_bits is None:
            raise ValueError("static precision needs static_bits")
        self.precision.mode, self.precision.static_bits = mode, static_bits

    # -- forward ---------------------------------------------------------------------------------
    def stem_forward(self, x):
        x = F.relu(conv_bn(self.stem, self.stem_bn, x))
        if self.maxpool is not None:
            x = self.maxpool(x)
        return self.stages[0](x)

    def forward(self, x, choice: Optional[torch.Tensor] = None, knob: float = 0.0, tau: float = 1.0):
        """Returns (class logits, choice, controller logits).

        In dynamic mode `choice` is computed unless given: a hard Gumbel one-hot (N, L, K) in training,
        candidate indices (N, L) from the deterministic argmax otherwise."""
        feats = self.stem_forward(x)
        ctrl_logits = None
        if self.precision.mode == "dynamic":
            ctrl_logits = self.controller(feats)
            if choice is None:
                choice = ctl.sample(ctrl_logits, tau) if self.training else \
                    ctl.choose(ctrl_logits, self.knob_cost(), knob)
        h = feats
        li = 0
        for stage in self.stages[1:]:
            for block in stage:
                c1 = c2 = None
                if choice is not None:
                    c1, c2 = choice[:, li], choice[:, li + 1]
                h = block(h, c1, c2)
                li += 2
        h = F.adaptive_avg_pool2d(h, 1).flatten(1)
        return self.fc(h), choice, ctrl_logits

    # -- cost ------------------------------------------------------------------------------------
    def knob_cost(self) -> torch.Tensor:
        """cost[l, k] = macs_l * c_k^2 / (mean macs * reference^2): the serve-time knob's penalty."""
        macs = self.layer_macs
        if float(macs.sum()) == 0:
            raise RuntimeError("layer MACs not measured: call cost.attach_macs(model, input_size) first")
        c = self.candidates_tensor.to(macs) ** 2
        ref = float(self.cfg.fixed_bits) ** 2
        return macs[:, None] * c[None, :] / (macs.mean() * ref)


def build_model(cfg: ModelConfig) -> DQResNet:
    return DQResNet(cfg)
