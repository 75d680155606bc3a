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
