"""How photos become a model's input (:class:`Preprocess`): resize, centre crop, [0, 1].

Part of the model registry: a ``ModelSpec`` gives its ``spec.preprocess``, and the public
name is :class:`generator.models.Preprocess`. It lives in this small module, which imports
nothing from the package, so that :mod:`generator.image_folder` (and, for old callers,
:mod:`generator.images`) can use it without importing the registry: no import cycle.
"""
from __future__ import annotations

from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class Preprocess:
    """How photos become a model's input: shorter side → ``resize_size``, centre crop
    ``input_size``, RGB in [0, 1].

    ``resize_with`` says what is resized, because the results differ by a grey level here
    and there: ``"pil"`` resizes the PIL image, as torchvision's ``Weights.transforms()``
    and timm's eval transform do; ``"tensor"`` resizes the uint8 tensor with
    torchvision's antialiased kernel (what the project did before; EfficientNet-Lite0's
    preprocessing was measured with it). ``interpolation`` is "bilinear" or "bicubic"
    (torchvision's InterpolationMode names). Centre crop as torchvision's.
    """

    input_size: int
    resize_size: int
    interpolation: str = "bilinear"
    resize_with: str = "pil"

    def __post_init__(self) -> None:
        if self.resize_with not in ("tensor", "pil"):
            raise ValueError(f"resize_with must be 'tensor' or 'pil', not {self.resize_with!r}")

    @property
    def key(self) -> list:
        """For cache keys: ``[input_size, resize_size]`` for the resize all models used
        before (bilinear tensor resize), else with the interpolation and what is resized,
        so that results cached before stay valid exactly where the inputs are unchanged."""
        base = [self.input_size, self.resize_size]
        legacy = (self.interpolation, self.resize_with) == ("bilinear", "tensor")
        return base if legacy else base + [self.interpolation, self.resize_with]

    def __call__(self, pils: list[Image.Image]):
        """PIL RGB images → float tensor B×3×S×S in [0, 1]."""
        import torch
        import torchvision.transforms.functional as TF
        from torchvision.transforms import InterpolationMode

        mode = InterpolationMode(self.interpolation)
        out = []
        for im in pils:
            if self.resize_with == "pil":
                t = TF.pil_to_tensor(TF.center_crop(TF.resize(im, self.resize_size, interpolation=mode), self.input_size))
            else:
                t = TF.resize(TF.pil_to_tensor(im), self.resize_size, interpolation=mode, antialias=True)
                t = TF.center_crop(t, self.input_size)
            out.append(t)
        return torch.stack(out).float().div_(255.0)

