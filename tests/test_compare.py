"""Comparing maps across models with different input sizes: aligned to the view they share, never a
silent 224-px assumption."""
import torch
from PIL import Image, ImageDraw

from generator.build import BuildContext
from generator.cache import Cache
from generator.config import Config
from generator.imagenet import labels as imagenet_labels
from generator.images import ImageItem
from generator.metrics.across_models import View, common_view, model_view, pair_similarity, to_common_view
from generator.metrics.similarity import spearman
from generator.models import Classifier, LoadedModel, ModelSpec, Preprocess
from generator.site import SiteWriter
from generator.stages import compare
from generator.util import StageTimer

# (input size, resize size): three different sizes and three different fields of view
SIZES = {"lite0": (224, 256), "wide": (240, 248), "incept": (299, 342)}


def _photo(cx: float, cy: float, w: int = 400, h: int = 300) -> Image.Image:
    """A dark photo with a bright disc at (cx, cy) in fractions of the width and height."""
    im = Image.new("RGB", (w, h), (10, 10, 10))
    r = 18
    ImageDraw.Draw(im).ellipse([cx * w - r, cy * h - r, cx * w + r, cy * h + r], fill=(250, 250, 250))
    return im


def _maps(photos, size, resize):
    """What a model of that size "sees": its input's brightness, a stand-in for a map that follows the photo."""
    return Preprocess(size, resize)(photos).mean(1)


def test_maps_of_different_input_sizes_line_up_in_the_common_view():
    photos = [_photo(0.33, 0.28), _photo(0.6, 0.7)]
    views = {k: model_view(*v) for k, v in SIZES.items()}
    common = common_view(list(views.values()))
    assert common == View(min(224 / 256, 240 / 248, 299 / 342), 224)
    aligned = {k: to_common_view(_maps(photos, *SIZES[k]), views[k], common) for k in SIZES}
    for k, a in aligned.items():
        assert a.shape == (2, 224, 224), k
    for (a, b), rho in pair_similarity(aligned).items():
        assert rho.min() > 0.9, (a, b, rho)
        # the disc is found at the same place in both aligned maps
        for i in range(2):
            pa = torch.nonzero(aligned[a][i] > 0.5).float().mean(0)
            pb = torch.nonzero(aligned[b][i] > 0.5).float().mean(0)
            assert (pa - pb).abs().max() < 1.5, (a, b, pa, pb)
    # a naive resize of the whole map (as if every model saw the same crop) puts the disc elsewhere
    naive = torch.nn.functional.interpolate(_maps(photos, *SIZES["wide"])[:, None], size=(224, 224), mode="area")[:, 0]
    assert (torch.nonzero(naive[0] > 0.5).float().mean(0) - torch.nonzero(aligned["lite0"][0] > 0.5).float().mean(0)
            ).abs().max() > 3
    assert spearman(naive, aligned["lite0"]).min() < pair_similarity(aligned)[("lite0", "wide")].min()


def _model(name, size, resize):
    spec = ModelSpec(name=name, title=name.upper(), family="timm", arch=name, input_size=size, resize_size=resize)
    net = Classifier(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(1000)), spec.mean, spec.std)
    return LoadedModel(spec, net, "random-init:seed=0", None, False, imagenet_labels())


def test_stage_writes_figures_and_pair_table(tmp_path):
    photos = [_photo(0.3, 0.4), _photo(0.7, 0.6)]
    items = [ImageItem(id=f"p{i}", path=tmp_path / f"p{i}.png", sha256=str(i), pil=p, title=f"Photo {i}")
             for i, p in enumerate(photos)]
    models = [_model(k, *v) for k, v in SIZES.items()]
    out = tmp_path / "out"
    ctx = BuildContext(config=Config({"compare": {"images": 1}}), models=models, missing={}, images=items, skipped=[],
                       notes=[], cache=Cache(tmp_path / "cache"), site=SiteWriter(out), device=torch.device("cpu"),
                       batch_size=4, timer=StageTimer(), out=out)
    ctx.provide("attribution_maps", {
        "methods": ["bright"], "items": items, "titles": {"bright": "Brightness"}, "short": {"bright": "Bright"},
        "models": {m.name: {"model": m, "heatmaps": {"bright": _maps(photos, m.spec.input_size, m.spec.resize_size)}}
                   for m in models}})
    compare.run(ctx)
    ctx.site.finish()
    page = (out / "methods" / "compare.md").read_text()
    assert "| LITE0 vs WIDE | " in page and "| WIDE vs INCEPT | " in page and "| 2 |" in page
    assert "input sizes 224 px, 240 px, 299 px" in page
    fig = Image.open(out / "figures" / "compare" / "bright.webp")
    assert fig.size[1] < 2 * 112 + 40  # one photo row ([compare] images = 1), four columns
    assert Image.open(out / "figures" / "compare" / "images" / "p1.webp").size[1] > 3 * 112
    assert "Across models" in (out / "images" / "p1.md").read_text()
