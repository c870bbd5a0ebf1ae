import torch

from training import cost
from training.controller import choose
from training.resnet import ModelConfig, build_model


def _model(arch="resnet20"):
    torch.manual_seed(0)
    m = build_model(ModelConfig(arch=arch, candidates=[3, 4, 5]))
    cost.attach_macs(m, (3, 32, 32) if arch != "resnet18" else (3, 64, 64))
    m.set_precision("dynamic")
    return m


def test_controller_output_shape_and_training_one_hot():
    m = _model()
    m.train()
    logits, choice, ctrl = m(torch.randn(5, 3, 32, 32))
    assert logits.shape == (5, 10) and ctrl.shape == (5, 12, 3) and choice.shape == (5, 12, 3)
    assert torch.all(choice.sum(-1) == 1)  # hard Gumbel: exactly one candidate per layer


def test_argmax_is_deterministic_in_eval():
    m = _model().eval()
    x = torch.randn(8, 3, 32, 32)
    _, c1, _ = m(x)
    _, c2, _ = m(x)
    assert c1.dtype == torch.int64 and torch.equal(c1, c2)
    # batch composition does not change a sample's choice or logits
    l_one, c_one, _ = m(x[:1])
    l_all, _, _ = m(x)
    assert torch.equal(c_one[0], c1[0]) and torch.allclose(l_one[0], l_all[0], atol=1e-5)


def test_knob_moves_choices_to_cheaper_bits():
    m = _model().eval()
    x = torch.randn(16, 3, 32, 32)
    cands = m.candidates_tensor
    means = [cands[m(x, knob=k)[1]].mean().item() for k in (-50.0, 0.0, 50.0)]
    assert means[0] >= means[1] >= means[2]
    assert means[2] == 3.0 and means[0] == 5.0


def test_choose_ties_go_to_the_cheaper_candidate():
    logits = torch.zeros(1, 2, 3)
    assert choose(logits, torch.zeros(2, 3)).tolist() == [[0, 0]]


def test_imagenet_resnet18_small_scale():
    m = _model("resnet18")
    m.train()
    logits, choice, ctrl = m(torch.randn(2, 3, 64, 64))
    assert len(m.dynamic_layers) == 12 and ctrl.shape == (2, 12, 3) and logits.shape == (2, 10)
    logits.sum().backward()
    assert m.controller.fc2.weight.grad is not None


def test_diversity_loss_is_zero_when_collapsed_and_minus_log_k_when_balanced():
    from training.train import diversity_loss

    collapsed = torch.tensor([[[9.0, -9.0, -9.0]]]).repeat(6, 4, 1)  # every image, every layer: candidate 0
    assert abs(diversity_loss(collapsed).item()) < 1e-6
    balanced = torch.stack([torch.roll(collapsed[0], i, dims=-1) for i in range(6)])  # 2 images per candidate
    assert abs(diversity_loss(balanced).item() + torch.log(torch.tensor(3.0)).item()) < 1e-4
    # its gradient moves a nearly collapsed batch apart: descending it lowers the loss
    z = collapsed.clone() * 0.1
    z[0, :, 1] += 0.5
    z.requires_grad_(True)
    before = diversity_loss(z)
    before.backward()
    after = diversity_loss(z.detach() - 1.0 * z.grad)
    assert after.item() < before.item()
