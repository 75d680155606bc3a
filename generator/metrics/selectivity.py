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

from typing import Sequence

import numpy as np
import torch
from torch import nn


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
