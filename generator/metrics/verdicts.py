"""Verdicts of the findings' checks and the sentences they produce: the rules, the Holm correction, the summaries.

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

The wording of single checks beside their verdicts lives in three modules that use this one's rules
and helpers: :mod:`.verdict_randomisation` (signed maps, edge detector, independent randomisation,
seeds), :mod:`.verdict_checks` (input invariance, fragility, the deletion/insertion step count) and
:mod:`.verdict_units` (selectivity and importance of units).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from . import bootstrap
from .bootstrap import Interval
from .class_check import NO_MAP_EPSILON, ClassSensitivity
from .faithfulness import Faithfulness
from .fragility import Fragility
from .invariance import Invariance
from .sanity import Cascade
from .selectivity import Units
from .similarity import METRICS

# verdict_checks and verdict_randomisation import this module's helpers, so :func:`_row` and
# :func:`summarise_model` import them when called: no import cycle at load time
if TYPE_CHECKING:
    from .verdict_checks import AttackSummary, StepVerdict

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
class ModelSummary(_Fields):
    """Per model: a row per method (``rows``: each check's interval, test and verdict) and the lists
    of method titles the sentences name (filled in by :func:`correct`). ``sm["fails"]`` reads
    ``sm.fails`` (the home page reads it so). The ``*_said`` sentences are written by
    :mod:`.verdict_randomisation` and (fragility) :mod:`.verdict_checks`."""

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


def _row(name: str, title: str, expensive: bool, cascade: Cascade, cls: ClassSensitivity, fai: Faithfulness,
         inv: Invariance, frag: Fragility, s: Mapping) -> dict:
    """One method's intervals and tests (verdicts: :func:`correct`)."""
    from .verdict_checks import (BY_CONSTRUCTION, _method_defaults, adaptive_caps, attack_summary, by_construction,
                                 completeness_said, fragility_moves, other_maps_said, remedy_said)
    from .verdict_randomisation import randomisation_extras, signed_cascade
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
    tol, start = float(mp.get("max_delta", 0.05)), int(mp.get("steps", 0)) or None
    # the invariance maps are of each photo's top-1 class, which the shift-absorbing copy predicts as the model
    # does: the method's cap for a map of the predicted class applies (IntegratedGradients.cap)
    low, high = adaptive_caps(name, mp)
    cap_name = "max_steps_predicted" if high is not None and high > low else "max_steps"
    r["invariance_steps"] = completeness_said(inv, title, tol, high, start, cap_name)
    r["remedy_steps"] = (completeness_said(inv.remedy, title, tol, high, start, cap_name)
                         if inv.remedy is not None else "")
    r["other_maps"] = other_maps_said(low, high) if r["invariance_steps"] else ""
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


def summarise_model(model, titles: Mapping[str, str], *, cascade: Cascade, classes: Mapping[str, ClassSensitivity],
                    faithfulness: Faithfulness, invariance: Mapping[str, Invariance], fragility: Fragility,
                    settings: Mapping, expensive: Sequence[str] = ()) -> ModelSummary:
    """Per-method numbers (each a mean with its 95 % bootstrap interval and n) and verdicts that are
    printed only when the interval clears the threshold at n ≥ ``min_n`` and survives the Holm
    correction (here over this model's verdicts; :func:`correct` again over every model's).
    ``classes``, ``invariance``: per method; ``settings``: the ``[findings]`` table (thresholds, seed)."""
    from .verdict_checks import STEP_TOLERANCE, attack_summary, fragility_overview, step_verdict
    from .verdict_randomisation import edge_overview, independent_overview, seeds_overview, signed_overview
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
