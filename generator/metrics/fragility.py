"""Fragility of maps (Ghorbani, Abid & Zou 2019, "Interpretation of Neural Networks is Fragile").

A perturbation too small to change the prediction can still move the map. The attack
here is a projected ascent (L∞ ball of radius ``eps``, ``steps`` steps) on a first-order,
method-agnostic objective: it lowers the share of the network's feature energy
(channel-summed positive activations of a late layer, upsampled to the input) that falls
inside the photo's original top-k region, along a direction with the gradient of the
explained class's log-probability projected out (so that, to first order, the probability
does not move). A step that keeps the predicted class and moves its probability by at most
``max_prob_change`` is taken; one that does not is undone and that photo's step size halves.
Ghorbani et al. attack each method's map through its own second derivatives; this cheaper
attack needs only first derivatives, works for every method the same way and is therefore a
lower bound on how fragile each map is.

The control is *random* noise of the same size as each photo's attack: the attack's own
per-pixel magnitudes |δ| with random signs (:func:`matched_noise`: the same L∞ and L2 norm,
photo by photo; nothing for a photo the attack left unchanged). A map is called fragile only
when the attack moves it more than that noise.
Movement is measured as the overlap of the top-k pixels (a fraction of the image) of
the map before and after.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..executor import tick
from ..methods import base
from .checks import Explain, explainer


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
    feature energy by a differentiable map (an analytic map on a toy model: the attack of
    Ghorbani et al. proper).
    """
    x = x.detach().float()
    target = target.to(x.device).long()
    region = region.to(x.device).float()
    size = x.shape[-2:]
    got: dict[str, torch.Tensor] = {}
    h = layer.register_forward_hook(lambda _m, _i, o: got.__setitem__("a", o))
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
        h.remove()
    return {"x": best.detach(), "kept": kept_best.cpu(), "p0": p0.cpu(), "p1": p1.cpu()}


# ------------------------------------------------------------------------ the check on registry models


@dataclass
class Attacked:
    """The attack on one photo: its perturbation δ, whether the class was kept, p before/after."""

    delta: torch.Tensor
    kept: bool
    p0: float
    p1: float
    seconds: float


@dataclass
class Overlap:
    """One method on one photo: top-k overlap of its map with its map after the attack / the noise."""

    attack: float
    noise: float
    seconds: float


@dataclass
class Overlaps:
    """One method over the attacked photos (float64 arrays)."""

    attack: np.ndarray
    noise: np.ndarray

    @classmethod
    def of(cls, res: Sequence[Overlap]) -> "Overlaps":
        return cls(np.array([r.attack for r in res]), np.array([r.noise for r in res]))


@dataclass
class Fragility:
    """The fragility check of a model: per photo whether the class was kept, whether the attack
    perturbed it, p before/after; the attack's size (0–255) and top-k fraction; per method its overlaps."""

    kept: np.ndarray
    attacked: np.ndarray
    p0: np.ndarray
    p1: np.ndarray
    eps255: float
    frac: float
    methods: dict[str, Overlaps] = field(default_factory=dict)

    @classmethod
    def of(cls, attacks: Sequence[Attacked], eps255: float, frac: float) -> "Fragility":
        """Before the overlaps are measured: ``attacked`` are the photos whose δ is not 0."""
        return cls(np.array([r.kept for r in attacks]), np.array([bool(r.delta.abs().amax() > 0) for r in attacks]),
                   np.array([r.p0 for r in attacks]), np.array([r.p1 for r in attacks]), eps255, frac)

    @classmethod
    def empty(cls, eps255: float, frac: float) -> "Fragility":
        """Not measured (a model without a layer for the attack)."""
        return cls(np.array([]), np.array([]), np.array([]), np.array([]), eps255, frac)


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


def overlap_check(explain: Explain, xa: torch.Tensor, xn: torch.Tensor, top1: torch.Tensor, reference: torch.Tensor,
                  frac: float) -> list[Overlap]:
    """Top-k (``frac``) overlap of ``reference`` (the maps of the photos) with ``explain``'s maps of
    the attacked photos ``xa`` and of the noisy ones ``xn``."""
    t0 = time.perf_counter()
    k = len(xa)
    both = torch.cat([xa, xn])
    both = explain(both, top1.repeat(2).to(both.device)).float().cpu()
    oa, on = topk_overlap(reference.cpu(), both[:k], frac), topk_overlap(reference.cpu(), both[k:], frac)
    dt = (time.perf_counter() - t0) / k
    return [Overlap(float(oa[j]), float(on[j]), dt) for j in range(k)]


def overlap_task(model, name: str, params: dict, batch_size: int, frac: float, xa: torch.Tensor, xn: torch.Tensor,
                 top1: torch.Tensor, reference: torch.Tensor) -> list[Overlap]:
    """:func:`overlap_check` of attribution method ``name`` (settings ``params``) on ``model``."""
    out = overlap_check(explainer(model, name, params, batch_size), xa.to(model.device), xn.to(model.device), top1,
                        reference, frac)
    tick(len(xa))
    return out
