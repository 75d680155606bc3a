"""Verdicts of the findings' checks and the sentences they produce — the one place for both.

Every number is a mean with its 95 % bootstrap interval and n (:mod:`.bootstrap`); a verdict is
given only when the interval clears its threshold, else "undecided at n = …". The per-model
summary (:func:`summarise_model`) holds every per-method row and every list of method titles
that the Findings page's sentences are filled in from; :func:`cross_model` compares the models,
:func:`headline_numbers` is the JSON the home page may quote, :func:`headlines` its headline
numbers, and :func:`and_list` / :func:`fixed`
write numbers and lists into sentences.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from . import bootstrap
from .bootstrap import Interval
from .class_check import ClassSensitivity
from .faithfulness import Faithfulness
from .fragility import Fragility
from .invariance import Invariance
from .sanity import Cascade
from .selectivity import Units
from .similarity import METRICS

#: the orders measured beside the methods in the deletion/insertion check: name → title
BASELINES = {"random": "random order (baseline)", "centre": "centre prior (baseline)"}


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
class AttackSummary(_Fields):
    """The fragility attack over a model's photos: share with the class kept, share perturbed,
    |p′ − p| with its interval, the attack's size (0–255) and top-k fraction."""

    kept: float
    n: int
    attacked: float
    dp: Interval
    eps255: float
    frac: float


@dataclass
class ModelSummary(_Fields):
    """Per model: a row per method (``rows``: each check's interval and verdict) and the lists of
    method titles the sentences name. ``sm["fails"]`` reads ``sm.fails`` (the home page reads it so)."""

    model: Any
    rows: list[dict]
    baselines: dict[str, dict[str, Interval]]
    fails: list[str]
    passes: list[str]
    sanity_undecided: list[str]
    insensitive: list[str]
    sensitive: list[str]
    class_undecided: list[str]
    ignores_top: list[str]
    top_group: str | None
    best_deletion: dict | None
    best_insertion: dict | None
    best_combined: dict | None
    better_than_random: list[str]
    not_better_than_random: list[str]
    random_undecided: list[str]
    not_better_than_centre: list[str]
    faithful_but_flagged: list[str]
    invariant: list[str]
    not_invariant: list[str]
    fragile: list[str]
    fragility: AttackSummary
    labels: list[str]
    fraction: list[float]
    n_groups: int
    n_images: int
    n_sanity: int
    units: Units | None = None
    photos: list[dict] = field(default_factory=list)  # per photo: id, title, top1 and low-ranked class names
    figures: dict[str, str] = field(default_factory=dict)  # figure name → path under the generated folder


def _row(name: str, title: str, expensive: bool, cascade: Cascade, cls: ClassSensitivity, fai: Faithfulness,
         inv: Invariance, frag: Fragility, s: Mapping) -> dict:
    """One method's intervals and verdicts."""
    sanity_t, class_t, top_layer_t = (float(s[k]) for k in ("sanity_threshold", "class_threshold", "top_layer_threshold"))
    seed = int(s["seed"])
    V = bootstrap.verdict
    c = cascade.methods[name]
    f = fai.curves[name]
    nm = len(f.deletion_auc)
    rnd, cen = fai.curves["random"], fai.curves["centre"]
    r = {"name": name, "title": title, "expensive": expensive,
         "cascade": [_ci(v, seed) for v in c.spearman],
         "last": {m: _ci(getattr(c, m)[-1], seed) for m in METRICS},
         "cascade_mean": _ci(np.asarray(c.spearman).mean(0), seed),
         "class_low": {m: _ci(getattr(cls, m), seed) for m in METRICS},
         "deletion": _ci(f.deletion_auc, seed), "insertion": _ci(f.insertion_auc, seed),
         "vs_random": _ci((rnd.deletion_auc[:nm] - f.deletion_auc) + (f.insertion_auc - rnd.insertion_auc[:nm]), seed),
         "vs_centre": _ci((cen.deletion_auc[:nm] - f.deletion_auc) + (f.insertion_auc - cen.insertion_auc[:nm]), seed),
         "invariance": _ci(inv.spearman, seed), "invariance_change": _ci(inv.relative_change, seed)}
    fr = frag.methods.get(name)
    if fr is not None:
        r["fragility_attack"] = _ci(fr.attack, seed)
        r["fragility_noise"] = _ci(fr.noise, seed)
        r["fragility_drop"] = _ci(fr.noise - fr.attack, seed)
        r["fragility_verdict"] = V(r["fragility_drop"], 1e-12, "fragile", "not more than noise")
    else:
        r["fragility_verdict"] = "not measured"
    r["sanity_verdict"] = V(r["cascade_mean"], sanity_t, "fails", "passes")
    r["fails_randomisation"] = r["sanity_verdict"] == "fails"
    r["ignores_top"] = bool(cascade.steps and cascade.steps[0] == 1 and cascade.n_groups > 1
                            and V(r["cascade"][0], top_layer_t, "yes", "no") == "yes")
    below = [lab for lab, iv in zip(cascade.labels, r["cascade"]) if np.isfinite(iv.hi) and iv.hi < sanity_t]
    r["first_below"] = below[0] if below else None
    r["class_verdict"] = V(r["class_low"]["spearman"], class_t, "class-insensitive", "changes with the class")
    r["class_insensitive"] = r["class_verdict"] == "class-insensitive"
    r["random_verdict"] = V(r["vs_random"], 1e-12, "better than random", "not better than random")
    r["centre_verdict"] = V(r["vs_centre"], 1e-12, "better than centre prior", "not better than centre prior")
    r["invariance_verdict"] = V(r["invariance"], float(s["invariance_threshold"]), "invariant", "not invariant")
    r["combined"] = r["insertion"].mean - r["deletion"].mean
    return r


def summarise_model(model, titles: Mapping[str, str], *, cascade: Cascade, classes: Mapping[str, ClassSensitivity],
                    faithfulness: Faithfulness, invariance: Mapping[str, Invariance], fragility: Fragility,
                    settings: Mapping, expensive: Sequence[str] = ()) -> ModelSummary:
    """Per-method numbers (each a mean with its 95 % bootstrap interval and n) and verdicts that
    are printed only when the interval clears the threshold (all statements come from here).
    ``classes``, ``invariance``: per method; ``settings``: the ``[findings]`` table (thresholds, seed)."""
    seed = int(settings["seed"])
    methods = list(cascade.methods)
    rows = [_row(n, titles[n], n in expensive, cascade, classes[n], faithfulness, invariance[n], fragility, settings)
            for n in methods]
    base = {b: {"deletion": _ci(faithfulness.curves[b].deletion_auc, seed),
                "insertion": _ci(faithfulness.curves[b].insertion_auc, seed)} for b in BASELINES}
    by_comb = sorted(rows, key=lambda r: -r["combined"])
    for rank, r in enumerate(by_comb, 1):
        r["faith_rank"] = rank
    pick = lambda key, val: [r["title"] for r in rows if r[key] == val]  # noqa: E731
    undecided = lambda key: [r["title"] for r in rows if not bootstrap.decided(r[key])]  # noqa: E731
    frag = fragility
    return ModelSummary(
        model=model, rows=rows, baselines=base,
        fails=pick("sanity_verdict", "fails"), passes=pick("sanity_verdict", "passes"),
        sanity_undecided=undecided("sanity_verdict"),
        insensitive=pick("class_verdict", "class-insensitive"), sensitive=pick("class_verdict", "changes with the class"),
        class_undecided=undecided("class_verdict"),
        ignores_top=[r["title"] for r in rows if r["ignores_top"]],
        top_group=cascade.labels[0] if cascade.steps and cascade.steps[0] == 1 else None,
        best_deletion=min(rows, key=lambda r: r["deletion"].mean) if rows else None,
        best_insertion=max(rows, key=lambda r: r["insertion"].mean) if rows else None,
        best_combined=by_comb[0] if by_comb else None,
        better_than_random=pick("random_verdict", "better than random"),
        not_better_than_random=pick("random_verdict", "not better than random"),
        random_undecided=undecided("random_verdict"),
        not_better_than_centre=pick("centre_verdict", "not better than centre prior"),
        faithful_but_flagged=[r["title"] for r in rows if r["random_verdict"] == "better than random"
                              and (r["fails_randomisation"] or r["class_insensitive"])],
        invariant=pick("invariance_verdict", "invariant"), not_invariant=pick("invariance_verdict", "not invariant"),
        fragile=pick("fragility_verdict", "fragile"),
        fragility=AttackSummary(float(np.mean(frag.kept)) if len(frag.kept) else float("nan"), int(len(frag.kept)),
                                float(np.mean(frag.attacked)) if len(frag.attacked) else float("nan"),
                                _ci(np.abs(frag.p1 - frag.p0), seed), frag.eps255, frag.frac),
        labels=cascade.labels, fraction=cascade.fraction, n_groups=cascade.n_groups,
        n_images=max((len(faithfulness.curves[m].deletion_auc) for m in methods), default=0),
        n_sanity=max((int(cascade.methods[m].spearman.shape[1]) for m in methods), default=0))


def cross_model(summaries: Sequence) -> dict:
    """Which verdicts agree across models (only over models that were measured)."""
    if not summaries:
        return {}
    sets = lambda key: [set(sm[key]) for sm in summaries]  # noqa: E731
    fail_all = set.intersection(*sets("fails"))
    fail_any = set.union(*sets("fails"))
    ins_all = set.intersection(*sets("insensitive"))
    ins_any = set.union(*sets("insensitive"))
    best = {sm["model"].name: sm["best_combined"]["title"] for sm in summaries if sm["best_combined"]}
    return {"fail_all": sorted(fail_all), "fail_some": sorted(fail_any - fail_all),
            "ins_all": sorted(ins_all), "ins_some": sorted(ins_any - ins_all),
            "best_agree": len(set(best.values())) == 1, "best": best}


def headline_numbers(summaries: Sequence, s: Mapping) -> dict:
    """Per model and method: each check's mean, interval, n and verdict (JSON-able; the home page may quote it)."""
    out = {"thresholds": {k: s[k] for k in ("sanity_threshold", "class_threshold", "invariance_threshold")},
           "fragility_eps_255": float(s["fragility_eps"]), "models": {}}
    for sm in summaries:
        per = {}
        for r in sm["rows"]:
            d = {"title": r["title"]}
            for key, vkey in (("cascade_mean", "sanity_verdict"), ("vs_random", "random_verdict"),
                              ("invariance", "invariance_verdict"), ("fragility_drop", "fragility_verdict")):
                if key in r:
                    d[key] = {**r[key].as_dict(), "verdict": r[vkey]}
            d["class_low_spearman"] = {**r["class_low"]["spearman"].as_dict(), "verdict": r["class_verdict"]}
            per[r["name"]] = d
        out["models"][sm["model"].name] = {"title": sm["model"].spec.title, "methods": per,
                                           "fails": sm["fails"], "class_insensitive": sm["insensitive"],
                                           "not_invariant": sm["not_invariant"], "fragile": sm["fragile"]}
    return out


def headlines(summaries: Sequence) -> list[tuple[str, str, str]]:
    """The findings' headline numbers for the home page: ``(value, label, page)`` per model, in order."""
    out = []
    for sm in summaries:
        n, title = len(sm["rows"]), sm["model"].spec.title
        out.append((f"{len(sm['fails'])} of {n}", f"methods fail the weight-randomisation check on {title}", "findings/index"))
        out.append((f"{len(sm['insensitive'])} of {n}", f"methods draw nearly the same map whatever the class on {title}",
                    "findings/index"))
        if sm.get("best_combined"):
            out.append((sm["best_combined"]["title"], f"is the most faithful map (deletion and insertion) on {title}",
                        "findings/index"))
    return out
