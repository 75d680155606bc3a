"""What the findings' checks share: an attribution method in the form the checks take it, and
progress counted in the results a check computes.

A check is a function of an *explainer* — any callable ``explain(x, targets) -> B×H×W maps``
(as Captum's ``infidelity`` / ``sensitivity_max`` take ``explanation_func``) — and of the photos,
or of the model where the check needs the network itself (the randomisation cascade, the
deletion/insertion curves, the attack, the ablations). Each check has a ``*_task`` beside it: a
module-level function of the model, the settings and CPU tensors that builds the explainer and
runs the check, for :func:`generator.executor.compute` (here or in a Ray worker).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..executor import tick
from ..methods.attribution import make

#: ``explain(x, targets) -> B×H×W`` maps of photos ``x`` (B×3×H×W) for classes ``targets`` (B)
Explain = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def explainer(model, name: str, params: dict, batch_size: int) -> Explain:
    """Attribution method ``name`` with ``params`` on ``model`` (a ``LoadedModel`` or a view of one)."""
    return make(name, model, batch_size=batch_size, **params).explain


def signed_map(attribution: torch.Tensor) -> torch.Tensor:
    """B×C×H×W signed attributions → B×H×W signed maps: the sum over the channels (the per-pixel signed
    contribution; the 2-D "diverging" map of Adebayo et al.'s code). A B×H×W input is returned as is."""
    a = attribution.detach().float()
    return a.sum(1) if a.ndim == 4 else a


def explainer_with_signed(model, name: str, params: dict, batch_size: int) -> Callable:
    """Method ``name`` on ``model`` as ``explain(x, targets)``: its heatmaps, or for a pixel-space method
    (``output == "pixels"``) the pair (heatmaps, :func:`signed_map` of the same attributions) — one
    attribution per photo gives both (the findings' maps step keeps both; the randomisation check
    compares both)."""
    method = make(name, model, batch_size=batch_size, **params)
    if method.output != "pixels":
        return method.explain

    def both(x, targets):
        a = method.attribute(x, targets)
        return method.heatmap(a), signed_map(a)

    return both


class Ticks:
    """A progress object (``update(n)``) for a check that counts ``work`` units (maps, forward
    passes) while its task computes ``keys`` results: ticks the bar of
    :func:`~generator.executor.compute`, which counts results, in proportion."""

    def __init__(self, work: int, keys: int) -> None:
        self.work, self.keys, self.done, self.ticked = max(1, int(work)), int(keys), 0, 0

    def update(self, n: int = 1) -> None:
        self.done += n
        k = min(self.keys, self.done * self.keys // self.work)
        if k > self.ticked:
            tick(k - self.ticked)
            self.ticked = k
