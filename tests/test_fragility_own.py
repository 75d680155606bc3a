"""The fragility check's attack on each method's own map (Ghorbani, Abid & Zou 2019): the softplus copy,
the own maps, the attack against its random control, the measures of how far a map moved, and the
sentences the page prints from them — on tiny networks where the answer is known."""
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from generator import plan
from generator.methods.attribution import ATTRIBUTION_METHODS, make
from generator.metrics import fragility, verdict_checks
from generator.metrics.bootstrap import MIN_N


def _frozen(net: nn.Module) -> nn.Module:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def _relu_net(seed=0, classes=3) -> nn.Module:
    """Piecewise linear: ReLU, ReLU6 and max pooling (its second derivative is zero almost everywhere)."""
    torch.manual_seed(seed)
    return _frozen(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                                 nn.ReLU6(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes)))


class _FunctionalReLU(nn.Module):
    """A block that calls the activation as a function (as torchvision's GoogLeNet does)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))

    def forward(self, x):
        return self.head(F.relu(self.conv(x), inplace=True))


def _smooth_net(seed=0, classes=3) -> nn.Module:
    """No ReLU-type activation (SiLU), a depthwise convolution and a Grad-CAM layer ("4")."""
    torch.manual_seed(seed)
    return _frozen(nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.SiLU(), nn.Conv2d(6, 6, 3, padding=1, groups=6),
                                 nn.SiLU(), nn.Conv2d(6, 6, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(6, classes)))


def _share(maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The attack's objective: the share of each map inside its region."""
    return (maps * region).flatten(1).sum(1) / maps.flatten(1).sum(1).clamp(min=1e-12)


# ------------------------------------------------------------------------------ the softplus copy


@pytest.mark.parametrize("build", [_relu_net, lambda: _frozen(_FunctionalReLU())])
def test_the_gradient_of_a_saliency_objective_vanishes_through_relu_and_not_through_the_softplus_copy(build):
    net = build()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    t = net(x).argmax(1)
    meth = make("saliency", net)
    region = fragility.topk_mask(meth.explain(x, t), 0.1).float()

    xi = x.clone().requires_grad_(True)  # through the network itself: ReLU'' = 0
    (g,) = torch.autograd.grad(net(xi).gather(1, t.view(-1, 1)).sum(), xi, create_graph=True)
    (gg,) = torch.autograd.grad(_share(g.abs().amax(1), region).sum(), xi, allow_unused=True)
    assert gg is None or float(gg.abs().max()) == 0.0

    xi = x.clone().requires_grad_(True)  # through the softplus copy: it is not
    (gs,) = torch.autograd.grad(_share(fragility.own_map(meth, xi, t, 10.0), region).sum(), xi)
    assert torch.isfinite(gs).all()
    assert (gs.flatten(1).abs().amax(1) > 0).all()  # every photo has a direction to move in


def test_the_softplus_copy_approaches_the_network_and_smooths_relu6_as_a_clamp():
    x = torch.linspace(-3, 9, 121)
    for beta in (5.0, 20.0, 200.0):  # |softplus_β − ReLU| ≤ log 2 / β, and the same for each end of the clamp
        err = (fragility.smooth_clamp(x, 0.0, 6.0, beta) - x.clamp(0, 6)).abs().max()
        assert float(err) <= np.log(2) / beta + 1e-6
    net = _relu_net()
    xs = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        far = (fragility.SoftplusCopy(net, 2.0)(xs) - net(xs)).abs().max()
        near = (fragility.SoftplusCopy(net, 2000.0)(xs) - net(xs)).abs().max()
    assert float(near) < 1e-2 * float(far) and float(near) < 1e-3


def test_the_softplus_copy_leaves_the_network_untouched():
    net = _relu_net()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    kinds = [type(m) for m in net.modules()]
    flags = [p.requires_grad for p in net.parameters()]
    with torch.no_grad():
        out = net(x)
    t = out.argmax(1)
    for name, kw in (("saliency", {}), ("gradcam", {"layer": "6"}), ("smoothgrad", {"samples": 2}),
                     ("integrated_gradients", {"steps": 3, "max_steps": 0})):
        meth = make(name, net, **kw)
        xi = x.clone().requires_grad_(True)
        torch.autograd.grad(fragility.own_map(meth, xi, t, 10.0).sum(), xi)
    with pytest.raises(RuntimeError):  # an error inside the copy's forward leaves nothing behind either
        fragility.SoftplusCopy(net, 10.0)(torch.rand(1, 5, 16, 16))
    assert not torch.overrides._get_current_function_mode_stack()  # the smooth activations are gone
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert [type(m) for m in net.modules()] == kinds and [p.requires_grad for p in net.parameters()] == flags
    assert all(not m._forward_hooks for m in net.modules())  # Grad-CAM's hook removed
    with torch.no_grad():
        assert torch.equal(net(x), out)  # ReLU again: bit for bit


def test_the_copys_convolution_has_the_networks_values_and_gradients():
    net = _smooth_net()  # nothing to smooth: the copy differs only in how its convolutions are differentiated
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(4))
    copy = fragility.SoftplusCopy(net, 10.0)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = net(xa), copy(xb)
    assert torch.allclose(ya, yb, atol=1e-6)
    (ga,) = torch.autograd.grad(ya[:, 0].sum(), xa)
    (gb,) = torch.autograd.grad(yb[:, 0].sum(), xb)
    assert torch.allclose(ga, gb, atol=1e-6)


@pytest.mark.parametrize("name", sorted(n for n in ATTRIBUTION_METHODS if fragility.differentiable(n)))
def test_the_own_map_is_the_methods_map_where_there_is_nothing_to_smooth(name):
    net = _smooth_net()
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    t = net(x).argmax(1)
    kw = {"gradcam": {"layer": "4"}, "smoothgrad": {"samples": 3}, "smoothgrad_sq": {"samples": 3},
          "vargrad": {"samples": 3}, "integrated_gradients": {"steps": 5, "max_steps": 0}}.get(name, {})
    meth = make(name, net, **kw)
    want, got = meth.explain(x, t), fragility.own_map(meth, x, t, 10.0).detach()
    assert got.shape == want.shape
    # atol: VarGrad's E[g²] − E[g]² cancels digits
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_which_methods_are_attacked_through_their_own_map():
    assert {n for n in ATTRIBUTION_METHODS if fragility.differentiable(n)} == {
        "saliency", "gradcam", "smoothgrad", "smoothgrad_sq", "vargrad", "integrated_gradients"}
    with pytest.raises(ValueError):
        fragility.own_map(make("guided_backprop", _relu_net()), torch.rand(1, 3, 8, 8), torch.tensor([0]))
    n_of = {"saliency": 30, "smoothgrad": 6, "occlusion": 6, "deconvnet": 30}
    got = fragility.attack_plan(n_of, ["smoothgrad", "occlusion"], n_proxy=20, n_own=8, n_own_expensive=4)
    assert got == {"saliency": (True, 8), "smoothgrad": (True, 4), "occlusion": (False, 6), "deconvnet": (False, 20)}
    off = fragility.attack_plan(n_of, ["smoothgrad", "occlusion"], n_proxy=20, n_own=8, n_own_expensive=0)
    assert off["smoothgrad"] == (False, 6) and off["saliency"] == (True, 8)  # the expensive one: the proxy
    assert fragility.own_map_passes("saliency", {}) == fragility.own_map_passes("gradcam", {}) == 1
    assert fragility.own_map_passes("vargrad", {"samples": 7}) == 7
    assert fragility.own_map_passes("integrated_gradients", {"steps": 9}) == 9


# ------------------------------------------------------------------------------ the attack


def test_the_own_map_attack_moves_the_map_more_than_noise_of_its_size():
    torch.manual_seed(3)
    net = _relu_net(seed=3, classes=2)
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(3)
    x = torch.rand(16, 3, 24, 24, generator=torch.Generator().manual_seed(6)) * 0.6 + 0.2
    t = net(x).argmax(1)
    explain = make("saliency", net).explain
    m0 = explain(x, t)
    region = fragility.topk_mask(m0, 0.1)
    eps = 8 / 255
    model = types.SimpleNamespace(net=net)  # what own_attack_check reads of a registry model
    att = fragility.own_attack_check(model, "saliency", {}, x, t, region, eps=eps, steps=6, max_prob_change=0.2,
                                     beta=10.0, batch_size=8)
    delta = torch.stack([a.delta for a in att])
    assert float(delta.abs().max()) <= eps + 1e-6 and all(a.kept and abs(a.p1 - a.p0) <= 0.2 + 1e-6 for a in att)
    assert all(a.agree is not None and 0 <= a.p_copy <= 1 for a in att)
    xa, xn = x + delta, fragility.matched_noise(x, delta, seed=0)
    moved = fragility.Overlaps.of(fragility.overlap_check(explain, xa, xn, t, m0, 0.1), own=True,
                                  stats=fragility.AttackStats.of(att))
    assert moved.stats.attacked.mean() > 0.5
    assert moved.attack.mean() < moved.noise.mean() - 0.1  # the top-k overlap: lost to the attack, not to noise
    assert moved.rho_attack.mean() < moved.rho_noise.mean()
    assert moved.com_attack.mean() > moved.com_noise.mean()
    # the same photos attacked through the proxy's feature energy move the saliency map less
    proxy = fragility.attack(net, net[6], x, t, region, eps=eps, steps=6, max_prob_change=0.2)
    dp = proxy["x"] - x
    by_proxy = fragility.Overlaps.of(fragility.overlap_check(explain, x + dp, fragility.matched_noise(x, dp, 0), t, m0,
                                                             0.1))
    assert moved.attack.mean() < by_proxy.attack.mean()


# ------------------------------------------------------------------------------ how far a map moved


def _blob(h=40, w=50, at=(15, 20), size=5):
    m = torch.zeros(1, h, w)
    m[0, at[0]:at[0] + size, at[1]:at[1] + size] = torch.arange(1.0, size * size + 1).view(size, size)
    return m


@pytest.mark.parametrize("dy,dx,k", [(0, 7, 7.0), (4, 0, 4.0), (3, 4, 5.0), (-6, -8, 10.0)])
def test_the_centre_of_mass_of_a_map_shifted_by_k_pixels_moves_by_k(dy, dx, k):
    m = _blob()
    shifted = torch.roll(m, (dy, dx), dims=(1, 2))  # the blob stays inside the map
    assert float(fragility.com_shift(m, shifted)[0]) == pytest.approx(k, abs=1e-9)
    assert float(fragility.com_shift(m, m)[0]) == 0.0
    assert torch.isnan(fragility.centre_of_mass(torch.zeros(1, 4, 4))).all()  # no mass: no centre


def test_spearman_of_identical_maps_is_one_and_of_reversed_maps_minus_one():
    m = torch.rand(3, 10, 12, generator=torch.Generator().manual_seed(7))
    assert fragility.map_spearman(m, m.clone()).tolist() == [1.0, 1.0, 1.0]
    flat = torch.zeros(1, 5, 5)
    assert fragility.map_spearman(flat, flat).tolist() == [1.0]  # a constant map is still the same map
    order = torch.arange(30.0).view(1, 5, 6)  # maps are |…|: the reversed order of a map, not its negative
    assert float(fragility.map_spearman(order, 29.0 - order)[0]) == pytest.approx(-1.0)
    moves = fragility.map_moves(m, m.clone(), 0.1)
    assert moves["overlap"].tolist() == [1.0] * 3 and moves["com"].tolist() == [0.0] * 3


# ------------------------------------------------------------------------------ the sentences


def _row(name, title, own, rho=(0.5, 0.9), com=(9.0, 1.0), n=MIN_N, sd=0.02):
    """A method's fragility row as verdicts._row makes it: overlaps, and Spearman / centre of mass after the
    attack and after the noise (means; n photos with a small seeded spread)."""
    rng = np.random.default_rng(len(name))
    v = lambda m: m + rng.normal(0.0, sd, n)  # noqa: E731
    fr = fragility.Overlaps(attack=v(0.5), noise=v(0.8), rho_attack=v(rho[0]), rho_noise=v(rho[1]),
                            com_attack=v(com[0]), com_noise=v(com[1]), own=own)
    return {"name": name, "title": title, "fragility_attack": object(), "fragility_own": own,
            **verdict_checks.fragility_moves(fr)}


def test_the_page_names_which_attack_each_method_got():
    said = verdict_checks.fragility_overview([_row("saliency", "Saliency", True), _row("deconvnet", "Deconvnet", False),
                                        _row("smoothgrad", "SmoothGrad", False)], MIN_N, 20.0)
    assert "own map on the softplus copy of the network (β = 20), as Ghorbani et al. attack it: Saliency." in said
    assert "the map of Deconvnet is not the network's derivative" in said
    assert "in this build although the map is differentiable: SmoothGrad" in said
    flipped = verdict_checks.fragility_overview([_row("saliency", "Saliency", False), _row("deconvnet", "Deconvnet", False)],
                                          MIN_N, 20.0)
    assert "as Ghorbani et al. attack it" not in flipped and "differentiable: Saliency" in flipped
    assert verdict_checks.fragility_overview([{"name": "saliency", "title": "Saliency"}], MIN_N) == ""  # not measured
    assert "Sal\\_iency" in verdict_checks.fragility_overview([_row("saliency", "Sal_iency", True)], MIN_N, 20.0)


def test_the_rank_correlation_sentence_flips_where_its_interval_crosses_zero():
    head = "lowered the map's rank correlation with the map of the photo for: "
    yes = verdict_checks.fragility_overview([_row("saliency", "Saliency", True, rho=(0.5, 0.9))], MIN_N, 20.0)
    no = verdict_checks.fragility_overview([_row("saliency", "Saliency", True, rho=(0.9, 0.9), sd=0.1)], MIN_N, 20.0)
    assert head + "Saliency;" in yes and head + "none;" in no


def test_the_centre_of_mass_sentence_flips_where_its_interval_crosses_zero():
    head = "moved its centre of mass farther for: "
    yes = verdict_checks.fragility_overview([_row("gradcam", "Grad-CAM", True, com=(9.0, 1.0))], MIN_N, 20.0)
    no = verdict_checks.fragility_overview([_row("gradcam", "Grad-CAM", True, com=(1.0, 1.0), sd=0.5)], MIN_N, 20.0)
    assert head + "Grad-CAM." in yes and head + "none." in no


def test_rank_correlation_and_centre_of_mass_wait_for_the_minimum_n():
    few = verdict_checks.fragility_overview([_row("saliency", "Saliency", True, n=MIN_N - 1)], MIN_N, 20.0)
    at = verdict_checks.fragility_overview([_row("saliency", "Saliency", True, n=MIN_N)], MIN_N, 20.0)
    assert f"Fewer than {MIN_N} photos (`min_n`) for Saliency" in few and "rank correlation with the map" not in few
    assert "Fewer than" not in at and "rank correlation with the map of the photo for: Saliency" in at


def test_an_own_attack_summary_reports_the_copy_and_the_proxy_has_none():
    d = torch.ones(1, 2, 2)
    att = [fragility.Attacked(d, True, 0.8, 0.75, 1.0, True, 0.78), fragility.Attacked(d * 0, True, 0.6, 0.6, 1.0,
                                                                                         False, 0.4)]
    own = verdict_checks.attack_summary(fragility.AttackStats.of(att), 8.0, 0.05, beta=20.0, own=True)
    assert (own.n, own.kept, own.attacked, own.agree, own.beta) == (2, 1.0, 0.5, 0.5, 20.0)
    assert own.p_copy.mean == pytest.approx((0.02 + 0.2) / 2) and own.dp.mean == pytest.approx(0.025)
    proxy = verdict_checks.attack_summary(fragility.Fragility.of(att[:1], 8.0, 0.05), 8.0, 0.05)
    assert proxy.p_copy is None and np.isnan(proxy.agree) and proxy.n == 1


def test_a_double_backward_pass_is_priced_as_the_stated_multiple_of_a_gradient_pass():
    sp = plan.Speed(0.01, 0.03)
    base = plan._price(plan.Work(gradient=10), sp, {}, None)
    assert plan._price(plan.Work(gradient=10, double=4), sp, {}, None) == pytest.approx(
        base + 4 * (plan.DOUBLE_BACKWARD - 1) * 0.03)
    assert (plan.Work(gradient=2, double=1) + plan.Work(gradient=3, double=2)).double == 3
