"""The confidence-gated second pass (evaluate.Gate, the dynamic bundle's "policy"): the confidence formula, what a
gated NetSubject computes per image, its Bit-FLOPs, the threshold sweep, and the CLI's refusals. No training: a
randomly initialised ResNet-8 with random BN statistics in the int8 arithmetic."""
import math

import numpy as np
import onnx
import pytest
import torch

from training import cost, int8
from training.cli import UsageError, _gate_spec
from training.evaluate import Gate, ModelSubject, NetSubject, Variant, confidence, evaluate, gate_sweep
from training.resnet import ModelConfig, build_model

from .test_int8 import _random_bn

N = 240  # test images; batches of 64 below, so a batch boundary splits them


# ---- confidence ----------------------------------------------------------------------------------------
def test_confidence_of_uniform_logits_is_one_over_the_classes():
    for c in (2, 10, 1000):
        conf = confidence(torch.full((3, c), 1.25))
        assert conf.dtype == torch.float64 and conf.shape == (3,) and (conf == 1 / c).all()


def test_confidence_of_one_dominant_logit_is_almost_one():
    logits = torch.zeros(2, 10)
    logits[0, 3], logits[1, 7] = 50.0, 800.0  # exp(-800) underflows to 0: exactly 1
    conf = confidence(logits)
    assert conf[0] == pytest.approx(1.0, abs=1e-20) and conf[0] <= 1.0 and conf[1] == 1.0


def test_confidence_is_the_float64_formula_on_float32_logits():
    """The server computes 1 / sum_c exp(l_c - max l) in float64 over the float32 values, left to right: the gate
    compares it with a threshold, so the last bit matters."""
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(50, 10, generator=g) * 3).float()
    conf = confidence(logits)
    for row, c in zip(logits.tolist(), conf.tolist()):  # tolist: float32 values widened to float64 exactly
        m = max(row)
        total = 0.0
        for v in row:
            total += math.exp(v - m)
        assert c == 1 / total
    # and not the softmax of float32 arithmetic, which differs in the low bits
    assert not torch.equal(conf, torch.softmax(logits, 1).max(1).values.double())


# ---- a gated network -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def net(cifar_test):
    torch.manual_seed(0)
    m = build_model(ModelConfig(arch="resnet8"))
    _random_bn(m)
    m.set_precision("dynamic")
    table = cost.attach_macs(m, (3, 32, 32))
    m.eval()
    n = int8.from_model(m)
    L = len(n.dynamic_layers)
    int8.calibrate(n, cifar_test.images[-300:], [torch.full((300, L), b) for b in n.candidates])
    return NetSubject(n, m.knob_cost().cpu()), table, m


@pytest.fixture(scope="module")
def images(cifar_test):
    idx = torch.from_numpy(np.random.default_rng(0).permutation(len(cifar_test.labels))[:N])
    return cifar_test.images[idx], cifar_test.labels[idx]


def _median_threshold(subject, x):
    """A threshold that sends about half the images to pass 2 (random weights give no natural one)."""
    (l1, _, _), = subject.run(x, [Variant()])
    return float(confidence(l1).median())


@pytest.mark.parametrize("first", [None, 3])
def test_gated_logits_are_pass_1_where_confident_and_pass_2_elsewhere(net, images, first):
    subject, _, _ = net
    x, _ = images
    (p1, b1, s1), = subject.run(x, [Variant(force_bits=first)])
    t = float(confidence(p1).median())
    gate = Gate(first, 5, t)
    (lg, bg, sg), (l2, _, s2) = subject.run(x, [Variant(gate=gate), Variant(force_bits=5)], batch=64)
    second = confidence(p1) < t
    assert 0 < int(second.sum()) < N and not s1.any() and not s2.any()
    assert torch.equal(sg, second) and torch.equal(bg, b1)  # the bits are pass 1's
    assert torch.equal(lg[~second], p1[~second]) and torch.equal(lg[second], l2[second])
    if first is not None:
        assert (bg == first).all()
    else:
        assert len(torch.unique(bg)) > 1  # the controller's plans


def test_threshold_one_sends_every_unsure_image_to_pass_2(net, images):
    subject, _, _ = net
    x, _ = images
    (p1, _, _), (lg, _, sg), (l2, _, _) = subject.run(x, [Variant(force_bits=3), Variant(gate=Gate(3, 4, 1.0)),
                                                         Variant(force_bits=4)])
    assert torch.equal(sg, confidence(p1) < 1.0) and sg.all()
    assert torch.equal(lg, l2)


def test_model_subject_refuses_a_gate(net, images):
    _, _, model = net
    with pytest.raises(ValueError, match="int8"):
        ModelSubject(model).run(images[0][:8], [Variant(gate=Gate(None, 4, 0.5))])


def test_gate_checks_its_bits_and_threshold():
    Gate(None, 4, 1.0).check([3, 4, 5])
    for bad in (Gate(9, 4, 0.5), Gate(3, 6, 0.5), Gate(3, 4, 0.0), Gate(3, 4, 1.5)):
        with pytest.raises(ValueError):
            bad.check([3, 4, 5])


def test_evaluate_counts_both_passes_and_the_sweep_agrees(net, images):
    subject, table, _ = net
    x, labels = images
    t = _median_threshold(subject, x)
    gate = Gate(None, 5, t)
    ev = evaluate(subject, table, x, labels, 4, knobs=(0.0, 2.0), policy=gate)
    per = ev["_per_image"]
    L = len(subject.net.dynamic_layers)
    extra = cost.bitflops(table, [5] * L) - cost.fixed_bitflops(table)
    bits = torch.from_numpy(per["bits"])
    assert np.array_equal(per["bitflops"], cost.bitflops_batch(table, bits).numpy() + per["second"] * extra)
    assert per["second"].dtype == np.bool_ and ev["second_pass_rate"] == pytest.approx(per["second"].mean())
    assert 0 < ev["second_pass_rate"] < 1 and ev["policy"] == {"kind": "gated", "first_bits": None, "second_bits": 5,
                                                               "threshold": t}
    # the knob sweep is gated too: knob 0 is the main run
    cal = {c["knob"]: c for c in ev["calibration"]}
    assert cal[0.0]["mean_bitflops"] == ev["bitflops"]["mean"] and cal[0.0]["accuracy"] == pytest.approx(ev["top1"])
    assert cal[0.0]["second_pass_rate"] == ev["second_pass_rate"]
    lk, bk, sk = per["knobs"][0.0]
    assert np.array_equal(sk.numpy(), per["second"]) and np.array_equal(lk.numpy(), per["logits"])
    # the static candidates stay single-pass: they describe the weights
    assert [s["bitflops"] for s in ev["static_at_candidates"]] == [cost.bitflops(table, [b] * L) for b in (3, 4, 5)]
    sweep = gate_sweep(subject, table, x, labels, None, 5, [0.2, t, 1.0])
    rows = sweep["rows"]
    assert {k: rows[1][k] for k in ("threshold", "top1", "mean_bitflops", "second_pass_rate")} == {
        "threshold": t, "top1": pytest.approx(ev["top1"]), "mean_bitflops": pytest.approx(ev["bitflops"]["mean"]),
        "second_pass_rate": ev["second_pass_rate"]}
    assert rows[0]["mean_bitflops"] <= rows[1]["mean_bitflops"] <= rows[2]["mean_bitflops"]
    # the static line is the single-pass candidates; the margin is top-1 over it at the same mean Bit-FLOPs
    line = sweep["static_line"]
    assert [p["bits"] for p in line] == [3, 4, 5]
    # a static model runs no controller: the line leaves its cost out
    plain = cost.without_controller(table)
    assert len(plain) < len(table)
    assert [(p["bitflops"], p["top1"]) for p in line] == [(cost.bitflops(plain, [s["bits"]] * L),
                                                           pytest.approx(s["accuracy"])) for s in ev["static_at_candidates"]]
    r = rows[1]
    at = np.interp(r["mean_bitflops"], [p["bitflops"] for p in line], [p["top1"] for p in line])
    assert r["margin_vs_static"] == pytest.approx(r["top1"] - at)
    held = sweep["held_out"]
    assert held["splits"] == 20 and 0.05 <= held["threshold_range"][0] <= held["threshold_range"][1] <= 0.99
    assert held["margin_sd"] >= 0 and line[0]["bitflops"] <= held["mean_bitflops"]


def test_a_gate_with_fixed_first_bits_has_no_knob_sweep(net, images):
    subject, table, _ = net
    x, labels = images
    ev = evaluate(subject, table, x, labels, 4, knobs=(0.0, 2.0), policy=Gate(3, 4, 0.9))
    assert ev["calibration"] == [] and ev["_per_image"]["knobs"] == {} and (ev["_per_image"]["bits"] == 3).all()
    plain = evaluate(subject, table, x, labels, 4, knobs=(0.0,))
    assert "policy" not in plain and "second_pass_rate" not in plain and not plain["_per_image"]["second"].any()


def test_export_writes_the_policy_and_the_second_pass_flags(net, cifar_test, tmp_path):
    import json

    from training.export import REFERENCE_KNOBS, Deployable, export_bundle

    subject, table, _ = net
    test = cifar_test.subset(N)
    t = _median_threshold(subject, test.images)
    dep = Deployable(subject.net, table, subject.knob_cost, {"candidates": [3, 4, 5], "reference": 4, "fixed": 4},
                     "resnet8", {})
    ev = export_bundle(dep, test, tmp_path / "gated", "g", 1, policy=Gate(None, 5, t))
    m = json.loads((tmp_path / "gated" / "manifest.json").read_text())
    ref = json.loads((tmp_path / "gated" / "reference.json").read_text())
    L = len(subject.net.dynamic_layers)
    assert m["policy"] == {"kind": "gated", "first_bits": None, "second_bits": 5, "threshold": t}
    top = cost.bitflops(table, [5] * L)
    assert m["bitflops"]["max"] == top + top - m["bitflops"]["fixed"]
    assert m["metrics"]["second_pass_rate"] == ev["second_pass_rate"] and 0 < ev["second_pass_rate"] < 1
    assert ref["second"] == ev["_per_image"]["second"].astype(int).tolist() and set(ref["second"]) == {0, 1}
    assert [k["knob"] for k in ref["knobs"]] == list(REFERENCE_KNOBS)
    for k in ref["knobs"]:
        assert k["second"] == ev["_per_image"]["knobs"][k["knob"]][2].int().tolist()
    # the bits are pass 1's (the controller's at knob 0); the answer is the gated one
    (l1, b1, _), = subject.run(test.images, [Variant()])
    assert ref["bits"] == ["".join(str([3, 4, 5].index(int(b))) for b in row) for row in b1]
    assert ref["top1"] == ev["_per_image"]["logits"].argmax(1).tolist() != l1.argmax(1).tolist()
    # pass 1 at fixed bits chooses nothing: the bundle leaves the controller out, graph, layers and costs
    ev3 = export_bundle(dep, test, tmp_path / "fixed", "g", 1, policy=Gate(3, 5, t))
    m3 = json.loads((tmp_path / "fixed" / "manifest.json").read_text())
    plain = cost.without_controller(table)
    assert m3["controller"] is None and m3["bits"]["controller"] is None and m3["calibration"] == []
    assert [r["name"] for r in m3["layers"]] == [r["name"] for r in plain]
    assert [o.name for o in onnx.load(tmp_path / "fixed" / "stem.onnx").graph.output] == ["z", "sc"]
    assert m3["bitflops"]["fixed"] == cost.fixed_bitflops(plain) < m["bitflops"]["fixed"]
    extra = cost.bitflops(plain, [5] * L) - cost.fixed_bitflops(plain)
    assert ev3["_per_image"]["bitflops"].tolist() == (cost.bitflops(plain, [3] * L)
                                                     + ev3["_per_image"]["second"] * extra).tolist()
    assert m3["bitflops"]["max"] == cost.bitflops(plain, [5] * L) + extra
    export_bundle(dep, test, tmp_path / "plain", "g", 1)
    m = json.loads((tmp_path / "plain" / "manifest.json").read_text())
    ref = json.loads((tmp_path / "plain" / "reference.json").read_text())
    assert "policy" not in m and "second_pass_rate" not in m["metrics"] and m["bitflops"]["max"] == top
    assert "second" not in ref and all("second" not in k for k in ref["knobs"])


# ---- the command line's spec ---------------------------------------------------------------------------
def test_gate_spec_parses_and_refuses_in_one_line():
    assert _gate_spec("--gate", "3:4:0.7") == (3, 4, 0.7)
    assert _gate_spec("--gate", "controller:5:1") == (None, 5, 1.0)
    assert _gate_spec("--gate-sweep", "controller:4", threshold=False) == (None, 4, None)
    for spec in ("3:4", "3:4:x", "three:4:0.5", "3:4:0.5:1", "", "3:4:0", "3:4:1.5", "3:4:nan", "3:4:-0.1"):
        with pytest.raises(UsageError) as e:
            _gate_spec("--gate", spec)
        assert "\n" not in str(e.value)
    with pytest.raises(UsageError):
        _gate_spec("--gate-sweep", "3:4:0.5", threshold=False)
