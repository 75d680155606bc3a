"""Comparing one method's maps across models whose inputs differ in size.

Each model sees a photo through its own preprocessing: the shorter side resized to
``resize_size``, then a centred ``input_size`` square cropped. So a model's map covers the
central square of side ``input_size / resize_size`` of the photo's shorter side, at
``input_size`` pixels. Two models' maps line up only after both are cut to the view they
share (the smallest such fraction, centred) and resampled to one size: that is what
:func:`to_common_view` does — no model's size is assumed.

:func:`pair_similarity` then gives, per pair of models, the Spearman rank correlation of
their aligned maps, one value per photo.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from .similarity import spearman


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
