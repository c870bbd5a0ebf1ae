"""Evaluation: top-1, per-image Bit-FLOPs, bit histograms, accuracy per cost decile, top-1 with the controller's
plans shuffled across images, and the serve-time knob sweep that becomes the bundle's calibration table.
Always deterministic (argmax controller, no Gumbel). `evaluate` runs either the trained model's own arithmetic
(ModelSubject) or the served int8 network (NetSubject: what `export` and the server compute); a dynamic network in
the int8 one, optionally with a confidence-gated second pass (Gate: the bundle's "policy")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import cost
from .data import normalize

KNOBS = (-1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 50.0)
SHUFFLES = 5  # permutations of the controller's plans scored for top1_shuffled_plans_range
Run = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # logits (N, C), pass-1 bits (N, L), second pass ran (N,)


@dataclass(frozen=True)
class Gate:
    """A confidence-gated second pass (the dynamic bundle's "policy", docs/model-bundle.md): pass 1 runs every
    dynamic layer at `first_bits` (None: the controller's plan); an image whose top-1 softmax probability is below
    `threshold` runs the body again at `second_bits` from the same stem outputs, and pass 2's logits answer."""

    first_bits: Optional[int]
    second_bits: int
    threshold: float

    def check(self, candidates: Sequence[int]) -> None:
        for key, b in (("first", self.first_bits), ("second", self.second_bits)):
            if b is not None and b not in candidates:
                raise ValueError(f"the gate's {key} bits {b} are not a candidate {list(candidates)}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"the gate's threshold {self.threshold} is not in (0, 1]")

    def manifest(self) -> Dict:
        return {"kind": "gated", "first_bits": self.first_bits, "second_bits": self.second_bits,
                "threshold": self.threshold}


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 softmax probability of float32 logits (..., C), in float64: 1 / sum_c exp(l_c - max l). Summed class
    by class, left to right, as the server sums it (src/engine/gate.ts): the gate compares it with a threshold, so
    training and server must round alike."""
    lg = logits.double()
    e = torch.exp(lg - lg.max(dim=-1, keepdim=True).values)
    total = torch.zeros(lg.shape[:-1], dtype=torch.float64)
    for c in range(lg.shape[-1]):
        total = total + e[..., c]
    return 1.0 / total


def second_pass_bitflops(table: List[Dict], bits: int) -> int:
    """What a second pass adds to an image's Bit-FLOPs: the dynamic layers again, all at `bits`."""
    dyn = sum(1 for r in table if r["kind"] == "dynamic")
    return cost.bitflops(table, [bits] * dyn) - cost.fixed_bitflops(table)


@torch.no_grad()
def predict(model, images_u8: torch.Tensor, knob: float = 0.0, batch: int = 500, force_bits: Optional[int] = None,
            plans: Optional[torch.Tensor] = None):
    """Logits, bits per dynamic layer (N, L) and controller logits for uint8 images, in eval mode. A dynamic model
    runs the controller's choice, every layer at `force_bits`, or the given `plans` (N, L candidate indices)."""
    model.eval()
    cands = model.candidates_tensor.cpu()  # a buffer on the model's device; every output here is on the CPU
    outs, bits, ctrl = [], [], []
    for i in range(0, len(images_u8), batch):
        x = normalize(images_u8[i:i + batch])
        choice = None
        if model.precision.mode == "dynamic":
            if force_bits is not None:
                choice = torch.full((len(x), len(model.dynamic_layers)), model.cfg.candidates.index(force_bits),
                                    device=x.device)
            elif plans is not None:
                choice = plans[i:i + batch].to(x.device)
        logits, choice, cl = model(x, choice=choice, knob=knob)
        outs.append(logits.float().cpu())
        if choice is not None:
            bits.append(cands[choice.cpu()])
            ctrl.append(cl.float().cpu())
        else:
            b = float(cost.deployed_bits(model)[0])
            bits.append(torch.full((len(x), len(model.dynamic_layers)), b))
    return torch.cat(outs), torch.cat(bits), (torch.cat(ctrl) if ctrl else None)


def accuracy(model, images_u8, labels) -> Dict:
    """The quick per-epoch check used during training."""
    logits, bits, _ = predict(model, images_u8)
    res = {"top1": float((logits.argmax(1) == labels.cpu()).float().mean())}
    if model.precision.mode == "dynamic":
        macs = model.layer_macs.cpu().double()
        ratio = (bits.double() ** 2 * macs).sum(1) / (macs.sum() * model.cfg.fixed_bits ** 2)
        res.update(mean_bits=float(bits.mean()), cost_ratio=float(ratio.mean()))
    return res


def public(ev: Dict) -> Dict:
    """The report without the per-image arrays (keys starting with '_')."""
    return {k: v for k, v in ev.items() if not k.startswith("_")}


def cost_order(bitflops: np.ndarray) -> np.ndarray:
    """Image indices from cheapest to costliest, ties in a fixed random order: the test set is stored class by
    class, so a stable sort would fill a tied stretch of deciles (or an image grid) with whole classes."""
    return np.lexsort((np.random.default_rng(0).permutation(len(bitflops)), bitflops))


def _stats(v: np.ndarray) -> Dict:
    return {"mean": float(v.mean()), "p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)),
            "min": float(v.min()), "max": float(v.max())}


class ModelSubject:
    """The trained model in its own evaluation arithmetic (BN folded, float convs on integer levels: deploy.py)."""

    def __init__(self, model):
        self.model = model
        self.dynamic = model.precision.mode == "dynamic"
        self.candidates = list(model.cfg.candidates) if self.dynamic else [int(cost.deployed_bits(model)[0])]
        self.knob_cost = model.knob_cost().cpu() if self.dynamic else None

    def run(self, images_u8, variants: Sequence["Variant"], batch: int = 500) -> List[Run]:
        outs = []
        for v in variants:
            if v.gate is not None:
                raise ValueError("a gated second pass runs in the int8 arithmetic only (--arithmetic int8)")
            logits, bits, _ = predict(self.model, images_u8, knob=v.knob, batch=batch, force_bits=v.force_bits,
                                      plans=v.plans)
            outs.append((logits, bits, torch.zeros(len(logits), dtype=torch.bool)))
        return outs


class NetSubject:
    """The network in the served arithmetic (int8.py: what the bundle's ONNX graphs compute)."""

    def __init__(self, net, knob_cost: Optional[torch.Tensor]):
        self.net, self.knob_cost = net, knob_cost
        # several candidates: a controller's, or (without one) a gate's fixed pass-1 and pass-2 widths
        self.dynamic = len(net.candidates) > 1
        self.candidates = list(net.candidates)

    def run(self, images_u8, variants: Sequence["Variant"], batch: int = 500) -> List[Run]:
        """Each variant's logits, pass-1 bits and second-pass flags; the stem and controller run once per batch for
        all of them, and a gated variant's second pass reuses that stem state (as the server does)."""
        from . import int8
        from .controller import choose

        cands = torch.tensor(self.candidates, dtype=torch.float32)
        parts = [([], [], []) for _ in variants]
        L = len(self.net.dynamic_layers)
        with torch.no_grad():
            for i in range(0, len(images_u8), batch):
                x = images_u8[i:i + batch].cpu()
                state, ctl = int8.forward_stem(self.net, x)
                for v, (lg, bt, sp) in zip(variants, parts):
                    force = v.force_bits
                    if v.gate is not None and v.gate.first_bits is not None:
                        force = v.gate.first_bits
                    if not self.dynamic:
                        idx = torch.zeros((len(x), L), dtype=torch.long)
                    elif force is not None:
                        idx = torch.full((len(x), L), self.candidates.index(force))
                    elif v.plans is not None:
                        idx = v.plans[i:i + batch]
                    elif ctl is None:
                        raise ValueError("this network has no controller: its bits must be fixed (force_bits, a gate's "
                                         "first bits) or given (plans)")
                    else:
                        idx = choose(ctl, self.knob_cost, v.knob)
                    bits = cands[idx]
                    logits = int8.forward_body(self.net, state, bits.long())
                    second = torch.zeros(len(x), dtype=torch.bool)
                    if v.gate is not None:
                        second = confidence(logits) < v.gate.threshold
                        rows = second.nonzero(as_tuple=True)[0]
                        if len(rows):  # int8 arithmetic is row-independent: the rows alone, as the server runs them
                            sub = int8.StemState(state.z[rows], state.sc[rows], state.features[rows])
                            again = torch.full((len(rows), L), v.gate.second_bits)
                            logits[rows] = int8.forward_body(self.net, sub, again)
                    lg.append(logits)
                    bt.append(bits)
                    sp.append(second)
        return [(torch.cat(lg), torch.cat(bt), torch.cat(sp)) for lg, bt, sp in parts]


class Variant:
    """One way to run the controller: its choice at a knob, every layer forced to one bit-width, or given plans
    (N, L candidate indices); with a `gate`, that pass 1 (unless the gate fixes its bits) and the gated pass 2."""

    def __init__(self, knob: float = 0.0, force_bits: Optional[int] = None, plans: Optional[torch.Tensor] = None,
                 gate: Optional[Gate] = None):
        self.knob, self.force_bits, self.plans, self.gate = knob, force_bits, plans, gate


def _bitflops(table: List[Dict], bits: torch.Tensor, second: torch.Tensor, gate: Optional[Gate]) -> np.ndarray:
    """Per-image Bit-FLOPs: pass 1's plan, plus a second pass where one ran."""
    bf = cost.bitflops_batch(table, bits).numpy()
    if gate is not None:
        bf = bf + second.numpy() * float(second_pass_bitflops(table, gate.second_bits))
    return bf


def evaluate(subject, table: List[Dict], images_u8, labels, reference_bits: int,
             knobs: Sequence[float] = KNOBS, policy: Optional[Gate] = None) -> Dict:
    """Everything the report, the plots and the manifest need. `subject`: ModelSubject or NetSubject. With a
    `policy` (dynamic only) the main run and the knob sweep are gated, and their Bit-FLOPs count both passes; the
    shuffled plans and the static candidates stay single-pass: they describe the weights."""
    labels = labels.cpu()
    if policy is not None:
        if not subject.dynamic:
            raise ValueError("a gated second pass needs a dynamic network (a controller's candidates)")
        policy.check(subject.candidates)
        if policy.first_bits is not None:  # nothing to choose: the controller does not run (export leaves it out)
            table = cost.without_controller(table)
    # a gate that fixes pass 1's bits leaves the knob nothing to move: no sweep
    sweep = subject.dynamic and (policy is None or policy.first_bits is None)
    knobs = sorted(set(knobs) | {0.0}) if sweep else []
    variants = [Variant(gate=policy)] + [Variant(knob=k, gate=policy) for k in knobs]
    if subject.dynamic:
        variants += [Variant(force_bits=b) for b in subject.candidates]
    results = subject.run(images_u8, variants)
    logits, bits, second = results[0]
    correct = (logits.argmax(1) == labels).numpy()
    bf = _bitflops(table, bits, second, policy)
    dyn = [r["name"] for r in table if r["kind"] == "dynamic"]
    reference = cost.bitflops(table, [reference_bits] * len(dyn))
    res = {
        "images": int(len(labels)),
        "top1": float(correct.mean()),
        "bitflops": _stats(bf),
        "bitflops_reference": reference,
        "savings_vs_reference": float(1 - bf.mean() / reference),
        "mean_bits": float(bits.mean()),
        "layers": dyn,
        "bit_histogram": {n: {str(int(b)): int((bits[:, i] == b).sum()) for b in torch.unique(bits[:, i]).tolist()}
                          for i, n in enumerate(dyn)},
    }
    if policy is not None:
        res["policy"] = policy.manifest()
        res["second_pass_rate"] = float(second.numpy().mean())
    deciles = np.array_split(cost_order(bf), 10)
    res["accuracy_by_cost_decile"] = [
        {"decile": i + 1, "images": int(len(d)), "mean_bitflops": float(bf[d].mean()) if len(d) else 0.0,
         "top1": float(correct[d].mean()) if len(d) else 0.0} for i, d in enumerate(deciles)]
    calibration, knob_outputs = [], {}
    if subject.dynamic:
        for k, (lk, bk, sk) in zip(knobs, results[1:1 + len(knobs)]):
            bfk = _bitflops(table, bk, sk, policy)
            calibration.append({"knob": float(k), "accuracy": float((lk.argmax(1) == labels).float().mean()),
                                "mean_bitflops": float(bfk.mean()), "mean_bits": float(bk.mean())})
            if policy is not None:
                calibration[-1]["second_pass_rate"] = float(sk.numpy().mean())
            knob_outputs[float(k)] = (lk, bk, sk)
        # Instance-awareness: the same plans dealt to other images (same cost distribution, same mean Bit-FLOPs).
        # If the controller matches plans to images, its own assignment scores higher than a shuffled one. One
        # permutation moves top-1 by tenths of a point, so the range over SHUFFLES of them comes with it.
        own = (bits[..., None] == torch.tensor(subject.candidates, dtype=bits.dtype)).float().argmax(-1)
        shuffles = [Variant(plans=own[torch.from_numpy(np.random.default_rng(seed).permutation(len(own)))])
                    for seed in range(SHUFFLES)]
        top1s = [float((ls.argmax(1) == labels).float().mean()) for ls, _, _ in subject.run(images_u8, shuffles)]
        res["top1_shuffled_plans"], res["top1_shuffled_plans_range"] = top1s[0], [min(top1s), max(top1s)]
        res["static_at_candidates"] = []
        for b, (lb, bb, _) in zip(subject.candidates, results[1 + len(knobs):]):
            res["static_at_candidates"].append({"bits": b, "accuracy": float((lb.argmax(1) == labels).float().mean()),
                                                "bitflops": float(cost.bitflops_batch(table, bb)[0])})
    res["calibration"] = calibration
    res["_per_image"] = {"bitflops": bf, "correct": correct, "bits": bits.numpy().astype(np.int64),
                         "top1": logits.argmax(1).numpy(), "logits": logits.numpy(), "second": second.numpy(),
                         "knobs": knob_outputs}
    return res


HOLDOUT_SPLITS = 20  # random halvings of the test set in gate_sweep's held-out threshold choice
HOLDOUT_GRID = tuple(round(0.05 + 0.01 * i, 2) for i in range(95))  # thresholds 0.05 .. 0.99 it chooses from


def gate_sweep(subject, table: List[Dict], images_u8, labels, first_bits: Optional[int], second_bits: int,
               thresholds: Sequence[float]) -> Dict:
    """The gate against the same weights' static line (every dynamic layer at one candidate, no controller: what a
    static model costs). `rows`: top-1, mean Bit-FLOPs (the controller's only when pass 1 is its plan), second-pass
    rate and margin over the static line (top-1 minus the line's top-1 interpolated at the same mean Bit-FLOPs) at
    each threshold, all on the whole set. `held_out`: the honest figure: on each of HOLDOUT_SPLITS random halvings the
    threshold with the best margin on one half is scored on the other half. Pass 1 (`first_bits`, or the
    controller at knob 0) and every static candidate run once over every image; each threshold then picks per
    image, which is what the gated run computes (int8 arithmetic is row-independent)."""
    if not subject.dynamic:
        raise ValueError("a gated second pass needs a dynamic network (a controller's candidates)")
    for t in thresholds:
        Gate(first_bits, second_bits, t).check(subject.candidates)
    labels = labels.cpu()
    runs = subject.run(images_u8, [Variant(force_bits=first_bits)] + [Variant(force_bits=b) for b in subject.candidates])
    (l1, b1, _), static = runs[0], runs[1:]
    # static models and a pass 1 at fixed bits do not run the controller: their costs leave it out
    plain = cost.without_controller(table)
    conf, bf1 = confidence(l1).numpy(), cost.bitflops_batch(plain if first_bits is not None else table, b1).numpy()
    extra = float(second_pass_bitflops(table, second_bits))
    ok1 = (l1.argmax(1) == labels).numpy()
    ok2 = (static[subject.candidates.index(second_bits)][0].argmax(1) == labels).numpy()
    line_bf = np.array([float(cost.bitflops_batch(plain, bb)[0]) for _, bb, _ in static])  # increasing in bits
    line_ok = np.stack([(lb.argmax(1) == labels).numpy() for lb, _, _ in static])  # (candidates, N)

    def score(t: float, idx: np.ndarray) -> Dict:
        second = conf[idx] < t
        top1 = float(np.where(second, ok2[idx], ok1[idx]).mean())
        bf = float((bf1[idx] + second * extra).mean())
        return {"threshold": float(t), "top1": top1, "mean_bitflops": bf, "second_pass_rate": float(second.mean()),
                "margin_vs_static": top1 - float(np.interp(bf, line_bf, line_ok[:, idx].mean(1)))}

    every = np.arange(len(labels))
    held = []
    for seed in range(HOLDOUT_SPLITS):
        perm = np.random.default_rng(seed).permutation(len(labels))
        a, b = perm[:len(perm) // 2], perm[len(perm) // 2:]
        best = max(HOLDOUT_GRID, key=lambda t: score(t, a)["margin_vs_static"])
        held.append(score(best, b))
    col = lambda k: np.array([h[k] for h in held])  # noqa: E731
    return {
        "first_bits": first_bits, "second_bits": second_bits,
        "static_line": [{"bits": b, "bitflops": float(f), "top1": float(o.mean())}
                        for b, f, o in zip(subject.candidates, line_bf, line_ok)],
        "rows": [score(t, every) for t in thresholds],
        "held_out": {"splits": HOLDOUT_SPLITS, "rule": "threshold with the best margin_vs_static on a random half "
                     "(grid 0.05..0.99), scored on the other half",
                     "threshold_mean": float(col("threshold").mean()),
                     "threshold_range": [float(col("threshold").min()), float(col("threshold").max())],
                     "top1_mean": float(col("top1").mean()), "mean_bitflops": float(col("mean_bitflops").mean()),
                     "margin_mean": float(col("margin_vs_static").mean()),
                     "margin_sd": float(col("margin_vs_static").std(ddof=1))},
    }
