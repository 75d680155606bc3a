"""The findings stage end to end on a tiny timm network, and its data-driven statements."""
from __future__ import annotations

import copy
import hashlib
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from generator.cache import Cache
from generator.config import Config
from generator.images import ImageItem
from generator.methods import attribution as A
from generator.methods.attribution import ATTRIBUTION_METHODS
from generator.models import REGISTRY, Layer, ModelSpec, load_model
from generator import findings_pages, probes
from generator.metrics import selectivity, verdict_units, verdicts
from generator.metrics.class_check import ClassSensitivity
from generator.metrics.faithfulness import Faithfulness, OrderCurves
from generator.metrics.fragility import Fragility, Overlaps
from generator.metrics.invariance import Invariance
from generator.metrics.sanity import Cascade, CascadeCurves
from generator.site import SiteWriter, make_env
from generator.stages import findings
from generator.util import StageTimer

torch.set_num_threads(1)

TINY = ModelSpec(
    name="tiny_test", title="Tiny test net", family="timm", arch="test_efficientnet", input_size=64, resize_size=72,
    layers=(Layer("stem", "bn1"), Layer("blocks", "blocks"), Layer("head", "bn2"), Layer("logits", "classifier", "fc")),
    default_layers=("stem", "blocks", "head"), gradcam_layer="head",
)


def _photo(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    im = Image.fromarray((rng.random((80, 96, 3)) * 80 + 60).astype(np.uint8))
    d = ImageDraw.Draw(im)
    x, y = rng.integers(10, 50, 2)
    d.ellipse([int(x), int(y), int(x) + 30, int(y) + 25], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return im


def _items(n=3):
    out = []
    for i in range(n):
        im = _photo(i)
        buf = io.BytesIO()
        im.save(buf, "PNG")
        out.append(ImageItem(id=f"photo-{i}", path=None, sha256=hashlib.sha256(buf.getvalue()).hexdigest(), pil=im,
                             title=f"Photo {i}", imagenet_index=[7, 300, None][i % 3]))
    return out


def _labelled_folder(root):
    root.mkdir(parents=True)
    (root / "README.md").write_text("| wnid | index | label |\n|---|---|---|\n| n00000007 | 7 | a |\n| n00000300 | 300 | b |\n")
    for k, wnid in enumerate(["n00000007", "n00000300"]):
        (root / "val" / wnid).mkdir(parents=True)
        for j in range(2):
            _photo(10 + 2 * k + j).save(root / "val" / wnid / f"{j}.png")
    return root / "val"


FAST = {"images": 3, "sanity_images": 2, "expensive_images": 2, "sanity_expensive_images": 1, "invariance_images": 2,
        "fragility_images": 2, "fragility_steps": 2, "selectivity_images": 4, "ablation_units_per_layer": 2,
        "probe_sample": "", "cascade_steps": 3, "faithfulness_steps": 4, "seed": 7, "thumb": 16,
        "method_params": {"smoothgrad": {"samples": 2}, "smoothgrad_sq": {"samples": 2}, "vargrad": {"samples": 2},
                          "integrated_gradients": {"steps": 3}, "occlusion": {"window": 32, "stride": 32}}}


def _ctx(tmp_path, model, folder):
    cfg = Config({"build": {"models": ["tiny_test", "alexnet"], "stages": ["findings"]},
                  "findings": {**FAST, "accuracy_folder": str(folder), "accuracy_max_images": 0,
                               "probe_folder": str(folder)}})
    from generator.build import BuildContext

    out = tmp_path / "out"
    return BuildContext(config=cfg, models=[model], missing={"alexnet": "alexnet: weights file not found (test)"},
                        images=_items(), skipped=[], notes=[], cache=Cache(tmp_path / "cache"), site=SiteWriter(out),
                        device=torch.device("cpu"), batch_size=8, timer=StageTimer(), out=out)


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(REGISTRY, "tiny_test", TINY)
    return load_model(TINY, allow_random=True, seed=0)  # stands in for a trained model (test only)


def test_stage_writes_tables_figures_and_reuses_the_cache(tmp_path, tiny, monkeypatch):
    folder = _labelled_folder(tmp_path / "labelled")
    before = copy.deepcopy(tiny.net.state_dict())
    ctx = _ctx(tmp_path, tiny, folder)
    findings.run(ctx)
    ctx.site.finish()
    # the trained model object is untouched by the randomisation test
    after = tiny.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    page = (ctx.out / "findings" / "index.md").read_text()
    assert page.startswith("# Findings")
    check = {cp.key: (ctx.out / "findings" / f"{cp.key}.md").read_text() for cp in findings_pages.CHECK_PAGES}
    assert set(check) == {"randomisation", "class", "faithfulness", "invariance", "fragility", "selectivity", "transfer"}
    every = [page, *check.values()]
    # which profile built the numbers and its n's (here set in the test's config), on the index and every check page
    profile = f"Built with the **{ctx.config.profile}** profile: photos per check, cheap methods 3 (set in the config)"
    assert all((profile in p) == (p is not check["transfer"]) for p in every)  # transfer: measured once, elsewhere
    # the index leads with the answer, computed (n = 3 < min_n: no verdict), then the verdicts at a glance
    lead = page.split("## ")[0]
    assert "**Is visualisation enough?** **Not decided at this n.**" in lead and "No —" not in page
    assert lead.index("Is visualisation enough?") < lead.index("| Method |")
    heads = ctx.artifacts["findings_headlines"]
    assert [h.page for h in heads] == ["findings/index", "findings/randomisation", "findings/class", "findings/faithfulness"]
    assert heads[0].value == "Is visualisation enough? Not decided at this n:" and "20 photos" in heads[0].label
    assert "on Tiny test net" in heads[1].label
    # n = 3 < min_n: the numbers without verdicts, and the headline says so
    assert heads[1].label.endswith("(10 not decided at this n)") and heads[3].value == "tied"
    assert ctx.artifacts["findings_summaries"][0]["fails"] == ctx.artifacts["findings_summaries"][0].fails
    assert all("nan" not in p.lower().replace("nanmean", "") for p in every)
    # deletion/insertion: the step count measured again at twice the steps (here on the one photo: no interval, no
    # claim), the literature's criticism and occlusion's circularity stated
    fai = check["faithfulness"]
    assert "**Step count.** Doubling the steps from 4 to 8 moves the deletion and insertion areas by " in fai
    assert "one photo gives no interval, so it is not shown to stay below it" in fai and "n = 1 photo)" in fai
    assert "ROAR" in fai and "ROAD" in fai and "Gomez et al. (2022" in fai and "Occlusion](" in fai
    # every cell of the glance table links to its check's page, at the model's part; every check page has that anchor
    names = list(ATTRIBUTION_METHODS)
    glance = [l for l in lead.splitlines() if l.startswith("| [")]
    assert len(glance) == len(names)
    for key in ("randomisation", "class", "faithfulness", "invariance", "fragility"):
        assert all(f"]({key}.md#tiny_test)<br>" in l for l in glance), key
        assert f"]({key}.md):" in lead  # the column's heading
        assert "## Tiny test net { #tiny_test }" in check[key]
    # the index: the model table, the check pages, the literature; nothing of the checks' own tables
    assert "| AlexNet | **missing** |" in page and "Spearman: logits only" not in page
    assert "Not measured because their weights are missing: AlexNet" in page
    checks = page.split("## The checks, one page each")[1].split("\n## ")[0]
    assert [l.split("](")[1].split(")")[0] for l in checks.splitlines() if l.startswith("- [")] == [
        f"{cp.key}.md" for cp in findings_pages.CHECK_PAGES]
    literature = page.split("## What the literature says about these checks")[1].split("\n## ")[0]
    for who, ref in [("Sundararajan & Taly (2018)", "1806.04205"), ("Yona & Greenfeld (2021)", "2110.14297"),
                     ("Binder, Weber, Lapuschkin, Montavon, Müller & Samek (2023)", "CVPR 2023"),
                     ("Hedström, Bommer, Wickstrøm, Samek, Lapuschkin & Höhne (2023)", "TMLR 2023"),
                     ("Nie, Zhang & Patel (2018)", "ICML 2018"), ("Leavitt & Morcos (2020)", "2003.01262")]:
        assert f"**{who}**" in literature and ref in literature, who
    assert "Measured on this build: Guided backpropagation on Tiny test net: not enough photos ([class check](class.md#tiny_test))" in literature
    # the navigation under Findings: the index, then the checks in order
    nav = (ctx.out / "findings" / "SUMMARY.md").read_text().splitlines()
    assert [l.split("](")[1][:-1] for l in nav] == ["index.md", *(f"{cp.key}.md" for cp in findings_pages.CHECK_PAGES)]
    # no heading asserts a conclusion: the check pages' titles and sections are neutral, whatever the numbers
    headings = [l for p in every for l in p.splitlines() if l.startswith("#")]
    assert "# Selectivity and importance" in headings
    assert not [h for h in headings if re.search(r"\b(not|no|fails?|insensitive|fragile|harmful|enough)\b", h, re.I)]
    # every table lists the model without weights as such
    for key in ("randomisation", "class", "faithfulness"):
        assert check[key].count("**AlexNet**: not measured — weights missing.") == 1
    # the model table: measured accuracy on the 4 labelled photos, 2 classes
    row = next(l for l in page.splitlines() if l.startswith("| Tiny test net |"))
    assert "(2 classes)" in row and row.rstrip().endswith("| 4 |")
    for n in names:
        assert f"(../methods/{n}.md)" in page and f"(../methods/{n}.md)" in check["randomisation"]
        sec = (ctx.out / "methods" / f"{n}.md").read_text()
        assert "Sanity checks and faithfulness (measured)" in sec and "| AlexNet | weights missing |" in sec
        assert "[Randomisation](../findings/randomisation.md)" in sec and "[Findings](../findings/index.md)" in sec
        assert (ctx.out / "figures" / "findings" / "tiny_test" / f"sanity-{n}.svg").read_text().lstrip().startswith("<?xml")
    for f in ("sanity.svg", "class.svg", "faithfulness.svg", "sanity-maps.webp"):
        assert (ctx.out / "figures" / "findings" / "tiny_test" / f).stat().st_size > 1000
    # each check page: the question, a way back to the index, its notes (with the index's general ones linked)
    for cp in findings_pages.CHECK_PAGES:
        assert f"*{cp.question}* — [Findings](index.md)" in check[cp.key]
        assert ("## How these numbers were made" in check[cp.key]) == bool(cp.notes)
    assert "[How these numbers were made](index.md#how-these-numbers-were-made)" in check["randomisation"]
    assert "- **Randomisation**: each re-initialised layer" in check["randomisation"]
    assert "- **Randomisation**: each re-initialised layer" not in check["class"]
    assert "## How these numbers were made" in page and "- **Verdicts**: only from at least" in page
    # cascade columns: 3 measured steps, the last one is "all layers"
    sanity = check["randomisation"]
    assert "Spearman: logits only" in sanity and "Spearman: all layers" in sanity
    # the verdict column agrees with the sentences above the table
    part = sanity.split("## Tiny test net")[1]
    table = [l for l in part.split("\n## ")[0].split("Signed maps (")[0].splitlines() if l.startswith("| [")]
    assert len(table) == len(names)
    # the signed maps' table: the pixel-space methods whose attributions take both signs, not the ReLU'd / squared ones
    signed = [l.split("]")[0][3:] for l in part.split("Signed maps (")[1].split("\n## ")[0].splitlines()
              if l.startswith("| [")]
    assert "Saliency (gradient)" in signed and "Grad-CAM" not in signed and len(signed) < len(names)
    failing = [l.split("]")[0][3:] for l in table if "**fails**" in l]
    said = part.split("| Method |")[0]
    for t in failing:
        assert t in said.split("keeps" if len(failing) == 1 else "keep")[0]
    assert not failing and "No method is shown to fail" in said
    figures_before = {p: p.read_bytes() for p in (ctx.out / "figures").rglob("*") if p.is_file()}

    # second build, same cache: no attribution, no perturbation curve, no accuracy pass, no ablation
    from generator.metrics import faithfulness as fa
    from generator.metrics import model_table as mt
    from generator.methods.attribution import AttributionMethod

    def boom(*a, **k):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(AttributionMethod, "explain", boom)
    monkeypatch.setattr(fa, "deletion_insertion", boom)
    monkeypatch.setattr(mt, "accuracy_counts", boom)
    monkeypatch.setattr(selectivity, "ablation_costs", boom)  # the unit results were read back too
    ctx2 = _ctx(tmp_path, tiny, folder)
    findings.run(ctx2)
    ctx2.site.finish()
    assert ctx2.cache.misses == 0 and ctx2.cache.stored == 0
    assert (ctx2.out / "findings" / "index.md").read_text() == page
    assert all((ctx2.out / "findings" / f"{k}.md").read_text() == v for k, v in check.items())
    # figures are byte-identical (deterministic SVG/PNG)
    assert {p: p.read_bytes() for p in (ctx.out / "figures").rglob("*") if p.is_file()} == figures_before


def _fake(model_title, cascade_vals, class_low, dels, inss, base=(0.3, 0.3, 0.2, 0.4), inv=None, frag=None, n=20):
    """Synthetic per-method measurements → summarise_model's typed inputs (n photos each, small spread)."""
    names = list(cascade_vals)
    jit = np.linspace(-0.01, 0.01, n)
    arr = lambda v: v + jit
    cas = Cascade(steps=[1, 2, 3], labels=["logits only", "down to x", "all layers"], groups=["logits", "x", "y"],
                  fraction=[0.3, 0.6, 1.0], n_groups=3,
                  methods={nm: CascadeCurves(spearman=np.array([arr(v) for v in cascade_vals[nm]]), ssim=np.zeros((3, n)),
                                             hog=np.zeros((3, n)), thumbs=np.zeros((3, n, 4, 4))) for nm in names})
    cls = {nm: ClassSensitivity(spearman=arr(class_low[nm]), ssim=np.zeros(n), hog=np.zeros(n)) for nm in names}
    curve = lambda d, i: OrderCurves(np.zeros((n, 5)), np.zeros((n, 5)), arr(d), arr(i))
    curves = {nm: curve(dels[nm], inss[nm]) for nm in names}
    curves["random"] = curve(base[0], base[1])
    curves["centre"] = curve(base[2], base[3])
    inv = inv or {nm: 1.0 for nm in names}
    invd = {nm: Invariance(spearman=np.minimum(1.0, arr(inv[nm])), relative_change=np.zeros(n)) for nm in names}
    frag = frag or {nm: (0.7, 0.7) for nm in names}
    fr = Fragility(kept=np.ones(n, bool), attacked=np.ones(n, bool), p0=np.full(n, 0.9), p1=np.full(n, 0.88), eps255=8.0,
                   frac=0.05, methods={nm: Overlaps(attack=arr(frag[nm][0]), noise=arr(frag[nm][1])) for nm in names})

    class M:
        name = model_title.lower()

        class spec:
            title = model_title

    return M, cas, cls, Faithfulness(4, np.linspace(0, 1, 5), curves, [0.5, 0.5, 0.5]), invd, fr


def _summary(fake, s):
    M, cas, cls, fai, inv, fr = fake
    return verdicts.summarise_model(M, TITLES, cascade=cas, classes=cls, faithfulness=fai, invariance=inv, fragility=fr,
                                    settings=s, expensive=[])


TITLES = {"a": "Method A", "b": "Method B", "c": "Method C"} | verdicts.BASELINES


def _render(s, names, titles, sm, missing=(), template="summary", source=None, **extra):
    """A findings template (``source``: a template's text instead) with the context write_pages gives it, links
    as on the index (check pages side by side: ``randomisation.md``)."""
    from generator.metrics import bootstrap

    env = make_env()
    pages = {c: p.split("/")[1] + ".md" for c, p in findings_pages.PAGE_OF.items()}
    whole = isinstance(sm, verdicts.ModelSummary)  # else only what a check's template reads
    context = dict(
        s=s, names=names, titles=titles, summaries=[sm], missing=list(missing), not_selected=[], low_rank=500,
        cross=verdicts.cross_model([sm]) if whole else {}, and_list=verdicts.and_list, fixed=verdicts.fixed,
        ci=bootstrap.fmt, decided=bootstrap.decided, source="shared", expensive=[], items=[], method_link=lambda n: n,
        link=lambda t: t, check_link=pages.__getitem__, index_link="index.md", anchor=findings_pages.anchor,
        answer=verdicts.answer([sm]) if whole else None, check_pages=findings_pages.CHECK_PAGES, **extra)
    tpl = env.from_string(source) if source is not None else env.get_template(f"findings/{template}.md.j2")
    return tpl.render(**context)


def _lines(s, titles, sm, *checks):
    """The sentences at the top of a model's part of the check pages (findings/lines.md.j2)."""
    macros = "".join(f"{{{{ lines.{c}(one) }}}}\n" for c in checks)
    return _render(s, list(titles), titles, sm, source='{% import "findings/lines.md.j2" as lines with context %}' + macros,
                   one=sm)


def test_statements_follow_the_numbers():
    s = findings.settings(Config({}))
    titles = TITLES
    sm = _summary(_fake(
        "Net", {"a": [0.95, 0.8, 0.6], "b": [0.2, 0.1, 0.0], "c": [0.5, 0.5, 0.5]},
        {"a": 0.97, "b": 0.1, "c": 0.8}, {"a": 0.25, "b": 0.05, "c": 0.35}, {"a": 0.35, "b": 0.7, "c": 0.5},
        inv={"a": 1.0, "b": 0.3, "c": 0.9}, frag={"a": (0.3, 0.7), "b": (0.7, 0.7), "c": (0.8, 0.7)}), s)
    assert isinstance(sm, verdicts.ModelSummary) and sm.fails == sm["fails"] and sm.get("nope", 1) == 1
    assert verdicts.headlines([sm]) == [  # the home page's numbers (findings_headlines)
        ("1 of 3", "methods fail the weight-randomisation check on Net", "findings/index"),
        ("1 of 3", "methods draw nearly the same map whatever the class on Net", "findings/index"),
        ("Method B", "is the most faithful map (deletion and insertion) on Net", "findings/index")]
    assert [h[2] for h in verdicts.headlines([sm], {"sanity": "findings/randomisation", "faithfulness": "f"})] == [
        "findings/randomisation", "findings/index", "f"]
    # the answer the index leads with and the home page quotes, in one sentence
    assert verdicts.answer_headline([sm]) == (
        "Is visualisation enough? No — not on this evidence:",
        "on Net, 1 of 3 methods fails the weight-randomisation check, 1 of 3 draws nearly the same map whatever the "
        "class, 1 of 3 changes under a constant input shift that the model absorbs and 1 of 3 is moved by a tiny "
        "perturbation more than by noise of the same size.", "findings/index")
    assert sm["fails"] == ["Method A"] and sm["passes"] == ["Method B"]
    assert sm["sanity_undecided"] == ["Method C"]  # mean 0.5 ± 0.01 straddles the threshold 0.5
    assert sm["ignores_top"] == ["Method A"]  # 0.95 ≥ 0.9 with only the logits random
    assert sm["insensitive"] == ["Method A"] and sm["class_undecided"] == ["Method C"]
    assert sm["best"].separated and sm["best"].title == "Method B" and sm["best_combined"]["title"] == "Method B"
    assert sm["worst"].separated and sm["worst"].title == "Method A"
    # vs random: A (0.3-0.25)+(0.35-0.3) = 0.10 > 0; B 0.65; C (−0.05)+(0.2) = 0.15
    assert sm["better_than_random"] == ["Method A", "Method B", "Method C"]
    assert sm["not_invariant"] == ["Method B"] and sm["invariant"] == ["Method A"]  # C: 0.9 straddles
    assert sm["fragile"] == ["Method A"]
    assert [r["faith_rank"] for r in sm["rows"]] == [3, 1, 2]
    assert sm["faithful_but_flagged"] == ["Method A"]
    row = sm["rows"][0]
    assert row["cascade_mean"].n == 20 and row["cascade_mean"].lo <= row["cascade_mean"].mean <= row["cascade_mean"].hi
    text = _render(s, ["a", "b", "c"], titles, sm, missing=[{"title": "VGG16"}])
    assert text.startswith("**Is visualisation enough?** **No — not on this evidence.**")
    assert ("[1 of 3 methods fails the weight-randomisation check](randomisation.md), "
            "[1 of 3 methods draws nearly the same map whatever the class](class.md), "
            "[0 of 3 methods do not beat a random pixel order by 0.02](faithfulness.md)") in text
    assert text.index("Is visualisation enough?") < text.index("| Method |") < text.index("The brief of this site")
    glance = [l for l in text.splitlines() if l.startswith("| [Method")]
    assert glance[0].count("](randomisation.md#net)<br>") == 1 and "[**fails**](randomisation.md#net)" in glance[0]
    assert "undecided at n = 20" in text  # Method C's randomisation cell
    lines = _lines(s, titles, sm, "sanity", "class_", "faithfulness", "invariance", "fragility")
    assert "Method A keeps a rank" in lines
    assert "Passing (interval below 0.5): Method B." in lines
    assert "Undecided: Method C." in lines
    assert "Yet Method A beats random" in lines and "[randomisation](randomisation.md#net)" in lines
    across = _render(s, ["a", "b", "c"], titles, sm, missing=[{"title": "VGG16"}], template="across")
    assert "Only Net could be measured" in across and "VGG16" in across

    # the opposite data give the opposite sentences: every verdict decided, none a shortfall
    sm = _summary(_fake("Net", {"a": [0.2, 0.1, 0.0], "b": [0.1, 0.0, 0.0]}, {"a": 0.1, "b": 0.2},
                        {"a": 0.1, "b": 0.05}, {"a": 0.7, "b": 0.8}), s)
    text = _render(s, ["a", "b"], titles, sm)
    lines = _lines(s, titles, sm, "sanity", "class_", "faithfulness")
    assert "No method is shown to fail" in lines and "No method is shown to be class-insensitive" in lines
    assert "**Is visualisation enough?** **No method fell short on these checks.**" in text
    assert "No —" not in text and "Yet " not in lines
    assert verdicts.answer([sm]).kind == "none_short" and verdicts.answer([sm]).shortfalls == []

    # no shortfall shown, one verdict undecided: "not decided", never a pass
    sm = _summary(_fake("Net", {"a": [0.2, 0.1, 0.0]}, {"a": 0.8}, {"a": 0.1}, {"a": 0.7}), s)
    text = _render(s, ["a"], titles, sm)
    assert "**Is visualisation enough?** **Not decided.**" in text and "1 of 5 verdicts\nis undecided at this n" in text
    assert verdicts.answer_headline([sm])[1] == ("no method is shown to fall short on any check, and 1 of 5 verdicts "
                                                 "is undecided at this n.")

    # too few photos: no verdict at all, the numbers and "the full build decides"
    sm = _summary(_fake("Net", {"a": [0.95, 0.8, 0.6]}, {"a": 0.97}, {"a": 0.25}, {"a": 0.35}, n=19), s)
    assert sm["fails"] == [] and sm["sanity_undecided"] == [] and sm["few"]["sanity"] == ["Method A"]
    assert sm["rows"][0]["sanity_verdict"] == "not enough photos (n = 19 < 20): the full build decides"
    assert sm["family"]["k"] == 0
    text = _render(s, ["a"], titles, sm)
    assert "**Is visualisation enough?** **Not decided at this n.**" in text and "No —" not in text
    assert "](randomisation.md#net)<br>0.78 [" in text and "[not enough photos](randomisation.md#net)" in text
    assert ("Not enough photos for a verdict (n < 20; the full build decides): Method A."
            in _lines(s, titles, sm, "sanity"))
    assert verdicts.answer([]) is None and verdicts.answer_headline([]) is None


def test_selectivity_sentences_and_heading_follow_the_numbers():
    """The selectivity page's heading is neutral (it asserted "is not importance" whatever the numbers); the
    sentence per layer is computed from the rank correlation's interval, on both sides."""
    s = findings.settings(Config({}))
    sel = torch.linspace(0.05, 0.95, 30)
    noise = torch.from_numpy(np.random.default_rng(0).normal(0, 0.01, 30)).float()
    layers = {"high": sel * 0.2 + noise, "low": -sel * 0.2 + noise,
              "none": torch.from_numpy(np.random.default_rng(1).permutation(sel.numpy())).float() * 0.2}
    units = selectivity.Units(n=40, n_classes=4, layers={
        name: selectivity.layer_summary(selectivity.LayerUnits(
            seconds=0.0, channels=list(range(30)), selectivity=sel, preferred=torch.zeros(30, dtype=torch.long),
            acc_drop=drop.abs() / 10, prob_drop=drop, base_acc=0.8), seed=0) for name, drop in layers.items()})
    rho = {name: u.rho for name, u in units.layers.items()}
    assert rho["high"].lo > 0.5 and rho["low"].hi < -0.5 and rho["none"].lo < 0 < rho["none"].hi

    class M:
        name = "net"

        class spec:
            title = "Net"

    sm = {"model": M, "units": units, "figures": {"units": "figures/findings/net/selectivity.svg"}}
    text = _render(s, ["a"], TITLES, sm, template="units", units_said=lambda one: verdict_units.summarise_units(one["units"], s))
    said = {l.split("**")[1]: l + next(iter(text.split(l)[1:]), "").split("\n")[1] for l in text.splitlines()
            if l.startswith("- **")}
    assert "the more class-selective units cost more when ablated" in said["high"]
    assert "cost *less* when ablated" in said["low"]
    assert "no relation between selectivity and ablation cost is shown" in said["none"]
    assert "## Net { #net }" in text
    # the heading (the page's title) claims nothing either way, whatever the correlation
    title = next(cp.title for cp in findings_pages.CHECK_PAGES if cp.key == "selectivity")
    assert title == "Selectivity and importance"
    assert not re.search(r"\b(not|no|is)\b", title + " ".join(l for l in text.splitlines() if l.startswith("#")))


def _units_layer(sel, prob_drop, acc_drop, class_acc_drop=None, classes=None, seed=0):
    """A measured layer (selectivity and costs given per unit) as the page gets it."""
    m = len(sel)
    t = lambda v: torch.as_tensor(np.asarray(v, dtype=np.float64))  # noqa: E731
    return selectivity.layer_summary(selectivity.LayerUnits(
        0.0, "", list(range(m)), t(sel), torch.zeros(m, dtype=torch.long), t(acc_drop), t(prob_drop), 0.8,
        None if class_acc_drop is None else t(class_acc_drop), None if classes is None else torch.as_tensor(classes)),
        seed=seed)


def test_selectivity_sentences_flip_on_each_side_of_the_threshold():
    """Each correlation's sentence comes from its interval against ±selectivity_min_rho: a relation when the
    interval lies beyond it, none when it reaches into the band; nothing below min_n units or photos; a
    correlation that clears the threshold but not the Holm correction is undecided."""
    rng = np.random.default_rng(0)
    m = 32
    sel = np.linspace(0.05, 0.95, m)
    prob = 0.5 * sel + rng.normal(0, 0.05, m)  # rho about 0.95: interval well above 0.5, under 0.99
    layer = _units_layer(sel, prob, rng.permutation(np.linspace(0, 0.05, m)))
    lo, hi = layer.rho.lo, layer.rho.hi
    assert 0.5 < lo < hi < 0.99
    units = selectivity.Units(n=40, n_classes=4, layers={"l": layer}, per=m, seed=0)

    def said(**rules):
        s = findings.settings(Config({"findings": rules}))
        return verdict_units.summarise_units(units, s).layers["l"]

    below_t, above_t = said(selectivity_min_rho=round(lo - 0.05, 2)), said(selectivity_min_rho=round(hi + 0.005, 3))
    assert below_t.tests["prob"].verdict == "above" and "the more class-selective units cost more when ablated" in below_t.cost
    assert above_t.tests["prob"].verdict == "none"
    assert "no relation between selectivity and ablation cost is shown" in above_t.cost and "cost more" not in above_t.cost
    # the mirror image: the same correlation negative
    neg = selectivity.Units(n=40, n_classes=4, layers={"l": _units_layer(sel, -prob, np.zeros(m))})
    s = findings.settings(Config({"findings": {"selectivity_min_rho": 0.2}}))
    out = verdict_units.summarise_units(neg, s).layers["l"]
    assert out.tests["prob"].verdict == "below" and "cost *less* when ablated (the interval lies below −0.2)" in out.cost
    assert out.tests["acc"].verdict == "flat"  # no unit changed the accuracy: no correlation, no relation claimed
    assert "every measured unit's is the same" in verdict_units.unit_clause(out.tests["acc"], 0.2, 20)
    # min_n: from 19 units or 19 photos no statement, whatever the interval
    few = selectivity.Units(n=40, n_classes=4, layers={"l": _units_layer(sel[:19], prob[:19], prob[:19])})
    out = verdict_units.summarise_units(few, s).layers["l"]
    assert out.tests["prob"].verdict == "few_units" and "too few units for a statement" in out.cost
    assert "cost more" not in out.cost
    out = verdict_units.summarise_units(selectivity.Units(n=19, n_classes=4, layers={"l": layer}), s).layers["l"]
    assert out.tests["prob"].verdict == "few_photos" and "too few photos" in out.cost
    # Holm: an interval clear of the threshold at an alpha no resampled p-value reaches is "undecided"
    held = said(selectivity_min_rho=0.0, alpha=1e-6)
    assert held.tests["prob"].raw == "above" and held.tests["prob"].verdict == "held"
    assert "but not after the Holm correction" in held.cost and "cost more" not in held.cost


def test_per_class_sentence_compares_overall_and_largest_per_class_drop():
    """Zhou et al.: when selectivity goes with the largest per-class drop but not with the overall drop, the
    sentence says so from the two intervals, with both means; a threshold beyond both intervals says neither."""
    rng = np.random.default_rng(1)
    m, K = 32, 4
    sel = np.linspace(0.05, 0.95, m)
    per_class = rng.uniform(-0.02, 0.02, (m, K))
    per_class[np.arange(m), rng.integers(0, K, m)] = 0.5 * sel + rng.normal(0, 0.02, m)  # the most-affected class: follows selectivity
    overall = rng.permutation(np.linspace(0.0, 0.03, m))  # the overall drop: unrelated
    layer = _units_layer(sel, overall, overall, per_class, [7, 30, 300, 900])
    assert np.allclose(layer.class_drop, per_class.max(1))
    assert list(layer.worst_class) == [[7, 30, 300, 900][k] for k in per_class.argmax(1)]
    assert layer.rho_class.lo > 0.5 and layer.rho_acc.lo < 0 < layer.rho_acc.hi
    units = selectivity.Units(n=40, n_classes=K, layers={"l": layer}, per=m, seed=0)
    s = findings.settings(Config({}))
    out = verdict_units.summarise_units(units, s).layers["l"]
    assert out.tests["class"].verdict == "above" and out.tests["acc"].verdict == "none"
    assert "the more class-selective units cost more to their most-affected class" in out.per_class
    assert "no relation between selectivity and the overall accuracy drop is shown" in out.per_class
    assert verdicts.bootstrap.fmt(layer.class_mean, 3) in out.per_class and f"n = {m} units" in out.per_class
    s = findings.settings(Config({"findings": {"selectivity_min_rho": round(layer.rho_class.hi + 0.01, 2)}}))
    out = verdict_units.summarise_units(units, s).layers["l"]
    assert "no relation between selectivity and either accuracy drop is shown" in out.per_class
    assert "cost more" not in out.per_class


def test_selectivity_page_says_how_many_units_and_that_preview_used_fewer():
    sel = np.linspace(0.05, 0.95, 8)
    units = selectivity.Units(n=50, n_classes=10, layers={"l": _units_layer(sel, sel, sel)}, per=8, seed=3)
    s = findings.settings(Config({}))
    prev = verdict_units.summarise_units(units, s, profile="preview", full_per=32)
    assert "8 units per layer, drawn at random with seed 3" in prev.count
    assert "The **preview** profile ablates 8 units per layer, fewer than the 32 of the full build" in prev.fewer
    assert "no layer gets a statement here" in prev.fewer
    assert verdict_units.summarise_units(units, s, profile="full", full_per=32).fewer == ""

    class M:
        name = "net"

        class spec:
            title = "Net"

    sm = {"model": M, "units": units, "figures": {"units": "figures/findings/net/selectivity.svg"}}
    text = _render(s, ["a"], TITLES, sm, template="units",
                   units_said=lambda one: verdict_units.summarise_units(one["units"], s, "preview", 32))
    assert "8 units per layer, drawn at random with seed 3" in text and "fewer than the 32 of the full build" in text


def test_cross_model_agreement():
    z = verdicts.Extreme("best", "z", "Z", 0.5, True, [], {}, [])
    a = {"model": None, "fails": ["X", "Y"], "insensitive": ["X"], "best": z}
    b = {"model": None, "fails": ["X"], "insensitive": [], "best": z}
    for sm, n in ((a, "m1"), (b, "m2")):
        sm["model"] = type("M", (), {"name": n})
    cr = verdicts.cross_model([a, b])
    assert cr["fail_all"] == ["X"] and cr["fail_some"] == ["Y"]
    assert cr["ins_all"] == [] and cr["ins_some"] == ["X"]
    assert cr["best_agree"] and cr["best"] == {"m1": "Z", "m2": "Z"} and cr["best_tied"] == {}
    # a best that no paired interval separates is "tied", and then the models do not "agree"
    b["best"] = verdicts.Extreme("best", "z", "Z", 0.5, False, ["W"], {}, [])
    cr = verdicts.cross_model([a, b])
    assert not cr["best_agree"] and cr["best"] == {"m1": "Z", "m2": None} and cr["best_tied"] == {"m2": ["Z", "W"]}


def test_settings_merge_and_helpers():
    s = findings.settings(Config({"findings": {"images": 2, "method_params": {"smoothgrad": {"sigma": 0.2}}}}))
    assert probes.scaled(s, "images") == 2 and probes.scaled({**s, "n_scale": 10.0}, "expensive_images") == 10 * s["expensive_images"]
    assert s["images"] == 2 and s["cascade_steps"] == findings.DEFAULTS["cascade_steps"]
    assert s["method_params"]["smoothgrad"] == {"samples": 12, "sigma": 0.2}
    assert A.SmoothGrad.findings_params == {"samples": 12}  # the class's settings are not mutated
    assert verdicts.and_list(["a"]) == "a" and verdicts.and_list(["a", "b", "c"]) == "a, b and c"
    assert verdicts.fixed(-0.123) == "−0.12" and verdicts.fixed(float("nan")) == "–"


def test_stage_is_reproducible_without_the_cache(tmp_path, tiny):
    """Two cold runs (separate caches): the same numbers, sentences and figure bytes."""
    folder = _labelled_folder(tmp_path / "labelled")
    pages, figs = [], []
    for run in ("a", "b"):
        ctx = _ctx(tmp_path / run, tiny, folder)
        ctx.config.data["findings"]["methods"] = ["saliency", "guided_backprop", "smoothgrad", "gradcam"]
        findings.run(ctx)
        ctx.site.finish()
        text = "".join((ctx.out / "findings" / f"{k}.md").read_text()
                       for k in ["index", *(cp.key for cp in findings_pages.CHECK_PAGES)])
        # compute times are measurements of this machine, not results
        pages.append("\n".join(l for l in text.splitlines() if " s, " not in l and "(total" not in l))
        figs.append({p.relative_to(ctx.out): p.read_bytes() for p in (ctx.out / "figures").rglob("*") if p.is_file()})
    assert pages[0] == pages[1]
    # + invariance, fragility, selectivity; + the PNG twin of sanity-maps.webp; + figures.json (what each figure shows);
    # + each SVG plot's PDF twin (its download for LaTeX)
    svg = [p for p in figs[0] if p.suffix == ".svg"]
    assert figs[0] == figs[1] and len(figs[0]) == 6 + 4 + 1 + 1 + 1 + len(svg)
    assert len(svg) == 10 and all(p.with_suffix(".pdf") in figs[0] for p in svg)


def test_transfer_section_reads_the_judge_table_of_the_configured_generator(tmp_path):
    """The Findings page's class-visualisation evidence: the judge table beside the configured generator,
    only when it was measured with that file; per-row top-5 with an interval over classes (a PPGN
    chain's samples are one class); the summary sentence follows the numbers."""
    import json
    import types

    from generator.stages import dgn_am

    gen = tmp_path / "g.pt"
    gen.write_bytes(b"generator bytes")
    cfg = Config({"dgn_am": {"generator": str(gen)}})
    ctx = types.SimpleNamespace(config=cfg, stage_settings=lambda st: dgn_am.settings(cfg))
    env = make_env()

    def page(tr):
        return env.get_template("findings/transfer.md.j2").render(transfer=tr, link=lambda t: t)

    assert "not measured for g.pt yet" in page(findings_pages.transfer_evidence(ctx))  # no table
    classes = list(range(40))
    pairs = [{"maker": "efficientnet_lite0", "judge": "efficientnet_lite2", "what": "photos", "classes": classes,
              "rows": {"photo": {"ranks": [0] * 40}}},
             {"maker": "efficientnet_lite0", "judge": "efficientnet_lite2", "what": "visualisations", "classes": classes,
              "rows": {"dgn_am": {"ranks": [0 if c < 20 else 50 for c in classes]},          # 50 % of the classes
                       "pixel-plain": {"ranks": [900] * 40},                                   # 0 %
                       "ppgn": {"ranks": [r for c in classes for r in ((0, 3) if c < 30 else (0, 99))]}}}]  # 2 samples per chain
    summary = {"photo": {"n": 40, "top5": 1.0}, "dgn_am": {"n": 40, "top5": 0.5}, "pixel-plain": {"n": 40, "top5": 0.0},
               "ppgn": {"n": 80, "top5": 0.875}}
    contrast = {"prior": "ppgn", "pixel": "pixel-plain", "mean": 0.875, "lo": 0.78, "hi": 0.95, "n": 40}
    table = {"generator_sha256": hashlib.sha256(b"generator bytes").hexdigest(), "classes": classes, "steps": 100,
             "ppgn": {"steps": 600}, "pairs": pairs, "summary": summary, "contrast": contrast, "takeaway": "t"}
    gen.with_suffix(".judge.json").write_text(json.dumps(table))
    tr = findings_pages.transfer_evidence(ctx)
    by = tr["by_key"]
    assert [r["key"] for r in tr["rows"]] == ["photo", "dgn_am", "ppgn", "pixel-plain"]  # the judge table's row order
    assert by["dgn_am"]["top5"].mean == 0.5 and by["dgn_am"]["top5"].lo < 0.5 < by["dgn_am"]["top5"].hi
    assert by["ppgn"]["top5"].n == 40 and by["ppgn"]["pictures"] == 80 and by["ppgn"]["top5"].mean == pytest.approx(0.875)
    assert by["pixel-plain"]["top5"].hi == 0.0
    text = page(tr)
    assert "| DGN-AM | 50 % [" in text and "| 40 / 80 |" in text and "EfficientNet-Lite0 → EfficientNet-Lite2 (photos, DGN-AM, pixel-space plain, PPGN)." in text
    assert "**yes**, the interval clears 0" in text and "+88 points" in text
    assert "Per maker → judge pair" not in text  # one pair: the table says it all
    two = {**table, "pairs": [*pairs, {"maker": "efficientnet_lite2", "judge": "efficientnet_lite1", "what": "visualisations",
                                       "classes": classes, "rows": {"dgn_am": {"ranks": [50] * 40, "top5": 0.0}}}]}
    two["pairs"][1]["rows"]["dgn_am"]["top5"] = 0.5
    gen.with_suffix(".judge.json").write_text(json.dumps(two))
    text2 = page(findings_pages.transfer_evidence(ctx))
    assert ("Per maker → judge pair (top-5): EfficientNet-Lite0 → EfficientNet-Lite2: DGN-AM 50 %; "
            "EfficientNet-Lite2 → EfficientNet-Lite1: DGN-AM 0 %.") in text2
    assert findings_pages.transfer_evidence(ctx)["by_key"]["dgn_am"]["top5"].n == 80  # classes × makers
    gen.with_suffix(".judge.json").write_text(json.dumps(table))
    undecided = page({**tr, "contrast": {**contrast, "mean": 0.1, "lo": -0.05, "hi": 0.25}})
    assert "**undecided at n = 40 classes**" in undecided and "**yes**" not in undecided
    # the summary's sentence follows the numbers
    s = findings.settings(Config({}))
    titles = TITLES
    sm = _summary(_fake("Net", {"a": [0.2, 0.1, 0.0]}, {"a": 0.1}, {"a": 0.1}, {"a": 0.7}), s)
    from generator.metrics.bootstrap import Interval
    summ = " ".join(_render(s, ["a"], titles, sm, transfer=tr).split())
    assert ("[Class visualisations](transfer.md), pictures optimised to raise a class's probability in the network that "
            "made them, are recognised by a different network (top-5 rate): DGN-AM 50 %, PPGN samples 88 %, pixel-space "
            "plain 0 %, against 100 % for real photos of the classes — each below the photos' rate, with the 95 % "
            "intervals apart: the maker's own confidence did not carry over to another network.") in summ
    # where an interval reaches the photos', no such conclusion
    near = {**tr, "by_key": {**by, "photo": {**by["photo"], "top5": Interval(0.6, 0.4, 0.8, 40)}}}
    summ = " ".join(_render(s, ["a"], titles, sm, transfer=near).split())
    assert "against 60 % for real photos of the classes (intervals and n on its page)." in summ
    assert "did not carry over" not in summ
    # a table measured with another generator file is not shown as this one's
    gen.write_bytes(b"retrained generator")
    assert "another generator file" in page(findings_pages.transfer_evidence(ctx))
    gen.unlink()
    assert "was not found" in page(findings_pages.transfer_evidence(ctx))
