"""Deletion and insertion curves (Petsiuk, Das & Saenko, 2018, "RISE").

A heatmap claims an order of importance over pixels. If the claim is faithful to
the model, then

- **deletion**: replacing the most important pixels first by a baseline colour makes
  the class probability fall fast → *small* area under the curve (AUC) is good;
- **insertion**: copying the most important pixels first from the photo into a
  blurred copy of it makes the probability rise fast → *large* AUC is good.

Both curves plot the softmax probability of the explained class against the
fraction of pixels changed (0 … 1, ``steps + 1`` points); AUC is the trapezoid
area, so it lies in [0, 1]. Pixels with equal importance are taken in a seeded
random order. Two reference orders that look at no model at all are measured
beside the methods: a **random** order and a **centre prior** (pixels nearest the
image centre first), the null hypothesis of "the object is in the middle".

Every perturbed copy (all orders × both curves × all inner fractions × all images) goes
through the model in batches of ``batch_size``; the curves' ends are shared by all orders.

**Is the step count enough?** The AUC is a trapezoid over ``steps`` intervals (RISE uses 224; the
build fewer), so it moves with the step count wherever a curve bends between two points. On a few
photos the check is measured again at twice the steps (:func:`finer_check`: only the new, odd points
are evaluated, the others are the coarse curve's) and :func:`step_check` gives, per photo, the mean
absolute change of the deletion and of the insertion AUC over every order;
:func:`.verdict_checks.step_verdict` says whether that change stays below ``faithfulness_step_tolerance``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF

from ..methods import base
from .checks import Ticks

CURVES = ("deletion", "insertion")


def fractions(steps: int) -> torch.Tensor:
    return torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)


def _gen(seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def order_from_maps(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """B×H×W importance → B×N pixel indices, most important first; ties in seeded random order."""
    flat = maps.detach().float().cpu().flatten(1)
    g = _gen(seed)
    out = []
    for row in flat:
        perm = torch.randperm(row.numel(), generator=g)
        idx = torch.argsort(-row[perm], stable=True)
        out.append(perm[idx])
    return torch.stack(out)


def random_order(batch: int, n: int, seed: int = 0) -> torch.Tensor:
    g = _gen(seed)
    return torch.stack([torch.randperm(n, generator=g) for _ in range(batch)])


def centre_order(batch: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Pixels by distance to the image centre, nearest first (ties random)."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    d = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2
    return order_from_maps((-d)[None].expand(batch, h, w), seed)


def blur(x: torch.Tensor, sigma: float = 5.0, kernel: int = 11) -> torch.Tensor:
    """Gaussian blur (Petsiuk et al. use an 11-px kernel with σ = 5)."""
    return TF.gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def perturbed(start: torch.Tensor, fill: torch.Tensor, order: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """F copies of ``start`` (3×H×W) whose first ``counts[f]`` pixels in ``order`` come from ``fill``."""
    c, h, w = start.shape
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    mask = (rank[None, :] < counts[:, None]).view(-1, 1, h, w).to(start.device)
    return torch.where(mask, fill[None], start[None])


def _jobs(x, orders, baseline, blurred, counts, only) -> Iterator[tuple[str, str, int, torch.Tensor]]:
    for name, ords in orders.items():
        for b in range(x.shape[0]):
            if only is not None and (name, b) not in only:
                continue
            o = ords[b].to(x.device)
            yield name, "deletion", b, perturbed(x[b], baseline[b], o, counts)
            yield name, "insertion", b, perturbed(blurred[b], x[b], o, counts)


@torch.no_grad()
def deletion_insertion(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    target: torch.Tensor,
    orders: Mapping[str, torch.Tensor],
    steps: int = 16,
    baseline: torch.Tensor | None = None,
    blur_sigma: float = 5.0,
    batch_size: int = 32,
    only: set[tuple[str, int]] | None = None,
    progress=None,
    points: Sequence[int] | None = None,
    ends: bool = True,
) -> dict[str, dict[str, torch.Tensor]]:
    """Curves for each order: ``{name: {"deletion": B×(steps+1), "insertion": B×(steps+1)}}``.

    ``x``: B×3×H×W images in pixel space; ``target``: B class indices;
    ``orders``: name → B×(H·W) pixel orders (most important first);
    ``baseline``: the colour deleted pixels get, 3-vector or B×3×H×W (default 0);
    ``only``: compute just these (order name, image index) pairs (rows of the others
    stay 0 — the caller has them cached).

    The two ends of every curve look at no order (0 % changed: the photo, or its blurred
    copy; 100 %: the baseline, or the photo), so they are evaluated once per image and
    shared by all orders: ``3 + 2 × (steps − 1) × orders`` model evaluations per image
    instead of ``2 × (steps + 1) × orders``.

    ``points``: evaluate only these inner points (indices 1 … steps − 1; default all of them);
    ``ends=False``: not the ends either. What is not evaluated stays 0 (:func:`finer_check` fills it).
    """
    b, c, h, w = x.shape
    n = h * w
    counts = torch.round(fractions(steps) * n).long().to(x.device)
    if baseline is None:
        baseline = torch.zeros(b, c, h, w, dtype=x.dtype, device=x.device)
    else:
        baseline = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
        if baseline.ndim == 1:
            baseline = baseline.view(1, c, 1, 1)
        baseline = baseline.expand(b, c, h, w)
    blurred = blur(x, blur_sigma)
    target = torch.as_tensor(target, device=x.device).long()
    out = {name: {k: torch.zeros(b, steps + 1, dtype=torch.float64) for k in CURVES} for name in orders}
    at = list(range(1, steps)) if points is None else sorted({int(p) for p in points if 0 < int(p) < steps})
    inner = counts[at]  # the fractions strictly between 0 and 1 that are evaluated
    ni = len(inner)

    def probs_of(imgs: torch.Tensor, tg: torch.Tensor) -> torch.Tensor:
        ps = []
        for i in range(0, imgs.shape[0], batch_size):
            p = torch.softmax(model(imgs[i : i + batch_size]).float(), dim=1)
            ps.append(p.gather(1, tg[i : i + batch_size, None])[:, 0])
            if progress is not None:
                progress.update(min(batch_size, imgs.shape[0] - i))
        return torch.cat(ps).double().cpu() if ps else torch.zeros(0, dtype=torch.float64)

    # the ends, once per image: p(photo), p(baseline), p(blurred)
    used = sorted({bi for (_n, bi) in only} if only is not None else range(b)) if ends else []
    if used:
        idx = torch.tensor(used, device=x.device)
        end_p = probs_of(torch.cat([x[idx], baseline[idx], blurred[idx]]), target[idx].repeat(3)).view(3, len(used))
        end_of = {bi: end_p[:, j] for j, bi in enumerate(used)}  # (photo, baseline, blurred)
    for name, ords in orders.items():
        for bi in used:
            if only is None or (name, bi) in only:
                e = end_of[bi]
                out[name]["deletion"][bi, 0], out[name]["deletion"][bi, -1] = e[0], e[1]
                out[name]["insertion"][bi, 0], out[name]["insertion"][bi, -1] = e[2], e[0]

    pending: list[tuple[str, str, int]] = []
    buf: list[torch.Tensor] = []

    def flush():
        if not buf:
            return
        tg = torch.cat([target[bi].expand(ni) for _n, _k, bi in pending])
        rows = probs_of(torch.cat(buf), tg).view(len(pending), ni)
        for (name, kind, bi), row in zip(pending, rows):
            out[name][kind][bi, at] = row
        pending.clear()
        buf.clear()

    if ni:
        for name, kind, bi, imgs in _jobs(x, orders, baseline, blurred, inner, only):
            pending.append((name, kind, bi))
            buf.append(imgs)
            if len(buf) * ni >= 4 * batch_size:  # bounded memory; batches still full
                flush()
        flush()
    return out


def n_forward(pairs: int, steps: int, images: int = 0) -> int:
    """How many model evaluations :func:`deletion_insertion` makes for ``pairs`` (image, order)
    pairs over ``images`` distinct images (the curves' shared ends: 3 per image)."""
    return pairs * len(CURVES) * max(steps - 1, 0) + 3 * images


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under curves sampled at equal steps over [0, 1] (last dim)."""
    y = curve.double()
    k = y.shape[-1] - 1
    return (y[..., 1:] + y[..., :-1]).sum(-1) / (2 * k)


# ------------------------------------------------------------------------ the check on registry models


@dataclass
class Curves:
    """The deletion and insertion curves of one (order, photo): the class's probability at each
    fraction of the pixels (``steps + 1`` values, float64)."""

    deletion: torch.Tensor
    insertion: torch.Tensor
    seconds: float


@dataclass
class OrderCurves:
    """One order (a method's or a baseline's) over its photos: n×(steps+1) curves and n areas."""

    deletion: np.ndarray
    insertion: np.ndarray
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray


@dataclass
class StepCheck:
    """The AUCs at ``steps`` and at ``fine_steps`` (= 2 × steps) on the first photos: per photo (its
    index in ``photos``) the mean over the ``orders`` of |AUC(fine) − AUC(coarse)|, for deletion and
    insertion."""

    steps: int
    fine_steps: int
    orders: list[str]
    photos: list[int]
    deletion: np.ndarray
    insertion: np.ndarray

    @property
    def change(self) -> np.ndarray:
        """Per photo: the mean absolute change of the deletion and the insertion AUC."""
        return (self.deletion + self.insertion) / 2.0


@dataclass
class Faithfulness:
    """The deletion/insertion check of a model: the fractions of the curves and every order's curves
    (and, where measured, how much the AUCs move when the steps are doubled: ``step_check``)."""

    steps: int
    fractions: np.ndarray
    curves: dict[str, OrderCurves]
    baseline_colour: list[float]
    step_check: StepCheck | None = None


def orders_of(maps: Mapping[str, torch.Tensor], batch: int, h: int, w: int, seed: int) -> dict[str, torch.Tensor]:
    """Pixel orders of ``batch`` photos: each method's from its maps (rows past its own n: random
    orders, never evaluated), then the ``random`` and ``centre`` baselines."""
    orders = {name: order_from_maps(m, seed) for name, m in maps.items()}
    for name in maps:
        if len(orders[name]) < batch:
            orders[name] = torch.cat([orders[name], random_order(batch - len(orders[name]), h * w, seed)])
    orders["random"] = random_order(batch, h * w, seed)
    orders["centre"] = centre_order(batch, h, w, seed)
    return orders


def curves_check(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, top1: torch.Tensor,
                 orders: Mapping[str, torch.Tensor], pairs: Sequence[tuple[str, int]], *, steps: int,
                 baseline: Sequence[float], blur_sigma: float, batch_size: int, progress=None) -> list[Curves]:
    """The curves of the (order name, photo index) ``pairs`` of photos ``x`` for classes ``top1``
    under classifier ``net`` (:func:`deletion_insertion`, deleted pixels get colour ``baseline``)."""
    t0 = time.perf_counter()
    curves = deletion_insertion(net, x, top1.to(x.device), orders, steps=steps, baseline=torch.tensor(baseline),
                                blur_sigma=blur_sigma, batch_size=batch_size, only=set(pairs), progress=progress)
    dt = (time.perf_counter() - t0) / max(1, len(pairs))
    return [Curves(curves[n]["deletion"][i].clone(), curves[n]["insertion"][i].clone(), dt) for n, i in pairs]


def curves_task(model, steps: int, baseline: list[float], blur_sigma: float, batch_size: int, x: torch.Tensor,
                top1: torch.Tensor, orders: dict, pairs: list[tuple[str, int]]) -> list[Curves]:
    """:func:`curves_check` on the registry ``model`` (forward passes only: batch norm folded, same logits)."""
    x = x.to(model.device)
    net = base.prepared(model.net, x[:1]).net
    work = n_forward(len(pairs), steps, len({i for _n, i in pairs}))
    return curves_check(net, x, top1, orders, pairs, steps=steps, baseline=baseline, blur_sigma=blur_sigma,
                        batch_size=batch_size, progress=Ticks(work, len(pairs)))


def faithfulness_of(steps: int, baseline: list[float], results: Mapping[str, Sequence[Curves]]) -> Faithfulness:
    """The check of a model from each order's per-photo curves."""
    out = {}
    for name, vals in results.items():
        c = {k: torch.stack([getattr(v, k) for v in vals]) for k in CURVES}
        out[name] = OrderCurves(**{k: c[k].numpy() for k in CURVES}, **{f"{k}_auc": auc(c[k]).numpy() for k in CURVES})
    return Faithfulness(steps, fractions(steps).numpy(), out, baseline)


# ------------------------------------------------------------------------ is the step count enough?


def finer_points(steps: int) -> list[int]:
    """The points of a curve at ``2 × steps`` that a curve at ``steps`` lacks (the odd ones)."""
    return list(range(1, 2 * steps, 2))


def n_forward_finer(pairs: int, steps: int) -> int:
    """Model evaluations :func:`finer_check` makes for ``pairs`` (image, order) pairs: the ``steps`` new
    points of each of the two curves (the ends and the even points are the coarse curve's)."""
    return pairs * len(CURVES) * len(finer_points(steps))


def finer_check(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, top1: torch.Tensor,
                orders: Mapping[str, torch.Tensor], pairs: Sequence[tuple[str, int]], coarse: Sequence[Curves], *,
                steps: int, baseline: Sequence[float], blur_sigma: float, batch_size: int,
                progress=None) -> list[Curves]:
    """The curves of ``pairs`` at ``2 × steps``: the odd points evaluated (:func:`deletion_insertion`
    with ``points``), the even ones — the ends included — taken from ``coarse`` (the pairs' curves at
    ``steps``, as :func:`curves_check` made them: the fractions coincide, ``k / steps = 2k / 2·steps``)."""
    t0 = time.perf_counter()
    fine = 2 * steps
    odd = finer_points(steps)
    curves = deletion_insertion(net, x, top1.to(x.device), orders, steps=fine, baseline=torch.tensor(baseline),
                                blur_sigma=blur_sigma, batch_size=batch_size, only=set(pairs), progress=progress,
                                points=odd, ends=False)
    dt = (time.perf_counter() - t0) / max(1, len(pairs))
    out = []
    for (n, i), c in zip(pairs, coarse):
        got = {}
        for k in CURVES:
            v = curves[n][k][i].clone()
            v[0::2] = getattr(c, k).double()
            got[k] = v
        out.append(Curves(got["deletion"], got["insertion"], dt))
    return out


def finer_task(model, steps: int, baseline: list[float], blur_sigma: float, batch_size: int, x: torch.Tensor,
               top1: torch.Tensor, orders: dict, pairs: list[tuple[str, int]], coarse: list[Curves]) -> list[Curves]:
    """:func:`finer_check` on the registry ``model`` (forward passes only: batch norm folded, same logits)."""
    x = x.to(model.device)
    net = base.prepared(model.net, x[:1]).net
    work = n_forward_finer(len(pairs), steps)
    return finer_check(net, x, top1, orders, pairs, coarse, steps=steps, baseline=baseline, blur_sigma=blur_sigma,
                       batch_size=batch_size, progress=Ticks(work, len(pairs)))


def step_check(steps: int, coarse: Mapping[tuple[str, int], Curves],
               fine: Mapping[tuple[str, int], Curves]) -> StepCheck:
    """Per photo, the mean over its orders of |AUC at 2·steps − AUC at steps|, deletion and insertion
    (the (order, photo) pairs of ``fine``; ``coarse`` holds at least those)."""
    photos = sorted({i for _n, i in fine})
    orders = list(dict.fromkeys(n for n, _i in fine))
    d = {k: np.zeros(len(photos)) for k in CURVES}
    for j, i in enumerate(photos):
        ps = [(n, i) for n in orders if (n, i) in fine]
        for k in CURVES:
            a = auc(torch.stack([getattr(fine[p], k) for p in ps]))
            b = auc(torch.stack([getattr(coarse[p], k) for p in ps]))
            d[k][j] = float((a - b).abs().mean())
    return StepCheck(steps, 2 * steps, orders, photos, d["deletion"], d["insertion"])
