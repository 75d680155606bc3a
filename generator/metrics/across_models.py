"""Comparing one method's maps across models whose inputs differ in size.

Each model sees a photo through its own preprocessing: the shorter side resized to
``resize_size``, then a centred ``input_size`` square cropped. So a model's map covers the
central square of side ``input_size / resize_size`` of the photo's shorter side, at
``input_size`` pixels. Two models' maps line up only after both are cut to the view they
share (the smallest such fraction, centred) and resampled to one size: that is what
:func:`to_common_view` does — no model's size is assumed.

:func:`pair_similarity` then gives, per pair of models, the Spearman rank correlation of
their aligned maps, one value per photo; :func:`per_photo_agreement` the mean over the pairs per
photo, and :func:`agreement` per method its mean over photos with a 95 % bootstrap interval and n,
and the most / least consistent method only where a *paired* interval (per-photo difference, same
photos) separates it from every other, at n ≥ ``[findings] min_n`` (the wording:
:func:`.verdicts.consistency`).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import bootstrap
from .similarity import spearman
from .verdicts import Extreme, extreme


@dataclass(frozen=True)
class View:
    """The part of a photo a model sees: ``fraction`` of the shorter side (centred), at ``size`` px."""

    fraction: float
    size: int


def model_view(input_size: int, resize_size: int) -> View:
    return View(min(1.0, input_size / resize_size), int(input_size))


def common_view(views: Sequence[View]) -> View:
    """The centred view every model sees, at the smallest model's resolution."""
    if not views:
        raise ValueError("no views to compare")
    fraction = min(v.fraction for v in views)
    return View(fraction, min(v.size for v in views))


def to_common_view(maps: torch.Tensor, own: View, common: View) -> torch.Tensor:
    """``N×H×W`` (or ``N×C×H×W``) maps in ``own`` view → the ``common`` view at its size (area-averaged)."""
    squeeze = maps.ndim == 3
    x = maps[:, None] if squeeze else maps
    h, w = x.shape[-2:]
    keep = common.fraction / own.fraction
    ch, cw = max(1, round(h * keep)), max(1, round(w * keep))
    top, left = (h - ch) // 2, (w - cw) // 2
    x = x[..., top:top + ch, left:left + cw].float()
    x = F.interpolate(x, size=(common.size, common.size), mode="area") if (ch, cw) != (common.size,) * 2 else x
    return x[:, 0] if squeeze else x


def pair_similarity(aligned: Mapping[str, torch.Tensor]) -> dict[tuple[str, str], torch.Tensor]:
    """Spearman rank correlation of |map| for every pair of models, one value per photo.

    ``aligned``: model → ``N×S×S`` maps already in one common view (same photos, same order)."""
    return {(a, b): spearman(aligned[a], aligned[b]) for a, b in combinations(aligned, 2)}


def per_photo_agreement(pairs: Mapping[tuple[str, str], object]) -> np.ndarray:
    """Per photo, the mean over the model pairs of their Spearman (:func:`pair_similarity`): one method's
    agreement between models on that photo. NaN where a pair's correlation is undefined (a flat map)."""
    if not pairs:
        return np.zeros(0)
    return np.stack([np.asarray(r, dtype=np.float64).ravel() for r in pairs.values()]).mean(0)


@dataclass
class Agreement:
    """How much the models agree, per method, and which method (if any) agrees most and least.

    ``rows``: per method ``name``, ``title``, ``mean`` and ``interval`` (the mean over photos of
    :func:`per_photo_agreement`, 95 % BCa interval and n; :func:`.bootstrap.mean_ci`); ``n``: photos;
    ``min_n``: the fewest photos a ranking is given on (``[findings] min_n``). ``best`` / ``worst``
    (:class:`.verdicts.Extreme`): the top / bottom method by mean with the paired interval of its
    per-photo difference to every other method (same photos) — None below ``min_n`` photos or with
    fewer than two methods (``worst``: three), so that no "most consistent" can be read off the means."""

    n: int
    min_n: int
    rows: list[dict]
    best: Extreme | None = None
    worst: Extreme | None = None

    @property
    def ranked(self) -> bool:
        return self.best is not None


def agreement(per_photo: Mapping[str, object], titles: Mapping[str, str], min_n: int = bootstrap.MIN_N,
              seed: int = 0) -> Agreement:
    """:class:`Agreement` from each method's per-photo agreement (same photos, same order, for every
    method; NaNs are dropped from intervals, and from paired differences photo by photo)."""
    values = {m: np.asarray(v, dtype=np.float64).ravel() for m, v in per_photo.items()}
    rows = []
    for m, v in values.items():
        iv = bootstrap.mean_ci(v, seed=seed)
        rows.append({"name": m, "title": titles.get(m, m), "mean": iv.mean, "interval": iv})
    n = max((v.size for v in values.values()), default=0)
    measured = [r for r in rows if r["interval"].n]
    ranked = n >= min_n and len(measured) >= 2
    best = extreme("best", measured, values, seed, min_n, key="mean") if ranked else None
    worst = extreme("worst", measured, values, seed, min_n, key="mean") if ranked and len(measured) >= 3 else None
    return Agreement(n, int(min_n), rows, best, worst)
