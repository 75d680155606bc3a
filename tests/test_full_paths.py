"""The findings' paths that only the ``full`` profile switches on (generator/profiles.py; every other test builds
with preview-sized settings): the attack on each *expensive* differentiable method's own map
(``fragility_own_expensive_images > 0``), the independent-layer randomisation of the expensive methods
(``independent_expensive_images > 0``), a second seed of the cascade's random weights (``cascade_seeds = 2``)
and Integrated Gradients' adaptive steps (``[findings.method_params.integrated_gradients] max_steps > 0``).

One cold build of the findings stage on a tiny network with the full profile at tiny n: its pages hold the
rows those settings add, and the plan's counted work (generator/workload.py) equals the images the build
sent through the classifier, counted as tests/test_plan.py counts them."""
from __future__ import annotations

import re
from collections import defaultdict

import pytest

from generator import plan, profiles
from generator.methods.attribution import ATTRIBUTION_METHODS
from generator.stages import findings as findings_stage
from test_plan import SMALL, TINY_A, _by_stage, count_compares, small_config, tiny_registry  # noqa: F401 - tiny_registry: a fixture

#: one cheap method and two expensive ones (both differentiable: attacked through their own maps)
METHODS = ["saliency", "smoothgrad", "integrated_gradients"]
IG_CAP = 9  # Integrated Gradients from 3 points, intervals doubled up to 9 (3 → 5 → 9)
#: the full-only settings at tiny n (the preview profile gives 1, 0, 0 and max_steps 0)
FULL_ONLY = {"cascade_seeds": 2, "independent_expensive_images": 1, "fragility_own_expensive_images": 2}
CHECKS = ("trained_maps", "cascade_results", "faithfulness_results", "invariance_results", "fragility_results",
          "unit_results", "accuracy_results")


def full_config(root):
    """tests/test_plan.py's tiny config, the findings stage alone on one network, the ``full`` profile with the
    full-only settings at tiny n. Integrated Gradients' ``max_delta`` is tiny so that every photo is refined up to
    the cap: the plan prices the points a photo is expected to end with, which is then the cap, so the counts are
    exact. One cap for every map (``max_steps_predicted`` as ``max_steps``): whether a partly randomised or attacked
    tiny network still predicts a photo's class is chance, and the plan prices the maps by their purpose
    (tests/test_ig_adaptive.py tests the two caps)."""
    cfg = small_config(root)
    cfg.override(models=[TINY_A.name], stages=["findings"], profile="full")
    cfg.data["findings"].update({
        "methods": METHODS, "sanity_images": 2, "sanity_expensive_images": 1, "independent_images": 2,
        "fragility_own_images": 1, "faithfulness_check_images": 1, **FULL_ONLY,
        "method_params": {**SMALL, "integrated_gradients": {"steps": 3, "max_steps": IG_CAP, "max_delta": 1e-9,
                                                            "max_steps_predicted": IG_CAP}}})
    return cfg


def test_the_settings_tested_here_are_the_full_profiles_and_not_previews():
    full, preview = profiles.SETTINGS["full"]["findings"], profiles.SETTINGS["preview"]["findings"]
    for k, v in FULL_ONLY.items():
        assert preview[k] < v <= full[k], k
    assert profiles.method_params("preview", "findings")["integrated_gradients"]["max_steps"] == 0
    ig = ATTRIBUTION_METHODS["integrated_gradients"]
    assert "integrated_gradients" not in profiles.method_params("full", "findings")
    assert ig.findings_params["max_steps"] >= IG_CAP and ig.levels({"steps": 3, "max_steps": IG_CAP}) == [3, 5, 9]


def _table(page: str, head: str) -> list[str]:
    """The rows of the first Markdown table at or after the line starting with ``head`` (header and rule left out)."""
    lines = page.splitlines()
    i = next(j for j, line in enumerate(lines) if line.startswith(head))
    start = next(j for j in range(i, len(lines)) if lines[j].startswith("|"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


@pytest.mark.slow
def test_the_full_only_paths_build_their_rows_and_the_plan_counts_their_passes(tmp_path, tiny_registry, one_thread,
                                                                               monkeypatch):
    from generator.build import run_build

    monkeypatch.setenv("CNNVIS_NO_PROGRESS", "1")
    compared = count_compares(monkeypatch)  # map pairs through the similarity measures, as in test_plan
    frag = {}  # model → the fragility result: which photos each attack perturbed (only those are mapped again)
    original = findings_stage.fragility_results

    def recording(ctx, model, *a, **k):
        frag[model.name] = out = original(ctx, model, *a, **k)
        return out

    monkeypatch.setattr(findings_stage, "fragility_results", recording)
    cfg = full_config(tmp_path)
    lines: list[str] = []
    with plan.count_images(stages=["findings"], checks=CHECKS) as counts:
        res = run_build(cfg, say=lines.append, rehearsal=True)
    ctx = res.ctx
    assert ctx.plan is not None and ctx.config.profile == "full", lines
    (model,) = ctx.models
    s = ctx.stage_settings("findings")
    assert [s[k] for k in FULL_ONLY] == list(FULL_ONLY.values())
    assert s["method_params"]["integrated_gradients"]["max_steps"] == IG_CAP

    # ---- the pages: the rows the full-only settings add
    out = ctx.out / "findings"
    index, rnd, frg, inv = ((out / f"{p}.md").read_text() for p in ("index", "randomisation", "fragility", "invariance"))
    title = {n: ATTRIBUTION_METHODS[n].title for n in METHODS}
    assert "Built with the **full** profile" in index
    assert "photos in the independent-layer randomisation, expensive methods (0 = none) 1 (set in the config)" in index
    # the independent randomisation: the cheap method on its 2 photos, each expensive one (†) on 1 (preview: none)
    ind = _table(rnd, "Independent randomisation: only the named group random")
    assert [r.split(" | ")[:2] for r in ind] == [[f"| {title['saliency']}", "2"],
                                                 [f"| {title['smoothgrad']} †", "1"],
                                                 [f"| {title['integrated_gradients']} †", "1"]], ind
    # two seeds of the random weights: a column per seed and their paired difference, a row per method
    seeds = _table(rnd, "Cascade mean of the Spearman rank correlation (|map|) per seed")
    assert "| Seed 0 | Seed 1 | Seed 1 − seed 0 (paired) |" in rnd
    assert [r.split(" | ")[0] for r in seeds] == [f"| {title['saliency']}", f"| {title['smoothgrad']} †",
                                                 f"| {title['integrated_gradients']} †"], seeds
    # fragility: every method attacked through its own map (preview: the expensive ones by the shared proxy), so
    # no proxy attack ran; the own attacks' table: saliency on 1 photo, the expensive methods on 2
    rows = _table(frg, "| Method | Attack | n |")
    assert len(rows) == 3 and all(" | own map | " in r for r in rows), rows
    assert all(" † | own map | " in r for r in rows if "Saliency" not in r)
    assert "The shared proxy attack found" not in frg
    own = _table(frg, "| Method | photos | perturbed |")
    for name, k in (("saliency", 1), ("smoothgrad", 2), ("integrated_gradients", 2)):
        assert any(re.match(rf"\| \[{re.escape(title[name])}\]\([^)]*\) \| {k} \| ", r) for r in own), (name, own)
    # Integrated Gradients refined up to the cap on the shift-absorbing copy (preview: 3 points, not refined)
    assert f"On the shift-absorbing copy, with its fixed baseline: {title['integrated_gradients']} used {IG_CAP} points" \
        in inv and f"stopped by `max_steps = {IG_CAP}`" in inv

    # ---- the plan: what workload.findings counts is what the build sent through the classifier
    d = plan.work_dict(ctx, "findings", model)
    want = ctx.plan.row(model.name, "findings").work
    size = model.spec.input_size
    by_check: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (stage, check, sz, grad), n in counts.items():
        if stage == "findings" and sz == size:
            by_check[check][int(grad)] += n
    report = "\n".join(f"{c:<22} counted {f:>6} F {g:>6} ∇" for c, (f, g) in sorted(by_check.items()))
    report += f"\nplanned {want.forward} F {want.gradient} ∇ ({want.double} double backward), {want.compares} compares"
    # the cascade's runs in the plan: both seeds and the independent run, for the expensive group (1) too
    cascade = [c for c in d["calls"] if c["photos"][0] == "cascade"]
    assert {(c["net"][:-3], c["net"][-3]) for c in cascade} == {
        (run, g) for run in (("random", 0), ("random", 1), ("independent",)) for g in (0, 1)}
    # the maps of a photo's own top-1 class on the trained network (priced at the points such photos end with):
    # half of the maps step (the other half: a random class), all of the invariance step, none of the cascade
    tops = {tag: {(c["images"], c["top1"]) for c in d["calls"] if c["photos"][0] == tag}
            for tag in ("maps", "invariance", "cascade")}
    assert all(t == i // 2 for i, t in tops["maps"]) and all(t == i for i, t in tops["invariance"]), tops
    assert {t for _i, t in tops["cascade"]} == {0}, tops
    # the checks made of method calls alone, each exactly (the calls of different checks share no noisy gradients)
    for check, tag in (("trained_maps", "maps"), ("cascade_results", "cascade"), ("invariance_results", "invariance")):
        w = plan.price_calls([c for c in d["calls"] if c["photos"][0] == tag], model)
        assert tuple(by_check[check]) == (w.forward, w.gradient), f"{check}\n{report}"
    # the own-map attacks' double backward passes: per step, photo and image through the softplus copy
    steps, params = int(s["fragility_steps"]), s["method_params"]
    assert want.double == steps * (1 * 1 + 2 * params["smoothgrad"]["samples"] + 2 * params["integrated_gradients"]["steps"])
    # the whole stage: exact, but for the maps of photos an attack left as they were (planned, not made)
    got = frag[model.name]
    assert set(got.methods) == set(METHODS) and all(o.own for o in got.methods.values())
    short = []
    for name, o in got.methods.items():
        k = sum(c["images"] for c in d["calls"] if c["photos"][0] == "fragility" and c["method"] == name) // 2
        assert 0 < len(o.attack) <= k, name
        short.append({"method": name, "params": params[name], "images": 2 * (k - len(o.attack)),
                      "photos": ("not perturbed", name)})
    left = plan.price_calls(short, model)
    assert _by_stage(counts, size)["findings"] == (want.forward - left.forward, want.gradient - left.gradient), report
    assert not want.via and want.partial == 0
    assert compared[0] == want.compares > 0, report
    print(report)
