import json
from pathlib import Path

import pytest
import torch

from training import cost
from training.resnet import ModelConfig, build_model

VECTORS = Path(__file__).resolve().parents[2] / "test" / "fixtures" / "bitflops-vectors.json"


def test_hand_computed_layer_macs_and_bitflops():
    m = build_model(ModelConfig(arch="resnet20"))
    m.set_precision("dynamic")
    table = cost.layer_table(m, (3, 32, 32))
    rows = {r["name"]: r for r in table}
    # layer2.0.conv1: 3x3, 16 -> 32 channels, stride 2, output 16x16: 16*16*32*16*9 MACs
    assert rows["layer2.0.conv1"]["macs"] == 16 * 16 * 32 * 16 * 9 == 1179648
    assert rows["layer2.0.shortcut"]["macs"] == 16 * 16 * 32 * 16
    assert rows["stem"]["kind"] == "fp" and rows["stem"]["macs"] == 32 * 32 * 16 * 3 * 9
    assert rows["stem"]["bits"] == 32 and rows["layer1.0.conv1"]["bits"] == 4 and rows["controller.fc2"]["bits"] == 32
    assert rows["controller.fc1"]["macs"] == 16 * 8 * 8 * 64
    assert sum(r["macs"] for r in table if r["kind"] != "controller") == 40_813_184  # ResNet-20: 40.8 M MACs
    plan = [4] * 12
    plan[0] = 3
    expected = cost.bitflops(table, [4] * 12) - 1179648 * (16 - 9)
    assert cost.bitflops(table, plan) == expected


def test_shared_vectors_match(tmp_path):
    """The same vectors are checked by the TypeScript tests (test/cost)."""
    vectors = json.loads(VECTORS.read_text())
    assert len(vectors) >= 3
    for v in vectors:
        assert cost.bitflops(v["manifest_layers"], v["plan"]) == v["expected_bitflops"], v["name"]
        assert cost.bitflops(v["manifest_layers"], [v["bits_reference"]] * len(v["plan"])) == v["expected_reference"], v["name"]
        # the per-batch form (manifest metrics, calibration tables, results) on the same vectors, two rows at once
        both = torch.tensor([v["plan"], [v["bits_reference"]] * len(v["plan"])], dtype=torch.float32)
        assert cost.bitflops_batch(v["manifest_layers"], both).tolist() == [v["expected_bitflops"], v["expected_reference"]], v["name"]


def test_cost_ratio_is_one_at_target_and_differentiable():
    m = build_model(ModelConfig(arch="resnet8"))
    cost.attach_macs(m, (3, 32, 32))
    L = len(m.dynamic_layers)
    logits = torch.zeros(2, L, 3, requires_grad=True)
    onehot = torch.zeros(2, L, 3)
    onehot[:, :, 1] = 1  # every layer at 4 bits = the target
    onehot = onehot + logits - logits.detach()
    r = cost.dynamic_cost_ratio(m, onehot, 4)
    assert r.item() == pytest.approx(1.0)
    r.backward()
    assert logits.grad is not None and logits.grad[..., 2].sum() > logits.grad[..., 0].sum()


def test_total_cost_ratio_is_the_whole_network_against_the_static_twin():
    dyn = build_model(ModelConfig(arch="resnet20", candidates=[3, 4, 5]))
    dyn.set_precision("dynamic")
    table = cost.attach_macs(dyn, (3, 32, 32))
    twin = build_model(ModelConfig(arch="resnet20", candidates=[3, 4, 5], controller=False))
    twin.set_precision("static", 4)
    twin_bitflops = cost.bitflops(cost.layer_table(twin, (3, 32, 32)), [4] * 12)
    onehot = torch.zeros(2, 12, 3)
    onehot[0, :, 1] = 1  # every dynamic layer at 4 bits: the twin's plan, plus the controller
    onehot[1, :, 0] = 1  # every dynamic layer at 3 bits
    got = cost.total_cost_ratio(dyn, onehot, 4.0)
    assert got[0].item() == pytest.approx(cost.bitflops(table, [4] * 12) / twin_bitflops, rel=1e-6)
    assert got[1].item() == pytest.approx(cost.bitflops(table, [3] * 12) / twin_bitflops, rel=1e-6)
    ctrl = sum(r["macs"] * r["bits"] ** 2 for r in table if r["kind"] == "controller")
    assert got[0].item() == pytest.approx(1 + ctrl / twin_bitflops, rel=1e-6) and got[0] > 1
    assert cost.dynamic_cost_ratio(dyn, onehot, 4.0, "total").item() == pytest.approx(got.mean().item())
    assert cost.dynamic_cost_ratio(dyn, onehot[:1], 4.0).item() == pytest.approx(1.0)  # the dynamic layers alone
    with pytest.raises(ValueError, match="unknown cost scope"):
        cost.dynamic_cost_ratio(dyn, onehot, 4.0, "bogus")
