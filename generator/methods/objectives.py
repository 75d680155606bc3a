"""Objectives for activation maximisation: what a picture should excite.

One module for every method that optimises an input — through a generator (DGN-AM and PPGN in
:mod:`generator.deepsim`) or directly in pixel space (:mod:`generator.methods.pixel_am`):

* :class:`Target` — one unit to maximise: a class logit (``layer=None``, the pre-softmax score as
  in Simonyan et al. 2014 and Nguyen et al. 2016), a hidden *unit* (one channel of a layer read at
  its spatial centre, Nguyen et al. 2016) or a whole *channel* (its spatial mean, Lucent's
  ``channel`` objective; ``where="mean"``).
* :class:`UnitObjective` — evaluates, in one forward pass, row ``i``'s target on row ``i`` of a
  batch, so many classes / units of many layers are optimised together.
* :func:`spread_classes` and :func:`pick_units` — the targets the site and the evaluation script
  choose by default.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .base import capture_outputs, output_shapes

#: where a hidden target reads its channel: at the spatial centre (a unit) or averaged (a channel)
WHERE = ("centre", "mean")


@dataclass(frozen=True)
class Target:
    """One unit to maximise: ``layer=None`` → class logit ``index``; else channel ``index`` of the
    module at ``layer`` (a path inside the classifier, e.g. "body.blocks.3"), read at the spatial
    centre (``where="centre"``) or averaged over positions (``where="mean"``)."""

    index: int
    layer: str | None = None
    label: str = ""
    where: str = "centre"

    def __post_init__(self) -> None:
        if self.where not in WHERE:
            raise ValueError(f"where must be one of {WHERE}, got {self.where!r}")

    @property
    def key(self) -> str:
        if self.layer is None:
            return f"logit:{self.index}"
        return f"{self.layer}:{self.index}" if self.where == "centre" else f"{self.layer}:{self.index}:{self.where}"


def _read(o: torch.Tensor, where: str) -> torch.Tensor:
    """B×C×h×w (or B×C) layer output → B×C: the centre position, or the spatial mean."""
    if o.dim() != 4:
        return o.flatten(1)
    if where == "mean":
        return o.mean(dim=(2, 3))
    return o[:, :, o.shape[2] // 2, o.shape[3] // 2]


class UnitObjective:
    """Evaluates, in one forward pass of ``net``, the activation of row i's target for every row.

    Hidden layers are recorded with :func:`generator.methods.base.capture_outputs` (not detached:
    gradients flow to the input); hooks are removed in ``finally``.
    """

    def __init__(self, net: nn.Module, targets: Sequence[Target]) -> None:
        self.net = net
        self.targets = list(targets)
        self.layers = sorted({t.layer for t in self.targets if t.layer is not None})
        dev = next(net.parameters()).device
        self.index = torch.tensor([t.index for t in self.targets], device=dev)
        self.rows = {l: torch.tensor([i for i, t in enumerate(self.targets) if t.layer == l], device=dev)
                     for l in self.layers}
        self.mean_rows = {l: torch.tensor([t.where == "mean" for t in self.targets if t.layer == l], device=dev)
                          for l in self.layers}
        self.logit_rows = torch.tensor([i for i, t in enumerate(self.targets) if t.layer is None], device=dev)

    def _forward(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        with capture_outputs({l: self.net.get_submodule(l) for l in self.layers}, detach=False) as out:
            logits = self.net(x)
        return out, logits

    def all_units(self, x: torch.Tensor) -> torch.Tensor:
        """Activation of every target unit on every image: N×U (for percentiles over a data set)."""
        out, logits = self._forward(x)
        cols = []
        for t in self.targets:
            src = logits if t.layer is None else _read(out[t.layer], t.where)
            cols.append(src[:, t.index])
        return torch.stack(cols, 1)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (activation per row, logits)."""
        out, logits = self._forward(x)
        act = logits.new_zeros(x.shape[0])
        if len(self.logit_rows):
            r = self.logit_rows
            act = act.index_put((r,), logits[r, self.index[r]])
        for l in self.layers:
            r = self.rows[l]
            o = out[l][r]
            rows = torch.arange(len(r), device=o.device)
            if o.dim() == 4:
                v = o[rows, self.index[r], o.shape[2] // 2, o.shape[3] // 2]
                if self.mean_rows[l].any():
                    v = torch.where(self.mean_rows[l], o.mean(dim=(2, 3))[rows, self.index[r]], v)
            else:
                v = o.flatten(1)[rows, self.index[r]]
            act = act.index_put((r,), v)
        return act, logits


def spread_classes(n: int) -> list[int]:
    """n classes evenly spread over ImageNet's 1000 (offset to the middle of each block)."""
    return [int(1000 * (i + 0.5) / n) for i in range(n)]


def pick_units(loaded, layers: list[str], per_layer: int, seed: int) -> list[Target]:
    """``per_layer`` channels of each catalogued layer of a registry model, drawn at random
    (seeded), as hidden-unit targets labelled ``"<layer>:<channel>"``."""
    shapes = output_shapes(loaded.net, {l: loaded.module(l) for l in layers}, loaded.spec.input_size)
    out = []
    g = torch.Generator().manual_seed(seed)
    for l in layers:
        for ch in torch.randperm(shapes[l][0], generator=g)[:per_layer].tolist():
            out.append(Target(ch, layer=loaded.module_path(l), label=f"{l}:{ch}"))
    return out
