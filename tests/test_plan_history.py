"""The plan learns this machine's measured / estimated ratio from its earlier cold builds
(generator/plan_history.py): which stages record, which factor the next plan uses, and what the plan says."""
from __future__ import annotations

import json

import pytest

from generator import plan, plan_history
from test_plan import TINY_A, TINY_B, small_config, tiny_registry  # noqa: F401 (a fixture)

HERE = {"device": "cpu", "cpu": "Test CPU", "gpu": "", "torch": "2.0", "threads": 2}
THERE = {**HERE, "cpu": "Another CPU"}


def test_a_factor_is_the_median_of_the_last_three_cold_ratios_of_that_stage_model_and_machine(tmp_path):
    store = tmp_path / "h.json"
    raw = {("findings", "a"): (100.0, "w1"), ("findings", "b"): (100.0, "w1"), ("atlas", "a"): (5.0, "w1")}
    for t, r in enumerate([9.0, 1.2, 1.5, 1.3]):  # the oldest (9.0) is not among the last three
        got = plan_history.record(HERE, raw, {"findings": {"a": 100 * r, "b": 50.0}, "atlas": {"a": 50.0}},
                                  ["findings", "atlas"], "preview", store=store, now=1000.0 + t)
        # the atlas' estimate is below MIN_SECONDS: its ratio says little and is not kept
        assert {(s, m) for s, m, _ in got} == {("findings", "a"), ("findings", "b")}
    # other work (another signature): the median ratio, whatever the raw estimate
    other = {("findings", "a"): (40.0, "w2"), ("findings", "b"): (40.0, "w2"), ("atlas", "a"): (40.0, "w2")}
    f = plan_history.factors(HERE, other, store=store, now=1010.0)
    assert f[("findings", "a")] == (pytest.approx(1.3), 3)
    assert f[("findings", "b")] == (pytest.approx(0.5), 3)
    assert ("atlas", "a") not in f
    # the same work again, with a calibration that made the raw estimate 80 s instead of 100 s: the estimate becomes
    # the median measured time (130 s), so this build's calibration does not enter
    same = plan_history.factors(HERE, {("findings", "a"): (80.0, "w1")}, store=store, now=1010.0)
    assert same[("findings", "a")] == (pytest.approx(130.0 / 80.0), 3)
    # another machine, or records past their age, give nothing
    assert plan_history.factors(THERE, other, store=store, now=1010.0) == {}
    assert plan_history.factors(HERE, other, store=store, now=1010.0 + plan_history.MAX_AGE_DAYS * 86400) == {}


def test_a_ratio_carries_only_to_the_same_profile_the_same_work_to_any(tmp_path):
    store = tmp_path / "h.json"
    raw = {("dgn_am", "a"): (100.0, "preview-work")}
    for t in range(3):  # three preview builds: measured 0.7 of the estimate
        plan_history.record(HERE, raw, {"dgn_am": {"a": 70.0}}, ["dgn_am"], "preview", store=store, now=10.0 + t)
    full = {("dgn_am", "a"): (400.0, "full-work")}
    # a full build's other work: no full record, so its raw estimate stays (no factor), while a preview build of
    # other work takes the preview ratio, and a caller that names no profile takes any record's
    assert plan_history.factors(HERE, full, store=store, now=20.0, profile="full") == {}
    assert plan_history.factors(HERE, full, store=store, now=20.0, profile="preview")[("dgn_am", "a")][0] == \
        pytest.approx(0.7)
    assert plan_history.factors(HERE, full, store=store, now=20.0)[("dgn_am", "a")][0] == pytest.approx(0.7)
    # one full build recorded: its ratio (1.1) is the full plan's factor, the preview records left out
    plan_history.record(HERE, full, {"dgn_am": {"a": 440.0}}, ["dgn_am"], "full", store=store, now=21.0)
    assert plan_history.factors(HERE, {("dgn_am", "a"): (500.0, "full-work-2")}, store=store, now=22.0,
                                profile="full") == {("dgn_am", "a"): (pytest.approx(1.1), 1)}
    # the same work measured before is its measured time, whichever profile recorded it
    assert plan_history.factors(HERE, {("dgn_am", "a"): (50.0, "preview-work")}, store=store, now=22.0,
                                profile="full")[("dgn_am", "a")][0] == pytest.approx(70.0 / 50.0)


def test_only_cold_stages_record_and_factors_are_cut_to_their_range(tmp_path):
    store = tmp_path / "h.json"
    raw = {("findings", "a"): (100.0, "w"), ("attribution", "a"): (100.0, "w")}
    # a warm stage (the cache answered it) would teach the plan a ratio near 0: not recorded
    got = plan_history.record(HERE, raw, {"findings": {"a": 2.0}, "attribution": {"a": 900.0}}, ["attribution"],
                              store=store, now=5.0)
    assert got == [("attribution", "a", pytest.approx(9.0))]
    assert plan_history.factors(HERE, raw, store=store, now=6.0)[("attribution", "a")][0] == plan_history.CLAMP[1]
    assert plan_history.cold(hits=0, misses=10) and plan_history.cold(hits=1, misses=99)
    assert not plan_history.cold(hits=10, misses=10) and not plan_history.cold(hits=0, misses=0)


def test_an_unreadable_or_switched_off_history_changes_nothing(tmp_path, monkeypatch):
    bad = tmp_path / "h.json"
    bad.write_text("{not json")
    assert plan_history.factors(HERE, {("findings", "a"): (100.0, "w")}, store=bad) == {}
    plan_history.record(HERE, {("findings", "a"): (100.0, "w")}, {"findings": {"a": 120.0}}, ["findings"], store=bad)
    assert json.loads(bad.read_text())  # replaced by a readable file with the new record
    monkeypatch.setenv("CNNVIS_PLAN_HISTORY", "off")
    assert plan_history.path() is None
    monkeypatch.setenv("CNNVIS_PLAN_HISTORY", str(tmp_path / "x.json"))
    assert plan_history.path() == tmp_path / "x.json"


def test_a_plan_multiplies_its_estimates_by_the_factors_and_says_so():
    rows = [plan.Row("a", "findings", plan.Work(forward=10), 100.0), plan.Row("a", "atlas", plan.Work(forward=1), 10.0)]
    p = plan.Plan(["findings", "atlas"], ["a"], rows, {})
    assert p.total == p.raw_seconds() == 110.0 and p.correction_note() == ""
    p.factors = {("findings", "a"): (1.4, 2)}
    assert p.seconds("findings") == pytest.approx(140.0) and p.seconds("atlas") == 10.0
    assert p.total == pytest.approx(150.0) and p.raw_seconds() == 110.0
    note = p.correction_note()
    assert "1 of the 2 estimates (×1.40)" in note and "up to 2 build(s)" in note and "1.8 min in all" in note
    assert any("corrected by this machine's earlier cold builds" in line for line in p.lines())
    page = plan.page_markdown(p, {"findings": 150.0, "atlas": 9.0}, date="2026-01-01")
    assert "without it the stages were estimated at 1.8 min" in page and "plan_history.py" in page


def test_a_cold_build_teaches_the_next_plan_on_the_same_machine(tmp_path, tiny_registry, one_thread, monkeypatch):  # noqa: F811
    """A cold build records its stages' ratios; the next build's plan (another cache: cold again) carries them as
    factors; a rebuild from a warm cache records nothing."""
    from generator.build import run_build

    store = tmp_path / "history.json"
    monkeypatch.setenv("CNNVIS_PLAN_HISTORY", str(store))
    monkeypatch.setattr(plan_history, "MIN_SECONDS", 0.0)  # the tiny networks' estimates are far below a second
    cfg = small_config(tmp_path / "one")
    cfg.override(stages=["overview", "attribution"])
    said: list[str] = []
    res = run_build(cfg, say=said.append, rehearsal=True)
    assert res.exit_code == 0, said
    assert not res.ctx.plan.factors  # nothing known before the first build
    kept = json.loads(store.read_text())
    assert len(kept) == 1
    (entries,) = kept.values()
    assert set(entries) == {f"attribution|{m}" for m in (TINY_A.name, TINY_B.name)}
    assert any("kept for the next plan on this machine" in s for s in said)

    again: list[str] = []
    res2 = run_build(cfg, say=again.append, rehearsal=True)  # the same cache: warm
    assert set(res2.ctx.plan.factors) == {("attribution", TINY_A.name), ("attribution", TINY_B.name)}
    assert json.loads(store.read_text()) == kept  # a warm stage teaches nothing
    p = res2.ctx.plan
    for (stage, model), (factor, builds) in p.factors.items():
        assert builds == 1
        assert p.seconds(stage, model) == pytest.approx(p.raw_seconds(stage, model) * factor)
        # the same work as the first build: the estimate is what the first build measured (this one's calibration aside)
        (rec,) = entries[f"{stage}|{model}"]
        assert rec["work"] == plan_history.signature(p.row(model, stage).work)
        assert p.seconds(stage, model) == pytest.approx(min(max(rec["measured"], plan_history.CLAMP[0] * p.raw_seconds(
            stage, model)), plan_history.CLAMP[1] * p.raw_seconds(stage, model)))
    assert any("corrected by this machine's earlier cold builds" in s for s in again)
