"""The randomisation check's numbers and sentences beside its verdict (Adebayo et al. 2018).

Per method's row: the signed maps against |map| (:func:`signed_cascade`), the edge-detector reference,
the independent randomisation of one layer group at a time and the seeds of the random weights
(:func:`randomisation_extras`); per model, one sentence on each (:func:`signed_overview`,
:func:`edge_overview`, :func:`independent_overview`, :func:`seeds_overview`). None of them is a verdict
or in the Holm family; where an interval lies against the threshold is :func:`.verdicts._side`'s. The
verdict itself is :mod:`.verdicts`'s.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..util import md_escape
from . import bootstrap
from .sanity import SIGNED, Cascade, CascadeCurves
from .similarity import METRICS
from .verdicts import _ci, _side, and_list


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
    against the threshold ``T`` (:func:`.verdicts._side`), ``signed_reads`` / ``abs_reads`` what the verdict's rule reads
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
    ``T``, :func:`.verdicts._side`); ``independent`` (per step of the independent randomisation, metric → interval),
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
