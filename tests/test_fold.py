"""Batch norm folded into the convolutions for the gradient methods (generator.methods.base.prepared),
and the noisy gradients shared by SmoothGrad, SmoothGrad² and VarGrad."""
import pytest
import torch
from torch import nn

from generator.methods import attribution
from generator.methods.attribution import make
from generator.methods.base import FOLD_ENV, FoldedBNAct, conv_bn_pairs, prepared


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn2 = nn.BatchNorm2d(8)
        self.side = nn.Conv2d(8, 8, 1)  # its output is added before the norm: must not be folded
        self.bn3 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        a = torch.relu(self.bn1(self.conv1(x)))
        b = torch.relu(self.bn2(self.conv2(a)))
        c = torch.relu(self.bn3(self.side(b) + b))
        return self.head(c.mean((2, 3)))


def tiny(dtype=torch.float64):
    torch.manual_seed(0)
    net = Tiny().to(dtype)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def grad(net, x, t):
    xi = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xi).gather(1, t.view(-1, 1)).sum(), xi)
    return g


def test_fold_is_exact_in_float64_for_outputs_and_input_gradients():
    net = tiny()
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    assert conv_bn_pairs(net, x[:1]) == {"bn1": "conv1", "bn2": "conv2"}  # not bn3 (input is a sum)
    p = prepared(net, x[:1])
    assert p.net is not net and p.pairs == {"bn1": "conv1", "bn2": "conv2"}
    assert isinstance(p.net.bn1, nn.Identity) and isinstance(p.net.bn3, nn.BatchNorm2d)
    assert isinstance(net.bn1, nn.BatchNorm2d)  # the original is untouched
    torch.testing.assert_close(p.net(x), net(x), rtol=1e-12, atol=1e-12)
    t = torch.tensor([0, 3, 4])
    torch.testing.assert_close(grad(p.net, x, t), grad(net, x, t), rtol=1e-10, atol=1e-12)
    # a folded convolution alone computes something else; the block holding both is the same
    assert not p.safe_path("conv1") and p.safe_path("bn1") and p.safe_path("") and p.safe_path("side")


def test_prepared_is_cached_and_rebuilt_when_weights_change():
    net = tiny(torch.float32)
    x = torch.rand(1, 3, 16, 16)
    a = prepared(net, x)
    assert prepared(net, x) is a
    with torch.no_grad():
        net.bn1.running_mean.add_(0.5)  # in place, as the randomisation cascade does
    b = prepared(net, x)
    assert b is not a
    torch.testing.assert_close(b.net(x), net(x), rtol=1e-5, atol=1e-6)


def test_no_fold_in_training_mode_or_when_switched_off(monkeypatch):
    net = tiny(torch.float32)
    x = torch.rand(1, 3, 16, 16)
    net.train()
    assert prepared(net, x).net is net
    net.eval()
    monkeypatch.setenv(FOLD_ENV, "1")
    assert prepared(net, x).net is net


def test_lite0_folded_logits_and_saliency_match(lite0):
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    p = prepared(lite0.net, x[:1])
    assert len(p.pairs) == 49
    assert not any(isinstance(m, nn.BatchNorm2d) for m in p.net.modules())
    assert isinstance(p.net.get_submodule(lite0.module_path("head")), FoldedBNAct)
    with torch.no_grad():
        ref, got = lite0.net(x), p.net(x)
    assert float((got - ref).abs().max() / ref.abs().max()) < 1e-5
    t = ref.argmax(1)
    g0, g1 = grad(lite0.net, x, t), grad(p.net, x, t)
    # float rounding can flip a few ReLU6 masks: equal up to a small relative error
    assert float((g1 - g0).norm() / g0.norm()) < 2e-2
    # Grad-CAM on the head (a BatchNormAct2d, safe) runs on the folded copy and agrees
    cam = make("gradcam", lite0)
    assert cam._layer_net(x)[0] is p.net


def test_lite0_gradcam_on_folded_copy_matches_network_as_loaded(lite0, monkeypatch):
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    got = make("gradcam", lite0).attribute(x)
    monkeypatch.setenv(FOLD_ENV, "1")
    ref = make("gradcam", lite0).attribute(x)
    assert float((got - ref).abs().max() / ref.abs().max()) < 1e-4


def test_gradcam_on_a_folded_conv_uses_the_network_as_loaded(monkeypatch):
    net = tiny(torch.float32)  # the methods compute in float32
    x = torch.rand(2, 3, 16, 16)
    t = torch.tensor([1, 2])
    for layer in ("conv2", "bn2"):
        m = make("gradcam", net, layer=layer)
        got = m.attribute(x, t)
        monkeypatch.setenv(FOLD_ENV, "1")
        ref = make("gradcam", net, layer=layer).attribute(x, t)
        monkeypatch.delenv(FOLD_ENV)
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-6)
    assert make("gradcam", net, layer="conv2")._layer_net(x)[0] is net


def test_smoothgrad_family_shares_one_noisy_gradient_pass(monkeypatch):
    net = tiny(torch.float32)
    x = torch.rand(2, 3, 16, 16)
    t = torch.tensor([1, 2])
    calls = []
    real = attribution._gradient_moments
    monkeypatch.setattr(attribution, "_gradient_moments", lambda *a, **k: calls.append(1) or real(*a, **k))
    params = {"samples": 4, "sigma": 0.1}
    sg = make("smoothgrad", net, **params).attribute(x, t)
    sq = make("smoothgrad_sq", net, **params).attribute(x, t)
    vg = make("vargrad", net, **params).attribute(x, t)
    assert len(calls) == 1
    # same numbers as computing each alone
    attribution._MOMENTS.clear()
    assert torch.equal(make("vargrad", net, **params).attribute(x, t), vg)
    assert len(calls) == 2
    torch.testing.assert_close(vg, (sq - sg * sg).clamp(min=0))
    # other photos, classes or settings are computed anew
    make("smoothgrad", net, **params).attribute(x.flip(0), t)
    make("smoothgrad", net, **params).attribute(x, t.flip(0))
    make("smoothgrad", net, samples=5, sigma=0.1).attribute(x, t)
    assert len(calls) == 5
    # and a changed network too
    with torch.no_grad():
        net.head.bias.add_(1.0)
    make("smoothgrad", net, **params).attribute(x, t)
    assert len(calls) == 6
