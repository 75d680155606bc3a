"""Fragility of maps (Ghorbani, Abid & Zou 2019, "Interpretation of Neural Networks is Fragile").

A perturbation too small to change the prediction can still move the map. The *proxy* attack
is a projected ascent (L∞ ball of radius ``eps``, ``steps`` steps) on a first-order,
method-agnostic objective: it lowers the share of the network's feature energy
(channel-summed positive activations of a late layer, upsampled to the input) that falls
inside the photo's original top-k region, along a direction with the gradient of the
explained class's log-probability projected out (so that, to first order, the probability
does not move). A step that keeps the predicted class and moves its probability by at most
``max_prob_change`` is taken; one that does not is undone and that photo's step size halves.
Ghorbani et al. attack each method's map through its own second derivatives; this cheaper
attack needs only first derivatives, works for every method the same way and is therefore a
lower bound on how fragile each map is.

That proxy is kept only for the methods whose map cannot be attacked through its own rule
(deconvnet, guided backpropagation, guided Grad-CAM: rectifier rules that are not the network's
derivative; occlusion: a map of forward passes over window positions) and for the
differentiable methods whose own-map attack a build leaves out (``fragility_own_images`` /
``fragility_own_expensive_images`` = 0). Every differentiable method (:data:`OWN_MAPS`: saliency,
Grad-CAM, SmoothGrad, SmoothGrad², VarGrad, Integrated Gradients) is otherwise attacked as
Ghorbani et al. attack it (:func:`own_attack_check`): the objective is the share of *its own* map
inside its original top-k region, computed with ``create_graph=True`` (:func:`own_map`) on the
**softplus copy** of the network (:class:`SoftplusCopy`: every ReLU-type activation computed as a
softplus of parameter β, ReLU6 as a smooth clamp; the second derivative of ReLU is zero, so through
the network itself the gradient of a gradient map's objective vanishes). The copy only steers the
steps: the class, the probability and the maps before and after are the network's own.

The control is *random* noise of the same size as each photo's attack: the attack's own
per-pixel magnitudes |δ| with random signs (:func:`matched_noise`: the same L∞ and L2 norm,
photo by photo; nothing for a photo the attack left unchanged). A map is called fragile only
when the attack moves it more than that noise.
Movement is measured as Ghorbani et al. measure it, between the map before and after
(:func:`map_moves`): the overlap of the top-k pixels (a fraction of the image; the verdict's
measure), the Spearman rank correlation of the maps and the shift of their centre of mass (pixels).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from ..executor import tick
from ..methods import base
from ..methods import attribution as A
from ..methods.attribution import make
from .checks import Explain, explainer
from .similarity import spearman


def topk_mask(maps: torch.Tensor, frac: float) -> torch.Tensor:
    """B×H×W → bool B×H×W marking each map's top ``frac`` of pixels (ties: first in order)."""
    flat = maps.detach().float().flatten(1)
    k = max(1, int(round(frac * flat.shape[1])))
    idx = flat.topk(k, dim=1).indices
    m = torch.zeros_like(flat, dtype=torch.bool)
    m.scatter_(1, idx, True)
    return m.view_as(maps)


def topk_overlap(a: torch.Tensor, b: torch.Tensor, frac: float) -> torch.Tensor:
    """Per map pair: |top-k(a) ∩ top-k(b)| / k (1 = same pixels)."""
    ma, mb = topk_mask(a.cpu(), frac), topk_mask(b.cpu(), frac)
    k = ma.flatten(1).sum(1).clamp(min=1)
    return (ma & mb).flatten(1).sum(1).double() / k.double()


def centre_of_mass(maps: torch.Tensor) -> torch.Tensor:
    """B×H×W → B×2: each map's centre of mass (row, column) in pixels, the map (clipped at 0) as the
    mass; NaN for a map without mass."""
    m = maps.detach().double().clamp(min=0)
    h, w = m.shape[-2:]
    total = m.flatten(1).sum(1)
    rows = (m.sum(2) * torch.arange(h, dtype=torch.float64, device=m.device)).sum(1)
    cols = (m.sum(1) * torch.arange(w, dtype=torch.float64, device=m.device)).sum(1)
    com = torch.stack([rows, cols], 1) / total[:, None]
    return torch.where(total[:, None] > 0, com, torch.full_like(com, float("nan")))


def com_shift(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per map pair: the distance (pixels) between the centres of mass of ``a`` and ``b``."""
    return (centre_of_mass(a.cpu()) - centre_of_mass(b.cpu())).norm(dim=1)


def map_spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per map pair: the Spearman rank correlation of the two maps (of |map|, as every check compares maps;
    1 for identical maps, constant ones too)."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    same = (a.flatten(1) == b.flatten(1)).all(1)
    return torch.where(same, torch.ones(len(a), dtype=torch.float64), spearman(a, b).double())


def map_moves(reference: torch.Tensor, moved: torch.Tensor, frac: float) -> dict[str, torch.Tensor]:
    """How far each map of ``moved`` is from its ``reference`` (B×H×W each), as Ghorbani et al. (2019)
    measure it: ``overlap`` of the top-``frac`` pixels, ``spearman`` rank correlation, ``com`` shift of
    the centre of mass (pixels)."""
    return {"overlap": topk_overlap(reference, moved, frac), "spearman": map_spearman(reference, moved),
            "com": com_shift(reference, moved)}


def matched_noise(x: torch.Tensor, delta: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``x`` + (|δ| per pixel and channel with seeded random signs), clipped to [0, 1]: noise of
    the same size as the perturbation ``delta``, in no chosen direction."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    s = torch.randint(0, 2, x.shape, generator=g).to(x.device, x.dtype) * 2 - 1
    return (x + delta.to(x.device, x.dtype).abs() * s).clamp(0, 1)


def _energy(act: torch.Tensor, size) -> torch.Tensor:
    e = act.float().clamp(min=0).sum(1, keepdim=True)
    return F.interpolate(e, size=size, mode="bilinear", align_corners=False)[:, 0]


def _allowed(logits: torch.Tensor, target: torch.Tensor, p0: torch.Tensor, max_change: float) -> torch.Tensor:
    """Per row: the predicted class is ``target`` and its probability within ``max_change`` of ``p0``."""
    p = logits.softmax(1).gather(1, target.view(-1, 1))[:, 0]
    return (logits.argmax(1) == target) & ((p - p0).abs() <= max_change)


def attack(net: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor, region: torch.Tensor,
           eps: float, steps: int = 5, map_fn=None, max_prob_change: float = 1.0) -> dict[str, torch.Tensor]:
    """Perturb ``x`` (B×3×H×W in [0, 1]) within ‖δ‖∞ ≤ ``eps`` to move feature energy out of
    ``region`` (bool B×H×W, the original map's top-k) without changing the predicted class
    or moving its probability by more than ``max_prob_change`` (absolute).

    Each step moves along the gradient of the region's share of the energy with its component
    along the gradient of the class's log-probability removed (to first order the step leaves
    that probability alone), scaled so that its largest pixel change is the step size (from
    2.5·eps/steps, per photo). A step that keeps class and probability is taken; one that does
    not is undone and the photo's step size halves. δ = 0 (the photo itself) when no step was
    taken. Every step costs one forward and two backward passes.

    Returns ``{"x": attacked photos, "kept": bool B (class kept), "p0", "p1": the class's
    probability before and after}``. ``map_fn(x) -> B×H×W``, when given, replaces the
    feature energy by a differentiable map (the attack of Ghorbani et al. proper: a method's own map
    on the softplus copy, :func:`own_attack_check`); ``layer`` is then not read (it may be None).
    """
    x = x.detach().float()
    target = target.to(x.device).long()
    region = region.to(x.device).float()
    size = x.shape[-2:]
    got: dict[str, torch.Tensor] = {}
    h = layer.register_forward_hook(lambda _m, _i, o: got.__setitem__("a", o)) if map_fn is None else None
    try:
        steps = max(0, int(steps))
        alpha = torch.full((len(x), 1, 1, 1), 2.5 * eps / max(1, steps), device=x.device)
        best, direction = x.clone(), torch.zeros_like(x)
        p0 = p1 = kept_best = None
        xa = x.clone()
        # Step j evaluates xa_j (xa_0 = x: its logits give p0) and, but for the last, the gradients
        # there; xa_{j+1} steps from the best photo so far along the direction found at it.
        for j in range(steps + 1):
            last = j == steps
            xa.requires_grad_(not last)
            with torch.enable_grad() if not last else torch.no_grad():
                logits = net(xa).float()
                if not last:
                    e = _energy(got["a"], size) if map_fn is None else map_fn(xa).float()
                    share = (e * region).flatten(1).sum(1) / e.flatten(1).sum(1).clamp(min=1e-12)
                    logp = logits.log_softmax(1).gather(1, target.view(-1, 1))[:, 0]
                    (gs,) = torch.autograd.grad(share.sum(), xa, retain_graph=True)
                    (gl,) = torch.autograd.grad(logp.sum(), xa)
            with torch.no_grad():
                logits = logits.detach()
                p = logits.softmax(1).gather(1, target.view(-1, 1))[:, 0]
                if j == 0:
                    p0, p1, kept_best = p.clone(), p.clone(), logits.argmax(1) == target
                    ok = torch.ones(len(x), dtype=torch.bool, device=x.device)
                else:  # xa_j is taken when it kept class and probability
                    ok = _allowed(logits, target, p0, max_prob_change)
                    best[ok], p1[ok], kept_best[ok] = xa.detach()[ok], p[ok], True
                    alpha[~ok] *= 0.5
                if not last:
                    gs, gl = gs.flatten(1), gl.flatten(1)
                    d = gs - (gs * gl).sum(1, keepdim=True) / (gl * gl).sum(1, keepdim=True).clamp(min=1e-30) * gl
                    d = d / d.abs().amax(1, keepdim=True).clamp(min=1e-30)
                    direction[ok] = d.view_as(x)[ok]
                    xa = (x + (best - alpha * direction - x).clamp(-eps, eps)).clamp(0, 1)
    finally:
        if h is not None:
            h.remove()
    return {"x": best.detach(), "kept": kept_best.cpu(), "p0": p0.cpu(), "p1": p1.cpu()}


# ------------------------------------------------------------------------ the softplus copy and the own maps

#: ``fragility_softplus_beta`` where the settings lack it: softplus_β(x) = log(1 + e^{βx}) / β. Measured on
#: EfficientNet-Lite0 and 48 Imagenette photos, the copy's top-1 class is the network's on 90 % of them at
#: β = 10, 94 % at 20, 98 % at 50 (median change of the class's probability 0.06, 0.02, 0.004)
SOFTPLUS_BETA = 20.0


def smooth_clamp(x: torch.Tensor, lo: float, hi: float, beta: float) -> torch.Tensor:
    """clamp(x, lo, hi) made smooth: lo + softplus_β(x − lo) − softplus_β(x − hi) (ReLU6: lo 0, hi 6)."""
    return lo + F.softplus(x - lo, beta=beta) - F.softplus(x - hi, beta=beta)


def _arg(args: tuple, kwargs: dict, i: int, name: str, default):
    return args[i] if len(args) > i else kwargs.get(name, default)


#: the ReLU-type activations the softplus copy computes smoothly: name → the functions that compute them
#: (modules call these: nn.ReLU → F.relu, nn.ReLU6 → F.hardtanh(0, 6), nn.LeakyReLU → F.leaky_relu;
#: torchvision's GoogLeNet calls F.relu itself)
_RELU = frozenset({F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_})
_CLAMP = frozenset({F.hardtanh, F.hardtanh_, F.relu6})
_LEAKY = frozenset({F.leaky_relu, F.leaky_relu_})


class _Conv2d(torch.autograd.Function):
    """``F.conv2d`` (frozen weights) whose input gradient is a transposed convolution, itself differentiable
    at the cost of one convolution. The same values and gradients; only the second derivative is cheaper:
    PyTorch's double backward of a grouped convolution loops over the groups (measured on CPU through
    EfficientNet-Lite0's depthwise convolutions: the saliency objective's second backward 5–15× slower)."""

    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation, groups):
        ctx.save_for_backward(w)
        ctx.conf = (tuple(x.shape[-2:]), stride, padding, dilation, groups)
        return F.conv2d(x, w, b, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        size, stride, padding, dilation, groups = ctx.conf
        reach = [(g.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (w.shape[2 + i] - 1) + 1
                 for i in range(2)]
        extra = tuple(int(size[i] - reach[i]) for i in range(2))  # the rows / columns the stride left out
        gx = F.conv_transpose2d(g, w, None, stride, padding, extra, groups, dilation)
        return gx, None, None, None, None, None, None


_CONV_ARGS = (("input", None), ("weight", None), ("bias", None), ("stride", 1), ("padding", 0), ("dilation", 1),
              ("groups", 1))


class _Smooth(torch.overrides.TorchFunctionMode):
    """While active, every ReLU-type activation is computed smoothly (out of place, also where the call
    asked for in place: the callers use the returned tensor), and 2-d convolutions with frozen weights
    through :class:`_Conv2d`."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = float(beta)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            a = [_arg(args, kwargs, i, n, d) for i, (n, d) in enumerate(_CONV_ARGS)]
            if not isinstance(a[4], str) and not a[1].requires_grad and a[0].dim() == 4:
                return _Conv2d.apply(a[0], a[1], a[2], _pair(a[3]), _pair(a[4]), _pair(a[5]), int(a[6]))
        if func in _RELU:
            return F.softplus(args[0], beta=self.beta)
        if func in _CLAMP:
            lo, hi = (0.0, 6.0) if func is F.relu6 else (float(_arg(args, kwargs, 1, "min_val", -1.0)),
                                                         float(_arg(args, kwargs, 2, "max_val", 1.0)))
            return smooth_clamp(args[0], lo, hi, self.beta)
        if func in _LEAKY:
            slope = float(_arg(args, kwargs, 1, "negative_slope", 0.01))
            return slope * args[0] + (1.0 - slope) * F.softplus(args[0], beta=self.beta)
        return func(*args, **kwargs)


class SoftplusCopy:
    """The network ``net`` as a smooth function: called like ``net``, it runs ``net``'s forward with every
    ReLU-type activation computed as softplus_β (ReLU6 and other clamps as :func:`smooth_clamp`; also the
    ones a forward calls as functions, as torchvision's GoogLeNet does), so that second derivatives exist
    (ReLU's is zero). A copy of the function, not of the weights: it shares ``net``'s modules and changes
    nothing in ``net`` (the smooth activations live only while its forward runs; hooks on ``net``'s
    modules see the smooth activations then). Max pooling stays as it is."""

    def __init__(self, net: nn.Module, beta: float = SOFTPLUS_BETA) -> None:
        self.net, self.beta = net, float(beta)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with _Smooth(self.beta):
            return self.net(x)


def _score(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return logits.float().gather(1, target.view(-1, 1)).sum()


def _input_gradients(net, copies: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """∂ logit[target] / ∂ copies, kept differentiable (``create_graph``)."""
    (g,) = torch.autograd.grad(_score(net(copies), target), copies, create_graph=True)
    return g


def _saliency_map(meth, x, target, beta):
    return meth.heatmap(_input_gradients(SoftplusCopy(meth._net(x), beta), x, target))


def _gradcam_map(meth, x, target, beta):
    net, layer = meth._layer_net(x)
    got: dict[str, torch.Tensor] = {}
    h = layer.register_forward_hook(lambda _m, _i, o: got.__setitem__("a", o[0] if isinstance(o, (tuple, list)) else o))
    try:
        logits = SoftplusCopy(net, beta)(x)
    finally:
        h.remove()
    a = got.pop("a")
    (ga,) = torch.autograd.grad(_score(logits, target), a, create_graph=True)
    cam = F.relu((ga.mean(dim=(2, 3), keepdim=True) * a).sum(1, keepdim=True))
    mode = meth.params["interpolation"]
    cam = F.interpolate(cam, size=x.shape[-2:], mode=mode,
                        align_corners=False if mode in ("bilinear", "bicubic") else None)
    return meth.heatmap(cam.clamp(min=0))


def _copies_gradients(meth, x, target, beta, copies: torch.Tensor, n: int) -> torch.Tensor:
    """B×n×C×H×W: the input gradients of ``n`` derived copies per photo (``copies``: B·n, photo-major)."""
    g = _input_gradients(SoftplusCopy(meth._net(x), beta), copies, target.repeat_interleave(n))
    return g.view(len(x), n, *x.shape[1:])


def _smoothgrad_map(meth, x, target, beta):
    n = int(meth.params["samples"])
    gen = torch.Generator(device="cpu").manual_seed(int(meth.params["seed"]))
    noise = torch.randn((n, *x.shape[1:]), generator=gen).to(x.device)  # as SmoothGrad draws it
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).clamp(min=1e-6).detach()
    sigma = float(meth.params["sigma"]) * span
    copies = (x[:, None] + sigma.view(-1, 1, 1, 1, 1) * noise[None]).flatten(0, 1)
    g = _copies_gradients(meth, x, target, beta, copies, n)
    mean, mean_sq = g.mean(1), (g * g).mean(1)
    if isinstance(meth, A.VarGrad):  # E[g²] − E[g]²
        return meth.heatmap((mean_sq - mean * mean).clamp(min=0))
    return meth.heatmap(mean_sq if isinstance(meth, A.SmoothGradSquared) else mean)


def _integrated_gradients_map(meth, x, target, beta):
    """The trapezoid rule on the method's starting ``steps`` points, both ends included (as Integrated
    Gradients starts; its refinement of a photo to more points, up to its cap, is not differentiated)."""
    m = int(meth.params["steps"])
    b = meth.baseline_for(x).detach()
    diff = x - b
    alphas = torch.arange(m, device=x.device, dtype=x.dtype) / (m - 1)
    w = torch.ones(m, device=x.device, dtype=x.dtype)
    w[0] = w[-1] = 0.5
    copies = (b[:, None] + alphas.view(1, -1, 1, 1, 1) * diff[:, None]).flatten(0, 1)
    g = _copies_gradients(meth, x, target, beta, copies, m)
    return meth.heatmap(diff * (g * w.view(1, -1, 1, 1, 1)).sum(1) / (m - 1))


def _own_maps() -> dict:
    return {A.Saliency: (_saliency_map, lambda p: 1), A.GradCAM: (_gradcam_map, lambda p: 1),
            A.SmoothGrad: (_smoothgrad_map, lambda p: int(p["samples"])),
            A.SmoothGradSquared: (_smoothgrad_map, lambda p: int(p["samples"])),
            A.VarGrad: (_smoothgrad_map, lambda p: int(p["samples"])),
            A.IntegratedGradients: (_integrated_gradients_map, lambda p: int(p["steps"]))}


#: the methods whose map is the network's derivative (or a function of it): method class → (its map on
#: the softplus copy, differentiable in the input; the images one map sends through the copy, from the
#: method's settings). Deconvnet, guided backpropagation and guided Grad-CAM (their rectifier rules are
#: not the network's derivative) and occlusion (forward passes over window positions) are not here.
OWN_MAPS: dict = _own_maps()


def differentiable(name: str) -> bool:
    """Whether method ``name``'s map can be attacked through itself (:data:`OWN_MAPS`)."""
    return A.ATTRIBUTION_METHODS.get(name) in OWN_MAPS


def own_map_passes(name: str, params: dict) -> int:
    """Images that one own map of a photo sends through the softplus copy (each with a double backward)."""
    cls = A.ATTRIBUTION_METHODS[name]
    return int(OWN_MAPS[cls][1]({**cls.defaults, **dict(params)}))


def attack_plan(n_of: dict[str, int], expensive, n_proxy: int, n_own: int,
                n_own_expensive: int) -> dict[str, tuple[bool, int]]:
    """Per method (``n_of``: method → its photos): ``(own, n)`` — attacked through its own map on its first
    ``n`` photos (a :func:`differentiable` method, ``n = min(its photos, n_own)``, ``n_own_expensive`` for
    the ``expensive`` ones, when that is > 0), else by the shared proxy attack on ``min(its photos, n_proxy)``."""
    out = {}
    for name, k in n_of.items():
        own = n_own_expensive if name in set(expensive) else n_own
        out[name] = (True, min(k, own)) if differentiable(name) and own > 0 else (False, min(k, n_proxy))
    return out


def own_map(meth, x: torch.Tensor, target: torch.Tensor, beta: float = SOFTPLUS_BETA) -> torch.Tensor:
    """B×H×W: attribution method ``meth``'s map of photos ``x`` for classes ``target``, computed as the
    method computes it (its network, settings, noise, path and heatmap rule) but on the softplus copy
    of its network and kept differentiable in ``x`` (``create_graph``): the objective of the own-map
    attack. With no ReLU-type activation in the network it is the method's map itself (tested)."""
    fn = OWN_MAPS.get(type(meth))
    if fn is None:
        raise ValueError(f"{meth.name}: its map is not the network's derivative; attack it with the proxy")
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        return fn[0](meth, x, target.to(x.device).long(), beta).float()


# ------------------------------------------------------------------------ the check on registry models


@dataclass
class Attacked:
    """The attack on one photo: its perturbation δ, whether the class was kept, p before/after; for the
    own-map attack also whether the softplus copy's top-1 class at the photo is the explained class
    (``agree``) and the copy's probability of it (``p_copy``; the network's is ``p0``)."""

    delta: torch.Tensor
    kept: bool
    p0: float
    p1: float
    seconds: float
    agree: bool | None = None
    p_copy: float = float("nan")


@dataclass
class Overlap:
    """One method on one photo: how its map after the attack / after the noise compares with its map of
    the photo — top-k overlap, Spearman rank correlation (``rho_*``), centre-of-mass shift in pixels (``com_*``)."""

    attack: float
    noise: float
    seconds: float
    rho_attack: float = float("nan")
    rho_noise: float = float("nan")
    com_attack: float = float("nan")
    com_noise: float = float("nan")


def _empty() -> np.ndarray:
    return np.array([], dtype=np.float64)


@dataclass
class AttackStats:
    """An attack over its photos (arrays, one value per photo): class kept, photo perturbed (δ ≠ 0), the
    class's probability before/after; for the own-map attack whether the softplus copy gives the class
    (``agree``) and its probability there (``p_copy``)."""

    kept: np.ndarray
    attacked: np.ndarray
    p0: np.ndarray
    p1: np.ndarray
    agree: np.ndarray = field(default_factory=_empty)
    p_copy: np.ndarray = field(default_factory=_empty)

    @classmethod
    def of(cls, attacks: Sequence[Attacked]) -> "AttackStats":
        own = [r for r in attacks if r.agree is not None]
        col = lambda rs, f, dtype=np.float64: np.array([f(r) for r in rs], dtype=dtype)  # noqa: E731
        return cls(col(attacks, lambda r: r.kept, bool), col(attacks, lambda r: bool(r.delta.abs().amax() > 0), bool),
                   col(attacks, lambda r: r.p0), col(attacks, lambda r: r.p1),
                   col(own, lambda r: bool(r.agree), bool), col(own, lambda r: r.p_copy))


@dataclass
class Overlaps:
    """One method over the attacked photos (float64 arrays): top-k overlap, Spearman, centre-of-mass
    shift after the attack and after the noise; ``own``: attacked through its own map (else the proxy),
    ``stats``: that own-map attack over its photos (None for the proxy: :class:`Fragility` holds it)."""

    attack: np.ndarray
    noise: np.ndarray
    rho_attack: np.ndarray = field(default_factory=_empty)
    rho_noise: np.ndarray = field(default_factory=_empty)
    com_attack: np.ndarray = field(default_factory=_empty)
    com_noise: np.ndarray = field(default_factory=_empty)
    own: bool = False
    stats: AttackStats | None = None

    @classmethod
    def of(cls, res: Sequence[Overlap], own: bool = False, stats: AttackStats | None = None) -> "Overlaps":
        col = lambda k: np.array([getattr(r, k) for r in res], dtype=np.float64)  # noqa: E731
        return cls(col("attack"), col("noise"), col("rho_attack"), col("rho_noise"), col("com_attack"),
                   col("com_noise"), own, stats)


@dataclass
class Fragility:
    """The fragility check of a model: per photo of the shared proxy attack whether the class was kept,
    whether the attack perturbed it, p before/after (empty when no method needed it); the attacks' size
    (0–255), top-k fraction and the softplus copy's β; per method its overlaps (and its own attack's stats)."""

    kept: np.ndarray
    attacked: np.ndarray
    p0: np.ndarray
    p1: np.ndarray
    eps255: float
    frac: float
    methods: dict[str, Overlaps] = field(default_factory=dict)
    beta: float = SOFTPLUS_BETA

    @classmethod
    def of(cls, attacks: Sequence[Attacked], eps255: float, frac: float, beta: float = SOFTPLUS_BETA) -> "Fragility":
        """Before the overlaps are measured: ``attacked`` are the photos whose δ is not 0."""
        st = AttackStats.of(attacks)
        return cls(st.kept, st.attacked, st.p0, st.p1, eps255, frac, beta=beta)

    @classmethod
    def empty(cls, eps255: float, frac: float, beta: float = SOFTPLUS_BETA) -> "Fragility":
        """Not measured (a model without a layer for the attack), or no method attacked by the proxy."""
        return cls(np.array([]), np.array([]), np.array([]), np.array([]), eps255, frac, beta=beta)


def attack_check(model, x: torch.Tensor, top1: torch.Tensor, region: torch.Tensor, *, eps: float, steps: int,
                 max_prob_change: float, batch_size: int, progress=None) -> list[Attacked]:
    """:func:`attack` on the registry ``model`` (the layer of its Grad-CAM) for photos ``x`` in
    batches of ``batch_size`` (a gradient pass keeps every activation of its batch)."""
    t0 = time.perf_counter()
    # on the batch-norm-folded, channels-last copy when the layer it reads is unchanged by folding
    prep, path = base.prepared(model.net, x[:1]), model.module_path(model.spec.gradcam_layer)
    net, layer = ((prep.net, prep.net.get_submodule(path)) if prep.pairs and prep.safe_path(path)
                  else (model.net, model.module(model.spec.gradcam_layer)))
    out = []
    for b in range(0, len(x), max(1, batch_size)):
        xb = x[b : b + max(1, batch_size)]
        r = attack(net, layer, xb, top1[b : b + len(xb)], region[b : b + len(xb)], eps=eps, steps=steps,
                   max_prob_change=max_prob_change)
        out += [((r["x"][j] - xb[j]).cpu().clone(), bool(r["kept"][j]), float(r["p0"][j]), float(r["p1"][j]))
                for j in range(len(xb))]
        if progress is not None:
            progress.update(len(xb))
    dt = (time.perf_counter() - t0) / len(x)
    return [Attacked(*o, seconds=dt) for o in out]


class _Tick:
    update = staticmethod(tick)


def attack_task(model, eps: float, steps: int, max_prob_change: float, batch_size: int, x: torch.Tensor,
                top1: torch.Tensor, region: torch.Tensor) -> list[Attacked]:
    """:func:`attack_check` of photos ``x``."""
    return attack_check(model, x.to(model.device), top1, region, eps=eps, steps=steps, max_prob_change=max_prob_change,
                        batch_size=batch_size, progress=_Tick)


def own_attack_check(model, name: str, params: dict, x: torch.Tensor, top1: torch.Tensor, region: torch.Tensor, *,
                     eps: float, steps: int, max_prob_change: float, beta: float, batch_size: int,
                     progress=None) -> list[Attacked]:
    """The attack of Ghorbani et al. on attribution method ``name``'s own map (settings ``params``) of
    photos ``x``: :func:`attack` with the share of :func:`own_map` (on the softplus copy, β ``beta``)
    inside ``region`` (its original map's top-k) as the objective; the class and probability limits,
    and every step's log-probability gradient, on the network itself (its batch-norm-folded copy, as
    the proxy's). Per photo also whether the softplus copy gives the explained class at the photo.
    Batched: ``batch_size`` images through the copy at a time (photos × :func:`own_map_passes`).
    Every step costs per photo one gradient pass through the network and :func:`own_map_passes`
    double-backward passes through the copy; then one forward pass through each (the last step, the
    copy's class)."""
    t0 = time.perf_counter()
    meth = make(name, model, batch_size=batch_size, **params)
    net = base.prepared(model.net, x[:1]).net
    per = max(1, batch_size // own_map_passes(name, params))
    out = []
    for b in range(0, len(x), per):
        xb = x[b : b + per].detach().float()
        tb = top1[b : b + len(xb)].to(xb.device).long()
        with torch.no_grad():
            pc = SoftplusCopy(net, beta)(xb).float().softmax(1)
        r = attack(net, None, xb, tb, region[b : b + len(xb)], eps=eps, steps=steps, max_prob_change=max_prob_change,
                   map_fn=lambda xx, tb=tb: own_map(meth, xx, tb, beta))
        agree, p_copy = (pc.argmax(1) == tb).cpu(), pc.gather(1, tb.view(-1, 1))[:, 0].cpu()
        out += [((r["x"][j] - xb[j]).cpu().clone(), bool(r["kept"][j]), float(r["p0"][j]), float(r["p1"][j]),
                 bool(agree[j]), float(p_copy[j])) for j in range(len(xb))]
        if progress is not None:
            progress.update(len(xb))
    dt = (time.perf_counter() - t0) / max(1, len(x))
    return [Attacked(d, k, p0, p1, dt, a, pc) for d, k, p0, p1, a, pc in out]


def own_attack_task(model, name: str, params: dict, eps: float, steps: int, max_prob_change: float, beta: float,
                    batch_size: int, x: torch.Tensor, top1: torch.Tensor, region: torch.Tensor) -> list[Attacked]:
    """:func:`own_attack_check` of photos ``x``."""
    return own_attack_check(model, name, params, x.to(model.device), top1, region, eps=eps, steps=steps,
                            max_prob_change=max_prob_change, beta=beta, batch_size=batch_size, progress=_Tick)


def overlap_check(explain: Explain, xa: torch.Tensor, xn: torch.Tensor, top1: torch.Tensor, reference: torch.Tensor,
                  frac: float) -> list[Overlap]:
    """How ``explain``'s maps of the attacked photos ``xa`` and of the noisy ones ``xn`` compare with
    ``reference`` (the maps of the photos): :func:`map_moves` (top-``frac`` overlap, Spearman, centre-of-mass shift)."""
    t0 = time.perf_counter()
    k = len(xa)
    both = torch.cat([xa, xn])
    both = explain(both, top1.repeat(2).to(both.device)).float().cpu()
    a, n = map_moves(reference.cpu(), both[:k], frac), map_moves(reference.cpu(), both[k:], frac)
    dt = (time.perf_counter() - t0) / k
    return [Overlap(float(a["overlap"][j]), float(n["overlap"][j]), dt, float(a["spearman"][j]),
                    float(n["spearman"][j]), float(a["com"][j]), float(n["com"][j])) for j in range(k)]


def overlap_task(model, name: str, params: dict, batch_size: int, frac: float, xa: torch.Tensor, xn: torch.Tensor,
                 top1: torch.Tensor, reference: torch.Tensor) -> list[Overlap]:
    """:func:`overlap_check` of attribution method ``name`` (settings ``params``) on ``model``."""
    out = overlap_check(explainer(model, name, params, batch_size), xa.to(model.device), xn.to(model.device), top1,
                        reference, frac)
    tick(len(xa))
    return out
