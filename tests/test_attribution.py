"""Attribution methods: rectifier rules on real architectures, analytic answers on tiny
nets, batching invariance, no leaks."""
from __future__ import annotations

import gc
import itertools
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from generator.methods import attribution as A
from generator.methods.attribution import ATTRIBUTION_METHODS, make, run_batched
from generator.methods.neuron_deconv import forward_to, project_activations, top_neurons
from generator.methods.relu_rules import relu_rule
from generator.render import normalise_maps, signed_to_rgb

ORIGINAL_RELU = F.relu
ORIGINAL_HARDTANH = F.hardtanh


pytestmark = pytest.mark.usefixtures("one_thread")


def input_grad(net, x, target, rule=None):
    xi = x.clone().requires_grad_(True)
    ctx = relu_rule(rule) if rule else torch.enable_grad()
    with ctx:
        out = net(xi)
        (g,) = torch.autograd.grad(out[torch.arange(len(x)), target].sum(), xi)
    return g


def rel(a, b):
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


# --------------------------------------------------------------------------------
# every rectifier of every registry architecture is intercepted


class AtenRectifierCount(TorchDispatchMode):
    """Counts rectifier kernels at the ATen level (an independent mechanism)."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in ("relu", "relu_", "relu6", "relu6_"):
            self.n += 1
        elif name in ("hardtanh", "hardtanh_") and len(args) > 1 and float(args[1]) == 0.0:
            self.n += 1
        return func(*args, **kwargs)


@pytest.mark.parametrize("arch", ["alexnet", "vgg16", "googlenet", "resnet50", "efficientnet_lite0"])
def test_rules_cover_every_rectifier_on_registry_architectures(arch):
    from generator.models import load_model

    lm = load_model(arch, allow_random=True)
    net = lm.net
    torch.manual_seed(1)
    x = torch.rand(1, 3, 64, 64)
    with AtenRectifierCount() as counter, torch.no_grad():
        logits = net(x)
    assert counter.n > 0
    target = logits.argmax(1)
    plain = input_grad(net, x, target)
    grads, calls = {}, {}
    for rule in ("gradient", "deconvnet", "guided"):
        xi = x.clone().requires_grad_(True)
        with relu_rule(rule) as stats:
            out = net(xi)
            (grads[rule],) = torch.autograd.grad(out[0, target].sum(), xi)
        calls[rule] = stats.calls
    # every rectifier the network executes went through the rule
    assert calls == {"gradient": counter.n, "deconvnet": counter.n, "guided": counter.n}
    # the "gradient" rule is exactly autograd's own backward
    assert torch.equal(grads["gradient"], plain)
    # and the other rules really change the result
    assert rel(grads["deconvnet"], plain) > 0.05
    assert rel(grads["guided"], plain) > 0.05
    assert rel(grads["guided"], grads["deconvnet"]) > 0.05
    # the public methods agree with the raw rules: exactly on the network they run on (batch
    # norm folded into the convolutions), within float rounding on the network as loaded
    from generator.methods.base import prepared

    dec = make("deconvnet", lm).attribute(x, target)
    gbp = make("guided_backprop", lm).attribute(x, target)
    run_on = prepared(net, x).net
    for rule, got in (("deconvnet", dec), ("guided", gbp)):
        xi = x.clone().requires_grad_(True)
        with relu_rule(rule):
            (g,) = torch.autograd.grad(run_on(xi)[0, target].sum(), xi)
        assert torch.equal(got, g)
        assert rel(got, grads[rule]) < 1e-3
    assert F.relu is ORIGINAL_RELU and F.hardtanh is ORIGINAL_HARDTANH


# --------------------------------------------------------------------------------
# every spelling of a rectifier, element by element


RELU_SPELLINGS = {
    "F.relu": lambda x: F.relu(x),
    "F.relu_inplace": lambda x: F.relu(x, inplace=True),
    "F.relu_": lambda x: F.relu_(x),
    "torch.relu": lambda x: torch.relu(x),
    "torch.relu_": lambda x: torch.relu_(x),
    "Tensor.relu": lambda x: x.relu(),
    "Tensor.relu_": lambda x: x.relu_(),
    "nn.ReLU": lambda x: nn.ReLU()(x),
    "nn.ReLU_inplace": lambda x: nn.ReLU(inplace=True)(x),
}
RELU6_SPELLINGS = {
    "F.relu6": lambda x: F.relu6(x),
    "F.relu6_inplace": lambda x: F.relu6(x, inplace=True),
    "nn.ReLU6": lambda x: nn.ReLU6()(x),
    "nn.ReLU6_inplace": lambda x: nn.ReLU6(inplace=True)(x),
    "F.hardtanh06": lambda x: F.hardtanh(x, 0.0, 6.0),
    "nn.Hardtanh06_inplace": lambda x: nn.Hardtanh(0.0, 6.0, inplace=True)(x),
    "_nn.hardtanh_": lambda x: torch._C._nn.hardtanh_(x, 0.0, 6.0),
}


@pytest.mark.parametrize("spelling", [*RELU_SPELLINGS, *RELU6_SPELLINGS])
def test_each_rectifier_spelling_gets_the_rule(spelling):
    fn = {**RELU_SPELLINGS, **RELU6_SPELLINGS}[spelling]
    capped = spelling in RELU6_SPELLINGS
    x0 = torch.tensor([-1.0, 3.0, 7.0, 2.0])
    g = torch.tensor([1.0, -1.0, 1.0, 2.0])
    want = {
        "gradient": torch.tensor([0.0, -1.0, 0.0 if capped else 1.0, 2.0]),
        "deconvnet": torch.tensor([1.0, 0.0, 1.0, 2.0]),
        "guided": torch.tensor([0.0, 0.0, 1.0, 2.0]),  # ReLU6's cap ignored by the visualisation rules
    }
    for rule, expected in want.items():
        leaf = x0.clone().requires_grad_(True)
        with relu_rule(rule) as stats:
            x = leaf * 1.0  # in-place ops need a non-leaf
            y = fn(x)
            assert torch.equal(y, x0.clamp(0, 6) if capped else x0.clamp(min=0))
            (gx,) = torch.autograd.grad(y, leaf, g)
        assert stats.calls == 1, (spelling, stats)
        assert torch.equal(gx, expected), (spelling, rule, gx)
    # outside the block the same code is plain autograd again
    leaf = x0.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(fn(leaf * 1.0), leaf, g)
    assert torch.equal(gx, want["gradient"])


def test_real_hardtanh_and_other_ops_pass_through():
    x0 = torch.tensor([-2.0, -0.5, 0.5, 2.0])
    leaf = x0.clone().requires_grad_(True)
    with relu_rule("deconvnet") as stats:
        y = F.hardtanh(leaf, -1.0, 1.0) + torch.sigmoid(leaf) + leaf.clamp(min=0)
        (gx,) = torch.autograd.grad(y.sum(), leaf)
    assert stats.calls == 0
    leaf2 = x0.clone().requires_grad_(True)
    (want,) = torch.autograd.grad((F.hardtanh(leaf2, -1.0, 1.0) + torch.sigmoid(leaf2) + leaf2.clamp(min=0)).sum(), leaf2)
    assert torch.equal(gx, want)
    with pytest.raises(ValueError):
        with relu_rule("nope"):
            pass


# --------------------------------------------------------------------------------
# a hand-built net with functional, in-place and reused rectifiers vs an explicit
# re-implementation with reference autograd Functions


class RefRect(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, hi, rule):
        ctx.save_for_backward(x)
        ctx.hi, ctx.rule = hi, rule
        return torch.clamp(x, 0, hi) if hi is not None else torch.where(x > 0, x, torch.zeros_like(x))

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if ctx.rule == "gradient":  # the exact derivative, including ReLU6's cap
            gate = (x > 0) if ctx.hi is None else ((x > 0) & (x < ctx.hi))
            return g * gate, None, None
        if ctx.rule == "deconvnet":
            return torch.where(g > 0, g, torch.zeros_like(g)), None, None
        # guided: positive signal where the input was positive (ReLU6's cap ignored, documented)
        return torch.where((g > 0) & (x > 0), g, torch.zeros_like(g)), None, None


class Mixed(nn.Module):
    """conv → F.relu → conv → shared in-place ReLU → conv → torch.relu → Tensor.relu_ on
    a sum with the shared ReLU's output reused → ReLU6 module → pool → linear."""

    def __init__(self, ref_rule=None):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1)
        self.c3 = nn.Conv2d(6, 6, 3, padding=1)
        self.c4 = nn.Conv2d(6, 6, 1)
        self.shared = nn.ReLU(inplace=True)
        self.r6 = nn.ReLU6(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 4 * 4, 5)
        self.ref_rule = ref_rule

    def act(self, x, kind):
        if self.ref_rule is None:
            if kind == "f":
                return F.relu(x)
            if kind == "shared":
                return self.shared(x)
            if kind == "torch":
                return torch.relu(x)
            if kind == "tensor_":
                x.relu_()  # result used through the mutated tensor only
                return x
            if kind == "relu6":
                return self.r6(x)
        return RefRect.apply(x, 6.0 if kind == "relu6" else None, self.ref_rule)

    def forward(self, x):
        a = self.act(self.c1(x), "f")
        b = self.act(self.c2(a), "shared")
        c = self.act(self.c3(b) + b, "shared")  # the same in-place module, second use
        d = self.act(self.c4(c), "torch")
        e = self.act(d * 3.0 - 1.0 + c, "tensor_")
        f = self.act(e * 15.0 - 1.0, "relu6")
        return self.fc(self.pool(f).flatten(1))


@pytest.mark.parametrize("rule", ["gradient", "deconvnet", "guided"])
def test_mixed_rectifiers_match_reference_functions(rule):
    torch.manual_seed(0)
    net = Mixed().eval()
    ref = Mixed(ref_rule=rule).eval()
    ref.load_state_dict(net.state_dict())
    x = torch.rand(3, 3, 8, 8)
    t = torch.tensor([0, 2, 4])
    with torch.no_grad():
        assert torch.allclose(net(x), ref(x), atol=1e-6)
    got = input_grad(net, x, t, rule)
    want = input_grad(ref, x, t)  # plain autograd through the reference Functions
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)
    assert got.abs().sum() > 0
    if rule != "gradient":
        assert rel(got, input_grad(net, x, t)) > 0.05
    # ReLU6 saturates somewhere (so the upper bound matters in this test)
    with torch.no_grad():
        pre = []
        h = net.r6.register_forward_pre_hook(lambda m, i: pre.append(i[0].clone()))
        net(x)
        h.remove()
    assert (pre[0] > 6).any() and (pre[0] < 0).any()


# --------------------------------------------------------------------------------
# analytic answers


def test_saliency_of_linear_model_is_abs_weight_max_over_channels():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    x = torch.rand(4, 3, 8, 8)
    m = make("saliency", net)
    t = torch.tensor([0, 1, 3, 3])
    h = m.explain(x, t)
    W = net[1].weight.detach().view(5, 3, 8, 8)
    assert torch.allclose(h, W[t].abs().amax(1), atol=1e-7)
    # default target = top-1
    h2 = m.explain(x)
    top = net(x).argmax(1)
    assert torch.equal(m.last_target, top)
    assert torch.allclose(h2, W[top].abs().amax(1), atol=1e-7)


def test_deconvnet_conv_relu_maxpool_matches_hand_computation():
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 2, 3, padding=1, bias=True)
    with torch.no_grad():
        conv.bias[:] = torch.tensor([-0.6, 0.1])  # channel 0 is often negative: all-zero windows
    net = nn.Sequential(conv, nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 3 * 3, 2))
    x = torch.rand(1, 3, 6, 6)
    c = 1
    got = make("deconvnet", net).attribute(x, c)[0].numpy()

    w = conv.weight.detach().numpy()
    z = conv(x).detach().numpy()[0]
    r = np.maximum(z, 0)
    signal = net[4].weight.detach().numpy()[c].reshape(2, 3, 3)
    unpooled = np.zeros((2, 6, 6))
    for ch, i, j in itertools.product(range(2), range(3), range(3)):
        win = r[ch, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].ravel()
        k = int(np.argmax(win))  # first maximum in row-major order: the switch
        unpooled[ch, 2 * i + k // 2, 2 * j + k % 2] = signal[ch, i, j]
    rect = np.maximum(unpooled, 0)  # deconvnet: ReLU of the signal, forward sign ignored
    want = np.zeros((3, 6, 6))
    for ci, i, j in itertools.product(range(3), range(6), range(6)):
        s = 0.0
        for co, u, v in itertools.product(range(2), range(3), range(3)):
            p, q = i - u + 1, j - v + 1  # transposed convolution
            if 0 <= p < 6 and 0 <= q < 6:
                s += rect[co, p, q] * w[co, ci, u, v]
        want[ci, i, j] = s
    assert np.allclose(got, want, atol=1e-6)
    # the case distinguishes deconvnet from the gradient (negative signals / dead switches)
    assert (signal < 0).any() and ((z < 0) & (unpooled > 0)).any()
    assert not np.allclose(input_grad(net, x, torch.tensor([c]))[0].numpy(), want, atol=1e-4)


def test_deconvnet_ignores_the_image_without_max_pooling():
    """Deconvnet's ReLU rule ignores the forward input, so only max-pool switches carry
    image information: without them every image gets the same map (a documented,
    measured property the site reports); with them, and for guided backprop, it changes."""
    torch.manual_seed(0)
    body = [nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, stride=2, padding=1), nn.ReLU6()]
    no_pool = nn.Sequential(*body, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    pooled = nn.Sequential(body[0], body[1], nn.MaxPool2d(2), body[2], body[3], nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(6, 3)).eval()
    x = torch.rand(2, 3, 16, 16)
    d = make("deconvnet", no_pool).attribute(x, 1)
    assert torch.allclose(d[0], d[1], atol=1e-7) and d.abs().sum() > 0
    d2 = make("deconvnet", pooled).attribute(x, 1)
    assert rel(d2[1], d2[0]) > 0.1
    gb = make("guided_backprop", no_pool).attribute(x, 1)
    assert rel(gb[1], gb[0]) > 0.1


class Smooth(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = torch.tanh(self.c1(x) * 2)
        h = F.softplus(self.c2(h) * 2)
        return self.fc(h.mean((2, 3))) * 3


def test_integrated_gradients_completeness_at_200_steps():
    torch.manual_seed(0)
    net = Smooth().eval()
    x = torch.rand(3, 3, 16, 16)
    ig = make("integrated_gradients", net, steps=200, batch_size=128)
    a = ig.attribute(x)
    chk = ig.completeness(x, None, a)
    assert (chk["delta"].abs() > 0.05).all()  # a non-trivial difference to explain
    assert (chk["rel_error"] < 0.01).all(), chk
    # with very few steps (2: the trapezoid's two ends) and no refinement the check is informative (it does fail)
    ig2 = make("integrated_gradients", net, steps=2)
    chk2 = ig2.completeness(x, None, ig2.attribute(x))
    assert (chk2["rel_error"] > 0.01).any()


def test_smoothgrad_variants_on_a_linear_model():
    """The gradient of a linear model is its weight row whatever the noise: SmoothGrad is
    w, SmoothGrad² is w² and VarGrad is 0."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 4))
    x = torch.rand(2, 3, 6, 6)
    t = torch.tensor([1, 3])
    w = net[1].weight.detach().view(4, 3, 6, 6)[t]
    kw = dict(samples=7, sigma=0.3, batch_size=5)
    assert torch.allclose(make("smoothgrad", net, **kw).attribute(x, t), w, atol=1e-6)
    assert torch.allclose(make("smoothgrad_sq", net, **kw).attribute(x, t), w * w, rtol=1e-5, atol=1e-9)
    var = make("vargrad", net, **kw).attribute(x, t)
    assert (var >= 0).all() and var.max() <= 1e-6 * (w * w).max()


class Quadratic(nn.Module):
    """Logit 0 = ½ Σ a·x² (gradient a·x), logit 1 = Σ b·x."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return torch.stack([0.5 * (self.a * x * x).flatten(1).sum(1), (self.b * x).flatten(1).sum(1)], 1)


def test_smoothgrad_variants_on_a_quadratic_model():
    """Gradient a·(x + σε): SmoothGrad a·(x + σ·mean ε), SmoothGrad² the mean of its square,
    VarGrad a²σ²·var(ε) — computed with the method's own seeded noise, and, for many
    samples, close to the expectations a·x, a²(x² + σ²) and a²σ²."""
    torch.manual_seed(0)
    shape = (3, 5, 5)
    a, b = torch.rand(shape) + 0.5, torch.rand(shape)
    net = Quadratic(a, b)
    x = torch.rand(2, *shape)
    n, frac, seed = 9, 0.2, 4
    eps = torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))
    sigma = (frac * (x.flatten(1).amax(1) - x.flatten(1).amin(1))).view(-1, 1, 1, 1, 1)
    grads = a * (x[:, None] + sigma * eps[None])  # B×n×3×H×W
    kw = dict(samples=n, sigma=frac, seed=seed, batch_size=4)
    sg = make("smoothgrad", net, **kw).attribute(x, 0)
    sq = make("smoothgrad_sq", net, **kw).attribute(x, 0)
    vg = make("vargrad", net, **kw).attribute(x, 0)
    assert torch.allclose(sg, grads.mean(1), atol=1e-5)
    assert torch.allclose(sq, (grads ** 2).mean(1), rtol=1e-4, atol=1e-6)
    assert torch.allclose(vg, grads.var(1, unbiased=False), rtol=1e-3, atol=1e-5)
    assert torch.allclose(vg, sq - sg ** 2, atol=1e-5)
    # many samples: the expectations
    many = dict(samples=4000, sigma=frac, batch_size=4000)
    s2 = sigma[:, 0] ** 2
    assert rel(make("smoothgrad", net, **many).attribute(x, 0), a * x) < 0.05
    assert rel(make("smoothgrad_sq", net, **many).attribute(x, 0), a * a * (x * x + s2)) < 0.05
    assert rel(make("vargrad", net, **many).attribute(x, 0), a * a * s2.expand_as(x)) < 0.05
    # logit 1 is linear: no variance at all
    assert make("vargrad", net, **kw).attribute(x, 1).max() <= 1e-6 * (b * b).max()


def test_classes_declare_what_the_pipeline_shows():
    """The flags reproduce what used to be spelt out by name in the stages and templates."""
    flagged = lambda attr: {n for n, c in ATTRIBUTION_METHODS.items() if getattr(c, attr)}
    assert flagged("signed_view") == {"deconvnet", "guided_backprop", "guided_gradcam"}
    assert flagged("needs_layer") == {"gradcam", "guided_gradcam"}
    assert flagged("swap_test") == {"saliency", "deconvnet", "guided_backprop"}
    assert flagged("self_check") == {"integrated_gradients"}
    assert flagged("notes") == {"deconvnet", "guided_backprop", "guided_gradcam"}
    assert {n: c.page_sections for n, c in ATTRIBUTION_METHODS.items() if c.page_sections} == {
        "deconvnet": ("image_swap", "single_neurons"), "guided_backprop": ("image_swap",)}
    assert {n: c.gallery_params for n, c in ATTRIBUTION_METHODS.items() if c.gallery_params} == {
        "smoothgrad": {"samples": 25, "sigma": 0.15}, "integrated_gradients": {"steps": 64, "baseline": "black", "max_steps": 505},
        "occlusion": {"window": 32, "stride": 16, "fill": 0.5},
        "smoothgrad_sq": {"samples": 25, "sigma": 0.15}, "vargrad": {"samples": 25, "sigma": 0.15}}
    ig = ATTRIBUTION_METHODS["integrated_gradients"].self_check
    assert ig.setting in ATTRIBUTION_METHODS["integrated_gradients"].defaults and ig.measure == "rel_error"
    assert {ig.cap, ig.tolerance} <= set(ATTRIBUTION_METHODS["integrated_gradients"].defaults) and ig.used == "steps"
    for cls in ATTRIBUTION_METHODS.values():
        assert set(cls.gallery_params) <= set(cls.defaults) and set(cls.findings_params) <= set(cls.defaults)
    with pytest.raises(ValueError, match="taken"):
        A.register(A.Saliency)


def test_gradcam_on_cam_architecture_is_relu_of_weighted_maps():
    # conv → global average pool → linear: alpha_k = w_ck / Z, cam = relu(sum_k w_ck A_k / Z)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x = torch.rand(2, 3, 10, 10)
    m = make("gradcam", net, layer="1")
    a = m.attribute(x, torch.tensor([2, 0]))
    A_ = net[1](net[0](x)).detach()
    W = net[4].weight.detach()
    want = torch.stack([F.relu((W[c].view(-1, 1, 1) * A_[i]).sum(0) / 100) for i, c in enumerate([2, 0])])
    assert torch.allclose(a[:, 0], want, atol=1e-6)
    assert m.params["layer"] == "1"


def test_occlusion_matches_explicit_loop():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 12 * 12, 3))
    x = torch.rand(2, 3, 12, 12)
    m = make("occlusion", net, window=5, stride=3, fill=0.5, batch_size=7)
    got = m.attribute(x)
    t = m.last_target
    pos = A.Occlusion.positions(12, 5, 3)
    assert pos == [0, 3, 6, 7]
    want = torch.zeros(2, 12, 12)
    cnt = torch.zeros(12, 12)
    with torch.no_grad():
        for i in range(2):
            p0 = net(x[i : i + 1]).softmax(1)[0, t[i]]
            for y0, x0 in itertools.product(pos, pos):
                xo = x[i : i + 1].clone()
                xo[..., y0 : y0 + 5, x0 : x0 + 5] = 0.5
                want[i, y0 : y0 + 5, x0 : x0 + 5] += p0 - net(xo).softmax(1)[0, t[i]]
                if i == 0:
                    cnt[y0 : y0 + 5, x0 : x0 + 5] += 1
    assert torch.allclose(got[:, 0], want / cnt, atol=1e-6)
    assert torch.allclose(m.heatmap(got), (want / cnt).clamp(min=0), atol=1e-6)


def test_single_neuron_deconv_is_scaled_filter_at_receptive_field():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
    x = torch.rand(2, 3, 9, 9)
    layer = net[1]
    picks, values = top_neurons(net, layer, x, k=2)
    act = net[1](net[0](x)).detach()
    assert picks.shape == (4, 4)
    for (i, c, y, xx), v in zip(picks.tolist(), values.tolist()):
        assert v == pytest.approx(act[i, c].max().item())
        assert act[i, c, y, xx].item() == pytest.approx(v)
    proj = project_activations(net, layer, x, picks)
    W = net[0].weight.detach()
    for n, (i, c, y, xx) in enumerate(picks.tolist()):
        want = torch.zeros(3, 11, 11)  # padded canvas
        want[:, y : y + 3, xx : xx + 3] = act[i, c, y, xx] * W[c]
        assert torch.allclose(proj[n], want[:, 1:10, 1:10], atol=1e-6)
    # deeper layer: projection is confined to the 5×5 receptive field and batched == single
    picks2 = torch.tensor([[0, 1, 4, 4], [1, 3, 0, 8], [1, 0, 2, 2]])
    proj2 = project_activations(net, net[3], x, picks2, batch_size=2)
    for n, (i, c, y, xx) in enumerate(picks2.tolist()):
        mask = torch.zeros(9, 9, dtype=torch.bool)
        mask[max(0, y - 2) : y + 3, max(0, xx - 2) : xx + 3] = True
        assert proj2[n][:, ~mask].abs().max() == 0
        single = project_activations(net, net[3], x, picks2[n : n + 1])
        assert torch.allclose(single[0], proj2[n], atol=1e-6)
    # forward_to stops at the layer
    assert torch.allclose(forward_to(net, net[1], x), act)


# --------------------------------------------------------------------------------
# batching, devices, API


def small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 6),
    ).eval()


FAST = {"smoothgrad": {"samples": 5}, "smoothgrad_sq": {"samples": 5}, "vargrad": {"samples": 5},
        "integrated_gradients": {"steps": 6}, "occlusion": {"window": 6, "stride": 4}}


def layer_kw(name):
    """Methods built on a layer get the small CNN's last convolution."""
    return {"layer": "3"} if ATTRIBUTION_METHODS[name].needs_layer else {}


@pytest.mark.parametrize("name", list(ATTRIBUTION_METHODS))
def test_batched_equals_per_image_and_heatmap_contract(name):
    net = small_cnn()
    x = torch.rand(3, 3, 16, 16)
    kw = dict(FAST.get(name, {}), **layer_kw(name))
    t = torch.tensor([1, 4, 0])
    batched = make(name, net, batch_size=64, **kw).attribute(x, t)
    small = make(name, net, batch_size=2, **kw).attribute(x, t)
    single = torch.cat([make(name, net, **kw).attribute(x[i : i + 1], t[i : i + 1]) for i in range(3)])
    assert torch.allclose(batched, small, rtol=1e-4, atol=1e-6)
    assert torch.allclose(batched, single, rtol=1e-4, atol=1e-6)
    m = make(name, net, **kw)
    assert batched.shape == ((3, 3, 16, 16) if m.output == "pixels" else (3, 1, 16, 16))
    h = m.heatmap(batched)
    assert h.shape == (3, 16, 16) and (h >= 0).all() and h.sum() > 0
    d = normalise_maps(h)
    assert d.min() >= 0 and d.max() == 1
    # a method run under no_grad (as in a build) gives the same
    with torch.no_grad():
        assert torch.allclose(make(name, net, **kw).attribute(x, t), batched, rtol=1e-4, atol=1e-6)


def test_run_batched_halves_on_out_of_memory():
    seen = []

    def fn(s, e):
        seen.append(e - s)
        if e - s > 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")

    bs = run_batched(10, 16, fn)
    assert bs == 2 and seen == [10, 5, 2, 2, 2, 2, 2]
    with pytest.raises(RuntimeError, match="shape"):
        run_batched(4, 4, lambda s, e: (_ for _ in ()).throw(RuntimeError("shape mismatch")))

    class Picky(nn.Module):  # a model that "runs out of memory" above 4 images
        def __init__(self):
            super().__init__()
            self.net = small_cnn()

        def forward(self, x):
            if len(x) > 4:
                raise torch.cuda.OutOfMemoryError("out of memory")
            return self.net(x)

    x = torch.rand(2, 3, 16, 16)
    a = make("smoothgrad", Picky(), samples=6, batch_size=64).attribute(x, 1)
    b = make("smoothgrad", small_cnn(), samples=6, batch_size=64).attribute(x, 1)
    assert torch.allclose(a, b, atol=1e-6)


def test_make_api_and_display_helpers():
    from generator.models import load_model

    with pytest.raises(KeyError):
        make("nope", small_cnn())
    with pytest.raises(TypeError, match="unknown parameter"):
        make("saliency", small_cnn(), steps=3)
    with pytest.raises(ValueError):
        make("gradcam", small_cnn())
    lm = load_model("alexnet", allow_random=True)
    m = make("guided_gradcam", lm)
    assert m.params["layer"] == "conv5" and m.layer_module is lm.module("conv5")
    assert make("integrated_gradients", lm, steps=7).params == {"steps": 7, "baseline": "black", "max_steps": 0,
                                                                "max_delta": 0.05, "max_steps_predicted": 0}
    h = torch.arange(200.0).view(2, 10, 10)
    d = normalise_maps(h)
    assert d.shape == h.shape and d.min() == 0 and d.max() == 1
    q = torch.quantile(h[1].flatten(), 0.99)
    assert torch.allclose(d[1], (h[1] / q).clamp(max=1))
    assert (normalise_maps(torch.zeros(1, 4, 4)) == 0).all()
    rgb = signed_to_rgb(torch.zeros(1, 3, 4, 4))
    assert (rgb == 0.5).all()
    r2 = signed_to_rgb(torch.randn(2, 3, 8, 8))
    assert r2.min() >= 0 and r2.max() <= 1
    for cls in ATTRIBUTION_METHODS.values():
        assert cls.title and cls.paper and cls.formula and cls.summary


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    net = small_cnn()
    x = torch.rand(2, 3, 16, 16)
    for name in ATTRIBUTION_METHODS:
        kw = dict(FAST.get(name, {}), **layer_kw(name))
        cpu = make(name, net, **kw).attribute(x, 2)
        gpu = make(name, net.cuda(), **kw).attribute(x.cuda(), 2)
        net.cpu()
        assert gpu.device.type == "cuda"
        assert torch.allclose(cpu, gpu.cpu(), rtol=1e-3, atol=1e-5), name


# --------------------------------------------------------------------------------
# nothing leaks


def _hook_state(net):
    from torch.nn.modules import module as M

    per_module = {
        name: {k: dict(v) for k, v in vars(m).items() if k.startswith("_") and "hook" in k and isinstance(v, dict)}
        for name, m in net.named_modules()
    }
    glob = {k: dict(v) for k, v in vars(M).items() if k.startswith("_global") and isinstance(v, dict)}
    return per_module, glob


def _snapshot(net):
    return (
        {k: v.clone() for k, v in net.state_dict().items()},
        {k: p.requires_grad for k, p in net.named_parameters()},
        [(n, type(m)) for n, m in net.named_modules()],
        _hook_state(net),
        torch._C._len_torch_function_stack(),
        net.training,
    )


def _same(a, b):
    sd_a, rg_a, mods_a, hooks_a, stack_a, tr_a = a
    sd_b, rg_b, mods_b, hooks_b, stack_b, tr_b = b
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert rg_a == rg_b and mods_a == mods_b and hooks_a == hooks_b and stack_a == stack_b and tr_a == tr_b


def test_nothing_leaks_even_on_errors():
    net = small_cnn()
    for p in net.parameters():
        p.requires_grad_(False)
    x = torch.rand(2, 3, 16, 16)
    t = torch.tensor([1, 2])
    before = _snapshot(net)
    g0 = input_grad(net, x, t)
    for name in ATTRIBUTION_METHODS:
        kw = dict(FAST.get(name, {}), **layer_kw(name))
        make(name, net, **kw).attribute(x, t)
        with pytest.raises((RuntimeError, IndexError)):
            make(name, net, **kw).attribute(x, torch.tensor([1, 99]))  # bad class: raises mid-way
        _same(before, _snapshot(net))
    project_activations(net, net[1], x, torch.tensor([[0, 1, 2, 2]]))
    top_neurons(net, net[4], x, 2)
    with pytest.raises(IndexError):
        project_activations(net, net[1], x, torch.tensor([[0, 99, 2, 2]]))
    _same(before, _snapshot(net))
    assert F.relu is ORIGINAL_RELU and torch.relu is torch._C._VariableFunctions.relu
    assert torch.equal(input_grad(net, x, t), g0)
    assert all(p.grad is None for p in net.parameters())


def test_repeated_calls_do_not_grow_memory():
    net = small_cnn()
    x = torch.rand(2, 3, 16, 16)
    methods = [make(n, net, **dict(FAST.get(n, {}), **layer_kw(n))) for n in ATTRIBUTION_METHODS]

    def live_tensors():
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # isinstance() on deprecated torch objects warns
            return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    keep = None
    for m in methods:  # warm-up
        keep = m.attribute(x)
    n0, r0 = live_tensors(), rss()
    for i in range(100):
        keep = methods[i % len(methods)].attribute(x)
        keep = project_activations(net, net[1], x, torch.tensor([[0, 1, 2, 2], [1, 0, 3, 3]]))
    n1, r1 = live_tensors(), rss()
    assert n1 <= n0 + 2, (n0, n1)
    assert r1 - r0 < 20 * 2**20, (r0, r1)
    del keep
