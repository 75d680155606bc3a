"""Verdicts and sentences of the selectivity-and-importance check of units (Morcos et al. 2018; Zhou et al. 2018).

Per layer, the rank correlations of class selectivity with three ablation costs (:data:`UNIT_COSTS`), each
stated only from ``min_n`` units and photos, when its interval lies beyond ±``selectivity_min_rho``, and
after the Holm correction over every tested correlation of the model (:func:`summarise_units`;
:func:`unit_test`, :func:`unit_clause`). The rules, :func:`.verdicts.holm` and :func:`.verdicts.and_list`
are :mod:`.verdicts`'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from . import bootstrap
from .bootstrap import Interval
from .selectivity import Units
from .verdicts import _Fields, and_list, holm, rules


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
