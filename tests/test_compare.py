"""Comparing maps across models with different input sizes: aligned to the view they share, never a
silent 224-px assumption; a most (least) consistent method named only where a paired interval separates it."""
import numpy as np
import torch
from PIL import Image, ImageDraw

from generator.build import BuildContext
from generator.cache import Cache
from generator.config import Config
from generator.imagenet import labels as imagenet_labels
from generator.images import ImageItem
from generator.metrics.across_models import (View, agreement, common_view, model_view, pair_similarity,
                                             per_photo_agreement, to_common_view)
from generator.metrics.bootstrap import fmt
from generator.metrics.similarity import spearman
from generator.metrics.verdicts import consistency
from generator.models import Classifier, LoadedModel, ModelSpec, Preprocess
from generator.site import SiteWriter
from generator.stages import compare
from generator.util import StageTimer, md_escape

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


def _stage(tmp_path, photos, methods: dict, config: dict):
    """Run the compare stage on ``photos`` with ``methods``: name → (title, maps of a model's view)."""
    items = [ImageItem(id=f"p{i}", path=tmp_path / f"p{i}.png", sha256=str(i), pil=p, title=f"Photo {i}")
             for i, p in enumerate(photos)]
    models = [_model(k, *v) for k, v in SIZES.items()]
    out = tmp_path / "out"
    ctx = BuildContext(config=Config(config), models=models, missing={}, images=items, skipped=[],
                       notes=[], cache=Cache(tmp_path / "cache"), site=SiteWriter(out), device=torch.device("cpu"),
                       batch_size=4, timer=StageTimer(), out=out)
    ctx.provide("attribution_maps", {
        "methods": list(methods), "items": items, "titles": {k: t for k, (t, _f) in methods.items()},
        "short": {k: k for k in methods},
        "models": {m.name: {"model": m, "heatmaps": {k: f(photos, m.spec.input_size, m.spec.resize_size)
                                                     for k, (_t, f) in methods.items()}} for m in models}})
    compare.run(ctx)
    ctx.site.finish()
    return ctx, out


def test_stage_writes_figures_and_pair_table(tmp_path):
    photos = [_photo(0.3, 0.4), _photo(0.7, 0.6)]
    ctx, out = _stage(tmp_path, photos, {"bright": ("Brightness", _maps), "noise": ("Noise", _noise)},
                      {"compare": {"images": 1}})
    page = (out / "methods" / "compare.md").read_text()
    assert "| LITE0 vs WIDE | " in page and "| WIDE vs INCEPT | " in page and "| 2 |" in page
    assert "input sizes 224 px, 240 px, 299 px" in page
    # 2 photos: below [findings] min_n (20), so the numbers and no ranking, on the page and on the home page
    assert "Too few photos for a ranking: n = 2 &lt; 20, so no method is named" in page
    assert "Most consistent" not in page and "Paired difference" not in page
    assert [(h.value, h.page) for h in ctx.artifact("compare_headlines")] == [("not ranked", "methods/compare")]
    agreed = ctx.artifact("model_agreement")
    assert not agreed["ranked"] and agreed["best"] is None and agreed["methods"][0]["interval"]["n"] == 2
    fig = Image.open(out / "figures" / "compare" / "bright.webp")
    assert fig.size[1] < 2 * 112 + 40  # one photo row ([compare] images = 1), four columns
    assert Image.open(out / "figures" / "compare" / "images" / "p1.webp").size[1] > 3 * 112
    assert "Across models" in (out / "images" / "p1.md").read_text()


def _noise(photos, size, resize):
    """Maps that ignore the photo: each model its own random pixels (no agreement between models)."""
    return torch.rand(len(photos), size, size, generator=torch.Generator().manual_seed(size))


def test_stage_names_the_most_consistent_method_from_the_paired_interval(tmp_path):
    """At n ≥ [findings] min_n the page and the home headline name the method a paired interval
    separates, in the wording of verdicts.consistency, escaped on the page."""
    photos = [_photo(0.25 + 0.1 * i, 0.3 + 0.08 * i) for i in range(5)]
    title = "Bright <b>*x*</b>"
    ctx, out = _stage(tmp_path, photos, {"bright": (title, _maps), "noise": ("Noise", _noise)},
                      {"compare": {"images": 1}, "findings": {"min_n": 4}})
    page = (out / "methods" / "compare.md").read_text()
    agreed = ctx.artifact("model_agreement")
    assert agreed["ranked"] and agreed["best"] == title
    assert [m["name"] for m in agreed["methods"]] == ["bright", "noise"]  # by mean
    (h,) = ctx.artifact("compare_headlines")
    assert h.label.startswith(f"rank correlation between models' {title} maps, the most consistent method")
    assert h.value == f"{agreed['methods'][0]['mean']:.2f}" and h.page == "methods/compare"
    assert md_escape(agreed["verdict"]) in page and "Most consistent: Bright &lt;b&gt;\\*x\\*&lt;/b&gt; (" in page
    assert "<b>" not in page and f"Paired difference to {md_escape(title)} |" in page
    assert "Too few photos" not in page


# -- which method agrees most across models: named only where a paired interval separates it -----------------

TITLES = {"a": "Method A", "b": "Method B", "c": "Method C"}


def _per_photo(n: int, gap_ab: float, noise: float, seed: int = 1) -> dict:
    """Per-photo agreement of three methods on the same n photos: a shared per-photo level (some photos are
    easy for every method) that makes the methods' own intervals overlap, plus method offsets and noise."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.8, n)
    return {"a": base + gap_ab + rng.normal(0, noise, n), "b": base + rng.normal(0, noise, n),
            "c": base - 0.15 + rng.normal(0, noise, n)}


def test_per_photo_agreement_is_the_mean_over_pairs():
    pairs = {("x", "y"): torch.tensor([0.2, 0.4]), ("x", "z"): torch.tensor([0.6, 0.0]),
             ("y", "z"): torch.tensor([0.1, float("nan")])}
    v = per_photo_agreement(pairs)
    assert np.allclose(v[0], 0.3) and np.isnan(v[1])  # an undefined pair leaves the photo out, not a made-up 0
    assert agreement({"m": v}, {"m": "M"}, min_n=1).rows[0]["interval"].n == 1


def test_most_consistent_only_where_the_paired_interval_separates():
    values = _per_photo(30, 0.05, 0.01)
    ag = agreement(values, TITLES, min_n=20)
    rows = {r["name"]: r["interval"] for r in ag.rows}
    assert rows["a"].lo < rows["b"].hi  # the methods' own intervals overlap: the means alone would decide nothing
    assert ag.best.separated and ag.best.gaps["Method B"].lo > 0 and ag.best.gaps["Method B"].n == 30
    said = consistency(ag)
    assert said.kind == "separated" and said.best == "Method A"
    assert said.sentences[0].startswith("Most consistent: Method A (")
    assert f"smallest difference: {fmt(ag.best.gaps['Method B'])}, to Method B)." in said.sentences[0]
    assert said.sentences[1].startswith("Least consistent: Method C (")
    assert said.value == f"{rows['a'].mean:.2f}"
    assert said.label == ("rank correlation between models' Method A maps, the most consistent method "
                          "(separated by paired intervals, n = 30)")


def test_overlapping_paired_interval_says_tied():
    values = _per_photo(30, 0.002, 0.1)
    ag = agreement(values, TITLES, min_n=20)
    assert not ag.best.separated and {ag.best.title, *ag.best.tied} == {"Method A", "Method B"}
    gap = ag.best.gaps[ag.best.tied[0]]
    assert gap.lo <= 0 <= gap.hi and gap.n == 30
    said = consistency(ag)
    assert said.kind == "tied" and said.best is None and set(said.tied) == {"Method A", "Method B"}
    text = " ".join(said.sentences)
    assert "Most consistent:" not in text and "the most consistent method" not in said.label
    assert f"No single most consistent method: {said.tied[0]} and {said.tied[1]} are tied" in text
    assert said.value == "tied"
    assert said.label == (f"most consistent method across models: {said.tied[0]} and {said.tied[1]} are not told "
                          f"apart by a paired interval (n = 30)")
    assert "Least consistent: Method C" in text  # the bottom is still separated from both


def test_below_min_n_no_ranking_at_all():
    values = {k: v[:8] for k, v in _per_photo(30, 0.05, 0.01).items()}
    ag = agreement(values, TITLES, min_n=20)
    assert ag.best is None and ag.worst is None and not ag.ranked
    assert [r["interval"].n for r in ag.rows] == [8, 8, 8]  # the numbers are still there
    said = consistency(ag)
    assert said.kind == "few" and said.best is None and not said.tied
    assert said.sentences == ["Too few photos for a ranking: n = 8 < 20, so no method is named the most or the "
                              "least consistent; the table shows the numbers."]
    assert said.value == "not ranked" and "8 photos are too few for a ranking (it needs 20)" in said.label
    # the rule is [findings] min_n: the same 8 photos under a lower minimum are ranked (the sentence flips)
    ag, said = compare.summarise(values, TITLES, {"min_n": 5, "seed": 0})
    assert ag.min_n == 5 and said.kind == "separated" and said.best == "Method A"
    ag, said = compare.summarise(values, TITLES, {})  # the findings' default minimum
    assert ag.min_n == 20 and said.kind == "few"


def test_one_method_or_none_is_not_ranked():
    said = consistency(agreement({"a": np.linspace(0.1, 0.9, 30)}, TITLES, min_n=20))
    assert said.kind == "one" and "most consistent" not in said.label and said.value == "0.50"
    said = consistency(agreement({}, TITLES))
    assert said.kind == "none" and said.value is None and not said.sentences
