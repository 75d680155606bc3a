"""The findings' statistical rules on synthetic data with a known answer (issue #28).

* the BCa interval's coverage at the minimum n, and the p-value's error rate under the null;
* Holm's correction on a family with known nulls;
* no verdict below the minimum n; "tied" when a paired interval does not separate two methods;
* the class check: a map with no spread is "no map", never class sensitivity; the random class;
* every sentence of the Findings summary (and every home-page headline) flips when its numbers
  cross its threshold (a guard test checks that no verdict list of the template goes without a case).
"""
from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from generator.config import Config
from generator.metrics import bootstrap, class_check, verdict_checks, verdicts
from generator.metrics.class_check import ClassSensitivity
from generator.metrics.faithfulness import Faithfulness, OrderCurves
from generator.metrics.fragility import Fragility, Overlaps
from generator.metrics.invariance import Invariance
from generator.metrics.sanity import Cascade, CascadeCurves
from generator.site import make_env
from generator.stages import findings

S = findings.settings(Config({}))
MIN_N = S["min_n"]
N = 30  # photos per check in the synthetic summaries (≥ MIN_N)


# ------------------------------------------------------------------------------- intervals and p-values


@pytest.mark.parametrize("name, draw, mean", [
    ("normal", lambda r, n: r.normal(0.5, 0.2, n), 0.5),
    ("exponential (skewed)", lambda r, n: r.exponential(2.0, n), 2.0),
    ("Beta(0.5, 2) (bounded, skewed)", lambda r, n: r.beta(0.5, 2.0, n), 0.2),
])
def test_bca_interval_holds_its_coverage_at_the_minimum_n(name, draw, mean):
    """At n = min_n (20) the 95 % BCa interval covers the true mean in 90–99 % of 400 simulated
    samples (seeded; a binomial standard error of about 1.1 points at 95 %). The percentile interval
    is the comparison: on skewed data at this n it falls short."""
    rng = np.random.default_rng(11)
    reps, hits, hits_pct = 400, 0, 0
    for t in range(reps):
        v = draw(rng, MIN_N)
        iv = bootstrap.mean_ci(v, resamples=1000, seed=t)
        hits += iv.lo <= mean <= iv.hi
        pc = bootstrap.mean_ci(v, resamples=1000, seed=t, method="percentile")
        hits_pct += pc.lo <= mean <= pc.hi
    assert 0.90 <= hits / reps <= 0.99, (name, hits / reps)
    assert hits >= hits_pct - 4, (name, hits, hits_pct)  # never worse than the percentile interval (beyond noise)


def test_p_value_rejects_a_true_threshold_at_about_the_stated_rate_and_a_false_one_always():
    rng = np.random.default_rng(3)
    reps = 400
    null = [bootstrap.p_two_sided(rng.normal(0.5, 0.2, MIN_N), 0.5, resamples=1000, seed=t) for t in range(reps)]
    rate = np.mean(np.asarray(null) < 0.05)
    assert 0.02 <= rate <= 0.09, rate  # nominal 5 %
    far = [bootstrap.p_two_sided(rng.normal(0.7, 0.2, MIN_N), 0.5, resamples=1000, seed=t) for t in range(50)]
    assert np.mean(np.asarray(far) < 0.05) > 0.9  # 4.5 standard errors away
    # the p-value goes with the interval: clear of the threshold ⇔ p < 0.05 (up to resampling noise)
    v = rng.normal(0.6, 0.2, 40)
    iv = bootstrap.mean_ci(v)
    for t in np.linspace(iv.lo - 0.05, iv.hi + 0.05, 21):
        clear = iv.lo >= t or iv.hi < t
        p = bootstrap.p_two_sided(v, t)
        if abs(t - iv.lo) > 0.01 and abs(t - iv.hi) > 0.01:
            assert clear == (p < 0.05), (t, iv, p)
    pa, pb = bootstrap.p_values(v, iv.mean)
    assert abs(pa + pb - 1) < 1e-9


def test_no_spread_and_tiny_samples():
    assert bootstrap.mean_ci([0.3] * 25) == bootstrap.Interval(0.3, 0.3, 0.3, 25)
    assert bootstrap.p_values([0.3] * 25, 0.3) == (0.0, 1.0)  # at the threshold counts as "at or above"
    assert np.isnan(bootstrap.p_two_sided([0.3], 0.0))
    with pytest.raises(ValueError, match="unknown interval method"):
        bootstrap.mean_ci([1.0, 2.0], method="studentised")


def test_no_verdict_below_the_minimum_n():
    def v(n):
        return bootstrap.verdict(bootstrap.mean_ci(np.full(n, 0.9) + np.linspace(-0.01, 0.01, n)), 0.5, "fails", "passes")

    assert v(MIN_N - 1) == f"not enough photos (n = {MIN_N - 1} < {MIN_N}): the full build decides"
    assert v(MIN_N) == "fails"
    assert not bootstrap.decided(v(MIN_N - 1)) and bootstrap.too_few(v(MIN_N - 1)) and bootstrap.decided(v(MIN_N))
    assert bootstrap.verdict(bootstrap.mean_ci(np.linspace(0, 1, 30)), 0.5, "a", "b") == "undecided at n = 30"
    assert bootstrap.verdict(bootstrap.mean_ci(np.ones(5)), 0.5, "a", "b", min_n=5) == "a"  # min_n is a setting


# ----------------------------------------------------------------------------------------------- Holm


def test_holm_by_hand():
    reject, adj = verdicts.holm([0.01, 0.04, 0.03, 0.005], 0.05)
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06 (stop), 0.04·1 → running max 0.06
    assert reject.tolist() == [True, False, False, True]
    assert np.allclose(adj, [0.03, 0.06, 0.06, 0.02])
    reject, adj = verdicts.holm([0.2, float("nan"), 0.001], 0.05)  # NaN: not in the family
    assert reject.tolist() == [False, False, True] and np.isnan(adj[1]) and np.allclose(adj[[0, 2]], [0.2, 0.002])
    assert verdicts.holm([], 0.05)[0].size == 0


def test_holm_keeps_the_family_wise_error_on_a_family_with_known_nulls():
    """Exact p-values: families of 10, 7 true nulls (uniform p) and 3 real effects (tiny p). Holm
    rejects some true null in at most 5 % of the families (here ≈ 1 − (1 − 0.05/7)⁷ = 4.9 %) and finds
    every effect; uncorrected p < 0.05 rejects a true null in ≈ 30 % of them."""
    rng = np.random.default_rng(0)
    fams = 4000
    p = np.concatenate([rng.random((fams, 7)), rng.random((fams, 3)) * 1e-6], 1)
    reject = np.array([verdicts.holm(row, 0.05)[0] for row in p])
    fwer = reject[:, :7].any(1).mean()
    assert fwer <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / fams), fwer
    assert reject[:, 7:].all()
    assert (p[:, :7] < 0.05).any(1).mean() > 0.25


def test_holm_on_bootstrap_p_values_of_simulated_checks():
    """The same with the verdicts' own p-values (:func:`bootstrap.p_two_sided` at n = 20): 7 checks whose
    mean *is* the threshold, 3 whose mean is 1.5 standard deviations off. At this n the bootstrap
    p-values are a little liberal in the far tail (a family-wise error of about 8 % measured on 400
    families, against 5 % nominal), still far below the 30 % of no correction, and every real effect is found."""
    rng = np.random.default_rng(7)
    fams, any_null, any_null_raw, found = 150, 0, 0, 0
    for f in range(fams):
        p = [bootstrap.p_two_sided(rng.normal(0.5, 0.2, MIN_N), 0.5, seed=f * 10 + i) for i in range(7)]
        p += [bootstrap.p_two_sided(rng.normal(0.8, 0.2, MIN_N), 0.5, seed=f * 10 + 7 + i) for i in range(3)]
        reject, _ = verdicts.holm(p, 0.05)
        any_null += bool(reject[:7].any())
        any_null_raw += bool((np.asarray(p[:7]) < 0.05).any())
        found += int(reject[7:].sum())
    assert any_null / fams <= 0.12, any_null / fams
    assert any_null_raw / fams >= 0.2, any_null_raw / fams
    assert found / (3 * fams) >= 0.95


# ------------------------------------------------------------------------------------ synthetic summaries


class _Model:
    def __init__(self, title):
        self.name = title.lower().replace(" ", "_")
        self.spec = type("Spec", (), {"title": title})


TITLES = {"a": "Method A", "b": "Method B", "c": "Method C"} | verdicts.BASELINES
BASE = dict(cascade=(0.2, 0.2, 0.2), cls=0.2, dele=0.1, ins=0.7, inv=1.0, frag=(0.7, 0.7), spread=1.0, sd=0.01)


def fake(methods: dict, n: int = N, model: str = "Net", s: dict | None = None):
    """A model's summary from per-method numbers (each a mean, drawn per photo with spread ``sd``, or
    an array of n values): ``cascade`` (three steps, the first "logits only"), ``cls`` (Spearman to the
    second class's map), ``spread`` (of the second map), ``dele``/``ins`` (areas; both baselines have
    0.3/0.3, so the gain over random is ins − del), ``inv``, ``frag`` (overlap after attack, after noise)."""
    seeds = itertools.count(1)

    def arr(v, sd):
        if np.ndim(v):
            return np.asarray(v, dtype=np.float64)
        return float(v) + np.random.default_rng(next(seeds)).normal(0.0, sd, n)

    spec = {m: {**BASE, **kw} for m, kw in methods.items()}
    cas = Cascade(steps=[1, 2, 3], labels=["logits only", "down to x", "all layers"], groups=["logits", "x", "y"],
                  fraction=[0.3, 0.6, 1.0], n_groups=3,
                  methods={m: CascadeCurves(spearman=np.array([arr(v, k["sd"]) for v in k["cascade"]]),
                                            ssim=np.zeros((3, n)), hog=np.zeros((3, n)), thumbs=np.zeros((3, n, 4, 4)))
                           for m, k in spec.items()})
    cls = {m: ClassSensitivity(spearman=arr(k["cls"], k["sd"]), ssim=np.zeros(n), hog=np.zeros(n),
                               spread=np.column_stack([np.ones(n), np.broadcast_to(k["spread"], (n,))]))
           for m, k in spec.items()}
    curve = lambda d, i, sd: OrderCurves(np.zeros((n, 5)), np.zeros((n, 5)), arr(d, sd), arr(i, sd))  # noqa: E731
    curves = {m: curve(k["dele"], k["ins"], k["sd"]) for m, k in spec.items()}
    curves["random"] = curve(0.3, 0.3, 0.0)
    curves["centre"] = curve(0.3, 0.3, 0.0)
    inv = {m: Invariance(spearman=arr(k["inv"], k["sd"]), relative_change=np.zeros(n)) for m, k in spec.items()}
    fr = Fragility(kept=np.ones(n, bool), attacked=np.ones(n, bool), p0=np.full(n, 0.9), p1=np.full(n, 0.88), eps255=8.0,
                   frac=0.05, methods={m: Overlaps(attack=arr(k["frag"][0], k["sd"]), noise=arr(k["frag"][1], k["sd"]))
                                       for m, k in spec.items()})
    return verdicts.summarise_model(_Model(model), TITLES, cascade=cas, classes=cls,
                                    faithfulness=Faithfulness(4, np.linspace(0, 1, 5), curves, [0.5] * 3),
                                    invariance=inv, fragility=fr, settings=s or S, expensive=[])


#: each model's sentences as the check pages print them (findings/lines.md.j2), one bullet per check
_PER_MODEL = ('{% import "findings/lines.md.j2" as lines with context %}{% for sm in summaries %}\n### {{ sm.model.spec.title }}\n'
              + "".join(f"- **{head}**\n{{{{ lines.{macro}(sm) }}}}" for head, macro in [
                  ("Randomisation check", "sanity"), ("Class sensitivity", "class_"), ("Faithfulness", "faithfulness"),
                  ("Input invariance", "invariance"), ("Fragility", "fragility")]) + "{% endfor %}\n")


def render(*summaries) -> str:
    """The findings' sentences: each model's per check (the check pages), the index's answer and
    verdicts at a glance (summary.md.j2) and its "Across models"."""
    sms = list(summaries)
    names = sorted({r["name"] for sm in sms for r in sm.rows})
    env = make_env()
    context = dict(
        s=S, names=names, titles=TITLES, summaries=sms, missing=[], not_selected=[], low_rank=500,
        cross=verdicts.cross_model(sms), and_list=verdicts.and_list, fixed=verdicts.fixed, ci=bootstrap.fmt,
        decided=bootstrap.decided, source="shared", expensive=[], items=[], method_link=lambda n: n,
        link=lambda t: t, check_link=lambda c: c, index_link="index.md", anchor=lambda sm: sm["model"].name,
        answer=verdicts.answer(sms))
    return "".join([env.from_string(_PER_MODEL).render(**context),
                    *(env.get_template(f"findings/{t}.md.j2").render(**context) for t in ("summary", "across"))])


def bullet(text: str, head: str) -> str:
    """The summary's bullet that starts with ``- **head``, up to the next bullet or heading."""
    start = text.index(f"- **{head}")
    rest = text[start + 3:]
    ends = [i for i in (rest.find("\n- **"), rest.find("\n###")) if i >= 0]
    return text[start: start + 3 + min(ends)] if ends else text[start:]


def straddle(t):
    return np.full(N, t) + np.linspace(-0.3, 0.3, N)


# one case per sentence: (the template's field it names, the numbers on the side that prints it, the
# numbers on the other side, the bullet it is in (or None: the whole text), the sentence, and the sentence
# that replaces it on the other side, if any)
CASES = {
    "fails": ("fails", dict(a=dict(cascade=(0.6, 0.6, 0.6))), dict(a=dict(cascade=(0.4, 0.4, 0.4))),
              "Randomisation", "Method A keeps a rank correlation", "No method is shown to fail"),
    "passes": ("passes", dict(a=dict(cascade=(0.4, 0.4, 0.4))), dict(a=dict(cascade=(0.6, 0.6, 0.6))),
               "Randomisation", "Passing (interval below 0.5): Method A.", None),
    "sanity_undecided": ("sanity_undecided", dict(a=dict(cascade=[straddle(0.5)] * 3)),
                         dict(a=dict(cascade=[straddle(0.5) - 0.4] * 3)), "Randomisation", "Undecided: Method A.", None),
    "ignores_top": ("ignores_top", dict(a=dict(cascade=(0.95, 0.2, 0.2))), dict(a=dict(cascade=(0.85, 0.2, 0.2))),
                    "Randomisation", "leaves the map of Method A", None),
    "insensitive": ("insensitive", dict(a=dict(cls=0.85)), dict(a=dict(cls=0.75)), "Class",
                    "Method A draws nearly the", "No method is shown to be class-insensitive"),
    "sensitive": ("sensitive", dict(a=dict(cls=0.75)), dict(a=dict(cls=0.85)), "Class",
                  "Shown to change with the class (interval below 0.8): Method A.", None),
    "class_undecided": ("class_undecided", dict(a=dict(cls=straddle(0.8))), dict(a=dict(cls=straddle(0.8) - 0.5)),
                        "Class", "Undecided: Method A.", None),
    "no_map": ("no_map", dict(a=dict(spread=np.r_[np.zeros(5), np.ones(N - 5)])), dict(a=dict()), "Class",
               f"Method A on 5 of {N} photos", None),
    "best": ("best", dict(a=dict(ins=0.8), b=dict(ins=0.5)), dict(a=dict(ins=0.6, sd=0.1), b=dict(ins=0.6, sd=0.1)),
             "Faithfulness", "Most faithful on insertion − deletion: **Method", "but **tied** with"),
    "worst": ("worst", dict(a=dict(ins=0.8), b=dict(ins=0.5)), dict(a=dict(ins=0.6, sd=0.1), b=dict(ins=0.6, sd=0.1)),
              "Faithfulness", "Least faithful: **Method B**", "Lowest mean:"),
    "better_than_random": ("better_than_random", dict(a=dict(dele=0.3, ins=0.35)), dict(a=dict(dele=0.3, ins=0.31)),
                           "Faithfulness", "(`faithfulness_min_gain`): Method A.", "(`faithfulness_min_gain`): none."),
    "not_better_than_random": ("not_better_than_random", dict(a=dict(dele=0.3, ins=0.3)), dict(a=dict(dele=0.3, ins=0.4)),
                               "Faithfulness", "Shown *not* to beat random order by 0.02: Method A.", None),
    "random_undecided": ("random_undecided", dict(a=dict(dele=0.3, ins=0.3 + straddle(0.02))),
                         dict(a=dict(dele=0.3, ins=0.3 + straddle(0.02) + 0.4)), "Faithfulness", "Undecided: Method A.", None),
    "faithful_but_flagged": ("faithful_but_flagged", dict(a=dict(cascade=(0.7, 0.7, 0.7))),
                             dict(a=dict(cascade=(0.2, 0.2, 0.2))), "Faithfulness", "Yet Method A beats random", None),
    "not_invariant": ("not_invariant", dict(a=dict(inv=0.8)), dict(a=dict(inv=0.95)), "Input invariance",
                      "(interval below 0.9, `invariance_threshold`): Method A;",
                      "(interval below 0.9, `invariance_threshold`): none;"),
    "invariant": ("invariant", dict(a=dict(inv=0.95)), dict(a=dict(inv=0.8)), "Input invariance",
                  "shown invariant (interval ≥ 0.9): Method A.", "shown invariant (interval ≥ 0.9): none."),
    "invariance_undecided": ("invariance_undecided", dict(a=dict(inv=straddle(0.9))), dict(a=dict(inv=straddle(0.9) - 0.5)),
                             "Input invariance", "Undecided: Method A.", None),
    "fragile": ("fragile", dict(a=dict(frag=(0.55, 0.7))), dict(a=dict(frag=(0.65, 0.7))), "Fragility",
                "(`fragility_min_drop`), for: Method A.", "(`fragility_min_drop`), for: none."),
    "not_fragile": ("not_fragile", dict(a=dict(frag=(0.65, 0.7))), dict(a=dict(frag=(0.55, 0.7))), "Fragility",
                    "Shown to lose less than 0.1 beyond noise: Method A.", None),
    "fragility_undecided": ("fragility_undecided", dict(a=dict(frag=(0.7 - straddle(0.1), 0.7))),
                            dict(a=dict(frag=(0.7 - straddle(0.1) + 0.5, 0.7))), "Fragility", "Undecided: Method A.", None),
    "conclusion": ("conclusion", dict(a=dict(cascade=(0.7, 0.7, 0.7))), dict(a=dict()), None,
                   "**No — not on this evidence.**", "**No method fell short on these checks.**"),
}
#: "not enough photos" per check: n = min_n − 1 prints it, n = min_n does not
FEW = {"few.sanity": "Randomisation", "few.class": "Class", "few.random": "Faithfulness",
       "few.invariance": "Input invariance", "few.fragility": "Fragility"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_summary_sentence_flips_at_its_threshold(case):
    _field, yes, no, head, sentence, other = CASES[case]
    t_yes, t_no = render(fake(yes)), render(fake(no))
    part = (lambda t: bullet(t, head)) if head else (lambda t: t)
    assert sentence in part(t_yes), (case, part(t_yes))
    assert sentence not in part(t_no), (case, part(t_no))
    if other:
        assert other in part(t_no) and other not in part(t_yes), (case, part(t_no))


@pytest.mark.parametrize("field", sorted(FEW))
def test_not_enough_photos_flips_at_the_minimum_n(field):
    line = "Not enough photos for a verdict (n < 20; the full build decides): Method A."
    below, at = render(fake({"a": {}}, n=MIN_N - 1)), render(fake({"a": {}}, n=MIN_N))
    assert line in bullet(below, FEW[field]) and line not in bullet(at, FEW[field])
    # and then the page has no verdict at all: the full build decides
    assert "**Not decided at this n.**" in below and "**Not decided at this n.**" not in at
    assert "no check reached 20 photos" in below and "Holm-corrected over the 7 verdicts that feed this summary" in at


def _borderline(threshold=0.5):
    """Per-photo values whose 95 % interval just clears ``threshold`` (two-sided p between 0.0125 and 0.05)."""
    base = np.random.default_rng(5).normal(0.0, 0.1, N)
    base = (base - base.mean()) / base.std() * 0.1
    for off in np.linspace(0.0, 0.1, 201):
        v = threshold + off + base
        iv = bootstrap.mean_ci(v)
        p = bootstrap.p_two_sided(v, threshold)
        if iv.lo >= threshold and 0.0125 < p < 0.05:
            return v
    raise AssertionError("no borderline sample")


def test_holm_withholds_a_borderline_verdict_in_a_large_family_and_the_page_says_so():
    """The same borderline "fails" stands when the rest of the family is clear-cut, and is withheld
    when the family also holds tests with large p-values (Holm multiplies the borderline p by the
    number of tests at or above it)."""
    v = _borderline()
    alone = fake({"a": dict(cascade=[v, v, v], sd=0.0)})
    t = render(alone)
    assert alone.rows[0]["sanity_verdict"] == "fails" and "Method A keeps a rank correlation" in t
    assert "not survive the correction" not in t
    crowd = fake({"a": dict(cascade=[v, v, v], sd=0.0),
                  "b": dict(cascade=[straddle(0.5)] * 3, cls=straddle(0.8), inv=straddle(0.9))})
    t = render(crowd)
    assert crowd.rows[0]["tests"]["sanity"].raw == "fails"
    assert crowd.rows[0]["sanity_verdict"] == f"undecided at n = {N} after Holm correction"
    assert "Method A keeps a rank correlation" not in t
    assert "1 verdict whose interval clears its threshold does\nnot survive the correction" in t
    assert "Holm-corrected over the 14 verdicts that feed this summary" in t


def test_holm_family_spans_every_model():
    """Correcting over two models' verdicts (the page does) is stricter than over one model's."""
    v = _borderline()
    one = fake({"a": dict(cascade=[v, v, v], sd=0.0)})
    assert one.rows[0]["sanity_verdict"] == "fails" and one.family["k"] == 7
    other = fake({"a": dict(cascade=[straddle(0.5)] * 3, cls=straddle(0.8), inv=straddle(0.9))}, model="Other")
    fam = verdicts.correct([one, other])
    assert fam["k"] == 14 and one.family is fam and other.family is fam
    assert one.rows[0]["sanity_verdict"].endswith("after Holm correction") and one.fails == []
    verdicts.correct([one])  # from the uncorrected tests again: idempotent, and back
    assert one.rows[0]["sanity_verdict"] == "fails" and one.fails == ["Method A"]


def test_best_and_worst_only_where_a_paired_interval_separates_them():
    sm = fake({"a": dict(ins=0.8), "b": dict(ins=0.5), "c": dict(ins=0.2)})
    assert sm.best.separated and sm.best.title == "Method A" and sm.best_combined["name"] == "a"
    assert sm.worst.separated and sm.worst.title == "Method C"
    assert sm.best.gaps["Method B"].lo > 0 and sm.best.gaps["Method B"].n == N
    # means apart by a little, per-photo noise much larger: the paired interval straddles 0 → tied
    sm = fake({"a": dict(ins=0.62, sd=0.2), "b": dict(ins=0.6, sd=0.2), "c": dict(ins=0.2)})
    assert not sm.best.separated and sorted([sm.best.title, *sm.best.tied]) == ["Method A", "Method B"]
    assert sm.best_combined is None
    gap = sm.best.gaps[sm.best.tied[0]]
    assert gap.lo < 0 < gap.hi
    assert sm.worst.separated and sm.worst.title == "Method C"
    # below the minimum n nothing is separated
    sm = fake({"a": dict(ins=0.8), "b": dict(ins=0.2)}, n=MIN_N - 1)
    assert not sm.best.separated and sm.best.too_few == ["Method B"]
    # a paired interval is narrower than two separate ones: the same photo's shift cancels
    shift = np.linspace(-0.3, 0.3, N)
    sm = fake({"a": dict(dele=0.1 + 0 * shift, ins=0.6 + shift), "b": dict(dele=0.1 + 0 * shift, ins=0.55 + shift)})
    ra, rb = sm.rows
    assert ra["insertion"].lo < rb["insertion"].hi  # the separate intervals overlap …
    assert sm.best.separated and sm.best.title == "Method A"  # … the paired one does not


def test_across_models_sentences_flip():
    fail = dict(a=dict(cascade=(0.7, 0.7, 0.7)))
    ok = dict(a=dict())
    both = render(fake(fail, model="M1"), fake(fail, model="M2"))
    some = render(fake(fail, model="M1"), fake(ok, model="M2"))
    none = render(fake(ok, model="M1"), fake(ok, model="M2"))
    assert "fail the randomisation check on every measured model: Method A." in both
    assert "fail the randomisation check on every measured model" not in some and "On some models only: Method A." in some
    assert "No method is shown to fail the randomisation check on any measured model." in none
    assert "On some models only" not in both and "No method is shown to fail" not in both
    ins = dict(a=dict(cls=0.9))
    both = render(fake(ins, model="M1"), fake(ins, model="M2"))
    some = render(fake(ins, model="M1"), fake(ok, model="M2"))
    assert "Class-insensitive on every measured model: Method A." in both and "on some models only" not in both
    assert "Class-insensitive on some models only: Method A." in some
    assert "Class-insensitive on every measured model" not in some
    # the most faithful method: the same, different, or tied somewhere
    a_best, b_best = dict(a=dict(ins=0.8), b=dict(ins=0.5)), dict(a=dict(ins=0.5), b=dict(ins=0.8))
    tie = dict(a=dict(ins=0.6, sd=0.1), b=dict(ins=0.6, sd=0.1))
    same = render(fake(a_best, model="M1"), fake(a_best, model="M2"))
    differ = render(fake(a_best, model="M1"), fake(b_best, model="M2"))
    tied = render(fake(a_best, model="M1"), fake(tie, model="M2"))
    assert "is the same on every measured model: Method A." in same and "differs between models" not in same
    assert "The most faithful method differs between models: Method A on m1; Method B on m2." in differ
    assert "No single most faithful method on every model: Method A on m1; tied between Method" in tied
    assert "is the same on every measured model" not in tied and "is the same on every measured model" not in differ


def test_every_verdict_list_the_summary_prints_has_a_flip_test():
    folder = Path(findings.__file__).parents[1] / "templates" / "findings"
    text = "".join((folder / f"{t}.md.j2").read_text() for t in ("lines", "summary", "glance", "across"))
    used = set()
    for obj, name, sub in re.findall(r"\b(sm|cr|fam)\.(\w+)(?:\.(\w+))?", text):
        used.add(f"few.{sub}" if name == "few" and sub else name)
    used |= {f"few.{k}" for k in re.findall(r'sm\.few\["(\w+)"\]', text)}
    not_verdicts = {"model", "n_images", "n_sanity", "fragility", "rows", "top_group", "units", "few", "alpha"}
    covered = {c[0] for c in CASES.values()} | set(FEW) | {
        # Across models (test_across_models_sentences_flip), Holm (the two Holm tests above)
        "fail_all", "fail_some", "ins_all", "ins_some", "best_agree", "best_tied", "k", "withheld"}
    cr_best = {"best"}  # cr.best: the per-model bests, in the same sentence as best_agree / best_tied
    missing = used - not_verdicts - covered - cr_best
    assert not missing, f"sentences without a flip test: {sorted(missing)}"


# ------------------------------------------------------------------------------------- home-page headlines


def test_headlines_flip_at_their_thresholds():
    def heads(**kw):
        return verdicts.headlines([fake(kw.pop("methods"), **kw)])

    assert heads(methods=dict(a=dict(cascade=(0.7, 0.7, 0.7))))[0][0] == "1 of 1"
    assert heads(methods=dict(a=dict()))[0][0] == "0 of 1"
    assert heads(methods=dict(a=dict(cls=0.9)))[1][0] == "1 of 1"
    assert heads(methods=dict(a=dict(cls=0.7)))[1][0] == "0 of 1"
    few = heads(methods=dict(a=dict(cascade=(0.7, 0.7, 0.7))), n=MIN_N - 1)
    assert few[0] == ("0 of 1", "methods fail the weight-randomisation check on Net (1 not decided at this n)",
                      "findings/index")
    assert "not decided" not in heads(methods=dict(a=dict(cascade=(0.7, 0.7, 0.7))), n=MIN_N)[0][1]
    sep = heads(methods=dict(a=dict(ins=0.8), b=dict(ins=0.5)))
    assert sep[2] == ("Method A", "is the most faithful map (deletion and insertion) on Net", "findings/index")
    tied = heads(methods=dict(a=dict(ins=0.6, sd=0.1), b=dict(ins=0.6, sd=0.1)))
    assert tied[2][0] == "tied" and "are not told apart by a paired interval" in tied[2][1]


# ---------------------------------------------------------------------------------------------- class check


def test_a_constant_second_map_is_no_map_not_class_sensitivity():
    """Grad-CAM at a class of probability ≈ 0: its map is all zeros (Spearman 0 by definition); occlusion's
    is near-zero noise. Both are "no map", left out of the interval; a method with no map on any photo
    gets no class verdict, and never "changes with the class"."""
    g = torch.Generator().manual_seed(0)
    top = torch.rand(N, 16, 16, generator=g) + 0.1
    zeros = torch.zeros(N, 16, 16)
    tiny = torch.rand(N, 16, 16, generator=g) * 1e-9  # noise far below the top-1 map's scale
    real = torch.rand(N, 16, 16, generator=g)  # a real, different map
    for second in (zeros, tiny):
        cs = class_check.class_sensitivity(torch.stack([top, second], 1))
        assert cs.no_map().all() and (np.abs(cs.spearman) < 0.5).all()
    cs = class_check.class_sensitivity(torch.stack([top, real], 1))
    assert not cs.no_map().any() and (cs.spearman < 0.5).all()

    def summary(second_maps):
        cs = class_check.class_sensitivity(torch.stack([top, second_maps], 1))
        return fake({"a": dict(cls=cs.spearman, spread=cs.spread[:, 1], sd=0.0)})

    # the constant map alone would read as "changes with the class" (Spearman ≈ 0 < 0.8) — it is no map
    sm = summary(zeros)
    row = sm.rows[0]
    assert row["class_verdict"] == verdicts.NO_MAP and sm.sensitive == [] and row["class_no_map"] == N
    assert not bootstrap.decided(row["class_verdict"]) and not row["tests"]["class"].tested
    text = render(sm)
    assert "Shown to change with the class" not in text and f"Method A on {N} of {N} photos" in text
    assert summary(real).sensitive == ["Method A"]  # the real map does change with the class
    # some photos without a map: counted apart, the rest decide
    mixed = torch.cat([zeros[:5], real[5:]])
    sm = summary(mixed)
    assert sm.rows[0]["class_no_map"] == 5 and sm.rows[0]["class_low"]["spearman"].n == N - 5 and sm.sensitive == ["Method A"]


def test_second_class_is_a_seeded_random_class_never_the_top1():
    logits = torch.randn(200, 1000, generator=torch.Generator().manual_seed(1))
    ids = [f"photo-{i}" for i in range(200)]
    t = class_check.second_class(logits, "random", 500, 0, ids)
    assert t.shape == (200, 2) and torch.equal(t[:, 0], logits.argmax(1))
    assert (t[:, 1] != t[:, 0]).all() and ((t[:, 1] >= 0) & (t[:, 1] < 1000)).all()
    assert torch.equal(t, class_check.second_class(logits, "random", 500, 0, ids))  # seeded
    assert not torch.equal(t, class_check.second_class(logits, "random", 500, 1, ids))  # by the seed
    # a photo's class depends on the photo, not on what else is in the set
    assert torch.equal(class_check.random_classes(logits[5:7], 0, ids[5:7]), t[5:7])
    ranks = (logits.argsort(1, descending=True) == t[:, 1:]).float().argmax(1)
    assert ranks.float().std() > 150  # spread over the ranks (uniform: ≈ 288), not one rank
    assert class_check.second_class(logits[:2], "low_rank", 3, 0, ids[:2]).tolist() == \
        class_check.targets_of(logits[:2], 3).tolist()
    with pytest.raises(ValueError, match="class_check"):
        class_check.second_class(logits, "rank500", 500, 0, ids)


def test_input_invariance_true_by_construction_is_shown_but_not_counted(monkeypatch):
    """Kindermans et al. 2017: Integrated Gradients with a fixed black baseline (and occlusion with a fixed
    fill) cannot be input-invariant by definition: the page shows the numbers and says so; no verdict,
    no entry in the Holm family, not among the 'not invariant' methods."""
    monkeypatch.setitem(TITLES, "integrated_gradients", "Integrated Gradients")
    sm = fake({"integrated_gradients": dict(inv=0.2), "a": dict(inv=0.2)})
    rows = {r["name"]: r for r in sm.rows}
    assert rows["integrated_gradients"]["invariance_verdict"] == verdict_checks.BY_CONSTRUCTION
    assert "black baseline" in rows["integrated_gradients"]["by_construction"]
    assert rows["a"]["invariance_verdict"] == "not invariant"  # the same numbers on an ordinary method: a verdict
    assert sm.not_invariant == ["Method A"]
    fam = verdicts.family([sm])
    assert not any(t is rows["integrated_gradients"]["tests"]["invariance"] for t in fam)
    # with a baseline that is not black, the check is a real one again
    s = {**S, "method_params": {"integrated_gradients": {"baseline": "blur"}}}
    sm2 = fake({"integrated_gradients": dict(inv=0.2)}, s=s)
    assert sm2.rows[0]["invariance_verdict"] == "not invariant"
