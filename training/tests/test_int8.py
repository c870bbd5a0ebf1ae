"""The served arithmetic (int8.py) against independent references: the unfolded model, the format-1 bundles'
own reference outputs, and the graph structure the server relies on. (Its exactness against onnxruntime is
checked through `dqserve verify` in test_end_to_end.py and the server's tests.)"""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from training import int8
from training.controller import choose
from training.layers import QConv2d
from training.onnx_export import body_graph, order_input, rows_input, split_input, static_graph, stem_graph
from training.resnet import ModelConfig, build_model

from .conftest import ROOT

FORMAT1 = ROOT / "training" / "format1-bundles"


def _random_bn(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _unfolded(model, images_u8, choice):
    """The model's own unfolded arithmetic in eval mode: conv on quantized operands, then BN with its running
    statistics (the training code path with BN frozen), written independently of deploy.fold."""
    from training.data import normalize

    model.eval()
    convs = [m for m in model.modules() if isinstance(m, QConv2d)]
    for m in convs:
        m.training = True  # conv_bn then runs bn(conv(x)) instead of the folded conv
    try:
        with torch.no_grad():
            return model(normalize(images_u8), choice=choice)[0]
    finally:
        for m in convs:
            m.training = False


@pytest.fixture(scope="module")
def dynamic_model():
    torch.manual_seed(0)
    m = build_model(ModelConfig(arch="resnet8"))
    _random_bn(m)
    m.set_precision("dynamic")
    from training import cost

    cost.attach_macs(m, (3, 32, 32))
    return m.eval()


def test_folded_float_arithmetic_matches_the_unfolded_model(dynamic_model, cifar_test):
    """BN folding (deploy.fold) against conv -> BN: same function, so the same top-1 and close logits."""
    images = cifar_test.images[:200]
    net = int8.from_model(dynamic_model)
    L = len(net.dynamic_layers)
    choice = torch.randint(0, 3, (len(images), L), generator=torch.Generator().manual_seed(1))
    bits = torch.tensor(net.candidates)[choice]
    with torch.no_grad():
        folded = int8.forward_float(net, images, bits)
    ref = _unfolded(dynamic_model, images, choice)
    assert (folded.argmax(1) == ref.argmax(1)).float().mean() >= 0.98
    # Folding reorders float arithmetic, so a quantizer's rounding boundary is crossed now and then (measured: 1 image
    # in 8 has a logit off by more than 1e-3 of the range, the median image 2e-6); a wrong fold moves every image
    # (without BN's sqrt: top-1 agreement 71%, median difference 17% of the range, no image within 1e-3).
    diff = (folded - ref).abs().max(1).values / ref.abs().max()
    assert diff.median() < 1e-4 and (diff < 1e-3).float().mean() >= 0.8


def test_int8_arithmetic_tracks_the_float_one(dynamic_model, cifar_test):
    images = cifar_test.images[200:400]
    net = int8.from_model(dynamic_model)
    L = len(net.dynamic_layers)
    int8.calibrate(net, cifar_test.images[:300], [torch.full((300, L), b) for b in net.candidates])
    assert net.s_stem > 0 and all(b.s_out > 0 and b.s_z > 0 for b in net.blocks)
    bits = torch.full((len(images), L), 4)
    with torch.no_grad():
        f = int8.forward_float(net, images, bits)
        q = int8.forward_body(net, int8.forward_stem(net, images)[0], bits)
    assert (f.argmax(1) == q.argmax(1)).float().mean() >= 0.9
    assert torch.corrcoef(torch.stack([f.flatten(), q.flatten()]))[0, 1] > 0.98


def test_eight_bit_layers_are_refused(dynamic_model):
    m = build_model(ModelConfig(arch="resnet8", candidates=[8], fixed_bits=8))
    m.set_precision("static", 8)
    with pytest.raises(ValueError, match="8 bits|int8"):
        int8.from_model(m.eval())


@pytest.mark.parametrize("name", ["resnet20_w4_4", "resnet20_dq_4"])
def test_format1_bundle_reads_back_to_its_own_reference(name, cifar_test):
    """from_bundle_v1 parses the committed format-1 bundles op for op: their float arithmetic reproduces the
    reference.json that PyTorch wrote when they were exported."""
    d = FORMAT1 / name
    net = int8.from_bundle_v1(d)
    ref = json.loads((d / "reference.json").read_text())
    pick = np.linspace(0, len(ref["order"]) - 1, 300).astype(int)
    index = {n: i for i, n in enumerate(cifar_test.names)}
    images = cifar_test.images[[index[ref["order"][i]] for i in pick]]
    bits = torch.tensor([[net.candidates[int(c)] for c in ref["bits"][i]] for i in pick])
    with torch.no_grad():
        logits = int8.forward_float(net, images, bits)
    assert (logits.argmax(1).numpy() == np.array(ref["top1"])[pick]).mean() >= 0.99
    first = [i for i in pick if i < len(ref["logits_first"])]
    if first:
        diff = (logits[:len(first)] - torch.tensor([ref["logits_first"][i] for i in first])).abs().max()
        assert diff < 0.5
    if net.controller is not None:
        man = json.loads((d / "manifest.json").read_text())
        with torch.no_grad():
            x = int8.stem_float(net, int8.normalize(net, images))
            for blk in net.blocks[:net.fixed_blocks]:
                q = next(iter(blk.conv1.convs.values()))
                h = torch.relu(int8._float_conv(x, q))
                x = torch.relu(int8._float_conv(h, next(iter(blk.conv2.convs.values()))) + x)
            c = net.controller
            pooled = torch.nn.functional.avg_pool2d(x, x.shape[-1] // c.pool).flatten(1)
            ctl = c.fc2(torch.relu(c.fc1(pooled))).view(-1, c.num_layers, c.num_candidates)
        chosen = torch.tensor(net.candidates)[choose(ctl, torch.tensor(man["controller"]["cost"]))]
        assert (chosen == bits).all(1).float().mean() >= 0.99


def test_graphs_run_quantized_convs_on_integer_kernels(dynamic_model, cifar_test):
    net = int8.from_model(dynamic_model)
    L = len(net.dynamic_layers)
    int8.calibrate(net, cifar_test.images[:100], [torch.full((100, L), b) for b in net.candidates])
    stem, body = stem_graph(net, (32, 32)), body_graph(net, (32, 32))
    ops = lambda g: [n.op_type for n in g.graph.node]  # noqa: E731
    # one float Conv (the full-precision stem); every quantized conv is a QLinearConv, channels last
    assert ops(stem).count("Conv") == 1 and "Conv" not in ops(body)
    convs = [n for g in (stem, body) for n in g.graph.node if n.op_type == "QLinearConv"]
    fixed = 2 * net.fixed_blocks
    per_block = 9 + 3  # conv1 per (b1, b2) pair, conv2 per b2
    shortcuts = sum(1 for b in net.blocks if b.shortcut is not None)
    assert len(convs) == fixed + per_block * (len(net.blocks) - net.fixed_blocks) + shortcuts
    assert all(n.domain == "com.microsoft" and any(a.name == "channels_last" and a.i == 1 for a in n.attribute) for n in convs)
    inputs = {i.name for i in body.graph.input}
    nb = len(net.blocks) - net.fixed_blocks
    assert inputs == {"z", "sc"} | {order_input(j) for j in range(nb)} | {
        name(j, b1) for j in range(nb) for b1 in net.candidates for name in (rows_input, split_input)}
    assert stem.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


def test_static_graph_is_one_session_without_dispatch(cifar_test):
    torch.manual_seed(0)
    m = build_model(ModelConfig(arch="resnet8", candidates=[4]))
    _random_bn(m)
    m.set_precision("static", 4)
    net = int8.from_model(m.eval())
    int8.calibrate(net, cifar_test.images[:100], [torch.full((100, len(net.dynamic_layers)), 4)])
    g = static_graph(net, (32, 32))
    assert [i.name for i in g.graph.input] == ["image"] and [o.name for o in g.graph.output] == ["logits"]
    assert not {"Gather", "Concat"} & {n.op_type for n in g.graph.node}


def test_qadd_rounds_half_to_even_and_saturates():
    a = torch.tensor([128.0, 130.0, 131.0, 255.0, 0.0])
    b = torch.tensor([0.0, 0.0, 0.0, 255.0, 0.0])
    # a's value (a - 128) * 0.5, b's b * 1, out scale 1: 0, 1, 1.5 -> 2 (even), 63.5 + 255 -> 255, -64 -> 0
    out = int8.qadd(a, 0.5, 128, b, 1.0, 0, 1.0)
    assert out.tolist() == [0.0, 1.0, 2.0, 255.0, 0.0]
    assert int8.qadd(torch.tensor([129.0]), 0.5, 128, torch.tensor([0.0]), 1.0, 0, 1.0).tolist() == [0.0]  # 0.5 -> 0
