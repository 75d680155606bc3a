"""Verdicts of the findings' checks and the sentences they produce — the one place for both.

Every number is a mean with its 95 % BCa bootstrap interval and n (:mod:`.bootstrap`). A verdict
is a claim about an effect of a stated size: each check compares its interval with a threshold
from ``[findings]`` (:data:`CHECKS`). It is given only

* from at least ``min_n`` photos (below: "not enough photos (n = k < 20): the full build decides"),
* when the whole interval lies on one side of the threshold (else "undecided at n = …"), and
* when it survives the **Holm** correction (:func:`holm`) over the family of every verdict that
  feeds the Findings summary — every method × check × model tested at n ≥ ``min_n`` — at
  ``alpha`` (else "undecided at n = … after Holm correction"; :func:`correct`).

"Most" and "least faithful" are named only where a paired interval (per photo, the same photos)
separates the method from every other; else the methods are "tied" (:class:`Extreme`). The same rule
names the method whose maps agree most across models (:func:`consistency`, the comparison across models).

The per-model summary (:func:`summarise_model`) holds every per-method row and every list of
method titles that the Findings page's sentences are filled in from; :func:`cross_model` compares
the models, :func:`headline_numbers` is the JSON the home page may quote, :func:`headlines` its
headline numbers, :func:`answer` the answer to "is visualisation enough?" that the Findings index
leads with (:func:`answer_headline`: the home page's sentence), and :func:`and_list` / :func:`fixed`
write numbers and lists into sentences.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..methods.attribution import ATTRIBUTION_METHODS
from ..util import md_escape
from . import bootstrap
from .bootstrap import Interval
from .class_check import NO_MAP_EPSILON, ClassSensitivity
from .faithfulness import Faithfulness
from .fragility import Fragility, differentiable
from .invariance import Invariance
from .sanity import SIGNED, Cascade, CascadeCurves
from .selectivity import Units
from .similarity import METRICS

#: the orders measured beside the methods in the deletion/insertion check: name → title
BASELINES = {"random": "random order (baseline)", "centre": "centre prior (baseline)"}

#: the family-wise error rate of the verdicts (``[findings] alpha``)
ALPHA = 0.05


@dataclass(frozen=True)
class Check:
    """A verdict's rule: the row key of its interval, the ``[findings]`` key of its threshold (the
    effect size it claims), the words for "interval at/above" and "below", and the row key of the verdict."""

    interval: str
    threshold: str
    above: str
    below: str
    verdict: str


#: every check whose verdicts feed the summary
CHECKS: dict[str, Check] = {
    "sanity": Check("cascade_mean", "sanity_threshold", "fails", "passes", "sanity_verdict"),
    "top_layer": Check("top_layer", "top_layer_threshold", "ignores the output layer", "changed by the output layer",
                       "top_layer_verdict"),
    "class": Check("class_second", "class_threshold", "class-insensitive", "changes with the class", "class_verdict"),
    "random": Check("vs_random", "faithfulness_min_gain", "better than random", "not better than random",
                    "random_verdict"),
    "centre": Check("vs_centre", "faithfulness_min_gain", "better than centre prior", "not better than centre prior",
                    "centre_verdict"),
    "invariance": Check("invariance", "invariance_threshold", "invariant", "not invariant", "invariance_verdict"),
    "fragility": Check("fragility_drop", "fragility_min_drop", "fragile", "not more than noise", "fragility_verdict"),
}

#: what a rule defaults to where the settings lack it (``[findings]`` holds every one)
RULE_DEFAULTS = {"min_n": bootstrap.MIN_N, "alpha": ALPHA, "faithfulness_min_gain": 0.02, "fragility_min_drop": 0.1,
                 "no_map_epsilon": NO_MAP_EPSILON, "sanity_threshold": 0.5, "class_threshold": 0.8,
                 "top_layer_threshold": 0.9, "invariance_threshold": 0.9, "selectivity_min_rho": 0.0}

#: a photo whose map of either class has (nearly) no spread
NO_MAP = "no map for the second class"


def and_list(xs) -> str:
    """["a", "b", "c"] → "a, b and c" (for sentences built from data)."""
    xs = [str(x) for x in xs]
    if not xs:
        return "none"
    return xs[0] if len(xs) == 1 else ", ".join(xs[:-1]) + " and " + xs[-1]


def fixed(v, nd: int = 2) -> str:
    """Number for a table: fixed decimals, a real minus sign, NaN as an en dash."""
    v = float(v)
    if v != v:
        return "–"
    return f"{v:.{nd}f}".replace("-", "−")


def _ci(v, seed: int = 0) -> Interval:
    return bootstrap.mean_ci(np.asarray(v, dtype=np.float64), seed=seed)


def rules(s: Mapping) -> dict:
    """The thresholds, minimum n and alpha of the verdicts, from the ``[findings]`` settings."""
    return {k: type(d)(s.get(k, d)) for k, d in RULE_DEFAULTS.items()}


def holm(pvalues, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Holm's (1979) step-down correction of a family of p-values: ``(reject, adjusted)``.

    The i-th smallest of K p-values is compared with alpha / (K − i + 1), stopping at the first that
    is not below; the adjusted p-values are the running maximum of (K − i + 1) × p₍ᵢ₎ (capped at 1),
    so ``reject == adjusted < alpha``. The family-wise error rate is at most alpha whatever the
    dependence between the tests. NaN p-values are not part of the family (never rejected)."""
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    adjusted = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    k = ok.size
    if k:
        order = ok[np.argsort(p[ok], kind="stable")]
        scaled = (k - np.arange(k)) * p[order]
        adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    reject = np.zeros(p.shape, bool)
    reject[ok] = adjusted[ok] < alpha
    return reject, adjusted


class _Fields:
    """Read like the dict it replaces: ``x["name"]`` and ``x.get("name")`` are the attributes."""

    def __getitem__(self, name: str) -> Any:
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self, name, default)


@dataclass
class Test(_Fields):
    """One verdict: its check, interval and threshold, the verdict of the interval alone (``raw``),
    its two-sided p-value (NaN below the minimum n: not in the family), the Holm-adjusted p and the
    verdict printed (``verdict``, set by :func:`correct`)."""

    check: str
    interval: Interval
    threshold: float
    raw: str
    p: float
    p_holm: float = float("nan")
    verdict: str = ""

    @property
    def tested(self) -> bool:
        return self.p == self.p

    def final(self, stands: bool) -> str:
        if not bootstrap.decided(self.raw) or stands:
            return self.raw
        return f"undecided at n = {self.interval.n} after Holm correction"


def _test(check: str, values, threshold: float, seed: int, min_n: int) -> Test:
    c = CHECKS[check]
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    iv = _ci(v, seed)
    raw = bootstrap.verdict(iv, threshold, c.above, c.below, min_n)
    p = bootstrap.p_two_sided(v, threshold, seed=seed) if iv.n >= max(min_n, 2) else float("nan")
    return Test(check, iv, float(threshold), raw, p, verdict=raw)


@dataclass
class Extreme(_Fields):
    """The most (``kind="best"``) or least (``"worst"``) faithful method by mean insertion − deletion
    (or most / least consistent across models by mean agreement: ``combined`` is then that mean),
    and whether a paired interval separates it: per other method, the 95 % interval of the per-photo
    difference on the photos both were measured on. ``separated`` only when every one clears 0 (at n ≥
    the minimum); the others are ``tied`` with it."""

    kind: str
    name: str
    title: str
    combined: float
    separated: bool
    tied: list[str]
    gaps: dict[str, Interval]
    too_few: list[str]  # methods whose comparison had fewer photos than the minimum

    @property
    def verdict(self) -> str:
        return self.title if self.separated else "tied"


def extreme(kind: str, rows: list[dict], values: Mapping[str, np.ndarray], seed: int, min_n: int,
            key: str = "combined") -> Extreme | None:
    """The row with the highest (``kind="best"``) or lowest (``"worst"``) ``row[key]`` and, per other row,
    the 95 % interval of the paired per-photo difference ``values[top] − values[other]`` (sign flipped for
    "worst"; the first k photos of both, k the shorter): :class:`Extreme`. Used by the findings (insertion
    − deletion) and by the comparison across models (:func:`.across_models.agreement`)."""
    if not rows:
        return None
    sign = 1.0 if kind == "best" else -1.0
    top = max(rows, key=lambda r: sign * r[key])
    gaps, tied, few = {}, [], []
    for r in rows:
        if r is top:
            continue
        k = min(len(values[top["name"]]), len(values[r["name"]]))
        d = sign * (values[top["name"]][:k] - values[r["name"]][:k])
        iv = _ci(d, seed)
        gaps[r["title"]] = iv
        if iv.n < max(min_n, 2):
            few.append(r["title"])
            tied.append(r["title"])
        elif not iv.lo > 0:
            tied.append(r["title"])
    return Extreme(kind, top["name"], top["title"], float(top[key]), not tied, tied, gaps, few)


@dataclass
class AttackSummary(_Fields):
    """A fragility attack over its photos (the shared proxy attack: ``sm.fragility``; a method's own-map
    attack: its row's ``fragility_own_attack``): share with the class kept, share perturbed, |p′ − p| with
    its interval, the attack's size (0–255) and top-k fraction; for the own-map attack (``own``) the share
    of photos on which the softplus copy (β ``beta``) gives the network's class (``agree``) and the
    interval of |p_copy − p| there (``p_copy``)."""

    kept: float
    n: int
    attacked: float
    dp: Interval
    eps255: float
    frac: float
    own: bool = False
    agree: float = float("nan")
    p_copy: Interval | None = None
    beta: float = float("nan")


def attack_summary(st, eps255: float, frac: float, seed: int = 0, beta: float = float("nan"),
                   own: bool = False) -> AttackSummary:
    """The :class:`AttackSummary` of an attack's per-photo arrays ``st`` (``kept``, ``attacked``, ``p0``,
    ``p1``; with ``own`` also ``agree``, ``p_copy``: :class:`.fragility.AttackStats`)."""
    mean = lambda v: float(np.mean(v)) if len(v) else float("nan")  # noqa: E731
    agree = np.asarray(getattr(st, "agree", []))
    p_copy = np.asarray(getattr(st, "p_copy", []), dtype=np.float64)
    return AttackSummary(mean(st.kept), int(len(st.kept)), mean(st.attacked),
                         _ci(np.abs(np.asarray(st.p1) - np.asarray(st.p0)), seed), eps255, frac, own,
                         mean(agree) if own else float("nan"),
                         _ci(np.abs(p_copy - np.asarray(st.p0)[: len(p_copy)]), seed) if own else None, float(beta))


@dataclass
class ModelSummary(_Fields):
    """Per model: a row per method (``rows``: each check's interval, test and verdict) and the lists
    of method titles the sentences name (filled in by :func:`correct`). ``sm["fails"]`` reads
    ``sm.fails`` (the home page reads it so)."""

    model: Any
    rows: list[dict]
    baselines: dict[str, dict[str, Interval]]
    fragility: AttackSummary
    labels: list[str]
    fraction: list[float]
    n_groups: int
    n_images: int
    n_sanity: int
    rules: dict
    top_group: str | None = None
    best: Extreme | None = None
    worst: Extreme | None = None
    best_combined: dict | None = None  # the best row, only when a paired interval separates it
    faith_steps: StepVerdict | None = None  # deletion/insertion: do the areas move when the steps are doubled?
    fails: list[str] = field(default_factory=list)
    passes: list[str] = field(default_factory=list)
    sanity_undecided: list[str] = field(default_factory=list)
    insensitive: list[str] = field(default_factory=list)
    sensitive: list[str] = field(default_factory=list)
    class_undecided: list[str] = field(default_factory=list)
    no_map: list[str] = field(default_factory=list)  # titles with photos that had no map for a class
    ignores_top: list[str] = field(default_factory=list)
    better_than_random: list[str] = field(default_factory=list)
    not_better_than_random: list[str] = field(default_factory=list)
    random_undecided: list[str] = field(default_factory=list)
    better_than_centre: list[str] = field(default_factory=list)
    not_better_than_centre: list[str] = field(default_factory=list)
    faithful_but_flagged: list[str] = field(default_factory=list)
    invariant: list[str] = field(default_factory=list)
    not_invariant: list[str] = field(default_factory=list)
    invariance_undecided: list[str] = field(default_factory=list)
    fragile: list[str] = field(default_factory=list)
    not_fragile: list[str] = field(default_factory=list)
    fragility_undecided: list[str] = field(default_factory=list)
    few: dict[str, list[str]] = field(default_factory=dict)  # check → titles with n below the minimum
    family: dict = field(default_factory=dict)  # the Holm family this summary was corrected in (:func:`correct`)
    units: Units | None = None
    photos: list[dict] = field(default_factory=list)  # per photo: id, title, top1 and second class names
    figures: dict[str, str] = field(default_factory=dict)  # figure name → path under the generated folder
    signed_said: str = ""  # the randomisation check: signed maps against |map| over the methods (:func:`signed_overview`)
    fragility_said: str = ""  # the fragility check: each method's attack, its other measures (:func:`fragility_overview`)
    edge_said: str = ""  # the randomisation check: the trained maps against an edge detector (:func:`edge_overview`)
    independent_said: str = ""  # ... one layer group at a time (:func:`independent_overview`)
    seeds_said: str = ""  # ... the seeds of the random weights (:func:`seeds_overview`)
    seeds: list[int] = field(default_factory=list)  # the donor seeds of the cascade (the verdicts: the first)
    independent_labels: list[str] = field(default_factory=list)  # the group randomised alone at each measured step
    independent_fraction: list[float] = field(default_factory=list)  # ... and its share of the parameters


# ------------------------------------------------------------------ selectivity and importance of units

#: the ablation costs that class selectivity is rank-correlated with, per unit: key → (the cost as a noun,
#: "cost more …" words). ``prob``: the drop of the true class's probability over all photos (Morcos et al.
#: 2018); ``acc``: the top-1 accuracy lost over all photos; ``class``: the largest accuracy lost on one
#: class's photos (Zhou et al. 2018).
UNIT_COSTS: dict[str, tuple[str, str]] = {
    "prob": ("ablation cost", "when ablated"),
    "acc": ("the overall accuracy drop", "overall"),
    "class": ("the largest per-class accuracy drop", "to their most-affected class"),
}


@dataclass
class UnitTest(_Fields):
    """One rank correlation between selectivity and an ablation cost over a layer's units, and what it
    says. ``raw`` (the interval alone) and ``verdict`` (after the Holm correction over the model's
    correlations): ``"above"`` (interval above +``selectivity_min_rho``), ``"below"`` (under −it),
    ``"none"`` (neither), ``"held"`` (the interval clears it, the Holm correction does not), ``"flat"``
    (every unit cost the same: no correlation), ``"few_units"`` / ``"few_photos"`` (under ``min_n``: no
    statement), ``"not_measured"``. ``p``: two-sided, from the resampled correlations (NaN when untested)."""

    cost: str
    interval: Interval | None
    raw: str
    p: float = float("nan")
    p_holm: float = float("nan")
    verdict: str = ""

    @property
    def tested(self) -> bool:
        return self.p == self.p


def unit_test(cost: str, iv: Interval | None, boot, threshold: float, min_n: int, photos: int) -> UnitTest:
    """What a rank correlation (``iv``, its resampled values ``boot``) says against ``threshold`` (on
    each side of 0): nothing from fewer than ``min_n`` units or photos; otherwise "above" / "below" when the
    interval lies beyond ±threshold, else "none"; the p-value (for the Holm correction) is twice the
    smaller share of resampled correlations on either side of the threshold it is tested against, each
    share counted as (k + 1) / (R + 1)."""
    if iv is None:
        return UnitTest(cost, None, "not_measured", verdict="not_measured")
    if iv.n < min_n:
        return UnitTest(cost, iv, "few_units", verdict="few_units")
    if photos < min_n:
        return UnitTest(cost, iv, "few_photos", verdict="few_photos")
    if iv.mean != iv.mean:
        return UnitTest(cost, iv, "flat", verdict="flat")
    b = np.asarray(boot, dtype=np.float64)
    if iv.lo > threshold:
        raw, edge = "above", threshold
    elif iv.hi < -threshold:
        raw, edge = "below", -threshold
    else:  # tested against the side the correlation lies on
        raw, edge = "none", (threshold if iv.mean >= 0 else -threshold)
    p = float("nan")
    if b.size:
        r = b.size
        p = float(min(1.0, 2.0 * min((np.count_nonzero(b <= edge) + 1) / (r + 1),
                                     (np.count_nonzero(b >= edge) + 1) / (r + 1))))
    return UnitTest(cost, iv, raw, p, verdict=raw)


def _interval_words(code: str, T: float) -> str:
    t = f"{T:g}"
    band = "contains 0" if T == 0 else f"reaches into [−{t}, {t}]"
    return {"above": f"the interval lies above {t}", "below": f"the interval lies below {'−' if T else ''}{t}",
            "none": f"the interval {band}"}[code]


def unit_clause(t: UnitTest, T: float, min_n: int, family: int = 0) -> str:
    """The words for one correlation's verdict (no final stop), e.g. "the more class-selective units cost
    more when ablated (the interval lies above 0)"."""
    noun, more = UNIT_COSTS[t.cost]
    v = t.verdict or t.raw
    if v == "above":
        return f"the more class-selective units cost more {more} ({_interval_words(v, T)})"
    if v == "below":
        return f"the more class-selective units cost *less* {more} ({_interval_words(v, T)})"
    if v == "none":
        return f"no relation between selectivity and {noun} is shown ({_interval_words(v, T)})"
    if v == "held":
        return (f"selectivity and {noun}: {_interval_words(t.raw, T)}, but not after the Holm correction over the "
                f"{family} correlations of this model (undecided)")
    if v == "flat":
        return f"no rank correlation with {noun}: every measured unit's is the same"
    if v == "few_units":
        return (f"too few units for a statement (fewer than {min_n}, `min_n`; `ablation_units_per_layer` "
                f"sets how many)")
    if v == "few_photos":
        return f"too few photos for a statement (fewer than {min_n}, `min_n`; `selectivity_images` sets how many)"
    return f"{noun} not measured"


@dataclass
class UnitLayerSaid(_Fields):
    """One layer's correlations (``tests``: cost → :class:`UnitTest`) and sentences: ``cost`` (selectivity vs
    the probability drop, Morcos et al.), ``per_class`` (overall vs per-class accuracy drop, Zhou et al.)."""

    tests: dict[str, UnitTest]
    cost: str = ""
    per_class: str = ""


@dataclass
class UnitsSummary(_Fields):
    """What the selectivity-and-importance check of one model says (:func:`summarise_units`): ``count``
    (how many units, how drawn), ``fewer`` (the preview profile's note, "" otherwise), ``layers`` (layer →
    :class:`UnitLayerSaid`), ``family`` (correlations in the Holm family), ``threshold``, ``min_n``."""

    count: str
    fewer: str
    layers: dict[str, UnitLayerSaid]
    family: int
    threshold: float
    min_n: int


def _per_class_sentence(u, acc: UnitTest, cls: UnitTest, T: float, min_n: int, family: int) -> str:
    if u.class_mean is None:
        return "The per-class accuracy drop was not measured for this layer."
    lead = (f"Ablating one unit lowers top-1 accuracy by {bootstrap.fmt(u.acc_mean, 3)} on average over the units, and "
            f"the accuracy of its most-affected class by {bootstrap.fmt(u.class_mean, 3)}; rank correlation of "
            f"selectivity with the overall drop {bootstrap.fmt(acc.interval)}, with the largest per-class drop "
            f"{bootstrap.fmt(cls.interval)} (n = {cls.interval.n} units)")
    a, c = acc.verdict, cls.verdict
    if a in ("few_units", "few_photos") or c in ("few_units", "few_photos"):
        said = unit_clause(acc if a.startswith("few") else cls, T, min_n)
    elif a == c and a in ("above", "below"):
        said = (f"the more class-selective units cost {'more' if a == 'above' else '*less*'} both overall and to "
                f"their most-affected class ({_interval_words(a, T)}, both)")
    elif a == c == "none":
        said = f"no relation between selectivity and either accuracy drop is shown ({_interval_words('none', T)}, both)"
    else:
        said = unit_clause(acc, T, min_n, family) + "; " + unit_clause(cls, T, min_n, family)
    return f"{lead}: {said}."


def summarise_units(units: Units, settings: Mapping, profile: str = "", full_per: int = 0) -> UnitsSummary:
    """The sentences of the selectivity-and-importance check of one model, each from its numbers: per layer
    the rank correlations of selectivity with the probability drop, the overall accuracy drop and the
    largest per-class accuracy drop (:func:`unit_test`: a statement only from ``min_n`` units and photos,
    when the interval lies beyond ±``selectivity_min_rho`` and the correlation survives the Holm correction
    over every tested correlation of the model at ``alpha``). ``profile``/``full_per``: the build's profile
    and the full profile's ``ablation_units_per_layer``, for the note that preview measured fewer units."""
    ru = rules(settings)
    T, min_n, alpha = float(ru["selectivity_min_rho"]), int(ru["min_n"]), float(ru["alpha"])
    layers: dict[str, UnitLayerSaid] = {}
    for name, u in units.layers.items():
        ivs = {"prob": u.rho, "acc": u.rho_acc, "class": u.rho_class}
        layers[name] = UnitLayerSaid({c: unit_test(c, iv, u.boot.get(c, ()), T, min_n, units.n) for c, iv in ivs.items()})
    tests = [t for said in layers.values() for t in said.tests.values() if t.tested]
    reject, adjusted = holm([t.p for t in tests], alpha)
    for t, rj, pa in zip(tests, reject, adjusted):
        t.p_holm = float(pa)
        t.verdict = t.raw if (t.raw == "none" or rj) else "held"
    k = len(tests)
    for name, said in layers.items():
        u, ts = units.layers[name], said.tests
        said.cost = (f"rank correlation between selectivity and ablation cost {bootstrap.fmt(u.rho)} over {u.rho.n} "
                     f"units — {unit_clause(ts['prob'], T, min_n, k)}.")
        said.per_class = _per_class_sentence(u, ts["acc"], ts["class"], T, min_n, k)
    per = int(units.per)
    sizes = sorted({len(u.channels) for u in units.layers.values()})
    count = (f"{and_list(sizes)} units per layer" if len(sizes) > 1 else f"{sizes[0] if sizes else 0} units per layer")
    count += (f", drawn at random with seed {units.seed} (`ablation_units_per_layer = {per}`; a layer with fewer "
              f"channels: all of them), the same units for every photo" if per > 0 else ", every channel")
    fewer = ""
    if profile == "preview" and 0 < per < full_per:
        fewer = (f"The **preview** profile ablates {per} units per layer, fewer than the {full_per} of the full build, "
                 f"to keep the CPU build short"
                 + (f"; with fewer than {min_n} units (`min_n`) no layer gets a statement here: the full build decides."
                    if per < min_n else "."))
    return UnitsSummary(count, fewer, layers, k, T, min_n)


BY_CONSTRUCTION = "not invariant by construction (not evidence)"


def by_construction(name: str, s: Mapping) -> str:
    """Why method ``name`` with the findings' settings ``s`` cannot be input-invariant *by definition*
    (Kindermans et al. 2017: a reference point that does not move with the input), or "": such a result is
    shown as true by construction and is not counted as evidence (nor tested, nor in the Holm family)."""
    params = {**_method_defaults(name), **dict((s.get("method_params") or {}).get(name, {}))}
    b = params.get("baseline", "black")
    if name == "integrated_gradients" and (isinstance(b, (int, float, list, tuple)) or str(b) in FIXED_BASELINES):
        which = FIXED_BASELINES.get(str(b)) or f"constant ({', '.join(map(str, b)) if isinstance(b, (list, tuple)) else b})"
        return (f"its {which} baseline stays where it is when the input shifts; a baseline shifted along with the input "
                "is the remedy (measured beside it)")
    if name == "occlusion":
        return f"its fixed grey fill ({params.get('fill', 0.5)}) stays where it is when the input shifts"
    return ""


#: Integrated Gradients' baselines by name that do not move with the input → how the reason names them
FIXED_BASELINES = {"black": "black", "zeros": "black", "zero": "black", "grey": "grey", "gray": "grey", "white": "white"}


def completeness_said(inv: Invariance, title: str, tolerance: float, cap, start: int | None = None) -> str:
    """The sentence on a method's adaptive step count in the invariance check (Integrated Gradients on the
    shift-absorbing copy: ``inv.steps`` / ``inv.error`` per photo), or "" for a method without one: the points
    used and how many photos reached a completeness error below ``tolerance`` (``max_delta``); a photo that did
    not was stopped by the cap (``max_steps``: the refinement runs until the error is below it or the cap)."""
    steps = np.asarray(inv.steps if inv.steps is not None else [], dtype=np.float64)
    err = np.asarray(inv.error if inv.error is not None else [], dtype=np.float64)
    if not steps.size or not np.isfinite(steps).all():
        return ""
    n, below = int(steps.size), int((err < tolerance).sum())
    lo, hi = int(steps.min()), int(steps.max())
    used = f"{lo} points" if lo == hi else f"{lo}–{hi} points (median {float(np.median(steps)):g})"
    title = md_escape(title)
    limit = f"{100 * tolerance:g} % (`max_delta`)"
    if below == n:
        return f"{title} used {used}; its completeness error is below {limit} on all {n} photos."
    stop = (f"not refined: one doubling of its intervals needs {2 * start - 1} points, `max_steps = {cap}`"
            if start is not None and int(cap or 0) < 2 * start - 1 else f"stopped by `max_steps = {cap}`")
    return (f"{title} used {used}; its completeness error is below {limit} on {below} of {n} photos — **{n - below} "
            f"stayed at or above it**, {stop} (worst {100 * float(err.max()):.1f} %).")


def remedy_said(inv: Invariance, title: str, T: float, seed: int = 0) -> dict | None:
    """The remedy's row (Kindermans et al. 2017), or None where the method has none: ``invariance`` and
    ``change`` (intervals of the Spearman correlation and relative change of the maps of the shift-absorbing
    copy with the reference point moved along, vs the trained maps), ``baseline`` (the moved baseline),
    ``side`` (:func:`_side` against the invariance threshold ``T``) and ``said``: whether the maps match,
    from the interval. Like the black-baseline row it is true by construction (the same path through the
    same function), so it is shown, never counted as evidence."""
    rem = inv.remedy
    if rem is None:
        return None
    iv, ch = _ci(rem.spearman, seed), _ci(rem.relative_change, seed)
    b = (inv.remedy_params or {}).get("baseline")
    base = ", ".join(f"{float(v):g}" for v in b) if isinstance(b, (list, tuple)) else str(b)
    side = _side(iv, T)
    head = f"With the baseline shifted along with the input ({base} per colour channel), the maps of {md_escape(title)}"
    nums = f"Spearman {bootstrap.fmt(iv)}, relative change {bootstrap.fmt(ch)} (n = {iv.n})"
    said = {"above": f"{head} match: {nums}, the whole interval ≥ {T} — Kindermans et al.'s remedy works here.",
            "below": f"{head} do **not** match: {nums}, the whole interval below {T}.",
            "across": f"{head} are not shown to match: {nums}, the interval includes {T}.",
            "none": f"{head}: {nums}; too few photos for an interval."}[side]
    return {"invariance": iv, "change": ch, "baseline": base, "side": side, "said": said}


def _method_defaults(name: str) -> dict:
    cls = ATTRIBUTION_METHODS.get(name)
    return {**getattr(cls, "defaults", {}), **getattr(cls, "findings_params", {})} if cls else {}


def _row(name: str, title: str, expensive: bool, cascade: Cascade, cls: ClassSensitivity, fai: Faithfulness,
         inv: Invariance, frag: Fragility, s: Mapping) -> dict:
    """One method's intervals and tests (verdicts: :func:`correct`)."""
    ru = rules(s)
    seed, min_n = int(s["seed"]), ru["min_n"]
    T = lambda check, values: _test(check, values, ru[CHECKS[check].threshold], seed, min_n)  # noqa: E731
    c = cascade.methods[name]
    f = fai.curves[name]
    nm = len(f.deletion_auc)
    rnd, cen = fai.curves["random"], fai.curves["centre"]
    no_map = cls.no_map(ru["no_map_epsilon"])
    with_map = ~no_map
    tests = {"sanity": T("sanity", np.asarray(c.spearman).mean(0)),
             "class": T("class", np.asarray(cls.spearman)[with_map]),
             "random": T("random", (rnd.deletion_auc[:nm] - f.deletion_auc) + (f.insertion_auc - rnd.insertion_auc[:nm])),
             "centre": T("centre", (cen.deletion_auc[:nm] - f.deletion_auc) + (f.insertion_auc - cen.insertion_auc[:nm])),
             "invariance": T("invariance", inv.spearman)}
    if cascade.steps and cascade.steps[0] == 1 and cascade.n_groups > 1:
        tests["top_layer"] = T("top_layer", np.asarray(c.spearman)[0])
    why = by_construction(name, s)
    if why:  # measured and shown, never a verdict: no p-value, so not in the Holm family
        t = tests["invariance"]
        t.raw = t.verdict = BY_CONSTRUCTION
        t.p = float("nan")
    r = {"name": name, "title": title, "expensive": expensive, "tests": tests,
         "cascade": [_ci(v, seed) for v in c.spearman],
         "last": {m: _ci(getattr(c, m)[-1], seed) for m in METRICS},
         "cascade_mean": tests["sanity"].interval,
         "class_low": {m: (tests["class"].interval if m == "spearman" else _ci(np.asarray(getattr(cls, m))[with_map], seed))
                       for m in METRICS},
         "class_no_map": int(no_map.sum()), "class_photos": int(len(no_map)),
         "deletion": _ci(f.deletion_auc, seed), "insertion": _ci(f.insertion_auc, seed),
         "vs_random": tests["random"].interval, "vs_centre": tests["centre"].interval,
         "invariance": tests["invariance"].interval, "invariance_change": _ci(inv.relative_change, seed)}
    fr = frag.methods.get(name)
    if fr is not None:
        tests["fragility"] = T("fragility", fr.noise - fr.attack)
        r["fragility_attack"] = _ci(fr.attack, seed)
        r["fragility_noise"] = _ci(fr.noise, seed)
        r["fragility_drop"] = tests["fragility"].interval
        r.update(fragility_moves(fr, seed))
        r["fragility_own"] = bool(fr.own)
        r["fragility_own_attack"] = (attack_summary(fr.stats, frag.eps255, frag.frac, seed, frag.beta, own=True)
                                     if fr.own and fr.stats is not None else None)
    r["by_construction"] = why
    mp = {**_method_defaults(name), **dict((s.get("method_params") or {}).get(name, {}))}
    r["invariance_remedy"] = remedy_said(inv, title, ru["invariance_threshold"], seed)
    tol, cap, start = float(mp.get("max_delta", 0.05)), mp.get("max_steps"), int(mp.get("steps", 0)) or None
    r["invariance_steps"] = completeness_said(inv, title, tol, cap, start)
    r["remedy_steps"] = (completeness_said(inv.remedy, title, tol, cap, start)
                         if inv.remedy is not None else "")
    r["fragility_verdict"] = "not measured"
    if tests["class"].interval.n == 0 and len(no_map):  # every photo: no map for one of the classes
        tests["class"].raw = tests["class"].verdict = NO_MAP
    below = [lab for lab, iv in zip(cascade.labels, r["cascade"]) if np.isfinite(iv.hi) and iv.hi < ru["sanity_threshold"]]
    r["first_below"] = below[0] if below else None
    r.update(signed_cascade(c, ru["sanity_threshold"], seed, min_n))
    r.update(randomisation_extras(cascade, name, ru["sanity_threshold"], seed))
    r["combined"] = r["insertion"].mean - r["deletion"].mean
    _apply(r)
    return r


def _side(iv: Interval, T: float) -> str:
    """Where an interval lies against a threshold: "above" (entirely at or above), "below" (entirely
    below), "across" (it contains it) or "none" (no finite interval)."""
    if not (np.isfinite(iv.lo) and np.isfinite(iv.hi)):
        return "none"
    return "above" if iv.lo >= T else "below" if iv.hi < T else "across"


#: what an interval's side of the randomisation threshold reads as under the verdict's rule
_SIDE_READS = {"above": "fails", "below": "passes", "across": "undecided", "none": "no interval"}


def signed_cascade(c: CascadeCurves, T: float, seed: int = 0, min_n: int = 1) -> dict:
    """The signed maps' numbers of one method's cascade (Adebayo et al.'s rank correlation without the
    absolute value, SSIM and HOG of the signed maps) for the row, and the sentence that compares them
    with the |map| numbers the verdict uses; ``{}`` for a method without signed maps.

    ``cascade_signed``: per step, the interval of the signed Spearman; ``cascade_signed_mean``: of its
    mean over the steps (the verdict's statistic, for the signed maps); ``last_signed``: metric → the
    interval after randomising every layer; ``signed_minus_abs``: the paired interval (per photo) of
    signed − |map| cascade mean; ``signed_side`` / ``abs_side``: where each cascade-mean interval lies
    against the threshold ``T`` (:func:`_side`), ``signed_reads`` / ``abs_reads`` what the verdict's rule reads
    there before the Holm correction; ``signed_said``: the sentence."""
    if not c.signed:
        return {}
    sp, ab = np.asarray(c.spearman_signed, dtype=np.float64), np.asarray(c.spearman, dtype=np.float64)
    mean_s, mean_a = _ci(sp.mean(0), seed), _ci(ab.mean(0), seed)
    diff = _ci(sp.mean(0) - ab.mean(0), seed)
    side_s, side_a = _side(mean_s, T), _side(mean_a, T)
    said = (f"Signed maps: rank correlation without the absolute value, averaged over the cascade, "
            f"{bootstrap.fmt(mean_s)} against {bootstrap.fmt(mean_a)} for |map| (paired difference signed − |map| "
            f"{bootstrap.fmt(diff)}, n = {mean_s.n}); by the verdict's rule at {T:g}, before the Holm correction, "
            f"the signed interval reads \"{_SIDE_READS[side_s]}\", the |map| interval \"{_SIDE_READS[side_a]}\"")
    if mean_s.n < min_n:
        said += f" (fewer than {min_n} photos: neither is a finding)."
    else:
        said += " — the same." if side_s == side_a else " — they differ."
    return {"cascade_signed": [_ci(v, seed) for v in sp], "cascade_signed_mean": mean_s,
            "last_signed": {m: _ci(np.asarray(getattr(c, SIGNED[m]))[-1], seed) for m in METRICS},
            "signed_minus_abs": diff, "signed_side": side_s, "abs_side": side_a,
            "signed_reads": _SIDE_READS[side_s], "abs_reads": _SIDE_READS[side_a], "signed_said": said}


def randomisation_extras(cascade: Cascade, name: str, T: float, seed: int = 0) -> dict:
    """The numbers beside one method's cascade for its row: ``edge`` (metric → interval over photos of the
    trained map's similarity to the photo's Sobel edge map) and ``edge_side`` (its Spearman interval against
    ``T``, :func:`_side`); ``independent`` (per step of the independent randomisation, metric → interval),
    ``independent_n`` (photos; 0 = not measured), ``independent_below`` (the groups whose Spearman interval
    lies entirely below ``T``); ``seed_means`` (per donor seed, the interval of the cascade-mean Spearman;
    the first is the verdict's), ``seed_diffs`` (per further seed, the paired interval of its cascade mean −
    the first seed's), ``seed_sides`` (each seed's cascade-mean interval against ``T``) and ``seed_reads``
    (what the verdict's rule reads there, before the Holm correction)."""
    c = cascade.methods[name]
    r: dict = {"edge": None, "edge_side": "none"}
    e = cascade.edges.get(name)
    if e is not None:
        r["edge"] = {m: _ci(e[m], seed) for m in METRICS}
        r["edge_side"] = _side(r["edge"]["spearman"], T)
    ind = cascade.independent.get(name)
    r["independent_n"] = int(np.asarray(ind.spearman).shape[1]) if ind is not None else 0
    if ind is not None:
        r["independent"] = [{m: _ci(np.asarray(getattr(ind, m))[i], seed) for m in METRICS}
                            for i in range(len(cascade.independent_labels))]
        r["independent_below"] = [lab for lab, d in zip(cascade.independent_labels, r["independent"])
                                  if np.isfinite(d["spearman"].hi) and d["spearman"].hi < T]
    first = np.asarray(c.spearman, dtype=np.float64).mean(0)
    others = [np.asarray(o.spearman, dtype=np.float64).mean(0) for o in cascade.other_seeds.get(name, [])]
    r["seed_means"] = [_ci(v, seed) for v in (first, *others)]
    r["seed_diffs"] = [_ci(v - first, seed) for v in others]
    r["seed_sides"] = [_side(iv, T) for iv in r["seed_means"]]
    r["seed_reads"] = [_SIDE_READS[x] for x in r["seed_sides"]]
    return r


def edge_overview(rows: Sequence[Mapping], T: float, min_n: int = 1) -> str:
    """One model's sentence on the edge-detector reference (rows of :func:`randomisation_extras`): for which
    methods the trained map's rank correlation with the photo's Sobel edge map lies entirely at or above
    ``T`` (as close to a pure edge detector as the randomisation rule's "unchanged"), entirely below, or
    across it (Markdown, titles escaped)."""
    rs = [r for r in rows if r.get("edge") is not None]
    if not rs:
        return ""
    titles = lambda xs: and_list([md_escape(r["title"]) for r in xs])  # noqa: E731
    by = {side: [r for r in rs if r["edge_side"] == side] for side in ("above", "below", "across", "none")}
    text = ("**Edge-detector reference.** The rank correlation of each trained map (|map|) with the Sobel edge map "
            "of its photo (the gradient magnitude of the grayscale photo: no network, no learning), on the "
            "randomisation check's photos: ")
    parts = []
    if by["above"]:
        parts.append(f"its interval lies entirely at or above {T:g} (`sanity_threshold`: as similar to a pure edge "
                     f"detector as a map the randomisation rule calls unchanged is to its trained map) for "
                     f"{titles(by['above'])}")
    if by["below"]:
        parts.append(f"entirely below {T:g} for {titles(by['below'])}")
    if by["across"]:
        parts.append(f"across {T:g} (undecided) for {titles(by['across'])}")
    if by["none"]:
        parts.append(f"no interval (one photo) for {titles(by['none'])}")
    text += "; ".join(parts) + "."
    few = [r for r in rs if r["edge"]["spearman"].n < min_n]
    if few:
        text += f" Fewer than {min_n} photos (`min_n`) for {titles(few)}: numbers, not findings."
    return text


def independent_overview(rows: Sequence[Mapping], T: float, min_n: int = 1) -> str:
    """One model's sentence on the independent-layer randomisation (rows of :func:`randomisation_extras`):
    for which methods randomising some single layer group (the others trained) brings the rank correlation's
    interval entirely below ``T``, and at which groups; for which no single group does; which were not
    measured (Markdown, titles escaped)."""
    measured = [r for r in rows if r.get("independent_n")]
    skipped = [r for r in rows if not r.get("independent_n")]
    titles = lambda xs: and_list([md_escape(r["title"]) for r in xs])  # noqa: E731
    key = lambda r: "independent_expensive_images" if r.get("expensive") else "independent_images"  # noqa: E731
    why = lambda xs: and_list(sorted({f"`{key(r)}`" for r in xs}))  # noqa: E731
    if not measured:
        return f"**Independent randomisation.** Not measured in this build ({why(skipped)} = 0)."
    ns = sorted({r["independent_n"] for r in measured})
    text = (f"**Independent randomisation** (one layer group at a time, every other group trained; "
            f"{and_list(ns)} photo{'s' if ns != [1] else ''} per method): ")
    below = [r for r in measured if r["independent_below"]]
    never = [r for r in measured if not r["independent_below"]]
    parts = []
    if below:
        parts.append("the rank correlation's interval falls entirely below "
                     f"{T:g} when only one group is random for "
                     + and_list([f"{md_escape(r['title'])} ({and_list(r['independent_below'])})" for r in below]))
    if never:
        parts.append(f"at no single group for {titles(never)} — the map is not shown to depend on any one group alone")
    text += "; ".join(parts) + "."
    if skipped:
        text += f" Not measured for {titles(skipped)} ({why(skipped)} = 0 in this build)."
    few = [r for r in measured if r["independent_n"] < min_n]
    if few:
        text += f" Fewer than {min_n} photos (`min_n`) for {titles(few)}: numbers, not findings."
    return text


def seeds_overview(rows: Sequence[Mapping], seeds: Sequence[int], T: float, min_n: int = 1) -> str:
    """One model's sentence on the seeds of the random weights (rows of :func:`randomisation_extras`): with one
    seed, that the dependence on the draw is not measured; with more, whether the verdict's rule at ``T`` reads
    the same on every seed, per method, and which seed the verdict uses (Markdown, titles escaped)."""
    titles = lambda xs: and_list([md_escape(r["title"]) for r in xs])  # noqa: E731
    if len(seeds) < 2:
        s0 = seeds[0] if seeds else 0
        return (f"**Seeds.** One draw of the random weights (seed {s0}; `cascade_seeds` = 1): whether the numbers "
                f"depend on the draw is not measured in this build.")
    text = (f"**Seeds.** {len(seeds)} draws of the random weights (seeds {and_list(seeds)}), the same photos; "
            f"the verdict uses the first (seed {seeds[0]}), the others are shown beside it. ")
    apart = [r for r in rows if len(set(r["seed_sides"])) > 1]
    shifted = [r for r in rows if any(d.lo > 0 or d.hi < 0 for d in r["seed_diffs"] if np.isfinite(d.lo))]
    text += f"By the verdict's rule at {T:g} (before the Holm correction) "
    text += f"the seeds read differently for {titles(apart)}" if apart else "every seed reads the same for every method"
    text += (f"; the paired difference of the cascade means excludes 0 for {titles(shifted)}." if shifted else
             "; no paired difference of the cascade means excludes 0.")
    few = [r for r in rows if r["seed_means"][0].n < min_n]
    if few:
        text += f" Fewer than {min_n} photos (`min_n`) for {titles(few)}: numbers, not findings."
    return text


def signed_overview(rows: Sequence[Mapping], min_n: int = 1) -> str:
    """One model's sentence on the signed maps of the randomisation check, from the rows of
    :func:`signed_cascade`: which methods have them, where the paired interval of signed − |map| lies,
    and for how many the two variants read differently under the verdict's rule (Markdown, titles escaped)."""
    signed = [r for r in rows if r.get("cascade_signed_mean") is not None]
    if not signed:
        return "No method measured here has attributions that take both signs, so only |map| is compared."
    titles = lambda rs: and_list([md_escape(r["title"]) for r in rs])  # noqa: E731
    lower = [r for r in signed if _side(r["signed_minus_abs"], 0.0) == "below"]
    higher = [r for r in signed if r["signed_minus_abs"].lo > 0]
    tied = [r for r in signed if r not in lower and r not in higher]
    one = len(signed) == 1
    parts = [f"{len(signed)} of {len(rows)} methods {'has' if one else 'have'} signed maps here ({titles(signed)})"]
    said = []
    if lower:
        said.append(f"lower than the |map| one for {titles(lower)}")
    if higher:
        said.append(f"higher for {titles(higher)}")
    if tied:
        said.append(f"not separated from it (the paired interval does not exclude 0) for {titles(tied)}")
    text = parts[0] + f"; {'its' if one else 'their'} signed rank correlation, averaged over the cascade, is " \
        + "; ".join(said) + "."
    apart = [r for r in signed if r["signed_side"] != r["abs_side"]]
    text += (f" By the verdict's rule (before the Holm correction) the two variants read differently for {titles(apart)}."
             if apart else " By the verdict's rule (before the Holm correction) the two variants read the same for every one of them.")
    few = [r for r in signed if r["cascade_signed_mean"].n < min_n]
    if few:
        text += f" Fewer than {min_n} photos (`min_n`) for {titles(few)}: numbers, not findings."
    return text


def fragility_moves(fr, seed: int = 0) -> dict:
    """Ghorbani et al.'s other two measures for one method's :class:`.fragility.Overlaps` (numbers, no
    verdict): the Spearman rank correlation of the map after the attack and after the noise with the map of
    the photo, and the paired loss to the attack beyond noise (noise − attack, per photo); the
    centre-of-mass shift (pixels) after each, and the paired extra shift (attack − noise); ``{}`` when not
    measured."""
    if not len(fr.rho_attack):
        return {}
    return {"fragility_rho_attack": _ci(fr.rho_attack, seed), "fragility_rho_noise": _ci(fr.rho_noise, seed),
            "fragility_rho_drop": _ci(fr.rho_noise - fr.rho_attack, seed),
            "fragility_com_attack": _ci(fr.com_attack, seed), "fragility_com_noise": _ci(fr.com_noise, seed),
            "fragility_com_gain": _ci(fr.com_attack - fr.com_noise, seed)}


def fragility_overview(rows: Sequence[Mapping], min_n: int = 1, beta: float = float("nan")) -> str:
    """One model's sentences on the fragility check, from the rows (Markdown, titles escaped): which methods
    were attacked through their own map on the softplus copy (β ``beta``), which by the shared proxy and why
    (a rule that is not the network's derivative; or an own-map attack this build left out); and for which
    the attack also lowered the rank correlation with the original map, or moved its centre of mass, beyond
    the random control (the paired 95 % interval above 0, from at least ``min_n`` photos; no verdict)."""
    measured = [r for r in rows if r.get("fragility_attack") is not None]
    if not measured:
        return ""
    titles = lambda rs: and_list([md_escape(r["title"]) for r in rs])  # noqa: E731
    own = [r for r in measured if r.get("fragility_own")]
    rule = [r for r in measured if not r.get("fragility_own") and not differentiable(r["name"])]
    left = [r for r in measured if not r.get("fragility_own") and differentiable(r["name"])]
    out = []
    if own:
        out.append(f"Attacked through {'its' if len(own) == 1 else 'their'} own map on the softplus copy of the "
                   f"network (β = {beta:g}), as Ghorbani et al. attack it: {titles(own)}.")
    if rule:
        out.append(f"Attacked by the shared proxy (a deviation from Ghorbani et al.): the map of {titles(rule)} is not "
                   f"the network's derivative, so it cannot be attacked through itself.")
    if left:
        out.append(f"Attacked by the shared proxy in this build although the map is differentiable: {titles(left)} "
                   f"(the own-map attack is left out here by `fragility_own_images` / "
                   f"`fragility_own_expensive_images`; the full profile runs it).")
    iv = lambda r, k: r.get(k)  # noqa: E731
    enough = [r for r in measured if iv(r, "fragility_rho_drop") is not None and iv(r, "fragility_rho_drop").n >= min_n]
    if enough:
        rho = [r for r in enough if r["fragility_rho_drop"].lo > 0]
        com = [r for r in enough if r["fragility_com_gain"].n >= min_n and r["fragility_com_gain"].lo > 0]
        out.append(f"Beyond the random control (paired 95 % interval above 0; no verdict, not Holm-corrected), the "
                   f"attack also lowered the map's rank correlation with the map of the photo for: {titles(rho)}; and "
                   f"moved its centre of mass farther for: {titles(com)}.")
    few = [r for r in measured if r not in enough and iv(r, "fragility_rho_drop") is not None]
    if few:
        out.append(f"Fewer than {min_n} photos (`min_n`) for {titles(few)}: their rank correlation and centre-of-mass "
                   f"numbers are not findings.")
    return " ".join(out)


def _apply(r: dict) -> None:
    """Each test's printed verdict into the row's verdict keys (and the flags the templates read)."""
    for check, t in r["tests"].items():
        r[CHECKS[check].verdict] = t.verdict or t.raw
    r.setdefault("top_layer_verdict", "not measured")
    r["fails_randomisation"] = r["sanity_verdict"] == CHECKS["sanity"].above
    r["ignores_top"] = r["top_layer_verdict"] == CHECKS["top_layer"].above
    r["class_insensitive"] = r["class_verdict"] == CHECKS["class"].above


def _refresh(sm: ModelSummary) -> None:
    """The lists of titles the sentences name, from the rows' printed verdicts."""
    rows = sm.rows
    pick = lambda key, val: [r["title"] for r in rows if r[key] == val]  # noqa: E731
    undecided = lambda key: [r["title"] for r in rows if r[key].startswith("undecided")]  # noqa: E731
    sm.fails, sm.passes = pick("sanity_verdict", "fails"), pick("sanity_verdict", "passes")
    sm.sanity_undecided = undecided("sanity_verdict")
    sm.insensitive = pick("class_verdict", CHECKS["class"].above)
    sm.sensitive = pick("class_verdict", CHECKS["class"].below)
    sm.class_undecided = undecided("class_verdict")
    sm.no_map = [r["title"] for r in rows if r["class_no_map"]]
    sm.ignores_top = [r["title"] for r in rows if r["ignores_top"]]
    sm.better_than_random = pick("random_verdict", CHECKS["random"].above)
    sm.not_better_than_random = pick("random_verdict", CHECKS["random"].below)
    sm.random_undecided = undecided("random_verdict")
    sm.better_than_centre = pick("centre_verdict", CHECKS["centre"].above)
    sm.not_better_than_centre = pick("centre_verdict", CHECKS["centre"].below)
    sm.faithful_but_flagged = [r["title"] for r in rows if r["random_verdict"] == CHECKS["random"].above
                               and (r["fails_randomisation"] or r["class_insensitive"])]
    sm.invariant, sm.not_invariant = pick("invariance_verdict", "invariant"), pick("invariance_verdict", "not invariant")
    sm.invariance_undecided = undecided("invariance_verdict")
    sm.fragile, sm.not_fragile = pick("fragility_verdict", "fragile"), pick("fragility_verdict", "not more than noise")
    sm.fragility_undecided = undecided("fragility_verdict")
    sm.few = {check: [r["title"] for r in rows if bootstrap.too_few(r[c.verdict])] for check, c in CHECKS.items()}
    sm.best_combined = next((r for r in rows if sm.best and sm.best.separated and r["name"] == sm.best.name), None)


def family(summaries: Sequence) -> list[Test]:
    """The verdicts that feed the summary: every method × check × model tested (n ≥ the minimum)."""
    return [t for sm in summaries for r in sm["rows"] for t in r["tests"].values() if t.tested]


def correct(summaries: Sequence, alpha: float | None = None) -> dict:
    """Holm-correct the family of ``summaries``' verdicts (:func:`family`) at ``alpha`` (default: the
    summaries' ``[findings] alpha``): a verdict stands only where the interval clears its threshold
    *and* its Holm-adjusted p-value is below alpha. Sets every row's printed verdicts and every list
    of titles; always starts from the uncorrected tests, so calling it again (on the same or a larger
    family) is safe. Returns (and stores as ``sm.family``) ``k`` (verdicts in the family), ``alpha``,
    ``withheld`` (verdicts whose interval clears the threshold but not the correction) and ``models``."""
    summaries = list(summaries)
    if not summaries:
        return {"k": 0, "alpha": ALPHA if alpha is None else alpha, "withheld": 0, "models": 0}
    alpha = float(summaries[0]["rules"]["alpha"] if alpha is None else alpha)
    tests = family(summaries)
    reject, adjusted = holm([t.p for t in tests], alpha)
    withheld = 0
    for t, rj, pa in zip(tests, reject, adjusted):
        t.p_holm = float(pa)
        t.verdict = t.final(bool(rj))
        withheld += bootstrap.decided(t.raw) and not rj
    info = {"k": len(tests), "alpha": alpha, "withheld": int(withheld), "models": len(summaries)}
    for sm in summaries:
        for r in sm["rows"]:
            _apply(r)
        sm.family = info
        _refresh(sm)
    return info


# ------------------------------------------------------------------ deletion/insertion: is the step count enough?

#: ``faithfulness_step_tolerance`` where the settings lack it: the mean absolute AUC change (doubled steps) allowed
STEP_TOLERANCE = 0.02


@dataclass
class StepVerdict(_Fields):
    """How much the deletion/insertion AUCs move when the steps are doubled (:class:`.faithfulness.StepCheck`):
    the per-photo mean absolute change (deletion and insertion averaged; each also alone) with its interval
    and n, and the sentence that says what it means against ``tolerance``. ``enough``: True when the
    interval lies below the tolerance, False when at or above it, None when it cannot tell."""

    steps: int
    fine_steps: int
    tolerance: float
    orders: int
    change: Interval
    deletion: Interval
    insertion: Interval
    enough: bool | None
    text: str


def step_verdict(check, tolerance: float = STEP_TOLERANCE, seed: int = 0) -> StepVerdict | None:
    """The sentence on the step count of the deletion/insertion check: "enough" only when the whole 95 %
    interval of the mean absolute AUC change lies below ``tolerance``; "depend on the step count" when it
    lies at or above it; otherwise (or without an interval: one photo) not shown either way, and the AUCs
    are to be compared only within this site. ``None`` when not measured."""
    if check is None or not len(check.photos):
        return None
    tol = float(tolerance)
    iv = _ci(check.change, seed)
    said = (f"doubling the steps from {check.steps} to {check.fine_steps} moves the deletion and insertion areas by "
            f"{bootstrap.fmt(iv, 3)} on average (mean absolute change per photo over {len(check.orders)} pixel orders, "
            f"n = {iv.n} photo{'s' if iv.n != 1 else ''})")
    limit = f"{fixed(tol, 3)} (`faithfulness_step_tolerance`)"
    if iv.n >= 2 and np.isfinite(iv.hi) and iv.hi < tol:
        enough, text = True, f"{said}: below {limit}, so the step count is enough"
    elif iv.n >= 2 and np.isfinite(iv.lo) and iv.lo >= tol:
        enough, text = False, (f"{said}: at least {limit}, so the areas depend on the step count; compare them only "
                               "within this site, not with published ones")
    else:
        why = "one photo gives no interval" if iv.n < 2 else f"the interval includes {limit}"
        enough, text = None, (f"{said}: {why}, so it is not shown to stay below it; treat the areas as depending on "
                              "the step count and compare them only within this site")
    return StepVerdict(check.steps, check.fine_steps, tol, len(check.orders), iv, _ci(check.deletion, seed),
                       _ci(check.insertion, seed), enough, text)


def summarise_model(model, titles: Mapping[str, str], *, cascade: Cascade, classes: Mapping[str, ClassSensitivity],
                    faithfulness: Faithfulness, invariance: Mapping[str, Invariance], fragility: Fragility,
                    settings: Mapping, expensive: Sequence[str] = ()) -> ModelSummary:
    """Per-method numbers (each a mean with its 95 % bootstrap interval and n) and verdicts that are
    printed only when the interval clears the threshold at n ≥ ``min_n`` and survives the Holm
    correction (here over this model's verdicts; :func:`correct` again over every model's).
    ``classes``, ``invariance``: per method; ``settings``: the ``[findings]`` table (thresholds, seed)."""
    seed = int(settings["seed"])
    ru = rules(settings)
    methods = list(cascade.methods)
    rows = [_row(n, titles[n], n in expensive, cascade, classes[n], faithfulness, invariance[n], fragility, settings)
            for n in methods]
    base = {b: {"deletion": _ci(faithfulness.curves[b].deletion_auc, seed),
                "insertion": _ci(faithfulness.curves[b].insertion_auc, seed)} for b in BASELINES}
    by_comb = sorted(rows, key=lambda r: -r["combined"])
    for rank, r in enumerate(by_comb, 1):
        r["faith_rank"] = rank
    combined = {n: faithfulness.curves[n].insertion_auc - faithfulness.curves[n].deletion_auc for n in methods}
    frag = fragility
    sm = ModelSummary(
        model=model, rows=rows, baselines=base,
        fragility=attack_summary(frag, frag.eps255, frag.frac, seed, getattr(frag, "beta", float("nan"))),
        labels=cascade.labels, fraction=cascade.fraction, n_groups=cascade.n_groups,
        n_images=max((len(faithfulness.curves[m].deletion_auc) for m in methods), default=0),
        n_sanity=max((int(cascade.methods[m].spearman.shape[1]) for m in methods), default=0), rules=ru,
        top_group=cascade.labels[0] if cascade.steps and cascade.steps[0] == 1 else None,
        best=extreme("best", rows, combined, seed, ru["min_n"]) if len(rows) else None,
        worst=extreme("worst", rows, combined, seed, ru["min_n"]) if len(rows) > 1 else None,
        faith_steps=step_verdict(faithfulness.step_check, float(settings.get("faithfulness_step_tolerance",
                                                                            STEP_TOLERANCE)), seed))
    correct([sm])
    sm.signed_said = signed_overview(rows, ru["min_n"])
    sm.fragility_said = fragility_overview(rows, ru["min_n"], getattr(frag, "beta", float("nan")))
    T = ru["sanity_threshold"]
    sm.edge_said, sm.seeds = edge_overview(rows, T, ru["min_n"]), list(cascade.seeds) or [seed]
    sm.independent_said = independent_overview(rows, T, ru["min_n"])
    sm.seeds_said = seeds_overview(rows, sm.seeds, T, ru["min_n"])
    sm.independent_labels, sm.independent_fraction = list(cascade.independent_labels), list(cascade.independent_fraction)
    return sm


def cross_model(summaries: Sequence) -> dict:
    """Which verdicts agree across models (only over models that were measured; Holm-corrected over all
    of them, :func:`correct`)."""
    if not summaries:
        return {}
    fam = correct(summaries) if all(isinstance(sm, ModelSummary) for sm in summaries) else {}
    sets = lambda key: [set(sm[key]) for sm in summaries]  # noqa: E731
    fail_all = set.intersection(*sets("fails"))
    fail_any = set.union(*sets("fails"))
    ins_all = set.intersection(*sets("insensitive"))
    ins_any = set.union(*sets("insensitive"))
    best = {sm["model"].name: (sm["best"].title if sm["best"] and sm["best"].separated else None) for sm in summaries}
    tied = {sm["model"].name: [sm["best"].title, *sm["best"].tied] for sm in summaries
            if sm["best"] and not sm["best"].separated}
    named = set(best.values())
    return {"fail_all": sorted(fail_all), "fail_some": sorted(fail_any - fail_all),
            "ins_all": sorted(ins_all), "ins_some": sorted(ins_any - ins_all),
            "best_agree": None not in named and len(named) == 1, "best": best, "best_tied": tied, "family": fam}


def headline_numbers(summaries: Sequence, s: Mapping) -> dict:
    """Per model and method: each check's mean, interval, n, p-values and verdict (JSON-able; the home
    page may quote it), after the Holm correction over every model's verdicts."""
    fam = correct(summaries)
    ru = rules(s)
    out = {"thresholds": {CHECKS[c].threshold: ru[CHECKS[c].threshold] for c in CHECKS},
           "min_n": ru["min_n"], "alpha": ru["alpha"], "holm_family": fam["k"],
           "fragility_eps_255": float(s["fragility_eps"]), "models": {}}
    for sm in summaries:
        per = {}
        for r in sm["rows"]:
            d = {"title": r["title"]}
            for check, t in r["tests"].items():
                d[CHECKS[check].interval] = {**t.interval.as_dict(), "verdict": t.verdict, "p": t.p, "p_holm": t.p_holm}
            d["class_no_map"] = r["class_no_map"]
            per[r["name"]] = d
        b = sm["best"]
        out["models"][sm["model"].name] = {"title": sm["model"].spec.title, "methods": per,
                                           "fails": sm["fails"], "class_insensitive": sm["insensitive"],
                                           "not_invariant": sm["not_invariant"], "fragile": sm["fragile"],
                                           "most_faithful": b.verdict if b else None}
    return out


def headlines(summaries: Sequence, pages: Mapping[str, str] | None = None) -> list[tuple[str, str, str]]:
    """The findings' headline numbers for the home page: ``(value, label, page)`` per model, in order.
    ``pages``: the page key each headline links to, per check (``"sanity"``, ``"class"``,
    ``"faithfulness"``); the Findings index where not given."""
    if summaries and all(isinstance(sm, ModelSummary) for sm in summaries):
        correct(summaries)
    page = lambda check: (pages or {}).get(check, "findings/index")  # noqa: E731
    out = []
    for sm in summaries:
        n, title = len(sm["rows"]), sm["model"].spec.title
        few = lambda check: len(sm["few"].get(check, [])) if sm.get("few") else 0  # noqa: E731
        wait = lambda check: f" ({few(check)} not decided at this n)" if few(check) else ""  # noqa: E731
        out.append((f"{len(sm['fails'])} of {n}", f"methods fail the weight-randomisation check on {title}{wait('sanity')}",
                    page("sanity")))
        out.append((f"{len(sm['insensitive'])} of {n}",
                    f"methods draw nearly the same map whatever the class on {title}{wait('class')}", page("class")))
        b = sm.get("best")
        if b and b.separated:
            out.append((b.title, f"is the most faithful map (deletion and insertion) on {title}", page("faithfulness")))
        elif b:
            k = 1 + len(b.tied)
            out.append(("tied", f"most faithful map on {title}: {k} methods are not told apart by a paired interval"
                                + (f" ({and_list([b.title, *b.tied])})" if k <= 3 else ""), page("faithfulness")))
    return out


#: the checks whose verdict can show a method falling short: check → (the summary's list of titles,
#: the words after "k of n methods" for one method and for several; ``{G}``: ``faithfulness_min_gain``)
SHORTFALLS: dict[str, tuple[str, str, str]] = {
    "sanity": ("fails", "fails the weight-randomisation check", "fail the weight-randomisation check"),
    "class": ("insensitive", "draws nearly the same map whatever the class",
              "draw nearly the same map whatever the class"),
    "random": ("not_better_than_random", "does not beat a random pixel order by {G}",
               "do not beat a random pixel order by {G}"),
    "invariance": ("not_invariant", "changes under a constant input shift that the model absorbs",
                   "change under a constant input shift that the model absorbs"),
    "fragility": ("fragile", "is moved by a tiny perturbation more than by noise of the same size",
                  "are moved by a tiny perturbation more than by noise of the same size"),
}


@dataclass
class Answer(_Fields):
    """The answer to "is visualisation enough?", computed from the verdicts (:func:`answer`).

    ``kind``: ``"no"`` (some method shown to fall short on some check of some model), ``"no_verdict"``
    (no check reached the minimum n), ``"open"`` (none shown to fall short, some verdicts undecided),
    ``"none_short"`` (every verdict decided, none a shortfall). ``short``: the answer in a few words;
    ``sentence``: the rest of one sentence (lower case, no final stop); ``where``: "on <model>" or
    "on at least one of the k measured models"; ``parts``: per check of :data:`SHORTFALLS`,
    ``{"check", "count", "text", "brief"}`` (methods shown to fall short on at least one model; "brief"
    without the word "methods"); ``n``: methods; ``k``: verdicts in the Holm family; ``open``/``total``:
    the verdicts of those checks that are not decided, of all of them; ``min_n``: the minimum n."""

    kind: str
    short: str
    sentence: str
    where: str
    parts: list[dict]
    n: int
    k: int
    open: int
    total: int
    min_n: int

    @property
    def shortfalls(self) -> list[dict]:
        return [p for p in self.parts if p["count"]]


def answer(summaries: Sequence) -> Answer | None:
    """Is visualisation enough? The answer the numbers give, in a few words and one sentence (the
    Findings index leads with it, the home page quotes it): "no" as soon as one method is shown to
    fall short on one check of one model (interval clear of the threshold, Holm-corrected); otherwise
    what is and is not decided. None without a measured model."""
    if not summaries:
        return None
    if all(isinstance(sm, ModelSummary) for sm in summaries):
        correct(summaries)
    ru = summaries[0]["rules"]
    titles = sorted({r["title"] for sm in summaries for r in sm["rows"]})
    n = len(titles)
    parts = []
    for check, (key, one, several) in SHORTFALLS.items():
        count = len({t for sm in summaries for t in sm[key]})
        verb = (one if count == 1 else several).format(G=ru["faithfulness_min_gain"])
        parts.append({"check": check, "count": count, "text": f"{count} of {n} methods {verb}",
                      "brief": f"{count} of {n} {verb}"})
    tests = [t for sm in summaries for r in sm["rows"] for c, t in r["tests"].items() if c in SHORTFALLS]
    still = sum(not bootstrap.decided(t.verdict or t.raw) for t in tests)
    k = len(family(summaries))
    shown = [p["brief"] if i else p["text"] for i, p in enumerate(p for p in parts if p["count"])]
    where = (f"on {summaries[0]['model'].spec.title}" if len(summaries) == 1
             else f"on at least one of the {len(summaries)} measured models")
    if shown:
        kind, short = "no", "No — not on this evidence"
        sentence = f"{where}, {and_list(shown)}"
    elif not k:
        kind, short = "no_verdict", "Not decided at this n"
        sentence = (f"no check reached {ru['min_n']} photos in this build, so no verdict is given "
                    f"(the full build decides)")
    elif still:
        kind, short = "open", "Not decided"
        sentence = (f"no method is shown to fall short on any check, and {still} of {len(tests)} verdicts "
                    f"{'is' if still == 1 else 'are'} undecided at this n")
    else:
        kind, short = "none_short", "No method fell short on these checks"
        sentence = f"each of the {len(tests)} verdicts of the checks is decided, and none is a shortfall"
    return Answer(kind, short, sentence, where, parts, n, k, still, len(tests), int(ru["min_n"]))


def answer_headline(summaries: Sequence, page: str = "findings/index") -> tuple[str, str, str] | None:
    """The answer as the home page's first headline ``(value, label, page)``: value the question and
    the short answer, label the rest of the sentence; it links to the Findings index (``page``)."""
    a = answer(summaries)
    if a is None:
        return None
    return (f"Is visualisation enough? {a.short}:", a.sentence + ".", page)


@dataclass
class Consistency(_Fields):
    """What the comparison across models says about which method's maps agree most (:func:`consistency`).

    ``kind``: ``"none"`` (no method measured), ``"one"`` (a single method: nothing to rank), ``"few"``
    (fewer photos than the minimum: no ranking), ``"separated"`` (a paired interval separates the top
    method from every other) or ``"tied"``; ``best``: the most consistent method's title (only when
    ``"separated"``); ``tied``: the titles tied at the top (``"tied"``); ``sentences``: plain text
    (the template escapes it); ``value`` / ``label``: the home page's headline (None with ``"none"``)."""

    kind: str
    sentences: list[str]
    value: str | None
    label: str | None
    best: str | None = None
    tied: list[str] = field(default_factory=list)


def _closest(e: Extreme) -> str:
    """"smallest difference: 0.05 [0.01, 0.09], to B" — the other method whose paired difference is smallest."""
    title, iv = min(e.gaps.items(), key=lambda kv: kv[1].mean)
    return f"smallest difference: {bootstrap.fmt(iv)}, to {title}"


def consistency(ag) -> Consistency:
    """The sentences and the headline of the comparison across models, from an
    :class:`.across_models.Agreement` ``ag``: "most consistent" / "least consistent" only where a paired
    95 % interval (per-photo difference, same photos) excludes 0 against every other method, at n ≥
    ``ag.min_n`` photos; else the top (bottom) methods are named as tied; below the minimum no method
    is named at all."""
    rows = [r for r in ag.rows if r["interval"].n]
    if not rows:
        return Consistency("none", [], None, None)
    n, min_n = ag.n, ag.min_n
    if len(rows) == 1:
        r = rows[0]
        return Consistency("one", [f"Only one method was compared ({r['title']}): there is nothing to rank."],
                           fixed(r["mean"]),
                           f"rank correlation between models' {r['title']} maps (the only method compared)")
    if ag.best is None:
        return Consistency("few", [f"Too few photos for a ranking: n = {n} < {min_n}, so no method is named the most "
                                   f"or the least consistent; the table shows the numbers."],
                           "not ranked", f"which method's maps agree most across models: {n} photos are too few "
                                         f"for a ranking (it needs {min_n})")
    b, w = ag.best, ag.worst
    out = []
    if b.separated:
        out.append(f"Most consistent: {b.title} ({fixed(b.combined)}), ahead of every other method on the same photos "
                   f"(the paired 95 % interval of the per-photo difference excludes 0 for each; {_closest(b)}).")
    else:
        why = f" or rests on fewer than {min_n} photos" if b.too_few else ""
        out.append(f"No single most consistent method: {and_list([b.title, *b.tied])} are tied (highest mean: "
                   f"{b.title}, {fixed(b.combined)}; the paired 95 % interval of its per-photo difference to "
                   f"{and_list(b.tied)} includes 0{why}).")
    if w is not None:
        if w.separated:
            out.append(f"Least consistent: {w.title} ({fixed(w.combined)}), below every other method on the same "
                       f"photos (paired 95 % intervals exclude 0; {_closest(w)}).")
        else:
            out.append(f"No single least consistent method: {and_list([w.title, *w.tied])} are tied at the bottom.")
    if b.separated:
        return Consistency("separated", out, fixed(b.combined),
                           f"rank correlation between models' {b.title} maps, the most consistent method "
                           f"(separated by paired intervals, n = {n})", best=b.title)
    names = [b.title, *b.tied]
    return Consistency("tied", out, "tied", f"most consistent method across models: {and_list(names)} are not told "
                                            f"apart by a paired interval (n = {n})", tied=names)
