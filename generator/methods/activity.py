"""Activity: what a layer (and each of its neurons) outputs for an image.

One forward pass per batch records every chosen layer (forward hooks, removed in
``finally``) together with the logits. :func:`summarise` keeps what the galleries
need per image and layer: the most active channels' maps, the mean map over all
channels, and the chosen neurons' maps.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from .base import Method, capture_outputs


class Activity(Method):
    name = "activity"
    title = "Activity"
    paper = "Zeiler & Fergus (2014); Yosinski et al. (2015), Understanding Neural Networks Through Deep Visualization"

    def __init__(self, model: nn.Module, layers: Mapping[str, nn.Module]) -> None:
        super().__init__(model, layers=list(layers))
        self.layers = dict(layers)

    @torch.no_grad()
    def record(self, inputs: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """(layer name → B×C×H×W or B×C activations, logits B×K) in one forward pass."""
        with capture_outputs(self.layers) as acts:
            logits = self.model(inputs)
        missing = [n for n in self.layers if n not in acts]
        if missing:
            raise RuntimeError(f"layers {missing} were not called in the forward pass")
        return dict(acts), logits

    def attribute(self, inputs: torch.Tensor, target: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The common interface: activations per layer (``target`` is not used)."""
        return self.record(inputs)[0]


def summarise(acts: torch.Tensor, top_channels: int, neurons: int, fixed: list[int] | None = None) -> list[dict]:
    """Per image: top channels by spatial mean, their maps, the mean map, chosen neurons.

    ``acts`` is B×C×H×W (conv) or B×C (fc; treated as C×1×1 maps). Neurons are the
    ``neurons`` channels with the highest maximum activation, or ``fixed`` channels.
    Maps are stored as float16 to keep the cache small.
    """
    if acts.ndim == 2:
        acts = acts[:, :, None, None]
    acts = acts.float()
    B, C = acts.shape[:2]
    k = min(top_channels, C)
    score = acts.mean(dim=(2, 3))  # B×C
    top = score.topk(k, dim=1).indices  # B×k
    peak = acts.amax(dim=(2, 3))  # B×C
    if fixed:
        nsel = torch.tensor([c for c in fixed if 0 <= c < C], dtype=torch.long).expand(B, -1)
    else:
        nsel = peak.topk(min(neurons, C), dim=1).indices
    bidx = torch.arange(B)[:, None]
    maps = acts[bidx, top]  # B×k×H×W
    nmaps = acts[bidx, nsel]
    mean_map = acts.mean(dim=1)
    return [
        {
            "channels": top[b].clone(),
            "channel_mean": score[b, top[b]].clone(),
            "maps": maps[b].half().clone(),
            "mean_map": mean_map[b].half().clone(),
            "neurons": nsel[b].clone(),
            "neuron_peak": peak[b, nsel[b]].clone(),
            "neuron_maps": nmaps[b].half().clone(),
        }
        for b in range(B)
    ]
