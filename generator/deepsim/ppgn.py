"""PPGN-h sampling (Nguyen et al. 2017, "Plug & Play Generative Networks"), noiseless joint variant.

A Markov chain in code space::

    h ← h + ε1·(R(h) − h) + ε2·∂ log p(y = c | G(h)) / ∂h + N(0, ε3²)

* ``R(h)`` is the reconstruction of ``h`` under the learned prior. The paper trains a
  denoising auto-encoder on ``h``; here ``R(h) = E(G(h))`` — re-encoding the generated
  image with the encoder the generator was trained to invert — which pulls ``h`` towards
  codes that the generator/encoder pair reproduces (codes of images that look like photos
  to E). This is a documented substitution, not the paper's DAE.
* ``p(y = c | ·)`` is the target model's softmax, or — for hidden-unit conditioning — the
  term is replaced by the unit's activation (``∂ a_u(G(h)) / ∂h``), as in the paper's
  "condition on a hidden neuron" experiments.
* Paper defaults for PPGN-h: ε1 = 1e-5, ε2 = 1, ε3 = 1e-17. ``h`` is clipped to
  ``[0, clip_sigma·std]`` as in DGN-AM.
* **Update rule.** ``update="normalized"`` (default) is the authors' released sampler: the whole
  update ``d_h`` is divided by its mean absolute value, so every step moves ``h`` by ``lr``
  (here in units of the mean code std) per dimension on average, whatever the gradient's scale.
  ``update="raw"`` applies the formula literally, times ``lr``.
* **Step-size schedule.** Constant ``lr`` (the authors' scripts), linear decay to ``lr_end``, or
  — the default here — *cyclical*: a cosine from ``lr`` down to ``lr_end`` every ``cycle`` steps
  (cyclical SG-MCMC, Zhang et al. 2020), saving a sample at the end of each cycle. Measured with
  the CPU-trained generator on EfficientNet-Lite0 (see ``data/weights/GENERATOR_CARD.md``): a
  constant step either converges to one image (small ``lr``: samples nearly identical) or keeps
  wandering with class probability mostly < 0.9 (large ``lr``); the large-step phase of each
  cycle moves the chain to a visibly different image and the small-step phase brings the class
  probability back up. ``reset_every`` (the authors' other diversity option: restart from a
  random code every N steps) is available but off.
* Older options, kept for comparison: ``precondition="rms"`` divides the condition gradient by
  its running RMS (RMSProp), ``normalize_grad`` rescales the condition gradient alone, and ``h0``
  starts the chains from given codes (e.g. DGN-AM results) instead of random ones.

Chains are reproducible: the start code and the noise come from a ``torch.Generator``
seeded with ``seed``. Samples are saved every ``save_every`` steps (after ``burn_in``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
import math
from typing import Sequence

import torch
from torch import nn

from ..methods.objectives import Target, UnitObjective
from ..models import WeightsError, load_model
from ..util import progress
from .dgn_am import code_bounds, fit_to_model
from .nets import Encoder


@dataclass
class PPGNSettings:
    steps: int = 720
    eps1: float = 1e-5
    eps2: float = 1.0
    eps3: float = 1e-17
    lr: float = 0.5  # "normalized": mean |step| per dimension in units of the mean code std
    lr_end: float | None = 0.01  # schedule end (None: constant lr, as in the authors' scripts)
    cycle: int = 120  # > 0: cosine lr → lr_end every `cycle` steps (Zhang et al. 2020); 0: linear lr → lr_end over the chain
    update: str = "normalized"  # "normalized": h += lr·std·d_h / mean|d_h| (the authors' code) | "raw": h += lr·d_h
    normalize_grad: bool = False
    precondition: str = "none"  # "none" (the paper's update) | "rms": condition gradient / running RMS (RMSProp, β=0.99), × code std
    reset_every: int = 0  # > 0: restart the chain from a fresh random code every N steps (authors' diversity option)
    clip_sigma: float = 3.0
    init: str = "random"  # "random" (mean + init_scale·std·N(0,1)) | "mean" | "zeros"
    init_scale: float = 0.5
    seed: int = 0
    save_every: int = 120  # with cycle: = cycle, so each sample ends a cycle
    burn_in: int = 120  # first saved sample (skip the random start)
    fit: str = "resize"
    crop_frac: float = 0.9

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PPGNResult:
    samples: torch.Tensor  # B×K×3×S×S images along each chain
    sample_steps: list[int]
    codes: torch.Tensor  # B×K×D
    prob: torch.Tensor  # B×K softmax prob (class targets) / activation (unit targets) of each sample
    trajectory: torch.Tensor  # B×steps condition value at every step
    targets: list[Target]
    settings: dict = field(default_factory=dict)


def step_size(s: PPGNSettings, t: int) -> float:
    """The step size used for step ``t`` (0-based): constant, linear decay, or cyclical cosine."""
    end = s.lr if s.lr_end is None else s.lr_end
    if s.cycle > 0:
        return end + (s.lr - end) * 0.5 * (1 + math.cos(math.pi * (t % s.cycle) / s.cycle))
    return s.lr + (end - s.lr) * t / max(1, s.steps)


def ppgn_sample(G: nn.Module, encoder: nn.Module, net: nn.Module, targets: Sequence[Target], stats: dict,
                settings: PPGNSettings | None = None, input_size: int = 224, progress_bar: bool = False,
                h0: torch.Tensor | None = None) -> PPGNResult:
    """Run one chain per target (batched) and return the saved samples.

    ``encoder`` maps an image in [0, 1] (any size) to a code (``R(h) = encoder(G(h))``);
    pass ``None`` to drop the prior term.
    """
    s = settings or PPGNSettings()
    device = next(net.parameters()).device
    G = G.to(device).eval()
    obj = UnitObjective(net, targets)
    is_class = torch.tensor([t.layer is None for t in targets], device=device)
    lo, hi = (b.to(device) for b in code_bounds(stats, s.clip_sigma))
    mean, std = stats["mean"].float().to(device), stats["std"].float().to(device)
    gen = torch.Generator().manual_seed(s.seed)
    n, d = len(targets), mean.numel()
    if s.init == "random":
        h = mean + s.init_scale * std * torch.randn(n, d, generator=gen).to(device)
    elif s.init == "mean":
        h = mean.expand(n, -1).clone()
    else:
        h = torch.zeros(n, d, device=device)
    if h0 is not None:
        h = h0.to(device).float().clone()
    h = torch.maximum(torch.minimum(h, hi), lo)
    scale = std.mean().item()
    v = torch.zeros_like(h)
    samples, codes, probs, steps, traj = [], [], [], [], []
    it = range(s.steps + 1)
    if progress_bar:
        it = progress(it, desc="PPGN")
    for t in it:
        h = h.detach().requires_grad_(True)
        img = G(h)
        act, logits = obj(fit_to_model(img, input_size, s.fit, s.crop_frac))
        logp = torch.log_softmax(logits.float(), 1)
        cls_idx = torch.where(is_class, obj.index, torch.zeros_like(obj.index))  # unit rows: any valid column
        cond = torch.where(is_class, logp[torch.arange(n, device=device), cls_idx], act)
        shown = torch.where(is_class, cond.exp(), act).detach()
        traj.append(cond.detach())
        if t >= s.burn_in and (t - s.burn_in) % s.save_every == 0:
            samples.append(img.detach().cpu())
            codes.append(h.detach().cpu())
            probs.append(shown.cpu())
            steps.append(t)
        if t == s.steps:
            break
        (g,) = torch.autograd.grad(cond.sum(), h)
        lr_t = step_size(s, t)
        with torch.no_grad():
            if s.precondition == "rms":
                v = 0.99 * v + 0.01 * g * g
                g = g / (v / (1 - 0.99 ** (t + 1))).sqrt().clamp_min(1e-12) * scale
            elif s.precondition != "none":
                raise ValueError(f"unknown precondition {s.precondition!r}")
            if s.normalize_grad:
                g = g / g.abs().mean(dim=1, keepdim=True).clamp_min(1e-12) * scale
            prior = (encoder(img.detach()).float() - h) if (encoder is not None and s.eps1 != 0) else 0.0
            noise = s.eps3 * torch.randn(n, d, generator=gen).to(device)
            drift = s.eps1 * prior + s.eps2 * g
            if s.update == "normalized":  # every step moves h by lr·std per dimension on average
                d_h = drift + noise
                h = h.detach() + lr_t * scale * d_h / d_h.abs().mean(dim=1, keepdim=True).clamp_min(1e-30)
            elif s.update == "raw":
                h = h.detach() + lr_t * drift + noise
            else:
                raise ValueError(f"unknown update {s.update!r}")
            if s.reset_every > 0 and (t + 1) % s.reset_every == 0:
                h = mean + s.init_scale * std * torch.randn(n, d, generator=gen).to(device)
            h = torch.maximum(torch.minimum(h, hi), lo)
    return PPGNResult(samples=torch.stack(samples, 1), sample_steps=steps, codes=torch.stack(codes, 1),
                      prob=torch.stack(probs, 1), trajectory=torch.stack(traj, 1).cpu(), targets=list(targets),
                      settings=s.to_dict())


def prior_encoder(meta: dict, model, models=(), device="cpu") -> tuple[Encoder | None, str | None]:
    """The encoder ``E`` of the prior term ``R(h) = E(G(h))`` — the network whose code the generator
    (metadata ``meta``) inverts — as ``(Encoder, None)``, or ``(None, reason)`` when its weights are not
    available (the chain then runs without the ε1 term, and the page says so). ``model`` and the
    already loaded ``models`` are reused when one of them is that network."""
    e = meta.get("encoder", {})
    name, layer = e.get("encoder", "efficientnet_lite0"), e.get("encoder_layer", "pre_logits")
    enc_model = model if model.name == name else next((m for m in models if m.name == name), None)
    if enc_model is None:
        try:
            enc_model = load_model(name, device=device)
        except WeightsError as err:
            return None, f"the generator's encoder {name} has no weights here ({err}); PPGN ran without the ε1 term"
    return Encoder(enc_model, layer), None


def chain_diversity(features: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine distance between the K samples of each chain (B×K×F → B)."""
    f = torch.nn.functional.normalize(features.flatten(2).float(), dim=2)
    sim = f @ f.transpose(1, 2)
    k = f.shape[1]
    off = ~torch.eye(k, dtype=torch.bool, device=f.device)
    return (1 - sim[:, off]).mean(1)
