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
