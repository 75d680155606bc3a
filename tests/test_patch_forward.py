"""Occlusion that recomputes only the block of each layer a grey square reaches
(generator.methods.patch_forward): same maps as whole forward passes, on the networks it
applies to, and nothing else touched."""
from __future__ import annotations

import gc
import itertools
import weakref

import pytest
import torch
from torch import nn

from generator import models
from generator.methods import attribution as A
from generator.methods import patch_forward as PF
from generator.methods.attribution import make
from generator.models import Classifier


pytestmark = pytest.mark.usefixtures("one_thread")


class Body(nn.Module):
    """A torchvision-like body: a local ``features`` Sequential, then global pooling and a linear layer."""

    def __init__(self, features: nn.Sequential, channels: int, first: bool = True) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(channels * 4, 5)
        self.first = first

    def forward(self, x):
        if not self.first:  # not "features first": the check must refuse it
            x = x.flip(-1)
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def tiny(first: bool = True, extra: nn.Module | None = None) -> Classifier:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(6)
    bn.running_mean.uniform_(-0.2, 0.2)
    bn.running_var.uniform_(0.5, 2.0)
    layers = [nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
              nn.Conv2d(4, 6, 5, stride=2, padding=2), bn, nn.ReLU6(), nn.Conv2d(6, 6, (4, 3), stride=(3, 2), padding=(0, 1)),
              nn.Dropout(0.5), nn.LeakyReLU(0.1)]
    if extra is not None:
        layers.append(extra)
    net = Classifier(Body(nn.Sequential(*layers), 6, first), [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def occlusion_loop(net, x, t, window, stride, fill):
    """Occlusion written out: every square, every image, one whole forward pass each."""
    B, _, H, W = x.shape
    ys, xs = A.Occlusion.positions(H, window, stride), A.Occlusion.positions(W, window, stride)
    wh, ww = min(window, H), min(window, W)
    total, cnt = torch.zeros(B, H, W), torch.zeros(H, W)
    with torch.no_grad():
        p0 = net(x).softmax(1)[torch.arange(B), t]
        for y0, x0 in itertools.product(ys, xs):
            xo = x.clone()
            xo[..., y0 : y0 + wh, x0 : x0 + ww] = fill
            total[:, y0 : y0 + wh, x0 : x0 + ww] += (p0 - net(xo).softmax(1)[torch.arange(B), t]).view(B, 1, 1)
            cnt[y0 : y0 + wh, x0 : x0 + ww] += 1
    return total / cnt.clamp(min=1)  # (a stride longer than the square leaves pixels uncovered: 0)


@pytest.mark.parametrize("H,W,window,stride", [(29, 29, 7, 5), (31, 26, 9, 4), (24, 33, 5, 7), (20, 20, 30, 5)])
def test_local_occlusion_equals_whole_forward_passes(H, W, window, stride):
    net = tiny()
    x = torch.rand(3, 3, H, W)
    assert PF.patch_forward(net, x[:1]) is not None  # the tiny net qualifies …
    m = make("occlusion", net, window=window, stride=stride, fill=0.3, batch_size=7)
    got = m.attribute(x)
    want = occlusion_loop(net, x, m.last_target, window, stride, 0.3)
    assert want.abs().max() > 1e-3  # the squares do move the probability
    assert torch.allclose(got[:, 0], want, atol=1e-6)
    assert not got.is_inference() and not m.last_target.is_inference()  # usable with autograd afterwards
    # … and batching does not change the map (2: the photos in two chunks, 64: all copies of a chunk at once)
    for bs in (2, 64):
        again = make("occlusion", net, window=window, stride=stride, fill=0.3, batch_size=bs)
        assert torch.allclose(again.attribute(x), got, atol=1e-7)
        assert torch.equal(again.last_target, m.last_target)


def test_only_networks_it_computes_exactly_qualify():
    x = torch.rand(1, 3, 24, 24)
    assert PF.patch_forward(tiny(first=False), x) is None  # the body does not start with its features
    assert PF.patch_forward(tiny(extra=nn.AvgPool2d(2)), x) is None  # not a supported layer
    assert PF.patch_forward(tiny().train(), x) is None
    assert PF.patch_forward(nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten()), x) is None
    lite = models.load_model("efficientnet_lite0", allow_random=True).net
    assert PF.patch_forward(lite, torch.rand(1, 3, 64, 64)) is None  # residual blocks: the whole-pass path
    # where it does not qualify, occlusion is what it always was
    net = tiny(first=False)
    m = make("occlusion", net, window=6, stride=5, fill=0.5)
    got = m.attribute(x)
    assert torch.allclose(got[:, 0], occlusion_loop(net, x, m.last_target, 6, 5, 0.5), atol=1e-6)


def _tame(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """Kaiming-normal weights (the logits depend on the input), the last layer scaled so the
    logits' spread is ~3 (a softmax that is not saturated, so probability drops are informative)."""
    torch.manual_seed(1)
    lin = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in lin:
        nn.init.kaiming_normal_(m.weight)
    with torch.no_grad():
        s = float(net(x).std())
        lin[-1].weight /= s / 3
        lin[-1].bias.zero_()
    return net


@pytest.mark.parametrize("arch,size", [("alexnet", 224), ("vgg16", 64)])
def test_classic_models_local_occlusion_matches(arch, size):
    net = models.load_model(arch, allow_random=True).net
    x = torch.rand(2, 3, size, size)
    net = _tame(net, x)
    features = net.body.features
    assert PF.patch_forward(net, x[:1]) is not None
    m = make("occlusion", net, window=32, stride=32 if arch == "alexnet" else 16, batch_size=16)
    got = m.attribute(x)
    want = occlusion_loop(net, x, m.last_target, 32, 32 if arch == "alexnet" else 16, 0.5)
    assert want.abs().max() > 1e-3
    assert float((got[:, 0] - want).abs().max()) <= 1e-4 * float(want.abs().max()) + 1e-6
    # nothing of the network was swapped or left behind
    assert net.body.features is features and dict(net.body.named_children())["features"] is features
    with torch.no_grad():
        assert torch.equal(net(x), net(x.clone()))


def test_cache_does_not_keep_the_network_alive():
    net = tiny()
    assert PF.patch_forward(net, torch.rand(1, 3, 24, 24)) is not None
    assert net in PF._CACHE
    alive = weakref.ref(net)
    del net
    gc.collect()
    assert alive() is None


def test_cache_follows_parameter_changes():
    net = tiny()
    x = torch.rand(1, 3, 24, 24)
    first = PF.patch_forward(net, x)
    assert PF.patch_forward(net, x) is first
    with torch.no_grad():
        net.body.features[0].weight.mul_(2)
    again = PF.patch_forward(net, x)
    assert again is not None and again is not first
    m = make("occlusion", net, window=6, stride=4, fill=0.5)
    got = m.attribute(x)
    assert torch.allclose(got[:, 0], occlusion_loop(net, x, m.last_target, 6, 4, 0.5), atol=1e-6)
