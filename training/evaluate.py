"""Evaluation: top-1, per-image Bit-FLOPs, bit histograms, accuracy per cost decile, top-1 with the controller's
plans shuffled across images, and the serve-time knob sweep that becomes the bundle's calibration table.
Always deterministic (argmax controller, no Gumbel)."""
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


def evaluate(model, table: List[Dict], images_u8, labels, reference_bits: int,
             knobs: Sequence[float] = KNOBS) -> Dict:
    """Everything the report, the plots and the manifest need."""
    labels = labels.cpu()
    logits, bits, ctrl = predict(model, images_u8)
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
    calibration = []
    if model.precision.mode == "dynamic":
        for k in sorted(set(knobs) | {0.0}):
            lk, bk, _ = predict(model, images_u8, knob=k)
            bfk = cost.bitflops_batch(table, bk).numpy()
            calibration.append({"knob": float(k), "accuracy": float((lk.argmax(1) == labels).float().mean()),
                                "mean_bitflops": float(bfk.mean()), "mean_bits": float(bk.mean())})
        # Instance-awareness: the same plans dealt to other images (same cost distribution, same mean Bit-FLOPs).
        # If the controller matches plans to images, its own assignment scores higher than a shuffled one. One
        # permutation moves top-1 by tenths of a point, so the range over SHUFFLES of them comes with it.
        own = (bits[..., None] == model.candidates_tensor.cpu()).float().argmax(-1)
        top1s = []
        for seed in range(SHUFFLES):
            shuffled = own[torch.from_numpy(np.random.default_rng(seed).permutation(len(own)))]
            ls, _, _ = predict(model, images_u8, plans=shuffled)
            top1s.append(float((ls.argmax(1) == labels).float().mean()))
        res["top1_shuffled_plans"], res["top1_shuffled_plans_range"] = top1s[0], [min(top1s), max(top1s)]
        res["static_at_candidates"] = []
        for b in model.cfg.candidates:
            lb, bb, _ = predict(model, images_u8, force_bits=b)
            res["static_at_candidates"].append({"bits": b, "accuracy": float((lb.argmax(1) == labels).float().mean()),
                                                "bitflops": float(cost.bitflops_batch(table, bb)[0])})
    res["calibration"] = calibration
    res["_per_image"] = {"bitflops": bf, "correct": correct, "bits": bits.numpy().astype(np.int64),
                         "top1": logits.argmax(1).numpy(), "logits": logits.numpy()}
    return res
