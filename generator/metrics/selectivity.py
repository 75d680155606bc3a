"""Selectivity and importance of single units (Morcos, Barrett, Rabinowitz & Botvinick 2018, "On the
importance of single directions for generalization"; Zhou, Sun, Bau & Torralba 2018, "Revisiting the
importance of individual units in CNNs via ablation").

For each measured unit (channel) of a layer — ``ablation_units_per_layer`` of them, chosen at random
with the ``[findings] seed`` (:func:`choose_units`; the same units for every photo):

- **class selectivity** over labelled photos: the unit's response per photo is the
  spatial mean of its positive part; μ_max is the largest class-conditional mean
  response, μ_rest the mean of the other classes' means;
  ``selectivity = (μ_max − μ_rest) / (μ_max + μ_rest)`` (0: responds equally to every
  class, 1: only to one);
- **ablation cost**: the unit's channel set to 0 at the layer's output, the accuracy
  lost (top-1 against the labels) and the mean drop of the true class's probability;
- **per-class ablation cost** (Zhou et al.): the accuracy lost on each class's photos
  (:func:`class_accuracy_drop`), and per unit the largest of them (its most-affected class).

Per layer, the rank correlation of selectivity with each cost and its seeded bootstrap interval
over the units (:func:`correlation_ci`); the sentences and verdicts are
:func:`generator.metrics.verdict_units.summarise_units`'s.

Ablations are batched: the layer's output is computed once per photo batch and
copied once per ablated unit (each copy with one channel zeroed), so only the part
of the network after the layer runs per unit. This needs a layer whose output alone
feeds the rest of the network (a stage boundary; a skip connection around it would
see the wrong batch size), which :func:`ablation_costs` checks.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..executor import tick
from ..methods import base
from . import bootstrap
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


def choose_units(n_channels: int, k: int, seed: int, layer: str = "") -> list[int]:
    """``k`` of a layer's ``n_channels`` channels, drawn at random without replacement (sorted): seeded by
    ``seed`` and the layer's name, so the same seed gives the same units on every build and for every photo,
    and layers with as many channels get different draws. Every channel when ``k`` is 0 or at least
    ``n_channels``."""
    if k <= 0 or k >= n_channels:
        return list(range(n_channels))
    rng = np.random.default_rng([int(seed) % 2**32, zlib.crc32(str(layer).encode("utf-8"))])
    return sorted(int(c) for c in rng.choice(n_channels, size=k, replace=False))


def class_accuracy_drop(correct, base_correct, labels) -> tuple[np.ndarray, np.ndarray]:
    """Per-class ablation cost (Zhou et al. 2018): ``correct`` (U×N, photo right with unit u ablated),
    ``base_correct`` (N, right without ablation), ``labels`` (N) → (U×K accuracy lost on each class's
    photos, the K classes in ascending order). One matrix product over all units and classes."""
    c = np.asarray(correct, dtype=np.float64).reshape(-1, len(labels))
    base = np.asarray(base_correct, dtype=np.float64)
    lab = np.asarray(labels)
    classes = np.unique(lab)
    member = (lab[None, :] == classes[:, None]).astype(np.float64)  # K×N
    count = member.sum(1)
    return (member @ base / count)[None, :] - (c @ member.T) / count[None, :], classes


def _rank_correlation_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Spearman rank correlation of two R×m arrays (average ranks; 0 for a constant row)."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a, axis=1), rankdata(b, axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    den = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1.0), 0.0)


def correlation_ci(a, b, seed: int, resamples: int = bootstrap.RESAMPLES,
                   level: float = bootstrap.LEVEL) -> tuple[Interval, np.ndarray]:
    """Spearman rank correlation of ``a`` and ``b`` (one value per unit) with its percentile bootstrap
    interval over the units (``resamples`` seeded resamples of the units, with replacement), and the
    resampled correlations (for a p-value against a threshold: :func:`.verdict_units.summarise_units`).
    No correlation (NaN, no interval) when either has no spread: every unit cost the same; no interval
    below 3 units."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    m = int(a.size)
    nan = float("nan")
    if m == 0 or np.all(a == a[0]) or np.all(b == b[0]):
        return Interval(nan, nan, nan, m), np.empty(0)
    rho = rank_correlation(a, b)
    if m <= 2:
        return Interval(rho, nan, nan, m), np.empty(0)
    idx = np.random.default_rng(seed).integers(0, m, size=(resamples, m))
    boot = _rank_correlation_rows(a[idx], b[idx])
    q = (1.0 - level) / 2.0
    lo, hi = np.quantile(boot, [q, 1.0 - q])
    return Interval(rho, float(min(lo, rho)), float(max(hi, rho)), m), boot


# ------------------------------------------------------------------------ the check on registry models


@dataclass
class LayerUnits:
    """The measured units of one layer (or why they could not be ablated: ``error``): their
    channels, selectivity, preferred class, accuracy and probability drop when ablated (tensors),
    and per unit and class the accuracy lost on that class's photos (``class_acc_drop``, U×K, the
    classes in ``classes``)."""

    seconds: float
    error: str = ""
    channels: list[int] = field(default_factory=list)
    selectivity: torch.Tensor | None = None
    preferred: torch.Tensor | None = None
    acc_drop: torch.Tensor | None = None
    prob_drop: torch.Tensor | None = None
    base_acc: float = float("nan")
    class_acc_drop: torch.Tensor | None = None
    classes: torch.Tensor | None = None


@dataclass
class UnitLayer:
    """One layer as the page shows it (NumPy arrays): per unit its selectivity, preferred class, the
    overall accuracy and probability drop, and the largest per-class accuracy drop (``class_drop``,
    on the class ``worst_class``); per layer the rank correlations of selectivity with the probability
    drop (``rho``), the overall accuracy drop (``rho_acc``) and the largest per-class accuracy drop
    (``rho_class``), each with its bootstrap interval over the units (their resampled values in
    ``boot``), and the mean overall and largest per-class accuracy drop over the units (``acc_mean``,
    ``class_mean``, BCa intervals)."""

    channels: list[int]
    selectivity: np.ndarray
    preferred: np.ndarray
    acc_drop: np.ndarray
    prob_drop: np.ndarray
    base_acc: float
    seconds: float
    rho: Interval
    class_drop: np.ndarray | None = None
    worst_class: np.ndarray | None = None
    rho_acc: Interval | None = None
    rho_class: Interval | None = None
    acc_mean: Interval | None = None
    class_mean: Interval | None = None
    boot: dict = field(default_factory=dict)


@dataclass
class Units:
    """The selectivity-vs-importance check of a model: photos, classes, the layers measured, the units
    asked for per layer (``per``, 0 = all; a layer with fewer channels gives all of them) and the seed
    that drew them."""

    n: int
    n_classes: int
    layers: dict[str, UnitLayer]
    per: int = 0
    seed: int = 0


def units_check(model, layers: list[str], chunk: list[str], per: int, seed: int, batch_size: int, x: torch.Tensor,
                labels: torch.Tensor, progress=None) -> list[LayerUnits]:
    """Selectivity, single-unit ablation cost and per-class ablation cost of ``per`` units of each layer
    of ``chunk`` (of the registry model's conv ``layers``), drawn at random with ``seed``
    (:func:`choose_units`; 0 = every channel), on photos ``x`` with ``labels``: one result per layer.
    Forward passes only, so the batch-norm-folded copy serves the layers folding leaves unchanged; each
    network's responses and logits come from one shared pass, and the ablations run batched
    (:func:`ablation_costs`)."""
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
        chans = choose_units(resp.shape[1], per, seed, layer)
        try:
            ab = ablation_costs(net, module, chans, x, labels, batch_size, base_logits=logits)
        except (ValueError, RuntimeError) as e:  # a layer inside a skip connection cannot be ablated this way
            out.append(LayerUnits(time.perf_counter() - t0, error=f"{type(e).__name__}: {e}"))
        else:
            sel = selectivity_index(resp[:, chans], labels.tolist())
            pref = preferred_class(resp[:, chans], labels.tolist())
            acc_drop = ab["base_correct"].float().mean().item() - ab["correct"].float().mean(1).numpy()
            prob_drop = ab["base_prob"].mean().item() - ab["prob"].mean(1).numpy()
            per_class, classes = class_accuracy_drop(ab["correct"], ab["base_correct"], labels.tolist())
            # arrays as tensors: the cache reads back only what torch.load(weights_only=True) allows
            out.append(LayerUnits(time.perf_counter() - t0, "", chans, torch.from_numpy(np.asarray(sel)),
                                  torch.from_numpy(np.asarray(pref)), torch.from_numpy(np.asarray(acc_drop)),
                                  torch.from_numpy(np.asarray(prob_drop)), ab["base_correct"].float().mean().item(),
                                  torch.from_numpy(per_class), torch.from_numpy(np.asarray(classes))))
        if progress is not None:
            progress.update(1)
    return out


class _Tick:
    update = staticmethod(tick)


def units_task(model, layers: list[str], chunk: list[str], per: int, seed: int, batch_size: int, x: torch.Tensor,
               labels: torch.Tensor) -> list[LayerUnits]:
    """:func:`units_check`, a tick per layer."""
    return units_check(model, layers, chunk, per, seed, batch_size, x, labels, progress=_Tick)


def layer_summary(r: LayerUnits, seed: int, resamples: int = bootstrap.RESAMPLES) -> UnitLayer:
    """A measured layer for the page: its arrays as NumPy; per unit the largest per-class accuracy drop
    and its class; the rank correlations of selectivity with the probability drop, the overall accuracy
    drop and the largest per-class accuracy drop, each with a seeded bootstrap interval over the units
    (:func:`correlation_ci`); the mean overall and largest per-class drops with their BCa intervals."""
    sel, drop, acc = r.selectivity.numpy(), r.prob_drop.numpy(), r.acc_drop.numpy()
    rho, b_prob = correlation_ci(sel, drop, seed, resamples)
    if r.class_acc_drop is not None and r.class_acc_drop.numel():
        per_class = r.class_acc_drop.numpy().reshape(len(r.channels), -1)
        worst = per_class.argmax(1)
        class_drop, worst_class = per_class[np.arange(len(worst)), worst], r.classes.numpy()[worst]
        rho_class, b_class = correlation_ci(sel, class_drop, seed, resamples)
        class_mean = bootstrap.mean_ci(class_drop, seed=seed)
    else:  # a result cached before the per-class cost was measured
        class_drop = worst_class = None
        rho_class, b_class, class_mean = None, np.empty(0), None
    rho_acc, b_acc = correlation_ci(sel, acc, seed, resamples)
    return UnitLayer(r.channels, sel, r.preferred.numpy(), acc, drop, r.base_acc, r.seconds, rho,
                     class_drop, worst_class, rho_acc, rho_class, bootstrap.mean_ci(acc, seed=seed), class_mean,
                     {"prob": b_prob, "acc": b_acc, "class": b_class})


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
            if u.class_drop is not None:  # Zhou et al.: the accuracy lost on its most-affected class
                out[(model, layer, int(c))] |= {"class_drop": float(u.class_drop[j]),
                                                "worst_class": labels[int(u.worst_class[j])]}
    return out
