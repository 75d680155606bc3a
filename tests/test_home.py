"""The home stage: its numbers come only through declared artifacts (no second pass over other stages' dicts)."""
from __future__ import annotations

import pytest
import torch

from generator import stages
from generator.build import BuildContext
from generator.cache import Cache
from generator.config import Config, ConfigError
from generator.site import Headline, SiteWriter
from generator.stages import home
from generator.util import StageTimer


def _ctx(tmp_path):
    out = tmp_path / "out"
    ctx = BuildContext(config=Config({"build": {"models": [], "stages": ["home"]}}), models=[], missing={}, images=[],
                       skipped=[], notes=[], cache=Cache(tmp_path / "cache"), site=SiteWriter(out),
                       device=torch.device("cpu"), batch_size=4, timer=StageTimer(), out=out)
    ctx.site.declare("home", "Home")
    ctx.site.declare("methods/index", "Methods", order=0)
    return ctx


def _home(ctx) -> str:
    return "\n".join(s.body for s in ctx.site.pages["home"].sections)


def test_headlines_come_from_the_declared_artifacts_in_order(tmp_path):
    ctx = _ctx(tmp_path)
    ctx.provide("findings_headlines", [Headline("3 of 7", "methods fail the weight-randomisation check on Lite0",
                                                "findings/randomisation")])
    ctx.provide("compare_headlines", [Headline("0.41", "rank correlation between models' Grad-CAM maps",
                                               "methods/compare")])
    ctx.site.declare("methods/gradcam", "Grad-CAM", order=23)
    home.run(ctx)
    md = _home(ctx)
    first, second = md.index("**3 of 7**"), md.index("**0.41**")
    assert first < second  # the findings' numbers first
    assert "(generated/findings/randomisation.md)" in md and "(generated/methods/compare.md)" in md
    assert "Is visualisation enough?" not in md  # no answer provided, none shown
    methods = "\n".join(s.body for s in ctx.site.pages["methods/index"].sections)
    assert "[Grad-CAM](gradcam.md)" in methods


def test_the_findings_answer_is_the_sentence_above_the_headlines(tmp_path):
    """The findings' headline that links to the Findings index is their answer (verdicts.answer_headline):
    one sentence at the top of the home page, not a box among the numbers; it follows the numbers."""
    from generator.metrics import verdicts

    answer = ("Is visualisation enough? No — not on this evidence:",
              "on Lite0, 3 of 7 methods fail the weight-randomisation check.", "findings/index")
    ctx = _ctx(tmp_path)
    ctx.provide("findings_headlines", [Headline(*answer), Headline("3 of 7", "methods fail …", "findings/randomisation")])
    home.run(ctx)
    sections = sorted(ctx.site.pages["home"].sections, key=lambda s: s.order)
    assert sections[0].body == ("**Is visualisation enough? No — not on this evidence:** on Lite0, 3 of 7 methods fail "
                                "the weight-randomisation check ([the findings](generated/findings/index.md)).\n")
    md = _home(ctx)
    assert md.count("Is visualisation enough?") == 1 and "- [**3 of 7**" in md  # the numbers stay boxes
    # the sentence is the findings' own, computed: an answer with no verdict says so, never "No"
    sm = verdicts.ModelSummary(model=None, rows=[], baselines={}, fragility=None, labels=[], fraction=[], n_groups=0,
                               n_images=0, n_sanity=0, rules=verdicts.rules({"min_n": 20}))
    sm.model = type("M", (), {"name": "m", "spec": type("S", (), {"title": "Lite0"})})
    value, label, page = verdicts.answer_headline([sm])
    assert value == "Is visualisation enough? Not decided at this n:" and "no check reached 20 photos" in label
    assert page == home.ANSWER_PAGE


def test_compare_headline_names_a_method_only_where_a_paired_interval_separates_it(tmp_path):
    """The comparison's headline is verdicts.consistency's: the most consistent method, the tied ones, or
    no ranking below [findings] min_n — computed from per-photo numbers, never from the means alone."""
    import numpy as np

    from generator.stages import compare

    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 30)
    titles = {"gc": "Grad-CAM", "sg": "SmoothGrad <2>"}
    cases = {"separated": {"gc": base + 0.05 + rng.normal(0, 0.01, 30), "sg": base + rng.normal(0, 0.01, 30)},
             "tied": {"gc": base + 0.002 + rng.normal(0, 0.1, 30), "sg": base + rng.normal(0, 0.1, 30)}}
    cases["few"] = {k: v[:8] for k, v in cases["separated"].items()}
    shown, means = {}, {}
    for kind, values in cases.items():
        ag, said = compare.summarise(values, titles, {"min_n": 20})
        assert said.kind == kind
        means[kind] = ag.rows[0]["mean"]
        ctx = _ctx(tmp_path / kind)
        ctx.provide("compare_headlines", [Headline(said.value, said.label, compare.PAGE)])
        home.run(ctx)
        shown[kind] = _home(ctx)
    assert (f"- [**{means['separated']:.2f}** rank correlation between models&#x27; Grad-CAM maps, the most "
            f"consistent method (separated by paired intervals, n = 30)](generated/methods/compare.md)"
            ) in shown["separated"]
    assert "- [**tied** most consistent method across models:" in shown["tied"]
    assert "SmoothGrad &lt;2&gt;" in shown["tied"]
    assert "are not told apart by a paired interval (n = 30)" in shown["tied"]
    assert "the most consistent method" not in shown["tied"]
    assert ("- [**not ranked** which method&#x27;s maps agree most across models: 8 photos are too few for a ranking "
            "(it needs 20)](generated/methods/compare.md)") in shown["few"]
    assert "Grad-CAM" not in shown["few"]


def test_headline_text_is_escaped(tmp_path):
    ctx = _ctx(tmp_path)
    ctx.provide("findings_headlines", [Headline("<b>1</b>", "on <script>x</script>", "findings/index")])
    home.run(ctx)
    md = _home(ctx)
    assert "<script>" not in md and "&lt;script&gt;" in md


def test_nothing_built_nothing_shown(tmp_path):
    ctx = _ctx(tmp_path)
    home.run(ctx)
    assert "headlines" not in _home(ctx) and "figure" not in _home(ctx)


def test_home_must_run_after_the_stages_it_shows():
    stages.plan(["overview", "attribution", "compare", "findings", "home"])
    with pytest.raises(ConfigError, match="home"):
        stages.plan(["overview", "attribution", "home", "compare"])
