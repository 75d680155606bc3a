"""Networks for the DeePSim-style image generator (Dosovitskiy & Brox 2016).

* :class:`Generator` — code ``h`` → fully connected layers → reshape to a 4×4 map →
  a stack of up-convolutions (transposed 4×4 conv, stride 2, then a 3×3 conv, both
  LeakyReLU 0.3) → RGB image in [0, 1]. The number of up-convolution levels follows
  from the output size (``size = 4·2^levels``; 64 px = 4 levels, 128 px = 5, 256 px = 6).
* :class:`Discriminator` — a small strided conv net on the image, combined with the
  code (as in DeePSim, the discriminator also sees the conditioning features), one logit.
* :class:`Encoder` — the fixed, pretrained network ``E`` whose features are inverted:
  a registry model (default EfficientNet-Lite0) read at a configurable layer
  (``pre_logits`` = the pooled penultimate 1280-d vector, or any catalogued layer, which is
  spatially averaged when it is a conv map). The image is resized to the model's input size.
* :class:`Comparator` — the same pretrained net read at intermediate layers for the
  feature ("perceptual") loss.

Configurations: :data:`CONFIGS` names ``cpu`` (64 px, small; the one trained in this
repository) and ``gpu`` (128 px, wider; meant for CUDA with AMP).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..methods.base import capture_outputs


@dataclass
class GeneratorConfig:
    code_dim: int = 1280
    size: int = 64  # output resolution (4·2^k)
    fc_dims: tuple[int, ...] = (512,)
    base_channels: int = 256  # channels of the 4×4 map; halved per level, floor min_channels
    min_channels: int = 32
    slope: float = 0.3

    def to_dict(self) -> dict:
        d = asdict(self)
        d["fc_dims"] = list(self.fc_dims)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        d = dict(d)
        d["fc_dims"] = tuple(d.get("fc_dims", ()))
        return cls(**d)


@dataclass
class TrainConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    disc_channels: tuple[int, ...] = (32, 64, 128, 256)
    comparator_layers: tuple[str, ...] = ("stage1", "stage3")
    comparator_size: int = 128  # the generated / real image is resized to this before the comparator
    batch_size: int = 32
    lr: float = 2e-4
    disc_lr: float = 2e-4
    w_pix: float = 1.0
    w_feat: float = 1.0
    w_adv: float = 0.01
    adv_start: int = 300  # steps of pure reconstruction before the adversarial loss starts


CONFIGS: dict[str, dict] = {
    # What this repository trains on a shared 2-core CPU.
    "cpu": dict(generator=GeneratorConfig(size=64, fc_dims=(512,), base_channels=256, min_channels=32),
                disc_channels=(32, 64, 128, 256), comparator_size=128, batch_size=32),
    # Meant for a CUDA GPU with AMP: 128 px, wider layers, bigger batch.
    "gpu": dict(generator=GeneratorConfig(size=128, fc_dims=(2048, 2048), base_channels=512, min_channels=64),
                disc_channels=(64, 128, 256, 512, 512), comparator_size=224, batch_size=64),
    # Unit tests.
    "tiny": dict(generator=GeneratorConfig(code_dim=16, size=16, fc_dims=(32,), base_channels=16, min_channels=8),
                 disc_channels=(8, 16), comparator_size=16, batch_size=4, adv_start=0),
}


def make_train_config(name: str, **overrides) -> TrainConfig:
    kw = dict(CONFIGS[name])
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**kw)


class Generator(nn.Module):
    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        levels = int(round(math.log2(cfg.size / 4)))
        if 4 * 2**levels != cfg.size:
            raise ValueError(f"generator size must be 4·2^k, got {cfg.size}")
        fc: list[nn.Module] = []
        d = cfg.code_dim
        for width in cfg.fc_dims:
            fc += [nn.Linear(d, width), nn.LeakyReLU(cfg.slope)]
            d = width
        c0 = cfg.base_channels
        fc += [nn.Linear(d, c0 * 16), nn.LeakyReLU(cfg.slope)]
        self.fc = nn.Sequential(*fc)
        ups: list[nn.Module] = []
        c = c0
        for _ in range(levels):
            c2 = max(cfg.min_channels, c // 2)
            ups += [nn.ConvTranspose2d(c, c2, 4, stride=2, padding=1), nn.LeakyReLU(cfg.slope),
                    nn.Conv2d(c2, c2, 3, padding=1), nn.LeakyReLU(cfg.slope)]
            c = c2
        ups += [nn.Conv2d(c, 3, 3, padding=1)]
        self.up = nn.Sequential(*ups)
        # Codes are standardised inside G (per-dimension mean/std of real codes, set by the
        # trainer and saved with the weights): encoder codes are small and sparse, and a
        # unit-scale input keeps the code's influence from vanishing behind the biases.
        self.register_buffer("code_mean", torch.zeros(cfg.code_dim))
        self.register_buffer("code_std", torch.ones(cfg.code_dim))
        gain = math.sqrt(2.0 / (1 + cfg.slope**2))
        for m in self.modules():  # He init for LeakyReLU (PyTorch's default shrinks the signal per layer)
            if isinstance(m, nn.Linear):
                fan = m.in_features
            elif isinstance(m, nn.ConvTranspose2d):  # each output pixel sees in·(k/stride)² inputs
                fan = m.in_channels * (m.kernel_size[0] // m.stride[0]) * (m.kernel_size[1] // m.stride[1])
            elif isinstance(m, nn.Conv2d):
                fan = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            else:
                continue
            nn.init.normal_(m.weight, 0.0, gain / math.sqrt(fan))
            nn.init.zeros_(m.bias)

    def set_code_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.code_mean.copy_(mean.float())
        self.code_std.copy_(std.float().clamp_min(1e-3))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = (h - self.code_mean) / self.code_std
        x = self.fc(h).view(h.shape[0], self.cfg.base_channels, 4, 4)
        # sigmoid keeps pixels in [0, 1] for every code, including optimised ones
        return torch.sigmoid(self.up(x))


class Discriminator(nn.Module):
    def __init__(self, size: int, code_dim: int, channels: tuple[int, ...] = (32, 64, 128, 256), slope: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        s = size
        for c2 in channels:
            layers += [nn.Conv2d(c, c2, 4, stride=2, padding=1), nn.LeakyReLU(slope)]
            c, s = c2, s // 2
        self.conv = nn.Sequential(*layers)
        self.code = nn.Sequential(nn.Linear(code_dim, 256), nn.LeakyReLU(slope))
        self.head = nn.Sequential(nn.Linear(c + 256, 256), nn.LeakyReLU(slope), nn.Linear(256, 1))

    def forward(self, img: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        f = self.conv(img * 2 - 1).mean(dim=(2, 3))
        return self.head(torch.cat([f, self.code(h)], 1)).squeeze(1)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3)) if x.dim() == 4 else x.flatten(1)


class Encoder(nn.Module):
    """Fixed encoder ``E(x)`` for pixel-space images x in [0, 1] (any size; resized to ``input_size``).

    ``layer="pre_logits"`` reads the pooled penultimate features (timm ``forward_head(...,
    pre_logits=True)``) of a timm model, or the input of the final Linear for others;
    any other name is a catalogued registry layer (spatially averaged).
    """

    def __init__(self, loaded, layer: str = "pre_logits", input_size: int | None = None) -> None:
        super().__init__()
        self.net = loaded.net
        self.layer = layer
        self.input_size = input_size or loaded.spec.input_size
        self.path = None if layer == "pre_logits" else loaded.module_path(layer)
        self.head = None
        if layer == "pre_logits":
            # the final classifier Linear maps codes to logits (used by PPGN / checks)
            body = self.net.body
            self.head = getattr(body, "classifier", None) or getattr(body, "fc", None)

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.input_size)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resize(x)
        if self.path is None:
            body = self.net.body
            z = self.net.normalize(x)
            if hasattr(body, "forward_features") and hasattr(body, "forward_head"):
                return body.forward_head(body.forward_features(z), pre_logits=True)
            with capture_outputs({"head": self.head}, detach=False, read="input") as feats:
                body(z)
            return feats["head"].flatten(1)
        with capture_outputs({"layer": self.net.get_submodule(self.path)}, detach=False) as out:
            self.net(x)
        return _pool(out["layer"])


class Comparator(nn.Module):
    """Intermediate features of a fixed net for the feature loss; runs the net only as deep as needed."""

    def __init__(self, loaded, layers: tuple[str, ...], size: int) -> None:
        super().__init__()
        self.net = loaded.net
        self.size = size
        self.paths = [loaded.module_path(l) for l in layers]
        self.layers = tuple(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.size)
        # the forward pass stops after the last listed layer: the rest of the net is not run
        with capture_outputs({p: self.net.get_submodule(p) for p in self.paths}, detach=False,
                             stop_after=self.paths[-1]) as out:
            self.net(x)
        return [out[p] for p in self.paths]


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
