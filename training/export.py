"""Export a trained checkpoint as a servable bundle (docs/model-bundle.md): ONNX pieces, manifest.json
with measured metrics and the knob calibration table, reference.json for parity checks, sha256 of every file."""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Dict, List

import numpy as np
import onnx

from . import cost
from .data import CIFAR_MEAN, CIFAR_STD, Split
from .evaluate import KNOBS, evaluate
from .layers import FP_BITS
from .onnx_export import head_graph, stem_graph, step_graph

FORMAT, FORMAT_VERSION = "dqserve-bundle", 1
REFERENCE_LOGITS = 200  # images whose full logits go into reference.json


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_manifest(model, tc: Dict, table: List[Dict], ev: Dict, test: Split, name: str, version: int,
                   graph: Dict) -> Dict:
    mc = model.cfg
    dynamic = model.precision.mode == "dynamic"
    size = list(test.images.shape[2:])
    dyn_names = [r["name"] for r in table if r["kind"] == "dynamic"]
    candidates, reference = cost.deployed_bits(model), cost.reference_bits(model)
    plan = lambda b: [b] * len(dyn_names)  # noqa: E731
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "version": version,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "kind": "dynamic" if dynamic else "static",
        "arch": mc.arch,
        "classes": test.classes,
        "input": {"channels": 3, "color": "RGB", "layout": "NCHW", "dtype": "float32", "size": size, "scale": 255,
                  "mean": list(CIFAR_MEAN), "std": list(CIFAR_STD),
                  "resize": {"shorter_side": size[0], "interpolation": "bilinear"},
                  "crop": {"size": size, "position": "center"}},
        "bits": {"candidates": candidates, "reference": reference,
                 "fixed": FP_BITS if model.precision.mode == "fp" else mc.fixed_bits,
                 "first_last": mc.first_last_bits, "activation_quantizer": mc.act,
                 "controller": mc.controller_bits if dynamic else None},
        "layers": table,
        "controller": None,
        "graph": graph,
        "bitflops": {"definition": cost.DEFINITION, "fixed": cost.fixed_bitflops(table),
                     "reference": cost.bitflops(table, plan(reference)),
                     "min": cost.bitflops(table, plan(min(candidates))),
                     "max": cost.bitflops(table, plan(max(candidates)))},
        "calibration": ev["calibration"],
        "metrics": {"top1": ev["top1"], "images": ev["images"], "dataset": "CIFAR-10 test set (JPEG-q75 copy)",
                    "bitflops_mean": ev["bitflops"]["mean"], "bitflops_p50": ev["bitflops"]["p50"],
                    "bitflops_p90": ev["bitflops"]["p90"], "bitflops_min": ev["bitflops"]["min"],
                    "bitflops_max": ev["bitflops"]["max"], "savings_vs_reference": ev["savings_vs_reference"],
                    "mean_bits": ev["mean_bits"], "static_at_candidates": ev.get("static_at_candidates", [])},
        "training": tc,
        "dataset": {"name": "CIFAR-10", "layout": test.layout, "fingerprint": test.fingerprint,
                    "note": "JPEG quality-75 copy of CIFAR-10; accuracy is a little below the lossless originals"},
    }
    if dynamic:
        manifest["controller"] = {"layers": dyn_names, "candidates": candidates,
                                  "cost": model.knob_cost().tolist()}
    return manifest


def export_bundle(model, tc: Dict, test: Split, out: Path, name: str, version: int, force: bool = False,
                  kernel: str = "float") -> Dict:
    out = Path(out)
    if out.exists():
        if not force:
            raise FileExistsError(f"{out} exists (use --force to replace it)")
        shutil.rmtree(out)
    (out / "steps").mkdir(parents=True)
    input_size = tuple(test.images.shape[1:])
    table = cost.attach_macs(model, input_size)
    model.eval()
    dynamic = model.precision.mode == "dynamic"
    bits_list = cost.deployed_bits(model)
    onnx.save(stem_graph(model, input_size, kernel), out / "stem.onnx")
    steps, prev, li = [], "features", 0
    for s, stage in enumerate(model.stages[1:], start=2):
        for i, block in enumerate(stage):
            for which in ("conv1", "conv2"):
                layer = f"layer{s}.{i}.{which}"
                assert layer == model.dynamic_layers[li][0]
                files = {}
                for b in bits_list:
                    rel = f"steps/{layer}.b{b}.onnx"
                    onnx.save(step_graph(model, block, which, b, kernel), out / rel)
                    files[str(b)] = rel
                inputs = {"x": prev} if which == "conv1" else {"x": prev, "residual": block_input}
                if which == "conv1":
                    block_input = prev
                steps.append({"layer": layer, "inputs": inputs, "output": layer, "files": files})
                prev, li = layer, li + 1
    onnx.save(head_graph(model), out / "head.onnx")
    graph = {"stem": {"file": "stem.onnx"}, "steps": steps, "head": {"input": prev, "file": "head.onnx"}}
    ev = evaluate(model, table, test.images, test.labels, cost.reference_bits(model), knobs=KNOBS if dynamic else ())
    per = ev["_per_image"]
    index = {b: str(k) for k, b in enumerate(bits_list)}
    reference = {"images": ev["images"], "order": test.names, "top1": per["top1"].tolist(),
                 "bits": ["".join(index[int(b)] for b in row) for row in per["bits"]],
                 "logits_first": np.round(per["logits"][:REFERENCE_LOGITS], 6).tolist()}
    (out / "reference.json").write_text(json.dumps(reference, separators=(",", ":")))
    manifest = build_manifest(model, tc, table, ev, test, name, version, graph)
    manifest["bits"]["conv_kernel"] = kernel
    manifest["files"] = {str(p.relative_to(out)): _sha256(p) for p in sorted(out.rglob("*")) if p.is_file()}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return ev
