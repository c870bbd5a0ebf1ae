"""Training: full-precision pretraining, static quantized, or dynamic (DQNet) fine-tuning, from checkpoints,
resumable, on one device or several processes (torchrun / DDP; gloo on CPU, nccl on CUDA)."""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from . import cost
from .calibrate import calibrate_clips
from .checkpoint import load_model, load_weights, save_checkpoint
from .data import augment, load_split, normalize
from .evaluate import accuracy
from .resnet import ModelConfig, build_model


CALIBRATION_IMAGES = 2000  # training images whose full-precision activations set the initial clips


@dataclass
class TrainConfig:
    data: str = "../shared/data/cifar10"
    out: str = "runs/resnet20_fp"
    model: ModelConfig = field(default_factory=ModelConfig)
    precision: str = "fp"  # fp | static | multi (every candidate each step, no controller) | dynamic
    bits: Optional[int] = None  # static bit-width (precision static)
    init: Optional[str] = None  # checkpoint to start from (weights only)
    # learned activation clips (PACT, LSQ) start from: 'calibrate' (each layer's MSE-optimal clip on its
    # full-precision inputs) or 'keep' (the init checkpoint's, else ModelConfig.pact_init)
    act_init: str = "calibrate"
    act_decay: Optional[float] = None  # L2 on the learned clips, as PACT's paper regularises alpha; None: weight_decay
    # knowledge distillation: the loss is (1 - w) * cross-entropy + w * KL(teacher's softmax || the model's)
    distill: Optional[str] = None  # teacher checkpoint (the full-precision model)
    distill_weight: float = 0.5
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # cosine | step
    milestones: List[int] = field(default_factory=lambda: [50, 75])
    gamma: float = 0.1
    warmup_epochs: int = 0
    # cost term: alpha * f(Bit-FLOPs ratio - 1), f = hinge | abs | square; or the official mean-bit hinge
    alpha: float = 1.0
    target_bits: float = 4.0
    cost_form: str = "hinge"  # hinge | abs | square | meanbit
    # what the ratio covers: the dynamic layers against themselves at target_bits, or the whole network (controller
    # included) against the static twin at target_bits
    cost_scope: str = "dynamic"
    tau: float = 1.0
    tau_end: Optional[float] = None  # exponential annealing from tau to tau_end over the run
    # weight of the diversity term: minus the entropy of the batch's mean choice distribution, per layer
    diversity: float = 0.0
    # weight of the confidence term: the mean entropy of each image's own choice distribution, per layer
    confidence: float = 0.0
    # weight of the sensitivity term: moves expected cost towards the images that lose most at the lowest bits
    sensitivity: float = 0.0
    seed: int = 0
    train_limit: Optional[int] = None
    eval_limit: Optional[int] = None
    device: str = "auto"
    amp: bool = False  # bf16 autocast on CUDA
    channels_last: bool = False  # NHWC memory format (cuDNN's fast path for bf16 convs)
    compile: bool = False  # torch.compile the training forward (torch 2.x; parts that fail to compile run eagerly)
    progress: bool = True

    def as_dict(self):
        return asdict(self)


def _dist_info():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is available")
    if cfg.device == "cuda":  # torch 2.x's set_device refuses a device without an index
        return torch.device("cuda", local_rank)
    return torch.device(cfg.device)


def lr_at(cfg: TrainConfig, epoch_float: float) -> float:
    if cfg.warmup_epochs and epoch_float < cfg.warmup_epochs:
        return cfg.lr * epoch_float / cfg.warmup_epochs
    if cfg.schedule == "cosine":
        span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * min(1.0, (epoch_float - cfg.warmup_epochs) / span)))
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** sum(epoch_float >= m for m in cfg.milestones)
    raise ValueError(f"unknown schedule {cfg.schedule!r} (cosine or step)")


def tau_at(cfg: TrainConfig, epoch_float: float) -> float:
    if cfg.tau_end is None or cfg.epochs == 0:
        return cfg.tau
    return cfg.tau * (cfg.tau_end / cfg.tau) ** min(1.0, epoch_float / cfg.epochs)


def cost_loss(cfg: TrainConfig, model, onehot) -> torch.Tensor:
    if cfg.cost_form == "meanbit":  # the official code: hinge on the mean bit-width, FLOPs-unweighted
        return cfg.alpha * F.relu(cost.mean_bits(model, onehot) - cfg.target_bits)
    r = cost.dynamic_cost_ratio(model, onehot, cfg.target_bits, cfg.cost_scope) - 1
    if cfg.cost_form == "hinge":
        return cfg.alpha * F.relu(r)
    if cfg.cost_form == "abs":
        return cfg.alpha * r.abs()
    if cfg.cost_form == "square":
        return cfg.alpha * r * r
    raise ValueError(f"unknown cost form {cfg.cost_form!r}")


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy of categorical distributions along the last axis."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(-1)


def diversity_loss(ctrl_logits: torch.Tensor) -> torch.Tensor:
    """Minus the entropy of the batch-mean choice distribution, averaged over dynamic layers (0 when every image
    picks the same candidate, -log K when the batch uses all K equally). Weighted by --diversity it counters the
    controller's collapse to one bit plan for every image; which images get which bits is left to the task loss."""
    return -_entropy(F.softmax(ctrl_logits.float(), dim=-1).mean(0)).mean()


def confidence_loss(ctrl_logits: torch.Tensor) -> torch.Tensor:
    """The mean entropy of each image's choice distribution, averaged over dynamic layers (0 when every image is
    sure of its choice, log K when its logits are flat). The diversity term alone is met by flat logits: the
    Gumbel samples then spread over every candidate while the argmax used at evaluation takes whichever logit
    the cost term tilted up, so a model trained at the target runs far below it (docs/results.md). Weighted
    equally with --diversity, the two make minus the mutual information between image and choice: different
    images, different choices, each one decided. On the CPU runs that weight let the controller collapse to one
    plan, and a quarter of it left the mismatch in place (docs/results.md)."""
    return _entropy(F.softmax(ctrl_logits.float(), dim=-1)).mean()


def sensitivity_loss(model, x: torch.Tensor, y: torch.Tensor, ctrl_logits: torch.Tensor, target_bits: float) -> torch.Tensor:
    """Tells the controller which images need bits. Each image's sensitivity is its cross-entropy with every
    dynamic layer at the lowest candidate minus that at the highest (two extra forward passes without gradient,
    in eval mode: deployed arithmetic, BN statistics untouched); the term is minus the batch mean of the
    standardised sensitivity times the image's expected cost ratio under the controller's softmax. The weights
    sum to zero, so it moves cost between images and leaves the budget to the cost term. The end-to-end loss
    alone gives the controller only a first-order, per-step signal through the straight-through estimator, and
    it settles on one plan for every image (docs/results.md)."""
    n, layers, k = ctrl_logits.shape
    with torch.no_grad():
        was_training = model.training
        model.eval()
        ce = [F.cross_entropy(model(x, choice=torch.full((n, layers), c, device=x.device))[0].float(), y,
                              reduction="none") for c in (0, k - 1)]
        model.train(was_training)
        gain = ce[0] - ce[1]
        z = (gain - gain.mean()) / (gain.std() + 1e-6)
    expected = cost.image_cost_ratio(model, F.softmax(ctrl_logits.float(), dim=-1), target_bits)
    return -(z * expected).mean()


def _compiled(net):
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True  # a part that fails to compile runs eagerly (logged), never stops the run
    return torch.compile(net)


def make_model(cfg: TrainConfig):
    mc = cfg.model
    if cfg.precision != "dynamic":
        mc.controller = False
    model = build_model(mc)
    if cfg.precision == "multi":
        model.set_precision("static", max(mc.candidates))
    else:
        model.set_precision(cfg.precision, cfg.bits)
    return model


def multi_precision_loss(cfg: TrainConfig, model, net, x, y, teacher_log_probs):
    """Every candidate bit-width on the same batch, widest first; the loss is their mean. Each narrower width
    distils the widest's predictions (detached), or the teacher's when there is one (--distill), with weight
    distill_weight: weights trained so are good at every candidate at once (any-precision training), which a
    controller then has something to choose between. Returns (loss, the widest's logits)."""
    widest_logits, total = None, 0.0
    for b in sorted(cfg.model.candidates, reverse=True):
        model.set_precision("static", b)
        logits = net(x)[0].float()
        loss = F.cross_entropy(logits, y)
        target = teacher_log_probs if teacher_log_probs is not None else \
            (F.log_softmax(widest_logits.detach(), dim=1) if widest_logits is not None else None)
        if target is not None:
            kl = F.kl_div(F.log_softmax(logits, dim=1), target, log_target=True, reduction="batchmean")
            loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * kl
        widest_logits = logits if widest_logits is None else widest_logits
        total = total + loss
    return total / len(cfg.model.candidates), widest_logits


def train(cfg: TrainConfig) -> Path:
    world, rank, local = _dist_info()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and cfg.device != "cpu" else "gloo")
    device = _device(cfg, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest conv algorithms once
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    out = Path(cfg.out)
    main = rank == 0
    if main:
        out.mkdir(parents=True, exist_ok=True)

    train_set = load_split(cfg.data, "train").subset(cfg.train_limit, cfg.seed)
    test_set = load_split(cfg.data, "test").subset(cfg.eval_limit, cfg.seed)
    cfg.model.num_classes = len(train_set.classes)
    model = make_model(cfg)
    input_size = tuple(train_set.images.shape[1:])
    cost.attach_macs(model, input_size)
    model.to(device)

    start_epoch, state = 0, None
    last = out / "last.pt"
    if last.is_file():
        state = torch.load(last, map_location=device, weights_only=False)  # our own files; torch 1.13 cannot read plain dicts with True
        model.load_state_dict(state["model"])
        start_epoch = state["epoch"]
    else:
        if cfg.init:
            load_weights(model, cfg.init, device)
        if cfg.precision != "fp" and cfg.model.act != "dorefa" and cfg.act_init == "calibrate":
            clips = calibrate_clips(model, normalize(train_set.images[:CALIBRATION_IMAGES].to(device)),
                                    lambda m: m.bits if m.kind == "fixed" else (cfg.bits or round(cfg.target_bits)),
                                    seed=cfg.seed)
            if main:
                (out / "calibration.json").write_text(json.dumps(clips, indent=2))
    decay, no_decay, clips = [], [], []
    for n, p in model.named_parameters():
        (clips if n.endswith("act.alpha") else no_decay if p.ndim <= 1 else decay).append(p)
    act_decay = cfg.weight_decay if cfg.act_decay is None else cfg.act_decay
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0},
                           {"params": clips, "weight_decay": act_decay}], lr=cfg.lr, momentum=cfg.momentum,
                          nesterov=True)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    # In fp pretraining the PACT clip values (and nothing else) take no part in the loss.
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                    find_unused_parameters=cfg.precision == "fp") if world > 1 else model
    images, labels = train_set.images.to(device), train_set.labels.to(device)
    test_x, test_y = test_set.images.to(device), test_set.labels.to(device)
    n = len(labels)
    steps = n // (cfg.batch_size * world)
    if steps == 0:
        raise SystemExit(f"error: {n} training images are fewer than one batch of {cfg.batch_size} x {world}")
    log = None
    if main:
        log_path = out / "log.jsonl"
        if log_path.is_file():  # a run stopped between an epoch's log line and its checkpoint logs that epoch again
            kept = log_path.read_text().splitlines()[:start_epoch]
            log_path.write_text("".join(line + "\n" for line in kept))
        log = open(log_path, "a")
        (out / "config.json").write_text(json.dumps(cfg.as_dict(), indent=2))
    amp = cfg.amp and device.type == "cuda"
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    forward = _compiled(net) if cfg.compile else net
    teacher = load_model(cfg.distill, device)[0] if cfg.distill else None
    for epoch in range(start_epoch, cfg.epochs):
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        perm = torch.randperm(n, generator=g)[: steps * cfg.batch_size * world]
        mine = perm[rank::world].to(device)
        model.train()
        # sums stay on the device: a float() per step would stall the GPU on every batch (small models are
        # launch-bound there, so the CPU must be free to queue the next step while the GPU runs this one)
        t0, seen = time.time(), 0
        loss_sum, correct, ratio_sum = (torch.zeros((), device=device, dtype=torch.float64) for _ in range(3))
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (main and cfg.progress),
                   leave=False)
        for step in bar:
            ep = epoch + step / steps
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, ep)
            idx = mine[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x = normalize(augment(images[idx], g)).contiguous(memory_format=fmt)
            y = labels[idx]
            with (torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()):
                # a tensor: a compiled forward would be recompiled for every new Python float
                tau = torch.tensor(tau_at(cfg, ep), device=device) if cfg.compile else tau_at(cfg, ep)
                soft = None
                if teacher is not None:
                    with torch.no_grad():
                        soft = F.log_softmax(teacher(x)[0].float(), dim=1)
                if cfg.precision == "multi":
                    loss, logits = multi_precision_loss(cfg, model, forward, x, y, soft)
                else:
                    logits, choice, ctrl_logits = forward(x, tau=tau)
                    loss = F.cross_entropy(logits.float(), y)
                if soft is not None and cfg.precision != "multi":
                    kl = F.kl_div(F.log_softmax(logits.float(), dim=1), soft, log_target=True, reduction="batchmean")
                    loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * kl
                if cfg.precision == "dynamic":
                    loss = loss + cost_loss(cfg, model, choice.float())
                    if cfg.diversity:
                        loss = loss + cfg.diversity * diversity_loss(ctrl_logits)
                    if cfg.confidence:
                        loss = loss + cfg.confidence * confidence_loss(ctrl_logits)
                    if cfg.sensitivity:
                        loss = loss + cfg.sensitivity * sensitivity_loss(model, x, y, ctrl_logits, cfg.target_bits)
                    ratio_sum += cost.dynamic_cost_ratio(model, choice.float().detach(), cfg.target_bits,
                                                         cfg.cost_scope).detach() * len(y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
            loss_sum += loss.detach().float() * len(y)
            correct += (logits.argmax(1) == y).sum()
            if not bar.disable:
                bar.set_postfix(loss=f"{float(loss_sum) / seen:.3f}", acc=f"{float(correct) / seen:.3f}")
        if main:
            by_bits = {}
            if cfg.precision == "multi":  # every candidate's top-1; the model is saved at the widest
                for b in cfg.model.candidates:
                    model.set_precision("static", b)
                    by_bits[str(b)] = accuracy(model, test_x, test_y)["top1"]
                model.set_precision("static", max(cfg.model.candidates))
            ev = accuracy(model, test_x, test_y)
            rec = dict(epoch=epoch + 1, lr=lr_at(cfg, epoch + 1), loss=float(loss_sum) / seen, train_acc=float(correct) / seen,
                       test_acc=ev["top1"], seconds=round(time.time() - t0, 2))
            if by_bits:
                rec["test_acc_by_bits"] = by_bits
            if cfg.precision == "dynamic":
                rec.update(train_cost_ratio=float(ratio_sum) / seen, test_mean_bits=ev["mean_bits"],
                           test_cost_ratio=ev["cost_ratio"])
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if cfg.progress:
                tqdm.write(json.dumps(rec))
            save_checkpoint(last, model, opt, epoch + 1, cfg)
    if main:
        save_checkpoint(out / "model.pt", model, None, cfg.epochs, cfg)
        log.close()
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return out / "model.pt"
