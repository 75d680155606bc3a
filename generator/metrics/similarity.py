"""Similarity between two batches of heatmaps (B×H×W), as used by Adebayo et al. (2018).

All functions take two tensors of the same shape ``B×H×W`` (or ``H×W``) and return
one value per map pair (a float64 tensor of length B).

- :func:`spearman` — Spearman rank correlation, by default of absolute values
  ("rank correlation (ABS)" in the paper). Ties get average ranks. A constant map has
  no ranking; its correlation with anything is defined as **0** (it carries none of
  the other map's ordering) instead of NaN.
- :func:`ssim` — structural similarity of the two maps after each is scaled to
  [0, 1] by :func:`normalise01`; a batched re-implementation of
  ``skimage.metrics.structural_similarity(data_range=1)`` with its defaults
  (7×7 uniform window, sample covariance, K1=0.01, K2=0.03, border of 3 px left
  out) — the tests check it against scikit-image.
- :func:`hog_similarity` — Pearson correlation of the HOG descriptors
  (``skimage.feature.hog``) of the two normalised maps.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

METRICS = ("spearman", "ssim", "hog")


def _batch(a: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(a).detach().to("cpu", torch.float64)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"expected maps of shape B×H×W or H×W, got {tuple(t.shape)}")
    return t


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"map shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")


def pearson_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of matching rows of two B×N matrices; 0 where a row is constant."""
    x = x - x.mean(dim=1, keepdim=True)
    y = y - y.mean(dim=1, keepdim=True)
    sx = x.norm(dim=1)
    sy = y.norm(dim=1)
    denom = sx * sy
    # constant rows (relative to their magnitude) carry no ordering → 0
    ok = denom > 0
    r = torch.zeros(x.shape[0], dtype=torch.float64)
    r[ok] = (x[ok] * y[ok]).sum(dim=1) / denom[ok]
    return r.clamp(-1.0, 1.0)


def rank_rows(x: torch.Tensor) -> torch.Tensor:
    """Average-tie ranks (1..N) of each row of a B×N matrix."""
    from scipy.stats import rankdata

    return torch.from_numpy(rankdata(x.numpy(), method="average", axis=1).astype(np.float64))


def pearson(a, b) -> torch.Tensor:
    a, b = _batch(a), _batch(b)
    _check(a, b)
    return pearson_rows(a.flatten(1), b.flatten(1))


def spearman(a, b, absolute: bool = True, ranks_a: torch.Tensor | None = None) -> torch.Tensor:
    """Spearman rank correlation per map pair (of |a|, |b| when ``absolute``). ``ranks_a``: the ranks of
    ``a`` computed before (:func:`prepare`), when ``a`` is compared with many maps."""
    a, b = _batch(a), _batch(b)
    _check(a, b)
    if absolute:
        a, b = a.abs(), b.abs()
    ra = rank_rows(a.flatten(1)) if ranks_a is None else ranks_a
    return pearson_rows(ra, rank_rows(b.flatten(1)))


def normalise01(a) -> torch.Tensor:
    """Per map min-max scaling to [0, 1]; a constant map becomes all zeros."""
    a = _batch(a)
    flat = a.flatten(1)
    lo = flat.min(dim=1).values[:, None, None]
    hi = flat.max(dim=1).values[:, None, None]
    span = hi - lo
    out = torch.where(span > 0, (a - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(a))
    return out


def ssim(a, b, win_size: int = 7, k1: float = 0.01, k2: float = 0.03, normalise: bool = True) -> torch.Tensor:
    """Mean SSIM per map pair (maps scaled to [0, 1] first unless ``normalise=False``)."""
    a, b = _batch(a), _batch(b)
    _check(a, b)
    if normalise:
        a, b = normalise01(a), normalise01(b)
    if min(a.shape[-2:]) < win_size:
        raise ValueError(f"maps of {tuple(a.shape[-2:])} px are smaller than the {win_size}-px SSIM window")
    x, y = a[:, None], b[:, None]
    pool = lambda t: F.avg_pool2d(t, win_size, stride=1)  # valid windows only = skimage's cropped region
    ux, uy = pool(x), pool(y)
    uxx, uyy, uxy = pool(x * x), pool(y * y), pool(x * y)
    n = win_size * win_size
    cov_norm = n / (n - 1)  # sample covariance, as skimage's default
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = (k1 * 1.0) ** 2, (k2 * 1.0) ** 2  # data range 1
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1)


def hog_features(a, pixels_per_cell: int = 16, cells_per_block: int = 2, orientations: int = 9) -> torch.Tensor:
    """HOG descriptor of each normalised map → B×D."""
    from skimage.feature import hog

    a = normalise01(a)
    # small maps: shrink the cells so at least one block fits
    pixels_per_cell = max(1, min(pixels_per_cell, min(a.shape[-2:]) // cells_per_block))
    feats = [
        hog(m.numpy(), orientations=orientations, pixels_per_cell=(pixels_per_cell, pixels_per_cell),
            cells_per_block=(cells_per_block, cells_per_block), feature_vector=True)
        for m in a
    ]
    return torch.from_numpy(np.stack(feats).astype(np.float64))


def hog_similarity(a, b, hog_a: torch.Tensor | None = None, **hog_kw) -> torch.Tensor:
    """Pearson correlation of the HOG descriptors of each map pair (``hog_a``: ``a``'s, computed before)."""
    a, b = _batch(a), _batch(b)
    _check(a, b)
    return pearson_rows(hog_features(a, **hog_kw) if hog_a is None else hog_a, hog_features(b, **hog_kw))


def prepare(a, absolute: bool = True) -> dict[str, torch.Tensor]:
    """What :func:`compare` computes of its first argument alone (ranks, HOG descriptors), once for a map
    batch compared with many others (the randomisation cascade's trained maps, step after step)."""
    a = _batch(a)
    return {"ranks": rank_rows((a.abs() if absolute else a).flatten(1)), "hog": hog_features(a)}


def compare(a, b, prepared: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """All three similarities for each map pair: {"spearman", "ssim", "hog"} → float64[B] (``prepared``:
    :func:`prepare` of ``a``; the same numbers, computed once)."""
    p = prepared or {}
    return {"spearman": spearman(a, b, ranks_a=p.get("ranks")), "ssim": ssim(a, b),
            "hog": hog_similarity(a, b, hog_a=p.get("hog"))}
