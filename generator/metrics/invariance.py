"""Input invariance (Kindermans et al. 2017, "The (Un)reliability of saliency methods").

Take a model ``f`` and a constant shift ``s`` of the input. The copy
``f_s(x) = f(x − s)`` — the shift absorbed by the network's first operation (for the
registry's classifiers: its normalisation, whose mean grows by ``s``) — computes
*identical* logits on the shifted photo ``x + s`` as ``f`` on ``x``: the two models
are the same function of the content. A method that explains the function should
give the same map for ``(f, x)`` and ``(f_s, x + s)``. The gradient does (its value
is identical); gradient × input does not (the input changed), nor does Integrated
Gradients with a fixed black baseline.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..executor import tick
from .checks import Explain, explainer


class ShiftAbsorbed(nn.Module):
    """``net`` behind a first operation that subtracts ``shift`` (scalar or 3-vector)."""

    def __init__(self, net: nn.Module, shift) -> None:
        super().__init__()
        self.inner = net  # not ".net": method factories unwrap an object's .net
        if isinstance(getattr(net, "body", None), nn.Module):
            self.body = net.body  # catalogued layer paths ("body.…") keep working on the copy
        s = torch.as_tensor(shift, dtype=torch.float32).flatten()
        self.register_buffer("shift", s.view(1, -1, 1, 1) if s.numel() > 1 else s.view(1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x - self.shift.to(x.dtype))


def shifted_model(loaded, shift):
    """A registry ``LoadedModel`` view whose net absorbs ``shift`` (for method factories).

    Module paths keep working for layer-based methods (Grad-CAM) because the original
    net sits under ``.net``; the view's ``module(name)`` still returns the same modules.
    """
    net = ShiftAbsorbed(loaded.net, shift).eval()
    return dataclasses.replace(loaded, net=net, weights_id=f"{loaded.weights_id}+shift[{shift}]")


def map_change(ref: torch.Tensor, shifted: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per map: Spearman rank correlation of |map| and relative L2 change ‖M' − M‖ / ‖M‖."""
    from .similarity import spearman

    a, b = ref.detach().float().cpu().flatten(1), shifted.detach().float().cpu().flatten(1)
    rel = (b - a).norm(dim=1) / a.norm(dim=1).clamp(min=1e-30)
    same = (a == b).all(1)
    rho = spearman(ref.detach().float().cpu(), shifted.detach().float().cpu())
    rho = torch.where(same, torch.ones_like(rho), rho)  # identical maps (also constant ones) are the same map
    return {"spearman": rho, "relative_change": rel}


@dataclasses.dataclass
class InvarianceMap:
    """One photo: Spearman rank correlation and relative change between the trained map and the
    shift-absorbing copy's map of the shifted photo."""

    spearman: float
    relative_change: float
    seconds: float


@dataclasses.dataclass
class Invariance:
    """One method over its photos (float64 arrays)."""

    spearman: np.ndarray
    relative_change: np.ndarray

    @classmethod
    def of(cls, maps: Sequence[InvarianceMap]) -> "Invariance":
        return cls(np.array([r.spearman for r in maps]), np.array([r.relative_change for r in maps]))


def invariance_check(explain: Explain, x: torch.Tensor, top1: torch.Tensor, reference: torch.Tensor,
                     shift: Sequence[float]) -> list[InvarianceMap]:
    """``explain`` (a method on the model's shift-absorbing copy, :func:`shifted_model`) on photos
    ``x + shift`` for classes ``top1``, against ``reference`` (the trained model's maps of ``x``)."""
    t0 = time.perf_counter()
    xs = x + torch.tensor(shift, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    got = explain(xs, top1.to(x.device)).float().cpu()
    ch = map_change(reference.cpu(), got)
    dt = (time.perf_counter() - t0) / len(x)
    return [InvarianceMap(float(ch["spearman"][j]), float(ch["relative_change"][j]), dt) for j in range(len(x))]


def invariance_task(view, name: str, params: dict, batch_size: int, shift: list[float], x: torch.Tensor,
                    top1: torch.Tensor, reference: torch.Tensor) -> list[InvarianceMap]:
    """:func:`invariance_check` of attribution method ``name`` on ``view`` (the shift-absorbing copy)."""
    x = x.to(view.device)
    out = invariance_check(explainer(view, name, params, batch_size), x, top1, reference, shift)
    tick(len(x))
    return out
