"""Export a trained network as a servable bundle (docs/model-bundle.md, format 2): ONNX graphs in the int8
arithmetic (int8.py), manifest.json with measured metrics and the knob calibration table, reference.json for
parity checks, sha256 of every file. The network comes from a checkpoint, or from a format-1 bundle (whose
checkpoint may be gone: its layers are read back from its ONNX pieces)."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import onnx
import torch

from . import cost, int8
from .data import Split
from .evaluate import KNOBS, Gate, NetSubject, evaluate, second_pass_bitflops
from .layers import FP_BITS
from .onnx_export import body_graph, static_graph, stem_graph

FORMAT, FORMAT_VERSION = "dqserve-bundle", 2
CALIBRATION_IMAGES = 2000  # training images whose largest magnitudes set each tensor's scale
REFERENCE_KNOBS = (-1.0, 0.5, 2.0)  # knobs whose bits and top-1 reference.json also records, for the knob's parity


@dataclass
class Deployable:
    """A network in the served arithmetic plus what the manifest says about it."""

    net: int8.Net
    table: List[Dict]  # cost.layer_table rows: every conv/linear layer with kind, shapes, bits, MACs
    knob_cost: Optional[torch.Tensor]  # (L, K), dynamic only
    bits: Dict  # the manifest's "bits"
    arch: str
    training: Dict

    @property
    def dynamic(self) -> bool:
        return len(self.net.candidates) > 1

    def without_controller(self) -> "Deployable":
        """The same network without its controller, for a gate whose pass 1 has fixed bits: nothing is chosen, so
        the controller would only cost (docs/model-bundle.md, "Gated second pass")."""
        return dataclasses.replace(self, net=dataclasses.replace(self.net, controller=None),
                                   table=cost.without_controller(self.table), knob_cost=None,
                                   bits=dict(self.bits, controller=None))


def calibrate(net: int8.Net, train: Split) -> None:
    images = train.subset(CALIBRATION_IMAGES, seed=0).images
    L = len(net.dynamic_layers)
    int8.calibrate(net, images, [torch.full((len(images), L), b) for b in net.candidates])


def from_checkpoint(model, tc: Dict, train: Split) -> Deployable:
    table = cost.attach_macs(model, tuple(train.images.shape[1:]))
    dynamic = model.precision.mode == "dynamic"
    mc = model.cfg
    net = int8.from_model(model)
    calibrate(net, train)
    bits = {"candidates": cost.deployed_bits(model), "reference": cost.reference_bits(model),
            "fixed": FP_BITS if model.precision.mode == "fp" else mc.fixed_bits, "first_last": mc.first_last_bits,
            "activation_quantizer": mc.act, "controller": mc.controller_bits if dynamic else None}
    return Deployable(net, table, model.knob_cost().cpu() if dynamic else None, bits, mc.arch, tc)


def from_bundle(directory: Path, train: Split) -> Deployable:
    """A format-1 bundle re-expressed in this arithmetic (same weights, new scales from `train`)."""
    man = json.loads((Path(directory) / "manifest.json").read_text())
    net = int8.from_bundle_v1(directory)
    calibrate(net, train)
    bits = {k: v for k, v in man["bits"].items() if k != "conv_kernel"}
    knob = torch.tensor(man["controller"]["cost"]) if man["kind"] == "dynamic" else None
    training = dict(man["training"], exported_from=f"{man['name']}/{man['version']} (bundle format 1)")
    return Deployable(net, man["layers"], knob, bits, man.get("arch", "unknown"), training)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _graph(dep: Deployable, out: Path, size) -> Dict:
    if not dep.dynamic:
        onnx.save(static_graph(dep.net, size), out / "model.onnx")
        return {"model": {"file": "model.onnx"}}
    onnx.save(stem_graph(dep.net, size), out / "stem.onnx")
    onnx.save(body_graph(dep.net, size), out / "body.onnx")
    blocks = [[b.conv1.name, b.conv2.name] for b in dep.net.blocks[dep.net.fixed_blocks:]]
    return {"stem": {"file": "stem.onnx"}, "body": {"file": "body.onnx", "blocks": blocks}}


def _quantization(net: int8.Net) -> Dict:
    """The calibrated scales, for reading (the graphs hold them); zero points: 0 after ReLU, 128 before an add."""
    return {"arithmetic": "int8: QLinearConv / QLinearAdd on uint8 NHWC tensors (docs/model-bundle.md)",
            "calibration": dict(net.calibration, set="training images, class-balanced, seed 0"),
            "stem_scale": net.s_stem,
            "blocks": [{"conv2_scale": b.s_z, "shortcut_scale": b.s_sc if b.shortcut else None, "output_scale": b.s_out}
                       for b in net.blocks]}


def build_manifest(dep: Deployable, ev: Dict, test: Split, name: str, version: int, graph: Dict,
                   policy: Optional[Gate] = None) -> Dict:
    size = list(test.images.shape[2:])
    dyn_names = [r["name"] for r in dep.table if r["kind"] == "dynamic"]
    candidates, reference = dep.bits["candidates"], dep.bits["reference"]
    plan = lambda b: [b] * len(dyn_names)  # noqa: E731
    table = dep.table
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "version": version,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": "dynamic" if dep.dynamic else "static",
        "arch": dep.arch,
        "classes": test.classes,
        "input": {"channels": 3, "color": "RGB", "layout": "NHWC", "dtype": "uint8", "size": size, "scale": 255,
                  "mean": list(dep.net.mean), "std": list(dep.net.std),
                  "resize": {"shorter_side": size[0], "interpolation": "bilinear"},
                  "crop": {"size": size, "position": "center"}},
        "bits": dep.bits,
        "layers": table,
        "controller": None,
        "graph": graph,
        "quantization": _quantization(dep.net),
        "bitflops": {"definition": cost.DEFINITION, "fixed": cost.fixed_bitflops(table),
                     "reference": cost.bitflops(table, plan(reference)),
                     "min": cost.bitflops(table, plan(min(candidates))),
                     # the most one image can cost: the costliest plan, and a second pass when gated
                     "max": cost.bitflops(table, plan(max(candidates)))
                     + (second_pass_bitflops(table, policy.second_bits) if policy is not None else 0)},
        "calibration": ev["calibration"],
        "metrics": {"top1": ev["top1"], "images": ev["images"], "dataset": "CIFAR-10 test set (JPEG-q75 copy)",
                    "bitflops_mean": ev["bitflops"]["mean"], "bitflops_p50": ev["bitflops"]["p50"],
                    "bitflops_p90": ev["bitflops"]["p90"], "bitflops_min": ev["bitflops"]["min"],
                    "bitflops_max": ev["bitflops"]["max"], "savings_vs_reference": ev["savings_vs_reference"],
                    "mean_bits": ev["mean_bits"], "static_at_candidates": ev.get("static_at_candidates", [])},
        "training": dep.training,
        "dataset": {"name": "CIFAR-10", "layout": test.layout, "fingerprint": test.fingerprint,
                    "note": "JPEG quality-75 copy of CIFAR-10; accuracy is a little below the lossless originals"},
    }
    if policy is not None:
        manifest["policy"] = policy.manifest()
        manifest["metrics"]["second_pass_rate"] = ev["second_pass_rate"]
    if dep.net.controller is not None:
        manifest["controller"] = {"layers": dyn_names, "candidates": candidates, "cost": dep.knob_cost.tolist()}
    return manifest


def _exact_floats(values: np.ndarray) -> List:
    """float32 values as the shortest decimals that read back to the same float32 (exact comparisons)."""
    return [[float(repr(v)) for v in row] for row in values.astype(np.float32)]


def _bit_strings(bits: np.ndarray, candidates: List[int]) -> List[str]:
    index = {b: str(k) for k, b in enumerate(candidates)}
    return ["".join(index[int(b)] for b in row) for row in bits]


def export_bundle(dep: Deployable, test: Split, out: Path, name: str, version: int, force: bool = False,
                  policy: Optional[Gate] = None) -> Dict:
    """Write the bundle; a `policy` (dynamic only) gates a second pass, and the metrics and reference are gated."""
    if policy is not None:
        if not dep.dynamic:
            raise ValueError("a gated second pass needs a dynamic network (a controller's candidates)")
        policy.check(dep.bits["candidates"])
        if policy.first_bits is not None:
            dep = dep.without_controller()
    out = Path(out)
    if out.exists():
        if not force:
            raise FileExistsError(f"{out} exists (use --force to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    graph = _graph(dep, out, tuple(test.images.shape[2:]))
    knobs = sorted(set(KNOBS) | set(REFERENCE_KNOBS)) if dep.net.controller is not None else ()
    ev = evaluate(NetSubject(dep.net, dep.knob_cost), dep.table, test.images, test.labels, dep.bits["reference"],
                  knobs=knobs, policy=policy)
    per = ev["_per_image"]
    cands = dep.bits["candidates"]
    # "bits": pass 1's plans; "top1", "logits": the answer (pass 2's where it ran, "second": 1)
    reference = {"images": ev["images"], "order": test.names, "top1": per["top1"].tolist(),
                 "bits": _bit_strings(per["bits"], cands), "logits": _exact_floats(per["logits"]), "knobs": []}
    if policy is not None:
        reference["second"] = per["second"].astype(int).tolist()
    for k in REFERENCE_KNOBS:
        if k in per["knobs"]:
            lk, bk, sk = per["knobs"][k]
            reference["knobs"].append({"knob": k, "top1": lk.argmax(1).tolist(),
                                       "bits": _bit_strings(bk.numpy(), cands)})
            if policy is not None:
                reference["knobs"][-1]["second"] = sk.int().tolist()
    (out / "reference.json").write_text(json.dumps(reference, separators=(",", ":")))
    manifest = build_manifest(dep, ev, test, name, version, graph, policy)
    manifest["files"] = {str(p.relative_to(out)): _sha256(p) for p in sorted(out.rglob("*")) if p.is_file()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return ev
