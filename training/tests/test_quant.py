import pytest
import torch

from training.quant import ActQuant, dorefa_weight, dorefa_weight_int, levels, quantize_unit


def test_dorefa_weight_has_2b_levels_in_minus1_1():
    torch.manual_seed(0)
    w = torch.randn(64, 32, 3, 3)
    for b in (2, 3, 4, 5, 8):
        q = dorefa_weight(w, b)
        vals = torch.unique(q)
        assert len(vals) <= 2 ** b
        assert len(vals) >= 2 ** b - 2  # a Gaussian tensor fills (nearly) every level
        assert q.min() >= -1 - 1e-6 and q.max() <= 1 + 1e-6
        steps = torch.diff(vals)
        assert torch.allclose(steps, torch.full_like(steps, 2 / levels(b)) * torch.round(steps / (2 / levels(b))), atol=1e-5)


def test_integer_numerators_reproduce_float_levels():
    torch.manual_seed(1)
    w = torch.randn(16, 8, 3, 3)
    for b in (2, 3, 4, 5, 6, 7):
        m = dorefa_weight_int(w, b)
        assert m.abs().max() <= levels(b) <= 127  # fits int8
        assert torch.all(m % 2 != 0) if levels(b) % 2 else True  # odd numerators: 2k - (2^b - 1)
        assert torch.allclose(m.float() / levels(b), dorefa_weight(w, b), atol=1e-6)


def test_straight_through_gradients():
    x = torch.linspace(-0.5, 1.5, 41, requires_grad=True)
    y = quantize_unit(x, 3)
    y.sum().backward()
    assert torch.all(x.grad == 1)  # round passes the gradient straight through
    x.grad = None
    ActQuant("dorefa")(x, 4).sum().backward()
    inside = (x > 0) & (x < 1)
    assert torch.all(x.grad[inside] == 1) and torch.all(x.grad[(x < 0) | (x > 1)] == 0)


def test_pact_alpha_gets_gradient_only_above_clip():
    q = ActQuant("pact", pact_init=1.0)
    x = torch.tensor([0.2, 0.5, 2.0, 3.0])
    q(x, 4).sum().backward()
    assert q.alpha.grad.item() == 2.0  # two inputs above alpha = 1
    vals = torch.unique(q(torch.linspace(0, 2, 200), 2))
    assert len(vals) == 4 and vals.max().item() == 1.0


def test_lsq_levels_match_pact_and_its_clip_gets_lsq_gradient():
    x = torch.tensor([-0.5, 0.1, 0.26, 0.7, 1.0, 2.5])
    lsq, pact = ActQuant("lsq", pact_init=1.0), ActQuant("pact", pact_init=1.0)
    assert torch.allclose(lsq(x, 2), pact(x, 2))  # the same 4 levels on [0, 1]
    y = lsq(x.clone().requires_grad_(), 2)
    y.sum().backward()
    n = levels(2)
    u = x.clamp(min=0) * n
    inside = (x > 0) & (x < 1)
    # d/d alpha: (round(u) - u) / n inside, 1 above the clip, 0 below 0; times LSQ's scale n^2 / sqrt(features n)
    want = (((torch.round(u) - u) / n) * inside).sum() + (x >= 1).sum()
    scale = n * n / (len(x) * n) ** 0.5
    assert torch.allclose(lsq.alpha.grad, want * scale)
    xr = x.clone().requires_grad_()
    lsq(xr, 2).sum().backward()
    assert torch.equal(xr.grad, inside.float())  # straight through inside the clip only


def test_lsq_gradients_equal_the_straight_through_expression_of_its_forward():
    """LSQ's gradients are those of alpha / n * (u + stop_gradient(round(u) - u)), u = clamp(x n / alpha, 0, n):
    written here with autograd, independently of the custom backward."""
    torch.manual_seed(0)
    x = (torch.rand(2, 3, 4, 4) * 3 - 0.5).requires_grad_()
    g = torch.randn(2, 3, 4, 4)
    q = ActQuant("lsq", pact_init=1.7)
    (q(x, 3) * g).sum().backward()
    n, features = levels(3), 3 * 4 * 4
    alpha = torch.tensor(1.7, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    u = torch.clamp(x2 * n / alpha, 0, n)
    ((alpha / n * (u + (torch.round(u) - u).detach())) * g).sum().backward()
    assert torch.allclose(x.grad, x2.grad)
    assert torch.allclose(q.alpha.grad, alpha.grad * n * n / (features * n) ** 0.5, rtol=1e-5)


def test_mse_clip_cuts_outliers_and_keeps_a_bounded_range():
    from training.calibrate import mse_clip

    torch.manual_seed(0)
    uniform = torch.rand(100_000)
    assert mse_clip(uniform, 8) == pytest.approx(1.0, abs=0.02)  # nothing to cut
    heavy = torch.cat([torch.rand(100_000), torch.tensor([50.0])])  # one outlier
    assert mse_clip(heavy, 4) < 2.0
    assert mse_clip(torch.zeros(10), 4) == 1.0
    # fewer bits, a tighter clip: the rounding error weighs more against the clipping error
    relu_normal = torch.randn(100_000).clamp(min=0)
    assert mse_clip(relu_normal, 2) < mse_clip(relu_normal, 4) < mse_clip(relu_normal, 8)


def test_calibration_sets_each_clip_from_its_own_inputs():
    from training.calibrate import calibrate_clips, mse_clip
    from training.resnet import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="resnet8", candidates=[4], act="lsq", controller=False))
    model.set_precision("static", 4)
    model.train()
    images = torch.randn(64, 3, 32, 32)
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda m, i, name=name: inputs.setdefault(name, i[0].detach()))
             for name, m in model.named_modules() if getattr(m, "act", None) is not None]
    clips = calibrate_clips(model, images, lambda m: 4, batch_size=64, samples_per_layer=10**9)
    for h in hooks:
        h.remove()
    assert set(clips) == set(inputs) and len(clips) == 8  # 6 block convs, 2 shortcuts (the classifier is fp)
    for name, m in model.named_modules():
        if name in clips:
            assert m.act.clip_value() == pytest.approx(clips[name])
            assert clips[name] == pytest.approx(mse_clip(inputs[name], 4), rel=0.02)  # sampled with replacement
    assert model.precision.mode == "static" and model.precision.static_bits == 4 and model.training


def test_switchable_bn_starts_every_candidate_from_a_plain_bn_and_refuses_other_bits():
    from torch import nn

    from training.layers import SwitchableBN

    plain = nn.BatchNorm2d(4)
    with torch.no_grad():
        plain.weight.copy_(torch.arange(4.0))
        plain.running_mean.fill_(0.5)
    sw = SwitchableBN(4, [3, 4, 5])
    sw.load_state_dict(plain.state_dict())
    for b in (3, 4, 5):
        assert torch.equal(sw.for_bits(b).weight, plain.weight) and torch.equal(sw.for_bits(b).running_mean, plain.running_mean)
    sw.for_bits(3).weight.data.fill_(7)  # copies, not shared storage
    assert sw.for_bits(4).weight[1] == 1
    with pytest.raises(ValueError, match="no BatchNorm for 6 bits"):
        sw.for_bits(6)
