"""Evaluation: top-1, per-image Bit-FLOPs, bit histograms, accuracy per cost decile, top-1 with the controller's
plans shuffled across images, and the serve-time knob sweep that becomes the bundle's calibration table.
Always deterministic (argmax controller, no Gumbel). `evaluate` runs either the trained model's own arithmetic
(ModelSubject) or the served int8 network (NetSubject: what `export` and the server compute)."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from . import cost
from .data import normalize

KNOBS = (-1.0, -0.5, 0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 20.0, 50.0)
SHUFFLES = 5  # permutations of the controller's plans scored for top1_shuffled_plans_range


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

    def run(self, images_u8, variants: Sequence["Variant"], batch: int = 500):
        outs = []
        for v in variants:
            logits, bits, _ = predict(self.model, images_u8, knob=v.knob, batch=batch, force_bits=v.force_bits,
                                      plans=v.plans)
            outs.append((logits, bits))
        return outs


class NetSubject:
    """The network in the served arithmetic (int8.py: what the bundle's ONNX graphs compute)."""

    def __init__(self, net, knob_cost: Optional[torch.Tensor]):
        self.net, self.knob_cost = net, knob_cost
        self.dynamic = net.controller is not None
        self.candidates = list(net.candidates)

    def run(self, images_u8, variants: Sequence["Variant"], batch: int = 500):
        """Each variant's logits and bits; the stem and controller run once per batch for all of them."""
        from . import int8
        from .controller import choose

        cands = torch.tensor(self.candidates, dtype=torch.float32)
        parts = [([], []) for _ in variants]
        L = len(self.net.dynamic_layers)
        with torch.no_grad():
            for i in range(0, len(images_u8), batch):
                x = images_u8[i:i + batch].cpu()
                state, ctl = int8.forward_stem(self.net, x)
                for v, (lg, bt) in zip(variants, parts):
                    if not self.dynamic:
                        idx = torch.zeros((len(x), L), dtype=torch.long)
                    elif v.force_bits is not None:
                        idx = torch.full((len(x), L), self.candidates.index(v.force_bits))
                    elif v.plans is not None:
                        idx = v.plans[i:i + batch]
                    else:
                        idx = choose(ctl, self.knob_cost, v.knob)
                    bits = cands[idx]
                    lg.append(int8.forward_body(self.net, state, bits.long()))
                    bt.append(bits)
        return [(torch.cat(lg), torch.cat(bt)) for lg, bt in parts]


class Variant:
    """One way to run the controller: its choice at a knob, every layer forced to one bit-width, or given plans
    (N, L candidate indices)."""

    def __init__(self, knob: float = 0.0, force_bits: Optional[int] = None, plans: Optional[torch.Tensor] = None):
        self.knob, self.force_bits, self.plans = knob, force_bits, plans


def evaluate(subject, table: List[Dict], images_u8, labels, reference_bits: int,
             knobs: Sequence[float] = KNOBS) -> Dict:
    """Everything the report, the plots and the manifest need. `subject`: ModelSubject or NetSubject."""
    labels = labels.cpu()
    knobs = sorted(set(knobs) | {0.0}) if subject.dynamic else []
    variants = [Variant()] + [Variant(knob=k) for k in knobs]
    if subject.dynamic:
        variants += [Variant(force_bits=b) for b in subject.candidates]
    results = subject.run(images_u8, variants)
    logits, bits = results[0]
    correct = (logits.argmax(1) == labels).numpy()
    bf = cost.bitflops_batch(table, bits).numpy()
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
    deciles = np.array_split(cost_order(bf), 10)
    res["accuracy_by_cost_decile"] = [
        {"decile": i + 1, "images": int(len(d)), "mean_bitflops": float(bf[d].mean()) if len(d) else 0.0,
         "top1": float(correct[d].mean()) if len(d) else 0.0} for i, d in enumerate(deciles)]
    calibration, knob_outputs = [], {}
    if subject.dynamic:
        for k, (lk, bk) in zip(knobs, results[1:1 + len(knobs)]):
            bfk = cost.bitflops_batch(table, bk).numpy()
            calibration.append({"knob": float(k), "accuracy": float((lk.argmax(1) == labels).float().mean()),
                                "mean_bitflops": float(bfk.mean()), "mean_bits": float(bk.mean())})
            knob_outputs[float(k)] = (lk, bk)
        # Instance-awareness: the same plans dealt to other images (same cost distribution, same mean Bit-FLOPs).
        # If the controller matches plans to images, its own assignment scores higher than a shuffled one. One
        # permutation moves top-1 by tenths of a point, so the range over SHUFFLES of them comes with it.
        own = (bits[..., None] == torch.tensor(subject.candidates, dtype=bits.dtype)).float().argmax(-1)
        shuffles = [Variant(plans=own[torch.from_numpy(np.random.default_rng(seed).permutation(len(own)))])
                    for seed in range(SHUFFLES)]
        top1s = [float((ls.argmax(1) == labels).float().mean()) for ls, _ in subject.run(images_u8, shuffles)]
        res["top1_shuffled_plans"], res["top1_shuffled_plans_range"] = top1s[0], [min(top1s), max(top1s)]
        res["static_at_candidates"] = []
        for b, (lb, bb) in zip(subject.candidates, results[1 + len(knobs):]):
            res["static_at_candidates"].append({"bits": b, "accuracy": float((lb.argmax(1) == labels).float().mean()),
                                                "bitflops": float(cost.bitflops_batch(table, bb)[0])})
    res["calibration"] = calibration
    res["_per_image"] = {"bitflops": bf, "correct": correct, "bits": bits.numpy().astype(np.int64),
                         "top1": logits.argmax(1).numpy(), "logits": logits.numpy(), "knobs": knob_outputs}
    return res
