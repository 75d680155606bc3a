"""The attribution stage's cache steps: an interrupted build resumes inside a method, the
chunking does not change a map, and the ``attribution_maps`` artifact carries what the
later stages reuse (maps as shown, unrounded maps, explained classes, settings)."""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch
from PIL import Image

from generator.cache import Cache
from generator.config import Config
from generator.images import ImageItem
from generator.methods.attribution import make
from generator.models import REGISTRY, Layer, ModelSpec, load_model
from generator.site import SiteWriter
from generator.stages import attribution as stage
from generator.util import StageTimer

TINY = ModelSpec(
    name="tiny_attr", title="Tiny attribution net", family="timm", arch="test_efficientnet", input_size=48,
    resize_size=56, layers=(Layer("stem", "bn1"), Layer("blocks", "blocks"), Layer("head", "bn2"),
                            Layer("logits", "classifier", "fc")),
    default_layers=("stem", "blocks", "head"), gradcam_layer="head",
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(REGISTRY, TINY.name, TINY)
    return load_model(TINY, allow_random=True, seed=0)  # stands in for a trained model (test only)


def _items(n: int) -> list[ImageItem]:
    out = []
    for i in range(n):
        rng = np.random.default_rng(i)
        im = Image.fromarray((rng.random((60, 70, 3)) * 255).astype(np.uint8))
        buf = io.BytesIO()
        im.save(buf, "PNG")
        out.append(ImageItem(id=f"p{i}", path=None, sha256=hashlib.sha256(buf.getvalue()).hexdigest(), pil=im,
                             title=f"Photo {i}", imagenet_index=[3, None][i % 2]))
    return out


def _ctx(tmp_path, model, items, attribution: dict | None = None):
    from generator.build import BuildContext

    cfg = Config({"build": {"models": [TINY.name], "stages": ["attribution"]},
                  "attribution": {"methods": ["saliency", "smoothgrad", "integrated_gradients"], "neurons": 0,
                                  "gallery_images": 2,
                                  "method_params": {"smoothgrad": {"samples": 3},
                                                    "integrated_gradients": {"steps": 4}},
                                  **(attribution or {})}})
    out = tmp_path / "out"
    return BuildContext(config=cfg, models=[model], missing={}, images=items, skipped=[], notes=[],
                        cache=Cache(tmp_path / "cache"), site=SiteWriter(out), device=torch.device("cpu"),
                        batch_size=8, timer=StageTimer(), out=out)


class Interrupted(Exception):
    pass


def test_maps_resume_inside_a_method_and_do_not_depend_on_chunks(tmp_path, tiny, monkeypatch):
    items = _items(7)
    ctx = _ctx(tmp_path, tiny, items)
    targets = ctx.targets(tiny)
    method = make("smoothgrad", tiny, samples=3)
    cls = type(method)  # the compute call builds its own method object from the settings: patch the class
    real = cls.attribute
    seen: list[int] = []

    def dies_on_third_chunk(self, x, t):
        seen.append(len(x))
        if len(seen) == 3:
            raise Interrupted
        return real(self, x, t)

    monkeypatch.setattr(cls, "attribute", dies_on_third_chunk)
    with pytest.raises(Interrupted):
        stage._maps(ctx, tiny, "smoothgrad", method, targets, chunk=2)
    assert seen == [2, 2, 2]
    # the rerun computes only the photos without a stored result: 7 - 2 chunks of 2
    seen.clear()
    monkeypatch.setattr(cls, "attribute", lambda self, x, t: (seen.append(len(x)), real(self, x, t))[1])
    resumed = stage._maps(ctx, tiny, "smoothgrad", method, targets, chunk=2)
    assert seen == [2, 1]
    assert len(resumed) == 7 and [r["target"] for r in resumed] == targets.tolist()
    # same maps as one uninterrupted pass over all photos at once (another cache)
    ctx_once = _ctx(tmp_path / "once", tiny, items)
    once = stage._maps(ctx_once, tiny, "smoothgrad", make("smoothgrad", tiny, samples=3), targets, chunk=0)
    for a, b in zip(resumed, once):
        assert a["heatmap"].dtype == torch.float32
        torch.testing.assert_close(a["heatmap"], b["heatmap"], rtol=1e-5, atol=1e-7)
    # nothing left to do: a third run is all cache hits
    seen.clear()
    stage._maps(ctx, tiny, "smoothgrad", method, targets, chunk=2)
    assert seen == []


def test_artifact_carries_shown_and_exact_maps_with_targets_and_settings(tmp_path, tiny):
    items = _items(3)
    ctx = _ctx(tmp_path, tiny, items)
    stage.run(ctx)
    art = ctx.need("attribution_maps")
    d = art["models"][TINY.name]
    assert art["methods"] == ["saliency", "smoothgrad", "integrated_gradients"]
    assert torch.equal(d["targets"], ctx.targets(tiny))
    assert d["targets"][0] == 3  # the manifest's class where there is one
    assert d["params"]["smoothgrad"]["samples"] == 3 and d["params"]["integrated_gradients"]["steps"] == 4
    x = ctx.batch(tiny, items)
    for name in art["methods"]:
        exact, shown = d["exact"][name], d["heatmaps"][name]
        assert exact.shape == shown.shape == (3, TINY.input_size, TINY.input_size)
        assert torch.equal(shown, exact.to(torch.bfloat16).float())  # what the figures show
        expected = make(name, tiny, batch_size=ctx.batch_size, **d["params"][name]).explain(x, d["targets"])
        torch.testing.assert_close(exact, expected.float(), rtol=1e-4, atol=1e-6)
