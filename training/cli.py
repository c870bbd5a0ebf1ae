"""Command line: train, evaluate, export, compare, prepare. Every failure the user can cause is one line on stderr, exit 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .data import DataError


def _bits_list(s: str):
    try:
        bits = sorted({int(b) for b in s.split(",") if b.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {s!r}")
    if not bits or min(bits) < 2 or max(bits) > 8:
        raise argparse.ArgumentTypeError("bit-widths must be integers in 2..8")
    return bits


def _int_list(s: str):
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {s!r}")


def _add_train(sub):
    p = sub.add_parser("train", help="train a model (fp pretraining, static quantized, or dynamic DQNet)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="../shared/data/cifar10", help="data set folder (tarballs, image folders or CIFAR binary)")
    p.add_argument("--out", required=True, help="run folder: config.json, log.jsonl, last.pt, model.pt")
    p.add_argument("--arch", default="resnet20", choices=["resnet8", "resnet20", "resnet32", "resnet56", "resnet18"],
                   help="network (CIFAR ResNets; resnet18 is the ImageNet-style one)")
    p.add_argument("--precision", default="fp", choices=["fp", "static", "multi", "dynamic"],
                   help="fp: full precision; static: every quantized layer at --bits; multi: every --candidates "
                        "width on each batch (weights good at all of them, no controller); dynamic: DQNet with a "
                        "controller")
    p.add_argument("--bits", type=int, help="bit-width of a static run (every quantized layer)")
    p.add_argument("--candidates", type=_bits_list, default=[3, 4, 5], help="dynamic candidate bit-widths")
    p.add_argument("--target-bits", type=float, default=4.0, help="B_tar as a bit-width; also the fixed layers' bits")
    p.add_argument("--first-last-bits", type=int, default=32, choices=[8, 32], help="stem conv and classifier")
    p.add_argument("--controller-bits", type=int, default=32, choices=[*range(2, 9), 32],
                   help="bit-width of the controller's two linear layers (32: full precision)")
    p.add_argument("--act", default="dorefa", choices=["dorefa", "pact", "lsq"],
                   help="activation quantizer: DoReFa's fixed [0, 1] clip, or a clip learned per layer with PACT's "
                        "or LSQ's gradient")
    p.add_argument("--act-init", default="calibrate", choices=["calibrate", "keep"],
                   help="learned clips (pact, lsq) start at each layer's MSE-optimal clip on its full-precision "
                        "inputs (calibrate), or at the --init checkpoint's clips / --pact-init (keep)")
    p.add_argument("--pact-init", type=float, default=6.0,
                   help="initial clip of learned activation quantizers not calibrated (and of a quantized controller)")
    p.add_argument("--act-decay", type=float,
                   help="L2 weight decay on the learned clips, PACT's regularisation (default: --weight-decay)")
    p.add_argument("--distill", help="teacher checkpoint (e.g. the fp model.pt): distil its predictions")
    p.add_argument("--distill-weight", type=float, default=0.5,
                   help="with --distill: loss = (1 - w) * cross-entropy + w * KL(teacher || model)")
    p.add_argument("--switchable-bn", action="store_true",
                   help="one BatchNorm per candidate bit-width in the dynamic layers (multi and dynamic runs)")
    p.add_argument("--init", help="checkpoint to start from (e.g. the fp or static phase's model.pt)")
    p.add_argument("--epochs", type=int, default=10, help="passes over the training set")
    p.add_argument("--batch-size", type=int, default=128, help="images per optimizer step")
    p.add_argument("--lr", type=float, default=0.1, help="peak learning rate (SGD, Nesterov momentum 0.9)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="L2 weight decay")
    p.add_argument("--schedule", default="cosine", choices=["cosine", "step"], help="learning-rate schedule")
    p.add_argument("--milestones", type=_int_list, default=[50, 75], help="epochs of the step schedule")
    p.add_argument("--warmup-epochs", type=int, default=0, help="linear learning-rate warm-up")
    p.add_argument("--alpha", type=float, default=1.0, help="weight of the Bit-FLOPs cost term")
    p.add_argument("--cost-form", default="hinge", choices=["hinge", "abs", "square", "meanbit"],
                   help="how the Bit-FLOPs term penalises the distance to the target (dynamic)")
    p.add_argument("--cost-scope", default="dynamic", choices=["dynamic", "total"],
                   help="the cost ratio held to 1: the dynamic layers at --target-bits, or the whole network with "
                        "its controller against the static twin at --target-bits")
    p.add_argument("--tau", type=float, default=1.0, help="Gumbel-softmax temperature")
    p.add_argument("--tau-end", type=float, help="anneal tau exponentially to this value")
    p.add_argument("--diversity", type=float, default=0.0,
                   help="weight of a term rewarding different bit choices across a batch's images (0: off)")
    p.add_argument("--confidence", type=float, default=0.0,
                   help="weight of a term making each image's bit choice decided (its entropy; 0: off); with "
                        "--diversity at the same weight: the mutual information between image and choice")
    p.add_argument("--sensitivity", type=float, default=0.0,
                   help="weight of a term moving bits to the images that lose most at the lowest candidate (0: off; "
                        "two extra forward passes per step)")
    p.add_argument("--seed", type=int, default=0, help="seeds weights, data order and augmentation")
    p.add_argument("--train-limit", type=int, help="use a class-balanced subset of this many training images")
    p.add_argument("--eval-limit", type=int, help="evaluate on this many test images per epoch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--channels-last", action="store_true", help="NHWC tensors (faster bf16 convs on GPUs)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training forward (torch 2.x; parts that fail to compile run eagerly)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs stay in log.jsonl)")


def _add_eval_common(p):
    p.add_argument("--checkpoint", help="a model.pt written by train")
    p.add_argument("--from-bundle", help="instead of --checkpoint: a format-1 bundle folder (its weights read back "
                   "from its ONNX pieces; scales calibrated anew)")
    p.add_argument("--data", default="../shared/data/cifar10",
                   help="data set folder: the test split is evaluated, training images calibrate the int8 scales")
    p.add_argument("--limit", type=int, help="evaluate on a class-balanced subset of the test set")


def cmd_train(a) -> int:
    import torch

    from .resnet import ModelConfig
    from .train import TrainConfig, train

    if a.precision == "static" and a.bits is None:
        raise UsageError("--precision static needs --bits")
    if a.precision in ("dynamic", "multi") and len(a.candidates) < 2:
        raise UsageError(f"--precision {a.precision} needs two or more --candidates")
    if a.switchable_bn and a.precision not in ("dynamic", "multi"):
        raise UsageError("--switchable-bn needs --precision multi or dynamic (bits that change per layer)")
    if a.precision != "dynamic":
        for flag, value, default in (("--controller-bits", a.controller_bits, 32), ("--diversity", a.diversity, 0),
                                     ("--confidence", a.confidence, 0), ("--sensitivity", a.sensitivity, 0)):
            if value != default:
                raise UsageError(f"{flag} needs --precision dynamic (only a dynamic model has a controller)")
    fixed = a.bits if a.precision == "static" else int(round(a.target_bits))
    cands = [a.bits] if a.precision == "static" else a.candidates
    mc = ModelConfig(arch=a.arch, candidates=cands, fixed_bits=fixed, first_last_bits=a.first_last_bits, act=a.act,
                     pact_init=a.pact_init, controller_bits=a.controller_bits, switchable_bn=a.switchable_bn)
    if a.compile and not hasattr(torch, "compile"):
        raise UsageError(f"--compile needs torch 2.0 or later (this is torch {torch.__version__})")
    if not 0 <= a.distill_weight <= 1:
        raise UsageError("--distill-weight must be between 0 and 1")
    cfg = TrainConfig(data=a.data, out=a.out, model=mc, precision=a.precision, bits=a.bits, init=a.init,
                      act_init=a.act_init, act_decay=a.act_decay, distill=a.distill, distill_weight=a.distill_weight,
                      epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
                      schedule=a.schedule, milestones=a.milestones, warmup_epochs=a.warmup_epochs, alpha=a.alpha,
                      target_bits=a.target_bits, cost_form=a.cost_form, cost_scope=a.cost_scope, tau=a.tau, tau_end=a.tau_end, diversity=a.diversity,
                      confidence=a.confidence, sensitivity=a.sensitivity, seed=a.seed,
                      train_limit=a.train_limit, eval_limit=a.eval_limit, device=a.device, amp=a.amp,
                      channels_last=a.channels_last, compile=a.compile,
                      progress=not a.no_progress)
    print(train(cfg))
    return 0


def _deployable(model, tc, data: str):
    from .data import load_split
    from .export import from_checkpoint

    try:
        return from_checkpoint(model, tc, load_split(data, "train"))
    except ValueError as e:
        raise UsageError(f"{e}; evaluate it with --arithmetic float") from e


def _at_static_bits(model, tc, bits):
    """The same weights with every dynamic layer at one bit-width: a dynamic model's static twin, or one width of
    a multi-precision model."""
    if bits is None:
        return tc
    if tc["precision"] in ("dynamic", "multi") and bits not in model.cfg.candidates:
        raise UsageError(f"--static-bits {bits} is not a candidate {model.cfg.candidates}")
    model.set_precision("static", bits)
    return dict(tc, exported_as=f"static {bits}-bit twin of a {tc['precision']} checkpoint")


GATE_FORM = "FIRST:SECOND:THRESHOLD (FIRST: bits or 'controller'), e.g. 3:4:0.7 or controller:5:0.8"
SWEEP_FORM = "FIRST:SECOND (FIRST: bits or 'controller'), e.g. 3:4"
SWEEP_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)  # evaluate --gate-sweep


def _gate_spec(flag: str, spec: str, threshold: bool = True):
    """(first bits or None for the controller's plan, second bits, threshold or None) from --gate / --gate-sweep;
    the bits are checked against the network once its candidates are known (_check_gates)."""
    form = GATE_FORM if threshold else SWEEP_FORM
    parts = spec.split(":")
    try:
        if len(parts) != (3 if threshold else 2):
            raise ValueError
        first = None if parts[0].strip() == "controller" else int(parts[0])
        second, t = int(parts[1]), (float(parts[2]) if threshold else None)
    except ValueError:
        raise UsageError(f"{flag} {spec!r} is not {form}") from None
    if t is not None and not 0 < t <= 1:  # also refuses nan
        raise UsageError(f"{flag} threshold {parts[2]} is not in (0, 1] (the top-1 probability under which pass 2 runs)")
    return first, second, t


def _gate_flags(a) -> dict:
    """--gate and --gate-sweep as {flag: (first, second, threshold)}, checked as far as the flags alone allow,
    before anything is loaded."""
    gates = {}
    for flag, spec, threshold in (("--gate", a.gate, True), ("--gate-sweep", getattr(a, "gate_sweep", None), False)):
        if spec is None:
            continue
        gates[flag] = _gate_spec(flag, spec, threshold)
        if getattr(a, "arithmetic", "int8") != "int8":
            raise UsageError(f"{flag} needs --arithmetic int8 (the served arithmetic, where a second pass runs)")
        if a.static_bits is not None:
            raise UsageError(f"{flag} needs a dynamic network, not --static-bits (every layer at one width)")
    return gates


def _check_gates(gates: dict, dynamic: bool, candidates) -> None:
    for flag, (first, second, _) in gates.items():
        if not dynamic:
            raise UsageError(f"{flag} needs a dynamic network: a static checkpoint or bundle has no candidates to gate")
        for which, b in (("first", first), ("second", second)):
            if b is not None and b not in candidates:
                raise UsageError(f"{flag}: {which} bits {b} are not a candidate {list(candidates)}")


def _source(a) -> None:
    """Exactly one of --checkpoint and --from-bundle, checked before loading."""
    if (a.checkpoint is None) == (a.from_bundle is None):
        raise UsageError("give exactly one of --checkpoint and --from-bundle")
    if a.from_bundle is not None:
        if a.static_bits is not None:
            raise UsageError("--static-bits needs --checkpoint")
        if not (Path(a.from_bundle) / "manifest.json").is_file():
            raise UsageError(f"{a.from_bundle} is not a bundle folder (no manifest.json)")


def _bundle_deployable(a, gates: dict):
    """A format-1 bundle's network, its gates checked on its manifest before the (slow) calibration."""
    from .data import load_split
    from .export import from_bundle

    man = json.loads((Path(a.from_bundle) / "manifest.json").read_text())
    _check_gates(gates, man.get("kind") == "dynamic", man.get("bits", {}).get("candidates", []))
    return from_bundle(Path(a.from_bundle), load_split(a.data, "train"))


def _checkpoint_model(a, gates: dict):
    from .checkpoint import load_model

    model, tc = load_model(a.checkpoint)
    tc = _at_static_bits(model, tc, a.static_bits)
    _check_gates(gates, model.precision.mode == "dynamic", model.cfg.candidates)
    return model, tc


def cmd_evaluate(a) -> int:
    from . import cost
    from .data import load_split
    from .evaluate import Gate, ModelSubject, NetSubject, evaluate, gate_sweep, public
    from .plots import write_plots

    _source(a)
    gates = _gate_flags(a)
    if a.from_bundle is not None and a.arithmetic != "int8":
        raise UsageError("--from-bundle needs --arithmetic int8 (a bundle keeps no float model)")
    if a.from_bundle is not None:
        dep = _bundle_deployable(a, gates)
        subject, table, reference = NetSubject(dep.net, dep.knob_cost), dep.table, dep.bits["reference"]
        test = load_split(a.data, "test").subset(a.limit)
    else:
        model, tc = _checkpoint_model(a, gates)
        reference = cost.reference_bits(model)
        test = load_split(a.data, "test").subset(a.limit)
        if a.arithmetic == "int8":
            dep = _deployable(model, tc, a.data)
            subject, table = NetSubject(dep.net, dep.knob_cost), dep.table
        else:
            table = cost.attach_macs(model, tuple(test.images.shape[1:]))
            subject = ModelSubject(model)
    gate = Gate(*gates["--gate"]) if "--gate" in gates else None
    ev = evaluate(subject, table, test.images, test.labels, reference, policy=gate)
    ev["arithmetic"] = a.arithmetic
    if "--gate-sweep" in gates:
        first, second, _ = gates["--gate-sweep"]
        ev["gate_sweep"] = gate_sweep(subject, table, test.images, test.labels, first, second, SWEEP_THRESHOLDS)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if not a.no_plots:
        write_plots(ev, test, out)
    report = public(ev)
    (out / "eval.json").write_text(json.dumps(report, indent=1))
    summary = {k: report[k] for k in ("images", "top1", "mean_bits", "savings_vs_reference")}
    summary["bitflops_mean"] = report["bitflops"]["mean"]
    for key in ("second_pass_rate", "gate_sweep"):
        if key in report:
            summary[key] = report[key]
    print(json.dumps(summary))
    return 0


def cmd_export(a) -> int:
    from .data import load_split
    from .evaluate import Gate
    from .export import export_bundle

    if a.version < 1:
        raise UsageError("--version must be a positive integer")
    _source(a)
    gates = _gate_flags(a)
    if a.from_bundle is not None:
        dep = _bundle_deployable(a, gates)
    else:
        model, tc = _checkpoint_model(a, gates)
        dep = _deployable(model, tc, a.data)
    gate = Gate(*gates["--gate"]) if "--gate" in gates else None
    test = load_split(a.data, "test").subset(a.limit)
    out = Path(a.out) / a.name / str(a.version)
    ev = export_bundle(dep, test, out, a.name, a.version, force=a.force, policy=gate)
    summary = {"bundle": str(out), "top1": ev["top1"], "bitflops_mean": ev["bitflops"]["mean"]}
    if gate is not None:
        summary["second_pass_rate"] = ev["second_pass_rate"]
    print(json.dumps(summary))
    return 0


def cmd_prepare(a) -> int:
    from .data import load_split

    print(json.dumps({s: len(load_split(a.data, s).labels) for s in ("train", "test")}))
    return 0


def cmd_compare(a) -> int:
    from .compare import compare

    table = compare([Path(r) for r in a.runs], Path(a.out), a.reference_bits)
    print(json.dumps({"runs": len(table), "out": a.out}))
    return 0


class UsageError(Exception):
    pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m training", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    _add_train(sub)
    p = sub.add_parser("evaluate", help="evaluate a checkpoint: accuracy, Bit-FLOPs, histograms, knob sweep, plots",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_eval_common(p)
    p.add_argument("--out", required=True, help="folder for eval.json and the PNG plots")
    p.add_argument("--gate", metavar="FIRST:SECOND:THRESHOLD",
                   help="evaluate with a confidence-gated second pass (a dynamic network, int8): pass 1 at FIRST bits "
                        "(or 'controller': its plan), images whose top-1 softmax probability is below THRESHOLD run "
                        "every dynamic layer again at SECOND bits; Bit-FLOPs count both passes")
    p.add_argument("--gate-sweep", metavar="FIRST:SECOND",
                   help="also write gate_sweep to eval.json: top-1, mean Bit-FLOPs, second-pass rate and margin over the "
                        "static line of that gate at thresholds " + ",".join(map(str, SWEEP_THRESHOLDS))
                        + ", and held_out: the threshold chosen on half the test set, scored on the other half "
                        "(20 random halvings)")
    p.add_argument("--static-bits", type=int,
                   help="evaluate a dynamic or multi checkpoint with every dynamic layer at these bits")
    p.add_argument("--arithmetic", default="int8", choices=["int8", "float"],
                   help="int8: what an exported bundle and the server compute (scales calibrated on training images); "
                        "float: the model's own evaluation (float convs on integer levels), e.g. for 8-bit layers")
    p.add_argument("--no-plots", action="store_true")
    p = sub.add_parser("export", help="export a checkpoint as a servable bundle (ONNX + manifest)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_eval_common(p)
    p.add_argument("--out", default="models", help="model repository; the bundle goes to OUT/NAME/VERSION")
    p.add_argument("--name", required=True, help="bundle name, e.g. resnet20_dq")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    p.add_argument("--static-bits", type=int, help="export a dynamic checkpoint with every dynamic layer at these bits")
    p.add_argument("--gate", metavar="FIRST:SECOND:THRESHOLD",
                   help="give the dynamic bundle a confidence-gated second pass (its manifest's policy): pass 1 at "
                        "FIRST bits (or 'controller': its plan), images whose top-1 softmax probability is below "
                        "THRESHOLD run every dynamic layer again at SECOND bits")
    p = sub.add_parser("compare", help="results table and accuracy vs Bit-FLOPs plot of evaluated runs")
    p.add_argument("runs", nargs="+", help="train run folders, each evaluated into <run>/eval")
    p.add_argument("--out", required=True, help="folder for results.md, results.json, accuracy_vs_bitflops.png")
    p.add_argument("--reference-bits", type=int, default=4, help="the static run that savings are measured against")
    p = sub.add_parser("prepare", help="decode a data set's tarballs once into the cache (before parallel trainings)")
    p.add_argument("--data", default="../shared/data/cifar10")
    a = ap.parse_args(argv)
    import torch

    if "OMP_NUM_THREADS" not in os.environ:  # Debian's torch starts with one thread
        torch.set_num_threads(os.cpu_count() or 1)
    try:
        return {"train": cmd_train, "evaluate": cmd_evaluate, "export": cmd_export, "compare": cmd_compare,
                "prepare": cmd_prepare}[a.command](a)
    except (DataError, UsageError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
