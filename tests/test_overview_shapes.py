"""The overview stage builds models without weights on the meta device: the layer shapes
and parameter counts it shows are those of the real network."""
from __future__ import annotations

import pytest
import torch

from generator.cache import Cache
from generator.methods.base import output_shapes
from generator.models import build_architecture, get_spec
from generator.stages import overview


@pytest.mark.parametrize("name", ["torchvision:resnet18", "googlenet"])
def test_meta_build_gives_the_real_shapes_and_counts(tmp_path, name):
    spec = get_spec(name)

    class Ctx:
        cache = Cache(tmp_path / "cache")

    got = overview._layer_shapes(Ctx(), spec)
    torch.manual_seed(0)
    real = build_architecture(spec).eval()
    modules = {layer.name: real.get_submodule(layer.path) for layer in spec.layers}
    shapes = {n: list(s) for n, s in output_shapes(real, modules, spec.input_size).items()}
    assert got["shapes"] == shapes and len(shapes) == len(spec.layers)
    assert got["params"] == sum(p.numel() for p in real.parameters())
    assert overview._layer_shapes(Ctx(), spec) == got  # cached
