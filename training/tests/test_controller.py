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


def test_confidence_loss_is_zero_when_decided_and_log_k_when_flat_and_with_diversity_is_minus_mutual_information():
    from training.train import confidence_loss, diversity_loss

    decided = torch.tensor([[[9.0, -9.0, -9.0]]]).repeat(6, 4, 1)
    assert abs(confidence_loss(decided).item()) < 1e-6
    flat = torch.zeros(6, 4, 3)
    assert abs(confidence_loss(flat).item() - torch.log(torch.tensor(3.0)).item()) < 1e-5
    # flat logits satisfy the diversity term fully (batch mean uniform); the sum with confidence does not reward them
    assert abs((diversity_loss(flat) + confidence_loss(flat)).item()) < 1e-5
    # images that each decide on a different candidate: mutual information log 3, the sum's minimum
    split = torch.stack([torch.roll(decided[0], i, dims=-1) for i in range(6)])
    assert abs((diversity_loss(split) + confidence_loss(split)).item() + torch.log(torch.tensor(3.0)).item()) < 1e-4
    # descending it sharpens each image's choice: the argmax candidate gains probability
    torch.manual_seed(0)
    z = (0.3 * torch.randn(6, 4, 3)).requires_grad_(True)
    confidence_loss(z).backward()
    top = z.detach().argmax(-1, keepdim=True)
    p0 = torch.softmax(z.detach(), -1).gather(-1, top)
    p1 = torch.softmax(z.detach() - 1.0 * z.grad, -1).gather(-1, top)
    assert (p1 > p0).all()


def test_quantized_controller_costs_its_bits_and_runs_on_its_levels():
    from training.deploy import fake_quant
    from training.quant import dorefa_weight

    torch.manual_seed(0)
    m = build_model(ModelConfig(candidates=[3, 4, 5], controller_bits=8))
    m.set_precision("dynamic")
    table = cost.attach_macs(m, (3, 32, 32))
    rows = [r for r in table if r["kind"] == "controller"]
    assert [r["bits"] for r in rows] == [8, 8] and [r["macs"] for r in rows] == [1024 * 64, 64 * 36]
    fp = build_model(ModelConfig(candidates=[3, 4, 5]))
    fp.set_precision("dynamic")
    fp_table = cost.attach_macs(fp, (3, 32, 32))
    assert [r["bits"] for r in fp_table if r["kind"] == "controller"] == [32, 32]
    # the 8-bit controller is a sixteenth of the full-precision one's Bit-FLOPs, nothing else changes
    plan = [4] * 12
    saved = sum(r["macs"] for r in rows) * (32 * 32 - 8 * 8)
    assert cost.bitflops(fp_table, plan) - cost.bitflops(table, plan) == saved
    # evaluation: inputs on 2^8 levels of the learned PACT clip, DoReFa weights; the reference below is written
    # from the papers' formulas here, not with the code's own quantizers
    m.eval()
    feats = torch.rand(4, 16, 32, 32) * 3
    c = m.controller

    def levels(x, clip):  # PACT: clamp to [0, clip], 255 steps
        return torch.round(x.clamp(0, clip) / clip * 255) * clip / 255

    def dorefa(w):  # DoReFa: tanh, normalise to [0, 1], 255 steps, back to [-1, 1]
        t = torch.tanh(w)
        return 2 * torch.round((t / (2 * t.abs().max()) + 0.5) * 255) / 255 - 1

    x = torch.nn.functional.avg_pool2d(feats, 4).flatten(1)
    h = torch.relu(torch.nn.functional.linear(levels(x, c.fc1.act.clip_value()), dorefa(c.fc1.weight), c.fc1.bias))
    want = torch.nn.functional.linear(levels(h, c.fc2.act.clip_value()), dorefa(c.fc2.weight), c.fc2.bias)
    assert torch.allclose(c(feats), want.view(4, 12, 3), atol=1e-5)
    assert len(torch.unique(dorefa_weight(c.fc1.weight, 8))) <= 256
    assert len(torch.unique(fake_quant(x, c.fc1.act.clip_value(), 8))) <= 256
    # the learned clips train: the controller's gradient reaches them
    m.train()
    m(torch.randn(8, 3, 32, 32))[2].square().sum().backward()
    assert c.fc1.act.alpha.grad is not None and c.fc2.weight.grad is not None


def test_full_precision_controller_keeps_its_checkpoint_keys():
    """Checkpoints trained before --controller-bits existed load unchanged."""
    keys = {k for k in build_model(ModelConfig(candidates=[3, 4, 5])).state_dict() if k.startswith("controller.")}
    assert keys == {"controller.fc1.weight", "controller.fc1.bias", "controller.fc2.weight", "controller.fc2.bias"}


def test_sensitivity_loss_moves_expected_cost_to_the_images_that_need_bits(cifar_test):
    from training.data import normalize
    from training.train import sensitivity_loss

    m = _model().train()
    x, y = normalize(cifar_test.images[:48]), cifar_test.labels[:48]
    bn = m.stages[1][0].bn1
    stats = bn.running_mean.clone()
    with torch.no_grad():  # the images' sensitivities: cross-entropy all at 3 bits minus all at 5
        m.eval()
        ce = [torch.nn.functional.cross_entropy(m(x, choice=torch.full((48, 12), c))[0], y, reduction="none")
              for c in (0, 2)]
        m.train()
    gain = ce[0] - ce[1]
    assert gain.std() > 0
    logits = torch.randn(48, 12, 3, requires_grad=True)
    sensitivity_loss(m, x, y, logits, 4.0).backward()

    def expected(z):
        return cost.image_cost_ratio(m, torch.softmax(z, -1), 4.0)

    # one descent step raises the expected cost of the sensitive images and lowers that of the others
    delta = (expected(logits.detach() - 0.5 * logits.grad) - expected(logits.detach())).detach()
    d, g = delta - delta.mean(), gain - gain.mean()
    assert float((d * g).sum() / (d.norm() * g.norm())) > 0.8
    assert (delta[gain > gain.quantile(0.75)] > 0).all() and (delta[gain < gain.quantile(0.25)] < 0).all()
    # the probe passes run in eval mode: BN statistics untouched, training mode restored
    assert torch.equal(bn.running_mean, stats) and m.training


def test_predict_runs_given_plans():
    from training.evaluate import predict

    m = _model()
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    logits, bits, _ = predict(m, images)
    own = (bits[..., None] == m.candidates_tensor).float().argmax(-1)
    same, same_bits, _ = predict(m, images, plans=own)
    assert torch.equal(same, logits) and torch.equal(same_bits, bits)
    swapped = own.flip(0)
    _, swapped_bits, _ = predict(m, images, plans=swapped)
    assert torch.equal(swapped_bits, bits.flip(0))
