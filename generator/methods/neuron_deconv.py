"""Deconvnet projections of single neurons (Zeiler & Fergus 2014, Figs. 2 and 4).

For a chosen layer, one activation — one channel at one spatial position — is kept,
every other activation of that layer is set to zero, and the result is passed down
through the deconvnet (ReLU of the signal at every rectifier, max-pool switches,
transposed convolutions) to pixel space. Here that is exactly a backward pass from
the layer's output with ``grad_output`` = the one-hot activation, under
:func:`~generator.methods.relu_rules.relu_rule` ("deconvnet").

API (also used by the unit-atlas code for dataset examples):

``top_neurons(net, module, inputs, k, batch_size=32) -> (picks, values)``
    per image, the ``k`` channels of ``module``'s output with the largest maximum
    activation (ties, e.g. ReLU6 units saturated at 6, broken by the larger spatial
    mean), each at the position of that maximum (first one in row-major order). ``picks``: LongTensor[B·k, 4]
    rows ``(image_index, channel, y, x)``, image by image, strongest first;
    ``values``: the activations. For 2-D (fully connected) outputs ``y = x = 0``.
``project_activations(net, module, inputs, picks, rule="deconvnet", scale="activation", batch_size=16)``
    → Tensor[N, 3, H, W]: the projection of each pick (any images, any channels, any
    positions, in one call; internally batched, halved on out-of-memory). With
    ``scale="activation"`` the kept activation keeps its value (as in the paper);
    ``scale="one"`` starts from 1. ``rule="guided"`` gives guided backprop from the
    neuron instead.
``project_top_neurons(net, module, inputs, k, rules, batch_size=32) -> (picks, values, projections)``
    both of the above: the ``k`` strongest units per image and their projections under
    each rule, ``projections``: Tensor[len(rules), B·k, 3, H, W] on the CPU.
``forward_to(net, module, inputs)``
    runs ``net`` only as far as ``module`` and returns its output (the rest of the
    network is skipped).

Show projections with :func:`generator.render.signed_to_rgb` (grey = 0).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .attribution import _prep, run_batched
from .base import capture_outputs
from .relu_rules import relu_rule


def forward_to(net: nn.Module, module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Output of ``module`` (its first call) when ``net`` runs on ``inputs``; the
    network stops there. Graph is kept when grad mode is on."""
    with capture_outputs({"out": module}, detach=False, stop_after="out") as store:
        net(inputs)
    if "out" not in store:
        raise RuntimeError("the module was not called during the forward pass")
    return store.pop("out")


@torch.no_grad()
def top_neurons(net: nn.Module, module: nn.Module, inputs: torch.Tensor, k: int, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    x = _prep(inputs)
    picks = torch.empty(len(x), k, 4, dtype=torch.long, device=x.device)
    values = torch.empty(len(x), k, device=x.device)

    def fn(s: int, e: int) -> None:
        a = forward_to(net, module, x[s:e]).float()
        b = len(a)
        if a.ndim == 2:
            a = a[:, :, None, None]
        C, h, w = a.shape[1:]
        kk = min(k, C)
        flat = a.reshape(b, C, h * w)
        best, where = flat.max(2)  # per channel: max and its position
        # rank by the maximum; ties (e.g. ReLU6 units saturated at 6) by the spatial mean
        order = flat.mean(2).sort(dim=1, descending=True, stable=True).indices
        order = order.gather(1, best.gather(1, order).sort(dim=1, descending=True, stable=True).indices)
        ch = order[:, :kk]
        v = best.gather(1, ch)
        pos = where.gather(1, ch)
        picks[s:e, :kk, 0] = torch.arange(s, e, device=x.device).view(-1, 1)
        picks[s:e, :kk, 1] = ch
        picks[s:e, :kk, 2] = pos // w
        picks[s:e, :kk, 3] = pos % w
        values[s:e, :kk] = v
        if kk < k:
            picks[s:e, kk:] = -1
            values[s:e, kk:] = float("nan")

    run_batched(len(x), batch_size, fn)
    picks, values = picks.reshape(-1, 4), values.reshape(-1)
    keep = picks[:, 0] >= 0
    return picks[keep], values[keep]


def project_activations(
    net: nn.Module,
    module: nn.Module,
    inputs: torch.Tensor,
    picks: torch.Tensor,
    rule: str = "deconvnet",
    scale: str = "activation",
    batch_size: int = 16,
) -> torch.Tensor:
    if scale not in ("activation", "one"):
        raise ValueError("scale must be 'activation' or 'one'")
    x = _prep(inputs)
    picks = torch.as_tensor(picks, dtype=torch.long, device=x.device).reshape(-1, 4)
    out = x.new_zeros(len(picks), *x.shape[1:])

    def fn(s: int, e: int) -> None:
        p = picks[s:e]
        n = len(p)
        with torch.enable_grad(), relu_rule(rule):
            xi = x[p[:, 0]].detach().requires_grad_(True)
            a = forward_to(net, module, xi)
            rows = torch.arange(n, device=x.device)
            seed = torch.zeros_like(a)
            if a.ndim == 2:
                idx = (rows, p[:, 1])
            else:
                idx = (rows, p[:, 1], p[:, 2], p[:, 3])
            seed[idx] = a.detach()[idx] if scale == "activation" else 1.0
            (g,) = torch.autograd.grad(a, xi, seed)
        out[s:e] = g

    run_batched(len(picks), batch_size, fn)
    return out


def project_top_neurons(net: nn.Module, module: nn.Module, inputs: torch.Tensor, k: int, rules: Sequence[str],
                        batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`top_neurons` and, for each rule, :func:`project_activations` of those picks."""
    picks, values = top_neurons(net, module, inputs, k, batch_size=batch_size)
    projections = torch.stack([project_activations(net, module, inputs, picks, rule=r, batch_size=batch_size).cpu()
                               for r in rules])
    return picks, values, projections


__all__ = ["forward_to", "project_activations", "project_top_neurons", "top_neurons"]
