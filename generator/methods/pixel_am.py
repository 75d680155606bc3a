"""Pixel-space activation maximisation (no generator): the baselines for DGN-AM.

* ``plain`` — Simonyan, Vedaldi & Zisserman (2014): gradient ascent on the pixels of an
  image to maximise ``S_c(x) − λ‖x − 0.5‖²`` (class score, unnormalised logit), step with the
  gradient normalised to unit mean magnitude, pixels kept in [0, 1].
* ``regularized`` — Yosinski et al. (2015)-style: the same ascent plus random jitter (roll
  by up to ``jitter`` px) every step, L2 decay towards grey and a Gaussian blur every
  ``blur_every`` steps.
* ``fourier`` — Olah, Mordvintsev & Schubert (2017): the image is parametrised by a
  decorrelated Fourier spectrum (scaled by 1/frequency) through a sigmoid, optimised with
  Adam under random jitter and scaling (transformation robustness).

Targets are :class:`generator.methods.objectives.Target` (class logit, hidden unit at the
spatial centre, or channel), one per batch row, the same as DGN-AM; ``steps`` is the shared budget.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .objectives import Target, UnitObjective


@dataclass
class PixelAMSettings:
    method: str = "plain"  # "plain" | "regularized" | "fourier"
    steps: int = 200
    lr: float = 0.02  # plain/regularized: pixel step (normalised gradient); fourier: Adam lr ×2.5
    l2: float = 1e-4  # plain: λ; regularized: decay towards grey per step
    jitter: int = 8
    blur_every: int = 4
    blur_sigma: float = 0.5
    scale_jitter: float = 0.1  # fourier: random rescale ±
    seed: int = 0
    size: int = 224

    def to_dict(self) -> dict:
        return asdict(self)


def _gauss_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, int(round(2 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t**2 / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


class FourierImage(nn.Module):
    """Decorrelated Fourier parametrisation: spectrum / frequency → irfft → sigmoid → [0, 1]."""

    def __init__(self, n: int, size: int, gen: torch.Generator, device, std: float = 0.01) -> None:
        super().__init__()
        fy = torch.fft.fftfreq(size)[:, None]
        fx = torch.fft.rfftfreq(size)[None, :]
        freq = torch.sqrt(fx**2 + fy**2)
        self.register_buffer("scale", (1.0 / torch.maximum(freq, torch.tensor(1.0 / size))).to(device))
        self.spec = nn.Parameter((std * torch.randn(n, 3, size, size // 2 + 1, 2, generator=gen)).to(device))
        self.size = size

    def forward(self) -> torch.Tensor:
        s = torch.view_as_complex(self.spec) * self.scale
        img = torch.fft.irfft2(s, s=(self.size, self.size), norm="ortho")
        return torch.sigmoid(img * 4.0)  # ×4: a unit-ish pre-activation scale for the sigmoid


def pixel_am(net: nn.Module, targets: Sequence[Target], settings: PixelAMSettings | None = None) -> dict:
    """Returns ``{"images": B×3×S×S, "trajectory": B×T, "final": B, "settings": dict}``."""
    s = settings or PixelAMSettings()
    device = next(net.parameters()).device
    obj = UnitObjective(net, targets)
    gen = torch.Generator().manual_seed(s.seed)
    n = len(targets)
    traj = []
    if s.method in ("plain", "regularized"):
        x = (0.5 + 0.02 * torch.randn(n, 3, s.size, s.size, generator=gen)).clamp(0, 1).to(device)
        for t in range(s.steps):
            if s.method == "regularized" and s.jitter:
                dy, dx = (int(v) for v in torch.randint(-s.jitter, s.jitter + 1, (2,), generator=gen))
                xin = torch.roll(x, (dy, dx), (2, 3))
            else:
                dy = dx = 0
                xin = x
            xin = xin.detach().requires_grad_(True)
            act, _ = obj(xin)
            loss = act.sum()
            if s.method == "plain":
                loss = loss - s.l2 * (xin - 0.5).pow(2).flatten(1).sum(1).sum()
            (g,) = torch.autograd.grad(loss, xin)
            traj.append(act.detach())
            with torch.no_grad():
                g = torch.roll(g, (-dy, -dx), (2, 3))
                g = g / g.abs().flatten(1).mean(1).view(-1, 1, 1, 1).clamp_min(1e-12)
                x = x + s.lr * g
                if s.method == "regularized":
                    x = 0.5 + (x - 0.5) * (1 - s.l2 * 100)
                    if s.blur_every and (t + 1) % s.blur_every == 0:
                        x = _gauss_blur(x, s.blur_sigma)
                x = x.clamp(0, 1)
        img = x.detach()
    elif s.method == "fourier":
        param = FourierImage(n, s.size, gen, device)
        opt = torch.optim.Adam(param.parameters(), lr=s.lr * 2.5)
        for t in range(s.steps):
            img = param()
            j = s.jitter
            dy, dx = (int(v) for v in torch.randint(-j, j + 1, (2,), generator=gen)) if j else (0, 0)
            sc = 1 + s.scale_jitter * (2 * float(torch.rand((), generator=gen)) - 1)
            xin = torch.roll(F.pad(img, (j, j, j, j), mode="reflect"), (dy, dx), (2, 3)) if j else img
            xin = F.interpolate(xin, size=(int(s.size * sc),) * 2, mode="bilinear", align_corners=False)
            xin = F.interpolate(xin, size=(s.size, s.size), mode="bilinear", align_corners=False) if sc < 1 else \
                xin[..., (xin.shape[-2] - s.size) // 2:(xin.shape[-2] - s.size) // 2 + s.size,
                    (xin.shape[-1] - s.size) // 2:(xin.shape[-1] - s.size) // 2 + s.size]
            act, _ = obj(xin)
            opt.zero_grad(set_to_none=True)
            (-act.sum()).backward()
            opt.step()
            traj.append(act.detach())
        with torch.no_grad():
            img = param().detach()
    else:
        raise ValueError(f"unknown pixel AM method {s.method!r}")
    with torch.no_grad():
        final, _ = obj(img)
    traj.append(final)
    return {"images": img.cpu(), "trajectory": torch.stack(traj, 1).cpu(), "final": final.cpu(),
            "settings": s.to_dict(), "targets": list(targets)}
