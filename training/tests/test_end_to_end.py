"""A tiny real run: ResNet-8 on 1,200 real CIFAR images, fp -> dynamic -> evaluate -> export -> parity."""
import json
import os
import shutil
import subprocess
import sys

import onnx
import onnx.numpy_helper
import pytest

from .conftest import ROOT

PY = sys.executable


def run(*args, **kw):
    r = subprocess.run([PY, "-m", "training", *args], cwd=ROOT, capture_output=True, text=True, **kw)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def trained(small_binary, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    common = ["--data", str(small_binary), "--arch", "resnet8", "--batch-size", "64", "--no-progress"]
    run("train", "--out", str(out / "fp"), "--epochs", "2", *common)
    run("train", "--out", str(out / "dq"), "--precision", "dynamic", "--init", str(out / "fp" / "model.pt"),
        "--epochs", "1", "--lr", "0.02", *common)
    # every controller term at once: diversity and confidence (together, the mutual information) and sensitivity
    run("train", "--out", str(out / "dqs"), "--precision", "dynamic", "--sensitivity", "1", "--diversity", "0.5",
        "--confidence", "0.5", "--init",
        str(out / "fp" / "model.pt"), "--epochs", "1", "--lr", "0.02", *common)
    run("train", "--out", str(out / "dq8"), "--precision", "dynamic", "--controller-bits", "8", "--init",
        str(out / "fp" / "model.pt"), "--epochs", "1", "--lr", "0.02", *common)
    # learned clips: LSQ, calibrated from the fp model's activations, distilled from it
    run("train", "--out", str(out / "dql"), "--precision", "dynamic", "--act", "lsq", "--distill",
        str(out / "fp" / "model.pt"), "--init", str(out / "fp" / "model.pt"), "--epochs", "1", "--lr", "0.02", *common)
    # weights for every candidate (switchable BN, narrower widths distilled from the widest), then a controller
    run("train", "--out", str(out / "multi"), "--precision", "multi", "--switchable-bn", "--init",
        str(out / "fp" / "model.pt"), "--epochs", "1", "--lr", "0.02", *common)
    # held to the static twin's whole-network cost, controller included
    run("train", "--out", str(out / "dqm"), "--precision", "dynamic", "--switchable-bn", "--cost-scope", "total",
        "--init", str(out / "multi" / "model.pt"), "--epochs", "1", "--lr", "0.02", *common)
    return out


def test_training_writes_logs_and_resumes(trained, small_binary):
    lines = [json.loads(x) for x in (trained / "fp" / "log.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2] and all(0 <= x["test_acc"] <= 1 for x in lines)
    dq = [json.loads(x) for x in (trained / "dq" / "log.jsonl").read_text().splitlines()]
    assert 3 <= dq[-1]["test_mean_bits"] <= 5 and "train_cost_ratio" in dq[-1]
    dqs_cfg = json.loads((trained / "dqs" / "config.json").read_text())
    assert (dqs_cfg["sensitivity"], dqs_cfg["diversity"], dqs_cfg["confidence"]) == (1, 0.5, 0.5)
    dqs = [json.loads(x) for x in (trained / "dqs" / "log.jsonl").read_text().splitlines()]
    assert len(dqs) == 1 and 3 <= dqs[0]["test_mean_bits"] <= 5
    # resuming a finished run trains no further epochs and keeps its log; a line logged after the last
    # checkpoint (a run stopped between the two) is dropped rather than kept twice
    with open(trained / "fp" / "log.jsonl", "a") as f:
        f.write(json.dumps(lines[-1]) + "\n")
    run("train", "--out", str(trained / "fp"), "--data", str(small_binary), "--arch", "resnet8", "--epochs", "2",
        "--batch-size", "64", "--no-progress")
    assert len((trained / "fp" / "log.jsonl").read_text().splitlines()) == 2


def test_evaluate_writes_report_and_plots(trained, small_binary):
    out = trained / "eval"
    r = run("evaluate", "--checkpoint", str(trained / "dq" / "model.pt"), "--data", str(small_binary), "--out", str(out))
    summary = json.loads(r.stdout)
    ev = json.loads((out / "eval.json").read_text())
    assert summary["images"] == 400 and ev["top1"] == summary["top1"]
    assert len(ev["accuracy_by_cost_decile"]) == 10 and len(ev["calibration"]) >= 5
    cal = ev["calibration"]
    assert all(a["mean_bitflops"] >= b["mean_bitflops"] for a, b in zip(cal, cal[1:]))  # the knob lowers cost
    assert ev["bitflops"]["min"] <= ev["bitflops"]["p50"] <= ev["bitflops"]["max"]
    for png in ("accuracy_vs_bitflops", "bits_per_layer", "bitflops_distribution", "images_cheapest", "images_costliest"):
        assert (out / f"{png}.png").stat().st_size > 1000
    # the served int8 arithmetic by default; the model's own float arithmetic on request, close to it
    assert ev["arithmetic"] == "int8"
    run("evaluate", "--checkpoint", str(trained / "dq" / "model.pt"), "--data", str(small_binary), "--out",
        str(trained / "eval-float"), "--arithmetic", "float", "--no-plots")
    evf = json.loads((trained / "eval-float" / "eval.json").read_text())
    assert evf["arithmetic"] == "float" and abs(evf["top1"] - ev["top1"]) < 0.05


def test_evaluate_refuses_int8_for_a_full_precision_model(trained, small_binary):
    r = subprocess.run([PY, "-m", "training", "evaluate", "--checkpoint", str(trained / "fp" / "model.pt"), "--data",
                        str(small_binary), "--out", str(trained / "eval-fp")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "--arithmetic float" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def _verify(bundle, data):
    node = shutil.which("node")
    cli = ROOT / "dist" / "cli.js"
    if node is None or not cli.is_file():
        pytest.fail("parity needs node and the built server (npm ci)")
    v = subprocess.run([node, str(cli), "verify", str(bundle), "--data", str(data)], cwd=ROOT, capture_output=True,
                       text=True)
    assert v.returncode == 0, v.stdout + v.stderr
    return json.loads(v.stdout)


def test_export_bundle_and_parity_through_onnxruntime_node(trained, small_binary):
    repo = trained / "models"
    run("export", "--checkpoint", str(trained / "dq" / "model.pt"), "--data", str(small_binary), "--out", str(repo),
        "--name", "tiny_dq")
    bundle = repo / "tiny_dq" / "1"
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["format"] == "dqserve-bundle" and m["format_version"] == 2 and m["kind"] == "dynamic"
    assert m["bits"]["candidates"] == [3, 4, 5] and len(m["controller"]["layers"]) == 4
    assert m["graph"]["body"]["blocks"] == [["layer2.0.conv1", "layer2.0.conv2"], ["layer3.0.conv1", "layer3.0.conv2"]]
    assert (m["input"]["layout"], m["input"]["dtype"]) == ("NHWC", "uint8")
    assert set(m["files"]) == {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()} - {"manifest.json"}
    for f in m["files"]:
        if f.endswith(".onnx"):
            onnx.checker.check_model(onnx.load(bundle / f))
    # the quantized convs' weights are DoReFa's integer numerators, in int8
    body = onnx.load(bundle / "body.onnx").graph
    conv = next(n for n in body.node if n.op_type == "QLinearConv")
    w = onnx.numpy_helper.to_array(next(i for i in body.initializer if i.name == conv.input[3]))
    assert w.dtype.name == "int8" and abs(w.astype(int)).max() <= 31
    ref = json.loads((bundle / "reference.json").read_text())
    assert len(ref["logits"]) == ref["images"] == 400 and [k["knob"] for k in ref["knobs"]] == [-1.0, 0.5, 2.0]
    res = _verify(bundle, small_binary)
    assert res["images"] == 400 and res["bits_agree"] >= 0.999 and res["top1_agree"] >= 0.999
    assert res["logits_identical"] >= 0.95 and all(k["bits_agree"] >= 0.999 for k in res["knobs"])
    assert res["accuracy_engine"] == pytest.approx(m["metrics"]["top1"], abs=0.005)


def test_format1_bundle_reexports_and_serves(small_binary, tmp_path):
    """A bundle whose checkpoint is gone: read back from its format-1 ONNX pieces, exported in format 2."""
    src = ROOT / "training" / "format1-bundles" / "resnet20_w4_4"
    run("export", "--from-bundle", str(src), "--data", str(small_binary), "--out", str(tmp_path), "--name", "w4",
        "--limit", "100")
    m = json.loads((tmp_path / "w4" / "1" / "manifest.json").read_text())
    assert m["kind"] == "static" and m["graph"] == {"model": {"file": "model.onnx"}}
    assert "resnet20_w4/4" in m["training"]["exported_from"] and m["metrics"]["top1"] > 0.6
    res = _verify(tmp_path / "w4" / "1", small_binary)
    assert res["bits_agree"] == 1 and res["top1_agree"] >= 0.99


def test_8bit_controller_exports_its_levels_and_cost(trained, small_binary):
    repo = trained / "models-c8"
    run("export", "--checkpoint", str(trained / "dq8" / "model.pt"), "--data", str(small_binary), "--out", str(repo),
        "--name", "tiny_dq8")
    bundle = repo / "tiny_dq8" / "1"
    m = json.loads((bundle / "manifest.json").read_text())
    ctrl = [r for r in m["layers"] if r["kind"] == "controller"]
    assert m["bits"]["controller"] == 8 and [r["bits"] for r in ctrl] == [8, 8]
    fixed = sum(r["macs"] * r["bits"] ** 2 for r in m["layers"] if r["kind"] != "dynamic")
    assert m["bitflops"]["fixed"] == fixed
    # the controller's input quantizers are in the stem graph, and the engine reproduces its choices
    assert {"Clip", "Round", "Div"} <= {n.op_type for n in onnx.load(bundle / "stem.onnx").graph.node}
    res = _verify(bundle, small_binary)
    assert res["bits_agree"] >= 0.999 and res["top1_agree"] >= 0.999


def test_gated_second_pass_sweeps_exports_and_serves_with_parity(trained, small_binary):
    """A dynamic bundle with a policy: 3-bit pass 1, a 4-bit pass 2 for the images pass 1 is unsure of."""
    r = run("evaluate", "--checkpoint", str(trained / "dq" / "model.pt"), "--data", str(small_binary), "--out",
            str(trained / "eval-gate"), "--no-plots", "--gate-sweep", "3:4")
    sweep = json.loads(r.stdout)["gate_sweep"]["rows"]
    assert [s["threshold"] for s in sweep] == [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]
    rates = [s["second_pass_rate"] for s in sweep]
    assert rates == sorted(rates) and sweep[0]["mean_bitflops"] <= sweep[-1]["mean_bitflops"]
    # a threshold that sends some but not all of this small model's (unsure) images to pass 2
    t = min((s for s in sweep if 0 < s["second_pass_rate"] < 1), key=lambda s: abs(s["second_pass_rate"] - 0.5))
    repo = trained / "models-gated"
    run("export", "--checkpoint", str(trained / "dq" / "model.pt"), "--data", str(small_binary), "--out", str(repo),
        "--name", "tiny_gated", "--gate", f"3:4:{t['threshold']}")
    bundle = repo / "tiny_gated" / "1"
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["policy"] == {"kind": "gated", "first_bits": 3, "second_bits": 4, "threshold": t["threshold"]}
    assert m["calibration"] == []  # pass 1 at fixed bits: the knob moves nothing
    # ... and the controller would only cost: the bundle leaves it out (stem graph, layers, Bit-FLOPs)
    assert m["controller"] is None and all(r["kind"] != "controller" for r in m["layers"])
    assert m["metrics"]["second_pass_rate"] == t["second_pass_rate"] and m["metrics"]["top1"] == t["top1"]
    assert m["metrics"]["bitflops_mean"] == pytest.approx(t["mean_bitflops"])
    dyn = [r for r in m["layers"] if r["kind"] == "dynamic"]
    assert m["bitflops"]["max"] == m["bitflops"]["fixed"] + sum(r["macs"] * (5 * 5 + 4 * 4) for r in dyn)
    ref = json.loads((bundle / "reference.json").read_text())
    assert set(ref["second"]) == {0, 1} and len(ref["second"]) == ref["images"] == 400
    assert set(ref["bits"]) == {"0000"} and ref["knobs"] == []  # pass 1's plans: every layer at 3 bits
    res = _verify(bundle, small_binary)
    assert res["bits_agree"] >= 0.999 and res["top1_agree"] >= 0.999 and res["logits_identical"] >= 0.95


def test_gate_refusals_are_one_line(trained, small_binary):
    for spec, says in (("9:4:0.5", "not a candidate"), ("3:4:1.5", "not in (0, 1]"), ("3:4", "FIRST:SECOND:THRESHOLD")):
        r = subprocess.run([PY, "-m", "training", "export", "--checkpoint", str(trained / "dq" / "model.pt"), "--data",
                            str(small_binary), "--out", str(trained / "models-refused"), "--name", "x", "--gate", spec],
                           cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
    r = subprocess.run([PY, "-m", "training", "evaluate", "--checkpoint", str(trained / "dq" / "model.pt"), "--data",
                        str(small_binary), "--out", str(trained / "x"), "--gate-sweep", "3:4", "--arithmetic", "float"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--arithmetic int8" in r.stderr
    assert not (trained / "models-refused").exists()


def test_learned_clips_calibrate_train_and_export_with_parity(trained, small_binary):
    cfg = json.loads((trained / "dql" / "config.json").read_text())
    assert (cfg["model"]["act"], cfg["act_init"], cfg["distill_weight"]) == ("lsq", "calibrate", 0.5)
    calibrated = json.loads((trained / "dql" / "calibration.json").read_text())
    # every quantized input of resnet8: 6 block convs and 2 shortcuts, each at its own clip
    assert len(calibrated) == 8 and len(set(calibrated.values())) == 8 and all(v > 0 for v in calibrated.values())
    repo = trained / "models-lsq"
    run("export", "--checkpoint", str(trained / "dql" / "model.pt"), "--data", str(small_binary), "--out", str(repo),
        "--name", "tiny_lsq")
    bundle = repo / "tiny_lsq" / "1"
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["bits"]["activation_quantizer"] == "lsq"
    # trained clips, none of them DoReFa's 1, which the engine must reproduce (the graphs fold each clip into
    # its conv's requantization multipliers)
    from training.checkpoint import load_model

    model, _ = load_model(trained / "dql" / "model.pt")
    trained_clips = {n: m.act.clip_value() for n, m in model.named_modules() if n in calibrated}
    assert all(abs(c - 1) > 1e-3 for c in trained_clips.values()) and trained_clips != calibrated
    res = _verify(bundle, small_binary)
    assert res["bits_agree"] >= 0.999 and res["top1_agree"] >= 0.999 and res["logits_identical"] >= 0.95
    assert res["accuracy_engine"] == pytest.approx(m["metrics"]["top1"], abs=0.005)


def test_multi_precision_weights_serve_every_width_and_a_controller_on_them(trained, small_binary):
    log = [json.loads(x) for x in (trained / "multi" / "log.jsonl").read_text().splitlines()]
    assert set(log[0]["test_acc_by_bits"]) == {"3", "4", "5"}
    assert log[0]["test_acc"] == log[0]["test_acc_by_bits"]["5"]  # the checkpoint is evaluated at its widest
    # each width of the shared weights evaluates (here at 3 bits, its own BN folded in); a non-candidate is refused
    r = run("evaluate", "--checkpoint", str(trained / "multi" / "model.pt"), "--data", str(small_binary), "--out",
            str(trained / "multi" / "eval3"), "--static-bits", "3", "--arithmetic", "float", "--no-plots")
    assert json.loads(r.stdout)["top1"] == pytest.approx(log[0]["test_acc_by_bits"]["3"], abs=1e-6)
    bad = subprocess.run([PY, "-m", "training", "evaluate", "--checkpoint", str(trained / "multi" / "model.pt"),
                          "--data", str(small_binary), "--out", str(trained / "x"), "--static-bits", "6"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "not a candidate" in bad.stderr and bad.stderr.count("\n") == 1
    dqm = json.loads((trained / "dqm" / "log.jsonl").read_text().splitlines()[0])
    assert json.loads((trained / "dqm" / "config.json").read_text())["cost_scope"] == "total"
    assert 0.5 < dqm["train_cost_ratio"] < 1.5
    # the controller trained on them exports with each candidate's own BN folded into its branch, with parity
    repo = trained / "models-multi"
    run("export", "--checkpoint", str(trained / "dqm" / "model.pt"), "--data", str(small_binary), "--out", str(repo),
        "--name", "tiny_dqm")
    res = _verify(repo / "tiny_dqm" / "1", small_binary)
    assert res["bits_agree"] >= 0.999 and res["top1_agree"] >= 0.999 and res["logits_identical"] >= 0.95


def test_distillation_needs_a_real_teacher(small_binary, tmp_path):
    r = subprocess.run([PY, "-m", "training", "train", "--data", str(small_binary), "--out", str(tmp_path / "x"),
                        "--arch", "resnet8", "--precision", "static", "--bits", "4", "--distill",
                        str(tmp_path / "missing.pt"), "--epochs", "1", "--no-progress"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "missing.pt" in r.stderr


def test_channels_last_trains_and_compile_needs_torch_2(small_binary, tmp_path):
    import torch

    common = ["--data", str(small_binary), "--arch", "resnet8", "--precision", "static", "--bits", "4", "--epochs", "1",
              "--train-limit", "256", "--eval-limit", "100", "--batch-size", "64", "--no-progress"]
    run("train", "--out", str(tmp_path / "cl"), "--channels-last", "--act", "pact", *common)
    assert json.loads((tmp_path / "cl" / "config.json").read_text())["channels_last"] is True
    if hasattr(torch, "compile"):  # torch 2.x (the GPU machine): the compiled forward trains
        run("train", "--out", str(tmp_path / "c"), "--compile", *common)
    else:  # Debian's torch 1.13: refused in one line
        r = subprocess.run([PY, "-m", "training", "train", "--out", str(tmp_path / "c"), "--compile", *common], cwd=ROOT,
                           capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "torch 2.0" in r.stderr


def test_export_refuses_to_overwrite(trained, small_binary):
    r = subprocess.run([PY, "-m", "training", "export", "--checkpoint", str(trained / "dq" / "model.pt"), "--data",
                        str(small_binary), "--out", str(trained / "models-float"), "--name", "tiny_dq"], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode == 0:  # first export happened in another test order; the second must refuse
        r = subprocess.run(r.args, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "exists" in r.stderr


def test_ddp_two_cpu_processes(small_binary, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # --redirects 1 --tee 1: Debian's torch 1.13 on Python 3.11 cannot parse torchrun's default "0" (a Flag enum
    # iteration change in 3.11); any non-zero value works.
    r = subprocess.run([PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                        "--redirects", "1", "--tee", "1",
                        "-m", "training", "train", "--data", str(small_binary), "--out", str(tmp_path / "ddp"),
                        "--arch", "resnet8", "--epochs", "1", "--batch-size", "32", "--device", "cpu",
                        "--no-progress"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    log = [json.loads(x) for x in (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1  # only rank 0 writes
    assert (tmp_path / "ddp" / "model.pt").is_file()


def test_compare_tables_and_plots_evaluated_runs(trained, small_binary, tmp_path):
    common = ["--data", str(small_binary), "--arch", "resnet8", "--batch-size", "64", "--no-progress"]
    run("train", "--out", str(trained / "w4"), "--precision", "static", "--bits", "4",
        "--init", str(trained / "fp" / "model.pt"), "--epochs", "1", "--lr", "0.02", *common)
    # a run that was never evaluated is refused with the command that fixes it
    r = subprocess.run([PY, "-m", "training", "compare", str(trained / "w4"), "--out", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "python3 -m training evaluate" in r.stderr
    evs = {}
    for name in ("dq", "w4"):
        run("evaluate", "--checkpoint", str(trained / name / "model.pt"), "--data", str(small_binary),
            "--out", str(trained / name / "eval"), "--no-plots")
        evs[name] = json.loads((trained / name / "eval" / "eval.json").read_text())
    run("compare", str(trained / "w4"), str(trained / "dq"), "--out", str(tmp_path))
    table = {r["run"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert table["w4"]["what"] == "static 4-bit" and table["w4"]["vs_static"] is None
    dq = table["dq"]
    assert dq["what"] == "dynamic {3, 4, 5}, target 4" and dq["epochs"] == 1 and dq["top1"] == evs["dq"]["top1"]
    assert dq["vs_static"]["savings"] == pytest.approx(1 - evs["dq"]["bitflops"]["mean"] / evs["w4"]["bitflops"]["mean"])
    assert dq["vs_static"]["top1_change"] == pytest.approx(evs["dq"]["top1"] - evs["w4"]["top1"])
    lo, hi = evs["dq"]["top1_shuffled_plans_range"]
    assert 0 <= lo <= evs["dq"]["top1_shuffled_plans"] <= hi <= 1
    assert dq["top1_gain_over_shuffled"] == pytest.approx(evs["dq"]["top1"] - evs["dq"]["top1_shuffled_plans"])
    assert dq["top1_gain_over_shuffled_range"] == pytest.approx([evs["dq"]["top1"] - hi, evs["dq"]["top1"] - lo])
    md = (tmp_path / "results.md").read_text()
    assert md.count("\n") == 4 and f"| dq | dynamic {{3, 4, 5}}, target 4 | 1 |" in md
    assert (tmp_path / "accuracy_vs_bitflops.png").stat().st_size > 1000
