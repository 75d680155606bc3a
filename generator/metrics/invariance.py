"""Input invariance (Kindermans et al. 2017, "The (Un)reliability of saliency methods").

Take a model ``f`` and a constant shift ``s`` of the input. The copy
``f_s(x) = f(x − s)`` — the shift absorbed by the network's first operation (for the
registry's classifiers: its normalisation, whose mean grows by ``s``) — computes
*identical* logits on the shifted photo ``x + s`` as ``f`` on ``x``: the two models
are the same function of the content. A method that explains the function should
give the same map for ``(f, x)`` and ``(f_s, x + s)``. The gradient does (its value
is identical); gradient × input does not (the input changed), nor does Integrated
Gradients with a fixed black baseline. Moving the baseline along with the input
(baseline ``b + s`` on ``(f_s, x + s)``: the same path through the same function) is
Kindermans et al.'s remedy: a method class that offers it (``moved_with_input``) gets it
measured on the same photos as a second row (:func:`remedy_params`, ``Invariance.remedy``).
Integrated Gradients' own numbers on the copy — the points each photo used and its final
completeness error — are kept per photo (``InvarianceMap.steps`` / ``.error``).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..executor import tick
from ..methods.attribution import ATTRIBUTION_METHODS, make
from .checks import Explain


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
    shift-absorbing copy's map of the shifted photo; for a method with an adaptive step count
    (Integrated Gradients: ``last_completeness``) the points it used there and its final relative
    completeness error (else NaN)."""

    spearman: float
    relative_change: float
    seconds: float
    steps: float = float("nan")
    error: float = float("nan")


@dataclasses.dataclass
class Invariance:
    """One method over its photos (float64 arrays; ``steps`` / ``error`` all NaN for a method without an
    adaptive step count). ``remedy``: the same check of the method with its reference point moved along
    with the input (settings ``remedy_params``), where the method offers one; else None."""

    spearman: np.ndarray
    relative_change: np.ndarray
    steps: np.ndarray | None = None
    error: np.ndarray | None = None
    remedy: "Invariance | None" = None
    remedy_params: dict | None = None

    @classmethod
    def of(cls, maps: Sequence[InvarianceMap]) -> "Invariance":
        return cls(np.array([r.spearman for r in maps]), np.array([r.relative_change for r in maps]),
                   np.array([r.steps for r in maps], dtype=np.float64), np.array([r.error for r in maps], dtype=np.float64))


def remedy_params(name: str, params: dict, shift: Sequence[float]) -> dict | None:
    """The settings of method ``name`` with its reference point moved by ``shift`` along with the input
    (the class's ``moved_with_input``: Integrated Gradients' baseline), or None for a method without one."""
    move = getattr(ATTRIBUTION_METHODS[name], "moved_with_input", None)
    return None if move is None else move(params, [float(v) for v in shift])


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
    """:func:`invariance_check` of attribution method ``name`` on ``view`` (the shift-absorbing copy), with the
    points and final completeness error of each photo where the method adapts its steps."""
    x = x.to(view.device)
    method = make(name, view, batch_size=batch_size, **params)
    out = invariance_check(method.explain, x, top1, reference, shift)
    done = getattr(method, "last_completeness", None)
    if done is not None:
        for j, r in enumerate(out):
            r.steps, r.error = float(done["steps"][j]), float(done["rel_error"][j])
    tick(len(x))
    return out
