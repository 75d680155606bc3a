"""Selectivity is not importance (Morcos, Barrett, Rabinowitz & Botvinick 2018,
"On the importance of single directions for generalization").

For each unit (channel) of a layer:

- **class selectivity** over labelled photos: the unit's response per photo is the
  spatial mean of its positive part; μ_max is the largest class-conditional mean
  response, μ_rest the mean of the other classes' means;
  ``selectivity = (μ_max − μ_rest) / (μ_max + μ_rest)`` (0: responds equally to every
  class, 1: only to one);
- **ablation cost**: the unit's channel set to 0 at the layer's output, the accuracy
  lost (top-1 against the labels) and the mean drop of the true class's probability.

Ablations are batched: the layer's output is computed once per photo batch and
copied once per ablated unit (each copy with one channel zeroed), so only the part
of the network after the layer runs per unit. This needs a layer whose output alone
feeds the rest of the network (a stage boundary; a skip connection around it would
see the wrong batch size), which :func:`ablation_costs` checks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..executor import tick
from ..methods import base
from .bootstrap import Interval


@torch.no_grad()
def responses_and_logits(net: nn.Module, modules: dict[str, nn.Module], x: torch.Tensor,
                         batch_size: int = 32) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(name → N×C spatial means of the positive part of each module's output, N×K logits):
    every module in one pass over ``x``."""
    got: dict[str, list] = {n: [] for n in modules}
    handles = [m.register_forward_hook(lambda _m, _i, o, n=n: got[n].append(
        o.float().clamp(min=0).flatten(2).mean(2).cpu() if o.ndim == 4 else o.float().clamp(min=0).cpu()))
        for n, m in modules.items()]
    logits = []
    try:
        for s in range(0, len(x), batch_size):
            logits.append(net(x[s : s + batch_size]).float().cpu())
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v) for n, v in got.items()}, torch.cat(logits)


def unit_responses(net: nn.Module, modules: dict[str, nn.Module], x: torch.Tensor, batch_size: int = 32) -> dict[str, torch.Tensor]:
    """name → N×C spatial means of the positive part of each module's output."""
    return responses_and_logits(net, modules, x, batch_size)[0]


def selectivity_index(resp: torch.Tensor, labels: Sequence[int]) -> np.ndarray:
    """N×C responses, N labels → C selectivity indices in [0, 1] (0 for a silent unit)."""
    r = np.asarray(resp, dtype=np.float64)
    lab = np.asarray(labels)
    classes = np.unique(lab)
    means = np.stack([r[lab == c].mean(0) for c in classes])  # K×C
    top = means.argmax(0)
    mx = means[top, np.arange(means.shape[1])]
    rest = (means.sum(0) - mx) / max(1, len(classes) - 1)
    den = mx + rest
    return np.where(den > 0, (mx - rest) / np.where(den > 0, den, 1.0), 0.0)


def preferred_class(resp: torch.Tensor, labels: Sequence[int]) -> np.ndarray:
    r = np.asarray(resp, dtype=np.float64)
    lab = np.asarray(labels)
    classes = np.unique(lab)
    return classes[np.stack([r[lab == c].mean(0) for c in classes]).argmax(0)]


@torch.no_grad()
def ablation_costs(net: nn.Module, module: nn.Module, channels: Sequence[int], x: torch.Tensor,
                   labels: torch.Tensor, batch_size: int = 32, base_logits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per unit in ``channels``: ``correct`` (U×N bool) and ``prob`` (U×N true-class
    probability) with that unit zeroed, beside ``base_correct`` / ``base_prob`` (N).
    ``base_logits`` (N×K, ``net``'s logits on ``x``) saves that pass when the caller has them."""
    labels = torch.as_tensor(labels).long()
    chans = list(channels)
    U, N = len(chans), len(x)
    correct = torch.zeros(U, N, dtype=torch.bool)
    prob = torch.zeros(U, N, dtype=torch.float64)
    if base_logits is None:
        base_logits = torch.cat([net(x[s : s + batch_size]).float().cpu() for s in range(0, N, batch_size)])
    base_logits = base_logits.float().cpu()
    base_p = base_logits.softmax(1).gather(1, labels.view(-1, 1))[:, 0].double()
    base_c = base_logits.argmax(1) == labels
    state: dict = {}

    def hook(_m, _i, o):
        u = state["units"]
        b = o.shape[0]
        out = o.repeat(len(u), *([1] * (o.ndim - 1)))
        for j, c in enumerate(u):
            out[j * b : (j + 1) * b, c] = 0
        return out

    b = max(1, min(N, batch_size))
    per = max(1, (4 * batch_size) // b)  # units per pass: the part after the layer runs on per·b copies
    h = module.register_forward_hook(hook)
    try:
        for s in range(0, N, b):
            xb, lb = x[s : s + b], labels[s : s + b]
            nb = len(xb)
            for u0 in range(0, U, per):
                u = chans[u0 : u0 + per]
                state["units"] = u
                logits = net(xb).float().cpu()
                if logits.shape[0] != len(u) * nb:
                    raise ValueError("ablation: the layer's output does not alone feed the network's output "
                                     f"(got {logits.shape[0]} rows for {len(u)}×{nb}); pick a stage boundary")
                logits = logits.view(len(u), nb, -1)
                correct[u0 : u0 + len(u), s : s + nb] = logits.argmax(2) == lb.view(1, -1)
                prob[u0 : u0 + len(u), s : s + nb] = logits.softmax(2).gather(2, lb.view(1, -1, 1).expand(len(u), -1, 1))[..., 0].double()
    finally:
        h.remove()
    return {"correct": correct, "prob": prob, "base_correct": base_c, "base_prob": base_p}


def rank_correlation(a, b) -> float:
    """Spearman rank correlation of two vectors (average ranks; 0 when one is constant)."""
    from scipy.stats import rankdata

    ra, rb = rankdata(np.asarray(a, dtype=np.float64)), rankdata(np.asarray(b, dtype=np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else 0.0


# ------------------------------------------------------------------------ the check on registry models


@dataclass
class LayerUnits:
    """The catalogued units of one layer (or why they could not be ablated: ``error``): their
    channels, selectivity, preferred class, accuracy and probability drop when ablated (tensors)."""

    seconds: float
    error: str = ""
    channels: list[int] = field(default_factory=list)
    selectivity: torch.Tensor | None = None
    preferred: torch.Tensor | None = None
    acc_drop: torch.Tensor | None = None
    prob_drop: torch.Tensor | None = None
    base_acc: float = float("nan")


@dataclass
class UnitLayer:
    """One layer as the page shows it (NumPy arrays) with ``rho``: the rank correlation between
    selectivity and probability drop and its bootstrap interval over the units."""

    channels: list[int]
    selectivity: np.ndarray
    preferred: np.ndarray
    acc_drop: np.ndarray
    prob_drop: np.ndarray
    base_acc: float
    seconds: float
    rho: Interval


@dataclass
class Units:
    """The selectivity-vs-importance check of a model: photos, classes and the layers measured."""

    n: int
    n_classes: int
    layers: dict[str, UnitLayer]


def units_check(model, layers: list[str], chunk: list[str], cap: int, per: int, batch_size: int, x: torch.Tensor,
                labels: torch.Tensor, progress=None) -> list[LayerUnits]:
    """Selectivity and single-unit ablation cost of the catalogued units (the first ``cap`` channels,
    0 = all; of those the first ``per``, 0 = all) of the layers ``chunk`` (of the registry model's conv
    ``layers``) on photos ``x`` with ``labels``: one result per layer. Forward passes only, so the
    batch-norm-folded copy serves the layers folding leaves unchanged; each network's responses and
    logits come from one shared pass."""
    x = x.to(model.device)
    prep = base.prepared(model.net, x[:1])
    safe = [l for l in layers if prep.pairs and prep.safe_path(model.module_path(l))]
    shared: dict = {}
    out = []
    for layer in chunk:
        t0 = time.perf_counter()
        net = prep.net if layer in safe else model.net
        mods = ({l: prep.net.get_submodule(model.module_path(l)) for l in safe} if layer in safe
                else {l: model.module(l) for l in layers if l not in safe})
        if id(net) not in shared:
            shared[id(net)] = responses_and_logits(net, mods, x, batch_size)
        resp, logits = shared[id(net)]
        resp, module = resp[layer], mods[layer]
        C = resp.shape[1]
        chans = list(range(C if cap <= 0 else min(C, cap)))
        if per > 0:
            chans = chans[:per]
        try:
            ab = ablation_costs(net, module, chans, x, labels, batch_size, base_logits=logits)
        except (ValueError, RuntimeError) as e:  # a layer inside a skip connection cannot be ablated this way
            out.append(LayerUnits(time.perf_counter() - t0, error=f"{type(e).__name__}: {e}"))
        else:
            sel = selectivity_index(resp[:, chans], labels.tolist())
            pref = preferred_class(resp[:, chans], labels.tolist())
            acc_drop = ab["base_correct"].float().mean().item() - ab["correct"].float().mean(1).numpy()
            prob_drop = ab["base_prob"].mean().item() - ab["prob"].mean(1).numpy()
            # arrays as tensors: the cache reads back only what torch.load(weights_only=True) allows
            out.append(LayerUnits(time.perf_counter() - t0, "", chans, torch.from_numpy(np.asarray(sel)),
                                  torch.from_numpy(np.asarray(pref)), torch.from_numpy(np.asarray(acc_drop)),
                                  torch.from_numpy(np.asarray(prob_drop)), ab["base_correct"].float().mean().item()))
        if progress is not None:
            progress.update(1)
    return out


class _Tick:
    update = staticmethod(tick)


def units_task(model, layers: list[str], chunk: list[str], cap: int, per: int, batch_size: int, x: torch.Tensor,
               labels: torch.Tensor) -> list[LayerUnits]:
    """:func:`units_check`, a tick per layer."""
    return units_check(model, layers, chunk, cap, per, batch_size, x, labels, progress=_Tick)


def layer_summary(r: LayerUnits, seed: int, resamples: int = 500) -> UnitLayer:
    """A measured layer for the page: its arrays as NumPy and the rank correlation between
    selectivity and probability drop with a seeded bootstrap interval over the units."""
    sel, drop = r.selectivity.numpy(), r.prob_drop.numpy()
    rho = rank_correlation(sel, drop)
    boot = []
    rng = np.random.default_rng(seed)
    m = len(r.channels)
    for _ in range(resamples):
        i = rng.integers(0, m, m)
        boot.append(rank_correlation(np.asarray(sel)[i], np.asarray(drop)[i]))
    lo, hi = np.quantile(boot, [0.025, 0.975]) if m > 2 else (float("nan"), float("nan"))
    return UnitLayer(r.channels, sel, r.preferred.numpy(), r.acc_drop.numpy(), drop, r.base_acc, r.seconds,
                     Interval(rho, float(lo), float(hi), m))


def importance(units: Units, model: str, labels: Sequence[str]) -> dict:
    """(model, layer, channel) → the unit's numbers for its atlas page (``labels``: the class names)."""
    out = {}
    for layer, u in units.layers.items():
        for j, c in enumerate(u.channels):
            out[(model, layer, int(c))] = {
                "selectivity": float(u.selectivity[j]), "acc_drop": float(u.acc_drop[j]),
                "prob_drop": float(u.prob_drop[j]), "preferred": labels[int(u.preferred[j])],
                "n": units.n, "n_classes": units.n_classes, "rho": u.rho.as_dict(),
                "rank": int((np.asarray(u.prob_drop) > u.prob_drop[j]).sum()) + 1, "of": len(u.channels)}
    return out
