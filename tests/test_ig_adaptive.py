"""Integrated Gradients with its steps chosen per photo (completeness error below ``max_delta``, Captum's
convergence delta made relative), the cap that bounds them, the plan's price, and the input-invariance
remedy (Kindermans et al. 2017: a baseline moved along with the input) — on tiny networks with analytic
answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from generator import plan
from generator.methods.attribution import ATTRIBUTION_METHODS, IntegratedGradients, make
from generator.metrics import invariance, verdict_checks
from generator.metrics.invariance import Invariance

IG = ATTRIBUTION_METHODS["integrated_gradients"]


class Cubic(nn.Module):
    """Logit 0 is F(x) = s + s³ with s = Σx; logit 1 is −s (linear). Along IG's path from the black baseline
    F(αx) = αs + α³s³, so the trapezoid rule on m intervals overestimates ∫ dF by s³/(2m²): the relative
    completeness error is s² / (2m²(1 + s²)) — tiny for small s, about 1/(2m²) for large s."""

    def __init__(self) -> None:
        super().__init__()
        self.grad_images: list[int] = []  # images that went through a pass recording gradients

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            self.grad_images.append(len(x))
        s = x.flatten(1).sum(1, keepdim=True)
        return torch.cat([s + s ** 3, -s], 1)


def _photos(sums, size: int = 4) -> torch.Tensor:
    """Constant photos whose pixel values add up to ``sums``."""
    n = 3 * size * size
    return torch.stack([torch.full((3, size, size), float(v) / n) for v in sums])


def _analytic_error(s: float, points: int) -> float:
    m = points - 1
    return s * s / (2 * m * m * (1 + s * s))


def test_a_linear_logit_is_exact_at_two_points_and_never_refined():
    torch.manual_seed(0)
    net = Cubic().eval()
    x = torch.rand(4, 3, 4, 4)
    ig = make("integrated_gradients", net, steps=2, max_steps=65)
    a = ig.attribute(x, 1)
    assert torch.allclose(a, -x, atol=1e-6)  # IG of a linear function: weight × (x − 0)
    done = ig.last_completeness
    assert done["steps"].tolist() == [2.0] * 4 and (done["rel_error"] < 1e-5).all() and not done["capped"].any()
    assert sum(net.grad_images) == 4 * 2  # the two ends of each photo's path, nothing more


def test_steps_rise_only_for_the_photos_that_need_them_and_reuse_every_point():
    sums = [0.1, 1.0, 3.0, 0.2]
    net = Cubic().eval()
    x = _photos(sums)
    ig = make("integrated_gradients", net, steps=2, max_steps=65, max_delta=0.05)
    a = ig.attribute(x, 0)
    done = ig.last_completeness
    # s = 0.1, 0.2: 0.5 %, 2 % at one interval; s = 1: 25 % → 6.25 % → 1.6 % at 4 intervals; s = 3: 45 % → 11 % → 2.8 %
    assert done["steps"].tolist() == [2.0, 5.0, 5.0, 2.0]
    assert (done["rel_error"] < 0.05).all() and not done["capped"].any()
    for j, s in enumerate(sums):
        assert float(done["rel_error"][j]) == pytest.approx(_analytic_error(s, int(done["steps"][j])), rel=1e-3)
    # nested grids: every photo costs exactly the points it ends with (2 + 5 + 5 + 2), not 2 + (2 + 3 + 5) per refined one
    assert sum(net.grad_images) == 2 + 5 + 5 + 2
    # one batch per level: all photos' two ends, then over just the two refined photos 1 new midpoint each, then 2
    assert net.grad_images == [8, 2, 4]
    # and the independent check on the model agrees, with the points used and nothing capped
    chk = ig.check(x, 0, a)
    assert torch.allclose(chk["rel_error"], done["rel_error"], atol=1e-5)
    assert chk["steps"].tolist() == [2.0, 5.0, 5.0, 2.0] and not chk["capped"].any()


def test_the_cap_is_respected_and_the_photos_it_stops_are_reported():
    sums = [0.1, 1.0, 3.0]
    x = _photos(sums)
    for cap, top in ((3, 3), (4, 3), (0, 2), (2, 2)):  # the largest level (steps − 1)·2^j + 1 not above max_steps
        net = Cubic().eval()
        ig = make("integrated_gradients", net, steps=2, max_steps=cap)
        assert IntegratedGradients.levels(ig.params)[-1] == top
        ig.attribute(x, 0)
        done = ig.last_completeness
        assert done["steps"].max() <= max(cap, 2) and done["steps"].tolist() == [2.0, float(top), float(top)]
        assert done["capped"].tolist() == [0.0, 1.0, 1.0]  # still ≥ 5 %: said, not hidden
        assert (done["rel_error"][1:] >= 0.05).all()
        assert sum(net.grad_images) == 2 + 2 * top
    # the method page's summary and sentence: every photo below the tolerance, or not (stopped by the cap)
    check = IG.self_check
    rows = [{"rel_error": e, "steps": s, "capped": c} for e, s, c in ((0.004, 2, 0), (0.11, 3, 1), (0.2, 3, 1))]
    summary = check.summarise(rows, {"steps": 2, "max_steps": 3, "max_delta": 0.05})
    assert (summary["below"], summary["capped"], summary["used_min"], summary["used_max"]) == (1, 2, 2, 3)
    assert "1 of 3 images reached an error below 5 %" in summary["said"] and "**2 did not**" in summary["said"]
    assert "stopped at `max_steps = 3`" in summary["said"]
    ok = check.summarise([{**r, "rel_error": 0.01, "capped": 0} for r in rows], {"steps": 2, "max_steps": 3,
                                                                                  "max_delta": 0.05})
    assert ok["said"].startswith("All 3 images reached an error below 5 %") and "did not" not in ok["said"]
    # across the tolerance: the same photo at 4.9 % and at 5.0 %
    at = lambda e: check.summarise([{"rel_error": e, "steps": 3, "capped": float(e >= 0.05)}],  # noqa: E731
                                   {"steps": 2, "max_steps": 3, "max_delta": 0.05})["said"]
    assert at(0.049).startswith("All 1 images") and "**1 did not**" in at(0.05)
    # stopped at the start (the preview profile's max_steps = 0) reads as "not refined", not as a cap that was reached
    start = check.summarise([{"rel_error": 0.2, "steps": 2, "capped": 1.0}], {"steps": 2, "max_steps": 0, "max_delta": 0.05})
    assert "not refined: `max_steps = 0`" in start["said"] and "stopped at" not in start["said"]


def test_a_map_of_the_predicted_class_may_go_on_to_its_own_cap_and_another_class_stops_at_max_steps():
    """Cubic: for s > 0 the network predicts class 0 (s + s³ > −s), for s < 0 class 1. Class 0's map needs
    refinement either way (relative error s²/(2m²(1 + s²)): 45 % at one interval for |s| = 3), so the photo with
    s = 3 (class 0 predicted) goes on to ``max_steps_predicted`` and the photo with s = −3 (class 0 *not*
    predicted) stops at ``max_steps``."""
    net = Cubic().eval()
    x = _photos([3.0, -3.0])
    ig = make("integrated_gradients", net, steps=2, max_steps=3, max_steps_predicted=9, max_delta=0.05)
    ig.attribute(x, 0)
    done = ig.last_completeness
    assert done["predicted"].tolist() == [1.0, 0.0]
    # s = 3: 45 % → 11 % → 2.8 % at 4 intervals (5 points), below 5 %: not capped; s = −3: 11 % at 3 points, capped
    assert done["steps"].tolist() == [5.0, 3.0] and done["capped"].tolist() == [0.0, 1.0]
    assert float(done["rel_error"][0]) == pytest.approx(_analytic_error(3.0, 5), rel=1e-3)
    assert sum(net.grad_images) == 5 + 3
    # class 1 is predicted for the second photo: its (linear, exact) map is never refined, whatever the cap
    ig.attribute(x, 1)
    assert ig.last_completeness["predicted"].tolist() == [0.0, 1.0] and ig.last_completeness["steps"].tolist() == [2.0, 2.0]
    # a lower max_steps_predicted adds nothing: the higher of the two caps applies to a predicted class
    low = make("integrated_gradients", Cubic().eval(), steps=2, max_steps=3, max_steps_predicted=2)
    low.attribute(x, 0)
    assert low.last_completeness["steps"].tolist() == [3.0, 3.0]
    assert IntegratedGradients.cap(low.params, True) == IntegratedGradients.cap(low.params) == 3
    assert IntegratedGradients.levels(ig.params) == [2, 3] and IntegratedGradients.levels(ig.params, True) == [2, 3, 5, 9]


def test_fewer_than_two_points_or_no_tolerance_are_refused():
    with pytest.raises(ValueError, match="2 points"):
        make("integrated_gradients", Cubic(), steps=1)
    with pytest.raises(ValueError, match="max_delta"):
        make("integrated_gradients", Cubic(), max_delta=0)


def test_the_plan_prices_the_expected_points_and_says_the_most():
    w = plan.method_work("integrated_gradients", {"steps": 3}, 4, 64)
    assert (w.gradient, w.forward, w.notes) == (12, 0, [])  # no refinement: exact
    assert IntegratedGradients.levels(IG.gallery_params) == [64, 127, 253, 505]
    # the findings' start and a cap at 241: each doubling's new points times the measured share still above 5 %
    levels = [16, 31, 61, 121, 241]
    want = 16 + 15 * 161 / 180 + 30 * 132 / 180 + 60 * 96 / 180 + 120 * 48 / 180
    assert plan.ig_expected_points(levels) == pytest.approx(want)
    # the 180 invariance runs of the full findings (EfficientNet-Lite0, 1, 2; up to 1,921 points) used 26,295 points,
    # 146 a run (the share past the table's last doubling is extrapolated, so a little more); Lite0's gallery's 8
    # photos used 1,248 (from 64 points, cap 505)
    full = levels + [481, 961, 1921]
    assert plan.ig_expected_points(full) == pytest.approx(26295 / 180, rel=0.05)
    assert plan.ig_expected_points([64, 127, 253, 505]) == pytest.approx(1248 / 8, rel=0.15)
    w = plan.method_work("integrated_gradients", {"steps": 16, "max_steps": 241}, 2, 64, check=True, top1=2)
    assert (w.gradient, w.forward) == (math.ceil(2 * want), 4) and w.gradient < 2 * 241
    assert len(w.notes) == 1 and "16, 31, 61, 121 or 241 points" in w.notes[0] and "at most 241" in w.notes[0]
    # another class's map (its logit barely moves, its relative error stays large) or a random network's: the cap
    w = plan.method_work("integrated_gradients", {"steps": 16, "max_steps": 241}, 4, 64, top1=2)
    assert w.gradient == math.ceil(2 * want) + 2 * 241 and len(w.notes) == 2 and "upper bound" in w.notes[1]
    w = plan.method_work("integrated_gradients", {"steps": 16, "max_steps": 241}, 2, 64)
    assert w.gradient == 2 * 241 and len(w.notes) == 1 and "upper bound" in w.notes[0]
    # every photo refined to the cap (a tolerance no photo meets): the cap, exactly
    w = plan.method_work("integrated_gradients", {"steps": 16, "max_steps": 241, "max_delta": 1e-9}, 3, 64, top1=3)
    assert w.gradient == 3 * 241
    # a looser tolerance costs fewer points; a higher cap adds only the few photos still above at the old one
    assert plan.ig_expected_points(levels, 0.2) < plan.ig_expected_points(levels) < plan.ig_expected_points(levels, 0.01)
    more = plan.ig_expected_points(levels + [481, 961])
    assert more == pytest.approx(plan.ig_expected_points(levels) + 15 / 180 * 240 + 4 / 180 * 480)
    shares = [plan.ig_still_above(m) for m in (1, 2, 15, 30, 60, 120, 240, 480, 960)]
    assert shares[0] == 1.0 and all(a > b > 0 for a, b in zip(shares, shares[1:]))
    # the findings' settings: a top-1 map refined up to max_steps_predicted, priced at its expected points over those
    # levels; another class's (or a random network's) at max_steps
    fp = {"steps": 16, "max_steps": 241, "max_steps_predicted": 961}
    w = plan.method_work("integrated_gradients", fp, 4, 64, top1=2)
    top = plan.ig_expected_points(levels + [481, 961])
    assert w.gradient == math.ceil(2 * top) + 2 * 241
    assert "at most 961 (`max_steps_predicted = 961`)" in w.notes[0] and "the most `max_steps = 241`" in w.notes[1]
    # no refinement for other maps (max_steps 0), the top-1 ones still refined
    w = plan.method_work("integrated_gradients", {**fp, "max_steps": 0}, 4, 64, top1=2)
    assert w.gradient == math.ceil(2 * top) + 2 * 16 and len(w.notes) == 1


def test_profiles_size_the_cap_and_the_config_wins():
    from generator.config import Config
    from generator.stages import attribution as attribution_stage
    from generator.stages import findings as findings_stage

    cfg = Config.load()
    cfg.override(profile="preview")
    for got in (findings_stage.settings(cfg)["method_params"], attribution_stage.settings(cfg)["params"]):
        assert got["integrated_gradients"]["max_steps"] == got["integrated_gradients"]["max_steps_predicted"] == 0
    cfg.override(profile="full")
    assert findings_stage.settings(cfg)["method_params"]["integrated_gradients"] == IG.findings_params
    assert attribution_stage.settings(cfg)["params"]["integrated_gradients"]["max_steps"] == 505
    cfg.override(profile="preview")
    cfg.data["findings"] = {**cfg.data.get("findings", {}),
                            "method_params": {"integrated_gradients": {"max_steps": 31}}}
    assert findings_stage.settings(cfg)["method_params"]["integrated_gradients"]["max_steps"] == 31


def _toy(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Softplus(), nn.Conv2d(6, 6, 3, padding=1), nn.Tanh(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def test_a_baseline_shifted_along_with_the_input_makes_ig_invariant_and_the_black_one_is_not():
    """Kindermans et al.: the copy f_s(x) = f(x − s) on x + s is the same function of the content. IG from the
    black baseline sees a different path there; IG from the baseline 0 + s sees the very same one."""
    net = _toy()
    torch.manual_seed(1)
    x = torch.rand(5, 3, 12, 12)
    shift = [0.25, -0.1, 0.3]
    copy = invariance.ShiftAbsorbed(net, shift).eval()
    t = net(x).argmax(1)
    params = {"steps": 8, "max_steps": 57}
    ref = make("integrated_gradients", net, **params)
    reference = ref.explain(x, t)
    black = invariance.invariance_check(make("integrated_gradients", copy, **params).explain, x, t, reference, shift)
    moved = invariance.remedy_params("integrated_gradients", params, shift)
    assert moved == {**params, "baseline": pytest.approx(shift)}
    rem = make("integrated_gradients", copy, **moved)
    remedy = invariance.invariance_check(rem.explain, x, t, reference, shift)
    assert all(r.relative_change < 1e-3 and r.spearman > 0.999 for r in remedy)  # the same maps
    assert all(r.relative_change > 0.05 for r in black)  # the black baseline's maps change
    # the same path: the same points per photo as the reference
    assert rem.last_completeness["steps"].tolist() == ref.last_completeness["steps"].tolist()
    # methods without a reference point have no remedy
    assert invariance.remedy_params("saliency", {}, shift) is None
    # a grey baseline moves to grey + shift
    assert invariance.remedy_params("integrated_gradients", {"baseline": "grey"}, shift)["baseline"] == \
        pytest.approx([0.5 + v for v in shift])


def _inv(spearman, steps=None, error=None, remedy=None):
    n = len(spearman)
    return Invariance(np.asarray(spearman, float), np.zeros(n),
                      None if steps is None else np.asarray(steps, float), None if error is None else np.asarray(error, float),
                      remedy=remedy, remedy_params=None if remedy is None else {"baseline": [0.25, 0.25, 0.25]})


def test_the_remedy_sentence_follows_its_interval():
    grid = np.linspace(-0.01, 0.01, 30)
    above = verdict_checks.remedy_said(_inv(np.full(30, 0.2), remedy=_inv(0.99 + grid)), "Integrated Gradients", 0.9)
    below = verdict_checks.remedy_said(_inv(np.full(30, 0.2), remedy=_inv(0.8 + grid)), "Integrated Gradients", 0.9)
    across = verdict_checks.remedy_said(_inv(np.full(30, 0.2), remedy=_inv(0.9 + 10 * grid)), "Integrated Gradients", 0.9)
    assert above["side"] == "above" and "Integrated Gradients match:" in above["said"] and "0.25, 0.25, 0.25" in above["said"]
    assert below["side"] == "below" and "do **not** match" in below["said"]
    assert across["side"] == "across" and "not shown to match" in across["said"]
    assert verdict_checks.remedy_said(_inv(np.full(30, 0.2)), "Saliency", 0.9) is None


def test_the_completeness_sentence_of_the_invariance_check_flips_at_the_tolerance():
    ok = verdict_checks.completeness_said(_inv([0.2] * 3, [16, 31, 31], [0.01, 0.049, 0.03]), "IG", 0.05, 241)
    bad = verdict_checks.completeness_said(_inv([0.2] * 3, [16, 241, 31], [0.01, 0.05, 0.03]), "IG", 0.05, 241)
    assert "below 5 % (`max_delta`) on all 3 photos" in ok and "16–31 points" in ok
    assert "on 2 of 3 photos" in bad and "**1 stayed at or above it**" in bad and "stopped by `max_steps = 241`" in bad
    fixed = verdict_checks.completeness_said(_inv([0.2] * 2, [16, 16], [0.01, 0.2]), "IG", 0.05, 0, start=16)
    assert "not refined: one doubling of its intervals needs 31 points, `max_steps = 0`" in fixed
    named = verdict_checks.completeness_said(_inv([0.2] * 2, [16, 1921], [0.01, 0.2]), "IG", 0.05, 1921, 16,
                                             "max_steps_predicted")
    assert "stopped by `max_steps_predicted = 1921`" in named
    assert "stopped by" in verdict_checks.completeness_said(_inv([0.2] * 2, [16, 31], [0.01, 0.2]), "IG", 0.05, 31, start=16)
    assert verdict_checks.completeness_said(_inv([0.2] * 3, [np.nan] * 3, [np.nan] * 3), "Saliency", 0.05, None) == ""
    assert verdict_checks.completeness_said(_inv([0.2] * 3), "Saliency", 0.05, None) == ""


def test_the_other_maps_sentence_appears_only_where_the_predicted_class_has_the_higher_cap():
    caps = verdict_checks.adaptive_caps("integrated_gradients", {"steps": 16, "max_steps": 241,
                                                                 "max_steps_predicted": 1921})
    assert caps == (241, 1921) and verdict_checks.adaptive_caps("saliency", {}) == (None, None)
    said = verdict_checks.other_maps_said(*caps)
    assert "`max_steps_predicted = 1921`" in said and "`max_steps = 241` only" in said
    assert "completeness is not reported" in said and "(../../performance.md)" in said
    for same in ({"max_steps": 241, "max_steps_predicted": 241}, {"max_steps": 241}, {"max_steps": 241,
                                                                                       "max_steps_predicted": 31}):
        assert verdict_checks.other_maps_said(*verdict_checks.adaptive_caps("integrated_gradients", same)) == ""
    assert verdict_checks.other_maps_said(None, None) == ""
    assert verdict_checks.other_maps_said(0, 31).startswith("These maps")


def test_ig_with_any_fixed_baseline_is_not_invariant_by_construction():
    s = {"method_params": {"integrated_gradients": {"baseline": "grey"}}}
    assert "grey baseline" in verdict_checks.by_construction("integrated_gradients", s)
    assert "black baseline" in verdict_checks.by_construction("integrated_gradients", {})
    assert "remedy" in verdict_checks.by_construction("integrated_gradients", {})
