"""Class sensitivity: does a map change with the class it explains?

A map meant to explain a class decision should differ when it is asked about another class.
Per photo the map for the model's top-1 class is compared (:func:`.similarity.compare`) with
the map for a class the model ranks low (``low_rank``, of 1000). The maps of both classes are
also the trained model's maps that the other checks start from (:func:`class_maps`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..executor import tick
from .checks import Explain, explainer
from .similarity import compare


@dataclass
class ClassMaps:
    """The maps of one photo for its K classes (K×H×W: top-1, then the low-ranked class)."""

    maps: torch.Tensor
    seconds: float


@dataclass
class ClassSensitivity:
    """Per photo: the similarity of the top-1 map to the low-ranked class's map (float64 arrays)."""

    spearman: np.ndarray
    ssim: np.ndarray
    hog: np.ndarray


def logits_task(model, batch_size: int, x: torch.Tensor) -> list[torch.Tensor]:
    """Logits (float32, CPU) of photos ``x`` in batches of ``batch_size``: the classes to explain."""
    x = x.to(model.device)
    with torch.inference_mode():
        logits = torch.cat([model.net(x[i : i + batch_size]).float().cpu() for i in range(0, len(x), batch_size)])
    tick(len(x))
    return [row.clone() for row in logits]


def targets_of(logits: torch.Tensor, low_rank: int) -> torch.Tensor:
    """N×2 classes per photo: its top-1 and the class it ranks ``low_rank`` (1-based)."""
    ranked = logits.argsort(dim=1, descending=True)
    return torch.stack([ranked[:, 0], ranked[:, low_rank - 1]], 1)


def class_maps(explain: Explain, x: torch.Tensor, targets: torch.Tensor) -> list[ClassMaps]:
    """The maps of photos ``x`` for their N×K ``targets``: one call of ``explain`` on all of them."""
    t0 = time.perf_counter()
    n, k = len(x), targets.shape[1]
    tt = targets.T.reshape(-1).to(x.device)  # all top-1, then all low-ranked
    maps = explain(x.repeat(k, 1, 1, 1), tt)
    maps = maps.float().cpu().view(k, n, *x.shape[-2:]).transpose(0, 1)
    dt = (time.perf_counter() - t0) / n
    return [ClassMaps(maps[j].clone(), dt) for j in range(n)]


def maps_task(model, name: str, params: dict, batch_size: int, x: torch.Tensor, targets: torch.Tensor) -> list[ClassMaps]:
    """:func:`class_maps` of attribution method ``name`` (settings ``params``) on ``model``."""
    x = x.to(model.device)
    out = class_maps(explainer(model, name, params, batch_size), x, targets)
    tick(len(x))
    return out


def class_sensitivity(maps: torch.Tensor) -> ClassSensitivity:
    """N×K×H×W maps (top-1 first, the low-ranked class second) → their similarity per photo."""
    return ClassSensitivity(**{k: v.numpy() for k, v in compare(maps[:, 0], maps[:, 1]).items()})
